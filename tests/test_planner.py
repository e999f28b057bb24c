"""`planner.plan_graph`: `ir.Graph` + `CompileOptions` → `Plan`, on small graphs from both front ends.

What the plan must say (structure: its steps, before any ONNX is built), and, where it changes
numbers (BatchNormalization folding, Casts), that the compiled model still gives the numpy
reference's numbers on onnxruntime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from deconv_compiler import reference
from deconv_compiler.conv_transpose_plan import choose_strategy, requested_strategy
from deconv_compiler.errors import CompileError, InternalError
from deconv_compiler.ir import Graph
from deconv_compiler.options import CompileOptions
from deconv_compiler.plan import CastStep, Constant, ConvStep, NodeStep, Plan
from deconv_compiler.planner import plan_graph
from deconv_compiler.spec import load_spec, spec_graph
from deconv_compiler.verification import reference_outputs
from tests.keras_configs import called, conv, functional, graph_of, layer, policy, sequential
from tests.onnx_run import assert_close, compile_graph, run_all


def spec_chain(
    *layers: dict[str, Any], shape: list[int | None], dtype: str = "float32", **model: Any
) -> Graph:
    spec = {"name": "m", "input": {"shape": shape, "dtype": dtype}, "layers": list(layers), **model}
    return spec_graph(load_spec(spec))


def conv2d(**args: Any) -> dict[str, Any]:
    return {"type": "Conv2DTranspose", "filters": 2, "kernel_size": 3, **args}


def node_ops(plan: Plan, scope: str) -> list[str]:
    return [s.op_type for s in plan.steps if isinstance(s, NodeStep) and s.scope == scope]


def transposes(plan: Plan) -> list[NodeStep]:
    return [s for s in plan.steps if isinstance(s, NodeStep) and s.op_type == "Transpose"]


def casts(plan: Plan) -> list[tuple[str, str]]:
    return [(s.scope, s.dtype) for s in plan.steps if isinstance(s, CastStep)]


def perm(step: NodeStep) -> list[int]:
    return list(dict(step.attrs)["perm"])


def numbers_match(graph: Graph, rtol: float = 1e-5, **options: Any) -> None:
    """The compiled model on onnxruntime vs the numpy reference of the (unplanned) graph."""
    rng = np.random.default_rng(0)
    dtype = options.get("dtype")
    inputs = [
        rng.standard_normal([2 if d is None else d for d in value.shape]).astype(
            {"float16": np.float16}.get(dtype or value.dtype, np.float32)
        )
        for value in graph.inputs
    ]
    actual = run_all(compile_graph(graph, **options), *inputs)
    expected = reference_outputs(graph, inputs, dtype=dtype)
    for name, y, want in zip([o.name for o in graph.outputs], actual, expected, strict=True):
        assert_close(y, want, rtol=rtol, context=name)


# --- layouts: one Transpose in, one out ----------------------------------------------------------

RNG = np.random.default_rng(3)
K3 = RNG.normal(size=(3, 3, 4, 2))
B4 = RNG.normal(size=4)
BN4 = tuple(RNG.uniform(0.5, 1.5, size=4) for _ in range(4))  # gamma, beta, mean, variance


def keras_decoder() -> Graph:
    """channels_last all the way: native conv, BatchNormalization (not foldable: after relu),
    LeakyReLU, padding, cropping, nearest upsampling, a stride-1 conv (the conv strategy), softmax."""
    config = sequential(
        conv("a", 4, 3, strides=[2, 2], padding="same", activation="relu"),
        layer("BatchNormalization", "bn", axis=-1),
        layer("LeakyReLU", "leaky", negative_slope=0.2),
        layer("ZeroPadding2D", "pad", padding=[[1, 0], [0, 2]]),
        layer("Cropping2D", "crop", cropping=[[0, 1], [1, 1]]),
        layer("UpSampling2D", "ups", size=[2, 1], interpolation="nearest"),
        conv("b", 3, 3, padding="same"),
        layer("Activation", "soft", activation="softmax"),
        input_shape=[3, 3, 2],
    )
    rng = np.random.default_rng(4)
    return graph_of(config, a=(K3, B4), bn=BN4, b=(rng.normal(size=(3, 3, 3, 4)), rng.normal(size=3)))


def two_readers() -> Graph:
    """One input read by two convolutions: it is transposed once."""
    rng = np.random.default_rng(5)
    kernels = {name: (rng.normal(size=(3, 3, 2, 3)), rng.normal(size=2)) for name in ("a", "b")}
    layers = [
        called(layer("InputLayer", "z", batch_shape=[None, 4, 4, 3])),
        called(conv("a", 2, 3, padding="same", strides=[2, 2]), "z"),
        called(conv("b", 2, 3, padding="same", strides=[2, 2]), "z"),
        called(layer("Add", "sum"), "a", "b"),
    ]
    return graph_of(functional("f", layers, ["z"], ["sum"]), **kernels)


LAYOUT_CASES: list[tuple[str, Callable[[], Graph], int, int]] = [
    # id, graph, Transposes reading the input, Transposes in all
    ("keras-decoder-channels-last", keras_decoder, 1, 2),
    ("functional-input-read-twice", two_readers, 1, 2),
    (
        "spec-chain-channels-last",
        lambda: spec_chain(
            conv2d(strides=2, padding="same", filters=4),
            conv2d(strides=1, padding="same"),  # conv strategy
            conv2d(kernel_size=4, strides=2, activation="tanh"),
            shape=[None, 3, 3, 2],
        ),
        1,
        2,
    ),
    (
        "spec-chain-channels-first",
        lambda: spec_chain(
            conv2d(strides=2, data_format="channels_first", filters=4),
            conv2d(strides=1, data_format="channels_first"),
            shape=[None, 2, 3, 3],
        ),
        0,
        0,
    ),
    (
        "spec-chain-gemm-works-in-channels-last",
        lambda: spec_chain(
            conv2d(kernel_size=2, strides=2, filters=4), conv2d(kernel_size=2, strides=2), shape=[1, 3, 3, 2]
        ),
        0,
        0,
    ),
]


@pytest.mark.parametrize(
    ("make", "reading_input", "total"),
    [pytest.param(make, n_in, n, id=case) for case, make, n_in, n in LAYOUT_CASES],
)
def test_transposes_only_at_the_edges(make: Callable[[], Graph], reading_input: int, total: int) -> None:
    graph = make()
    plan = plan_graph(graph, CompileOptions())
    found = transposes(plan)
    assert len(found) == total, [(s.scope, perm(s)) for s in found]
    inputs = {value.name for value in graph.inputs}
    assert sum(1 for s in found if s.inputs[0] in inputs) == reading_input
    if total == 2:
        rank = len(graph.inputs[0].shape)
        first, last = found
        assert plan.steps[0] is first and first.inputs == (graph.inputs[0].name,)
        assert perm(first) == [0, rank - 1, *range(1, rank - 1)]  # N, spatial, C → N, C, spatial
        assert last.output == plan.outputs[0][1] and perm(last) == [0, *range(2, rank), 1]
    numbers_match(graph)


# --- dtypes: Casts exactly where dtypes change ---------------------------------------------------

F32, MIXED, F16 = "float32", "mixed_float16", "float16"


def policy_chain(*policies: str) -> Graph:
    """Conv layers under these policies; the input in what the first takes (float32 if mixed)."""
    return spec_chain(
        *(conv2d(strides=2, padding="same", dtype=p, name=f"l{i}") for i, p in enumerate(policies)),
        shape=[None, 3, 3, 2],
        dtype=F16 if policies[0] == F16 else F32,
    )


CAST_CASES = [
    # id, layer policies, options' dtype, expected Casts (scope, to), input dtype, output dtype
    ("all-float32", (F32, F32), None, [], F32, F32),
    ("all-float16", (F16, F16), None, [], F16, F16),
    ("mixed-in-the-middle", (F32, MIXED, F32), None, [("l1", F16), ("l2", F32)], F32, F32),
    ("mixed-last-casts-the-output", (F32, MIXED), None, [("l1", F16), ("output", F32)], F32, F32),
    ("all-mixed", (MIXED, MIXED), None, [("l0", F16), ("output", F32)], F32, F32),
    ("options-float16-over-layers", (F32, MIXED, F32), F16, [], F16, F16),
    ("options-mixed-over-layers", (F32, F16), MIXED, [("l0", F16), ("output", F32)], F32, F32),
    ("options-float32-over-layers", (F16, MIXED), F32, [], F32, F32),
]


@pytest.mark.parametrize(
    ("policies", "dtype", "expected", "in_dtype", "out_dtype"),
    [pytest.param(*rest, id=case) for case, *rest in CAST_CASES],
)
def test_casts_exactly_where_dtypes_change(
    policies: tuple[str, ...],
    dtype: str | None,
    expected: list[tuple[str, str]],
    in_dtype: str,
    out_dtype: str,
) -> None:
    graph = policy_chain(*policies)
    plan = plan_graph(graph, CompileOptions(dtype=dtype))
    assert casts(plan) == expected
    assert [v.dtype for v in plan.inputs] == [in_dtype]
    assert [v.dtype for v, _ in plan.outputs] == [out_dtype]
    half = dtype in (F16, MIXED) or (dtype is None and bool({F16, MIXED} & set(policies)))
    numbers_match(graph, rtol=1e-2 if half else 1e-5, dtype=dtype)


def test_a_float32_input_before_a_float16_layer_is_cast() -> None:
    """A model's `input.dtype` is float32 unless it says otherwise, as Keras' Input."""
    graph = spec_graph(load_spec({"input": {"shape": [1, 3, 3, 2]}, "layers": [conv2d(dtype=F16)]}))
    plan = plan_graph(graph, CompileOptions())
    assert casts(plan) == [("conv2d_transpose", F16)]
    assert [v.dtype for v in plan.inputs] == [F32] and [v.dtype for v, _ in plan.outputs] == [F16]


def float16_keras_model() -> Graph:
    half = policy(F16)
    config = sequential(
        layer("Dense", "dense", units=12, dtype=half),
        layer("Reshape", "reshape", target_shape=[2, 2, 3], dtype=half),
        conv("up", 4, 3, strides=[2, 2], padding="same", activation="relu", dtype=half),
        layer("BatchNormalization", "bn", axis=-1, dtype=half),
        layer("UpSampling2D", "ups", size=[2, 2], interpolation="bilinear", dtype=half),
        input_shape=[5],
        input_dtype=F16,
    )
    rng = np.random.default_rng(6)
    return graph_of(
        config,
        dense=(rng.normal(size=(5, 12)), rng.normal(size=12)),
        up=(rng.normal(size=(3, 3, 4, 3)), rng.normal(size=4)),
        bn=BN4,
    )


@pytest.mark.parametrize(
    ("make", "dtype"),
    [
        pytest.param(float16_keras_model, None, id="keras-float16-policies"),
        pytest.param(lambda: policy_chain(F32, F32), F16, id="spec-options-float16"),
        pytest.param(lambda: policy_chain(MIXED, F32), MIXED, id="spec-options-mixed"),
    ],
)
def test_float16_nodes_hold_float16_constants(make: Callable[[], Graph], dtype: str | None) -> None:
    graph = make()
    plan = plan_graph(graph, CompileOptions(dtype=dtype))
    assert not casts(plan) or dtype == MIXED
    for step in plan.steps:
        if isinstance(step, ConvStep):
            assert step.dtype == F16 and step.layer.dtype == F16
            assert step.layer.bias is not None and step.layer.bias.dtype == np.float16, step.scope
            assert step.layer.form.weight.dtype == np.float16, step.scope  # type: ignore[union-attr]
        if isinstance(step, NodeStep):
            floats = [
                c.value.dtype for c in step.inputs if isinstance(c, Constant) and c.value.dtype.kind == "f"
            ]
            # Resize's roi and scales are float32 whatever the data's type (ONNX's signature)
            wanted = [np.float32, np.float32] if step.op_type == "Resize" else [np.float16] * len(floats)
            assert floats == wanted, (step.scope, step.op_type)
    assert any(isinstance(s, ConvStep) for s in plan.steps)
    numbers_match(graph, rtol=1e-2, dtype=dtype)


# --- BatchNormalization folding -----------------------------------------------------------------


@dataclass(frozen=True)
class FoldCase:
    id: str
    graph: Callable[[], Graph]
    folded: bool
    rtol: float = 1e-5


def conv_then_bn(conv_args: dict[str, Any] | None = None, bn_args: dict[str, Any] | None = None) -> Graph:
    conv_args = {"strides": [2, 2], "padding": "same", **(conv_args or {})}
    bn_args = {"axis": -1, **(bn_args or {})}
    channels_first = conv_args.get("data_format") == "channels_first"
    input_shape = [2, 3, 3] if channels_first else [3, 3, 2]
    on_channels = bn_args["axis"] % 4 == (1 if channels_first else 3)
    bn = BN4 if on_channels else tuple(np.random.default_rng(7).uniform(0.5, 1.5, size=(4, 6)))  # 6x6 spatial
    weights = (K3,) if conv_args.get("use_bias") is False else (K3, B4)
    config = sequential(
        conv("up", 4, 3, **conv_args), layer("BatchNormalization", "bn", **bn_args), input_shape=input_shape
    )
    return graph_of(config, up=weights, bn=bn)


def conv_read_twice(outputs: list[str]) -> Graph:
    """conv → bn, and the conv's output read again (by an Add, or as a model output)."""
    layers = [
        called(layer("InputLayer", "z", batch_shape=[None, 3, 3, 2])),
        called(conv("up", 4, 3, strides=[2, 2], padding="same"), "z"),
        called(layer("BatchNormalization", "bn", axis=-1), "up"),
    ]
    if "sum" in outputs:
        layers.append(called(layer("Add", "sum"), "bn", "up"))
    return graph_of(functional("f", layers, ["z"], outputs), up=(K3, B4), bn=BN4)


