"""Hostile ONNX files given to `inspect`, `run` and `bench`: each case a named test that builds its
model on the fly with onnx.helper and runs the real CLI.

External data: every tensor that can name a file (initializers, sparse initializers, node attribute
tensors, subgraphs at any depth, functions) must name a regular file in the model's own folder; a
canary file beside the model's folder must never be read (its bytes appear in no output) and every
file stays intact. Runs: a Loop of 2**62 iterations stops at `--timeout`. Inputs that numpy cannot
feed, absurd declared sizes, a model without inputs under `bench` and metadata nested 950 deep are
exit code 2 with a message, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from deconv_compiler.cli.main import main
from onnx import TensorProto, helper, numpy_helper

from deconv_compiler.metadata import SPEC

CANARY = b"canary:4f1d0c3a9e27b6d8:must-never-be-read\n" * 16
RULE = "external data must be a file in the model's own folder"
DECONVC = [sys.executable, "-c", "from deconv_compiler.cli.main import main; main()"]
COMMANDS = {
    "inspect": ["inspect"],
    "run": ["run", "--random"],
    "bench": ["bench", "--warmup", "0", "--iters", "1"],
}


# --- building models -----------------------------------------------------------------------------


def _external(name: str, location: str, values: np.ndarray | None = None, **entries: str) -> TensorProto:
    """A tensor whose data is said to live at `location` (nothing is written there)."""
    array = np.arange(4, dtype=np.float32) if values is None else values
    tensor = numpy_helper.from_array(array, name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": str(array.nbytes), **entries}.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto] = (),
    initializers: Sequence[TensorProto] = (),
    outputs: Sequence[onnx.ValueInfoProto] | None = None,
    **fields: object,
) -> onnx.ModelProto:
    y = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])]
    graph = helper.make_graph(list(nodes), "g", list(inputs), y if outputs is None else list(outputs))
    graph.initializer.extend(initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, value in fields.items():
        getattr(model, key).extend(value)  # type: ignore[call-overload]
    return model


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])


def _add_model(weight: TensorProto) -> onnx.ModelProto:
    """y = x + w, `w` an initializer."""
    return _model([helper.make_node("Add", ["x", "w"], ["y"])], [X], [weight])


def _graph(nodes: Sequence[onnx.NodeProto], name: str = "body") -> onnx.GraphProto:
    out = helper.make_tensor_value_info("v", TensorProto.FLOAT, [4])
    return helper.make_graph(list(nodes), name, [], [out])


def _nested(inner: onnx.NodeProto, depth: int) -> onnx.NodeProto:
    """`inner` inside `depth` subgraphs, alternating If branches, Loop bodies and Scan bodies."""
    node = inner
    for level in range(depth):
        body = _graph([node], f"level{level}")
        kind = ("If", "Loop", "Scan")[level % 3]
        if kind == "If":
            node = helper.make_node("If", ["c"], ["v"], then_branch=body, else_branch=body)
        elif kind == "Loop":
            node = helper.make_node("Loop", ["n", "c"], ["v"], body=body)
        else:
            node = helper.make_node("Scan", ["s"], ["v"], body=body, num_scan_inputs=1)
    return node


def _constant(tensor: TensorProto) -> onnx.NodeProto:
    return helper.make_node("Constant", [], ["v"], value=tensor)


# --- running the CLI -----------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The model's folder; the canary lies beside it, one level up."""
    (tmp_path / "canary.bin").write_bytes(CANARY)
    models = tmp_path / "models"
    models.mkdir()
    return models


