"""The op planners of the encoder layers: convolutions (plain, grouped, depthwise, separable),
pooling, global pooling and the normalizations (LayerNormalization, GroupNormalization,
UnitNormalization, Rescaling, Normalization), with Keras' `same` padding (`same_pads`). Each fills
`PLANNERS`, this module's own table (op type → planner)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from deconv_compiler.dtypes import compute_dtype
from deconv_compiler.ir import (
    ConvOp,
    GlobalPoolOp,
    GroupNormOp,
    LayerNormOp,
    Node,
    NormalizeOp,
    PoolOp,
    RescaleOp,
    UnitNormOp,
)
from deconv_compiler.plan import Perm
from deconv_compiler.plan_context import (
    OpPlanner,
    PlanContext,
    along,
    define_activated,
    full_rank,
    i64,
    internal_layout,
    reduce,
    registrar,
    single_input,
    spatial_shape,
    without_axes,
)

PLANNERS: dict[type, OpPlanner] = {}
_plans = registrar(PLANNERS)


# --- convolutions and pooling ------------------------------------------------------------------


def same_pads(length: int | None, kernel: int, stride: int, dilation: int) -> tuple[int, int] | None:
    """Keras' `same` on one axis (lax's SAME): ceil(i/s) outputs, total padding
    max((ceil(i/s) - 1) * s + ke - i, 0), the odd one at the end. Stride 1 needs no length (the
    total is ke - 1); None: an unknown length with a stride > 1."""
    extent = (kernel - 1) * dilation + 1
    if stride == 1:
        total = extent - 1
    elif length is None:
        return None
    else:
        total = max((-(-length // stride) - 1) * stride + extent - length, 0)
    return total // 2, total - total // 2


def _window_pads(
    spatial: Sequence[int | None],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    padding: str,
) -> dict[str, Any]:
    """ONNX Conv/MaxPool/AveragePool padding for Keras' `padding`: explicit pads wherever they do
    not depend on an unknown size; else SAME_UPPER, which is Keras' rule (ceil(i/s) outputs, the
    odd pad at the end), computed by the runtime for each input size."""
    rank = len(kernel)
    if padding == "valid":
        return {"pads": [0] * (2 * rank)}
    if padding == "causal":  # Keras' Conv1D pads (k - 1) * d before the sequence, then `valid`
        return {"pads": [(kernel[0] - 1) * dilations[0], 0]}
    pairs = [same_pads(*axis) for axis in zip(spatial, kernel, strides, dilations, strict=True)]
    known = [pair for pair in pairs if pair is not None]
    if len(known) < rank:
        return {"auto_pad": "SAME_UPPER"}
    return {"pads": [begin for begin, _ in known] + [end for _, end in known]}


def _conv_weight(kernel: np.ndarray, rank: int) -> np.ndarray:
    # Keras kernel (k..., in / groups, out) → ONNX W (out, in / groups, k...)
    return np.transpose(kernel, (rank + 1, rank, *range(rank)))


@_plans(ConvOp)
def _conv(p: PlanContext, node: Node, op: ConvOp) -> None:
    """Conv (grouped for depthwise), then the pointwise 1x1 Conv of a separable conv; the bias
    in the last Conv; the activation as the next node, where onnxruntime fuses it."""
    scope, rank = node.name, op.rank
    dtype = compute_dtype(p.policy(node))
    layout = internal_layout("channels_first" if op.channels_first else "channels_last", rank + 2)
    x = p.operand(scope, node.inputs[0], dtype, layout)
    bias = [] if op.bias is None else [p.floats(scope, op.bias, dtype, f"{scope}/bias")]
    size = op.kernel.shape[:rank]
    spatial = spatial_shape(p, node, op.channels_first)
    pads = _window_pads(spatial, size, op.strides, op.dilation_rate, op.padding)
    kernel = p.floats(scope, _conv_weight(op.kernel, rank), dtype, f"{scope}/kernel")
    y = p.node(
        scope, dtype, "Conv", [x, kernel, *(bias if op.pointwise is None else [])],
        kernel_shape=list(size), strides=list(op.strides), dilations=list(op.dilation_rate),
        group=op.groups, **pads,
    )  # fmt: skip
    if op.pointwise is not None:
        pointwise = p.floats(scope, _conv_weight(op.pointwise, rank), dtype, f"{scope}/pointwise_kernel")
        y = p.node(scope, dtype, "Conv", [y, pointwise, *bias], kernel_shape=[1] * rank)
    define_activated(p, node, y, layout, op.activation, dtype)


@_plans(PoolOp)
def _pool(p: PlanContext, node: Node, op: PoolOp) -> None:
    scope = node.name
    dtype = compute_dtype(p.policy(node))
    rank = len(op.pool_size)
    layout = internal_layout("channels_first" if op.channels_first else "channels_last", rank + 2)
    x = p.operand(scope, node.inputs[0], dtype, layout)
    spatial = spatial_shape(p, node, op.channels_first)
    attrs = _window_pads(spatial, op.pool_size, op.strides, (1,) * rank, op.padding)
    attrs.update(kernel_shape=list(op.pool_size), strides=list(op.strides))
    if op.function == "max":  # padding never wins a max (lax pads with -inf)
        y = p.node(scope, dtype, "MaxPool", [x], **attrs)
    else:  # Keras' `same` average divides by the count of real elements in each window
        y = p.node(scope, dtype, "AveragePool", [x], count_include_pad=0, **attrs)
    p.define(node.output.name, y, layout)


@_plans(GlobalPoolOp)
def _global_pool(p: PlanContext, node: Node, op: GlobalPoolOp) -> None:
    x, dtype, layout = single_input(p, node)
    positions = sorted(layout.index(a) for a in op.axes)
    op_type = "ReduceMax" if op.function == "max" else "ReduceMean"
    y = reduce(p, node.name, dtype, op_type, x, positions, op.keepdims)
    p.define(node.output.name, y, layout if op.keepdims else without_axes(layout, op.axes))


# --- normalizations ----------------------------------------------------------------------------


def _statistics_input(p: PlanContext, node: Node, layout: Perm | None = None) -> tuple[str, str]:
    """Layer/GroupNormalization read their input uncast (Keras sets autocast=False) and compute
    in at least float32 (`result_type(x.dtype, "float32")`), even under a float16 policy."""
    tensor = p.tensor(node.inputs[0])
    wide = "float64" if p.dtypes[tensor] == "float64" else "float32"
    return p.operand(node.name, node.inputs[0], wide, layout), wide


def _moments(
    p: PlanContext, scope: str, dtype: str, x: str, positions: Sequence[int], epsilon: float
) -> tuple[str, str]:
    """x - mean and sqrt(variance + epsilon) over `positions`, the variance two-pass as jnp.var
    (not Pow: onnxruntime would fuse the pattern into its LayerNormalization, whose one-pass
    E[x²] - E[x]² loses digits when the mean is large)."""
    mean = reduce(p, scope, dtype, "ReduceMean", x, positions)
    centred = p.node(scope, dtype, "Sub", [x, mean])
    squares = p.node(scope, dtype, "Mul", [centred, centred])
    variance = reduce(p, scope, dtype, "ReduceMean", squares, positions)
    shifted = p.node(scope, dtype, "Add", [variance, p.floats(scope, epsilon, dtype)])
    return centred, p.node(scope, dtype, "Sqrt", [shifted])


def _affine(
    p: PlanContext,
    scope: str,
    dtype: str,
    y: str,
    weights: tuple[np.ndarray | None, np.ndarray | None],
    axes: Sequence[int],
    layout: Perm,
) -> str:
    """y * gamma + beta, both sized like the Keras `axes`, in the statistics' dtype (Keras casts
    the weights up to it, never down)."""
    for array, op_type, name in zip(weights, ("Mul", "Add"), ("gamma", "beta"), strict=True):
        if array is not None:
            constant = p.floats(scope, along(array, axes, layout), dtype, f"{scope}/{name}")
            y = p.node(scope, dtype, op_type, [y, constant])
    return y


def _finish(p: PlanContext, node: Node, y: str, layout: Perm) -> None:
    """A normalization's result cast to the layer's compute dtype (Keras casts it back)."""
    p.layouts[y] = layout
    p.define(node.output.name, p.cast(node.name, y, compute_dtype(p.policy(node))), layout)


@_plans(LayerNormOp)
def _layer_norm(p: PlanContext, node: Node, op: LayerNormOp) -> None:
    """Keras: (x - mean) / sqrt(variance + epsilon) * gamma + beta over `axes`; the deprecated
    rms_scaling divides x itself (not centred) and has no beta."""
    scope = node.name
    x, wide = _statistics_input(p, node)
    layout = p.layouts[x]
    centred, root = _moments(p, scope, wide, x, sorted(layout.index(a) for a in op.axes), op.epsilon)
    y = p.node(scope, wide, "Div", [x if op.rms_scaling else centred, root])
    _finish(p, node, _affine(p, scope, wide, y, (op.gamma, op.beta), op.axes, layout), layout)


@_plans(GroupNormOp)
def _group_norm(p: PlanContext, node: Node, op: GroupNormOp) -> None:
    """With the channel axis right after the batch, Keras' (..., groups, channels / groups, ...)
    split is a Reshape to (N, groups, -1); moments over the last axis, then back to x's shape."""
    scope = node.name
    rank = len(node.output.shape)
    layout = (0, op.axis, *(a for a in range(1, rank) if a != op.axis))
    x, wide = _statistics_input(p, node, layout)
    grouped = p.node(scope, wide, "Reshape", [x, i64([0, op.groups, -1])])
    centred, root = _moments(p, scope, wide, grouped, [2], op.epsilon)
    y = p.node(scope, wide, "Div", [centred, root])
    y = p.node(scope, wide, "Reshape", [y, p.node(scope, wide, "Shape", [x])])
    _finish(p, node, _affine(p, scope, wide, y, (op.gamma, op.beta), (op.axis,), layout), layout)


