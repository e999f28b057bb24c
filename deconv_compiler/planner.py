"""`ir.Graph` + `CompileOptions` → `Plan`: the graph in ONNX vocabulary, still free of onnx.

One planner for every graph, whichever front end made it:

- Weights: those no file gave are made by the layers' initializers (seeded by the options' seed,
  else the model's).
- BatchNormalization that directly follows a linear transposed convolution or Dense (its only
  consumer, on the channel axis, same dtype policy) is folded into that layer's kernel and bias;
  elsewhere it is a Mul and an Add with Keras' inference formula.
- Layouts: every tensor lives in a physical layout (a permutation of its Keras axes). Transposed
  convolutions need N,C,spatial (N,spatial,C for `gemm`); every other layer works in whatever
  layout its input has (axes, pads, scales and broadcast constants are permuted instead), except
  those whose meaning depends on memory order (Reshape, Flatten, Dense off the channel axis). So a
  channels_last decoder gets one Transpose into the internal layout and one back, none between.
- dtypes: each layer computes in its policy's dtype (the options' `dtype` over the layer's own);
  a Cast goes where a tensor meets a layer of another dtype, and at the outputs.
- Strategies: each transposed convolution's, by one precedence (`requested_strategy`), `auto`
  by the measured rule, `tune` from the tuner's timings (given to `plan_graph`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from deconv_compiler import geometry
from deconv_compiler.activations import ActivationSite
from deconv_compiler.conv_layer import ConvTransposeLayer
from deconv_compiler.dtypes import compute_dtype, io_dtype
from deconv_compiler.errors import CompileError, InternalError
from deconv_compiler.ir import (
    ActivationOp,
    BatchNormOp,
    ConcatenateOp,
    ConvTransposeOp,
    DenseOp,
    EluOp,
    FlattenOp,
    Graph,
    IdentityOp,
    LeakyReluOp,
    MergeOp,
    Node,
    PadOp,
    PReluOp,
    ReluOp,
    ReshapeOp,
    Shape,
    SoftmaxOp,
    UpSampleOp,
)
from deconv_compiler.options import CompileOptions
from deconv_compiler.strategies import (
    CHOICES,
    FORMS,
    STRATEGIES,
    Form,
    LayerGeometry,
    auto_strategy,
    why_not,
)
from deconv_compiler.weights import InitializerWeights, LayerWeights

Perm = tuple[int, ...]
INT64_MAX = np.iinfo(np.int64).max


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ConvPlan:
    """One transposed convolution as ONNX: its strategy's form, then the bias, then the activation."""

    name: str
    dtype: str
    bias: np.ndarray | None
    kernel_shape: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    activation: str
    activation_site: ActivationSite
    layout: Perm  # the Keras axes in the order this layer takes and gives them
    form: Form

    @property
    def strategy(self) -> str:
        return self.form.strategy


@dataclass(frozen=True, eq=False)
class Constant:
    """An initializer, already in its final dtype; `name` for weights, None for small constants."""

    value: np.ndarray
    name: str | None = None


@dataclass(frozen=True, eq=False)
class NodeStep:
    """One ONNX node; inputs are tensor ids or constants."""

    scope: str
    dtype: str
    op_type: str
    inputs: tuple[str | Constant, ...]
    output: str
    attrs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, eq=False)
class ConvStep:
    scope: str
    dtype: str
    input: str
    output: str
    layer: ConvPlan


@dataclass(frozen=True, eq=False)
class CastStep:
    scope: str
    dtype: str  # the dtype cast to
    input: str
    output: str


@dataclass(frozen=True, eq=False)
class ActivationStep:
    scope: str
    dtype: str
    input: str
    output: str
    activation: str
    site: ActivationSite


Step = NodeStep | ConvStep | CastStep | ActivationStep


@dataclass(frozen=True)
class PlanValue:
    name: str
    shape: Shape  # Keras layout
    dtype: str


@dataclass(frozen=True, eq=False)
class Plan:
    name: str
    opset: int
    inputs: tuple[PlanValue, ...]
    outputs: tuple[tuple[PlanValue, str], ...]  # graph output, the tensor id that holds it
    steps: tuple[Step, ...]
    strategies: Mapping[str, str]  # transposed-conv layer → its strategy
    weight_origins: Mapping[str, str]  # transposed-conv layer → where its weights came from


