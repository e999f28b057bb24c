"""`Plan` → `onnx.ModelProto`. The only module that builds ONNX protos.

Each kind of plan step has one emitter, and each transposed-convolution form (its strategy) has
one, both chosen by the type of what they emit. Deterministic: node and tensor names derive from
layer names, initializers are written in plan order, and nothing depends on time or memory
addresses, so the same model and options give a byte-identical file. `ir_version` is pinned to
the lowest that the opset needs (onnx's `make_model` would write one newer than onnxruntime loads).
A weight array the plan holds once (a shared layer's, `PlanContext.floats`/`shared`) becomes one
initializer, whichever nodes read it. Linear in the number of steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import helper

from deconv_compiler import __version__
from deconv_compiler.activations import activation as activation_entry
from deconv_compiler.model_file import DetachedModel
from deconv_compiler.plan import (
    ActivationStep,
    CastStep,
    Constant,
    ConvPlan,
    ConvStep,
    NodeStep,
    Plan,
    PlanValue,
    Step,
    ViewStep,
)
from deconv_compiler.strategies import ConvForm, GemmForm, NativeForm, SubpixelForm

PRODUCER = "deconv-compiler"


def onnx_elem_type(dtype: str) -> int:
    return int(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


class _OnnxEmitter:
    """Collects nodes and initializers with unique names; implements the activations' `Emitter`."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.float_type: int = onnx_elem_type("float32")
        self.float_dtype = np.dtype(np.float32)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[tuple[str, np.ndarray]] = []
        self._scope = ""
        self._counts: dict[str, dict[str, int]] = {}  # scope → op type → names handed out
        self._taken: set[str] = set()  # every node and tensor name so far: names must be unique
        # (name asked for, the array's id) → the initializer written: a shared layer's weights once.
        # The arrays live in `initializers` as long as this emitter, so their ids stay theirs.
        self._written: dict[tuple[str, int], str] = {}
        self._derived: dict[tuple[object, ...], np.ndarray] = {}

    def scope(self, name: str, dtype: str) -> None:
        self._scope = name
        self.float_dtype = np.dtype(dtype)
        self.float_type = onnx_elem_type(dtype)

    def reserve(self, name: str) -> None:
        self._taken.add(name)

    def _name(self, stem: str) -> str:
        """`layer/Op` for the first Op of its type in a layer, then `layer/Op_1`, `layer/Op_2`...,
        skipping any name already taken (a layer may be called "output", or "a/Relu")."""
        counts = self._counts.setdefault(self._scope, {})
        while True:
            count = counts.get(stem, 0)
            counts[stem] = count + 1
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
        """A constant; Python floats and float arrays take the scope's float type."""
        array = np.asarray(value)
        if array.dtype.kind == "f":
            array = array.astype(self.float_dtype)
        return self.initializer(self._name("const"), array)

    def constant(self, constant: Constant) -> str:
        """A planned constant, in the dtype the plan gave it."""
        name = self._name("const") if constant.name is None else constant.name
        return self.initializer(name, constant.value)

    def initializer(self, name: str, array: np.ndarray) -> str:
        written = self._written.get((name, id(array)))
        if written is not None:
            return written
        unique, suffix = name, 0
        while unique in self._taken:
            suffix += 1
            unique = f"{name}_{suffix}"
        self._taken.add(unique)
        self.initializers.append((unique, array))
        self._written[name, id(array)] = unique
        return unique

    def derived(
        self, what: str, sources: tuple[np.ndarray, ...], make: Callable[[], np.ndarray]
    ) -> np.ndarray:
        """An array made from the plan's `sources` (which live as long as the plan), made once:
        a shared layer's later calls get the same array, hence the same initializer."""
        key = (what, *(id(source) for source in sources))
        if key not in self._derived:
            self._derived[key] = make()
        return self._derived[key]


# --- plan steps -------------------------------------------------------------------------------

StepEmitter = Callable[[_OnnxEmitter, Any, dict[str, str]], str]


def _node_step(em: _OnnxEmitter, step: NodeStep, names: dict[str, str]) -> str:
    inputs = [names[item] if isinstance(item, str) else em.constant(item) for item in step.inputs]
    return em.op(step.op_type, inputs, **dict(step.attrs))[0]


def _cast_step(em: _OnnxEmitter, step: CastStep, names: dict[str, str]) -> str:
    return em.op("Cast", [names[step.input]], to=onnx_elem_type(step.dtype))[0]


def _activation_step(em: _OnnxEmitter, step: ActivationStep, names: dict[str, str]) -> str:
    lower = activation_entry(step.activation).lower
    x = names[step.input]
    return x if lower is None else lower(em, x, step.site)


