"""`KerasGraph` → `GraphPlan`: a Keras model in ONNX vocabulary, still free of onnx.

Every tensor lives in a physical layout (a permutation of its Keras axes). Transposed
convolutions need the N,C,spatial layout; every other supported layer works in whatever layout
its input has (axes, pads, scales and broadcast constants are permuted instead), except the ones
whose meaning depends on the memory order (Reshape, Flatten) and Dense when its axis is neither
first-after-batch nor last. So a channels_last decoder gets one Transpose into the internal
layout and one back at the output, none in between.

BatchNormalization that directly follows a linear transposed convolution or Dense (its only
consumer, on the channel axis) is folded into that layer's kernel and bias; elsewhere it is a
Mul and an Add with Keras' inference formula.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from deconv_compiler.activations import ActivationSite
from deconv_compiler.errors import CompileError
from deconv_compiler.keras_layers import (
    ActivationOp,
    AddOp,
    BatchNormOp,
    ConcatenateOp,
    ConvTransposeOp,
    DenseOp,
    EluOp,
    FlattenOp,
    IdentityOp,
    LeakyReluOp,
    PadOp,
    PReluOp,
    ReluOp,
    ReshapeOp,
    SoftmaxOp,
    UpSampleOp,
)
from deconv_compiler.keras_model import GraphNode, KerasGraph
from deconv_compiler.plan import MAX_OPSET, MIN_OPSET, TARGETS, LayerPlan, Perm, internal_layout, plan_layer
from deconv_compiler.weights import LayerWeights

INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True, eq=False)
class Constant:
    """An initializer; `name` for weights (readable in the model), None for small constants."""

    value: np.ndarray
    name: str | None = None


@dataclass(frozen=True, eq=False)
class NodeStep:
    """One ONNX node; inputs are tensor ids or constants."""

    scope: str
    op_type: str
    inputs: tuple[str | Constant, ...]
    output: str
    attrs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, eq=False)
class ConvStep:
    scope: str
    input: str
    output: str
    layer: LayerPlan


@dataclass(frozen=True, eq=False)
class ActivationStep:
    scope: str
    input: str
    output: str
    activation: str
    site: ActivationSite


Step = NodeStep | ConvStep | ActivationStep


@dataclass(frozen=True)
class GraphValue:
    name: str
    shape: tuple[int | None, ...]  # Keras layout


@dataclass(frozen=True, eq=False)
class GraphPlan:
    name: str
    opset: int
    inputs: tuple[GraphValue, ...]
    outputs: tuple[tuple[GraphValue, str], ...]  # graph output, the tensor id that holds it
    steps: tuple[Step, ...]
    metadata: tuple[tuple[str, str], ...]


@dataclass
class _Planner:
    opset: int
    target: str
    strategy: str
    steps: list[Step] = field(default_factory=list)
    strategies: dict[str, str] = field(default_factory=dict)  # layer → the strategy it got
    layouts: dict[str, Perm] = field(default_factory=dict)  # tensor id → physical layout
    aliases: dict[str, str] = field(default_factory=dict)  # Keras tensor → tensor id
    transposed: dict[tuple[str, Perm], str] = field(default_factory=dict)
    counter: int = 0

    def new_id(self) -> str:
        self.counter += 1
        return f"%{self.counter}"

    def node(self, scope: str, op_type: str, inputs: list[str | Constant], **attrs: Any) -> str:
        out = self.new_id()
        self.steps.append(NodeStep(scope, op_type, tuple(inputs), out, tuple(attrs.items())))
        return out

    def tensor(self, name: str) -> str:
        return self.aliases.get(name, name)

    def in_layout(self, scope: str, tensor: str, wanted: Perm) -> str:
        """`tensor` permuted into `wanted` (a Transpose only where the layouts differ)."""
        current = self.layouts[tensor]
        if current == wanted:
            return tensor
        if (tensor, wanted) in self.transposed:  # one Transpose per tensor and layout, however many readers
            return self.transposed[tensor, wanted]
        where = {axis: i for i, axis in enumerate(current)}
        out = self.node(scope, "Transpose", [tensor], perm=[where[axis] for axis in wanted])
        self.layouts[out] = wanted
        self.transposed[tensor, wanted] = out
        return out

    def define(self, name: str, tensor: str, layout: Perm) -> None:
        self.aliases[name] = tensor
        self.layouts[tensor] = layout


def plan_graph(
    graph: KerasGraph,
    opset: int,
    target: str = "cpu",
    metadata: tuple[tuple[str, str], ...] = (),
    strategy: str = "auto",
) -> GraphPlan:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise CompileError(f"opset {opset} is not supported: choose {MIN_OPSET} to {MAX_OPSET}")
    if target not in TARGETS:
        raise CompileError(f"target {target!r} is not supported: choose {' or '.join(TARGETS)}")
    planner = _Planner(opset, target, strategy)
    for value in graph.inputs:
        planner.define(value.name, value.name, tuple(range(len(value.shape))))
    nodes = _fold_batch_norms(graph)
    for node in nodes:
        _plan_node(planner, node)
    outputs = []
    for output in graph.outputs:
        tensor = planner.tensor(output.tensor)
        tensor = planner.in_layout(output.name, tensor, tuple(range(len(output.shape))))
        outputs.append((GraphValue(output.name, output.shape), tensor))
    return GraphPlan(
        name=graph.name,
        opset=opset,
        inputs=tuple(GraphValue(v.name, v.shape) for v in graph.inputs),
        outputs=tuple(outputs),
        steps=tuple(planner.steps),
        metadata=(
            *metadata,
            ("deconv_compiler.keras", json.dumps(graph.keras_summary(), sort_keys=True)),
            ("deconv_compiler.strategies", json.dumps(planner.strategies, sort_keys=True)),
        ),
    )


# --- BatchNormalization folding ----------------------------------------------------------------


def _fold_batch_norms(graph: KerasGraph) -> list[GraphNode]:
    """Fold each BatchNormalization into the linear transposed conv or Dense right before it,
    when that layer's output goes nowhere else and the normalized axis is its channel axis."""
    consumers: dict[str, int] = {}
    for node in graph.nodes:
        for tensor in node.inputs:
            consumers[tensor] = consumers.get(tensor, 0) + 1
    for output in graph.outputs:
        consumers[output.tensor] = consumers.get(output.tensor, 0) + 1
    nodes = list(graph.nodes)
    producer = {node.output: i for i, node in enumerate(nodes)}
    folded: set[int] = set()
    for i, node in enumerate(nodes):
        if not isinstance(node.op, BatchNormOp):
            continue
        j = producer.get(node.inputs[0])
        if j is None or consumers.get(node.inputs[0]) != 1:
            continue
        merged = _fold(nodes[j], node.op)
        if merged is None:
            continue
        nodes[j] = replace(merged, output=node.output, shape=node.shape)
        folded.add(i)
    return [node for i, node in enumerate(nodes) if i not in folded]


