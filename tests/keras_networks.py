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

    def __init__(self, rng: np.random.Generator, weight: str) -> None:
        self.rng, self.weight = rng, weight

    def __call__(self, shape: Sequence[int], dtype: Any = None) -> jax.Array:
        shape, rng = tuple(shape), self.rng
        if self.weight == "kernel":
            # Conv*DTranspose kernels are kernel_size + (filters, in_channels); Dense (in, units)
            fan_in = math.prod(shape[:-2]) * shape[-1] if len(shape) > 2 else shape[0]
            values = rng.normal(0, 1.0 / math.sqrt(fan_in), shape)
        elif self.weight in ("gamma", "moving_variance"):
            values = rng.uniform(0.5, 1.5 if self.weight == "gamma" else 2.0, shape)
        elif self.weight == "alpha":
            values = rng.uniform(0, 0.5, shape)
        else:
            values = rng.normal(0, 0.3, shape)
        # a device array: Keras' conversion of a numpy array compiles one XLA program per shape
        return jax.device_put(values.astype(dtype or "float32"))


def drawn_weights(rng: np.random.Generator, *weights: str) -> dict[str, _Draw]:
    return {f"{weight}_initializer": _Draw(rng, weight) for weight in weights}


def restore_initializers(layer_list: Iterable[keras.Layer]) -> None:
    """Put Keras' default initializers where `_Draw` stood, so the saved config is Keras' own."""
    for layer in layer_list:
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

    def batch_norm(self, axis: int) -> keras.Layer:
        center, scale = self.rng.random() < 0.85, self.rng.random() < 0.85
        return layers.BatchNormalization(
            axis=axis, epsilon=self.rng.choice([1e-3, 1e-5]), center=center, scale=scale,
            **self.drawn("gamma", "beta", "moving_mean", "moving_variance"),
        )  # fmt: skip

    # --- blocks ---

    def conv(self, x: Any) -> Any:
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
    else:
        stem = "spatial"
        sides = [rng.randint(1, 4) for _ in range(b.rank)]
        channels = rng.randint(1, 5)
        in_shape = (*sides, channels) if b.data_format == "channels_last" else (channels, *sides)
        inp = x = keras.Input(in_shape, name=f"n{seed:03d}_features")
    inputs, input_shapes, outputs = [inp], [in_shape], []
    for _ in range(rng.randint(1, 3)):
        x = b.after_conv(b.conv(x))
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
        inputs=len(inputs), outputs=len(outputs),
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
