"""Saved Keras files through `deconvc`: what is read (weights mapped by class and position, not by
the user's names) and what is refused — each refusal a located message, exit code 2, no traceback
and no output file."""

from __future__ import annotations

import importlib.util
import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

# Keras 3.15's Variable.numpy() (used by save and get_weights) trips numpy 2's __array__ copy check.
pytestmark = [
    pytest.mark.keras,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
if importlib.util.find_spec("keras") is None or importlib.util.find_spec("jax") is None:
    pytest.skip("needs keras and jax (pip install -e '.[test]')", allow_module_level=True)

import keras  # noqa: E402
from keras import layers  # noqa: E402

from deconv_compiler.keras_file import read_saved_model  # noqa: E402
from tests.test_cli import assert_clean_failure, invoke  # noqa: E402


@keras.saving.register_keras_serializable(package="my_pkg")
class Wobble(layers.Layer):
    def call(self, x: object) -> object:
        return x


def small_decoder(name: str = "decoder") -> keras.Model:
    inp = keras.Input((3, 3, 2), name="z")
    # user names that do not match the class-and-position keys of the weights file
    first = layers.Conv2DTranspose(4, 2, strides=2, name="zzz")(inp)
    second = layers.Conv2DTranspose(3, 3, padding="same", name="aaa")(first)
    return keras.Model(inp, second, name=name)


@pytest.fixture(scope="module")
def decoder_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, Path]:
    model = small_decoder()
    path = tmp_path_factory.mktemp("decoder") / "decoder.keras"
    model.save(path)
    return model, path


