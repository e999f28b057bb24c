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

import numpy as np

from deconv_compiler.conv_layer import parse_conv_layer
from deconv_compiler.errors import shown
from deconv_compiler.ir import (
    ActivationOp,
    BatchNormOp,
    ConcatenateOp,
    ConvTransposeOp,
    DenseOp,
    EluOp,
    FlattenOp,
    IdentityOp,
    LeakyReluOp,
    MergeOp,
    Op,
    PadOp,
    PermuteOp,
    PReluOp,
    ReluOp,
    RepeatVectorOp,
    ReshapeOp,
    Shape,
    SoftmaxOp,
    UpSampleOp,
)
from deconv_compiler.keras_call import (
    LayerCall,
    LayerParser,
    activation_name,
    activation_shape,
    expect_shape,
    is_int,
)
from deconv_compiler.keras_conv_layers import conv, depthwise_conv, global_pooling, pooling, separable_conv
from deconv_compiler.keras_norm_layers import (
    group_normalization,
    layer_normalization,
    normalization,
    rescaling,
    unit_normalization,
)
from deconv_compiler.keras_shapes import ShapeMismatch, concatenated_shape, dims, merged_shape, reshaped_shape

IDENTITY_LAYERS = (
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization",
)  # fmt: skip
CONV_LAYERS = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")


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
    activation = activation_name(ctx)
    use_bias = ctx.config.get("use_bias", True) is True
    if len(ctx.shape) < 2 or ctx.shape[-1] is None:
        ctx.fail(f"needs an input whose last axis is known, got shape {dims(ctx.shape)}")
        return None
    arrays = ctx.weights(2 if use_bias else 1)
    if arrays is None or activation is None:
        return None
    kernel, bias = arrays[0], arrays[1] if use_bias else None
    if not expect_shape(ctx, "kernel", kernel, (ctx.shape[-1], units)):
        return None
    if bias is not None and not expect_shape(ctx, "bias", bias, (units,)):
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
        ctx.fail(f"the normalized axis {axis} of the input {dims(ctx.shape)} must have a known size")
        return None
    scale, center = ctx.config.get("scale", True) is not False, ctx.config.get("center", True) is not False
    arrays = ctx.weights(2 + scale + center)
    if arrays is None:
        return None
    names = [*(["gamma"] if scale else []), *(["beta"] if center else []), "moving_mean", "moving_variance"]
    values = dict(zip(names, arrays, strict=True))
    for tensor, array in values.items():
        if not expect_shape(ctx, tensor, array, (size,)):
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
    name = activation_name(ctx)
    shape = None if name is None else activation_shape(ctx, name, ctx.shape)
    return None if name is None or shape is None else (ActivationOp(name), shape)


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
        ctx.fail(f"needs known sizes on its non-shared axes, got input {dims(ctx.shape)}")
        return None
    arrays = ctx.weights(1)
    if arrays is None or not expect_shape(ctx, "alpha", arrays[0], tuple(int(d or 1) for d in expected)):
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


def _merge(function: str, inputs: int | None = None) -> LayerParser:
    """Add, Subtract (exactly 2 inputs), Multiply, Average, Maximum, Minimum: Keras merges a
    list of one input or more."""

    def parse(ctx: LayerCall) -> tuple[Op, Shape] | None:
        count = len(ctx.input_shapes)
        if (inputs is not None and count != inputs) or count < 1:
            ctx.fail(f"A `{ctx.class_name}` layer should be called on exactly {inputs} inputs, got {count}")
            return None
        try:
            return MergeOp(function), merged_shape(ctx.input_shapes)
        except ShapeMismatch as exc:
            ctx.fail(str(exc))
            return None

    return parse


def _concatenate(ctx: LayerCall) -> tuple[Op, Shape] | None:
    shapes = list(ctx.input_shapes)
    if len(shapes) < 2 or len({len(s) for s in shapes}) != 1:
        ctx.fail(f"concatenates at least 2 inputs of one rank, got {', '.join(dims(s) for s in shapes)}")
        return None
    axis = ctx.axis(ctx.config.get("axis", -1), "axis")
    if axis is None:
        return None
    try:
        return ConcatenateOp(axis), concatenated_shape(shapes, axis)
    except ShapeMismatch as exc:
        ctx.fail(str(exc))
        return None


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
    try:
        return ReshapeOp(tuple(target)), reshaped_shape(ctx.shape, target)
    except ShapeMismatch as exc:
        ctx.fail(str(exc), "target_shape")
        return None


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


# --- axes ------------------------------------------------------------------------------------------


def _permute(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    order = ctx.config.get("dims")
    if not isinstance(order, (list, tuple)) or sorted(d if is_int(d) else -1 for d in order) != list(
        range(1, len(order) + 1)
    ):
        ctx.fail(f"must hold each of 1..n once (the batch axis stays), got {shown(order)}", "dims")
        return None
    if len(ctx.shape) != len(order) + 1:
        ctx.fail(f"expects a {len(order) + 1}-D input, got shape {dims(ctx.shape)}")
        return None
    perm = (0, *(int(d) for d in order))
    return PermuteOp(perm), tuple(ctx.shape[a] for a in perm)


def _repeat_vector(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    n = ctx.count("n", None)
    if n is None:
        return None
    if len(ctx.shape) != 2:
        ctx.fail(f"expects a 2-D input, got shape {dims(ctx.shape)}")
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
    **{f"Conv{r}D": conv(r) for r in (1, 2, 3)},
    **{f"DepthwiseConv{r}D": depthwise_conv(r) for r in (1, 2)},
    **{f"SeparableConv{r}D": separable_conv(r) for r in (1, 2)},
    **{f"MaxPooling{r}D": pooling(r, "max") for r in (1, 2, 3)},
    **{f"AveragePooling{r}D": pooling(r, "average") for r in (1, 2, 3)},
    **{f"GlobalMaxPooling{r}D": global_pooling(r, "max") for r in (1, 2, 3)},
    **{f"GlobalAveragePooling{r}D": global_pooling(r, "average") for r in (1, 2, 3)},
    "LayerNormalization": layer_normalization,
    "GroupNormalization": group_normalization,
    "UnitNormalization": unit_normalization,
    "Rescaling": rescaling,
    "Normalization": normalization,
}
SUPPORTED_TEXT = ", ".join(["InputLayer", *LAYER_PARSERS])
