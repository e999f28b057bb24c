"""Keras normalization and scaling layers → ops: LayerNormalization, GroupNormalization,
UnitNormalization, Rescaling, Normalization (adapted or given mean and variance), with Keras 3.15's
formulas and weight layouts (BatchNormalization is in `keras_layers`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from deconv_compiler.errors import shown
from deconv_compiler.ir import (
    GroupNormOp,
    LayerNormOp,
    NormalizeOp,
    Op,
    RescaleOp,
    Shape,
    UnitNormOp,
)
from deconv_compiler.keras_call import (
    LayerCall,
    expect_shape,
    is_int,
)
from deconv_compiler.keras_shapes import dims

# --- normalizations ------------------------------------------------------------------------------


def layer_normalization(ctx: LayerCall) -> tuple[Op, Shape] | None:
    """LayerNormalization. Weights: gamma if scale or rms_scaling, beta if center and not
    rms_scaling (Keras' deprecated rms_scaling divides x, not centred, by sqrt(variance + eps))."""
    if not ctx.single_input():
        return None
    raw = ctx.config.get("axis", -1)
    axes = ctx.axes(raw, "axis", batch=True)
    epsilon = ctx.number("epsilon", 1e-3)
    center, scale = ctx.flag("center", True), ctx.flag("scale", True)
    rms = ctx.flag("rms_scaling", False)
    if axes is None or epsilon is None or center is None or scale is None or rms is None:
        return None
    names = [*(["gamma"] if scale or rms else []), *(["beta"] if center and not rms else [])]
    arrays = ctx.weights(len(names))
    if arrays is None:
        return None
    # Keras builds gamma/beta with the sizes of `sorted(axis)` as written (negative axes first),
    # then reshapes them into the broadcast shape of the axes in order: with mixed signs the
    # values are reinterpreted, not transposed. We do what Keras does.
    built = tuple(ctx.shape[a] for a in sorted(raw if isinstance(raw, (list, tuple)) else [raw]))
    ordered = tuple(sorted(axes))
    if arrays and None in built:
        ctx.fail(f"needs known sizes on the normalized axes {list(ordered)}, got input {dims(ctx.shape)}")
        return None
    values: dict[str, np.ndarray] = {}
    for name, array in zip(names, arrays, strict=True):
        if not expect_shape(ctx, name, array, built):
            return None
        values[name] = array.reshape(tuple(int(ctx.shape[a] or 0) for a in ordered))
    return LayerNormOp(ordered, epsilon, values.get("gamma"), values.get("beta"), rms), ctx.shape


def group_normalization(ctx: LayerCall) -> tuple[Op, Shape] | None:
    """GroupNormalization: `groups` -1 means one group per channel (instance normalization)."""
    if not ctx.single_input():
        return None
    groups = ctx.config.get("groups", 32)
    if not is_int(groups) or (groups <= 0 and groups != -1):
        ctx.fail(
            f"must be a positive integer (or -1 for instance normalization), got {shown(groups)}", "groups"
        )
        return None
    axis = ctx.axis(ctx.config.get("axis", -1), "axis")
    epsilon = ctx.number("epsilon", 1e-3)
    center, scale = ctx.flag("center", True), ctx.flag("scale", True)
    if axis is None or epsilon is None or center is None or scale is None:
        return None
    size = ctx.shape[axis]
    if size is None:
        ctx.fail(f"Axis {axis} of the input {dims(ctx.shape)} must have a known size")
        return None
    groups = size if groups == -1 else groups
    if size < groups or size % groups:
        ctx.fail(f"the channels ({size}) must be a multiple of the groups ({groups})", "groups")
        return None
    names = [*(["gamma"] if scale else []), *(["beta"] if center else [])]
    arrays = ctx.weights(len(names))
    if arrays is None or not all(
        expect_shape(ctx, n, a, (size,)) for n, a in zip(names, arrays, strict=True)
    ):
        return None
    values = dict(zip(names, arrays, strict=True))
    return GroupNormOp(groups, axis, epsilon, values.get("gamma"), values.get("beta")), ctx.shape


def unit_normalization(ctx: LayerCall) -> tuple[Op, Shape] | None:
    if not ctx.single_input():
        return None
    axes = ctx.axes(ctx.config.get("axis", -1), "axis", batch=True)
    return None if axes is None else (UnitNormOp(tuple(sorted(axes))), ctx.shape)


def _numbers(ctx: LayerCall, key: str, value: Any) -> np.ndarray | None:
    """A number or nested lists of numbers, as `get_config` writes them (a numpy array is
    serialized as {"class_name": "__numpy__", "config": {"value": ...}})."""
    if isinstance(value, Mapping) and value.get("class_name") in ("__numpy__", "__tensor__"):
        inner = value.get("config")
        value = inner.get("value") if isinstance(inner, Mapping) else None
    try:
        array = np.asarray(value)
    except ValueError:  # ragged lists
        array = np.asarray(None)
    if array.dtype.kind not in "iuf" or not np.all(np.isfinite(array)):
        ctx.fail(f"must be a finite number or nested lists of them, got {shown(value)}", key)
        return None
    return array.astype(np.float64)


def _fits(array: np.ndarray, shape: Shape) -> bool:
    """Whether `array` broadcasts against `shape` (numpy rules) without growing it."""
    if array.ndim > len(shape):
        return False
    return all(a == 1 or a == d for a, d in zip(reversed(array.shape), reversed(shape), strict=False))


def rescaling(ctx: LayerCall) -> tuple[Op, Shape] | None:
    """Rescaling: x * scale + offset in the compute dtype. Keras reshapes a non-scalar scale to
    (C, 1, 1) when the *global* image_data_format is channels_first; configs do not record it,
    so the default (channels_last) is assumed."""
    if not ctx.single_input():
        return None
    if "scale" not in ctx.config:
        ctx.fail("is required", "scale")
        return None
    scale = _numbers(ctx, "scale", ctx.config.get("scale"))
    offset = _numbers(ctx, "offset", ctx.config.get("offset", 0.0))
    if scale is None or offset is None:
        return None
    for key, array in (("scale", scale), ("offset", offset)):
        if not _fits(array, ctx.shape):
            ctx.fail(f"shape {array.shape} does not broadcast into the input {dims(ctx.shape)}", key)
            return None
    return RescaleOp(scale, offset), ctx.shape


def normalization(ctx: LayerCall) -> tuple[Op, Shape] | None:
    """Normalization: (x - mean) / max(sqrt(variance), 1e-7), or its inverse. Keras keeps
    `axis`; mean and variance come from the config or, once adapted, from the weights file
    (mean, variance, count) with the sizes of the kept axes."""
    if not ctx.single_input():
        return None
    invert = ctx.flag("invert", False)
    raw = ctx.config.get("axis", -1)
    keep = () if raw is None or raw == [] else ctx.axes(raw, "axis", batch=True)
    if keep is None or invert is None:
        return None
    keep = tuple(sorted(keep))
    sizes = [ctx.shape[a] for a in keep]
    if None in sizes:
        ctx.fail(f"All `axis` values to be kept must have a known size, got input {dims(ctx.shape)}", "axis")
        return None
    broadcast = tuple(int(ctx.shape[a] or 0) if a in keep else 1 for a in range(len(ctx.shape)))
    moments = _normalization_moments(ctx, keep, broadcast)
    if moments is None:
        return None
    mean, variance = moments
    if np.any(variance < 0):
        ctx.fail("variance holds negative values (Keras would give NaN)")
        return None
    return NormalizeOp(mean, variance, invert), ctx.shape


def _normalization_moments(
    ctx: LayerCall, keep: tuple[int, ...], broadcast: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and variance with the input's rank, broadcasting to `broadcast`: Keras aligns a given
    mean's axes with the last kept axes and broadcasts it; adapted ones have exactly the kept
    axes' sizes."""
    given = ctx.config.get("mean"), ctx.config.get("variance")
    if given == (None, None):
        arrays = ctx.weights(3)  # mean, variance, count
        kept = tuple(broadcast[a] for a in keep)
        if arrays is None or not all(
            expect_shape(ctx, n, a, kept) for n, a in zip(("mean", "variance"), arrays[:2], strict=True)
        ):
            return None
        return tuple(a.reshape(broadcast).astype(np.float64) for a in arrays[:2])  # type: ignore[return-value]
    if None in given:
        ctx.fail("When setting values directly, both `mean` and `variance` must be set")
        return None
    mean, variance = _numbers(ctx, "mean", given[0]), _numbers(ctx, "variance", given[1])
    if mean is None or variance is None or not ctx.no_weights():
        return None
    if mean.shape != variance.shape or mean.ndim > len(keep):
        ctx.fail(f"mean {mean.shape} and variance {variance.shape} need one shape of <= {len(keep)} axes")
        return None
    expanded = [1] * len(broadcast)
    for i in range(1, mean.ndim + 1):
        expanded[keep[-i]] = mean.shape[-i]
    if any(e not in (1, b) for e, b in zip(expanded, broadcast, strict=True)):
        ctx.fail(f"mean of shape {mean.shape} does not broadcast to {broadcast}", "mean")
        return None
    # kept as given (size 1 where Keras broadcasts): a scalar mean over large axes allocates nothing
    return mean.reshape(expanded), variance.reshape(expanded)