def test_weights_are_mapped_by_class_and_position(decoder_file: tuple[keras.Model, Path]) -> None:
    model, path = decoder_file
    saved = read_saved_model(path)
    assert saved.format == "keras" and saved.keras_version == keras.__version__
    for layer in model.layers[1:]:
        expected = [np.asarray(v.value) for v in layer.weights]
        assert len(saved.weights[layer.name]) == len(expected)
        for got, want in zip(saved.weights[layer.name], expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_validate_and_compile_a_keras_file(decoder_file: tuple[keras.Model, Path], tmp_path: Path) -> None:
    _, path = decoder_file
    result = invoke("validate", path)
    assert result.exit_code == 0, result.output
    assert "2 layers, input (None, 3, 3, 2) -> output (None, 6, 6, 3)" in result.stdout
    out = tmp_path / "decoder.onnx"
    result = invoke("compile", path, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.exists()
    result = invoke("run", out, "--random", "--shape", "2,3,3,2")
    assert result.exit_code == 0, result.output and "output (2, 6, 6, 3)" in result.stdout


def _save(model: keras.Model, path: Path) -> Path:
    model.save(path)
    return path


def _edit_weights(source: Path, target: Path, dataset: str, value: np.ndarray) -> Path:
    """A copy of a .keras archive with one weight dataset replaced."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    buffer = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buffer, "r+") as h5:
        del h5[dataset]
        h5[dataset] = value
    members["model.weights.h5"] = buffer.getvalue()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def _refusal_cases(tmp: Path, decoder: Path) -> dict[str, tuple[Path, list[str], str]]:
    seq = keras.Sequential
    inp = keras.Input((4,))
    nested_inner = seq([keras.Input((5, 2)), layers.LSTM(3, name="rnn")], name="inner")
    truncated = tmp / "truncated.keras"
    truncated.write_bytes(decoder.read_bytes()[:300])
    garbage = tmp / "garbage.keras"
    garbage.write_bytes(b"\x00\x01 this is not a model \xff" * 10)
    no_weights = tmp / "model.json"
    no_weights.write_text(small_decoder().to_json())
    return {
        "lambda": (
            _save(seq([inp, layers.Lambda(lambda t: t * 2, name="doubler")]), tmp / "lambda.keras"),
            [],
            "doubler (Lambda): Lambda layers hold Python code",
        ),
        "custom-object": (
            _save(seq([keras.Input((4,)), Wobble(name="wob")]), tmp / "custom.keras"),
            [],
            "wob (Wobble): a custom object ('my_pkg>Wobble')",
        ),
        "unsupported": (
            _save(seq([keras.Input((5, 2)), layers.LSTM(3, name="rnn")]), tmp / "rnn.keras"),
            [],
            "rnn (LSTM): layer class 'LSTM' is not supported\nsupported layers: InputLayer, Conv1DTranspose",
        ),
        "nested": (
            _save(seq([keras.Input((5, 2)), nested_inner]), tmp / "nested.keras"),
            [],
            "inner/rnn (LSTM): layer class 'LSTM' is not supported\nsupported layers: InputLayer",
        ),
        "truncated": (truncated, [], "is not a readable .keras archive"),
        "garbage": (garbage, [], "neither a .keras archive, an .h5 file nor a Keras config JSON"),
        "wrong-kernel": (
            _edit_weights(
                decoder, tmp / "wrong.keras", "layers/conv2d_transpose_1/vars/0", np.zeros((3, 3, 3, 5))
            ),
            [],
            "aaa (Conv2DTranspose).weights[0]: kernel has shape (3, 3, 3, 5), expected (3, 3, 3, 4)",
        ),
        "config-without-weights": (
            no_weights,
            [],
            "is a Keras config without weights: pass the weights file",
        ),
        "weights-for-an-archive": (
            decoder,
            ["--weights", str(decoder)],
            "holds its own weights: drop --weights",
        ),
    }


@pytest.fixture(scope="module")
def refusal_cases(
    tmp_path_factory: pytest.TempPathFactory, decoder_file: tuple[keras.Model, Path]
) -> dict[str, tuple[Path, list[str], str]]:
    return _refusal_cases(tmp_path_factory.mktemp("refusals"), decoder_file[1])


REFUSALS = [
    "lambda", "custom-object", "unsupported", "nested", "truncated", "garbage", "wrong-kernel",
    "config-without-weights", "weights-for-an-archive",
]  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_exit_2_with_a_located_message(
    case: str, refusal_cases: dict[str, tuple[Path, list[str], str]], tmp_path: Path
) -> None:
    path, extra, fragment = refusal_cases[case]
    out = tmp_path / "out.onnx"
    result = invoke("compile", path, *extra, "-o", out)
    assert_clean_failure(result)
    assert fragment in result.stderr, result.stderr
    assert result.stderr.startswith(str(path)), result.stderr  # the file is named first
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_tf_keras_2_h5_file(tmp_path: Path) -> None:
    """Written by hand the way tf.keras 2.x writes full-model .h5 files."""
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(3, 3, 2, 4)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 5, 5, 4], "dtype": "float32",
                                                         "sparse": False, "ragged": False, "name": "input_1"}},
                {"class_name": "Conv2DTranspose", "config": {
                    "name": "conv2d_transpose", "trainable": True, "dtype": "float32", "filters": 2,
                    "kernel_size": [3, 3], "strides": [2, 2], "padding": "valid", "data_format": "channels_last",
                    "dilation_rate": [1, 1], "groups": 1, "activation": "relu", "use_bias": True,
                    "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
                    "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": None,
                    "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None,
                    "bias_constraint": None, "output_padding": None}},
            ],
        },
    }  # fmt: skip
    path = tmp_path / "tf2.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = json.dumps(config).encode()
        h5.attrs["keras_version"] = b"2.15.0"
        weights = h5.create_group("model_weights")
        weights.attrs["layer_names"] = [b"input_1", b"conv2d_transpose"]
        weights.create_group("input_1").attrs["weight_names"] = []
        group = weights.create_group("conv2d_transpose")
        group.attrs["weight_names"] = [b"conv2d_transpose/kernel:0", b"conv2d_transpose/bias:0"]
        group["conv2d_transpose/kernel:0"] = kernel
        group["conv2d_transpose/bias:0"] = bias
    layer = layers.Conv2DTranspose(2, 3, strides=2, activation="relu")
    x = rng.normal(size=(2, 5, 5, 4)).astype(np.float32)
    layer.build(x.shape)
    layer.set_weights([kernel, bias])
    out = tmp_path / "tf2.onnx"
    result = invoke("compile", path, "-o", out)
    assert result.exit_code == 0, result.output
    import onnx

    from tests.onnx_run import assert_close, run_all

    (y,) = run_all(onnx.load(out), x)
    assert_close(y, np.asarray(layer(x)), context="tf.keras 2 .h5")


def test_an_archive_from_before_keras_3_15_without_output_padding(
    decoder_file: tuple[keras.Model, Path], tmp_path: Path
) -> None:
    """Keras 3 before 3.15 wrote no `output_padding` key for Conv*DTranspose: it means None."""
    import onnx

    from tests.onnx_run import assert_close, run_all

    model, path = decoder_file
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    for entry in config["config"]["layers"]:
        entry["config"].pop("output_padding", None)
    members["config.json"] = json.dumps(config).encode()
    members["metadata.json"] = json.dumps({"keras_version": "3.3.3"}).encode()
    old = tmp_path / "old.keras"
    with zipfile.ZipFile(old, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    out = tmp_path / "old.onnx"
    result = invoke("compile", old, "-o", out)
    assert result.exit_code == 0, result.output
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 2)).astype(np.float32)
    (y,) = run_all(onnx.load(out), x)
    assert_close(y, np.asarray(model(x)), context="archive without output_padding")


def test_training_true_in_a_saved_call_compiles_with_inference_semantics_and_a_warning(
    tmp_path: Path,
) -> None:
    """BatchNormalization and Dropout called with training=True in the saved graph: the compiled
    model computes model(x, training=False), and the CLI says so once per layer."""
    inp = keras.Input((6, 3), name="x")
    normed = layers.BatchNormalization(name="bn")(inp, training=True)
    out = layers.Dropout(0.5, name="drop")(normed, training=True)
    model = keras.Model(inp, out)
    bn = model.get_layer("bn")
    bn.set_weights([np.full(3, 2.0), np.full(3, 0.5), np.full(3, 0.25), np.full(3, 4.0)])
    path = _save(model, tmp_path / "train.keras")
    result = invoke("compile", path, "-o", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and all("training=True" in w and "inference semantics" in w for w in warnings)
    assert "'bn' (BatchNormalization)" in warnings[0] and "'drop' (Dropout)" in warnings[1]
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((2, 6, 3)).astype(np.float32)
    (got,) = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x})
    expected = 2.0 * (x - 0.25) / np.sqrt(4.0 + 1e-3) + 0.5  # moving statistics, no dropout
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_refusals_inside_nested_models_and_of_operations_name_them(tmp_path: Path) -> None:
    """One line per problem, named by its path through the nested models, or by its keras.ops op;
    what is supported is listed once, after them; the summary line ends it."""
    inner_in = keras.Input((5, 2))
    inner = keras.Model(inner_in, layers.LSTM(2, return_sequences=True, name="rnn")(inner_in), name="block")
    inp = keras.Input((5, 2), name="x")
    mean = keras.ops.mean(inner(inp), axis=1)
    other = layers.GRU(2, name="gru")(inp)
    path = _save(keras.Model(inp, [mean, other]), tmp_path / "refused.keras")
    result = invoke("compile", path, "-o", tmp_path / "m.onnx")
    assert_clean_failure(result)
    lines = result.stderr.strip().splitlines()
    assert [line.split(": ", 1)[1] for line in lines[:3]] == [
        "block/rnn (LSTM): layer class 'LSTM' is not supported",
        "mean (keras.ops.mean): keras.ops.mean is not supported",
        "gru (GRU): layer class 'GRU' is not supported",
    ], lines
    assert lines[3].startswith("supported layers: InputLayer, Conv1DTranspose") and "LSTM" not in lines[3]
    assert lines[4].startswith("supported operations: keras.ops.add")
    assert lines[5:] == ["error: 3 problems found; nothing was written"]
    assert not (tmp_path / "m.onnx").exists()
