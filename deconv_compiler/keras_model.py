"""A saved Keras model (`keras_file.SavedModel`) → validated `KerasGraph` (Keras vocabulary, frozen).

Sequential models and Functional graphs (DAGs, shared layers included) become one list of nodes
in topological order, each a layer call with its inputs, its Keras output shape and a typed op.
Every layer is checked against the shapes it is called on (`keras_layers` holds the parsers).
Unsupported layers, Lambda layers, custom objects and nested models are refused
naming the layer; nothing from the file is ever executed. All problems are reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deconv_compiler.arguments import MAX_WEIGHT_BYTES
from deconv_compiler.errors import FieldPath, Problem, SpecError, shown
from deconv_compiler.keras_file import SavedModel, read_saved_model
from deconv_compiler.keras_layers import CONV_LAYERS, LAYER_PARSERS, SUPPORTED_TEXT, LayerCall, Op, Shape
from deconv_compiler.source import SpecSource

# --- the validated, frozen result ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GraphNode:
    """One call of a Keras layer: reads `inputs` (tensor names), writes the tensor `output`."""

    layer: str
    class_name: str
    op: Op
    inputs: tuple[str, ...]
    output: str
    shape: Shape  # Keras layout, batch first


@dataclass(frozen=True)
class GraphInput:
    name: str
    shape: Shape


@dataclass(frozen=True)
class GraphOutput:
    name: str  # the producing layer's name
    tensor: str
    shape: Shape


@dataclass(frozen=True, eq=False)
class KerasGraph:
    name: str
    file: str
    format: str
    keras_version: str | None
    inputs: tuple[GraphInput, ...]
    nodes: tuple[GraphNode, ...]  # topological order
    outputs: tuple[GraphOutput, ...]

    def keras_summary(self) -> dict[str, Any]:
        """What the model is, for its ONNX metadata (JSON-able, no weights)."""
        return {
            "file": Path(self.file).name,
            "format": self.format,
            "keras_version": self.keras_version,
            "layers": [[n.layer, n.class_name] for n in self.nodes],
        }


# --- reading -----------------------------------------------------------------------------------

MODEL_CLASSES = ("Sequential", "Functional", "Model")
# Keras 2 / tf.keras spell some classes differently.
CLASS_ALIASES = {"Convolution2DTranspose": "Conv2DTranspose", "Deconvolution2D": "Conv2DTranspose"}


def load_keras_model(
    path: str | Path, weights: str | Path | None = None, max_weight_bytes: int = MAX_WEIGHT_BYTES
) -> KerasGraph:
    """Read a `.keras` archive, a legacy `.h5`, or a config JSON (+ `weights`) and validate it."""
    return parse_saved_model(read_saved_model(path, weights, max_weight_bytes))


def parse_saved_model(saved: SavedModel) -> KerasGraph:
    builder = _GraphBuilder(saved)
    config = saved.config
    class_name = _class_name(config)
    if class_name in MODEL_CLASSES:
        builder.model(config)
    else:
        builder.single_layer(config)
    if builder.problems:
        raise SpecError(builder.problems)
    return builder.result()


def _class_name(entry: Any) -> str:
    name = entry.get("class_name") if isinstance(entry, Mapping) else None
    name = name if isinstance(name, str) else "?"
    return CLASS_ALIASES.get(name, name)


def _layer_config(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    config = entry.get("config")
    return config if isinstance(config, Mapping) else {}


@dataclass
class _Tensor:
    name: str
    shape: Shape


@dataclass
class _GraphBuilder:
    saved: SavedModel
    problems: list[Problem] = field(default_factory=list)
    name: str = "model"
    inputs: list[GraphInput] = field(default_factory=list)
    nodes: list[GraphNode] = field(default_factory=list)
    outputs: list[GraphOutput] = field(default_factory=list)
    tensors: dict[tuple[str, int], _Tensor] = field(default_factory=dict)
    used_weights: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.source = SpecSource(data=self.saved.config, file=self.saved.file)

    def fail(self, path: FieldPath, message: str) -> None:
        self.problems.append(Problem(path, message, self.saved.file))

    def result(self) -> KerasGraph:
        return KerasGraph(
            name=self.name,
            file=self.saved.file,
            format=self.saved.format,
            keras_version=self.saved.keras_version,
            inputs=tuple(self.inputs),
            nodes=tuple(self.nodes),
            outputs=tuple(self.outputs),
        )

    # --- model forms ---

    def model(self, config: Mapping[str, Any]) -> None:
        body = _layer_config(config)
        name = body.get("name")
        self.name = name if isinstance(name, str) and name else "model"
        layers = body.get("layers")
        if not isinstance(layers, list) or not layers:
            self.fail(("config", "layers"), "the model config lists no layers")
            return
        entries = [e if isinstance(e, Mapping) else {} for e in layers]
        if not self._check_layer_kinds(entries):
            return
        if _class_name(config) == "Sequential":
            self._sequential(body, entries)
        else:
            self._functional(body, entries)
        self._check_unused_weights()

    def single_layer(self, config: Mapping[str, Any]) -> None:
        """A layer's `get_config()` JSON: its input is the kernel's channel count, other sizes dynamic."""
        if not self._check_layer_kinds([config]):
            return
        class_name = _class_name(config)
        layer_config = _layer_config(config)
        if class_name not in CONV_LAYERS:
            self.fail((), f"a single-layer config must be a transposed convolution, got {class_name}")
            return
        name = str(layer_config.get("name") or "layer")
        self.name = name
        arrays = self.saved.weights.get(name)
        rank = int(class_name[4])
        shape = _declared_input(layer_config)
        if shape is None:
            if not arrays:
                self.fail((), f"layer {name!r} has no weights: give the kernel (and bias) in an .npz")
                return
            channels = int(arrays[0].shape[-1])
            first = layer_config.get("data_format") == "channels_first"
            shape = (None, channels, *[None] * rank) if first else (None, *[None] * rank, channels)
        self.inputs.append(GraphInput("input", shape))
        tensor = _Tensor("input", shape)
        out = self._call(config, name, [tensor], node_index=0)
        if out is not None:
            self.outputs.append(GraphOutput(name, out.name, out.shape))

    def _sequential(self, body: Mapping[str, Any], entries: list[Mapping[str, Any]]) -> None:
        first = entries[0]
        if _class_name(first) == "InputLayer":
            input_name = str(_layer_config(first).get("name") or "input_layer")
            shape = _declared_input(_layer_config(first))
            entries = entries[1:]
        else:
            input_name = "input_layer"
            shape = _declared_input(_layer_config(first))
            if shape is None:
                build = body.get("build_input_shape")
                shape = _shape_or_none(build)
        if shape is None:
            self.fail(
                ("config", "layers", 0),
                "the model does not say its input shape (no InputLayer, batch_input_shape or "
                "build_input_shape): save it after building it",
            )
            return
        self.inputs.append(GraphInput(input_name, shape))
        tensor: _Tensor | None = _Tensor(input_name, shape)
        last_name = input_name
        for entry in entries:
            if tensor is None:
                return
            last_name = _entry_name(entry)
            tensor = self._call(entry, last_name, [tensor], node_index=0)
        if tensor is not None:
            self.outputs.append(GraphOutput(self._output_name(last_name), tensor.name, tensor.shape))

    def _functional(self, body: Mapping[str, Any], entries: list[Mapping[str, Any]]) -> None:
        by_name = {_entry_name(e): e for e in entries}
        for entry in entries:
            if _class_name(entry) != "InputLayer":
                continue
            name = _entry_name(entry)
            shape = _declared_input(_layer_config(entry))
            if shape is None:
                self.fail((name,), "InputLayer without a shape")
                continue
            self.inputs.append(GraphInput(name, shape))
            self.tensors[(name, 0)] = _Tensor(name, shape)
        # Keras lists layers so that each one's inputs come earlier; check that rather than trust it.
        for entry in entries:
            if _class_name(entry) == "InputLayer":
                continue
            name = _entry_name(entry)
            calls = entry.get("inbound_nodes")
            if not isinstance(calls, list) or not calls:
                continue  # a layer never called contributes nothing
            for node_index, call in enumerate(calls):
                refs = _call_inputs(call)
                if refs is None:
                    self.fail((name, "inbound_nodes", node_index), f"cannot read this call: {shown(call)}")
                    continue
                tensors = []
                for ref in refs:
                    tensor = self.tensors.get(ref)
                    if tensor is None:
                        if ref[0] not in by_name:
                            self.fail((name,), f"takes the output of {ref[0]!r}, which is not in the model")
                        break
                    tensors.append(tensor)
                else:
                    out = self._call(entry, name, tensors, node_index)
                    if out is not None:
                        self.tensors[(name, node_index)] = out
        declared_inputs = _tensor_refs(body.get("input_layers"))
        declared_outputs = _tensor_refs(body.get("output_layers"))
        if declared_inputs is not None:
            order = {ref[0]: i for i, ref in enumerate(declared_inputs)}
            self.inputs.sort(key=lambda i: order.get(i.name, len(order)))
        if declared_outputs is None:
            self.fail(("config", "output_layers"), "the model config names no outputs")
            return
        for ref in declared_outputs:
            tensor = self.tensors.get(ref)
            if tensor is None:
                if not self.problems:
                    self.fail(("config", "output_layers"), f"output {ref[0]!r} is not computed by the model")
                continue
            self.outputs.append(GraphOutput(self._output_name(ref[0]), tensor.name, tensor.shape))

    def _output_name(self, layer: str) -> str:
        """The producing layer's name; `name_1`, `name_2`... when a model returns a tensor twice."""
        taken = {o.name for o in self.outputs} | {i.name for i in self.inputs}
        name, count = layer, 0
        while name in taken:
            count += 1
            name = f"{layer}_{count}"
        return name

    def _check_layer_kinds(self, entries: list[Mapping[str, Any]]) -> bool:
        """Refuse what we cannot compile before looking at anything else: custom objects,
        Lambda, nested models, unsupported classes; each named, all at once."""
        ok = True
        for entry in entries:
            class_name = _class_name(entry)
            name = _entry_name(entry)
            where = (f"{name} ({class_name})",)
            module = entry.get("module")
            registered = entry.get("registered_name")
            custom = (isinstance(module, str) and not module.startswith("keras")) or (
                isinstance(registered, str) and registered != entry.get("class_name")
            )
            if class_name == "Lambda":
                self.fail(
                    where,
                    "Lambda layers hold Python code, which is never run from a file: rewrite the "
                    "layer with built-in layers",
                )
            elif custom:
                self.fail(
                    where,
                    f"a custom object ({shown(registered or module)}) cannot be compiled: no code is "
                    "run from a file; use built-in layers",
                )
            elif class_name in MODEL_CLASSES:
                self.fail(where, "nested models are not supported: build the model from its layers")
            elif class_name not in LAYER_PARSERS and class_name != "InputLayer":
                self.fail(where, f"layer class {class_name!r} is not supported; supported: {SUPPORTED_TEXT}")
            else:
                continue
            ok = False
        return ok

    def _check_unused_weights(self) -> None:
        for name in self.saved.weights:
            if name not in self.used_weights and not self.problems:
                self.fail((name,), "the weights file holds weights for a layer the model does not have")

    # --- one layer call ---

    def _call(
        self, entry: Mapping[str, Any], name: str, inputs: list[_Tensor], node_index: int
    ) -> _Tensor | None:
        class_name = _class_name(entry)
        config = _layer_config(entry)
        path: FieldPath = (f"{name} ({class_name})",)
        dtype = _dtype_name(config.get("dtype"))
        if dtype not in (None, "float32"):
            self.fail((*path, "dtype"), f"only float32 models are supported, this layer uses {dtype!r}")
            return None
        arrays = self.saved.weights.get(name)
        self.used_weights.add(name)
        call = LayerCall(
            name, class_name, config, path, tuple(t.shape for t in inputs), arrays, self.source, self.problems
        )
        before = len(self.problems)
        result = LAYER_PARSERS[class_name](call)
        if result is None or len(self.problems) > before:
            return None
        op, shape = result
        output = name if node_index == 0 else f"{name}:{node_index}"
        self.nodes.append(GraphNode(name, class_name, op, tuple(t.name for t in inputs), output, shape))
        return _Tensor(output, shape)


