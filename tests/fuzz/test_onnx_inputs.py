"""Any structurally mutated ONNX file given to `deconvc inspect`, `run --random` and `bench` → exit 0,
exit 2 with an `error:` line, or exit 1 with onnxruntime's own failure; never a traceback or an
internal error, never a byte of a file outside the model's folder.

Each example takes one of six small, valid models (a single Add with an initializer, a compiled
Conv1DTranspose with our metadata, a Loop, an If with two branches, a Constant and nothing else, two
inputs) and applies 1-5 structural mutations: graph input element types (undefined, strings,
unknown numbers, every numeric type), input kinds (sequence, map, optional, sparse, none), dims
(negative, 0, int32-max, 2**62, symbolic, cleared, added, removed, no shape at all), external data
locations on any tensor (initializers, Constant attributes, subgraph initializers: `..`, absolute,
a symbolic link out, onnxruntime's memory marker, a FIFO, missing, inside the folder, forged
offsets and lengths), metadata (our spec nested up to 3,000 deep, text, other keys), attributes
(wrong types, unknown names, subgraphs emptied, tensors declaring huge dims), subgraphs (the graph
wrapped in If nodes up to 30 deep, a Loop's trip count up to 2**62), opsets and IR versions, and
the serialized bytes (truncated or flipped) in a few examples. Runs take `--timeout`, so a Loop of
2**62 iterations costs half a second, and random inputs are limited to 16 MiB (the CLI's limit is
2 GiB: the same code path, without gigabytes per example).

Oracle: where a tensor of the final model names external data outside the model's folder, every
command exits 2 saying so (refused by us, not by onnxruntime). A canary file beside the model's
folder never shows in any output, and every file of the example's folder stays as it was.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import deconv_compiler.cli.main as cli_main
import numpy as np
import onnx
import pytest
from google.protobuf.message import DecodeError  # type: ignore[import-untyped,unused-ignore]
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import AttributeProto, TensorProto, helper, numpy_helper

import deconv_compiler as dc
from deconv_compiler.metadata import SPEC, STRATEGIES
from tests.fuzz.checks import invoke
from tests.fuzz.limits import Outcomes, examples, memory_limit, time_limit
from tests.onnx_run import compile_spec
from tests.test_hostile_onnx import loop_model

ONNX_EXAMPLES = examples(0.5)  # ci: 750; thorough: 7,500
CANARY = b"canary:77e0b4f2c9a1d3e5:must-never-be-read\n" * 8
RUN_TIMEOUT = "0.5"
COMMANDS = (
    ("inspect",),
    ("run", "--random", "--timeout", RUN_TIMEOUT, "--threads", "1"),
    ("bench", "--warmup", "0", "--iters", "2", "--timeout", RUN_TIMEOUT, "--threads", "1"),
)
# Random inputs up to the CLI's real limit (2 GiB) are legitimate but would cost seconds and gigabytes
# per example: the property runs with a smaller one, the same code path.
INPUT_LIMIT = 2**24


@pytest.fixture(autouse=True, scope="module")
def _small_input_limit() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli_main, "MAX_INPUT_BYTES", INPUT_LIMIT)
        yield


# --- the valid models every example starts from ---------------------------------------------------


def _vector(name: str, elem_type: int = TensorProto.FLOAT, shape: list[Any] | None = None) -> Any:
    return helper.make_tensor_value_info(name, elem_type, [4] if shape is None else shape)


def _model(nodes: list[Any], inputs: list[Any], initializers: Sequence[TensorProto] = ()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, [_vector("y")], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _ones(name: str) -> TensorProto:
    return numpy_helper.from_array(np.ones(4, np.float32), name)


def _add() -> onnx.ModelProto:
    return _model([helper.make_node("Add", ["x", "w"], ["y"])], [_vector("x")], [_ones("w")])


def _conv() -> onnx.ModelProto:
    spec = {"type": "Conv1DTranspose", "filters": 2, "kernel_size": 3, "strides": 2, "input_shape": [5, 3]}
    return compile_spec(dc.load_spec(spec))


def _loop() -> onnx.ModelProto:
    return loop_model(3)


def _if() -> onnx.ModelProto:
    def branch(name: str, op: str) -> onnx.GraphProto:
        graph = helper.make_graph([helper.make_node(op, ["x", "k"], ["v"])], name, [], [_vector("v")])
        graph.initializer.append(_ones("k"))
        return graph

    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    node = helper.make_node(
        "If", ["c"], ["y"], then_branch=branch("then", "Add"), else_branch=branch("else", "Mul")
    )
    return _model([node], [cond, _vector("x")])


def _constant() -> onnx.ModelProto:
    return _model([helper.make_node("Constant", [], ["y"], value=_ones("c"))], [])


def _two_inputs() -> onnx.ModelProto:
    return _model([helper.make_node("Add", ["a", "b"], ["y"])], [_vector("a"), _vector("b")])


BASES = {
    "add": _add,
    "conv": _conv,
    "loop": _loop,
    "if": _if,
    "constant": _constant,
    "two_inputs": _two_inputs,
}


@cache
def _base_bytes(name: str) -> bytes:
    return BASES[name]().SerializeToString()


# --- mutations -------------------------------------------------------------------------------------

ELEMENT_TYPES = (0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 14, 16, 17, 22, 999)
DIMS = (-1, -(2**40), 0, 1, 3, 2**31 - 1, 2**62, "n", None)
INSIDE = "inside.bin"  # 64 zero bytes in the model's folder
LOCATIONS = (
    "/etc/passwd",
    "C:\\canary.bin",
    "../canary.bin",
    "sub/../../canary.bin",
    "..\\canary.bin",
    "link.bin",  # a symbolic link to the canary
    "linked/canary.bin",  # a symbolic link to the canary's folder
    "*/_ORT_MEM_ADDR_/*",
    "pipe.bin",  # a FIFO
    "missing.bin",
    "",
    INSIDE,
    "./" + INSIDE,
    "sub",
)
OUTSIDE = (
    "/etc/passwd",
    "C:\\canary.bin",
    "../canary.bin",
    "sub/../../canary.bin",
    "..\\canary.bin",
    "link.bin",
    "linked/canary.bin",
)
SPANS = (("0", "16"), ("", ""), ("60", "16"), ("-1", "4"), ("0", "99999999999999999999"), ("0x10", "4"))


@dataclass(frozen=True)
class Mutation:
    """One structural change: `kind`, applied at `target` (an index, taken modulo what exists)."""

    kind: str
    target: int
    value: Any = None


def mutations() -> st.SearchStrategy[Mutation]:
    target = st.integers(0, 50)
    external = st.builds(
        Mutation, st.just("external"), target, st.tuples(st.sampled_from(LOCATIONS), st.sampled_from(SPANS))
    )
    return st.one_of(
        external,  # twice as likely as the others: the oracle needs refusals to check
        st.builds(Mutation, st.just("elem_type"), target, st.sampled_from(ELEMENT_TYPES)),
        st.builds(
            Mutation,
            st.just("input_kind"),
            target,
            st.sampled_from(("sequence", "map", "optional", "sparse", "none")),
        ),
        st.builds(Mutation, st.just("dim"), target, st.sampled_from(DIMS)),
        st.builds(Mutation, st.just("rank"), target, st.sampled_from(("no_shape", "add", "remove"))),
        external,
        st.builds(
            Mutation,
            st.just("metadata"),
            target,
            st.tuples(st.sampled_from((SPEC, STRATEGIES, "other")), _metadata_values()),
        ),
        st.builds(
            Mutation,
            st.just("attribute"),
            target,
            st.sampled_from(("retype", "unknown", "empty_graph", "huge_tensor", "drop")),
        ),
        st.builds(Mutation, st.just("wrap_in_if"), target, st.integers(1, 30)),
        st.builds(Mutation, st.just("trip_count"), target, st.sampled_from((0, -1, 7, 2**62))),
        st.builds(Mutation, st.just("opset"), target, st.sampled_from((1, 7, 11, 21, 99, 2**40))),
        st.builds(Mutation, st.just("ir_version"), target, st.sampled_from((1, 3, 4, 11, 99))),
        st.builds(Mutation, st.just("drop_input"), target),
    )


def _metadata_values() -> st.SearchStrategy[str]:
    deep = st.integers(0, 3000).map(lambda depth: "[" * depth + "]" * depth)
    deep_objects = st.integers(0, 1500).map(lambda depth: '{"a": ' * depth + "1" + "}" * depth)
    return st.one_of(deep, deep_objects, st.text(max_size=50), st.just('{"layers": [{"filters": 1}]}'))


def _tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """Every tensor of a graph and its subgraphs (the test's own walk, not the library's)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _tensors(sub)


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _graphs(sub)


