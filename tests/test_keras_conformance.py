"""Conformance against real Keras for whole models: random Sequential and Functional decoders
(tests/keras_networks.py) saved as `.keras`, compiled, run on onnxruntime's CPU provider and compared
with the Keras model's own output to 1e-5 of the output's scale; the two TensorFlow-tutorial
networks through the CLI; and the other file forms (legacy .h5, to_json + weights, one layer's
config + npz) with the same numbers.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

# Keras 3.15's Variable.numpy() (used by save and get_weights) trips numpy 2's __array__ copy check.
pytestmark = [
    pytest.mark.keras,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
if importlib.util.find_spec("keras") is None or importlib.util.find_spec("jax") is None:
    pytest.skip("needs keras and jax (pip install -e '.[test]')", allow_module_level=True)

import jax  # noqa: E402
import keras  # noqa: E402

from deconv_compiler.keras_model import load_keras_model  # noqa: E402
from tests import keras_networks as nets  # noqa: E402
from tests.onnx_run import assert_close, compile_graph, run_all  # noqa: E402
from tests.test_cli import _executable  # noqa: E402

N_NETWORKS = 200  # even seeds Sequential, odd seeds Functional
CUDA_EVERY = 5  # every 5th network is also compiled for the CUDA target (symmetric pads + Slice)


def keras_outputs(model: keras.Model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The model's inference output, jit-compiled as `predict` runs it (op-by-op is 6x slower)."""

    def call(*xs: np.ndarray) -> object:
        return model(list(xs) if len(xs) > 1 else xs[0], training=False)

    result = jax.jit(call)(*inputs)
    return [np.asarray(y) for y in (result if isinstance(result, (list, tuple)) else [result])]


def compare(
    onnx_model: onnx.ModelProto, expected: list[np.ndarray], inputs: list[np.ndarray], context: str
) -> None:
    actual = run_all(onnx_model, *inputs)
    assert len(actual) == len(expected), context
    for i, (got, want) in enumerate(zip(actual, expected, strict=True)):
        assert_close(got, want, context=f"{context} output {i}")


@pytest.mark.parametrize("seed", range(N_NETWORKS), ids=lambda seed: f"net{seed:03d}")
def test_random_networks_match_keras(seed: int, tmp_path: Path) -> None:
    network = nets.random_network(seed)
    path = tmp_path / "model.keras"
    network.model.save(path)
    expected = keras_outputs(network.model, network.inputs)
    graph = load_keras_model(path)
    assert [v.name for v in graph.inputs] == [t.name.split(":")[0] for t in network.model.inputs] or len(
        graph.inputs
    ) == 1
    compare(compile_graph(graph), expected, network.inputs, network.id)
    if seed % CUDA_EVERY == 0:
        compare(compile_graph(graph, target="cuda"), expected, network.inputs, f"{network.id} (cuda)")
    if seed % CUDA_EVERY == 1:  # the plain ConvTranspose graph, whatever auto would pick
        compare(compile_graph(graph, strategy="native"), expected, network.inputs, f"{network.id} (native)")


def test_the_random_networks_cover_what_they_must() -> None:
    """The generator must keep exercising every supported layer and both model forms."""
    classes: collections.Counter[str] = collections.Counter()
    features: collections.Counter[str] = collections.Counter()
    for seed in range(N_NETWORKS):
        network = nets.random_network(seed)
        model = network.model
        classes.update(type(layer).__name__ for layer in model.layers)
        features["functional" if seed % 2 else "sequential"] += 1
        features["multi-input"] += len(model.inputs) > 1
        features["multi-output"] += len(model.outputs) > 1
        features["channels_first"] += "first" in network.id
    required = {
        "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "Dense", "Reshape", "Flatten",
        "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax", "Dropout",
        "GaussianNoise", "GaussianDropout", "Add", "Concatenate", "ZeroPadding1D", "ZeroPadding2D",
        "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D",
        "UpSampling3D",
    }  # fmt: skip
    missing = {name for name in required if classes[name] < 3}
    assert not missing, f"layer classes seen fewer than 3 times: {sorted(missing)} ({dict(classes)})"
    assert features["sequential"] >= 100 and features["functional"] >= 100
    assert features["multi-input"] >= 5 and features["multi-output"] >= 5 and features["channels_first"] >= 30


