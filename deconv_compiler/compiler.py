"""Spec → checked `onnx.ModelProto`, and writing it: the stages glued together.

load_spec → ModelSpec → plan_model → LoweringPlan → build_model → ModelProto → check_model
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import onnx

from deconv_compiler import __version__
from deconv_compiler.check import check_model
from deconv_compiler.errors import DeconvWarning
from deconv_compiler.lowering import build_model
from deconv_compiler.plan import DEFAULT_OPSET, plan_model
from deconv_compiler.spec import ModelSpec


def compile_spec(
    spec: ModelSpec, opset: int = DEFAULT_OPSET, seed: int | None = None, target: str = "cpu"
) -> onnx.ModelProto:
    """Lower a validated spec to an ONNX model that passes `check_model`.

    `seed` overrides the spec's seed for weights made by initializers. `target` "cuda" keeps
    every ConvTranspose on the GPU in onnxruntime's CUDA provider (symmetric pads + Slice).
    """
    config = spec.keras_config()
    if seed is not None:
        config["seed"] = seed
    metadata = (
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
    model = build_model(plan_model(spec, opset=opset, seed=seed, metadata=metadata, target=target))
    check_model(model)
    return model


def _file_mode(target: Path) -> int:
    """The existing file's mode, else what the umask gives a new file."""
    try:
        return target.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def save_model(model: onnx.ModelProto, path: str | Path) -> None:
    """Write atomically: a temporary file beside the target, fsync, then rename over it."""
    target = Path(path)
    data = model.SerializeToString()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, _file_mode(target))  # mkstemp makes 0600; give the file its usual mode
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
