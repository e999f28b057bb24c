"""The op planners of the basic layers: transposed convolutions, Dense, BatchNormalization (where
it was not folded), activations, merges, reshapes, padding, upsampling, arithmetic and the axis
layers (Permute, RepeatVector, Slice, Squeeze, ExpandDims). Each fills `PLANNERS`, this module's
own table (op type → planner)."""

from __future__ import annotations

import numpy as np

from deconv_compiler.activations import ActivationSite
from deconv_compiler.batch_norm_folding import bn_affine
from deconv_compiler.conv_transpose_plan import choose_strategy, plan_conv, requested_strategy
from deconv_compiler.dtypes import compute_dtype
from deconv_compiler.errors import InternalError
from deconv_compiler.ir import (
    ActivationOp,
    BatchNormOp,
    ClipOp,
    ConcatenateOp,
    ConvTransposeOp,
    DenseOp,
    EluOp,
    ExpandDimsOp,
    FlattenOp,
    IdentityOp,
    LeakyReluOp,
    MergeOp,
    Node,
    PadOp,
    PermuteOp,
    PReluOp,
    ReluOp,
    RepeatVectorOp,
    ReshapeOp,
    ScalarOp,
    SliceOp,
    SoftmaxOp,
    SqueezeOp,
    UpSampleOp,
)
from deconv_compiler.plan import ActivationStep, Constant, ConvStep
from deconv_compiler.plan_context import (
    OpPlanner,
    PlanContext,
    apply_activation,
    axes_node,
    define_activated,
    i64,
    internal_layout,
    reduce,
    registrar,
    single_input,
    view,
    without_axes,
)
from deconv_compiler.weights import LayerWeights

INT64_MAX = np.iinfo(np.int64).max

PLANNERS: dict[type, OpPlanner] = {}
_plans = registrar(PLANNERS)


@_plans(ConvTransposeOp)
def _conv_transpose(p: PlanContext, node: Node, op: ConvTransposeOp) -> None:
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
    conv = p.shared(node.name, plan_conv(op.layer, op.weights, dtype, p.options.target, strategy))
    scope = node.name  # a shared layer's later calls get `layer/Op_1`...: names stay unique
    x = p.operand(scope, node.inputs[0], dtype, conv.layout)
    out = p.new_id()
    p.steps.append(ConvStep(scope, dtype, x, out, conv))
    p.dtypes[out] = dtype
    p.define(node.output.name, out, conv.layout)


@_plans(IdentityOp)
def _identity(p: PlanContext, node: Node, op: IdentityOp) -> None:
    p.aliases[node.output.name] = p.tensor(node.inputs[0])


@_plans(DenseOp)
def _dense(p: PlanContext, node: Node, op: DenseOp) -> None:
    scope = node.name
    x, dtype, layout = single_input(p, node)
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
    define_activated(p, node, y, layout, op.activation, dtype)


@_plans(BatchNormOp)
def _batch_norm(p: PlanContext, node: Node, op: BatchNormOp) -> None:
    x, dtype, layout = single_input(p, node)
    inv, shift = bn_affine(op)
    shape = [1] * len(layout)
    shape[layout.index(op.axis)] = -1
    y = p.node(node.name, dtype, "Mul", [x, p.floats(node.name, inv.reshape(shape), dtype)])
    y = p.node(node.name, dtype, "Add", [y, p.floats(node.name, shift.reshape(shape), dtype)])
    p.define(node.output.name, y, layout)


@_plans(ActivationOp)
def _activation_layer(p: PlanContext, node: Node, op: ActivationOp) -> None:
    x, dtype, layout = single_input(p, node)
    p.define(node.output.name, apply_activation(p, node, x, op.activation, dtype), layout)


@_plans(ReluOp)
def _relu(p: PlanContext, node: Node, op: ReluOp) -> None:
    """Keras' `activations.relu(x, negative_slope, max_value, threshold)`, step for step."""
    scope = node.name
    x, dtype, layout = single_input(p, node)
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
def _leaky_relu(p: PlanContext, node: Node, op: LeakyReluOp) -> None:
    x, dtype, layout = single_input(p, node)
    p.define(node.output.name, p.node(node.name, dtype, "LeakyRelu", [x], alpha=op.negative_slope), layout)


@_plans(EluOp)
def _elu(p: PlanContext, node: Node, op: EluOp) -> None:
    x, dtype, layout = single_input(p, node)
    p.define(node.output.name, p.node(node.name, dtype, "Elu", [x], alpha=op.alpha), layout)


@_plans(PReluOp)
def _prelu(p: PlanContext, node: Node, op: PReluOp) -> None:
    x, dtype, layout = single_input(p, node)
    slope = np.transpose(op.alpha[None, ...], layout)
    y = p.node(node.name, dtype, "PRelu", [x, p.floats(node.name, slope, dtype, f"{node.name}/alpha")])
    p.define(node.output.name, y, layout)


@_plans(SoftmaxOp)
def _softmax(p: PlanContext, node: Node, op: SoftmaxOp) -> None:
    scope = node.name
    x, dtype, layout = single_input(p, node)
    rank = len(layout)
    axes = [layout.index(a) for a in op.axes]
    if len(axes) == 1:
        out = p.new_id()
        size = node.output.shape[op.axes[0]]
        p.steps.append(ActivationStep(scope, dtype, x, out, "softmax", ActivationSite(axes[0], rank, size)))
        p.dtypes[out] = dtype
    else:  # Keras: exp(x - logsumexp(x, axes, keepdims=True)) over several axes
        lse = reduce(p, scope, dtype, "ReduceLogSumExp", x, axes)
        out = p.node(scope, dtype, "Exp", [p.node(scope, dtype, "Sub", [x, lse])])
    p.define(node.output.name, out, layout)


