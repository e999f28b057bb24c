"""`ir.Graph` + `CompileOptions` → `Plan`: the graph in ONNX vocabulary, still free of onnx.

One planner for every graph, whichever front end made it:

- Weights: those no file gave are made by the layers' initializers (seeded by the options' seed,
  else the model's).
- BatchNormalization that directly follows a linear transposed convolution, convolution or Dense
  (its only consumer, on the channel axis, same dtype policy) is folded into that layer's kernel
  (a separable conv's pointwise kernel) and bias; elsewhere it is a Mul and an Add with Keras'
  inference formula.
- Layouts: every tensor lives in a physical layout (a permutation of its Keras axes). Convolutions,
  transposed convolutions, pooling and GroupNormalization need N,C,spatial (N,spatial,C for
  `gemm`); every other layer works in whatever layout its input has (axes, pads, scales and
  broadcast constants are permuted instead; Permute, Squeeze and ExpandDims only relabel the
  layout), except those whose meaning depends on memory order (Reshape, Flatten, RepeatVector,
  Dense off the channel axis). So a channels_last network gets one Transpose into the internal
  layout and one back, none between.
- Convolutions are ONNX Conv with the bias fused and the activation as the next node (the pair
  onnxruntime fuses); Keras' `same` padding is explicit wherever it does not depend on an unknown
  size, else SAME_UPPER (the same rule: ceil(i/s) outputs, the odd pad at the end).
- dtypes: each layer computes in its policy's dtype (the options' `dtype` over the layer's own);
  a Cast goes where a tensor meets a layer of another dtype, and at the outputs.
- Strategies: each transposed convolution's, by one precedence (`requested_strategy`), `auto`
  by the measured rule, `tune` from the tuner's timings (given to `plan_graph`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    ClipOp,
    ConcatenateOp,
    ConvOp,
    ConvTransposeOp,
    DenseOp,
    EluOp,
    ExpandDimsOp,
    FlattenOp,
    GlobalPoolOp,
    Graph,
    GroupNormOp,
    IdentityOp,
    LayerNormOp,
    LeakyReluOp,
    MergeOp,
    Node,
    NormalizeOp,
    PadOp,
    PermuteOp,
    PoolOp,
    PReluOp,
    ReluOp,
    RepeatVectorOp,
    RescaleOp,
    ReshapeOp,
    ScalarOp,
    Shape,
    SliceOp,
    SoftmaxOp,
    SqueezeOp,
    UnitNormOp,
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


@dataclass(frozen=True, eq=False)
class ViewStep:
    """No ONNX node: `output` is the tensor `input` under a new id, with its own layout (a
    Permute relabels the axes of the data it reads, it moves nothing)."""

    scope: str
    dtype: str
    input: str
    output: str


Step = NodeStep | ConvStep | CastStep | ActivationStep | ViewStep


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
        cast = array.astype(dtype, copy=False)
    if not np.isfinite(cast).all():
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

    def node(
        self, scope: str, dtype: str, op_type: str, inputs: Sequence[str | Constant], **attrs: Any
    ) -> str:
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
        value = np.asarray(array)
        if not np.issubdtype(value.dtype, np.floating):
            value = value.astype(np.float64)
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
    # Scale kernels in their own precision (at least float32): a float64 product of a 200 MB
    # kernel costs seconds and memory and changes the result by less than one float32 rounding.
    kernel = (
        op.kernel
        if isinstance(op, (ConvOp, DenseOp))
        else getattr(getattr(op, "weights", None), "kernel", None)
    )
    if isinstance(kernel, np.ndarray):
        inv = inv.astype(np.promote_types(kernel.dtype, np.float32))
    if isinstance(op, ConvOp):
        return _fold_conv(node, op, bn.axis, inv, shift)
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


def _fold_conv(node: Node, op: ConvOp, axis: int, inv: np.ndarray, shift: np.ndarray) -> Node | None:
    """Scale each output channel of the last conv (Keras kernels end with the output channels:
    a plain or grouped conv's, a depthwise conv's (k..., 1, in * multiplier), a separable conv's
    pointwise kernel); the shift joins the bias."""
    if op.activation != "linear" or axis != (1 if op.channels_first else op.rank + 1):
        return None
    bias = (op.bias if op.bias is not None else 0.0) * inv + shift
    if op.pointwise is not None:
        return replace(node, op=replace(op, pointwise=op.pointwise * inv, bias=bias))
    return replace(node, op=replace(op, kernel=op.kernel * inv, bias=bias))


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
    if op.max_value is not None and op.threshold == 0:
        # relu then clip(0, max) is one Clip (ReLU6): onnxruntime fuses Conv + Clip, not Relu + Clip
        y = p.node(scope, dtype, "Clip", [x, zero, p.floats(node.name, op.max_value, dtype)])
    elif op.threshold != 0:
        above = p.node(scope, dtype, "Greater", [x, p.floats(node.name, op.threshold, dtype)])
        y = p.node(scope, dtype, "Where", [above, x, zero])
    else:
        y = p.node(scope, dtype, "Relu", [x])
    if op.max_value is not None and op.threshold != 0:
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
        lse = _reduce(p, scope, dtype, "ReduceLogSumExp", x, axes)
        out = p.node(scope, dtype, "Exp", [p.node(scope, dtype, "Sub", [x, lse])])
    p.define(node.output.name, out, layout)


@_plans(MergeOp, ConcatenateOp)
def _merge(p: _Planner, node: Node, op: MergeOp | ConcatenateOp) -> None:
    dtype = compute_dtype(p.policy(node))
    scope = node.name
    layout = p.layouts[p.tensor(node.inputs[0])]
    inputs = [p.operand(scope, name, dtype, layout) for name in node.inputs]
    if isinstance(op, MergeOp):
        out = _merged(p, scope, dtype, op.function, inputs)
    else:
        out = p.node(scope, dtype, "Concat", inputs, axis=layout.index(op.axis))
    p.define(node.output.name, out, layout)


_BINARY = {
    "add": "Add", "subtract": "Sub", "multiply": "Mul", "divide": "Div", "maximum": "Max",
    "minimum": "Min", "power": "Pow", "average": "Add",
}  # fmt: skip


def _merged(p: _Planner, scope: str, dtype: str, function: str, inputs: list[str]) -> str:
    """Keras' merges fold left to right (`output = op(output, x)`); Max and Min are variadic in
    ONNX; Average is the sum divided by the count, as Keras computes it."""
    if len(inputs) == 1:
        return inputs[0]
    if function in ("maximum", "minimum"):
        return p.node(scope, dtype, _BINARY[function], inputs)
    out = p.node(scope, dtype, _BINARY[function], inputs[:2])
    for other in inputs[2:]:
        out = p.node(scope, dtype, _BINARY[function], [out, other])
    if function == "average":
        out = p.node(scope, dtype, "Div", [out, p.floats(scope, float(len(inputs)), dtype)])
    return out


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


def _reduce(
    p: _Planner, scope: str, dtype: str, op_type: str, x: str, axes: Sequence[int], keepdims: bool = True
) -> str:
    # axes moved from an attribute to an input: ReduceSum's in opset 13, the other reductions' in 18
    if p.options.opset >= (13 if op_type == "ReduceSum" else 18):
        return p.node(scope, dtype, op_type, [x, _i64(list(axes))], keepdims=int(keepdims))
    return p.node(scope, dtype, op_type, [x], axes=list(axes), keepdims=int(keepdims))


def _axes_node(p: _Planner, scope: str, dtype: str, op_type: str, x: str, axes: Sequence[int]) -> str:
    """Squeeze / Unsqueeze: their axes became an input in opset 13."""
    if p.options.opset >= 13:
        return p.node(scope, dtype, op_type, [x, _i64(list(axes))])
    return p.node(scope, dtype, op_type, [x], axes=list(axes))


def _view(p: _Planner, scope: str, x: str, layout: Perm) -> str:
    out = p.new_id()
    p.steps.append(ViewStep(scope, p.dtypes[x], x, out))
    p.dtypes[out] = p.dtypes[x]
    p.layouts[out] = layout
    return out


def _without_axes(layout: Perm, axes: Sequence[int]) -> Perm:
    """The layout of a tensor once Keras `axes` are gone: the rest keep their physical order."""
    return tuple(a - sum(1 for r in axes if r < a) for a in layout if a not in axes)


def _full_rank(array: np.ndarray, layout: Perm) -> np.ndarray:
    """A constant that broadcasts against the Keras shape (numpy rules), for a tensor in `layout`."""
    if array.ndim == 0:
        return array
    rank = len(layout)
    return np.transpose(array.reshape((1,) * (rank - array.ndim) + array.shape), layout)


def _along(array: np.ndarray, axes: Sequence[int], layout: Perm) -> np.ndarray:
    """`array`, sized like the Keras `axes` (in order), as a constant for a tensor in `layout`."""
    shape = [1] * len(layout)
    for axis, size in zip(axes, array.shape, strict=True):
        shape[axis] = size
    return np.transpose(array.reshape(shape), layout)


def _spatial(p: _Planner, node: Node, channels_first: bool) -> tuple[int | None, ...]:
    shape = p.graph.values[node.inputs[0]].shape
    return tuple(shape[2:] if channels_first else shape[1:-1])


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
def _conv(p: _Planner, node: Node, op: ConvOp) -> None:
    """Conv (grouped for depthwise), then the pointwise 1x1 Conv of a separable conv; the bias
    in the last Conv; the activation as the next node, where onnxruntime fuses it."""
    scope, rank = node.name, op.rank
    dtype = compute_dtype(p.policy(node))
    layout = internal_layout("channels_first" if op.channels_first else "channels_last", rank + 2)
    x = p.operand(scope, node.inputs[0], dtype, layout)
    bias = [] if op.bias is None else [p.floats(scope, op.bias, dtype, f"{scope}/bias")]
    size = op.kernel.shape[:rank]
    pads = _window_pads(_spatial(p, node, op.channels_first), size, op.strides, op.dilation_rate, op.padding)
    kernel = p.floats(scope, _conv_weight(op.kernel, rank), dtype, f"{scope}/kernel")
    y = p.node(
        scope, dtype, "Conv", [x, kernel, *(bias if op.pointwise is None else [])],
        kernel_shape=list(size), strides=list(op.strides), dilations=list(op.dilation_rate),
        group=op.groups, **pads,
    )  # fmt: skip
    if op.pointwise is not None:
        pointwise = p.floats(scope, _conv_weight(op.pointwise, rank), dtype, f"{scope}/pointwise_kernel")
        y = p.node(scope, dtype, "Conv", [y, pointwise, *bias], kernel_shape=[1] * rank)
    p.layouts[y] = layout
    if op.activation != "linear":
        y = _activation(p, node, y, op.activation, dtype)
    p.define(node.output.name, y, layout)


@_plans(PoolOp)
def _pool(p: _Planner, node: Node, op: PoolOp) -> None:
    scope = node.name
    dtype = compute_dtype(p.policy(node))
    rank = len(op.pool_size)
    layout = internal_layout("channels_first" if op.channels_first else "channels_last", rank + 2)
    x = p.operand(scope, node.inputs[0], dtype, layout)
    spatial = _spatial(p, node, op.channels_first)
    attrs = _window_pads(spatial, op.pool_size, op.strides, (1,) * rank, op.padding)
    attrs.update(kernel_shape=list(op.pool_size), strides=list(op.strides))
    if op.function == "max":  # padding never wins a max (lax pads with -inf)
        y = p.node(scope, dtype, "MaxPool", [x], **attrs)
    else:  # Keras' `same` average divides by the count of real elements in each window
        y = p.node(scope, dtype, "AveragePool", [x], count_include_pad=0, **attrs)
    p.define(node.output.name, y, layout)


@_plans(GlobalPoolOp)
def _global_pool(p: _Planner, node: Node, op: GlobalPoolOp) -> None:
    x, dtype, layout = _single_input(p, node)
    positions = sorted(layout.index(a) for a in op.axes)
    op_type = "ReduceMax" if op.function == "max" else "ReduceMean"
    y = _reduce(p, node.name, dtype, op_type, x, positions, op.keepdims)
    p.define(node.output.name, y, layout if op.keepdims else _without_axes(layout, op.axes))


# --- normalizations ----------------------------------------------------------------------------


def _statistics_input(p: _Planner, node: Node, layout: Perm | None = None) -> tuple[str, str]:
    """Layer/GroupNormalization read their input uncast (Keras sets autocast=False) and compute
    in at least float32 (`result_type(x.dtype, "float32")`), even under a float16 policy."""
    tensor = p.tensor(node.inputs[0])
    wide = "float64" if p.dtypes[tensor] == "float64" else "float32"
    return p.operand(node.name, node.inputs[0], wide, layout), wide


def _moments(
    p: _Planner, scope: str, dtype: str, x: str, positions: Sequence[int], epsilon: float
) -> tuple[str, str]:
    """x - mean and sqrt(variance + epsilon) over `positions`, the variance two-pass as jnp.var
    (not Pow: onnxruntime would fuse the pattern into its LayerNormalization, whose one-pass
    E[x²] - E[x]² loses digits when the mean is large)."""
    mean = _reduce(p, scope, dtype, "ReduceMean", x, positions)
    centred = p.node(scope, dtype, "Sub", [x, mean])
    squares = p.node(scope, dtype, "Mul", [centred, centred])
    variance = _reduce(p, scope, dtype, "ReduceMean", squares, positions)
    shifted = p.node(scope, dtype, "Add", [variance, p.floats(scope, epsilon, dtype)])
    return centred, p.node(scope, dtype, "Sqrt", [shifted])


def _affine(
    p: _Planner,
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
            constant = p.floats(scope, _along(array, axes, layout), dtype, f"{scope}/{name}")
            y = p.node(scope, dtype, op_type, [y, constant])
    return y


def _finish(p: _Planner, node: Node, y: str, layout: Perm) -> None:
    """A normalization's result cast to the layer's compute dtype (Keras casts it back)."""
    p.layouts[y] = layout
    p.define(node.output.name, p.cast(node.name, y, compute_dtype(p.policy(node))), layout)


@_plans(LayerNormOp)
def _layer_norm(p: _Planner, node: Node, op: LayerNormOp) -> None:
    """Keras: (x - mean) / sqrt(variance + epsilon) * gamma + beta over `axes`; the deprecated
    rms_scaling divides x itself (not centred) and has no beta."""
    scope = node.name
    x, wide = _statistics_input(p, node)
    layout = p.layouts[x]
    centred, root = _moments(p, scope, wide, x, sorted(layout.index(a) for a in op.axes), op.epsilon)
    y = p.node(scope, wide, "Div", [x if op.rms_scaling else centred, root])
    _finish(p, node, _affine(p, scope, wide, y, (op.gamma, op.beta), op.axes, layout), layout)


@_plans(GroupNormOp)
def _group_norm(p: _Planner, node: Node, op: GroupNormOp) -> None:
    """With the channel axis right after the batch, Keras' (..., groups, channels / groups, ...)
    split is a Reshape to (N, groups, -1); moments over the last axis, then back to x's shape."""
    scope = node.name
    rank = len(node.output.shape)
    layout = (0, op.axis, *(a for a in range(1, rank) if a != op.axis))
    x, wide = _statistics_input(p, node, layout)
    grouped = p.node(scope, wide, "Reshape", [x, _i64([0, op.groups, -1])])
    centred, root = _moments(p, scope, wide, grouped, [2], op.epsilon)
    y = p.node(scope, wide, "Div", [centred, root])
    y = p.node(scope, wide, "Reshape", [y, p.node(scope, wide, "Shape", [x])])
    _finish(p, node, _affine(p, scope, wide, y, (op.gamma, op.beta), (op.axis,), layout), layout)


