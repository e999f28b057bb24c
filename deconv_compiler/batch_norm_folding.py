"""BatchNormalization folding, a pure function of the graph: each BatchNormalization that only a
linear transposed convolution, convolution or Dense feeds (on its channel axis, same dtype policy)
becomes part of that layer's kernel and bias; `bn_affine` is the inference formula as a scale and
a shift, which the BatchNormalization planner uses where nothing was folded. A fold depends on
the layer pair only: a pair called many times (a shared block) is folded once, its calls share
the folded arrays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from deconv_compiler.ir import BatchNormOp, ConvOp, ConvTransposeOp, DenseOp, Graph, Node
from deconv_compiler.weights import LayerWeights


def fold_batch_norms(graph: Graph) -> list[Node]:
    """Fold each BatchNormalization into the linear transposed conv or Dense right before it,
    when that layer's output goes nowhere else, the normalized axis is its channel axis and both
    compute in the same dtype."""
    nodes = graph.nodes
    consumers: dict[str, int] = {}
    for node in nodes:
        for tensor in node.inputs:
            consumers[tensor] = consumers.get(tensor, 0) + 1
    for output in graph.outputs:
        consumers[output.value] = consumers.get(output.value, 0) + 1
    folded_nodes = list(nodes)
    producer = {node.output.name: i for i, node in enumerate(folded_nodes)}
    folded: set[int] = set()
    once = _Once()
    for i, node in enumerate(folded_nodes):
        if not isinstance(node.op, BatchNormOp):
            continue
        j = producer.get(node.inputs[0])
        if j is None or consumers.get(node.inputs[0]) != 1 or folded_nodes[j].policy != node.policy:
            continue
        merged = _fold(folded_nodes[j], node.op, once)
        if merged is None:
            continue
        folded_nodes[j] = replace(merged, output=node.output)
        folded.add(i)
    return [node for i, node in enumerate(folded_nodes) if i not in folded]


def bn_affine(bn: BatchNormOp) -> tuple[np.ndarray, np.ndarray]:
    """Keras' inference formula as x * scale + shift: the scale and the shift, per normalized index."""
    inv = 1.0 / np.sqrt(bn.variance.astype(np.float64) + bn.epsilon)
    if bn.gamma is not None:
        inv = inv * bn.gamma
    shift = -bn.mean * inv
    if bn.beta is not None:
        shift = shift + bn.beta
    return inv, shift


class _Once:
    """Folded arrays by what they are made from: the source arrays (alive in the graph as long as
    the folding, so their memory identifies them) and what is done to them."""

    def __init__(self) -> None:
        self._made: dict[tuple[Any, ...], Any] = {}

    def __call__(self, what: str, sources: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        key = (what, *(_identity(source) for source in sources))
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]


def _identity(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return (value.__array_interface__["data"][0], value.shape, value.strides, value.dtype.str)
    return value


def _fold(node: Node, bn: BatchNormOp, once: _Once) -> Node | None:
    op = node.op
    statistics = (bn.mean, bn.variance, bn.gamma, bn.beta, bn.epsilon)
    # Scale kernels in their own precision (at least float32): a float64 product of a 200 MB
    # kernel costs seconds and memory and changes the result by less than one float32 rounding.
    kernel = (
        op.kernel
        if isinstance(op, (ConvOp, DenseOp))
        else getattr(getattr(op, "weights", None), "kernel", None)
    )
    dtype = np.promote_types(kernel.dtype, np.float32) if isinstance(kernel, np.ndarray) else None
    inv, shift = once("affine", (*statistics, dtype), lambda: _affine(bn, dtype))
    if isinstance(op, ConvOp):
        return _fold_conv(node, op, bn.axis, inv, shift, once, statistics)
    if isinstance(op, ConvTransposeOp) and isinstance(op.weights, LayerWeights):
        layer = op.layer
        channel_axis = layer.rank + 1 if layer.data_format == "channels_last" else 1
        if layer.activation != "linear" or bn.axis != channel_axis:
            return None
        # Keras kernel (k..., filters, in): scale each filter.
        weights = op.weights
        sources = (weights.kernel, weights.bias, *statistics)
        kernel = once("kernel", sources, lambda: _scaled_in_onnx_order(weights.kernel, inv, layer.rank))
        bias = once(
            "bias", sources, lambda: (weights.bias if weights.bias is not None else 0.0) * inv + shift
        )
        return replace(node, op=ConvTransposeOp(layer, LayerWeights(kernel, bias, weights.origin)))
    if isinstance(op, DenseOp):
        if op.activation != "linear" or bn.axis != len(node.output.shape) - 1:
            return None
        dense = op
        sources = (dense.kernel, dense.bias, *statistics)
        bias = once("bias", sources, lambda: (dense.bias if dense.bias is not None else 0.0) * inv + shift)
        kernel = once("kernel", sources, lambda: dense.kernel * inv[None, :])
        return replace(node, op=DenseOp(kernel, bias, dense.activation))
    return None


def _affine(bn: BatchNormOp, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """`bn_affine`, the scale in the kernel's own precision (at least float32): a float64
    product of a 200 MB kernel costs seconds and memory and changes the result by less than one
    float32 rounding."""
    inv, shift = bn_affine(bn)
    return (inv if dtype is None else inv.astype(dtype)), shift


def _fold_conv(
    node: Node,
    op: ConvOp,
    axis: int,
    inv: np.ndarray,
    shift: np.ndarray,
    once: _Once,
    statistics: tuple[Any, ...],
) -> Node | None:
    """Scale each output channel of the last conv (Keras kernels end with the output channels:
    a plain or grouped conv's, a depthwise conv's (k..., 1, in * multiplier), a separable conv's
    pointwise kernel); the shift joins the bias."""
    if op.activation != "linear" or axis != (1 if op.channels_first else op.rank + 1):
        return None
    sources = (op.kernel, op.pointwise, op.bias, *statistics)
    bias = once("bias", sources, lambda: (op.bias if op.bias is not None else 0.0) * inv + shift)
    if op.pointwise is not None:
        pointwise = op.pointwise
        scaled = once("pointwise", sources, lambda: _scaled_in_onnx_order(pointwise, inv, op.rank + 1))
        return replace(node, op=replace(op, pointwise=scaled, bias=bias))
    kernel = once("kernel", sources, lambda: _scaled_in_onnx_order(op.kernel, inv, op.rank + 1))
    return replace(node, op=replace(op, kernel=kernel, bias=bias))


def _scaled_in_onnx_order(kernel: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    """`kernel` with Keras axis `axis` scaled by `scale`, as a Keras-layout view of an array laid out
    in ONNX's weight order (Keras' two channel axes reversed, then the spatial ones): the planner's
    transposition of it is then free. One pass over a big kernel instead of two (scale, then
    transpose), and one new array instead of two: most of a Pix2Pix compile is such copies."""
    rank = kernel.ndim - 2
    order = (rank + 1, rank, *range(rank))
    broadcast = [1] * kernel.ndim
    broadcast[axis] = -1
    scale = scale.reshape(broadcast)
    out = np.empty([kernel.shape[a] for a in order], dtype=np.result_type(kernel, scale))
    np.multiply(kernel.transpose(order), scale.transpose(order), out=out)
    return out.transpose(np.argsort(order))
