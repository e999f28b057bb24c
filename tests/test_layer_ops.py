"""The layers of whole networks (convolutions, pooling, normalizations, merges, axes) and the
keras.ops ops, through their parsers (`keras_layers.LAYER_PARSERS`) or built as IR ops, compiled
and run on onnxruntime against the numpy reference (`verification`'s), within 1e-5 of the
output's scale; and the structure the planner promises: no Transpose inside a channels_last
network, BatchNormalization folded into convolutions, ReLU6 as one Clip, opset-dependent forms.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import pytest

from deconv_compiler import reference
from deconv_compiler.conv_layer import Problems
from deconv_compiler.dtypes import compute_dtype, io_dtype
from deconv_compiler.encoder_plans import same_pads
from deconv_compiler.errors import Problem
from deconv_compiler.ir import (
    ClipOp,
    ExpandDimsOp,
    Graph,
    KerasOrigin,
    MergeOp,
    Node,
    Op,
    Output,
    PermuteOp,
    ScalarOp,
    Shape,
    SliceOp,
    SqueezeOp,
    Value,
)
from deconv_compiler.keras_call import LayerCall
from deconv_compiler.keras_layers import LAYER_PARSERS
from deconv_compiler.options import CompileOptions
from deconv_compiler.plan import ViewStep
from deconv_compiler.planner import plan_graph
from deconv_compiler.verification import reference_outputs
from tests.onnx_run import assert_close, compile_graph, run_all

F32, F16, MIXED = "float32", "float16", "mixed_float16"
RNG = np.random.default_rng(11)


def w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# --- building small graphs through the parsers ----------------------------------------------------


def parse(
    kind: str, config: dict[str, Any], *shapes: Shape, weights: Any = None, policy: str = F32
) -> tuple[Op, Shape]:
    problems = Problems(lambda path, message: Problem(path, message))
    call = LayerCall("layer", kind, config, (f"layer ({kind})",), shapes, weights, policy, problems)
    result = LAYER_PARSERS[kind](call)
    assert result is not None and not problems.found, [str(p) for p in problems.found]
    return result


def refusal(kind: str, config: dict[str, Any], *shapes: Shape, weights: Any = None) -> str:
    problems = Problems(lambda path, message: Problem(path, message))
    call = LayerCall("layer", kind, config, (f"layer ({kind})",), shapes, weights, F32, problems)
    assert LAYER_PARSERS[kind](call) is None
    assert problems.found
    return "; ".join(str(p) for p in problems.found)


class Net:
    """A graph built layer by layer: each `add` parses a Keras layer on the named values (the
    last one by default), each `op` adds an IR op with its output shape (keras.ops' ops)."""

    def __init__(self, **inputs: Shape) -> None:
        self.values = {name: Value(name, shape, F32) for name, shape in inputs.items()}
        self.inputs = tuple(self.values.values())
        self.nodes: list[Node] = []
        self.io_dtypes = {name: F32 for name in inputs}
        self.last = next(iter(inputs))

    def add(
        self,
        kind: str,
        config: dict[str, Any] | None = None,
        weights: Any = None,
        *,
        on: Sequence[str] = (),
        policy: str = F32,
        name: str | None = None,
    ) -> str:
        sources = tuple(on) or (self.last,)
        op, shape = parse(
            kind, config or {}, *(self.values[s].shape for s in sources), weights=weights, policy=policy
        )
        return self._node(name or f"{kind.lower()}_{len(self.nodes)}", kind, op, shape, sources, policy)

    def op(self, op: Op, shape: Shape, *, on: Sequence[str] = (), policy: str = F32) -> str:
        sources = tuple(on) or (self.last,)
        return self._node(
            f"{type(op).__name__.lower()}_{len(self.nodes)}", type(op).__name__, op, shape, sources, policy
        )

    def _node(self, name: str, kind: str, op: Op, shape: Shape, sources: tuple[str, ...], policy: str) -> str:
        value = Value(name, shape, compute_dtype(policy))
        self.nodes.append(Node(name, kind, op, sources, value, policy))
        self.values[name] = value
        self.io_dtypes[name] = io_dtype(policy)
        self.last = name
        return name

    def graph(self, *outputs: str) -> Graph:
        names = outputs or (self.last,)
        graph_outputs = tuple(
            Output(f"out{i}" if len(names) > 1 else "y", n, self.values[n].shape, self.io_dtypes[n])
            for i, n in enumerate(names)
        )
        return Graph(
            "net", self.inputs, tuple(self.nodes), graph_outputs, KerasOrigin("net.keras", "keras", "3.15.1")
        )


def concrete(shape: Shape, fill: int = 7) -> tuple[int, ...]:
    return tuple((2 if axis == 0 else fill) if d is None else d for axis, d in enumerate(shape))


def numbers_match(graph: Graph, rtol: float = 1e-5, fill: int = 7, **options: Any) -> onnx.ModelProto:
    """Compiled on onnxruntime vs the reference; each output's known sizes as declared."""
    rng = np.random.default_rng(0)
    dtype = np.float16 if options.get("dtype") == F16 else np.float32
    inputs = [rng.standard_normal(concrete(v.shape, fill)).astype(dtype) for v in graph.inputs]
    model = compile_graph(graph, **options)
    actual = run_all(model, *inputs)
    expected = reference_outputs(graph, inputs, dtype=options.get("dtype"))
    for output, got, want in zip(graph.outputs, actual, expected, strict=True):
        assert all(d is None or d == g for d, g in zip(output.shape, got.shape, strict=True)), (
            output.shape,
            got.shape,
        )
        assert_close(got, want, rtol=rtol, context=output.name)
    return model


def ops_of(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def attrs_of(model: onnx.ModelProto, op_type: str) -> list[dict[str, Any]]:
    return [
        {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        for node in model.graph.node
        if node.op_type == op_type
    ]


def image(rank: int, channels: int, channels_first: bool, sizes: Sequence[int | None]) -> Shape:
    spatial = tuple(sizes[:rank])
    return (None, channels, *spatial) if channels_first else (None, *spatial, channels)


FORMATS = {"cl": "channels_last", "cf": "channels_first"}


# --- pure arithmetic: Keras' `same` ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "kernel", "stride", "dilation", "pads"),
    [
        (7, 3, 1, 1, (1, 1)), (7, 4, 1, 1, (1, 2)), (None, 4, 1, 2, (3, 3)), (7, 3, 2, 1, (1, 1)),
        (8, 3, 2, 1, (0, 1)), (5, 1, 2, 1, (0, 0)), (5, 2, 3, 1, (0, 0)), (4, 2, 3, 1, (0, 1)), (7, 3, 2, 2, (2, 2)),
        (None, 3, 2, 1, None),
    ],
)  # fmt: skip
def test_same_pads_are_lax_same(
    length: int | None, kernel: int, stride: int, dilation: int, pads: Any
) -> None:
    assert same_pads(length, kernel, stride, dilation) == pads
    if length is not None:
        assert pads == reference.keras_window_padding(length, kernel, stride, dilation, "same")


# --- convolutions ---------------------------------------------------------------------------------

# (kernel, strides, dilation, groups)
CONV_GEOMETRIES = [(3, 1, 1, 1), (3, 2, 1, 2), (2, 3, 1, 1), (3, 1, 2, 1), (4, 2, 1, 4), (1, 2, 1, 1)]
SIZES = {1: (11,), 2: (7, 6), 3: (5, 4, 6)}


def conv_cases() -> list[Any]:
    cases = []
    for rank, fmt, (k, s, d, g), dynamic in itertools.product(
        (1, 2), FORMATS, CONV_GEOMETRIES, (False, True)
    ):
        for padding in ("valid", "same", "causal") if rank == 1 else ("valid", "same"):
            cases.append(
                pytest.param(
                    rank,
                    fmt,
                    padding,
                    k,
                    s,
                    d,
                    g,
                    dynamic,
                    id=f"{rank}d-{fmt}-{padding}-k{k}s{s}d{d}g{g}{'-dyn' if dynamic else ''}",
                )
            )
    for fmt, padding, (k, s, d, g) in itertools.product(FORMATS, ("valid", "same"), CONV_GEOMETRIES[:3]):
        cases.append(
            pytest.param(3, fmt, padding, k, s, d, g, False, id=f"3d-{fmt}-{padding}-k{k}s{s}d{d}g{g}")
        )
    return cases


@pytest.mark.parametrize(("rank", "fmt", "padding", "k", "s", "d", "g", "dynamic"), conv_cases())
def test_conv(rank: int, fmt: str, padding: str, k: int, s: int, d: int, g: int, dynamic: bool) -> None:
    channels_first = fmt == "cf"
    sizes = [None] * rank if dynamic else SIZES[rank]
    net = Net(x=image(rank, 4, channels_first, sizes))
    config = {
        "filters": 8,
        "kernel_size": k,
        "strides": s,
        "dilation_rate": d,
        "groups": g,
        "padding": padding,
        "data_format": FORMATS[fmt],
    }
    net.add(f"Conv{rank}D", config, (w(*[k] * rank, 4 // g, 8), w(8)))
    model = numbers_match(net.graph(), fill=9)
    assert ops_of(model).count("Transpose") == (0 if channels_first else 2)
    (attrs,) = attrs_of(model, "Conv")
    assert attrs["group"] == g
    assert ("auto_pad" in attrs) == (dynamic and padding == "same" and s > 1)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid", "tanh", "relu6", "glu", "softmax"])
def test_conv_activation_is_the_next_node(activation: str) -> None:
    net = Net(x=(None, 6, 6, 3))
    net.add(
        "Conv2D",
        {"filters": 4, "kernel_size": 3, "padding": "same", "activation": activation},
        (w(3, 3, 3, 4), w(4)),
    )
    model = numbers_match(net.graph())
    ops = ops_of(model)
    assert ops[:2] == ["Transpose", "Conv"] and ops.count("Conv") == 1 and ops.count("Add") == 0
    expected = {
        "relu": "Relu",
        "leaky_relu": "LeakyRelu",
        "sigmoid": "Sigmoid",
        "tanh": "Tanh",
        "relu6": "Clip",
    }
    if activation in expected:
        assert ops[2] == expected[activation]


def test_conv_without_bias() -> None:
    net = Net(x=(None, 9, 4))
    net.add(
        "Conv1D",
        {"filters": 3, "kernel_size": 3, "padding": "causal", "use_bias": False, "dilation_rate": 2},
        (w(3, 4, 3),),
    )
    model = numbers_match(net.graph())
    (conv,) = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(conv.input) == 2


@pytest.mark.parametrize(
    ("rank", "fmt", "padding", "k", "s", "d", "mult", "dynamic"),
    [
        pytest.param(rank, fmt, padding, k, s, d, m, dyn, id=f"{rank}d-{fmt}-{padding}-k{k}s{s}d{d}m{m}{'-dyn' if dyn else ''}")
        for rank, fmt, padding, (k, s, d, m), dyn in itertools.product(
            (1, 2), FORMATS, ("valid", "same"), [(3, 1, 1, 1), (3, 2, 1, 2), (3, 2, 2, 1), (2, 1, 3, 3)], (False, True)
        )
        if not (dyn and padding == "same" and s > 1 and d > 1)  # refused: see REFUSALS
    ],
)  # fmt: skip
def test_depthwise_conv_against_keras_kernel_layout(
    rank: int, fmt: str, padding: str, k: int, s: int, d: int, mult: int, dynamic: bool
) -> None:
    """Keras lets strides > 1 and dilation > 1 go together in depthwise convs; the reference
    reads Keras' own kernel (k..., in, multiplier), so the parser's reshape is checked too."""
    channels_first = fmt == "cf"
    shape = image(rank, 3, channels_first, [None] * rank if dynamic else (11, 10))
    kernel, bias = w(*[k] * rank, 3, mult), w(3 * mult)
    config = {
        "kernel_size": k,
        "strides": s,
        "dilation_rate": d,
        "depth_multiplier": mult,
        "padding": padding,
        "data_format": FORMATS[fmt],
    }
    net = Net(x=shape)
    net.add(f"DepthwiseConv{rank}D", config, (kernel, bias))
    graph = net.graph()
    x = np.random.default_rng(1).standard_normal(concrete(shape, 11)).astype(np.float32)
    (actual,) = run_all(compile_graph(graph), x)
    expected = reference.depthwise_conv(
        x,
        kernel,
        bias,
        strides=(s,) * rank,
        padding=padding,
        dilation_rate=(d,) * rank,
        data_format=FORMATS[fmt],
    )
    assert_close(actual, expected)
    numbers_match(graph, fill=11)


@pytest.mark.parametrize(
    ("rank", "fmt", "padding", "s", "mult", "bias"),
    [
        pytest.param(rank, fmt, padding, s, m, b, id=f"{rank}d-{fmt}-{padding}-s{s}-m{m}{'' if b else '-nobias'}")
        for rank, fmt, padding, (s, m, b) in itertools.product((1, 2), FORMATS, ("valid", "same"), [(1, 1, True), (2, 2, True), (1, 3, False)])
    ],
)  # fmt: skip
def test_separable_conv(rank: int, fmt: str, padding: str, s: int, mult: int, bias: bool) -> None:
    channels_first = fmt == "cf"
    net = Net(x=image(rank, 3, channels_first, (9, 8)))
    weights = (w(*[3] * rank, 3, mult), w(*[1] * rank, 3 * mult, 5), *((w(5),) if bias else ()))
    config = {
        "filters": 5,
        "kernel_size": 3,
        "strides": s,
        "depth_multiplier": mult,
        "padding": padding,
        "data_format": FORMATS[fmt],
        "use_bias": bias,
        "activation": "relu",
    }
    net.add(f"SeparableConv{rank}D", config, weights)
    model = numbers_match(net.graph())
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2 and len(convs[0].input) == 2 and len(convs[1].input) == (3 if bias else 2)
    assert ops_of(model)[ops_of(model).index("Conv") + 2] == "Relu"


# --- pooling --------------------------------------------------------------------------------------


def pool_cases() -> list[Any]:
    cases = []
    for rank, fmt, function, padding, (k, s), dynamic in itertools.product(
        (1, 2, 3),
        FORMATS,
        ("max", "average"),
        ("valid", "same"),
        [(2, None), (3, 2), (3, 1), (2, 3)],
        (False, True),
    ):
        if rank == 3 and (dynamic or k == 3):
            continue
        cases.append(
            pytest.param(
                rank,
                fmt,
                function,
                padding,
                k,
                s,
                dynamic,
                id=f"{rank}d-{fmt}-{function}-{padding}-k{k}s{s}{'-dyn' if dynamic else ''}",
            )
        )
    return cases


@pytest.mark.parametrize(("rank", "fmt", "function", "padding", "k", "s", "dynamic"), pool_cases())
def test_pooling(
    rank: int, fmt: str, function: str, padding: str, k: int, s: int | None, dynamic: bool
) -> None:
    """Odd sizes: `same` pads unevenly, and an average at the edge counts only real elements."""
    kind = f"{'Max' if function == 'max' else 'Average'}Pooling{rank}D"
    net = Net(x=image(rank, 3, fmt == "cf", [None] * rank if dynamic else (7, 5, 5)))
    net.add(kind, {"pool_size": k, "strides": s, "padding": padding, "data_format": FORMATS[fmt]})
    model = numbers_match(net.graph())
    (attrs,) = attrs_of(model, "MaxPool" if function == "max" else "AveragePool")
    assert attrs["strides"] == [s or k] * rank
    if function == "average":
        assert attrs["count_include_pad"] == 0


def test_max_pooling_defaults_and_strides_default_to_pool_size() -> None:
    op, shape = parse("MaxPooling2D", {}, (None, 7, 5, 3))
    assert (op.pool_size, op.strides, shape) == ((2, 2), (2, 2), (None, 3, 2, 3))  # type: ignore[union-attr]
    op, shape = parse("AveragePooling1D", {"pool_size": 3, "strides": None, "padding": "same"}, (None, 7, 3))
    assert (op.strides, shape) == ((3,), (None, 3, 3))  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("rank", "fmt", "function", "keepdims", "after_conv"),
    [
        pytest.param(r, f, fn, keep, conv, id=f"{r}d-{f}-{fn}{'-keepdims' if keep else ''}{'-after-conv' if conv else ''}")
        for r, f, fn, keep, conv in itertools.product((1, 2, 3), FORMATS, ("max", "average"), (False, True), (False, True))
    ],
)  # fmt: skip
def test_global_pooling_in_any_layout(
    rank: int, fmt: str, function: str, keepdims: bool, after_conv: bool
) -> None:
    channels_first = fmt == "cf"
    net = Net(x=image(rank, 3, channels_first, (5, 4, 3)))
    if after_conv:  # the pooling reads the conv's N,C,spatial layout: no Transpose before it
        net.add(
            f"Conv{rank}D",
            {"filters": 4, "kernel_size": 1, "data_format": FORMATS[fmt]},
            (w(*[1] * rank, 3, 4), w(4)),
        )
    kind = f"Global{'Max' if function == 'max' else 'Average'}Pooling{rank}D"
    net.add(kind, {"data_format": FORMATS[fmt], "keepdims": keepdims})
    model = numbers_match(net.graph())
    transposes = ops_of(model).count("Transpose")
    if not after_conv or channels_first:
        assert transposes == 0
    else:  # the input's; with keepdims also the output's (its size-1 axes sit after the channels)
        assert transposes == (2 if keepdims else 1)


# --- merges ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_merge_layers(kind: str, count: int) -> None:
    """Inputs in different layouts (one after a channels_last conv), one broadcast on an axis."""
    if kind == "Subtract" and count != 2:
        assert "exactly 2 inputs" in refusal(kind, {}, *[(None, 4, 4, 3)] * count)
        return
    net = Net(a=(None, 4, 4, 3), b=(None, 4, 1, 3), c=(None, 4, 4, 3))
    conv = net.add("Conv2D", {"filters": 3, "kernel_size": 1}, (w(1, 1, 3, 3), w(3)), on=["a"])
    names = [conv, "b", "c"][:count]
    out = net.add(kind, {}, on=names)
    assert net.values[out].shape == (None, 4, 4, 3)
    model = numbers_match(net.graph())
    if kind in ("Maximum", "Minimum") and count == 3:
        assert ops_of(model).count("Max" if kind == "Maximum" else "Min") == 1  # variadic


def test_merge_shapes_follow_keras() -> None:
    """None wherever an input's size is None (Keras does not guess); the one known batch size."""
    assert parse("Add", {}, (None, 4, None, 1), (3, None, 5, 2))[1] == (3, None, None, 2)
    assert parse("Multiply", {}, (None, 1, 1), (None, 1, 6))[1] == (None, 1, 6)
    assert "different batch sizes" in refusal("Add", {}, (2, 3), (4, 3))
    assert "incompatible shapes" in refusal("Maximum", {}, (None, 3), (None, 4))
    assert "different ranks" in refusal("Average", {}, (None, 3), (None, 2, 3))


# --- normalizations -------------------------------------------------------------------------------


def with_conv(channels_first: bool = False, shape: Shape = (None, 5, 4, 6)) -> Net:
    """A conv first, so the layer under test reads the internal N,C,spatial layout."""
    net = Net(x=shape)
    channels = shape[1] if channels_first else shape[-1]
    assert channels is not None
    fmt = FORMATS["cf" if channels_first else "cl"]
    net.add(
        "Conv2D",
        {"filters": channels, "kernel_size": 1, "data_format": fmt},
        (w(1, 1, channels, channels), w(channels)),
    )
    return net


@pytest.mark.parametrize(
    ("axis", "center", "scale", "rms", "after_conv"),
    [
        pytest.param(axis, c, s, rms, conv, id=f"axis{axis}-c{int(c)}s{int(s)}{'-rms' if rms else ''}{'-after-conv' if conv else ''}")
        for axis, (c, s, rms), conv in itertools.product(
            [-1, [1, 3], [-1, 1], [1, 2, 3], 2, [0, 3]], [(True, True, False), (False, True, False), (True, False, False), (False, False, False), (True, True, True)], (False, True)
        )
    ],
)  # fmt: skip
def test_layer_normalization(axis: Any, center: bool, scale: bool, rms: bool, after_conv: bool) -> None:
    """Mixed-sign axis lists: Keras builds gamma in `sorted(axis)` order and reinterprets it
    (not transposes) into the axes' order; [0, 3] normalizes over the batch too."""
    shape: Shape = (2, 5, 4, 6)
    net = with_conv(shape=shape) if after_conv else Net(x=shape)
    items = axis if isinstance(axis, list) else [axis]
    built = tuple(int(shape[a] or 0) for a in sorted(items))
    weights = tuple(w(*built) for _ in range(int(scale or rms) + int(center and not rms)))
    net.add(
        "LayerNormalization",
        {"axis": axis, "center": center, "scale": scale, "rms_scaling": rms, "epsilon": 0.01},
        weights,
    )
    model = numbers_match(net.graph())
    assert "LayerNormalization" not in ops_of(model) and ops_of(model).count("Transpose") == (
        2 if after_conv else 0
    )


def test_layer_normalization_under_float16_computes_in_float32() -> None:
    net = Net(x=(None, 4, 4, 6))
    net.add("Conv2D", {"filters": 6, "kernel_size": 3, "padding": "same"}, (w(3, 3, 6, 6), w(6)), policy=F16)
    net.add("LayerNormalization", {"axis": -1}, (w(6), w(6)), policy=F16)
    net.add("GroupNormalization", {"groups": 3}, (w(6), w(6)), policy=F16)
    model = numbers_match(net.graph(), rtol=1e-2, dtype=F16)
    reductions = [n for n in model.graph.node if n.op_type == "ReduceMean"]
    assert len(reductions) == 4
    casts = [onnx.helper.get_attribute_value(n.attribute[0]) for n in model.graph.node if n.op_type == "Cast"]
    assert casts == [onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16] * 2


def test_layer_normalization_under_mixed_float16_reads_float32_uncast() -> None:
    """Keras' LayerNormalization has autocast=False: a float32 input is normalized as it is,
    the result cast to float16 (then to float32 as the model's output)."""
    net = Net(x=(None, 4, 6))
    net.add("LayerNormalization", {"axis": -1}, (w(6), w(6)), policy=MIXED)
    net.add("Dense", {"units": 3}, (w(6, 3), w(3)), policy=MIXED)
    model = numbers_match(net.graph(), rtol=1e-2)
    ops = ops_of(model)
    assert ops[0] == "ReduceMean" and ops.count("Cast") == 2  # to float16 after the norm, float32 out


@pytest.mark.parametrize(
    ("groups", "axis", "channels_first", "after_conv", "shape"),
    [
        pytest.param(2, -1, False, False, (None, 5, 4, 6), id="g2-last"),
        pytest.param(3, -1, False, True, (None, 5, 4, 6), id="g3-last-after-conv"),
        pytest.param(-1, -1, False, True, (None, 5, 4, 6), id="instance-norm"),
        pytest.param(1, -1, False, False, (None, 5, 4, 6), id="layer-norm-like"),
        pytest.param(2, 1, True, True, (None, 6, 5, 4), id="channels-first-after-conv"),
        pytest.param(2, 1, True, False, (None, 6, None, None), id="channels-first-dynamic"),
        pytest.param(3, 2, False, False, (None, 5, 6, 4), id="a-spatial-axis"),
        pytest.param(2, -1, False, False, (None, 6), id="2d"),
        pytest.param(2, -1, False, False, (None, None, 8), id="1d-dynamic"),
    ],
)  # fmt: skip
def test_group_normalization(
    groups: int, axis: int, channels_first: bool, after_conv: bool, shape: Shape
) -> None:
    net = with_conv(channels_first, shape) if after_conv else Net(x=shape)
    size = shape[axis]
    assert size is not None
    net.add("GroupNormalization", {"groups": groups, "axis": axis, "epsilon": 1e-3}, (w(size), w(size)))
    model = numbers_match(net.graph())
    if after_conv:
        assert ops_of(model).count("Transpose") == (0 if channels_first else 2)


@pytest.mark.parametrize("axis", [-1, [1, 2], 1, [0, 3]])
@pytest.mark.parametrize("after_conv", [False, True])
def test_unit_normalization(axis: Any, after_conv: bool) -> None:
    net = with_conv() if after_conv else Net(x=(2, 5, 4, 6))
    net.add("UnitNormalization", {"axis": axis})
    model = numbers_match(net.graph())
    assert "ReduceSumSquare" in ops_of(model) and "Min" in ops_of(model)  # Keras' cap 1 / 1e-12


@pytest.mark.parametrize(
    ("scale", "offset"),
    [
        pytest.param(1 / 255, 0.0, id="scalar-no-offset"),
        pytest.param(2.0, -1.0, id="scalar"),
        pytest.param([0.5, 1.5, 2.0, 1.0, 3.0, 0.25], [1.0, 0.0, -1.0, 2.0, 0.5, 0.0], id="per-channel"),
        pytest.param(
            {
                "class_name": "__numpy__",
                "config": {"value": [[1.0], [2.0], [3.0], [4.0]], "dtype": "float64"},
            },
            [0.5],
            id="numpy-rows",
        ),
    ],
)
@pytest.mark.parametrize("after_conv", [False, True])
def test_rescaling(scale: Any, offset: Any, after_conv: bool) -> None:
    net = with_conv() if after_conv else Net(x=(None, 5, 4, 6))
    net.add("Rescaling", {"scale": scale, "offset": offset})
    model = numbers_match(net.graph())
    assert ops_of(model).count("Add") == (0 if offset == 0.0 else 1)  # the conv's bias is in the Conv


@pytest.mark.parametrize(
    ("config", "weights", "after_conv"),
    [
        pytest.param({"axis": -1}, (w(6), np.abs(w(6)), np.array(10)), True, id="adapted-channels"),
        pytest.param({"axis": [1, -1]}, (w(5, 6), np.abs(w(5, 6)), np.array(10)), False, id="adapted-two-axes"),
        pytest.param({"axis": None}, (w(), np.abs(w()), np.array(10)), True, id="adapted-scalar"),
        pytest.param({"axis": -1, "mean": 0.5, "variance": 4.0}, None, False, id="config-scalars"),
        pytest.param({"axis": [1, -1], "mean": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "variance": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]}, None, True, id="config-last-axis-zero-variance"),
        pytest.param({"axis": -1, "mean": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "variance": [1.0] * 6, "invert": True}, None, True, id="invert"),
    ],
)  # fmt: skip
def test_normalization(config: dict[str, Any], weights: Any, after_conv: bool) -> None:
    net = with_conv() if after_conv else Net(x=(None, 5, 4, 6))
    net.add("Normalization", config, weights)
    numbers_match(net.graph())


# --- axes: Permute, RepeatVector, and the keras.ops ops ------------------------------------------


@pytest.mark.parametrize("dims", [[1, 2, 3], [3, 1, 2], [2, 1, 3], [3, 2, 1], [2, 3, 1]])
@pytest.mark.parametrize("after_conv", [False, True])
def test_permute_is_a_relabelling(dims: list[int], after_conv: bool) -> None:
    net = with_conv() if after_conv else Net(x=(None, 5, 4, 6))
    net.add("Permute", {"dims": dims})
    net.add(
        "Conv2D", {"filters": 2, "kernel_size": 1}, (w(1, 1, net.values[net.last].shape[-1] or 0, 2), w(2))
    )
    model = numbers_match(net.graph())
    plan = plan_graph(net.graph(), CompileOptions())
    views = [s for s in plan.steps if isinstance(s, ViewStep)]
    assert len(views) == (0 if dims == [1, 2, 3] else 1)
    assert ops_of(model).count("Transpose") <= 3


def test_permute_to_channels_first_costs_no_transpose() -> None:
    """A channels_last conv's output already sits as N,C,H,W: Permute((3, 1, 2)) moves nothing."""
    net = with_conv()
    net.add("Permute", {"dims": [3, 1, 2]})
    model = numbers_match(net.graph())
    assert ops_of(model).count("Transpose") == 1  # the input's only


def test_repeat_vector_after_dense() -> None:
    net = Net(x=(None, 5))
    net.add("Dense", {"units": 3}, (w(5, 3), w(3)))
    net.add("RepeatVector", {"n": 4})
    assert net.values[net.last].shape == (None, 4, 3)
    model = numbers_match(net.graph())
    assert "Expand" in ops_of(model)


def test_identity_layer() -> None:
    net = Net(x=(None, 3))
    net.add("Identity")
    numbers_match(net.graph())


def keras_op_cases() -> list[Any]:
    shape: Shape = (None, 5, 4, 6)
    return [
        *[
            pytest.param(ScalarOp(f, c, first), shape, id=f"scalar-{f}{'-first' if first else ''}")
            for f, c in [("add", 1.5), ("subtract", 2.0), ("multiply", -0.5), ("divide", 4.0), ("maximum", 0.1), ("minimum", -0.2)]
            for first in (False, True)
        ],
        pytest.param(ScalarOp("power", 2.0), shape, id="scalar-power"),
        pytest.param(ScalarOp("power", 2.0, constant_first=True), shape, id="scalar-power-first"),
        pytest.param(ClipOp(-0.5, 0.5), shape, id="clip"),
        pytest.param(ClipOp(None, 0.5), shape, id="clip-high"),
        pytest.param(ClipOp(-0.5, None), shape, id="clip-low"),
        pytest.param(ClipOp(None, None), shape, id="clip-none"),
        pytest.param(SliceOp(3, 2, 5), (None, 5, 4, 3), id="slice-channels"),
        pytest.param(SliceOp(1, 0, 2), (None, 2, 4, 6), id="slice-rows"),
        pytest.param(PermuteOp((0, 2, 1, 3)), (None, 4, 5, 6), id="transpose"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("op", "shape", "after_conv"),
    [
        pytest.param(*case.values, after_conv, id=f"{case.id}{'-after-conv' if after_conv else ''}")
        for case, after_conv in itertools.product(keras_op_cases(), (False, True))
        # 4 / x magnifies the conv's float32 rounding where x is near 0: not a lowering matter
        if not (after_conv and case.id == "scalar-divide-first")
    ],
)
def test_keras_ops(op: Op, shape: Shape, after_conv: bool) -> None:
    net = with_conv() if after_conv else Net(x=(None, 5, 4, 6))
    net.op(op, shape)
    numbers_match(net.graph())


@pytest.mark.parametrize("after_conv", [False, True])
def test_squeeze_and_expand_dims_relabel_the_layout(after_conv: bool) -> None:
    """Squeeze and ExpandDims in any layout; an identity layout stays one (no Transpose)."""
    net = with_conv(shape=(None, 5, 1, 6)) if after_conv else Net(x=(None, 5, 1, 6))
    net.op(SqueezeOp((2,)), (None, 5, 6))
    net.op(ExpandDimsOp((1, 3)), (None, 1, 5, 1, 6))
    net.op(SqueezeOp((1,)), (None, 5, 1, 6))
    model = numbers_match(net.graph())
    assert ops_of(model).count("Transpose") == (2 if after_conv else 0)


def test_merge_of_keras_ops_divide() -> None:
    net = Net(a=(None, 3, 4), b=(None, 1, 4))
    net.op(MergeOp("divide"), (None, 3, 4), on=["a", "b"])
    numbers_match(net.graph())


# --- opsets: axes as attributes or inputs ----------------------------------------------------------


@pytest.mark.parametrize("opset", [11, 13, 17, 18, 21])
def test_reductions_and_axes_at_every_opset(opset: int) -> None:
    net = Net(x=(None, 5, 4, 6))
    net.add("LayerNormalization", {"axis": [1, 2]}, (w(5, 4), w(5, 4)))
    net.add("UnitNormalization", {"axis": -1})
    net.add("Softmax", {"axis": [1, 3]})
    net.op(ExpandDimsOp((4,)), (None, 5, 4, 6, 1))
    net.op(SqueezeOp((4,)), (None, 5, 4, 6))
    net.add("GlobalMaxPooling2D", {"keepdims": True})
    net.add("GlobalAveragePooling2D", {})
    model = numbers_match(net.graph(), opset=opset)
    reduce = next(n for n in model.graph.node if n.op_type == "ReduceMean")
    assert (len(reduce.input) == 2) == (opset >= 18)
    squeeze = next(n for n in model.graph.node if n.op_type == "Squeeze")
    assert (len(squeeze.input) == 2) == (opset >= 13)


# --- structure: a channels_last network keeps one layout ----------------------------------------


def unet_block(relu: dict[str, Any]) -> Net:
    """x → Conv(s2) → BN → ReLU → Conv2DTranspose(s2) → Concatenate(skip x) → Add(1x1 conv of x)."""
    net = Net(x=(None, 8, 8, 3))
    net.add(
        "Conv2D",
        {"filters": 4, "kernel_size": 3, "strides": 2, "padding": "same"},
        (w(3, 3, 3, 4), w(4)),
        on=["x"],
        name="down",
    )
    net.add("BatchNormalization", {"axis": -1}, (w(4), w(4), w(4), np.abs(w(4)) + 0.5), name="bn")
    net.add("ReLU", relu, name="act")
    net.add(
        "Conv2DTranspose",
        {"filters": 3, "kernel_size": [3, 3], "strides": [2, 2], "padding": "same"},
        (w(3, 3, 3, 4), w(3)),
        name="up",
    )
    net.add("Concatenate", {"axis": -1}, on=["up", "x"], name="cat")
    net.add("Conv2D", {"filters": 6, "kernel_size": 1}, (w(1, 1, 3, 6), w(6)), on=["x"], name="side")
    net.add("Add", {}, on=["cat", "side"], name="sum")
    return net


@pytest.mark.parametrize("relu", [{"max_value": 6.0}, {}, {"max_value": 2.0, "negative_slope": 0.1}])
def test_channels_last_network_has_transposes_only_at_the_edges(relu: dict[str, Any]) -> None:
    graph = unet_block(relu).graph()
    model = numbers_match(graph)
    nodes = list(model.graph.node)
    transposes = [n for n in nodes if n.op_type == "Transpose"]
    assert len(transposes) == 2
    assert transposes[0].input[0] == "x" and nodes[0] is transposes[0]
    assert transposes[1].output[0] == "y" and nodes[-1] is transposes[1]
    bn_ops = [n.op_type for n in nodes if n.name.startswith("bn/")]
    assert bn_ops == [], "BatchNormalization folds into the conv before it"
    first_conv = next(i for i, n in enumerate(nodes) if n.op_type == "Conv")
    after = nodes[first_conv + 1]
    if relu == {"max_value": 6.0}:
        assert after.op_type == "Clip" and after.input[0] == nodes[first_conv].output[0]
        assert [n.op_type for n in nodes if n.name.startswith("act/")] == ["Clip"]
    elif relu == {}:
        assert after.op_type == "Relu"


@pytest.mark.parametrize(
    ("kind", "config", "weights", "folded"),
    [
        pytest.param("Conv2D", {"filters": 4, "kernel_size": 3, "groups": 2}, (w(3, 3, 2, 4), w(4)), True, id="grouped-conv"),
        pytest.param("Conv2D", {"filters": 4, "kernel_size": 3, "use_bias": False}, (w(3, 3, 4, 4),), True, id="conv-no-bias"),
        pytest.param("DepthwiseConv2D", {"kernel_size": 3, "depth_multiplier": 1}, (w(3, 3, 4, 1), w(4)), True, id="depthwise"),
        pytest.param("SeparableConv2D", {"filters": 4, "kernel_size": 3}, (w(3, 3, 4, 1), w(1, 1, 4, 4), w(4)), True, id="separable"),
        pytest.param("Conv2D", {"filters": 4, "kernel_size": 3, "activation": "relu"}, (w(3, 3, 4, 4), w(4)), False, id="conv-with-activation"),
    ],
)  # fmt: skip
def test_batch_norm_folds_into_convolutions(
    kind: str, config: dict[str, Any], weights: Any, folded: bool
) -> None:
    net = Net(x=(None, 6, 6, 4))
    net.add(kind, config, weights)
    net.add("BatchNormalization", {}, (w(4), w(4), w(4), np.abs(w(4)) + 0.5), name="bn")
    model = numbers_match(net.graph())
    bn_ops = [n.op_type for n in model.graph.node if n.name.startswith("bn/") and n.op_type != "Transpose"]
    assert bn_ops == ([] if folded else ["Mul", "Add"])


def test_a_keras_file_network_through_the_front_end() -> None:
    """The new classes are reachable from a saved model's config (keras_model → LAYER_PARSERS)."""
    from tests.keras_configs import graph_of, layer, sequential

    config = sequential(
        layer("Conv2D", "c", filters=4, kernel_size=[3, 3], padding="same"),
        layer("MaxPooling2D", "p", pool_size=[2, 2], padding="same"),
        layer("LayerNormalization", "ln", axis=[-1]),
        layer("GlobalAveragePooling2D", "g"),
        input_shape=[7, 7, 3],
    )
    graph = graph_of(config, c=(w(3, 3, 3, 4), w(4)), ln=(w(4), w(4)))
    assert graph.outputs[0].shape == (None, 4)
    numbers_match(graph)


# --- parsers: Keras' shapes and refusals ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "config", "shape", "weights", "expected"),
    [
        ("Conv1D", {"filters": 2, "kernel_size": 3, "padding": "causal", "strides": 2}, (None, 9, 3), (w(3, 3, 2), w(2)), (None, 5, 2)),
        ("Conv2D", {"filters": 2, "kernel_size": [3, 2], "padding": "VALID", "data_format": "Channels_First"}, (None, 3, 7, None), (w(3, 2, 3, 2), w(2)), (None, 2, 5, None)),
        ("Conv3D", {"filters": 2, "kernel_size": 2, "strides": 2}, (4, 5, 4, 3, 1), (w(2, 2, 2, 1, 2), w(2)), (4, 2, 2, 1, 2)),
        ("Conv2D", {"filters": 4, "kernel_size": 1, "activation": "glu"}, (None, 3, 3, 2), (w(1, 1, 2, 4), w(4)), (None, 3, 3, 2)),
        ("DepthwiseConv1D", {"kernel_size": 3, "depth_multiplier": 2, "padding": "same", "strides": 2}, (None, 8, 3), (w(3, 3, 2), w(6)), (None, 4, 6)),
        ("SeparableConv2D", {"filters": 5, "kernel_size": 3, "strides": [1, 2]}, (None, 6, 7, 2), (w(3, 3, 2, 1), w(1, 1, 2, 5), w(5)), (None, 4, 3, 5)),
        ("AveragePooling3D", {"pool_size": [2, 2, 1], "padding": "same"}, (None, 5, 4, None, 2), None, (None, 3, 2, None, 2)),
        ("GlobalMaxPooling1D", {"data_format": "channels_first", "keepdims": True}, (None, 3, 7), None, (None, 3, 1)),
        ("GroupNormalization", {"groups": -1}, (None, 7, 5), (w(5), w(5)), (None, 7, 5)),
        ("Permute", {"dims": [2, 3, 1]}, (None, 2, 3, 4), None, (None, 3, 4, 2)),
        ("RepeatVector", {"n": 3}, (2, 5), None, (2, 3, 5)),
        ("Normalization", {"axis": None, "mean": 1.0, "variance": 2.0}, (None, 3), None, (None, 3)),
    ],
)  # fmt: skip
def test_output_shapes_follow_keras(
    kind: str, config: dict[str, Any], shape: Shape, weights: Any, expected: Shape
) -> None:
    assert parse(kind, config, shape, weights=weights)[1] == expected


REFUSALS = [
    # kind, config, input shape, weights, fragment (with its key path)
    ("Conv2D", {"filters": 2, "kernel_size": 3, "strides": 2, "dilation_rate": 2}, (None, 9, 9, 3), None, "layer (Conv2D).dilation_rate: `strides > 1` not supported in conjunction with `dilation_rate > 1`"),
    ("Conv2D", {"filters": 3, "kernel_size": 3, "groups": 2}, (None, 9, 9, 4), None, "layer (Conv2D).groups: the input channels (4) and filters (3) must be divisible by groups"),
    ("Conv2D", {"filters": 2, "kernel_size": 3, "padding": "causal"}, (None, 9, 9, 3), None, "layer (Conv2D).padding: must be one of 'valid', 'same' (case-insensitive), got 'causal'"),
    ("Conv2D", {"filters": 2, "kernel_size": [3, 0]}, (None, 9, 9, 3), None, "layer (Conv2D).kernel_size: must be >= 1"),
    ("Conv2D", {"filters": 2}, (None, 9, 9, 3), None, "layer (Conv2D).kernel_size: is required"),
    ("Conv1D", {"filters": 0, "kernel_size": 3}, (None, 9, 3), None, "layer (Conv1D).filters: must be a positive integer, got 0"),
    ("Conv1D", {"filters": 2, "kernel_size": 5}, (None, 4, 3), (w(5, 3, 2), w(2)), "Computed output size would be zero or negative"),
    ("Conv2D", {"filters": 2, "kernel_size": 3}, (None, 9, 9, None), None, "needs a known channel axis (3)"),
    ("Conv2D", {"filters": 2, "kernel_size": 3}, (None, 9, 9, 3), (w(3, 3, 2, 2), w(2)), "kernel has shape (3, 3, 2, 2), expected (3, 3, 3, 2)"),
    ("Conv2D", {"filters": 2, "kernel_size": 3, "use_bias": "yes"}, (None, 9, 9, 3), None, "layer (Conv2D).use_bias: must be true or false"),
    ("DepthwiseConv2D", {"kernel_size": 3, "padding": "causal"}, (None, 9, 9, 3), None, "got 'causal'"),
    ("SeparableConv1D", {"filters": 4, "kernel_size": 3}, (None, 9, 3), (w(3, 3, 1), w(1, 1, 3, 4)), "expected 3 array(s), found 2"),
    ("DepthwiseConv2D", {"kernel_size": 3, "strides": [2, 1], "dilation_rate": [1, 2], "padding": "same"}, (None, None, 9, 3), None, "layer (DepthwiseConv2D).dilation_rate: padding='same' with strides > 1 and dilation_rate > 1 needs known spatial sizes"),
    ("MaxPooling2D", {"padding": "SAME"}, (None, 9, 9, 3), None, "layer (MaxPooling2D).padding: must be one of 'valid', 'same', got 'SAME'"),
    ("MaxPooling2D", {"strides": [2, 0]}, (None, 9, 9, 3), None, "layer (MaxPooling2D).strides: must be >= 1"),
    ("AveragePooling1D", {}, (None, 9, 3), None, "layer (AveragePooling1D).pool_size: is required"),
    ("MaxPooling1D", {"pool_size": 4}, (None, 3, 2), None, "Computed output size would be zero or negative"),
    ("GlobalAveragePooling2D", {}, (None, 9, 3), None, "expects a 4-D input"),
    ("LayerNormalization", {"axis": [1, 1]}, (None, 4, 3), None, "layer (LayerNormalization).axis: must be one or more distinct axes"),
    ("LayerNormalization", {"axis": -1}, (None, 4, None), (w(1), w(1)), "needs known sizes on the normalized axes [2]"),
    ("GroupNormalization", {"groups": 4}, (None, 4, 6), None, "the channels (6) must be a multiple of the groups (4)"),
    ("GroupNormalization", {"groups": 0}, (None, 4, 6), None, "layer (GroupNormalization).groups: must be a positive integer (or -1"),
    ("Rescaling", {"offset": 1.0}, (None, 3), None, "layer (Rescaling).scale: is required"),
    ("Rescaling", {"scale": [1.0, 2.0]}, (None, 4, 3), None, "layer (Rescaling).scale: shape (2,) does not broadcast into the input (None, 4, 3)"),
    ("Rescaling", {"scale": "x"}, (None, 3), None, "layer (Rescaling).scale: must be a finite number"),
    ("Normalization", {"mean": 1.0}, (None, 3), None, "both `mean` and `variance` must be set"),
    ("Normalization", {"axis": 1}, (None, None), None, "All `axis` values to be kept must have a known size"),
    ("Normalization", {"mean": [1.0], "variance": [-1.0]}, (None, 3), None, "variance holds negative values"),
    ("Permute", {"dims": [1, 3]}, (None, 2, 3), None, "layer (Permute).dims: must hold each of 1..n once"),
    ("RepeatVector", {"n": 0}, (None, 3), None, "layer (RepeatVector).n: must be a positive integer"),
    ("RepeatVector", {"n": 2}, (None, 3, 4), None, "expects a 2-D input"),
    ("UnitNormalization", {"axis": 4}, (None, 3), None, "layer (UnitNormalization).axis: must be one or more distinct axes of the 2-D input"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "config", "shape", "weights", "fragment"),
    REFUSALS,
    ids=[f"{r[0]}-{i}" for i, r in enumerate(REFUSALS)],
)
def test_refusals_name_the_key(
    kind: str, config: dict[str, Any], shape: Shape, weights: Any, fragment: str
) -> None:
    assert fragment in refusal(kind, config, shape, weights=weights)


def test_every_new_layer_class_is_registered() -> None:
    expected = {
        *(f"Conv{r}D" for r in (1, 2, 3)), "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D",
        *(f"{k}Pooling{r}D" for k in ("Max", "Average", "GlobalMax", "GlobalAverage") for r in (1, 2, 3)),
        "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "LayerNormalization",
        "GroupNormalization", "UnitNormalization", "Rescaling", "Normalization", "Permute", "RepeatVector", "Identity",
    }  # fmt: skip
    assert expected <= set(LAYER_PARSERS)


# --- parsers never crash: any value at any key gives an op or a located problem -----------------

BASES: list[tuple[str, dict[str, Any], Shape, Any]] = [
    ("Conv1D", {"filters": 2, "kernel_size": 3, "padding": "causal"}, (None, 9, 3), (w(3, 3, 2), w(2))),
    ("Conv2D", {"filters": 2, "kernel_size": 3, "groups": 1, "strides": 1, "dilation_rate": 1, "data_format": "channels_last", "activation": "relu", "use_bias": True}, (None, 9, 9, 4), (w(3, 3, 4, 2), w(2))),
    ("DepthwiseConv2D", {"kernel_size": 3, "depth_multiplier": 2, "padding": "same"}, (None, 9, 9, 3), (w(3, 3, 3, 2), w(6))),
    ("SeparableConv1D", {"filters": 4, "kernel_size": 3, "depth_multiplier": 1}, (None, 9, 3), (w(3, 3, 1), w(1, 3, 4), w(4))),
    ("MaxPooling2D", {"pool_size": 2, "strides": None, "padding": "valid", "data_format": "channels_last"}, (None, 9, 9, 3), None),
    ("AveragePooling3D", {"pool_size": [2, 2, 2], "padding": "same"}, (None, 4, 4, 4, 2), None),
    ("GlobalAveragePooling1D", {"data_format": "channels_last", "keepdims": False}, (None, 9, 3), None),
    ("LayerNormalization", {"axis": -1, "epsilon": 1e-3, "center": True, "scale": True, "rms_scaling": False}, (None, 4, 3), (w(3), w(3))),
    ("GroupNormalization", {"groups": 3, "axis": -1, "epsilon": 1e-3, "center": True, "scale": True}, (None, 4, 6), (w(6), w(6))),
    ("UnitNormalization", {"axis": -1}, (None, 4, 3), None),
    ("Rescaling", {"scale": 0.5, "offset": 1.0}, (None, 4, 3), None),
    ("Normalization", {"axis": -1, "mean": [1.0, 2.0, 3.0], "variance": [1.0, 1.0, 1.0], "invert": False}, (None, 4, 3), None),
    ("Permute", {"dims": [2, 1]}, (None, 4, 3), None),
    ("RepeatVector", {"n": 2}, (None, 3), None),
    ("Subtract", {}, (None, 3), None),
]  # fmt: skip
ODD_VALUES: list[Any] = [
    None, True, 0, -1, 2**40, 1.5, float("nan"), "same", "SAME", [], [0], [1, 1, 1, 1], [[1]], {"a": 1},
    {"class_name": "__numpy__", "config": {"value": "x"}}, [None], -2,
]  # fmt: skip


@pytest.mark.parametrize(("kind", "config", "shape", "weights"), BASES, ids=[b[0] for b in BASES])
def test_any_value_at_any_key_gives_an_op_or_a_located_problem(
    kind: str, config: dict[str, Any], shape: Shape, weights: Any
) -> None:
    inputs = (shape, shape) if kind == "Subtract" else (shape,)
    for key, value in itertools.product([*config, "axis", "data_format"], ODD_VALUES):
        problems = Problems(lambda path, message: Problem(path, message))
        call = LayerCall("layer", kind, {**config, key: value}, ("layer",), inputs, weights, F32, problems)
        result = LAYER_PARSERS[kind](call)
        assert (result is None) == bool(problems.found), (key, value, [str(p) for p in problems.found])


def test_every_op_has_a_planner_and_a_reference() -> None:
    from typing import get_args

    from deconv_compiler import ir
    from deconv_compiler.planner import OP_PLANNERS
    from deconv_compiler.verification import _REFERENCES

    ops = set(get_args(ir.Op))
    assert len(ops) > 30
    assert ops <= set(OP_PLANNERS) and ops <= set(_REFERENCES)
