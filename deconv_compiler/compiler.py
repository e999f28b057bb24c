"""The one compile path: `ir.Graph` + `CompileOptions` → checked `onnx.ModelProto`, and writing it.

    graph ──(tune: time the candidates)──▶ plan_graph ──▶ build_model ──▶ check_model

Whichever front end made the graph (a spec, a saved Keras model), it goes through the same
planner, builder and checks.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
from google.protobuf.message import EncodeError

from deconv_compiler.builder import build_detached_model, build_model
from deconv_compiler.check import check_model
from deconv_compiler.conv_transpose_plan import layers_to_tune
from deconv_compiler.dtypes import compute_dtype
from deconv_compiler.errors import CompileError, DeconvWarning
from deconv_compiler.ir import Graph
from deconv_compiler.metadata import model_metadata
from deconv_compiler.model_file import DetachedModel, file_chunks, with_external_data, write_external_data
from deconv_compiler.model_interface import apply_interface
from deconv_compiler.options import EXTERNAL_DATA_ABOVE, CompileOptions
from deconv_compiler.output_file import atomic_output, check_output
from deconv_compiler.planner import made_weights, plan_graph

if TYPE_CHECKING:
    from deconv_compiler.tuning import TuneCache, TuneProgress


def compile_model(
    graph: Graph,
    options: CompileOptions | None = None,
    tune_cache: TuneCache | None = None,
    tune_progress: TuneProgress | None = None,
) -> onnx.ModelProto:
    """Lower a validated graph to an ONNX model that passes `check_model`.

    `options.target` auto is decided here (cuda when a CUDA session can be created). Layers that
    ask for the `tune` strategy are timed on this machine first (`tuning`); the choice and the
    timings go into the metadata. `tune_cache`: choices recorded before, reused (`tuning.TuneCache`).
    """
    return _compiled(graph, options, False, tune_cache, tune_progress).model


def compile_to_file(
    graph: Graph,
    options: CompileOptions | None,
    path: str | Path,
    tune_cache: TuneCache | None = None,
    tune_progress: TuneProgress | None = None,
    external_data_above: int = EXTERNAL_DATA_ABOVE,
) -> WrittenModel:
    """`compile_model` then `save_model`, the same bytes, without ever copying the weights into
    protobuf (`model_file`): what the CLI does. `path` may be none of the files the graph was read
    from (`graph.sources`), which is checked before compiling."""
    check_output(Path(path), graph.sources)
    built = _compiled(graph, options, True, tune_cache, tune_progress)
    files = save_model(built, path, graph.sources, external_data_above)
    return WrittenModel(files, {prop.key: prop.value for prop in built.model.metadata_props})


@dataclass(frozen=True)
class WrittenModel:
    """What `compile_to_file` wrote: the `.onnx` file, then its external data file if any; and the
    model's metadata."""

    files: tuple[Path, ...]
    metadata: Mapping[str, str]


def compile_detached(
    graph: Graph,
    options: CompileOptions | None = None,
    tune_cache: TuneCache | None = None,
    tune_progress: TuneProgress | None = None,
) -> DetachedModel:
    """`compile_model` with the big weights beside the model, never copied into protobuf
    (`model_file`): for writers that lay the file out themselves."""
    return _compiled(graph, options, True, tune_cache, tune_progress)


def _compiled(
    graph: Graph,
    options: CompileOptions | None,
    detach: bool,
    tune_cache: TuneCache | None = None,
    tune_progress: TuneProgress | None = None,
) -> DetachedModel:
    options = (options or CompileOptions()).resolved()
    graph = made_weights(graph, options.seed)  # once, for the tuner and the planner
    policies = {options.dtype} if options.dtype else {node.policy for node in graph.nodes}
    if any(compute_dtype(policy) == "float64" for policy in policies):
        warnings.warn(
            DeconvWarning(
                "float64: onnxruntime's CPU provider has no float64 ConvTranspose kernel, so this "
                "model runs only on CUDA; compile with dtype float32 to run it on the CPU"
            ),
            stacklevel=2,
        )
    tuned: dict[str, str] = {}
    timings: dict[str, Any] = {}
    if layers_to_tune(graph, options):
        from deconv_compiler.tuning import tune  # onnxruntime only when asked

        tuned, timings = tune(graph, options, tune_cache, tune_progress)
    with _within_protobuf_limit():
        plan = plan_graph(graph, options, tuned)
        metadata = model_metadata(
            graph,
            target=options.target,
            seed=options.seed,
            dtype=options.dtype,
            strategies=plan.strategies,
            weight_origins=plan.weight_origins,
            tuning=timings,
        )
        built = (
            build_detached_model(plan, metadata) if detach else DetachedModel(build_model(plan, metadata), {})
        )
    apply_interface(built.model, options.interface)  # graph only: detached weights are not needed
    check_model(built.model)  # its weightless view: detached weights are never looked at
    return built


@contextmanager
def _within_protobuf_limit() -> Iterator[None]:
    try:
        yield
    except EncodeError as exc:  # protobuf refuses messages over 2 GiB
        raise CompileError(_TOO_LARGE) from exc


_TOO_LARGE = "the model is larger than an .onnx file can be (2 GiB); compile fewer or smaller layers"


def save_model(
    model: onnx.ModelProto | DetachedModel,
    path: str | Path,
    inputs: Iterable[str | Path] = (),
    external_data_above: int = EXTERNAL_DATA_ABOVE,
) -> tuple[Path, ...]:
    """Write atomically (`output_file`): a hidden temporary file beside the target, fsynced, then
    renamed over it; a failure or an interrupt leaves the previous file intact. `path` may be none
    of `inputs` (the files the model was made from), nor anything but a regular file.

    A compiled model (`DetachedModel`) whose weights pass `external_data_above` bytes is written
    as `path` plus `path.data` beside it (ONNX external data, which has no 2 GiB limit): the data
    file first, then the model that names it, each atomically. Returns the files written."""
    sources = [Path(source) for source in inputs]
    if (
        isinstance(model, DetachedModel)
        and sum(a.nbytes for a in model.arrays.values()) > external_data_above
    ):
        target = Path(path)
        data_file = target.with_name(f"{target.name}.data")
        check_output(target, sources)
        weightless, placed = with_external_data(model, data_file.name)
        with atomic_output(data_file, sources) as handle:
            write_external_data(handle, placed)
        with atomic_output(target, sources) as handle:
            handle.write(weightless.SerializeToString())
        return target, data_file
    chunks = file_bytes(model)
    with atomic_output(Path(path), sources) as handle:
        for chunk in chunks:
            handle.write(chunk)
    return (Path(path),)


def file_bytes(model: onnx.ModelProto | DetachedModel) -> list[bytes | memoryview]:
    """The one-file `.onnx` bytes of `model`, in pieces (a detached model's weights as they are in
    memory); `CompileError` past protobuf's 2 GiB, which detached weights would otherwise skip."""
    with _within_protobuf_limit():
        chunks = list(file_chunks(model)) if isinstance(model, DetachedModel) else [model.SerializeToString()]
    if sum(memoryview(chunk).nbytes for chunk in chunks) >= 2**31:
        raise CompileError(_TOO_LARGE)
    return chunks
