"""onnx model + numpy inputs → numpy outputs on onnxruntime. The only module importing onnxruntime.

`get_available_providers()` lists what the wheel was built with, not what loads, so the
providers a session really got are read back from the session.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from deconv_compiler.errors import RuntimeFailure

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass(frozen=True, eq=False)
class RunResult:
    outputs: dict[str, np.ndarray]
    providers: tuple[str, ...]


def make_session(
    model: onnx.ModelProto | bytes, provider: str = "cpu", threads: int = 0
) -> ort.InferenceSession:
    """A session on `provider` ("cpu" or "cuda"); refuses to fall back to the CPU silently."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    data = model if isinstance(model, bytes) else model.SerializeToString()
    wanted = PROVIDERS[provider]
    providers = [wanted] if provider == "cpu" else [wanted, PROVIDERS["cpu"]]
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise RuntimeFailure(f"onnxruntime cannot load the model: {exc}") from exc
    if wanted not in session.get_providers():
        raise RuntimeFailure(
            f"the {provider} execution provider is not usable here (session got {session.get_providers()})"
        )
    return session


def run_model(
    model: onnx.ModelProto | bytes,
    inputs: Mapping[str, np.ndarray] | np.ndarray,
    provider: str = "cpu",
) -> RunResult:
    """Run once; a bare array feeds the model's single input."""
    session = make_session(model, provider)
    if isinstance(inputs, np.ndarray):
        inputs = {session.get_inputs()[0].name: inputs}
    try:
        values = session.run(None, dict(inputs))
    except Exception as exc:
        raise RuntimeFailure(f"onnxruntime failed to run the model: {exc}") from exc
    names = [o.name for o in session.get_outputs()]
    return RunResult(dict(zip(names, values, strict=True)), tuple(session.get_providers()))
