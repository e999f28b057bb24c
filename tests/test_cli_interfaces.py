"""The interfaces users expect of a command line: `-` for standard input and output (and pipes given
by name), `--json`, `-q/--quiet` and `-v/--verbose` on every command, `--tune-cache` making a tuned
compile repeat itself byte for byte, and shell completion through the installed `deconvc`.

CliRunner where it can tell; a real process where a terminal or a pipe is the point.
"""

from __future__ import annotations

import json
import os
import pty
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from deconv_compiler.cli.main import main

from deconv_compiler.metadata import STRATEGIES, TUNING

ROOT = Path(__file__).resolve().parent.parent
SEED_EXAMPLE = ROOT / "specs" / "seed_example.yaml"  # Conv2DTranspose(32, 2, 2, relu) on (4, 10, 8, 128)
DECONVC = [
    sys.executable,
    "-c",
    "import sys; from deconv_compiler.cli.main import main; main(sys.argv[1:], prog_name='deconvc')",
]
SMALL = "filters: 2\nkernel_size: 3\nstrides: 2\ninput_shape: [4, 4, 3]\nbatch_size: 1\nseed: 3\n"
TUNED = """\
name: tuned
seed: 1
strategy: tune
input: {shape: [null, 6, 6, 4]}
layers:
  - {type: Conv2DTranspose, filters: 4, kernel_size: 3, strides: 2, padding: same}
  - {type: Conv2DTranspose, filters: 2, kernel_size: 2, strides: 2}
"""


