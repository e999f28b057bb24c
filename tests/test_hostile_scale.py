"""Hostile scale: time and memory bounded in the number of layers, calls and sizes.

Each case is a named test that writes its Keras model (a `.keras` archive made with zipfile and
h5py, no Keras) or spec on the fly, runs the real CLI and asserts the exit code and the message;
where time or memory is the point, in a subprocess, with a generous time bound (a sanity limit,
never a benchmark) and the subprocess's peak memory; elsewhere in process (click's runner).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from deconv_compiler.cli.main import main

from deconv_compiler.limits import MAX_LAYERS

# Runs the CLI as its only child and prints that child's peak resident set (KiB, Linux) last.
_MEASURED = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:])\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(done.returncode)\n"
)
_CLI = [sys.executable, "-c", "from deconv_compiler.cli.main import main; main()"]
MiB = 2**20


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str
    seconds: float = 0.0
    peak: int = 0  # bytes of resident memory at most (subprocess runs only)


def deconvc(*args: object, timeout: float = 120) -> Ran:
    """The CLI in a subprocess: its time and peak memory measured."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _MEASURED, *_CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    *lines, peak = done.stdout.splitlines()
    return Ran(
        done.returncode, "\n".join(lines), done.stderr, time.perf_counter() - started, int(peak) * 1024
    )


