"""Inference on onnxruntime: providers, session settings, placement, benchmarks, dtypes, checks.

Real onnxruntime sessions on the CPU provider; the CUDA provider has its own tests (test_gpu.py).
"""

from __future__ import annotations

import importlib.metadata
import math
import re
from pathlib import Path

import numpy as np
import pytest

import deconv_compiler as dc
from deconv_compiler import runtime
from deconv_compiler.errors import RuntimeFailure
from deconv_compiler.runtime import ProviderUnavailable, SessionConfig
from deconv_compiler.verification import check_graph
from tests.onnx_run import assert_close, compile_spec, spec_reference

SPECS = Path(__file__).resolve().parent.parent / "specs"
SEED_EXAMPLE = SPECS / "seed_example.yaml"
CUDA_REASON = runtime.cuda_unavailable_reason()


def test_run_on_cpu_reports_the_provider_and_no_fallback() -> None:
    model = compile_spec(dc.load_spec(SEED_EXAMPLE))
    result = runtime.run_model(model, np.ones((4, 10, 8, 128), np.float32))
    assert result.provider == "cpu" and result.cpu_nodes == ()
    assert result.outputs["output"].shape == (4, 20, 16, 32) and result.seconds > 0


def test_auto_takes_cuda_only_when_a_cuda_session_works() -> None:
    assert runtime.resolve_provider("auto") == ("cpu" if CUDA_REASON else "cuda")
    assert runtime.resolve_provider("cpu") == "cpu"


@pytest.mark.skipif(CUDA_REASON is None, reason="CUDA is usable here")
def test_cuda_request_without_cuda_is_an_error_with_the_reason() -> None:
    with pytest.raises(ProviderUnavailable) as info:
        runtime.resolve_provider("cuda")
    assert str(info.value) == f"--provider cuda: {CUDA_REASON}"
    model = compile_spec(dc.load_spec(SEED_EXAMPLE))
    with pytest.raises(ProviderUnavailable):  # never a silent CPU run
        runtime.run_model(model, np.ones((4, 10, 8, 128), np.float32), SessionConfig(provider="cuda"))


def test_the_cpu_build_is_named_as_the_reason() -> None:
    ort = runtime.onnxruntime()
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has the CUDA provider")
    assert CUDA_REASON is not None and "CPU build" in CUDA_REASON and "[gpu]" in CUDA_REASON


def test_unknown_provider_is_refused() -> None:
    with pytest.raises(ProviderUnavailable, match="unknown provider 'tpu'"):
        runtime.resolve_provider("tpu")


def test_session_settings_reach_onnxruntime() -> None:
    ort = runtime.onnxruntime()
    model = compile_spec(dc.load_spec(SEED_EXAMPLE))
    session = runtime.make_session(model, SessionConfig(threads=1, spinning=False, optimization="basic"))
    options = session.inner.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_node_placement_comes_from_a_real_profile(tmp_path: Path) -> None:
    model = compile_spec(dc.load_spec(SPECS / "dcgan_generator.yaml"))
    session = runtime.make_session(model, SessionConfig(optimization="disable"), str(tmp_path))
    session.inner.run(None, {"latent_features": np.ones((1, 7, 7, 256), np.float32)})
    placed = runtime.node_placement(session.inner.end_profiling())
    assert [op for _, op, _ in placed].count("ConvTranspose") == 2  # auto: the stride-1 layer is a Conv
    assert {provider for *_, provider in placed} == {"CPUExecutionProvider"}
    assert {name for name, *_ in placed} == {node.name for node in model.graph.node}


def test_benchmark_statistics_and_flops() -> None:
    model = compile_spec(dc.load_spec(SEED_EXAMPLE))
    x = np.ones((4, 10, 8, 128), np.float32)
    result = runtime.benchmark(model, x, SessionConfig(threads=1, spinning=False), warmup=2, iterations=15)
    assert len(result.latencies_ms) == 15 and result.iterations == 15
    assert (
        0
        < min(result.latencies_ms)
        <= result.percentile(50)
        <= result.percentile(90)
        <= result.percentile(99)
    )
    # 2 FLOPs per multiply-add: N * H * W * C_in input pixels, each times F * kh * kw taps
    assert result.conv_transpose_flops == 2 * 4 * 10 * 8 * 128 * 32 * 2 * 2
    assert result.throughput == pytest.approx(4 / (result.percentile(50) / 1000))
    assert result.gflops == pytest.approx(result.conv_transpose_flops / result.percentile(50) / 1e6)
    report = result.to_json()
    assert set(report["latency_ms"]) == {"p50", "p90", "p99", "min", "mean"} and report["cpu_nodes"] == []


