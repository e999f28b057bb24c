"""Independent float64 numpy reference for Keras 3 `Conv{1,2,3}DTranspose`, its activations, and
the other layers of a saved Keras model (convolutions, pooling, normalizations, merges, axes).

The oracle of `deconvc check` and of the test suite (where it is itself proven against real
Keras). It imports nothing from the compiler and is written from the definitions, not from
either implementation:

* A transposed convolution *scatters* every input pixel, multiplied by the (dilated) kernel,
  into a "full" buffer of length `(i - 1) * s + ke` per axis (`ke = (k - 1) * d + 1`). Keras then
  keeps a window of `L` samples of that buffer (`L` from `keras_output_length`), starting at
  `keras_crop_start`. When `L` reaches past the end of the buffer (`valid` with `k < s`, or an
  `output_padding`), the missing tail is zeros, and the bias is added there too.
* Activations follow the Keras 3.15.1 jax-backend formulas (keras/src/activations/activations.py,
  keras/src/backend/jax/nn.py, jax.nn), in float64, with Keras' default arguments.
* A forward convolution or pooling window reads the input padded the Keras (lax) way, one
  strided view per kernel tap; normalizations follow keras/src/ops/nn.py and the layers' `call`.

Everything is computed in float64 so that it can judge float32 results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

PADDINGS = ("valid", "same")
DATA_FORMATS = ("channels_last", "channels_first")

# SELU constants (Klambauer et al. 2017), as written in jax.nn.selu.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


# --------------------------------------------------------------------------------------------
# Geometry (one spatial axis at a time)
# --------------------------------------------------------------------------------------------


def dilated_kernel_extent(k: int, d: int) -> int:
    """Number of samples a kernel of `k` taps spans at dilation `d`: `(k - 1) * d + 1`."""
    return (k - 1) * d + 1


def full_length(i: int, k: int, s: int, d: int) -> int:
    """Length of the un-cropped scatter buffer: the last input sample lands at `(i - 1) * s`,
    and its kernel footprint reaches `ke - 1` further."""
    return (i - 1) * s + dilated_kernel_extent(k, d)


def keras_output_length(i: int, k: int, s: int, d: int, padding: str, op: int | None) -> int:
    """Keras' output length along one axis.

    `op` is Keras' `output_padding` for this axis; `None` is *not* 0: it lets Keras pick the
    length (`valid` -> `(i-1)*s + max(ke, s)`, `same` -> `i*s`). With an explicit `op`, `valid`
    grows the full buffer by `op` and `same` gives `(i-1)*s + ke%2 + op`, which can be 0.
    """
    _check_padding(padding)
    ke = dilated_kernel_extent(k, d)
    if padding == "valid":
        return (i - 1) * s + (max(ke, s) if op is None else ke + op)
    return i * s if op is None else (i - 1) * s + ke % 2 + op


def keras_crop_start(k: int, s: int, d: int, padding: str, op: int | None) -> int:
    """Index in the full scatter buffer of Keras' first output sample along one axis.

    Keras (jax backend) runs the transposed convolution as a stride-dilated *forward*
    convolution of the input padded by `(left, right)` zeros. With `left = ke - 1` the result
    would start exactly at the full buffer's first sample; every unit of left padding less
    shifts the window one sample to the right, so the crop start is `ke - 1 - left`.

    Keras' `left`: `valid` always pads `ke - 1` (no crop at the start). `same` first works out
    the total padding `pad_len` that yields the Keras length (`s + ke - 2` when `op` is None,
    `ke + ke%2 - 2 + op` otherwise), puts the larger half on the left, and caps it at `ke - 1`.
    """
    _check_padding(padding)
    ke = dilated_kernel_extent(k, d)
    if padding == "valid":
        left = ke - 1
    else:
        pad_len = s + ke - 2 if op is None else ke + ke % 2 - 2 + op
        left = min(-(-pad_len // 2), ke - 1)  # ceil(pad_len / 2), capped
    return ke - 1 - left


def _check_padding(padding: str) -> None:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS} (lowercase), got {padding!r}")


def _check_data_format(data_format: str) -> None:
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")


# --------------------------------------------------------------------------------------------
# Transposed convolution
# --------------------------------------------------------------------------------------------


def conv_transpose(
    x: ArrayLike,
    kernel: ArrayLike,
    bias: ArrayLike | None,
    *,
    strides: Sequence[int],
    padding: str,
    output_padding: Sequence[int] | None,
    dilation_rate: Sequence[int],
    data_format: str,
) -> FloatArray:
    """Keras `ConvNDTranspose` (without activation) in float64, from the scatter-add definition.

    Args:
        x: input in Keras layout: `(N, *spatial, C)` for channels_last, `(N, C, *spatial)` for
            channels_first; 1, 2 or 3 spatial axes.
        kernel: Keras layout `kernel_size + (filters, C)`; no spatial flip is involved.
        bias: `(filters,)` or None.
        strides, dilation_rate: one int per spatial axis.
        padding: "valid" or "same" (lowercase).
        output_padding: None (Keras' default) or one int per spatial axis.
        data_format: "channels_last" or "channels_first".

    Returns:
        The layer output in the same layout as `x`, float64.
    """
    _check_padding(padding)
    _check_data_format(data_format)
    x64 = np.asarray(x, dtype=np.float64)
    w64 = np.asarray(kernel, dtype=np.float64)
    rank = w64.ndim - 2
    if rank not in (1, 2, 3) or x64.ndim != rank + 2:
        raise ValueError(f"kernel rank {w64.ndim} and input rank {x64.ndim} do not match 1-3D")
    per_axis_ops: Sequence[int | None] = (None,) * rank if output_padding is None else tuple(output_padding)
    for name, values in (
        ("strides", strides),
        ("dilation_rate", dilation_rate),
        ("output_padding", per_axis_ops),
    ):
        if len(values) != rank:
            raise ValueError(f"{name} needs {rank} entries, got {values!r}")

    x_cl = _to_channels_last(x64, data_format)
    kernel_size = w64.shape[:rank]
    if x_cl.shape[-1] != w64.shape[-1]:
        raise ValueError(f"input has {x_cl.shape[-1]} channels, kernel expects {w64.shape[-1]}")

    full = _scatter_full(x_cl, w64, tuple(strides), tuple(dilation_rate))
    in_sizes = x_cl.shape[1:-1]
    lengths = [
        keras_output_length(i, k, s, d, padding, op)
        for i, k, s, d, op in zip(in_sizes, kernel_size, strides, dilation_rate, per_axis_ops, strict=True)
    ]
    starts = [
        keras_crop_start(k, s, d, padding, op)
        for k, s, d, op in zip(kernel_size, strides, dilation_rate, per_axis_ops, strict=True)
    ]
    out = _window(full, starts, lengths)
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)  # broadcasts over the trailing channel axis
    return _from_channels_last(out, data_format)


def _to_channels_last(x: FloatArray, data_format: str) -> FloatArray:
    """Move the channel axis to the end (no-op for channels_last)."""
    return x if data_format == "channels_last" else np.moveaxis(x, 1, -1)


def _from_channels_last(x: FloatArray, data_format: str) -> FloatArray:
    """Inverse of `_to_channels_last`; returns a contiguous array."""
    y = x if data_format == "channels_last" else np.moveaxis(x, -1, 1)
    return np.ascontiguousarray(y)


def _scatter_full(
    x_cl: FloatArray, kernel: FloatArray, strides: tuple[int, ...], dilations: tuple[int, ...]
) -> FloatArray:
    """Un-cropped transposed convolution of a channels_last input, shape `(N, *full, filters)`.

    Definition: input sample `j` (per axis) times kernel tap `t` lands at `j * s + t * d`.
    For a fixed tap, the input grid maps onto a strided slice of the buffer, so one matmul
    over channels per tap does all pixels at once.
    """
    rank = kernel.ndim - 2
    kernel_size = kernel.shape[:rank]
    filters = kernel.shape[rank]
    in_sizes = x_cl.shape[1:-1]
    full_shape = tuple(
        full_length(i, k, s, d) for i, k, s, d in zip(in_sizes, kernel_size, strides, dilations, strict=True)
    )
    buf = np.zeros((x_cl.shape[0], *full_shape, filters), dtype=np.float64)
    for tap in np.ndindex(*kernel_size):
        contribution = x_cl @ kernel[tap].T  # (N, *spatial, C) @ (C, filters)
        region = tuple(
            slice(t * d, t * d + (i - 1) * s + 1, s)
            for t, d, i, s in zip(tap, dilations, in_sizes, strides, strict=True)
        )
        buf[(slice(None), *region, slice(None))] += contribution
    return buf


def _window(full: FloatArray, starts: Sequence[int], lengths: Sequence[int]) -> FloatArray:
    """Samples `[start, start + length)` of each spatial axis of `full`, zeros beyond its end."""
    out = np.zeros((full.shape[0], *lengths, full.shape[-1]), dtype=np.float64)
    src: list[slice] = []
    dst: list[slice] = []
    for start, length, size in zip(starts, lengths, full.shape[1:-1], strict=True):
        kept = max(0, min(length, size - start))
        src.append(slice(start, start + kept))
        dst.append(slice(0, kept))
    out[(slice(None), *dst, slice(None))] = full[(slice(None), *src, slice(None))]
    return out


# --------------------------------------------------------------------------------------------
# Activations (Keras 3 string names)
# --------------------------------------------------------------------------------------------


def _erfc(x: FloatArray) -> FloatArray:
    """Complementary error function, elementwise (math.erfc: exact in the tails, no scipy)."""
    return np.asarray(_ERFC(x), dtype=np.float64)


_ERFC = np.vectorize(math.erfc, otypes=[np.float64])


def _sigmoid(x: FloatArray) -> FloatArray:
    """Logistic function without overflow: both branches use `exp(-|x|) <= 1`."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(x: FloatArray) -> FloatArray:
    """`log(1 + exp(x))`, computed as `logaddexp(x, 0)` (jax.nn.softplus)."""
    return np.logaddexp(x, 0.0)


def _exponential(x: FloatArray) -> FloatArray:
    """`exp(x)`; overflow to +inf is the intended result (as in float32 Keras), not an error."""
    with np.errstate(over="ignore"):
        return np.exp(x)


def _elu(x: FloatArray, alpha: float = 1.0) -> FloatArray:
    """`x` for `x > 0`, else `alpha * (exp(x) - 1)` (expm1 of the clipped value: no overflow)."""
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def _celu(x: FloatArray, alpha: float = 1.0) -> FloatArray:
    """`max(x, 0) + alpha * expm1(min(x, 0) / alpha)` (jax.nn.celu, Keras default alpha 1)."""
    return np.maximum(x, 0.0) + alpha * np.expm1(np.minimum(x, 0.0) / alpha)


def _gelu_exact(x: FloatArray) -> FloatArray:
    """Exact GELU, `x * Phi(x) = 0.5 * x * erfc(-x / sqrt(2))`: Keras' activation uses
    `approximate=False` (the backend op's own default, tanh form, is *not* what the string
    activation uses). erfc keeps the far negative tail accurate."""
    return 0.5 * x * _erfc(-x / math.sqrt(2.0))


def _gelu_tanh(x: FloatArray) -> FloatArray:
    """keras.ops.gelu's default (approximate=True): `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _hard_sigmoid(x: FloatArray) -> FloatArray:
    """Keras 3 hard sigmoid `clip(x / 6 + 0.5, 0, 1)` (Keras 2 used slope 0.2)."""
    return np.clip(x / 6.0 + 0.5, 0.0, 1.0)


def _sparse_plus(x: FloatArray) -> FloatArray:
    """0 for `x <= -1`, `x` for `x >= 1`, `(x + 1)^2 / 4` in between."""
    return np.where(x <= -1.0, 0.0, np.where(x >= 1.0, x, (x + 1.0) ** 2 / 4.0))


def _squareplus(x: FloatArray, b: float = 4.0) -> FloatArray:
    """`(x + sqrt(x^2 + b)) / 2`, Keras default `b = 4`."""
    return (x + np.sqrt(x * x + b)) / 2.0


def _softmax_last(x: FloatArray) -> FloatArray:
    """Softmax over the last axis, shifted by the max for stability."""
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return np.asarray(e / np.sum(e, axis=-1, keepdims=True), dtype=np.float64)


def _log_softmax_last(x: FloatArray) -> FloatArray:
    """`x - logsumexp(x)` over the last axis."""
    shifted = x - np.max(x, axis=-1, keepdims=True)
    log_sum = np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
    return np.asarray(shifted - log_sum, dtype=np.float64)


def _glu_last(x: FloatArray) -> FloatArray:
    """Gated linear unit over the last axis: first half times sigmoid of the second half."""
    n = x.shape[-1]
    if n % 2:
        raise ValueError(f"glu needs an even size along axis -1, got {n}")
    return x[..., : n // 2] * _sigmoid(x[..., n // 2 :])


def _sparsemax_support(x: FloatArray) -> tuple[FloatArray, FloatArray, NDArray[np.int64]]:
    """Shared first half of sparsemax over the last axis.

    Returns the values sorted in descending order `z`, their running sums `c`, and the support
    size `k = #{j : 1 + j * z_j > c_j}` (1-based `j`; always >= 1) with a trailing axis kept.
    """
    z = -np.sort(-x, axis=-1)
    c = np.cumsum(z, axis=-1)
    j = np.arange(1, x.shape[-1] + 1, dtype=np.float64)
    in_support = 1.0 + j * z > c
    k = np.sum(in_support, axis=-1, keepdims=True).astype(np.int64)
    return z, c, k


def sparsemax_exact(x: ArrayLike) -> FloatArray:
    """Sparsemax (Martins & Astudillo 2016) over the last axis: the Euclidean projection onto
    the probability simplex, `max(x - tau, 0)` with `tau = (c_k - 1) / k`. Rows sum to 1.

    This is what Keras computes after keras-team/keras#23469 (fix for #23425), *not* what the
    pinned Keras 3.15.1 computes; see `sparsemax_keras_3_15`.
    """
    z = np.asarray(x, dtype=np.float64)
    _, c, k = _sparsemax_support(z)
    tau = (np.take_along_axis(c, k - 1, axis=-1) - 1.0) / k
    return np.maximum(z - tau, 0.0)


def sparsemax_keras_3_15(x: ArrayLike) -> FloatArray:
    """Keras 3.15.1's sparsemax over the last axis, bug included (keras-team/keras#23425).

    Every 3.15.1 backend sets `tau = (sum_{j <= k} c_j - 1) / k`: the sum of the running sums
    over the support instead of the k-th running sum. It agrees with `sparsemax_exact` only
    when the support has one element; otherwise rows no longer sum to 1 (e.g. [1, .5, 0] gives
    [.25, 0, 0] instead of [.75, .25, 0]).
    """
    z = np.asarray(x, dtype=np.float64)
    _, c, k = _sparsemax_support(z)
    j = np.arange(1, z.shape[-1] + 1)
    summed = np.sum(np.where(j <= k, c, 0.0), axis=-1, keepdims=True)
    tau = (summed - 1.0) / k
    return np.asarray(np.maximum(z - tau, 0.0), dtype=np.float64)


_ELEMENTWISE: dict[str, Callable[[FloatArray], FloatArray]] = {
    "celu": _celu,
    "elu": _elu,
    "exponential": _exponential,
    "gelu": _gelu_exact,
    "gelu_tanh": _gelu_tanh,
    "hard_shrink": lambda x: np.where(np.abs(x) > 0.5, x, 0.0),
    "hard_sigmoid": _hard_sigmoid,
    "hard_silu": lambda x: x * _hard_sigmoid(x),
    "hard_swish": lambda x: x * _hard_sigmoid(x),  # Keras alias of hard_silu
    "hard_tanh": lambda x: np.clip(x, -1.0, 1.0),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.2 * x),  # Keras default slope 0.2
    "linear": lambda x: x,
    "log_sigmoid": lambda x: -_softplus(-x),
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "selu": lambda x: SELU_SCALE * _elu(x, SELU_ALPHA),
    "sigmoid": _sigmoid,
    "silu": lambda x: x * _sigmoid(x),
    "soft_shrink": lambda x: np.where(x > 0.5, x - 0.5, np.where(x < -0.5, x + 0.5, 0.0)),
    "softplus": _softplus,
    "softsign": lambda x: x / (np.abs(x) + 1.0),
    "sparse_plus": _sparse_plus,
    "sparse_sigmoid": lambda x: 0.5 * np.clip(x + 1.0, 0.0, 2.0),
    "squareplus": _squareplus,
    "swish": lambda x: x * _sigmoid(x),  # Keras alias of silu
    "tanh": np.tanh,
    "tanh_shrink": lambda x: x - np.tanh(x),
}

# Activations that act along Keras axis -1 (channels for channels_last, the last spatial axis
# for channels_first).
_ALONG_LAST_AXIS: dict[str, Callable[[FloatArray], FloatArray]] = {
    "glu": _glu_last,
    "log_softmax": _log_softmax_last,
    "softmax": _softmax_last,
    "sparsemax": sparsemax_keras_3_15,
}

_OP_ONLY = {"gelu_tanh"}  # keras.ops.gelu's default: reached through that op, not an activation string
ACTIVATION_NAMES: tuple[str, ...] = tuple(sorted({**_ELEMENTWISE, **_ALONG_LAST_AXIS}.keys() - _OP_ONLY))
"""The 31 Keras 3 activation strings this reference (and the compiler) support."""

AXIS_ACTIVATIONS: tuple[str, ...] = tuple(sorted(_ALONG_LAST_AXIS))
"""Activations that reduce along Keras axis -1 instead of acting elementwise."""


def activation(name: str, x: ArrayLike, data_format: str, *, exact_sparsemax: bool = False) -> FloatArray:
    """Apply the Keras 3 activation called `name` to a Keras-layout tensor, in float64.

    `data_format` is documentation only: the axis-based activations (softmax, log_softmax, glu,
    sparsemax) always use axis -1 of the Keras-layout tensor, which is the channel axis for
    channels_last and the last spatial axis for channels_first; `glu` halves that axis.

    `sparsemax` reproduces pinned Keras 3.15.1 by default (see `sparsemax_keras_3_15`); pass
    `exact_sparsemax=True` for the true simplex projection that later Keras computes.
    """
    _check_data_format(data_format)
    x64 = np.asarray(x, dtype=np.float64)
    if name == "sparsemax" and exact_sparsemax:
        return sparsemax_exact(x64)
    fn = _ELEMENTWISE.get(name) or _ALONG_LAST_AXIS.get(name)
    if fn is None:
        raise ValueError(f"unknown Keras activation {name!r}; known: {', '.join(ACTIVATION_NAMES)}")
    return np.asarray(fn(x64), dtype=np.float64)


def layer(
    x: ArrayLike,
    kernel: ArrayLike,
    bias: ArrayLike | None,
    *,
    activation_name: str | None = None,
    **conv_args: Any,
) -> FloatArray:
    """A whole Keras conv-transpose layer: `conv_transpose` (+ bias) then the activation.

    `conv_args` are `conv_transpose`'s keyword arguments; `activation_name` None means linear.
    """
    y = conv_transpose(x, kernel, bias, **conv_args)
    if activation_name is None:
        return y
    return activation(activation_name, y, conv_args["data_format"])


# --------------------------------------------------------------------------------------------
# The other layers of a saved Keras model (inference semantics, Keras layout in and out)
# --------------------------------------------------------------------------------------------


def dense(x: ArrayLike, kernel: ArrayLike, bias: ArrayLike | None, activation_name: str) -> FloatArray:
    """Keras Dense: the last axis times `kernel (in, units)`, plus the bias, then the activation."""
    y = np.asarray(x, dtype=np.float64) @ np.asarray(kernel, dtype=np.float64)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return activation(activation_name, y, "channels_last")


def _along(axis: int, ndim: int, values: ArrayLike) -> FloatArray:
    """A per-channel vector shaped to broadcast along `axis` of an `ndim`-D tensor."""
    shape = [1] * ndim
    shape[axis] = -1
    return np.asarray(values, dtype=np.float64).reshape(shape)


def batch_normalization(
    x: ArrayLike,
    axis: int,
    mean: ArrayLike,
    variance: ArrayLike,
    gamma: ArrayLike | None,
    beta: ArrayLike | None,
    epsilon: float,
) -> FloatArray:
    """Keras BatchNormalization at inference: `(x - mean) / sqrt(variance + epsilon) * gamma + beta`."""
    x64 = np.asarray(x, dtype=np.float64)
    y = (x64 - _along(axis, x64.ndim, mean)) / np.sqrt(_along(axis, x64.ndim, variance) + epsilon)
    if gamma is not None:
        y = y * _along(axis, x64.ndim, gamma)
    if beta is not None:
        y = y + _along(axis, x64.ndim, beta)
    return y


def relu(x: ArrayLike, negative_slope: float, max_value: float | None, threshold: float) -> FloatArray:
    """Keras `activations.relu(x, negative_slope, max_value, threshold)` (the ReLU layer)."""
    x64 = np.asarray(x, dtype=np.float64)
    if negative_slope != 0 and max_value is None and threshold == 0:
        return leaky_relu(x64, negative_slope)
    y = np.where(x64 > threshold, x64, 0.0) if threshold != 0 else np.maximum(x64, 0.0)
    if max_value is not None:
        y = np.clip(y, 0.0, max_value)
    if negative_slope != 0:
        y = y - negative_slope * np.maximum(threshold - x64, 0.0)
    return np.asarray(y, dtype=np.float64)


def leaky_relu(x: ArrayLike, negative_slope: float) -> FloatArray:
    x64 = np.asarray(x, dtype=np.float64)
    return np.where(x64 >= 0, x64, negative_slope * x64)


def elu(x: ArrayLike, alpha: float) -> FloatArray:
    x64 = np.asarray(x, dtype=np.float64)
    return np.where(x64 > 0, x64, alpha * np.expm1(np.minimum(x64, 0.0)))


def prelu(x: ArrayLike, alpha: ArrayLike) -> FloatArray:
    """Keras PReLU: `relu(x) - alpha * relu(-x)`, alpha shaped like one sample (1 on shared axes)."""
    x64 = np.asarray(x, dtype=np.float64)
    return np.maximum(x64, 0.0) - np.asarray(alpha, dtype=np.float64) * np.maximum(-x64, 0.0)


def softmax(x: ArrayLike, axes: Sequence[int]) -> FloatArray:
    """Keras' Softmax layer over one or several axes: `exp(x - logsumexp(x, axes))`."""
    x64 = np.asarray(x, dtype=np.float64)
    axes = tuple(axes)
    peak = np.max(x64, axis=axes, keepdims=True)
    shifted = np.exp(x64 - peak)
    return np.asarray(shifted / np.sum(shifted, axis=axes, keepdims=True), dtype=np.float64)


def pad_or_crop(x: ArrayLike, axes: Sequence[int], begins: Sequence[int], ends: Sequence[int]) -> FloatArray:
    """ZeroPadding (positive amounts: zeros added) and Cropping (negative: samples removed)."""
    y = np.asarray(x, dtype=np.float64)
    for axis, begin, end in zip(axes, begins, ends, strict=True):
        if begin >= 0 and end >= 0:
            widths = [(0, 0)] * y.ndim
            widths[axis] = (begin, end)
            y = np.pad(y, widths)
        else:
            index = [slice(None)] * y.ndim
            index[axis] = slice(-begin, y.shape[axis] + end)
            y = y[tuple(index)]
    return y


def upsample(x: ArrayLike, axes: Sequence[int], factors: Sequence[int], interpolation: str) -> FloatArray:
    """UpSampling: `nearest` repeats each sample; `bilinear` is Keras' image resize with half-pixel
    centres (output sample `o` reads input position `(o + 0.5) / f - 0.5`, clamped to the edges)."""
    y = np.asarray(x, dtype=np.float64)
    for axis, factor in zip(axes, factors, strict=True):
        if interpolation == "nearest":
            y = np.repeat(y, factor, axis=axis)
            continue
        size = y.shape[axis]
        position = np.clip((np.arange(size * factor) + 0.5) / factor - 0.5, 0.0, size - 1)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, size - 1)
        weight = _along(axis, y.ndim, position - low)
        y = np.take(y, low, axis=axis) * (1 - weight) + np.take(y, high, axis=axis) * weight
    return y