def _pick(items: list[Any], target: int) -> Any:
    return items[target % len(items)] if items else None


def apply(model: onnx.ModelProto, mutation: Mutation) -> None:
    graph, inputs = model.graph, list(model.graph.input)
    declared = _pick(inputs, mutation.target)
    kind, value = mutation.kind, mutation.value
    if kind == "elem_type" and declared is not None and declared.type.HasField("tensor_type"):
        declared.type.tensor_type.elem_type = value
    elif kind == "input_kind" and declared is not None:
        element = helper.make_tensor_type_proto(TensorProto.FLOAT, [4])
        made = {
            "sequence": lambda: helper.make_sequence_type_proto(element),
            "map": lambda: helper.make_map_type_proto(TensorProto.INT64, element),
            "optional": lambda: helper.make_optional_type_proto(element),
            "sparse": lambda: helper.make_sparse_tensor_type_proto(TensorProto.FLOAT, [4]),
            "none": onnx.TypeProto,
        }[value]()
        declared.type.CopyFrom(made)
    elif kind == "dim" and declared is not None and declared.type.tensor_type.shape.dim:
        dim = _pick(list(declared.type.tensor_type.shape.dim), mutation.target // 3)
        dim.Clear()
        if isinstance(value, int):
            dim.dim_value = value
        elif isinstance(value, str):
            dim.dim_param = value
    elif kind == "rank" and declared is not None and declared.type.HasField("tensor_type"):
        tensor = declared.type.tensor_type
        if value == "no_shape":
            tensor.ClearField("shape")
        elif value == "add":
            tensor.shape.dim.add().dim_value = 2
        elif tensor.shape.dim:
            del tensor.shape.dim[-1]
    elif kind == "external":
        tensor = _pick(list(_tensors(graph)), mutation.target)
        if tensor is not None:
            location, (offset, length) = value
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
            del tensor.external_data[:]
            for key, text in (("location", location), ("offset", offset), ("length", length)):
                if text or key == "location":
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, text
    elif kind == "metadata":
        key, text = value
        helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, key: text})
    elif kind == "attribute":
        _mutate_attribute(graph, mutation.target, value)
    elif kind == "wrap_in_if":
        _wrap_in_if(graph, value)
    elif kind == "trip_count":
        for sub in _graphs(graph):
            for init in sub.initializer:
                if init.name == "trips":
                    init.CopyFrom(helper.make_tensor("trips", TensorProto.INT64, [], [value]))
    elif kind == "opset":
        model.opset_import[0].version = value
    elif kind == "ir_version":
        model.ir_version = value
    elif kind == "drop_input" and declared is not None:
        graph.input.remove(declared)