# --- strategies: one precedence, one rule ----------------------------------------------------


def requested_strategy(options: CompileOptions, layer: ConvTransposeLayer, graph: Graph) -> str:
    """What is asked of a layer: the command line over the layer over the model over `auto`."""
    return options.strategy or layer.strategy or graph.strategy or "auto"


def layers_to_tune(graph: Graph, options: CompileOptions) -> tuple[Node, ...]:
    """The transposed convolutions whose strategy the tuner must time (they ask for `tune`)."""
    return tuple(
        node
        for node in graph.nodes
        if isinstance(node.op, ConvTransposeOp)
        and requested_strategy(options, node.op.layer, graph) == "tune"
    )


def layer_geometry(layer: ConvTransposeLayer) -> LayerGeometry:
    axis_pads = [
        geometry.onnx_axis_pads(
            layer.kernel_size[a],
            layer.strides[a],
            layer.dilation_rate[a],
            layer.padding,
            None if layer.output_padding is None else layer.output_padding[a],
        )
        for a in range(layer.rank)
    ]
    spatial = layer.input_shape[1:-1] if layer.data_format == "channels_last" else layer.input_shape[2:]
    return LayerGeometry(
        kernel=layer.kernel_size,
        strides=layer.strides,
        dilations=layer.dilation_rate,
        begins=tuple(p.begin for p in axis_pads),
        ends=tuple(p.end for p in axis_pads),
        output_padding=tuple(p.output_padding for p in axis_pads),
        spatial=tuple(spatial),
        in_channels=layer.in_channels,
        filters=layer.filters,
        batch=layer.input_shape[0],
    )


def choose_strategy(layer: ConvTransposeLayer, requested: str, target: str, dtype: str) -> str:
    """`requested` checked against the layer (a forced strategy that cannot apply is an error),
    or `auto` resolved by its rule. `auto` keeps the native graph on the CUDA target and for
    float16/float64 layers: the rule was measured for float32 on the CPU provider."""
    g = layer_geometry(layer)
    if requested == "auto":
        return auto_strategy(g, layer.data_format) if target == "cpu" and dtype == "float32" else "native"
    if requested not in STRATEGIES:
        raise CompileError(
            f"layer {layer.name!r}: unknown strategy {requested!r}; choose {', '.join(CHOICES)}"
        )
    reason = why_not(requested, g)
    if reason is not None:
        raise CompileError(f"layer {layer.name!r}: strategy {requested!r} does not apply: {reason}")
    return requested


def internal_layout(data_format: str, tensor_rank: int) -> Perm:
    """Axes of the Keras tensor in the order the ONNX graph works in (N, C, spatial...)."""
    if data_format == "channels_first":
        return tuple(range(tensor_rank))
    return (0, tensor_rank - 1, *range(1, tensor_rank - 1))


def channels_last_layout(data_format: str, tensor_rank: int) -> Perm:
    """Axes of the Keras tensor in N, spatial..., C order (the gemm strategy's)."""
    if data_format == "channels_last":
        return tuple(range(tensor_rank))
    return (0, *range(2, tensor_rank), 1)


def plan_conv(
    layer: ConvTransposeLayer, weights: LayerWeights, dtype: str, target: str, strategy: str
) -> ConvPlan:
    """ONNX attributes and weights of one transposed convolution by `strategy` (already chosen)."""
    rank = layer.rank
    # Keras kernel (k..., filters, in) → ONNX W (in, filters, k...): no spatial flip.
    weight = np.transpose(weights.kernel, (rank + 1, rank, *range(rank)))
    np_dtype = np.dtype(dtype)
    weight = _cast(layer.name, "kernel", weight, np_dtype)
    bias = None if weights.bias is None else _cast(layer.name, "bias", weights.bias, np_dtype)
    form = FORMS[strategy](weight, layer_geometry(layer), target)
    layout = (channels_last_layout if strategy == "gemm" else internal_layout)(layer.data_format, rank + 2)
    return ConvPlan(
        name=layer.name,
        dtype=dtype,
        bias=bias,
        kernel_shape=layer.kernel_size,
        strides=layer.strides,
        dilations=layer.dilation_rate,
        activation=layer.activation,
        activation_site=ActivationSite(
            axis=layout.index(rank + 1), rank=rank + 2, axis_size=layer.conv_output_shape[-1]
        ),
        layout=layout,
        form=form,
    )


