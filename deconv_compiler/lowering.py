"""`LoweringPlan` → `onnx.ModelProto`. The only module that builds ONNX protos.

Deterministic: node and tensor names derive from layer names, initializers are written in plan
order, and nothing depends on time or memory addresses, so the same spec and weights give a
byte-identical file. `ir_version` is pinned to the lowest that the opset needs (onnx's
`make_model` would write one newer than onnxruntime loads).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deconv_compiler.activations import ACTIVATIONS
from deconv_compiler.graph_plan import ActivationStep, Constant, ConvStep, GraphPlan
from deconv_compiler.plan import LayerPlan, LoweringPlan
from deconv_compiler.strategies import ConvForm, GemmForm, SubpixelForm

PRODUCER = "deconv-compiler"


def onnx_elem_type(dtype: str) -> int:
    return int(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


class _GraphBuilder:
    """Collects nodes and initializers; implements the activations' `Emitter` protocol."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.float_type: int = int(TensorProto.FLOAT)
        self.float_dtype = np.dtype(np.float32)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._scope = ""
        self._used: dict[str, int] = {}
        self._taken: set[str] = set()  # every node and tensor name so far: names must be unique

    def scope(self, name: str, dtype: str) -> None:
        self._scope, self._used = name, {}
        self.float_dtype = np.dtype(dtype)
        self.float_type = onnx_elem_type(dtype)

    def reserve(self, name: str) -> None:
        self._taken.add(name)

    def _name(self, stem: str) -> str:
        """`layer/Op` for the first Op of its type in a layer, then `layer/Op_1`, `layer/Op_2`...,
        skipping any name already taken (a layer may be called "output", or "a/Relu")."""
        while True:
            count = self._used.get(stem, 0)
            self._used[stem] = count + 1
            name = f"{self._scope}/{stem}" if count == 0 else f"{self._scope}/{stem}_{count}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def op(self, op_type: str, inputs: list[str], n_outputs: int = 1, **attrs: Any) -> list[str]:
        node_name = self._name(op_type)
        outputs = [node_name if n_outputs == 1 else f"{node_name}:{i}" for i in range(n_outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=node_name, **attrs))
        return outputs

    def const(self, value: np.ndarray | float) -> str:
        array = np.asarray(value)
        if array.dtype.kind == "f":
            array = array.astype(self.float_dtype)
        return self.initializer(self._name("const"), array)

    def initializer(self, name: str, array: np.ndarray) -> str:
        unique, suffix = name, 0
        while unique in self._taken:
            suffix += 1
            unique = f"{name}_{suffix}"
        self._taken.add(unique)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), unique))
        return unique


def _dims(shape: tuple[int | None, ...], symbols: list[str]) -> list[int | str]:
    return [symbol if dim is None else dim for dim, symbol in zip(shape, symbols, strict=True)]


def _lower_layer(builder: _GraphBuilder, layer: LayerPlan, x: str) -> str:
    builder.scope(layer.name, layer.dtype)
    if layer.to_internal is not None:
        x = builder.op("Transpose", [x], perm=list(layer.to_internal))[0]
    if layer.cast_to is not None:
        x = builder.op("Cast", [x], to=onnx_elem_type(layer.cast_to))[0]
    return lower_conv_transpose(builder, layer, x)


def lower_conv_transpose(builder: _GraphBuilder, layer: LayerPlan, x: str) -> str:
    """The layer's strategy (ConvTranspose or an exact rewrite) → [Slice] → activation, on `x`
    already in `layer.layout` and the layer's dtype."""
    y = _STRATEGY_EMITTERS[layer.strategy](builder, layer, x)
    activation = ACTIVATIONS[layer.activation]
    if activation.lower is not None:
        y = activation.lower(builder, y, layer.activation_site)
    return y


def _weights(builder: _GraphBuilder, layer: LayerPlan, weight: np.ndarray) -> list[str]:
    inputs = [builder.initializer(f"{layer.name}/kernel", weight)]
    if layer.bias is not None:
        inputs.append(builder.initializer(f"{layer.name}/bias", layer.bias))
    return inputs


def _slice(builder: _GraphBuilder, x: str, axes: list[int], starts: list[int], ends: list[int]) -> str:
    """Crop with non-negative starts and negative ends (0: to the end), so that dynamic sizes
    need no shape subgraph."""
    int64_max = np.iinfo(np.int64).max
    keep = [i for i, (b, e) in enumerate(zip(starts, ends, strict=True)) if b or e]
    if not keep:
        return x
    return builder.op(
        "Slice",
        [
            x,
            builder.const(np.array([starts[i] for i in keep], np.int64)),
            builder.const(np.array([-ends[i] if ends[i] else int64_max for i in keep], np.int64)),
            builder.const(np.array([axes[i] for i in keep], np.int64)),
        ],
    )[0]


