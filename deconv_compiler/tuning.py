"""The `tune` strategy: time each transposed convolution's applicable strategies on this machine
(like cuDNN's algorithm search) and keep the fastest.

Each candidate is the layer alone as a one-node graph, put through the very planner and builder
the compile uses (`plan_graph`, `build_model`) with that strategy forced, and timed in interleaved
rounds on onnxruntime (the target's provider, 2 threads, no spinning) on an input of the layer's
shape, dynamic sizes taken as batch 1 and 16 per spatial axis. The median of the per-round
ratios to `native` decides, so machine noise that hits a whole round cancels out.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import Any

import numpy as np

from deconv_compiler.builder import build_model
from deconv_compiler.conv_transpose_plan import layer_geometry, layers_to_tune
from deconv_compiler.dtypes import io_dtype
from deconv_compiler.errors import InternalError
from deconv_compiler.ir import ConvTransposeOp, Graph, Node, Output, Value
from deconv_compiler.options import CompileOptions
from deconv_compiler.planner import made_weights, plan_graph
from deconv_compiler.runtime import SessionConfig, time_interleaved
from deconv_compiler.strategies import STRATEGIES, why_not

ROUNDS = 7
DYNAMIC_SPATIAL = 16


def tune(graph: Graph, options: CompileOptions) -> tuple[dict[str, str], dict[str, Any]]:
    """The fastest strategy of every layer that asks for `tune`, and each one's timings
    (`{"chosen": ..., "time_vs_native": {strategy: ratio}}`) for the model's metadata."""
    graph = made_weights(graph, options.seed)  # as is when the compile made them already
    choices: dict[str, str] = {}
    timings: dict[str, Any] = {}
    for node in layers_to_tune(graph, options):
        if node.name in choices:  # a shared layer is tuned once
            continue
        chosen, ratios = _tune_layer(graph, node, options)
        choices[node.name] = chosen
        timings[node.name] = {"chosen": chosen, "time_vs_native": ratios}
    return choices, timings


def _tune_layer(graph: Graph, node: Node, options: CompileOptions) -> tuple[str, dict[str, float]]:
    op = node.op
    if not isinstance(op, ConvTransposeOp):
        raise InternalError(f"layer {node.name!r} is not a transposed convolution, it cannot be tuned")
    layer = op.layer
    candidates = [s for s in STRATEGIES if why_not(s, layer_geometry(layer)) is None]
    if len(candidates) == 1:
        return candidates[0], {}
    dtype = io_dtype(options.dtype or node.policy)
    alone = Graph(
        name=node.name,
        inputs=(Value("input", layer.input_shape, dtype),),
        nodes=(replace(node, inputs=("input",)),),
        outputs=(Output("output", node.output.name, node.output.shape, dtype),),
        origin=graph.origin,
    )
    models = {
        strategy: build_model(plan_graph(alone, replace(options, strategy=strategy)), ())
        for strategy in candidates
    }
    shape = tuple(
        (1 if axis == 0 else DYNAMIC_SPATIAL) if size is None else size
        for axis, size in enumerate(layer.input_shape)
    )
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    config = SessionConfig(provider=options.target, threads=2, spinning=False)
    flops = 2 * int(np.prod(shape)) * layer.filters * int(np.prod(layer.kernel_size))
    runs = max(1, int(2e8 // max(1, flops)))  # about 0.1 s of work per round
    times = time_interleaved(models, {"input": x}, config, rounds=ROUNDS, runs_per_round=min(runs, 50))
    ratios = {
        name: statistics.median(t / n for t, n in zip(times[name], times["native"], strict=True))
        for name in times
    }
    return min(ratios, key=lambda name: ratios[name]), {name: round(r, 3) for name, r in ratios.items()}