def _save(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def invoke(*args: str | Path) -> Result:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    return result


def _refused(command: str, path: Path, *phrases: str) -> str:
    """Run `command` on `path`; it must exit 2 with one `error:` line holding `phrases`, show no
    byte of the canary, and leave every file of the test's folder as it was."""
    root = path.parent.parent if path.parent.name == "models" else path.parent  # with the canary, if any
    before = _digests(root)
    result = invoke(*COMMANDS[command][:1], path, *COMMANDS[command][1:])
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == "", result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: "), line
    for phrase in phrases:
        assert phrase in line, line
    assert CANARY[:16] not in result.stdout_bytes + result.stderr_bytes
    assert _digests(root) == before
    return line


# --- external data -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_external_data_climbing_out_with_dotdot_is_refused(folder: Path, command: str) -> None:
    path = _save(_add_model(_external("w", "../canary.bin")), folder)
    line = _refused(command, path, "initializer 'w'", "'../canary.bin'", "climbs out", RULE)
    assert line.startswith(f"error: {path}: ")


@pytest.mark.parametrize("command", COMMANDS)
def test_external_data_at_an_absolute_path_is_refused(folder: Path, command: str) -> None:
    canary = str(folder.parent / "canary.bin")
    _refused(command, _save(_add_model(_external("w", canary)), folder), "is an absolute path")


@pytest.mark.parametrize("location", ["models/../../canary.bin", "sub\\..\\..\\canary.bin", "C:\\canary.bin"])
def test_other_spellings_of_leaving_the_folder_are_refused(folder: Path, location: str) -> None:
    _refused("run", _save(_add_model(_external("w", location)), folder), RULE)


@pytest.mark.parametrize("command", COMMANDS)
def test_external_data_through_a_symlink_out_of_the_folder_is_refused(folder: Path, command: str) -> None:
    (folder / "weights.bin").symlink_to(folder.parent / "canary.bin")
    path = _save(_add_model(_external("w", "weights.bin")), folder)
    _refused(command, path, "'weights.bin' leads out of the model's folder through a symbolic link")


def test_a_linked_folder_out_of_the_model_folder_is_refused(folder: Path) -> None:
    (folder / "data").symlink_to(folder.parent)
    _refused("run", _save(_add_model(_external("w", "data/canary.bin")), folder), "symbolic link")


def test_external_data_in_a_node_attribute_is_checked(folder: Path) -> None:
    model = _model([_constant(_external("c", "../canary.bin")), helper.make_node("Identity", ["v"], ["y"])])
    _refused("inspect", _save(model, folder), "node '' (Constant) attribute 'value'", "climbs out")


def test_external_data_in_a_sparse_initializer_is_checked(folder: Path) -> None:
    values = _external("s", "../canary.bin", np.ones(2, np.float32))
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.array([0, 3], np.int64), "i"), [4])
    model = _model([helper.make_node("Identity", ["s"], ["y"])])
    model.graph.sparse_initializer.append(sparse)
    _refused("run", _save(model, folder), "sparse initializer 's'", "climbs out")


def test_external_data_in_sparse_indices_of_an_attribute_is_checked(folder: Path) -> None:
    values = numpy_helper.from_array(np.ones(2, np.float32), "s")
    indices = _external("i", "../canary.bin", np.array([0, 3], np.int64))
    sparse = helper.make_sparse_tensor(values, indices, [4])
    model = _model([helper.make_node("Constant", [], ["y"], sparse_value=sparse)])
    _refused("bench", _save(model, folder), "attribute 'sparse_value' indices", "climbs out")


@pytest.mark.parametrize("depth", [1, 3, 12])
def test_external_data_in_subgraphs_at_any_depth_is_checked(folder: Path, depth: int) -> None:
    hidden = _nested(_constant(_external("deep", "../canary.bin")), depth)
    model = _model([hidden, helper.make_node("Identity", ["v"], ["y"])])
    line = _refused("inspect", _save(model, folder), "climbs out")
    assert line.count(" > ") == depth, line  # the path to the tensor names each enclosing graph


def test_external_data_in_a_subgraph_initializer_is_checked(folder: Path) -> None:
    body = _graph([helper.make_node("Identity", ["k"], ["v"])])
    body.initializer.append(_external("k", "../canary.bin"))
    model = _model([helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)])
    _refused("run", _save(model, folder), "node '' (If) attribute '", "_branch' > initializer 'k'")


