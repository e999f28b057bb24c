"""Whole networks in the benchmark suite: the Pix2Pix generator and the image-segmentation U-Net
(MobileNetV2 encoder), channels_last, batch 1 and 8.

Each is built with Keras (the test suite's faithful builders, random fan-in-scaled weights), saved
as `.keras`, and compiled twice: the default graph, and the same network with every transposed
convolution lowered `native` (one ConvTranspose each: what other exporters emit). The two run in
one process, taking turns within each round; the ratio is the median of per-round ratios. Also
reported: Transpose nodes inside the graph (not touching an input or output; target 0), and the
fresh-process `deconvc compile` time of each `.keras` file (target < 2 s for the Pix2Pix
generator). Needs Keras with the jax backend (`pip install -e '.[test]'`).
"""

from __future__ import annotations

import collections
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import deconv_compiler as dc
from deconv_compiler.metadata import STRATEGIES, read_metadata
from deconv_compiler.runtime import SessionConfig, run_model, time_interleaved

NETWORKS = ("tf_pix2pix_generator", "tf_segmentation_unet")
BATCHES = (1, 8)


def inner_transposes(model: onnx.ModelProto) -> int:
    """Transpose nodes that neither read a graph input nor write a graph output."""
    inputs = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    return sum(
        1
        for node in model.graph.node
        if node.op_type == "Transpose" and not (set(node.input) & inputs or set(node.output) & outputs)
    )


def _saved_network(name: str, folder: Path) -> tuple[Path, Any]:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    from tests.public_networks import INPUT_SHAPES, build

    model = build(name)
    path = folder / f"{name}.keras"
    model.save(path)
    return path, INPUT_SHAPES[name]


def bench_network(
    name: str, config: SessionConfig, rounds: int, budget: float, fresh_seconds: Any
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path, shapes = _saved_network(name, Path(tmp))
        compile_s = fresh_seconds(["compile", str(path), "-o", str(Path(tmp) / "out.onnx")])
        graph = dc.load_keras_model(path)
    models = {
        "default": dc.compile_model(graph, dc.CompileOptions()),
        "native": dc.compile_model(graph, dc.CompileOptions(strategy="native")),
    }
    props = {entry.key: entry.value for entry in models["default"].metadata_props}
    strategies = read_metadata(props).get(STRATEGIES) or {}
    chosen = dict(sorted(collections.Counter(strategies.values()).items()))
    rows = []
    for batch in BATCHES:
        rng = np.random.default_rng(batch)
        feeds = {
            value.name: rng.standard_normal((batch, *shape)).astype(np.float32)
            for value, shape in zip(graph.inputs, shapes, strict=True)
        }
        reference = run_model(models["native"], feeds, config).outputs
        candidate = run_model(models["default"], feeds, config).outputs
        error = max(
            float(np.max(np.abs(candidate[key] - b)) / max(1.0, float(np.max(np.abs(b)))))
            for key, b in reference.items()
        )
        single = statistics.median(
            time_interleaved(models, feeds, config, rounds=1, runs_per_round=1)["native"]
        )
        runs = max(1, int(budget / max(single, 1e-4)))
        times = time_interleaved(models, feeds, config, rounds=rounds, runs_per_round=runs, warmup=1)
        ratios = [d / n for d, n in zip(times["default"], times["native"], strict=True)]
        rows.append(
            {
                "batch": batch,
                "default_ms": round(statistics.median(times["default"]) * 1e3, 2),
                "native_ms": round(statistics.median(times["native"]) * 1e3, 2),
                "ratio": round(statistics.median(ratios), 3),
                "max_rel_difference": float(f"{error:.2e}"),
            }
        )
    return {
        "network": name,
        "compile_s": compile_s,
        "inner_transposes": inner_transposes(models["default"]),
        "inner_transposes_native": inner_transposes(models["native"]),
        "strategies": chosen,
        "rows": rows,
    }


def markdown(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## Whole networks (channels_last): default graph vs every transposed conv `native`",
        "",
        "| network | batch | transposed convs rewritten | default ms | native ms | "
        "ratio (target <= 0.95, never > 1.02) | Transposes inside (target 0) | compile s, fresh process | "
        "max difference |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        chosen = result["strategies"]
        total = sum(chosen.values())
        rewritten = ", ".join(f"{n} {s}" for s, n in chosen.items() if s != "native") or "none"
        for row in result["rows"]:
            lines.append(
                f"| {result['network']} | {row['batch']} | {rewritten} (of {total}) | {row['default_ms']} | "
                f"{row['native_ms']} | {row['ratio']} | {result['inner_transposes']} | {result['compile_s']} | "
                f"{row['max_rel_difference']:.1e} |"
            )
    lines += [
        "",
        "Where no transposed convolution is rewritten, the default graph is the native one: its ratio "
        "only shows how much two runs of the same graph differ on this machine.",
    ]
    return lines
