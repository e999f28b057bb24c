"""One Keras layer call (config, input shapes, weight arrays) → a typed op and its output shape.

A parser per supported layer class, each with Keras' inference semantics: dropout and noise layers
are identities, BatchNormalization keeps its moving statistics, ReLU/LeakyReLU/ELU/PReLU/Softmax
keep their arguments. Transposed convolutions go through `conv_layer`, the validator specs use, so a
saved layer is held to exactly the rules a spec is. Convolutions, pooling, the normalizations and
the merges follow Keras 3.15's own validation and `compute_output_shape` (cited where Keras
surprises). Problems name the layer and its config key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deconv_compiler.conv_layer import Problems, parse_activation, parse_conv_layer
from deconv_compiler.errors import FieldPath, shown
from deconv_compiler.ir import (
    ActivationOp,
    BatchNormOp,
    ConcatenateOp,
    ConvOp,
    ConvTransposeOp,
    DenseOp,
    EluOp,
    FlattenOp,
    GlobalPoolOp,
    GroupNormOp,
    IdentityOp,
    LayerNormOp,
    LeakyReluOp,
    MergeOp,
    NormalizeOp,
    Op,
    PadOp,
    PermuteOp,
    PoolOp,
    PReluOp,
    ReluOp,
    RepeatVectorOp,
    RescaleOp,
    ReshapeOp,
    Shape,
    SoftmaxOp,
    UnitNormOp,
    UpSampleOp,
)
from deconv_compiler.limits import MAX_SIZE

IDENTITY_LAYERS = (
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization",
)  # fmt: skip
CONV_LAYERS = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")


@dataclass(frozen=True)
class LayerCall:
    """One call of a Keras layer as its parser sees it: the config, the shapes it is called on,
    its weight arrays from the file, and where problems go."""

    name: str
    class_name: str
    config: Mapping[str, Any]
    path: FieldPath
    input_shapes: tuple[Shape, ...]
    arrays: tuple[np.ndarray, ...] | None
    policy: str  # the layer's dtype policy
    problems: Problems

    def fail(self, message: str, key: str | None = None) -> None:
        self.problems.add(self.path if key is None else (*self.path, key), message)

    @property
    def shape(self) -> Shape:
        return self.input_shapes[0]

    def single_input(self) -> bool:
        if len(self.input_shapes) != 1:
            self.fail(f"takes one input, got {len(self.input_shapes)}")
            return False
        return True

    def weights(self, count: int) -> tuple[np.ndarray, ...] | None:
        arrays = self.arrays
        if count == 0 and not arrays:
            return ()
        if arrays is None or len(arrays) != count:
            found = "none" if arrays is None else f"{len(arrays)} array(s)"
            self.fail(f"the weights file does not match the config: expected {count} array(s), found {found}")
            return None
        return tuple(np.asarray(a) for a in arrays)

    def number(self, key: str, default: float | None) -> float | None:
        """The number at `key` (its default when absent); None when the layer has none (its
        default is None) or when a problem was reported (a null where a number is needed)."""
        value = self.config.get(key, default)
        if value is None:
            if default is not None:
                self.fail("must be a number, got null", key)
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(f"must be a number, got {shown(value)}", key)
            return None
        return float(value)

    def axis(self, value: Any, key: str) -> int | None:
        rank = len(self.shape)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]  # tf.keras wrote BatchNormalization(axis=3) as [3]
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not -rank <= value < rank
            or value % rank == 0
        ):
            self.fail(
                f"must be an axis of the {rank}-D input other than the batch axis, got {shown(value)}", key
            )
            return None
        return value % rank

    def ints(self, key: str, count: int, default: Any) -> tuple[int, ...] | None:
        value = self.config.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value] * count
        if (
            not isinstance(value, (list, tuple))
            or len(value) != count
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        ):
            self.fail(f"must be {count} non-negative integer(s), got {shown(value)}", key)
            return None
        return tuple(value)

    def pairs(self, key: str, count: int, default: Any) -> tuple[tuple[int, int], ...] | None:
        """ZeroPadding/Cropping amounts: an int, `count` ints (symmetric), or `count` pairs."""
        value = self.config.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value] * count
        if (
            count == 1
            and isinstance(value, (list, tuple))
            and len(value) == 2
            and all(isinstance(v, int) for v in value)
        ):
            value = [value]
        if isinstance(value, (list, tuple)) and len(value) == count:
            pairs = [
                (v, v) if isinstance(v, int) else tuple(v) if isinstance(v, (list, tuple)) else None
                for v in value
            ]
            if all(
                p is not None
                and len(p) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in p)
                for p in pairs
            ):
                return tuple((int(p[0]), int(p[1])) for p in pairs if p is not None)
        self.fail(f"must be {count} pair(s) of non-negative integers, got {shown(value)}", key)
        return None

    def spatial_axes(self, rank: int, has_format: bool = True) -> tuple[tuple[int, ...], int] | None:
        """The spatial Keras axes of a data_format-aware layer, and its channel axis."""
        if len(self.shape) != rank + 2:
            self.fail(f"expects a {rank + 2}-D input, got shape {_fmt(self.shape)}")
            return None
        data_format = self.data_format() if has_format else "channels_last"
        if data_format is None:
            return None
        if data_format == "channels_last":
            return tuple(range(1, rank + 1)), rank + 1
        return tuple(range(2, rank + 2)), 1

    def data_format(self) -> str | None:
        """Keras' `standardize_data_format`: lower-cased; None is the default, channels_last."""
        value = self.config.get("data_format")
        if value is None:
            return "channels_last"
        if isinstance(value, str) and value.lower() in ("channels_last", "channels_first"):
            return value.lower()
        self.fail(f"must be 'channels_last' or 'channels_first', got {shown(value)}", "data_format")
        return None

    def flag(self, key: str, default: bool) -> bool | None:
        value = self.config.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"must be true or false, got {shown(value)}", key)
            return None
        return value

    def count(self, key: str, default: int | None) -> int | None:
        """A positive integer (filters, groups, depth_multiplier...); `default` None: required."""
        value = self.config.get(key, default)
        if not _is_int(value) or not 0 < value <= MAX_SIZE:
            self.fail(f"must be a positive integer, got {shown(value)}", key)
            return None
        return int(value)

    def sizes(self, key: str, rank: int, default: Any, minimum: int = 1) -> tuple[int, ...] | None:
        """Keras' `standardize_tuple`: one integer for every axis or exactly `rank` integers,
        each >= `minimum`; `default` None: required."""
        value = self.config.get(key, default)
        if value is None:
            self.fail("is required", key)
            return None
        if _is_int(value):
            value = [value] * rank
        if not isinstance(value, (list, tuple)) or len(value) != rank or not all(_is_int(v) for v in value):
            self.fail(f"must be an integer or a list of {rank} integers, got {shown(value)}", key)
            return None
        if not all(minimum <= v <= MAX_SIZE for v in value):
            self.fail(f"must be >= {minimum} (and <= {MAX_SIZE:,}) on every axis, got {shown(value)}", key)
            return None
        return tuple(int(v) for v in value)

    def padding(self, allowed: tuple[str, ...], lower: bool = True) -> str | None:
        """Keras' `standardize_padding` lower-cases (convolutions); pooling layers keep the
        string as given, and their `compute_output_shape` refuses anything but lower case."""
        value = self.config.get("padding", "valid")
        text = value.lower() if isinstance(value, str) and lower else value
        if text not in allowed:
            names = ", ".join(repr(a) for a in allowed)
            case = " (case-insensitive)" if lower else ""
            self.fail(f"must be one of {names}{case}, got {shown(value)}", "padding")
            return None
        return str(text)

    def axes(self, value: Any, key: str, batch: bool = False) -> tuple[int, ...] | None:
        """An axis or a list of distinct axes of the input, non-negative, in the order given;
        the batch axis only where `batch` (Keras reduces over it, the model then depends on it)."""
        rank = len(self.shape)
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        low = 0 if batch else 1
        if (
            not items
            or not all(_is_int(a) and -rank <= a < rank and (a % rank) >= low for a in items)
            or len({a % rank for a in items}) != len(items)
        ):
            which = "axes" if batch else "axes other than the batch axis"
            self.fail(f"must be one or more distinct {which} of the {rank}-D input, got {shown(value)}", key)
            return None
        return tuple(int(a) % rank for a in items)

    def no_weights(self) -> bool:
        if self.arrays:
            self.fail(f"the weights file holds {len(self.arrays)} array(s) for a layer that has none")
            return False
        return True