def _cast(layer: str, tensor: str, array: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """Weights in the layer's dtype; values the dtype cannot hold (an initializer's constant
    of 1e300 in float32, a Keras weight of 1e5 compiled in float16) are an error, not infinities."""
    with np.errstate(over="ignore"):
        cast = array.astype(dtype)
    if not np.all(np.isfinite(cast)):
        largest = float(np.max(np.abs(array)))
        raise CompileError(
            f"layer {layer!r}: its {tensor} holds values beyond the {dtype} range (|x| up to "
            f"{largest:.4g}); compile it in a wider dtype (--dtype) or check the initializer's arguments"
        )
    return cast


# --- planning a graph --------------------------------------------------------------------------


@dataclass
class _Planner:
    graph: Graph
    options: CompileOptions
    tuned: Mapping[str, str]
    steps: list[Step] = field(default_factory=list)
    strategies: dict[str, str] = field(default_factory=dict)
    layouts: dict[str, Perm] = field(default_factory=dict)  # tensor id → physical layout
    dtypes: dict[str, str] = field(default_factory=dict)  # tensor id → dtype
    aliases: dict[str, str] = field(default_factory=dict)  # IR value → tensor id
    converted: dict[tuple[str, Perm | str], str] = field(default_factory=dict)
    counter: int = 0

    def new_id(self) -> str:
        self.counter += 1
        return f"%{self.counter}"

    def policy(self, node: Node) -> str:
        return self.options.dtype or node.policy

    def node(self, scope: str, dtype: str, op_type: str, inputs: list[str | Constant], **attrs: Any) -> str:
        out = self.new_id()
        self.steps.append(NodeStep(scope, dtype, op_type, tuple(inputs), out, tuple(attrs.items())))
        self.dtypes[out] = dtype
        return out

    def tensor(self, name: str) -> str:
        return self.aliases.get(name, name)

    def in_layout(self, scope: str, tensor: str, wanted: Perm) -> str:
        """`tensor` permuted into `wanted` (a Transpose only where the layouts differ)."""
        current = self.layouts[tensor]
        if current == wanted:
            return tensor
        if (tensor, wanted) in self.converted:  # one Transpose per tensor and layout, however many readers
            return self.converted[tensor, wanted]
        where = {axis: i for i, axis in enumerate(current)}
        dtype = self.dtypes[tensor]
        out = self.node(scope, dtype, "Transpose", [tensor], perm=[where[axis] for axis in wanted])
        self.layouts[out] = wanted
        self.converted[tensor, wanted] = out
        return out

    def cast(self, scope: str, tensor: str, dtype: str) -> str:
        """`tensor` in `dtype` (a Cast only where it differs, one per tensor and dtype)."""
        if self.dtypes[tensor] == dtype:
            return tensor
        if (tensor, dtype) not in self.converted:
            out = self.new_id()
            self.steps.append(CastStep(scope, dtype, tensor, out))
            self.dtypes[out] = dtype
            self.layouts[out] = self.layouts[tensor]
            self.converted[tensor, dtype] = out
        return self.converted[tensor, dtype]

    def operand(self, scope: str, name: str, dtype: str, layout: Perm | None = None) -> str:
        """IR value `name` as a layer computing in `dtype` reads it: in `layout` if given."""
        tensor = self.tensor(name)
        if layout is not None:
            tensor = self.in_layout(scope, tensor, layout)
        return self.cast(scope, tensor, dtype)

    def define(self, name: str, tensor: str, layout: Perm) -> None:
        self.aliases[name] = tensor
        self.layouts[tensor] = layout

    def floats(self, layer: str, array: Any, dtype: str, name: str | None = None) -> Constant:
        """A constant of `layer` in its compute dtype; one that overflows it is an error, not an infinity."""
        value = np.asarray(array, dtype=np.float64)
        return Constant(np.ascontiguousarray(_cast(layer, name or "constant", value, np.dtype(dtype))), name)


def plan_graph(graph: Graph, options: CompileOptions, tuned: Mapping[str, str] | None = None) -> Plan:
    """Plan every node; `tuned` holds the tuner's choice for each layer that asks for `tune`.
    `options.target` must be resolved (cpu or cuda)."""
    if options.target not in ("cpu", "cuda"):
        raise InternalError(f"plan_graph needs a resolved target, got {options.target!r}")
    planner = _Planner(graph, options, tuned or {})
    inputs = []
    for value in graph.inputs:
        dtype = io_dtype(options.dtype) if options.dtype else value.dtype
        planner.define(value.name, value.name, tuple(range(len(value.shape))))
        planner.dtypes[value.name] = dtype
        inputs.append(PlanValue(value.name, value.shape, dtype))
    graph = made_weights(graph, options.seed)  # as is when the compile made them already
    for node in _fold_batch_norms(graph):
        _OP_PLANNERS[type(node.op)](planner, node, node.op)
    outputs = []
    for output in graph.outputs:
        dtype = io_dtype(options.dtype) if options.dtype else output.dtype
        tensor = planner.operand(output.name, output.value, dtype, tuple(range(len(output.shape))))
        outputs.append((PlanValue(output.name, output.shape, dtype), tensor))
    return Plan(
        name=graph.name,
        opset=options.opset,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        steps=tuple(planner.steps),
        strategies=planner.strategies,
        weight_origins=_weight_origins(graph),
    )


def made_weights(graph: Graph, seed: int | None) -> Graph:
    """`graph` with every transposed convolution's weights made: those its initializers make are
    seeded by `seed`, else by the model's seed. A graph whose weights are all given comes back as is."""
    model_seed = graph.seed if seed is None else seed
    nodes = tuple(
        replace(node, op=ConvTransposeOp(node.op.layer, node.op.weights.made(model_seed)))
        if isinstance(node.op, ConvTransposeOp) and isinstance(node.op.weights, InitializerWeights)
        else node
        for node in graph.nodes
    )
    if all(new is old for new, old in zip(nodes, graph.nodes, strict=True)):
        return graph
    return replace(graph, nodes=nodes)


def _weight_origins(graph: Graph) -> dict[str, str]:
    """Where each transposed convolution's weights came from (a file, inline, initializers)."""
    return {
        node.name: node.op.weights.origin
        for node in graph.nodes
        if isinstance(node.op, ConvTransposeOp) and isinstance(node.op.weights, LayerWeights)
    }


# --- BatchNormalization folding ----------------------------------------------------------------


def _fold_batch_norms(graph: Graph) -> list[Node]:
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
    for i, node in enumerate(folded_nodes):
        if not isinstance(node.op, BatchNormOp):
            continue
        j = producer.get(node.inputs[0])
        if j is None or consumers.get(node.inputs[0]) != 1 or folded_nodes[j].policy != node.policy:
            continue
        merged = _fold(folded_nodes[j], node.op)
        if merged is None:
            continue
        folded_nodes[j] = replace(merged, output=node.output)
        folded.add(i)
    return [node for i, node in enumerate(folded_nodes) if i not in folded]


def _bn_affine(bn: BatchNormOp) -> tuple[np.ndarray, np.ndarray]:
    inv = 1.0 / np.sqrt(bn.variance.astype(np.float64) + bn.epsilon)
    if bn.gamma is not None:
        inv = inv * bn.gamma
    shift = -bn.mean * inv
    if bn.beta is not None:
        shift = shift + bn.beta
    return inv, shift


def _fold(node: Node, bn: BatchNormOp) -> Node | None:
    op = node.op
    inv, shift = _bn_affine(bn)
    if isinstance(op, ConvTransposeOp) and isinstance(op.weights, LayerWeights):
        layer = op.layer
        channel_axis = layer.rank + 1 if layer.data_format == "channels_last" else 1
        if layer.activation != "linear" or bn.axis != channel_axis:
            return None
        # Keras kernel (k..., filters, in): scale each filter.
        kernel = op.weights.kernel * inv.reshape((1,) * layer.rank + (-1, 1))
        bias = (op.weights.bias if op.weights.bias is not None else 0.0) * inv + shift
        return replace(node, op=ConvTransposeOp(layer, LayerWeights(kernel, bias, op.weights.origin)))
    if isinstance(op, DenseOp):
        if op.activation != "linear" or bn.axis != len(node.output.shape) - 1:
            return None
        bias = (op.bias if op.bias is not None else 0.0) * inv + shift
        return replace(node, op=DenseOp(op.kernel * inv[None, :], bias, op.activation))
    return None


# --- one node: a planner per op type ------------------------------------------------------------


def _single_input(p: _Planner, node: Node) -> tuple[str, str, Perm]:
    """A one-input layer's input as it reads it (its compute dtype, the layout the tensor has),
    that dtype and that layout."""
    dtype = compute_dtype(p.policy(node))
    x = p.operand(node.name, node.inputs[0], dtype)
    return x, dtype, p.layouts[x]


OpPlanner = Callable[[_Planner, Node, Any], None]
_OP_PLANNERS: dict[type, OpPlanner] = {}


def _plans(*op_types: type) -> Callable[[OpPlanner], OpPlanner]:
    def register(planner: OpPlanner) -> OpPlanner:
        for op_type in op_types:
            _OP_PLANNERS[op_type] = planner
        return planner

    return register


@_plans(ConvTransposeOp)
def _conv_transpose(p: _Planner, node: Node, op: ConvTransposeOp) -> None:
    if not isinstance(op.weights, LayerWeights):
        raise InternalError(f"layer {node.name!r}: weights were not made before planning")
    dtype = compute_dtype(p.policy(node))
    requested = requested_strategy(p.options, op.layer, p.graph)
    if requested == "tune":
        if node.name not in p.tuned:
            raise InternalError(f"layer {node.name!r} asks for tune but was not timed")
        requested = p.tuned[node.name]
    strategy = choose_strategy(op.layer, requested, p.options.target, dtype)
    p.strategies[node.name] = strategy
    conv = plan_conv(op.layer, op.weights, dtype, p.options.target, strategy)
    scope = node.name  # a shared layer's later calls get `layer/Op_1`...: names stay unique
    x = p.operand(scope, node.inputs[0], dtype, conv.layout)
    out = p.new_id()
    p.steps.append(ConvStep(scope, dtype, x, out, conv))
    p.dtypes[out] = dtype
    p.define(node.output.name, out, conv.layout)


@_plans(IdentityOp)
def _identity(p: _Planner, node: Node, op: IdentityOp) -> None:
    p.aliases[node.output.name] = p.tensor(node.inputs[0])


@_plans(DenseOp)
def _dense(p: _Planner, node: Node, op: DenseOp) -> None:
    scope = node.name
    x, dtype, layout = _single_input(p, node)
    rank = len(layout)
    last = rank - 1
    if rank > 2 and layout[1] == last:
        # Keras' last axis is the internal channel axis: a 1x1 Conv, no transposes.
        units, channels = op.kernel.shape[1], op.kernel.shape[0]
        weight = op.kernel.T.reshape(units, channels, *[1] * (rank - 2))
        inputs: list[str | Constant] = [x, p.floats(node.name, weight, dtype, f"{scope}/kernel")]
        if op.bias is not None:
            inputs.append(p.floats(node.name, op.bias, dtype, f"{scope}/bias"))
        y = p.node(scope, dtype, "Conv", inputs, kernel_shape=[1] * (rank - 2))
    else:
        if layout[-1] != last:
            layout = tuple(range(rank))
            x = p.in_layout(scope, x, layout)
        y = p.node(scope, dtype, "MatMul", [x, p.floats(node.name, op.kernel, dtype, f"{scope}/kernel")])
        if op.bias is not None:
            y = p.node(scope, dtype, "Add", [y, p.floats(node.name, op.bias, dtype, f"{scope}/bias")])
    p.layouts[y] = layout
    if op.activation != "linear":
        y = _activation(p, node, y, op.activation, dtype)
    p.define(node.output.name, y, layout)


@_plans(BatchNormOp)
def _batch_norm(p: _Planner, node: Node, op: BatchNormOp) -> None:
    x, dtype, layout = _single_input(p, node)
    inv, shift = _bn_affine(op)
    shape = [1] * len(layout)
    shape[layout.index(op.axis)] = -1
    y = p.node(node.name, dtype, "Mul", [x, p.floats(node.name, inv.reshape(shape), dtype)])
    y = p.node(node.name, dtype, "Add", [y, p.floats(node.name, shift.reshape(shape), dtype)])
    p.define(node.output.name, y, layout)


@_plans(ActivationOp)
def _activation_layer(p: _Planner, node: Node, op: ActivationOp) -> None:
    x, dtype, layout = _single_input(p, node)
    p.define(node.output.name, _activation(p, node, x, op.activation, dtype), layout)


def _activation(p: _Planner, node: Node, x: str, activation: str, dtype: str) -> str:
    layout = p.layouts[x]
    rank = len(layout)
    axis = layout.index(rank - 1)
    last = node.output.shape[-1]
    in_last = last if activation != "glu" or last is None else 2 * last
    out = p.new_id()
    p.steps.append(ActivationStep(node.name, dtype, x, out, activation, ActivationSite(axis, rank, in_last)))
    p.dtypes[out] = dtype
    p.layouts[out] = layout
    return out


@_plans(ReluOp)
def _relu(p: _Planner, node: Node, op: ReluOp) -> None:
    """Keras' `activations.relu(x, negative_slope, max_value, threshold)`, step for step."""
    scope = node.name
    x, dtype, layout = _single_input(p, node)
    if op.negative_slope != 0 and op.max_value is None and op.threshold == 0:
        p.define(node.output.name, p.node(scope, dtype, "LeakyRelu", [x], alpha=op.negative_slope), layout)
        return
    zero = p.floats(node.name, 0.0, dtype)
    if op.threshold != 0:
        above = p.node(scope, dtype, "Greater", [x, p.floats(node.name, op.threshold, dtype)])
        y = p.node(scope, dtype, "Where", [above, x, zero])
    else:
        y = p.node(scope, dtype, "Relu", [x])
    if op.max_value is not None:
        y = p.node(scope, dtype, "Clip", [y, zero, p.floats(node.name, op.max_value, dtype)])
    if op.negative_slope != 0:
        shifted = p.node(scope, dtype, "Neg", [x])
        if op.threshold != 0:
            shifted = p.node(scope, dtype, "Add", [shifted, p.floats(node.name, op.threshold, dtype)])
        negative = p.node(scope, dtype, "Relu", [shifted])
        scaled = p.node(scope, dtype, "Mul", [negative, p.floats(node.name, op.negative_slope, dtype)])
        y = p.node(scope, dtype, "Sub", [y, scaled])
    p.define(node.output.name, y, layout)


@_plans(LeakyReluOp)
def _leaky_relu(p: _Planner, node: Node, op: LeakyReluOp) -> None:
    x, dtype, layout = _single_input(p, node)
    p.define(node.output.name, p.node(node.name, dtype, "LeakyRelu", [x], alpha=op.negative_slope), layout)


@_plans(EluOp)
def _elu(p: _Planner, node: Node, op: EluOp) -> None:
    x, dtype, layout = _single_input(p, node)
    p.define(node.output.name, p.node(node.name, dtype, "Elu", [x], alpha=op.alpha), layout)


@_plans(PReluOp)
def _prelu(p: _Planner, node: Node, op: PReluOp) -> None:
    x, dtype, layout = _single_input(p, node)
    slope = np.transpose(op.alpha[None, ...], layout)
    y = p.node(node.name, dtype, "PRelu", [x, p.floats(node.name, slope, dtype, f"{node.name}/alpha")])
    p.define(node.output.name, y, layout)


@_plans(SoftmaxOp)
def _softmax(p: _Planner, node: Node, op: SoftmaxOp) -> None:
    scope = node.name
    x, dtype, layout = _single_input(p, node)
    rank = len(layout)
    axes = [layout.index(a) for a in op.axes]
    if len(axes) == 1:
        out = p.new_id()
        size = node.output.shape[op.axes[0]]
        p.steps.append(ActivationStep(scope, dtype, x, out, "softmax", ActivationSite(axes[0], rank, size)))
        p.dtypes[out] = dtype
    else:  # Keras: exp(x - logsumexp(x, axes, keepdims=True)) over several axes
        if p.options.opset >= 18:  # axes became an input in opset 18
            lse = p.node(scope, dtype, "ReduceLogSumExp", [x, _i64(axes)], keepdims=1)
        else:
            lse = p.node(scope, dtype, "ReduceLogSumExp", [x], axes=axes, keepdims=1)
        out = p.node(scope, dtype, "Exp", [p.node(scope, dtype, "Sub", [x, lse])])
    p.define(node.output.name, out, layout)


@_plans(MergeOp, ConcatenateOp)
def _merge(p: _Planner, node: Node, op: MergeOp | ConcatenateOp) -> None:
    dtype = compute_dtype(p.policy(node))
    scope = node.name
    layout = p.layouts[p.tensor(node.inputs[0])]
    inputs = [p.operand(scope, name, dtype, layout) for name in node.inputs]
    if isinstance(op, MergeOp):
        out = inputs[0]
        for other in inputs[1:]:
            out = p.node(scope, dtype, "Add", [out, other])
    else:
        out = p.node(scope, dtype, "Concat", list(inputs), axis=layout.index(op.axis))
    p.define(node.output.name, out, layout)


@_plans(ReshapeOp)
def _reshape(p: _Planner, node: Node, op: ReshapeOp) -> None:
    x, dtype, layout = _single_input(p, node)
    x = p.in_layout(node.name, x, tuple(range(len(layout))))
    out = p.node(node.name, dtype, "Reshape", [x, _i64([0, *op.target])])
    p.define(node.output.name, out, tuple(range(len(node.output.shape))))


@_plans(FlattenOp)
def _flatten(p: _Planner, node: Node, op: FlattenOp) -> None:
    x, dtype, layout = _single_input(p, node)
    in_rank = len(layout)
    order = (0, *range(2, in_rank), 1) if op.channels_first and in_rank > 2 else tuple(range(in_rank))
    x = p.in_layout(node.name, x, order)
    p.define(node.output.name, p.node(node.name, dtype, "Reshape", [x, _i64([0, -1])]), (0, 1))


@_plans(PadOp)
def _pad(p: _Planner, node: Node, op: PadOp) -> None:
    scope = node.name
    x, dtype, layout = _single_input(p, node)
    rank = len(layout)
    positions = [layout.index(a) for a in op.axes]
    if all(b >= 0 and e >= 0 for b, e in zip(op.begins, op.ends, strict=True)):
        pads = [0] * (2 * rank)
        for pos, begin, end in zip(positions, op.begins, op.ends, strict=True):
            pads[pos], pads[rank + pos] = begin, end
        out = p.node(scope, dtype, "Pad", [x, _i64(pads)], mode="constant")
    else:  # cropping: a Slice with negative end indices, so dynamic sizes need no shape subgraph
        starts = [-b for b in op.begins]
        ends = [e if e < 0 else INT64_MAX for e in op.ends]
        out = p.node(scope, dtype, "Slice", [x, _i64(starts), _i64(ends), _i64(positions)])
    p.define(node.output.name, out, layout)


@_plans(UpSampleOp)
def _upsample(p: _Planner, node: Node, op: UpSampleOp) -> None:
    scope = node.name
    x, dtype, layout = _single_input(p, node)
    rank = len(layout)
    if op.interpolation == "bilinear":
        # onnxruntime's linear Resize is for N,C,H,W (or N,H,W,C); take the conv layout.
        data_format = "channels_last" if op.channel_axis == rank - 1 else "channels_first"
        layout = internal_layout(data_format, rank)
        x = p.in_layout(scope, x, layout)
    scales = [1.0] * rank
    for axis, factor in zip(op.axes, op.factors, strict=True):
        scales[layout.index(axis)] = float(factor)
    # roi and scales are float32 whatever the data's dtype (Resize's T2 and tensor(float))
    roi = Constant(np.zeros(0, np.float32))
    scale_const = Constant(np.asarray(scales, np.float32))
    if op.interpolation == "nearest":  # Keras repeats each sample: floor of the asymmetric map
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    else:  # Keras' image.resize: half-pixel centres, edges clamped
        attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    p.define(node.output.name, p.node(scope, dtype, "Resize", [x, roi, scale_const], **attrs), layout)


def _i64(values: Any) -> Constant:
    return Constant(np.asarray(values, dtype=np.int64))
