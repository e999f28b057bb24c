"""One `keras.ops` call recorded in a Functional model → typed ops and output shapes.

When a user calls `keras.ops.split(x, 2, axis=-1)` or `x * 0.5` on a symbolic tensor, Keras records
the operation in the model's config (`module: keras.src.ops.numpy`, `class_name: Split`) with its
arguments (tensors and Python numbers) in the call's `args`. Each supported operation has a parser
here; problems name the call by its op (`keras.ops.split`), not as a layer class. An operation with
several outputs (split) gives one op per output.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from deconv_compiler import activations
from deconv_compiler.conv_layer import Problems
from deconv_compiler.errors import FieldPath, shown
from deconv_compiler.ir import (
    ActivationOp,
    ClipOp,
    ConcatenateOp,
    EluOp,
    ExpandDimsOp,
    LeakyReluOp,
    MergeOp,
    Op,
    PermuteOp,
    ReluOp,
    ReshapeOp,
    ScalarOp,
    Shape,
    SliceOp,
    SoftmaxOp,
    SqueezeOp,
)
from deconv_compiler.keras_call import is_int
from deconv_compiler.keras_shapes import ShapeMismatch, concatenated_shape, dims, merged_shape, reshaped_shape


@dataclass(frozen=True)
class TensorArg:
    """A tensor argument of the call: the `index`-th of its input tensors."""

    index: int


@dataclass(frozen=True)
class OpCall:
    """One recorded operation call: its config, its positional arguments (tensors as
    `TensorArg`, lists kept as lists, numbers as they are), and its input tensors' shapes."""

    name: str
    op_name: str  # keras.ops.split
    config: Mapping[str, Any]
    args: tuple[Any, ...]
    input_shapes: tuple[Shape, ...]
    path: FieldPath
    problems: Problems

    def fail(self, message: str) -> None:
        self.problems.add(self.path, message)

    def axis(self, value: Any, rank: int, key: str = "axis") -> int | None:
        """A non-batch axis of a rank-`rank` tensor."""
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not -rank <= value < rank
            or value % rank == 0
        ):
            self.fail(f"{key}={shown(value)} must be an axis of the {rank}-D input other than the batch axis")
            return None
        return value % rank


Outputs = list[tuple[Op, Shape]]
OpParser = Callable[[OpCall], "Outputs | None"]


def op_name(class_name: str) -> str:
    """`TrueDivide` → `keras.ops.true_divide`: how messages name an operation."""
    if class_name == "ReLU":  # the one recorded from keras.activations, with its arguments
        return "keras.activations.relu"
    snake = re.sub("([a-z0-9])([A-Z])", r"\1_\2", class_name).lower()
    return f"keras.ops.{snake}"


# --- arithmetic ----------------------------------------------------------------------------------


def _binary(function: str) -> OpParser:
    def parse(call: OpCall) -> Outputs | None:
        if len(call.args) != 2:
            call.fail(f"takes 2 operands, got {len(call.args)}")
            return None
        a, b = call.args
        if isinstance(a, TensorArg) and isinstance(b, TensorArg):
            try:
                return [
                    (
                        MergeOp(function),
                        merged_shape([call.input_shapes[a.index], call.input_shapes[b.index]]),
                    )
                ]
            except ShapeMismatch as exc:
                call.fail(str(exc))
                return None
        tensor, number = (a, b) if isinstance(a, TensorArg) else (b, a)
        if not isinstance(tensor, TensorArg) or not _is_number(number):
            call.fail(f"operands must be tensors or numbers, got {shown(number)}")
            return None
        op = ScalarOp(function, float(number), constant_first=tensor is b)
        return [(op, call.input_shapes[tensor.index])]

    return parse


def _negative(call: OpCall) -> Outputs | None:
    return [(ScalarOp("multiply", -1.0), call.input_shapes[0])] if _one_tensor(call) else None


def _clip(call: OpCall) -> Outputs | None:
    if not _one_tensor(call):
        return None
    low, high = call.config.get("x_min"), call.config.get("x_max")
    if not all(v is None or _is_number(v) for v in (low, high)):
        call.fail(f"x_min and x_max must be numbers, got {shown(low)} and {shown(high)}")
        return None
    return [
        (
            ClipOp(None if low is None else float(low), None if high is None else float(high)),
            call.input_shapes[0],
        )
    ]


# --- shapes ------------------------------------------------------------------------------------


def _concatenate(call: OpCall) -> Outputs | None:
    items = call.args[0] if len(call.args) == 1 and isinstance(call.args[0], list) else call.args
    if len(items) < 2 or not all(isinstance(t, TensorArg) for t in items):
        call.fail("concatenates a list of at least 2 tensors")
        return None
    shapes = [call.input_shapes[t.index] for t in items]
    if len({len(s) for s in shapes}) != 1:
        call.fail(f"inputs of different ranks: {', '.join(dims(s) for s in shapes)}")
        return None
    axis = call.axis(call.config.get("axis", 0), len(shapes[0]))
    if axis is None:
        return None
    try:
        return [(ConcatenateOp(axis), concatenated_shape(shapes, axis))]
    except ShapeMismatch as exc:
        call.fail(str(exc))
        return None