def _conv_step(em: _OnnxEmitter, step: ConvStep, names: dict[str, str]) -> str:
    """The layer's form (ConvTranspose or an exact rewrite) → [Slice] → activation."""
    layer = step.layer
    y = _FORM_EMITTERS[type(layer.form)](em, layer, layer.form, names[step.input])
    activation = activation_entry(layer.activation)
    if activation.lower is not None:
        y = activation.lower(em, y, layer.activation_site)
    return y


def _view_step(em: _OnnxEmitter, step: ViewStep, names: dict[str, str]) -> str:
    return names[step.input]  # the same ONNX tensor: only the planner's layout changed


_STEP_EMITTERS: dict[type, StepEmitter] = {
    NodeStep: _node_step,
    CastStep: _cast_step,
    ActivationStep: _activation_step,
    ConvStep: _conv_step,
    ViewStep: _view_step,
}


# --- transposed-convolution forms (ONNX W layout: (in, filters, *kernel)) ---------------------

FormEmitter = Callable[[_OnnxEmitter, ConvPlan, Any, str], str]


def _weights(em: _OnnxEmitter, layer: ConvPlan, weight: np.ndarray) -> list[str]:
    inputs = [em.initializer(f"{layer.name}/kernel", weight)]
    if layer.bias is not None:
        inputs.append(em.initializer(f"{layer.name}/bias", layer.bias))
    return inputs


def _slice(em: _OnnxEmitter, x: str, axes: list[int], starts: list[int], ends: list[int]) -> str:
    """Crop with non-negative starts and negative ends (0: to the end), so that dynamic sizes
    need no shape subgraph."""
    int64_max = np.iinfo(np.int64).max
    keep = [i for i, (b, e) in enumerate(zip(starts, ends, strict=True)) if b or e]
    if not keep:
        return x
    return em.op(
        "Slice",
        [
            x,
            em.const(np.array([starts[i] for i in keep], np.int64)),
            em.const(np.array([-ends[i] if ends[i] else int64_max for i in keep], np.int64)),
            em.const(np.array([axes[i] for i in keep], np.int64)),
        ],
    )[0]


def _native(em: _OnnxEmitter, layer: ConvPlan, form: NativeForm, x: str) -> str:
    y = em.op(
        "ConvTranspose",
        [x, *_weights(em, layer, form.weight)],
        kernel_shape=list(layer.kernel_shape),
        strides=list(layer.strides),
        dilations=list(layer.dilations),
        pads=list(form.pads),
        output_padding=list(form.output_padding),
        group=1,
    )[0]
    rank = len(layer.kernel_shape)
    return _slice(em, y, [2 + a for a in range(rank)], [0] * rank, list(form.crop_end))


def _conv(em: _OnnxEmitter, layer: ConvPlan, form: ConvForm, x: str) -> str:
    return em.op(
        "Conv",
        [x, *_weights(em, layer, form.weight)],
        kernel_shape=list(layer.kernel_shape),
        dilations=list(layer.dilations),
        pads=list(form.pads),
        group=1,
    )[0]


def _subpixel(em: _OnnxEmitter, layer: ConvPlan, form: SubpixelForm, x: str) -> str:
    if form.uniform:
        phase_weights = tuple(phase.weight for phase in form.phases)
        weight = em.derived("phases", phase_weights, lambda: np.concatenate(phase_weights))
        inputs = [x, em.initializer(f"{layer.name}/kernel", weight)]
        if layer.bias is not None:
            one = layer.bias
            tiled = em.derived(f"bias x{len(form.phases)}", (one,), lambda: np.tile(one, len(form.phases)))
            inputs.append(em.initializer(f"{layer.name}/bias", tiled))
        kernel, pads = list(weight.shape[2:]), list(form.phases[0].pads)
        stacked = em.op("Conv", inputs, kernel_shape=kernel, pads=pads, group=1)[0]
    else:
        bias = None if layer.bias is None else em.initializer(f"{layer.name}/bias", layer.bias)
        phases = []
        for index, phase in enumerate(form.phases):
            inputs = [x, em.initializer(f"{layer.name}/kernel_phase{index}", phase.weight)]
            if bias is not None:
                inputs.append(bias)
            kernel = list(phase.weight.shape[2:])
            phases.append(em.op("Conv", inputs, kernel_shape=kernel, pads=list(phase.pads), group=1)[0])
        stacked = em.op("Concat", phases, axis=1)[0]
    y = em.op("DepthToSpace", [stacked], blocksize=form.stride, mode="DCR")[0]
    return _slice(em, y, [2, 3], list(form.crop_begin), list(form.crop_end))