def invoke(*args: str | Path, stdin: bytes | str | None = None) -> Result:
    result = CliRunner().invoke(main, [str(a) for a in args], input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def process(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*DECONVC, *map(str, args)], capture_output=True, timeout=120, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small spec and the model compiled from it."""
    folder = tmp_path_factory.mktemp("small")
    spec = folder / "small.yaml"
    spec.write_text(SMALL)
    model = folder / "small.onnx"
    assert invoke("compile", spec, "-o", model).exit_code == 0
    return spec, model


# --- standard input and pipes -------------------------------------------------------------------


def test_compile_from_standard_input_gives_the_same_model(tmp_path: Path, small: tuple[Path, Path]) -> None:
    spec, model = small
    result = invoke("compile", "-", "-o", tmp_path / "m.onnx", stdin=spec.read_bytes())
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.onnx").read_bytes() == model.read_bytes()


def test_a_spec_from_standard_input_is_named_stdin_in_problems() -> None:
    result = invoke("validate", "-", stdin="filters: 0\nkernel_size: 3\ninput_shape: [4, 4, 3]\n")
    assert result.exit_code == 2
    assert result.stderr.startswith("<stdin>:1: filters: "), result.stderr


def test_a_spec_from_standard_input_reads_weights_from_the_current_folder(tmp_path: Path) -> None:
    np.savez(tmp_path / "w.npz", kernel=np.ones((3, 3, 2, 3), np.float32), bias=np.zeros(2, np.float32))
    spec = SMALL + "weights: w.npz\n"
    done = process("validate", "-", input=spec.encode(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    elsewhere = process("validate", "-", input=spec.encode(), cwd=ROOT)
    assert elsewhere.returncode == 2 and b"w.npz" in elsewhere.stderr


def test_compile_from_a_pipe_given_by_name(tmp_path: Path, small: tuple[Path, Path]) -> None:
    """`/dev/stdin` in a pipeline: read once (sniffing it first used to leave the spec empty)."""
    spec, model = small
    done = process("compile", "/dev/stdin", "-o", tmp_path / "m.onnx", input=spec.read_bytes())
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m.onnx").read_bytes() == model.read_bytes()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_validate_a_process_substitution(small: tuple[Path, Path]) -> None:
    command = " ".join([*map(shlex.quote, DECONVC), "validate", f"<(cat {shlex.quote(str(small[0]))})"])
    done = subprocess.run(["bash", "-c", command], capture_output=True, timeout=120, text=True)
    assert done.returncode == 0, done.stderr
    assert ": ok: 1 layer" in done.stdout


def test_a_keras_model_on_standard_input_is_refused_with_the_remedy() -> None:
    result = invoke("validate", "-", stdin=b"PK\x03\x04" + bytes(100))
    assert result.exit_code == 2
    assert "<stdin>: is a saved Keras model: only a spec is read from standard input" in result.stderr
    assert "save it to a file" in result.stderr


def test_an_onnx_model_on_standard_input_is_no_spec(small: tuple[Path, Path]) -> None:
    result = invoke("compile", "-", "-o", "unused.onnx", stdin=small[1].read_bytes())
    assert result.exit_code == 2
    assert "<stdin>: is a binary file (an ONNX model?), not a spec" in result.stderr


def test_weights_with_standard_input_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("validate", "-", "--weights", tmp_path / "w.h5", stdin=SMALL)
    assert result.exit_code == 2 and "standard input (-) takes only a spec" in result.stderr


def test_inspect_and_run_read_an_onnx_model_from_standard_input(small: tuple[Path, Path]) -> None:
    _, model = small
    inspected = invoke("inspect", "-", "--json", stdin=model.read_bytes())
    assert inspected.exit_code == 0, inspected.output
    assert json.loads(inspected.stdout) == json.loads(invoke("inspect", model, "--json").stdout)
    ran = invoke("run", "-", "--random", "--json", stdin=model.read_bytes())
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["outputs"][0]["shape"] == [1, 9, 9, 2]


def test_run_compiles_a_spec_from_standard_input(small: tuple[Path, Path]) -> None:
    ran = invoke("run", "-", "--random", "--json", stdin=small[0].read_bytes())
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["model"] == "<stdin>"


def test_a_named_fifo_keras_model_is_still_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "model.keras"
    os.mkfifo(fifo)
    done = process("validate", fifo)
    assert done.returncode == 2 and b"not a regular file" in done.stderr


# --- standard output -----------------------------------------------------------------------------


def test_compile_to_standard_output_gives_the_bytes_of_a_file(small: tuple[Path, Path]) -> None:
    spec, model = small
    result = invoke("compile", spec, "-o", "-")
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == model.read_bytes()
    assert result.stderr.startswith("wrote <stdout> (opset 17")  # every message on standard error


def test_compile_to_standard_output_json_goes_to_standard_error(small: tuple[Path, Path]) -> None:
    result = invoke("compile", small[0], "-o", "-", "--json")
    assert result.exit_code == 0
    assert result.stdout_bytes == small[1].read_bytes()
    assert json.loads(result.stderr)["output"] == "<stdout>"


def test_run_output_to_standard_output_gives_the_npy_of_a_file(
    tmp_path: Path, small: tuple[Path, Path]
) -> None:
    _, model = small
    to_file = invoke("run", model, "--random", "--output", tmp_path / "y.npy")
    to_stdout = invoke("run", model, "--random", "--output", "-")
    assert to_file.exit_code == 0 and to_stdout.exit_code == 0, to_stdout.output
    assert to_stdout.stdout_bytes == (tmp_path / "y.npy").read_bytes()
    assert to_stdout.stderr.startswith("output (1, 9, 9, 2) float32 on cpu")


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["compile", SEED_EXAMPLE, "-o", "-"], "an ONNX model"),
        (["run", "{model}", "--random", "--output", "-"], "an .npy array"),
    ],
    ids=["compile", "run"],
)
def test_binary_output_to_a_terminal_is_refused(
    tmp_path: Path, small: tuple[Path, Path], args: list[str | Path], what: str
) -> None:
    leader, follower = pty.openpty()
    try:
        given = [small[1] if a == "{model}" else a for a in args]
        done = subprocess.run(
            [*DECONVC, *map(str, given)], stdout=follower, stderr=subprocess.PIPE, timeout=120, cwd=tmp_path
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 2
    assert done.stderr.decode() == (
        f"error: not writing {what} to a terminal: redirect standard output (> FILE, | ...) or name a file\n"
    )
    assert not list(tmp_path.iterdir())


# --- --json, -q, -v -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        (["validate", "{spec}"], {"file", "ok", "layers", "inputs", "outputs"}),
        (
            ["compile", "{spec}", "-o", "{out}"],
            {"output", "bytes", "opset", "target", "layers", "inputs", "outputs", "strategies", "seconds"},
        ),
        (["check", "{spec}"], {"passed", "provider", "input_shape", "max_abs_error", "tolerance"}),
        (["run", "{model}", "--random"], {"model", "provider", "seconds", "outputs", "output_file"}),
        (["inspect", "{model}"], {"inputs", "outputs", "nodes"}),
        (["bench", "{model}", "--warmup", "0", "--iters", "2"], {"model", "results"}),
    ],
    ids=["validate", "compile", "check", "run", "inspect", "bench"],
)
def test_json_is_one_object_with_the_results(
    tmp_path: Path, small: tuple[Path, Path], args: list[str], keys: set[str]
) -> None:
    given = {"{spec}": small[0], "{model}": small[1], "{out}": tmp_path / "m.onnx"}
    result = invoke(*(given.get(a, a) for a in args), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert keys <= set(data), data
    assert result.stderr == ""


def test_compile_json_says_the_size_written(tmp_path: Path, small: tuple[Path, Path]) -> None:
    result = invoke("compile", small[0], "-o", tmp_path / "m.onnx", "--json")
    data = json.loads(result.stdout)
    assert data["bytes"] == (tmp_path / "m.onnx").stat().st_size
    assert len(data["strategies"]) == 1
    assert data["inputs"] == [{"name": "input", "shape": [1, 4, 4, 3]}]


def test_errors_stay_text_with_json(tmp_path: Path) -> None:
    result = invoke("validate", "-", "--json", stdin="filters: 0\nkernel_size: 3\ninput_shape: [4, 4, 3]\n")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == "error: 1 problem found"


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "{spec}"],
        ["compile", "{spec}", "-o", "{out}"],
        ["check", "{spec}"],
        ["run", "{model}", "--random", "--output", "{npy}"],
        ["inspect", "{model}"],
    ],
    ids=["validate", "compile", "check", "run", "inspect"],
)
def test_quiet_prints_nothing_on_success_and_verbose_more(
    tmp_path: Path, small: tuple[Path, Path], args: list[str]
) -> None:
    given = {
        "{spec}": small[0],
        "{model}": small[1],
        "{out}": tmp_path / "m.onnx",
        "{npy}": tmp_path / "y.npy",
    }
    command = [given.get(a, a) for a in args]
    quiet, plain, verbose = (invoke(*command, *flag) for flag in (["-q"], [], ["-v"]))
    assert quiet.exit_code == plain.exit_code == verbose.exit_code == 0, verbose.output
    assert quiet.stdout == quiet.stderr == ""
    if args[0] != "inspect":
        assert len(verbose.output.splitlines()) > len(plain.output.splitlines()), verbose.output


def test_quiet_silences_warnings_and_json_lists_them(tmp_path: Path) -> None:
    spec = tmp_path / "f64.yaml"
    spec.write_text("filters: 2\nkernel_size: 3\ninput_shape: [4, 4, 2]\nbatch_size: 1\ndtype: float64\n")
    plain = invoke("compile", spec, "-o", tmp_path / "a.onnx")
    assert "warning: float64" in plain.stderr
    quiet = invoke("compile", spec, "-o", tmp_path / "b.onnx", "-q")
    assert quiet.exit_code == 0 and quiet.output == ""
    listed = invoke("compile", spec, "-o", tmp_path / "c.onnx", "--json", "-q")
    assert json.loads(listed.stdout)["warnings"][0].startswith("float64")


def test_quiet_and_verbose_together_are_a_usage_error(small: tuple[Path, Path]) -> None:
    result = invoke("validate", small[0], "-q", "-v")
    assert result.exit_code == 2 and "at most one of -q/--quiet and -v/--verbose" in result.stderr


def test_a_failed_check_is_shown_with_quiet(small: tuple[Path, Path]) -> None:
    """A failed check is the command's error: its line reaches standard error even with -q."""
    result = invoke("check", small[0], "-q", "--tolerance", "0", "--shape", "1,4,4,3", "--seed", "1")
    if result.exit_code == 0:
        pytest.skip("exact to the last bit on this machine")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("FAIL: ")


# --- --tune-cache -------------------------------------------------------------------------------


def _tuning(path: Path) -> tuple[dict[str, str], dict[str, object]]:
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props[STRATEGIES]), json.loads(props[TUNING])