def _reshape(call: OpCall) -> Outputs | None:
    if not _one_tensor(call):
        return None
    shape = call.input_shapes[0]
    new = call.config.get("newshape", call.config.get("new_shape"))
    if isinstance(new, int):
        new = [new]
    if not isinstance(new, list) or not new or not all(is_int(d) and (d > 0 or d == -1) for d in new):
        call.fail(f"newshape must be a list of positive sizes and -1, got {shown(new)}")
        return None
    batch, target = new[0], list(new[1:])
    if batch not in (-1, shape[0]) or (batch == -1 and -1 in target):
        call.fail(f"newshape {shown(new)} must keep the batch axis first (-1 or {shape[0]}), the only -1")
        return None
    try:
        return [(ReshapeOp(tuple(target)), reshaped_shape(shape, target))]
    except ShapeMismatch as exc:
        call.fail(str(exc))
        return None


def _transpose(call: OpCall) -> Outputs | None:
    if not _one_tensor(call):
        return None
    shape = call.input_shapes[0]
    axes = call.config.get("axes")
    rank = len(shape)
    if axes is None:
        axes = list(reversed(range(rank)))
    if not isinstance(axes, list) or sorted(a % rank if is_int(a) else -1 for a in axes) != list(range(rank)):
        call.fail(f"axes must be a permutation of the {rank} axes, got {shown(axes)}")
        return None
    perm = tuple(int(a) % rank for a in axes)
    if perm[0] != 0:
        call.fail(f"axes={shown(axes)} moves the batch axis, which the compiled model keeps first")
        return None
    return [(PermuteOp(perm), tuple(shape[a] for a in perm))]


def _axes_list(call: OpCall, value: Any, rank: int) -> tuple[int, ...] | None:
    items = value if isinstance(value, list) else [value]
    axes = [call.axis(a, rank) for a in items]
    return None if any(a is None for a in axes) else tuple(sorted({int(a or 0) for a in axes}))


def _squeeze(call: OpCall) -> Outputs | None:
    if not _one_tensor(call):
        return None
    shape = call.input_shapes[0]
    value = call.config.get("axis")
    if value is None:
        value = [a for a in range(1, len(shape)) if shape[a] == 1]
    axes = _axes_list(call, value, len(shape))
    if axes is None:
        return None
    if any(shape[a] != 1 for a in axes):
        call.fail(f"cannot squeeze axes {list(axes)} of {dims(shape)}: their size must be 1")
        return None
    return [(SqueezeOp(axes), tuple(d for a, d in enumerate(shape) if a not in axes))]


def _expand_dims(call: OpCall) -> Outputs | None:
    if not _one_tensor(call):
        return None
    shape = call.input_shapes[0]
    value = call.config.get("axis")
    count = len(value) if isinstance(value, list) else 1
    axes = _axes_list(call, value, len(shape) + count)
    if axes is None:
        return None
    rest = iter(shape)
    out = tuple(1 if a in axes else next(rest) for a in range(len(shape) + count))
    return [(ExpandDimsOp(axes), out)]