@_plans(UnitNormOp)
def _unit_norm(p: PlanContext, node: Node, op: UnitNormOp) -> None:
    """Keras 3 `normalize(order=2, epsilon=1e-12)`: x * min(rsqrt(sum x²), 1 / 1e-12), in the
    compute dtype; 1e12 is infinite in float16, where Keras' cap does nothing."""
    scope = node.name
    x, dtype, layout = single_input(p, node)
    squares = reduce(p, scope, dtype, "ReduceSumSquare", x, sorted(layout.index(a) for a in op.axes))
    inverse = p.node(scope, dtype, "Reciprocal", [p.node(scope, dtype, "Sqrt", [squares])])
    if 1e12 <= float(np.finfo(dtype).max):
        inverse = p.node(scope, dtype, "Min", [inverse, p.floats(scope, 1e12, dtype)])
    p.define(node.output.name, p.node(scope, dtype, "Mul", [x, inverse]), layout)


@_plans(RescaleOp)
def _rescale(p: PlanContext, node: Node, op: RescaleOp) -> None:
    """Keras: x * scale + offset, both cast to the compute dtype (a unit scale and a zero offset
    change no value and give no node)."""
    x, dtype, layout = single_input(p, node)
    y = x
    if np.any(op.scale != 1):
        y = p.node(node.name, dtype, "Mul", [y, p.floats(node.name, full_rank(op.scale, layout), dtype)])
    if np.any(op.offset != 0):
        y = p.node(node.name, dtype, "Add", [y, p.floats(node.name, full_rank(op.offset, layout), dtype)])
    p.define(node.output.name, y, layout)


@_plans(NormalizeOp)
def _normalize(p: PlanContext, node: Node, op: NormalizeOp) -> None:
    """Keras: (x - mean) / max(sqrt(variance), epsilon), inverted mean + x * max(...), with
    `backend.epsilon()` = 1e-7 (Keras' default; keras.json may change it)."""
    scope = node.name
    x, dtype, layout = single_input(p, node)
    mean = p.floats(scope, np.transpose(op.mean, layout), dtype, f"{scope}/mean")
    scale = np.maximum(np.sqrt(op.variance), 1e-7)
    deviation = p.floats(scope, np.transpose(scale, layout), dtype, f"{scope}/std")
    if op.invert:
        y = p.node(scope, dtype, "Add", [p.node(scope, dtype, "Mul", [x, deviation]), mean])
    else:
        y = p.node(scope, dtype, "Div", [p.node(scope, dtype, "Sub", [x, mean]), deviation])
    p.define(node.output.name, y, layout)