@_plans(UnitNormOp)
def _unit_norm(p: _Planner, node: Node, op: UnitNormOp) -> None:
    """Keras 3 `normalize(order=2, epsilon=1e-12)`: x * min(rsqrt(sum x²), 1 / 1e-12), in the
    compute dtype; 1e12 is infinite in float16, where Keras' cap does nothing."""
    scope = node.name
    x, dtype, layout = _single_input(p, node)
    squares = _reduce(p, scope, dtype, "ReduceSumSquare", x, sorted(layout.index(a) for a in op.axes))
    inverse = p.node(scope, dtype, "Reciprocal", [p.node(scope, dtype, "Sqrt", [squares])])
    if 1e12 <= float(np.finfo(dtype).max):
        inverse = p.node(scope, dtype, "Min", [inverse, p.floats(scope, 1e12, dtype)])
    p.define(node.output.name, p.node(scope, dtype, "Mul", [x, inverse]), layout)


@_plans(RescaleOp)
def _rescale(p: _Planner, node: Node, op: RescaleOp) -> None:
    """Keras: x * scale + offset, both cast to the compute dtype (a unit scale and a zero offset
    change no value and give no node)."""
    x, dtype, layout = _single_input(p, node)
    y = x
    if np.any(op.scale != 1):
        y = p.node(node.name, dtype, "Mul", [y, p.floats(node.name, _full_rank(op.scale, layout), dtype)])
    if np.any(op.offset != 0):
        y = p.node(node.name, dtype, "Add", [y, p.floats(node.name, _full_rank(op.offset, layout), dtype)])
    p.define(node.output.name, y, layout)