@_plans(MergeOp, ConcatenateOp)
def _merge(p: PlanContext, node: Node, op: MergeOp | ConcatenateOp) -> None:
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


def _merged(p: PlanContext, scope: str, dtype: str, function: str, inputs: list[str]) -> str:
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
def _reshape(p: PlanContext, node: Node, op: ReshapeOp) -> None:
    x, dtype, layout = single_input(p, node)
    x = p.in_layout(node.name, x, tuple(range(len(layout))))
    out = p.node(node.name, dtype, "Reshape", [x, i64([0, *op.target])])
    p.define(node.output.name, out, tuple(range(len(node.output.shape))))


@_plans(FlattenOp)
def _flatten(p: PlanContext, node: Node, op: FlattenOp) -> None:
    x, dtype, layout = single_input(p, node)
    in_rank = len(layout)
    order = (0, *range(2, in_rank), 1) if op.channels_first and in_rank > 2 else tuple(range(in_rank))
    x = p.in_layout(node.name, x, order)
    p.define(node.output.name, p.node(node.name, dtype, "Reshape", [x, i64([0, -1])]), (0, 1))


@_plans(PadOp)
def _pad(p: PlanContext, node: Node, op: PadOp) -> None:
    scope = node.name
    x, dtype, layout = single_input(p, node)
    rank = len(layout)
    positions = [layout.index(a) for a in op.axes]
    if all(b >= 0 and e >= 0 for b, e in zip(op.begins, op.ends, strict=True)):
        pads = [0] * (2 * rank)
        for pos, begin, end in zip(positions, op.begins, op.ends, strict=True):
            pads[pos], pads[rank + pos] = begin, end
        out = p.node(scope, dtype, "Pad", [x, i64(pads)], mode="constant")
    else:  # cropping: a Slice with negative end indices, so dynamic sizes need no shape subgraph
        starts = [-b for b in op.begins]
        ends = [e if e < 0 else INT64_MAX for e in op.ends]
        out = p.node(scope, dtype, "Slice", [x, i64(starts), i64(ends), i64(positions)])
    p.define(node.output.name, out, layout)


@_plans(UpSampleOp)
def _upsample(p: PlanContext, node: Node, op: UpSampleOp) -> None:
    scope = node.name
    x, dtype, layout = single_input(p, node)
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


# --- arithmetic ----------------------------------------------------------------------------------


@_plans(ScalarOp)
def _scalar(p: PlanContext, node: Node, op: ScalarOp) -> None:
    x, dtype, layout = single_input(p, node)
    constant = p.floats(node.name, op.constant, dtype)
    inputs: list[str | Constant] = [constant, x] if op.constant_first else [x, constant]
    p.define(node.output.name, p.node(node.name, dtype, _BINARY[op.function], inputs), layout)


@_plans(ClipOp)
def _clip(p: PlanContext, node: Node, op: ClipOp) -> None:
    """Clip with both bounds (inputs from opset 11), one-sided bounds as Max or Min."""
    scope = node.name
    x, dtype, layout = single_input(p, node)
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
def _permute(p: PlanContext, node: Node, op: PermuteOp) -> None:
    """No node: the data stays where it is, its layout is relabelled (output axis j is input
    axis perm[j]); a Transpose happens only where a later layer needs another layout."""
    x, _, layout = single_input(p, node)
    output_axis = {axis: j for j, axis in enumerate(op.perm)}
    relabelled = tuple(output_axis[a] for a in layout)
    p.define(node.output.name, x if relabelled == layout else view(p, node.name, x, relabelled), relabelled)


@_plans(RepeatVectorOp)
def _repeat_vector(p: PlanContext, node: Node, op: RepeatVectorOp) -> None:
    scope = node.name
    x, dtype, _ = single_input(p, node)
    x = p.in_layout(scope, x, (0, 1))
    y = axes_node(p, scope, dtype, "Unsqueeze", x, [1])
    y = p.node(scope, dtype, "Expand", [y, i64([1, op.times, 1])])
    p.define(node.output.name, y, (0, 1, 2))


@_plans(SliceOp)
def _slice_axis(p: PlanContext, node: Node, op: SliceOp) -> None:
    x, dtype, layout = single_input(p, node)
    bounds = [i64([op.start]), i64([op.stop]), i64([layout.index(op.axis)])]
    p.define(node.output.name, p.node(node.name, dtype, "Slice", [x, *bounds]), layout)


@_plans(SqueezeOp)
def _squeeze(p: PlanContext, node: Node, op: SqueezeOp) -> None:
    x, dtype, layout = single_input(p, node)
    y = axes_node(p, node.name, dtype, "Squeeze", x, sorted(layout.index(a) for a in op.axes))
    p.define(node.output.name, y, without_axes(layout, op.axes))


@_plans(ExpandDimsOp)
def _expand_dims(p: PlanContext, node: Node, op: ExpandDimsOp) -> None:
    """Each new (size-1) axis goes right after the axis before it, so an identity layout stays one."""
    x, dtype, layout = single_input(p, node)
    rank = len(layout) + len(op.axes)
    kept = [a for a in range(rank) if a not in op.axes]  # input axis i is output axis kept[i]
    physical = [kept[a] for a in layout]
    for axis in sorted(op.axes):
        physical.insert(physical.index(axis - 1) + 1, axis)
    y = axes_node(p, node.name, dtype, "Unsqueeze", x, sorted(physical.index(a) for a in op.axes))
    p.define(node.output.name, y, tuple(physical))