def flatten(x: ArrayLike, channels_first: bool) -> FloatArray:
    """Keras Flatten: channels_first tensors are moved to channels_last order first."""
    y = np.asarray(x, dtype=np.float64)
    if channels_first and y.ndim > 2:
        y = np.moveaxis(y, 1, -1)
    return y.reshape(y.shape[0], -1)


# --------------------------------------------------------------------------------------------
# Forward convolutions and pooling (Keras 3: lax.conv_general_dilated / lax.reduce_window)
# --------------------------------------------------------------------------------------------


def keras_window_padding(length: int, k: int, s: int, d: int, padding: str) -> tuple[int, int]:
    """Samples Keras adds before and after one axis: none for `valid`; for `same` (lax's SAME)
    the total that gives ceil(length / s) windows, the larger half after; for Conv1D's `causal`,
    `(k - 1) * d` before."""
    extent = dilated_kernel_extent(k, d)
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return extent - 1, 0
    if padding != "same":
        raise ValueError(f"padding must be valid, same or causal, got {padding!r}")
    windows = -(-length // s)
    total = max((windows - 1) * s + extent - length, 0)
    return total // 2, total - total // 2


def _taps(
    x_cl: FloatArray,
    kernel_size: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    padding: str,
    fill: float,
) -> tuple[list[tuple[tuple[int, ...], FloatArray]], FloatArray]:
    """The input (channels_last) padded with `fill` the Keras way, as one strided view per
    kernel tap: view[n, o..., c] = padded[n, o * s + t * d, c]. Also the padded input."""
    widths = [
        keras_window_padding(i, k, s, d, padding)
        for i, k, s, d in zip(x_cl.shape[1:-1], kernel_size, strides, dilations, strict=True)
    ]
    padded = np.pad(x_cl, [(0, 0), *widths, (0, 0)], constant_values=fill)
    outputs = [
        (size - dilated_kernel_extent(k, d)) // s + 1
        for size, k, s, d in zip(padded.shape[1:-1], kernel_size, strides, dilations, strict=True)
    ]
    if min(outputs) <= 0:
        raise ValueError(f"the window does not fit the input {x_cl.shape} (padding {padding!r})")
    views = []
    for tap in np.ndindex(*kernel_size):
        region = tuple(
            slice(t * d, t * d + (o - 1) * s + 1, s)
            for t, d, o, s in zip(tap, dilations, outputs, strides, strict=True)
        )
        views.append((tap, padded[(slice(None), *region, slice(None))]))
    return views, padded


def conv(
    x: ArrayLike,
    kernel: ArrayLike,
    bias: ArrayLike | None,
    *,
    strides: Sequence[int],
    padding: str,
    dilation_rate: Sequence[int],
    groups: int,
    data_format: str,
) -> FloatArray:
    """Keras `Conv{1,2,3}D` (without activation): cross-correlation of the padded input with
    `kernel` (k..., in / groups, filters), no flip; group g reads input channels
    [g * in/groups, (g+1) * in/groups) and writes filters [g * filters/groups, ...)."""
    _check_data_format(data_format)
    w64 = np.asarray(kernel, dtype=np.float64)
    rank = w64.ndim - 2
    x_cl = _to_channels_last(np.asarray(x, dtype=np.float64), data_format)
    per_group, filters = w64.shape[rank], w64.shape[rank + 1]
    if x_cl.shape[-1] != per_group * groups or filters % groups:
        raise ValueError(f"{x_cl.shape[-1]} input channels, kernel {w64.shape}, groups {groups}")
    views, _ = _taps(x_cl, w64.shape[:rank], strides, dilation_rate, padding, 0.0)
    out_per_group = filters // groups
    out = np.zeros((*views[0][1].shape[:-1], filters), dtype=np.float64)
    for tap, view in views:
        for g in range(groups):
            part = view[..., g * per_group : (g + 1) * per_group]
            out[..., g * out_per_group : (g + 1) * out_per_group] += (
                part @ w64[tap][:, g * out_per_group : (g + 1) * out_per_group]
            )
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)
    return _from_channels_last(out, data_format)


