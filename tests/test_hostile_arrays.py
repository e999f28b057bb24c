"""Hostile .npy/.npz files and `weights:` paths, through the real CLI.

Each case is a named test that makes its hostile file on the fly and expects exit code 2 with a
message naming the file (and the array, or the spec's field), never a traceback or a hang. Where
a file outside the spec's folder is named, a canary .npz lies there: its bytes never reach an
output. Every input file is left as it was.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from deconv_compiler.cli.main import main

import deconv_compiler as dc
from deconv_compiler.array_file import ArrayFileError, open_array_file

KERNEL_SHAPE = (2, 2, 2, 1)  # the layer below: kernel_size 2, filters 2, one input channel
LAYER = "type: Conv2DTranspose\nfilters: 2\nkernel_size: 2\ninput_shape: [3, 3, 1]\n"
# A canary's kernel: values no initializer makes, so its bytes in an output can only be a leak.
CANARY_KERNEL = np.full(KERNEL_SHAPE, 1234.5678, np.float32)


def _invoke(*args: str | Path) -> Result:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _refused(result: Result, *fragments: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    return result.stderr


def _subprocess(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own: a case that could block is killed by the timeout (a
    failure), not left hanging the test run."""
    command = [sys.executable, "-c", "from deconv_compiler.cli.main import main; main()", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def _snapshot(folder: Path) -> dict[Path, bytes]:
    """Every regular file under `folder`, by content (FIFOs and devices are not read)."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def _canary(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "canary.npz", kernel=CANARY_KERNEL, bias=np.full(2, 4321.0, np.float32))
    return folder / "canary.npz"


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _patched(data: bytes, member: str, *, flag: int = 0, method: int | None = None) -> bytes:
    """`data` (a zip) with `member`'s general-purpose flags or method changed in its local header
    and its central directory entry, as a forger would."""
    patched, name = bytearray(data), member.encode()
    for signature, name_at, flags_at in ((b"PK\x03\x04", 30, 6), (b"PK\x01\x02", 46, 8)):
        start = 0
        while (start := patched.find(signature, start)) >= 0:
            if patched[start + name_at : start + name_at + len(name)] == name:
                flags = int.from_bytes(patched[start + flags_at : start + flags_at + 2], "little") | flag
                patched[start + flags_at : start + flags_at + 2] = flags.to_bytes(2, "little")
                if method is not None:
                    patched[start + flags_at + 2 : start + flags_at + 4] = method.to_bytes(2, "little")
            start += 4
    return bytes(patched)


# --- where an array file is read: a spec's weights, a Keras layer's --weights, run --input -----------


def _spec_weights(folder: Path, data: bytes) -> list[str | Path]:
    (folder / "w.npz").write_bytes(data)
    spec = _write(folder / "spec.yaml", LAYER + "weights: w.npz\n")
    return ["validate", spec]


def _keras_weights(folder: Path, data: bytes) -> list[str | Path]:
    (folder / "w.npz").write_bytes(data)
    config = {"class_name": "Conv2DTranspose", "config": {"name": "up", "filters": 2, "kernel_size": [2, 2]}}
    (folder / "layer.json").write_text(json.dumps(config))
    return ["validate", folder / "layer.json", "--weights", folder / "w.npz"]


def _run_input(folder: Path, data: bytes, suffix: str = ".npz") -> list[str | Path]:
    spec = _write(folder / "spec.yaml", LAYER + "batch_size: 1\n")
    (folder / f"x{suffix}").write_bytes(data)
    return ["run", spec, "--input", folder / f"x{suffix}"]


READERS: dict[str, Callable[[Path, bytes], list[str | Path]]] = {
    "spec_weights": _spec_weights,
    "keras_weights": _keras_weights,
    "run_input": _run_input,
}
GOOD_MEMBERS = {  # what each reader looks for, well formed
    "spec_weights": {"kernel.npy": np.zeros(KERNEL_SHAPE), "bias.npy": np.zeros(2)},
    "keras_weights": {"kernel.npy": np.zeros(KERNEL_SHAPE), "bias.npy": np.zeros(2)},
    "run_input": {"input.npy": np.zeros((1, 3, 3, 1), np.float32)},
}


def _members(reader: str) -> dict[str, bytes]:
    members = {}
    for name, array in GOOD_MEMBERS[reader].items():
        buffer = io.BytesIO()
        np.save(buffer, array)
        members[name] = buffer.getvalue()
    return members


def _refused_intact(tmp_path: Path, reader: str, data: bytes, *fragments: str) -> str:
    args = READERS[reader](tmp_path, data)
    before = _snapshot(tmp_path)
    stderr = _refused(_invoke(*args), *fragments)
    assert _snapshot(tmp_path) == before, "an input file was changed"
    return stderr


@pytest.mark.parametrize("reader", READERS)
def test_encrypted_member_is_refused(tmp_path: Path, reader: str) -> None:
    members = _members(reader)
    first = next(iter(members))
    data = _patched(_zip(members), first, flag=0x1)
    _refused_intact(tmp_path, reader, data, f"{first} is encrypted; save it without a password")


@pytest.mark.parametrize("reader", READERS)
def test_deflate64_member_is_refused(tmp_path: Path, reader: str) -> None:
    members = _members(reader)
    first = next(iter(members))
    data = _patched(_zip(members, zipfile.ZIP_DEFLATED), first, method=9)
    _refused_intact(tmp_path, reader, data, f"{first} is compressed with zip method 9, which cannot be read")


@pytest.mark.parametrize("reader", READERS)
def test_unknown_compression_method_is_refused(tmp_path: Path, reader: str) -> None:
    members = _members(reader)
    first = next(iter(members))
    data = _patched(_zip(members), first, method=99)
    _refused_intact(tmp_path, reader, data, f"{first} is compressed with zip method 99")


@pytest.mark.parametrize("reader", READERS)
def test_member_header_declaring_a_trillion_elements_is_refused(tmp_path: Path, reader: str) -> None:
    members = _members(reader)
    first = next(iter(members))
    shape = (1, 10**6, 10**6, 1) if reader == "run_input" else (10**6, 10**6, 1, 1)
    members[first] = _npy_header("<f4", shape)  # and no data: the header alone must be refused
    _refused_intact(tmp_path, reader, _zip(members), "4,000,000,000,000 bytes; the limit is")
    tracemalloc.start()  # again, measured, now that the modules it needs are imported
    try:
        stderr = _refused_intact(tmp_path, reader, _zip(members), "4,000,000,000,000 bytes; the limit is")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"{first.removesuffix('.npy')}: declares shape" in stderr
    # the Keras reader reserves 64 MiB to read the config JSON itself, before the weights
    assert peak < (80 if reader == "keras_weights" else 10) * 2**20, f"refusing took {peak:,} bytes"


@pytest.mark.parametrize("reader", READERS)
def test_member_shorter_than_its_header_declares_is_refused(tmp_path: Path, reader: str) -> None:
    members = _members(reader)
    first = next(iter(members))
    members[first] = members[first][:-8]  # a well-formed zip whose member lost its last value
    _refused_intact(tmp_path, reader, _zip(members), "bytes of data where its header declares")


@pytest.mark.parametrize("reader", READERS)
def test_corrupt_compressed_member_is_refused(tmp_path: Path, reader: str) -> None:
    members = {name: data + bytes(4096) for name, data in _members(reader).items()}
    data = bytearray(_zip(members, zipfile.ZIP_DEFLATED))
    first = next(iter(members)).encode()
    start = data.find(first) + len(first)  # the first member's compressed bytes follow its name
    data[start + 2 : start + 12] = b"\xff" * 10
    _refused_intact(tmp_path, reader, bytes(data), "corrupt")


@pytest.mark.parametrize("reader", READERS)
def test_object_array_member_is_refused(tmp_path: Path, reader: str) -> None:
    members = _members(reader)
    first = next(iter(members))
    buffer = io.BytesIO()
    np.save(buffer, np.array([{}, []], dtype=object), allow_pickle=True)
    members[first] = buffer.getvalue()
    _refused_intact(tmp_path, reader, _zip(members), "pickled Python objects, which are refused")


@pytest.mark.parametrize("reader", READERS)
def test_duplicate_member_names_are_refused(tmp_path: Path, reader: str) -> None:
    members = _members(reader)
    first = next(iter(members))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is asked to write
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr(first, members[first])  # zipfile alone would read only this one
    _refused_intact(tmp_path, reader, buffer.getvalue(), "holds two members named")


# --- run --input: .npy files -------------------------------------------------------------------------


def test_run_input_npy_header_declaring_a_trillion_elements_is_refused(tmp_path: Path) -> None:
    data = _npy_header("<f4", (10**12, 3, 3, 1))  # the batch is dynamic: only the limit stops it
    args = _run_input(tmp_path, data, ".npy")
    stderr = _refused(_invoke(*args), "cannot read input", "the limit is")
    assert "x.npy" in stderr


def test_run_input_npy_header_length_beyond_the_limit_is_refused(tmp_path: Path) -> None:
    data = b"\x93NUMPY\x02\x00" + (2**32 - 1).to_bytes(4, "little")  # format 2.0: a 4 GiB header
    args = _run_input(tmp_path, data, ".npy")
    _refused(_invoke(*args), "declares an .npy header of 4,294,967,295 bytes; the limit is 10,000")


def test_run_input_npy_shorter_than_its_header_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ones((1, 3, 3, 1), np.float32))
    args = _run_input(tmp_path, buffer.getvalue()[:-1], ".npy")
    _refused(_invoke(*args), "holds 35 bytes of data where its header declares 36")


def test_run_input_npy_with_an_unparsable_header_is_refused(tmp_path: Path) -> None:
    data = b"\x93NUMPY\x01\x00\x00\x10" + b"(" * 4096
    args = _run_input(tmp_path, data, ".npy")
    _refused(_invoke(*args), "has an invalid .npy header")


def test_run_input_big_endian_and_fortran_arrays_are_read(tmp_path: Path) -> None:
    x = np.arange(9, dtype=">f8").reshape(1, 3, 3, 1)
    buffer = io.BytesIO()
    np.save(buffer, np.asfortranarray(x))
    args = _run_input(tmp_path, buffer.getvalue(), ".npy")
    np.save(tmp_path / "plain.npy", x.astype("<f4"))
    outputs = []
    for given in (args[-1], tmp_path / "plain.npy"):
        result = _invoke("run", args[1], "--input", given, "--output", tmp_path / "y.npy")
        assert result.exit_code == 0, result.output
        outputs.append(np.load(tmp_path / "y.npy"))
    assert np.array_equal(outputs[0], outputs[1])


# --- files that are not regular files: refused before they are opened, never blocking ---------------


def test_run_input_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    spec = _write(tmp_path / "spec.yaml", LAYER + "batch_size: 1\n")
    os.mkfifo(tmp_path / "x.npy")
    process = _subprocess("run", spec, "--input", tmp_path / "x.npy")
    assert process.returncode == 2, process.stderr
    assert "x.npy: is a FIFO (named pipe), not a regular file" in process.stderr


def test_spec_weights_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    spec = _write(tmp_path / "spec.yaml", LAYER + "weights: w.npz\n")
    os.mkfifo(tmp_path / "w.npz")
    process = _subprocess("validate", spec)
    assert process.returncode == 2, process.stderr
    assert "weights: cannot read weights file 'w.npz': is a FIFO (named pipe)" in process.stderr


def test_keras_npz_weights_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    config = {"class_name": "Conv2DTranspose", "config": {"name": "up", "filters": 2, "kernel_size": [2, 2]}}
    (tmp_path / "layer.json").write_text(json.dumps(config))
    os.mkfifo(tmp_path / "w.npz")
    process = _subprocess("validate", tmp_path / "layer.json", "--weights", tmp_path / "w.npz")
    assert process.returncode == 2, process.stderr
    assert "w.npz" in process.stderr and "Traceback" not in process.stderr


@pytest.mark.parametrize("target", ["/dev/zero", "."], ids=["device", "directory"])
def test_run_input_that_is_not_a_regular_file_is_refused(tmp_path: Path, target: str) -> None:
    spec = _write(tmp_path / "spec.yaml", LAYER + "batch_size: 1\n")
    given = tmp_path if target == "." else Path(target)
    kind = "a directory" if target == "." else "a device"
    _refused(_invoke("run", spec, "--input", given), f"is {kind}, not a regular file")


# --- where a spec's weights may come from --------------------------------------------------------------


def _outside_forms(tmp_path: Path) -> dict[str, str]:
    """Ways a spec in tmp_path/project could name tmp_path/outside/canary.npz."""
    canary = _canary(tmp_path / "outside")
    project = tmp_path / "project"
    project.mkdir()
    (project / "link.npz").symlink_to(canary)
    (project / "linked_folder").symlink_to(canary.parent, target_is_directory=True)
    return {
        "absolute": str(canary),
        "dotdot": "../outside/canary.npz",
        "inner_dotdot": "sub/../../outside/canary.npz",
        "symlinked_file": "link.npz",
        "symlinked_folder": "linked_folder/canary.npz",
    }


OUTSIDE_MESSAGES = {
    "absolute": "is absolute; write it relative to the spec's folder",
    "dotdot": "leads outside",
    "inner_dotdot": "leads outside",
    "symlinked_file": "through a symbolic link",
    "symlinked_folder": "through a symbolic link",
}


@pytest.mark.parametrize("form", OUTSIDE_MESSAGES)
def test_weights_outside_the_spec_folder_are_refused_and_the_canary_never_leaks(
    tmp_path: Path, form: str
) -> None:
    value = _outside_forms(tmp_path)[form]
    spec = _write(tmp_path / "project" / "spec.yaml", LAYER + f"weights: {value}\n")
    out = tmp_path / "project" / "model.onnx"
    before = _snapshot(tmp_path)
    for command in (["validate", spec], ["compile", spec, "-o", out], ["check", spec]):
        result = _invoke(*command)
        _refused(result, "spec.yaml:5: weights: weights path", OUTSIDE_MESSAGES[form])
        assert CANARY_KERNEL.tobytes()[:4] not in result.stdout_bytes + result.stderr_bytes
    assert not out.exists()
    assert _snapshot(tmp_path) == before


def test_the_canary_would_be_seen_if_it_were_read(tmp_path: Path) -> None:
    """The leak check above can fail: with the folder above as the weights root, the same spec
    reads the canary, and its bytes are in the model."""
    _outside_forms(tmp_path)
    spec = _write(tmp_path / "project" / "spec.yaml", LAYER + "weights: ../outside/canary.npz\n")
    out = tmp_path / "model.onnx"
    result = _invoke("compile", spec, "-o", out, "--weights-root", tmp_path)
    assert result.exit_code == 0, result.output
    assert CANARY_KERNEL.tobytes() in out.read_bytes()


@pytest.mark.parametrize("form", ["absolute", "dotdot", "symlinked_file"])
def test_outside_weights_messages_do_not_tell_whether_the_file_exists(tmp_path: Path, form: str) -> None:
    values = _outside_forms(tmp_path)
    missing = values[form].replace("canary.npz", "nosuch.npz")  # as long: messages cut long paths
    if form == "symlinked_file":
        (tmp_path / "project" / "missing_link.npz").symlink_to(tmp_path / "outside" / "nosuch.npz")
        missing = "missing_link.npz"
    messages = []
    for value in (values[form], missing):
        spec = _write(tmp_path / "project" / "spec.yaml", LAYER + f"weights: {value}\n")
        stderr = _refused(_invoke("validate", spec))
        messages.append(
            stderr.replace("canary", "NAME").replace("nosuch", "NAME").replace("missing_link", "link")
        )
    assert messages[0] == messages[1]


def test_weights_symlink_inside_the_folder_is_read(tmp_path: Path) -> None:
    np.savez(tmp_path / "real.npz", kernel=np.ones(KERNEL_SHAPE), bias=np.zeros(2))
    (tmp_path / "w.npz").symlink_to(tmp_path / "real.npz")
    spec = _write(tmp_path / "spec.yaml", LAYER + "weights: w.npz\n")
    result = _invoke("validate", spec)
    assert result.exit_code == 0, result.output


def _parent_folder_spec(tmp_path: Path) -> Path:
    shared = tmp_path / "shared"
    shared.mkdir()
    np.savez(shared / "w.npz", kernel=np.ones(KERNEL_SHAPE, np.float32), bias=np.zeros(2, np.float32))
    return _write(tmp_path / "project" / "spec.yaml", LAYER + "batch_size: 1\nweights: ../shared/w.npz\n")


@pytest.mark.parametrize(
    "command",
    [
        ["validate"],
        ["compile", "-o", "{out}"],
        ["check"],
        ["run", "--random"],
        ["bench", "--iters", "1", "--warmup", "0"],
    ],
    ids=lambda c: c[0],
)
def test_weights_root_lets_every_spec_command_read_a_parent_folder(
    tmp_path: Path, command: list[str]
) -> None:
    spec = _parent_folder_spec(tmp_path)
    name, *rest = [str(tmp_path / "m.onnx") if part == "{out}" else part for part in command]
    _refused(_invoke(name, spec, *rest), "leads outside")
    result = _invoke(name, spec, *rest, "--weights-root", tmp_path)
    assert result.exit_code == 0, result.output


def test_weights_root_still_refuses_what_lies_outside_it(tmp_path: Path) -> None:
    _outside_forms(tmp_path)
    (tmp_path / "project" / "inner").mkdir()
    spec = _write(tmp_path / "project" / "inner" / "spec.yaml", LAYER + "weights: ../../outside/canary.npz\n")
    _refused(_invoke("validate", spec, "--weights-root", tmp_path / "project"), "leads outside")


def test_mapping_weights_resolve_inside_weights_root(tmp_path: Path) -> None:
    np.savez(tmp_path / "w.npz", kernel=np.ones(KERNEL_SHAPE, np.float32), bias=np.zeros(2, np.float32))
    mapping = {"filters": 2, "kernel_size": 2, "input_shape": [3, 3, 1], "weights": "w.npz"}
    spec = dc.load_spec(mapping, weights_root=tmp_path)
    weights = spec.layers[0].weights
    assert weights is not None and weights.file == tmp_path.resolve() / "w.npz"
    with pytest.raises(dc.SpecError, match="is absolute"):
        dc.load_spec({**mapping, "weights": str(tmp_path / "w.npz")}, weights_root=tmp_path)


# --- memory: weights and inputs read once, never widened ---------------------------------------------


def test_float32_npz_weights_stay_float32_and_are_read_once(tmp_path: Path) -> None:
    kernel = np.random.default_rng(0).standard_normal((4, 4, 512, 512)).astype(np.float32)  # 16 MiB
    np.savez(tmp_path / "w.npz", kernel=kernel, bias=np.zeros(512, np.float32))
    spec = _write(
        tmp_path / "spec.yaml",
        "filters: 512\nkernel_size: 4\ninput_shape: [2, 2, 512]\nweights: w.npz\n",
    )
    tracemalloc.start()
    try:
        loaded = dc.load_spec(spec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    weights = loaded.layers[0].weights
    assert weights is not None and weights.kernel.dtype == np.float32
    assert np.array_equal(weights.kernel, kernel)
    assert peak < 1.25 * kernel.nbytes, f"peak {peak:,} bytes for a {kernel.nbytes:,}-byte kernel"


def test_compressed_member_is_read_into_its_array_once(tmp_path: Path) -> None:
    x = np.zeros((4, 512, 512, 8), np.float32)  # 32 MiB, deflated to a few KiB
    np.savez_compressed(tmp_path / "x.npz", input=x)
    tracemalloc.start()
    try:
        with open_array_file(tmp_path / "x.npz", "x.npz", 2**30) as arrays:
            read = arrays.read("input")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert read.shape == x.shape and not read.any()
    assert peak < x.nbytes + 4 * 2**20, f"peak {peak:,} bytes for a {x.nbytes:,}-byte array"


def test_array_file_errors_name_the_file_and_the_array(tmp_path: Path) -> None:
    (tmp_path / "w.npz").write_bytes(_zip({"kernel.npy": _npy_header("<U3", (2,)) + bytes(24)}))
    with pytest.raises(ArrayFileError) as info, open_array_file(tmp_path / "w.npz", "w.npz", 100) as arrays:
        arrays.read("kernel")
    assert str(info.value) == "w.npz: kernel: is an array of <U3 where numbers were expected"
