"""Reading a Keras model config (`get_config()` JSON, Keras 3 and tf.keras 2 spellings): class
and layer names, declared input shapes, tensor references and the arguments of a recorded call.
Pure functions of the parsed JSON; nothing here decides what compiles."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deconv_compiler.ir import Shape
from deconv_compiler.keras_ops import TensorArg

TensorRef = tuple[str, int, int]  # (layer, call index, output index): Keras' keras_history

# Keras 2 / tf.keras spell some classes differently.
CLASS_ALIASES = {"Convolution2DTranspose": "Conv2DTranspose", "Deconvolution2D": "Conv2DTranspose"}


def model_entries(config: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    layers = entry_config(config).get("layers")
    return [e if isinstance(e, Mapping) else {} for e in layers] if isinstance(layers, list) else []


def entry_class(entry: Any) -> str:
    name = entry.get("class_name") if isinstance(entry, Mapping) else None
    name = name if isinstance(name, str) else "?"
    return CLASS_ALIASES.get(name, name)


def entry_config(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    config = entry.get("config")
    return config if isinstance(config, Mapping) else {}


def entry_name(entry: Mapping[str, Any]) -> str:
    name = entry.get("name")
    if not isinstance(name, str):
        name = entry_config(entry).get("name")
    return name if isinstance(name, str) and name else "?"


def shape_or_none(value: Any) -> Shape | None:
    if not isinstance(value, list) or not all(
        d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in value
    ):
        return None
    return tuple(value)


def declared_input(config: Mapping[str, Any]) -> Shape | None:
    """The full input shape an InputLayer (Keras 3 `batch_shape`, Keras 2 `batch_input_shape`)
    or a first layer declares."""
    for key in ("batch_shape", "batch_input_shape"):
        shape = shape_or_none(config.get(key))
        if shape is not None:
            return shape
    return None


def is_ref(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and all(isinstance(v, int) for v in value[1:])
    )


def tensor_refs(value: Any) -> list[TensorRef] | None:
    """`input_layers` / `output_layers`: one [layer, node, tensor] or a list of them."""
    if is_ref(value):
        return [(value[0], value[1], value[2])]
    if isinstance(value, list) and all(is_ref(v) for v in value):
        return [(v[0], v[1], v[2]) for v in value]
    return None


def call_arguments(call: Any) -> tuple[tuple[Any, ...], list[TensorRef]] | None:
    """A call's positional arguments (tensors as `TensorArg`, in reading order) and the tensor each
    reads: Keras 3 writes {"args": [tensor or [tensors] or numbers], "kwargs": {}}, Keras 2
    [[layer, node, tensor, kwargs], ...]."""
    if isinstance(call, Mapping):
        refs: list[TensorRef] = []

        def convert(value: Any, depth: int) -> Any:
            if depth > 16:
                return None
            if isinstance(value, Mapping) and value.get("class_name") == "__keras_tensor__":
                history: Any = entry_config(value).get("keras_history")
                if not is_ref(history):
                    return None
                refs.append((history[0], history[1], history[2]))
                return TensorArg(len(refs) - 1)
            if isinstance(value, (list, tuple)):
                return [convert(item, depth + 1) for item in value]
            return value

        args = call.get("args")
        converted = convert(args if isinstance(args, list) else [], 0)
        return (tuple(converted), refs) if refs else None
    if isinstance(call, list) and call and all(isinstance(c, list) and len(c) >= 3 for c in call):
        if all(is_ref(c[:3]) for c in call):
            refs = [(c[0], c[1], c[2]) for c in call]
            return tuple(TensorArg(i) for i in range(len(refs))), refs
    return None