def test_flops_count_every_layer_of_a_chain_with_dynamic_sizes() -> None:
    model = compile_spec(dc.load_spec(SPECS / "dcgan_generator.yaml"))
    expected = 2 * 3 * (7 * 7 * 256 * 128 * 25 + 7 * 7 * 128 * 64 * 25 + 14 * 14 * 64 * 1 * 25)
    assert runtime.conv_transpose_flops(model, (3, 7, 7, 256)) == expected


def test_float64_compiles_with_a_warning_and_fails_on_cpu_with_the_remedy() -> None:
    spec = dc.load_spec({"filters": 2, "kernel_size": 3, "input_shape": [4, 4, 2], "dtype": "float64"})
    with pytest.warns(dc.DeconvWarning, match="no float64 ConvTranspose kernel"):
        model = compile_spec(spec)
    with pytest.raises(RuntimeFailure, match="run a float64 model with --provider cuda"):
        runtime.run_model(model, np.zeros((1, 4, 4, 2)))


def test_mixed_float16_takes_and_gives_float32_and_computes_in_float16() -> None:
    spec = dc.load_spec(
        {
            "filters": 3,
            "kernel_size": 3,
            "strides": 2,
            "padding": "same",
            "activation": "relu",
            "input_shape": [5, 4, 2],
            "dtype": "mixed_float16",
        }
    )
    model = compile_spec(spec)
    assert [n.op_type for n in model.graph.node] == [
        "Transpose",
        "Cast",
        "ConvTranspose",
        "Relu",
        "Transpose",
        "Cast",
    ]
    x = np.random.default_rng(0).standard_normal((2, 5, 4, 2)).astype(np.float32)
    y = runtime.run_model(model, x).outputs["output"]
    assert y.dtype == np.float32
    assert_close(y, spec_reference(spec, x), rtol=1e-2)
    assert model.graph.initializer[0].data_type == 10  # float16 weights, as Keras casts them


def test_float16_on_cpu_runs_through_inserted_casts() -> None:
    spec = dc.load_spec(
        {"filters": 3, "kernel_size": 3, "strides": 2, "input_shape": [5, 4, 2], "dtype": "float16"}
    )
    report = check_graph(dc.spec_graph(spec))
    assert report.dtype == "float16" and report.passed and report.tolerance == 1e-2


@pytest.mark.parametrize(
    "path", sorted(SPECS.glob("*.yaml")) + sorted(SPECS.glob("*.json")), ids=lambda p: p.name
)
def test_check_passes_for_every_example(path: Path) -> None:
    report = check_graph(dc.spec_graph(dc.load_spec(path)), SessionConfig(threads=1))
    assert report.passed, report
    assert report.relative_error <= 1e-5 and report.provider == "cpu"


def test_check_fills_dynamic_sizes_and_honours_a_given_shape() -> None:
    spec = dc.load_spec(SPECS / "dilated_with_weights.yaml")
    assert check_graph(dc.spec_graph(spec)).input_shape == (2, 5, 5, 2)
    assert check_graph(dc.spec_graph(spec), shape=(1, 3, 7, 2)).input_shape == (1, 3, 7, 2)


def test_reference_output_is_independent_of_the_compiled_graph() -> None:
    """The check's oracle computes from Keras-layout weights, not from the model's initializers."""
    spec = dc.load_spec(
        {
            "type": "Conv1DTranspose",
            "filters": 1,
            "kernel_size": 2,
            "strides": 2,
            "input_shape": [3, 1],
            "weights": [[[[1.0]], [[2.0]]], [0.5]],
        }
    )
    y = spec_reference(spec, np.array([[[1.0], [2.0], [3.0]]]))
    np.testing.assert_array_equal(y.reshape(-1), [1.5, 2.5, 2.5, 4.5, 3.5, 6.5])


def test_packaging_never_asks_for_both_onnxruntime_packages() -> None:
    requires = importlib.metadata.requires("deconv-compiler") or []

    def runtimes(extra: str | None) -> list[str]:
        chosen = [r for r in requires if (f'extra == "{extra}"' in r if extra else "extra ==" not in r)]
        return [re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] for r in chosen if r.startswith("onnxruntime")]

    assert runtimes(None) == [] and runtimes("test") == []
    assert runtimes("cpu") == ["onnxruntime"] and runtimes("gpu") == ["onnxruntime-gpu"]
    assert len(runtime._onnxruntime_distributions()) == 1  # this environment has exactly one


def test_gflops_is_zero_safe_for_models_without_conv_transpose() -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert runtime.conv_transpose_flops(model, (1, 4)) == 0
    assert math.isfinite(runtime.benchmark(model, np.ones((1, 4), np.float32), SessionConfig(), 1, 3).gflops)
