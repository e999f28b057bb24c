"""Keras' own Conv*DTranspose test table, as literal data (no Keras import needed).

Transcribed from keras-team/keras `keras/src/layers/convolutional/conv_transpose_test.py`, which
is not shipped in the Keras wheel:

* `CONSISTENCY_1D` is `test_conv1d_transpose_consistency`: `parameterized.product(kernel_size=1..4,
  strides=1..4, padding=["same", "valid"], output_padding=[None, 1, 2, 3, 4])`, minus the cases
  with `output_padding >= strides` (which Keras rejects): exactly 80 cases. Each case runs
  `Conv1DTranspose(filters=1, kernel_size, strides, padding, output_padding, dilation_rate=1)`
  (channels_last, bias zeros) with kernel `arange(1, kernel_size + 1).reshape(kernel_size, 1, 1)`
  on `np.ones((1, 3, 1))`.
* `BASIC_SHAPES` is the ten shape cases of `test_conv{1,2,3}d_transpose_basic`.

Generator note: the expected outputs below were produced once by running the real layers of
Keras 3.15.1 (jax backend, jax 0.10.2, CPU, float32); all values are small integers, so they are
exact. They also equal what Keras' own test-file numpy reference (`np_conv1d_transpose`)
computes for each case. Do not edit by hand; regenerate with Keras if the table must change.
"""

from __future__ import annotations

from typing import NamedTuple


class ConsistencyCase(NamedTuple):
    """One `test_conv1d_transpose_consistency` case and the Keras output for it."""

    kernel_size: int
    strides: int
    padding: str  # "same" | "valid"
    output_padding: int | None
    expected: tuple[float, ...]  # flattened (1, L, 1) output, channels_last