@_plans(NormalizeOp)
def _normalize(p: _Planner, node: Node, op: NormalizeOp) -> None:
    """Keras: (x - mean) / max(sqrt(variance), epsilon), inverted mean + x * max(...), with
    `backend.epsilon()` = 1e-7 (Keras' default; keras.json may change it)."""
    scope = node.name
    x, dtype, layout = _single_input(p, node)
    mean = p.floats(scope, np.transpose(op.mean, layout), dtype, f"{scope}/mean")
    scale = np.maximum(np.sqrt(op.variance), 1e-7)
    deviation = p.floats(scope, np.transpose(scale, layout), dtype, f"{scope}/std")
    if op.invert:
        y = p.node(scope, dtype, "Add", [p.node(scope, dtype, "Mul", [x, deviation]), mean])
    else:
        y = p.node(scope, dtype, "Div", [p.node(scope, dtype, "Sub", [x, mean]), deviation])
    p.define(node.output.name, y, layout)


# --- arithmetic ----------------------------------------------------------------------------------


@_plans(ScalarOp)
def _scalar(p: _Planner, node: Node, op: ScalarOp) -> None:
    x, dtype, layout = _single_input(p, node)
    constant = p.floats(node.name, op.constant, dtype)
    inputs: list[str | Constant] = [constant, x] if op.constant_first else [x, constant]
    p.define(node.output.name, p.node(node.name, dtype, _BINARY[op.function], inputs), layout)


