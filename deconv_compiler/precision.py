"""float32 onnx model → the same model in float16 or int8 (QDQ), and how far its numbers move.

- `to_float16`: float16 weights and compute, float32 graph inputs and outputs (onnxruntime's
  bundled converter with `keep_io_types=True`, its node order repaired so the ONNX checker passes).
- `read_calibration` / `random_calibration`: calibration feeds the model accepts, from an .npz (one
  array per model input, by input name, samples first; names and shapes checked against the model
  before any data is read) or drawn at random when every non-batch size is fixed.
- `int8_settings`: the quantization types for this machine's CPU, chosen so that onnxruntime's
  integer kernels do not saturate, with the reason in one sentence.
- `to_int8`: onnxruntime's static quantizer in QDQ format. ConvTranspose stays float, and while the
  error against float32 on the calibration feeds exceeds a tolerance, the node that adds most error
  stays float too (a bounded number of rounds); every node kept float is listed with its reason.
- `precision_error`: max and mean absolute difference between two models' outputs on the same
  feeds, and the reference's scale (max |output|), so a report can say "max error X = Y of scale".

Models are run by `runtime.run_feeds` (CPU provider). The quantizer's log lines and warnings
("consider pre-processing") are noise here and are silenced while it runs; `DeconvWarning`s we emit
ourselves (float16 clamping) are not.
"""

from __future__ import annotations

import logging
import math
import platform
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from deconv_compiler.array_file import ArrayFileError, open_array_file
from deconv_compiler.errors import (
    DeconvError,
    DeconvWarning,
    InternalError,
    RuntimeFailure,
    first_line,
    shown,
)
from deconv_compiler.inspection import RunInput
from deconv_compiler.limits import MAX_INPUT_BYTES
from deconv_compiler.runtime import SessionConfig, run_feeds

FLOAT16_MAX = 65504.0
# Quantization error accepted before nodes are kept float: max |int8 - fp32| over the calibration
# outputs, relative to max |fp32 output|. One 8-bit step of a tensor's range is 1/255 = 0.4 %; a few
# layers of rounding measured 0.7-3.3 % on specs/ (onnxruntime 1.31, VNNI CPU), so 5 % is beyond
# rounding: a range stretched by outliers, a saturating kernel or an op that quantizes badly.
DEFAULT_TOLERANCE = 0.05
MAX_FLOAT_FALLBACKS = 3  # re-quantizations after the first: each costs a calibration and a measurement
DEFAULT_MAX_BATCH = 8  # samples per feed when the model's batch size is dynamic
DEFAULT_RANDOM_SAMPLES = 16
_DEBUG_FEEDS = 4  # feeds run with intermediate outputs to find the node that adds most error
_NOTHING_ADDED = 1e-4  # a node adding less (relative to its output's scale) is not to blame
_SESSION = SessionConfig(provider="cpu", spinning=False)


class CalibrationError(DeconvError):
    """Calibration data that does not fit the model, or none can be drawn (exit code 2)."""


class PrecisionUnsupported(DeconvError):
    """A model that cannot be converted to the asked precision (e.g. inputs that are not float32)."""


# --- measuring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionError:
    """How far a candidate's outputs are from the reference's, over every output and every feed."""

    max_abs: float
    mean_abs: float
    scale: float  # max |reference output|
    feeds: int
    values: int  # output values compared

    @property
    def relative(self) -> float:
        """`max_abs` as a fraction of the scale (0 when both are 0, inf when only the scale is)."""
        if self.scale > 0:
            return self.max_abs / self.scale
        return 0.0 if self.max_abs == 0 else math.inf

    def describe(self) -> str:
        return (
            f"max error {self.max_abs:.3g} = {self.relative:.3g} of scale {self.scale:.3g}, "
            f"mean error {self.mean_abs:.3g} (on {self.feeds} calibration feed{'s' * (self.feeds != 1)})"
        )