class ShapeCase(NamedTuple):
    """One `test_conv{1,2,3}d_transpose_basic` case: layer arguments and shapes (batch included)."""

    layer: str  # Keras layer class name
    rank: int  # number of spatial axes
    filters: int
    kernel_size: int | tuple[int, ...]
    strides: int | tuple[int, ...]
    padding: str
    output_padding: int | None
    data_format: str
    dilation_rate: int | tuple[int, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


CONSISTENCY_INPUT_SHAPE: tuple[int, int, int] = (1, 3, 1)
"""Input of every consistency case: `np.ones(CONSISTENCY_INPUT_SHAPE)`, channels_last."""


def consistency_kernel(kernel_size: int) -> tuple[float, ...]:
    """The consistency test's kernel taps `1, 2, ..., kernel_size` (reshape to `(k, 1, 1)`)."""
    return tuple(float(v) for v in range(1, kernel_size + 1))


# (kernel_size, strides, padding, output_padding, expected flat output)
_CONSISTENCY_ROWS: tuple[tuple[int, int, str, int | None, tuple[float, ...]], ...] = (
    (1, 1, "same", None, (1.0, 1.0, 1.0)),
    (1, 1, "valid", None, (1.0, 1.0, 1.0)),
    (1, 2, "same", None, (1.0, 0.0, 1.0, 0.0, 1.0, 0.0)),
    (1, 2, "same", 1, (1.0, 0.0, 1.0, 0.0, 1.0, 0.0)),
    (1, 2, "valid", None, (1.0, 0.0, 1.0, 0.0, 1.0, 0.0)),
    (1, 2, "valid", 1, (1.0, 0.0, 1.0, 0.0, 1.0, 0.0)),
    (1, 3, "same", None, (1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0)),
    (1, 3, "same", 1, (1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0)),
    (1, 3, "same", 2, (1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0)),
    (1, 3, "valid", None, (1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0)),
    (1, 3, "valid", 1, (1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0)),
    (1, 3, "valid", 2, (1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0)),
    (1, 4, "same", None, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)),
    (1, 4, "same", 1, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)),
    (1, 4, "same", 2, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0)),
    (1, 4, "same", 3, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)),
    (1, 4, "valid", None, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)),
    (1, 4, "valid", 1, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)),
    (1, 4, "valid", 2, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0)),
    (1, 4, "valid", 3, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)),
    (2, 1, "same", None, (1.0, 3.0, 3.0)),
    (2, 1, "valid", None, (1.0, 3.0, 3.0, 2.0)),
    (2, 2, "same", None, (1.0, 2.0, 1.0, 2.0, 1.0, 2.0)),
    (2, 2, "same", 1, (1.0, 2.0, 1.0, 2.0, 1.0)),
    (2, 2, "valid", None, (1.0, 2.0, 1.0, 2.0, 1.0, 2.0)),
    (2, 2, "valid", 1, (1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 0.0)),
    (2, 3, "same", None, (1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0)),
    (2, 3, "same", 1, (1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0)),
    (2, 3, "same", 2, (1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0)),
    (2, 3, "valid", None, (1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0)),
    (2, 3, "valid", 1, (1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0)),
    (2, 3, "valid", 2, (1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 0.0)),
    (2, 4, "same", None, (1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0)),
    (2, 4, "same", 1, (1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 1.0)),
    (2, 4, "same", 2, (1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 1.0, 2.0)),
    (2, 4, "same", 3, (1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 0.0)),
    (2, 4, "valid", None, (1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0)),
    (2, 4, "valid", 1, (1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 0.0)),
    (2, 4, "valid", 2, (1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0)),
    (2, 4, "valid", 3, (1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0)),
    (3, 1, "same", None, (3.0, 6.0, 5.0)),
    (3, 1, "valid", None, (1.0, 3.0, 6.0, 5.0, 3.0)),
    (3, 2, "same", None, (1.0, 2.0, 4.0, 2.0, 4.0, 2.0)),
    (3, 2, "same", 1, (1.0, 2.0, 4.0, 2.0, 4.0, 2.0)),
    (3, 2, "valid", None, (1.0, 2.0, 4.0, 2.0, 4.0, 2.0, 3.0)),
    (3, 2, "valid", 1, (1.0, 2.0, 4.0, 2.0, 4.0, 2.0, 3.0, 0.0)),
    (3, 3, "same", None, (1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0)),
    (3, 3, "same", 1, (1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0)),
    (3, 3, "same", 2, (1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0)),
    (3, 3, "valid", None, (1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0)),
    (3, 3, "valid", 1, (1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 0.0)),
    (3, 3, "valid", 2, (1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 0.0, 0.0)),
    (3, 4, "same", None, (1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0)),
    (3, 4, "same", 1, (1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0)),
    (3, 4, "same", 2, (1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0)),
    (3, 4, "same", 3, (1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0)),
    (3, 4, "valid", None, (1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0)),
    (3, 4, "valid", 1, (1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0)),
    (3, 4, "valid", 2, (1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0)),
    (3, 4, "valid", 3, (1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0)),
    (4, 1, "same", None, (3.0, 6.0, 9.0)),
    (4, 1, "valid", None, (1.0, 3.0, 6.0, 9.0, 7.0, 4.0)),
    (4, 2, "same", None, (2.0, 4.0, 6.0, 4.0, 6.0, 3.0)),
    (4, 2, "same", 1, (2.0, 4.0, 6.0, 4.0, 6.0)),
    (4, 2, "valid", None, (1.0, 2.0, 4.0, 6.0, 4.0, 6.0, 3.0, 4.0)),
    (4, 2, "valid", 1, (1.0, 2.0, 4.0, 6.0, 4.0, 6.0, 3.0, 4.0, 0.0)),
    (4, 3, "same", None, (1.0, 2.0, 3.0, 5.0, 2.0, 3.0, 5.0, 2.0, 3.0)),
    (4, 3, "same", 1, (2.0, 3.0, 5.0, 2.0, 3.0, 5.0, 2.0)),
    (4, 3, "same", 2, (2.0, 3.0, 5.0, 2.0, 3.0, 5.0, 2.0, 3.0)),
    (4, 3, "valid", None, (1.0, 2.0, 3.0, 5.0, 2.0, 3.0, 5.0, 2.0, 3.0, 4.0)),
    (4, 3, "valid", 1, (1.0, 2.0, 3.0, 5.0, 2.0, 3.0, 5.0, 2.0, 3.0, 4.0, 0.0)),
    (4, 3, "valid", 2, (1.0, 2.0, 3.0, 5.0, 2.0, 3.0, 5.0, 2.0, 3.0, 4.0, 0.0, 0.0)),
    (4, 4, "same", None, (1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0)),
    (4, 4, "same", 1, (2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0)),
    (4, 4, "same", 2, (2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0)),
    (4, 4, "same", 3, (1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0)),
    (4, 4, "valid", None, (1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0)),
    (4, 4, "valid", 1, (1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 0.0)),
    (4, 4, "valid", 2, (1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 0.0, 0.0)),
    (4, 4, "valid", 3, (1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0)),
)