def _mutate_attribute(graph: onnx.GraphProto, target: int, how: str) -> None:
    nodes = [node for sub in _graphs(graph) for node in sub.node]
    node = _pick(nodes, target)
    if node is None:
        return
    attr = _pick(list(node.attribute), target // 7)
    if how == "unknown" or attr is None:
        node.attribute.append(helper.make_attribute("zz_unknown", [1, 2, 3]))
    elif how == "retype":
        attr.type = AttributeProto.INTS if attr.type != AttributeProto.INTS else AttributeProto.STRING
    elif how == "empty_graph" and attr.HasField("g"):
        attr.g.CopyFrom(helper.make_graph([], "empty", [], []))
    elif how == "huge_tensor" and attr.HasField("t"):
        huge = TensorProto(name=attr.t.name, data_type=TensorProto.FLOAT, dims=[2**31 - 1, 2**31 - 1])
        attr.t.CopyFrom(huge)  # sizes declared, no data
    elif how == "drop":
        node.attribute.remove(attr)


def _wrap_in_if(graph: onnx.GraphProto, depth: int) -> None:
    """The graph's nodes inside `depth` nested Ifs, whose condition is a Constant true (the else
    branches are one Constant each: the graph is not copied twice per level)."""
    if not graph.output:
        return
    nodes, result = list(graph.node), graph.output[0]
    fallback = helper.make_graph(
        [helper.make_node("Constant", [], [result.name], value=_ones("z"))], "else", [], [result]
    )
    for level in range(depth):
        branch = helper.make_graph(nodes, f"level{level}", [], [result])
        true = helper.make_tensor("t", TensorProto.BOOL, [], [True])
        try:
            wrapped = helper.make_node(
                "If", [f"cond{level}"], [result.name], then_branch=branch, else_branch=fallback
            )
        except DecodeError:  # protobuf's depth limit (100 messages): as deep as a file can be
            break
        nodes = [helper.make_node("Constant", [], [f"cond{level}"], value=true), wrapped]
    del graph.node[:]
    graph.node.extend(nodes)


# --- one example -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    base: str
    changes: tuple[Mutation, ...]
    damage: tuple[str, int, int] | None  # ("truncate" | "flip", position, byte) on the serialized model

    def build(self) -> bytes:
        model = onnx.ModelProto()
        model.ParseFromString(_base_bytes(self.base))
        for change in self.changes:
            apply(model, change)
        data = model.SerializeToString()
        if self.damage is not None:
            how, position, byte = self.damage
            position %= max(len(data), 1)
            data = (
                data[:position]
                if how == "truncate"
                else data[:position] + bytes([byte]) + data[position + 1 :]
            )
        return data


example_cases = st.builds(
    Example,
    st.sampled_from(sorted(BASES)),
    st.lists(mutations(), min_size=1, max_size=5).map(tuple),
    st.one_of(
        st.none(),
        st.none(),
        st.none(),
        st.tuples(st.sampled_from(("truncate", "flip")), st.integers(0, 10**6), st.integers(0, 255)),
    ),
)


def _lay_out(root: Path) -> Path:
    """The canary beside the model's folder; in the folder, links out, a FIFO, a good data file."""
    (root / "canary.bin").write_bytes(CANARY)
    folder = root / "models"
    (folder / "sub").mkdir(parents=True)
    (folder / INSIDE).write_bytes(bytes(64))
    (folder / "link.bin").symlink_to(root / "canary.bin")
    (folder / "linked").symlink_to(root)
    os.mkfifo(folder / "pipe.bin")
    return folder


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _escapes(data: bytes) -> bool:
    """Whether the model names external data outside its folder (by the test's own walk)."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:  # noqa: BLE001 - damaged bytes: the CLI must refuse them some other way
        return False
    if (
        not model.HasField("graph")
        or not model.opset_import
        or (model.ir_version == 0 and not model.graph.node)
    ):
        return False
    for tensor in _tensors(model.graph):
        locations = [entry.value for entry in tensor.external_data if entry.key == "location"]
        if any(location in OUTSIDE for location in locations):
            return True
    return False


ONNX_FAILURE = re.compile(r"^error: onnxruntime (cannot load|failed to run|cannot bind)", re.MULTILINE)


def assert_answer(result: Any, command: str, escapes: bool, damaged: bool) -> None:
    """Exit 0, 2 with an error line, or 1 with onnxruntime's failure; a model naming data outside
    its folder is refused (exit 2), saying so unless its bytes were damaged in another way too."""
    where = f"deconvc {command}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(*result.exc_info))
        raise AssertionError(
            f"{where} raised {type(result.exception).__name__}: {result.exception}\n{trace[-3000:]}"
        )
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "internal error" not in output, f"{where}: {output[-2000:]}"
    assert CANARY[:24] not in result.stdout_bytes + result.stderr_bytes, f"{where} showed the canary"
    if escapes:
        assert result.exit_code == 2 and (damaged or "external data" in result.stderr), (
            f"{where} did not refuse external data outside the folder: exit {result.exit_code}: {output[-2000:]}"
        )
    if result.exit_code == 2:
        assert re.search(r"^(error|Error): ", result.stderr, re.MULTILINE), (
            f"{where}: exit 2 without an error line"
        )
    elif result.exit_code == 1:
        assert ONNX_FAILURE.search(result.stderr), (
            f"{where}: exit 1 without onnxruntime's failure: {output[-2000:]}"
        )
    else:
        assert result.exit_code == 0, f"{where} exited {result.exit_code}: {output[-2000:]}"


OUTCOMES = Outcomes("test_any_mutated_onnx_file_gives_exit_0_2_or_an_onnxruntime_failure")


@settings(max_examples=ONNX_EXAMPLES)
@given(example=example_cases)
def test_any_mutated_onnx_file_gives_exit_0_2_or_an_onnxruntime_failure(example: Example) -> None:
    with tempfile.TemporaryDirectory() as scratch, time_limit("the example"), memory_limit():
        root = Path(scratch)
        folder = _lay_out(root)
        data = example.build()
        path = folder / "model.onnx"
        path.write_bytes(data)
        escapes = _escapes(data)
        before = _digests(root)
        codes = []
        for command in COMMANDS:
            result = invoke([command[0], str(path), *command[1:]])
            assert_answer(result, command[0], escapes, example.damage is not None)
            codes.append(f"{command[0]} {result.exit_code}")
        assert _digests(root) == before, "a command changed a file"
        OUTCOMES.record(f"{example.base}: {', '.join(codes)}{' (escapes)' if escapes else ''}")


def test_enough_mutated_onnx_files_ran_and_were_refused() -> None:
    """The property above must really have run models and refused external data outside the
    folder, not only met parse errors."""
    total = sum(OUTCOMES.counts.values())
    if total == 0:
        pytest.skip("the property did not run in this session: the floor is checked right after it")
    ran = sum(count for outcome, count in OUTCOMES.counts.items() if "run 0" in outcome)
    escaped = sum(count for outcome, count in OUTCOMES.counts.items() if "escapes" in outcome)
    assert ran >= total // 10, dict(OUTCOMES.counts)
    assert escaped >= total // 25, dict(OUTCOMES.counts)
