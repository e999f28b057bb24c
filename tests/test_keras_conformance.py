"""Conformance against real Keras for whole saved models.

Random decoders (tests/keras_networks.py: 200 parts, half chains, half DAGs) travel in eight
Functional *bundles* of 25 independent branches each, plus one chain per bundle as a real
keras.Sequential model. Each network is built, saved as `.keras` and jit-compiled by Keras once per
session (`networks`). Its file is read back (input and output names and order checked), compiled
three ways (auto; the CUDA target's symmetric pads at opset 11; the plain ConvTranspose graph at
opset 26), run on onnxruntime's CPU provider and compared with Keras' own outputs to 1e-5 of each
output's scale. The numpy reference (`verification.reference_outputs`, what `deconvc check`
trusts) is held to the same bound against Keras. A failing output names its part;
`keras_networks.bundle(0, seeds=[seed])` rebuilds that part alone.

Also here: the two TensorFlow-tutorial networks through the installed `deconvc` (compile and check),
the other file forms (legacy .h5, to_json + weights, one layer's config + npz) and the dtype
policies against Keras (a model saved under mixed_float16; a float32 model compiled to float16).
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

from deconv_compiler.ir import BatchNormOp, ConvTransposeOp, DenseOp, Graph, UpSampleOp  # noqa: E402
from deconv_compiler.keras_layers import CONV_LAYERS, LAYER_PARSERS  # noqa: E402
from deconv_compiler.keras_model import load_keras_model  # noqa: E402
from deconv_compiler.options import MAX_OPSET, MIN_OPSET  # noqa: E402
from deconv_compiler.verification import reference_outputs  # noqa: E402
from tests import keras_networks as nets  # noqa: E402
from tests.onnx_run import assert_close, compile_graph, run_all  # noqa: E402
from tests.test_cli import _executable  # noqa: E402

BUNDLES = [f"bundle{index}" for index in range(nets.N_BUNDLES)]
SEQUENTIALS = [f"sequential{seed:03d}" for seed in nets.SEQUENTIAL_SEEDS]
NETWORKS = BUNDLES + SEQUENTIALS
VARIANTS: dict[str, dict[str, Any]] = {
    "auto": {},
    "cuda-opset11": {"target": "cuda", "opset": MIN_OPSET},  # symmetric pads + Slice, oldest ops
    "native-opset26": {"strategy": "native", "opset": MAX_OPSET},  # one ConvTranspose each, newest ops
}
FLOAT16_RTOL = 1e-2  # an 11-bit mantissa, accumulations included

# XLA compile options for the Keras oracle. XLA's compile, not the run, is most of what Keras costs
# here; these skip LLVM optimizations and the new CPU fusion emitters (about 2x faster to compile,
# results within 3e-7 of the default). None of them changes the math (no fast-math).
ORACLE_COMPILE_OPTIONS = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
}


def keras_call(model: keras.Layer, inputs: Sequence[np.ndarray]) -> jax.stages.Lowered:
    """The model's inference pass, traced as `predict` runs it (op-by-op is 6x slower)."""

    def call(*xs: np.ndarray) -> object:
        return model(list(xs) if len(xs) > 1 else xs[0], training=False)

    return jax.jit(call).lower(*inputs)