def test_external_data_in_a_model_function_is_checked(folder: Path) -> None:
    function = helper.make_function("local", "f", [], ["v"], [_constant(_external("c", "../canary.bin"))], [])
    model = _model([helper.make_node("f", [], ["y"], domain="local")], functions=[function])
    _refused("inspect", _save(model, folder), "function 'f' > node", "climbs out")


def test_onnxruntime_memory_marker_is_refused(folder: Path) -> None:
    tensor = _external("w", "*/_ORT_MEM_ADDR_/*", offset=str(id(CANARY)))
    _refused("run", _save(_add_model(tensor), folder), "in-memory marker")


def test_a_second_location_entry_is_checked_too(folder: Path) -> None:
    tensor = _external("w", "weights.bin")
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../canary.bin"
    (folder / "weights.bin").write_bytes(np.zeros(4, np.float32).tobytes())
    _refused("run", _save(_add_model(tensor), folder), "'../canary.bin'", "climbs out")


def test_external_data_that_is_a_fifo_is_refused_without_blocking(folder: Path) -> None:
    os.mkfifo(folder / "weights.bin")
    _refused("run", _save(_add_model(_external("w", "weights.bin")), folder), "is not a regular file")


def test_external_data_beyond_the_end_of_its_file_is_refused(folder: Path) -> None:
    (folder / "weights.bin").write_bytes(b"\0" * 8)
    path = _save(_add_model(_external("w", "weights.bin")), folder)
    _refused("run", path, "asks for bytes 0 to 16 of a file of 8 bytes")


def test_a_forged_offset_is_refused(folder: Path) -> None:
    (folder / "weights.bin").write_bytes(b"\0" * 16)
    path = _save(_add_model(_external("w", "weights.bin", offset="-8")), folder)
    _refused("run", path, "has offset '-8', not a byte count")


def test_missing_external_data_is_named_by_run_but_inspect_needs_none(folder: Path) -> None:
    path = _save(_add_model(_external("w", "weights.bin")), folder)
    assert invoke("inspect", path).exit_code == 0
    _refused("run", path, "'weights.bin' is missing")


