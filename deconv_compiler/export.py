"""A source (spec, saved Keras model or `.onnx` file) + `ExportOptions` → a folder a deployment
pipeline takes as it is, and an `ExportReport` of what was written and how well it computes.

    source ──compile (or load)──▶ interface ──metadata──▶ precision ──▶ format ──▶ folder ──▶ verify

- interface: fixed input sizes and names (`model_interface`), before anything is measured.
- metadata: a doc string, the source's name and SHA-256, the Keras version that saved it, and the
  user's `--metadata key=value` pairs; `deconvc inspect` shows them.
- precision: fp32 as compiled; fp16 with float32 inputs and outputs; int8 as QDQ calibrated on the
  user's arrays or on random ones (`precision`), with the error against fp32 measured.
- format: `.onnx`, with its weights in `NAME.onnx.data` once they pass `external_data_above`
  (ONNX's external-data format has no 2 GiB limit), or onnxruntime's `.ort` (`ort_format`).
- folder: `DIR/NAME.onnx` (or `.ort`), or a Triton model repository `DIR/NAME/config.pbtxt` +
  `DIR/NAME/1/model.onnx` (`triton_config`). It is written through `output_file.atomic_directory`:
  all of it or none of it, and a previous folder stays intact unless the export succeeds.
- verify: before the folder is published, its model is loaded from the written files by
  onnxruntime and run once, which also tells which provider runs each node.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from deconv_compiler import __version__
from deconv_compiler.errors import DeconvError, shown
from deconv_compiler.ir import KerasOrigin
from deconv_compiler.limits import MAX_WEIGHT_BYTES
from deconv_compiler.metadata import SOURCE
from deconv_compiler.model_file import (
    DetachedModel,
    detach,
    with_external_data,
    write_external_data,
)
from deconv_compiler.options import (
    EXTERNAL_DATA_ABOVE,
    FORMATS,
    METADATA_KEY,
    MODEL_NAME,
    PRECISIONS,
    RESERVED_PREFIX,
    CompileOptions,
)
from deconv_compiler.output_file import atomic_directory, check_output_directory

if TYPE_CHECKING:
    from deconv_compiler.ort_format import MobileCoverage
    from deconv_compiler.precision import PrecisionError
    from deconv_compiler.triton_config import TritonSettings
    from deconv_compiler.tuning import TuneCache, TuneProgress

PROTOBUF_LIMIT = 2**31 - 1  # what one protobuf message (an in-memory conversion) can hold


class ExportError(DeconvError):
    """An export the options or the model do not allow."""


@dataclass(frozen=True)
class ExportOptions:
    """- `format`: `onnx` or `ort` (onnxruntime's format for its mobile and web packages).
    - `precision`: `fp32`, `fp16` (float32 inputs and outputs) or `int8` (QDQ, calibrated on
      `calibration`, an `.npz` by input name, else on random data).
    - `name`: the model's file (and Triton) name; None: the source's file name without suffix.
    - `triton`: write a Triton model repository (its settings' `name` is replaced by the model's).
    - `metadata`: the user's key/value pairs (keys starting with `deconv_compiler.` are ours).
    - `external_data_above`: weights beyond this many bytes go to `NAME.onnx.data`.
    - `overwrite`: replace a folder that exists and is not empty."""

    format: str = "onnx"
    precision: str = "fp32"
    calibration: Path | None = None
    name: str | None = None
    triton: TritonSettings | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    external_data_above: int = EXTERNAL_DATA_ABOVE
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ExportError(f"unknown format {shown(self.format)}: choose {', '.join(FORMATS)}")
        if self.precision not in PRECISIONS:
            raise ExportError(f"unknown precision {shown(self.precision)}: choose {', '.join(PRECISIONS)}")
        if self.calibration is not None and self.precision != "int8":
            raise ExportError(f"--calibration is for --precision int8, not {self.precision}")
        if self.triton is not None and self.format != "onnx":
            raise ExportError(
                "--triton writes an .onnx model (onnxruntime_onnx); it does not take --format ort"
            )
        if self.name is not None and not MODEL_NAME.fullmatch(self.name):
            raise ExportError(
                f"--name {shown(self.name)}: use letters, digits, _ . - "
                "(no folders, not starting with . or -)"
            )
        keys = [key for key, _ in self.metadata]
        for key in keys:
            if not METADATA_KEY.fullmatch(key):
                raise ExportError(f"--metadata {shown(key)}: a key is a name (letters, digits, _ . : / -)")
            if key.startswith(RESERVED_PREFIX):
                raise ExportError(
                    f"--metadata {shown(key)}: keys starting with {RESERVED_PREFIX} are the compiler's"
                )
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise ExportError(f"--metadata: {', '.join(map(shown, repeated))} given twice")
        if self.external_data_above < 1:
            raise ExportError("--external-data-above must be a positive size")


@dataclass(frozen=True)
class WrittenFile:
    path: Path  # inside the export folder, as published
    size: int


@dataclass(frozen=True)
class Placement:
    """Which provider ran the nodes of the exported model when it was verified."""

    provider: str  # cpu | cuda
    nodes: int  # nodes of the exported graph
    cpu_fallbacks: tuple[str, ...] = ()  # op:name of nodes a CUDA session left on the CPU
    note: str = ""  # why the requested provider was not checked

    @property
    def text(self) -> str:
        if self.note:
            return self.note
        if self.provider == "cpu":
            return f"CPU provider: all {self.nodes} nodes"
        if not self.cpu_fallbacks:
            return f"CUDA provider: all {self.nodes} nodes"
        return (
            f"CUDA provider: {self.nodes - len(self.cpu_fallbacks)}/{self.nodes} nodes; on the CPU: "
            + ", ".join(self.cpu_fallbacks)
        )


@dataclass(frozen=True)
class ExportReport:
    folder: Path
    model_file: Path
    files: tuple[WrittenFile, ...]
    format: str
    precision: str
    target: str
    error: PrecisionError | None  # against fp32 (None: fp32)
    error_inputs: str  # what the error was measured on
    int8_settings: str  # why these int8 settings (empty unless int8)
    float_nodes: tuple[tuple[str, str], ...]  # int8: (node, why) of the nodes kept in float
    placement: Placement
    mobile: MobileCoverage | None
    warnings: tuple[str, ...] = ()

    @property
    def external_data(self) -> bool:
        """Whether the weights went to a `.data` file beside the model."""
        return any(f.path.name.endswith(".data") for f in self.files)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "folder": str(self.folder),
            "model": str(self.model_file),
            "files": [{"path": str(f.path), "bytes": f.size} for f in self.files],
            "format": self.format,
            "precision": self.precision,
            "target": self.target,
            "external_data": self.external_data,
            "placement": {
                "provider": self.placement.provider,
                "nodes": self.placement.nodes,
                "cpu_fallbacks": list(self.placement.cpu_fallbacks),
                "note": self.placement.note,
            },
            "warnings": list(self.warnings),
        }
        if self.error is not None:
            data["error_vs_fp32"] = {
                "max_abs": self.error.max_abs,
                "mean_abs": self.error.mean_abs,
                "scale": self.error.scale,
                "relative": self.error.relative,
                "inputs": self.error_inputs,
            }
        if self.precision == "int8":
            data["int8"] = {
                "settings": self.int8_settings,
                "float_nodes": [{"node": node, "why": why} for node, why in self.float_nodes],
            }
        if self.mobile is not None:
            data["mobile"] = self.mobile.to_json()
        return data


@dataclass(frozen=True)
class Tuning:
    """What `--strategy tune` is given: recorded choices to reuse, and a progress callback."""

    cache: TuneCache | None = None
    progress: TuneProgress | None = None


@dataclass(frozen=True)
class Source:
    """What is exported: the model (weights detached) and the files it was read from."""

    model: DetachedModel
    files: tuple[Path, ...]
    keras_version: str | None = None
    kind: str = "spec"


def export_model(
    path: Path,
    folder: Path,
    options: ExportOptions | None = None,
    compile_options: CompileOptions | None = None,
    weights: Path | None = None,
    weights_root: Path | None = None,
    max_weight_bytes: int = MAX_WEIGHT_BYTES,
    tuning: Tuning | None = None,
) -> ExportReport:
    """Export the model at `path` into `folder` (see the module's stages); nothing is left at
    `folder` unless everything succeeded. `tuning`: the cache and progress of `--strategy tune`."""
    options = options or ExportOptions()
    compile_options = (compile_options or CompileOptions()).resolved()
    given = (path,) if weights is None else (path, weights)
    name = options.name or _stem(path)
    # A Triton repository that exists already gets one more model: the model's folder is the
    # unit written all or nothing. Anything else: the whole folder is.
    base = Path(name) if options.triton is not None and folder.is_dir() else Path()
    check_output_directory(folder / base, given, options.overwrite)  # before the work
    source = _read_source(path, compile_options, weights, weights_root, max_weight_bytes, tuning or Tuning())
    _stamp(source, options)
    warnings: list[str] = []
    lowering = replace(compile_options, target="cpu", interface=CompileOptions().interface)
    if source.kind == "onnx" and lowering != CompileOptions():
        warnings.append(
            f"{path.name} is an ONNX model, exported as it is: --strategy, --opset, --dtype and --seed "
            "lower specs and Keras models and were not applied"
        )
    converted = _converted(source, options, warnings)
    target = compile_options.target
    checked = options.format == "ort" or target == "mobile"  # by the mobile usability checker
    whole = _whole(converted.model, options.format == "ort") if checked else None
    with atomic_directory(folder / base, source.files, options.overwrite) as scratch:
        written, model_file = _write(scratch, base, name, converted.model, whole, options, target)
        placement = _verify(
            scratch / model_file.relative_to(base), converted.model.model, target, converted.feeds
        )
        mobile = _mobile(converted.model, whole) if checked else None
        files = tuple(WrittenFile(folder / f, size) for f, size in written)
    return ExportReport(
        folder=folder,
        model_file=folder / model_file,
        files=files,
        format=options.format,
        precision=options.precision,
        target=compile_options.target,
        error=converted.error,
        error_inputs=converted.error_inputs,
        int8_settings=converted.int8_settings,
        float_nodes=converted.float_nodes,
        placement=placement,
        mobile=mobile,
        warnings=tuple(warnings),
    )


# --- source ---------------------------------------------------------------------------------------


def _read_source(
    path: Path,
    options: CompileOptions,
    weights: Path | None,
    weights_root: Path | None,
    max_weight_bytes: int,
    tuning: Tuning,
) -> Source:
    from deconv_compiler.frontend import file_kind, load_model

    kind = file_kind(path, weights)
    if kind == "onnx":
        from deconv_compiler.inspection import external_data_files, load_onnx
        from deconv_compiler.model_interface import apply_interface

        model = load_onnx(path, external_data_needed=True)
        apply_interface(model, options.interface)
        return Source(detach(model), (path, *external_data_files(model, path)), kind="onnx")
    from deconv_compiler.compiler import compile_detached

    graph = load_model(path, weights, max_weight_bytes, kind, weights_root)
    keras_version = graph.origin.keras_version if isinstance(graph.origin, KerasOrigin) else None
    built = compile_detached(graph, options, tuning.cache, tuning.progress)
    return Source(built, graph.sources, keras_version, kind)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".weights.h5", ".keras", ".h5", ".hdf5", ".onnx", ".yaml", ".yml", ".json"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".-")
    return cleaned or "model"


def _stamp(source: Source, options: ExportOptions) -> None:
    """The metadata every export carries (in place, on the weightless model)."""
    model = source.model.model
    what = {"spec": "a layer spec", "keras": "a saved Keras model", "onnx": "an ONNX model"}[source.kind]
    model.doc_string = (
        f"{model.graph.name or 'model'}: exported by deconv-compiler {__version__} from {what} "
        f"({source.files[0].name}), precision {options.precision}"
    )
    described = {
        "file": source.files[0].name,
        "sha256": _sha256(source.files[0]),
        "kind": source.kind,
        "precision": options.precision,
    }
    if source.keras_version is not None:
        described["keras_version"] = source.keras_version
    if source.kind == "keras" and len(source.files) > 1 and source.files[1].suffix.lower() in (".h5", ".npz"):
        described["weights_sha256"] = _sha256(source.files[1])
    entries = [(SOURCE, json.dumps(described, sort_keys=True)), *options.metadata]
    kept = [p for p in model.metadata_props if p.key not in {key for key, _ in entries}]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries:
        model.metadata_props.add(key=key, value=value)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- precision ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Converted:
    model: DetachedModel
    feeds: tuple[Mapping[str, np.ndarray], ...] = ()  # inputs the error was measured on
    error: PrecisionError | None = None
    error_inputs: str = ""
    int8_settings: str = ""
    float_nodes: tuple[tuple[str, str], ...] = ()


def _converted(source: Source, options: ExportOptions, warnings: list[str]) -> _Converted:
    if options.precision == "fp32":
        return _Converted(source.model)
    from deconv_compiler import precision
    from deconv_compiler.inspection import run_inputs

    fp32 = _attached(source.model, f"--precision {options.precision}")
    inputs = run_inputs(fp32, source.files[0])
    if options.calibration is not None:
        feeds = precision.read_calibration(options.calibration, inputs)
        measured_on = f"{options.calibration.name}, {_samples(feeds)} samples"
    elif options.precision == "fp16" and any(None in i.dims[1:] for i in inputs):
        feeds = [_probe_feed(fp32)]  # fp16 needs no calibration: any size measures its error
        measured_on = f"1 random sample, dynamic sizes taken as {PROBE_SPATIAL}"
    else:
        feeds = precision.random_calibration(inputs)
        measured_on = f"{_samples(feeds)} random samples"
        if options.precision == "int8":
            warnings.append(
                "int8 calibrated on random data: give --calibration FILE.npz with real inputs "
                "(one array per input, by name, samples on the first axis) for a faithful model"
            )
    float_nodes: tuple[tuple[str, str], ...] = ()
    if options.precision == "fp16":
        converted, settings = precision.to_float16(fp32), ""
    else:
        result = precision.to_int8(fp32, feeds, precision.int8_settings())
        converted, settings = result.model, result.settings.reason
        float_nodes = tuple((kept.name, kept.reason) for kept in result.kept_float)
    error = precision.precision_error(fp32, converted, feeds)
    return _Converted(
        model=detach(converted),  # empties `converted`: measured first
        feeds=tuple(feeds),
        error=error,
        error_inputs=measured_on,
        int8_settings=settings,
        float_nodes=float_nodes,
    )


def _samples(feeds: Sequence[Mapping[str, np.ndarray]]) -> int:
    """Samples in the feeds: the first axis of each feed's first array."""
    return sum(next(iter(feed.values())).shape[0] for feed in feeds if feed)


def _attached(detached: DetachedModel, what: str) -> onnx.ModelProto:
    """The complete model, for converters that need the weights inline (within protobuf's limit)."""
    total = sum(array.nbytes for array in detached.arrays.values())
    if total + detached.model.ByteSize() >= PROTOBUF_LIMIT:
        raise ExportError(
            f"{what}: the model's weights take {total / 2**30:.1f} GiB; that conversion needs the model "
            "in one protobuf (under 2 GiB); export it as fp32 .onnx (its weights go to external data)"
        )
    model = onnx.ModelProto()
    model.CopyFrom(detached.model)
    for tensor in model.graph.initializer:
        array = detached.arrays.get(tensor.name)
        if array is not None:
            tensor.raw_data = array.tobytes()
    return model


# --- files ----------------------------------------------------------------------------------------


def _whole(model: DetachedModel, needed: bool) -> onnx.ModelProto | None:
    """The model with its weights inline, made once for what needs it: the ORT-format writer
    (`needed`: refused past protobuf's limit) and the mobile checker (None past it)."""
    if needed:
        return _attached(model, "--format ort")
    total = sum(array.nbytes for array in model.arrays.values())
    return _attached(model, "") if total + model.model.ByteSize() < PROTOBUF_LIMIT else None


def _write(
    scratch: Path,
    base: Path,
    name: str,
    model: DetachedModel,
    whole: onnx.ModelProto | None,
    options: ExportOptions,
    target: str,
) -> tuple[list[tuple[Path, int]], Path]:
    """Write the model (and the Triton config) into `scratch`, which stands for the folder `base`
    of the output; the files (paths relative to the output) and the model file's path. `whole`:
    the model with its weights inline, for the ORT format."""
    written: list[tuple[Path, int]] = []
    if options.triton is not None:
        from deconv_compiler.triton_config import repository_paths, triton_config

        config = triton_config(model.model, replace(options.triton, name=name)).encode()  # refusals first
        config_file, model_file = (Path(p) for p in repository_paths(name))
        (scratch / model_file.relative_to(base)).parent.mkdir(parents=True)
        written.append((config_file, _write_bytes(scratch / config_file.relative_to(base), [config])))
    else:
        model_file = Path(f"{name}.{options.format}")
    path = scratch / model_file.relative_to(base)
    weight_bytes = sum(array.nbytes for array in model.arrays.values())
    if options.format == "ort":
        from deconv_compiler.ort_format import to_ort_format

        assert whole is not None  # made for the ORT format
        data = to_ort_format(whole, target)
        written.append((model_file, _write_bytes(path, [data])))
    elif weight_bytes > options.external_data_above:
        data_name = f"{path.name}.data"
        weightless, placed = with_external_data(model, data_name)
        with open(path.with_name(data_name), "xb") as handle:
            write_external_data(handle, placed)
            _sync(handle)
        written.append((model_file, _write_bytes(path, [weightless.SerializeToString()])))
        written.append((model_file.with_name(data_name), path.with_name(data_name).stat().st_size))
    else:
        from deconv_compiler.compiler import file_bytes

        written.append((model_file, _write_bytes(path, file_bytes(model))))
    return written, model_file


def _write_bytes(path: Path, chunks: Sequence[bytes | memoryview]) -> int:
    with open(path, "xb") as handle:
        for chunk in chunks:
            handle.write(chunk)
        _sync(handle)
        return handle.tell()


def _sync(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())


# --- verification -------------------------------------------------------------------------------

PROBE_SPATIAL = 16  # the size of a dynamic non-batch dim in the verification run


def _verify(
    model_file: Path, model: onnx.ModelProto, target: str, feeds: Sequence[Mapping[str, np.ndarray]]
) -> Placement:
    """Load the written model from its files, as a user would, and run it once: on the CUDA
    provider for the cuda target (CPU fallbacks named), else on the CPU."""
    from deconv_compiler.runtime import SessionConfig, cuda_unavailable_reason, run_model

    provider, note = "cpu", ""
    if target == "cuda":
        reason = cuda_unavailable_reason()
        if reason is None:
            provider = "cuda"
        else:
            note = f"CUDA provider not checked here ({reason}); ran on the CPU provider"
    feed = dict(feeds[0]) if feeds else _probe_feed(model)
    result = run_model(
        model_file.read_bytes(),
        feed,
        SessionConfig(provider=provider),
        external_data_folder=model_file.parent,
    )
    nodes = len(model.graph.node)
    return Placement(provider, nodes, tuple(result.cpu_nodes), note)


def _probe_feed(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Standard-normal inputs: batch 1 and PROBE_SPATIAL for dynamic dims."""
    from deconv_compiler.inspection import run_inputs

    rng = np.random.default_rng(0)
    feed = {}
    for declared in run_inputs(model, model.graph.name or "model"):
        shape = tuple(
            size if size is not None else (1 if axis == 0 else PROBE_SPATIAL)
            for axis, size in enumerate(declared.dims)
        )
        if math.prod(shape) * declared.dtype.itemsize > 2**30:
            raise ExportError(
                f"input {shown(declared.name)} of {shape} is too large to verify the model on; fix its shape"
            )
        feed[declared.name] = rng.standard_normal(shape).astype(declared.dtype)
    return feed


def _mobile(model: DetachedModel, whole: onnx.ModelProto | None) -> MobileCoverage:
    """onnxruntime's mobile usability checker on the exported model: with its weights (`whole`),
    so that onnxruntime's basic optimizations fold what they fold on the phone; past protobuf's
    limit, with the weights as typed inputs instead."""
    from deconv_compiler.check import shape_view
    from deconv_compiler.ort_format import mobile_coverage

    return mobile_coverage(whole if whole is not None else shape_view(model.model))
