"""Keras convolutions and pooling → `ConvOp` / `PoolOp` / `GlobalPoolOp`: Conv1D/2D/3D (groups,
dilation, causal), DepthwiseConv1D/2D, SeparableConv1D/2D, Max/AveragePooling1D/2D/3D and their
global forms, with Keras 3.15's validation and output lengths."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deconv_compiler.ir import (
    ConvOp,
    GlobalPoolOp,
    Op,
    PoolOp,
    Shape,
)
from deconv_compiler.keras_call import (
    LayerCall,
    LayerParser,
    activation_name,
    activation_shape,
    expect_shape,
)
from deconv_compiler.keras_shapes import dims

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
                f"{dims(ctx.shape)} is shorter than the window ({(k - 1) * d + 1}) with padding='valid'"
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
        ctx.fail(f"needs a known channel axis ({window.channel_axis}), got input shape {dims(ctx.shape)}")
    return channels


def _conv_head(ctx: LayerCall, rank: int, paddings: tuple[str, ...]) -> tuple[_Window, int, str, bool] | None:
    """What every convolution validates: window, input channels, activation, use_bias. A
    `lora_rank` changes nothing here: Keras saves the kernel with the LoRA delta merged in."""
    if not ctx.single_input():
        return None
    window = _conv_window(ctx, rank, paddings)
    activation, use_bias = activation_name(ctx), ctx.flag("use_bias", True)
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
            f"{dims(ctx.shape)}",
            "dilation_rate",
        )
        return False
    return True


def _conv_result(ctx: LayerCall, window: _Window, channels: int, activation: str) -> Shape | None:
    shape = _window_shape(ctx, window, channels)
    return None if shape is None else activation_shape(ctx, activation, shape)


def conv(rank: int) -> LayerParser:
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
        if not expect_shape(ctx, "kernel", arrays[0], (*window.size, channels // groups, filters)) or (
            bias is not None and not expect_shape(ctx, "bias", bias, (filters,))
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
    if not expect_shape(ctx, "depthwise kernel", array, (*window.size, channels, multiplier)):
        return None
    return array.reshape((*window.size, 1, channels * multiplier))


def depthwise_conv(rank: int) -> LayerParser:
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
        if kernel is None or (bias is not None and not expect_shape(ctx, "bias", bias, (filters,))):
            return None
        channels_first = window.channel_axis == 1
        op = ConvOp(
            rank, kernel, bias, window.strides, window.padding, window.dilation, channels, channels_first,
            activation,
        )  # fmt: skip
        return op, shape

    return parse


def separable_conv(rank: int) -> LayerParser:
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
            or not expect_shape(
                ctx, "pointwise kernel", pointwise, (*[1] * rank, channels * multiplier, filters)
            )
            or (bias is not None and not expect_shape(ctx, "bias", bias, (filters,)))
        ):
            return None
        channels_first = window.channel_axis == 1
        op = ConvOp(
            rank, kernel, bias, window.strides, window.padding, window.dilation, channels, channels_first,
            activation, pointwise,
        )  # fmt: skip
        return op, shape

    return parse


def pooling(rank: int, function: str) -> LayerParser:
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


def global_pooling(rank: int, function: str) -> LayerParser:
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
