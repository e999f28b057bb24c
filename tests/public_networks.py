"""Public networks that use transposed convolutions, written after their published sources.

Each builder below transcribes one network from a public tutorial or example (the URL is in its
docstring): the layer sequence, sizes, activations, padding, `use_bias`, initializer names and the
nesting (a `keras.Sequential` block where the source writes one) as the source writes them, in
Keras 3 spelling (`keras.Input(shape=...)` for `input_shape=`, `negative_slope=` for `alpha=`,
`keras.ops` for `tf.*` tensor functions). Where a source is a subclassed model or trains with a
custom `train_step`, only its networks are kept; where it writes a subclassed model whose `call`
is a plain chain, the chain is written as a Functional model (the one subclassed form kept on
purpose is `subclassed_cvae`, which the compiler must refuse). Changes from a source are named in
the builder's docstring.

`NETWORKS[name]()` builds a network ready for tests: Keras' own initializers are skipped while it
is built (`keras_initializers_skipped`: they compile one XLA program per weight shape, 1-3 s each
on CI machines, and most of these networks have dozens of shapes), then every weight of every
layer, nested models included, is set with `layer.set_weights` to seeded numpy values
(`randomize_weights`). The saved configs keep the initializers the sources name. `INPUT_SHAPES`
gives each network's inputs (one sample, no batch axis; a dynamic size as the size to test with)
and `SOURCES` the URLs.
"""

from __future__ import annotations

import contextlib
import functools
import math
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
from keras import layers

# --- 1-2: TensorFlow DCGAN tutorial ------------------------------------------------------------

TF_DCGAN = "https://www.tensorflow.org/tutorials/generative/dcgan"


def tf_dcgan_generator() -> keras.Model:
    """`make_generator_model()` (TF_DCGAN): noise (100,) -> 28x28x1 image."""
    model = keras.Sequential()
    model.add(keras.Input(shape=(100,)))  # the source: Dense(..., input_shape=(100,))
    model.add(layers.Dense(7 * 7 * 256, use_bias=False))
    model.add(layers.BatchNormalization())
    model.add(layers.LeakyReLU())

    model.add(layers.Reshape((7, 7, 256)))
    assert model.output_shape == (None, 7, 7, 256)

    model.add(layers.Conv2DTranspose(128, (5, 5), strides=(1, 1), padding="same", use_bias=False))
    assert model.output_shape == (None, 7, 7, 128)
    model.add(layers.BatchNormalization())
    model.add(layers.LeakyReLU())

    model.add(layers.Conv2DTranspose(64, (5, 5), strides=(2, 2), padding="same", use_bias=False))
    assert model.output_shape == (None, 14, 14, 64)
    model.add(layers.BatchNormalization())
    model.add(layers.LeakyReLU())

    model.add(
        layers.Conv2DTranspose(1, (5, 5), strides=(2, 2), padding="same", use_bias=False, activation="tanh")
    )
    assert model.output_shape == (None, 28, 28, 1)
    return model


def tf_dcgan_discriminator() -> keras.Model:
    """`make_discriminator_model()` (TF_DCGAN): 28x28x1 image -> one logit."""
    model = keras.Sequential()
    model.add(keras.Input(shape=[28, 28, 1]))
    model.add(layers.Conv2D(64, (5, 5), strides=(2, 2), padding="same"))
    model.add(layers.LeakyReLU())
    model.add(layers.Dropout(0.3))

    model.add(layers.Conv2D(128, (5, 5), strides=(2, 2), padding="same"))
    model.add(layers.LeakyReLU())
    model.add(layers.Dropout(0.3))

    model.add(layers.Flatten())
    model.add(layers.Dense(1))
    return model


# --- 3-5: TensorFlow convolutional VAE tutorial ------------------------------------------------

TF_CVAE = "https://www.tensorflow.org/tutorials/generative/cvae"
CVAE_LATENT_DIM = 2  # the tutorial's latent_dim


def tf_cvae_encoder(latent_dim: int = CVAE_LATENT_DIM) -> keras.Model:
    """`CVAE.encoder` (TF_CVAE): 28x28x1 -> mean and log-variance, concatenated."""
    return keras.Sequential(
        [
            layers.InputLayer(shape=(28, 28, 1)),
            layers.Conv2D(filters=32, kernel_size=3, strides=(2, 2), activation="relu"),
            layers.Conv2D(filters=64, kernel_size=3, strides=(2, 2), activation="relu"),
            layers.Flatten(),
            # No activation
            layers.Dense(latent_dim + latent_dim),
        ]
    )


