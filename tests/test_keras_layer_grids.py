"""Conformance against real Keras (jax backend), layer by layer: a grid of each layer's arguments.

Every *case* is one small sub-network (usually one layer, some short chains) with a readable id,
e.g. `Conv2D-k3x2-s2-same-g2-bias-relu-cf`. Keras costs most per model (an XLA compile of the
whole forward pass), so the cases of one family travel as the independent branches of one
Functional *bundle*: built once per session with numpy-drawn weights, saved as `.keras`, run by
Keras (`model(x, training=False)`, jit-compiled in a background thread while the next bundle
builds), read back and compiled with `deconv_compiler`, run on onnxruntime's CPU provider.

`test_case_matches_keras[<case id>]` compares that case's outputs with Keras' to 1e-5 of each
output's scale. When the bundle as a whole does not compile or run (a layer class or an op not
supported yet, any compile error), each case is compiled alone (a Functional model of just its
inputs and outputs, same layers and weights), so every case passes or fails on its own, naming
the first line of its own error. `test_bundle_compiles_whole[<bundle>]` reports the bundle's own
compile error in full; `test_numpy_reference_matches_keras[<bundle>]` holds the numpy reference
(what `deconvc check` trusts) to the same bound.

Inputs: batch 2, N(0, 1); `wide` cases 3x that (ReLU's max_value), `shifted` cases a nonzero
mean and per-feature scale (the normalization layers).

To chase one case: `python -m pytest tests/test_keras_layer_grids.py -k '<case id>'` builds only
its bundle; `build_case(CASES_BY_ID['<case id>'])` gives its Keras model alone.
"""

from __future__ import annotations

