"""The Keras front end: a saved Keras model (`keras_file.SavedModel`) → the compiler's one IR
(`ir.Graph`), or a `KerasModelError` listing every problem.

Sequential models and Functional graphs (DAGs, shared layers included) become one list of nodes
in topological order, each a layer call with its inputs, its Keras output shape, its dtype policy
and a typed op. Every layer is checked against the shapes it is called on (`keras_layers` holds
the parsers). Unsupported layers, Lambda layers, custom objects and nested models are refused
naming the layer; nothing from the file is ever executed. All problems are reported at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deconv_compiler.conv_layer import Problems
from deconv_compiler.dtypes import POLICIES, REFUSED_DTYPES, compute_dtype, io_dtype
from deconv_compiler.errors import FieldPath, InternalError, KerasModelError, Problem, shown
from deconv_compiler.ir import Graph, KerasOrigin, Node, Output, Shape, Value
from deconv_compiler.keras_file import SavedModel, read_saved_model
from deconv_compiler.keras_layers import CONV_LAYERS, LAYER_PARSERS, SUPPORTED_TEXT, LayerCall
from deconv_compiler.limits import MAX_SIZE, MAX_WEIGHT_BYTES

# --- reading -----------------------------------------------------------------------------------

MODEL_CLASSES = ("Sequential", "Functional", "Model")
# Keras 2 / tf.keras spell some classes differently.
CLASS_ALIASES = {"Convolution2DTranspose": "Conv2DTranspose", "Deconvolution2D": "Conv2DTranspose"}


def load_keras_model(
    path: str | Path, weights: str | Path | None = None, max_weight_bytes: int = MAX_WEIGHT_BYTES
) -> Graph:
    """Read a `.keras` archive, a legacy `.h5`, or a config JSON (+ `weights`) and validate it."""
    return parse_saved_model(read_saved_model(path, weights, max_weight_bytes))


def parse_saved_model(saved: SavedModel) -> Graph:
    builder = _KerasGraphReader(saved)
    config = saved.config
    class_name = _class_name(config)
    if class_name in MODEL_CLASSES:
        builder.model(config)
    else:
        builder.single_layer(config)
    if builder.problems.found:
        raise KerasModelError(builder.problems.found)
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
    value: Value
    io_dtype: str  # the dtype it has as a model output (float32 under a mixed policy)


@dataclass
class _KerasGraphReader:
    saved: SavedModel
    name: str = "model"
    inputs: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    tensors: dict[tuple[str, int], _Tensor] = field(default_factory=dict)
    used_weights: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.problems = Problems(lambda path, message: Problem(path, message, self.saved.file))

    def fail(self, path: FieldPath, message: str) -> None:
        self.problems.add(path, message)

    def result(self) -> Graph:
        return Graph(
            name=self.name,
            inputs=tuple(self.inputs),
            nodes=tuple(self.nodes),
            outputs=tuple(self.outputs),
            origin=KerasOrigin(self.saved.file, self.saved.format, self.saved.keras_version),
        )

    def input_tensor(self, name: str, shape: Shape, config: Mapping[str, Any]) -> _Tensor | None:
        """A model input; its dtype from the InputLayer's config (Keras' default float32)."""
        policy = self.policy(config, (name,))
        if policy is None:
            return None
        if any(size is not None and size > MAX_SIZE for size in shape):
            self.fail((name,), f"the input shape {_shape_text(shape)} has a size beyond {MAX_SIZE:,} (int32)")
            return None
        value = Value(name, shape, io_dtype(policy))
        self.inputs.append(value)
        return _Tensor(value, value.dtype)

    def output(self, layer: str, tensor: _Tensor) -> None:
        self.outputs.append(
            Output(self._output_name(layer), tensor.value.name, tensor.value.shape, tensor.io_dtype)
        )

    def policy(self, config: Mapping[str, Any], path: FieldPath) -> str | None:
        """A layer's dtype policy: a dtype name (Keras 2) or a DTypePolicy (Keras 3); float32 if unsaid."""
        value = config.get("dtype")
        if isinstance(value, Mapping):
            value = _layer_config(value).get("name")
        if value is None:
            return "float32"
        if value in POLICIES:
            return str(value)
        if isinstance(value, str) and value in REFUSED_DTYPES:
            self.fail((*path, "dtype"), f"{shown(value)} is not supported: {REFUSED_DTYPES[value]}")
        else:
            self.fail((*path, "dtype"), f"must be one of {', '.join(POLICIES)}, got {shown(value)}")
        return None

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
        tensor = self.input_tensor("input", shape, layer_config)
        out = None if tensor is None else self._call(config, name, [tensor], node_index=0)
        if out is not None:
            self.output(name, out)

    def _sequential(self, body: Mapping[str, Any], entries: list[Mapping[str, Any]]) -> None:
        first = entries[0]
        if _class_name(first) == "InputLayer":
            input_name = str(_layer_config(first).get("name") or "input_layer")
            shape = _declared_input(_layer_config(first))
            entries = entries[1:]
        else:  # the first layer declares the input; it takes what it computes with
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
        tensor = self.input_tensor(input_name, shape, _layer_config(first))
        last_name = input_name
        for entry in entries:
            if tensor is None:
                return
            last_name = _entry_name(entry)
            tensor = self._call(entry, last_name, [tensor], node_index=0)
        if tensor is not None:
            self.output(last_name, tensor)

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
            tensor = self.input_tensor(name, shape, _layer_config(entry))
            if tensor is not None:
                self.tensors[(name, 0)] = tensor
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
                if not self.problems.found:
                    self.fail(("config", "output_layers"), f"output {ref[0]!r} is not computed by the model")
                continue
            self.output(ref[0], tensor)

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
            if name not in self.used_weights and not self.problems.found:
                self.fail((name,), "the weights file holds weights for a layer the model does not have")

    # --- one layer call ---

    def _call(
        self, entry: Mapping[str, Any], name: str, inputs: list[_Tensor], node_index: int
    ) -> _Tensor | None:
        class_name = _class_name(entry)
        config = _layer_config(entry)
        path: FieldPath = (f"{name} ({class_name})",)
        policy = self.policy(config, path)
        if policy is None:
            return None
        arrays = self.saved.weights.get(name)
        self.used_weights.add(name)
        shapes = tuple(t.value.shape for t in inputs)
        call = LayerCall(name, class_name, config, path, shapes, arrays, policy, self.problems)
        before = len(self.problems.found)
        result = LAYER_PARSERS[class_name](call)
        if len(self.problems.found) > before:
            return None
        if result is None:  # a parser that refuses must say why
            raise InternalError(f"the {class_name} parser refused layer {name!r} without naming a problem")
        op, shape = result
        if any(size is not None and size > MAX_SIZE for size in shape):
            self.fail(path, f"the output shape {_shape_text(shape)} has a size beyond {MAX_SIZE:,} (int32)")
            return None
        output = Value(name if node_index == 0 else f"{name}:{node_index}", shape, compute_dtype(policy))
        self.nodes.append(Node(name, class_name, op, tuple(t.value.name for t in inputs), output, policy))
        return _Tensor(output, io_dtype(policy))


# --- config details -------------------------------------------------------------------------------


def _entry_name(entry: Mapping[str, Any]) -> str:
    name = entry.get("name")
    if not isinstance(name, str):
        name = _layer_config(entry).get("name")
    return name if isinstance(name, str) and name else "?"


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


def _shape_text(shape: Shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"
