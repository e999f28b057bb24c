"""Choosing lowering strategies: the `auto` rule, forcing one per model, per layer or per compile,
`tune`, and what gets recorded. (Their numbers are checked in test_numeric_grid.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import deconv_compiler as dc
from deconv_compiler import reference
from tests.onnx_run import assert_close, compile_spec, run_cpu
from tests.test_cli import assert_clean_failure, invoke

RNG = np.random.default_rng(3)


def layer(**args: Any) -> dict[str, Any]:
    base = {"filters": 4, "kernel_size": 3, "strides": 1, "padding": "same", "input_shape": [6, 6, 3]}
    return {**base, **args}


def ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def strategies(model: onnx.ModelProto) -> dict[str, str]:
    props = {p.key: p.value for p in model.metadata_props}
    return dict(json.loads(props["deconv_compiler.strategies"]))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"strides": 1}, "conv"),
        ({"strides": 1, "data_format": "channels_first", "input_shape": [3, 6, 6]}, "conv"),
        ({"kernel_size": 2, "strides": 2, "padding": "valid"}, "gemm"),
        (
            {
                "kernel_size": 2,
                "strides": 2,
                "padding": "valid",
                "data_format": "channels_first",
                "input_shape": [3, 6, 6],
            },
            "native",
        ),
        ({"kernel_size": 4, "strides": 2}, "native"),
        ({"kernel_size": 2, "strides": 2, "padding": "valid", "dtype": "float16"}, "native"),
    ],
)
def test_auto_follows_the_measured_rule(args: dict[str, Any], expected: str) -> None:
    model = compile_spec(dc.load_spec(layer(**args)))
    assert strategies(model) == {"conv2d_transpose": expected}


def test_auto_keeps_native_on_the_cuda_target() -> None:
    assert strategies(compile_spec(dc.load_spec(layer()), target="cuda")) == {"conv2d_transpose": "native"}


def test_model_and_layer_strategies_and_the_override() -> None:
    spec = {
        "name": "m",
        "strategy": "native",
        "input": {"shape": [None, 5, 5, 3]},
        "layers": [
            {"filters": 4, "kernel_size": 3, "padding": "same"},
            {"filters": 2, "kernel_size": 4, "strides": 2, "padding": "same", "strategy": "subpixel"},
        ],
    }
    loaded = dc.load_spec(spec)
    model = compile_spec(loaded)
    assert strategies(model) == {"conv2d_transpose": "native", "conv2d_transpose_1": "subpixel"}
    assert ops(model).count("DepthToSpace") == 1
    forced = compile_spec(loaded, strategy="native")
    assert set(strategies(forced).values()) == {"native"} and "DepthToSpace" not in ops(forced)


def test_a_strategy_that_cannot_apply_names_the_layer(tmp_path: Path) -> None:
    spec = tmp_path / "layer.yaml"
    spec.write_text("filters: 2\nkernel_size: 3\nstrides: 2\ninput_shape: [4, 4, 1]\nname: up\n")
    out = tmp_path / "out.onnx"
    result = invoke("compile", spec, "-o", out, "--strategy", "gemm")
    assert_clean_failure(result)
    assert "layer 'up': strategy 'gemm' does not apply: gemm needs kernel_size == strides" in result.stderr
    assert not out.exists()
    result = invoke("compile", spec, "-o", out, "--strategy", "conv")
    assert "strategy 'conv' does not apply: conv needs stride 1" in result.stderr


def test_tune_times_the_candidates_and_records_them() -> None:
    kernel, bias = RNG.standard_normal((3, 3, 4, 3)), RNG.standard_normal(4)
    spec = dc.load_spec(layer(weights=[kernel, bias], batch_size=2))
    model = compile_spec(spec, strategy="tune")
    props = {p.key: p.value for p in model.metadata_props}
    tuning = json.loads(props["deconv_compiler.tuning"])["conv2d_transpose"]
    assert set(tuning["time_vs_native"]) == {"native", "conv"}  # the strategies that apply to stride 1
    assert tuning["time_vs_native"]["native"] == 1.0
    assert tuning["chosen"] == min(tuning["time_vs_native"], key=tuning["time_vs_native"].get)
    assert strategies(model) == {"conv2d_transpose": tuning["chosen"]}
    x = RNG.standard_normal((2, 6, 6, 3)).astype(np.float32)
    expected = reference.layer(
        x, kernel, bias, strides=(1, 1), padding="same", output_padding=None, dilation_rate=(1, 1),
        data_format="channels_last",
    )  # fmt: skip
    assert_close(run_cpu(model, x), expected)


def test_tune_on_a_keras_model_goes_through_the_same_pipeline() -> None:
    """A saved model's transposed convolutions are tuned like a spec's (one tuner, one planner):
    the choice is recorded, used, and the model (BatchNormalization folded) keeps Keras' numbers."""
    from deconv_compiler.verification import reference_outputs
    from tests.keras_configs import conv, graph_of, layer, sequential

    config = sequential(
        conv("up", 4, 3, strides=[1, 1], padding="same", use_bias=False),
        layer("BatchNormalization", "bn", axis=-1, epsilon=1e-3),
        layer("ReLU", "relu"),
        input_shape=[6, 6, 3],
    )
    bn = tuple(np.abs(RNG.standard_normal(4)) + 0.5 for _ in range(4))
    graph = graph_of(config, up=(RNG.standard_normal((3, 3, 4, 3)),), bn=bn)
    model = dc.compile_model(graph, dc.CompileOptions(strategy="tune"))
    props = {p.key: p.value for p in model.metadata_props}
    tuning = json.loads(props["deconv_compiler.tuning"])["up"]
    assert set(tuning["time_vs_native"]) == {"native", "conv"}
    assert strategies(model) == {"up": tuning["chosen"]}
    chosen_op = "Conv" if tuning["chosen"] == "conv" else "ConvTranspose"
    assert chosen_op in ops(model) and "BatchNormalization" not in ops(model) and "Mul" not in ops(model)
    x = RNG.standard_normal((2, 6, 6, 3)).astype(np.float32)
    assert_close(run_cpu(model, x), reference_outputs(graph, [x])[0])