def _bn_affine(bn: BatchNormOp) -> tuple[np.ndarray, np.ndarray]:
    inv = 1.0 / np.sqrt(bn.variance.astype(np.float64) + bn.epsilon)
    if bn.gamma is not None:
        inv = inv * bn.gamma
    shift = -bn.mean * inv
    if bn.beta is not None:
        shift = shift + bn.beta
    return inv, shift


def _fold(node: GraphNode, bn: BatchNormOp) -> GraphNode | None:
    op = node.op
    inv, shift = _bn_affine(bn)
    if isinstance(op, ConvTransposeOp):
        layer = op.layer
        channel_axis = layer.rank + 1 if layer.data_format == "channels_last" else 1
        if layer.activation != "linear" or bn.axis != channel_axis:
            return None
        # Keras kernel (k..., filters, in): scale each filter.
        kernel = op.weights.kernel * inv.reshape((1,) * layer.rank + (-1, 1))
        bias = (op.weights.bias if op.weights.bias is not None else 0.0) * inv + shift
        weights = LayerWeights(kernel, bias, op.weights.origin)
        return replace(node, op=ConvTransposeOp(layer, weights))
    if isinstance(op, DenseOp):
        if op.activation != "linear" or bn.axis != len(node.shape) - 1:
            return None
        bias = (op.bias if op.bias is not None else 0.0) * inv + shift
        return replace(node, op=DenseOp(op.kernel * inv[None, :], bias, op.activation))
    return None


# --- one layer call ----------------------------------------------------------------------------


def _f32(array: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(array, dtype=np.float32))


def _i64(values: Any) -> Constant:
    return Constant(np.asarray(values, dtype=np.int64))


