"""Random decoder and generator networks built with real Keras (jax backend), for conformance tests.

A *part* is one small random decoder grown from a seed, from the layers the compiler supports: a
latent vector through Dense → Reshape, or a spatial input, then blocks of transposed convolutions
with BatchNormalization, activation layers, dropout and noise, padding, cropping and upsampling.
Even seeds grow a chain (the Sequential form); odd seeds grow a DAG (the Functional form: branches
joined by Add or Concatenate, skip connections, a second input, several outputs).

Keras costs most per model (a save, an XLA compile of the whole forward pass), so parts travel in
*bundles*: `bundle(index)` is one Functional model whose independent branches are `PER_BUNDLE`
parts, with every part's inputs and outputs (inputs named `n<seed>_...`, so each output can be
traced back to its part). `sequential_network(seed)` builds one chain part as a real
`keras.Sequential` model, for the Sequential file form; `bundle(index, seeds=[seed])` rebuilds one
part alone, to chase a failure.

Every weight gets non-trivial random values (BatchNormalization's moving statistics included) scaled
so activations stay O(1), so a folding or layout error shows in the numbers rather than hiding under
rounding. The values are drawn in numpy when Keras builds each layer (`_Draw`): Keras' own random
initializers compile one XLA program per weight shape (1-3 s each on CI machines), which was most of
the time these tests took. Before a model is returned, Keras' default initializers are put back, so
the saved configs read exactly as Keras writes them.
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import keras
import numpy as np
from keras import layers

ACTIVATIONS = [
    "linear",
    "relu",
    "tanh",
    "sigmoid",
    "elu",
    "selu",
    "gelu",
    "silu",
    "leaky_relu",
    "softplus",
    "relu6",
]
MAX_SIDE = {1: 40, 2: 18, 3: 8}  # keep every case small and fast
N_BUNDLES = 8
PER_BUNDLE = 25  # N_BUNDLES * PER_BUNDLE parts: seeds 0..199, half chains, half DAGs
BATCHES = (2, 1, 3)  # bundle i runs with batch BATCHES[i % 3]
CONV_CLASSES = {1: layers.Conv1DTranspose, 2: layers.Conv2DTranspose, 3: layers.Conv3DTranspose}
FORWARD_CLASSES = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}
DEPTHWISE_CLASSES = {1: layers.DepthwiseConv1D, 2: layers.DepthwiseConv2D}
SEPARABLE_CLASSES = {1: layers.SeparableConv1D, 2: layers.SeparableConv2D}
ENCODER_SHARE = 0.7  # of the spatial-stem parts: an encoder (down to the decoder's input) first
MERGE_CLASSES = {
    "add": layers.Add, "multiply": layers.Multiply, "subtract": layers.Subtract, "average": layers.Average,
    "maximum": layers.Maximum, "minimum": layers.Minimum,
}  # fmt: skip


@dataclass(frozen=True)
class Part:
    """One random decoder: what the coverage test counts."""

    seed: int
    id: str  # seed, form, rank, data format and the layers, readable
    form: str  # "sequential" (a chain) or "functional" (a DAG)
    rank: int
    data_format: str
    stem: str  # "latent" (Dense → Reshape) or "spatial"
    inputs: int
    outputs: int
    encoder: bool = False  # a forward-conv encoder before the decoder
    skips: int = 0  # U-Net merges of encoder features into the decoder
    nested: int = 0  # nested models (Sequential or Functional) used as layers
    shared: int = 0  # ... of which called twice
    two_deep: int = 0  # ... of which hold a nested model themselves


@dataclass
class Network:
    """A Keras model with its inputs, and what a compiled graph must call its inputs and outputs."""

    id: str
    model: keras.Model
    inputs: list[np.ndarray]
    input_names: list[str]
    output_names: list[str]  # the layers that produce the outputs, in the model's order
    output_parts: list[Part]  # the part each output belongs to
    parts: list[Part] = field(default_factory=list)


def bundle_seeds(index: int) -> range:
    return range(index * PER_BUNDLE, (index + 1) * PER_BUNDLE)


# one even (chain) seed per bundle, also saved alone as a keras.Sequential model
SEQUENTIAL_SEEDS = tuple(seed + seed % 2 for seed in range(0, N_BUNDLES * PER_BUNDLE, PER_BUNDLE))


# --- weights: numpy values handed to Keras at build time -----------------------------------------

_KERAS_DEFAULTS = {
    "kernel": "glorot_uniform",
    "depthwise": "glorot_uniform",
    "pointwise": "glorot_uniform",
    "bias": "zeros",
    "gamma": "ones",
    "beta": "zeros",
    "moving_mean": "zeros",
    "moving_variance": "ones",
    "alpha": "zeros",
}


class _Draw:
    """An initializer whose values numpy draws: kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.3),
    BatchNormalization statistics away from identity, PReLU slopes in [0, 0.5)."""

    def __init__(self, rng: np.random.Generator, weight: str, forward: bool = False) -> None:
        self.rng, self.weight, self.forward = rng, weight, forward

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> jax.Array:
        shape, rng = tuple(shape), self.rng
        if self.weight in ("kernel", "pointwise"):
            # Conv*DTranspose kernels are kernel_size + (filters, in_channels); Dense (in, units);
            # forward Conv*D kernels (and SeparableConv's pointwise) kernel_size + (in // groups, filters)
            if self.forward or self.weight == "pointwise":
                fan_in = math.prod(shape[:-1])
            else:
                fan_in = math.prod(shape[:-2]) * shape[-1] if len(shape) > 2 else shape[0]
            values = rng.normal(0, 1.0 / math.sqrt(fan_in), shape)
        elif self.weight == "depthwise":  # kernel_size + (in_channels, depth_multiplier)
            values = rng.normal(0, 1.0 / math.sqrt(math.prod(shape[:-2])), shape)
        elif self.weight in ("gamma", "moving_variance"):
            values = rng.uniform(0.5, 1.5 if self.weight == "gamma" else 2.0, shape)
        elif self.weight == "alpha":
            values = rng.uniform(0, 0.5, shape)
        else:
            values = rng.normal(0, 0.3, shape)
        # a device array: Keras' conversion of a numpy array compiles one XLA program per shape
        return jax.device_put(values.astype(dtype or "float32"))


def drawn_weights(rng: np.random.Generator, *weights: str, forward: bool = False) -> dict[str, _Draw]:
    """`forward`: the kernel of a forward convolution (Conv*D), whose fan-in is its inputs."""
    return {f"{weight}_initializer": _Draw(rng, weight, forward) for weight in weights}


def restore_initializers(layer_list: Iterable[keras.Layer]) -> None:
    """Put Keras' default initializers where `_Draw` stood, so the saved config is Keras' own
    (nested models' layers included)."""
    for layer in layer_list:
        if isinstance(layer, keras.Model):
            restore_initializers(layer.layers)
        for weight, default in _KERAS_DEFAULTS.items():
            if isinstance(getattr(layer, f"{weight}_initializer", None), _Draw):
                setattr(layer, f"{weight}_initializer", keras.initializers.get(default))


# --- growing one part ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Symbolic:
    shape: tuple[int | None, ...]


class _Builder:
    """Grows a part one layer at a time, reading shapes back: calling each layer (`traced`, for a
    Functional model) or only working out its output shape (a Sequential model is built once from
    the chain at the end, so each layer is traced once)."""

    def __init__(self, seed: int, traced: bool) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.weights = np.random.default_rng(seed)
        self.rank = self.rng.choice([1, 2, 2, 2, 3])
        self.data_format = self.rng.choice(["channels_last", "channels_last", "channels_first"])
        self.functional = seed % 2 == 1  # the DAG form: merges, a second input, several outputs
        self.traced = traced
        self.chain: list[keras.Layer] = []
        self.labels: list[str] = []
        # the encoder's choices come from their own stream, so the decoders grow as they did before
        self.enc = random.Random(seed * 7919 + 17)
        self.counts: collections.Counter[str] = collections.Counter()
        self.extra_outputs: list[Any] = []  # an encoder's side outputs

    @property
    def channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    def spatial(self, x: Any) -> list[int]:
        shape = list(x.shape[1:])
        return shape[:-1] if self.data_format == "channels_last" else shape[1:]

    def channels(self, x: Any) -> int:
        return int(x.shape[self.channel_axis])

    def apply(self, layer: keras.Layer, x: Any, label: str) -> Any:
        y = layer(x) if self.traced else _Symbolic(tuple(layer.compute_output_shape(tuple(x.shape))))
        self.chain.append(layer)
        self.labels.append(label)
        return y

    def drawn(self, *weights: str) -> dict[str, _Draw]:
        return drawn_weights(self.weights, *weights)

    def batch_norm(self, axis: int, rng: random.Random | None = None) -> keras.Layer:
        rng = rng or self.rng
        center, scale = rng.random() < 0.85, rng.random() < 0.85
        return layers.BatchNormalization(
            axis=axis, epsilon=rng.choice([1e-3, 1e-5]), center=center, scale=scale,
            **self.drawn("gamma", "beta", "moving_mean", "moving_variance"),
        )  # fmt: skip

    # --- blocks ---

    def conv(self, x: Any, force_up: bool = False) -> Any:
        """A transposed convolution; `force_up`: stride 2, `same`, so it doubles every side (a
        U-Net's first decoder block, back to the encoder's full resolution)."""
        rng, rank = self.rng, self.rank
        stride = [rng.choice([1, 1, 2, 2, 3]) for _ in range(rank)]
        dilation = [1] * rank
        if all(s == 1 for s in stride) and rng.random() < 0.3:
            dilation = [rng.choice([1, 2]) for _ in range(rank)]
        kernel = [rng.randint(1, 4) for _ in range(rank)]
        padding = rng.choice(["valid", "same"])
        output_padding = None
        if rng.random() < 0.3:
            output_padding = [rng.randrange(s) for s in stride]
        sides = self.spatial(x)
        for axis in range(rank):  # stay small: fall back to stride 1 on long axes
            if sides[axis] * stride[axis] + kernel[axis] > MAX_SIDE[rank]:
                stride[axis], kernel[axis] = 1, min(kernel[axis], 2)
                if output_padding is not None:
                    output_padding[axis] = 0
        if padding == "same" and 1 in sides:
            output_padding = None  # `same` with output_padding can give a zero-length axis from size 1
        if force_up:
            stride, dilation, padding, output_padding = [2] * rank, [1] * rank, "same", None
        layer = CONV_CLASSES[rank](
            rng.randint(1, 6), kernel, strides=stride, padding=padding, output_padding=output_padding,
            data_format=self.data_format, dilation_rate=dilation, activation=rng.choice(ACTIVATIONS),
            use_bias=rng.random() < 0.7, **self.drawn("kernel", "bias"),
        )  # fmt: skip
        return self.apply(layer, x, f"ct{''.join(map(str, kernel))}s{''.join(map(str, stride))}{padding[0]}")

    def after_conv(self, x: Any) -> Any:
        rng = self.rng
        if rng.random() < 0.5:
            x = self.apply(self.batch_norm(self.channel_axis), x, "bn")
        if rng.random() < 0.6:
            x = self.activation_layer(x)
        if rng.random() < 0.3:
            x = self.apply(self.noise(), x, "noise")
        if rng.random() < 0.5:
            x = self.resize(x)
        return x

    def noise(self) -> keras.Layer:
        """A layer that is the identity at inference."""
        choice = self.rng.randrange(8)
        if choice == 0:
            return layers.Dropout(0.3)
        if choice == 1:
            return layers.GaussianNoise(0.5)
        if choice == 2:
            return layers.GaussianDropout(0.2)
        if choice == 3:
            return layers.AlphaDropout(0.1)
        if choice == 4:
            return layers.ActivityRegularization(l1=0.01, l2=0.001)
        if self.rank == 1:  # SpatialDropout1D has no data_format; at inference any layout is fine
            return layers.SpatialDropout1D(0.2)
        cls = layers.SpatialDropout2D if self.rank == 2 else layers.SpatialDropout3D
        return cls(0.2, data_format=self.data_format)

    def activation_layer(self, x: Any) -> Any:
        rng = self.rng
        choice = rng.randrange(7)
        if choice == 0:
            return self.apply(layers.LeakyReLU(), x, "leaky")
        if choice == 1:
            return self.apply(layers.LeakyReLU(negative_slope=rng.choice([0.05, 0.2])), x, "leaky")
        if choice == 2:
            relu = layers.ReLU(
                max_value=rng.choice([None, 1.0, 6.0]), negative_slope=rng.choice([0.0, 0.1]),
                threshold=rng.choice([0.0, 0.0, 0.2]),
            )  # fmt: skip
            return self.apply(relu, x, "relu")
        if choice == 3:
            return self.apply(layers.ELU(alpha=rng.choice([1.0, 0.5])), x, "elu")
        if choice == 4:
            shared = list(range(1, self.rank + 2))
            shared.remove(self.rank + 1 if self.data_format == "channels_last" else 1)
            prelu = layers.PReLU(shared_axes=shared if rng.random() < 0.7 else None, **self.drawn("alpha"))
            return self.apply(prelu, x, "prelu")
        if choice == 5 and self.channels(x) > 1:  # Keras warns about a softmax over one value
            return self.apply(layers.Softmax(axis=self.channel_axis), x, "softmax")
        return self.apply(layers.Activation(rng.choice(ACTIVATIONS + ["hard_sigmoid", "mish"])), x, "act")

    def resize(self, x: Any) -> Any:
        """ZeroPadding, Cropping or UpSampling, whichever fits the tensor (1-D cropping and
        upsampling have no data_format: they act on axis 1, so only channels_last takes them)."""
        rng, rank, channels_last = self.rng, self.rank, self.data_format == "channels_last"
        sides = self.spatial(x)
        kinds = ["pad"]
        if all(side >= 3 for side in sides) and (rank > 1 or channels_last):
            kinds.append("crop")
        fits = [side * 2 <= MAX_SIDE[rank] for side in sides]
        if any(fits) and (rank > 1 or channels_last):
            kinds.append("up")
            factors = [rng.choice([1, 2]) if fit else 1 for fit in fits]
            factors[fits.index(True)] = 2  # at least one axis grows
        kind = rng.choice(kinds)
        if kind == "pad":
            pads = [(rng.randint(0, 2), rng.randint(0, 2)) for _ in range(rank)]
            cls = {1: layers.ZeroPadding1D, 2: layers.ZeroPadding2D, 3: layers.ZeroPadding3D}[rank]
            return self.apply(cls(pads[0] if rank == 1 else pads, data_format=self.data_format), x, "pad")
        if kind == "crop":
            crops = [(rng.randint(0, 1), rng.randint(0, 1)) for _ in range(rank)]
            if rank == 1:
                return self.apply(layers.Cropping1D(crops[0]), x, "crop")
            cls = layers.Cropping2D if rank == 2 else layers.Cropping3D
            return self.apply(cls(crops, data_format=self.data_format), x, "crop")
        if rank == 1:
            return self.apply(layers.UpSampling1D(2), x, "up")
        if rank == 2:
            interpolation = rng.choice(["nearest", "bilinear"])
            up = layers.UpSampling2D(factors, data_format=self.data_format, interpolation=interpolation)
            return self.apply(up, x, f"up{interpolation[0]}")
        return self.apply(layers.UpSampling3D(factors, data_format=self.data_format), x, "up")

    def merge(self, x: Any, inputs: list[Any], input_shapes: list[Any]) -> Any:
        """A branch beside the main path, joined by Add or Concatenate (sometimes from a second input)."""
        rng = self.rng
        shape = tuple(int(d) for d in x.shape[1:])
        if rng.random() < 0.25 and len(inputs) == 1:
            side = keras.Input(shape, name=f"n{self.seed:03d}_skip")
            inputs.append(side)
            input_shapes.append(shape)
            branch = side
        else:
            branch = CONV_CLASSES[self.rank](
                self.channels(x), 1, data_format=self.data_format, activation=rng.choice(ACTIVATIONS),
                **self.drawn("kernel", "bias"),
            )(x)  # fmt: skip
            if rng.random() < 0.5:
                branch = self.batch_norm(self.channel_axis)(branch)
        if rng.random() < 0.5:
            self.labels.append("add")
            return layers.Add()([x, branch])
        self.labels.append("concat")
        return layers.Concatenate(axis=self.channel_axis)([x, branch])

    # --- encoders: forward convolutions, pooling, normalization; nested blocks ---

    def layout(self, sides: Sequence[int], channels: int) -> tuple[int, ...]:
        return (*sides, channels) if self.data_format == "channels_last" else (channels, *sides)

    def forward_conv(self, x: Any, filters: int | None, stride: int = 1) -> Any:
        """Conv{1,2,3}D, or (1-2D) SeparableConv or DepthwiseConv (when `filters` is free); `same`."""
        e, rank = self.enc, self.rank
        kinds = ["conv", "conv"]
        if rank <= 2:
            kinds += ["separable"] + (["depthwise", "depthwise"] if filters is None else [])
        kind = e.choice(kinds)
        kernel = [e.choice([1, 2, 3, 3]) for _ in range(rank)]
        dilation = 2 if stride == 1 and e.random() < 0.25 else 1
        common: dict[str, Any] = dict(
            strides=stride, padding="same", data_format=self.data_format, dilation_rate=dilation,
            activation=e.choice(["linear", "linear", "relu", "relu6", "tanh"]), use_bias=e.random() < 0.7,
        )  # fmt: skip
        label = f"{''.join(map(str, kernel))}s{stride}"
        if kind == "depthwise":
            layer = DEPTHWISE_CLASSES[rank](
                kernel, depth_multiplier=e.choice([1, 2]), **common, **self.drawn("depthwise", "bias")
            )
            return self.apply(layer, x, f"dw{label}")
        filters = filters or e.randint(2, 6)
        if kind == "separable":
            layer = SEPARABLE_CLASSES[rank](
                filters, kernel, depth_multiplier=e.choice([1, 2]), **common,
                **self.drawn("depthwise", "pointwise", "bias"),
            )  # fmt: skip
            return self.apply(layer, x, f"sep{label}")
        groups = 2 if filters % 2 == 0 and self.channels(x) % 2 == 0 and e.random() < 0.3 else 1
        layer = FORWARD_CLASSES[rank](
            filters,
            kernel,
            groups=groups,
            **common,
            **drawn_weights(self.weights, "kernel", "bias", forward=True),
        )
        return self.apply(layer, x, f"c{label}" + ("g2" if groups > 1 else ""))

    def norm_act(self, x: Any) -> Any:
        """A normalization (mostly BatchNormalization) then ReLU6, each sometimes."""
        e, channels, axis = self.enc, self.channels(x), self.channel_axis
        choice = e.random()
        if choice < 0.45:
            x = self.apply(self.batch_norm(axis, e), x, "bn")
        elif choice < 0.6 and channels > 1:
            norm = layers.LayerNormalization(
                axis=axis, epsilon=e.choice([1e-3, 1e-5]), center=e.random() < 0.8, scale=e.random() < 0.8,
                **self.drawn("gamma", "beta"),
            )  # fmt: skip
            x = self.apply(norm, x, "ln")
        elif choice < 0.75 and channels > 1:
            groups = e.choice([g for g in range(1, channels + 1) if channels % g == 0])
            norm = layers.GroupNormalization(groups=groups, axis=axis, **self.drawn("gamma", "beta"))
            x = self.apply(norm, x, f"gn{groups}")
        elif choice < 0.85 and channels > 1:
            x = self.apply(layers.UnitNormalization(axis=axis), x, "unit")
        choice = e.random()
        if choice < 0.5:
            return self.apply(layers.ReLU(max_value=6.0), x, "relu6")
        if choice < 0.75:
            return self.apply(layers.Activation("relu6"), x, "relu6")
        if choice < 0.85:
            return self.apply(layers.ReLU(max_value=6.0, negative_slope=0.1), x, "relu6")
        return x

    def downsample(self, x: Any) -> Any:
        """Halve every side (each of even length): pooling, or a strided convolution."""
        e, rank = self.enc, self.rank
        choice = e.random()
        if choice < 0.7:
            function = "Max" if choice < 0.35 else "Average"
            pool = e.choice([2, 2, 3])
            padding = "same" if pool == 3 else e.choice(["valid", "same"])
            layer = getattr(layers, f"{function}Pooling{rank}D")(
                pool, strides=2, padding=padding, data_format=self.data_format
            )
            x = self.apply(layer, x, f"{function[:3].lower()}pool{pool}")
        else:
            x = self.forward_conv(x, None, stride=2)
        if e.random() < 0.2:
            x = self.apply(layers.Identity(), x, "identity")
        return x

    def preprocess(self, x: Any) -> Any:
        """Sometimes Rescaling or Normalization (given per-channel mean and variance) first."""
        e, channels = self.enc, self.channels(x)
        choice = e.random()
        if choice < 0.25:
            rescale = layers.Rescaling(e.choice([0.5, 2.0, -1.0]), offset=e.choice([0.0, 0.5]))
            return self.apply(rescale, x, "rescale")
        if choice < 0.45:
            mean = [round(e.uniform(-1, 1), 3) for _ in range(channels)]
            variance = [round(e.uniform(0.25, 4), 3) for _ in range(channels)]
            norm = layers.Normalization(axis=self.channel_axis, mean=mean, variance=variance)
            return self.apply(norm, x, "normalize")
        return x

    def permuted(self, x: Any) -> Any:
        """Two spatial axes swapped, a convolution, swapped back (2-D and 3-D)."""
        e, rank = self.enc, self.rank
        first = 1 if self.data_format == "channels_last" else 2
        a, b = sorted(e.sample(range(first, first + rank), 2))
        perm = list(range(1, rank + 2))
        perm[a - 1], perm[b - 1] = b, a
        x = self.apply(layers.Permute(perm), x, "permute")
        x = self.forward_conv(x, None)
        return self.apply(layers.Permute(perm), x, "permute")

    def nested(self, x: Any) -> Any:
        """A shape-keeping block as a nested model: a Sequential (conv, normalization, ReLU6), a
        residual Functional block, or one inside the other (two deep). In a DAG part, sometimes
        called twice (shared weights)."""
        e = self.enc
        shape = tuple(int(d) for d in x.shape[1:])
        channels = self.channels(x)

        def conv() -> keras.Layer:
            return FORWARD_CLASSES[self.rank](
                channels, e.choice([1, 3]), padding="same", data_format=self.data_format,
                **drawn_weights(self.weights, "kernel", "bias", forward=True),
            )  # fmt: skip

        def sequential(with_input: bool) -> keras.Model:
            body = [conv(), self.batch_norm(self.channel_axis, e), layers.ReLU(max_value=6.0)]
            return keras.Sequential([keras.Input(shape), *body] if with_input else body)

        def residual(inner: keras.Model | None = None) -> keras.Model:
            inp = keras.Input(shape)
            y = inner(inp) if inner is not None else self.batch_norm(self.channel_axis, e)(conv()(inp))
            return keras.Model(inp, layers.ReLU(max_value=6.0)(layers.Add()([inp, y])))

        kind = e.choice(["sequential", "functional", "two-deep"])
        if kind == "sequential":
            block = sequential(with_input=e.random() < 0.5)
        elif kind == "functional":
            block = residual()
        elif e.random() < 0.5:  # a Sequential holding a Functional block
            block = keras.Sequential([keras.Input(shape), residual(), layers.Activation("relu6")])
        else:  # a Functional block holding a Sequential
            block = residual(inner=sequential(with_input=True))
        self.counts["nested"] += 1
        self.counts["two_deep"] += kind == "two-deep"
        x = self.apply(block, x, f"nest-{kind}")
        if self.functional and e.random() < 0.5:
            self.counts["shared"] += 1
            x = block(x)  # the same model again: its weights shared
            self.labels.append("shared")
        return x

    def two_branch(self, x: Any) -> Any:
        """x and a convolution of it, merged by Add, Multiply, Subtract, Average, Maximum or Minimum."""
        kind = self.enc.choice(sorted(MERGE_CLASSES))
        self.labels.append(f"branch-{kind}")
        branch = FORWARD_CLASSES[self.rank](
            self.channels(x), self.enc.choice([1, 3]), padding="same", data_format=self.data_format,
            activation="tanh", **drawn_weights(self.weights, "kernel", "bias", forward=True),
        )(x)  # fmt: skip
        return MERGE_CLASSES[kind]()([x, branch])

    def context(self, x: Any, function: str) -> Any:
        """Squeeze-and-excite: a global pooling, a sigmoid gate per channel, multiplied into x
        (broadcast from keepdims, or spread back with RepeatVector → Reshape [→ Permute])."""
        e, rank, channels = self.enc, self.rank, self.channels(x)
        sides = self.spatial(x)
        pool = getattr(layers, f"Global{function}Pooling{rank}D")
        if e.random() < 0.4:
            gate = pool(data_format=self.data_format, keepdims=True)(x)
            gate = FORWARD_CLASSES[rank](
                channels, 1, activation="sigmoid", data_format=self.data_format,
                **drawn_weights(self.weights, "kernel", "bias", forward=True),
            )(gate)  # fmt: skip
        else:
            gate = pool(data_format=self.data_format)(x)
            gate = layers.Dense(channels, activation="sigmoid", **self.drawn("kernel", "bias"))(gate)
            gate = layers.RepeatVector(math.prod(sides))(gate)
            gate = layers.Reshape((*sides, channels))(gate)
            if self.data_format == "channels_first":
                gate = layers.Permute((rank + 1, *range(1, rank + 1)))(gate)
        self.labels.append("context")
        return layers.Multiply()([x, gate])

    def encoder(
        self, sides: Sequence[int], channels: int, inputs: list[Any], input_shapes: list[Any]
    ) -> tuple[Any, dict[tuple[int, ...], Any]]:
        """From an input twice the decoder's sides down to exactly `sides` x `channels`: [Rescaling
        or Normalization], a convolution block at full size, a downsampling, a convolution block,
        [a nested block] [a squeeze-and-excite gate]. Returns the decoder's input and the encoder's
        features by their sides (a U-Net's skips)."""
        e = self.enc
        in_shape = self.layout([2 * side for side in sides], e.randint(1, 4))
        inp = x = keras.Input(in_shape, name=f"n{self.seed:03d}_image")
        inputs.append(inp)
        input_shapes.append(in_shape)
        skips: dict[tuple[int, ...], Any] = {}
        x = self.preprocess(x)
        if self.rank > 1 and e.random() < 0.25:
            x = self.permuted(x)
        else:
            x = self.forward_conv(x, None)
        x = self.norm_act(x)
        skips[tuple(self.spatial(x))] = x
        x = self.downsample(x)
        x = self.norm_act(self.forward_conv(x, channels))
        if e.random() < 0.3:  # a pooling that keeps the shape: stride 1, `same`
            function = e.choice(["Max", "Average"])
            pool = getattr(layers, f"{function}Pooling{self.rank}D")(
                3, strides=1, padding="same", data_format=self.data_format
            )
            x = self.apply(pool, x, f"{function[:3].lower()}pool3s1")
        if e.random() < 0.4:
            x = self.nested(x)
        if self.functional:
            if e.random() < 0.6:
                x = self.two_branch(x)
            functions = e.sample(["Max", "Average"], 2)
            rare = self.rank != 2  # 1-D and 3-D parts are fewer: global pooling more often
            if e.random() < (0.9 if rare else 0.5):
                x = self.context(x, functions[0])
            if e.random() < (0.6 if rare else 0.2):  # a second output: global pooling → Dense
                head = getattr(layers, f"Global{functions[1]}Pooling{self.rank}D")(
                    data_format=self.data_format
                )(x)
                self.extra_outputs.append(layers.Dense(e.randint(1, 4), **self.drawn("kernel", "bias"))(head))
                self.labels.append("head")
        skips.setdefault(tuple(self.spatial(x)), x)
        self.labels.append("|")
        return x, skips

    def skip_merge(self, x: Any, skip: Any) -> Any:
        """A U-Net skip: encoder features merged into the decoder (Concatenate, or a merge layer
        once a 1x1 convolution matches the channels; sometimes three inputs)."""
        e = self.enc
        kind = e.choice(["concatenate", "add", "multiply", "subtract", "average", "maximum", "minimum"])
        self.counts["skips"] += 1
        self.labels.append(f"skip-{kind}")
        if kind == "concatenate":
            return layers.Concatenate(axis=self.channel_axis)([x, skip])
        if self.channels(skip) != self.channels(x):
            skip = FORWARD_CLASSES[self.rank](
                self.channels(x), 1, data_format=self.data_format,
                **drawn_weights(self.weights, "kernel", "bias", forward=True),
            )(skip)  # fmt: skip
        merged = [x, skip]
        if kind in ("average", "maximum", "minimum") and e.random() < 0.4:
            merged.append(layers.Activation("tanh")(skip))
        return MERGE_CLASSES[kind]()(merged)


@dataclass
class _Grown:
    part: Part
    inputs: list[Any]  # keras.Input tensors
    input_shapes: list[tuple[int, ...]]
    outputs: list[Any]
    chain: list[keras.Layer]


def _grow(seed: int, traced: bool) -> _Grown:
    b = _Builder(seed, traced)
    rng = b.rng
    encoder, skips = False, {}
    if rng.random() < 0.5:  # latent → Dense → [BN] [activation] → Reshape to a small spatial tensor
        stem = "latent"
        latent = rng.randint(2, 8)
        sides = [rng.randint(2, 4) for _ in range(b.rank)]
        channels = rng.randint(2, 6)
        in_shape: tuple[int, ...] = (latent,)
        inp = keras.Input(in_shape, name=f"n{seed:03d}_latent")
        dense = layers.Dense(
            math.prod(sides) * channels, use_bias=rng.random() < 0.5, **b.drawn("kernel", "bias")
        )
        x = b.apply(dense, inp, "dense")
        if rng.random() < 0.6:
            x = b.apply(b.batch_norm(-1), x, "bn")
        if rng.random() < 0.7:
            x = b.apply(layers.LeakyReLU(), x, "leaky")
        target = [*sides, channels] if b.data_format == "channels_last" else [channels, *sides]
        x = b.apply(layers.Reshape(target), x, "reshape")
        inputs, input_shapes = [inp], [in_shape]
    else:
        stem = "spatial"
        sides = [rng.randint(1, 4) for _ in range(b.rank)]
        channels = rng.randint(1, 5)
        in_shape = (*sides, channels) if b.data_format == "channels_last" else (channels, *sides)
        encoder = b.enc.random() < ENCODER_SHARE
        if encoder:  # an encoder-decoder: the encoder ends on the shape the decoder starts from
            inputs, input_shapes = [], []
            x, skips = b.encoder(sides, channels, inputs, input_shapes)
        else:
            inp = x = keras.Input(in_shape, name=f"n{seed:03d}_features")
            inputs, input_shapes = [inp], [in_shape]
    unet = encoder and b.functional and b.enc.random() < 0.8
    outputs: list[Any] = list(b.extra_outputs)
    for block in range(rng.randint(1, 3)):
        x = b.conv(x, force_up=unet and block == 0)
        if unet and tuple(b.spatial(x)) in skips and b.enc.random() < 0.85:
            x = b.skip_merge(x, skips[tuple(b.spatial(x))])
        x = b.after_conv(x)
        if b.functional and rng.random() < 0.6:
            x = b.merge(x, inputs, input_shapes)
        if b.functional and rng.random() < 0.2:
            outputs.append(x)
    if rng.random() < 0.2:
        x = b.apply(layers.Flatten(data_format=b.data_format), x, "flatten")
        dense = layers.Dense(
            rng.randint(1, 5), activation=rng.choice(ACTIVATIONS), **b.drawn("kernel", "bias")
        )
        x = b.apply(dense, x, "dense")
    elif rng.random() < 0.2:  # Dense on the last axis of a spatial tensor
        x = b.apply(layers.Dense(rng.randint(1, 4), **b.drawn("kernel", "bias")), x, "dense")
    outputs.append(x)
    form = "functional" if b.functional else "sequential"
    part = Part(
        seed=seed,
        id=f"{seed:03d}-{form}-{b.rank}d-{b.data_format[9:]}-{'-'.join(b.labels)}",
        form=form, rank=b.rank, data_format=b.data_format, stem=stem,
        inputs=len(inputs), outputs=len(outputs), encoder=encoder, skips=b.counts["skips"],
        nested=b.counts["nested"], shared=b.counts["shared"], two_deep=b.counts["two_deep"],
    )  # fmt: skip
    return _Grown(part, inputs, input_shapes, outputs, b.chain)


def _values(seed: int, shapes: list[tuple[int, ...]], batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    return [rng.standard_normal((batch, *shape)).astype(np.float32) for shape in shapes]


def _layer_name(tensor: Any) -> str:
    return str(tensor._keras_history.operation.name)


def _output_names(layer_names: list[str], taken: list[str]) -> list[str]:
    """Outputs are named after the layer that produces them; a tensor returned twice (a DAG part
    can end on a block it also returns) gets `name_1`, `name_2`... the second time."""
    names: list[str] = []
    for layer in layer_names:
        name, count = layer, 0
        while name in names or name in taken:
            count += 1
            name = f"{layer}_{count}"
        names.append(name)
    return names


def bundle(index: int, seeds: Sequence[int] | None = None) -> Network:
    """One Functional model whose independent branches are the parts of `seeds` (by default the
    bundle's `PER_BUNDLE` seeds), with all their inputs and outputs, in seed order."""
    seeds = bundle_seeds(index) if seeds is None else seeds
    batch = BATCHES[index % len(BATCHES)]
    inputs: list[Any] = []
    outputs: list[Any] = []
    values: list[np.ndarray] = []
    output_parts: list[Part] = []
    parts = []
    for seed in seeds:
        grown = _grow(seed, traced=True)
        parts.append(grown.part)
        inputs += grown.inputs
        outputs += grown.outputs
        output_parts += [grown.part] * len(grown.outputs)
        values += _values(seed, grown.input_shapes, batch)
    model = keras.Model(inputs, outputs, name=f"bundle{index}")
    restore_initializers(model.layers)
    input_names = [_layer_name(t) for t in inputs]
    return Network(
        id=f"bundle{index}",
        model=model,
        inputs=values,
        input_names=input_names,
        output_names=_output_names([_layer_name(t) for t in outputs], taken=input_names),
        output_parts=output_parts,
        parts=parts,
    )


def sequential_network(seed: int) -> Network:
    """A chain part (an even seed) as a real keras.Sequential model."""
    grown = _grow(seed, traced=False)
    assert grown.part.form == "sequential", f"seed {seed} grows a DAG: use an even seed"
    name = _layer_name(grown.inputs[0])
    model = keras.Sequential([grown.inputs[0], *grown.chain], name=f"sequential{seed:03d}")
    restore_initializers(model.layers)
    return Network(
        id=f"sequential{seed:03d}",
        model=model,
        inputs=_values(seed, grown.input_shapes, batch=2),
        input_names=[name],
        output_names=[grown.chain[-1].name],
        output_parts=[grown.part],
        parts=[grown.part],
    )


# --- the TensorFlow tutorial networks -----------------------------------------------------------


def dcgan_generator(rng: np.random.Generator) -> keras.Model:
    """The TensorFlow DCGAN tutorial's generator, layer for layer (random weights from `rng`)."""
    bn = ("gamma", "beta", "moving_mean", "moving_variance")
    model = keras.Sequential(
        [
            keras.Input((100,)),
            layers.Dense(7 * 7 * 256, use_bias=False, **drawn_weights(rng, "kernel")),
            layers.BatchNormalization(**drawn_weights(rng, *bn)),
            layers.LeakyReLU(),
            layers.Reshape((7, 7, 256)),
            layers.Conv2DTranspose(
                128, (5, 5), strides=(1, 1), padding="same", use_bias=False, **drawn_weights(rng, "kernel")
            ),
            layers.BatchNormalization(**drawn_weights(rng, *bn)),
            layers.LeakyReLU(),
            layers.Conv2DTranspose(
                64, (5, 5), strides=(2, 2), padding="same", use_bias=False, **drawn_weights(rng, "kernel")
            ),
            layers.BatchNormalization(**drawn_weights(rng, *bn)),
            layers.LeakyReLU(),
            layers.Conv2DTranspose(
                1,
                (5, 5),
                strides=(2, 2),
                padding="same",
                use_bias=False,
                activation="tanh",
                **drawn_weights(rng, "kernel"),
            ),  # fmt: skip
        ],
        name="generator",
    )
    restore_initializers(model.layers)
    return model


def cvae_decoder(rng: np.random.Generator, latent_dim: int = 2) -> keras.Model:
    """The TensorFlow CVAE tutorial's decoder, layer for layer (random weights from `rng`)."""
    weights = ("kernel", "bias")
    model = keras.Sequential(
        [
            keras.Input((latent_dim,)),
            layers.Dense(units=7 * 7 * 32, activation="relu", **drawn_weights(rng, *weights)),
            layers.Reshape(target_shape=(7, 7, 32)),
            layers.Conv2DTranspose(
                filters=64,
                kernel_size=3,
                strides=2,
                padding="same",
                activation="relu",
                **drawn_weights(rng, *weights),
            ),  # fmt: skip
            layers.Conv2DTranspose(
                filters=32,
                kernel_size=3,
                strides=2,
                padding="same",
                activation="relu",
                **drawn_weights(rng, *weights),
            ),  # fmt: skip
            layers.Conv2DTranspose(
                filters=1, kernel_size=3, strides=1, padding="same", **drawn_weights(rng, *weights)
            ),
        ],
        name="decoder",
    )
    restore_initializers(model.layers)
    return model


Factory = Callable[[np.random.Generator], keras.Model]
TUTORIALS: dict[str, Factory] = {"dcgan-generator": dcgan_generator, "cvae-decoder": cvae_decoder}