def precision_error(
    reference: onnx.ModelProto, candidate: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]]
) -> PrecisionError:
    """Max and mean |candidate - reference| over all outputs (matched by name) and all `feeds`,
    computed in float64, and the reference's max |output|. Both run on onnxruntime's CPU provider."""
    if not feeds:
        raise InternalError("precision_error needs at least one feed")
    expected = _run_all(reference, feeds)
    actual = _run_all(candidate, feeds)
    max_abs = total = scale = 0.0
    count = 0
    for want, got in zip(expected, actual, strict=True):
        if set(want) != set(got):
            raise InternalError(f"outputs differ: {sorted(want)} vs {sorted(got)}")
        for name, y in want.items():
            if y.shape != got[name].shape:
                raise InternalError(f"output {name!r}: shape {got[name].shape} where {y.shape} was expected")
            if not y.size:
                continue
            diff = np.abs(got[name].astype(np.float64) - y.astype(np.float64))
            worst = float(np.max(diff))
            max_abs = max(max_abs, math.inf if math.isnan(worst) else worst)  # NaN: no bound holds
            total += float(np.sum(diff))
            count += diff.size
            scale = max(scale, float(np.max(np.abs(y))))
    return PrecisionError(max_abs, total / count if count else 0.0, scale, len(feeds), count)


def _run_all(
    model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], extra_outputs: Sequence[str] = ()
) -> list[dict[str, np.ndarray]]:
    """Every output (and the named intermediate tensors) of one session, for each feed."""
    return run_feeds(_with_outputs(model, extra_outputs) if extra_outputs else model, feeds, _SESSION)


def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in present:
            exposed.graph.output.append(onnx.ValueInfoProto(name=name))  # onnxruntime infers the type
            present.add(name)
    return exposed


# --- float16 --------------------------------------------------------------------------------------


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """float16 weights and compute, with the graph's float32 inputs and outputs kept float32 (Casts
    at the edges). `model` is not changed. Weights beyond float16's range (±65504) are clamped by
    the converter: a `DeconvWarning` says how many."""
    _require_float32_io(model, "fp16")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    clamped = _beyond_float16(model)
    if clamped:
        warnings.warn(
            DeconvWarning(
                f"{clamped} weight value{'s' * (clamped != 1)} beyond float16's range (±{FLOAT16_MAX:g}) "
                "will be clamped to it in the fp16 model"
            ),
            stacklevel=2,
        )
    source = onnx.ModelProto()
    source.CopyFrom(model)  # the converter edits the graph it is given when shape inference is off
    with _quiet_onnxruntime():
        converted: onnx.ModelProto = convert_float_to_float16(source, keep_io_types=True)
    # The converter appends the input Casts after the nodes that read them; onnx.checker (unlike
    # onnxruntime) requires topological order (onnxruntime 1.31's transformers/float16.py).
    _sort_nodes(converted.graph)
    try:
        onnx.checker.check_model(converted)
    except onnx.checker.ValidationError as exc:
        raise InternalError(f"the float16 model fails the ONNX checker: {exc}") from exc
    return converted


def _require_float32_io(model: onnx.ModelProto, precision: str) -> None:
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        initialized = {init.name for init in model.graph.initializer}
        for value in values:
            if value.name in initialized:
                continue
            elem = value.type.tensor_type.elem_type
            if elem != onnx.TensorProto.FLOAT:
                name = onnx.TensorProto.DataType.Name(elem).lower() if elem else "not a tensor"
                raise PrecisionUnsupported(
                    f"--precision {precision} converts float32 models; the model's {kind} "
                    f"{shown(value.name)} is {name}: compile it with dtype float32"
                )


def _beyond_float16(model: onnx.ModelProto) -> int:
    count = 0
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            values = numpy_helper.to_array(init)
            count += int(np.count_nonzero(np.abs(values[np.isfinite(values)]) > FLOAT16_MAX))
    return count


