"""The metadata our models carry: one home for its keys, what writes them and what reads them.

Written (in this order, each key where it applies): the compiler version; the normalized spec
(specs only, its seed as compiled); the target; the dtype policy forced by the options; the
tuner's timings (when a layer was tuned); where each layer's weights came from (specs); what the
Keras file was (Keras models); each transposed convolution's strategy. `export` adds the source
(file, SHA-256, kind, precision, Keras version) and the user's `--metadata` pairs. Values are JSON
where they are structured, so `read` gives them back as Python data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deconv_compiler import __version__
from deconv_compiler.ir import Graph, KerasOrigin, SpecOrigin

VERSION = "deconv_compiler.version"
SPEC = "deconv_compiler.spec"
TARGET = "deconv_compiler.target"
DTYPE = "deconv_compiler.dtype"
TUNING = "deconv_compiler.tuning"
WEIGHTS = "deconv_compiler.weights"
KERAS = "deconv_compiler.keras"
STRATEGIES = "deconv_compiler.strategies"
SOURCE = "deconv_compiler.source"  # added by `export`: the source file, its digest, the precision
JSON_KEYS = (SPEC, TUNING, WEIGHTS, KERAS, STRATEGIES, SOURCE)


def model_metadata(
    graph: Graph,
    *,
    target: str,
    seed: int | None,
    dtype: str | None,
    strategies: Mapping[str, str],
    weight_origins: Mapping[str, str],
    tuning: Mapping[str, Any],
) -> tuple[tuple[str, str], ...]:
    """The metadata of `graph` compiled for `target` (resolved), with the options' `seed` and
    `dtype` (None where the model's own were used)."""
    entries: list[tuple[str, str]] = [(VERSION, __version__)]
    if isinstance(graph.origin, SpecOrigin):
        config = dict(graph.origin.config)
        if seed is not None:
            config["seed"] = seed
        entries.append((SPEC, _json(config, compact=True)))
    entries.append((TARGET, target))
    if dtype is not None:
        entries.append((DTYPE, dtype))
    if tuning:
        entries.append((TUNING, _json(tuning)))
    if isinstance(graph.origin, SpecOrigin):
        entries.append((WEIGHTS, _json(weight_origins)))
    if isinstance(graph.origin, KerasOrigin):
        entries.append((KERAS, _json(_keras_summary(graph, graph.origin))))
    entries.append((STRATEGIES, _json(strategies)))
    return tuple(entries)


def _keras_summary(graph: Graph, origin: KerasOrigin) -> dict[str, Any]:
    """What the model is (no weights): its file's name, format, Keras version and layer calls."""
    return {
        "file": Path(origin.file).name,
        "format": origin.format,
        "keras_version": origin.keras_version,
        "layers": [[node.name, node.kind] for node in graph.nodes],
    }


def _json(value: Any, compact: bool = False) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":") if compact else None)


def read_metadata(props: Mapping[str, str], parsed: tuple[str, ...] = JSON_KEYS) -> dict[str, Any]:
    """A model's metadata properties with our JSON values (those of `parsed`) parsed; left as
    text where they do not parse: a file from elsewhere may use our keys."""
    metadata: dict[str, Any] = {}
    for key, value in props.items():
        if key in parsed:
            try:
                metadata[key] = json.loads(value)
                continue
            except (ValueError, RecursionError):
                pass
        metadata[key] = value
    return metadata
