"""Spec → checked `onnx.ModelProto`, and writing it: the stages glued together.

load_spec → ModelSpec → plan_model → LoweringPlan → build_model → ModelProto → check_model
"""

from __future__ import annotations

import glob
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
from google.protobuf.message import EncodeError

from deconv_compiler import __version__
from deconv_compiler.check import check_model
from deconv_compiler.errors import CompileError, DeconvWarning
from deconv_compiler.graph_plan import plan_graph
from deconv_compiler.keras_model import KerasGraph
from deconv_compiler.lowering import build_graph_model, build_model
from deconv_compiler.plan import DEFAULT_OPSET, plan_model
from deconv_compiler.spec import ModelSpec


def compile_spec(
    spec: ModelSpec,
    opset: int = DEFAULT_OPSET,
    seed: int | None = None,
    target: str = "cpu",
    strategy: str | None = None,
) -> onnx.ModelProto:
    """Lower a validated spec to an ONNX model that passes `check_model`.

    `seed` overrides the spec's seed for weights made by initializers. `target` "cuda" keeps
    every ConvTranspose on the GPU in onnxruntime's CUDA provider (symmetric pads + Slice).
    `strategy` overrides the spec's lowering strategies (`deconv_compiler.strategies`); `tune`
    times each layer's candidates here and records the choice and the timings in the metadata.
    """
    config = spec.keras_config()
    if seed is not None:
        config["seed"] = seed
    metadata: tuple[tuple[str, str], ...] = (
        ("deconv_compiler.version", __version__),
        ("deconv_compiler.spec", json.dumps(config, sort_keys=True, separators=(",", ":"))),
        ("deconv_compiler.target", target),
    )
    if any(layer.dtype == "float64" for layer in spec.layers):
        warnings.warn(
            DeconvWarning(
                "float64: onnxruntime's CPU provider has no float64 ConvTranspose kernel, so this "
                "model runs only on CUDA; compile with dtype float32 to run it on the CPU"
            ),
            stacklevel=2,
        )
    if (strategy or spec.strategy) == "tune" or any(layer.strategy == "tune" for layer in spec.layers):
        from deconv_compiler.tuning import tune_spec

        spec, timings = tune_spec(spec, opset, seed, target, forced=strategy)
        strategy = None
        metadata = (*metadata, ("deconv_compiler.tuning", json.dumps(timings, sort_keys=True)))
    with _within_protobuf_limit():
        plan = plan_model(spec, opset=opset, seed=seed, metadata=metadata, target=target, strategy=strategy)
        model = build_model(plan)
    check_model(model)
    return model


def compile_keras_model(
    graph: KerasGraph, opset: int = DEFAULT_OPSET, target: str = "cpu", strategy: str = "auto"
) -> onnx.ModelProto:
    """Lower a validated Keras model to an ONNX model that passes `check_model`; `strategy`
    applies to every transposed convolution (`auto`: each layer's by the measured rule,
    `tune`: each layer's fastest here)."""
    metadata: tuple[tuple[str, str], ...] = (
        ("deconv_compiler.version", __version__),
        ("deconv_compiler.target", target),
    )
    if strategy == "tune":
        from deconv_compiler.tuning import tune_graph

        graph, timings = tune_graph(graph, opset, target)
        metadata = (*metadata, ("deconv_compiler.tuning", json.dumps(timings, sort_keys=True)))
    with _within_protobuf_limit():
        plan = plan_graph(graph, opset=opset, target=target, metadata=metadata, strategy=strategy)
        model = build_graph_model(plan)
    check_model(model)
    return model


@contextmanager
def _within_protobuf_limit() -> Iterator[None]:
    try:
        yield
    except EncodeError as exc:  # protobuf refuses messages over 2 GiB
        raise CompileError(
            "the model is larger than an .onnx file can be (2 GiB); compile fewer or smaller layers"
        ) from exc


def _file_mode(target: Path) -> int:
    """The existing file's mode, else what the umask gives a new file."""
    try:
        return target.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def save_model(model: onnx.ModelProto, path: str | Path) -> None:
    """Write atomically: a hidden temporary file beside the target, flushed and fsynced, then
    renamed over it. A failure or an interrupt leaves the previous file intact and removes the
    temporary; one left by a killed process is removed by the next save to the same path."""
    target = Path(path)
    data = model.SerializeToString()
    mode = _file_mode(target)
    _remove_stale_temporaries(target)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
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
