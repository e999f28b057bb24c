"""The `tune` strategy: time each transposed convolution's applicable strategies on this machine
(like cuDNN's algorithm search) and keep the fastest.

Each candidate is the layer alone as a one-node graph, put through the very planner and builder
the compile uses (`plan_graph`, `build_model`) with that strategy forced, and timed in interleaved
rounds on onnxruntime (the target's provider, 2 threads, no spinning) on an input of the layer's
shape, dynamic sizes taken as batch 1 and 16 per spatial axis. The median of the per-round
ratios to `native` decides, so machine noise that hits a whole round cancels out.

Timings vary from run to run, and so may the choice. A `TuneCache` records each choice with its
timings under a key of everything the timing depended on (`tune_key`: the layer's geometry,
activation and bias, input shape, dtype policy, target, opset, the candidates, the onnxruntime
and deconv_compiler versions, the tuner's own settings; not the layer's name, nor its weights,
nor the machine): a layer it covers is not timed again, so a compile with the same cache gives
the same strategies and the same tuning metadata, byte for byte.
"""

from __future__ import annotations

import json
import os
import stat
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from deconv_compiler import __version__
from deconv_compiler.builder import build_model
from deconv_compiler.conv_transpose_plan import layer_geometry, layers_to_tune
from deconv_compiler.dtypes import io_dtype
from deconv_compiler.errors import DeconvError, InternalError
from deconv_compiler.ir import ConvTransposeOp, Graph, Node, Output, Value
from deconv_compiler.options import CompileOptions
from deconv_compiler.output_file import atomic_output
from deconv_compiler.planner import made_weights, plan_graph
from deconv_compiler.runtime import SessionConfig, onnxruntime, time_interleaved
from deconv_compiler.strategies import STRATEGIES, why_not

ROUNDS = 7
DYNAMIC_SPATIAL = 16


# called before the first layer is timed (done 0) and after each one: (done, total, layer name)
TuneProgress = Callable[[int, int, str], None]