def depthwise_conv(
    x: ArrayLike,
    kernel: ArrayLike,
    bias: ArrayLike | None,
    *,
    strides: Sequence[int],
    padding: str,
    dilation_rate: Sequence[int],
    data_format: str,
) -> FloatArray:
    """Keras `DepthwiseConv{1,2}D` from its own kernel layout (k..., in, multiplier): output
    channel c * multiplier + m is input channel c filtered by kernel[..., c, m]."""
    _check_data_format(data_format)
    w64 = np.asarray(kernel, dtype=np.float64)
    rank = w64.ndim - 2
    x_cl = _to_channels_last(np.asarray(x, dtype=np.float64), data_format)
    views, _ = _taps(x_cl, w64.shape[:rank], strides, dilation_rate, padding, 0.0)
    channels, multiplier = w64.shape[rank], w64.shape[rank + 1]
    out = np.zeros((*views[0][1].shape[:-1], channels, multiplier), dtype=np.float64)
    for tap, view in views:
        out += view[..., :, None] * w64[tap]
    out = out.reshape((*out.shape[:-2], channels * multiplier))
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)
    return _from_channels_last(out, data_format)


def pool(
    x: ArrayLike,
    function: str,
    pool_size: Sequence[int],
    strides: Sequence[int],
    padding: str,
    data_format: str,
) -> FloatArray:
    """Keras MaxPooling / AveragePooling: padding never wins a max (-inf); `same` averages
    divide by the number of real (unpadded) elements in each window."""
    _check_data_format(data_format)
    x_cl = _to_channels_last(np.asarray(x, dtype=np.float64), data_format)
    ones = (1,) * len(pool_size)
    if function == "max":
        views, _ = _taps(x_cl, pool_size, strides, ones, padding, -np.inf)
        out = np.max(np.stack([view for _, view in views]), axis=0)
    elif function == "average":
        views, _ = _taps(x_cl, pool_size, strides, ones, padding, 0.0)
        counts, _ = _taps(np.ones_like(x_cl), pool_size, strides, ones, padding, 0.0)
        out = sum(view for _, view in views) / sum(view for _, view in counts)
    else:
        raise ValueError(f"pool function must be max or average, got {function!r}")
    return _from_channels_last(np.asarray(out, dtype=np.float64), data_format)