def test_a_tune_cache_repeats_a_tuned_compile_byte_for_byte(tmp_path: Path) -> None:
    spec, cache = tmp_path / "tuned.yaml", tmp_path / "tune.json"
    spec.write_text(TUNED)
    first = invoke("compile", spec, "-o", tmp_path / "a.onnx", "--tune-cache", cache, "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["tune_cache"] == {"file": str(cache), "reused": 0, "added": 2}
    recorded = cache.read_bytes()
    second = invoke("compile", spec, "-o", tmp_path / "b.onnx", "--tune-cache", cache, "--json")
    assert json.loads(second.stdout)["tune_cache"] == {"file": str(cache), "reused": 2, "added": 0}
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert cache.read_bytes() == recorded
    strategies, tuning = _tuning(tmp_path / "a.onnx")
    assert set(tuning) == set(strategies) == {"conv2d_transpose", "conv2d_transpose_1"}
    entries = json.loads(recorded)["entries"]
    assert len(entries) == 2  # the two layers differ in geometry
    assert {e["chosen"] for e in entries} == set(strategies.values())


def test_a_tune_cache_is_not_applied_to_other_settings(tmp_path: Path) -> None:
    spec, cache = tmp_path / "tuned.yaml", tmp_path / "tune.json"
    spec.write_text(TUNED)
    assert invoke("compile", spec, "-o", tmp_path / "a.onnx", "--tune-cache", cache).exit_code == 0
    other = invoke(
        "compile", spec, "-o", tmp_path / "b.onnx", "--tune-cache", cache, "--opset", "13", "--json"
    )
    assert json.loads(other.stdout)["tune_cache"]["reused"] == 0
    assert len(json.loads(cache.read_text())["entries"]) == 4  # both settings kept


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON (corrupt?)"),
        ('{"format": "something else"}', "is not a tune cache of deconvc"),
        ('{"format": "deconvc-tune-cache", "version": 99, "entries": []}', "is of version 99"),
        ('{"format": "deconvc-tune-cache", "version": 1, "entries": [{"chosen": "fast"}]}', "entries[0]"),
    ],
    ids=["corrupt", "foreign", "version", "entry"],
)
def test_a_bad_tune_cache_is_an_input_error(tmp_path: Path, content: str, message: str) -> None:
    spec, cache = tmp_path / "tuned.yaml", tmp_path / "tune.json"
    spec.write_text(TUNED)
    cache.write_text(content)
    result = invoke("compile", spec, "-o", tmp_path / "a.onnx", "--tune-cache", cache)
    assert result.exit_code == 2
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "a.onnx").exists() and cache.read_text() == content