def tf_cvae_decoder(latent_dim: int = CVAE_LATENT_DIM) -> keras.Model:
    """`CVAE.decoder` (TF_CVAE): a latent vector -> 28x28x1 logits."""
    return keras.Sequential(
        [
            layers.InputLayer(shape=(latent_dim,)),
            layers.Dense(units=7 * 7 * 32, activation=keras.activations.relu),  # tf.nn.relu
            layers.Reshape(target_shape=(7, 7, 32)),
            layers.Conv2DTranspose(filters=64, kernel_size=3, strides=2, padding="same", activation="relu"),
            layers.Conv2DTranspose(filters=32, kernel_size=3, strides=2, padding="same", activation="relu"),
            # No activation
            layers.Conv2DTranspose(filters=1, kernel_size=3, strides=1, padding="same"),
        ]
    )


def tf_cvae_functional(latent_dim: int = CVAE_LATENT_DIM) -> keras.Model:
    """The whole CVAE (TF_CVAE) at inference as a Functional model: `encode` (the encoder, then
    `tf.split(..., num_or_size_splits=2, axis=1)`), `decode(mean, apply_sigmoid=True)` (inference
    decodes the mean, not a sample). Outputs: the decoded image, the mean, the log-variance."""
    encoder = tf_cvae_encoder(latent_dim)
    decoder = tf_cvae_decoder(latent_dim)
    x = keras.Input(shape=(28, 28, 1))
    mean, logvar = keras.ops.split(encoder(x), 2, axis=1)
    probs = keras.ops.sigmoid(decoder(mean))
    return keras.Model(x, [probs, mean, logvar], name="cvae")


class CVAE(keras.Model):
    """The tutorial's subclassed model (TF_CVAE), kept subclassed: the compiler must refuse it (its
    computation is Python code, not a config). `call` is the inference path (`decode(mean)`)."""

    def __init__(self, latent_dim: int = CVAE_LATENT_DIM, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.encoder = tf_cvae_encoder(latent_dim)
        self.decoder = tf_cvae_decoder(latent_dim)

    def sample(self, eps: Any = None) -> Any:
        if eps is None:
            eps = keras.random.normal(shape=(100, self.latent_dim))
        return self.decode(eps, apply_sigmoid=True)

    def encode(self, x: Any) -> tuple[Any, Any]:
        mean, logvar = keras.ops.split(self.encoder(x), 2, axis=1)
        return mean, logvar

    def reparameterize(self, mean: Any, logvar: Any) -> Any:
        eps = keras.random.normal(shape=keras.ops.shape(mean))
        return eps * keras.ops.exp(logvar * 0.5) + mean

    def decode(self, z: Any, apply_sigmoid: bool = False) -> Any:
        logits = self.decoder(z)
        if apply_sigmoid:
            return keras.ops.sigmoid(logits)
        return logits

    def call(self, x: Any) -> Any:
        mean, _ = self.encode(x)
        return self.decode(mean, apply_sigmoid=True)


def subclassed_cvae() -> keras.Model:
    """The subclassed CVAE, built by a symbolic call so that it can be saved."""
    model = CVAE()
    model(keras.Input(shape=(28, 28, 1)))  # a subclassed model's variables exist after a first call
    return model


# --- 6-7: TensorFlow pix2pix tutorial ----------------------------------------------------------

TF_PIX2PIX = "https://www.tensorflow.org/tutorials/generative/pix2pix"
OUTPUT_CHANNELS = 3


def _random_normal_002() -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.02)  # tf.random_normal_initializer(0., 0.02)


def downsample(filters: int, size: int, apply_batchnorm: bool = True) -> keras.Sequential:
    """`downsample` (TF_PIX2PIX): Conv2D stride 2 -> (BatchNormalization) -> LeakyReLU."""
    initializer = _random_normal_002()

    result = keras.Sequential()
    result.add(
        layers.Conv2D(
            filters, size, strides=2, padding="same", kernel_initializer=initializer, use_bias=False
        )
    )

    if apply_batchnorm:
        result.add(layers.BatchNormalization())

    result.add(layers.LeakyReLU())

    return result


