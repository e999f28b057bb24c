"""The spec front end's last step, `spec.spec_graph`: a validated `ModelSpec` → `ir.Graph`; and
`frontend`, which tells a spec from the other files. (Validation itself: test_invalid_specs.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deconv_compiler.frontend import file_kind, load_model
from deconv_compiler.ir import ConvTransposeOp, Graph, Output, SpecOrigin, Value
from deconv_compiler.spec import load_spec, spec_graph
from deconv_compiler.weights import InitializerWeights, LayerWeights

SPECS = Path(__file__).resolve().parent.parent / "specs"


def graph(spec: dict[str, Any]) -> Graph:
    return spec_graph(load_spec(spec))


def conv(**args: Any) -> dict[str, Any]:
    return {"type": "Conv2DTranspose", "filters": 2, "kernel_size": 3, **args}


def test_one_node_per_layer_chained_by_value_names() -> None:
    spec = load_spec(
        {
            "input": {"shape": [None, 3, 3, 4], "name": "latent"},
            "layers": [
                conv(filters=6, strides=2, padding="same"),
                conv(filters=3, strides=2),
                conv(filters=3, strides=2, name="up"),
            ],
        }
    )
    g = spec_graph(spec)
    assert [(n.name, n.kind, n.inputs, n.output.name) for n in g.nodes] == [
        ("conv2d_transpose", "Conv2DTranspose", ("latent",), "conv2d_transpose"),
        ("conv2d_transpose_1", "Conv2DTranspose", ("conv2d_transpose",), "conv2d_transpose_1"),
        ("up", "Conv2DTranspose", ("conv2d_transpose_1",), "up"),
    ]
    ops = [n.op for n in g.nodes]
    assert all(isinstance(op, ConvTransposeOp) for op in ops)
    assert [op.layer for op in ops] == list(spec.layers)  # type: ignore[union-attr]
    assert g.outputs[0].value == "up"


def test_unnamed_layers_are_numbered_as_keras_numbers_them() -> None:
    """Keras 3 (`naming.uniquify`) counts only the layers it names itself: checked with Keras 3.15.1,
    [Conv2DTranspose(name="up1"), Conv2DTranspose(), Conv2DTranspose(name="x"), Conv2DTranspose()]
    are named up1, conv2d_transpose, x, conv2d_transpose_1."""
    spec = {
        "input": {"shape": [None, 3, 3, 4]},
        "layers": [conv(name="up1"), conv(), conv(name="x"), conv()],
    }
    assert [n.name for n in graph(spec).nodes] == ["up1", "conv2d_transpose", "x", "conv2d_transpose_1"]


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_node_kind_follows_the_rank(rank: int) -> None:
    spec = {"type": f"Conv{rank}DTranspose", "filters": 2, "kernel_size": 2, "input_shape": [4] * rank + [3]}
    (node,) = graph(spec).nodes
    assert (node.name, node.kind) == (f"conv{rank}d_transpose", f"Conv{rank}DTranspose")


def test_chain_shapes_dtypes_and_policies() -> None:
    g = graph(
        {
            "input": {"shape": [None, 3, 3, 4], "name": "latent"},
            "layers": [
                conv(filters=6, strides=2, padding="same", name="up1"),
                conv(filters=3, strides=2, dtype="mixed_float16", name="up2"),
                conv(filters=2, kernel_size=2, activation="glu", dtype="mixed_float16", name="up3"),
            ],
        }
    )
    assert [(n.name, n.inputs, n.output, n.policy) for n in g.nodes] == [
        ("up1", ("latent",), Value("up1", (None, 6, 6, 6), "float32"), "float32"),
        ("up2", ("up1",), Value("up2", (None, 13, 13, 3), "float16"), "mixed_float16"),
        # glu halves Keras' last axis: 2 filters → 1 channel
        ("up3", ("up2",), Value("up3", (None, 14, 14, 1), "float16"), "mixed_float16"),
    ]  # fmt: skip
    assert g.inputs == (Value("latent", (None, 3, 3, 4), "float32"),)
    # a mixed policy computes in float16 and gives float32
    assert g.outputs == (Output("output", "up3", (None, 14, 14, 1), "float32"),)
    assert set(g.values) == {"latent", "up1", "up2", "up3"}


@pytest.mark.parametrize(
    ("spec", "inputs", "outputs"),
    [
        pytest.param(
            conv(input_shape=[5, 5, 3], batch_size=2),
            (Value("input", (2, 5, 5, 3), "float32"),),
            (Output("output", "conv2d_transpose", (2, 7, 7, 2), "float32"),),
            id="single-layer-input-shape-and-batch-size",
        ),
        pytest.param(
            conv(batch_input_shape=[None, 5, None, 3], dtype="float16", name="up"),
            (Value("input", (None, 5, None, 3), "float16"),),
            (Output("output", "up", (None, 7, None, 2), "float16"),),
            id="single-layer-float16-dynamic",
        ),
        pytest.param(
            {"input": {"shape": [1, 3, 4], "name": "output"}, "layers": [{**conv(), "type": "Conv1DTranspose"}]},
            (Value("output", (1, 3, 4), "float32"),),
            (Output("output_1", "conv1d_transpose", (1, 5, 2), "float32"),),
            id="input-named-output",
        ),
        pytest.param(
            {"input": {"shape": [1, 3, 4, 4], "dtype": "float64"}, "layers": [conv(data_format="channels_first", dtype="float64")]},
            (Value("input", (1, 3, 4, 4), "float64"),),
            (Output("output", "conv2d_transpose", (1, 2, 6, 6), "float64"),),
            id="channels-first-float64",
        ),
    ],
)  # fmt: skip
def test_inputs_and_outputs(
    spec: dict[str, Any], inputs: tuple[Value, ...], outputs: tuple[Output, ...]
) -> None:
    g = graph(spec)
    assert (g.inputs, g.outputs) == (inputs, outputs)


def test_model_name_strategy_and_seed_are_carried() -> None:
    g = graph(
        {
            "name": "decoder",
            "seed": 7,
            "strategy": "native",
            "input": {"shape": [None, 3, 3, 4]},
            "layers": [conv(strides=2, strategy="subpixel", seed=11), conv(strides=2)],
        }
    )
    assert (g.name, g.strategy, g.seed) == ("decoder", "native", 7)
    layers = [n.op.layer for n in g.nodes if isinstance(n.op, ConvTransposeOp)]
    assert [(layer.strategy, layer.seed) for layer in layers] == [("subpixel", 11), (None, None)]


def test_defaults_of_a_single_layer() -> None:
    g = graph(conv(input_shape=[5, 5, 3], name="up"))
    assert (g.name, g.strategy, g.seed) == ("up", "auto", 0)


def test_origin_is_the_normalized_spec_without_weight_values() -> None:
    kernel = np.arange(3 * 3 * 2 * 4, dtype=float).reshape(3, 3, 2, 4)
    g = graph(
        {
            "name": "decoder",
            "seed": 3,
            "input": {"shape": [None, 3, 3, 4], "name": "latent"},
            "layers": [
                conv(strides=[2, 2], padding="SAME", weights=[kernel.tolist(), [0.5, -0.5]], name="up")
            ],
        }
    )
    assert isinstance(g.origin, SpecOrigin)
    config = json.loads(json.dumps(g.origin.config))  # JSON-able as it is
    assert config["name"] == "decoder" and config["seed"] == 3 and config["strategy"] == "auto"
    assert config["input"] == {"name": "latent", "shape": [None, 3, 3, 4], "dtype": "float32"}
    (entry,) = config["layers"]
    assert entry["class_name"] == "Conv2DTranspose"
    layer_config = entry["config"]
    assert layer_config["name"] == "up" and layer_config["padding"] == "same"  # normalized
    assert layer_config["kernel_size"] == [3, 3] and layer_config["strides"] == [2, 2]
    assert "weights" not in layer_config and "0.5" not in json.dumps(config)


def test_given_weights_are_kept_in_keras_layout() -> None:
    rng = np.random.default_rng(0)
    kernel, bias = rng.standard_normal((3, 3, 2, 4)), rng.standard_normal(2)
    g = graph(conv(input_shape=[5, 5, 4], weights=[kernel.tolist(), bias.tolist()]))
    (node,) = g.nodes
    assert isinstance(node.op, ConvTransposeOp) and isinstance(node.op.weights, LayerWeights)
    np.testing.assert_array_equal(node.op.weights.kernel, kernel)
    assert node.op.weights.bias is not None
    np.testing.assert_array_equal(node.op.weights.bias, bias)
    assert node.op.weights.origin == "inline"


def test_weights_from_an_npz_say_where_they_came_from() -> None:
    (node,) = spec_graph(load_spec(SPECS / "dilated_with_weights.yaml")).nodes
    assert isinstance(node.op, ConvTransposeOp) and isinstance(node.op.weights, LayerWeights)
    assert node.op.weights.origin == "dilated_with_weights.npz"
    assert node.op.weights.kernel.shape == (3, 3, 4, 2)


def test_weights_without_a_file_are_made_at_compile_time_by_the_initializers() -> None:
    g = graph(
        {
            "input": {"shape": [None, 3, 3, 4]},
            "layers": [
                conv(filters=5, kernel_initializer="he_normal", bias_initializer="ones"),
                conv(kernel_size=[2, 1], use_bias=False, seed=4),
            ],
        }
    )
    weights = [n.op.weights for n in g.nodes if isinstance(n.op, ConvTransposeOp)]
    assert all(isinstance(w, InitializerWeights) for w in weights)
    first, second = weights
    assert isinstance(first, InitializerWeights) and isinstance(second, InitializerWeights)
    assert (first.kernel_initializer.class_name, first.bias_initializer.class_name) == ("HeNormal", "Ones")
    assert (first.kernel_shape, first.use_bias, first.seed, first.index) == ((3, 3, 5, 4), True, None, 0)
    assert (second.kernel_shape, second.use_bias, second.seed, second.index) == ((2, 1, 2, 5), False, 4, 1)


# --- frontend: which reader takes a file ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "weights", "kind"),
    [
        pytest.param("m.yaml", b"filters: 2\n", None, "spec", id="yaml-spec"),
        pytest.param("m.json", b'{"filters": 2}', None, "spec", id="json-spec"),
        pytest.param("m.txt", b"filters: 2\n", None, "spec", id="spec-any-name"),
        pytest.param("m.json", b'{"class_name": "Sequential", "config": {}}', None, "keras", id="keras-config-json"),
        pytest.param("m.json", b'{"class_name": "Conv2DTranspose", "config": {}}', "w.npz", "keras", id="with-weights"),
        pytest.param("m.keras", b"not a zip", None, "keras", id="keras-suffix-read-as-keras"),
        pytest.param("m.h5", b"", None, "keras", id="h5-suffix"),
        pytest.param("m.onnx", b"", None, "onnx", id="onnx-suffix"),
        pytest.param("m.bin", b"\x08\x07\x12\x00binary", None, "onnx", id="binary"),
    ],
)  # fmt: skip
def test_file_kind(tmp_path: Path, name: str, content: bytes, weights: str | None, kind: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert file_kind(path, None if weights is None else tmp_path / weights) == kind


def test_load_model_of_a_spec_is_its_spec_graph() -> None:
    path = SPECS / "dcgan_generator.yaml"
    loaded, direct = load_model(path), spec_graph(load_spec(path))
    assert isinstance(loaded.origin, SpecOrigin)
    assert (loaded.name, loaded.inputs, loaded.outputs) == (direct.name, direct.inputs, direct.outputs)
    assert [(n.name, n.inputs, n.output) for n in loaded.nodes] == [
        (n.name, n.inputs, n.output) for n in direct.nodes
    ]
