"""fp16 and int8 conversions of the example specs run on onnxruntime within measured bounds of fp32;
calibration files and CPU settings are checked and explained (deconv_compiler/precision.py)."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import deconv_compiler as dc
from deconv_compiler.errors import DeconvError, DeconvWarning
from deconv_compiler.inspection import RunInput, run_inputs
from deconv_compiler.precision import (
    DEFAULT_TOLERANCE,
    CalibrationError,
    Int8Settings,
    PrecisionUnsupported,
    int8_settings,
    precision_error,
    random_calibration,
    read_calibration,
    to_float16,
    to_int8,
)
from deconv_compiler.runtime import make_session

ROOT = Path(__file__).resolve().parent.parent
SPEC_FILES = sorted(p for p in (ROOT / "specs").iterdir() if p.suffix in (".yaml", ".yml", ".json"))
# Relative max error of int8 (max |int8 - fp32| / max |fp32|) on the calibration feeds used here,
# measured with onnxruntime 1.31.1 with and without reduce_range (VNNI CPU): the bound is about 1.5x
# the worse of the two, and never above the tolerance to_int8 aims at.
INT8_BOUNDS = {
    "dcgan_generator.yaml": 0.04,  # measured 0.025 / 0.026
    "dilated_with_weights.yaml": 0.04,  # 0.027 / 0.027
    "inline_weights.yaml": 0.015,  # 0.0066 / 0.0066
    "seed_example.yaml": 0.03,  # 0.014 / 0.017
    "volume_3d_channels_first.yaml": 0.02,  # 0.0092 / 0.0092
    "upsample_1d.json": 0.015,  # 0.0074 / 0.0074
}


@cache
def compiled(name: str) -> onnx.ModelProto:
    return dc.compile_model(dc.load_model(ROOT / "specs" / name), dc.CompileOptions())


def inputs_of(name: str) -> tuple[RunInput, ...]:
    return run_inputs(compiled(name), name)


@cache
def calibration(name: str) -> list[dict[str, np.ndarray]]:
    """Random calibration where every non-batch size is fixed; else 16 samples of size 5 per dynamic axis."""
    model_inputs = inputs_of(name)
    if all(d is not None for i in model_inputs for d in i.dims[1:]):
        return random_calibration(model_inputs)
    rng = np.random.default_rng(1)
    feeds = []
    for _ in range(2):
        feeds.append(
            {
                i.name: rng.standard_normal((8, *(5 if d is None else d for d in i.dims[1:]))).astype(i.dtype)
                for i in model_inputs
            }
        )
    return feeds


def op_types(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


# --- fp16 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [p.name for p in SPEC_FILES])
def test_fp16_round_trip(name: str) -> None:
    model = compiled(name)
    before = model.SerializeToString()
    half = to_float16(model)
    assert model.SerializeToString() == before, "to_float16 changed its argument"
    onnx.checker.check_model(half, full_check=True)
    for value in [*half.graph.input, *half.graph.output]:
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT, value.name
    assert {init.data_type for init in half.graph.initializer if init.data_type != TensorProto.INT64} == {
        TensorProto.FLOAT16
    }
    assert make_session(half).provider == "cpu"
    error = precision_error(model, half, calibration(name))
    assert error.scale > 0.1
    assert error.relative <= 1e-2, error.describe()  # measured 1.8e-4 .. 1.1e-3


def test_fp16_refuses_models_that_are_not_float32() -> None:
    model = dc.compile_model(
        dc.load_model(ROOT / "specs" / "seed_example.yaml"), dc.CompileOptions(dtype="float16")
    )
    with pytest.raises(
        PrecisionUnsupported,
        match="--precision fp16 converts float32 models; the model's input 'input' is float16",
    ):
        to_float16(model)


def one_node_model(op: str, factor: float = 1.0) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "k"] if op == "Mul" else ["x"], ["y"], name="node")],
        "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor("k", TensorProto.FLOAT, [1], [factor])] if op == "Mul" else [],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_fp16_says_when_weights_are_clamped() -> None:
    model = one_node_model("Mul", 1e5)
    with pytest.warns(
        DeconvWarning, match=r"1 weight value beyond float16's range \(±65504\) will be clamped"
    ):
        half = to_float16(model)
    feeds = [{"x": np.array([[1.0, -0.5]], np.float32)}]
    assert precision_error(model, half, feeds).max_abs == pytest.approx(1e5 - 65504)


def test_precision_error_counts_nan_as_unbounded() -> None:
    feeds = [{"x": np.array([[-1.0, 4.0]], np.float32)}]
    error = precision_error(one_node_model("Abs"), one_node_model("Sqrt"), feeds)
    assert error.max_abs == error.relative == float("inf")


# --- int8 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [p.name for p in SPEC_FILES])
def test_int8_round_trip(name: str) -> None:
    model = compiled(name)
    before = model.SerializeToString()
    feeds = calibration(name)
    result = to_int8(model, feeds, int8_settings())
    assert model.SerializeToString() == before, "to_int8 changed its argument"
    onnx.checker.check_model(result.model)
    assert "QuantizeLinear" in op_types(result.model) and "DequantizeLinear" in op_types(result.model)
    assert make_session(result.model).provider == "cpu"
    # the reported error is the real one, on the calibration feeds
    assert precision_error(model, result.model, feeds) == result.error
    assert result.error.relative <= INT8_BOUNDS[name] <= DEFAULT_TOLERANCE, result.error.describe()
    assert result.within_tolerance and result.quantizations == 1
    conv_transposes = [n.name for n in model.graph.node if n.op_type == "ConvTranspose"]
    assert result.float_nodes == tuple(conv_transposes)
    assert all("no int8 ConvTranspose kernel" in node.reason for node in result.kept_float)
    # its weights stay float32 (its input may still come through the previous node's int8 output)
    initializers = {i.name: i.data_type for i in result.model.graph.initializer}
    for node in result.model.graph.node:
        if node.op_type == "ConvTranspose":
            assert all(initializers[name] == TensorProto.FLOAT for name in node.input[1:]), node.name


def test_int8_keeps_the_nodes_that_lose_most_in_float() -> None:
    model, feeds = compiled("seed_example.yaml"), calibration("seed_example.yaml")
    settings = int8_settings()  # full-range weights saturate on AVX2 without VNNI: this CPU's choice
    plain = to_int8(model, feeds, settings)
    strict = to_int8(model, feeds, settings, tolerance=1e-3, max_fallbacks=2)
    assert not plain.float_nodes and plain.quantizations == 1
    assert 1 < strict.quantizations <= 3
    # the MatMul (the layer's weights) loses most; its Add (the bias) next
    assert strict.float_nodes[0] == "conv2d_transpose/MatMul", strict.kept_float
    assert "int8 added" in strict.kept_float[0].reason and "> tolerance 0.10%" in strict.kept_float[0].reason
    assert strict.error.relative < plain.error.relative


def test_int8_reduce_range_is_applied() -> None:
    """7-bit weights with reduce_range; full 8 bits without (whose error is not asserted: onnxruntime's
    uint8 x int8 kernels saturate on AVX2 without VNNI, 0.20 of scale on seed_example)."""
    model, feeds = compiled("seed_example.yaml"), calibration("seed_example.yaml")
    full = to_int8(model, feeds, Int8Settings(False, "uint8", "int8", "test"))
    reduced = to_int8(model, feeds, Int8Settings(True, "uint8", "int8", "test"))

    def weight_range(result_model: onnx.ModelProto) -> int:
        weights = [
            i for i in result_model.graph.initializer if i.data_type == TensorProto.INT8 and len(i.dims) > 1
        ]
        return max(int(np.max(np.abs(onnx.numpy_helper.to_array(w)))) for w in weights)

    assert weight_range(full.model) == 127 and weight_range(reduced.model) <= 64
    assert reduced.error.relative <= INT8_BOUNDS["seed_example.yaml"]


def test_int8_leaves_the_root_logger_alone() -> None:
    root = logging.getLogger()
    handlers, disabled = list(root.handlers), root.manager.disable
    to_int8(
        compiled("volume_3d_channels_first.yaml"),
        calibration("volume_3d_channels_first.yaml"),
        int8_settings(),
    )
    assert root.handlers == handlers and root.manager.disable == disabled


def test_precision_error_of_a_model_against_itself_is_zero() -> None:
    model = compiled("upsample_1d.json")
    error = precision_error(model, model, calibration("upsample_1d.json"))
    assert error.max_abs == error.mean_abs == error.relative == 0.0
    assert error.feeds == 2 and error.values == 2 * 8 * 18 * 16  # (i-1)*s + k%2 + output_padding = 18
    assert "max error 0 = 0 of scale" in error.describe()


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "machine", "reduce_range", "activation", "reason"),
    [
        ({"sse4_2", "avx", "avx2", "fma"}, "x86_64", True, "uint8", "AVX2 without VNNI"),
        ({"avx2", "avx512f", "avx512_vnni"}, "x86_64", False, "uint8", "VNNI (avx512_vnni)"),
        ({"avx2", "avx_vnni"}, "AMD64", False, "uint8", "VNNI (avx_vnni)"),
        ({"sse4_2"}, "x86_64", True, "uint8", "x86 CPU without VNNI"),
        ({"asimd", "asimddp"}, "aarch64", False, "int8", "ARM CPU"),
        (set(), "riscv64", True, "uint8", "riscv64 CPU: 7-bit weights"),
    ],
    ids=["avx2", "avx512-vnni", "avx-vnni", "sse", "arm", "riscv"],
)
def test_int8_settings_for_cpu_flags(
    flags: set[str], machine: str, reduce_range: bool, activation: str, reason: str
) -> None:
    settings = int8_settings(flags, machine)
    assert (settings.reduce_range, settings.activation_type, settings.weight_type) == (
        reduce_range,
        activation,
        "int8",
    )
    assert reason in settings.reason


def test_int8_settings_read_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\n")
    assert int8_settings(machine="x86_64", cpuinfo=cpuinfo).reduce_range
    unknown = int8_settings(machine="x86_64", cpuinfo=tmp_path / "missing")
    assert unknown.reduce_range and "features unknown" in unknown.reason
    assert int8_settings().reason  # this machine: whatever it is, a sentence


# --- calibration data -----------------------------------------------------------------------------


def seed_inputs() -> tuple[RunInput, ...]:
    return inputs_of("seed_example.yaml")  # input (4, 10, 8, 128): a fixed batch of 4


def two_input_model() -> tuple[RunInput, ...]:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"], name="add")],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
    )
    return run_inputs(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), "two.onnx"
    )


def save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_calibration_is_split_into_the_model_batch(tmp_path: Path) -> None:
    x = np.arange(8 * 10 * 8 * 128, dtype=np.float64).reshape(8, 10, 8, 128)
    feeds = read_calibration(save(tmp_path / "c.npz", input=x), seed_inputs())
    assert [f["input"].shape for f in feeds] == [(4, 10, 8, 128)] * 2
    assert feeds[0]["input"].dtype == np.float32 and np.array_equal(feeds[1]["input"], x[4:])
    np.save(tmp_path / "c.npy", x)
    assert len(read_calibration(tmp_path / "c.npy", seed_inputs())) == 2


def test_calibration_of_a_dynamic_batch_is_split_into_slices(tmp_path: Path) -> None:
    c = save(tmp_path / "c.npz", a=np.zeros((20, 3), np.float32), b=np.ones((20, 3), np.float32))
    feeds = read_calibration(c, two_input_model())
    assert [f["a"].shape[0] for f in feeds] == [8, 8, 4] and set(feeds[0]) == {"a", "b"}


@pytest.mark.parametrize(
    ("arrays", "messages"),
    [
        (
            {"x": (4, 10, 8, 128)},
            [
                "c.npz has no array named 'input' (the model's input, shape (samples (a multiple of 4), 10, 8, 128))",
                "c.npz: array 'x' is not an input of the model (its inputs: 'input')",
            ],
        ),
        (
            {"input": (4, 10, 8, 127)},
            [
                "c.npz: array 'input' has shape (4, 10, 8, 127); the model's input 'input' expects "
                "(samples (a multiple of 4), 10, 8, 128)"
            ],
        ),
        ({"input": (10, 8, 128)}, ["has shape (10, 8, 128); the model's input 'input' expects"]),
        (
            {"input": (6, 10, 8, 128)},
            ["array 'input' holds 6 samples; the model's input 'input' has a fixed batch size of 4"],
        ),
        ({"input": (0, 10, 8, 128)}, ["array 'input' holds no samples"]),
        (
            {"input": (4, 10, 8, 128), "extra": (1,)},
            ["array 'extra' is not an input of the model (its inputs: 'input')"],
        ),
    ],
    ids=["wrong-name", "wrong-shape", "wrong-rank", "not-whole-batches", "empty", "extra-array"],
)
def test_calibration_that_does_not_fit_the_model(
    tmp_path: Path, arrays: dict[str, tuple[int, ...]], messages: list[str]
) -> None:
    path = save(tmp_path / "c.npz", **{name: np.zeros(shape, np.float32) for name, shape in arrays.items()})
    with pytest.raises(CalibrationError) as caught:
        read_calibration(path, seed_inputs())
    assert isinstance(caught.value, DeconvError)
    text = str(caught.value)
    assert str(path) in text
    for message in messages:
        assert message in text


def test_calibration_names_every_missing_input_and_sample_mismatch(tmp_path: Path) -> None:
    missing = save(tmp_path / "m.npz", a=np.zeros((2, 3), np.float32))
    with pytest.raises(
        CalibrationError, match=r"m\.npz has no array named 'b' \(the model's input, shape \(samples, 3\)\)"
    ):
        read_calibration(missing, two_input_model())
    uneven = save(tmp_path / "u.npz", a=np.zeros((2, 3), np.float32), b=np.zeros((3, 3), np.float32))
    with pytest.raises(
        CalibrationError, match=r"u\.npz: the arrays hold different numbers of samples \('a': 2, 'b': 3\)"
    ):
        read_calibration(uneven, two_input_model())
    np.save(tmp_path / "one.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(CalibrationError, match="is a single .npy array; the model has 2 inputs"):
        read_calibration(tmp_path / "one.npy", two_input_model())


def test_calibration_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match=r"cannot read calibration data .*nowhere\.npz: not found"):
        read_calibration(tmp_path / "nowhere.npz", seed_inputs())
    with pytest.raises(CalibrationError, match="is a directory, not a regular file"):
        read_calibration(tmp_path, seed_inputs())
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CalibrationError, match="is not an .npz archive nor an .npy array"):
        read_calibration(tmp_path / "text.npz", seed_inputs())


def test_random_calibration_needs_fixed_sizes() -> None:
    with pytest.raises(
        CalibrationError,
        match=r"input 'input' has shape \(samples, None, None, 2\), with dynamic sizes: random calibration "
        r"data needs fixed sizes; give --calibration data.npz",
    ):
        random_calibration(inputs_of("dilated_with_weights.yaml"))
    dcgan = random_calibration(inputs_of("dcgan_generator.yaml"), count=20)  # dynamic batch: slices of 8
    assert [f["latent_features"].shape for f in dcgan] == [(8, 7, 7, 256)] * 3
    seed = random_calibration(seed_inputs(), count=10)  # fixed batch 4: whole batches
    assert [f["input"].shape for f in seed] == [(4, 10, 8, 128)] * 3
    again = random_calibration(seed_inputs(), count=10)
    assert all(np.array_equal(a["input"], b["input"]) for a, b in zip(seed, again, strict=True))
