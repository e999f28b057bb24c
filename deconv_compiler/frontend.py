"""A path → which front end reads it, told by content (the name only breaks ties), in one place.

- a saved Keras model (`.keras` zip, HDF5 `.h5`, or a Keras config JSON: a top-level object with
  `class_name` and `config`) → `keras_model.load_keras_model`;
- an ONNX model (binary, not a saved Keras model) → only `run`, `bench` and `inspect` take it;
- anything else is a spec (YAML or JSON text) → `spec.load_spec`, then `spec.spec_graph`.
Nothing here imports onnx.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

from deconv_compiler.errors import Problem, SpecError
from deconv_compiler.ir import Graph
from deconv_compiler.limits import MAX_WEIGHT_BYTES

FileKind = Literal["spec", "keras", "onnx"]
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def file_kind(path: Path, weights: Path | None = None) -> FileKind:
    """What `path` holds. A `weights` file goes with a Keras config only; a file named like a
    Keras model that is none is read as one anyway, so the error says what is wrong with it."""
    from deconv_compiler.keras_file import is_saved_model

    if weights is not None or path.suffix.lower() in KERAS_SUFFIXES or is_saved_model(path):
        return "keras"
    if path.suffix.lower() == ".onnx" or _looks_binary(path):
        return "onnx"
    return "spec"


def _looks_binary(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return False  # the spec reader reports the missing file
    return b"\x00" in head or any(b > 0x7F for b in head[:8])


def load_model(
    path: str | Path,
    weights: str | Path | None = None,
    max_weight_bytes: int = MAX_WEIGHT_BYTES,
    kind: FileKind | None = None,
    weights_root: str | Path | None = None,
) -> Graph:
    """A spec or a saved Keras model (config JSON + `weights` included) as the compiler's IR;
    raises `SpecError` or `KerasModelError` listing every problem. `kind`: what `file_kind`
    already said of the file, so it is not read twice. `weights_root`: the folder a spec's
    `weights:` files must lie inside (default: the spec's folder; see `spec.load_spec`). The
    graph's `sources` are the files read (`path`, `weights`, a spec's `.npz` files): an output
    may replace none of them."""
    path = Path(path)
    if kind is None:
        kind = file_kind(path, None if weights is None else Path(weights))
    if kind == "onnx" and path.suffix.lower() == ".onnx":  # other binary files: the spec reader says why
        raise SpecError(
            [
                Problem(
                    (),
                    "is an ONNX model, which has no Keras layers to read: this command takes a spec or a "
                    "saved Keras model (inspect, run and bench take ONNX files)",
                    str(path),
                )
            ]
        )
    if kind == "keras":
        from deconv_compiler.keras_model import load_keras_model

        graph = load_keras_model(path, weights, max_weight_bytes)
    else:
        from deconv_compiler.spec import load_spec, spec_graph

        graph = spec_graph(load_spec(path, max_weight_bytes, weights_root))
    given = (path,) if weights is None else (path, Path(weights))
    return replace(graph, sources=(*given, *graph.sources))  # what an output may not replace