def dense_then_bn(activation: str) -> Graph:
    config = sequential(
        layer("Dense", "dense", units=4, activation=activation),
        layer("BatchNormalization", "bn", axis=-1),
        input_shape=[5],
    )
    return graph_of(config, dense=(np.random.default_rng(8).normal(size=(5, 4)), B4), bn=BN4)


FOLD_CASES = [
    FoldCase("conv-linear-channels-last", conv_then_bn, True),
    FoldCase("conv-without-bias", lambda: conv_then_bn({"use_bias": False}), True),
    FoldCase("conv-channels-first-axis-1", lambda: conv_then_bn({"data_format": "channels_first"}, {"axis": 1}), True),
    FoldCase("dense-linear", lambda: dense_then_bn("linear"), True),
    FoldCase("both-mixed-policy", lambda: conv_then_bn({"dtype": policy(MIXED)}, {"dtype": policy(MIXED)}), True, 1e-2),
    FoldCase("conv-not-linear", lambda: conv_then_bn({"activation": "relu"}), False),
    FoldCase("dense-not-linear", lambda: dense_then_bn("relu"), False),
    FoldCase("bn-on-a-spatial-axis", lambda: conv_then_bn(bn_args={"axis": 1}), False),
    FoldCase("bn-on-a-spatial-axis-channels-first", lambda: conv_then_bn({"data_format": "channels_first"}), False),
    FoldCase("conv-output-also-added", lambda: conv_read_twice(["sum"]), False),
    FoldCase("conv-output-also-a-model-output", lambda: conv_read_twice(["bn", "up"]), False),
    FoldCase("other-policy", lambda: conv_then_bn(bn_args={"dtype": policy(MIXED)}), False, 1e-2),
]  # fmt: skip


