"""The Keras front end (`keras_model`): Keras model configs → the IR (`ir.Graph`) → ONNX, from
hand-written configs (no Keras needed).

The numbers are checked against real Keras in test_keras_conformance.py; here: what each layer's
config turns into (shapes, layouts, folding) and every refusal, named by layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from deconv_compiler.errors import KerasModelError
from tests.keras_configs import conv, graph_of, layer, sequential
from tests.onnx_run import compile_graph, run_all

RNG = np.random.default_rng(7)


def refusal(config: dict[str, Any], **weights: tuple[np.ndarray, ...]) -> str:
    with pytest.raises(KerasModelError) as caught:
        graph_of(config, **weights)
    return str(caught.value)


def test_shapes_follow_keras_through_a_decoder() -> None:
    config = sequential(
        layer("Dense", "dense", units=2 * 2 * 3, activation="relu", use_bias=True),
        layer("Reshape", "reshape", target_shape=[2, 2, -1]),
        conv("up", 4, 3, strides=[2, 2], padding="same", use_bias=False),
        layer("BatchNormalization", "bn", axis=-1, epsilon=1e-3, center=True, scale=True),
        layer("LeakyReLU", "leaky", negative_slope=0.2),
        layer("ZeroPadding2D", "pad", padding=[[1, 0], [0, 2]], data_format="channels_last"),
        layer("Cropping2D", "crop", cropping=[[0, 1], [1, 1]], data_format="channels_last"),
        layer("UpSampling2D", "ups", size=[2, 3], data_format="channels_last", interpolation="bilinear"),
        layer("Flatten", "flat", data_format="channels_last"),
        input_shape=[5],
    )
    weights = {
        "dense": (RNG.normal(size=(5, 12)), RNG.normal(size=12)),
        "up": (RNG.normal(size=(3, 3, 4, 3)),),
        "bn": tuple(RNG.uniform(0.5, 1.5, size=4) for _ in range(4)),
    }
    graph = graph_of(config, **weights)
    assert [(n.name, n.output.shape) for n in graph.nodes] == [
        ("dense", (None, 12)),
        ("reshape", (None, 2, 2, 3)),
        ("up", (None, 4, 4, 4)),
        ("bn", (None, 4, 4, 4)),
        ("leaky", (None, 4, 4, 4)),
        ("pad", (None, 5, 6, 4)),
        ("crop", (None, 4, 4, 4)),
        ("ups", (None, 8, 12, 4)),
        ("flat", (None, 384)),
    ]
    model = compile_graph(graph)
    ops = [node.op_type for node in model.graph.node]
    assert "BatchNormalization" not in ops and ops.count("Mul") == 0  # folded into the kernel
    assert ops.count("ConvTranspose") == 1
    # channels_last inside, one Transpose in (after Reshape), one back (before Flatten)
    assert ops.count("Transpose") == 2
    (y,) = run_all(model, RNG.normal(size=(3, 5)).astype(np.float32))
    assert y.shape == (3, 384) and np.all(np.isfinite(y))


def test_batch_norm_is_folded_only_where_it_may_be() -> None:
    bn_weights = tuple(RNG.uniform(0.5, 1.5, size=4) for _ in range(4))
    base = [
        conv("up", 4, 2, strides=[2, 2], activation="relu"),  # not linear: BN stays
        layer("BatchNormalization", "bn", axis=-1),
    ]
    graph = graph_of(
        sequential(*base, input_shape=[3, 3, 2]),
        up=(RNG.normal(size=(2, 2, 4, 2)), RNG.normal(size=4)),
        bn=bn_weights,
    )
    ops = [node.op_type for node in compile_graph(graph).graph.node]
    assert ops.count("Mul") == 1 and "BatchNormalization" not in ops  # Mul + Add, not folded


def test_functional_dag_shares_one_transpose_per_tensor() -> None:
    def tensor(name: str) -> dict[str, Any]:
        return {"class_name": "__keras_tensor__", "config": {"keras_history": [name, 0, 0]}}

    def call(*names: str) -> list[dict[str, Any]]:
        args: list[Any] = [tensor(names[0])] if len(names) == 1 else [[tensor(n) for n in names]]
        return [{"args": args, "kwargs": {}}]

    layers = [
        {**layer("InputLayer", "z", batch_shape=[None, 4, 4, 3]), "name": "z", "inbound_nodes": []},
        {**conv("a", 2, 1), "name": "a", "inbound_nodes": call("z")},
        {**conv("b", 2, 1), "name": "b", "inbound_nodes": call("z")},
        {**layer("Add", "sum"), "name": "sum", "inbound_nodes": call("a", "b")},
        {**layer("Concatenate", "cat", axis=-1), "name": "cat", "inbound_nodes": call("sum", "a")},
    ]
    config = {
        "class_name": "Functional",
        "config": {
            "name": "f",
            "layers": layers,
            "input_layers": [["z", 0, 0]],
            "output_layers": [["cat", 0, 0], ["sum", 0, 0]],
        },
    }
    kernels = {name: (RNG.normal(size=(1, 1, 2, 3)), RNG.normal(size=2)) for name in ("a", "b")}
    graph = graph_of(config, **kernels)
    assert [o.name for o in graph.outputs] == ["cat", "sum"]
    model = compile_graph(graph)
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("Transpose") == 3  # z in; cat and sum out
    assert [o.name for o in model.graph.output] == ["cat", "sum"]
    x = RNG.normal(size=(2, 4, 4, 3)).astype(np.float32)
    cat, total = run_all(model, x)
    a = np.einsum("nhwc,fc->nhwf", x, kernels["a"][0][0, 0]) + kernels["a"][1]
    b = np.einsum("nhwc,fc->nhwf", x, kernels["b"][0][0, 0]) + kernels["b"][1]
    np.testing.assert_allclose(total, a + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cat, np.concatenate([a + b, a], axis=-1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("config", "weights", "fragment"),
    [
        pytest.param(
            sequential(layer("Lambda", "fn", function="..."), input_shape=[3]),
            {},
            "fn (Lambda): Lambda layers hold Python code",
            id="lambda",
        ),
        pytest.param(
            sequential(
                {
                    "module": "my_pkg",
                    "class_name": "Wobble",
                    "registered_name": "Custom>Wobble",
                    "config": {"name": "w"},
                },
                input_shape=[3],
            ),
            {},
            "w (Wobble): a custom object ('Custom>Wobble')",
            id="custom-object",
        ),
        pytest.param(
            sequential(layer("LSTM", "c", units=2), input_shape=[5, 3]),
            {},
            "c (LSTM): layer class 'LSTM' is not supported\nsupported layers: InputLayer, Conv1DTranspose",
            id="unsupported",
        ),
        pytest.param(
            sequential(
                {"class_name": "Sequential", "config": {"name": "inner", "layers": []}}, input_shape=[3]
            ),
            {},
            "inner: the model config lists no layers",
            id="nested-empty",
        ),
        pytest.param(
            sequential(conv("up", 4, 3), input_shape=[5, 5, 3]),
            {"up": (np.zeros((3, 3, 4, 2)), np.zeros(4))},
            "up (Conv2DTranspose).weights[0]: kernel has shape (3, 3, 4, 2), expected (3, 3, 4, 3)",
            id="kernel-shape",
        ),
        pytest.param(
            sequential(conv("up", 4, 3), input_shape=[5, 5, 3]),
            {"up": (np.zeros((3, 3, 4, 3)),)},
            "up (Conv2DTranspose): the weights file does not match the config: expected 2 array(s), found 1",
            id="missing-bias",
        ),
        pytest.param(
            sequential(conv("up", 4, 3, strides=[2, 0]), input_shape=[5, 5, 3]),
            {"up": (np.zeros((3, 3, 4, 3)), np.zeros(4))},
            "up (Conv2DTranspose).strides[1]:",
            id="bad-stride",
        ),
        pytest.param(
            sequential(layer("Dense", "d", units=4), input_shape=[3]),
            {"d": (np.zeros((3, 5)), np.zeros(5))},
            "d (Dense): the weights file does not match the config: kernel has shape (3, 5), expected (3, 4)",
            id="dense-shape",
        ),
        pytest.param(
            sequential(layer("Reshape", "r", target_shape=[4, 4]), input_shape=[10]),
            {},
            "r (Reshape).target_shape: cannot reshape (None, 10) (10 values) to [4, 4]",
            id="reshape",
        ),
        pytest.param(
            sequential(layer("Cropping2D", "c", cropping=[[2, 2], [0, 0]]), input_shape=[4, 4, 1]),
            {},
            "c (Cropping2D).cropping: cropping 2+2 leaves nothing of axis 1 (size 4)",
            id="crop-everything",
        ),
        pytest.param(
            sequential(
                layer("UpSampling2D", "u", size=[2, 2], interpolation="bicubic"), input_shape=[4, 4, 1]
            ),
            {},
            "u (UpSampling2D).interpolation: interpolation 'bicubic' is not supported",
            id="bicubic",
        ),
        pytest.param(
            sequential(layer("Activation", "a", activation="Relu"), input_shape=[4]),
            {},
            "a (Activation).activation: unknown activation 'Relu'; did you mean 'relu'?",
            id="activation-name",
        ),
        pytest.param(
            sequential(
                layer(
                    "Dense", "d", units=2, dtype={"class_name": "DTypePolicy", "config": {"name": "bfloat16"}}
                ),
                input_shape=[4],
            ),
            {"d": (np.zeros((4, 2)), np.zeros(2))},
            "d (Dense).dtype: 'bfloat16' is not supported: onnxruntime has no ConvTranspose kernel for bfloat16",
            id="dtype",
        ),
        pytest.param(
            {"class_name": "Sequential", "config": {"name": "s", "layers": [layer("Dense", "d", units=2)]}},
            {},
            "the model does not say its input shape",
            id="no-input-shape",
        ),
    ],
)
def test_refusals_name_the_layer(config: dict[str, Any], weights: dict[str, Any], fragment: str) -> None:
    message = refusal(config, **weights)
    assert message.startswith("model.keras: ")
    assert fragment in message, message


def test_every_problem_is_reported_at_once() -> None:
    config = sequential(
        layer("Lambda", "fn"), layer("LSTM", "rnn", units=3), layer("Lambda", "fn2"), input_shape=[3]
    )
    message = refusal(config)
    assert all(name in message for name in ("fn (Lambda)", "rnn (LSTM)", "fn2 (Lambda)"))


def test_a_tf_keras_2_functional_config() -> None:
    """tf.keras 2.x spelling: inbound_nodes as nested lists, batch_input_shape, groups: 1,
    LeakyReLU's alpha, BatchNormalization's axis as a list."""

    def keras2(class_name: str, name: str, inbound: list[str], **config: Any) -> dict[str, Any]:
        nodes = [[[source, 0, 0, {}] for source in inbound]] if inbound else []
        return {"class_name": class_name, "name": name, "config": {"name": name, "dtype": "float32", **config},
                "inbound_nodes": nodes}  # fmt: skip

    layers = [
        keras2("InputLayer", "input_1", [], batch_input_shape=[None, 3, 3, 4]),
        keras2(
            "Conv2DTranspose",
            "deconv",
            ["input_1"],
            filters=2,
            kernel_size=[3, 3],
            strides=[2, 2],
            padding="same",
            output_padding=None,
            data_format="channels_last",
            dilation_rate=[1, 1],
            groups=1,
            activation="linear",
            use_bias=False,
            kernel_initializer={"class_name": "GlorotUniform", "config": {"seed": None}},
        ),  # fmt: skip
        keras2("BatchNormalization", "bn", ["deconv"], axis=[3], epsilon=0.001, center=True, scale=False),
        keras2("LeakyReLU", "leaky", ["bn"], alpha=0.1),
    ]
    config = {
        "class_name": "Functional",
        "config": {
            "name": "g",
            "layers": layers,
            "input_layers": [["input_1", 0, 0]],
            "output_layers": [["leaky", 0, 0]],
        },
    }
    kernel = RNG.normal(size=(3, 3, 2, 4))
    beta, mean, variance = RNG.normal(size=2), RNG.normal(size=2), RNG.uniform(0.5, 2.0, size=2)
    graph = graph_of(config, deconv=(kernel,), bn=(beta, mean, variance))
    model = compile_graph(graph)
    assert [n.op_type for n in model.graph.node] == ["Transpose", "ConvTranspose", "LeakyRelu", "Transpose"]
    x = RNG.normal(size=(2, 3, 3, 4)).astype(np.float32)
    (y,) = run_all(model, x)
    # numpy: scatter-add transposed conv (same, s=2, k=3: the one extra sample is cropped at the end)
    full = np.zeros((2, 7, 7, 2))
    for i in range(3):
        for j in range(3):
            full[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, :] += np.einsum("nc,hwfc->nhwf", x[:, i, j], kernel)
    z = (full[:, :6, :6, :] - mean) / np.sqrt(variance + 0.001) + beta
    np.testing.assert_allclose(y, np.where(z > 0, z, 0.1 * z), rtol=1e-5, atol=1e-5)
