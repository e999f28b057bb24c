"""The CUDA execution provider. Run on a machine with an NVIDIA GPU:

    pip install -e '.[gpu,test]' && python -m pytest -m gpu

(in a fresh environment: `onnxruntime` and `onnxruntime-gpu` must never be installed together).
Everywhere else these tests are skipped, with the reason CUDA is not usable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import deconv_compiler as dc
from deconv_compiler import runtime
from deconv_compiler.runtime import SessionConfig
from deconv_compiler.verification import check_graph
from tests.onnx_run import assert_close, compile_spec, spec_reference

REASON = runtime.cuda_unavailable_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"CUDA not usable: {REASON}")]
EXACT = SessionConfig(provider="cuda", use_tf32=False)  # TF32 would change float32 results
SPECS = Path(__file__).resolve().parent.parent / "specs"

LAYERS = {
    "k3s2-same (asymmetric pads)": {"filters": 8, "kernel_size": 3, "strides": 2, "padding": "same"},
    "k4s2-same": {"filters": 8, "kernel_size": 4, "strides": 2, "padding": "same", "activation": "relu"},
    "k2s3-valid-op": {"filters": 4, "kernel_size": 2, "strides": 3, "output_padding": 1},
    "k5s2-same-op1-cf": {
        "filters": 4,
        "kernel_size": 5,
        "strides": 2,
        "padding": "same",
        "output_padding": 1,
        "data_format": "channels_first",
    },
    "dilated": {
        "filters": 4,
        "kernel_size": 3,
        "dilation_rate": 2,
        "padding": "same",
        "activation": "softmax",
    },
}


def _spec(args: dict[str, object], dtype: str = "float32") -> dc.ModelSpec:
    channels_first = args.get("data_format") == "channels_first"
    return dc.load_spec(
        {
            **args,
            "input_shape": [6, 9, 6] if not channels_first else [6, 9, 7],
            "batch_size": 2,
            "dtype": dtype,
        }
    )


@pytest.mark.parametrize("name", list(LAYERS))
def test_float32_matches_the_reference_with_tf32_off(name: str) -> None:
    report = check_graph(dc.spec_graph(_spec(LAYERS[name])), EXACT)
    assert report.provider == "cuda" and report.relative_error <= 1e-5, report


@pytest.mark.parametrize("name", list(LAYERS))
def test_no_conv_transpose_on_the_cpu_with_the_cuda_target(name: str) -> None:
    model = compile_spec(_spec(LAYERS[name]), target="cuda")
    x = np.random.default_rng(0).standard_normal(_spec(LAYERS[name]).input_shape).astype(np.float32)
    result = runtime.run_model(model, x, EXACT)
    assert not [node for node in result.cpu_nodes if node.startswith("ConvTranspose:")], result.cpu_nodes


def test_the_cpu_target_shows_onnxruntimes_fallback_for_asymmetric_pads() -> None:
    """Why the CUDA target exists (onnxruntime#11312); if this starts failing, onnxruntime fixed it."""
    spec = _spec(LAYERS["k3s2-same (asymmetric pads)"])
    x = np.random.default_rng(0).standard_normal(spec.input_shape).astype(np.float32)
    result = runtime.run_model(compile_spec(spec, target="cpu"), x, EXACT)
    assert any(node.startswith("ConvTranspose:") for node in result.cpu_nodes)


@pytest.mark.parametrize("name", list(LAYERS))
def test_float16_natively_on_cuda(name: str) -> None:
    report = check_graph(dc.spec_graph(_spec(LAYERS[name], "float16")), EXACT)
    assert report.provider == "cuda" and report.passed, report


def test_float64_runs_on_cuda() -> None:
    spec = _spec(LAYERS["k4s2-same"], "float64")
    with pytest.warns(dc.DeconvWarning):
        model = compile_spec(spec, target="cuda")
    x = np.random.default_rng(0).standard_normal(spec.input_shape)
    y = runtime.run_model(model, x, EXACT).outputs["output"]
    assert y.dtype == np.float64
    assert_close(y, spec_reference(spec, x), rtol=1e-9)


def test_benchmark_uses_io_binding_on_the_device() -> None:
    model = compile_spec(dc.load_spec(SPECS / "dcgan_generator.yaml"), target="cuda")
    x = np.ones((8, 7, 7, 256), np.float32)
    result = runtime.benchmark(model, x, SessionConfig(provider="cuda"), warmup=5, iterations=20)
    assert result.provider == "cuda" and not [n for n in result.cpu_nodes if n.startswith("ConvTranspose:")]


@pytest.mark.parametrize("strategy", ["conv", "subpixel", "gemm"])
@pytest.mark.parametrize("name", [*LAYERS, "k2s2-valid"])
def test_every_strategy_on_cuda_matches_the_reference_on_the_gpu(name: str, strategy: str) -> None:
    spec = _spec(LAYERS.get(name, {"filters": 4, "kernel_size": 2, "strides": 2}))
    x = np.random.default_rng(1).standard_normal(spec.input_shape).astype(np.float32)
    try:
        model = compile_spec(spec, strategy=strategy, target="cuda")
    except dc.CompileError as exc:
        assert "does not apply" in str(exc)
        pytest.skip(f"{strategy} does not apply to {name}")
    result = runtime.run_model(model, x, EXACT)
    assert_close(next(iter(result.outputs.values())), spec_reference(spec, x), context=f"{strategy} {name}")
    assert not result.cpu_nodes, result.cpu_nodes  # every node of the strategy runs on the GPU