def run_keras(lowered: jax.stages.Lowered, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    try:
        compiled = lowered.compile(ORACLE_COMPILE_OPTIONS)
    except Exception as error:  # an older jaxlib without one of the options: compile as usual
        if "No such compile option" not in str(error):
            raise
        compiled = lowered.compile()
    result = compiled(*inputs)
    return [np.asarray(y) for y in (result if isinstance(result, (list, tuple)) else [result])]


def keras_outputs(model: keras.Layer, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    return run_keras(keras_call(model, inputs), inputs)


def compare(
    actual: Sequence[np.ndarray], expected: Sequence[np.ndarray], labels: Sequence[str], rtol: float = 1e-5
) -> None:
    """Every output within `rtol` of its scale; all failures reported at once, each labelled."""
    assert len(actual) == len(expected) == len(labels), (len(actual), len(expected), len(labels))
    failures = []
    for got, want, label in zip(actual, expected, labels, strict=True):
        try:
            assert_close(got, np.asarray(want, dtype=np.float64), rtol=rtol, context=label)
        except AssertionError as error:
            failures.append(str(error).splitlines()[0])
    assert not failures, f"{len(failures)} of {len(expected)} outputs differ:\n" + "\n".join(failures)


# --- the random networks, built once per session --------------------------------------------------


@dataclass
class Built:
    """A network saved as `.keras`, its file read back, and Keras' outputs (compiled in the background)."""

    network: nets.Network
    path: Path
    graph: Graph
    _expected: Future[list[np.ndarray]]

    @property
    def expected(self) -> list[np.ndarray]:
        return self._expected.result()

    @property
    def labels(self) -> list[str]:
        network = self.network
        return [
            f"{network.id} output {i} {name!r} (part {part.id})"
            for i, (name, part) in enumerate(zip(network.output_names, network.output_parts, strict=True))
        ]


class Networks:
    """Builds each network once: Python (building, saving, tracing) in the test's thread while a
    worker thread runs XLA's compile of the previous network, which releases the GIL."""

    def __init__(self, root: Path, wanted: Sequence[str]) -> None:
        self.root, self.wanted = root, [key for key in NETWORKS if key in wanted]
        self.built: dict[str, Built] = {}
        self.pool = ThreadPoolExecutor(max_workers=1)

    def __getitem__(self, key: str) -> Built:
        if key not in self.built:
            for other in [key, *self.wanted]:  # the rest of this session's networks, in the background
                if other not in self.built:
                    self.built[other] = self._build(other)
        return self.built[key]

    def _build(self, key: str) -> Built:
        network = (
            nets.bundle(int(key.removeprefix("bundle")))
            if key.startswith("bundle")
            else nets.sequential_network(int(key.removeprefix("sequential")))
        )
        path = self.root / f"{key}.keras"
        network.model.save(path)
        lowered = keras_call(network.model, network.inputs)
        expected = self.pool.submit(run_keras, lowered, network.inputs)
        return Built(network, path, load_keras_model(path), expected)


@pytest.fixture(scope="session")
def networks(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Networks]:
    wanted = {
        item.callspec.params["key"]
        for item in request.session.items
        if hasattr(item, "callspec") and "key" in item.callspec.params
    }
    built = Networks(tmp_path_factory.mktemp("networks"), sorted(wanted))
    yield built
    built.pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("key", NETWORKS)
def test_networks_read_back_with_keras_names_in_order(networks: Networks, key: str) -> None:
    built = networks[key]
    network, graph = built.network, built.graph
    assert graph.origin.format == "keras"
    assert [v.name for v in graph.inputs] == network.input_names
    assert [v.shape for v in graph.inputs] == [(None, *x.shape[1:]) for x in network.inputs]
    assert [t.name for t in network.model.inputs] == network.input_names  # what Keras itself says
    assert [o.name for o in graph.outputs] == network.output_names
    assert [o.shape for o in graph.outputs] == [tuple(t.shape) for t in network.model.outputs]
    model = compile_graph(graph)
    assert [v.name for v in model.graph.input] == network.input_names
    assert [v.name for v in model.graph.output] == network.output_names


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("key", NETWORKS)
def test_networks_match_keras(networks: Networks, key: str, variant: str) -> None:
    built = networks[key]
    actual = run_all(compile_graph(built.graph, **VARIANTS[variant]), *built.network.inputs)
    compare(actual, built.expected, [f"{label} ({variant})" for label in built.labels])


@pytest.mark.parametrize("key", NETWORKS)
def test_the_numpy_reference_matches_keras(networks: Networks, key: str) -> None:
    """`deconvc check` compares with this reference: it must itself give Keras' numbers."""
    built = networks[key]
    compare(reference_outputs(built.graph, built.network.inputs), built.expected, built.labels)


def test_the_random_networks_cover_what_they_must(networks: Networks) -> None:
    """The generator must keep exercising every supported layer class and both model forms.
    Classes are counted as the compiler read them from the saved files; features per part."""
    classes: collections.Counter[str] = collections.Counter()
    features: collections.Counter[str] = collections.Counter()
    parts: dict[int, nets.Part] = {}
    for key in NETWORKS:
        built = networks[key]
        graph = built.graph
        classes.update(node.kind for node in graph.nodes)
        classes["InputLayer"] += len(graph.inputs)
        features.update(_graph_features(graph))
        features[f"{key.rstrip('0123456789')} files"] += 1
        features[f"batch {built.network.inputs[0].shape[0]}"] += 1
        if key.startswith("bundle"):
            parts.update((part.seed, part) for part in built.network.parts)
    for part in parts.values():
        features[part.form] += 1
        features[f"{part.rank}d"] += 1
        features[part.data_format] += 1
        features[f"{part.stem} stem"] += 1
        features["multi-input"] += part.inputs > 1
        features["multi-output"] += part.outputs > 1
    required = {"InputLayer", *LAYER_PARSERS}
    missing = {name for name in required if classes[name] < 3}
    assert not missing, f"layer classes seen fewer than 3 times: {sorted(missing)} ({dict(classes)})"
    assert features["sequential"] >= 100 and features["functional"] >= 100, features  # parts
    assert features["sequential files"] >= 8 and features["bundle files"] >= 8, features
    assert features["multi-input"] >= 5 and features["multi-output"] >= 5, features
    assert features["channels_first"] >= 30 and features["channels_last"] >= 30, features
    assert min(features["1d"], features["2d"], features["3d"]) >= 20, features
    assert features["latent stem"] >= 50 and features["spatial stem"] >= 50, features
    assert features["batch 1"] and features["batch 2"] and features["batch 3"], features
    floors = {
        "conv valid": 100, "conv same": 100, "conv strided": 100, "conv stride 3": 20, "conv dilated": 10,
        "conv output_padding": 40, "conv channels_first": 60, "conv no bias": 60,
        "batch norm without gamma or beta": 30, "bilinear upsampling": 8, "dense on a spatial tensor": 10,
        "a tensor returned twice": 2,
    }  # fmt: skip
    low = {name: features[name] for name, floor in floors.items() if features[name] < floor}
    assert not low, f"features seen less than their floor {floors}: {low}"


def _graph_features(graph: Graph) -> collections.Counter[str]:
    """What the compiler must get right beyond the layer classes, as it read them from the file."""
    seen: collections.Counter[str] = collections.Counter()
    for node in graph.nodes:
        op = node.op
        if isinstance(op, ConvTransposeOp):
            layer = op.layer
            seen[f"conv {layer.padding}"] += 1
            seen["conv strided"] += max(layer.strides) > 1
            seen["conv stride 3"] += 3 in layer.strides
            seen["conv dilated"] += max(layer.dilation_rate) > 1
            seen["conv output_padding"] += layer.output_padding is not None
            seen["conv channels_first"] += layer.data_format == "channels_first"
            seen["conv no bias"] += not layer.use_bias
        elif isinstance(op, BatchNormOp):
            seen["batch norm without gamma or beta"] += op.gamma is None or op.beta is None
        elif isinstance(op, UpSampleOp):
            seen["bilinear upsampling"] += op.interpolation == "bilinear"
        elif isinstance(op, DenseOp):
            seen["dense on a spatial tensor"] += len(graph.values[node.inputs[0]].shape) > 2
    seen["a tensor returned twice"] += len({o.value for o in graph.outputs}) < len(graph.outputs)
    return seen


# --- the tutorial networks ------------------------------------------------------------------------


@dataclass
class Tutorial:
    name: str
    path: Path
    model: keras.Model
    x: np.ndarray
    expected: list[np.ndarray]


@pytest.fixture(scope="module", params=sorted(nets.TUTORIALS))
def tutorial(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Tutorial:
    name = request.param
    model = nets.TUTORIALS[name](np.random.default_rng(11))
    path = tmp_path_factory.mktemp(name) / f"{name}.keras"
    model.save(path)
    x = np.random.default_rng(3).standard_normal((4, *model.inputs[0].shape[1:])).astype(np.float32)
    return Tutorial(name, path, model, x, keras_outputs(model, [x]))


@pytest.fixture(scope="module")
def deconvc() -> str:
    executable = _executable()
    if executable is None:
        pytest.skip("the deconvc executable is not installed")
    return executable


def run_deconvc(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, env=env)


def test_tutorial_networks_compile_through_the_cli_and_match_keras(
    tutorial: Tutorial, deconvc: str, tmp_path: Path
) -> None:
    out = tmp_path / f"{tutorial.name}.onnx"
    result = run_deconvc(deconvc, "compile", tutorial.path, "-o", out)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert f"wrote {out}" in result.stdout
    onnx_model = onnx.load(out)
    compare(run_all(onnx_model, tutorial.x), tutorial.expected, [tutorial.name])
    ops = collections.Counter(node.op_type for node in onnx_model.graph.node)
    # auto: the stride-1 layers become Conv; one Transpose pair at the edges, none between
    assert ops["ConvTranspose"] + ops["Conv"] == 3 and ops["Transpose"] == 2, ops
    assert ops["BatchNormalization"] == 0 and ops["Mul"] == 0, ops  # every BatchNormalization folded


def test_tutorial_networks_pass_deconvc_check(tutorial: Tutorial, deconvc: str) -> None:
    result = run_deconvc(deconvc, "check", tutorial.path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"PASS: {tutorial.path} on cpu, input (2, "), result.stdout


def test_a_bundle_passes_deconvc_check(networks: Networks, deconvc: str) -> None:
    """Many inputs (fed from one seed) and many outputs, judged over all of them."""
    path = networks["bundle0"].path
    result = run_deconvc(deconvc, "check", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"PASS: {path} on cpu"), result.stdout


# --- the other file forms ---------------------------------------------------------------------------


def test_legacy_h5_written_by_keras_matches(tutorial: Tutorial, tmp_path: Path) -> None:
    from keras.src.legacy.saving import legacy_h5_format

    path = tmp_path / f"{tutorial.name}.h5"
    legacy_h5_format.save_model_to_hdf5(tutorial.model, str(path))
    graph = load_keras_model(path)
    assert graph.origin.format == "h5"
    compare(run_all(compile_graph(graph), tutorial.x), tutorial.expected, [f"{tutorial.name} (.h5)"])


def test_legacy_h5_of_a_bundle_matches(networks: Networks, tmp_path: Path) -> None:
    from keras.src.legacy.saving import legacy_h5_format

    built = networks["bundle1"]
    path = tmp_path / "bundle1.h5"
    legacy_h5_format.save_model_to_hdf5(built.network.model, str(path))
    graph = load_keras_model(path)
    assert graph.origin.format == "h5"
    assert [v.name for v in graph.inputs] == built.network.input_names
    compare(run_all(compile_graph(graph), *built.network.inputs), built.expected, built.labels)


@pytest.mark.parametrize("key", ["bundle2", SEQUENTIALS[1]])
def test_config_json_with_weights_h5_matches(networks: Networks, key: str, tmp_path: Path) -> None:
    built = networks[key]
    config, weights = tmp_path / "model.json", tmp_path / "model.weights.h5"
    config.write_text(built.network.model.to_json())
    built.network.model.save_weights(weights)
    graph = load_keras_model(config, weights)
    assert graph.origin.format == "json"
    assert [v.name for v in graph.inputs] == built.network.input_names
    compare(run_all(compile_graph(graph), *built.network.inputs), built.expected, built.labels)


def test_one_layer_config_with_npz_matches(tmp_path: Path) -> None:
    layer = keras.layers.Conv2DTranspose(
        5, (3, 2), strides=(2, 3), padding="same", activation="gelu",
        **nets.drawn_weights(np.random.default_rng(6), "kernel", "bias"),
    )  # fmt: skip
    x = np.random.default_rng(5).standard_normal((2, 4, 6, 3)).astype(np.float32)
    layer.build(x.shape)
    nets.restore_initializers([layer])
    expected = keras_outputs(layer, [x])
    kernel, bias = (np.asarray(v) for v in layer.weights)
    (tmp_path / "layer.json").write_text(
        json.dumps({"class_name": "Conv2DTranspose", "config": layer.get_config()})
    )
    np.savez(tmp_path / "layer.npz", kernel=kernel, bias=bias)
    graph = load_keras_model(tmp_path / "layer.json", tmp_path / "layer.npz")
    assert graph.origin.format == "json"
    assert graph.inputs[0].shape == (None, None, None, 3)  # only the channels are known
    compare(run_all(compile_graph(graph), x), expected, ["one layer (json + npz)"])


# --- dtype policies against Keras ------------------------------------------------------------------

MIXED_SEEDS = range(12)  # 6 chains and 6 DAGs, built under Keras' mixed_float16 policy


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[nets.Network, Path, list[np.ndarray]]:
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        network = nets.bundle(0, seeds=MIXED_SEEDS)
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.config.dtype_policy().name == previous.name
    path = tmp_path_factory.mktemp("mixed") / "mixed.keras"
    network.model.save(path)
    return network, path, keras_outputs(network.model, network.inputs)


def _initializer_types(model: onnx.ModelProto, op_type: str) -> set[int]:
    initializers = {init.name: init.data_type for init in model.graph.initializer}
    return {
        initializers[name]
        for node in model.graph.node
        if node.op_type == op_type
        for name in node.input[1:]
        if name in initializers
    }


def test_a_mixed_float16_model_compiles_to_float32_io_around_float16_compute(
    mixed: tuple[nets.Network, Path, list[np.ndarray]],
) -> None:
    network, path, expected = mixed
    assert {y.dtype for y in expected} == {np.dtype(np.float16)}  # Keras gives float16 outputs
    graph = load_keras_model(path)
    # Keras 3.15's SpatialDropout get_config writes the variable dtype ("float32"), not the policy
    policies = {node.policy for node in graph.nodes if not node.kind.startswith("SpatialDropout")}
    assert policies == {"mixed_float16"}
    model = compile_graph(graph)  # the file's policy, by default
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert {v.type.tensor_type.elem_type for v in model.graph.input} == {float32}
    assert {v.type.tensor_type.elem_type for v in model.graph.output} == {float32}
    labels = [f"mixed output {i} (part {part.id})" for i, part in enumerate(network.output_parts)]
    compare(run_all(model, *network.inputs), expected, labels, rtol=FLOAT16_RTOL)
    compare(reference_outputs(graph, network.inputs), expected, labels, rtol=FLOAT16_RTOL)
    native = compile_graph(graph, strategy="native")  # one ConvTranspose per transposed convolution
    ops = collections.Counter(node.op_type for node in native.graph.node)
    assert ops["ConvTranspose"] == sum(node.kind in CONV_LAYERS for node in graph.nodes), ops
    assert _initializer_types(native, "ConvTranspose") == {float16}
    compare(run_all(native, *network.inputs), expected, labels, rtol=FLOAT16_RTOL)


def test_a_float32_model_compiled_to_float16_matches_keras(networks: Networks) -> None:
    built = networks["bundle0"]
    inputs = [x.astype(np.float16) for x in built.network.inputs]
    float16 = onnx.TensorProto.FLOAT16
    for strategy in ("auto", "native"):
        model = compile_graph(built.graph, dtype="float16", strategy=strategy)
        assert {v.type.tensor_type.elem_type for v in model.graph.input} == {float16}
        assert {v.type.tensor_type.elem_type for v in model.graph.output} == {float16}
        actual = run_all(model, *inputs)
        assert {y.dtype for y in actual} == {np.dtype(np.float16)}
        labels = [f"{label} (float16, {strategy})" for label in built.labels]
        compare(actual, built.expected, labels, rtol=FLOAT16_RTOL)
    assert _initializer_types(model, "ConvTranspose") == {float16}  # the native graph's
