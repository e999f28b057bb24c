"""Hostile output paths: whatever `-o` / `--output` / `save_model` is given, no input and no file
outside the named one loses a byte (`output_file`).

Each case is a named test that builds its files on the fly and runs the real CLI: the output may not
be an input however it is spelled (relative, `..`, links, a linked folder), only regular files are
replaced (never a device, a FIFO or a symbolic link), a file planted at a temporary's name is not
followed, stale temporaries of dead processes are removed (never an input), and impossible places
(`/proc`, `/sys`, below a file, names past NAME_MAX) are clean errors with exit code 2. After each
refusal every file beside the inputs is byte for byte what it was, and nothing new is there.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from deconv_compiler.cli.main import main

import deconv_compiler as dc
from deconv_compiler.errors import OutputFileError

CANARY = b"CANARY-" + bytes(range(256)) * 4
LAYER_SPEC = "filters: 2\nkernel_size: 3\ninput_shape: [5, 5, 4]\nweights: w.npz\n"
KERNEL_SHAPE = (3, 3, 2, 4)
DECONVC = [sys.executable, "-c", "from deconv_compiler.cli.main import main; main()"]


def invoke(*args: str | Path) -> Result:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _refused(result: Result, message: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert message in result.stderr, result.stderr


def _snapshot(folder: Path) -> dict[str, tuple[str, bytes]]:
    """Every entry below `folder`: its kind and its bytes (a link: its target), links not followed."""
    found: dict[str, tuple[str, bytes]] = {}
    for path in sorted(folder.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            found[str(path.relative_to(folder))] = ("link", os.fsencode(os.readlink(path)))
        elif stat.S_ISREG(mode):
            found[str(path.relative_to(folder))] = ("file", path.read_bytes())
        else:
            found[str(path.relative_to(folder))] = (stat.filemode(mode)[0], b"")
    return found


@pytest.fixture
def spec_with_weights(tmp_path: Path) -> Path:
    """`layer.yaml` naming `w.npz`, and a canary file beside them."""
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "w.npz",
        kernel=rng.standard_normal(KERNEL_SHAPE).astype(np.float32),
        bias=np.zeros(2, np.float32),
    )
    (tmp_path / "canary.bin").write_bytes(CANARY)
    spec = tmp_path / "layer.yaml"
    spec.write_text(LAYER_SPEC)
    return spec


@pytest.fixture
def keras_layer(tmp_path: Path) -> tuple[Path, Path]:
    """A Keras layer config JSON and its `.npz` weights, and a canary file beside them."""
    config = tmp_path / "layer.json"
    config.write_text(
        json.dumps(
            {"class_name": "Conv2DTranspose", "config": {"name": "up", "filters": 2, "kernel_size": [2, 2]}}
        )
    )
    weights = tmp_path / "layer.npz"
    np.savez(weights, kernel=np.ones((2, 2, 2, 3), np.float32), bias=np.zeros(2, np.float32))
    (tmp_path / "canary.bin").write_bytes(CANARY)
    return config, weights


def _dead_pid() -> int:
    for pid in range(4_000_000, 3_000_000, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise AssertionError("no free process id")


# --- the output is none of the inputs ------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    ["as-written", "absolute", "dot-dot", "hard-link", "symbolic-link", "linked-folder"],
)
def test_output_may_not_be_a_weights_file_the_spec_names(
    tmp_path: Path, spec_with_weights: Path, spelling: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    os.link(tmp_path / "w.npz", tmp_path / "alias.npz")
    (tmp_path / "link.npz").symlink_to("w.npz")
    (tmp_path / "here").symlink_to(tmp_path)
    output = {
        "as-written": Path("w.npz"),
        "absolute": tmp_path / "w.npz",
        "dot-dot": Path("sub/../w.npz"),
        "hard-link": Path("alias.npz"),
        "symbolic-link": Path("link.npz"),
        "linked-folder": tmp_path / "here" / "w.npz",
    }[spelling]
    before = _snapshot(tmp_path)
    result = invoke("compile", "layer.yaml", "-o", output)
    expected = "is a symbolic link" if spelling == "symbolic-link" else "is the input file itself"
    _refused(result, f"error: output {output} {expected}")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("given", ["weights", "config"])
def test_output_may_not_be_the_keras_layer_or_its_weights(
    tmp_path: Path, keras_layer: tuple[Path, Path], given: str
) -> None:
    config, weights = keras_layer
    output = weights if given == "weights" else config
    before = _snapshot(tmp_path)
    result = invoke("compile", config, "--weights", weights, "-o", output)
    _refused(result, f"error: output {output} is the input file itself")
    assert _snapshot(tmp_path) == before


def test_output_may_not_be_the_weights_file_even_before_it_is_read(tmp_path: Path) -> None:
    """The report's case: `compile layer.json --weights base.weights.h5 -o base.weights.h5`. The
    refusal comes before either file is opened, so the weights need not even be valid."""
    config, weights = tmp_path / "layer.json", tmp_path / "base.weights.h5"
    config.write_text('{"class_name": "Sequential", "config": {"layers": []}}')
    weights.write_bytes(CANARY)
    before = _snapshot(tmp_path)
    result = invoke("compile", config, "--weights", weights, "-o", weights)
    _refused(result, f"error: output {weights} is the input file itself")
    assert _snapshot(tmp_path) == before


def test_compile_to_file_refuses_the_graphs_own_weights(tmp_path: Path, spec_with_weights: Path) -> None:
    """The Python API keeps the rule: a graph knows the files it was read from."""
    graph = dc.load_model(spec_with_weights)
    assert {p.name for p in graph.sources} == {"layer.yaml", "w.npz"}
    (tmp_path / "sub").mkdir()
    before = _snapshot(tmp_path)
    with pytest.raises(OutputFileError, match="is the input file itself"):
        dc.compile_to_file(graph, None, tmp_path / "sub" / ".." / "w.npz")
    assert _snapshot(tmp_path) == before


# --- only regular files are replaced -------------------------------------------------------------


def test_output_may_not_be_a_device_node(tmp_path: Path, spec_with_weights: Path) -> None:
    before = os.stat("/dev/null")
    result = invoke("compile", spec_with_weights, "-o", "/dev/null")
    _refused(result, "error: output /dev/null is a character device; only a regular file is replaced")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_output_may_not_be_a_fifo(tmp_path: Path, spec_with_weights: Path) -> None:
    """A subprocess with a timeout: a writer that opened the FIFO would wait for a reader forever."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    before = _snapshot(tmp_path)
    result = subprocess.run(
        [*DECONVC, "compile", str(spec_with_weights), "-o", str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"error: output {fifo} is a FIFO; only a regular file is replaced" in result.stderr
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("target", ["canary", "dangling", "device"])
def test_output_may_not_be_a_symbolic_link(tmp_path: Path, spec_with_weights: Path, target: str) -> None:
    """Renaming over a link replaces the link, writing through it writes elsewhere: both refused."""
    link = tmp_path / "m.onnx"
    link.symlink_to(
        {"canary": tmp_path / "canary.bin", "dangling": tmp_path / "nowhere", "device": "/dev/null"}[target]
    )
    before = _snapshot(tmp_path)
    result = invoke("compile", spec_with_weights, "-o", link)
    _refused(result, f"error: output {link} is a symbolic link; only a regular file is replaced")
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "nowhere").exists()


def test_output_may_not_be_a_directory_given_with_a_trailing_dot(
    tmp_path: Path, spec_with_weights: Path
) -> None:
    before = _snapshot(tmp_path)
    result = invoke("compile", spec_with_weights, "-o", tmp_path / "sub" / "..")
    _refused(result, "does not exist")  # sub is missing; the folder of `sub/..` cannot be reached
    (tmp_path / "sub").mkdir()
    result = invoke("compile", spec_with_weights, "-o", tmp_path / "sub" / "..")
    _refused(result, "is a directory")
    assert _snapshot(tmp_path) == {**before, "sub": ("d", b"")}


# --- the temporary --------------------------------------------------------------------------------


def test_a_link_planted_at_a_temporary_name_is_not_followed(
    tmp_path: Path, spec_with_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old temporary name was predictable (`.NAME.PID.tmp`) and opened with O_TRUNC through any
    link there. Links planted at it (for this process and a dead one) are never written through:
    the random part is made predictable here, so the first name tried is the planted link."""
    names = itertools.cycle(["0123abcd", "fedcba98"])  # every temporary tries the planted name first
    monkeypatch.setattr("deconv_compiler.output_file.secrets.token_hex", lambda nbytes: next(names))
    out = tmp_path / "m.onnx"
    own = tmp_path / f".m.onnx.{os.getpid()}.0123abcd.tmp"
    own.symlink_to(tmp_path / "canary.bin")
    dead = tmp_path / f".m.onnx.{_dead_pid()}.tmp"
    dead.symlink_to(tmp_path / "canary.bin")
    assert invoke("compile", spec_with_weights, "-o", out).exit_code == 0
    assert (tmp_path / "canary.bin").read_bytes() == CANARY
    assert CANARY not in out.read_bytes()
    onnx.checker.check_model(onnx.load(out))
    assert own.is_symlink() and not dead.is_symlink()  # a dead process's leftover is removed, unfollowed


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path, spec_with_weights: Path) -> None:
    pid = _dead_pid()
    stale = [tmp_path / f".m.onnx.{pid}.tmp", tmp_path / f".m.onnx.{pid}.0123abcd.tmp"]
    for path in stale:
        path.write_bytes(b"half a model")
    live = tmp_path / f".m.onnx.{os.getpid()}.0123abcd.tmp"  # a writer still running: kept
    live.write_bytes(b"being written")
    other = tmp_path / f".m.onnx.{pid}.not-ours.tmp"  # not a name we make: kept
    other.write_bytes(b"someone's")
    assert invoke("compile", spec_with_weights, "-o", tmp_path / "m.onnx").exit_code == 0
    assert not any(path.exists() for path in stale)
    assert live.read_bytes() == b"being written" and other.read_bytes() == b"someone's"


def test_an_input_named_like_a_stale_temporary_is_kept(tmp_path: Path, spec_with_weights: Path) -> None:
    spec = tmp_path / f".m.onnx.{_dead_pid()}.tmp"
    spec.write_text(LAYER_SPEC)
    assert invoke("compile", spec, "-o", tmp_path / "m.onnx").exit_code == 0
    assert spec.read_text() == LAYER_SPEC


def test_an_output_name_of_255_bytes_is_written(tmp_path: Path, spec_with_weights: Path) -> None:
    """NAME_MAX allows it; the temporary's name is shortened to fit beside it."""
    out = tmp_path / ("m" * 250 + ".onnx")
    result = invoke("compile", spec_with_weights, "-o", out)
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(onnx.load(out))
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_output_name_of_256_bytes_is_a_clean_error(tmp_path: Path, spec_with_weights: Path) -> None:
    before = _snapshot(tmp_path)
    result = invoke("compile", spec_with_weights, "-o", tmp_path / ("m" * 251 + ".onnx"))
    _refused(result, "error: output name is 256 bytes long; the file system of")
    assert _snapshot(tmp_path) == before


# --- places that take no file ----------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["/proc", "/proc/self", "/sys", "/sys/kernel"])
def test_output_inside_proc_or_sys_is_a_clean_error(spec_with_weights: Path, folder: str) -> None:
    if not Path(folder).is_dir():
        pytest.skip(f"no {folder} here")
    out = Path(folder) / "deconvc-test.onnx"
    result = invoke("compile", spec_with_weights, "-o", out)
    _refused(result, f"error: cannot write output {out}: {folder} does not take new files")
    assert not out.exists()


def test_output_below_a_regular_file_is_a_clean_error(tmp_path: Path, spec_with_weights: Path) -> None:
    before = _snapshot(tmp_path)
    result = invoke("compile", spec_with_weights, "-o", tmp_path / "canary.bin" / "m.onnx")
    _refused(result, f"error: output directory {tmp_path / 'canary.bin'} is not a directory")
    assert _snapshot(tmp_path) == before


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """`folder` takes no new file while the block runs: not writable for a user; for root (who
    writes anywhere) immutable, where chattr can make it so."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", folder], capture_output=True).returncode != 0:
        pytest.skip("root writes into any folder, and this file system cannot make one immutable")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", folder], check=True)


def test_output_in_a_folder_that_takes_no_new_file(tmp_path: Path, spec_with_weights: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "m.onnx").write_bytes(CANARY)
    before = _snapshot(tmp_path)
    with _locked(locked):
        result = invoke("compile", spec_with_weights, "-o", locked / "m.onnx")
    _refused(result, f"error: cannot write output {locked / 'm.onnx'}: {locked} does not take new files (")
    assert _snapshot(tmp_path) == before


# --- run --output ----------------------------------------------------------------------------------


def test_run_output_is_written_under_exactly_the_name_it_says(
    tmp_path: Path, spec_with_weights: Path
) -> None:
    out = tmp_path / "y.out"
    result = invoke("run", spec_with_weights, "--random", "--shape", "1,5,5,4", "--output", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}\n" in result.stdout
    assert np.load(out, allow_pickle=False).shape == (1, 7, 7, 2)
    assert not (tmp_path / "y.out.npy").exists() and not list(tmp_path.glob(".*.tmp"))


def test_a_failed_run_keeps_the_previous_output(tmp_path: Path, spec_with_weights: Path) -> None:
    out = tmp_path / "y.npy"
    out.write_bytes(CANARY)
    np.save(tmp_path / "x.npy", np.zeros((1, 6, 6, 4), np.float32))  # the model takes 5x5
    before = _snapshot(tmp_path)
    result = invoke("run", spec_with_weights, "--input", tmp_path / "x.npy", "--output", out)
    _refused(result, "the model expects")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("which", ["input", "spec-weights", "symbolic-link", "device"])
def test_run_output_refuses_what_it_may_not_replace(
    tmp_path: Path, spec_with_weights: Path, which: str
) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 5, 5, 4), np.float32))
    (tmp_path / "y.npy").symlink_to(tmp_path / "canary.bin")
    output = {
        "input": tmp_path / "x.npy",
        "spec-weights": tmp_path / "w.npz",
        "symbolic-link": tmp_path / "y.npy",
        "device": Path("/dev/null"),
    }[which]
    message = {
        "input": "is the input file itself",
        "spec-weights": "is the input file itself",
        "symbolic-link": "is a symbolic link",
        "device": "is a character device",
    }[which]
    before = _snapshot(tmp_path)
    result = invoke("run", spec_with_weights, "--input", tmp_path / "x.npy", "--output", output)
    _refused(result, f"error: output {output} {message}")
    assert _snapshot(tmp_path) == before


# --- the Python API --------------------------------------------------------------------------------


def test_save_model_writes_a_path_and_refuses_a_device(tmp_path: Path, spec_with_weights: Path) -> None:
    model = dc.compile_model(dc.load_model(spec_with_weights))
    out = tmp_path / "m.onnx"
    dc.save_model(model, str(out))
    assert out.read_bytes() == model.SerializeToString()
    with pytest.raises(OutputFileError, match="is a character device"):
        dc.save_model(model, "/dev/null")
    with pytest.raises(OutputFileError, match="is the input file itself"):
        dc.save_model(model, out, inputs=[tmp_path / "." / "m.onnx"])
    assert not list(tmp_path.glob(".*.tmp"))