@pytest.mark.parametrize("case", FOLD_CASES, ids=[c.id for c in FOLD_CASES])
def test_batch_norm_folds_only_where_its_conditions_hold(case: FoldCase) -> None:
    graph = case.graph()
    plan = plan_graph(graph, CompileOptions())
    # (the model's output named "bn" also takes the scope "bn", for its Transpose back)
    assert [op for op in node_ops(plan, "bn") if op != "Transpose"] == ([] if case.folded else ["Mul", "Add"])
    producer = next(s for s in plan.steps if s.scope in ("up", "dense") and not isinstance(s, CastStep))
    if case.folded and isinstance(producer, ConvStep):
        assert producer.layer.bias is not None, "the folded shift becomes the conv's bias"
    numbers_match(graph, rtol=case.rtol)


def test_folded_batch_norm_numbers_by_hand() -> None:
    """Keras' inference formula written out: (conv(x) - mean) / sqrt(variance + eps) * gamma + beta."""
    graph = conv_then_bn()
    gamma, beta, mean, variance = BN4
    x = np.random.default_rng(1).standard_normal((2, 3, 3, 2)).astype(np.float32)
    y = reference.conv_transpose(
        x, K3, B4, strides=(2, 2), padding="same", output_padding=None, dilation_rate=(1, 1),
        data_format="channels_last",
    )  # fmt: skip
    expected = (y - mean) / np.sqrt(variance + 1e-3) * gamma + beta
    model = compile_graph(graph)
    assert [n.op_type for n in model.graph.node].count("Mul") == 0
    (actual,) = run_all(model, x)
    assert_close(actual, expected)