# --- the tutorial networks ------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(nets.TUTORIALS))
def tutorial(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, keras.Model]:
    name = request.param
    model = nets.TUTORIALS[name]()
    nets.randomize_weights(model, np.random.default_rng(11))
    path = tmp_path_factory.mktemp(name) / f"{name}.keras"
    model.save(path)
    return name, path, model


def test_tutorial_networks_compile_through_the_cli_and_match_keras(
    tutorial: tuple[str, Path, keras.Model], tmp_path: Path
) -> None:
    name, path, model = tutorial
    out = tmp_path / f"{name}.onnx"
    executable = _executable()
    if executable is None:
        pytest.skip("the deconvc executable is not installed")
    result = subprocess.run(
        [executable, "compile", str(path), "-o", str(out)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    onnx_model = onnx.load(out)
    x = np.random.default_rng(3).standard_normal((4, *model.inputs[0].shape[1:])).astype(np.float32)
    compare(onnx_model, keras_outputs(model, [x]), [x], name)
    ops = collections.Counter(node.op_type for node in onnx_model.graph.node)
    # auto: the stride-1 layers become Conv; one Transpose pair at the edges, none between
    assert ops["ConvTranspose"] + ops["Conv"] == 3 and ops["Transpose"] == 2, ops
    assert ops["BatchNormalization"] == 0 and ops["Mul"] == 0, ops  # every BatchNormalization folded


# --- the other file forms ---------------------------------------------------------------------------


def test_legacy_h5_written_by_keras_matches(tutorial: tuple[str, Path, keras.Model], tmp_path: Path) -> None:
    from keras.src.legacy.saving import legacy_h5_format

    name, _, model = tutorial
    path = tmp_path / f"{name}.h5"
    legacy_h5_format.save_model_to_hdf5(model, str(path))
    x = np.random.default_rng(4).standard_normal((2, *model.inputs[0].shape[1:])).astype(np.float32)
    graph = load_keras_model(path)
    assert graph.format == "h5"
    compare(compile_graph(graph), keras_outputs(model, [x]), [x], f"{name} (.h5)")


@pytest.mark.parametrize("seed", [1, 3, 8, 13])
def test_config_json_with_weights_h5_matches(seed: int, tmp_path: Path) -> None:
    network = nets.random_network(seed)
    config, weights = tmp_path / "model.json", tmp_path / "model.weights.h5"
    config.write_text(network.model.to_json())
    network.model.save_weights(weights)
    graph = load_keras_model(config, weights)
    assert graph.format == "json"
    expected = keras_outputs(network.model, network.inputs)
    compare(compile_graph(graph), expected, network.inputs, f"{network.id} (json + weights.h5)")


def test_one_layer_config_with_npz_matches(tmp_path: Path) -> None:
    layer = keras.layers.Conv2DTranspose(5, (3, 2), strides=(2, 3), padding="same", activation="gelu")
    x = np.random.default_rng(5).standard_normal((2, 4, 6, 3)).astype(np.float32)
    expected = np.asarray(layer(x))
    kernel, bias = layer.get_weights()
    (tmp_path / "layer.json").write_text(
        json.dumps({"class_name": "Conv2DTranspose", "config": layer.get_config()})
    )
    np.savez(tmp_path / "layer.npz", kernel=kernel, bias=bias)
    graph = load_keras_model(tmp_path / "layer.json", tmp_path / "layer.npz")
    assert graph.inputs[0].shape == (None, None, None, 3)  # only the channels are known
    compare(compile_graph(graph), [expected], [x], "one layer (json + npz)")
