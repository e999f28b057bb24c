"""`.onnx` file → `onnx.ModelProto` → `ModelSummary` → text or JSON: what `deconvc inspect` shows.

Works on any ONNX model, not only ours: nothing here assumes our node names, metadata, opset or
op types, and every field of the proto that may be absent (names, shapes, attribute types of
old IR versions, metadata) has a defined rendering. Reading a file either gives a model that
has a graph and opsets, or raises `ModelFileError` with a one-line message; protobuf and OS
errors never escape. Nothing is executed and external tensor data is never read, so inspecting
is cheap and safe on untrusted files.

External data: every tensor that can name a file (graph initializers, sparse initializers, tensors
in node attributes, in the subgraphs of If/Loop/Scan at any depth, in model-local functions and in
training graphs) must name a regular file inside the model's own folder: a relative path without
`..`, with no symbolic link leading out of the folder. `load_onnx` refuses any other before any of
them is opened, so a model given to `inspect`, `run` or `bench` cannot make onnxruntime read a file
elsewhere. `run_inputs` says what a run must feed each graph input (a numeric tensor of a known
rank, sizes >= 0), or why it cannot.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
import stat
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TypeAlias

import numpy as np
import onnx

# No protobuf stubs in the dev set-up; `unused-ignore` keeps mypy quiet where types-protobuf is installed.
from google.protobuf.message import DecodeError  # type: ignore[import-untyped,unused-ignore]
from onnx import AttributeProto, TensorProto, helper

from deconv_compiler.errors import DeconvError, shown
from deconv_compiler.metadata import SPEC, read_metadata

Dim: TypeAlias = int | str | None  # a size, a symbolic name, or unknown
Shape: TypeAlias = tuple[Dim, ...] | None  # None: not even the rank is known


class ModelFileError(DeconvError):
    """A path given as an ONNX model is missing, unreadable, or not an ONNX model."""


@dataclass(frozen=True)
class TensorRef:
    """A tensor-valued attribute (e.g. Constant's `value`): what it is, never its data."""

    dtype: str
    shape: tuple[int, ...]
    sparse: bool = False


@dataclass(frozen=True)
class GraphRef:
    """A graph-valued attribute (If/Loop/Scan bodies): named and sized, not expanded."""

    name: str
    node_count: int


AttrValue: TypeAlias = (
    int | float | str | TensorRef | GraphRef | None | tuple[int | float | str | TensorRef | GraphRef, ...]
)


@dataclass(frozen=True)
class ValueSummary:
    """A graph input or output. `dtype` is a numpy dtype name ("float32") for tensors, or a
    type expression ("sequence<float32>") for the other ONNX types, whose `shape` is None."""

    name: str
    dtype: str
    shape: Shape


@dataclass(frozen=True)
class NodeSummary:
    name: str  # "" when the model leaves the node unnamed (allowed by ONNX)
    op_type: str
    domain: str  # "" is the default ai.onnx domain
    inputs: tuple[str, ...]  # "" marks an omitted optional input
    outputs: tuple[str, ...]
    attributes: Mapping[str, AttrValue]  # in file order; read-only


@dataclass(frozen=True)
class InitializerSummary:
    name: str
    dtype: str
    shape: tuple[int, ...]
    parameters: int  # stored elements: the product of the shape, or the non-zeros when sparse
    nbytes: int  # bytes of the stored values (logical size when the data lives outside the file)
    external: bool = False
    sparse: bool = False


@dataclass(frozen=True)
class OpsetSummary:
    domain: str
    version: int


@dataclass(frozen=True)
class ModelSummary:
    graph_name: str
    producer_name: str
    producer_version: str
    ir_version: int
    opsets: tuple[OpsetSummary, ...]
    domain: str
    model_version: int
    doc_string: str
    inputs: tuple[ValueSummary, ...]  # the real inputs: initializers listed as inputs (IR < 4) are left out
    outputs: tuple[ValueSummary, ...]
    nodes: tuple[NodeSummary, ...]
    initializers: tuple[InitializerSummary, ...]
    functions: tuple[str, ...]  # model-local functions as "domain:name"
    metadata: Mapping[str, Any]  # read-only; our spec (metadata.SPEC) parsed from JSON when it parses

    @property
    def parameter_count(self) -> int:
        return sum(init.parameters for init in self.initializers)

    @property
    def parameter_bytes(self) -> int:
        return sum(init.nbytes for init in self.initializers)


# --- reading -------------------------------------------------------------------------------------


def load_onnx(path: str | Path, external_data_needed: bool = False) -> onnx.ModelProto:
    """Parse a binary `.onnx` file without loading external data; `ModelFileError` otherwise,
    and for external data that does not lie in the model's folder (see `check_external_data`)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise ModelFileError(f"{path} is a directory, not an ONNX model file")
        if not stat.S_ISREG(mode):  # a FIFO or /dev/zero would block or never end
            raise ModelFileError(f"{path} is not a regular file, not an ONNX model file")
        data = path.read_bytes()
    except FileNotFoundError:  # also a dangling symlink
        raise ModelFileError(f"{path}: no such file") from None
    except OSError as exc:  # permissions, a file used as a folder, a name too long, an I/O error
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data:
        raise ModelFileError(f"{path} is empty, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RecursionError):
        raise ModelFileError(f"{path} is not an ONNX model: {_why_not(data)}") from None
    # Protobuf's wire format is lenient: many byte strings (YAML text included) decode "successfully"
    # as a ModelProto made only of unknown fields. A real model always states its IR version.
    if model.ir_version == 0 and not model.graph.node:
        raise ModelFileError(f"{path} is not an ONNX model: {_why_not(data)}")
    # Fields are serialized in field-number order, so a file cut between two top-level fields still
    # parses; graph (7) and opset_import (8) missing is how such a cut shows.
    if not model.HasField("graph"):
        raise ModelFileError(f"{path} is not a complete ONNX model: it has no graph (truncated file?)")
    if not model.opset_import:
        raise ModelFileError(f"{path} is not a complete ONNX model: it imports no opset (truncated file?)")
    where = _non_utf8_string(model)
    if where is not None:  # protobuf hands such a field over as bytes, which no text rendering expects
        raise ModelFileError(f"{path} is not a valid ONNX model: {where} is not UTF-8 text")
    check_external_data(model, path, external_data_needed)
    return model


def _non_utf8_string(message: Any) -> str | None:
    """The path of the first string field that is not UTF-8 (ONNX's strings are), or None."""
    pending: list[tuple[Any, str]] = [(message, "")]
    while pending:
        current, where = pending.pop()
        for field, value in current.ListFields():
            repeated = (
                field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
            )
            if field.type == field.TYPE_STRING:  # only strings and messages: never a tensor's numbers
                for index, item in enumerate(value if repeated else [value]):
                    if isinstance(item, bytes):
                        return f"{where}{field.name}" + (f"[{index}]" if repeated else "")
            elif field.type == field.TYPE_MESSAGE:
                for index, item in enumerate(value if repeated else [value]):
                    pending.append((item, f"{where}{field.name}" + (f"[{index}]." if repeated else ".")))
    return None


def _why_not(data: bytes) -> str:
    if _looks_like_text(data):  # by content: a spec saved as .onnx is still a spec
        return "it is a text file (a spec? compile it first with `deconvc compile SPEC -o MODEL.onnx`)"
    return "its bytes do not decode as an ONNX protobuf (corrupt or truncated file?)"


def _looks_like_text(data: bytes) -> bool:
    # incremental: a multi-byte character cut at the 4 KiB boundary is not a decoding error
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        text = decoder.decode(data[:4096], final=False)
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\t\r\n" for ch in text)


# --- external data -------------------------------------------------------------------------------

# onnxruntime's marker for data at a memory address (the "offset") of its own process: never a file.
_MEMORY_ADDRESS_TAG = "*/_ORT_MEM_ADDR_/*"
_EXTERNAL_DATA_RULE = (
    "external data must be a file in the model's own folder "
    "(a relative path, no '..', no symbolic link out of the folder)"
)


@dataclass(frozen=True)
class ExternalData:
    """One tensor's claim to data outside the `.onnx` file, as the file states it."""

    where: str  # which tensor: "initializer 'w'", "node 'loop' (Loop) attribute 'body' > initializer 'k'"
    locations: tuple[str, ...]  # every `location` entry (a forged tensor may carry several)
    offset: str  # as written; "" when absent
    length: str


def external_data(model: onnx.ModelProto) -> Iterator[ExternalData]:
    """Every tensor of `model` that keeps its data outside the file, wherever it sits."""
    for where, tensor in _all_tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL or tensor.external_data:
            entries = [(entry.key, entry.value) for entry in tensor.external_data]
            yield ExternalData(
                where=where,
                locations=tuple(value for key, value in entries if key == "location"),
                offset=next((value for key, value in reversed(entries) if key == "offset"), ""),
                length=next((value for key, value in reversed(entries) if key == "length"), ""),
            )


def external_data_files(model: onnx.ModelProto, path: Path) -> tuple[Path, ...]:
    """The files the external data of the model at `path` names (checked by `check_external_data`)."""
    locations = dict.fromkeys(loc for claim in external_data(model) for loc in claim.locations)
    return tuple(path.parent / location for location in locations)


def check_external_data(model: onnx.ModelProto, path: Path, files_needed: bool = False) -> None:
    """Refuse (`ModelFileError`) external data that is not a regular file inside the folder of the
    model at `path`. Decided from the names alone, then `stat` (nothing is opened). A missing file
    is an error only when `files_needed` (`inspect` reads no data); then the offset and length must
    also lie inside the file."""
    folder = path.parent
    real_folder = Path(os.path.realpath(folder))
    judged: dict[str, str | None] = {}  # a location's problem, each location judged once
    sizes: dict[str, int] = {}
    for claim in external_data(model):
        if not claim.locations:
            _refuse_external(path, claim, "", "names no location")
        for location in claim.locations:
            if location not in judged:
                judged[location] = _location_problem(location) or _file_problem(
                    folder / location, real_folder, files_needed
                )
            problem = judged[location]
            if problem is not None:
                _refuse_external(path, claim, location, problem)
            if files_needed:
                if location not in sizes:  # a model's tensors often share one data file
                    sizes[location] = (folder / location).stat().st_size
                span = _span_problem(claim, sizes[location])
                if span is not None:
                    _refuse_external(path, claim, location, span)


def _refuse_external(path: Path, claim: ExternalData, location: str, problem: str) -> None:
    named = f" {shown(location)}" if location else ""
    raise ModelFileError(f"{path}: {claim.where}: external data{named} {problem}; {_EXTERNAL_DATA_RULE}")


def _location_problem(location: str) -> str | None:
    """What is wrong with a location by its text alone, on any system onnxruntime runs on."""
    if not location:
        return "is an empty location"
    if "\x00" in location:
        return "has a NUL character in its name"
    if location == _MEMORY_ADDRESS_TAG:
        return "is onnxruntime's in-memory marker, not a file"
    windows = PureWindowsPath(location)
    if PurePosixPath(location).is_absolute() or windows.drive or windows.root:
        return "is an absolute path"
    if ".." in re.split(r"[\\/]", location):
        return "climbs out of the model's folder with '..'"
    return None


def _file_problem(target: Path, real_folder: Path, files_needed: bool) -> str | None:
    """A symbolic link out of the folder, or something other than a regular file; `stat` only."""
    try:
        real = Path(os.path.realpath(target))
        if not real.is_relative_to(real_folder):
            return "leads out of the model's folder through a symbolic link"
        mode = target.stat().st_mode
    except FileNotFoundError:  # also a dangling symlink, whose target realpath checked above
        return "is missing" if files_needed else None
    except (OSError, ValueError) as exc:  # a file used as a folder, a name too long, a loop of links
        return f"cannot be reached: {getattr(exc, 'strerror', None) or exc}"
    if not stat.S_ISREG(mode):  # a FIFO would block onnxruntime forever
        return "is not a regular file"
    return None


def _span_problem(claim: ExternalData, size: int) -> str | None:
    """The offset and length must be decimal byte counts inside the file."""
    counts = []
    for field, text in (("offset", claim.offset), ("length", claim.length)):
        if text and not (text.isascii() and text.isdigit()):
            return f"has {field} {shown(text)}, not a byte count"
        counts.append(int(text) if text else None)
    offset, length = counts[0] or 0, counts[1]
    end = offset + (length if length is not None else 0)
    if offset > size or end > size:
        return f"asks for bytes {offset:,} to {end:,} of a file of {size:,} bytes"
    return None


def _all_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """(where, tensor) for every tensor a model holds: graphs at any depth, functions, training."""
    yield from _graph_tensors(model.graph, "")
    for function in model.functions:
        yield from _node_tensors(function.node, f"function {shown(function.name)} > ")
    for index, training in enumerate(model.training_info):
        for part in ("initialization", "algorithm"):
            if training.HasField(part):
                yield from _graph_tensors(getattr(training, part), f"training_info[{index}].{part} > ")


def _graph_tensors(graph: onnx.GraphProto, where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
    for tensor in graph.initializer:
        yield f"{where}initializer {shown(tensor.name)}", tensor
    for sparse in graph.sparse_initializer:
        yield f"{where}sparse initializer {shown(sparse.values.name)}", sparse.values
        yield f"{where}sparse initializer {shown(sparse.values.name)} indices", sparse.indices
    yield from _node_tensors(graph.node, where)


def _node_tensors(nodes: Sequence[onnx.NodeProto], where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
    # Graph protos nest at most as deep as protobuf's parser allows (100 messages), so recursion is bounded.
    for node in nodes:
        for attr in node.attribute:
            op = (
                node.op_type
                if node.op_type.isidentifier() and len(node.op_type) <= 60
                else shown(node.op_type)
            )
            at = f"{where}node {shown(node.name)} ({op}) attribute {shown(attr.name)}"
            if attr.HasField("t"):
                yield at, attr.t
            for tensor in attr.tensors:
                yield at, tensor
            sparse_tensors = [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []
            for sparse in [*sparse_tensors, *attr.sparse_tensors]:
                yield at, sparse.values
                yield f"{at} indices", sparse.indices
            graphs = [attr.g] if attr.HasField("g") else []
            for graph in [*graphs, *attr.graphs]:
                yield from _graph_tensors(graph, f"{at} > ")


# --- what a run feeds ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInput:
    """A graph input a run must feed: a tensor of a numpy dtype, with sizes (None: dynamic)."""

    name: str
    dtype: np.dtype[Any]
    dims: tuple[int | None, ...]


def run_inputs(model: onnx.ModelProto, path: Path | str) -> tuple[RunInput, ...]:
    """The graph inputs a run must feed, in order (an initializer listed as an input has its
    value already); `ModelFileError` naming the input when one cannot be fed from numpy: not a
    tensor, strings, no element type, no declared rank, or a size below 0."""
    initialized = {init.name for init in model.graph.initializer} | {
        sparse.values.name for sparse in model.graph.sparse_initializer
    }
    inputs = []
    for declared in model.graph.input:
        if declared.name in initialized:
            continue
        where = f"{path}: input {shown(declared.name)}"
        kind = declared.type.WhichOneof("value")
        if kind != "tensor_type":
            what = _type_text(declared.type)[0] if kind is not None else "declared without a type"
            raise ModelFileError(f"{where} is {what}; run and bench feed tensors of numbers only")
        tensor = declared.type.tensor_type
        if tensor.elem_type in (TensorProto.UNDEFINED, TensorProto.STRING):
            what = "strings" if tensor.elem_type == TensorProto.STRING else "no element type"
            raise ModelFileError(f"{where} declares {what}; run and bench feed tensors of numbers only")
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        except (KeyError, ValueError, TypeError):
            raise ModelFileError(
                f"{where} has element type {tensor.elem_type}, unknown to this onnx package"
            ) from None
        if not tensor.HasField("shape"):
            raise ModelFileError(f"{where} declares no shape (not even its rank); run and bench need one")
        dims = _shape(tensor)
        negative = [d for d in dims if isinstance(d, int) and d < 0]
        if negative:
            raise ModelFileError(f"{where} declares the size {negative[0]} in {format_shape(dims)}")
        inputs.append(RunInput(declared.name, dtype, tuple(d if isinstance(d, int) else None for d in dims)))
    return tuple(inputs)


# --- summarizing ---------------------------------------------------------------------------------


def inspect_model(model: onnx.ModelProto) -> ModelSummary:
    """Summarize any ONNX model: header, I/O types and shapes, nodes, initializers, metadata."""
    graph = model.graph
    initializer_names = {init.name for init in graph.initializer} | {
        sparse.values.name for sparse in graph.sparse_initializer
    }
    initializers = tuple(_initializer(init) for init in graph.initializer) + tuple(
        _sparse_initializer(sparse) for sparse in graph.sparse_initializer
    )
    return ModelSummary(
        graph_name=graph.name,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        ir_version=int(model.ir_version),
        opsets=tuple(OpsetSummary(op.domain, int(op.version)) for op in model.opset_import),
        domain=model.domain,
        model_version=int(model.model_version),
        doc_string=model.doc_string,
        inputs=tuple(_value(v) for v in graph.input if v.name not in initializer_names),
        outputs=tuple(_value(v) for v in graph.output),
        nodes=tuple(_node(node) for node in graph.node),
        initializers=initializers,
        functions=tuple(f"{f.domain}:{f.name}" for f in model.functions),
        metadata=types.MappingProxyType(_metadata(model)),
    )


# Deeper parsed values stay text: rendering them (pretty_json, json.dumps) recurses once per level,
# and a spec is a few levels deep; a forged one nested 950 deep would exhaust Python's stack.
MAX_METADATA_DEPTH = 64


def _metadata(model: onnx.ModelProto) -> dict[str, Any]:
    """The properties as they are; our spec parsed (someone else's value under our key, or one
    nested deeper than MAX_METADATA_DEPTH, stays text)."""
    props = {prop.key: prop.value for prop in model.metadata_props}
    metadata = read_metadata(props, parsed=(SPEC,))
    if _deeper_than(metadata.get(SPEC), MAX_METADATA_DEPTH):
        metadata[SPEC] = props[SPEC]
    return metadata


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and dicts nest in `value` more than `limit` levels (without recursing)."""
    level: list[Any] = [value]
    for _ in range(limit + 1):
        containers = [item for item in level if isinstance(item, dict | list)]
        if not containers:
            return False
        level = [item for c in containers for item in (c.values() if isinstance(c, dict) else c)]
    return True


def dtype_name(elem_type: int) -> str:
    """numpy's name for an ONNX element type; ONNX's own name where numpy has no faithful one."""
    if elem_type == TensorProto.STRING:
        return "string"  # numpy would say "object"
    if elem_type == TensorProto.UNDEFINED:
        return "undefined"
    try:
        return str(helper.tensor_dtype_to_np_dtype(elem_type).name)
    except (KeyError, ValueError, TypeError):  # a type newer than this onnx package
        return f"onnx_type_{elem_type}"


def _type_text(type_proto: onnx.TypeProto) -> tuple[str, Shape]:
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        tensor = type_proto.tensor_type
        return dtype_name(tensor.elem_type), _shape(tensor) if tensor.HasField("shape") else None
    if kind == "sparse_tensor_type":
        sparse = type_proto.sparse_tensor_type
        shape = _shape(sparse) if sparse.HasField("shape") else None
        return f"sparse_tensor<{dtype_name(sparse.elem_type)}>", shape
    if kind == "sequence_type":
        return f"sequence<{_type_text(type_proto.sequence_type.elem_type)[0]}>", None
    if kind == "optional_type":
        return f"optional<{_type_text(type_proto.optional_type.elem_type)[0]}>", None
    if kind == "map_type":
        key = dtype_name(type_proto.map_type.key_type)
        return f"map<{key}, {_type_text(type_proto.map_type.value_type)[0]}>", None
    return "unknown", None


def _shape(tensor: onnx.TypeProto.Tensor | onnx.TypeProto.SparseTensor) -> tuple[Dim, ...]:
    dims: list[Dim] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def _value(info: onnx.ValueInfoProto) -> ValueSummary:
    dtype, shape = _type_text(info.type)
    return ValueSummary(info.name, dtype, shape)


def _node(node: onnx.NodeProto) -> NodeSummary:
    return NodeSummary(
        name=node.name,
        op_type=node.op_type,
        domain=node.domain,
        inputs=tuple(node.input),
        outputs=tuple(node.output),
        attributes=types.MappingProxyType({a.name: _attribute(a) for a in node.attribute}),
    )


def _float32(value: float) -> float:
    # ONNX stores float attributes as float32; its shortest decimal (0.2, not 0.200000002980232)
    # is the number the producer wrote.
    return float(str(np.float32(value)))


def _tensor_ref(tensor: onnx.TensorProto) -> TensorRef:
    return TensorRef(dtype_name(tensor.data_type), tuple(int(d) for d in tensor.dims))


def _sparse_ref(sparse: onnx.SparseTensorProto) -> TensorRef:
    return TensorRef(dtype_name(sparse.values.data_type), tuple(int(d) for d in sparse.dims), sparse=True)


def _graph_ref(graph: onnx.GraphProto) -> GraphRef:
    return GraphRef(graph.name, len(graph.node))


def _attribute(attr: onnx.AttributeProto) -> AttrValue:
    kind = attr.type if attr.type != AttributeProto.UNDEFINED else _guess_attribute_type(attr)
    if kind == AttributeProto.FLOAT:
        return _float32(attr.f)
    if kind == AttributeProto.INT:
        return int(attr.i)
    if kind == AttributeProto.STRING:
        return attr.s.decode("utf-8", "backslashreplace")
    if kind == AttributeProto.TENSOR:
        return _tensor_ref(attr.t)
    if kind == AttributeProto.SPARSE_TENSOR:
        return _sparse_ref(attr.sparse_tensor)
    if kind == AttributeProto.GRAPH:
        return _graph_ref(attr.g)
    if kind == AttributeProto.TYPE_PROTO:
        return _type_text(attr.tp)[0]
    if kind == AttributeProto.FLOATS:
        return tuple(_float32(f) for f in attr.floats)
    if kind == AttributeProto.INTS:
        return tuple(int(i) for i in attr.ints)
    if kind == AttributeProto.STRINGS:
        return tuple(s.decode("utf-8", "backslashreplace") for s in attr.strings)
    if kind == AttributeProto.TENSORS:
        return tuple(_tensor_ref(t) for t in attr.tensors)
    if kind == AttributeProto.SPARSE_TENSORS:
        return tuple(_sparse_ref(s) for s in attr.sparse_tensors)
    if kind == AttributeProto.GRAPHS:
        return tuple(_graph_ref(g) for g in attr.graphs)
    if kind == AttributeProto.TYPE_PROTOS:
        return tuple(_type_text(tp)[0] for tp in attr.type_protos)
    return None  # a reference to a function's attribute, or a type this onnx does not know


def _guess_attribute_type(attr: onnx.AttributeProto) -> int:
    """Models of IR version 1 may omit `type`: infer it from the field that is set."""
    for field, kind in (
        ("floats", AttributeProto.FLOATS),
        ("ints", AttributeProto.INTS),
        ("strings", AttributeProto.STRINGS),
        ("tensors", AttributeProto.TENSORS),
        ("graphs", AttributeProto.GRAPHS),
    ):
        if getattr(attr, field):
            return kind
    for field, kind in (
        ("f", AttributeProto.FLOAT),
        ("i", AttributeProto.INT),
        ("s", AttributeProto.STRING),
        ("t", AttributeProto.TENSOR),
        ("g", AttributeProto.GRAPH),
    ):
        if attr.HasField(field):
            return kind
    return int(AttributeProto.UNDEFINED)


# Elements per byte differ from numpy's itemsize for the packed sub-byte types.
_BITS = {
    int(TensorProto.INT4): 4,
    int(TensorProto.UINT4): 4,
    int(TensorProto.FLOAT4E2M1): 4,
    **{int(getattr(TensorProto, name)): 2 for name in ("INT2", "UINT2") if hasattr(TensorProto, name)},
}


def _element_count(dims: Sequence[int]) -> int:
    return math.prod(int(d) for d in dims)


def _logical_nbytes(data_type: int, count: int) -> int:
    if data_type in _BITS:
        return (count * _BITS[data_type] + 7) // 8
    try:
        return count * int(helper.tensor_dtype_to_np_dtype(data_type).itemsize)
    except (KeyError, ValueError, TypeError):
        return 0


def _tensor_nbytes(tensor: onnx.TensorProto) -> int:
    if tensor.data_type == TensorProto.STRING:
        return sum(len(s) for s in tensor.string_data)
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return _logical_nbytes(tensor.data_type, _element_count(tensor.dims))


def _initializer(tensor: onnx.TensorProto) -> InitializerSummary:
    return InitializerSummary(
        name=tensor.name,
        dtype=dtype_name(tensor.data_type),
        shape=tuple(int(d) for d in tensor.dims),
        parameters=_element_count(tensor.dims),
        nbytes=_tensor_nbytes(tensor),
        external=tensor.data_location == TensorProto.EXTERNAL,
    )


def _sparse_initializer(sparse: onnx.SparseTensorProto) -> InitializerSummary:
    values = sparse.values
    return InitializerSummary(
        name=values.name,
        dtype=dtype_name(values.data_type),
        shape=tuple(int(d) for d in sparse.dims),
        parameters=_element_count(values.dims),
        nbytes=_tensor_nbytes(values) + _tensor_nbytes(sparse.indices),
        external=values.data_location == TensorProto.EXTERNAL,
        sparse=True,
    )


# --- rendering -----------------------------------------------------------------------------------

# Conv-like attributes read best in this order (the file's order is alphabetical for helper-built
# nodes); any other attribute follows in file order.
_LEADING_ATTRIBUTES = (
    "kernel_shape",
    "strides",
    "pads",
    "output_padding",
    "output_shape",
    "dilations",
    "group",
    "auto_pad",
)
_MIB = 1024 * 1024
_INLINE_WIDTH = 80


def render_text(summary: ModelSummary) -> str:
    """A multi-line summary for a terminal; ends with a newline."""
    lines = [f"graph:       {_or_none(summary.graph_name)}"]
    producer = " ".join(p for p in (summary.producer_name, summary.producer_version) if p)
    lines.append(f"producer:    {_or_none(producer)}")
    lines.append(f"ir_version:  {summary.ir_version}")
    opsets = ", ".join(f"{op.domain or 'ai.onnx'} {op.version}" for op in summary.opsets)
    lines.append(f"opsets:      {_or_none(opsets)}")
    if summary.domain or summary.model_version:
        lines.append(f"model:       {_or_none(summary.domain)} version {summary.model_version}")
    doc = summary.doc_string.strip()
    if doc:  # first line only: doc strings can be pages long
        lines.append(f"doc:         {doc.splitlines()[0]}")

    for title, values in (("inputs", summary.inputs), ("outputs", summary.outputs)):
        lines.append(f"{title} ({len(values)}):")
        lines += [f"  {v.name}: {v.dtype} {format_shape(v.shape)}" for v in values]

    lines.append(f"nodes ({len(summary.nodes)}):")
    op_width = max((len(_op_text(n)) for n in summary.nodes), default=0)
    name_width = max((len(_name_text(n)) for n in summary.nodes), default=0)
    for node in summary.nodes:
        line = f"  {_op_text(node):<{op_width}}  {_name_text(node):<{name_width}}  {_attributes_text(node)}"
        lines.append(line.rstrip())

    inits = summary.initializers
    lines.append(
        f"initializers ({len(inits)}): {_count(summary.parameter_count, 'parameter')}, "
        f"{summary.parameter_bytes:,} bytes ({summary.parameter_bytes / _MIB:.2f} MiB)"
    )
    init_width = max((len(init.name) for init in inits), default=0)
    for init in inits:
        notes = "".join((", sparse" if init.sparse else "", ", external data" if init.external else ""))
        lines.append(
            f"  {init.name:<{init_width}}  {init.dtype} {format_shape(init.shape)}  "
            f"({_count(init.parameters, 'parameter')}, {size_text(init.nbytes)}{notes})"
        )

    if summary.functions:
        lines.append(f"functions ({len(summary.functions)}): {', '.join(summary.functions)}")

    lines.append(f"metadata ({len(summary.metadata)}):")
    for key, value in summary.metadata.items():
        if isinstance(value, str):
            text = value
        else:  # the parsed spec: pretty-printed so its layers can be read
            text = pretty_json(value)
        first, *rest = text.splitlines() or [""]
        if rest:
            lines.append(f"  {key}:")
            lines += [f"    {line}" for line in (first, *rest)]
        else:
            lines.append(f"  {key}: {first}")
    return "\n".join(lines) + "\n"


def pretty_json(value: Any, indent: int = 0) -> str:
    """Indented JSON that keeps small objects and lists on one line (`"shape": [null, 7, 7, 256]`),
    so a spec reads as one line per argument rather than one line per number."""
    compact = json.dumps(value)
    if not isinstance(value, dict | list) or not value or indent * 2 + len(compact) <= _INLINE_WIDTH:
        return compact
    inner = "  " * (indent + 1)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(str(k))}: {pretty_json(v, indent + 1)}" for k, v in value.items()]
        opening, closing = "{", "}"
    else:
        items = [f"{inner}{pretty_json(v, indent + 1)}" for v in value]
        opening, closing = "[", "]"
    return opening + "\n" + ",\n".join(items) + "\n" + "  " * indent + closing


def format_shape(shape: Shape) -> str:
    """`[batch, 7, 7, 256]`; `?` for an unknown size, `[...]` when the rank is unknown."""
    if shape is None:
        return "[...]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _or_none(text: str) -> str:
    return text if text else "(none)"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def size_text(nbytes: int) -> str:
    if nbytes < 1024:
        return f"{nbytes} B"
    if nbytes < _MIB:
        return f"{nbytes / 1024:.1f} KiB"
    return f"{nbytes / _MIB:.2f} MiB"


def _op_text(node: NodeSummary) -> str:
    return f"{node.domain}.{node.op_type}" if node.domain else node.op_type


def _name_text(node: NodeSummary) -> str:
    return node.name or "(unnamed)"


def _attributes_text(node: NodeSummary) -> str:
    names = [n for n in _LEADING_ATTRIBUTES if n in node.attributes]
    names += [n for n in node.attributes if n not in _LEADING_ATTRIBUTES]
    return " ".join(f"{name}={_attribute_text(node.attributes[name])}" for name in names)


def _attribute_text(value: AttrValue) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_attribute_text(v) for v in value) + "]"
    if isinstance(value, TensorRef):
        return f"{'sparse_tensor' if value.sparse else 'tensor'}({value.dtype} {format_shape(value.shape)})"
    if isinstance(value, GraphRef):
        return f"graph({value.name or '(unnamed)'}, {_count(value.node_count, 'node')})"
    if isinstance(value, str):
        return json.dumps(value)  # quoted, so spaces or an empty string stay visible
    if value is None:
        return "?"
    return str(value)


# --- JSON ----------------------------------------------------------------------------------------


def summary_to_json(summary: ModelSummary) -> dict[str, Any]:
    """The summary as plain JSON values, keys in a fixed order (for `--json`)."""
    return {
        "graph_name": summary.graph_name,
        "producer_name": summary.producer_name,
        "producer_version": summary.producer_version,
        "ir_version": summary.ir_version,
        "opsets": [{"domain": op.domain, "version": op.version} for op in summary.opsets],
        "domain": summary.domain,
        "model_version": summary.model_version,
        "doc_string": summary.doc_string,
        "inputs": [_value_json(v) for v in summary.inputs],
        "outputs": [_value_json(v) for v in summary.outputs],
        "nodes": [
            {
                "name": node.name,
                "op_type": node.op_type,
                "domain": node.domain,
                "inputs": list(node.inputs),
                "outputs": list(node.outputs),
                "attributes": {name: _attribute_json(v) for name, v in node.attributes.items()},
            }
            for node in summary.nodes
        ],
        "initializers": [
            {
                "name": init.name,
                "dtype": init.dtype,
                "shape": list(init.shape),
                "parameters": init.parameters,
                "bytes": init.nbytes,
                "external": init.external,
                "sparse": init.sparse,
            }
            for init in summary.initializers
        ],
        "parameter_count": summary.parameter_count,
        "parameter_bytes": summary.parameter_bytes,
        "functions": list(summary.functions),
        "metadata": dict(summary.metadata),
    }


def _value_json(value: ValueSummary) -> dict[str, Any]:
    shape = None if value.shape is None else list(value.shape)
    return {"name": value.name, "dtype": value.dtype, "shape": shape}


def _attribute_json(value: AttrValue) -> Any:
    if isinstance(value, tuple):
        return [_attribute_json(v) for v in value]
    if isinstance(value, TensorRef):
        return {"tensor": {"dtype": value.dtype, "shape": list(value.shape), "sparse": value.sparse}}
    if isinstance(value, GraphRef):
        return {"graph": {"name": value.name, "node_count": value.node_count}}
    return value
