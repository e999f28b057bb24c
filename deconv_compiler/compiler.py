"""The one compile path: `ir.Graph` + `CompileOptions` → checked `onnx.ModelProto`, and writing it.

    graph ──(tune: time the candidates)──▶ plan_graph ──▶ build_model ──▶ check_model

Whichever front end made the graph (a spec, a saved Keras model), it goes through the same
planner, builder and checks.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import EncodeError

from deconv_compiler.builder import build_detached_model, build_model
from deconv_compiler.check import check_model
from deconv_compiler.conv_transpose_plan import layers_to_tune
from deconv_compiler.dtypes import compute_dtype
from deconv_compiler.errors import CompileError, DeconvWarning
from deconv_compiler.ir import Graph
from deconv_compiler.metadata import model_metadata
from deconv_compiler.model_file import DetachedModel, file_chunks
from deconv_compiler.options import CompileOptions
from deconv_compiler.planner import made_weights, plan_graph


def compile_model(graph: Graph, options: CompileOptions | None = None) -> onnx.ModelProto:
    """Lower a validated graph to an ONNX model that passes `check_model`.

    `options.target` auto is decided here (cuda when a CUDA session can be created). Layers that
    ask for the `tune` strategy are timed on this machine first (`tuning`); the choice and the
    timings go into the metadata.
    """
    return _compiled(graph, options, detach=False).model


def compile_to_file(graph: Graph, options: CompileOptions | None, path: str | Path) -> None:
    """`compile_model` then `save_model`, the same bytes, without ever copying the weights into
    protobuf (`model_file`): what the CLI does."""
    save_model(_compiled(graph, options, detach=True), path)


def _compiled(graph: Graph, options: CompileOptions | None, detach: bool) -> DetachedModel:
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

        tuned, timings = tune(graph, options)
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
    check_model(built.model)  # its weightless view: detached weights are never looked at
    return built


@contextmanager
def _within_protobuf_limit() -> Iterator[None]:
    try:
        yield
    except EncodeError as exc:  # protobuf refuses messages over 2 GiB
        raise CompileError(_TOO_LARGE) from exc


_TOO_LARGE = "the model is larger than an .onnx file can be (2 GiB); compile fewer or smaller layers"


def _file_mode(target: Path) -> int:
    """The existing file's mode, else what the umask gives a new file."""
    try:
        return target.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def save_model(model: onnx.ModelProto | DetachedModel, path: str | Path) -> None:
    """Write atomically: a hidden temporary file beside the target, flushed and fsynced, then
    renamed over it. A failure or an interrupt leaves the previous file intact and removes the
    temporary; one left by a killed process is removed by the next save to the same path."""
    target = Path(path)
    with _within_protobuf_limit():
        chunks = list(file_chunks(model)) if isinstance(model, DetachedModel) else [model.SerializeToString()]
    if sum(len(chunk) for chunk in chunks) >= 2**31:  # protobuf's own limit, which detached weights skip
        raise CompileError(_TOO_LARGE)
    mode = _file_mode(target)
    _remove_stale_temporaries(target)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _remove_stale_temporaries(target: Path) -> None:
    """Temporaries of `target` whose writing process no longer exists (it was killed)."""
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        pid = stale.name[len(target.name) + 2 : -len(".tmp")]
        if pid.isdigit() and not _process_exists(int(pid)):
            stale.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