def upsample(filters: int, size: int, apply_dropout: bool = False) -> keras.Sequential:
    """`upsample` (TF_PIX2PIX, and `tensorflow_examples.models.pix2pix.upsample` with its default
    norm_type='batchnorm'): Conv2DTranspose stride 2 -> BatchNormalization -> (Dropout) -> ReLU."""
    initializer = _random_normal_002()

    result = keras.Sequential()
    result.add(
        layers.Conv2DTranspose(
            filters, size, strides=2, padding="same", kernel_initializer=initializer, use_bias=False
        )
    )

    result.add(layers.BatchNormalization())

    if apply_dropout:
        result.add(layers.Dropout(0.5))

    result.add(layers.ReLU())

    return result


def tf_pix2pix_generator() -> keras.Model:
    """`Generator()` (TF_PIX2PIX): the U-Net generator, 256x256x3 -> 256x256x3. Eight stride-2
    blocks take 256 to 1, so the input size is the source's."""
    inputs = layers.Input(shape=[256, 256, 3])

    down_stack = [
        downsample(64, 4, apply_batchnorm=False),  # (batch_size, 128, 128, 64)
        downsample(128, 4),  # (batch_size, 64, 64, 128)
        downsample(256, 4),  # (batch_size, 32, 32, 256)
        downsample(512, 4),  # (batch_size, 16, 16, 512)
        downsample(512, 4),  # (batch_size, 8, 8, 512)
        downsample(512, 4),  # (batch_size, 4, 4, 512)
        downsample(512, 4),  # (batch_size, 2, 2, 512)
        downsample(512, 4),  # (batch_size, 1, 1, 512)
    ]

    up_stack = [
        upsample(512, 4, apply_dropout=True),  # (batch_size, 2, 2, 1024)
        upsample(512, 4, apply_dropout=True),  # (batch_size, 4, 4, 1024)
        upsample(512, 4, apply_dropout=True),  # (batch_size, 8, 8, 1024)
        upsample(512, 4),  # (batch_size, 16, 16, 1024)
        upsample(256, 4),  # (batch_size, 32, 32, 512)
        upsample(128, 4),  # (batch_size, 64, 64, 256)
        upsample(64, 4),  # (batch_size, 128, 128, 128)
    ]

    initializer = _random_normal_002()
    last = layers.Conv2DTranspose(
        OUTPUT_CHANNELS, 4, strides=2, padding="same", kernel_initializer=initializer, activation="tanh"
    )  # (batch_size, 256, 256, 3)

    x = inputs

    # Downsampling through the model
    skips = []
    for down in down_stack:
        x = down(x)
        skips.append(x)

    skips = list(reversed(skips[:-1]))

    # Upsampling and establishing the skip connections
    for up, skip in zip(up_stack, skips, strict=True):
        x = up(x)
        x = layers.Concatenate()([x, skip])

    x = last(x)

    return keras.Model(inputs=inputs, outputs=x)


def tf_pix2pix_discriminator() -> keras.Model:
    """`Discriminator()` (TF_PIX2PIX): the PatchGAN, (input image, target image) -> 30x30x1."""
    initializer = _random_normal_002()

    inp = layers.Input(shape=[256, 256, 3], name="input_image")
    tar = layers.Input(shape=[256, 256, 3], name="target_image")

    x = layers.concatenate([inp, tar])  # (batch_size, 256, 256, channels*2)

    down1 = downsample(64, 4, False)(x)  # (batch_size, 128, 128, 64)
    down2 = downsample(128, 4)(down1)  # (batch_size, 64, 64, 128)
    down3 = downsample(256, 4)(down2)  # (batch_size, 32, 32, 256)

    zero_pad1 = layers.ZeroPadding2D()(down3)  # (batch_size, 34, 34, 256)
    conv = layers.Conv2D(512, 4, strides=1, kernel_initializer=initializer, use_bias=False)(
        zero_pad1
    )  # (batch_size, 31, 31, 512)

    batchnorm1 = layers.BatchNormalization()(conv)

    leaky_relu = layers.LeakyReLU()(batchnorm1)

    zero_pad2 = layers.ZeroPadding2D()(leaky_relu)  # (batch_size, 33, 33, 512)

    last = layers.Conv2D(1, 4, strides=1, kernel_initializer=initializer)(
        zero_pad2
    )  # (batch_size, 30, 30, 1)

    return keras.Model(inputs=[inp, tar], outputs=last)


# --- 8: TensorFlow image segmentation tutorial -------------------------------------------------

TF_SEGMENTATION = "https://www.tensorflow.org/tutorials/images/segmentation"