def _plan_node(p: _Planner, node: GraphNode) -> None:
    op = node.op
    scope = node.layer  # a shared layer's later calls get `layer/Op_1`...: names stay unique
    rank = len(node.shape)
    if isinstance(op, IdentityOp):
        source = p.tensor(node.inputs[0])
        p.aliases[node.output] = source
        return
    x = p.tensor(node.inputs[0])
    layout = p.layouts[x]
    if isinstance(op, ConvTransposeOp):
        layer_plan = plan_layer(op.layer, op.weights, None, None, p.target, op.layer.strategy or p.strategy)
        p.strategies[node.layer] = layer_plan.strategy
        x = p.in_layout(scope, x, layer_plan.layout)
        out = p.new_id()
        p.steps.append(ConvStep(scope, x, out, layer_plan))
        p.define(node.output, out, layer_plan.layout)
    elif isinstance(op, DenseOp):
        _plan_dense(p, node, op, scope, x)
    elif isinstance(op, BatchNormOp):
        inv, shift = _bn_affine(op)
        shape = [1] * rank
        shape[layout.index(op.axis)] = -1
        y = p.node(scope, "Mul", [x, Constant(_f32(inv).reshape(shape))])
        p.define(node.output, p.node(scope, "Add", [y, Constant(_f32(shift).reshape(shape))]), layout)
    elif isinstance(op, ActivationOp):
        p.define(node.output, _activation(p, scope, x, op.activation, node, layout), layout)
    elif isinstance(op, ReluOp):
        p.define(node.output, _relu(p, scope, x, op), layout)
    elif isinstance(op, LeakyReluOp):
        p.define(node.output, p.node(scope, "LeakyRelu", [x], alpha=op.negative_slope), layout)
    elif isinstance(op, EluOp):
        p.define(node.output, p.node(scope, "Elu", [x], alpha=op.alpha), layout)
    elif isinstance(op, PReluOp):
        slope = np.transpose(op.alpha[None, ...], layout)
        p.define(node.output, p.node(scope, "PRelu", [x, Constant(_f32(slope), f"{scope}/alpha")]), layout)
    elif isinstance(op, SoftmaxOp):
        p.define(node.output, _softmax(p, scope, x, op, node, layout), layout)
    elif isinstance(op, (AddOp, ConcatenateOp)):
        inputs = [p.in_layout(scope, p.tensor(t), layout) for t in node.inputs]
        if isinstance(op, AddOp):
            out = inputs[0]
            for other in inputs[1:]:
                out = p.node(scope, "Add", [out, other])
        else:
            out = p.node(scope, "Concat", list(inputs), axis=layout.index(op.axis))
        p.define(node.output, out, layout)
    elif isinstance(op, ReshapeOp):
        x = p.in_layout(scope, x, tuple(range(len(layout))))
        out = p.node(scope, "Reshape", [x, _i64([0, *op.target])])
        p.define(node.output, out, tuple(range(rank)))
    elif isinstance(op, FlattenOp):
        in_rank = len(layout)
        order = (0, *range(2, in_rank), 1) if op.channels_first and in_rank > 2 else tuple(range(in_rank))
        x = p.in_layout(scope, x, order)
        p.define(node.output, p.node(scope, "Reshape", [x, _i64([0, -1])]), (0, 1))
    elif isinstance(op, PadOp):
        p.define(node.output, _pad(p, scope, x, op, layout), layout)
    elif isinstance(op, UpSampleOp):
        if op.interpolation == "bilinear":
            # onnxruntime's linear Resize is for N,C,H,W (or N,H,W,C); take the conv layout.
            layout = internal_layout(
                "channels_last" if op.channel_axis == rank - 1 else "channels_first", rank
            )
            x = p.in_layout(scope, x, layout)
        scales = [1.0] * rank
        for axis, factor in zip(op.axes, op.factors, strict=True):
            scales[layout.index(axis)] = float(factor)
        roi = Constant(np.zeros(0, np.float32))
        scale_const = Constant(np.asarray(scales, np.float32))
        if op.interpolation == "nearest":  # Keras repeats each sample: floor of the asymmetric map
            attrs = {
                "mode": "nearest",
                "coordinate_transformation_mode": "asymmetric",
                "nearest_mode": "floor",
            }
        else:  # Keras' image.resize: half-pixel centres, edges clamped
            attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
        p.define(node.output, p.node(scope, "Resize", [x, roi, scale_const], **attrs), layout)
    else:  # pragma: no cover - every op type of keras_model is handled above
        raise CompileError(f"internal error: no lowering for {type(op).__name__}")