def invoke(*args: object) -> Ran:
    """The CLI in this process (click's runner): the cases where only the answer matters."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    return Ran(result.exit_code, result.stdout, result.stderr)


# --- Keras configs and archives ---------------------------------------------------------------


def layer(class_name: str, name: str, *calls: list[Any], **config: Any) -> dict[str, Any]:
    """A layer entry; each of `calls` is the list of tensors one call reads (Functional models)."""
    entry: dict[str, Any] = {
        "module": "keras.layers",
        "class_name": class_name,
        "config": {"name": name, **config},
    }
    if calls:
        entry["name"] = name
        entry["inbound_nodes"] = [{"args": [c[0] if len(c) == 1 else c], "kwargs": {}} for c in calls]
    return entry


def tensor(layer_name: str, call: int = 0) -> dict[str, Any]:
    return {"class_name": "__keras_tensor__", "config": {"keras_history": [layer_name, call, 0]}}


def input_layer(shape: list[int | None], functional: bool = False) -> dict[str, Any]:
    entry = layer("InputLayer", "input_layer", batch_shape=[None, *shape])
    return {**entry, "name": "input_layer", "inbound_nodes": []} if functional else entry


def sequential(layers: list[dict[str, Any]], name: str = "seq") -> dict[str, Any]:
    return {"module": "keras", "class_name": "Sequential", "config": {"name": name, "layers": layers}}


def functional(layers: list[dict[str, Any]], outputs: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "module": "keras",
        "class_name": "Functional",
        "config": {
            "name": "model",
            "layers": layers,
            "input_layers": [["input_layer", 0, 0]],
            "output_layers": [[name, call, 0] for name, call in outputs],
        },
    }


def archive(path: Path, config: dict[str, Any], weights: dict[str, list[np.ndarray]] | None = None) -> Path:
    """A Keras 3 `.keras` file: `weights` by their key in `model.weights.h5` (`layers/conv2d`)."""
    data = io.BytesIO()
    with h5py.File(data, "w") as h5:
        h5.create_group("layers")
        for key, arrays in (weights or {}).items():
            variables = h5.create_group(f"{key}/vars")
            for index, array in enumerate(arrays):
                variables.create_dataset(str(index), data=array)
    with zipfile.ZipFile(path, "w") as files:
        files.writestr("config.json", json.dumps(config))
        files.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        files.writestr("model.weights.h5", data.getvalue())
    return path


def relu_chain(count: int) -> dict[str, Any]:
    return sequential([input_layer([4]), *(layer("ReLU", f"relu_{i}") for i in range(count))])


# --- many layers and calls ----------------------------------------------------------------------


def test_a_100000_layer_sequential_validates_and_compiles_in_seconds(tmp_path: Path) -> None:
    """Compiling validates first: one run covers both (validate took 11 s, compile over 10 minutes)."""
    model = archive(tmp_path / "deep.keras", relu_chain(100_000))
    out = tmp_path / "deep.onnx"
    compiled = deconvc("compile", model, "-o", out)
    assert compiled.code == 0, compiled.stderr
    assert "100000 layers, input (None, 4) -> output (None, 4)" in compiled.stdout
    assert out.stat().st_size > 100_000 * 20
    assert compiled.seconds < 90 and compiled.peak < 1500 * MiB


def test_a_mebibyte_of_empty_layer_objects_is_refused_before_anything_is_parsed(tmp_path: Path) -> None:
    config = sequential([input_layer([4])])
    config["config"]["layers"] += [{}] * 260_000  # a mebibyte of `{}, `
    model = archive(tmp_path / "empty.keras", config)
    assert model.stat().st_size < 2 * MiB
    ran = deconvc("validate", model)
    assert ran.code == 2
    assert f"config.layers: the model has 260,001 layers; the limit is {MAX_LAYERS:,}" in ran.stderr
    assert "error: 1 problem found" in ran.stderr
    assert ran.seconds < 30 and ran.peak < 300 * MiB  # was 33 s and 700 MB


def test_thousands_of_unsupported_layers_are_listed_up_to_a_screenful(tmp_path: Path) -> None:
    config = sequential([input_layer([4]), *(layer("LSTM", f"lstm_{i}") for i in range(1000))])
    ran = invoke("validate", archive(tmp_path / "lstm.keras", config))
    assert ran.code == 2
    lines = ran.stderr.splitlines()
    assert lines[0].endswith("lstm_0 (LSTM): layer class 'LSTM' is not supported")
    assert lines[99].endswith("lstm_99 (LSTM): layer class 'LSTM' is not supported")
    assert lines[100].endswith(
        "config.layers: 900 more layers are refused (unsupported, custom or Lambda); the first 100 are listed"
    )
    assert lines[-1] == "error: 101 problems found"


def test_too_many_recorded_calls_of_one_layer_are_refused(tmp_path: Path) -> None:
    relu = layer("ReLU", "relu", [tensor("input_layer")])
    relu["inbound_nodes"] = [[["input_layer", 0, 0, {}]]] * (MAX_LAYERS + 1)  # tf.keras 2's short form
    config = functional([input_layer([4], True), relu], [("relu", 0)])
    ran = deconvc("validate", archive(tmp_path / "calls.keras", config))
    assert ran.code == 2
    assert f"the model has {MAX_LAYERS + 1:,} layer calls; the limit is {MAX_LAYERS:,}" in ran.stderr


def test_a_nested_model_inlined_past_the_call_limit_is_refused(tmp_path: Path) -> None:
    """300 calls of a 1,000-layer block: a small config, 300,000 layer calls once inlined. Each
    call fails at its first layer: no node is made, but reading the block still costs."""
    first = layer("ReLU", "relu_0", negative_slope=-1.0)
    rest = (layer("ReLU", f"relu_{i}") for i in range(1, 1000))
    block = sequential([input_layer([4]), first, *rest], name="block")
    calls = [[tensor("input_layer")]] * 300
    block = {**block, "name": "block", "inbound_nodes": [{"args": c, "kwargs": {}} for c in calls]}
    config = functional([input_layer([4], True), block], [("block", 299)])
    ran = deconvc("validate", archive(tmp_path / "inlined.keras", config))
    assert ran.code == 2
    assert f"the model makes more than {MAX_LAYERS:,} layer calls (nested models inlined)" in ran.stderr
    assert ran.seconds < 60


def test_one_layer_called_20000_times_listed_backwards_is_scheduled_in_linear_time(tmp_path: Path) -> None:
    """Call i reads call i + 1 and the last reads the input: Keras' loader finds one runnable call
    per pass over the calls (20,000 passes, 2e8 checks); the schedule is computed once."""
    count = 20_000
    calls = [*([tensor("relu", i + 1)] for i in range(count - 1)), [tensor("input_layer")]]
    config = functional([input_layer([4], True), layer("ReLU", "relu", *calls)], [("relu", 0)])
    model = archive(tmp_path / "chain.keras", config)
    out = tmp_path / "chain.onnx"
    ran = deconvc("compile", model, "-o", out)
    assert ran.code == 0, ran.stderr
    graph = onnx.load(out).graph
    assert [n.name for n in graph.node[:2]] == ["relu/Relu", "relu/Relu_1"]
    assert graph.node[0].input == ["input_layer"]
    assert ran.seconds < 60  # 40,000 calls took 555 s


def test_five_thousand_outputs_are_named_in_linear_time(tmp_path: Path) -> None:
    count = 5000
    layers = [
        input_layer([4], True),
        *(layer("ReLU", f"r{i}", [tensor("input_layer")]) for i in range(count)),
    ]
    config = functional(layers, [(f"r{i}", 0) for i in range(count)])
    out = tmp_path / "outputs.onnx"
    ran = deconvc("compile", archive(tmp_path / "outputs.keras", config), "-o", out)
    assert ran.code == 0, ran.stderr
    assert len(onnx.load(out).graph.output) == count
    assert ran.seconds < 60  # was 29 s


# --- shared weights ------------------------------------------------------------------------------

CHANNELS = 256  # a 3x3 256 -> 256 kernel: 2.4 MB


def _shared_conv(calls: int, with_batch_norm: bool) -> tuple[dict[str, Any], dict[str, list[np.ndarray]]]:
    """One Conv2D (and one BatchNormalization after it) called `calls` times in a chain."""
    last = "bn" if with_batch_norm else "conv"
    conv_inputs = [[tensor("input_layer")], *([tensor(last, i)] for i in range(calls - 1))]
    conv = layer("Conv2D", "conv", *conv_inputs, filters=CHANNELS, kernel_size=[3, 3], padding="same")
    bn = layer("BatchNormalization", "bn", *([tensor("conv", i)] for i in range(calls)))
    layers = [input_layer([8, 8, CHANNELS], True), conv, *([bn] if with_batch_norm else [])]
    rng = np.random.default_rng(0)
    weights = {
        "layers/conv2d": [
            (rng.standard_normal((3, 3, CHANNELS, CHANNELS)) * 0.02).astype(np.float32),
            rng.standard_normal(CHANNELS).astype(np.float32),
        ]
    }
    if with_batch_norm:
        gamma, beta, mean = (rng.standard_normal(CHANNELS).astype(np.float32) for _ in range(3))
        weights["layers/batch_normalization"] = [gamma, beta, mean, np.ones(CHANNELS, np.float32)]
    return functional(layers, [(last, calls - 1)]), weights


@pytest.mark.parametrize("with_batch_norm", [False, True], ids=["conv", "conv+batch_norm"])
def test_one_conv_called_300_times_holds_its_weights_once(tmp_path: Path, with_batch_norm: bool) -> None:
    config, weights = _shared_conv(300, with_batch_norm)
    out = tmp_path / "shared.onnx"
    ran = deconvc("compile", archive(tmp_path / "shared.keras", config, weights), "-o", out)
    assert ran.code == 0, ran.stderr
    weight_bytes = 9 * CHANNELS * CHANNELS * 4
    assert out.stat().st_size < 2 * weight_bytes  # was 300 copies: 708 MB
    graph = onnx.load(out).graph
    kernels = [i for i in graph.initializer if len(i.dims) == 4]
    assert [k.name for k in kernels] == ["conv/kernel"]
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 300 and {n.input[1] for n in convs} == {"conv/kernel"}
    assert not [n for n in graph.node if n.op_type in ("BatchNormalization", "Mul")]  # folded, once
    assert ran.peak < 400 * MiB  # was 775 MB (and 6.7 GB for a 300-call model in the wild)


def test_shared_calls_fold_and_compute_like_the_reference(tmp_path: Path) -> None:
    config, weights = _shared_conv(3, with_batch_norm=True)
    ran = invoke("check", archive(tmp_path / "shared.keras", config, weights))
    assert ran.code == 0, ran.stderr
    assert "PASS" in ran.stdout


def test_a_nested_model_called_twice_holds_its_weights_once(tmp_path: Path) -> None:
    block = sequential(
        [input_layer([6, 6, 8]), layer("Conv2D", "conv", filters=8, kernel_size=[3, 3], padding="same")],
        name="block",
    )
    block = {**block, "name": "block"}
    block["inbound_nodes"] = [
        {"args": [tensor("input_layer")], "kwargs": {}},
        {"args": [tensor("block", 0)], "kwargs": {}},
    ]
    config = functional([input_layer([6, 6, 8], True), block], [("block", 1)])
    rng = np.random.default_rng(1)
    kernel, bias = rng.standard_normal((3, 3, 8, 8)).astype(np.float32), np.ones(8, np.float32)
    model = archive(tmp_path / "nested.keras", config, {"layers/sequential/layers/conv2d": [kernel, bias]})
    out = tmp_path / "nested.onnx"
    ran = invoke("compile", model, "-o", out)
    assert ran.code == 0, ran.stderr
    graph = onnx.load(out).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert [n.name for n in convs] == ["block/conv/Conv", "block:1/conv/Conv"]
    assert convs[0].input[1:] == convs[1].input[1:]
    assert [i.name for i in graph.initializer if len(i.dims) == 4] == ["block/conv/kernel"]
    checked = invoke("check", model)
    assert checked.code == 0 and "PASS" in checked.stdout, checked.stderr


@pytest.mark.parametrize("strategy", ["native", "subpixel", "gemm"])
def test_a_transposed_conv_called_on_three_sizes_holds_its_weights_once(
    tmp_path: Path, strategy: str
) -> None:
    calls = [[tensor("input_layer")], [tensor("up", 0)], [tensor("up", 1)]]
    up = layer("Conv2DTranspose", "up", *calls, filters=8, kernel_size=[2, 2], strides=[2, 2])
    config = functional([input_layer([4, 4, 8], True), up], [("up", 2)])
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((2, 2, 8, 8)).astype(np.float32), rng.standard_normal(8).astype(np.float32)]
    model = archive(tmp_path / "up.keras", config, {"layers/conv2d_transpose": arrays})
    out = tmp_path / "up.onnx"
    ran = invoke("compile", model, "-o", out, "--strategy", strategy)
    assert ran.code == 0, ran.stderr
    graph = onnx.load(out).graph
    assert len(graph.initializer) == len({i.name for i in graph.initializer})
    weights = sorted(i.name for i in graph.initializer if "/kernel" in i.name or "/bias" in i.name)
    assert weights == ["up/bias", "up/kernel"]


# --- weights counted in the dtype the model holds them in ----------------------------------------


def _int8_conv(tmp_path: Path, kernel: np.ndarray) -> Path:
    conv = layer("Conv2D", "conv", filters=64, kernel_size=[3, 3], use_bias=False)
    return archive(
        tmp_path / "int8.keras", sequential([input_layer([5, 5, 64]), conv]), {"layers/conv2d": [kernel]}
    )


def test_an_int8_kernel_is_counted_as_the_float32_it_compiles_to(tmp_path: Path) -> None:
    kernel = np.ones((3, 3, 64, 64), np.int8)  # 36,864 bytes in the file, 147,456 as float32
    model = _int8_conv(tmp_path, kernel)
    ran = invoke("validate", model, "--max-weight-size", "100000")
    assert ran.code == 2
    assert (
        "conv (Conv2D): the weights up to this layer take 147,456 bytes as float32; "
        "the limit is 100,000 (--max-weight-size)"
    ) in ran.stderr


def test_an_int8_kernel_within_the_limit_is_widened_exactly(tmp_path: Path) -> None:
    kernel = np.random.default_rng(2).integers(-128, 128, (3, 3, 64, 64), dtype=np.int8)
    out = tmp_path / "int8.onnx"
    ran = invoke("compile", _int8_conv(tmp_path, kernel), "-o", out)
    assert ran.code == 0, ran.stderr
    (weight,) = [onnx.numpy_helper.to_array(i) for i in onnx.load(out).graph.initializer if len(i.dims) == 4]
    assert weight.dtype == np.float32
    np.testing.assert_array_equal(weight, np.transpose(kernel, (3, 2, 0, 1)).astype(np.float32))


def test_an_integer_kernel_beyond_float16_is_named(tmp_path: Path) -> None:
    conv = layer("Conv2D", "conv", filters=2, kernel_size=[1, 1], use_bias=False, dtype="float16")
    kernel = np.full((1, 1, 2, 2), 70000, np.int32)
    model = archive(
        tmp_path / "wide.keras", sequential([input_layer([3, 3, 2]), conv]), {"layers/conv2d": [kernel]}
    )
    ran = invoke("validate", model)
    assert ran.code == 2
    assert "conv (Conv2D): weight 0 holds values beyond the float16 range (|x| up to 7e+04)" in ran.stderr


# --- output lengths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            layer("UpSampling2D", "up", size=[2**30, 2**30]),
            "up (UpSampling2D): the output shape (None, None, None, 3) (at least (None, 1073741824, "
            "1073741824, 3)) holds 3,458,764,513,820,540,928 values per batch item (the limit is "
            "2,147,483,647)",
        ),
        (
            layer("ZeroPadding2D", "pad", padding=[[2**31 - 1, 2**31 - 1], [1, 1]]),
            "pad (ZeroPadding2D): the output shape (None, None, None, 3) (at least (None, 4294967295, 3, "
            "3)) has a size beyond 2,147,483,647 (int32)",
        ),
        (
            layer("UpSampling1D", "up", size=2**31 - 1),
            "up (UpSampling1D): the output shape (None, None, 3) (at least (None, 2147483647, 3)) holds "
            "6,442,450,941 values per batch item (the limit is 2,147,483,647)",
        ),
    ],
    ids=["upsampling-2^30", "zero-padding-2^31-1", "upsampling1d-int32-max"],
)
def test_dynamic_output_lengths_beyond_int32_are_refused(
    tmp_path: Path, entry: dict[str, Any], message: str
) -> None:
    shape: list[int | None] = [None, 3] if entry["class_name"].endswith("1D") else [None, None, 3]
    ran = invoke("validate", archive(tmp_path / "big.keras", sequential([input_layer(shape), entry])))
    assert ran.code == 2
    assert message in ran.stderr


def test_a_keras_ops_concatenation_past_int32_is_refused(tmp_path: Path) -> None:
    pad = layer("ZeroPadding1D", "pad", [tensor("input_layer")], padding=[2**30, 0])
    cat = {
        "module": "keras.src.ops.numpy",
        "class_name": "Concatenate",
        "config": {"name": "concatenate", "axis": 1},
        "name": "concatenate",
        "inbound_nodes": [{"args": [[tensor("pad"), tensor("pad")]], "kwargs": {}}],
    }
    config = functional([input_layer([None, 1], True), pad, cat], [("concatenate", 0)])
    ran = invoke("validate", archive(tmp_path / "cat.keras", config))
    assert ran.code == 2
    assert (
        "concatenate (keras.ops.concatenate): the output shape (None, None, 1) (at least (None, "
        "2147483650, 1)) has a size beyond 2,147,483,647 (int32)"
    ) in ran.stderr


def test_known_lengths_that_fit_are_still_accepted(tmp_path: Path) -> None:
    model = archive(
        tmp_path / "fits.keras",
        sequential([input_layer([None, 1]), layer("ZeroPadding1D", "pad", padding=[2**29, 2**29])]),
    )
    ran = invoke("validate", model)
    assert ran.code == 0, ran.stderr


# --- initializers --------------------------------------------------------------------------------


def test_an_orthogonal_initializer_too_large_to_factor_is_refused_before_the_work(tmp_path: Path) -> None:
    spec = tmp_path / "orthogonal.yaml"
    spec.write_text(
        "input: {shape: [null, 2, 2, 12000]}\n"
        "layers:\n"
        "  - {type: Conv2DTranspose, filters: 12000, kernel_size: 1, kernel_initializer: orthogonal}\n"
    )
    ran = deconvc("compile", spec, "-o", tmp_path / "o.onnx", "--max-weight-size", "1GiB")
    assert ran.code == 2
    assert (
        "error: the Orthogonal initializer of a 12000 x 12000 kernel matrix (shape (1, 1, 12000, 12000)) "
        "would take 1,728,000,000,000 steps of QR factorization; the limit is 8,589,934,592"
    ) in ran.stderr
    assert not (tmp_path / "o.onnx").exists()
    assert ran.seconds < 30 and ran.peak < 300 * MiB  # 12000 x 12000 ran past 10 minutes


def test_a_spec_with_more_layers_than_the_limit_is_refused_before_any_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule, at a small limit: a spec's layers cost about 0.2 ms each to locate (YAML's
    composer gives every field its line), so 200,001 of them take tens of seconds, linearly."""
    import deconv_compiler.spec

    monkeypatch.setattr(deconv_compiler.spec, "MAX_LAYERS", 10)
    layer = '{"type": "Conv2DTranspose", "filters": 1, "kernel_size": 1, "padding": "bogus"}'
    spec = tmp_path / "long.json"
    spec.write_text('{"input": {"shape": [1, 4, 4, 1]}, "layers": [' + ", ".join([layer] * 11) + "]}")
    result = CliRunner().invoke(main, ["validate", str(spec)])
    assert result.exit_code == 2
    assert "layers: has 11 layers; the limit is 10" in result.output
    assert "padding" not in result.output  # refused before any layer was validated