def test_the_tune_cache_may_not_be_the_output(tmp_path: Path) -> None:
    spec = tmp_path / "tuned.yaml"
    spec.write_text(TUNED)
    result = invoke("compile", spec, "-o", tmp_path / "a.onnx", "--tune-cache", tmp_path / "a.onnx")
    assert result.exit_code == 2 and "is the output itself" in result.stderr


# --- shell completion ---------------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_installed_deconvc_prints_its_completion_script(shell: str) -> None:
    script = Path(sys.executable).parent / "deconvc"
    if not script.exists():
        pytest.skip("the deconvc script is not installed beside this Python")
    env = {**os.environ, "_DECONVC_COMPLETE": f"{shell}_source"}
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "_deconvc_completion" in done.stdout


def test_completion_offers_the_commands_and_choices() -> None:
    script = Path(sys.executable).parent / "deconvc"
    if not script.exists():
        pytest.skip("the deconvc script is not installed beside this Python")
    env = {
        **os.environ,
        "_DECONVC_COMPLETE": "bash_complete",
        "COMP_WORDS": "deconvc compile --strategy ",
        "COMP_CWORD": "3",
    }
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert "plain,tune" in done.stdout.splitlines()


def test_tuning_reports_its_progress_layer_by_layer(tmp_path: Path) -> None:
    from deconv_compiler.compiler import compile_model
    from deconv_compiler.frontend import load_model
    from deconv_compiler.tuning import TuneCache

    spec = tmp_path / "tuned.yaml"
    spec.write_text(TUNED)
    calls: list[tuple[int, int, str]] = []
    cache = TuneCache()
    compile_model(load_model(spec), tune_cache=cache, tune_progress=lambda *call: calls.append(call))
    assert calls == [(0, 2, "conv2d_transpose"), (1, 2, "conv2d_transpose_1"), (2, 2, "conv2d_transpose_1")]
    assert (cache.hits, cache.added) == (0, 2)
    calls.clear()
    compile_model(load_model(spec), tune_cache=cache, tune_progress=lambda *call: calls.append(call))
    assert len(calls) == 3 and (cache.hits, cache.added) == (2, 2)


def test_standard_input_to_standard_output_through_real_pipes(small: tuple[Path, Path]) -> None:
    spec, model = small
    done = process("compile", "-", "-o", "-", "-q", input=spec.read_bytes())
    assert done.returncode == 0 and done.stderr == b""
    assert done.stdout == model.read_bytes()
