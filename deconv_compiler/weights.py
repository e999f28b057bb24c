"""Layer weights: loaded from the spec (an `.npz` path or an inline `[kernel, bias]` list) and
checked against the layer, or made by the layer's Keras initializers.

A spec comes from anyone, so its `.npz` path is read only inside one folder (`WeightsFolder`: the
spec's own unless the caller names another), through `array_file`: each array's header is checked
against the layer before its data is read, and nothing is ever unpickled.

Kernels are kept in Keras' layout, `kernel_size + (filters, in_channels)`; the lowering plan
transposes them for ONNX. Initializers follow Keras' definitions (fans as Keras computes them,
truncation at two standard deviations), but Keras' random streams depend on its backend, so
values are reproducible for a given seed here, not equal to Keras' draws.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deconv_compiler.array_file import ArrayFileError, ArrayFileMissing, open_array_file
from deconv_compiler.errors import CompileError, FieldPath, shown
from deconv_compiler.keras_objects import KerasObject
from deconv_compiler.limits import MAX_ORTHOGONAL_WORK, MAX_WEIGHT_BYTES

Report = Callable[[FieldPath, str], None]


@dataclass(frozen=True, eq=False)
class LayerWeights:
    """A layer's kernel (Keras layout) and bias (or None), and where they came from. Floating-point
    arrays keep their dtype (a float32 Keras kernel is not doubled in memory), integers become float64."""

    kernel: np.ndarray
    bias: np.ndarray | None
    origin: str
    file: Path | None = None  # the .npz read, resolved: an output may never replace it


@dataclass(frozen=True)
class WeightsFolder:
    """Where a spec's `weights:` paths are read. `base`: the folder they are relative to (the spec
    file's; a spec given as a mapping has none, so its paths are relative to `root`). `root`: the
    folder they must stay inside, symbolic links followed (default: the spec file's folder, or the
    current directory for a mapping; `--weights-root DIR` / `weights_root=` choose another, such as
    a parent folder for `../shared/w.npz`). Both are real paths (links resolved)."""

    base: Path
    root: Path

    @classmethod
    def of(cls, spec_folder: Path | None, root: str | Path | None = None) -> WeightsFolder:
        """The folders for a spec file in `spec_folder` (None: a mapping) and an explicit `root`."""
        chosen = root if root is not None else spec_folder if spec_folder is not None else Path.cwd()
        real_root = Path(os.path.realpath(chosen))
        return cls(Path(os.path.realpath(spec_folder)) if spec_folder is not None else real_root, real_root)

    def resolve(self, value: str) -> Path:
        """The real path of `value` (`base` / value, links resolved), refused with a `WeightsPathError`
        when it is empty, absolute or leads outside `root`: judged on the text first, so nothing
        outside `root` is ever looked at, then with symbolic links followed. The messages are the
        same whether or not something exists outside."""
        if not value or "\x00" in value:
            raise WeightsPathError(f"weights path {shown(value)} is not a file name")
        if os.path.isabs(value):
            raise WeightsPathError(
                f"weights path {shown(value)} is absolute; write it relative to the spec's folder "
                f"(weights are read inside {self.root}; --weights-root / weights_root= chooses that folder)"
            )
        joined = Path(os.path.normpath(self.base / value))
        if not joined.is_relative_to(self.root):
            raise WeightsPathError(
                f"weights path {shown(value)} leads outside {self.root}, the folder weights are read "
                "from (--weights-root / weights_root= chooses that folder)"
            )
        real = Path(os.path.realpath(joined))
        if not real.is_relative_to(self.root):
            raise WeightsPathError(
                f"weights path {shown(value)} leads outside {self.root}, the folder weights are read "
                "from, through a symbolic link"
            )
        return real


class WeightsPathError(ValueError):
    """A `weights:` path that may not be read; the message says why."""


def load_layer_weights(
    value: Any,
    kernel_shape: tuple[int, ...],
    use_bias: bool,
    folder: WeightsFolder | None,
    path: FieldPath,
    report: Report,
    max_bytes: int = MAX_WEIGHT_BYTES,
) -> LayerWeights | None:
    """Read `weights:` (an .npz path inside `folder`, or `[kernel, bias]`) and check it against the
    layer; no array in the file may hold more than `max_bytes`. `folder` None: paths are refused
    (only specs name weight files)."""
    file = None
    if isinstance(value, str):
        found = _read_npz(
            value, folder, max_bytes, path, report, {"kernel": kernel_shape, "bias": (kernel_shape[-2],)}
        )
        if found is None:
            return None
        arrays, names, file = found
        kernel, bias, origin = arrays.get("kernel"), arrays.get("bias"), value
        if kernel is None:
            listed = ", ".join(sorted(names)) or "none"
            report(path, f"{shown(value)} has no array named 'kernel' (found: {listed})")
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
    return LayerWeights(kernel=kernel, bias=bias, origin=origin, file=file)


def _read_npz(
    value: str,
    folder: WeightsFolder | None,
    max_bytes: int,
    path: FieldPath,
    report: Report,
    expected: Mapping[str, tuple[int, ...]],
) -> tuple[dict[str, np.ndarray], tuple[str, ...], Path] | None:
    """The `expected` arrays of the .npz `value` names (each read only once its header matches the
    expected shape), the names of all its arrays, and its real path."""
    if folder is None:
        report(path, "a weights file can only be named in a spec")
        return None
    try:
        file = folder.resolve(value)
    except WeightsPathError as exc:
        report(path, str(exc))
        return None
    try:
        with open_array_file(file, shown(value), max_bytes, follow_symlinks=False) as archive:
            if archive.kind == "npy":
                report(path, f"{shown(value)} is a single .npy array; give an .npz with 'kernel' and 'bias'")
                return None
            arrays: dict[str, np.ndarray] = {}
            for name, shape in expected.items():
                if name in archive.names:
                    header = archive.header(name)
                    if header.shape != shape:
                        _check_shape(name, np.empty((0,)), shape, path, report, received=header.shape)
                        return None
                    arrays[name] = _floating(archive.read(name, header))
            return arrays, archive.names, file
    except ArrayFileMissing:
        report(path, f"weights file {shown(value)} not found (looked at {file})")
    except ArrayFileError as exc:
        report(path, f"cannot read weights file {exc}")
    except MemoryError:
        report(path, f"cannot read weights file {shown(value)}: not enough memory")
    return None


def _floating(array: np.ndarray) -> np.ndarray:
    """Floating-point weights as they are (a float32 kernel is not doubled), integers as float64."""
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)


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
    return _floating(array)


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
    if not array.size or (np.isfinite(array.min()) and np.isfinite(array.max())):
        return True  # NaN propagates through min and max: no temporary array as large as the weights
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
    """Keras' Orthogonal: QR of a normal matrix of shape (prod(shape[:-1]), shape[-1]); one whose
    QR would cost more than MAX_ORTHOGONAL_WORK is refused before any work."""
    rows, cols = math.prod(shape[:-1]), shape[-1]
    work = max(rows, cols) * min(rows, cols) ** 2
    if work > MAX_ORTHOGONAL_WORK:
        raise CompileError(
            f"the Orthogonal initializer of a {rows} x {cols} kernel matrix (shape {shape}) would take "
            f"{work:,} steps of QR factorization; the limit is {MAX_ORTHOGONAL_WORK:,} (a 2048 x 2048 "
            "matrix): give the weights, or choose another initializer"
        )
    matrix = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(matrix)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return gain * q.reshape(shape)