def global_pool(x: ArrayLike, function: str, axes: Sequence[int], keepdims: bool) -> FloatArray:
    x64 = np.asarray(x, dtype=np.float64)
    reduce = np.max if function == "max" else np.mean
    return np.asarray(reduce(x64, axis=tuple(axes), keepdims=keepdims), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Normalizations (keras/src/ops/nn.py, keras/src/layers/normalization, preprocessing)
# --------------------------------------------------------------------------------------------


def _on_axes(values: ArrayLike, axes: Sequence[int], ndim: int) -> FloatArray:
    """`values` sized like the tensor's `axes` (in order), shaped to broadcast against it."""
    v = np.asarray(values, dtype=np.float64)
    shape = [1] * ndim
    for axis, size in zip(axes, v.shape, strict=True):
        shape[axis] = size
    return v.reshape(shape)


def layer_normalization(
    x: ArrayLike,
    axes: Sequence[int],
    gamma: ArrayLike | None,
    beta: ArrayLike | None,
    epsilon: float,
    rms_scaling: bool = False,
) -> FloatArray:
    """Keras `layer_normalization`: (x - mean) / sqrt(var + eps) * gamma + beta over `axes`
    (the population variance); `rms_scaling` (deprecated) is x / sqrt(var + eps) * gamma."""
    x64 = np.asarray(x, dtype=np.float64)
    axes = tuple(sorted(axes))
    mean = x64.mean(axis=axes, keepdims=True)
    variance = ((x64 - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x64 if rms_scaling else x64 - mean) / np.sqrt(variance + epsilon)
    if gamma is not None:
        y = y * _on_axes(gamma, axes, x64.ndim)
    if beta is not None and not rms_scaling:
        y = y + _on_axes(beta, axes, x64.ndim)
    return np.asarray(y, dtype=np.float64)


def group_normalization(
    x: ArrayLike,
    groups: int,
    axis: int,
    gamma: ArrayLike | None,
    beta: ArrayLike | None,
    epsilon: float,
) -> FloatArray:
    """Keras GroupNormalization: channels (on `axis`) split into `groups` consecutive runs;
    moments over each run and every other non-batch axis."""
    x64 = np.moveaxis(np.asarray(x, dtype=np.float64), axis, 1)
    n, channels = x64.shape[:2]
    grouped = x64.reshape(n, groups, channels // groups, *x64.shape[2:])
    reduce = tuple(range(2, grouped.ndim))
    mean = grouped.mean(axis=reduce, keepdims=True)
    variance = ((grouped - mean) ** 2).mean(axis=reduce, keepdims=True)
    y = ((grouped - mean) / np.sqrt(variance + epsilon)).reshape(x64.shape)
    if gamma is not None:
        y = y * _on_axes(gamma, (1,), y.ndim)
    if beta is not None:
        y = y + _on_axes(beta, (1,), y.ndim)
    return np.ascontiguousarray(np.moveaxis(y, 1, axis))


def unit_normalization(x: ArrayLike, axes: Sequence[int], cap: float = 1e12) -> FloatArray:
    """Keras 3 UnitNormalization (`normalize(order=2, epsilon=1e-12)`):
    x * min(1 / sqrt(sum(x²)), 1 / epsilon) over `axes`; `cap` is 1 / epsilon in the compute
    dtype (infinite in float16)."""
    x64 = np.asarray(x, dtype=np.float64)
    squares = np.sum(x64 * x64, axis=tuple(axes), keepdims=True)
    with np.errstate(divide="ignore"):
        inverse = np.minimum(1.0 / np.sqrt(squares), cap)
    return np.asarray(x64 * inverse, dtype=np.float64)


def rescale(x: ArrayLike, scale: ArrayLike, offset: ArrayLike) -> FloatArray:
    """Keras Rescaling: x * scale + offset (numpy broadcasting)."""
    x64 = np.asarray(x, dtype=np.float64)
    return x64 * np.asarray(scale, dtype=np.float64) + np.asarray(offset, dtype=np.float64)


def normalize(
    x: ArrayLike, mean: ArrayLike, variance: ArrayLike, invert: bool, epsilon: float = 1e-7
) -> FloatArray:
    """Keras Normalization: (x - mean) / max(sqrt(variance), epsilon); inverted,
    mean + x * max(sqrt(variance), epsilon). epsilon is `keras.backend.epsilon()`."""
    x64 = np.asarray(x, dtype=np.float64)
    mean64 = np.asarray(mean, dtype=np.float64)
    scale = np.maximum(np.sqrt(np.asarray(variance, dtype=np.float64)), epsilon)
    return mean64 + x64 * scale if invert else (x64 - mean64) / scale


# --------------------------------------------------------------------------------------------
# Elementwise arithmetic and axes
# --------------------------------------------------------------------------------------------

_FUNCTIONS: dict[str, Callable[[FloatArray, FloatArray], FloatArray]] = {
    "add": np.add,
    "subtract": np.subtract,
    "multiply": np.multiply,
    "divide": np.divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "power": np.power,
}


def merge(function: str, inputs: Sequence[ArrayLike]) -> FloatArray:
    """Keras' merge layers (and keras.ops on two tensors): folded left to right; `average` is
    the sum divided by the number of inputs."""
    arrays = [np.asarray(a, dtype=np.float64) for a in inputs]
    out = arrays[0]
    for other in arrays[1:]:
        out = _FUNCTIONS["add" if function == "average" else function](out, other)
    return out / len(arrays) if function == "average" else np.asarray(out, dtype=np.float64)


def scalar(function: str, x: ArrayLike, constant: float, constant_first: bool) -> FloatArray:
    x64 = np.asarray(x, dtype=np.float64)
    c = np.asarray(constant, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = _FUNCTIONS[function](c, x64) if constant_first else _FUNCTIONS[function](x64, c)
    return np.asarray(y, dtype=np.float64)


def clip(x: ArrayLike, low: float | None, high: float | None) -> FloatArray:
    """keras.ops.clip: max(x, low) then min(., high); a missing bound does nothing."""
    y = np.asarray(x, dtype=np.float64)
    if low is not None:
        y = np.maximum(y, low)
    if high is not None:
        y = np.minimum(y, high)
    return y


def repeat_vector(x: ArrayLike, times: int) -> FloatArray:
    """Keras RepeatVector: (N, F) → (N, times, F)."""
    return np.repeat(np.asarray(x, dtype=np.float64)[:, None, :], times, axis=1)