@_plans(ClipOp)
def _clip(p: _Planner, node: Node, op: ClipOp) -> None:
    """Clip with both bounds (inputs from opset 11), one-sided bounds as Max or Min."""
    scope = node.name
    x, dtype, layout = _single_input(p, node)
    low = None if op.low is None else p.floats(scope, op.low, dtype)
    high = None if op.high is None else p.floats(scope, op.high, dtype)
    if low is not None and high is not None:
        x = p.node(scope, dtype, "Clip", [x, low, high])
    elif low is not None:
        x = p.node(scope, dtype, "Max", [x, low])
    elif high is not None:
        x = p.node(scope, dtype, "Min", [x, high])
    p.define(node.output.name, x, layout)


# --- axes ----------------------------------------------------------------------------------------


@_plans(PermuteOp)
def _permute(p: _Planner, node: Node, op: PermuteOp) -> None:
    """No node: the data stays where it is, its layout is relabelled (output axis j is input
    axis perm[j]); a Transpose happens only where a later layer needs another layout."""
    x, _, layout = _single_input(p, node)
    output_axis = {axis: j for j, axis in enumerate(op.perm)}
    relabelled = tuple(output_axis[a] for a in layout)
    p.define(node.output.name, x if relabelled == layout else _view(p, node.name, x, relabelled), relabelled)