def tf_segmentation_unet(output_channels: int = 3) -> keras.Model:
    """`unet_model(OUTPUT_CHANNELS)` (TF_SEGMENTATION): a MobileNetV2 feature extractor (a nested
    Functional `down_stack`, frozen) and `pix2pix.upsample` blocks (nested Sequentials). The one
    change: `weights=None` (the source downloads ImageNet weights; ours are random anyway)."""
    base_model = keras.applications.MobileNetV2(input_shape=[128, 128, 3], include_top=False, weights=None)

    # Use the activations of these layers
    layer_names = [
        "block_1_expand_relu",  # 64x64
        "block_3_expand_relu",  # 32x32
        "block_6_expand_relu",  # 16x16
        "block_13_expand_relu",  # 8x8
        "block_16_project",  # 4x4
    ]
    base_model_outputs = [base_model.get_layer(name).output for name in layer_names]

    # Create the feature extraction model
    down_stack = keras.Model(inputs=base_model.input, outputs=base_model_outputs)

    down_stack.trainable = False

    up_stack = [
        upsample(512, 3),  # 4x4 -> 8x8
        upsample(256, 3),  # 8x8 -> 16x16
        upsample(128, 3),  # 16x16 -> 32x32
        upsample(64, 3),  # 32x32 -> 64x64
    ]

    inputs = layers.Input(shape=[128, 128, 3])

    # Downsampling through the model
    skips = down_stack(inputs)
    x = skips[-1]
    skips = list(reversed(skips[:-1]))

    # Upsampling and establishing the skip connections
    for up, skip in zip(up_stack, skips, strict=True):
        x = up(x)
        concat = layers.Concatenate()
        x = concat([x, skip])

    # This is the last layer of the model
    last = layers.Conv2DTranspose(
        filters=output_channels, kernel_size=3, strides=2, padding="same"
    )  # 64x64 -> 128x128

    x = last(x)

    return keras.Model(inputs=inputs, outputs=x)


# --- 9-14: keras.io examples --------------------------------------------------------------------

KERAS_DENOISING_AE = "https://keras.io/examples/vision/autoencoder/"
KERAS_OXFORD_PETS = "https://keras.io/examples/vision/oxford_pets_image_segmentation/"
KERAS_CONDITIONAL_GAN = "https://keras.io/examples/generative/conditional_gan/"
KERAS_DCGAN_FACES = "https://keras.io/examples/generative/dcgan_overriding_train_step/"
KERAS_TIMESERIES_AE = "https://keras.io/examples/timeseries/timeseries_anomaly_detection/"
KERAS_MELGAN = "https://keras.io/examples/audio/melgan_spectrogram_inversion/"


def keras_denoising_autoencoder() -> keras.Model:
    """The autoencoder of "Convolutional autoencoder for image denoising" (KERAS_DENOISING_AE)."""
    input = layers.Input(shape=(28, 28, 1))

    # Encoder
    x = layers.Conv2D(32, (3, 3), activation="relu", padding="same")(input)
    x = layers.MaxPooling2D((2, 2), padding="same")(x)
    x = layers.Conv2D(32, (3, 3), activation="relu", padding="same")(x)
    x = layers.MaxPooling2D((2, 2), padding="same")(x)

    # Decoder
    x = layers.Conv2DTranspose(32, (3, 3), strides=2, activation="relu", padding="same")(x)
    x = layers.Conv2DTranspose(32, (3, 3), strides=2, activation="relu", padding="same")(x)
    x = layers.Conv2D(1, (3, 3), activation="sigmoid", padding="same")(x)

    # Autoencoder
    return keras.Model(input, x)


OXFORD_PETS_IMG_SIZE = (160, 160)  # the example's img_size