# --- config details -------------------------------------------------------------------------------


def _entry_name(entry: Mapping[str, Any]) -> str:
    name = entry.get("name")
    if not isinstance(name, str):
        name = _layer_config(entry).get("name")
    return name if isinstance(name, str) and name else "?"


def _dtype_name(value: Any) -> str | None:
    """A layer's dtype: a string (Keras 2), or a DTypePolicy dict (Keras 3)."""
    if isinstance(value, Mapping):
        value = _layer_config(value).get("name")
    return value if isinstance(value, str) else None


def _shape_or_none(value: Any) -> Shape | None:
    if not isinstance(value, list) or not all(
        d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in value
    ):
        return None
    return tuple(value)


def _declared_input(config: Mapping[str, Any]) -> Shape | None:
    """The full input shape an InputLayer (Keras 3 `batch_shape`, Keras 2 `batch_input_shape`)
    or a first layer declares."""
    for key in ("batch_shape", "batch_input_shape"):
        shape = _shape_or_none(config.get(key))
        if shape is not None:
            return shape
    return None


def _is_ref(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and all(isinstance(v, int) for v in value[1:])
    )


def _tensor_refs(value: Any) -> list[tuple[str, int]] | None:
    """`input_layers` / `output_layers`: one [layer, node, tensor] or a list of them."""
    if _is_ref(value):
        return [(value[0], value[1])]
    if isinstance(value, list) and all(_is_ref(v) for v in value):
        return [(v[0], v[1]) for v in value]
    return None


def _call_inputs(call: Any) -> list[tuple[str, int]] | None:
    """The (layer, node index) of each tensor a call reads: Keras 3 writes
    {"args": [tensor or [tensors]], "kwargs": {}}, Keras 2 [[layer, node, tensor, kwargs], ...]."""
    if isinstance(call, Mapping):
        refs: list[tuple[str, int]] = []

        def collect(value: Any) -> None:
            if isinstance(value, Mapping) and value.get("class_name") == "__keras_tensor__":
                history: Any = _layer_config(value).get("keras_history")
                if _is_ref(history):
                    refs.append((history[0], history[1]))
            elif isinstance(value, (list, tuple)):
                for item in value:
                    collect(item)

        collect(call.get("args"))
        return refs or None
    if isinstance(call, list) and call and all(isinstance(c, list) and len(c) >= 3 for c in call):
        if all(_is_ref(c[:3]) for c in call):
            return [(c[0], c[1]) for c in call]
    return None