import collections
import importlib.util
import itertools
import math
import traceback
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [
    pytest.mark.keras,
    # Keras 3.15's Variable.numpy() (used by save and get_weights) trips numpy 2's __array__ copy check.
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    # the grid keeps LayerNormalization(rms_scaling=True): deprecated, still Keras' own numbers
    pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`:UserWarning"),
]
if importlib.util.find_spec("keras") is None or importlib.util.find_spec("jax") is None:
    pytest.skip("needs keras and jax (pip install -e '.[test]')", allow_module_level=True)

import jax  # noqa: E402
import keras  # noqa: E402
import onnxruntime as ort  # noqa: E402
from keras import layers, ops  # noqa: E402

from tests.onnx_run import assert_close  # noqa: E402

RTOL = 1e-5
BATCH = 2
Build = Callable[[list[Any], "Draw"], Any]  # the case's inputs (KerasTensors) → its output(s)


@dataclass(frozen=True)
class Case:
    id: str
    bundle: str
    shapes: tuple[tuple[int, ...], ...]  # per input, without the batch axis
    build: Build
    kind: str  # the layer class or op the grid is for (counted by the coverage test)
    inputs: str = "normal"  # normal, wide (3 x N(0, 1)), shifted (nonzero mean)


# --- weights drawn in numpy (Keras' own random initializers compile one XLA program per shape) ---

_DEFAULTS = {
    "bias": "zeros", "beta": "zeros", "moving_mean": "zeros",
    "gamma": "ones", "moving_variance": "ones",
}  # fmt: skip


class Init:
    """kernels ~ N(0, 1/fan_in), biases and betas ~ N(0, 0.3), gammas in [0.5, 1.5)."""

    def __init__(self, rng: np.random.Generator, weight: str) -> None:
        self.rng, self.weight = rng, weight

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> jax.Array:
        shape, rng = tuple(shape), self.rng
        if self.weight in ("kernel", "pointwise"):  # Conv: kernel_size + (in // groups, out)
            values = rng.normal(0, 1 / math.sqrt(max(1, math.prod(shape[:-1]))), shape)
        elif self.weight == "depthwise":  # kernel_size + (in, multiplier)
            values = rng.normal(0, 1 / math.sqrt(max(1, math.prod(shape[:-2]))), shape)
        elif self.weight in ("gamma", "moving_variance"):
            values = rng.uniform(0.5, 1.5, shape)
        else:
            values = rng.normal(0, 0.3, shape)
        return jax.device_put(values.astype(dtype or "float32"))


@dataclass
class Draw:
    rng: np.random.Generator

    def __call__(self, *weights: str) -> dict[str, Init]:
        return {f"{weight}_initializer": Init(self.rng, weight) for weight in weights}


def restore_initializers(model: keras.Model) -> None:
    """Keras' defaults back where `Init` stood, so the saved config is Keras' own."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        for attribute, value in list(vars(layer).items()):
            if attribute.endswith("_initializer") and isinstance(value, Init):
                default = _DEFAULTS.get(attribute.removesuffix("_initializer"), "glorot_uniform")
                setattr(layer, attribute, keras.initializers.get(default))


def _case_seed(case_id: str) -> int:
    return zlib.crc32(case_id.encode())


def case_inputs(case: Case) -> list[np.ndarray]:
    rng = np.random.default_rng(_case_seed(case.id) + 1)
    values = []
    for shape in case.shapes:
        x = rng.standard_normal((BATCH, *shape))
        if case.inputs == "wide":
            x = 3 * x
        elif case.inputs == "positive":  # away from zero: divisors
            x = rng.uniform(0.5, 2.0, x.shape)
        elif case.inputs == "shifted":  # a mean in [1, 4) and a scale in [0.5, 3) per position
            x = x * rng.uniform(0.5, 3.0, shape) + rng.uniform(1.0, 4.0, shape)
        values.append(x.astype(np.float32))
    return values


# --- the grids ------------------------------------------------------------------------------------

CASES: list[Case] = []


def case(
    case_id: str,
    bundle: str,
    kind: str,
    shapes: Sequence[tuple[int, ...]],
    build: Build,
    inputs: str = "normal",
) -> None:
    CASES.append(Case(case_id, bundle, tuple(tuple(s) for s in shapes), build, kind, inputs))


def _t(value: int | Sequence[int]) -> str:
    return str(value) if isinstance(value, int) else "x".join(map(str, value))


def _layout(shape: tuple[int, ...], channels: int, first: bool) -> tuple[int, ...]:
    return (channels, *shape) if first else (*shape, channels)


FORMATS = {"cl": "channels_last", "cf": "channels_first"}
ACTIVATIONS = ["linear", "relu", "tanh", "sigmoid", "gelu", "silu", "relu6", "elu"]
SIDES = {1: (9,), 2: (7, 8), 3: (5, 6, 4)}  # odd and even: `same` pads unevenly when strided


def _conv_grid() -> None:
    # (stride, dilation): Keras refuses strides > 1 together with dilation > 1
    steps = {
        1: [(1, 1), (2, 1), (3, 1), (1, 2)],
        2: [(1, 1), (2, 1), ((1, 3), 1), (1, 2), (1, (2, 1))],
        3: [(1, 1), (2, 1), (1, (1, 2, 1)), ((2, 1, 3), 1)],
    }
    kernels = {1: [1, 3, 4], 2: [1, 3, (2, 3)], 3: [1, 3, (2, 1, 3)]}
    paddings = {1: ["valid", "same", "causal"], 2: ["valid", "same"], 3: ["valid", "same"]}
    groups_cycle = [1, 2, 1, 4]  # 4 input channels: groups 1, 2, and depthwise-like 4
    for rank in (1, 2, 3):
        combos = itertools.product(kernels[rank], steps[rank], paddings[rank], FORMATS)
        for i, (kernel, (stride, dilation), padding, fmt) in enumerate(combos):
            groups = groups_cycle[i % 4] if rank < 3 or i % 3 else 1
            filters = 8 if groups == 4 else 6
            bias = i % 3 != 1
            activation = ACTIVATIONS[i % len(ACTIVATIONS)]
            cid = (
                f"Conv{rank}D-k{_t(kernel)}-s{_t(stride)}-d{_t(dilation)}-g{groups}-{padding}"
                f"-{'bias' if bias else 'nobias'}-{activation}-{fmt}"
            )

            def build(
                xs: list[Any],
                d: Draw,
                rank: int = rank,
                kernel: Any = kernel,
                stride: Any = stride,
                dilation: Any = dilation,
                padding: str = padding,
                fmt: str = fmt,
                groups: int = groups,
                filters: int = filters,
                bias: bool = bias,
                activation: str = activation,
            ) -> Any:
                cls = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}[rank]
                return cls(
                    filters, kernel, strides=stride, padding=padding, data_format=FORMATS[fmt],
                    dilation_rate=dilation, groups=groups, activation=activation, use_bias=bias,
                    **d("kernel", "bias"),
                )(xs[0])  # fmt: skip

            case(cid, f"conv{rank}d", f"Conv{rank}D", [_layout(SIDES[rank], 4, fmt == "cf")], build)


def _conv_activation_grid() -> None:
    """Every activation name the compiler knows, on a convolution in both layouts: Keras applies
    axis-wise ones (softmax, log_softmax, glu, sparsemax) on the last axis, even for channels_first."""
    from deconv_compiler.activations import NAMES, REFUSED

    for name, fmt in itertools.product(sorted(set(NAMES) - set(REFUSED)), FORMATS):
        cid = f"Conv2D-activation-{name}-{fmt}"

        def build(xs: list[Any], d: Draw, name: str = name, fmt: str = fmt) -> Any:
            return layers.Conv2D(6, 3, padding="same", data_format=FORMATS[fmt], activation=name,
                                 **d("kernel", "bias"))(xs[0])  # fmt: skip

        case(cid, "conv-activations", "Conv2D", [_layout((5, 6), 4, fmt == "cf")], build)


def _depthwise_separable_grid() -> None:
    steps = [(1, 1), (2, 1), (1, 2)]
    kernels = {1: [2, 3], 2: [3, (2, 3)]}
    for separable, rank in itertools.product((False, True), (1, 2)):
        name = f"{'Separable' if separable else 'Depthwise'}Conv{rank}D"
        combos = itertools.product(kernels[rank], steps, ["valid", "same"], FORMATS)
        for i, (kernel, (stride, dilation), padding, fmt) in enumerate(combos):
            multiplier = [1, 2, 3][i % 3]
            bias = i % 4 != 3
            activation = ACTIVATIONS[(i + 3) % len(ACTIVATIONS)]
            filters = [4, 5, 2][i % 3]
            cid = (
                f"{name}-k{_t(kernel)}-s{_t(stride)}-d{_t(dilation)}-m{multiplier}"
                + (f"-f{filters}" if separable else "")
                + f"-{padding}-{'bias' if bias else 'nobias'}-{activation}-{fmt}"
            )

            def build(
                xs: list[Any],
                d: Draw,
                rank: int = rank,
                separable: bool = separable,
                kernel: Any = kernel,
                stride: Any = stride,
                dilation: Any = dilation,
                padding: str = padding,
                fmt: str = fmt,
                multiplier: int = multiplier,
                bias: bool = bias,
                activation: str = activation,
                filters: int = filters,
            ) -> Any:
                common = dict(
                    strides=stride, padding=padding, data_format=FORMATS[fmt], dilation_rate=dilation,
                    depth_multiplier=multiplier, activation=activation, use_bias=bias,
                )  # fmt: skip
                if separable:
                    cls = layers.SeparableConv1D if rank == 1 else layers.SeparableConv2D
                    return cls(filters, kernel, **common, **d("depthwise", "pointwise", "bias"))(xs[0])
                cls = layers.DepthwiseConv1D if rank == 1 else layers.DepthwiseConv2D
                return cls(kernel, **common, **d("depthwise", "bias"))(xs[0])

            bundle = "separable" if separable else "depthwise"
            case(cid, bundle, name, [_layout(SIDES[rank], 3, fmt == "cf")], build)


def _pooling_grid() -> None:
    sides = {1: (9,), 2: (7, 9), 3: (5, 7, 6)}
    pools = {  # (pool_size, strides): None, equal to the pool, smaller, larger, per axis
        1: [(2, None), (3, None), (3, 2), (2, 3), (3, 1)],
        2: [(2, None), ((3, 2), None), (3, 2), (2, (1, 3)), ((2, 3), (3, 1))],
        3: [(2, None), (3, 2), ((1, 2, 3), (2, 1, 1))],
    }
    for rank in (1, 2, 3):
        combos = itertools.product(("Max", "Average"), pools[rank], ["valid", "same"], FORMATS)
        for function, (pool, stride), padding, fmt in combos:
            name = f"{function}Pooling{rank}D"
            cid = f"{name}-p{_t(pool)}-s{'None' if stride is None else _t(stride)}-{padding}-{fmt}"

            def build(
                xs: list[Any],
                d: Draw,
                name: str = name,
                pool: Any = pool,
                stride: Any = stride,
                padding: str = padding,
                fmt: str = fmt,
            ) -> Any:
                return getattr(layers, name)(pool, strides=stride, padding=padding, data_format=FORMATS[fmt])(
                    xs[0]
                )

            case(cid, "pooling", name, [_layout(sides[rank], 3, fmt == "cf")], build)


def _global_pooling_grid() -> None:
    sides = {1: (7,), 2: (5, 6), 3: (3, 4, 5)}
    for rank, function, keepdims, fmt in itertools.product(
        (1, 2, 3), ("Max", "Average"), (False, True), FORMATS
    ):
        name = f"Global{function}Pooling{rank}D"
        cid = f"{name}-{'keepdims' if keepdims else 'flat'}-{fmt}"

        def build(xs: list[Any], d: Draw, name: str = name, keepdims: bool = keepdims, fmt: str = fmt) -> Any:
            return getattr(layers, name)(data_format=FORMATS[fmt], keepdims=keepdims)(xs[0])

        case(cid, "global-pooling", name, [_layout(sides[rank], 3, fmt == "cf")], build)


def _relu_grid() -> None:
    for max_value, slope, threshold in itertools.product((None, 1.0, 6.0), (0.0, 0.1, 0.3), (0.0, 0.5, 1.5)):
        if slope == 0.3 and threshold == 0.5:
            continue  # keep the grid small: 0.3 with thresholds 0 and 1.5 (beyond max_value 1) only
        cid = f"ReLU-max{max_value}-slope{slope}-threshold{threshold}"

        def build(
            xs: list[Any],
            d: Draw,
            max_value: Any = max_value,
            slope: float = slope,
            threshold: float = threshold,
        ) -> Any:
            return layers.ReLU(max_value=max_value, negative_slope=slope, threshold=threshold)(xs[0])

        case(cid, "relu", "ReLU", [(4, 5, 3)], build, inputs="wide")
    case("ReLU6-layer-max6", "relu", "ReLU", [(6, 4)], lambda xs, d: layers.ReLU(6.0)(xs[0]), inputs="wide")
    case(
        "ReLU6-activation-relu6",
        "relu",
        "ReLU",
        [(6, 4)],
        lambda xs, d: layers.Activation("relu6")(xs[0]),
        inputs="wide",
    )
    case(
        "ReLU-default-after-ReLU6", "relu", "ReLU", [(6, 4)],
        lambda xs, d: layers.ReLU()(layers.ReLU(max_value=6.0, negative_slope=0.2)(xs[0])), inputs="wide",
    )  # fmt: skip


def _merge_grid() -> None:
    shapes = {
        "equal2d": [(5, 3), (5, 3)],
        "equal3d": [(4, 5, 3), (4, 5, 3)],
        "bcast-axis1": [(4, 5, 3), (1, 5, 3)],
        "bcast-spatial": [(4, 5, 3), (1, 1, 3)],
        "bcast-channels": [(4, 5, 3), (4, 5, 1)],
        "bcast-both-sides": [(4, 1, 3), (1, 5, 1)],
        "three-equal": [(4, 5, 3), (4, 5, 3), (4, 5, 3)],
        "three-bcast": [(4, 5, 3), (1, 5, 3), (4, 1, 1)],
    }
    for cls, (label, input_shapes) in itertools.product(
        ("Multiply", "Subtract", "Average", "Maximum", "Minimum", "Add"), shapes.items()
    ):
        if cls == "Subtract" and len(input_shapes) == 3:
            continue  # Subtract takes exactly two
        if cls == "Add" and not label.startswith(("bcast", "three-bcast")):
            continue  # Add itself is covered elsewhere; here only its broadcasting

        def build(xs: list[Any], d: Draw, cls: str = cls) -> Any:
            return getattr(layers, cls)()(xs)

        case(f"{cls}-{label}", "merge", cls, input_shapes, build)
    case(
        "Multiply-then-Subtract-chain", "merge", "Multiply", [(6, 2), (6, 2), (1, 2)],
        lambda xs, d: layers.Subtract()([layers.Multiply()([xs[0], xs[1]]), xs[2]]),
    )  # fmt: skip


def _normalization_grid() -> None:
    # LayerNormalization: axes x (center, scale, rms_scaling)
    axes = {"axis-1": (-1, (6, 5)), "axis1-3d": (1, (4, 5, 3)), "axes12": ([1, 2], (4, 5, 3)),
            "axes-2-1": ([-2, -1], (4, 5, 3)), "axes123": ([1, 2, 3], (3, 4, 2, 3))}  # fmt: skip
    variants = [
        (True, True, False),
        (False, False, False),
        (True, False, False),
        (False, True, False),
        (True, True, True),
    ]
    for ((label, (axis, shape)), (center, scale, rms)), epsilon in zip(
        itertools.product(axes.items(), variants), itertools.cycle((1e-3, 1e-5)), strict=False
    ):
        flags = "rms" if rms else f"{'center' if center else 'nocenter'}-{'scale' if scale else 'noscale'}"
        cid = f"LayerNormalization-{label}-{flags}-eps{epsilon:g}"

        def build(
            xs: list[Any],
            d: Draw,
            axis: Any = axis,
            center: bool = center,
            scale: bool = scale,
            rms: bool = rms,
            epsilon: float = epsilon,
        ) -> Any:
            return layers.LayerNormalization(
                axis=axis, epsilon=epsilon, center=center, scale=scale, rms_scaling=rms, **d("gamma", "beta")
            )(xs[0])

        case(cid, "normalization", "LayerNormalization", [shape], build, inputs="shifted")

    # GroupNormalization: groups 1, between, C; ranks 1-3; channels last (axis -1) and first (axis 1)
    sides = {1: (8,), 2: (4, 5), 3: (3, 4, 3)}
    for i, (rank, groups, fmt) in enumerate(itertools.product((1, 2, 3), (1, 2, 3, 6), FORMATS)):
        center, scale = [(True, True), (False, True), (True, False), (False, False)][i % 4]
        epsilon = (1e-3, 1e-5)[i % 2]
        cid = f"GroupNormalization-{rank}d-g{groups}-of6-{'center' if center else 'nocenter'}-{'scale' if scale else 'noscale'}-{fmt}"

        def build(
            xs: list[Any],
            d: Draw,
            groups: int = groups,
            fmt: str = fmt,
            center: bool = center,
            scale: bool = scale,
            epsilon: float = epsilon,
        ) -> Any:
            return layers.GroupNormalization(
                groups=groups, axis=1 if fmt == "cf" else -1, epsilon=epsilon, center=center, scale=scale,
                **d("gamma", "beta"),
            )(xs[0])  # fmt: skip

        case(
            cid,
            "normalization",
            "GroupNormalization",
            [_layout(sides[rank], 6, fmt == "cf")],
            build,
            inputs="shifted",
        )

    unit = {"axis-1": (-1, (6, 5)), "axis1": (1, (6, 5)), "axis-1-3d": (-1, (4, 5, 3)),
            "axes12": ([1, 2], (4, 5, 3)), "axes-2-1": ([-2, -1], (4, 5, 3)), "axes123": ([1, 2, 3], (3, 2, 4))}  # fmt: skip
    for label, (axis, shape) in unit.items():
        case(
            f"UnitNormalization-{label}", "normalization", "UnitNormalization", [shape],
            lambda xs, d, axis=axis: layers.UnitNormalization(axis=axis)(xs[0]), inputs="shifted",
        )  # fmt: skip


def _rescaling_grid() -> None:
    rescalings = {
        "scale1over255": (1 / 255, 0.0, (5, 3)),
        "scale2-offset-1": (2.0, -1.0, (4, 5, 3)),
        "scale-negative": (-0.5, 0.25, (4, 5, 3)),
        "per-channel-scale": ([0.5, -2.0, 1.5], 0.0, (4, 5, 3)),
        "per-channel-scale-and-offset": ([0.5, -2.0, 1.5], [1.0, 0.0, -3.0], (4, 5, 3)),
        "scalar-scale-per-channel-offset": (0.1, [1.0, 2.0, 3.0], (5, 3)),
    }
    for label, (scale, offset, shape) in rescalings.items():
        case(
            f"Rescaling-{label}", "rescaling", "Rescaling", [shape],
            lambda xs, d, scale=scale, offset=offset: layers.Rescaling(scale, offset=offset)(xs[0]),
            inputs="shifted",
        )  # fmt: skip

    # Normalization: adapted on numpy data (drawn like the inputs), or given mean and variance
    def adapted(shape: tuple[int, ...], axis: Any, invert: bool = False) -> Build:
        def build(xs: list[Any], d: Draw) -> Any:
            data = d.rng.standard_normal((16, *shape)) * d.rng.uniform(0.5, 3.0, shape) + d.rng.uniform(
                1, 4, shape
            )
            layer = layers.Normalization(axis=axis, invert=invert)
            layer.adapt(data.astype(np.float32))
            return layer(xs[0])

        return build

    def given(mean: Any, variance: Any, axis: Any, invert: bool = False) -> Build:
        return lambda xs, d: layers.Normalization(axis=axis, mean=mean, variance=variance, invert=invert)(
            xs[0]
        )

    normalizations: dict[str, tuple[Build, tuple[int, ...]]] = {
        "adapt-axis-1": (adapted((5, 3), -1), (5, 3)),
        "adapt-axis-None": (adapted((4, 5, 3), None), (4, 5, 3)),
        "adapt-axis1": (adapted((4, 5, 3), 1), (4, 5, 3)),
        "adapt-axes12": (adapted((4, 5, 3), (1, 2)), (4, 5, 3)),
        "adapt-axis-1-invert": (adapted((5, 3), -1, invert=True), (5, 3)),
        "given-scalars": (given(2.0, 4.0, None), (4, 5, 3)),
        "given-per-channel": (given([1.0, 2.0, 3.0], [0.5, 1.0, 4.0], -1), (4, 5, 3)),
        "given-per-channel-invert": (given([1.0, 2.0, 3.0], [0.5, 1.0, 4.0], -1, invert=True), (4, 5, 3)),
        "given-axis1": (given([1.0, -1.0, 0.5, 2.0], [1.0, 2.0, 3.0, 0.25], 1), (4, 5, 3)),
        "given-axes12-invert": (given(np.linspace(0, 3, 20).reshape(4, 5).tolist(),
                                      np.linspace(0.5, 2, 20).reshape(4, 5).tolist(), (1, 2), invert=True), (4, 5, 3)),
    }  # fmt: skip
    for label, (build, shape) in normalizations.items():
        case(f"Normalization-{label}", "rescaling", "Normalization", [shape], build, inputs="shifted")


def _shape_grid() -> None:
    permutes = {(5, 3): [(2, 1)], (4, 5, 3): [(3, 1, 2), (2, 3, 1), (1, 3, 2), (3, 2, 1), (2, 1, 3)],
                (2, 3, 4, 5): [(4, 1, 3, 2), (2, 3, 4, 1), (1, 2, 3, 4)]}  # fmt: skip
    for shape, dims_list in permutes.items():
        for dims in dims_list:
            case(
                f"Permute-{_t(dims)}-of-{_t(shape)}", "shape", "Permute", [shape],
                lambda xs, d, dims=dims: layers.Permute(dims)(xs[0]),
            )  # fmt: skip
    case(
        "Permute-there-and-back", "shape", "Permute", [(4, 5, 3)],
        lambda xs, d: layers.Permute((2, 3, 1))(layers.Permute((3, 1, 2))(xs[0])),
    )  # fmt: skip
    for n, shape in [(1, (5,)), (3, (5,)), (4, (1,))]:
        case(f"RepeatVector-n{n}-of-{_t(shape)}", "shape", "RepeatVector", [shape],
             lambda xs, d, n=n: layers.RepeatVector(n)(xs[0]))  # fmt: skip
    case(
        "RepeatVector-after-Dense", "shape", "RepeatVector", [(4,)],
        lambda xs, d: layers.RepeatVector(3)(layers.Dense(6, **d("kernel", "bias"))(xs[0])),
    )  # fmt: skip
    for shape in [(5,), (4, 3), (2, 3, 4, 2)]:
        case(f"Identity-{_t(shape)}", "shape", "Identity", [shape], lambda xs, d: layers.Identity()(xs[0]))
    case(
        "Identity-twice",
        "shape",
        "Identity",
        [(4, 3)],
        lambda xs, d: layers.Identity()(layers.Identity()(xs[0])),
    )


def _ops_grid() -> None:
    def op(cid: str, kind: str, shapes: Sequence[tuple[int, ...]], build: Callable[..., Any]) -> None:
        case(f"ops.{cid}", "ops", f"ops.{kind}", shapes, lambda xs, d: build(*xs))

    # split: sections and index lists, on channel and spatial axes
    op("split-2-axis-1", "split", [(4, 6)], lambda x: ops.split(x, 2, axis=-1))
    op("split-3-axis1", "split", [(6, 4)], lambda x: ops.split(x, 3, axis=1))
    op("split-indices-1-3-axis1", "split", [(5, 4)], lambda x: ops.split(x, [1, 3], axis=1))
    op("split-indices-2-axis-1", "split", [(3, 5)], lambda x: ops.split(x, [2], axis=-1))
    op("split-indices-1-2-4-axis2-4d", "split", [(3, 5, 2)], lambda x: ops.split(x, [1, 2, 4], axis=2))
    op("split-1-section", "split", [(3, 4)], lambda x: ops.split(x, 1, axis=-1))
    op("split-then-add", "split", [(4, 6)], lambda x: layers.Add()(ops.split(x, 2, axis=-1)))
    # concatenate
    op("concatenate-axis-1", "concatenate", [(4, 2), (4, 3)], lambda a, b: ops.concatenate([a, b], axis=-1))
    op(
        "concatenate-axis1-three",
        "concatenate",
        [(1, 3), (2, 3), (3, 3)],
        lambda a, b, c: ops.concatenate([a, b, c], axis=1),
    )
    op(
        "concatenate-axis-2-4d",
        "concatenate",
        [(3, 2, 4, 2), (3, 1, 4, 2)],
        lambda a, b: ops.concatenate([a, b], axis=-3),
    )
    op(
        "concatenate-of-split-reversed",
        "concatenate",
        [(4, 6)],
        lambda x: ops.concatenate(ops.split(x, 3, axis=-1)[::-1], axis=-1),
    )
    # arithmetic with tensors
    op("add-tensors", "add", [(4, 3), (4, 3)], lambda a, b: ops.add(a, b))
    op("add-bcast", "add", [(4, 5, 3), (1, 5, 1)], lambda a, b: ops.add(a, b))
    op("subtract-tensors", "subtract", [(4, 3), (4, 3)], lambda a, b: ops.subtract(a, b))
    op("subtract-bcast", "subtract", [(1, 5, 3), (4, 5, 1)], lambda a, b: ops.subtract(a, b))
    op("multiply-tensors", "multiply", [(4, 3), (4, 3)], lambda a, b: ops.multiply(a, b))
    op("multiply-bcast", "multiply", [(4, 5, 3), (4, 1, 3)], lambda a, b: ops.multiply(a, b))
    op("operators-tensors", "add", [(4, 3), (4, 3)], lambda a, b: (a + b) * b - a)
    # arithmetic with Python numbers, both orders
    op("add-number", "add", [(4, 3)], lambda x: ops.add(x, 1.5))
    op("add-number-first", "add", [(4, 3)], lambda x: ops.add(-2.0, x))
    op("add-operator-int", "add", [(4, 3)], lambda x: x + 2)
    op("radd-operator", "add", [(4, 3)], lambda x: 0.5 + x)
    op("subtract-number", "subtract", [(4, 3)], lambda x: ops.subtract(x, 0.75))
    op("subtract-number-first", "subtract", [(4, 3)], lambda x: ops.subtract(2.0, x))
    op("rsub-operator", "subtract", [(4, 3)], lambda x: 1 - x)
    op("multiply-number", "multiply", [(4, 3)], lambda x: ops.multiply(x, -0.5))
    op("multiply-number-first", "multiply", [(4, 3)], lambda x: ops.multiply(3.0, x))
    op("rmul-operator", "multiply", [(4, 3)], lambda x: 2 * x)
    op("divide-number", "divide", [(4, 3)], lambda x: x / 4.0)
    op("number-chain", "add", [(4, 3)], lambda x: (x * 2.0 + 1.0) * 0.5 - 3.0)
    # reshape (the batch axis as -1 or None), transpose keeping batch first, squeeze, expand_dims
    op("reshape-flat", "reshape", [(5, 3)], lambda x: ops.reshape(x, (-1, 15)))
    op("reshape-3d", "reshape", [(5, 3, 2)], lambda x: ops.reshape(x, (-1, 6, 5)))
    op("reshape-split-axis", "reshape", [(4, 6)], lambda x: ops.reshape(x, (-1, 2, 12)))
    op("reshape-regroup", "reshape", [(4, 6)], lambda x: ops.reshape(x, (-1, 6, 4)))
    op("reshape-add-axis", "reshape", [(4, 6)], lambda x: ops.reshape(x, (-1, 4, 6, 1)))
    op("transpose-021", "transpose", [(4, 3)], lambda x: ops.transpose(x, (0, 2, 1)))
    op("transpose-0312", "transpose", [(4, 5, 3)], lambda x: ops.transpose(x, (0, 3, 1, 2)))
    op("transpose-0231", "transpose", [(3, 4, 5)], lambda x: ops.transpose(x, (0, 2, 3, 1)))
    op("transpose-0132", "transpose", [(4, 5, 3)], lambda x: ops.transpose(x, (0, 1, 3, 2)))
    op("transpose-04123-5d", "transpose", [(2, 3, 4, 5)], lambda x: ops.transpose(x, (0, 4, 1, 2, 3)))
    op("squeeze-axis2", "squeeze", [(5, 1, 3)], lambda x: ops.squeeze(x, axis=2))
    op("squeeze-axis-1", "squeeze", [(4, 1)], lambda x: ops.squeeze(x, axis=-1))
    op("squeeze-axes13", "squeeze", [(1, 4, 1, 3)], lambda x: ops.squeeze(x, axis=(1, 3)))
    op("expand_dims-axis1", "expand_dims", [(4, 3)], lambda x: ops.expand_dims(x, 1))
    op("expand_dims-axis-1", "expand_dims", [(4, 3)], lambda x: ops.expand_dims(x, -1))
    op("expand_dims-axis2", "expand_dims", [(4, 3)], lambda x: ops.expand_dims(x, 2))
    op(
        "expand_dims-then-squeeze",
        "expand_dims",
        [(4, 3)],
        lambda x: ops.squeeze(ops.expand_dims(x, 1), axis=1),
    )
    op("clip-symmetric", "clip", [(4, 3)], lambda x: ops.clip(x, -0.5, 0.5))
    op("clip-0-1", "clip", [(4, 5, 3)], lambda x: ops.clip(x, 0.0, 1.0))
    op("clip-int-bounds", "clip", [(4, 3)], lambda x: ops.clip(x, -1, 2))
    # activations called as ops
    for name in (
        "relu",
        "sigmoid",
        "tanh",
        "relu6",
        "silu",
        "softplus",
        "elu",
        "selu",
        "hard_sigmoid",
        "softsign",
    ):
        op(f"{name}", name, [(4, 3)], lambda x, name=name: getattr(ops, name)(x))
    op("leaky_relu-0.2", "leaky_relu", [(4, 3)], lambda x: ops.leaky_relu(x, negative_slope=0.2))
    op("gelu-exact", "gelu", [(4, 3)], lambda x: ops.gelu(x, approximate=False))
    op("softmax-axis-1", "softmax", [(4, 3)], lambda x: ops.softmax(x, axis=-1))
    for name in ("relu", "sigmoid", "tanh", "gelu", "silu", "elu", "relu6"):
        op(
            f"activations.{name}",
            f"activations.{name}",
            [(4, 3)],
            lambda x, name=name: getattr(keras.activations, name)(x),
        )
    op("activations.relu-slope-max-threshold", "activations.relu", [(4, 3)],
       lambda x: keras.activations.relu(x, negative_slope=0.1, max_value=2.0, threshold=0.3))  # fmt: skip
    op(
        "activations.relu-max6",
        "activations.relu",
        [(4, 3)],
        lambda x: keras.activations.relu(x, max_value=6.0),
    )
    op(
        "activations.leaky_relu",
        "activations.leaky_relu",
        [(4, 3)],
        lambda x: keras.activations.leaky_relu(x, 0.3),
    )

    # beyond the brief's list: what the compiler's op table also takes, and Keras' default gelu
    def extra(
        cid: str,
        kind: str,
        shapes: Sequence[tuple[int, ...]],
        build: Callable[..., Any],
        inputs: str = "normal",
    ) -> None:
        case(f"ops.{cid}", "ops-extra", f"ops.{kind}", shapes, lambda xs, d: build(*xs), inputs=inputs)

    # keras.ops.gelu's default is the tanh approximation (Activation("gelu") is exact): alone in
    # its bundle, so a refusal does not take the other ops' bundle tests with it
    case("ops.gelu-approximate-default", "ops-gelu-tanh", "ops.gelu", [(4, 3)], lambda xs, d: ops.gelu(xs[0]))
    extra("divide-tensors", "divide", [(4, 3), (4, 3)], lambda a, b: ops.divide(a, b), inputs="positive")
    extra(
        "true_divide-bcast", "divide", [(4, 3), (1, 3)], lambda a, b: ops.true_divide(a, b), inputs="positive"
    )
    extra("divide-number-first", "divide", [(4, 3)], lambda x: ops.divide(2.0, x), inputs="positive")
    extra("maximum-tensors", "maximum", [(4, 3), (4, 1)], lambda a, b: ops.maximum(a, b))
    extra("minimum-tensors", "minimum", [(4, 3), (4, 3)], lambda a, b: ops.minimum(a, b))
    extra("maximum-number", "maximum", [(4, 3)], lambda x: ops.maximum(x, 0.25))
    extra("minimum-number-first", "minimum", [(4, 3)], lambda x: ops.minimum(-0.5, x))
    extra("negative", "negative", [(4, 3)], lambda x: ops.negative(x))
    extra("neg-operator", "negative", [(4, 3)], lambda x: -x)
    for name in ("hard_silu", "log_sigmoid", "exp", "swish", "hard_swish"):
        extra(name, name, [(4, 3)], lambda x, name=name: getattr(ops, name)(x))
    extra("softmax-axis1", "softmax", [(4, 3)], lambda x: ops.softmax(x, axis=1))
    extra("elu-alpha", "elu", [(4, 3)], lambda x: ops.elu(x, alpha=0.5))
    extra(
        "clip-after-split",
        "clip",
        [(4, 6)],
        lambda x: [ops.clip(a, -0.3, 0.3) for a in ops.split(x, [2, 5], axis=-1)],
    )
    extra("expand_dims-two-axes", "expand_dims", [(4, 3)], lambda x: ops.expand_dims(x, (1, 3)))
    extra("split-axis-2-of-4d", "split", [(4, 6, 2)], lambda x: ops.split(x, 2, axis=-2))
    # a small pipeline mixing layers and ops
    op(
        "pipeline-split-scale-concat-transpose-reshape", "split", [(4, 6)],
        lambda x: ops.reshape(
            ops.transpose(ops.concatenate([ops.sigmoid(a) * 2.0 - 1.0 for a in ops.split(x, 3, axis=-1)], axis=-1),
                          (0, 2, 1)), (-1, 24)),
    )  # fmt: skip
    case(
        "ops.pipeline-dense-relu-clip-concat", "ops", "ops.concatenate", [(6, 4)],
        lambda xs, d: ops.concatenate(
            [layers.Dense(2, **d("kernel", "bias"))(ops.relu(xs[0])), ops.clip(xs[0] + 1.0, 0, 2)], axis=-1
        ),
    )  # fmt: skip


def _edge_grid() -> None:
    """Sizes and arguments at the edges: windows larger than the input, axes of length 1,
    non-contiguous normalization axes."""
    edge = "edges"
    for function, fmt in itertools.product(("Max", "Average"), FORMATS):
        case(
            f"{function}Pooling2D-p3-s2-same-on-2x1-{fmt}",
            edge,
            f"{function}Pooling2D",
            [_layout((2, 1), 3, fmt == "cf")],
            lambda xs, d, f=function, fmt=fmt: getattr(layers, f"{f}Pooling2D")(3, 2, "same", FORMATS[fmt])(
                xs[0]
            ),
        )
        case(
            f"{function}Pooling1D-p4-s4-same-on-5-{fmt}",
            edge,
            f"{function}Pooling1D",
            [_layout((5,), 2, fmt == "cf")],
            lambda xs, d, f=function, fmt=fmt: getattr(layers, f"{f}Pooling1D")(4, 4, "same", FORMATS[fmt])(
                xs[0]
            ),
        )
        case(
            f"Global{function}Pooling2D-on-1x1-{fmt}",
            edge,
            f"Global{function}Pooling2D",
            [_layout((1, 1), 3, fmt == "cf")],
            lambda xs, d, f=function, fmt=fmt: getattr(layers, f"Global{f}Pooling2D")(FORMATS[fmt])(xs[0]),
        )
    for fmt in FORMATS:
        case(
            f"Conv2D-k3-s3-same-on-1x2-{fmt}",
            edge,
            "Conv2D",
            [_layout((1, 2), 2, fmt == "cf")],
            lambda xs, d, fmt=fmt: layers.Conv2D(3, 3, 3, "same", FORMATS[fmt], **d("kernel", "bias"))(xs[0]),
        )
        case(
            f"Conv1D-k5-d2-causal-on-3-{fmt}",
            edge,
            "Conv1D",
            [_layout((3,), 2, fmt == "cf")],
            lambda xs, d, fmt=fmt: layers.Conv1D(
                2, 5, padding="causal", dilation_rate=2, data_format=FORMATS[fmt], **d("kernel", "bias")
            )(xs[0]),
        )
        case(
            f"DepthwiseConv2D-k3-s2-m2-same-on-1x3-{fmt}",
            edge,
            "DepthwiseConv2D",
            [_layout((1, 3), 2, fmt == "cf")],
            lambda xs, d, fmt=fmt: layers.DepthwiseConv2D(
                3, 2, "same", 2, data_format=FORMATS[fmt], **d("depthwise", "bias")
            )(xs[0]),
        )
    case(
        "LayerNormalization-axes13-of-4d",
        edge,
        "LayerNormalization",
        [(3, 4, 2, 5)],
        lambda xs, d: layers.LayerNormalization(axis=[1, 3], **d("gamma", "beta"))(xs[0]),
        inputs="shifted",
    )
    case(
        "LayerNormalization-axis2-of-3d",
        edge,
        "LayerNormalization",
        [(4, 5, 3)],
        lambda xs, d: layers.LayerNormalization(axis=2, **d("gamma", "beta"))(xs[0]),
        inputs="shifted",
    )
    case(
        "GroupNormalization-axis2-g2",
        edge,
        "GroupNormalization",
        [(3, 4, 5)],
        lambda xs, d: layers.GroupNormalization(2, axis=2, **d("gamma", "beta"))(xs[0]),
        inputs="shifted",
    )
    case(
        "UnitNormalization-axes13-of-4d",
        edge,
        "UnitNormalization",
        [(3, 4, 2, 5)],
        lambda xs, d: layers.UnitNormalization(axis=[1, 3])(xs[0]),
        inputs="shifted",
    )
    case(
        "Normalization-given-axis-1-negative-tuple",
        edge,
        "Normalization",
        [(4, 3)],
        lambda xs, d: layers.Normalization(axis=(-1,), mean=[1.0, 2.0, 3.0], variance=[1.0, 4.0, 0.5])(xs[0]),
        inputs="shifted",
    )
    case(
        "Normalization-tiny-variance",
        edge,
        "Normalization",
        [(4, 3)],
        lambda xs, d: layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[1e-9, 0.0, 1e-3])(xs[0]),
        inputs="shifted",
    )
    case(
        "Multiply-bcast-batch-only-shapes-equal-rank",
        edge,
        "Multiply",
        [(1, 1, 1), (4, 5, 3)],
        lambda xs, d: layers.Multiply()(xs),
    )
    case(
        "Maximum-one-input-repeated",
        edge,
        "Maximum",
        [(4, 3)],
        lambda xs, d: layers.Maximum()([xs[0], xs[0]]),
    )
    case("Subtract-self", edge, "Subtract", [(4, 3)], lambda xs, d: layers.Subtract()([xs[0], xs[0]]))
    case(
        "ReLU-threshold-above-max",
        edge,
        "ReLU",
        [(5, 3)],
        lambda xs, d: layers.ReLU(max_value=0.5, threshold=1.0, negative_slope=0.2)(xs[0]),
        inputs="wide",
    )
    case(
        "RepeatVector-n1-then-Permute",
        edge,
        "RepeatVector",
        [(4,)],
        lambda xs, d: layers.Permute((2, 1))(layers.RepeatVector(1)(xs[0])),
    )


_conv_grid()
_conv_activation_grid()
_edge_grid()
_depthwise_separable_grid()
_pooling_grid()
_global_pooling_grid()
_relu_grid()
_merge_grid()
_normalization_grid()
_rescaling_grid()
_shape_grid()
_ops_grid()

CASES_BY_ID = {c.id: c for c in CASES}
assert len(CASES_BY_ID) == len(CASES), [
    k for k, n in collections.Counter(c.id for c in CASES).items() if n > 1
]
BUNDLES = sorted({c.bundle for c in CASES}, key=[c.bundle for c in CASES].index)


# --- building, saving, running Keras -------------------------------------------------------------

# XLA options for the Keras oracle (as in test_keras_conformance): faster compiles, same math.
ORACLE_COMPILE_OPTIONS = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
}


def _jit_outputs(model: keras.Model, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """`model(x, training=False)` as `predict` runs it, jit-compiled."""

    def call(*xs: np.ndarray) -> object:
        return model(list(xs) if len(xs) > 1 else xs[0], training=False)

    lowered = jax.jit(call).lower(*inputs)
    try:
        compiled = lowered.compile(ORACLE_COMPILE_OPTIONS)
    except Exception as error:  # an older jaxlib without one of the options
        if "No such compile option" not in str(error):
            raise
        compiled = lowered.compile()
    result = compiled(*inputs)
    return [np.asarray(y) for y in (result if isinstance(result, (list, tuple)) else [result])]


@dataclass
class Built:
    """One case's part of a bundle: its Keras tensors, input values and output positions."""

    case: Case
    inputs: list[Any]
    outputs: list[Any]
    values: list[np.ndarray]
    first_output: int


@dataclass
class Bundle:
    name: str
    model: keras.Model
    path: Path
    cases: dict[str, Built]
    values: list[np.ndarray]
    _expected: Future[list[np.ndarray]]
    compiled: list[np.ndarray] | None = None  # onnxruntime's outputs of the whole bundle
    error: str | None = None  # why the whole bundle did not compile or run
    done: bool = False

    @property
    def expected(self) -> list[np.ndarray]:
        return self._expected.result()


def build_case(case: Case, index: int = 0) -> Built:
    draw = Draw(np.random.default_rng(_case_seed(case.id)))
    inputs = [keras.Input(shape, name=f"c{index:03d}_in{j}") for j, shape in enumerate(case.shapes)]
    out = case.build(inputs, draw)
    outputs = list(out) if isinstance(out, (list, tuple)) else [out]
    return Built(case, inputs, outputs, case_inputs(case), 0)


def case_model(built: Built, name: str = "case") -> keras.Model:
    model = keras.Model(built.inputs, built.outputs, name=name)
    restore_initializers(model)
    return model


def _first_line(error: BaseException | str) -> str:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else text


def _error_text(error: BaseException) -> str:
    """The error's first line, then (for a crash rather than the compiler's own refusal) where."""
    text = f"{type(error).__name__}: {error}"
    if type(error).__module__.startswith("deconv_compiler"):
        return text  # a refusal the compiler means: its message says it all
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return text
    last = frames[-1]
    lines = text.splitlines() or [text]
    lines[0] += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    return "\n".join(lines) + "\n" + "".join(traceback.format_list(frames[-4:]))


def compile_and_run(
    path: Path | Sequence[Path], values: Sequence[np.ndarray], names: Sequence[str], **options: Any
) -> list[np.ndarray]:
    """Read the file(s) back, compile (default options unless given), run on onnxruntime's CPU
    provider; inputs fed by name."""
    import deconv_compiler as dc

    graph = dc.load_keras_model(*([path] if isinstance(path, Path) else path))
    model = dc.compile_model(graph, dc.CompileOptions(**options))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    declared = [i.name for i in session.get_inputs()]
    assert sorted(declared) == sorted(names), (
        f"the compiled model's inputs are {declared}, expected {list(names)}"
    )
    feeds = dict(zip(names, values, strict=True))
    return [np.asarray(y) for y in session.run(None, {name: feeds[name] for name in declared})]


class Bundles:
    """Builds each bundle once: Python (building, saving, tracing) in the test's thread while a
    worker thread runs XLA's compile of the previous bundle, which releases the GIL."""

    def __init__(self, root: Path, wanted: Sequence[str]) -> None:
        self.root = root
        self.wanted = [name for name in BUNDLES if name in wanted]
        self.built: dict[str, Bundle | None] = {}
        self.broken: dict[str, str] = {}
        self.pool = ThreadPoolExecutor(max_workers=1)

    def __getitem__(self, name: str) -> Bundle:
        if name not in self.built:
            for other in [name, *self.wanted]:
                if other not in self.built:
                    try:
                        self.built[other] = self._build(other)
                    except Exception as error:  # noqa: BLE001 - fails that bundle's tests only
                        self.broken[other] = (
                            f"building bundle {other!r} in Keras failed: {_error_text(error)}"
                        )
                        self.built[other] = None
        bundle = self.built[name]
        if bundle is None:
            pytest.fail(self.broken[name], pytrace=False)
        return bundle

    def _build(self, name: str) -> Bundle:
        cases: dict[str, Built] = {}
        inputs: list[Any] = []
        outputs: list[Any] = []
        values: list[np.ndarray] = []
        for index, c in enumerate(c for c in CASES if c.bundle == name):
            built = build_case(c, index)
            built.first_output = len(outputs)
            cases[c.id] = built
            inputs += built.inputs
            outputs += built.outputs
            values += built.values
        model = keras.Model(inputs, outputs, name=name.replace("-", "_"))
        restore_initializers(model)
        path = self.root / f"{name}.keras"
        model.save(path)
        expected = self.pool.submit(_jit_outputs, model, values)
        return Bundle(name, model, path, cases, values, expected)

    def compiled(self, name: str) -> Bundle:
        bundle = self[name]
        if not bundle.done:
            bundle.done = True
            try:
                names = [t.name for t in bundle.model.inputs]
                actual = compile_and_run(bundle.path, bundle.values, names)
                if len(actual) != len(bundle.model.outputs):
                    raise AssertionError(f"{len(actual)} outputs, Keras has {len(bundle.model.outputs)}")
                bundle.compiled = actual
            except Exception as error:  # noqa: BLE001 - every failure is reported, per case
                bundle.error = _error_text(error)
        return bundle


@pytest.fixture(scope="module")
def bundles(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundles]:
    wanted = set()
    for item in request.session.items:
        params = getattr(item, "callspec", None)
        if params is None:
            continue
        if "case_id" in params.params:
            wanted.add(CASES_BY_ID[params.params["case_id"]].bundle)
        if "bundle_name" in params.params and params.params["bundle_name"] in BUNDLES:
            wanted.add(params.params["bundle_name"])
    built = Bundles(tmp_path_factory.mktemp("grids"), sorted(wanted))
    yield built
    built.pool.shutdown(cancel_futures=True)


def _compare(
    case_id: str, actual: Sequence[np.ndarray], expected: Sequence[np.ndarray], names: Sequence[str]
) -> None:
    assert len(actual) == len(expected), f"{case_id}: {len(actual)} outputs, Keras has {len(expected)}"
    failures = []
    for k, (got, want, name) in enumerate(zip(actual, expected, names, strict=True)):
        try:
            assert_close(
                np.asarray(got),
                np.asarray(want, dtype=np.float64),
                rtol=RTOL,
                context=f"{case_id} output {k} ({name})",
            )
        except AssertionError as error:
            failures.append(str(error).splitlines()[0])
    assert not failures, "\n".join(failures)


# --- the tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", [c.id for c in CASES])
def test_case_matches_keras(bundles: Bundles, case_id: str, tmp_path: Path) -> None:
    case = CASES_BY_ID[case_id]
    bundle = bundles.compiled(case.bundle)
    built = bundle.cases[case_id]
    count = len(built.outputs)
    expected = bundle.expected[built.first_output : built.first_output + count]
    names = [t.name for t in built.outputs]
    if bundle.compiled is not None:
        actual = bundle.compiled[built.first_output : built.first_output + count]
        _compare(case_id, actual, expected, names)
        return
    # the whole bundle was refused: this case alone, same layers and weights
    path = tmp_path / "case.keras"
    case_model(built).save(path)
    failure = None
    try:
        actual = compile_and_run(path, built.values, [t.name for t in built.inputs])
    except Exception as error:  # noqa: BLE001
        failure = _error_text(error)
    if failure is not None:
        pytest.fail(
            f"{case_id}: {_first_line(failure)}\n(compiled alone; bundle {case.bundle!r} was refused "
            f"too: {_first_line(bundle.error or '')})\n\nfull error:\n{failure}",
            pytrace=False,
        )
    _compare(case_id, actual, expected, names)


@pytest.mark.parametrize("bundle_name", BUNDLES)
def test_bundle_compiles_whole(bundles: Bundles, bundle_name: str) -> None:
    """All of a bundle's cases as one model (many inputs and outputs, layer names numbered)."""
    bundle = bundles.compiled(bundle_name)
    if bundle.error is not None:
        pytest.fail(f"bundle {bundle_name!r} ({len(bundle.cases)} cases): {bundle.error}", pytrace=False)


def _compare_bundle(bundle: Bundle, actual: Sequence[np.ndarray], how: str) -> None:
    """Every case's outputs; the failures listed by case id."""
    assert len(actual) == len(bundle.expected), (
        f"{how}: {len(actual)} outputs, Keras has {len(bundle.expected)}"
    )
    failures = []
    for built in bundle.cases.values():
        span = slice(built.first_output, built.first_output + len(built.outputs))
        try:
            _compare(built.case.id, actual[span], bundle.expected[span], [t.name for t in built.outputs])
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, f"{how}: {len(failures)} of {len(bundle.cases)} cases differ:\n" + "\n".join(
        failures
    )


VARIANTS: dict[str, dict[str, Any]] = {
    "cuda-opset11": {"target": "cuda", "opset": 11},  # the oldest opset: no LayerNormalization op...
    "native-opset26": {"strategy": "native", "opset": 26},  # the newest ops
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("bundle_name", BUNDLES)
def test_bundle_matches_keras_with_other_options(bundles: Bundles, bundle_name: str, variant: str) -> None:
    bundle = bundles[bundle_name]
    failure = None
    try:
        actual = compile_and_run(
            bundle.path, bundle.values, [t.name for t in bundle.model.inputs], **VARIANTS[variant]
        )
    except Exception as error:  # noqa: BLE001
        failure = _error_text(error)
    if failure is not None:
        pytest.fail(f"bundle {bundle_name!r} ({variant}): {failure}", pytrace=False)
    _compare_bundle(bundle, actual, f"bundle {bundle_name!r} ({variant})")


@pytest.mark.parametrize("form", ["legacy-h5", "json-and-weights"])
@pytest.mark.parametrize("bundle_name", BUNDLES)
def test_bundle_in_other_file_forms_matches_keras(
    bundles: Bundles, bundle_name: str, form: str, tmp_path: Path
) -> None:
    """Keras' legacy .h5 (weights numbered per class; ops with no `module`) and `to_json` with a
    `.weights.h5`."""
    bundle = bundles[bundle_name]
    if form == "legacy-h5":
        from keras.src.legacy.saving import legacy_h5_format

        paths: list[Path] = [tmp_path / "model.h5"]
        legacy_h5_format.save_model_to_hdf5(bundle.model, str(paths[0]))
    else:
        paths = [tmp_path / "model.json", tmp_path / "model.weights.h5"]
        paths[0].write_text(bundle.model.to_json())
        bundle.model.save_weights(paths[1])
    failure = None
    try:
        actual = compile_and_run(paths, bundle.values, [t.name for t in bundle.model.inputs])
    except Exception as error:  # noqa: BLE001
        failure = _error_text(error)
    if failure is not None:
        pytest.fail(f"bundle {bundle_name!r} ({form}): {failure}", pytrace=False)
    _compare_bundle(bundle, actual, f"bundle {bundle_name!r} ({form})")


@pytest.mark.parametrize("bundle_name", BUNDLES)
def test_keras_side_builds_saves_and_runs(bundles: Bundles, bundle_name: str) -> None:
    """The oracle itself: the bundle was saved as .keras, Keras ran it, every output finite and of
    the shape Keras declares."""
    bundle = bundles[bundle_name]
    assert bundle.path.stat().st_size > 0
    expected = bundle.expected
    assert len(expected) == len(bundle.model.outputs)
    for built in bundle.cases.values():
        for k, tensor in enumerate(built.outputs):
            y = expected[built.first_output + k]
            if "-glu-" not in built.case.id:  # Keras' declared shape ignores that glu halves the last axis
                assert y.shape == (BATCH, *tensor.shape[1:]), (built.case.id, y.shape, tensor.shape)
            assert np.all(np.isfinite(y)), built.case.id
            assert y.dtype == np.float32, (built.case.id, y.dtype)


@pytest.mark.parametrize("bundle_name", BUNDLES)
def test_numpy_reference_matches_keras(bundles: Bundles, bundle_name: str) -> None:
    """`deconvc check` compares with this reference: it must itself give Keras' numbers."""
    import deconv_compiler as dc
    from deconv_compiler.verification import reference_outputs

    bundle = bundles[bundle_name]
    try:
        graph = dc.load_keras_model(bundle.path)
        order = [v.name for v in graph.inputs]
        by_name = dict(zip([t.name for t in bundle.model.inputs], bundle.values, strict=True))
        actual = reference_outputs(graph, [by_name[name] for name in order])
    except Exception as error:  # noqa: BLE001
        failure = _error_text(error)
    else:
        failure = None
    if failure is not None:
        pytest.fail(f"bundle {bundle_name!r}: {failure}", pytrace=False)
    _compare_bundle(bundle, actual, f"bundle {bundle_name!r} (numpy reference)")


def test_every_layer_has_a_grid() -> None:
    counts = collections.Counter(c.kind for c in CASES)
    required = {
        **{f"Conv{r}D": 30 for r in (1, 2, 3)},
        **{f"{k}Conv{r}D": 20 for k in ("Depthwise", "Separable") for r in (1, 2)},
        **{f"{f}Pooling{r}D": 12 for f in ("Max", "Average") for r in (1, 2, 3)},
        **{f"Global{f}Pooling{r}D": 4 for f in ("Max", "Average") for r in (1, 2, 3)},
        "ReLU": 20, "Multiply": 8, "Subtract": 5, "Average": 8, "Maximum": 8, "Minimum": 8,
        "LayerNormalization": 20, "GroupNormalization": 20, "UnitNormalization": 5, "Rescaling": 5,
        "Normalization": 10, "Permute": 8, "RepeatVector": 3, "Identity": 3,
        **{f"ops.{name}": 3 for name in ("split", "concatenate", "add", "subtract", "multiply", "reshape",
                                         "transpose", "squeeze", "expand_dims", "clip")},
    }  # fmt: skip
    low = {kind: counts[kind] for kind, floor in required.items() if counts[kind] < floor}
    assert not low, f"grids smaller than their floor: {low}"