def tune(
    graph: Graph,
    options: CompileOptions,
    cache: TuneCache | None = None,
    progress: TuneProgress | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """The fastest strategy of every layer that asks for `tune`, and each one's timings
    (`{"chosen": ..., "time_vs_native": {strategy: ratio}}`) for the model's metadata. A layer
    that `cache` covers is not timed: its recorded choice and timings are taken; the others are
    timed and recorded in it."""
    graph = made_weights(graph, options.seed)  # as is when the compile made them already
    choices: dict[str, str] = {}
    timings: dict[str, Any] = {}
    nodes = list({node.name: node for node in layers_to_tune(graph, options)}.values())  # shared: once
    for done, node in enumerate(nodes):
        if progress is not None:
            progress(done, len(nodes), node.name)
        chosen, ratios = _tune_layer(graph, node, options, cache)
        choices[node.name] = chosen
        timings[node.name] = {"chosen": chosen, "time_vs_native": ratios}
    if progress is not None and nodes:
        progress(len(nodes), len(nodes), nodes[-1].name)
    return choices, timings


def _tune_layer(
    graph: Graph, node: Node, options: CompileOptions, cache: TuneCache | None = None
) -> tuple[str, dict[str, float]]:
    op = node.op
    if not isinstance(op, ConvTransposeOp):
        raise InternalError(f"layer {node.name!r} is not a transposed convolution, it cannot be tuned")
    layer = op.layer
    candidates = [s for s in STRATEGIES if why_not(s, layer_geometry(layer)) is None]
    if len(candidates) == 1:
        return candidates[0], {}
    key = tune_key(node, options, candidates)
    if cache is not None:
        recorded = cache.lookup(key)
        if recorded is not None:
            return recorded
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
    chosen = min(ratios, key=lambda name: ratios[name])
    rounded = {name: round(r, 3) for name, r in ratios.items()}
    if cache is not None:
        cache.record(key, chosen, rounded)
    return chosen, rounded


def tune_key(node: Node, options: CompileOptions, candidates: Iterable[str]) -> dict[str, Any]:
    """Everything the timing of `node`'s candidates depended on, as JSON data."""
    op = node.op
    if not isinstance(op, ConvTransposeOp):
        raise InternalError(f"layer {node.name!r} is not a transposed convolution")
    layer = op.layer
    return {
        "layer": {
            "rank": layer.rank,
            "filters": layer.filters,
            "in_channels": layer.in_channels,
            "kernel_size": list(layer.kernel_size),
            "strides": list(layer.strides),
            "padding": layer.padding,
            "output_padding": None if layer.output_padding is None else list(layer.output_padding),
            "data_format": layer.data_format,
            "dilation_rate": list(layer.dilation_rate),
            "activation": layer.activation,
            "use_bias": layer.use_bias,
            "input_shape": list(layer.input_shape),
        },
        "dtype_policy": options.dtype or node.policy,
        "target": options.target,
        "opset": options.opset,
        "candidates": list(candidates),
        "onnxruntime": str(onnxruntime().__version__),
        "deconv_compiler": __version__,
        "tuner": {"rounds": ROUNDS, "dynamic_spatial": DYNAMIC_SPATIAL},
    }


CACHE_FORMAT = "deconvc-tune-cache"
CACHE_VERSION = 1
MAX_CACHE_BYTES = 64 * 2**20


class TuneCacheError(DeconvError):
    """A tune cache file that cannot be read, is not one, or is of another version."""


@dataclass(eq=False)
class TuneCache:
    """Choices of `tune` and their timings, by `tune_key` (as canonical JSON). `hits` and
    `added`: how many layers of this compile it gave, and how many were timed and recorded."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    hits: int = 0
    added: int = 0

    def lookup(self, key: dict[str, Any]) -> tuple[str, dict[str, float]] | None:
        entry = self.entries.get(_canonical(key))
        if entry is None:
            return None
        self.hits += 1
        return entry["chosen"], dict(entry["time_vs_native"])

    def record(self, key: dict[str, Any], chosen: str, ratios: dict[str, float]) -> None:
        self.entries[_canonical(key)] = {"key": key, "chosen": chosen, "time_vs_native": dict(ratios)}
        self.added += 1

    @classmethod
    def read(cls, path: str | Path) -> TuneCache:
        """The cache in `path`; empty when there is no such file. `TuneCacheError` for anything
        else that is not a tune cache of this format (never silently ignored: that would quietly
        make a compile that should repeat itself time its layers again)."""
        path = Path(path)
        try:
            found = os.stat(path)
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise TuneCacheError(f"cannot read tune cache {path}: {exc}") from None
        if not stat.S_ISREG(found.st_mode):
            raise TuneCacheError(f"tune cache {path} is not a regular file")
        if found.st_size > MAX_CACHE_BYTES:
            raise TuneCacheError(
                f"tune cache {path} is over {MAX_CACHE_BYTES // 2**20} MiB: not a tune cache"
            )
        try:
            data = json.loads(path.read_bytes())
        except OSError as exc:
            raise TuneCacheError(f"cannot read tune cache {path}: {exc.strerror or exc}") from None
        except (ValueError, RecursionError):
            raise TuneCacheError(
                f"tune cache {path} is not JSON (corrupt?); remove it to tune again"
            ) from None
        return cls(_entries(data, path))

    def to_json(self) -> dict[str, Any]:
        entries = [self.entries[key] for key in sorted(self.entries)]
        return {"format": CACHE_FORMAT, "version": CACHE_VERSION, "entries": entries}

    def write(self, path: str | Path, inputs: Iterable[Path] = ()) -> None:
        """Atomically (`output_file`); `path` may be none of `inputs`."""
        text = json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n"
        with atomic_output(Path(path), inputs) as handle:
            handle.write(text.encode("utf-8"))


def _entries(data: Any, path: Path) -> dict[str, dict[str, Any]]:
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        raise TuneCacheError(f'{path} is not a tune cache of deconvc (no "format": "{CACHE_FORMAT}")')
    if data.get("version") != CACHE_VERSION:
        raise TuneCacheError(
            f"tune cache {path} is of version {data.get('version')!r}; this deconvc reads version "
            f"{CACHE_VERSION} (remove it to tune again)"
        )
    entries = data.get("entries")
    if not isinstance(entries, list):
        raise TuneCacheError(f"tune cache {path}: entries must be a list")
    found: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(entries):
        ratios = entry.get("time_vs_native") if isinstance(entry, dict) else None
        valid = (
            isinstance(entry, dict)
            and isinstance(entry.get("key"), dict)
            and entry.get("chosen") in STRATEGIES
            and isinstance(ratios, dict)
            and entry["chosen"] in ratios
            and all(
                name in STRATEGIES and isinstance(r, (int, float)) and not isinstance(r, bool)
                for name, r in ratios.items()
            )
        )
        if not valid:
            raise TuneCacheError(
                f"tune cache {path}: entries[{index}] is not a recorded choice "
                "(key, chosen, time_vs_native); remove the file to tune again"
            )
        found[_canonical(entry["key"])] = entry
    return found


def _canonical(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"))
