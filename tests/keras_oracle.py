"""Random Keras Conv{1,2,3}DTranspose cases → (spec mapping, input, real Keras output).

The oracle for the conformance test: it builds the *real* Keras layers (jax backend), sets
seeded random weights explicitly, runs them eagerly on a seeded random input and returns the
spec that describes the same computation in the compiler's format (weights inline). Nothing
here imports `deconv_compiler`: the only shape arithmetic is a copy of Keras' output-length
rule, used to steer generation and to sanity-check what Keras returns.

Guarantees: case generation is deterministic (seeded numpy, no global state); every generated
case is one Keras accepts and whose output is non-empty; every case is small enough to run in
tens of milliseconds.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import numpy as np

# Keras picks its backend at import time; the XLA flag avoids a jax 0.10.2 CPU abort on some
# transposed convolutions ("Window dimensions do not match RHS shape").
os.environ["KERAS_BACKEND"] = "jax"
_XLA_FLAG = "--xla_disable_hlo_passes=algsimp"
if _XLA_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _XLA_FLAG).strip()

# Keras 3 activation names the compiler supports ("threshold" has no defaults).
ACTIVATIONS: tuple[str, ...] = (
    "celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu",
    "hard_swish", "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish",
    "relu", "relu6", "selu", "sigmoid", "silu", "soft_shrink", "softmax", "softplus",
    "softsign", "sparse_plus", "sparse_sigmoid", "sparsemax", "squareplus", "swish", "tanh",
    "tanh_shrink",
)  # fmt: skip
assert len(ACTIVATIONS) == 31

# The "no activation" slot: the key omitted, or explicitly None.
NO_ACTIVATION = "none"

# Keras' axis -1 activations (channels for channels_last, last spatial axis for channels_first).
AXIS_ACTIVATIONS = frozenset({"softmax", "log_softmax", "glu", "sparsemax"})

_TYPE_NAMES = {
    1: ("Conv1DTranspose", "Convolution1DTranspose", "layer_conv_1d_transpose"),
    2: ("Conv2DTranspose", "Convolution2DTranspose", "layer_conv_2d_transpose"),
    3: ("Conv3DTranspose", "Convolution3DTranspose", "layer_conv_3d_transpose"),
}

# Opsets cycled across cases (None: the compiler's default): composite activation lowerings
# below each op's first opset (Celu 12, HardSwish 14, Mish 18, Gelu 20, Swish 24, per-axis
# Softmax 13) and the native ops above it.
OPSETS: tuple[int | None, ...] = (None, None, 11, 13, 18, 20, 26)

# Keep every tensor small: Keras eager + jax compilation per shape is the cost, not FLOPs.
_MAX_ELEMENTS = 12_000


# --- Keras' output length, written from the definition ------------------------------------


def keras_output_length(
    length: int, kernel: int, stride: int, dilation: int, padding: str, output_padding: int | None
) -> int:
    """Output length along one axis, as keras `compute_conv_transpose_output_shape` gives it."""
    ke = (kernel - 1) * dilation + 1
    if padding == "valid":
        if output_padding is None:
            return (length - 1) * stride + max(ke, stride)
        return (length - 1) * stride + ke + output_padding
    if output_padding is None:
        return length * stride
    return (length - 1) * stride + ke % 2 + output_padding


# --- configurations ---------------------------------------------------------------------------


def _per_axis(value: int | list[int] | None, rank: int) -> tuple[int | None, ...]:
    if value is None or isinstance(value, int):
        return (value,) * rank
    return tuple(value)


@dataclass(frozen=True)
class LayerConfig:
    """One layer, with its arguments exactly as the spec (and Keras) receive them."""

    rank: int
    type_name: str
    filters: int
    kernel_size: int | list[int]
    strides: int | list[int] | None  # None: key omitted (Keras default 1)
    padding: str | None  # as spelled ("Same", "VALID", ...); None: key omitted ("valid")
    output_padding: int | list[int] | None
    output_padding_given: bool  # False: key omitted (same as None)
    data_format: str | None  # None: key omitted (channels_last)
    dilation_rate: int | list[int] | None  # None: key omitted
    activation: str  # an ACTIVATIONS name or NO_ACTIVATION
    activation_style: str  # for NO_ACTIVATION: "omit" or "null"
    use_bias: bool
    use_bias_given: bool

    @property
    def fmt(self) -> str:
        return self.data_format or "channels_last"

    @property
    def pad(self) -> str:
        return (self.padding or "valid").lower()

    def axes(self) -> list[tuple[int, int, int, int | None]]:
        """(kernel, stride, dilation, output_padding) per spatial axis."""
        r = self.rank
        return list(
            zip(
                _per_axis(self.kernel_size, r),
                _per_axis(self.strides if self.strides is not None else 1, r),
                _per_axis(self.dilation_rate if self.dilation_rate is not None else 1, r),
                _per_axis(self.output_padding, r),
                strict=True,
            )
        )

    def keras_kwargs(self) -> dict[str, Any]:
        """The same arguments, as Keras takes them (omitted keys stay omitted)."""
        kw: dict[str, Any] = {"filters": self.filters, "kernel_size": self.kernel_size}
        if self.strides is not None:
            kw["strides"] = self.strides
        if self.padding is not None:
            kw["padding"] = self.padding
        if self.output_padding_given:
            kw["output_padding"] = self.output_padding
        if self.data_format is not None:
            kw["data_format"] = self.data_format
        if self.dilation_rate is not None:
            kw["dilation_rate"] = self.dilation_rate
        if self.activation != NO_ACTIVATION:
            kw["activation"] = self.activation
        elif self.activation_style == "null":
            kw["activation"] = None
        if self.use_bias_given:
            kw["use_bias"] = self.use_bias
        return kw

    def pre_activation_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(N, ...) → (N, ...) in this layer's data format, before the activation."""
        n = in_shape[0]
        spatial = in_shape[1:-1] if self.fmt == "channels_last" else in_shape[2:]
        out_sp = [
            keras_output_length(i, k, s, d, self.pad, op)
            for i, (k, s, d, op) in zip(spatial, self.axes(), strict=True)
        ]
        if self.fmt == "channels_last":
            return (n, *out_sp, self.filters)
        return (n, self.filters, *out_sp)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The layer's output shape; glu halves Keras' axis -1."""
        shape = self.pre_activation_shape(in_shape)
        if self.activation == "glu":
            return (*shape[:-1], shape[-1] // 2)
        return shape

    def in_channels(self, in_shape: tuple[int, ...]) -> int:
        return in_shape[-1] if self.fmt == "channels_last" else in_shape[1]

    def kernel_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        ks = tuple(k for k, _, _, _ in self.axes())
        return (*ks, self.filters, self.in_channels(in_shape))


@dataclass(frozen=True)
class CaseConfig:
    """One conformance case: an input and a chain of 1-3 layers, in one of the two spec forms."""

    index: int
    seed: int
    form: str  # "layer" (single-layer form) or "model"
    x_shape: tuple[int, ...]  # concrete (N, ...) fed to Keras and onnxruntime
    declared_shape: tuple[int | None, ...]  # (N, ...) as declared; None = dynamic
    layers: tuple[LayerConfig, ...]
    gain: float  # weight scale multiplier (values around activation thresholds or beyond)
    weights_as_lists: bool  # nested lists instead of numpy arrays in the spec
    opset: int | None = None  # None: compile_spec's default
    model_name: str | None = None
    input_name: str | None = None
    tags: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        first = self.layers[0]
        ax = first.axes()

        def joined(values: list[Any]) -> str:
            if all(v == values[0] for v in values):
                return str(values[0])
            return "x".join(str(v) for v in values)

        parts = [
            f"c{self.index:03d}",
            f"{first.rank}d",
            "cl" if first.fmt == "channels_last" else "cf",
        ]
        if len(self.layers) > 1:
            parts.append(f"m{len(self.layers)}")
        elif self.form == "model":
            parts.append("m1")
        parts.append(first.pad)
        kss = f"k{joined([a[0] for a in ax])}s{joined([a[1] for a in ax])}"
        if any(a[2] > 1 for a in ax):
            kss += f"d{joined([a[2] for a in ax])}"
        parts.append(kss)
        ops = [a[3] for a in ax]
        parts.append("opN" if ops[0] is None else f"op{joined(ops)}")
        if not first.use_bias:
            parts.append("nb")
        if any(d is None for d in self.declared_shape):
            parts.append("dyn")
        parts.append("-".join(layer.activation for layer in self.layers))
        if self.opset is not None:
            parts.append(f"o{self.opset}")
        return "-".join(parts)

    def shapes(self) -> list[tuple[int, ...]]:
        """Concrete tensor shapes: input, then after each layer."""
        shapes = [self.x_shape]
        for layer in self.layers:
            shapes.append(layer.output_shape(shapes[-1]))
        return shapes


def _pick(rng: np.random.Generator, options: list[Any] | tuple[Any, ...]) -> Any:
    return options[int(rng.integers(len(options)))]


def _spell_padding(rng: np.random.Generator, pad: str) -> str | None:
    roll = rng.random()
    if pad == "valid" and roll < 0.15:
        return None  # Keras default
    if roll < 0.75:
        return pad
    return _pick(rng, [pad.capitalize(), pad.upper()])


def _int_or_list(rng: np.random.Generator, values: list[int]) -> Any:
    """An int when all axes agree (Keras broadcasts it), else — or sometimes anyway — a list."""
    if all(v == values[0] for v in values) and rng.random() < 0.6:
        return values[0]
    return list(values)


def _random_layer(
    rng: np.random.Generator,
    rank: int,
    fmt: str,
    activation: str,
) -> LayerConfig:
    """Random geometry; the caller re-draws until the case is valid and small."""
    pad = "same" if rng.random() < 0.5 else "valid"
    style = rng.random()
    if style < 0.25:  # dilated: Keras forbids strides > 1 with dilation > 1
        kernel = [int(rng.integers(1, 4)) for _ in range(rank)]
        stride = [1] * rank
        dilation = [int(rng.integers(1, 4)) for _ in range(rank)]
        if all(d == 1 for d in dilation):
            dilation[int(rng.integers(rank))] = 2
        if rng.random() < 0.5:
            dilation = [dilation[0]] * rank
    elif style < 0.45:  # per-axis different kernels and strides
        kernel = [int(rng.integers(1, 5)) for _ in range(rank)]
        stride = [int(rng.integers(1, 4)) for _ in range(rank)]
        dilation = [1] * rank
    else:  # uniform kernel/stride, with k < s, k == s, k > s all common
        k = int(rng.integers(1, 6))
        s = int(_pick(rng, [1, 2, 2, 3, 4]))
        kernel = [k] * rank
        stride = [s] * rank
        dilation = [1] * rank

    op_roll = rng.random()
    op_given = True
    if op_roll < 0.4:
        op: int | list[int] | None = None
        op_given = rng.random() < 0.5
    elif op_roll < 0.55:
        op = 0 if rng.random() < 0.6 else [0] * rank
    else:
        op = _int_or_list(rng, [int(rng.integers(0, s)) for s in stride])  # 0 <= op < s

    dilation_arg: Any = None
    if any(d > 1 for d in dilation) or rng.random() < 0.2:
        dilation_arg = _int_or_list(rng, dilation)
    stride_arg: Any = None
    if any(s > 1 for s in stride) or rng.random() < 0.7:
        stride_arg = _int_or_list(rng, stride)

    use_bias = rng.random() < 0.75
    filters = int(rng.integers(1, 7))
    if activation == "glu" and fmt == "channels_last" and filters % 2:
        filters = filters + 1 if filters < 6 else filters - 1
    type_name = _TYPE_NAMES[rank][0] if rng.random() < 0.85 else _pick(rng, _TYPE_NAMES[rank][1:])
    return LayerConfig(
        rank=rank,
        type_name=type_name,
        filters=filters,
        kernel_size=_int_or_list(rng, kernel),
        strides=stride_arg,
        padding=_spell_padding(rng, pad),
        output_padding=op,
        output_padding_given=op_given,
        data_format=None if fmt == "channels_last" and rng.random() < 0.4 else fmt,
        dilation_rate=dilation_arg,
        activation=activation,
        activation_style=_pick(rng, ["omit", "null"]),
        use_bias=use_bias,
        use_bias_given=(not use_bias) or rng.random() < 0.5,
    )


def _case_ok(case: CaseConfig) -> bool:
    """Keras accepts it, the output is non-empty, glu halves an even axis, and it is small."""
    shapes = [case.x_shape]
    for layer, after in zip(case.layers, case.layers[1:], strict=False):
        # Keras' Sequential builds the next layer from compute_output_shape, which ignores
        # glu's halving: a channels_last layer after glu gets a kernel for twice the channels
        # it receives and fails at run time. Keras cannot run these chains.
        if layer.activation == "glu" and after.fmt == "channels_last":
            return False
    for layer in case.layers:
        ax = layer.axes()
        if any(s > 1 for _, s, _, _ in ax) and any(d > 1 for _, _, d, _ in ax):
            return False
        if any(op is not None and not 0 <= op < s for _, s, _, op in ax):
            return False
        pre = layer.pre_activation_shape(shapes[-1])
        if any(n <= 0 for n in pre):
            return False
        if layer.activation == "glu" and pre[-1] % 2:
            return False
        if layer.activation in AXIS_ACTIVATIONS and pre[-1] < 2:
            return False  # softmax & co. of a single value are constant: a test that shows nothing
        out = layer.output_shape(shapes[-1])
        if int(np.prod(out)) > _MAX_ELEMENTS:
            return False
        shapes.append(out)
    return True


def make_case(index: int, base_seed: int = 20240611) -> CaseConfig:
    """Case number `index`: rank, data format, activation and opset cycle so that every
    activation meets every (rank, data format) pair and several opsets; everything else is
    drawn from a generator seeded by `index`."""
    slots = (*ACTIVATIONS, NO_ACTIVATION)
    activation = slots[index % len(slots)]
    fmt = ("channels_last", "channels_first")[(index // len(slots)) % 2]
    rank = 1 + (index // (2 * len(slots))) % 3
    # 7 is coprime with the 2 formats and 3 ranks: each activation meets each opset in both
    opset = OPSETS[(index // len(slots) + index % len(slots)) % len(OPSETS)]
    seed = base_seed + 7919 * index
    rng = np.random.default_rng(seed)

    for _attempt in range(1000):
        form = "model" if rng.random() < 0.4 else "layer"
        n_layers = 1
        if form == "model":
            n_layers = int(_pick(rng, [1, 2, 2, 3]))
        batch = int(rng.integers(1, 4))
        spatial = [int(rng.integers(1, 8)) for _ in range(rank)]
        channels = int(rng.integers(1, 7))
        x_shape = (batch, *spatial, channels) if fmt == "channels_last" else (batch, channels, *spatial)
        layers = []
        for j in range(n_layers):
            # the case's activation sits on a random layer; the others get random ones
            layer_fmt = fmt
            if j > 0 and rng.random() < 0.1:
                layer_fmt = _pick(rng, ["channels_last", "channels_first"])  # mixed formats
            act = _pick(rng, slots) if j != n_layers - 1 else activation
            layers.append(_random_layer(rng, rank, layer_fmt, act))
        if n_layers > 1 and rng.random() < 0.5:
            # move the case's activation to an inner layer sometimes
            j = int(rng.integers(n_layers - 1))
            a, b = layers[j], layers[-1]
            if not (b.activation == "glu" or a.activation == "glu"):
                layers[j], layers[-1] = (
                    replace(a, activation=b.activation),
                    replace(b, activation=a.activation),
                )

        declared: list[int | None] = list(x_shape)
        mixed = any(layer.fmt != fmt for layer in layers)
        dyn_roll = rng.random()
        if dyn_roll < 0.3 and not mixed:  # mixed formats turn spatial axes into channels
            if rng.random() < 0.7:
                declared[0] = None
            ch_axis = len(x_shape) - 1 if fmt == "channels_last" else 1
            for ax_i in range(1, len(x_shape)):
                if ax_i != ch_axis and rng.random() < 0.5:
                    declared[ax_i] = None
        elif form == "layer" and rng.random() < 0.3:
            declared[0] = None  # single-layer form without batch_size
        if form == "model" and rng.random() < 0.5:
            declared[0] = None  # Keras' usual (None, ...) batch
        if dyn_roll < 0.5 and not mixed and fmt == "channels_first":
            if any(layer.activation in AXIS_ACTIVATIONS for layer in layers):
                declared[-1] = None  # the activation's axis has a dynamic length

        case = CaseConfig(
            index=index,
            seed=seed,
            form=form,
            x_shape=tuple(x_shape),
            declared_shape=tuple(declared),
            layers=tuple(layers),
            # chains of squashing activations shrink values: keep their gains up
            gain=float(_pick(rng, [0.5, 1.0, 1.0, 3.0] if n_layers == 1 else [1.0, 1.5, 2.0, 3.0])),
            weights_as_lists=rng.random() < 0.08,
            opset=opset,
            model_name=_pick(rng, [None, "m", f"case_{index}"]) if form == "model" else None,
            input_name=_pick(rng, [None, None, "input", "x_in"]) if form == "model" else None,
        )
        if _case_ok(case):
            return case
    raise RuntimeError(f"no valid configuration found for case {index}")


def make_cases(count: int, base_seed: int = 20240611) -> list[CaseConfig]:
    return [make_case(i, base_seed) for i in range(count)]


# --- weights, input, spec ---------------------------------------------------------------------


def case_arrays(case: CaseConfig) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """Seeded input and per-layer [kernel, bias] (or [kernel]), float32, in Keras layout."""
    rng = np.random.default_rng(case.seed + 1)
    x = rng.standard_normal(case.x_shape).astype(np.float32)
    weights = []
    shapes = case.shapes()
    for layer, in_shape in zip(case.layers, shapes[:-1], strict=True):
        kshape = layer.kernel_shape(in_shape)
        # a fan-in scale keeps pre-activations around O(gain) so thresholds matter
        gain = case.gain
        if layer.activation == "relu6":
            gain = max(gain, 1.0) * 6.0  # values past 6, or relu6 looks like relu
        elif layer.activation in ("hard_shrink", "soft_shrink", "tanh_shrink"):
            gain = max(gain, 1.0) * 2.0  # values past ±0.5 (tanh_shrink: x³/3 near 0)
        fan = int(np.prod(kshape[:-2])) * kshape[-1]
        kernel = (rng.standard_normal(kshape) * (gain / np.sqrt(fan))).astype(np.float32)
        w = [kernel]
        if layer.use_bias:
            w.append((rng.standard_normal(layer.filters) * 0.5 * gain).astype(np.float32))
        weights.append(w)
    return x, weights


def _layer_spec(layer: LayerConfig, weights: list[np.ndarray], as_lists: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": layer.type_name, **layer.keras_kwargs()}
    spec["weights"] = [w.tolist() for w in weights] if as_lists else list(weights)
    return spec


def case_spec(case: CaseConfig, weights: list[list[np.ndarray]]) -> dict[str, Any]:
    """The compiler spec mapping for this case (contract format, weights inline)."""
    if case.form == "layer":
        (layer,) = case.layers
        spec = _layer_spec(layer, weights[0], case.weights_as_lists)
        spec["input_shape"] = list(case.declared_shape[1:])
        if case.declared_shape[0] is not None:
            spec["batch_size"] = case.declared_shape[0]
        return spec
    inp: dict[str, Any] = {"shape": list(case.declared_shape)}
    if case.input_name is not None:
        inp["name"] = case.input_name
        inp["dtype"] = "float32"
    model: dict[str, Any] = {}
    if case.model_name is not None:
        model["name"] = case.model_name
    model["input"] = inp
    model["layers"] = [
        _layer_spec(layer, w, case.weights_as_lists) for layer, w in zip(case.layers, weights, strict=True)
    ]
    return model


# --- running Keras ----------------------------------------------------------------------------


@cache
def keras_module() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import keras

    backend = keras.backend.backend()
    if backend != "jax":
        raise RuntimeError(f"the Keras oracle needs the jax backend, got {backend!r}")
    return keras


def run_keras(case: CaseConfig, x: np.ndarray, weights: list[list[np.ndarray]]) -> np.ndarray:
    """Build the real Keras layer(s), set the weights explicitly, run them on `x`.

    The forward pass runs under one `jax.jit` (as Keras' own `predict` does): op-by-op eager
    dispatch compiles every primitive separately and costs ~4x more per case. Zero initializers
    skip the random-initializer compilations; the real weights are set right after building.
    """
    keras = keras_module()
    import jax

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras/jax deprecation noise; pytest makes them errors
        layers = [
            getattr(keras.layers, _TYPE_NAMES[layer.rank][0])(
                **layer.keras_kwargs(), kernel_initializer="zeros", bias_initializer="zeros"
            )
            for layer in case.layers
        ]
        if case.form == "layer":
            (layer,) = layers
            layer.build(x.shape)
            run: Any = layer
        else:
            inp = keras.Input(shape=case.declared_shape[1:], batch_size=case.declared_shape[0])
            run = keras.Sequential([inp, *layers])
        for layer, w in zip(layers, weights, strict=True):
            expect = [tuple(v.shape) for v in layer.weights]
            got = [a.shape for a in w]
            if expect != got:
                raise AssertionError(f"oracle weight shapes {got} != Keras' {expect}")
            layer.set_weights(w)
        y = np.asarray(jax.jit(run.__call__)(x), dtype=np.float32)
    expected_shape = case.shapes()[-1]
    if y.shape != expected_shape:
        raise AssertionError(f"Keras output {y.shape} != oracle's length rule {expected_shape}")
    return y


def build_case(case: CaseConfig) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(spec mapping, x, Keras output) for one case."""
    x, weights = case_arrays(case)
    y = run_keras(case, x, weights)
    return case_spec(case, weights), x, y