# --- strategies: command line over layer over model over auto -----------------------------------

# k2 s2 valid on a static 4x4 channels_last input: native, subpixel and gemm apply; auto takes gemm
STRATEGY_PRECEDENCE = [
    # id, model's, layer's, options', requested, chosen
    ("auto-by-default", None, None, None, "auto", "gemm"),
    ("model", "native", None, None, "native", "native"),
    ("layer-over-model", "native", "subpixel", None, "subpixel", "subpixel"),
    ("options-over-layer-and-model", "native", "subpixel", "gemm", "gemm", "gemm"),
    ("options-alone", None, None, "native", "native", "native"),
    ("options-auto-over-layer-and-model", "subpixel", "native", "auto", "auto", "gemm"),
    ("layer-auto-over-model", "native", "auto", None, "auto", "gemm"),
    ("options-tune-over-layer", None, "native", "tune", "tune", "subpixel"),  # the tuner's pick
]


@pytest.mark.parametrize(
    ("model", "layer_strategy", "option", "requested", "chosen"),
    [pytest.param(*rest, id=case) for case, *rest in STRATEGY_PRECEDENCE],
)
def test_strategy_precedence(
    model: str | None, layer_strategy: str | None, option: str | None, requested: str, chosen: str
) -> None:
    args = conv2d(name="up", kernel_size=2, strides=2)
    if layer_strategy is not None:
        args["strategy"] = layer_strategy
    graph = spec_chain(args, shape=[1, 4, 4, 3], **({} if model is None else {"strategy": model}))
    options = CompileOptions(strategy=option)
    node = graph.nodes[0]
    assert requested_strategy(options, node.op.layer, graph) == requested  # type: ignore[union-attr]
    plan = plan_graph(graph, options, {"up": "subpixel"} if requested == "tune" else None)
    assert dict(plan.strategies) == {"up": chosen}
    (step,) = [s for s in plan.steps if isinstance(s, ConvStep)]
    assert step.layer.strategy == chosen