def keras_oxford_pets_unet(
    img_size: tuple[int, int] = OXFORD_PETS_IMG_SIZE, num_classes: int = 3
) -> keras.Model:
    """`get_model(img_size, num_classes)` of "Image segmentation with a U-Net-like architecture"
    (KERAS_OXFORD_PETS), with the example's img_size (160, 160) and num_classes 3."""
    inputs = keras.Input(shape=img_size + (3,))

    ### [First half of the network: downsampling inputs] ###

    # Entry block
    x = layers.Conv2D(32, 3, strides=2, padding="same")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)

    previous_block_activation = x  # Set aside residual

    # Blocks 1, 2, 3 are identical apart from the feature depth.
    for filters in [64, 128, 256]:
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)

        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)

        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)

        # Project residual
        residual = layers.Conv2D(filters, 1, strides=2, padding="same")(previous_block_activation)
        x = layers.add([x, residual])  # Add back residual
        previous_block_activation = x  # Set aside next residual

    ### [Second half of the network: upsampling inputs] ###

    for filters in [256, 128, 64, 32]:
        x = layers.Activation("relu")(x)
        x = layers.Conv2DTranspose(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)

        x = layers.Activation("relu")(x)
        x = layers.Conv2DTranspose(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)

        x = layers.UpSampling2D(2)(x)

        # Project residual
        residual = layers.UpSampling2D(2)(previous_block_activation)
        residual = layers.Conv2D(filters, 1, padding="same")(residual)
        x = layers.add([x, residual])  # Add back residual
        previous_block_activation = x  # Set aside next residual

    # Add a per-pixel classification layer
    outputs = layers.Conv2D(num_classes, 3, activation="softmax", padding="same")(x)

    # Define the model
    return keras.Model(inputs, outputs)


