"""Compiled models on onnxruntime (CPU) against the independent numpy reference."""

from __future__ import annotations

import itertools
import zlib
from typing import Any

import numpy as np
import pytest

import deconv_compiler as dc
from deconv_compiler import reference
from tests.onnx_run import assert_close, compile_spec, run_cpu


def _compile_and_compare(
    args: dict[str, Any],
    x: np.ndarray,
    *,
    opset: int = 17,
    dtype: str = "float32",
    rtol: float = 1e-5,
    target: str = "cpu",
    strategy: str | None = None,
) -> None:
    rank = x.ndim - 2
    # a stable digest of the case: hash() varies with PYTHONHASHSEED, so failures would not reproduce
    rng = np.random.default_rng(zlib.crc32(repr(sorted(args.items())).encode()))
    data_format = args.get("data_format", "channels_last")
    in_channels = x.shape[-1] if data_format == "channels_last" else x.shape[1]
    kernel_size = args["kernel_size"]
    kernel_size = (kernel_size,) * rank if isinstance(kernel_size, int) else tuple(kernel_size)
    kernel = rng.standard_normal((*kernel_size, args["filters"], in_channels))
    bias = rng.standard_normal(args["filters"]) if args.get("use_bias", True) else None
    spec = {
        "type": f"Conv{rank}DTranspose",
        **args,
        "batch_input_shape": list(x.shape),
        "dtype": dtype,
        "weights": [kernel] if bias is None else [kernel, bias],
    }
    model = compile_spec(dc.load_spec(spec), opset=opset, target=target, strategy=strategy)
    per_axis = {
        name: (args.get(name, default),) * rank
        if isinstance(args.get(name, default), int)
        else tuple(args[name])
        for name, default in (("strides", 1), ("dilation_rate", 1))
    }
    op = args.get("output_padding")
    expected = reference.layer(
        x,
        kernel.astype(dtype),
        None if bias is None else bias.astype(dtype),
        activation_name=args.get("activation"),
        strides=per_axis["strides"],
        dilation_rate=per_axis["dilation_rate"],
        padding=args.get("padding", "valid").lower(),
        output_padding=None if op is None else ((op,) * rank if isinstance(op, int) else tuple(op)),
        data_format=data_format,
    )
    actual = run_cpu(model, x.astype(dtype))
    assert_close(actual, expected, rtol=rtol, context=str(args))


# kernel x stride x padding x output_padding, 2D channels_last: the arithmetic core
GEOMETRY = [
    (k, s, padding, op)
    for k, s, padding in itertools.product((1, 2, 3, 4, 5), (1, 2, 3), ("valid", "same"))
    for op in (None, *range(s))
]


@pytest.mark.parametrize("target", ["cpu", "cuda"])
@pytest.mark.parametrize(
    ("k", "s", "padding", "op"), GEOMETRY, ids=[f"k{k}-s{s}-{p}-op{o}" for k, s, p, o in GEOMETRY]
)
def test_geometry_grid_2d(k: int, s: int, padding: str, op: int | None, target: str) -> None:
    """Both compile targets (the CUDA one: symmetric pads + Slice) give Keras' numbers."""
    x = np.random.default_rng(k * 100 + s).standard_normal((2, 4, 3, 3)).astype(np.float32)
    args = {"filters": 2, "kernel_size": k, "strides": s, "padding": padding, "output_padding": op}
    _compile_and_compare(args, x, target=target)