def test_each_layer_gets_its_own_strategy() -> None:
    graph = spec_chain(
        conv2d(name="a", kernel_size=2, strides=2, strategy="subpixel"),
        conv2d(name="b", kernel_size=2, strides=2),
        conv2d(name="c", strides=1, padding="same"),
        shape=[1, 4, 4, 3],
        strategy="native",
    )
    assert dict(plan_graph(graph, CompileOptions()).strategies) == {
        "a": "subpixel",
        "b": "native",
        "c": "native",
    }
    assert dict(plan_graph(graph, CompileOptions(strategy="auto")).strategies) == {
        "a": "gemm",
        "b": "gemm",
        "c": "conv",
    }


def one_layer(**args: Any) -> Any:
    shape = args.pop("shape", [1, 4, 4, 3])
    return spec_chain(conv2d(name="up", **args), shape=shape).nodes[0].op.layer  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "strategy", "fragment"),
    [
        pytest.param({"strides": 2}, "conv", "conv needs stride 1, the strides are (2, 2)", id="conv-stride-2"),
        pytest.param({"strides": 1}, "subpixel", "subpixel needs a 2-D layer with equal strides > 1", id="subpixel-stride-1"),
        pytest.param({"strides": [2, 3]}, "subpixel", "equal strides > 1, the strides are (2, 3)", id="subpixel-unequal"),
        pytest.param({"strides": 2}, "gemm", "gemm needs kernel_size == strides", id="gemm-overlap"),
        pytest.param({"kernel_size": 2, "strides": 2, "output_padding": 1}, "gemm", "gemm needs a layer that crops nothing", id="gemm-extended"),
        pytest.param({"kernel_size": 2, "strides": 2, "shape": [1, None, 4, 3]}, "gemm", "gemm needs static spatial input sizes", id="gemm-dynamic"),
        pytest.param({}, "tune", "unknown strategy 'tune'", id="tune-is-not-a-strategy-here"),
    ],
)  # fmt: skip
def test_choose_strategy_refuses_naming_the_layer(args: dict[str, Any], strategy: str, fragment: str) -> None:
    with pytest.raises(CompileError, match="^layer 'up': ") as caught:
        choose_strategy(one_layer(**args), strategy, "cpu", "float32")
    assert fragment in str(caught.value)


def test_a_refused_strategy_through_plan_graph_names_the_layer() -> None:
    graph = spec_chain(conv2d(name="a", strides=1), conv2d(name="b", strides=2), shape=[1, 3, 3, 2])
    with pytest.raises(CompileError, match="^layer 'b': strategy 'conv' does not apply: conv needs stride 1"):
        plan_graph(graph, CompileOptions(strategy="conv"))