def _split(call: OpCall) -> Outputs | None:
    if not _one_tensor(call):
        return None
    shape = call.input_shapes[0]
    axis = call.axis(call.config.get("axis", 0), len(shape))
    if axis is None:
        return None
    size = shape[axis]
    sections = call.config.get("indices_or_sections")
    if size is None:
        call.fail(f"splits axis {axis} of {dims(shape)}, whose size is unknown")
        return None
    if isinstance(sections, int) and not isinstance(sections, bool) and sections > 0:
        if size % sections:
            call.fail(f"cannot split axis {axis} of size {size} into {sections} equal parts")
            return None
        bounds = [size // sections * i for i in range(sections + 1)]
    elif isinstance(sections, list) and all(is_int(i) for i in sections):
        bounds = [0, *(min(max(i if i >= 0 else i + size, 0), size) for i in sections), size]
    else:
        call.fail(f"indices_or_sections must be a positive count or a list of indices, got {shown(sections)}")
        return None
    outputs: Outputs = []
    for start, stop in zip(bounds, bounds[1:], strict=False):
        stop = max(stop, start)
        outputs.append((SliceOp(axis, start, stop), (*shape[:axis], stop - start, *shape[axis + 1 :])))
    return outputs


# --- activations -------------------------------------------------------------------------------


def _activation(name: str) -> OpParser:
    def parse(call: OpCall) -> Outputs | None:
        return [(ActivationOp(name), call.input_shapes[0])] if _one_tensor(call) else None

    return parse


def _gelu(call: OpCall) -> Outputs | None:
    if not _one_tensor(call):
        return None
    approximate = call.config.get("approximate", True)  # keras.ops.gelu's default, unlike the activation's
    if not isinstance(approximate, bool):
        call.fail(f"approximate must be true or false, got {shown(approximate)}")
        return None
    return [(ActivationOp("gelu_tanh" if approximate else "gelu"), call.input_shapes[0])]


def _relu_op(call: OpCall) -> Outputs | None:
    """keras.activations.relu(x, negative_slope, max_value, threshold)."""
    if not _one_tensor(call):
        return None
    values = [
        call.config.get(k, d) for k, d in (("max_value", None), ("negative_slope", 0.0), ("threshold", 0.0))
    ]
    if not all(v is None or _is_number(v) for v in values) or values[1] is None or values[2] is None:
        call.fail(f"max_value, negative_slope and threshold must be numbers, got {shown(values)}")
        return None
    max_value, slope, threshold = values
    op = ReluOp(None if max_value is None else float(max_value), float(slope), float(threshold))
    return [(op, call.input_shapes[0])]


def _leaky_relu(call: OpCall) -> Outputs | None:
    slope = call.config.get("negative_slope", 0.2)
    if not _one_tensor(call) or not _is_number(slope):
        if _one_tensor(call):
            call.fail(f"negative_slope must be a number, got {shown(slope)}")
        return None
    return [(LeakyReluOp(float(slope)), call.input_shapes[0])]


def _elu(call: OpCall) -> Outputs | None:
    alpha = call.config.get("alpha", 1.0)
    if not _one_tensor(call) or not _is_number(alpha):
        if _one_tensor(call):
            call.fail(f"alpha must be a number, got {shown(alpha)}")
        return None
    return [(EluOp(float(alpha)), call.input_shapes[0])]


def _softmax(call: OpCall) -> Outputs | None:
    if not _one_tensor(call):
        return None
    shape = call.input_shapes[0]
    axis = call.axis(call.config.get("axis", -1), len(shape))
    return None if axis is None else [(SoftmaxOp((axis,)), shape)]


# Operations with no arguments besides the tensor that are activations of the table.
_PLAIN_ACTIVATIONS = {
    "Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid", "Tanh": "tanh", "Silu": "silu",
    "Swish": "silu", "Softplus": "softplus", "Softsign": "softsign", "Selu": "selu",
    "HardSigmoid": "hard_sigmoid", "HardSilu": "hard_silu", "HardSwish": "hard_silu", "Mish": "mish",
    "LogSigmoid": "log_sigmoid", "Exp": "exponential",
}  # fmt: skip

OP_PARSERS: dict[str, OpParser] = {
    **{
        name: _activation(table)
        for name, table in _PLAIN_ACTIVATIONS.items()
        if activations.canonical_activation(table) is not None
    },
    "Add": _binary("add"),
    "Subtract": _binary("subtract"),
    "Multiply": _binary("multiply"),
    "Divide": _binary("divide"),
    "TrueDivide": _binary("divide"),
    "Maximum": _binary("maximum"),
    "Minimum": _binary("minimum"),
    "Negative": _negative,
    "Clip": _clip,
    "Concatenate": _concatenate,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "ExpandDims": _expand_dims,
    "Split": _split,
    "Gelu": _gelu,
    "ReLU": _relu_op,  # keras.activations.relu with its arguments
    "LeakyRelu": _leaky_relu,
    "Elu": _elu,
    "Softmax": _softmax,
}
# keras.ops calls recorded in a Functional config: operations, not layers, so they own no weights
# and take no place in the weights file's numbering.
OP_MODULES = ("keras.src.ops.", "keras.src.activations.", "keras.ops", "keras.activations")


def is_op_entry(entry: Mapping[str, Any]) -> bool:
    """A keras.ops call. Keras 3's legacy .h5 writer drops `module`: there, a supported operation
    is known by its config, which lacks the `trainable` and `dtype` keys every layer has."""
    module = entry.get("module")
    if isinstance(module, str):
        return module.startswith(OP_MODULES)
    body, class_name = entry.get("config"), entry.get("class_name")
    return (
        isinstance(class_name, str)
        and class_name in OP_PARSERS
        and isinstance(body, Mapping)
        and "trainable" not in body
        and "dtype" not in body
    )


SUPPORTED_OPS_TEXT = ", ".join(  # the keras.ops family first, then keras.activations.relu
    sorted((op_name(name) for name in OP_PARSERS), key=lambda op: (not op.startswith("keras.ops."), op))
)


# --- helpers -------------------------------------------------------------------------------------


def _one_tensor(call: OpCall) -> bool:
    if len(call.args) != 1 or not isinstance(call.args[0], TensorArg):
        call.fail(f"takes one tensor, got {len(call.args)} argument(s)")
        return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
