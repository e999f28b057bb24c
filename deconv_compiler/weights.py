"""Layer weights: loaded from the spec (an `.npz` path or an inline `[kernel, bias]` list) and
checked against the layer, or made by the layer's Keras initializers.

Kernels are kept in Keras' layout, `kernel_size + (filters, in_channels)`; the lowering plan
transposes them for ONNX. Initializers follow Keras' definitions (fans as Keras computes them,
truncation at two standard deviations), but Keras' random streams depend on its backend, so
values are reproducible for a given seed here, not equal to Keras' draws.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deconv_compiler.errors import FieldPath, shown
from deconv_compiler.keras_objects import KerasObject

Report = Callable[[FieldPath, str], None]


@dataclass(frozen=True, eq=False)
class LayerWeights:
    """A layer's kernel (Keras layout) and bias (or None), and where they came from. Floating-point
    arrays keep their dtype (a float32 Keras kernel is not doubled in memory), integers become float64."""

    kernel: np.ndarray
    bias: np.ndarray | None
    origin: str


def load_layer_weights(
    value: Any,
    kernel_shape: tuple[int, ...],
    use_bias: bool,
    base_dir: Path | None,
    path: FieldPath,
    report: Report,
) -> LayerWeights | None:
    """Read `weights:` (npz path or `[kernel, bias]`) and check it against the layer."""
    if isinstance(value, str):
        arrays = _read_npz(
            value, base_dir, path, report, {"kernel": kernel_shape, "bias": (kernel_shape[-2],)}
        )
        if arrays is None:
            return None
        kernel, bias, origin = arrays.get("kernel"), arrays.get("bias"), value
        if kernel is None:
            found = ", ".join(str(name) for name in arrays[""]) or "none"
            report(path, f"{shown(value)} has no array named 'kernel' (found: {found})")
            return None
        kernel_path, bias_path = path, path
    elif isinstance(value, (list, tuple)):
        if len(value) not in (1, 2):
            report(
                path,
                f"must be [kernel, bias] (or [kernel] without bias), got a list of {len(value)} items",
            )
            return None
        kernel = _as_array(value[0], (*path, 0), report)
        bias = _as_array(value[1], (*path, 1), report) if len(value) == 2 else None
        if kernel is None or (len(value) == 2 and bias is None):
            return None
        origin, kernel_path, bias_path = "inline", (*path, 0), (*path, 1)
    else:
        report(
            path,
            f"must be a path to an .npz file or a [kernel, bias] list, got {type(value).__name__}",
        )
        return None

    ok = _check_shape("kernel", kernel, kernel_shape, kernel_path, report)
    filters = kernel_shape[-2]
    if use_bias and bias is None:
        report(path, f"use_bias is true but no bias was given (expected shape ({filters},))")
        ok = False
    elif not use_bias and bias is not None:
        report(bias_path, "a bias was given but use_bias is false")
        ok = False
    elif bias is not None:
        ok = _check_shape("bias", bias, (filters,), bias_path, report) and ok
    if not ok:
        return None
    return LayerWeights(kernel=kernel, bias=bias, origin=origin)


def _read_npz(
    value: str,
    base_dir: Path | None,
    path: FieldPath,
    report: Report,
    expected: Mapping[str, tuple[int, ...]],
) -> dict[str, np.ndarray] | None:
    """The `expected` arrays of an .npz (plus the names of all members, under ""), each member's
    header checked before its data is read: a forged header cannot make us allocate."""
    resolved = (base_dir or Path.cwd()) / value
    try:
        if resolved.exists() and not resolved.is_dir() and not resolved.is_file():
            report(path, f"weights path {shown(value)} is not a regular file (resolved to {resolved})")
            return None  # a FIFO or a device would block or never end
        with open(resolved, "rb") as handle:  # ours to close, whatever numpy raises
            if handle.read(6) == b"\x93NUMPY":
                report(path, f"{shown(value)} is a single .npy array; give an .npz with 'kernel' and 'bias'")
                return None
            handle.seek(0)
            with zipfile.ZipFile(handle) as archive:
                members = {name.removesuffix(".npy"): name for name in archive.namelist()}
                arrays: dict[str, np.ndarray] = {}
                for name, shape in expected.items():
                    if name in members:
                        array = _read_member(archive, members[name], name, shape, value, path, report)
                        if array is None:
                            return None
                        arrays[name] = array
                arrays[""] = np.array(sorted(members))
                return arrays
    except FileNotFoundError:
        report(path, f"weights file {shown(value)} not found (looked at {resolved})")
    except IsADirectoryError:
        report(path, f"weights path {shown(value)} is a directory (resolved to {resolved})")
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, MemoryError) as exc:
        reason = "not an .npz archive" if isinstance(exc, zipfile.BadZipFile) else pickle_refusal(exc)
        report(path, f"cannot read weights file {shown(value)}: {reason} (resolved to {resolved})")
    return None


def _read_member(
    archive: zipfile.ZipFile,
    member: str,
    name: str,
    shape: tuple[int, ...],
    value: str,
    path: FieldPath,
    report: Report,
) -> np.ndarray | None:
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        header_shape, _, dtype = read_header(stream)
    if dtype.hasobject:
        report(
            path, f"{shown(value)}: {name}: {pickle_refusal(ValueError('Object arrays cannot be loaded'))}"
        )
        return None
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        report(path, f"{shown(value)}: {name} is an array of {dtype} where numbers were expected")
        return None
    if tuple(header_shape) != shape:
        _check_shape(name, np.empty((0,)), shape, path, report, received=tuple(header_shape))
        return None
    with archive.open(member) as stream:
        return np.asarray(np.lib.format.read_array(stream, allow_pickle=False), dtype=np.float64)


def pickle_refusal(exc: Exception) -> str:
    """numpy's errors under allow_pickle=False, said plainly (we never unpickle user files)."""
    text = str(exc)
    if "Object arrays cannot be loaded" in text:
        return "it holds pickled Python objects, which are refused (allow_pickle=False); save numbers only"
    if "pickle" in text:  # numpy's fallback for anything that is not .npy/.npz
        return "not a .npy/.npz file"
    return text


