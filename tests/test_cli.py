"""The `deconvc` command line: through click's CliRunner, and as the installed executable.

Exit codes (README): 0 success, 2 bad spec, file or usage (nothing is written), 1 onnxruntime
failure or a bug of ours (one line asking for a report; the traceback only with --debug).
Problems are printed one per line as `file:line: path: message`, never as a traceback.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner, Result
from deconv_compiler.cli.main import main

from deconv_compiler import compiler, layer_plans, runtime
from deconv_compiler.errors import InternalError
from deconv_compiler.model_file import DetachedModel
from deconv_compiler.options import MAX_OPSET, MIN_OPSET

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
SEED_EXAMPLE = SPECS / "seed_example.yaml"  # Conv2DTranspose(32, 2, 2, relu) on (4, 10, 8, 128)
DYNAMIC = SPECS / "dcgan_generator.yaml"  # input (None, 7, 7, 256) -> (None, 28, 28, 1)
SPEC_FILES = sorted(p for p in SPECS.iterdir() if p.suffix in (".yaml", ".yml", ".json"))

BAD_SPEC = """\
type: Conv2DTranspose
filters: 0
kernel_size: 3
strides: [1, 0]
input_shape: [5, 5, 3]
activation: Relu
"""
# `file:line: path: message`
PROBLEM_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<path>[^:]+): (?P<message>.+)$")


def invoke(*args: str | Path) -> Result:
    result = CliRunner().invoke(main, [str(a) for a in args])
    # click's own exits are SystemExit; anything else escaped the CLI as a traceback
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def assert_clean_failure(result: Result, code: int = 2) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert result.stderr.strip(), "a failure must say why on stderr"


@pytest.fixture
def bad_spec(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_SPEC)
    return path


@pytest.fixture(scope="module")
def seed_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed example compiled once (static shape)."""
    out = tmp_path_factory.mktemp("seed") / "seed.onnx"
    result = invoke("compile", SEED_EXAMPLE, "-o", out, "--strategy", "native")  # the ConvTranspose node
    assert result.exit_code == 0, result.output
    return out


# --- compile --------------------------------------------------------------------------------------


def test_compile_seed_example(seed_model: Path) -> None:
    model = onnx.load(str(seed_model))
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(str(seed_model), providers=["CPUExecutionProvider"])
    (declared,) = session.get_inputs()
    assert declared.shape == [4, 10, 8, 128]
    x = np.random.default_rng(0).standard_normal((4, 10, 8, 128)).astype(np.float32)
    (y,) = session.run(None, {declared.name: x})
    assert y.shape == (4, 20, 16, 32)
    assert float(np.min(y)) >= 0.0  # relu


@pytest.mark.parametrize("command", ["validate", "compile", "check"])
def test_an_onnx_model_given_where_a_spec_is_expected_is_named_as_such(
    seed_model: Path, tmp_path: Path, command: str
) -> None:
    extra = ["-o", str(tmp_path / "again.onnx")] if command == "compile" else []
    result = CliRunner().invoke(main, [command, str(seed_model), *extra])
    assert result.exit_code == 2
    assert f"{seed_model}: is an ONNX model, which has no Keras layers to read" in result.output
    assert not (tmp_path / "again.onnx").exists()


def test_python_dash_m_runs_the_command_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deconv_compiler", "validate", "specs/seed_example.yaml"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("specs/seed_example.yaml: ok: 1 layer")
    usage = subprocess.run(
        [sys.executable, "-m", "deconv_compiler", "--help"], capture_output=True, text=True
    )
    assert usage.stdout.startswith("Usage: deconvc ")


