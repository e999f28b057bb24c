"""Random decoder and generator networks built with real Keras (jax backend), for conformance tests.

`random_network(seed)` builds a small Sequential model or Functional DAG from the layers the
compiler supports: a latent vector through Dense → Reshape, or a spatial input, then blocks of
transposed convolutions with BatchNormalization, activation layers, dropout and noise, padding,
cropping and upsampling; Functional cases add branches joined by Add or Concatenate, skip
connections, a second input and several outputs. Every weight gets non-trivial random values
(BatchNormalization's moving statistics included) scaled so activations stay O(1), so a folding or
layout error shows in the numbers rather than hiding under rounding.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


@dataclass
class Network:
    id: str
    model: keras.Model
    inputs: list[np.ndarray]


@dataclass(frozen=True)
class _Symbolic:
    shape: tuple[int | None, ...]


class _Builder:
    """Grows a chain (Sequential) or a graph (Functional) one layer at a time, reading shapes back."""

    def __init__(self, rng: random.Random, rank: int, data_format: str, functional: bool) -> None:
        self.rng, self.rank, self.data_format, self.functional = rng, rank, data_format, functional
        self.chain: list[keras.Layer] = []
        self.parts: list[str] = []

    @property
    def channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    def spatial(self, x: Any) -> list[int]:
        shape = list(x.shape[1:])
        return shape[:-1] if self.data_format == "channels_last" else shape[1:]

    def channels(self, x: Any) -> int:
        return int(x.shape[self.channel_axis])

    def apply(self, layer: keras.Layer, x: Any, label: str) -> Any:
        """Call the layer (Functional), or only work out its output shape (Sequential: the model
        is built once from the chain at the end, so each layer is traced once)."""
        y = layer(x) if self.functional else _Symbolic(tuple(layer.compute_output_shape(tuple(x.shape))))
        self.chain.append(layer)
        self.parts.append(label)
        return y

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
        activation = rng.choice(ACTIVATIONS)
        cls = {1: layers.Conv1DTranspose, 2: layers.Conv2DTranspose, 3: layers.Conv3DTranspose}[rank]
        layer = cls(
            rng.randint(1, 6), kernel, strides=stride, padding=padding, output_padding=output_padding,
            data_format=self.data_format, dilation_rate=dilation, activation=activation,
            use_bias=rng.random() < 0.7,
        )  # fmt: skip
        return self.apply(layer, x, f"ct{''.join(map(str, kernel))}s{''.join(map(str, stride))}{padding[0]}")

    def after_conv(self, x: Any) -> Any:
        rng = self.rng
        if rng.random() < 0.5:
            x = self.apply(
                layers.BatchNormalization(axis=self.channel_axis, epsilon=rng.choice([1e-3, 1e-5])), x, "bn"
            )
        if rng.random() < 0.6:
            x = self.activation_layer(x)
        if rng.random() < 0.2:
            noise = rng.choice([layers.Dropout(0.3), layers.GaussianNoise(0.5), layers.GaussianDropout(0.2)])
            x = self.apply(noise, x, "noise")
        if rng.random() < 0.4:
            x = self.resize(x)
        return x

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
            return self.apply(layers.PReLU(shared_axes=shared if rng.random() < 0.7 else None), x, "prelu")
        if choice == 5 and self.channels(x) > 1:  # Keras warns about a softmax over one value
            return self.apply(layers.Softmax(axis=self.channel_axis), x, "softmax")
        return self.apply(layers.Activation(rng.choice(ACTIVATIONS + ["hard_sigmoid", "mish"])), x, "act")

    def resize(self, x: Any) -> Any:
        rng, rank = self.rng, self.rank
        sides = self.spatial(x)
        kind = rng.randrange(3)
        if kind == 0:
            pads = [(rng.randint(0, 2), rng.randint(0, 2)) for _ in range(rank)]
            cls = {1: layers.ZeroPadding1D, 2: layers.ZeroPadding2D, 3: layers.ZeroPadding3D}[rank]
            return self.apply(cls(pads[0] if rank == 1 else pads, data_format=self.data_format), x, "pad")
        if kind == 1 and all(side >= 3 for side in sides):
            crops = [(rng.randint(0, 1), rng.randint(0, 1)) for _ in range(rank)]
            if rank == 1:
                if self.data_format == "channels_first":
                    return x  # Cropping1D has no data_format: it crops axis 1
                return self.apply(layers.Cropping1D(crops[0]), x, "crop")
            cls = layers.Cropping2D if rank == 2 else layers.Cropping3D
            return self.apply(cls(crops, data_format=self.data_format), x, "crop")
        if all(side * 2 <= MAX_SIDE[rank] for side in sides):
            if rank == 1:
                if self.data_format == "channels_first":
                    return x  # UpSampling1D has no data_format: it repeats axis 1
                return self.apply(layers.UpSampling1D(2), x, "up")
            if rank == 2:
                interpolation = rng.choice(["nearest", "bilinear"])
                size = (rng.choice([1, 2]), 2)
                up = layers.UpSampling2D(size, data_format=self.data_format, interpolation=interpolation)
                return self.apply(up, x, f"up{interpolation[0]}")
            return self.apply(layers.UpSampling3D((2, 1, 2), data_format=self.data_format), x, "up")
        return x


def _latent_stem(b: _Builder, rng: random.Random) -> tuple[keras.KerasTensor, Any, tuple[int, ...]]:
    """latent → Dense → [BN] [activation] → Reshape to a small spatial tensor."""
    latent = rng.randint(2, 8)
    sides = [rng.randint(2, 4) for _ in range(b.rank)]
    channels = rng.randint(2, 6)
    inp = keras.Input((latent,), name="latent")
    x = b.apply(layers.Dense(math.prod(sides) * channels, use_bias=rng.random() < 0.5), inp, "dense")
    if rng.random() < 0.6:
        x = b.apply(layers.BatchNormalization(), x, "bn")
    if rng.random() < 0.7:
        x = b.apply(layers.LeakyReLU(), x, "leaky")
    target = [*sides, channels] if b.data_format == "channels_last" else [channels, *sides]
    x = b.apply(layers.Reshape(target), x, "reshape")
    return inp, x, (latent,)


def _spatial_stem(b: _Builder, rng: random.Random) -> tuple[keras.KerasTensor, Any, tuple[int, ...]]:
    sides = [rng.randint(1, 4) for _ in range(b.rank)]
    channels = rng.randint(1, 5)
    shape = (*sides, channels) if b.data_format == "channels_last" else (channels, *sides)
    inp = keras.Input(shape, name="features")
    return inp, inp, shape


@functools.cache  # the conformance and the coverage test share each network
def random_network(seed: int) -> Network:
    rng = random.Random(seed)
    rank = rng.choice([1, 2, 2, 2, 3])
    data_format = rng.choice(["channels_last", "channels_last", "channels_first"])
    functional = seed % 2 == 1
    b = _Builder(rng, rank, data_format, functional)
    inp, x, in_shape = (_latent_stem if rng.random() < 0.5 else _spatial_stem)(b, rng)
    inputs = [inp]
    input_shapes = [in_shape]
    outputs = []
    blocks = rng.randint(1, 3)
    for _ in range(blocks):
        x = b.after_conv(b.conv(x))
        if functional and rng.random() < 0.6:
            x = _merge(b, rng, x, inputs, input_shapes)
        if functional and rng.random() < 0.2:
            outputs.append(x)
    if rng.random() < 0.2:
        x = b.apply(layers.Flatten(data_format=data_format), x, "flatten")
        x = b.apply(layers.Dense(rng.randint(1, 5), activation=rng.choice(ACTIVATIONS)), x, "dense")
    elif rng.random() < 0.2:
        x = b.apply(layers.Dense(rng.randint(1, 4)), x, "dense")  # Dense on the last axis of a spatial tensor
    outputs.append(x)
    if functional:
        model = keras.Model(
            inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0]
        )
    else:
        model = keras.Sequential([keras.Input(in_shape), *b.chain])
    randomize_weights(model, np.random.default_rng(seed))
    data_rng = np.random.default_rng(seed + 1)
    values = [data_rng.standard_normal((2, *shape)).astype(np.float32) for shape in input_shapes]
    form = "functional" if functional else "sequential"
    case_id = f"{seed:03d}-{form}-{rank}d-{data_format[9:]}-{'-'.join(b.parts)}"
    return Network(case_id, model, values)


def _merge(b: _Builder, rng: random.Random, x: Any, inputs: list[Any], input_shapes: list[Any]) -> Any:
    """A branch beside the main path, joined by Add or Concatenate (sometimes from a second input)."""
    shape = tuple(int(d) for d in x.shape[1:])
    if rng.random() < 0.25 and len(inputs) == 1:
        side = keras.Input(shape, name="skip")
        inputs.append(side)
        input_shapes.append(shape)
        branch = side
    else:
        cls = {1: layers.Conv1DTranspose, 2: layers.Conv2DTranspose, 3: layers.Conv3DTranspose}[b.rank]
        branch = cls(b.channels(x), 1, data_format=b.data_format, activation=rng.choice(ACTIVATIONS))(x)
        if rng.random() < 0.5:
            branch = layers.BatchNormalization(axis=b.channel_axis)(branch)
    if rng.random() < 0.5:
        b.parts.append("add")
        return layers.Add()([x, branch])
    b.parts.append("concat")
    return layers.Concatenate(axis=b.channel_axis)([x, branch])


def randomize_weights(model: keras.Model, rng: np.random.Generator) -> None:
    """Random weights that keep activations O(1): kernels ~ N(0, 1/fan_in), BN statistics away from identity."""
    for layer in model.layers:
        shapes = [tuple(v.shape) for v in layer.weights]  # (get_weights() warns under numpy 2)
        if not shapes:
            continue
        if isinstance(layer, layers.BatchNormalization):
            names = [v.path.split("/")[-1] for v in layer.weights]
            values = {
                "gamma": lambda s: rng.uniform(0.5, 1.5, s),
                "beta": lambda s: rng.normal(0, 0.3, s),
                "moving_mean": lambda s: rng.normal(0, 0.3, s),
                "moving_variance": lambda s: rng.uniform(0.5, 2.0, s),
            }
            fresh = [values[n](shape) for n, shape in zip(names, shapes, strict=True)]
        else:
            fresh = []
            for shape in shapes:
                if len(shape) == 1:
                    fresh.append(rng.normal(0, 0.3, shape))
                elif isinstance(layer, layers.PReLU):
                    fresh.append(rng.uniform(0, 0.5, shape))
                else:
                    fan_in = math.prod(shape[:-2]) * shape[-1] if len(shape) > 2 else shape[0]
                    fresh.append(rng.normal(0, 1.0 / math.sqrt(fan_in), shape))
        layer.set_weights([w.astype(np.float32) for w in fresh])


def dcgan_generator() -> keras.Model:
    """The TensorFlow DCGAN tutorial's generator, layer for layer."""
    return keras.Sequential(
        [
            keras.Input((100,)),
            layers.Dense(7 * 7 * 256, use_bias=False),
            layers.BatchNormalization(),
            layers.LeakyReLU(),
            layers.Reshape((7, 7, 256)),
            layers.Conv2DTranspose(128, (5, 5), strides=(1, 1), padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.LeakyReLU(),
            layers.Conv2DTranspose(64, (5, 5), strides=(2, 2), padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.LeakyReLU(),
            layers.Conv2DTranspose(
                1, (5, 5), strides=(2, 2), padding="same", use_bias=False, activation="tanh"
            ),
        ],
        name="generator",
    )


def cvae_decoder(latent_dim: int = 2) -> keras.Model:
    """The TensorFlow CVAE tutorial's decoder, layer for layer."""
    return keras.Sequential(
        [
            keras.Input((latent_dim,)),
            layers.Dense(units=7 * 7 * 32, activation="relu"),
            layers.Reshape(target_shape=(7, 7, 32)),
            layers.Conv2DTranspose(filters=64, kernel_size=3, strides=2, padding="same", activation="relu"),
            layers.Conv2DTranspose(filters=32, kernel_size=3, strides=2, padding="same", activation="relu"),
            layers.Conv2DTranspose(filters=1, kernel_size=3, strides=1, padding="same"),
        ],
        name="decoder",
    )


Factory = Callable[[], keras.Model]
TUTORIALS: dict[str, Factory] = {"dcgan-generator": dcgan_generator, "cvae-decoder": cvae_decoder}
