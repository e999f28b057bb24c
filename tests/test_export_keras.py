"""`deconvc export` from a saved Keras model, checked against Keras itself: fixed shapes for the
mobile target in ORT format, fp16 in a Triton repository, and the Keras version in the metadata."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

pytestmark = [
    pytest.mark.keras,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
if importlib.util.find_spec("keras") is None or importlib.util.find_spec("jax") is None:
    pytest.skip("needs keras and jax (pip install -e '.[test]')", allow_module_level=True)

import keras  # noqa: E402
from keras import layers  # noqa: E402

from tests.onnx_run import assert_close  # noqa: E402
from tests.test_cli import invoke  # noqa: E402
from tests.test_export import run_file, scale_error  # noqa: E402


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, Path]:
    """Any image size in; an encoder conv, then two transposed convolutions."""
    keras.utils.set_random_seed(5)
    image = keras.Input((None, None, 3), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(image)
    x = layers.Conv2DTranspose(6, 4, strides=2, padding="same", activation="relu")(x)
    y = layers.Conv2DTranspose(3, 3, padding="same", activation="sigmoid", name="decoded")(x)
    model = keras.Model(image, y, name="autoencoder")
    path = tmp_path_factory.mktemp("keras") / "autoencoder.keras"
    model.save(path)
    return model, path


def test_mobile_ort_with_fixed_shape_matches_keras(
    autoencoder: tuple[keras.Model, Path], tmp_path: Path
) -> None:
    model, path = autoencoder
    out = tmp_path / "phone"
    result = invoke(
        "export", path, "-o", out, "--format", "ort", "--target", "mobile", "--fix-shape", "1,32,32,3",
        "--output-names", "restored", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    nnapi = next(ep for ep in report["mobile"]["eps"] if ep["ep"] == "NNAPI")
    assert nnapi["nodes"] == nnapi["total"] and nnapi["dynamic_shape_nodes"] == 0
    x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    (y,) = run_file(out / "autoencoder.ort", {"image": x})
    assert y.shape == (1, 32, 32, 3)
    assert_close(y, np.asarray(model.predict(x, verbose=0)))


def test_fp16_triton_repository_matches_keras(autoencoder: tuple[keras.Model, Path], tmp_path: Path) -> None:
    from tests.test_triton_config import assert_agrees, parse

    model, path = autoencoder
    repository = tmp_path / "repository"
    result = invoke(
        "export", path, "-o", repository, "--triton", "--precision", "fp16", "--dim-names", "N,H,W"
    )
    assert result.exit_code == 0, result.output
    exported = onnx.load(repository / "autoencoder" / "1" / "model.onnx")
    config = parse((repository / "autoencoder" / "config.pbtxt").read_text())
    assert_agrees(config, exported, batching=True, max_batch_size=config.max_batch_size)
    assert list(config.input[0].dims) == [-1, -1, 3]
    source = json.loads({p.key: p.value for p in exported.metadata_props}["deconv_compiler.source"])
    assert source["kind"] == "keras" and source["keras_version"] == keras.__version__
    x = np.random.default_rng(1).random((2, 24, 40, 3), dtype=np.float32)
    (y,) = run_file(repository / "autoencoder" / "1" / "model.onnx", {"image": x})
    assert scale_error(y, np.asarray(model.predict(x, verbose=0))) < 1e-2


def test_int8_with_external_data_matches_keras(autoencoder: tuple[keras.Model, Path], tmp_path: Path) -> None:
    model, path = autoencoder
    samples = np.random.default_rng(2).random((8, 16, 16, 3), dtype=np.float32)
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, image=samples)
    out = tmp_path / "int8"
    result = invoke(
        "export", path, "-o", out, "--precision", "int8", "--calibration", calibration,
        "--fix-shape", "1,16,16,3", "--external-data-above", "1KiB", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["external_data"] and sorted(p.name for p in out.iterdir()) == [
        "autoencoder.onnx",
        "autoencoder.onnx.data",
    ]
    assert report["error_vs_fp32"]["max_abs"] / report["error_vs_fp32"]["scale"] < 0.05
    x = samples[:1]
    (y,) = run_file(out / "autoencoder.onnx", {"image": x})
    assert scale_error(y, np.asarray(model.predict(x, verbose=0))) < 0.05