def test_compile_reports_what_it_wrote(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = invoke("compile", SEED_EXAMPLE, "-o", out)
    assert result.exit_code == 0
    assert f"wrote {out} (opset" in result.stdout
    assert "input (4, 10, 8, 128) -> output (4, 20, 16, 32)" in result.stdout
    assert result.stderr == ""


def test_compile_bad_spec_writes_nothing(tmp_path: Path, bad_spec: Path) -> None:
    out = tmp_path / "out.onnx"
    result = invoke("compile", bad_spec, "-o", out)
    assert_clean_failure(result)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"], "no temporary files left"
    lines = result.stderr.splitlines()
    problems = [m for m in map(PROBLEM_LINE.match, lines) if m and m["file"] == str(bad_spec)]
    assert [(m["line"], m["path"]) for m in problems] == [
        ("2", "filters"),
        ("4", "strides[1]"),
        ("6", "activation"),
    ]
    assert lines[-1] == "error: 3 problems found; nothing was written"


def test_compile_bad_spec_keeps_an_older_output(tmp_path: Path, bad_spec: Path) -> None:
    out = tmp_path / "out.onnx"
    old = b"an older model, byte for byte\x00\xff"
    out.write_bytes(old)
    assert_clean_failure(invoke("compile", bad_spec, "-o", out))
    assert out.read_bytes() == old


def test_compile_over_an_older_output_replaces_it(tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    out.write_bytes(b"old")
    assert invoke("compile", SEED_EXAMPLE, "-o", out).exit_code == 0
    onnx.checker.check_model(onnx.load(str(out)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"], "no temporary files left"


def test_compiled_file_mode_follows_the_umask(tmp_path: Path) -> None:
    out, plain = tmp_path / "out.onnx", tmp_path / "plain"
    plain.write_bytes(b"")
    assert invoke("compile", SEED_EXAMPLE, "-o", out).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_compile_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    for out in (first, second):
        assert invoke("compile", SPECS / "upsample_1d.json", "-o", out).exit_code == 0
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("opset", [MIN_OPSET - 1, MAX_OPSET + 1, 0, -1])
def test_opset_out_of_range_is_a_usage_error(tmp_path: Path, opset: int) -> None:
    out = tmp_path / "m.onnx"
    result = invoke("compile", SEED_EXAMPLE, "-o", out, "--opset", str(opset))
    assert_clean_failure(result)
    assert "--opset" in result.stderr
    assert not out.exists()


def test_opset_range_is_11_to_26() -> None:
    assert (MIN_OPSET, MAX_OPSET) == (11, 26)


@pytest.mark.parametrize("opset", [11, 26])
def test_opset_bounds_work(tmp_path: Path, opset: int) -> None:
    out = tmp_path / "m.onnx"
    result = invoke("compile", SPECS / "upsample_1d.json", "-o", out, "--opset", str(opset))
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert {o.domain: o.version for o in model.opset_import}[""] == opset
    assert f"(opset {opset}," in result.stdout


def test_seed_option_changes_initializer_weights(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "c.onnx"
    assert invoke("compile", SEED_EXAMPLE, "-o", a, "--seed", "1").exit_code == 0
    assert invoke("compile", SEED_EXAMPLE, "-o", b, "--seed", "2").exit_code == 0
    assert invoke("compile", SEED_EXAMPLE, "-o", c, "--seed", "1").exit_code == 0
    assert a.read_bytes() == c.read_bytes() != b.read_bytes()
    assert_clean_failure(invoke("compile", SEED_EXAMPLE, "-o", a, "--seed", "-1"))


def test_output_is_a_directory(tmp_path: Path) -> None:
    result = invoke("compile", SEED_EXAMPLE, "-o", tmp_path)
    assert_clean_failure(result)
    assert result.stderr.strip() == f"error: output {tmp_path} is a directory"


def test_output_in_a_missing_directory(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "m.onnx"
    result = invoke("compile", SEED_EXAMPLE, "-o", out)
    assert_clean_failure(result)
    assert result.stderr.strip() == f"error: output directory {out.parent} does not exist"
    assert not out.parent.exists()


def test_output_is_the_spec_itself(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    shutil.copy(SEED_EXAMPLE, spec)
    before = spec.read_bytes()
    result = invoke("compile", spec, "-o", spec)
    assert_clean_failure(result)
    assert "is the input file itself" in result.stderr
    assert spec.read_bytes() == before


def test_output_is_the_spec_through_another_path(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    shutil.copy(SEED_EXAMPLE, spec)
    (tmp_path / "sub").mkdir()
    before = spec.read_bytes()
    result = invoke("compile", spec, "-o", tmp_path / "sub" / ".." / "s.yaml")
    assert_clean_failure(result)
    assert spec.read_bytes() == before


def test_missing_spec_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = invoke("compile", missing, "-o", tmp_path / "m.onnx")
    assert_clean_failure(result)
    assert f"{missing}: " in result.stderr
    assert "No such file or directory" in result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_missing_spec_file_is_one_problem(tmp_path: Path) -> None:
    result = invoke("compile", tmp_path / "nope.yaml", "-o", tmp_path / "m.onnx")
    assert_clean_failure(result)
    assert result.stderr.strip().splitlines()[1:] == ["error: 1 problem found; nothing was written"], (
        result.stderr
    )
    assert "<spec>" not in result.stderr


def test_spec_is_a_directory(tmp_path: Path) -> None:
    result = invoke("validate", tmp_path)
    assert_clean_failure(result)
    assert "is a directory" in result.stderr


def test_absurd_kernel_size_is_a_spec_error(tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_text("filters: 4\nkernel_size: 100000000000000000000000\ninput_shape: [5, 5, 3]\n")
    result = CliRunner().invoke(main, ["compile", str(spec), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("path", SPEC_FILES, ids=[p.name for p in SPEC_FILES])
def test_every_example_spec_compiles(tmp_path: Path, path: Path) -> None:
    out = tmp_path / f"{path.stem}.onnx"
    result = invoke("compile", path, "-o", out)
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(onnx.load(str(out)))


def test_there_are_example_specs() -> None:
    assert {p.suffix for p in SPEC_FILES} >= {".yaml", ".json"}
    assert len(SPEC_FILES) >= 5


# --- validate -------------------------------------------------------------------------------------


def test_validate_good_spec() -> None:
    result = invoke("validate", SEED_EXAMPLE)
    assert result.exit_code == 0
    assert result.stdout.strip() == (
        f"{SEED_EXAMPLE}: ok: 1 layer, input (4, 10, 8, 128) -> output (4, 20, 16, 32)"
    )


def test_validate_bad_spec(bad_spec: Path) -> None:
    result = invoke("validate", bad_spec)
    assert_clean_failure(result)
    assert result.stdout == ""
    assert f"{bad_spec}:2: filters: must be >= 1, got 0" in result.stderr.splitlines()


def test_validate_summary_does_not_talk_about_writing(bad_spec: Path) -> None:
    result = invoke("validate", bad_spec)
    assert "written" not in result.stderr


def test_validate_json_spec_with_line_numbers(tmp_path: Path) -> None:
    spec = tmp_path / "bad.json"
    spec.write_text(
        '{\n  "filters": 4,\n  "kernel_size": 3,\n  "padding": "full",\n  "input_shape": [5, 5, 3]\n}\n'
    )
    result = invoke("validate", spec)
    assert_clean_failure(result)
    assert f"{spec}:4: padding: must be 'valid' or 'same'" in result.stderr


def test_validate_invalid_yaml(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("filters: 4\nkernel_size: [3, 3\ninput_shape: [5, 5, 3]\n")
    result = invoke("validate", spec)
    assert_clean_failure(result)
    assert result.stderr.startswith(f"{spec}:3: invalid YAML: ")


# --- run ------------------------------------------------------------------------------------------


def test_run_model_random(seed_model: Path) -> None:
    result = invoke("run", seed_model, "--random")
    assert result.exit_code == 0, result.output
    assert re.match(r"^output \(4, 20, 16, 32\) float32 on cpu in ", result.stdout)


def test_run_spec_directly(tmp_path: Path) -> None:
    """A spec is compiled in memory; inline weights: kernel [1, 2], bias 0.5, strides 2."""
    x = np.array([[[1.0], [2.0], [3.0]]], np.float32)
    np.save(tmp_path / "x.npy", x)
    spec = SPECS / "inline_weights.yaml"
    result = invoke("run", spec, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("output (1, 6, 1) float32 on cpu in")
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(y[0, :, 0], [1.5, 2.5, 2.5, 4.5, 3.5, 6.5])


def test_run_dynamic_without_shape(tmp_path: Path) -> None:
    result = invoke("run", DYNAMIC, "--random")
    assert_clean_failure(result)
    assert "dynamic dimensions (None, 7, 7, 256): give --shape" in result.stderr


def test_run_dynamic_with_shape(tmp_path: Path) -> None:
    result = invoke("run", DYNAMIC, "--random", "--shape", "2,7,7,256", "--output", tmp_path / "y.npy")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("output (2, 28, 28, 1) float32 on cpu in")
    assert np.load(tmp_path / "y.npy").shape == (2, 28, 28, 1)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("2,7,7,255", "does not fit the model's input (None, 7, 7, 256)"),
        ("2,7,7", "does not fit the model's input (None, 7, 7, 256)"),
        ("a,b", "--shape must be comma-separated integers, got 'a,b'"),
        ("0,7,7,256", "--shape sizes must be > 0"),
    ],
    ids=["wrong_channels", "wrong_rank", "not_integers", "zero"],
)
def test_run_bad_shape(shape: str, message: str) -> None:
    result = invoke("run", DYNAMIC, "--random", "--shape", shape)
    assert_clean_failure(result)
    assert message in result.stderr


def test_run_input_file(tmp_path: Path, seed_model: Path) -> None:
    x = np.random.default_rng(1).standard_normal((4, 10, 8, 128))  # float64: cast to the model's
    np.save(tmp_path / "x.npy", x)
    result = invoke("run", seed_model, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "y.npy").shape == (4, 20, 16, 32)


@pytest.mark.parametrize(
    "shape", [(4, 10, 8, 127), (4, 10, 8), (1, 4, 10, 8, 128)], ids=["wrong_channels", "rank_3", "rank_5"]
)
def test_run_input_wrong_shape(tmp_path: Path, seed_model: Path, shape: tuple[int, ...]) -> None:
    np.save(tmp_path / "x.npy", np.zeros(shape, np.float32))
    result = invoke("run", seed_model, "--input", tmp_path / "x.npy")
    assert_clean_failure(result)
    assert f"has shape {shape}" in result.stderr
    assert "the model expects (4, 10, 8, 128)" in result.stderr


def test_run_input_missing_file(tmp_path: Path, seed_model: Path) -> None:
    result = invoke("run", seed_model, "--input", tmp_path / "x.npy")
    assert_clean_failure(result)
    assert "cannot read input" in result.stderr


def _invoke_collecting_resource_warnings(
    *args: str | Path,
) -> tuple[int, str, list[warnings.WarningMessage]]:
    """Invoke, then drop the result (its traceback holds the command's frames) and collect."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = invoke(*args)
        assert "Traceback" not in result.output
        code, stderr = result.exit_code, result.stderr
        del result
        gc.collect()
    return code, stderr, [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_run_input_npz_without_the_input_name_is_refused(tmp_path: Path, seed_model: Path) -> None:
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 10, 8, 128)))
    code, stderr, _ = _invoke_collecting_resource_warnings("run", seed_model, "--input", tmp_path / "x.npz")
    assert code == 2
    assert "has no array named 'input' (the model's input); it has: x" in stderr


def test_run_input_npz_by_input_name(tmp_path: Path, seed_model: Path) -> None:
    np.savez(tmp_path / "x.npz", input=np.ones((4, 10, 8, 128), np.float32))
    result = invoke("run", seed_model, "--input", tmp_path / "x.npz")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("output (4, 20, 16, 32) float32 on cpu in ")


def test_run_input_npz_closes_the_archive(tmp_path: Path, seed_model: Path) -> None:
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 10, 8, 128)))
    _, _, leaked = _invoke_collecting_resource_warnings("run", seed_model, "--input", tmp_path / "x.npz")
    assert not leaked, [str(w.message) for w in leaked]


def test_run_input_pickled_object_array_is_refused(tmp_path: Path, seed_model: Path) -> None:
    np.save(tmp_path / "x.npy", np.array([{}], dtype=object), allow_pickle=True)
    result = invoke("run", seed_model, "--input", tmp_path / "x.npy")
    assert_clean_failure(result)
    assert "allow_pickle=False" in result.stderr


def test_run_input_non_numeric_array(tmp_path: Path, seed_model: Path) -> None:
    np.save(tmp_path / "x.npy", np.full((4, 10, 8, 128), "a"))
    result = CliRunner().invoke(main, ["run", str(seed_model), "--input", str(tmp_path / "x.npy")])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)


def test_run_output_in_missing_directory(tmp_path: Path, seed_model: Path) -> None:
    out = tmp_path / "missing" / "y.npy"
    result = CliRunner().invoke(main, ["run", str(seed_model), "--random", "--output", str(out)])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("extra", [[], ["--random", "--input", "x.npy"]], ids=["neither", "both"])
def test_run_needs_exactly_one_input_source(seed_model: Path, extra: list[str]) -> None:
    result = invoke("run", seed_model, *extra)
    assert_clean_failure(result)
    assert result.stderr.strip() == "error: give exactly one of --input FILE or --random"


def test_run_bad_spec(bad_spec: Path) -> None:
    result = invoke("run", bad_spec, "--random")
    assert_clean_failure(result)
    assert f"{bad_spec}:2: filters:" in result.stderr


def test_run_missing_model(tmp_path: Path) -> None:
    result = invoke("run", tmp_path / "nope.onnx", "--random")
    assert_clean_failure(result)
    assert "nope.onnx: no such file" in result.stderr


def test_run_corrupt_model(tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"garbage\n")
    result = invoke("run", tmp_path / "bad.onnx", "--random")
    assert_clean_failure(result)
    assert "bad.onnx is not an ONNX model" in result.stderr


def test_run_onnxruntime_failure_is_exit_1(tmp_path: Path) -> None:
    """README: float64 compiles, but the CPU provider has no float64 ConvTranspose kernel."""
    spec = tmp_path / "f64.yaml"
    spec.write_text("filters: 2\nkernel_size: 3\ninput_shape: [4, 4, 1]\nbatch_size: 1\ndtype: float64\n")
    result = invoke("run", spec, "--random")
    assert_clean_failure(result, code=1)
    assert "NOT_IMPLEMENTED" in result.stderr


# --- schema, version, help ------------------------------------------------------------------------


def test_schema_is_json() -> None:
    result = invoke("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert set(schema["$defs"]) >= {"Layer", "Model"}
    assert (SPECS / "schema" / "spec.schema.json").exists()


def test_version_and_help() -> None:
    assert invoke("--version").stdout.strip() == "deconvc, version 0.1.0"
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("compile", "run", "schema", "validate"):
        assert command in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    assert_clean_failure(invoke("frobnicate"))


# --- the installed executable ---------------------------------------------------------------------


def _executable() -> str | None:
    beside_python = Path(sys.executable).with_name("deconvc")
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("deconvc")


@pytest.fixture(scope="module")
def deconvc() -> str:
    path = _executable()
    if path is None:
        pytest.skip("the deconvc executable is not installed")
    return path


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )


def test_executable_compile_and_run(deconvc: str, tmp_path: Path, seed_model: Path) -> None:
    out = tmp_path / "seed.onnx"
    compiled = _run(deconvc, "compile", SEED_EXAMPLE, "-o", out, "--strategy", "native")
    assert compiled.returncode == 0, compiled.stderr
    assert compiled.stderr == ""
    assert out.read_bytes() == seed_model.read_bytes(), "same bytes in and out of process"
    ran = _run(deconvc, "run", out, "--random")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("output (4, 20, 16, 32) float32 on cpu in")


def test_executable_bad_spec(deconvc: str, tmp_path: Path, bad_spec: Path) -> None:
    out = tmp_path / "out.onnx"
    out.write_bytes(b"old")
    result = _run(deconvc, "compile", bad_spec.name, "-o", out.name, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "bad.yaml:2: filters: must be >= 1, got 0",
        "bad.yaml:4: strides[1]: must be >= 1, got 0",
        "bad.yaml:6: activation: unknown activation 'Relu'; did you mean 'relu'? (names are case-sensitive)",
        "error: 3 problems found; nothing was written",
    ]
    assert out.read_bytes() == b"old"


def test_executable_validate_and_missing_file(deconvc: str, tmp_path: Path) -> None:
    good = _run(deconvc, "validate", SEED_EXAMPLE)
    assert (good.returncode, good.stderr) == (0, "")
    assert ": ok: " in good.stdout
    missing = _run(deconvc, "validate", tmp_path / "nope.yaml")
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    assert "No such file or directory" in missing.stderr


# --- check, bench, inspect, providers -------------------------------------------------------------

DCGAN = ROOT / "specs" / "dcgan_generator.yaml"
CUDA_REASON = runtime.cuda_unavailable_reason()


def test_check_passes_against_the_reference() -> None:
    result = invoke("check", DCGAN, "--threads", "1")
    assert result.exit_code == 0, result.output
    assert re.match(
        r"^PASS: .*dcgan_generator\.yaml on cpu, input \(2, 7, 7, 256\) float32: max error \S+ = \S+ of scale \S+ \(tolerance 1e-05\)$",
        result.stdout.strip(),
    )


def test_check_fails_with_exit_1_when_the_error_exceeds_the_tolerance() -> None:
    result = invoke("check", DCGAN, "--tolerance", "1e-12")
    assert result.exit_code == 1 and result.stdout.startswith("FAIL: ")


def test_check_with_a_shape_for_dynamic_dims() -> None:
    result = invoke("check", ROOT / "specs" / "dilated_with_weights.yaml", "--shape", "1,3,7,2")
    assert result.exit_code == 0 and "input (1, 3, 7, 2)" in result.stdout


def test_check_of_a_bad_spec_is_exit_2(bad_spec: Path) -> None:
    assert_clean_failure(invoke("check", bad_spec))


@pytest.mark.skipif(CUDA_REASON is None, reason="CUDA is usable here")
@pytest.mark.parametrize("command", ["run", "check", "bench"])
def test_cuda_where_it_cannot_load_is_a_clear_error(command: str, seed_model: Path) -> None:
    target = SEED_EXAMPLE if command == "check" else seed_model
    extra = ["--random"] if command == "run" else []
    result = invoke(command, target, *extra, "--provider", "cuda")
    assert_clean_failure(result)
    assert result.stderr.strip() == f"error: --provider cuda: {CUDA_REASON}"


def test_auto_provider_says_which_provider_ran(seed_model: Path) -> None:
    result = invoke("run", seed_model, "--random", "--provider", "auto")
    assert result.exit_code == 0
    assert f"on {'cpu' if CUDA_REASON else 'cuda'} in " in result.stdout


def test_bench_json_reports_percentiles_throughput_and_gflops(seed_model: Path) -> None:
    result = invoke(
        "bench", seed_model, "--iters", "5", "--warmup", "1", "--threads", "1", "--no-spin", "--json"
    )
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)["results"]
    assert report["input_shape"] == [4, 10, 8, 128] and report["iterations"] == 5 and report["threads"] == 1
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
    assert report["conv_transpose_flops"] == 2 * 4 * 10 * 8 * 128 * 32 * 4
    assert report["throughput_per_s"] > 0 and report["conv_transpose_gflops_per_s"] > 0


def test_bench_a_spec_over_several_batch_sizes() -> None:
    result = invoke("bench", DCGAN, "--batch", "1,3", "--iters", "3", "--warmup", "1", "--opt-level", "basic")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.strip().startswith("(")]
    assert [row.split(")")[0].strip() for row in rows] == ["(1, 7, 7, 256", "(3, 7, 7, 256"]
    assert "p50 ms" in result.stdout and "GFLOP/s" in result.stdout


def test_bench_takes_the_batch_from_shape_when_no_batch_is_given() -> None:
    result = invoke("bench", DCGAN, "--shape", "5,7,7,256", "--iters", "2", "--warmup", "0", "--json")
    assert result.exit_code == 0, result.output
    assert [r["input_shape"] for r in json.loads(result.stdout)["results"]] == [[5, 7, 7, 256]]


def test_bench_refuses_a_batch_the_model_cannot_take(seed_model: Path) -> None:
    result = invoke("bench", seed_model, "--batch", "2")
    assert_clean_failure(result)
    assert "batch size is fixed at 4" in result.stderr


def test_inspect_text_and_json(seed_model: Path) -> None:
    text = invoke("inspect", seed_model)
    assert text.exit_code == 0
    assert (
        "ConvTranspose" in text.stdout
        and "pads=[0, 0, 0, 0]" in text.stdout
        and '"filters": 32' in text.stdout
    )
    as_json = json.loads(invoke("inspect", seed_model, "--json").stdout)
    assert [n["op_type"] for n in as_json["nodes"]] == ["Transpose", "ConvTranspose", "Relu", "Transpose"]


def test_inspect_a_spec_is_a_clear_error() -> None:
    result = invoke("inspect", SEED_EXAMPLE)
    assert_clean_failure(result)
    assert "not an ONNX model" in result.stderr


def test_compile_for_the_cuda_target(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("filters: 4\nkernel_size: 3\nstrides: 2\npadding: same\ninput_shape: [5, 5, 3]\n")
    assert invoke("compile", spec, "-o", tmp_path / "m.onnx", "--target", "cuda").exit_code == 0
    assert "Slice" in [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]


def test_float64_spec_warns_at_compile_and_fails_on_cpu_with_the_remedy(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("filters: 2\nkernel_size: 3\ninput_shape: [4, 4, 2]\nbatch_size: 1\ndtype: float64\n")
    compiled = invoke("compile", spec, "-o", tmp_path / "m.onnx")
    assert compiled.exit_code == 0 and compiled.stderr.startswith("warning: float64:")
    ran = invoke("run", tmp_path / "m.onnx", "--random")
    assert_clean_failure(ran, code=1)
    assert "run a float64 model with --provider cuda" in ran.stderr


def test_float16_on_cpu_says_onnxruntime_inserts_casts(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("filters: 2\nkernel_size: 3\ninput_shape: [4, 4, 2]\nbatch_size: 1\ndtype: float16\n")
    result = invoke("run", spec, "--random")
    assert result.exit_code == 0 and "float16 on cpu" in result.stdout
    assert "runs float16 ConvTranspose in float32 through Casts it inserts" in result.stderr


def test_compile_target_auto_picks_what_this_machine_can_run(tmp_path: Path) -> None:
    result = invoke("compile", SEED_EXAMPLE, "-o", tmp_path / "m.onnx", "--target", "auto")
    assert result.exit_code == 0
    assert f"target {'cpu' if CUDA_REASON else 'cuda'}," in result.stdout


# --- a bug of ours: exit 1, one line, the traceback only with --debug -------------------------------

REPORT = "(please report it, with the input; --debug shows the traceback)"


def _raise(error: Exception) -> Callable[..., NoReturn]:
    def broken(*args: object, **kwargs: object) -> NoReturn:
        raise error

    return broken


def _divide_by_zero(layer: Any, *args: object, **kwargs: object) -> Any:
    return layer.filters // 0  # a bug that is no InternalError


INTERNAL_FAILURES = [
    pytest.param(_raise(InternalError("the plan lost a layer")), "internal error: the plan lost a layer",
                 id="internal-error"),
    pytest.param(_divide_by_zero, "internal error: ZeroDivisionError: integer division or modulo by zero", id="unexpected-exception"),
]  # fmt: skip
INTERNAL_COMMANDS = [
    pytest.param(["compile", SEED_EXAMPLE, "-o", "{out}"], id="compile"),
    pytest.param(["run", SEED_EXAMPLE, "--random"], id="run-a-spec"),
    pytest.param(["check", SEED_EXAMPLE], id="check"),
]


def _args(args: list[str | Path], out: Path) -> list[str | Path]:
    return [str(out) if a == "{out}" else a for a in args]


@pytest.mark.parametrize("args", INTERNAL_COMMANDS)
@pytest.mark.parametrize(("broken", "message"), INTERNAL_FAILURES)
def test_an_internal_error_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str | Path],
    broken: Callable[..., Any],
    message: str,
) -> None:
    monkeypatch.setattr(layer_plans, "plan_conv", broken)
    out = tmp_path / "m.onnx"
    result = invoke(*_args(args, out))
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [f"{message} {REPORT}"]
    assert result.stderr.startswith("internal error: ") and "please report" in result.stderr
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == [], "nothing written"


@pytest.mark.parametrize(("broken", "message"), INTERNAL_FAILURES)
def test_debug_shows_the_traceback_of_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, broken: Callable[..., Any], message: str
) -> None:
    monkeypatch.setattr(layer_plans, "plan_conv", broken)
    result = invoke("--debug", "compile", SEED_EXAMPLE, "-o", tmp_path / "m.onnx")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert any(line.strip().startswith("File ") and "planner.py" in line for line in lines), result.stderr
    assert lines[-1] == f"{message} {REPORT}"
    assert not (tmp_path / "m.onnx").exists()


def test_a_model_that_fails_the_onnx_checker_is_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The real `check_model` on a broken model (a node reads a tensor nothing makes): the checker's
    multi-line message still becomes one line."""
    build = compiler.build_detached_model  # what `deconvc compile` builds

    def broken_build(*args: Any) -> DetachedModel:
        built = build(*args)
        built.model.graph.node[0].input[0] = "nowhere"
        return built

    monkeypatch.setattr(compiler, "build_detached_model", broken_build)
    result = invoke("compile", SEED_EXAMPLE, "-o", tmp_path / "m.onnx")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("internal error: the generated model is invalid: ") and line.endswith(REPORT)
    assert "Traceback" not in result.output
    debug = invoke("--debug", "compile", SEED_EXAMPLE, "-o", tmp_path / "m.onnx")
    assert debug.exit_code == 1 and "Traceback (most recent call last):" in debug.stderr
    assert "ValidationError" in debug.stderr
    assert not (tmp_path / "m.onnx").exists()


# --- --dtype ----------------------------------------------------------------------------------------

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


@pytest.mark.parametrize(
    ("spec_dtype", "dtype", "io_type", "weight_type"),
    [
        pytest.param("float32", "float16", FLOAT16, FLOAT16, id="float16"),
        pytest.param("float32", "mixed_float16", FLOAT, FLOAT16, id="mixed_float16"),
        pytest.param("float16", "float32", FLOAT, FLOAT, id="float32-over-a-float16-spec"),
    ],
)
def test_compile_and_check_with_a_dtype_policy(
    tmp_path: Path, spec_dtype: str, dtype: str, io_type: int, weight_type: int
) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "filters: 3\nkernel_size: 3\nstrides: 2\npadding: same\nactivation: relu\n"
        f"input_shape: [5, 4, 2]\nbatch_size: 2\ndtype: {spec_dtype}\n"
    )
    out = tmp_path / "m.onnx"
    result = invoke("compile", spec, "-o", out, "--dtype", dtype)
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert [v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)] == [io_type] * 2
    assert {t.data_type for t in model.graph.initializer if t.name.endswith(("/kernel", "/bias"))} == {
        weight_type
    }
    assert {p.key: p.value for p in model.metadata_props}["deconv_compiler.dtype"] == dtype
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = (
        np.random.default_rng(0)
        .standard_normal((2, 5, 4, 2))
        .astype(onnx.helper.tensor_dtype_to_np_dtype(io_type))
    )
    (y,) = session.run(None, {"input": x})
    assert y.shape == (2, 10, 8, 3) and y.dtype == x.dtype
    checked = invoke("check", spec, "--dtype", dtype)
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.startswith(f"PASS: {spec} on cpu, input (2, 5, 4, 2) ")


# --- commands that build nothing start without onnx ---------------------------------------------------

IMPORT_PROBE = """
import sys
from deconv_compiler.cli.main import main
try:
    main(sys.argv[1:], prog_name="deconvc")
finally:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", "onnxruntime", "ml_dtypes"))
    print("LOADED:" + ",".join(loaded), file=sys.stderr)
"""


def _heavy_modules(*args: str | Path) -> tuple[int, set[str]]:
    """Run the console entry (deconv_compiler.cli.main:main) in a fresh interpreter; which of
    onnx, onnxruntime and ml_dtypes it imported."""
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("LOADED:"), proc.stderr
    return proc.returncode, {m.split(".")[0] for m in last.removeprefix("LOADED:").split(",") if m}


@pytest.mark.parametrize(
    ("args", "code"),
    [
        pytest.param(["--help"], 0, id="help"),
        pytest.param(["compile", "--help"], 0, id="compile-help"),
        pytest.param(["validate", SEED_EXAMPLE], 0, id="validate-spec"),
        pytest.param(["validate", SPECS / "dilated_with_weights.yaml"], 0, id="validate-spec-with-npz"),
        pytest.param(["validate", "{bad}"], 2, id="validate-bad-spec"),
        pytest.param(["validate", "{keras}", "--weights", "{npz}"], 0, id="validate-keras-config"),
        pytest.param(["schema"], 0, id="schema"),
    ],
)
def test_commands_that_build_nothing_do_not_import_onnx(
    tmp_path: Path, bad_spec: Path, args: list[str | Path], code: int
) -> None:
    keras, npz = tmp_path / "layer.json", tmp_path / "layer.npz"
    keras.write_text(
        json.dumps(
            {"class_name": "Conv2DTranspose", "config": {"name": "up", "filters": 2, "kernel_size": [2, 2]}}
        )
    )
    np.savez(npz, kernel=np.zeros((2, 2, 2, 3)), bias=np.zeros(2))
    given = {"{bad}": bad_spec, "{keras}": keras, "{npz}": npz}
    returncode, heavy = _heavy_modules(*(given.get(str(a), a) for a in args))
    assert returncode == code
    assert heavy == set()


def test_the_import_probe_sees_onnx_where_it_is_imported(tmp_path: Path) -> None:
    """The probe above can fail: `compile` imports onnx, and it sees it."""
    returncode, heavy = _heavy_modules("compile", SEED_EXAMPLE, "-o", tmp_path / "m.onnx")
    assert returncode == 0 and {"onnx", "ml_dtypes"} <= heavy