def keras_conditional_gan_generator() -> keras.Model:
    """The generator of "Conditional GAN" (KERAS_CONDITIONAL_GAN): noise (128) and a one-hot
    label (10), concatenated by the caller -> 28x28x1."""
    num_classes = 10
    latent_dim = 128
    generator_in_channels = latent_dim + num_classes
    return keras.Sequential(
        [
            layers.InputLayer((generator_in_channels,)),
            # We want to generate 128 + num_classes coefficients to reshape into a
            # 7x7x(128 + num_classes) map.
            layers.Dense(7 * 7 * generator_in_channels),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Reshape((7, 7, generator_in_channels)),
            layers.Conv2DTranspose(128, (4, 4), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Conv2DTranspose(128, (4, 4), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Conv2D(1, (7, 7), padding="same", activation="sigmoid"),
        ],
        name="generator",
    )


def keras_dcgan_faces_generator() -> keras.Model:
    """The generator of "DCGAN to generate face images" (KERAS_DCGAN_FACES): (128,) -> 64x64x3."""
    latent_dim = 128
    return keras.Sequential(
        [
            keras.Input(shape=(latent_dim,)),
            layers.Dense(8 * 8 * 128),
            layers.Reshape((8, 8, 128)),
            layers.Conv2DTranspose(128, kernel_size=4, strides=2, padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Conv2DTranspose(256, kernel_size=4, strides=2, padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Conv2DTranspose(512, kernel_size=4, strides=2, padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Conv2D(3, kernel_size=5, padding="same", activation="sigmoid"),
        ],
        name="generator",
    )


TIMESERIES_STEPS = 288  # x_train.shape[1]: one day of 5-minute values


def keras_timeseries_autoencoder() -> keras.Model:
    """The reconstruction model of "Timeseries anomaly detection using an Autoencoder"
    (KERAS_TIMESERIES_AE): (288, 1) -> (288, 1)."""
    return keras.Sequential(
        [
            layers.Input(shape=(TIMESERIES_STEPS, 1)),
            layers.Conv1D(filters=32, kernel_size=7, padding="same", strides=2, activation="relu"),
            layers.Dropout(rate=0.2),
            layers.Conv1D(filters=16, kernel_size=7, padding="same", strides=2, activation="relu"),
            layers.Conv1DTranspose(filters=16, kernel_size=7, padding="same", strides=2, activation="relu"),
            layers.Dropout(rate=0.2),
            layers.Conv1DTranspose(filters=32, kernel_size=7, padding="same", strides=2, activation="relu"),
            layers.Conv1DTranspose(filters=1, kernel_size=7, padding="same"),
        ]
    )


MEL_CHANNELS = 80  # the example's mel bins; its inference input is (batch, frames, 80)
MEL_TEST_FRAMES = 8  # the frame count the tests feed (the model takes any: its input is (None, 80))


def _melgan_residual_stack(input: Any, filters: int) -> Any:
    """`residual_stack` (KERAS_MELGAN, the tensorflow_addons version, dilations 1, 3, 9), each
    Conv1D without its `addon_layers.WeightNormalization` wrapper."""
    c1 = layers.Conv1D(filters, 3, dilation_rate=1, padding="same")(input)
    lrelu1 = layers.LeakyReLU()(c1)
    c2 = layers.Conv1D(filters, 3, dilation_rate=1, padding="same")(lrelu1)
    add1 = layers.Add()([c2, input])

    lrelu2 = layers.LeakyReLU()(add1)
    c3 = layers.Conv1D(filters, 3, dilation_rate=3, padding="same")(lrelu2)
    lrelu3 = layers.LeakyReLU()(c3)
    c4 = layers.Conv1D(filters, 3, dilation_rate=1, padding="same")(lrelu3)
    add2 = layers.Add()([add1, c4])

    lrelu4 = layers.LeakyReLU()(add2)
    c5 = layers.Conv1D(filters, 3, dilation_rate=9, padding="same")(lrelu4)
    lrelu5 = layers.LeakyReLU()(c5)
    c6 = layers.Conv1D(filters, 3, dilation_rate=1, padding="same")(lrelu5)
    add3 = layers.Add()([c6, add2])

    return add3


def _melgan_conv_block(input: Any, conv_dim: int, upsampling_factor: int) -> Any:
    """`conv_block` (KERAS_MELGAN) without the WeightNormalization wrapper."""
    conv_t = layers.Conv1DTranspose(conv_dim, 16, upsampling_factor, padding="same")(input)
    lrelu1 = layers.LeakyReLU()(conv_t)
    res_stack = _melgan_residual_stack(lrelu1, conv_dim)
    lrelu2 = layers.LeakyReLU()(res_stack)
    return lrelu2


def keras_melgan_generator() -> keras.Model:
    """`create_generator` (KERAS_MELGAN) as used at inference: mel frames (None, 80) -> audio
    (256 x frames, 1). Changes: no `MelSpec` layer (at inference it passes its input through; the
    generator's input is the mel spectrogram) and no `addon_layers.WeightNormalization` (a
    tensorflow_addons layer; at inference it is its inner Conv1D with a rescaled kernel)."""
    inp = keras.Input((None, MEL_CHANNELS))
    x = layers.Conv1D(512, 7, padding="same")(inp)
    x = layers.LeakyReLU()(x)
    x = _melgan_conv_block(x, 256, 8)
    x = _melgan_conv_block(x, 128, 8)
    x = _melgan_conv_block(x, 64, 2)
    x = _melgan_conv_block(x, 32, 2)
    x = layers.Conv1D(1, 7, padding="same", activation="tanh")(x)
    return keras.Model(inp, x)


# --- 15-18: pure decoders ------------------------------------------------------------------------

KERAS_VAE = "https://keras.io/examples/generative/vae/"
TF_AUTOENCODER = "https://www.tensorflow.org/tutorials/generative/autoencoder"
KERAS_VQ_VAE = "https://keras.io/examples/generative/vq_vae/"


def keras_vae_decoder(latent_dim: int = 2) -> keras.Model:
    """The decoder of "Variational AutoEncoder" (KERAS_VAE): (2,) -> 28x28x1."""
    latent_inputs = keras.Input(shape=(latent_dim,))
    x = layers.Dense(7 * 7 * 64, activation="relu")(latent_inputs)
    x = layers.Reshape((7, 7, 64))(x)
    x = layers.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
    decoder_outputs = layers.Conv2DTranspose(1, 3, activation="sigmoid", padding="same")(x)
    return keras.Model(latent_inputs, decoder_outputs, name="decoder")


def _tf_denoise_encoder() -> keras.Sequential:
    return keras.Sequential(
        [
            layers.Input(shape=(28, 28, 1)),
            layers.Conv2D(16, (3, 3), activation="relu", padding="same", strides=2),
            layers.Conv2D(8, (3, 3), activation="relu", padding="same", strides=2),
        ]
    )


def _tf_denoise_decoder() -> keras.Sequential:
    return keras.Sequential(
        [
            layers.Conv2DTranspose(8, kernel_size=3, strides=2, activation="relu", padding="same"),
            layers.Conv2DTranspose(16, kernel_size=3, strides=2, activation="relu", padding="same"),
            layers.Conv2D(1, kernel_size=(3, 3), activation="sigmoid", padding="same"),
        ]
    )


def tf_denoise_decoder() -> keras.Model:
    """`Denoise.decoder` of "Intro to Autoencoders" (TF_AUTOENCODER): the Sequential as the source
    writes it (no Input), built for the encoder's output (7, 7, 8) as its first call builds it."""
    decoder = _tf_denoise_decoder()
    decoder.build((None, 7, 7, 8))
    return decoder


def tf_denoise_autoencoder() -> keras.Model:
    """`Denoise` of "Intro to Autoencoders" (TF_AUTOENCODER) as a Functional model: its `call`
    (`decoder(encoder(x))`) with the two Sequentials nested as the source nests them."""
    encoder = _tf_denoise_encoder()
    decoder = _tf_denoise_decoder()
    x = keras.Input(shape=(28, 28, 1))
    return keras.Model(x, decoder(encoder(x)), name="denoise")


def keras_vq_vae_decoder(latent_dim: int = 16) -> keras.Model:
    """`get_decoder(latent_dim=16)` of "Vector-Quantized Variational Autoencoders" (KERAS_VQ_VAE):
    the (7, 7, 16) quantized latents -> 28x28x1. (The source reads the input shape off
    `get_encoder(latent_dim).output.shape[1:]`, which is (7, 7, latent_dim).)"""
    latent_inputs = keras.Input(shape=(7, 7, latent_dim))
    x = layers.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(latent_inputs)
    x = layers.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
    decoder_outputs = layers.Conv2DTranspose(1, 3, padding="same")(x)
    return keras.Model(latent_inputs, decoder_outputs, name="decoder")


# --- the registry ------------------------------------------------------------------------------

# name: (builder, input shapes without the batch axis, source)
_TABLE: dict[str, tuple[Callable[[], keras.Model], tuple[tuple[int, ...], ...], str]] = {
    "tf_dcgan_generator": (tf_dcgan_generator, ((100,),), TF_DCGAN),
    "tf_dcgan_discriminator": (tf_dcgan_discriminator, ((28, 28, 1),), TF_DCGAN),
    "tf_cvae_encoder": (tf_cvae_encoder, ((28, 28, 1),), TF_CVAE),
    "tf_cvae_decoder": (tf_cvae_decoder, ((CVAE_LATENT_DIM,),), TF_CVAE),
    "tf_cvae_functional": (tf_cvae_functional, ((28, 28, 1),), TF_CVAE),
    "tf_pix2pix_generator": (tf_pix2pix_generator, ((256, 256, 3),), TF_PIX2PIX),
    "tf_pix2pix_discriminator": (tf_pix2pix_discriminator, ((256, 256, 3), (256, 256, 3)), TF_PIX2PIX),
    "tf_segmentation_unet": (tf_segmentation_unet, ((128, 128, 3),), TF_SEGMENTATION),
    "keras_denoising_autoencoder": (keras_denoising_autoencoder, ((28, 28, 1),), KERAS_DENOISING_AE),
    "keras_oxford_pets_unet": (keras_oxford_pets_unet, (OXFORD_PETS_IMG_SIZE + (3,),), KERAS_OXFORD_PETS),
    "keras_conditional_gan_generator": (keras_conditional_gan_generator, ((138,),), KERAS_CONDITIONAL_GAN),
    "keras_dcgan_faces_generator": (keras_dcgan_faces_generator, ((128,),), KERAS_DCGAN_FACES),
    "keras_timeseries_autoencoder": (
        keras_timeseries_autoencoder,
        ((TIMESERIES_STEPS, 1),),
        KERAS_TIMESERIES_AE,
    ),
    "keras_melgan_generator": (keras_melgan_generator, ((MEL_TEST_FRAMES, MEL_CHANNELS),), KERAS_MELGAN),
    "keras_vae_decoder": (keras_vae_decoder, ((2,),), KERAS_VAE),
    "tf_denoise_decoder": (tf_denoise_decoder, ((7, 7, 8),), TF_AUTOENCODER),
    "tf_denoise_autoencoder": (tf_denoise_autoencoder, ((28, 28, 1),), TF_AUTOENCODER),
    "keras_vq_vae_decoder": (keras_vq_vae_decoder, ((7, 7, 16),), KERAS_VQ_VAE),
}
BUILDERS: dict[str, Callable[[], keras.Model]] = {name: row[0] for name, row in _TABLE.items()}
INPUT_SHAPES: dict[str, tuple[tuple[int, ...], ...]] = {name: row[1] for name, row in _TABLE.items()}
SOURCES: dict[str, str] = {name: row[2] for name, row in _TABLE.items()}


# --- building for tests: Keras' initializers skipped, seeded random weights ------------------------


@contextlib.contextmanager
def keras_initializers_skipped() -> Iterator[None]:
    """While this is open, a floating-point variable whose initializer is a Keras `Initializer` is
    made as zeros in numpy instead (no XLA compile); `randomize_weights` overwrites them. The layers
    keep their initializer objects, so configs read as the source wrote them. Other variables (a
    dropout layer's seed state) are made as usual. Reaches into Keras' Variable (3.15); where that
    method is missing, Keras' own initializers run (slower, same results after the overwrite)."""
    variable_class = keras.Variable
    original = getattr(variable_class, "_initialize_with_initializer", None)
    if original is None:
        yield
        return

    def zeros_instead(self: Any, initializer: Any) -> None:
        dtype = str(getattr(self, "_dtype", ""))
        if isinstance(initializer, keras.initializers.Initializer) and dtype.startswith(("float", "bfloat")):
            self._initialize(self._convert_to_tensor(np.zeros(self._shape, dtype=dtype)))
        else:
            original(self, initializer)

    variable_class._initialize_with_initializer = zeros_instead
    try:
        yield
    finally:
        variable_class._initialize_with_initializer = original


def all_layers(model: keras.Layer) -> list[keras.Layer]:
    """Every leaf layer of a model, nested models (Sequential or Functional) walked recursively,
    each layer once, in order."""
    seen: set[int] = set()
    found: list[keras.Layer] = []

    def walk(layer: keras.Layer) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            for inner in layer.layers:
                walk(inner)
        else:
            found.append(layer)

    walk(model)
    return found


_TRANSPOSED = (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)
_DEPTHWISE = (layers.DepthwiseConv1D, layers.DepthwiseConv2D)


def _fan_in(layer: keras.Layer, weight: str, shape: tuple[int, ...]) -> int:
    """How many inputs feed one output through this kernel."""
    if weight == "depthwise_kernel" or isinstance(layer, _DEPTHWISE):
        return math.prod(shape[:-2])  # (*kernel, in, multiplier): one channel each
    if isinstance(layer, _TRANSPOSED):
        # (*kernel, out, in); a stride-s transposed convolution feeds each output from about
        # kernel/s taps per axis
        kernel, strides = shape[:-2], tuple(layer.strides)
        return shape[-1] * max(1, math.prod(kernel) // math.prod(strides))
    return math.prod(shape[:-1])  # Dense (in, out), Conv (*kernel, in, out), pointwise (1, 1, in, out)


def _values(
    rng: np.random.RandomState, layer: keras.Layer, weight: str, shape: tuple[int, ...]
) -> np.ndarray:
    if weight in ("gamma", "moving_variance"):
        return rng.uniform(0.5, 1.5, shape)
    if weight in ("beta", "moving_mean", "bias"):
        return rng.normal(0.0, 0.1, shape)
    if weight.endswith("kernel"):
        return rng.normal(0.0, 1.0 / math.sqrt(_fan_in(layer, weight, shape)), shape)
    raise AssertionError(f"{layer.name} ({type(layer).__name__}): no rule for weight {weight!r}")


def network_seed(name: str) -> int:
    return zlib.crc32(name.encode())


def randomize_weights(model: keras.Model, seed: int) -> None:
    """Set every weight of every layer (nested models walked) with `layer.set_weights`: kernels
    ~ N(0, 1/fan_in), biases ~ N(0, 0.1), BatchNormalization gamma and moving variance ~ U(0.5, 1.5),
    beta and moving mean ~ N(0, 0.1). Seeded: the same seed gives the same weights."""
    rng = np.random.RandomState(seed)
    for layer in all_layers(model):
        current = layer.get_weights()
        if not current:
            continue
        names = [variable.name.split("/")[-1] for variable in layer.weights]
        assert len(names) == len(current), (layer.name, names)
        layer.set_weights(
            [
                _values(rng, layer, weight, value.shape).astype(value.dtype)
                for weight, value in zip(names, current, strict=True)
            ]
        )


def build(name: str) -> keras.Model:
    """The network `name`, ready for tests: built without Keras' initializers, random weights."""
    with keras_initializers_skipped():
        model = BUILDERS[name]()
    randomize_weights(model, network_seed(name))
    return model


def build_subclassed_cvae() -> keras.Model:
    with keras_initializers_skipped():
        model = subclassed_cvae()
    randomize_weights(model, network_seed("subclassed_cvae"))
    return model


NETWORKS: dict[str, Callable[[], keras.Model]] = {name: functools.partial(build, name) for name in BUILDERS}