def _native(builder: _GraphBuilder, layer: LayerPlan, x: str) -> str:
    y = builder.op(
        "ConvTranspose",
        [x, *_weights(builder, layer, layer.weight)],
        kernel_shape=list(layer.kernel_shape),
        strides=list(layer.strides),
        dilations=list(layer.dilations),
        pads=list(layer.pads),
        output_padding=list(layer.output_padding),
        group=1,
    )[0]
    rank = len(layer.kernel_shape)
    return _slice(builder, y, [2 + a for a in range(rank)], [0] * rank, list(layer.crop_end))


def _conv(builder: _GraphBuilder, layer: LayerPlan, x: str) -> str:
    form = layer.form
    assert isinstance(form, ConvForm)
    return builder.op(
        "Conv",
        [x, *_weights(builder, layer, form.weight)],
        kernel_shape=list(layer.kernel_shape),
        dilations=list(layer.dilations),
        pads=list(form.pads),
        group=1,
    )[0]


def _subpixel(builder: _GraphBuilder, layer: LayerPlan, x: str) -> str:
    form = layer.form
    assert isinstance(form, SubpixelForm)
    if form.uniform:
        weight = np.concatenate([phase.weight for phase in form.phases])
        inputs = [x, builder.initializer(f"{layer.name}/kernel", weight)]
        if layer.bias is not None:
            inputs.append(builder.initializer(f"{layer.name}/bias", np.tile(layer.bias, len(form.phases))))
        kernel, pads = list(weight.shape[2:]), list(form.phases[0].pads)
        stacked = builder.op("Conv", inputs, kernel_shape=kernel, pads=pads, group=1)[0]
    else:
        bias = None if layer.bias is None else builder.initializer(f"{layer.name}/bias", layer.bias)
        phases = []
        for index, phase in enumerate(form.phases):
            inputs = [x, builder.initializer(f"{layer.name}/kernel_phase{index}", phase.weight)]
            if bias is not None:
                inputs.append(bias)
            kernel = list(phase.weight.shape[2:])
            phases.append(builder.op("Conv", inputs, kernel_shape=kernel, pads=list(phase.pads), group=1)[0])
        stacked = builder.op("Concat", phases, axis=1)[0]
    y = builder.op("DepthToSpace", [stacked], blocksize=form.stride, mode="DCR")[0]
    return _slice(builder, y, [2, 3], list(form.crop_begin), list(form.crop_end))


def _gemm(builder: _GraphBuilder, layer: LayerPlan, x: str) -> str:
    """In N, spatial..., C: MatMul over channels gives every output pixel's taps at once (kernel ==
    stride: no overlap), then Reshape/Transpose/Reshape interleaves taps and pixels."""
    form = layer.form
    assert isinstance(form, GemmForm)
    rank = len(layer.kernel_shape)
    filters = form.weight.shape[1] // int(np.prod(layer.kernel_shape))
    y = builder.op("MatMul", [x, builder.initializer(f"{layer.name}/kernel", form.weight)])[0]
    split = np.array([0, *form.spatial, *layer.kernel_shape, filters], np.int64)
    y = builder.op("Reshape", [y, builder.const(split)])[0]
    perm = [
        0,
        *[a for pair in zip(range(1, rank + 1), range(rank + 1, 2 * rank + 1), strict=True) for a in pair],
    ]
    y = builder.op("Transpose", [y], perm=[*perm, 2 * rank + 1])[0]
    merged = [0, *(s * k for s, k in zip(form.spatial, layer.kernel_shape, strict=True)), filters]
    y = builder.op("Reshape", [y, builder.const(np.array(merged, np.int64))])[0]
    if layer.bias is not None:
        y = builder.op("Add", [y, builder.initializer(f"{layer.name}/bias", layer.bias)])[0]
    return y


_STRATEGY_EMITTERS = {"native": _native, "conv": _conv, "subpixel": _subpixel, "gemm": _gemm}