def _plan_dense(p: _Planner, node: GraphNode, op: DenseOp, scope: str, x: str) -> None:
    layout = p.layouts[x]
    rank = len(layout)
    last = rank - 1
    kernel = _f32(op.kernel)
    if rank > 2 and layout[1] == last:
        # Keras' last axis is the internal channel axis: a 1x1 Conv, no transposes.
        units, channels = kernel.shape[1], kernel.shape[0]
        weight = Constant(kernel.T.reshape(units, channels, *[1] * (rank - 2)).copy(), f"{scope}/kernel")
        inputs: list[str | Constant] = [x, weight]
        if op.bias is not None:
            inputs.append(Constant(_f32(op.bias), f"{scope}/bias"))
        y = p.node(scope, "Conv", inputs, kernel_shape=[1] * (rank - 2))
    else:
        if layout[-1] != last:
            layout = tuple(range(rank))
            x = p.in_layout(scope, x, layout)
        y = p.node(scope, "MatMul", [x, Constant(kernel, f"{scope}/kernel")])
        if op.bias is not None:
            y = p.node(scope, "Add", [y, Constant(_f32(op.bias), f"{scope}/bias")])
    if op.activation != "linear":
        y = _activation(p, scope, y, op.activation, node, layout)
    p.define(node.output, y, layout)


def _activation(p: _Planner, scope: str, x: str, activation: str, node: GraphNode, layout: Perm) -> str:
    rank = len(layout)
    axis = layout.index(rank - 1)
    in_last = node.shape[-1] if activation != "glu" or node.shape[-1] is None else 2 * node.shape[-1]
    out = p.new_id()
    p.steps.append(ActivationStep(scope, x, out, activation, ActivationSite(axis, rank, in_last)))
    return out


def _relu(p: _Planner, scope: str, x: str, op: ReluOp) -> str:
    """Keras' `activations.relu(x, negative_slope, max_value, threshold)`, step for step."""
    if op.negative_slope != 0 and op.max_value is None and op.threshold == 0:
        return p.node(scope, "LeakyRelu", [x], alpha=op.negative_slope)
    zero = Constant(np.zeros((), np.float32))
    if op.threshold != 0:
        above = p.node(scope, "Greater", [x, Constant(np.asarray(op.threshold, np.float32))])
        y = p.node(scope, "Where", [above, x, zero])
    else:
        y = p.node(scope, "Relu", [x])
    if op.max_value is not None:
        y = p.node(scope, "Clip", [y, zero, Constant(np.asarray(op.max_value, np.float32))])
    if op.negative_slope != 0:
        shifted = p.node(scope, "Neg", [x])
        if op.threshold != 0:
            shifted = p.node(scope, "Add", [shifted, Constant(np.asarray(op.threshold, np.float32))])
        negative = p.node(scope, "Relu", [shifted])
        scaled = p.node(scope, "Mul", [negative, Constant(np.asarray(op.negative_slope, np.float32))])
        y = p.node(scope, "Sub", [y, scaled])
    return y


def _softmax(p: _Planner, scope: str, x: str, op: SoftmaxOp, node: GraphNode, layout: Perm) -> str:
    rank = len(layout)
    axes = [layout.index(a) for a in op.axes]
    if len(axes) == 1:
        out = p.new_id()
        size = node.shape[op.axes[0]]
        p.steps.append(ActivationStep(scope, x, out, "softmax", ActivationSite(axes[0], rank, size)))
        return out
    # Keras: exp(x - logsumexp(x, axes, keepdims=True)) over several axes.
    if p.opset >= 18:
        lse = p.node(scope, "ReduceLogSumExp", [x, _i64(axes)], keepdims=1)
    else:
        lse = p.node(scope, "ReduceLogSumExp", [x], axes=axes, keepdims=1)
    return p.node(scope, "Exp", [p.node(scope, "Sub", [x, lse])])


def _pad(p: _Planner, scope: str, x: str, op: PadOp, layout: Perm) -> str:
    rank = len(layout)
    positions = [layout.index(a) for a in op.axes]
    if all(b >= 0 and e >= 0 for b, e in zip(op.begins, op.ends, strict=True)):
        pads = [0] * (2 * rank)
        for pos, begin, end in zip(positions, op.begins, op.ends, strict=True):
            pads[pos], pads[rank + pos] = begin, end
        return p.node(scope, "Pad", [x, _i64(pads)], mode="constant")
    # Cropping: a Slice with negative end indices, so dynamic sizes need no shape subgraph.
    starts = [-b for b in op.begins]
    ends = [e if e < 0 else INT64_MAX for e in op.ends]
    return p.node(scope, "Slice", [x, _i64(starts), _i64(ends), _i64(positions)])
