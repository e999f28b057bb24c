"""Hand-written Keras model configs for tests: what `model.get_config()` holds, no Keras needed,
parsed by the Keras front end (`keras_model.parse_saved_model`) as if read from a `.keras` file."""

from __future__ import annotations

from typing import Any

import numpy as np

from deconv_compiler.ir import Graph
from deconv_compiler.keras_file import SavedModel
from deconv_compiler.keras_model import parse_saved_model


def layer(class_name: str, name: str, **config: Any) -> dict[str, Any]:
    return {"module": "keras.layers", "class_name": class_name, "config": {"name": name, **config}}


def conv(name: str, filters: int, kernel: int, **config: Any) -> dict[str, Any]:
    return layer("Conv2DTranspose", name, filters=filters, kernel_size=[kernel, kernel], **config)


def sequential(
    *layers: dict[str, Any], input_shape: list[int | None], input_dtype: str | None = None
) -> dict[str, Any]:
    extra = {} if input_dtype is None else {"dtype": policy(input_dtype)}
    first = layer("InputLayer", "input_layer", batch_shape=[None, *input_shape], **extra)
    return {"class_name": "Sequential", "config": {"name": "seq", "layers": [first, *layers]}}


def called(entry: dict[str, Any], *sources: str) -> dict[str, Any]:
    """A Functional model's layer entry: `entry` called on the outputs of the layers `sources`."""
    tensors = [{"class_name": "__keras_tensor__", "config": {"keras_history": [s, 0, 0]}} for s in sources]
    args: list[Any] = [tensors[0]] if len(tensors) == 1 else [tensors]
    calls = [{"args": args, "kwargs": {}}] if sources else []
    return {**entry, "name": entry["config"]["name"], "inbound_nodes": calls}


def functional(
    name: str, layers: list[dict[str, Any]], inputs: list[str], outputs: list[str]
) -> dict[str, Any]:
    return {
        "class_name": "Functional",
        "config": {
            "name": name,
            "layers": layers,
            "input_layers": [[n, 0, 0] for n in inputs],
            "output_layers": [[n, 0, 0] for n in outputs],
        },
    }


def policy(name: str) -> dict[str, Any]:
    """A Keras 3 DTypePolicy as `get_config()` writes it."""
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name}}


def graph_of(config: dict[str, Any], **weights: tuple[np.ndarray, ...]) -> Graph:
    return parse_saved_model(SavedModel("model.keras", "keras", config, weights, "3.15.1"))
