"""The `tune` strategy: time each transposed convolution's applicable strategies on this machine
(like cuDNN's algorithm search) and keep the fastest; the spec or graph comes back with every
layer's strategy fixed, plus the timings for the model's metadata.

Each candidate is the layer alone, compiled with that strategy, timed in interleaved rounds on
onnxruntime (the target's provider, 2 threads, no spinning) on an input of the layer's shape,
dynamic sizes taken as batch 1 and 16 per spatial axis. The median of the per-round ratios to
`native` decides, so machine noise that hits a whole round cancels out.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import Any

import numpy as np

from deconv_compiler.keras_layers import ConvTransposeOp
from deconv_compiler.keras_model import KerasGraph
from deconv_compiler.lowering import build_model
from deconv_compiler.plan import layer_geometry, layer_weights, plan_model
from deconv_compiler.runtime import SessionConfig, time_interleaved
from deconv_compiler.spec import LayerSpec, ModelSpec
from deconv_compiler.strategies import STRATEGIES, why_not
from deconv_compiler.weights import LayerWeights

ROUNDS = 7
DYNAMIC_SPATIAL = 16


def tune_layer(
    layer: LayerSpec, weights: LayerWeights, opset: int, target: str
) -> tuple[str, dict[str, float]]:
    """The fastest applicable strategy for `layer`, and each candidate's time relative to native."""
    geometry = layer_geometry(layer)
    candidates = [s for s in STRATEGIES if why_not(s, geometry) is None]
    if len(candidates) == 1:
        return candidates[0], {}
    shape = tuple(
        (1 if axis == 0 else DYNAMIC_SPATIAL) if size is None else size
        for axis, size in enumerate(layer.input_shape)
    )
    models = {}
    for strategy in candidates:
        single = ModelSpec(
            name=layer.name,
            input_name="input",
            input_shape=layer.input_shape,
            input_dtype=layer.io_dtype,
            layers=(replace(layer, weights=weights, strategy=strategy),),
            seed=0,
        )
        models[strategy] = build_model(plan_model(single, opset=opset, target=target))
    x = np.random.default_rng(0).standard_normal(shape).astype(layer.io_dtype)
    config = SessionConfig(provider=target, threads=2, spinning=False)
    runs = max(1, int(2e8 // max(1, _flops(layer, shape))))  # about 0.1 s of work per round
    times = time_interleaved(models, {"input": x}, config, rounds=ROUNDS, runs_per_round=min(runs, 50))
    ratios = {
        name: statistics.median(t / n for t, n in zip(times[name], times["native"], strict=True))
        for name in times
    }
    return min(ratios, key=lambda name: ratios[name]), {name: round(r, 3) for name, r in ratios.items()}


def _flops(layer: LayerSpec, shape: tuple[int, ...]) -> int:
    return 2 * int(np.prod(shape)) * layer.filters * int(np.prod(layer.kernel_size))


def tune_spec(
    spec: ModelSpec, opset: int, seed: int | None, target: str, forced: str | None
) -> tuple[ModelSpec, dict[str, Any]]:
    """`spec` with each layer that asks for tuning (or every layer, if `forced` is tune) fixed to
    its fastest strategy; other layers keep what they asked for."""
    layers = []
    timings: dict[str, Any] = {}
    for index, layer in enumerate(spec.layers):
        requested = forced or layer.strategy or spec.strategy
        if requested == "tune":
            chosen, ratios = tune_layer(layer, layer_weights(spec, index, seed), opset, target)
            timings[layer.name] = {"chosen": chosen, "time_vs_native": ratios}
            layer = replace(layer, strategy=chosen)
        elif forced is not None:
            layer = replace(layer, strategy=forced)
        layers.append(layer)
    return replace(
        spec, layers=tuple(layers), strategy="auto" if spec.strategy == "tune" else spec.strategy
    ), timings


def tune_graph(graph: KerasGraph, opset: int, target: str) -> tuple[KerasGraph, dict[str, Any]]:
    """Every transposed convolution of a Keras model with its fastest strategy forced."""
    nodes = []
    timings: dict[str, Any] = {}
    for node in graph.nodes:
        if isinstance(node.op, ConvTransposeOp):
            chosen, ratios = tune_layer(node.op.layer, node.op.weights, opset, target)
            timings[node.layer] = {"chosen": chosen, "time_vs_native": ratios}
            node = replace(node, op=ConvTransposeOp(replace(node.op.layer, strategy=chosen), node.op.weights))
        nodes.append(node)
    return replace(graph, nodes=tuple(nodes)), timings
