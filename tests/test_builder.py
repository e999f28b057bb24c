"""`builder.build_model`: `Plan` → `onnx.ModelProto`, on hand-written plans and on plans of small graphs.

Every model built here passes the ONNX checker (full check) and loads in onnxruntime; where the
builder decides numbers (a strategy's form, Casts, constants), they are compared on onnxruntime.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from deconv_compiler import __version__, reference
from deconv_compiler.activations import ActivationSite
from deconv_compiler.builder import DETACH_ELEMENTS, PRODUCER, build_detached_model, build_model
from deconv_compiler.compiler import compile_model, compile_to_file
from deconv_compiler.ir import Graph
from deconv_compiler.options import CompileOptions
from deconv_compiler.plan import ActivationStep, CastStep, Constant, NodeStep, Plan, PlanValue
from deconv_compiler.planner import plan_graph
from deconv_compiler.spec import load_spec, spec_graph
from tests.keras_configs import called, conv, functional, graph_of, layer, sequential
from tests.onnx_run import assert_close, run_all


def checked(model: onnx.ModelProto) -> onnx.ModelProto:
    onnx.checker.check_model(model, full_check=True)
    return model


def loads(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def built(graph: Graph, metadata: tuple[tuple[str, str], ...] = (), **options: Any) -> onnx.ModelProto:
    return checked(build_model(plan_graph(graph, CompileOptions(**options)), metadata))


def one_conv(shape: list[int | None], **args: Any) -> Graph:
    layer_args = {"type": "Conv2DTranspose", "name": "up", "filters": 2, **args}
    return spec_graph(load_spec({"input": {"shape": shape}, "layers": [layer_args]}))


def plan(
    inputs: list[PlanValue], steps: list[Any], outputs: list[tuple[PlanValue, str]], opset: int = 17
) -> Plan:
    return Plan("hand", opset, tuple(inputs), tuple(outputs), tuple(steps), {}, {})


# --- names --------------------------------------------------------------------------------------


def keras_decoder() -> Graph:
    rng = np.random.default_rng(1)
    config = sequential(
        conv("a", 4, 3, strides=[2, 2], padding="same", activation="relu"),
        layer("BatchNormalization", "bn", axis=-1),
        layer("LeakyReLU", "leaky", negative_slope=0.2),
        layer("Cropping2D", "crop", cropping=[[0, 1], [1, 1]]),
        conv("b", 3, 3, padding="same", activation="softmax"),
        input_shape=[3, 3, 2],
    )
    return graph_of(
        config,
        a=(rng.normal(size=(3, 3, 4, 2)), rng.normal(size=4)),
        bn=tuple(rng.uniform(0.5, 1.5, size=(4, 4))),
        b=(rng.normal(size=(3, 3, 3, 4)), rng.normal(size=3)),
    )


def shared_layer() -> Graph:
    """One layer called twice (z → a → a): both calls share the scope `a`."""
    call = [{"args": [{"class_name": "__keras_tensor__", "config": {"keras_history": [n, 0, 0]}}], "kwargs": {}}
            for n in ("z", "a")]  # fmt: skip
    config = functional(
        "f", [called(layer("InputLayer", "z", batch_shape=[None, 4, 4, 3])), {**conv("a", 3, 1), "name": "a", "inbound_nodes": call}],
        ["z"], [],
    )  # fmt: skip
    config["config"]["output_layers"] = [["a", 1, 0]]
    rng = np.random.default_rng(2)
    return graph_of(config, a=(rng.normal(size=(1, 1, 3, 3)), rng.normal(size=3)))


def functional_two_outputs() -> Graph:
    rng = np.random.default_rng(3)
    layers = [
        called(layer("InputLayer", "z", batch_shape=[None, 4, 4, 3])),
        called(conv("a", 2, 1), "z"),
        called(conv("b", 2, 1), "z"),
        called(layer("Add", "sum"), "a", "b"),
        called(layer("Concatenate", "cat", axis=-1), "sum", "a"),
    ]
    kernels = {n: (rng.normal(size=(1, 1, 2, 3)), rng.normal(size=2)) for n in ("a", "b")}
    return graph_of(functional("f", layers, ["z"], ["cat", "sum"]), **kernels)


GRAPHS: list[tuple[str, Callable[[], Graph]]] = [
    ("keras-decoder", keras_decoder),
    ("shared-layer", shared_layer),
    ("functional-two-outputs", functional_two_outputs),
    ("spec-chain", lambda: one_conv([None, 5, 5, 3], kernel_size=3, strides=2, padding="same")),
]


@pytest.mark.parametrize("make", [pytest.param(make, id=case) for case, make in GRAPHS])
def test_names_are_unique_scoped_and_stable(make: Callable[[], Graph]) -> None:
    graph = make()
    model = built(graph)
    nodes = [node.name for node in model.graph.node]
    assert len(set(nodes)) == len(nodes), nodes
    tensors = [
        *(v.name for v in model.graph.input),
        *(t.name for t in model.graph.initializer),
        *(out for node in model.graph.node for out in node.output),
    ]
    assert len(set(tensors)) == len(tensors), tensors
    scopes = {node.name for node in graph.nodes} | {output.name for output in graph.outputs}
    assert all(name.split("/")[0] in scopes for name in nodes), nodes
    assert [o.name for o in model.graph.output] == [o.name for o in graph.outputs]
    # a second plan and build of the same graph: the same bytes (no counters, addresses or times)
    assert built(make()).SerializeToString() == model.SerializeToString()
    loads(model)


def test_a_shared_layer_gets_numbered_names() -> None:
    model = built(shared_layer())
    assert [n.name for n in model.graph.node] == ["a/Transpose", "a/Conv", "a/Conv_1", "a/Transpose_1"]


def test_names_taken_by_inputs_and_outputs_are_skipped() -> None:
    """An input may be called `a/Relu` and an output `a/Relu_1`: the Relu of scope `a` is then `a/Relu_2`."""
    x = PlanValue("a/Relu", (None, 3), "float32")
    y = PlanValue("a/Relu_1", (None, 3), "float32")
    model = checked(build_model(plan([x], [NodeStep("a", "float32", "Relu", ("a/Relu",), "%1"),
                                           NodeStep("a", "float32", "Neg", ("%1",), "%2")], [(y, "%2")]), ()))  # fmt: skip
    assert [(n.name, list(n.input), list(n.output)) for n in model.graph.node] == [
        ("a/Relu_2", ["a/Relu"], ["a/Relu_2"]),
        ("a/Neg", ["a/Relu_2"], ["a/Relu_1"]),
    ]
    x_value = np.array([[-1.0, 0.5, 2.0]], np.float32)
    (out,) = run_all(model, x_value)
    np.testing.assert_array_equal(out, -np.maximum(x_value, 0))


def test_an_input_or_a_repeated_tensor_as_output_gets_an_identity() -> None:
    x = PlanValue("x", (None, 3), "float32")
    outputs = [
        (PlanValue("y", (None, 3), "float32"), "%1"),
        (PlanValue("y_again", (None, 3), "float32"), "%1"),
        (PlanValue("x_out", (None, 3), "float32"), "x"),
    ]
    model = checked(build_model(plan([x], [NodeStep("r", "float32", "Relu", ("x",), "%1")], outputs), ()))
    assert [n.op_type for n in model.graph.node] == ["Relu", "Identity", "Identity"]
    x_value = np.array([[-1.0, 0.5, 2.0]], np.float32)
    y, y_again, x_out = run_all(model, x_value)
    np.testing.assert_array_equal(y, np.maximum(x_value, 0))
    np.testing.assert_array_equal(y_again, y)
    np.testing.assert_array_equal(x_out, x_value)


# --- one emitter per step type ------------------------------------------------------------------


def test_cast_node_activation_steps_and_constants() -> None:
    x = PlanValue("x", (None, 3), "float32")
    scale = Constant(np.array([1.0, -2.0, 3.0], np.float16), "s/scale")
    steps = [
        CastStep("s", "float16", "x", "%1"),
        NodeStep("s", "float16", "Mul", ("%1", scale), "%2"),
        NodeStep("s", "float16", "Add", ("%2", Constant(np.array([0.5], np.float16))), "%3"),
        ActivationStep("s", "float16", "%3", "%4", "relu", ActivationSite(axis=1, rank=2, axis_size=3)),
        CastStep("y", "float32", "%4", "%5"),
    ]
    model = checked(build_model(plan([x], steps, [(PlanValue("y", (None, 3), "float32"), "%5")]), ()))
    assert [(n.name, n.op_type) for n in model.graph.node] == [
        ("s/Cast", "Cast"), ("s/Mul", "Mul"), ("s/Add", "Add"), ("s/Relu", "Relu"), ("y/Cast", "Cast"),
    ]  # fmt: skip
    casts = [helper.get_attribute_value(n.attribute[0]) for n in model.graph.node if n.op_type == "Cast"]
    assert casts == [onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT]
    initializers = {t.name: t for t in model.graph.initializer}
    assert len(initializers) == 2 and "s/scale" in initializers  # a weight keeps its planned name
    assert {t.data_type for t in initializers.values()} == {onnx.TensorProto.FLOAT16}
    np.testing.assert_array_equal(numpy_helper.to_array(initializers["s/scale"]), scale.value)
    x_value = np.array([[1.0, 1.0, -1.0], [0.25, -0.5, 2.0]], np.float32)
    (y,) = run_all(model, x_value)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, np.maximum(x_value * [1.0, -2.0, 3.0] + 0.5, 0), rtol=1e-3)


# --- one emitter per transposed-convolution form ------------------------------------------------

CF = {"data_format": "channels_first"}
FORMS = [
    # id, strategy, target, layer arguments, input shape, op types of the model
    ("native", "native", "cpu", {"kernel_size": 3, "strides": 2, "padding": "same", **CF}, [1, 3, 4, 4],
     ["ConvTranspose"]),
    ("native-cuda-symmetric-pads-then-slice", "native", "cuda", {"kernel_size": 3, "strides": 2, "padding": "same", **CF},
     [1, 3, 4, 4], ["ConvTranspose", "Slice"]),
    ("conv", "conv", "cpu", {"kernel_size": 3, "padding": "same", **CF}, [1, 3, 4, 4], ["Conv"]),
    ("conv-with-activation", "conv", "cpu", {"kernel_size": 3, "activation": "relu", **CF}, [1, 3, 4, 4],
     ["Conv", "Relu"]),
    ("subpixel-uniform", "subpixel", "cpu", {"kernel_size": 2, "strides": 2, **CF}, [1, 3, 4, 4],
     ["Conv", "DepthToSpace"]),
    ("subpixel-uniform-cropped", "subpixel", "cpu", {"kernel_size": 4, "strides": 2, "padding": "same", **CF},
     [1, 3, 4, 4], ["Conv", "DepthToSpace", "Slice"]),
    ("subpixel-phases", "subpixel", "cpu", {"kernel_size": 3, "strides": 2, "padding": "same", **CF}, [1, 3, 4, 4],
     ["Conv", "Conv", "Conv", "Conv", "Concat", "DepthToSpace", "Slice"]),
    ("gemm", "gemm", "cpu", {"kernel_size": 2, "strides": 2}, [1, 4, 4, 3],
     ["MatMul", "Reshape", "Transpose", "Reshape", "Add"]),
    ("gemm-without-bias", "gemm", "cpu", {"kernel_size": [2, 3], "strides": [2, 3], "use_bias": False}, [2, 3, 4, 3],
     ["MatMul", "Reshape", "Transpose", "Reshape"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("strategy", "target", "args", "shape", "ops"), [pytest.param(*rest, id=case) for case, *rest in FORMS]
)
def test_each_form_has_its_emitter(
    strategy: str, target: str, args: dict[str, Any], shape: list[int], ops: list[str]
) -> None:
    rng = np.random.default_rng(len(ops))
    channels = shape[1] if args.get("data_format") == "channels_first" else shape[-1]
    kernel_size = args["kernel_size"]
    kernel_size = [kernel_size] * 2 if isinstance(kernel_size, int) else kernel_size
    kernel = rng.standard_normal((*kernel_size, 2, channels))
    bias = rng.standard_normal(2) if args.get("use_bias", True) else None
    weights = [kernel.tolist()] if bias is None else [kernel.tolist(), bias.tolist()]
    model = built(one_conv(shape, weights=weights, **args), strategy=strategy, target=target)
    assert [n.op_type for n in model.graph.node] == ops
    x = rng.standard_normal(shape).astype(np.float32)
    strides = args.get("strides", 1)
    expected = reference.layer(
        x, kernel, bias, activation_name=args.get("activation"),
        strides=(strides,) * 2 if isinstance(strides, int) else tuple(strides),
        padding=args.get("padding", "valid"), output_padding=None, dilation_rate=(1, 1),
        data_format=args.get("data_format", "channels_last"),
    )  # fmt: skip
    (y,) = run_all(model, x)
    assert_close(y, expected, context=strategy)


# --- the model's header --------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [11, 13, 17, 21, 26])
def test_ir_version_is_pinned_to_what_the_opset_needs(opset: int) -> None:
    model = built(one_conv([1, 4, 4, 3], kernel_size=3), opset=opset)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", opset)]
    assert model.ir_version == helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    assert model.ir_version <= 13  # the newest onnxruntime 1.31 loads
    loads(model)


def test_metadata_and_producer_pass_through() -> None:
    metadata = (("z.first", "1"), ("a.second", '{"json": true}'), ("empty", ""))
    model = built(one_conv([1, 4, 4, 3], kernel_size=3), metadata)
    assert [(p.key, p.value) for p in model.metadata_props] == list(metadata)
    assert (model.producer_name, model.producer_version) == (PRODUCER, __version__)
    assert not built(one_conv([1, 4, 4, 3], kernel_size=3)).metadata_props
    assert loads(model).get_modelmeta().custom_metadata_map == dict(metadata)


@pytest.mark.parametrize("strategy", ["native", "auto"])  # auto: subpixel for the first layer
def test_a_file_written_without_copying_weights_is_the_serialized_model(
    tmp_path: Path, strategy: str
) -> None:
    """`compile_to_file` (what `deconvc compile` does) streams big weights next to a weightless
    model; the file must be byte for byte `compile_model(...).SerializeToString()`."""
    rng = np.random.default_rng(3)
    spec = load_spec(
        {
            "name": "big",
            "input": {"shape": [None, 16, 16, 128], "name": "x"},
            "layers": [
                {"type": "Conv2DTranspose", "filters": 64, "kernel_size": 4, "strides": 2, "padding": "same",
                 "weights": [rng.standard_normal((4, 4, 64, 128)).astype(np.float32), np.ones(64, np.float32)]},
                {"type": "Conv2DTranspose", "filters": 3, "kernel_size": 3, "activation": "tanh"},
            ],
        }
    )  # fmt: skip
    graph, options = spec_graph(spec), CompileOptions(strategy=strategy)
    path = tmp_path / "big.onnx"
    compile_to_file(graph, options, path)
    expected = compile_model(graph, options).SerializeToString()
    assert path.read_bytes() == expected
    detached = build_detached_model(plan_graph(graph, options.resolved()), ())
    assert detached.arrays, "the kernel was meant to be streamed, not written through protobuf"
    assert all(array.size > DETACH_ELEMENTS for array in detached.arrays.values())