def _gemm(em: _OnnxEmitter, layer: ConvPlan, form: GemmForm, x: str) -> str:
    """In N, spatial..., C: MatMul over channels gives every output pixel's taps at once (kernel ==
    stride: no overlap), then Reshape/Transpose/Reshape interleaves taps and pixels."""
    rank = len(layer.kernel_shape)
    filters = form.weight.shape[1] // int(np.prod(layer.kernel_shape))
    y = em.op("MatMul", [x, em.initializer(f"{layer.name}/kernel", form.weight)])[0]
    split = np.array([0, *form.spatial, *layer.kernel_shape, filters], np.int64)
    y = em.op("Reshape", [y, em.const(split)])[0]
    perm = [
        0,
        *[a for pair in zip(range(1, rank + 1), range(rank + 1, 2 * rank + 1), strict=True) for a in pair],
    ]
    y = em.op("Transpose", [y], perm=[*perm, 2 * rank + 1])[0]
    merged = [0, *(s * k for s, k in zip(form.spatial, layer.kernel_shape, strict=True)), filters]
    y = em.op("Reshape", [y, em.const(np.array(merged, np.int64))])[0]
    if layer.bias is not None:
        y = em.op("Add", [y, em.initializer(f"{layer.name}/bias", layer.bias)])[0]
    return y


_FORM_EMITTERS: dict[type, FormEmitter] = {
    NativeForm: _native,
    ConvForm: _conv,
    SubpixelForm: _subpixel,
    GemmForm: _gemm,
}


# --- the model ---------------------------------------------------------------------------------


# Initializers of more elements than this are left out of a detached model (the checker's weightless
# view, `check.shape_view`, also drops everything above 1,024 elements, so it never sees them empty).
DETACH_ELEMENTS = 65536


def build_model(plan: Plan, metadata: tuple[tuple[str, str], ...]) -> onnx.ModelProto:
    """Emit the plan's steps in order, then name the outputs; `metadata` goes into the model."""
    return _assemble(plan, metadata, detach=False).model


def build_detached_model(plan: Plan, metadata: tuple[tuple[str, str], ...]) -> DetachedModel:
    """`build_model`'s model with its big initializers left beside it (`model_file`), for writing a
    file without copying the weights through protobuf."""
    return _assemble(plan, metadata, detach=True)


def _assemble(plan: Plan, metadata: tuple[tuple[str, str], ...], detach: bool) -> DetachedModel:
    em = _OnnxEmitter(plan.opset)
    for value in (*plan.inputs, *(output for output, _ in plan.outputs)):
        em.reserve(value.name)
    names = {value.name: value.name for value in plan.inputs}
    for step in plan.steps:
        em.scope(step.scope, step.dtype)
        names[step.output] = _emit(em, step, names)
    graph_inputs = {value.name for value in plan.inputs}
    renamed: dict[str, str] = {}
    for output, tensor in plan.outputs:
        actual = names[tensor]
        if actual in graph_inputs or actual in renamed:  # an input, or a tensor already an output
            em.scope(output.name, output.dtype)
            actual = em.op("Identity", [renamed.get(actual, actual)])[0]
        renamed[actual] = output.name
    _rename_tensors(em.nodes, renamed)
    # The model is filled in place: make_graph/make_model copy every initializer (twice), which
    # is most of the build time of a 200 MB model.
    opset = helper.make_opsetid("", plan.opset)
    model = onnx.ModelProto(
        ir_version=helper.find_min_ir_version_for([opset]),
        producer_name=PRODUCER,
        producer_version=__version__,
    )
    model.opset_import.append(opset)
    graph = model.graph
    graph.name = plan.name
    graph.node.extend(em.nodes)
    graph.input.extend(_value_info(value) for value in plan.inputs)
    graph.output.extend(_value_info(output) for output, _ in plan.outputs)
    detached: dict[str, np.ndarray] = {}
    for name, array in em.initializers:
        keep_out = detach and array.size > DETACH_ELEMENTS
        array = _fill_tensor(graph.initializer.add(), name, array, with_data=not keep_out)
        if keep_out:
            detached[name] = array
    helper.set_model_props(model, dict(metadata))
    return DetachedModel(model, detached)


def _fill_tensor(tensor: onnx.TensorProto, name: str, array: np.ndarray, with_data: bool) -> np.ndarray:
    """What `numpy_helper.from_array` writes (little-endian raw data), without an extra copy; the
    array as the raw data holds it."""
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    tensor.name = name
    tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
    tensor.dims.extend(array.shape)
    if with_data:
        tensor.raw_data = array.tobytes()
    return array


def _emit(em: _OnnxEmitter, step: Step, names: dict[str, str]) -> str:
    return _STEP_EMITTERS[type(step)](em, step, names)


def _value_info(value: PlanValue) -> onnx.ValueInfoProto:
    symbols = ["batch", *(f"{value.name}_dim{i}" for i in range(1, len(value.shape)))]
    dims = [symbol if dim is None else dim for dim, symbol in zip(value.shape, symbols, strict=True)]
    return helper.make_tensor_value_info(value.name, onnx_elem_type(value.dtype), dims)


def _rename_tensors(nodes: list[onnx.NodeProto], renamed: dict[str, str]) -> None:
    """Rename tensors everywhere, in one pass: a graph output may also feed later nodes."""
    for node in nodes:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name in renamed:
                    names[i] = renamed[name]