CASES: dict[str, tuple[dict[str, Any], tuple[int, ...]]] = {
    "1d-cl-valid-k2s3-op-none": ({"filters": 3, "kernel_size": 2, "strides": 3}, (2, 5, 4)),
    "1d-cf-same-k5s2-op1": (
        {
            "filters": 3,
            "kernel_size": 5,
            "strides": 2,
            "padding": "same",
            "output_padding": 1,
            "data_format": "channels_first",
        },
        (2, 4, 5),
    ),
    "1d-dilated-same": (
        {"filters": 2, "kernel_size": 3, "dilation_rate": 3, "padding": "same"},
        (1, 7, 2),
    ),
    "2d-per-axis-tuples": (
        {
            "filters": 4,
            "kernel_size": [3, 2],
            "strides": [2, 3],
            "padding": "same",
            "output_padding": [1, 0],
        },
        (2, 4, 5, 3),
    ),
    "2d-cf-dilated-valid": (
        {
            "filters": 2,
            "kernel_size": [2, 3],
            "dilation_rate": [2, 1],
            "data_format": "channels_first",
        },
        (1, 3, 4, 5),
    ),
    "2d-k-smaller-than-s": (
        {"filters": 2, "kernel_size": 2, "strides": 5, "padding": "valid"},
        (1, 3, 3, 2),
    ),
    "2d-k-smaller-than-s-same": (
        {"filters": 2, "kernel_size": 2, "strides": 5, "padding": "same"},
        (1, 3, 3, 2),
    ),
    "2d-no-bias": ({"filters": 3, "kernel_size": 3, "strides": 2, "use_bias": False}, (2, 3, 3, 2)),
    "2d-mixed-case-padding": (
        {"filters": 3, "kernel_size": 3, "strides": 2, "padding": "SaMe"},
        (1, 4, 4, 2),
    ),
    "3d-cl-same-op": (
        {
            "filters": 2,
            "kernel_size": [2, 3, 2],
            "strides": [2, 1, 3],
            "padding": "same",
            "output_padding": [1, 0, 2],
        },
        (1, 3, 2, 3, 2),
    ),
    "3d-cf-valid": (
        {"filters": 3, "kernel_size": 2, "strides": 2, "data_format": "channels_first"},
        (2, 2, 2, 3, 2),
    ),
    "3d-dilated": ({"filters": 2, "kernel_size": 2, "dilation_rate": [1, 2, 3]}, (1, 3, 4, 4, 2)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_ranks_formats_and_tuples(name: str) -> None:
    args, shape = CASES[name]
    x = np.random.default_rng(len(name)).standard_normal(shape).astype(np.float32)
    _compile_and_compare(args, x)


ACTIVATION_CASES = [
    (name, fmt) for name in reference.ACTIVATION_NAMES for fmt in ("channels_last", "channels_first")
]


@pytest.mark.parametrize(
    ("activation", "data_format"), ACTIVATION_CASES, ids=[f"{a}-{f}" for a, f in ACTIVATION_CASES]
)
def test_every_activation(activation: str, data_format: str) -> None:
    # 3x3 input, k3 s2 same -> 6x6 output: even last axis for glu in both layouts; x3 spreads
    # values past the activations' thresholds (±0.5, ±1, ±3).
    shape = (2, 3, 3, 4) if data_format == "channels_last" else (2, 4, 3, 3)
    x = 3 * np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    args = {
        "filters": 4,
        "kernel_size": 3,
        "strides": 2,
        "padding": "same",
        "activation": activation,
        "data_format": data_format,
    }
    _compile_and_compare(args, x)


OPSET_ACTIVATIONS = (
    "celu",
    "gelu",
    "hard_silu",
    "mish",
    "silu",
    "softmax",
    "log_softmax",
    "glu",
    "sparsemax",
    "hard_sigmoid",
)


@pytest.mark.parametrize("opset", [11, 12, 13, 14, 17, 18, 20, 24, 26])
@pytest.mark.parametrize("activation", OPSET_ACTIVATIONS)
def test_activations_across_opsets(opset: int, activation: str) -> None:
    """The composite forms (old opsets) and the fused ops (new ones) compute the same Keras formula."""
    x = 2 * np.random.default_rng(opset).standard_normal((1, 3, 3, 4)).astype(np.float32)
    args = {
        "filters": 4,
        "kernel_size": 3,
        "strides": 2,
        "padding": "same",
        "activation": activation,
    }
    _compile_and_compare(args, x, opset=opset)


@pytest.mark.parametrize("opset", [11, 13, 14, 26])
@pytest.mark.parametrize("activation", reference.ACTIVATION_NAMES)
def test_every_activation_in_float16_at_old_and_new_opsets(opset: int, activation: str) -> None:
    """float16 graphs are valid at every opset (CumSum, for one, takes float16 only from opset 14)."""
    from deconv_compiler.verification import check_graph

    spec = {"filters": 4, "kernel_size": 3, "strides": 2, "padding": "same", "activation": activation}
    graph = dc.spec_graph(dc.load_spec({**spec, "input_shape": [4, 4, 3]}))
    report = check_graph(graph, options=dc.CompileOptions(opset=opset, dtype="float16"))
    assert report.dtype == "float16", report
    # hard_shrink jumps by 0.5 at |x| = 0.5: float16 rounding moves values across it, so only the
    # continuous activations can be held to a tolerance (hard_shrink's formula is checked in float32)
    assert report.passed or activation == "hard_shrink", report


def test_float16_graph_matches_reference_at_half_precision() -> None:
    x = np.random.default_rng(3).standard_normal((1, 4, 4, 3)).astype(np.float16)
    args = {"filters": 2, "kernel_size": 3, "strides": 2, "padding": "same", "activation": "relu"}
    _compile_and_compare(args, x, dtype="float16", rtol=2e-3)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_dynamic_spatial_dims_run_at_several_sizes(rank: int) -> None:
    """One model, null spatial sizes: pads do not depend on the input size, so any size works."""
    rng = np.random.default_rng(rank)
    kernel = rng.standard_normal((3,) * rank + (2, 3))
    bias = rng.standard_normal(2)
    spec = {
        "type": f"Conv{rank}DTranspose",
        "filters": 2,
        "kernel_size": 3,
        "strides": 2,
        "padding": "same",
        "output_padding": 1,
        "input_shape": [None] * rank + [3],
        "weights": [kernel, bias],
    }
    model = compile_spec(dc.load_spec(spec), target="cuda")  # the Slice crop is size-independent too
    for size in (1, 2, 5):
        x = rng.standard_normal((2, *(size,) * rank, 3)).astype(np.float32)
        expected = reference.conv_transpose(
            x, kernel, bias, strides=(2,) * rank, padding="same", output_padding=(1,) * rank,
            dilation_rate=(1,) * rank, data_format="channels_last",
        )  # fmt: skip
        assert_close(run_cpu(model, x), expected, context=f"size {size}")


def test_chain_matches_reference_layer_by_layer() -> None:
    rng = np.random.default_rng(11)
    k1, b1 = rng.standard_normal((4, 4, 6, 3)), rng.standard_normal(6)
    k2, b2 = rng.standard_normal((3, 3, 2, 6)), rng.standard_normal(2)
    spec = {
        "name": "two",
        "input": {"shape": [None, 5, 4, 3]},
        "layers": [
            {"type": "Conv2DTranspose", "filters": 6, "kernel_size": 4, "strides": 2, "padding": "same", "activation": "relu", "weights": [k1, b1]},
            {"type": "Conv2DTranspose", "filters": 2, "kernel_size": 3, "strides": 2, "padding": "valid", "output_padding": 1, "activation": "tanh", "weights": [k2, b2]},
        ],
    }  # fmt: skip
    x = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    common = {"dilation_rate": (1, 1), "data_format": "channels_last"}
    hidden = reference.layer(
        x,
        k1,
        b1,
        activation_name="relu",
        strides=(2, 2),
        padding="same",
        output_padding=None,
        **common,
    )
    expected = reference.layer(
        hidden,
        k2,
        b2,
        activation_name="tanh",
        strides=(2, 2),
        padding="valid",
        output_padding=(1, 1),
        **common,
    )
    assert_close(run_cpu(compile_spec(dc.load_spec(spec)), x), expected)


def test_mixed_data_formats_in_one_chain() -> None:
    """A channels_first layer after a channels_last one reads the Keras tensor as Keras would."""
    rng = np.random.default_rng(5)
    k1 = rng.standard_normal((2, 2, 4, 3))
    # layer 2 (channels_first) sees the (N, H=6, W=8, C=4) tensor as C=6 channels
    k2 = rng.standard_normal((3, 3, 2, 6))
    spec = {
        "input": {"shape": [1, 3, 4, 3]},
        "layers": [
            {"type": "Conv2DTranspose", "filters": 4, "kernel_size": 2, "strides": 2, "use_bias": False, "weights": [k1]},
            {"type": "Conv2DTranspose", "filters": 2, "kernel_size": 3, "data_format": "channels_first", "use_bias": False, "weights": [k2]},
        ],
    }  # fmt: skip
    x = rng.standard_normal((1, 3, 4, 3)).astype(np.float32)
    common = {"dilation_rate": (1, 1), "padding": "valid", "output_padding": None}
    hidden = reference.conv_transpose(x, k1, None, strides=(2, 2), data_format="channels_last", **common)
    expected = reference.conv_transpose(
        hidden, k2, None, strides=(1, 1), data_format="channels_first", **common
    )
    assert_close(run_cpu(compile_spec(dc.load_spec(spec)), x), expected)


# --- every lowering strategy where it applies, refused by name where it does not -----------------


def _applies(strategy: str, k: int, s: int, padding: str, op: int | None, dilation: int = 1) -> bool:
    """Written from the strategies' definitions, not from their code."""
    if strategy == "conv":
        return s == 1
    if strategy == "subpixel":
        return s > 1 and dilation == 1
    if strategy == "gemm":  # no overlap and nothing cropped: Keras' output is exactly i * s long
        return k == s and dilation == 1 and reference.keras_output_length(5, k, s, 1, padding, op) == 5 * s
    return True


STRATEGY_GRID = [
    (k, s, padding, op, data_format, strategy)
    for k, s, padding, op in GEOMETRY
    for data_format in ("channels_last", "channels_first")
    for strategy in ("native", "conv", "subpixel", "gemm")
]


@pytest.mark.parametrize(
    ("k", "s", "padding", "op", "data_format", "strategy"),
    STRATEGY_GRID,
    ids=[f"{st}-k{k}-s{s}-{p}-op{o}-{f[9:]}" for k, s, p, o, f, st in STRATEGY_GRID],
)
def test_every_strategy_on_the_geometry_grid(
    k: int, s: int, padding: str, op: int | None, data_format: str, strategy: str
) -> None:
    shape = (2, 4, 3, 3) if data_format == "channels_last" else (2, 3, 4, 3)
    x = np.random.default_rng(k * 100 + s).standard_normal(shape).astype(np.float32)
    args = {
        "filters": 3, "kernel_size": k, "strides": s, "padding": padding, "output_padding": op,
        "data_format": data_format, "activation": "relu",
    }  # fmt: skip
    if _applies(strategy, k, s, padding, op):
        _compile_and_compare(args, x, strategy=strategy)
    else:
        with pytest.raises(dc.CompileError, match=f"strategy '{strategy}' does not apply"):
            _compile_and_compare(args, x, strategy=strategy)


@pytest.mark.parametrize(
    ("strategy", "args", "shape"),
    [
        ("conv", {"kernel_size": [3, 2], "dilation_rate": [2, 3], "padding": "same"}, (2, 7, 6, 3)),
        ("conv", {"kernel_size": 4, "dilation_rate": 2, "padding": "valid"}, (2, 5, 3)),
        ("conv", {"kernel_size": [2, 3, 1], "padding": "same"}, (1, 3, 4, 2, 3)),
        (
            "subpixel",
            {"kernel_size": [5, 2], "strides": 3, "padding": "same", "output_padding": [2, 0]},
            (2, 4, 5, 3),
        ),
        ("subpixel", {"kernel_size": [1, 4], "strides": 2, "padding": "valid"}, (1, 3, 2, 4)),
        ("gemm", {"kernel_size": 3, "strides": 3}, (2, 4, 3)),
        ("gemm", {"kernel_size": [2, 1, 3], "strides": [2, 1, 3]}, (1, 2, 3, 2, 2)),
        ("gemm", {"kernel_size": [2, 4], "strides": [2, 4], "output_padding": 0}, (3, 2, 5, 4)),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_strategies_on_other_ranks_kernels_and_dilations(
    strategy: str, args: dict[str, Any], shape: tuple[int, ...]
) -> None:
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
    _compile_and_compare({"filters": 4, **args, "activation": "tanh"}, x, strategy=strategy)


@pytest.mark.parametrize("strategy", ["conv", "subpixel"])
def test_strategies_keep_dynamic_sizes(strategy: str) -> None:
    """The strategies' pads and crops do not depend on the input size: one model, several sizes."""
    stride = 1 if strategy == "conv" else 2
    spec = {
        "filters": 2,
        "kernel_size": 3,
        "strides": stride,
        "padding": "same",
        "input_shape": [None, None, 3],
    }
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 2, 3))
    model = compile_spec(dc.load_spec({**spec, "weights": [kernel, np.zeros(2)]}), strategy=strategy)
    for size in (1, 4, 7):
        x = rng.standard_normal((1, size, size + 1, 3)).astype(np.float32)
        expected = reference.layer(
            x, kernel, np.zeros(2), strides=(stride, stride), padding="same", output_padding=None,
            dilation_rate=(1, 1), data_format="channels_last",
        )  # fmt: skip
        assert_close(run_cpu(model, x), expected, context=f"{strategy} at {size}")
