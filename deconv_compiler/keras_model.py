"""The Keras front end: a saved Keras model (`keras_file.SavedModel`) → the compiler's one IR
(`ir.Graph`), or a `KerasModelError` listing every problem.

Sequential models and Functional graphs (DAGs, shared layers, several inputs and outputs) become
one list of nodes in topological order, each a layer call with its inputs, its Keras output shape,
its dtype policy and a typed op. A nested Sequential or Functional model is inlined on the tensors
it is called on (once per call, to any depth); its nodes are named `block/layer` (`block:1/layer`
for its second call) and its weights are found by layer path. Every layer is checked against the
shapes it is called on (`keras_layers` holds the layer parsers, `keras_ops` those of the
`keras.ops` calls Keras records). Unsupported layers and operations, Lambda layers and custom
objects (subclassed models too) are refused naming them; nothing from the file is ever executed.
All problems are reported at once; the supported classes are listed once after them.

Bounded in the size of the config: at most `MAX_LAYERS` layers and layer calls (nested models
inlined), refused before anything is parsed; calls are scheduled in time linear in their number;
the weights are counted in the dtype the compiled model will hold them in (a float32 layer's int8
kernel at 4 bytes a value) against the weight-size limit before any is widened; every output's
lengths, dynamic ones at their least, fit int32 (`keras_shapes.size_problem`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deconv_compiler.conv_layer import Problems
from deconv_compiler.dtypes import POLICIES, REFUSED_DTYPES, compute_dtype, io_dtype
from deconv_compiler.errors import (
    DeconvWarning,
    FieldPath,
    InternalError,
    KerasModelError,
    Problem,
    shown,
)
from deconv_compiler.ir import Graph, KerasOrigin, Node, Op, Output, Shape, Value
from deconv_compiler.keras_call import LayerCall
from deconv_compiler.keras_config import (
    TensorRef,
    call_arguments,
    declared_input,
    entry_class,
    entry_config,
    entry_name,
    model_entries,
    shape_or_none,
    tensor_refs,
)
from deconv_compiler.keras_file import MAX_NESTING, MODEL_CLASSES, SavedModel, read_saved_model
from deconv_compiler.keras_layers import CONV_LAYERS, LAYER_PARSERS, SUPPORTED_TEXT
from deconv_compiler.keras_ops import OP_PARSERS, SUPPORTED_OPS_TEXT, OpCall, is_op_entry, op_name
from deconv_compiler.keras_shapes import Lengths, dims, known_lengths, least_lengths, size_problem
from deconv_compiler.limits import MAX_LAYERS, MAX_WEIGHT_BYTES

# --- reading -----------------------------------------------------------------------------------


def load_keras_model(
    path: str | Path, weights: str | Path | None = None, max_weight_bytes: int = MAX_WEIGHT_BYTES
) -> Graph:
    """Read a `.keras` archive, a legacy `.h5`, or a config JSON (+ `weights`) and validate it."""
    return parse_saved_model(read_saved_model(path, weights, max_weight_bytes), max_weight_bytes)


def parse_saved_model(saved: SavedModel, max_weight_bytes: int = MAX_WEIGHT_BYTES) -> Graph:
    builder = _KerasGraphReader(saved, max_weight_bytes)
    config = saved.config
    class_name = entry_class(config)
    try:
        if class_name in MODEL_CLASSES:
            builder.model(config)
        else:
            builder.single_layer(config)
    except _Abandoned:
        pass
    if builder.problems.found:
        raise KerasModelError(builder.problems.found, notes=tuple(sorted(builder.notes)))
    return builder.result()


def _custom_refusal(class_name: Any) -> str:
    return (
        f"a custom object ({shown(class_name)}) cannot be compiled: no code is run from a file, and a "
        "subclassed model or custom layer is Python code; rebuild it from built-in layers as a "
        "Functional or Sequential model"
    )


_TOO_MANY_CALLS = f"the model makes more than {MAX_LAYERS:,} layer calls (nested models inlined)"
MAX_LISTED_REFUSALS = 100  # layers refused by kind that are listed one by one; the rest are counted


class _Abandoned(Exception):
    """A problem after which reading on would cost without bound (too many layers, too many
    weight bytes): it is in `problems`; the reader stops."""


@dataclass
class _Tensor:
    value: Value
    io_dtype: str  # the dtype it has as a model output (float32 under a mixed policy)
    least: Lengths  # the least sizes its shape can have: dynamic lengths at their least


def _layer_count(entries: list[Mapping[str, Any]], depth: int = 0) -> tuple[int, int]:
    """Layers (nested models' included) and recorded calls in a config, nested as deep as
    MAX_NESTING (deeper is refused by `_check_layer_kinds`)."""
    layers = calls = 0
    for entry in entries:
        layers += 1
        inbound = entry.get("inbound_nodes")
        calls += len(inbound) if isinstance(inbound, list) else 0
        if depth < MAX_NESTING and entry_class(entry) in MODEL_CLASSES:
            inner_layers, inner_calls = _layer_count(model_entries(entry), depth + 1)
            layers, calls = layers + inner_layers, calls + inner_calls
    return layers, calls


def _topological(ready: list[bool], readers: list[list[int]], waits: list[int]) -> Iterator[int]:
    """Calls in the order Keras' loader runs them, in time linear in their number: rounds over
    the calls in config order, each call run in the first round where its inputs exist (a call
    reading a later call's output waits for the next round). Never-ready calls are left out.
    `ready[i]`: call i reads only existing tensors besides other calls; `readers[i]`: the calls
    reading call i's outputs; `waits[i]`: how many calls' outputs call i reads."""
    rounds = [0] * len(ready)
    left = list(waits)
    queue = [i for i, (ok, count) in enumerate(zip(ready, waits, strict=True)) if ok and count == 0]
    done = []
    while queue:
        i = queue.pop()
        done.append(i)
        for reader in readers[i]:
            rounds[reader] = max(rounds[reader], rounds[i] + (reader < i))
            left[reader] -= 1
            if left[reader] == 0 and ready[reader]:
                queue.append(reader)
    return iter(sorted(done, key=lambda i: (rounds[i], i)))


@dataclass(frozen=True)
class _Scope:
    """One instance of a model's body. At the top both prefixes are empty; inside a nested model
    `block` they are `block/`, and its second call's nodes are `block:1/`."""

    names: str  # prefix of node and value names: unique per call of a nested model
    weights: str  # prefix of weight paths: the nested model's layer names

    @property
    def where(self) -> FieldPath:
        """How problems of the model body itself are located: the nested model's path."""
        return (self.names.rstrip("/"),)

    def inner(self, model: str, node_index: int) -> _Scope:
        suffix = f":{node_index}" if node_index else ""
        return _Scope(f"{self.names}{model}{suffix}/", f"{self.weights}{model}/")


@dataclass
class _KerasGraphReader:
    saved: SavedModel
    max_weight_bytes: int = MAX_WEIGHT_BYTES
    name: str = "model"
    inputs: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    used_weights: set[str] = field(default_factory=set)
    # each used layer's arrays, checked once (a transposed conv's integer ones widened once): its
    # calls share them
    layer_arrays: dict[str, tuple[np.ndarray, ...] | None] = field(default_factory=dict)
    weight_bytes: int = 0  # of the used weights, in the dtypes the compiled model holds them in
    notes: set[str] = field(default_factory=set)  # said once after the problems (what is supported)
    taken: set[str] = field(default_factory=set)  # names of the graph's inputs and outputs
    refused: int = 0  # layers refused by kind, listed
    inlined: int = 0  # layers read by the calls of nested models so far
    unlisted: int = 0  # layers refused by kind beyond the first MAX_LISTED_REFUSALS, counted only

    def __post_init__(self) -> None:
        self.problems = Problems(lambda path, message: Problem(path, message, self.saved.file))

    def fail(self, path: FieldPath, message: str) -> None:
        self.problems.add(path, message)

    def refuse(self, path: FieldPath, message: str) -> None:
        """A layer refused by its kind: listed up to MAX_LISTED_REFUSALS (a config of 100,000
        unknown layers gets a screenful, not 100,000 lines), the rest counted."""
        if self.refused < MAX_LISTED_REFUSALS:
            self.refused += 1
            self.fail(path, message)
        else:
            self.unlisted += 1

    def abandon(self, path: FieldPath, message: str) -> None:
        self.fail(path, message)
        raise _Abandoned

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
        least = known_lengths(shape)
        problem = size_problem(shape, least)
        if problem is not None:
            self.fail((name,), f"the input shape {dims(shape)} {problem}")
            return None
        value = Value(name, shape, io_dtype(policy))
        self.inputs.append(value)
        self.taken.add(name)
        return _Tensor(value, value.dtype, least)

    def output(self, layer: str, tensor: _Tensor) -> None:
        name = self._output_name(layer)
        self.taken.add(name)
        self.outputs.append(Output(name, tensor.value.name, tensor.value.shape, tensor.io_dtype))

    def policy(self, config: Mapping[str, Any], path: FieldPath) -> str | None:
        """A layer's dtype policy: a dtype name (Keras 2) or a DTypePolicy (Keras 3); float32 if unsaid."""
        value = config.get("dtype")
        if isinstance(value, Mapping):
            value = entry_config(value).get("name")
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
        body = entry_config(config)
        name = body.get("name")
        self.name = name if isinstance(name, str) and name else "model"
        layers, calls = _layer_count(model_entries(config))
        if max(layers, calls) > MAX_LAYERS:
            what = f"{layers:,} layers" if layers > MAX_LAYERS else f"{calls:,} layer calls"
            self.abandon(("config", "layers"), f"the model has {what}; the limit is {MAX_LAYERS:,}")
        if not self._check_layer_kinds(model_entries(config), "", depth=0):
            if self.unlisted:
                self.fail(
                    ("config", "layers"),
                    f"{self.unlisted:,} more layers are refused (unsupported, custom or Lambda); "
                    f"the first {MAX_LISTED_REFUSALS} are listed",
                )
            return
        outputs = self._body(config, None, _Scope("", ""))
        if outputs is not None:
            for layer, tensor in outputs:
                self.output(layer, tensor)
        self._check_unused_weights()

    def single_layer(self, config: Mapping[str, Any]) -> None:
        """A layer's `get_config()` JSON: its input is the kernel's channel count, other sizes dynamic."""
        if not self._check_layer_kinds([config], "", depth=0):
            return
        class_name = entry_class(config)
        layer_config = entry_config(config)
        if class_name not in CONV_LAYERS:
            self.fail((), f"a single-layer config must be a transposed convolution, got {class_name}")
            return
        name = str(layer_config.get("name") or "layer")
        self.name = name
        arrays = self.saved.weights.get(name)
        rank = int(class_name[4])
        shape = declared_input(layer_config)
        if shape is None:
            if not arrays:
                self.fail((), f"layer {name!r} has no weights: give the kernel (and bias) in an .npz")
                return
            channels = int(arrays[0].shape[-1])
            first = layer_config.get("data_format") == "channels_first"
            shape = (None, channels, *[None] * rank) if first else (None, *[None] * rank, channels)
        tensor = self.input_tensor("input", shape, layer_config)
        out = None if tensor is None else self._call(config, name, [tensor], 0, _Scope("", ""))
        if out is not None:
            self.output(name, out[0])

    def _body(
        self, config: Mapping[str, Any], inputs: list[_Tensor] | None, scope: _Scope
    ) -> list[tuple[str, _Tensor]] | None:
        """A model's layers, on `inputs` (a nested model) or on new graph inputs (the top):
        its outputs, each with the name of the layer that computes it."""
        body = entry_config(config)
        entries = model_entries(config)
        where = scope.where if scope.names else ("config", "layers")
        if not entries:
            self.fail(where, "the model config lists no layers")
            return None
        if scope.names:  # each call of a nested model reads all its layers, even ones that fail
            self.inlined += len(entries)
            if self.inlined > MAX_LAYERS:
                self.abandon(where, _TOO_MANY_CALLS)
        if entry_class(config) == "Sequential":
            return self._sequential(body, entries, inputs, scope)
        return self._functional(body, entries, inputs, scope)

    def _sequential(
        self,
        body: Mapping[str, Any],
        entries: list[Mapping[str, Any]],
        inputs: list[_Tensor] | None,
        scope: _Scope,
    ) -> list[tuple[str, _Tensor]] | None:
        first = entries[0]
        if entry_class(first) == "InputLayer":
            input_name = str(entry_config(first).get("name") or "input_layer")
            shape = declared_input(entry_config(first))
            entries = entries[1:]
        else:  # the first layer declares the input; it takes what it computes with
            input_name = "input_layer"
            shape = declared_input(entry_config(first))
            if shape is None:
                shape = shape_or_none(body.get("build_input_shape"))
        if inputs is not None:
            if len(inputs) != 1:
                self.fail(scope.where, f"a Sequential model takes one input, got {len(inputs)}")
                return None
            tensor: _Tensor | None = inputs[0]
        elif shape is None:
            self.fail(
                ("config", "layers", 0),
                "the model does not say its input shape (no InputLayer, batch_input_shape or "
                "build_input_shape): save it after building it",
            )
            return None
        else:
            tensor = self.input_tensor(input_name, shape, entry_config(first))
        last_name = input_name
        for entry in entries:
            if tensor is None:
                return None
            last_name = entry_name(entry)
            outs = self._call(entry, last_name, [tensor], 0, scope)
            if outs is not None and len(outs) != 1:
                self.fail(
                    (scope.names + last_name,), "gives several outputs, which a Sequential model cannot chain"
                )
                return None
            tensor = None if outs is None else outs[0]
        return None if tensor is None else [(last_name, tensor)]

    def _functional(
        self,
        body: Mapping[str, Any],
        entries: list[Mapping[str, Any]],
        inputs: list[_Tensor] | None,
        scope: _Scope,
    ) -> list[tuple[str, _Tensor]] | None:
        by_name = {entry_name(e): e for e in entries}
        tensors: dict[TensorRef, _Tensor] = {}
        declared_inputs = tensor_refs(body.get("input_layers"))
        input_entries = [e for e in entries if entry_class(e) == "InputLayer"]
        if inputs is None:
            for entry in input_entries:
                name = entry_name(entry)
                shape = declared_input(entry_config(entry))
                if shape is None:
                    self.fail((name,), "InputLayer without a shape")
                    continue
                tensor = self.input_tensor(name, shape, entry_config(entry))
                if tensor is not None:
                    tensors[(name, 0, 0)] = tensor
            if declared_inputs is not None:
                order = {ref[0]: i for i, ref in enumerate(declared_inputs)}
                self.inputs.sort(key=lambda i: order.get(i.name, len(order)))
        else:
            names = [ref[0] for ref in declared_inputs or []] or [entry_name(e) for e in input_entries]
            if len(names) != len(inputs):
                self.fail(
                    scope.where,
                    f"the model takes {len(names)} input(s), called on {len(inputs)}",
                )
                return None
            for name, tensor in zip(names, inputs, strict=True):
                tensors[(name, 0, 0)] = tensor
        # Keras lists layers in creation order, not always the order their calls can run in (a
        # shared layer's later call may read a layer listed after it): run each call when its
        # inputs exist, as Keras' own loader does.
        pending: list[tuple[Mapping[str, Any], int, Any, list[TensorRef], Any]] = []
        # each call read once: (entry, call index, arguments, tensor refs, kwargs)
        for entry in entries:
            calls = entry.get("inbound_nodes")
            if entry_class(entry) == "InputLayer" or not isinstance(calls, list):
                continue
            name = entry_name(entry)
            for call_index, call in enumerate(calls):
                arguments = call_arguments(call)
                if arguments is None:
                    self.fail(
                        (scope.names + name, "inbound_nodes", call_index),
                        f"cannot read this call: {shown(call)}",
                    )
                    continue
                args, refs = arguments
                unknown = [ref[0] for ref in refs if ref[0] not in by_name]
                if unknown:
                    self.fail(
                        (scope.names + name,),
                        f"takes the output of {unknown[0]!r}, which is not in the model",
                    )
                    continue
                refs = [self._call_ref(ref, by_name, in_arguments=True) for ref in refs]
                kwargs = call.get("kwargs") if isinstance(call, Mapping) else None
                pending.append((entry, call_index, args, refs, kwargs))
        producer: dict[tuple[str, int], int] = {}
        for i, (entry, call_index, *_) in enumerate(pending):
            producer.setdefault((entry_name(entry), call_index), i)
        ready = [True] * len(pending)
        readers: list[list[int]] = [[] for _ in pending]
        waits = [0] * len(pending)
        for i, (_, _, _, refs, _) in enumerate(pending):
            for source in {producer.get(ref[:2]) for ref in refs if ref not in tensors}:
                if source is None:
                    ready[i] = False  # reads a tensor nothing computes: never runs
                else:
                    readers[source].append(i)
                    waits[i] += 1
        for i in _topological(ready, readers, waits):
            entry, call_index, args, refs, kwargs = pending[i]
            if any(ref not in tensors for ref in refs):
                continue  # a call it reads failed, or gave fewer outputs
            name = entry_name(entry)
            outs = self._call(entry, name, [tensors[ref] for ref in refs], call_index, scope, args, kwargs)
            for index, out in enumerate(outs or []):
                tensors[(name, call_index, index)] = out
        declared_outputs = tensor_refs(body.get("output_layers"))
        if declared_outputs is None:
            self.fail(
                ("config", "output_layers") if not scope.names else scope.where,
                "the model config names no outputs",
            )
            return None
        outputs = []
        for ref in declared_outputs:
            tensor = tensors.get(self._call_ref(ref, by_name, in_arguments=False))
            if tensor is None:
                if not self.problems.found:
                    self.fail(("config", "output_layers"), f"output {ref[0]!r} is not computed by the model")
                return None
            outputs.append((ref[0], tensor))
        return outputs

    def _call_ref(
        self, ref: TensorRef, by_name: Mapping[str, Mapping[str, Any]], in_arguments: bool
    ) -> TensorRef:
        """A reference to a model's tensor → (layer, call index, output index). A Functional model
        starts with a node of its own (input to output), which Keras 3 counts in `output_layers`
        but not in call arguments; tf.keras 2 counted it in both, for a Sequential model that
        starts with an InputLayer too (Keras' `get_config` node reindexing)."""
        entry = by_name.get(ref[0])
        if entry is None:
            return ref
        class_name = entry_class(entry)
        keras2 = (self.saved.keras_version or "").startswith("2.")
        first = 0
        if class_name in ("Functional", "Model") and (keras2 or not in_arguments):
            first = 1
        elif class_name == "Sequential" and keras2:
            layers = entry_config(entry).get("layers")  # its first only: a ref is read per call
            first = 1 if isinstance(layers, list) and layers and entry_class(layers[0]) == "InputLayer" else 0
        return (ref[0], ref[1] - first, ref[2])

    def _output_name(self, layer: str) -> str:
        """The producing layer's name; `name_1`, `name_2`... when a model returns a tensor twice."""
        name, count = layer, 0
        while name in self.taken:
            count += 1
            name = f"{layer}_{count}"
        return name

    def _check_layer_kinds(self, entries: list[Mapping[str, Any]], prefix: str, depth: int) -> bool:
        """Refuse what we cannot compile before looking at anything else: custom objects (subclassed
        models included), Lambda, unsupported classes and operations, in nested models too (named
        `block/layer`); each named, all at once."""
        if depth > MAX_NESTING:
            self.fail((prefix.rstrip("/"),), f"models are nested more than {MAX_NESTING} deep")
            return False
        ok = True
        for entry in entries:
            class_name = entry_class(entry)
            name = entry_name(entry)
            module = entry.get("module")
            registered = entry.get("registered_name")
            custom = (isinstance(module, str) and not module.startswith("keras")) or (
                isinstance(registered, str) and registered != entry.get("class_name")
            )
            if is_op_entry(entry):
                if class_name in OP_PARSERS:
                    continue
                self.notes.add(f"supported operations: {SUPPORTED_OPS_TEXT}")
                self.refuse(
                    (f"{prefix}{name} ({op_name(class_name)})",), f"{op_name(class_name)} is not supported"
                )
                ok = False
                continue
            where = (f"{prefix}{name} ({class_name})",)
            if class_name == "Lambda":
                self.refuse(
                    where,
                    "Lambda layers hold Python code, which is never run from a file: rewrite the "
                    "layer with built-in layers",
                )
            elif custom:
                self.refuse(where, _custom_refusal(registered or entry.get("class_name")))
            elif class_name in MODEL_CLASSES:
                if not self._check_layer_kinds(model_entries(entry), f"{prefix}{name}/", depth + 1):
                    ok = False
                continue
            elif class_name not in LAYER_PARSERS and class_name != "InputLayer":
                self.notes.add(f"supported layers: {SUPPORTED_TEXT}")
                self.refuse(where, f"layer class {class_name!r} is not supported")
            else:
                continue
            ok = False
        return ok

    def _check_unused_weights(self) -> None:
        for name in self.saved.weights:
            if name not in self.used_weights and not self.problems.found:
                self.fail((name,), "the weights file holds weights for a layer the model does not have")

    # --- one call: a layer, an operation or a nested model ---

    def _call(
        self,
        entry: Mapping[str, Any],
        name: str,
        inputs: list[_Tensor],
        node_index: int,
        scope: _Scope,
        args: tuple[Any, ...] | None = None,
        kwargs: Any = None,
    ) -> list[_Tensor] | None:
        class_name = entry_class(entry)
        if class_name in MODEL_CLASSES:
            outputs = self._body(entry, inputs, scope.inner(name, node_index))
            return None if outputs is None else [tensor for _, tensor in outputs]
        if isinstance(kwargs, Mapping) and kwargs.get("training") is True:
            warnings.warn(
                DeconvWarning(
                    f"layer {scope.names + name!r} ({class_name}) was called with training=True; it is "
                    "compiled with inference semantics (moving statistics, no dropout), as Keras' "
                    "model(x, training=False) computes"
                ),
                stacklevel=2,
            )
        if is_op_entry(entry):
            return self._operation(entry, name, inputs, node_index, scope, args)
        config = entry_config(entry)
        path: FieldPath = (f"{scope.names}{name} ({class_name})",)
        policy = self.policy(config, path)
        if policy is None:
            return None
        weight_path = scope.weights + name
        if weight_path not in self.used_weights:
            self.used_weights.add(weight_path)
            arrays = self.saved.weights.get(weight_path)
            self.layer_arrays[weight_path] = self._arrays(path, arrays, policy, class_name in CONV_LAYERS)
        arrays = self.layer_arrays[weight_path]
        if arrays is None and self.saved.weights.get(weight_path):
            return None  # its values do not fit its dtype: said once
        shapes = tuple(t.value.shape for t in inputs)
        call = LayerCall(name, class_name, config, path, shapes, arrays, policy, self.problems)
        before = len(self.problems.found)
        result = LAYER_PARSERS[class_name](call)
        if len(self.problems.found) > before:
            return None
        if result is None:  # a parser that refuses must say why
            raise InternalError(f"the {class_name} parser refused layer {name!r} without naming a problem")
        return self._add_nodes(
            scope.names + name, class_name, [result], inputs, node_index, policy, path, weight_path
        )

    def _arrays(
        self, path: FieldPath, arrays: tuple[np.ndarray, ...] | None, policy: str, widen: bool
    ) -> tuple[np.ndarray, ...] | None:
        """A layer's weights (once, however often it is called), counted in the dtype the compiled
        model holds them in, its compute dtype, against the weight-size limit before any is
        widened (an int8 kernel of a float32 layer takes four times its file's bytes), and
        integer values checked against that dtype. They stay integers (the planner widens each
        in the one pass that lays it out), except where `widen`: a transposed convolution's
        validator, which specs share, would make float64 of them. None: values do not fit."""
        if not arrays:
            return arrays
        dtype = np.dtype(compute_dtype(policy))
        self.weight_bytes += sum(int(a.size) for a in arrays) * dtype.itemsize
        if self.weight_bytes > self.max_weight_bytes:
            self.abandon(
                path,
                f"the weights up to this layer take {self.weight_bytes:,} bytes as {dtype}; "
                f"the limit is {self.max_weight_bytes:,} (--max-weight-size)",
            )
        checked = []
        for index, array in enumerate(arrays):
            if array.dtype.kind not in "iub":
                checked.append(array)
                continue
            largest = max(-float(array.min()), float(array.max())) if array.size else 0.0
            if largest > float(np.finfo(dtype).max):
                self.fail(
                    path, f"weight {index} holds values beyond the {dtype} range (|x| up to {largest:.4g})"
                )
                return None
            checked.append(array.astype(dtype) if widen else array)
        return tuple(checked)

    def _operation(
        self,
        entry: Mapping[str, Any],
        name: str,
        inputs: list[_Tensor],
        node_index: int,
        scope: _Scope,
        args: tuple[Any, ...] | None,
    ) -> list[_Tensor] | None:
        class_name = entry_class(entry)
        kind = op_name(class_name)
        path: FieldPath = (f"{scope.names}{name} ({kind})",)
        policy = inputs[0].value.dtype if inputs else "float32"
        shapes = tuple(t.value.shape for t in inputs)
        call = OpCall(name, kind, entry_config(entry), args or (), shapes, path, self.problems)
        before = len(self.problems.found)
        results = OP_PARSERS[class_name](call)
        if len(self.problems.found) > before:
            return None
        if results is None:
            raise InternalError(f"the {kind} parser refused {name!r} without naming a problem")
        return self._add_nodes(scope.names + name, kind, results, inputs, node_index, policy, path)

    def _add_nodes(
        self,
        name: str,
        kind: str,
        results: list[tuple[Op, Shape]],
        inputs: list[_Tensor],
        node_index: int,
        policy: str,
        path: FieldPath,
        layer: str = "",
    ) -> list[_Tensor] | None:
        outputs = []
        for index, (op, shape) in enumerate(results):
            least = least_lengths(op, [t.least for t in inputs], shape)
            problem = size_problem(shape, least)
            if problem is not None:
                least_shape = (shape[0], *least[1:]) if shape else ()
                dynamic = "" if None not in shape[1:] else f" (at least {dims(least_shape)})"
                self.fail(path, f"the output shape {dims(shape)}{dynamic} {problem}")
                return None
            if len(self.nodes) >= MAX_LAYERS:
                self.abandon(path, _TOO_MANY_CALLS)
            value_name = name + (f":{node_index}" if node_index else "") + (f"#{index}" if index else "")
            output = Value(value_name, shape, compute_dtype(policy))
            self.nodes.append(
                Node(name, kind, op, tuple(t.value.name for t in inputs), output, policy, layer)
            )
            outputs.append(_Tensor(output, io_dtype(policy), least))
        return outputs