def test_external_data_in_the_models_folder_runs_from_any_working_folder(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    (folder / "sub").mkdir()
    (folder / "sub" / "weights.bin").write_bytes(weights.tobytes())
    (folder / "alias.bin").symlink_to("sub/weights.bin")  # a link that stays inside is fine
    for location in ("sub/weights.bin", "alias.bin"):
        path = _save(_add_model(_external("w", location)), folder, f"{location[:3]}.onnx")
        monkeypatch.chdir(folder.parent)  # onnxruntime must look beside the model, not here
        x = folder / "x.npy"
        np.save(x, np.zeros(4, np.float32))
        ran = invoke("run", path, "--input", x)
        assert ran.exit_code == 0, ran.output
        assert "mean 2.5, max |y| 4" in ran.stdout
        assert invoke("bench", path, "--warmup", "0", "--iters", "2").exit_code == 0
        assert "external data" in invoke("inspect", path).stdout


# --- time limits -----------------------------------------------------------------------------------


def loop_model(trips: int = 2**62) -> onnx.ModelProto:
    """y = x + `trips` ones, one Loop iteration at a time (by default, endless for a test)."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["c_in"], ["c_out"]),
            helper.make_node("Add", ["v_in", "one"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [4]),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [4]),
        ],
        [numpy_helper.from_array(np.ones(4, np.float32), "one")],
    )
    count = helper.make_tensor("trips", TensorProto.INT64, [], [trips])
    keep_going = helper.make_tensor("keep_going", TensorProto.BOOL, [], [True])
    model = _model(
        [helper.make_node("Loop", ["trips", "keep_going", "x"], ["y"], body=body)], [X], [count, keep_going]
    )
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("command", ["run", "bench"])
def test_a_loop_of_2_62_iterations_stops_at_the_timeout(tmp_path: Path, command: str) -> None:
    path = _save(loop_model(), tmp_path)
    started = time.perf_counter()
    result = subprocess.run(
        [*DECONVC, *COMMANDS[command][:1], str(path), *COMMANDS[command][1:], "--timeout", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "error: the model ran for longer than the time limit (0.5 s, --timeout) and was stopped "
        "(a Loop or Scan with a huge trip count?)"
    )
    assert "Traceback" not in result.stderr and "onnxruntime" not in result.stderr
    assert elapsed < 30, elapsed  # the interpreter's start-up and imports, then half a second


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process `pid` has installed a handler for `sig` (Linux: SigCgt in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc to see the handler installed")
@pytest.mark.parametrize("command", ["run", "bench"])
def test_sigterm_stops_an_endless_loop_without_a_timeout(tmp_path: Path, command: str) -> None:
    path = _save(loop_model(), tmp_path)
    process = subprocess.Popen(
        [*DECONVC, *COMMANDS[command][:1], str(path), *COMMANDS[command][1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not _catches(process.pid, signal.SIGTERM) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # onnxruntime's import and the session: then the Loop runs
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        process.wait(timeout=30)
        elapsed = time.monotonic() - started
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == 128 + signal.SIGTERM
    assert elapsed < 10, elapsed  # onnxruntime stops between two nodes of the Loop's body


def test_a_run_within_its_timeout_is_unchanged(tmp_path: Path) -> None:
    path = _save(_add_model(numpy_helper.from_array(np.ones(4, np.float32), "w")), tmp_path)
    result = invoke("run", path, "--random", "--timeout", "30")
    assert result.exit_code == 0 and result.stdout.startswith("output (4,) float32 on cpu")
    bench = invoke("bench", path, "--timeout", "30", "--warmup", "1", "--iters", "20", "--json")
    assert bench.exit_code == 0 and json.loads(bench.stdout)["results"][0]["iterations"] == 20


def test_check_takes_a_timeout(tmp_path: Path) -> None:
    spec = tmp_path / "layer.yaml"
    spec.write_text("type: Conv1DTranspose\nfilters: 2\nkernel_size: 3\ninput_shape: [5, 2]\n")
    result = invoke("check", spec, "--timeout", "60")
    assert result.exit_code == 0 and result.stdout.startswith("PASS"), result.output


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e9", "soon"])
def test_a_timeout_must_be_a_positive_finite_number_of_seconds(tmp_path: Path, value: str) -> None:
    path = _save(_add_model(numpy_helper.from_array(np.ones(4, np.float32), "w")), tmp_path)
    result = invoke("run", path, "--random", "--timeout", value)
    assert result.exit_code == 2 and "--timeout" in result.stderr, result.output


# --- inputs ----------------------------------------------------------------------------------------


def _typed_input(type_proto: onnx.TypeProto) -> onnx.ModelProto:
    value = helper.make_value_info("x", type_proto)
    return _model([helper.make_node("Identity", ["x"], ["y"])], [value])


def _tensor_type(elem_type: int, shape: Sequence[int | str | None] | None) -> onnx.TypeProto:
    return helper.make_tensor_type_proto(elem_type, shape)


UNFEEDABLE = {
    "undefined_element_type": (_tensor_type(TensorProto.UNDEFINED, [4]), "declares no element type"),
    "strings": (_tensor_type(TensorProto.STRING, [4]), "declares strings"),
    "unknown_element_type": (_tensor_type(999, [4]), "has element type 999, unknown to this onnx package"),
    "sequence": (
        helper.make_sequence_type_proto(_tensor_type(TensorProto.FLOAT, [4])),
        "is sequence<float32>; run and bench feed tensors of numbers only",
    ),
    "map": (
        helper.make_map_type_proto(TensorProto.INT64, _tensor_type(TensorProto.FLOAT, [4])),
        "is map<int64, float32>",
    ),
    "optional": (
        helper.make_optional_type_proto(_tensor_type(TensorProto.FLOAT, [4])),
        "is optional<float32>",
    ),
    "sparse": (helper.make_sparse_tensor_type_proto(TensorProto.FLOAT, [4]), "is sparse_tensor<float32>"),
    "no_type": (onnx.TypeProto(), "is declared without a type"),
    "no_shape": (_tensor_type(TensorProto.FLOAT, None), "declares no shape (not even its rank)"),
    "negative_size": (_tensor_type(TensorProto.FLOAT, [2, -3]), "declares the size -3 in [2, -3]"),
}


@pytest.mark.parametrize("case", UNFEEDABLE)
@pytest.mark.parametrize("command", ["run", "bench"])
def test_inputs_that_cannot_be_fed_are_named(tmp_path: Path, case: str, command: str) -> None:
    type_proto, phrase = UNFEEDABLE[case]
    path = _save(_typed_input(type_proto), tmp_path)
    line = _refused(command, path, phrase)
    assert line.startswith(f"error: {path}: input 'x' ")


@pytest.mark.parametrize(
    "shape, size",
    [
        ([2**31 - 1, 2**31 - 1], "17,179,869,168.0 GiB"),  # int32-max sizes
        ([1024, 1024, 1024, 1024], "4,096.0 GiB"),  # a declared 4 TiB input
        ([2**62, 2**62], "79,228,162,514,264,337,593,543,950,336.0 GiB"),
    ],
)
def test_huge_declared_inputs_are_refused_before_allocating(
    tmp_path: Path, shape: list[int], size: str
) -> None:
    path = _save(_typed_input(_tensor_type(TensorProto.FLOAT, shape)), tmp_path)
    tracemalloc.start()
    try:
        line = _refused("run", path, "would make the random inputs take", "the limit is 2 GiB")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size in line
    assert peak < 50 * 2**20


def test_huge_shape_given_for_dynamic_sizes_is_refused(tmp_path: Path) -> None:
    path = _save(_typed_input(_tensor_type(TensorProto.FLOAT, ["n", 4])), tmp_path)
    result = invoke("bench", path, "--batch", str(2**40), "--iters", "1")
    assert result.exit_code == 2 and "the limit is 2 GiB" in result.stderr, result.output


def test_several_random_inputs_count_together(tmp_path: Path) -> None:
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2**28]) for n in ("a", "b", "c")]
    model = _model([helper.make_node("Sum", ["a", "b", "c"], ["y"])], inputs)
    result = invoke("run", _save(model, tmp_path), "--random")
    assert result.exit_code == 2, result.output
    assert "input 'c' of shape (268435456) float32 would make the random inputs take 3.0 GiB" in result.stderr


def test_a_dynamic_second_input_asks_for_an_npz(tmp_path: Path) -> None:
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n"]) for n in ("a", "b")]
    model = _model([helper.make_node("Add", ["a", "b"], ["y"])], inputs)
    result = invoke("run", _save(model, tmp_path), "--random", "--shape", "4")
    assert result.exit_code == 2
    assert "input 'b' has dynamic dimensions (None): --shape sizes only the first input" in result.stderr


def test_other_element_types_are_fed(tmp_path: Path) -> None:
    model = _model(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
        [helper.make_tensor_value_info("x", TensorProto.INT32, [4])],
    )
    assert invoke("run", _save(model, tmp_path), "--random").exit_code == 0


def test_an_initializer_listed_as_an_input_is_not_fed(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones(4, np.float32), "w")
    model = _add_model(weight)
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, ["n"]))  # has a value
    assert invoke("run", _save(model, tmp_path), "--random").exit_code == 0


def test_a_model_without_inputs_runs_but_is_not_benched(tmp_path: Path) -> None:
    constant = numpy_helper.from_array(np.ones(4, np.float32), "c")
    path = _save(_model([helper.make_node("Constant", [], ["y"], value=constant)]), tmp_path)
    assert invoke("run", path, "--random").exit_code == 0
    _refused("bench", path, "the model has 0 inputs; bench times models of one input")


def test_bench_refuses_a_model_of_two_inputs(tmp_path: Path) -> None:
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("a", "b")]
    path = _save(_model([helper.make_node("Add", ["a", "b"], ["y"])], inputs), tmp_path)
    _refused("bench", path, "the model has 2 inputs ('a', 'b')")


def test_bench_refuses_a_scalar_input(tmp_path: Path) -> None:
    path = _save(_typed_input(_tensor_type(TensorProto.FLOAT, [])), tmp_path)
    _refused("bench", path, "input 'x' is a scalar; bench needs a batch axis")


def test_a_model_onnxruntime_cannot_load_is_its_failure_exit_1(tmp_path: Path) -> None:
    model = _model([helper.make_node("Unknown", ["x"], ["y"], domain="elsewhere")], [X])
    model.opset_import.append(helper.make_opsetid("elsewhere", 1))
    result = invoke("bench", _save(model, tmp_path), "--iters", "1")
    assert result.exit_code == 1 and result.stderr.startswith("error: onnxruntime cannot load the model")


# --- metadata --------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [950, 5000])
def test_inspect_shows_spec_metadata_nested_deeply_as_text(tmp_path: Path, depth: int) -> None:
    model = _add_model(numpy_helper.from_array(np.ones(4, np.float32), "w"))
    nested = "[" * depth + "]" * depth
    helper.set_model_props(model, {SPEC: nested})
    path = _save(model, tmp_path)
    text = invoke("inspect", path)
    assert text.exit_code == 0 and f"  {SPEC}: {nested}\n" in text.stdout
    as_json = invoke("inspect", path, "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["metadata"][SPEC] == nested


def test_inspect_still_parses_an_honest_spec(tmp_path: Path) -> None:
    model = _add_model(numpy_helper.from_array(np.ones(4, np.float32), "w"))
    helper.set_model_props(model, {SPEC: json.dumps({"layers": [{"kernel_size": [[3]]}]})})
    shown = json.loads(invoke("inspect", _save(model, tmp_path), "--json").stdout)["metadata"][SPEC]
    assert shown == {"layers": [{"kernel_size": [[3]]}]}


# --- what protobuf and onnxruntime hand back ---------------------------------------------------------


def test_a_string_field_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    model = _add_model(numpy_helper.from_array(np.ones(4, np.float32), "w"))
    model.graph.node[0].name = "marker"
    data = model.SerializeToString().replace(b"marker", b"mark\xffr")  # protobuf would hand it over as bytes
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    for command in ("inspect", "run"):
        line = _refused(command, path, "is not a valid ONNX model: graph.node[0].name is not UTF-8 text")
        assert line == f"error: {path} is not a valid ONNX model: graph.node[0].name is not UTF-8 text"


@pytest.mark.parametrize(
    "node, holds",
    [
        (
            helper.make_node(
                "Constant", [], ["y"], value=helper.make_tensor("s", TensorProto.STRING, [1], [b"a"])
            ),
            "strings",
        ),
        (helper.make_node("SequenceConstruct", ["x"], ["y"]), "a list"),
    ],
    ids=["strings", "sequence"],
)
def test_outputs_that_are_not_numbers_are_refused(tmp_path: Path, node: onnx.NodeProto, holds: str) -> None:
    path = _save(
        _model([node], [X] if node.input else [], outputs=[helper.make_value_info("y", onnx.TypeProto())]),
        tmp_path,
    )
    _refused("run", path, f"the model's output 'y' holds {holds}; only tensors of numbers are shown")