CONSISTENCY_1D: tuple[ConsistencyCase, ...] = tuple(ConsistencyCase(*row) for row in _CONSISTENCY_ROWS)

BASIC_SHAPES: tuple[ShapeCase, ...] = (
    ShapeCase(
        layer="Conv1DTranspose",
        rank=1,
        filters=5,
        kernel_size=2,
        strides=2,
        padding="valid",
        output_padding=None,
        data_format="channels_last",
        dilation_rate=1,
        input_shape=(2, 8, 4),
        output_shape=(2, 16, 5),
    ),
    ShapeCase(
        layer="Conv1DTranspose",
        rank=1,
        filters=6,
        kernel_size=2,
        strides=3,
        padding="same",
        output_padding=2,
        data_format="channels_last",
        dilation_rate=(1,),
        input_shape=(2, 8, 4),
        output_shape=(2, 23, 6),
    ),
    ShapeCase(
        layer="Conv1DTranspose",
        rank=1,
        filters=6,
        kernel_size=(2,),
        strides=(2,),
        padding="valid",
        output_padding=None,
        data_format="channels_last",
        dilation_rate=1,
        input_shape=(2, 8, 4),
        output_shape=(2, 16, 6),
    ),
    ShapeCase(
        layer="Conv2DTranspose",
        rank=2,
        filters=5,
        kernel_size=2,
        strides=2,
        padding="valid",
        output_padding=None,
        data_format="channels_last",
        dilation_rate=1,
        input_shape=(2, 8, 8, 4),
        output_shape=(2, 16, 16, 5),
    ),
    ShapeCase(
        layer="Conv2DTranspose",
        rank=2,
        filters=6,
        kernel_size=2,
        strides=3,
        padding="same",
        output_padding=2,
        data_format="channels_last",
        dilation_rate=(1, 1),
        input_shape=(2, 8, 8, 4),
        output_shape=(2, 23, 23, 6),
    ),
    ShapeCase(
        layer="Conv2DTranspose",
        rank=2,
        filters=6,
        kernel_size=(2, 3),
        strides=(2, 1),
        padding="valid",
        output_padding=None,
        data_format="channels_first",
        dilation_rate=(1, 1),
        input_shape=(2, 4, 8, 8),
        output_shape=(2, 6, 16, 10),
    ),
    ShapeCase(
        layer="Conv2DTranspose",
        rank=2,
        filters=2,
        kernel_size=(7, 7),
        strides=(16, 16),
        padding="valid",
        output_padding=None,
        data_format="channels_last",
        dilation_rate=(1, 1),
        input_shape=(1, 14, 14, 2),
        output_shape=(1, 224, 224, 2),
    ),
    ShapeCase(
        layer="Conv3DTranspose",
        rank=3,
        filters=5,
        kernel_size=2,
        strides=2,
        padding="valid",
        output_padding=None,
        data_format="channels_last",
        dilation_rate=1,
        input_shape=(2, 8, 8, 8, 4),
        output_shape=(2, 16, 16, 16, 5),
    ),
    ShapeCase(
        layer="Conv3DTranspose",
        rank=3,
        filters=6,
        kernel_size=2,
        strides=3,
        padding="same",
        output_padding=2,
        data_format="channels_last",
        dilation_rate=(1, 1, 1),
        input_shape=(2, 8, 8, 8, 4),
        output_shape=(2, 23, 23, 23, 6),
    ),
    ShapeCase(
        layer="Conv3DTranspose",
        rank=3,
        filters=6,
        kernel_size=(2, 2, 3),
        strides=(2, 1, 2),
        padding="valid",
        output_padding=None,
        data_format="channels_last",
        dilation_rate=(1, 1, 1),
        input_shape=(2, 8, 8, 8, 4),
        output_shape=(2, 16, 9, 17, 6),
    ),
)
