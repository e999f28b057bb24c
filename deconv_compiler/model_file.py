"""A compiled model → the bytes of its `.onnx` file, without copying big weights through protobuf.

Putting a 200 MB weight into a `TensorProto` copies it twice (`tobytes`, then `raw_data`) and
serializing the model copies it once more; on a Pix2Pix generator those copies were about a third
of a compile. A `DetachedModel` is the model with its big initializers left empty (name, type and
dims only) beside their arrays; `file_chunks` gives the file as pieces to write one after the
other, the arrays as they are in memory. The pieces are exactly what `SerializeToString` of the
complete model gives (protobuf writes fields in field-number order, and the file layout below
follows it): `tests/test_builder.py` checks the bytes against it.

    ModelProto  = fields 1-6 | graph (7) | opset_import (8), metadata_props (14)
    GraphProto  = node (1), name (2) | initializer (5)... | input (11), output (12), value_info (13)
    TensorProto = dims (1), data_type (2), name (8) | raw_data (9)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import onnx

_LENGTH_DELIMITED = 2
_GRAPH, _INITIALIZER, _RAW_DATA = 7, 5, 9


@dataclass(frozen=True, eq=False)
class DetachedModel:
    """A model whose initializers named in `arrays` carry no data; `arrays` holds it, contiguous
    and little-endian, as `raw_data` would."""

    model: onnx.ModelProto
    arrays: Mapping[str, np.ndarray]


def file_chunks(detached: DetachedModel) -> Iterator[bytes | memoryview]:
    """The `.onnx` file's bytes, piece by piece."""
    model, graph = detached.model, detached.model.graph
    head = onnx.ModelProto()
    head.CopyFrom(model)
    head.ClearField("graph")
    head.ClearField("opset_import")
    head.ClearField("metadata_props")
    tail = onnx.ModelProto()
    tail.opset_import.extend(model.opset_import)
    tail.metadata_props.extend(model.metadata_props)
    graph_head = onnx.GraphProto(name=graph.name)
    graph_head.node.extend(graph.node)
    graph_tail = onnx.GraphProto()
    graph_tail.input.extend(graph.input)
    graph_tail.output.extend(graph.output)
    graph_tail.value_info.extend(graph.value_info)
    unsupported = [
        name
        for name in ("doc_string", "sparse_initializer", "quantization_annotation", "metadata_props")
        if _is_set(graph, name)
    ]
    if unsupported or model.functions or model.training_info:
        raise ValueError(f"file_chunks does not lay out {unsupported or 'functions/training_info'}")

    initializers = [
        _initializer_chunks(tensor, detached.arrays.get(tensor.name)) for tensor in graph.initializer
    ]
    graph_parts = [graph_head.SerializeToString(), *(c for chunks in initializers for c in chunks)]
    graph_parts.append(graph_tail.SerializeToString())
    graph_size = sum(len(part) for part in graph_parts)
    yield head.SerializeToString() + _key(_GRAPH) + _varint(graph_size)
    yield from graph_parts
    yield tail.SerializeToString()


def _initializer_chunks(tensor: onnx.TensorProto, array: np.ndarray | None) -> list[bytes | memoryview]:
    body = tensor.SerializeToString()
    if array is None:
        return [_key(_INITIALIZER) + _varint(len(body)) + body]
    data = array.data.cast("B")
    raw_head = _key(_RAW_DATA) + _varint(data.nbytes)
    size = len(body) + len(raw_head) + data.nbytes
    return [_key(_INITIALIZER) + _varint(size) + body + raw_head, data]


def _is_set(message: onnx.GraphProto, field: str) -> bool:
    value = getattr(message, field)
    return bool(value) if not isinstance(value, str) else value != ""


def _key(field: int) -> bytes:
    return _varint(field << 3 | _LENGTH_DELIMITED)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# --- external data: the weights in a file beside the .onnx --------------------------------------

EXTERNAL_ALIGNMENT = 4096  # each tensor starts on a page: onnxruntime can map it as it is


def detach(model: onnx.ModelProto, min_bytes: int = 1024) -> DetachedModel:
    """A complete model as a `DetachedModel`: initializers of at least `min_bytes` (raw data) are
    moved out of `model`, which is emptied of them in place."""
    arrays: dict[str, np.ndarray] = {}
    for tensor in model.graph.initializer:
        if tensor.HasField("raw_data") and len(tensor.raw_data) >= min_bytes:
            arrays[tensor.name] = np.frombuffer(tensor.raw_data, dtype=np.uint8)
            tensor.ClearField("raw_data")
    return DetachedModel(model, arrays)


def with_external_data(
    detached: DetachedModel, location: str
) -> tuple[onnx.ModelProto, list[tuple[int, np.ndarray]]]:
    """The model whose detached initializers are stored in the file `location` (a name beside the
    `.onnx`), and what goes into that file: each array at its offset, offsets aligned to
    `EXTERNAL_ALIGNMENT`. ONNX's external-data format has no size limit."""
    model = onnx.ModelProto()
    model.CopyFrom(detached.model)  # weightless: cheap
    placed: list[tuple[int, np.ndarray]] = []
    offset = 0
    for tensor in model.graph.initializer:
        array = detached.arrays.get(tensor.name)
        if array is None:
            continue
        offset = -(-offset // EXTERNAL_ALIGNMENT) * EXTERNAL_ALIGNMENT
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(array.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        placed.append((offset, array))
        offset += array.nbytes
    return model, placed


def write_external_data(handle: BinaryIO, placed: list[tuple[int, np.ndarray]]) -> None:
    """The external-data file's bytes, in order, zeros between the aligned tensors."""
    position = 0
    for offset, array in placed:
        handle.write(b"\0" * (offset - position))
        data = array.data.cast("B")
        handle.write(data)
        position = offset + data.nbytes
