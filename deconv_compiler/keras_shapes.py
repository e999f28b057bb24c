"""Keras' output-shape arithmetic that layers and recorded `keras.ops` calls share: merging
(elementwise broadcast), concatenation and reshaping. Pure functions of shapes (batch first, None
where unknown); a mismatch raises `ShapeMismatch` with the message the caller reports."""

from __future__ import annotations

import math
from collections.abc import Sequence

from deconv_compiler.ir import Shape


class ShapeMismatch(ValueError):
    """The shapes do not fit together; the message says how."""


def dims(shape: Shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _listed(shapes: Sequence[Shape]) -> str:
    return ", ".join(dims(s) for s in shapes)


def merged_shape(shapes: Sequence[Shape]) -> Shape:
    """Keras' merge shape (`Merge.compute_output_shape`): the one known batch size; elsewhere sizes
    equal or 1, and None wherever an input's size is None (Keras does not guess)."""
    if len({len(s) for s in shapes}) != 1:
        raise ShapeMismatch(
            "inputs of different ranks are not supported (Keras would insert axes after the batch "
            f"axis): {_listed(shapes)}"
        )
    batches = {s[0] for s in shapes} - {None}
    if len(batches) > 1:
        raise ShapeMismatch(f"Cannot merge tensors with different batch sizes: {_listed(shapes)}")
    out: list[int | None] = [batches.pop() if batches else None]
    for sizes in zip(*(s[1:] for s in shapes), strict=True):
        known = {s for s in sizes if s is not None and s != 1}
        if len(known) > 1:
            raise ShapeMismatch(f"Inputs have incompatible shapes: {_listed(shapes)}")
        out.append(None if None in sizes else known.pop() if known else 1)
    return tuple(out)


def concatenated_shape(shapes: Sequence[Shape], axis: int) -> Shape:
    """Sizes summed on `axis` (None if any is unknown), equal (or unknown) everywhere else."""
    out: list[int | None] = []
    for a, sizes in enumerate(zip(*shapes, strict=True)):
        if a == axis:
            out.append(None if None in sizes else sum(int(s or 0) for s in sizes))
            continue
        known = {s for s in sizes if s is not None}
        if len(known) > 1:
            raise ShapeMismatch(f"inputs must match except on axis {axis}: {_listed(shapes)}")
        out.append(known.pop() if known else None)
    return tuple(out)


def reshaped_shape(shape: Shape, target: Sequence[int]) -> Shape:
    """`shape` (batch first) reshaped to `target` (without the batch; positive sizes, at most one
    -1): the -1 resolved when the input's sizes are known."""
    out: list[int | None] = [None if d == -1 else d for d in target]
    known = shape[1:]
    if all(d is not None for d in known):
        total, fixed = math.prod(int(d or 0) for d in known), math.prod(d for d in target if d != -1)
        if -1 in target:
            if fixed == 0 or total % fixed:
                raise ShapeMismatch(f"cannot reshape {dims(shape)} to {list(target)}")
            out[list(target).index(-1)] = total // fixed
        elif total != fixed:
            raise ShapeMismatch(f"cannot reshape {dims(shape)} ({total} values) to {list(target)}")
    return (shape[0], *out)
