"""Running compiled models in tests: real onnxruntime sessions on the CPU provider."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort


def run_cpu(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    result: Any = session.run(None, {session.get_inputs()[0].name: x})[0]
    return np.asarray(result)


def run_all(model: onnx.ModelProto, *inputs: np.ndarray) -> list[np.ndarray]:
    """Every output, for a model with one or more inputs (fed in the graph's input order)."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {declared.name: x for declared, x in zip(session.get_inputs(), inputs, strict=True)}
    return [np.asarray(y) for y in session.run(None, feeds)]


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-5, context: str = "") -> None:
    """Elementwise |a - e| <= rtol * max(1, max|e|): 1e-5 relative to the output's scale."""
    assert actual.shape == expected.shape, f"{context}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    error = float(np.max(np.abs(actual.astype(np.float64) - expected))) if expected.size else 0.0
    assert error <= rtol * scale, f"{context}: max error {error:.3g} > {rtol:g} x scale {scale:.3g}"


def compile_spec(spec: Any, **options: Any) -> onnx.ModelProto:
    """A spec (a `ModelSpec`, a mapping or a path) through the one compile path, with `options`
    as `CompileOptions` takes them."""
    import deconv_compiler as dc

    model_spec = spec if isinstance(spec, dc.ModelSpec) else dc.load_spec(spec)
    return dc.compile_model(dc.spec_graph(model_spec), dc.CompileOptions(**options))


def compile_graph(graph: Any, **options: Any) -> onnx.ModelProto:
    """An IR graph (from a Keras file) through the one compile path."""
    import deconv_compiler as dc

    return dc.compile_model(graph, dc.CompileOptions(**options))


def spec_reference(spec: Any, x: np.ndarray, seed: int | None = None) -> np.ndarray:
    """A single-output spec's numpy reference, with the compiled model's weights."""
    import deconv_compiler as dc
    from deconv_compiler.verification import reference_outputs

    return reference_outputs(dc.spec_graph(spec), [x], seed)[0]
