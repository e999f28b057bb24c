"""Keras' output-shape arithmetic that layers and recorded `keras.ops` calls share: merging
(elementwise broadcast), concatenation and reshaping; and the size check every layer's output
passes (`size_problem`), with the least lengths a dynamic axis can have (`least_lengths`). Pure
functions of shapes (batch first, None where unknown); a mismatch raises `ShapeMismatch` with the
message the caller reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

from deconv_compiler.ir import (
    ActivationOp,
    BatchNormOp,
    ClipOp,
    ConcatenateOp,
    DenseOp,
    EluOp,
    GroupNormOp,
    IdentityOp,
    LayerNormOp,
    LeakyReluOp,
    MergeOp,
    NormalizeOp,
    Op,
    PadOp,
    PermuteOp,
    PReluOp,
    ReluOp,
    RescaleOp,
    ScalarOp,
    Shape,
    SoftmaxOp,
    UnitNormOp,
    UpSampleOp,
)
from deconv_compiler.limits import MAX_ELEMENTS, MAX_SIZE

Lengths = tuple[int, ...]  # a shape's least possible sizes: known ones as they are, dynamic ones >= 1


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


# --- sizes: every tensor's lengths fit int32 and its values per batch item MAX_ELEMENTS ----------

# Ops whose output has their (first) input's shape, axis for axis: a dynamic length keeps its least.
_SAME_SHAPE = (
    BatchNormOp, ClipOp, EluOp, GroupNormOp, IdentityOp, LayerNormOp, LeakyReluOp, MergeOp, NormalizeOp,
    PReluOp, ReluOp, RescaleOp, ScalarOp, SoftmaxOp, UnitNormOp,
)  # fmt: skip


def least_lengths(op: Op, inputs: Sequence[Lengths], shape: Shape) -> Lengths:
    """The least sizes `shape` (an output of `op`, called on tensors whose least sizes are
    `inputs`) can have: its known sizes; where it is dynamic, what the op adds to the least input
    (padding, upsampling, concatenation), else 1. A lower bound, never more than the truth."""
    if None not in shape:
        return cast(Lengths, shape)  # every size known
    rank = len(shape)
    carried: list[int] = [1] * rank
    first = inputs[0] if inputs else ()
    if len(first) == rank:
        if isinstance(op, _SAME_SHAPE) or (isinstance(op, ActivationOp) and op.activation != "glu"):
            same_rank = [s for s in inputs if len(s) == rank]
            carried = (
                list(first) if len(same_rank) == 1 else [max(sizes) for sizes in zip(*same_rank, strict=True)]
            )
        elif isinstance(op, DenseOp):
            carried = [*first[:-1], 1]
        elif isinstance(op, UpSampleOp):
            carried = list(first)
            for axis, factor in zip(op.axes, op.factors, strict=True):
                carried[axis] = first[axis] * factor
        elif isinstance(op, PadOp):  # cropping's amounts are negative
            carried = list(first)
            for axis, begin, end in zip(op.axes, op.begins, op.ends, strict=True):
                carried[axis] = max(first[axis] + begin + end, 1)
        elif isinstance(op, ConcatenateOp):
            carried = [max(s[a] for s in inputs) for a in range(rank)]
            carried[op.axis] = sum(s[op.axis] for s in inputs)
        elif isinstance(op, PermuteOp):
            carried = [first[a] for a in op.perm]
    return tuple(size if size is not None else carried[a] for a, size in enumerate(shape))


def known_lengths(shape: Shape) -> Lengths:
    """A model input's least sizes: a dynamic length may be 1."""
    return tuple(1 if size is None else size for size in shape)


def size_problem(shape: Shape, least: Lengths) -> str | None:
    """Why a tensor of `shape` (least sizes `least`) is refused, or None: a length beyond int32 (a
    dynamic one included, as it is at least `least`), or more than MAX_ELEMENTS values per batch
    item."""
    if any(size > MAX_SIZE for size in least):
        return f"has a size beyond {MAX_SIZE:,} (int32)"
    values = math.prod(least[1:])
    if values > MAX_ELEMENTS:
        return f"holds {values:,} values per batch item (the limit is {MAX_ELEMENTS:,})"
    return None