@pytest.mark.parametrize(
    ("args", "target", "dtype", "chosen"),
    [
        pytest.param({"kernel_size": 2, "strides": 2}, "cpu", "float32", "gemm", id="cpu-float32-gemm"),
        pytest.param({"strides": 1}, "cpu", "float32", "conv", id="cpu-float32-stride-1-conv"),
        pytest.param({"strides": 2}, "cpu", "float32", "native", id="cpu-float32-overlap-native"),
        pytest.param(
            {"kernel_size": 2, "strides": 2, "data_format": "channels_first", "shape": [1, 3, 4, 4]},
            "cpu",
            "float32",
            "native",
            id="cpu-channels-first-no-gemm",
        ),  # fmt: skip
        pytest.param({"strides": 1}, "cuda", "float32", "native", id="cuda-keeps-native"),
        pytest.param({"strides": 1}, "cpu", "float16", "native", id="float16-keeps-native"),
        pytest.param({"strides": 1}, "cpu", "float64", "native", id="float64-keeps-native"),
    ],
)
def test_auto_strategy(args: dict[str, Any], target: str, dtype: str, chosen: str) -> None:
    assert choose_strategy(one_layer(**args), "auto", target, dtype) == chosen


def test_tune_without_timings_is_an_internal_error() -> None:
    graph = spec_chain(conv2d(name="up", kernel_size=2, strides=2), shape=[1, 4, 4, 3])
    with pytest.raises(InternalError, match="layer 'up' asks for tune but was not timed"):
        plan_graph(graph, CompileOptions(strategy="tune"))
    with pytest.raises(InternalError, match="not timed"):
        plan_graph(graph, CompileOptions(strategy="tune"), {"other": "native"})
    assert dict(plan_graph(graph, CompileOptions(strategy="tune"), {"up": "subpixel"}).strategies) == {
        "up": "subpixel"
    }


def test_a_tuned_choice_is_still_checked_against_the_layer() -> None:
    graph = spec_chain(conv2d(name="up", strides=2), shape=[1, 4, 4, 3])
    with pytest.raises(CompileError, match="layer 'up': strategy 'conv' does not apply"):
        plan_graph(graph, CompileOptions(strategy="tune"), {"up": "conv"})


def test_an_unresolved_target_is_an_internal_error() -> None:
    graph = spec_chain(conv2d(), shape=[1, 3, 3, 2])
    with pytest.raises(InternalError, match="plan_graph needs a resolved target, got 'auto'"):
        plan_graph(graph, CompileOptions(target="auto"))


# --- weights --------------------------------------------------------------------------------------


def test_initializer_weights_are_seeded_by_options_else_the_model() -> None:
    graph = spec_chain(
        conv2d(name="a"), conv2d(name="b", weights=[K3[:, :, :2, :2].tolist(), [1.0, 2.0]]), conv2d(name="c", seed=9),
        shape=[1, 3, 3, 2], seed=4,
    )  # fmt: skip
    origins = plan_graph(graph, CompileOptions()).weight_origins
    assert dict(origins) == {"a": "initializers (seed 4000)", "b": "inline", "c": "initializers (seed 9)"}
    assert dict(plan_graph(graph, CompileOptions(seed=5)).weight_origins)["a"] == "initializers (seed 5000)"

    def kernels(options: CompileOptions) -> dict[str, np.ndarray]:
        plan = plan_graph(graph, options)
        return {s.scope: s.layer.form.weight for s in plan.steps if isinstance(s, ConvStep)}  # type: ignore[union-attr]

    seeded, again, other = (
        kernels(CompileOptions(seed=5)),
        kernels(CompileOptions(seed=5)),
        kernels(CompileOptions(seed=6)),
    )
    np.testing.assert_array_equal(seeded["a"], again["a"])
    assert not np.array_equal(seeded["a"], other["a"])
    np.testing.assert_array_equal(seeded["b"], other["b"])  # given weights do not depend on the seed
    np.testing.assert_array_equal(seeded["c"], other["c"])  # the layer's own seed wins


def test_weights_beyond_the_compute_dtype_are_an_error_not_infinities() -> None:
    graph = graph_of(
        sequential(layer("Dense", "d", units=2), input_shape=[3]), d=(np.full((3, 2), 1e6), np.zeros(2))
    )
    assert plan_graph(graph, CompileOptions()).steps  # float32 holds them
    with pytest.raises(CompileError, match=r"layer 'd': its d/kernel holds values beyond the float16 range"):
        plan_graph(graph, CompileOptions(dtype="float16"))