LayerParser = Callable[[LayerCall], "tuple[Op, Shape] | None"]


# --- the layers ----------------------------------------------------------------------------------


def _conv_transpose(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    config = ctx.config
    groups = config.get("groups", 1)
    if groups != 1:
        ctx.fail(f"grouped transposed convolutions are not supported (groups={shown(groups)})", "groups")
        return None
    use_bias = config.get("use_bias", True)
    arrays = ctx.weights(2 if use_bias is True else 1)
    if arrays is None:
        return None
    data = {key: config[key] for key in _CONV_ARGUMENTS if key in config}
    data["type"] = ctx.class_name
    data["name"] = ctx.name
    data["dtype"] = ctx.policy
    data["weights"] = list(arrays)
    layer = parse_conv_layer(data, ctx.path, ctx.shape, ctx.path, ctx.problems, counts={})
    if layer is None or layer.weights is None:
        return None
    return ConvTransposeOp(layer, layer.weights), layer.output_shape


# Arguments that decide the output; initializers, regularizers, constraints and `trainable` do not.
_CONV_ARGUMENTS = (
    "filters", "kernel_size", "strides", "padding", "output_padding", "data_format", "dilation_rate",
    "activation", "use_bias",
)  # fmt: skip


def _activation_name(ctx: LayerCall, key: str = "activation") -> str | None:
    return parse_activation(ctx.config.get(key), (*ctx.path, key), ctx.problems)


def _dense(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    for key in ("lora_rank", "quantization_config"):
        if ctx.config.get(key) is not None:
            ctx.fail(f"{key} is not supported (got {shown(ctx.config.get(key))})", key)
            return None
    units = ctx.config.get("units")
    if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
        ctx.fail(f"must be a positive integer, got {shown(units)}", "units")
        return None
    activation = _activation_name(ctx)
    use_bias = ctx.config.get("use_bias", True) is True
    if len(ctx.shape) < 2 or ctx.shape[-1] is None:
        ctx.fail(f"needs an input whose last axis is known, got shape {_fmt(ctx.shape)}")
        return None
    arrays = ctx.weights(2 if use_bias else 1)
    if arrays is None or activation is None:
        return None
    kernel, bias = arrays[0], arrays[1] if use_bias else None
    if not _expect_shape(ctx, "kernel", kernel, (ctx.shape[-1], units)):
        return None
    if bias is not None and not _expect_shape(ctx, "bias", bias, (units,)):
        return None
    return DenseOp(kernel, bias, activation), (*ctx.shape[:-1], units)


def _batch_norm(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    axis = ctx.axis(ctx.config.get("axis", -1), "axis")
    epsilon = ctx.number("epsilon", 1e-3)
    for key in ("renorm",):
        if ctx.config.get(key):
            ctx.fail("batch renormalization is not supported", key)
            return None
    if axis is None or epsilon is None:
        return None
    size = ctx.shape[axis]
    if size is None:
        ctx.fail(f"the normalized axis {axis} of the input {_fmt(ctx.shape)} must have a known size")
        return None
    scale, center = ctx.config.get("scale", True) is not False, ctx.config.get("center", True) is not False
    arrays = ctx.weights(2 + scale + center)
    if arrays is None:
        return None
    names = [*(["gamma"] if scale else []), *(["beta"] if center else []), "moving_mean", "moving_variance"]
    values = dict(zip(names, arrays, strict=True))
    for tensor, array in values.items():
        if not _expect_shape(ctx, tensor, array, (size,)):
            return None
    if np.any(values["moving_variance"] + epsilon <= 0):
        ctx.fail("moving_variance + epsilon must be positive")
        return None
    op = BatchNormOp(
        axis,
        values["moving_mean"],
        values["moving_variance"],
        values.get("gamma"),
        values.get("beta"),
        epsilon,
    )
    return op, ctx.shape


def _activation_layer(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    name = _activation_name(ctx)
    shape = None if name is None else _activation_shape(ctx, name, ctx.shape)
    return None if name is None or shape is None else (ActivationOp(name), shape)


def _activation_shape(ctx: LayerCall, activation: str, shape: Shape) -> Shape | None:
    """The shape after `activation`: glu halves Keras' last axis (an odd size is refused)."""
    if activation != "glu":
        return shape
    last = shape[-1]
    if last is not None and last % 2:
        ctx.fail(f"glu halves the last axis; its size is {last} (odd)", "activation")
        return None
    return (*shape[:-1], None if last is None else last // 2)


def _relu(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    before = len(ctx.problems.found)
    max_value = ctx.number("max_value", None)
    slope = ctx.number("negative_slope", 0.0)
    threshold = ctx.number("threshold", 0.0)
    if slope is None or threshold is None or len(ctx.problems.found) > before:
        return None
    if slope < 0 or threshold < 0 or (max_value is not None and max_value < 0):
        ctx.fail("max_value, negative_slope and threshold must be non-negative numbers")
        return None
    return ReluOp(max_value, slope, threshold), ctx.shape


def _leaky_relu(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    key = "negative_slope" if "negative_slope" in ctx.config else "alpha"  # Keras 2 called it alpha
    slope = ctx.number(key, 0.3)
    return None if slope is None else (LeakyReluOp(slope), ctx.shape)


def _elu(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    alpha = ctx.number("alpha", 1.0)
    return None if alpha is None else (EluOp(alpha), ctx.shape)


def _prelu(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    shared = ctx.config.get("shared_axes")
    rank = len(ctx.shape)
    shared_axes: tuple[int, ...] = ()
    if shared is not None:
        items = shared if isinstance(shared, list) else [shared]
        if not all(isinstance(a, int) and not isinstance(a, bool) and 1 <= a < rank for a in items):
            ctx.fail(f"must be axes 1..{rank - 1}, got {shown(shared)}", "shared_axes")
            return None
        shared_axes = tuple(items)
    expected = tuple(1 if a in shared_axes else ctx.shape[a] for a in range(1, rank))
    if any(d is None for d in expected):
        ctx.fail(f"needs known sizes on its non-shared axes, got input {_fmt(ctx.shape)}")
        return None
    arrays = ctx.weights(1)
    if arrays is None or not _expect_shape(ctx, "alpha", arrays[0], tuple(int(d or 1) for d in expected)):
        return None
    return PReluOp(arrays[0]), ctx.shape


def _softmax(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    value = ctx.config.get("axis", -1)
    items = value if isinstance(value, list) else [value]
    if not items:
        ctx.fail("must be an axis or a non-empty list of axes, got []", "axis")
        return None
    axes = [ctx.axis(a, "axis") for a in items]
    if any(a is None for a in axes):
        return None
    return SoftmaxOp(tuple(sorted({a for a in axes if a is not None}))), ctx.shape


def _identity(ctx: LayerCall) -> tuple[Op, Shape] | None:
    return (IdentityOp(), ctx.shape) if ctx.single_input() else None


def _broadcast(ctx: LayerCall) -> Shape | None:
    """Keras' merge shape (`Merge.compute_output_shape`): the one known batch size; elsewhere
    sizes equal or 1, and None wherever an input's size is None (Keras does not guess)."""
    shapes = list(ctx.input_shapes)
    if len({len(s) for s in shapes}) != 1:
        ctx.fail(
            "inputs of different ranks are not supported (Keras would insert axes after the batch "
            f"axis): {', '.join(_fmt(s) for s in shapes)}"
        )
        return None
    batches = {s[0] for s in shapes} - {None}
    if len(batches) > 1:
        ctx.fail(f"Cannot merge tensors with different batch sizes: {', '.join(_fmt(s) for s in shapes)}")
        return None
    out: list[int | None] = [batches.pop() if batches else None]
    for sizes in zip(*(s[1:] for s in shapes), strict=True):
        known = {s for s in sizes if s is not None and s != 1}
        if len(known) > 1:
            ctx.fail(f"Inputs have incompatible shapes: {', '.join(_fmt(s) for s in shapes)}")
            return None
        out.append(None if None in sizes else known.pop() if known else 1)
    return tuple(out)


def _merge(function: str, inputs: int | None = None) -> LayerParser:
    """Add, Subtract (exactly 2 inputs), Multiply, Average, Maximum, Minimum: Keras merges a
    list of one input or more."""

    def parse(ctx: LayerCall) -> tuple[Op, Shape] | None:
        count = len(ctx.input_shapes)
        if (inputs is not None and count != inputs) or count < 1:
            ctx.fail(f"A `{ctx.class_name}` layer should be called on exactly {inputs} inputs, got {count}")
            return None
        shape = _broadcast(ctx)
        return None if shape is None else (MergeOp(function), shape)

    return parse


def _concatenate(ctx: LayerCall) -> tuple[Op, Shape] | None:
    shapes = list(ctx.input_shapes)
    if len(shapes) < 2 or len({len(s) for s in shapes}) != 1:
        ctx.fail(f"concatenates at least 2 inputs of one rank, got {', '.join(_fmt(s) for s in shapes)}")
        return None
    axis = ctx.axis(ctx.config.get("axis", -1), "axis")
    if axis is None:
        return None
    out: list[int | None] = []
    for a, sizes in enumerate(zip(*shapes, strict=True)):
        if a == axis:
            out.append(None if None in sizes else sum(int(s or 0) for s in sizes))
            continue
        known = {s for s in sizes if s is not None}
        if len(known) > 1:
            ctx.fail(f"inputs must match except on axis {axis}: {', '.join(_fmt(s) for s in shapes)}")
            return None
        out.append(known.pop() if known else None)
    return ConcatenateOp(axis), tuple(out)


def _reshape(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    target = ctx.config.get("target_shape")
    if (
        not isinstance(target, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1) for d in target)
        or target.count(-1) > 1
    ):
        ctx.fail(f"must be a list of positive sizes with at most one -1, got {shown(target)}", "target_shape")
        return None
    known = ctx.shape[1:]
    shape: list[int | None] = list(target)
    if all(d is not None for d in known):
        total, fixed = math.prod(int(d or 0) for d in known), math.prod(d for d in target if d != -1)
        if -1 in target:
            if fixed == 0 or total % fixed:
                ctx.fail(f"cannot reshape {_fmt(ctx.shape)} to {shown(target)}", "target_shape")
                return None
            shape[target.index(-1)] = total // fixed
        elif total != fixed:
            ctx.fail(f"cannot reshape {_fmt(ctx.shape)} ({total} values) to {shown(target)}", "target_shape")
            return None
    else:
        shape = [None if d == -1 else d for d in target]
    return ReshapeOp(tuple(target)), (ctx.shape[0], *shape)


def _flatten(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    rest = ctx.shape[1:]
    size = math.prod(int(d) for d in rest if d is not None) if all(d is not None for d in rest) else None
    return FlattenOp(ctx.config.get("data_format") == "channels_first"), (ctx.shape[0], size)


def _padding_layer(rank: int, cropping: bool) -> LayerParser:
    key = "cropping" if cropping else "padding"

    def parse(ctx: LayerCall) -> tuple[Op, Shape] | None:
        if not ctx.single_input():
            return None
        found = ctx.spatial_axes(rank, has_format=not (cropping and rank == 1))
        amounts = ctx.pairs(key, rank, 1)
        if found is None or amounts is None:
            return None
        axes, _ = found
        shape = list(ctx.shape)
        for axis, (begin, end) in zip(axes, amounts, strict=True):
            size = shape[axis]
            if size is None:
                continue
            if cropping and begin + end >= size:
                ctx.fail(f"cropping {begin}+{end} leaves nothing of axis {axis} (size {size})", key)
                return None
            shape[axis] = size - begin - end if cropping else size + begin + end
        sign = -1 if cropping else 1
        op = PadOp(axes, tuple(sign * b for b, _ in amounts), tuple(sign * e for _, e in amounts))
        return op, tuple(shape)

    return parse


def _upsampling(rank: int) -> LayerParser:
    def parse(ctx: LayerCall) -> tuple[Op, Shape] | None:
        if not ctx.single_input():
            return None
        found = ctx.spatial_axes(rank, has_format=rank > 1)
        factors = ctx.ints("size", rank, 2)
        interpolation = ctx.config.get("interpolation", "nearest")
        if interpolation not in ("nearest", "bilinear"):
            ctx.fail(
                f"interpolation {shown(interpolation)} is not supported (nearest, bilinear)", "interpolation"
            )
            return None
        if found is None or factors is None:
            return None
        if any(f == 0 for f in factors):
            ctx.fail(f"sizes must be positive, got {factors}", "size")
            return None
        axes, channel_axis = found
        shape = list(ctx.shape)
        for axis, factor in zip(axes, factors, strict=True):
            size = shape[axis]
            shape[axis] = None if size is None else size * factor
        return UpSampleOp(axes, factors, str(interpolation), channel_axis), tuple(shape)

    return parse


# --- convolutions and pooling --------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """A sliding window's validated arguments (a convolution's or a pooling layer's)."""

    size: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: str
    axes: tuple[int, ...]  # the spatial Keras axes
    channel_axis: int


def window_length(length: int | None, size: int, stride: int, dilation: int, padding: str) -> int | None:
    """Keras' `compute_conv_output_shape` (and `compute_pooling_output_shape`, dilation 1) on one
    axis: `valid` keeps the windows that fit, `same` and `causal` give ceil(length / stride)."""
    if length is None:
        return None
    if padding == "valid":
        return (length - (size - 1) * dilation - 1) // stride + 1
    return (length - 1) // stride + 1


def _window_shape(ctx: LayerCall, window: _Window, channels: int | None) -> Shape | None:
    shape = list(ctx.shape)
    for axis, k, s, d in zip(window.axes, window.size, window.strides, window.dilation, strict=True):
        length = window_length(shape[axis], k, s, d, window.padding)
        if length is not None and length <= 0:
            ctx.fail(
                f"Computed output size would be zero or negative: axis {axis} of the input "
                f"{_fmt(ctx.shape)} is shorter than the window ({(k - 1) * d + 1}) with padding='valid'"
            )
            return None
        shape[axis] = length
    shape[window.channel_axis] = channels
    return tuple(shape)


def _conv_window(ctx: LayerCall, rank: int, paddings: tuple[str, ...]) -> _Window | None:
    found = ctx.spatial_axes(rank)
    size = ctx.sizes("kernel_size", rank, None)
    strides = ctx.sizes("strides", rank, 1)
    dilation = ctx.sizes("dilation_rate", rank, 1)
    padding = ctx.padding(paddings)
    if found is None or size is None or strides is None or dilation is None or padding is None:
        return None
    return _Window(size, strides, dilation, padding, *found)


def _in_channels(ctx: LayerCall, window: _Window) -> int | None:
    channels = ctx.shape[window.channel_axis]
    if channels is None:
        ctx.fail(f"needs a known channel axis ({window.channel_axis}), got input shape {_fmt(ctx.shape)}")
    return channels


def _conv_head(ctx: LayerCall, rank: int, paddings: tuple[str, ...]) -> tuple[_Window, int, str, bool] | None:
    """What every convolution validates: window, input channels, activation, use_bias. A
    `lora_rank` changes nothing here: Keras saves the kernel with the LoRA delta merged in."""
    if not ctx.single_input():
        return None
    window = _conv_window(ctx, rank, paddings)
    activation, use_bias = _activation_name(ctx), ctx.flag("use_bias", True)
    if window is None or activation is None or use_bias is None:
        return None
    channels = _in_channels(ctx, window)
    return None if channels is None else (window, channels, activation, use_bias)


def _sized_for_dilation(ctx: LayerCall, window: _Window) -> bool:
    """Depthwise and separable convs may have strides > 1 and dilation > 1 together. With
    `same`, an unknown size with a stride > 1 leaves the padding to the runtime (SAME_UPPER),
    and onnxruntime refuses SAME_UPPER with any dilation."""
    unknown = any(ctx.shape[a] is None and s > 1 for a, s in zip(window.axes, window.strides, strict=True))
    if window.padding == "same" and unknown and max(window.dilation) > 1:
        ctx.fail(
            "padding='same' with strides > 1 and dilation_rate > 1 needs known spatial sizes "
            f"(onnxruntime cannot pad a dilated conv for a size it learns at run time), got input "
            f"{_fmt(ctx.shape)}",
            "dilation_rate",
        )
        return False
    return True


def _conv_result(ctx: LayerCall, window: _Window, channels: int, activation: str) -> Shape | None:
    shape = _window_shape(ctx, window, channels)
    return None if shape is None else _activation_shape(ctx, activation, shape)


def _conv(rank: int) -> LayerParser:
    """Conv1D/2D/3D: kernel (k..., in/groups, filters), bias (filters,); Conv1D also `causal`."""

    def parse(ctx: LayerCall) -> tuple[Op, Shape] | None:
        head = _conv_head(ctx, rank, ("valid", "same", "causal") if rank == 1 else ("valid", "same"))
        filters, groups = ctx.count("filters", None), ctx.count("groups", 1)
        if head is None or filters is None or groups is None:
            return None
        window, channels, activation, use_bias = head
        if max(window.strides) > 1 and max(window.dilation) > 1:
            ctx.fail(
                "`strides > 1` not supported in conjunction with `dilation_rate > 1`. "
                f"Received: strides={window.strides} and dilation_rate={window.dilation}",
                "dilation_rate",
            )
            return None
        if filters % groups or channels % groups:
            ctx.fail(
                f"the input channels ({channels}) and filters ({filters}) must be divisible by groups",
                "groups",
            )
            return None
        shape = _conv_result(ctx, window, filters, activation)
        arrays = ctx.weights(2 if use_bias else 1)
        if shape is None or arrays is None:
            return None
        bias = arrays[1] if use_bias else None
        if not _expect_shape(ctx, "kernel", arrays[0], (*window.size, channels // groups, filters)) or (
            bias is not None and not _expect_shape(ctx, "bias", bias, (filters,))
        ):
            return None
        channels_first = window.channel_axis == 1
        op = ConvOp(
            rank, arrays[0], bias, window.strides, window.padding, window.dilation, groups, channels_first,
            activation,
        )  # fmt: skip
        return op, shape

    return parse


def _depthwise_kernel(
    ctx: LayerCall, array: np.ndarray, window: _Window, channels: int, multiplier: int
) -> np.ndarray | None:
    """Keras' depthwise kernel (k..., in, multiplier) as Keras' `depthwise_conv` reshapes it: a
    grouped conv kernel (k..., 1, in * multiplier), output channel c * multiplier + m."""
    if not _expect_shape(ctx, "depthwise kernel", array, (*window.size, channels, multiplier)):
        return None
    return array.reshape((*window.size, 1, channels * multiplier))


def _depthwise(rank: int) -> LayerParser:
    """DepthwiseConv1D/2D: a conv with one group per input channel. Unlike Conv, Keras lets
    strides > 1 and dilation > 1 go together here (its docstring says otherwise)."""

    def parse(ctx: LayerCall) -> tuple[Op, Shape] | None:
        head = _conv_head(ctx, rank, ("valid", "same"))
        multiplier = ctx.count("depth_multiplier", 1)
        if head is None or multiplier is None:
            return None
        window, channels, activation, use_bias = head
        filters = channels * multiplier
        shape = _conv_result(ctx, window, filters, activation) if _sized_for_dilation(ctx, window) else None
        arrays = ctx.weights(2 if use_bias else 1)
        if shape is None or arrays is None:
            return None
        kernel = _depthwise_kernel(ctx, arrays[0], window, channels, multiplier)
        bias = arrays[1] if use_bias else None
        if kernel is None or (bias is not None and not _expect_shape(ctx, "bias", bias, (filters,))):
            return None
        channels_first = window.channel_axis == 1
        op = ConvOp(
            rank, kernel, bias, window.strides, window.padding, window.dilation, channels, channels_first,
            activation,
        )  # fmt: skip
        return op, shape

    return parse


def _separable(rank: int) -> LayerParser:
    """SeparableConv1D/2D: the depthwise conv, then the 1x1 pointwise kernel
    (1..., in * multiplier, filters), then the bias (filters,). Weights in that order."""

    def parse(ctx: LayerCall) -> tuple[Op, Shape] | None:
        head = _conv_head(ctx, rank, ("valid", "same"))
        multiplier, filters = ctx.count("depth_multiplier", 1), ctx.count("filters", None)
        if head is None or multiplier is None or filters is None:
            return None
        window, channels, activation, use_bias = head
        shape = _conv_result(ctx, window, filters, activation) if _sized_for_dilation(ctx, window) else None
        arrays = ctx.weights(3 if use_bias else 2)
        if shape is None or arrays is None:
            return None
        kernel = _depthwise_kernel(ctx, arrays[0], window, channels, multiplier)
        pointwise, bias = arrays[1], arrays[2] if use_bias else None
        if (
            kernel is None
            or not _expect_shape(
                ctx, "pointwise kernel", pointwise, (*[1] * rank, channels * multiplier, filters)
            )
            or (bias is not None and not _expect_shape(ctx, "bias", bias, (filters,)))
        ):
            return None
        channels_first = window.channel_axis == 1
        op = ConvOp(
            rank, kernel, bias, window.strides, window.padding, window.dilation, channels, channels_first,
            activation, pointwise,
        )  # fmt: skip
        return op, shape

    return parse


def _pool(rank: int, function: str) -> LayerParser:
    """MaxPooling/AveragePooling 1D-3D. Keras: MaxPooling's pool_size defaults to 2 on every axis,
    AveragePooling's is required; strides None means pool_size; padding is not lower-cased."""

    def parse(ctx: LayerCall) -> tuple[Op, Shape] | None:
        if not ctx.single_input():
            return None
        found = ctx.spatial_axes(rank)
        size = ctx.sizes("pool_size", rank, 2 if function == "max" else None)
        given = ctx.config.get("strides")
        strides = size if given is None else ctx.sizes("strides", rank, None)
        padding = ctx.padding(("valid", "same"), lower=False)
        if found is None or size is None or strides is None or padding is None:
            return None
        window = _Window(size, strides, (1,) * rank, padding, *found)
        shape = _window_shape(ctx, window, ctx.shape[window.channel_axis])
        if shape is None:
            return None
        return PoolOp(function, size, strides, padding, window.channel_axis == 1), shape

    return parse


def _global_pool(rank: int, function: str) -> LayerParser:
    def parse(ctx: LayerCall) -> tuple[Op, Shape] | None:
        if not ctx.single_input():
            return None
        found = ctx.spatial_axes(rank)
        keepdims = ctx.flag("keepdims", False)
        if found is None or keepdims is None:
            return None
        axes, channel_axis = found
        if keepdims:
            shape = tuple(1 if a in axes else d for a, d in enumerate(ctx.shape))
        else:
            shape = (ctx.shape[0], ctx.shape[channel_axis])
        return GlobalPoolOp(function, axes, keepdims), shape

    return parse


# --- normalizations ------------------------------------------------------------------------------


def _layer_norm(ctx: LayerCall) -> tuple[Op, Shape] | None:
    """LayerNormalization. Weights: gamma if scale or rms_scaling, beta if center and not
    rms_scaling (Keras' deprecated rms_scaling divides x, not centred, by sqrt(variance + eps))."""
    if not ctx.single_input():
        return None
    raw = ctx.config.get("axis", -1)
    axes = ctx.axes(raw, "axis", batch=True)
    epsilon = ctx.number("epsilon", 1e-3)
    center, scale = ctx.flag("center", True), ctx.flag("scale", True)
    rms = ctx.flag("rms_scaling", False)
    if axes is None or epsilon is None or center is None or scale is None or rms is None:
        return None
    names = [*(["gamma"] if scale or rms else []), *(["beta"] if center and not rms else [])]
    arrays = ctx.weights(len(names))
    if arrays is None:
        return None
    # Keras builds gamma/beta with the sizes of `sorted(axis)` as written (negative axes first),
    # then reshapes them into the broadcast shape of the axes in order: with mixed signs the
    # values are reinterpreted, not transposed. We do what Keras does.
    built = tuple(ctx.shape[a] for a in sorted(raw if isinstance(raw, (list, tuple)) else [raw]))
    ordered = tuple(sorted(axes))
    if arrays and None in built:
        ctx.fail(f"needs known sizes on the normalized axes {list(ordered)}, got input {_fmt(ctx.shape)}")
        return None
    values: dict[str, np.ndarray] = {}
    for name, array in zip(names, arrays, strict=True):
        if not _expect_shape(ctx, name, array, built):
            return None
        values[name] = array.reshape(tuple(int(ctx.shape[a] or 0) for a in ordered))
    return LayerNormOp(ordered, epsilon, values.get("gamma"), values.get("beta"), rms), ctx.shape


def _group_norm(ctx: LayerCall) -> tuple[Op, Shape] | None:
    """GroupNormalization: `groups` -1 means one group per channel (instance normalization)."""
    if not ctx.single_input():
        return None
    groups = ctx.config.get("groups", 32)
    if not _is_int(groups) or (groups <= 0 and groups != -1):
        ctx.fail(
            f"must be a positive integer (or -1 for instance normalization), got {shown(groups)}", "groups"
        )
        return None
    axis = ctx.axis(ctx.config.get("axis", -1), "axis")
    epsilon = ctx.number("epsilon", 1e-3)
    center, scale = ctx.flag("center", True), ctx.flag("scale", True)
    if axis is None or epsilon is None or center is None or scale is None:
        return None
    size = ctx.shape[axis]
    if size is None:
        ctx.fail(f"Axis {axis} of the input {_fmt(ctx.shape)} must have a known size")
        return None
    groups = size if groups == -1 else groups
    if size < groups or size % groups:
        ctx.fail(f"the channels ({size}) must be a multiple of the groups ({groups})", "groups")
        return None
    names = [*(["gamma"] if scale else []), *(["beta"] if center else [])]
    arrays = ctx.weights(len(names))
    if arrays is None or not all(
        _expect_shape(ctx, n, a, (size,)) for n, a in zip(names, arrays, strict=True)
    ):
        return None
    values = dict(zip(names, arrays, strict=True))
    return GroupNormOp(groups, axis, epsilon, values.get("gamma"), values.get("beta")), ctx.shape


def _unit_norm(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    axes = ctx.axes(ctx.config.get("axis", -1), "axis", batch=True)
    return None if axes is None else (UnitNormOp(tuple(sorted(axes))), ctx.shape)


def _numbers(ctx: LayerCall, key: str, value: Any) -> np.ndarray | None:
    """A number or nested lists of numbers, as `get_config` writes them (a numpy array is
    serialized as {"class_name": "__numpy__", "config": {"value": ...}})."""
    if isinstance(value, Mapping) and value.get("class_name") in ("__numpy__", "__tensor__"):
        inner = value.get("config")
        value = inner.get("value") if isinstance(inner, Mapping) else None
    try:
        array = np.asarray(value)
    except ValueError:  # ragged lists
        array = np.asarray(None)
    if array.dtype.kind not in "iuf" or not np.all(np.isfinite(array)):
        ctx.fail(f"must be a finite number or nested lists of them, got {shown(value)}", key)
        return None
    return array.astype(np.float64)


def _fits(array: np.ndarray, shape: Shape) -> bool:
    """Whether `array` broadcasts against `shape` (numpy rules) without growing it."""
    if array.ndim > len(shape):
        return False
    return all(a == 1 or a == d for a, d in zip(reversed(array.shape), reversed(shape), strict=False))


def _rescaling(ctx: LayerCall) -> tuple[Op, Shape] | None:
    """Rescaling: x * scale + offset in the compute dtype. Keras reshapes a non-scalar scale to
    (C, 1, 1) when the *global* image_data_format is channels_first; configs do not record it,
    so the default (channels_last) is assumed."""
    if not ctx.single_input():
        return None
    if "scale" not in ctx.config:
        ctx.fail("is required", "scale")
        return None
    scale = _numbers(ctx, "scale", ctx.config.get("scale"))
    offset = _numbers(ctx, "offset", ctx.config.get("offset", 0.0))
    if scale is None or offset is None:
        return None
    for key, array in (("scale", scale), ("offset", offset)):
        if not _fits(array, ctx.shape):
            ctx.fail(f"shape {array.shape} does not broadcast into the input {_fmt(ctx.shape)}", key)
            return None
    return RescaleOp(scale, offset), ctx.shape


def _normalization(ctx: LayerCall) -> tuple[Op, Shape] | None:
    """Normalization: (x - mean) / max(sqrt(variance), 1e-7), or its inverse. Keras keeps
    `axis`; mean and variance come from the config or, once adapted, from the weights file
    (mean, variance, count) with the sizes of the kept axes."""
    if not ctx.single_input():
        return None
    invert = ctx.flag("invert", False)
    raw = ctx.config.get("axis", -1)
    keep = () if raw is None or raw == [] else ctx.axes(raw, "axis", batch=True)
    if keep is None or invert is None:
        return None
    keep = tuple(sorted(keep))
    sizes = [ctx.shape[a] for a in keep]
    if None in sizes:
        ctx.fail(f"All `axis` values to be kept must have a known size, got input {_fmt(ctx.shape)}", "axis")
        return None
    broadcast = tuple(int(ctx.shape[a] or 0) if a in keep else 1 for a in range(len(ctx.shape)))
    moments = _normalization_moments(ctx, keep, broadcast)
    if moments is None:
        return None
    mean, variance = moments
    if np.any(variance < 0):
        ctx.fail("variance holds negative values (Keras would give NaN)")
        return None
    return NormalizeOp(mean, variance, invert), ctx.shape


def _normalization_moments(
    ctx: LayerCall, keep: tuple[int, ...], broadcast: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and variance with the input's rank, broadcasting to `broadcast`: Keras aligns a given
    mean's axes with the last kept axes and broadcasts it; adapted ones have exactly the kept
    axes' sizes."""
    given = ctx.config.get("mean"), ctx.config.get("variance")
    if given == (None, None):
        arrays = ctx.weights(3)  # mean, variance, count
        kept = tuple(broadcast[a] for a in keep)
        if arrays is None or not all(
            _expect_shape(ctx, n, a, kept) for n, a in zip(("mean", "variance"), arrays[:2], strict=True)
        ):
            return None
        return tuple(a.reshape(broadcast).astype(np.float64) for a in arrays[:2])  # type: ignore[return-value]
    if None in given:
        ctx.fail("When setting values directly, both `mean` and `variance` must be set")
        return None
    mean, variance = _numbers(ctx, "mean", given[0]), _numbers(ctx, "variance", given[1])
    if mean is None or variance is None or not ctx.no_weights():
        return None
    if mean.shape != variance.shape or mean.ndim > len(keep):
        ctx.fail(f"mean {mean.shape} and variance {variance.shape} need one shape of <= {len(keep)} axes")
        return None
    expanded = [1] * len(broadcast)
    for i in range(1, mean.ndim + 1):
        expanded[keep[-i]] = mean.shape[-i]
    if any(e not in (1, b) for e, b in zip(expanded, broadcast, strict=True)):
        ctx.fail(f"mean of shape {mean.shape} does not broadcast to {broadcast}", "mean")
        return None
    # kept as given (size 1 where Keras broadcasts): a scalar mean over large axes allocates nothing
    return mean.reshape(expanded), variance.reshape(expanded)


# --- axes ------------------------------------------------------------------------------------------


def _permute(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    dims = ctx.config.get("dims")
    if not isinstance(dims, (list, tuple)) or sorted(d if _is_int(d) else -1 for d in dims) != list(
        range(1, len(dims) + 1)
    ):
        ctx.fail(f"must hold each of 1..n once (the batch axis stays), got {shown(dims)}", "dims")
        return None
    if len(ctx.shape) != len(dims) + 1:
        ctx.fail(f"expects a {len(dims) + 1}-D input, got shape {_fmt(ctx.shape)}")
        return None
    perm = (0, *(int(d) for d in dims))
    return PermuteOp(perm), tuple(ctx.shape[a] for a in perm)


def _repeat_vector(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    n = ctx.count("n", None)
    if n is None:
        return None
    if len(ctx.shape) != 2:
        ctx.fail(f"expects a 2-D input, got shape {_fmt(ctx.shape)}")
        return None
    return RepeatVectorOp(n), (ctx.shape[0], n, ctx.shape[1])


LAYER_PARSERS: dict[str, LayerParser] = {
    **{name: _conv_transpose for name in CONV_LAYERS},
    "Dense": _dense,
    "BatchNormalization": _batch_norm,
    "Activation": _activation_layer,
    "ReLU": _relu,
    "LeakyReLU": _leaky_relu,
    "ELU": _elu,
    "PReLU": _prelu,
    "Softmax": _softmax,
    **{name: _identity for name in IDENTITY_LAYERS},
    "Identity": _identity,
    "Add": _merge("add"),
    "Subtract": _merge("subtract", inputs=2),
    "Multiply": _merge("multiply"),
    "Average": _merge("average"),
    "Maximum": _merge("maximum"),
    "Minimum": _merge("minimum"),
    "Concatenate": _concatenate,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Permute": _permute,
    "RepeatVector": _repeat_vector,
    **{f"ZeroPadding{r}D": _padding_layer(r, cropping=False) for r in (1, 2, 3)},
    **{f"Cropping{r}D": _padding_layer(r, cropping=True) for r in (1, 2, 3)},
    **{f"UpSampling{r}D": _upsampling(r) for r in (1, 2, 3)},
    **{f"Conv{r}D": _conv(r) for r in (1, 2, 3)},
    **{f"DepthwiseConv{r}D": _depthwise(r) for r in (1, 2)},
    **{f"SeparableConv{r}D": _separable(r) for r in (1, 2)},
    **{f"MaxPooling{r}D": _pool(r, "max") for r in (1, 2, 3)},
    **{f"AveragePooling{r}D": _pool(r, "average") for r in (1, 2, 3)},
    **{f"GlobalMaxPooling{r}D": _global_pool(r, "max") for r in (1, 2, 3)},
    **{f"GlobalAveragePooling{r}D": _global_pool(r, "average") for r in (1, 2, 3)},
    "LayerNormalization": _layer_norm,
    "GroupNormalization": _group_norm,
    "UnitNormalization": _unit_norm,
    "Rescaling": _rescaling,
    "Normalization": _normalization,
}
SUPPORTED_TEXT = ", ".join(["InputLayer", *LAYER_PARSERS])


def _expect_shape(ctx: LayerCall, tensor: str, array: np.ndarray, expected: Sequence[int | None]) -> bool:
    if tuple(array.shape) != tuple(expected):
        ctx.fail(
            f"the weights file does not match the config: {tensor} has shape {tuple(array.shape)}, "
            f"expected {tuple(expected)}"
        )
        return False
    if not np.all(np.isfinite(array)):
        ctx.fail(f"{tensor} holds NaN or infinite values")
        return False
    return True


def _fmt(shape: Shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