@_plans(RepeatVectorOp)
def _repeat_vector(p: _Planner, node: Node, op: RepeatVectorOp) -> None:
    scope = node.name
    x, dtype, _ = _single_input(p, node)
    x = p.in_layout(scope, x, (0, 1))
    y = _axes_node(p, scope, dtype, "Unsqueeze", x, [1])
    y = p.node(scope, dtype, "Expand", [y, _i64([1, op.times, 1])])
    p.define(node.output.name, y, (0, 1, 2))


@_plans(SliceOp)
def _slice_axis(p: _Planner, node: Node, op: SliceOp) -> None:
    x, dtype, layout = _single_input(p, node)
    bounds = [_i64([op.start]), _i64([op.stop]), _i64([layout.index(op.axis)])]
    p.define(node.output.name, p.node(node.name, dtype, "Slice", [x, *bounds]), layout)


@_plans(SqueezeOp)
def _squeeze(p: _Planner, node: Node, op: SqueezeOp) -> None:
    x, dtype, layout = _single_input(p, node)
    y = _axes_node(p, node.name, dtype, "Squeeze", x, sorted(layout.index(a) for a in op.axes))
    p.define(node.output.name, y, _without_axes(layout, op.axes))


@_plans(ExpandDimsOp)
def _expand_dims(p: _Planner, node: Node, op: ExpandDimsOp) -> None:
    """Each new (size-1) axis goes right after the axis before it, so an identity layout stays one."""
    x, dtype, layout = _single_input(p, node)
    rank = len(layout) + len(op.axes)
    kept = [a for a in range(rank) if a not in op.axes]  # input axis i is output axis kept[i]
    physical = [kept[a] for a in layout]
    for axis in sorted(op.axes):
        physical.insert(physical.index(axis - 1) + 1, axis)
    y = _axes_node(p, node.name, dtype, "Unsqueeze", x, sorted(physical.index(a) for a in op.axes))
    p.define(node.output.name, y, tuple(physical))