def _sort_nodes(graph: onnx.GraphProto) -> None:
    """Reorder `graph.node` topologically, keeping the given order among nodes that are ready."""
    known = {v.name for v in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(name in known for name in node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise InternalError(f"float16 graph has a cycle or a missing tensor at {waiting[0].name!r}")
        pending = waiting
    copies = [onnx.NodeProto() for _ in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


# --- calibration data -----------------------------------------------------------------------------


def read_calibration(
    path: Path,
    inputs: Sequence[RunInput],
    max_batch: int = DEFAULT_MAX_BATCH,
    limit: int = MAX_INPUT_BYTES,
) -> list[dict[str, np.ndarray]]:
    """Feeds from an .npz holding one array per model input, named after it, whose first axis
    counts samples (a single-input model may take an .npy). Names, ranks and every fixed size are
    checked against the model's inputs before any data is read, and every problem is said at once
    (`CalibrationError`). A fixed batch size B splits the samples into feeds of B (the count must
    be a multiple of B); a dynamic one into feeds of up to `max_batch`."""
    if not inputs:
        raise CalibrationError(f"calibration data {path}: the model has no inputs to calibrate")
    try:
        with open_array_file(path, str(path), limit) as arrays:
            members = _calibration_members(path, arrays.names, arrays.kind, inputs)
            headers = {name: arrays.header(member) for name, member in members.items()}
            samples = _check_calibration_shapes(path, headers, inputs, arrays.kind)
            data = {
                i.name: arrays.read(members[i.name], headers[i.name]).astype(i.dtype, copy=False)
                for i in inputs
            }
    except ArrayFileError as exc:
        raise CalibrationError(f"cannot read calibration data {exc}") from None
    except MemoryError:
        raise CalibrationError(f"cannot read calibration data {path}: not enough memory") from None
    return _split(data, samples, _feed_size(inputs, max_batch))


def _calibration_members(
    path: Path, names: tuple[str, ...], kind: str, inputs: Sequence[RunInput]
) -> dict[str, str]:
    """Model input name → array name in the file, or every missing and extra array at once."""
    wanted = [i.name for i in inputs]
    if kind == "npy":
        if len(inputs) == 1:
            return {inputs[0].name: ""}
        raise CalibrationError(
            f"calibration data {path} is a single .npy array; the model has {len(inputs)} inputs "
            f"({', '.join(map(shown, wanted))}): give an .npz with one array per input, named after it"
        )
    problems = [
        f"calibration data {path} has no array named {shown(i.name)} (the model's input, "
        f"shape {_shape_text(i.dims)})"
        for i in inputs
        if i.name not in names
    ]
    problems += [
        f"calibration data {path}: array {shown(name)} is not an input of the model "
        f"(its inputs: {', '.join(map(shown, wanted))})"
        for name in names
        if name not in wanted
    ]
    if problems:
        raise CalibrationError("\n".join(problems))
    return {name: name for name in wanted}


def _check_calibration_shapes(
    path: Path, headers: Mapping[str, Any], inputs: Sequence[RunInput], kind: str
) -> int:
    """The number of samples, the same in every array, after every array's shape was checked."""
    problems, counts = [], {}
    for model_input in inputs:
        shape: tuple[int, ...] = headers[model_input.name].shape
        label = f"calibration data {path}" + (f": array {shown(model_input.name)}" if kind == "npz" else "")
        expected = f"the model's input {shown(model_input.name)} expects {_shape_text(model_input.dims)}"
        if not model_input.dims:
            problems.append(
                f"{label}: the model's input {shown(model_input.name)} is a scalar (no batch axis)"
            )
            continue
        fits = len(shape) == len(model_input.dims) and all(
            d is None or d == s for d, s in zip(model_input.dims[1:], shape[1:], strict=True)
        )
        if not fits:
            problems.append(f"{label} has shape {_tuple_text(shape)}; {expected}")
            continue
        batch = model_input.dims[0]
        if shape[0] == 0:
            problems.append(f"{label} holds no samples (its first axis is 0); {expected}")
        elif batch is not None and shape[0] % batch:
            problems.append(
                f"{label} holds {shape[0]} samples; the model's input {shown(model_input.name)} has a fixed "
                f"batch size of {batch}, so the count must be a multiple of {batch}"
            )
        else:
            counts[model_input.name] = shape[0]
    if not problems and len(set(counts.values())) > 1:
        listed = ", ".join(f"{shown(name)}: {count}" for name, count in counts.items())
        problems.append(f"calibration data {path}: the arrays hold different numbers of samples ({listed})")
    if problems:
        raise CalibrationError("\n".join(problems))
    return next(iter(counts.values()))


def random_calibration(
    inputs: Sequence[RunInput],
    count: int = DEFAULT_RANDOM_SAMPLES,
    seed: int = 0,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> list[dict[str, np.ndarray]]:
    """`count` samples (rounded up to whole batches) of standard normal data per input, split into
    feeds as `read_calibration` does. Every non-batch size must be fixed and every input a float
    tensor, else `CalibrationError` says to give calibration data. Callers should warn that the
    ranges found on random data may not be the ones real inputs have."""
    problems = []
    for model_input in inputs:
        dims = model_input.dims
        if not dims or any(d is None for d in dims[1:]):
            problems.append(
                f"input {shown(model_input.name)} has shape {_shape_text(dims)}, with dynamic sizes: random "
                "calibration data needs fixed sizes; give --calibration data.npz (one array per input, "
                "samples first) or fix the input's shape (--fix-shape)"
            )
        elif model_input.dtype.kind != "f":
            problems.append(
                f"input {shown(model_input.name)} is {model_input.dtype}: random calibration data is drawn "
                "for float inputs only; give --calibration data.npz"
            )
    if problems:
        raise CalibrationError("\n".join(problems))
    feed = _feed_size(inputs, max_batch)
    samples = max(1, math.ceil(count / feed)) * feed
    sizes = {i.name: tuple(d for d in i.dims[1:] if d is not None) for i in inputs}  # all fixed: checked
    nbytes = sum(samples * math.prod(sizes[i.name]) * i.dtype.itemsize for i in inputs)
    if nbytes > MAX_INPUT_BYTES:
        raise CalibrationError(
            f"random calibration data for {samples} samples would take {nbytes:,} bytes; the limit is "
            f"{MAX_INPUT_BYTES:,}: give fewer samples or --calibration data.npz"
        )
    rng = np.random.default_rng(seed)
    data = {i.name: rng.standard_normal((samples, *sizes[i.name])).astype(i.dtype) for i in inputs}
    return _split(data, samples, feed)


def _feed_size(inputs: Sequence[RunInput], max_batch: int) -> int:
    """Samples per feed: the model's fixed batch size, else `max_batch`."""
    fixed = sorted({d for i in inputs for d in i.dims[:1] if d is not None})
    if len(fixed) > 1:
        raise CalibrationError(f"the model's inputs have different fixed batch sizes ({fixed})")
    return fixed[0] if fixed else max_batch


def _split(data: Mapping[str, np.ndarray], samples: int, size: int) -> list[dict[str, np.ndarray]]:
    return [
        {name: array[start : start + size] for name, array in data.items()}
        for start in range(0, samples, size)
    ]


def _shape_text(dims: Sequence[int | None]) -> str:
    """A model input's shape in messages: the batch axis as `samples` (its fixed size noted), dynamic
    sizes as None."""
    if not dims:
        return "()"
    batch = "samples" if dims[0] is None else f"samples (a multiple of {dims[0]})"
    return "(" + ", ".join([batch, *("None" if d is None else str(d) for d in dims[1:])]) + ")"


def _tuple_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


# --- int8 -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Int8Settings:
    """onnxruntime quantization types (`uint8` / `int8`) and whether weights use 7 bits."""

    reduce_range: bool
    activation_type: str
    weight_type: str
    reason: str  # one sentence for the summary


_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def int8_settings(
    flags: Iterable[str] | None = None, machine: str | None = None, cpuinfo: Path = Path("/proc/cpuinfo")
) -> Int8Settings:
    """Settings whose integer kernels do not saturate on this CPU (or on one with `flags`, as
    /proc/cpuinfo lists them, read from `cpuinfo` when not given, and `machine`, as
    platform.machine() names it). On x86 without VNNI, onnxruntime's uint8 x int8 kernels use
    (v)pmaddubsw, which adds pairs of u8*s8 products into a saturating int16 (2*255*127 > 32767):
    weights then take 7 bits (reduce_range: 2*255*63 fits). VNNI accumulates in int32. ARM kernels
    accumulate in 32 bits, and onnxruntime recommends signed activations there. Any other CPU, or
    flags that cannot be read, gets the choice that cannot saturate."""
    arch = (machine if machine is not None else platform.machine()).lower()
    if arch in ("aarch64", "arm64") or arch.startswith("armv"):
        return Int8Settings(
            False, "int8", "int8", "ARM CPU: int8 activations and weights, full range (32-bit accumulation)"
        )
    safe = "7-bit weights (reduce_range), the choice that cannot saturate"
    if arch not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return Int8Settings(True, "uint8", "int8", f"{arch or 'unknown'} CPU: {safe}")
    found = frozenset(flags) if flags is not None else _cpu_flags(cpuinfo)
    if found is None:
        return Int8Settings(True, "uint8", "int8", f"x86 CPU features unknown (no {cpuinfo}): {safe}")
    vnni = [flag for flag in _VNNI_FLAGS if flag in found]
    if vnni:
        return Int8Settings(
            False, "uint8", "int8", f"CPU has VNNI ({vnni[0]}): uint8 activations, full 8-bit int8 weights"
        )
    simd = "AVX2" if "avx2" in found else "x86 CPU"
    return Int8Settings(
        True,
        "uint8",
        "int8",
        f"{simd} without VNNI: onnxruntime's uint8 x int8 kernels saturate 16-bit sums, "
        "so weights take 7 bits (reduce_range)",
    )


def _cpu_flags(cpuinfo: Path) -> frozenset[str] | None:
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


@dataclass(frozen=True)
class FloatNode:
    """A node `to_int8` left in float, and why."""

    name: str
    op_type: str
    reason: str


@dataclass(frozen=True, eq=False)
class Int8Model:
    model: onnx.ModelProto
    settings: Int8Settings
    kept_float: tuple[FloatNode, ...]
    error: PrecisionError  # against the float32 model, on the calibration feeds
    tolerance: float  # the relative error that was aimed at
    per_channel: bool
    quantizations: int  # quantizer runs it took

    @property
    def float_nodes(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.kept_float)

    @property
    def within_tolerance(self) -> bool:
        return self.error.relative <= self.tolerance


def to_int8(
    model: onnx.ModelProto,
    calibration: Sequence[Mapping[str, np.ndarray]],
    settings: Int8Settings,
    tolerance: float = DEFAULT_TOLERANCE,
    max_fallbacks: int = MAX_FLOAT_FALLBACKS,
    per_channel: bool = True,
) -> Int8Model:
    """`model` quantized by onnxruntime (static, QDQ, calibrated with MinMax on `calibration`).
    ConvTranspose nodes stay float. While the error against `model` on the calibration feeds is
    above `tolerance` (relative to scale), the quantized node whose output error grows most over its
    inputs' stays float too, at most `max_fallbacks` times; the most accurate model tried is kept.
    `model` is not changed; its nodes need names (ours have them)."""
    _require_float32_io(model, "int8")
    if not calibration:
        raise CalibrationError("int8 quantization needs at least one calibration feed")
    unnamed = [i for i, node in enumerate(model.graph.node) if not node.name]
    if unnamed:
        raise PrecisionUnsupported(
            f"--precision int8 keeps nodes in float by name; node #{unnamed[0]} "
            f"({model.graph.node[unnamed[0]].op_type}) has no name"
        )
    # onnxruntime 1.31's CPU provider has no int8 ConvTranspose kernel: on a QDQ model its optimized
    # graph keeps DequantizeLinear → ConvTranspose (float) → QuantizeLinear, so the QDQ pairs only
    # round (seen on volume_3d_channels_first: 1.17 % of scale with them, 0.93 % without).
    kept = [
        FloatNode(
            node.name,
            node.op_type,
            "onnxruntime's CPU provider has no int8 ConvTranspose kernel (quantizing only adds rounding)",
        )
        for node in model.graph.node
        if node.op_type == "ConvTranspose"
    ]
    tried: list[tuple[PrecisionError, onnx.ModelProto, tuple[FloatNode, ...]]] = []
    while True:
        quantized = _quantize(model, calibration, settings, [n.name for n in kept], per_channel)
        error = precision_error(model, quantized, calibration)
        tried.append((error, quantized, tuple(kept)))
        if error.relative <= tolerance or len(tried) > max_fallbacks:
            break
        worst = _worst_node(model, quantized, calibration[:_DEBUG_FEEDS], {n.name for n in kept})
        if worst is None:
            break
        node, added = worst
        if added <= _NOTHING_ADDED:
            break  # no node adds error of its own: the rest is the inputs' and outputs' rounding
        kept.append(
            FloatNode(
                node.name,
                node.op_type,
                f"int8 added {added:.2%} of its output's scale (whole model: {error.relative:.2%} "
                f"> tolerance {tolerance:.2%})",
            )
        )
    best_error, best_model, best_kept = min(tried, key=lambda entry: entry[0].relative)
    return Int8Model(best_model, settings, best_kept, best_error, tolerance, per_channel, len(tried))


def _quantize(
    model: onnx.ModelProto,
    calibration: Sequence[Mapping[str, np.ndarray]],
    settings: Int8Settings,
    exclude: Sequence[str],
    per_channel: bool,
) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    with tempfile.TemporaryDirectory(prefix="deconvc-int8-") as folder:
        source, target = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        onnx.save(model, source)
        try:
            with _quiet_onnxruntime():
                quantize_static(
                    str(source),
                    str(target),
                    _FeedReader(calibration),
                    quant_format=QuantFormat.QDQ,
                    per_channel=per_channel,
                    reduce_range=settings.reduce_range,
                    activation_type=types[settings.activation_type],
                    weight_type=types[settings.weight_type],
                    nodes_to_exclude=list(exclude),
                )
        except (DeconvError, MemoryError):
            raise
        except Exception as exc:  # the quantizer raises ValueError, RuntimeError, onnxruntime errors...
            raise RuntimeFailure(f"onnxruntime's quantizer failed: {first_line(exc)}") from exc
        return onnx.load(str(target))


class _FeedReader:
    """onnxruntime's CalibrationDataReader protocol (`get_next`), over feeds in memory."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
        self._feeds: Iterator[Mapping[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._feeds, None)
        return None if feed is None else dict(feed)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.get_next, None)

    def __next__(self) -> dict[str, np.ndarray]:
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed


def _worst_node(
    reference: onnx.ModelProto,
    quantized: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    excluded: set[str],
) -> tuple[onnx.NodeProto, float] | None:
    """The quantized node whose output error (after its QuantizeLinear/DequantizeLinear, relative to
    the float tensor's max) exceeds its inputs' the most, and by how much; None when no node of
    `reference` is quantized. One run of each model with intermediate outputs, no re-quantization."""
    float_nodes = {node.name: node for node in reference.graph.node}
    produced_by_dq = {node.output[0] for node in quantized.graph.node if node.op_type == "DequantizeLinear"}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in quantized.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    float_consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in reference.graph.node:
        for name in node.input:
            float_consumers.setdefault(name, []).append(node)
    kept = {node.name for node in quantized.graph.node}
    initialized = {init.name for init in reference.graph.initializer}
    pairs: list[tuple[str, str]] = []  # (float tensor, its quantized counterpart)
    candidates: list[tuple[onnx.NodeProto, list[int], list[int]]] = []
    for node in quantized.graph.node:
        original = float_nodes.get(node.name)
        if original is None or node.name in excluded or not any(i in produced_by_dq for i in node.input):
            continue
        ins, outs = [], []
        for float_name, q_name in zip(original.input, node.input, strict=True):
            if float_name and float_name not in initialized:
                ins.append(len(pairs))
                pairs.append((float_name, q_name))
        for float_name, q_name in zip(original.output, node.output, strict=True):
            outs.append(len(pairs))
            pairs.append((_past_removed(float_name, float_consumers, kept), _after_qdq(q_name, consumers)))
        candidates.append((original, ins, outs))
    if not candidates:
        return None
    graph_inputs = {v.name for v in reference.graph.input}
    float_runs = _run_all(reference, feeds, [f for f, _ in pairs if f not in graph_inputs])
    quant_runs = _run_all(quantized, feeds, [q for _, q in pairs if q not in graph_inputs])
    errors = []
    for float_name, q_name in pairs:
        diff = scale = 0.0
        for feed, want_run, got_run in zip(feeds, float_runs, quant_runs, strict=True):
            want = feed[float_name] if float_name in graph_inputs else want_run[float_name]
            got = feed[q_name] if q_name in graph_inputs else got_run[q_name]
            if want.size:
                diff = max(diff, float(np.max(np.abs(got.astype(np.float64) - want))))
                scale = max(scale, float(np.max(np.abs(want))))
        errors.append(diff / scale if scale else diff)
    scored = [
        (max(errors[o] for o in outs) - max((errors[i] for i in ins), default=0.0), node)
        for node, ins, outs in candidates
    ]
    added, node = max(scored, key=lambda entry: entry[0])
    return node, added


def _past_removed(name: str, consumers: Mapping[str, list[onnx.NodeProto]], kept: set[str]) -> str:
    """The float tensor that `name`'s quantized form stands for: the quantizer removes a Relu or Clip
    that is a tensor's only reader (the QuantizeLinear's range clips instead), so the quantized
    tensor matches that activation's output, not its input."""
    while len(readers := consumers.get(name, [])) == 1 and readers[0].op_type in ("Relu", "Clip"):
        if readers[0].name in kept:
            break
        name = readers[0].output[0]
    return name


def _after_qdq(name: str, consumers: Mapping[str, list[onnx.NodeProto]]) -> str:
    """The tensor that carries `name` once quantized: QuantizeLinear then DequantizeLinear, if any."""
    for q in consumers.get(name, []):
        if q.op_type == "QuantizeLinear":
            for dq in consumers.get(q.output[0], []):
                if dq.op_type == "DequantizeLinear":
                    return str(dq.output[0])
    return name


@contextmanager
def _quiet_onnxruntime() -> Iterator[None]:
    """Silence onnxruntime's Python tools while they run: they log advice ("consider pre-processing")
    with the root logger, which would also install a stderr handler on it (logging.basicConfig) when
    it has none, and some versions warn. A NullHandler keeps the root logger's configuration as it is."""
    root = logging.getLogger()
    guard = logging.NullHandler()
    previous = root.manager.disable
    root.addHandler(guard)
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
        root.removeHandler(guard)


__all__: list[str] = [
    "CalibrationError",
    "FloatNode",
    "Int8Model",
    "Int8Settings",
    "PrecisionError",
    "PrecisionUnsupported",
    "int8_settings",
    "precision_error",
    "random_calibration",
    "read_calibration",
    "to_float16",
    "to_int8",
]