def _as_array(value: Any, path: FieldPath, report: Report) -> np.ndarray | None:
    try:
        array = np.asarray(value)
    except ValueError:
        report(path, "is not a rectangular nested list of numbers")
        return None
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        report(path, f"must hold numbers, got an array of {array.dtype}")
        return None
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)


def _check_shape(
    name: str,
    array: np.ndarray,
    expected: tuple[int, ...],
    path: FieldPath,
    report: Report,
    received: tuple[int, ...] | None = None,
) -> bool:
    shape = tuple(array.shape) if received is None else received
    if shape != expected:
        hint = ""
        if name == "kernel" and len(expected) >= 3:
            onnx_layout = (expected[-1], expected[-2], *expected[:-2])
            if shape == onnx_layout:
                hint = (
                    " (that is the ONNX/PyTorch layout (in, out, *k); "
                    "Keras' is kernel_size + (filters, in_channels))"
                )
            else:
                hint = " = kernel_size + (filters, in_channels)"
        report(path, f"{name} has shape {shape}, expected {expected}{hint}")
        return False
    if np.isfinite(array).all():
        return True
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        report(path, f"{name} holds {bad} NaN or infinite value(s)")
        return False
    return True


# --- initializers --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class InitializerWeights:
    """A layer's weights that no file gives: its initializers make them when the model is
    compiled, seeded by the layer's own `seed`, else by the model seed and the layer's `index`
    (so the same spec and seed give the same weights, whatever else the model holds)."""

    kernel_initializer: KerasObject
    bias_initializer: KerasObject
    kernel_shape: tuple[int, ...]  # Keras layout
    use_bias: bool
    seed: int | None
    index: int

    def made(self, model_seed: int) -> LayerWeights:
        seed = self.seed if self.seed is not None else model_seed * 1000 + self.index
        kernel = initial_value(self.kernel_initializer, self.kernel_shape, np.random.default_rng([seed, 0]))
        bias = (
            initial_value(self.bias_initializer, (self.kernel_shape[-2],), np.random.default_rng([seed, 1]))
            if self.use_bias
            else None
        )
        return LayerWeights(kernel=kernel, bias=bias, origin=f"initializers (seed {seed})")


def compute_fans(
    shape: Sequence[int],
    input_axes: Sequence[int] | None = None,
    output_axes: Sequence[int] | None = None,
) -> tuple[int, int]:
    """Keras' fans. For a transposed-conv kernel (k..., filters, in) that is fan_in = prod(k)*filters,
    fan_out = prod(k)*in: reversed relative to the data flow, but it is what Keras computes."""
    if input_axes is not None and output_axes is not None:
        return math.prod(shape[a] for a in input_axes), math.prod(shape[a] for a in output_axes)
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


_VARIANCE_SCALING = {
    "GlorotNormal": (1.0, "fan_avg", "truncated_normal"),
    "GlorotUniform": (1.0, "fan_avg", "uniform"),
    "HeNormal": (2.0, "fan_in", "truncated_normal"),
    "HeUniform": (2.0, "fan_in", "uniform"),
    "LecunNormal": (1.0, "fan_in", "truncated_normal"),
    "LecunUniform": (1.0, "fan_in", "uniform"),
}


def initial_value(init: KerasObject, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """One weight tensor from a Keras initializer's definition (float64)."""
    config = init.config
    if config.get("seed") is not None:
        rng = np.random.default_rng(config["seed"])
    name = init.class_name
    if name == "Zeros":
        return np.zeros(shape)
    if name == "Ones":
        return np.ones(shape)
    if name == "Constant":
        return np.full(shape, float(config["value"]))
    if name == "RandomNormal":
        return rng.normal(config["mean"], config["stddev"], shape)
    if name == "RandomUniform":
        return rng.uniform(config["minval"], config["maxval"], shape)
    if name == "TruncatedNormal":
        return float(config["mean"]) + _truncated_standard_normal(rng, shape) * float(config["stddev"])
    if name == "Orthogonal":
        return _orthogonal(rng, shape, config["gain"])
    if name in _VARIANCE_SCALING:
        scale, mode, distribution = _VARIANCE_SCALING[name]
    else:  # VarianceScaling
        scale, mode, distribution = config["scale"], config["mode"], config["distribution"]
    fan_in, fan_out = compute_fans(shape, config.get("input_axes"), config.get("output_axes"))
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    scale /= max(1.0, fan)
    if distribution in ("truncated_normal", "normal"):
        # 0.879...: the standard deviation of a unit normal truncated to [-2, 2]
        return _truncated_standard_normal(rng, shape) * (math.sqrt(scale) / 0.87962566103423978)
    if distribution == "untruncated_normal":
        return rng.normal(0.0, math.sqrt(scale), shape)
    limit = math.sqrt(3.0 * scale)
    return rng.uniform(-limit, limit, shape)


def _truncated_standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Unit normal samples redrawn until they fall within two standard deviations."""
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 2.0
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2.0
    return values


def _orthogonal(rng: np.random.Generator, shape: tuple[int, ...], gain: float) -> np.ndarray:
    """Keras' Orthogonal: QR of a normal matrix of shape (prod(shape[:-1]), shape[-1])."""
    rows, cols = math.prod(shape[:-1]), shape[-1]
    matrix = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(matrix)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return gain * q.reshape(shape)