def build_model(plan: LoweringPlan) -> onnx.ModelProto:
    """Emit the graph: input → per layer ([Transpose] ConvTranspose activation) → [Transpose] → output."""
    builder = _GraphBuilder(plan.opset)
    builder.reserve(plan.input_name)
    builder.reserve(plan.output_name)
    x = plan.input_name
    for layer in plan.layers:
        x = _lower_layer(builder, layer, x)
    builder.scope("output", plan.output_dtype)
    if plan.to_keras is not None:
        x = builder.op("Transpose", [x], perm=list(plan.to_keras))[0]
    if plan.output_cast is not None:
        x = builder.op("Cast", [x], to=onnx_elem_type(plan.output_cast))[0]
    if x == plan.input_name:  # cannot happen for a non-empty chain, but keep the graph valid
        x = builder.op("Identity", [x])[0]
    _rename_output(builder.nodes, x, plan.output_name)

    rank = len(plan.input_shape)
    in_symbols = ["batch", *(f"{plan.input_name}_dim{i}" for i in range(1, rank))]
    out_symbols = ["batch", *(f"{plan.output_name}_dim{i}" for i in range(1, rank))]
    graph = helper.make_graph(
        builder.nodes,
        plan.name,
        [
            helper.make_tensor_value_info(
                plan.input_name,
                onnx_elem_type(plan.input_dtype),
                _dims(plan.input_shape, in_symbols),
            )
        ],
        [
            helper.make_tensor_value_info(
                plan.output_name,
                onnx_elem_type(plan.output_dtype),
                _dims(plan.output_shape, out_symbols),
            )
        ],
        initializer=builder.initializers,
    )
    return _finish_model(graph, plan.opset, plan.metadata)


def _finish_model(
    graph: onnx.GraphProto, opset_version: int, metadata: tuple[tuple[str, str], ...]
) -> onnx.ModelProto:
    opset = helper.make_opsetid("", opset_version)
    model = helper.make_model(
        graph,
        opset_imports=[opset],
        ir_version=helper.find_min_ir_version_for([opset]),
        producer_name=PRODUCER,
        producer_version=_version(),
    )
    helper.set_model_props(model, dict(metadata))
    return model


def _rename_output(nodes: list[onnx.NodeProto], old: str, new: str) -> None:
    for node in nodes:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new


def _version() -> str:
    from deconv_compiler import __version__

    return __version__


def build_graph_model(plan: GraphPlan) -> onnx.ModelProto:
    """Emit a Keras model's plan: each step's nodes in order, then the outputs under their names."""
    builder = _GraphBuilder(plan.opset)
    for value in (*plan.inputs, *(output for output, _ in plan.outputs)):
        builder.reserve(value.name)
    names = {value.name: value.name for value in plan.inputs}
    for step in plan.steps:
        builder.scope(step.scope, "float32")
        if isinstance(step, ConvStep):
            names[step.output] = lower_conv_transpose(builder, step.layer, names[step.input])
        elif isinstance(step, ActivationStep):
            activation = ACTIVATIONS[step.activation]
            x = names[step.input]
            names[step.output] = x if activation.lower is None else activation.lower(builder, x, step.site)
        else:
            inputs = [
                names[item] if isinstance(item, str) else _constant(builder, item) for item in step.inputs
            ]
            names[step.output] = builder.op(step.op_type, inputs, **dict(step.attrs))[0]
    graph_inputs = {value.name for value in plan.inputs}
    renamed: dict[str, str] = {}
    for output, tensor in plan.outputs:
        actual = names[tensor]
        if actual in graph_inputs or actual in renamed:  # an input, or a tensor already an output
            builder.scope(output.name, "float32")
            actual = builder.op("Identity", [renamed.get(actual, actual)])[0]
        renamed[actual] = output.name
        _rename_tensor(builder.nodes, actual, output.name)
    graph = helper.make_graph(
        builder.nodes,
        plan.name,
        [_value_info(v.name, v.shape) for v in plan.inputs],
        [_value_info(output.name, output.shape) for output, _ in plan.outputs],
        initializer=builder.initializers,
    )
    return _finish_model(graph, plan.opset, plan.metadata)


def _constant(builder: _GraphBuilder, constant: Constant) -> str:
    if constant.name is None:
        return builder.const(constant.value)
    return builder.initializer(constant.name, constant.value)


def _value_info(name: str, shape: tuple[int | None, ...]) -> onnx.ValueInfoProto:
    symbols = ["batch", *(f"{name}_dim{i}" for i in range(1, len(shape)))]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, _dims(shape, symbols))


def _rename_tensor(nodes: list[onnx.NodeProto], old: str, new: str) -> None:
    """Rename a tensor everywhere: a graph output may also feed later nodes."""
    for node in nodes:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == old:
                    names[i] = new
