"""Hostile saved Keras files (.h5, .keras, config JSON + weights), each made on the fly: the CLI
answers exit 2 with a located message, reads nothing outside the given file (the bytes of a
canary file beside it appear in no output), leaves every input intact, and stays within its
time and memory bounds (a stalled HDF5 read is stopped; declared sizes are refused before any
allocation; a model's weights are held about once).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from tests.keras_configs import conv, sequential
from tests.test_cli import assert_clean_failure, invoke

ROOT = Path(__file__).resolve().parent.parent
CLI = [
    sys.executable,
    "-c",
    "import sys; from deconv_compiler.cli.main import main; main(sys.argv[1:], prog_name='deconvc')",
]
ENV = {**os.environ, "PYTHONWARNINGS": "error"}  # a warning in the CLI or its HDF5 worker shows on stderr
MARKER = b"CANARY-3f9d1c2a!"  # 16 bytes: four float32s no model here holds
KERNEL, BIAS = (3, 3, 2, 4), (2,)  # Conv2DTranspose(2, 3) on 4 channels
H5Edit = Callable[[h5py.File, Path], None]

# --- files -------------------------------------------------------------------------------------------


def _legacy_config() -> dict[str, Any]:
    return sequential(conv("conv", 2, 3, strides=[2, 2]), input_shape=[5, 5, 4])


def legacy_h5(path: Path, edit: H5Edit | None = None) -> Path:
    """A tf.keras-2-style full-model .h5 (weights by `weight_names`), then `edit(h5, folder)`."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = json.dumps(_legacy_config()).encode()
        h5.attrs["keras_version"] = b"2.15.0"
        weights = h5.create_group("model_weights")
        weights.attrs["layer_names"] = [b"input_layer", b"conv"]
        weights.create_group("input_layer").attrs["weight_names"] = []
        group = weights.create_group("conv")
        group.attrs["weight_names"] = [b"conv/kernel:0", b"conv/bias:0"]
        group["conv/kernel:0"] = rng.normal(size=KERNEL).astype(np.float32)
        group["conv/bias:0"] = rng.normal(size=BIAS).astype(np.float32)
        if edit is not None:
            edit(h5, path.parent)
    return path


def weights_h5(edit: H5Edit | None = None, folder: Path | None = None) -> bytes:
    """A Keras 3 `model.weights.h5` for `_legacy_config()`'s layers, then `edit(h5, folder)`."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    with h5py.File(buffer, "w") as h5:
        variables = h5.create_group("layers/conv2d_transpose/vars")
        variables["0"] = rng.normal(size=KERNEL).astype(np.float32)
        variables["1"] = rng.normal(size=BIAS).astype(np.float32)
        if edit is not None:
            edit(h5, folder or Path("."))
    return buffer.getvalue()


def keras_archive(path: Path, weights: bytes | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        archive.writestr("config.json", json.dumps(_legacy_config()))
        archive.writestr("model.weights.h5", weights_h5() if weights is None else weights)
    return path


def canaries(folder: Path) -> list[Path]:
    """Files beside the input that a hostile file points at: raw bytes and an HDF5 file."""
    raw = folder / "canary.bin"
    raw.write_bytes(MARKER * 64)
    with h5py.File(folder / "canary.h5", "w") as h5:
        values = np.frombuffer(MARKER * 18, np.float32).reshape(KERNEL)
        h5["data"] = values
        h5["group/kernel:0"] = values
        h5["group/bias:0"] = np.frombuffer(MARKER[:8], np.float32)
        h5["group"].attrs["weight_names"] = [b"kernel:0", b"bias:0"]
    return [raw, folder / "canary.h5"]


def _digests(paths: list[Path]) -> dict[Path, str]:
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


def assert_refused(folder: Path, args: list[str | Path], fragment: str, inputs: list[Path]) -> str:
    """`deconvc compile ARGS -o out.onnx`: exit 2 naming `fragment`, nothing written, no canary
    byte in any output, every input intact. Returns stderr."""
    before = _digests(inputs)
    out = folder / "out.onnx"
    result = invoke("compile", *args, "-o", out)
    assert_clean_failure(result)
    assert fragment in result.stderr, result.stderr
    assert not out.exists()
    assert MARKER not in result.stdout_bytes and MARKER not in result.stderr_bytes
    for path in folder.rglob("*"):
        if path.is_file() and path not in before:
            assert MARKER not in path.read_bytes(), path
    assert _digests(inputs) == before
    return result.stderr


# --- legacy .h5: only data inside the file ----------------------------------------------------------


def _weight_names(h5: h5py.File, *names: str) -> None:
    h5["model_weights/conv"].attrs["weight_names"] = [n.encode() for n in names]


def test_an_absolute_weight_name_is_refused(tmp_path: Path) -> None:
    def edit(h5: h5py.File, folder: Path) -> None:
        h5["kernel"] = np.ones(KERNEL, np.float32)  # at the root, outside model_weights/
        _weight_names(h5, "/kernel", "conv/bias:0")

    path = legacy_h5(tmp_path / "abs.h5", edit)
    stderr = assert_refused(tmp_path, [path], "name '/kernel' is an absolute path", [path])
    assert stderr.startswith(f"{path}: model_weights/conv: name '/kernel'"), stderr


def test_an_external_link_at_the_root_is_refused(tmp_path: Path) -> None:
    files = canaries(tmp_path)

    def edit(h5: h5py.File, folder: Path) -> None:
        h5["ext"] = h5py.ExternalLink(str(folder / "canary.h5"), "/data")
        _weight_names(h5, "/ext", "conv/bias:0")

    path = legacy_h5(tmp_path / "ext.h5", edit)
    assert_refused(tmp_path, [path], "ext is an external link (to another file)", [path, *files])


def test_an_external_link_inside_a_layer_group_is_refused(tmp_path: Path) -> None:
    files = canaries(tmp_path)

    def edit(h5: h5py.File, folder: Path) -> None:
        del h5["model_weights/conv/conv/kernel:0"]
        h5["model_weights/conv/conv/kernel:0"] = h5py.ExternalLink(str(folder / "canary.h5"), "/data")

    path = legacy_h5(tmp_path / "ext.h5", edit)
    assert_refused(tmp_path, [path], "model_weights/conv/conv/kernel:0 is an external link", [path, *files])


def test_a_layer_name_that_is_an_external_link_to_a_group_is_refused(tmp_path: Path) -> None:
    files = canaries(tmp_path)

    def edit(h5: h5py.File, folder: Path) -> None:
        del h5["model_weights/conv"]
        h5["model_weights/conv"] = h5py.ExternalLink(str(folder / "canary.h5"), "/group")

    path = legacy_h5(tmp_path / "ext_layer.h5", edit)
    assert_refused(tmp_path, [path], "model_weights/conv is an external link", [path, *files])


def test_a_soft_link_leaving_the_layer_group_is_refused(tmp_path: Path) -> None:
    def edit(h5: h5py.File, folder: Path) -> None:
        h5["elsewhere"] = np.ones(KERNEL, np.float32)
        h5["model_weights/conv/conv/other"] = h5py.SoftLink("/elsewhere")
        _weight_names(h5, "conv/other", "conv/bias:0")

    path = legacy_h5(tmp_path / "soft.h5", edit)
    assert_refused(tmp_path, [path], "model_weights/conv/conv/other is a soft link", [path])


def test_a_virtual_dataset_reading_another_file_is_refused(tmp_path: Path) -> None:
    files = canaries(tmp_path)

    def edit(h5: h5py.File, folder: Path) -> None:
        layout = h5py.VirtualLayout(KERNEL, np.float32)
        layout[...] = h5py.VirtualSource(str(folder / "canary.h5"), "data", KERNEL)
        del h5["model_weights/conv/conv/kernel:0"]
        h5["model_weights/conv/conv"].create_virtual_dataset("kernel:0", layout)

    path = legacy_h5(tmp_path / "vds.h5", edit)
    assert_refused(tmp_path, [path], "model_weights/conv/conv/kernel:0 is a virtual dataset", [path, *files])


@pytest.mark.parametrize("target", ["canary", "system"])
def test_a_dataset_stored_in_an_external_file_is_refused(tmp_path: Path, target: str) -> None:
    files = canaries(tmp_path)
    raw = files[0] if target == "canary" else Path("/etc/passwd")

    def edit(h5: h5py.File, folder: Path) -> None:
        del h5["model_weights/conv/conv/kernel:0"]
        size = int(np.prod(KERNEL)) * 4
        h5["model_weights/conv/conv"].create_dataset(
            "kernel:0", KERNEL, np.float32, external=[(str(raw), 0, size)]
        )

    path = legacy_h5(tmp_path / "external.h5", edit)
    if target == "system" and not raw.exists():
        pytest.skip("no /etc/passwd here")
    assert_refused(
        tmp_path, [path], "model_weights/conv/conv/kernel:0 stores its data in external files", [path, *files]
    )


def test_a_dataset_needing_a_filter_plugin_is_refused_unread(tmp_path: Path) -> None:
    """Filter 32026 (Blosc2) would make HDF5 look for a plugin library: no plugin is ever loaded."""

    def edit(h5: h5py.File, folder: Path) -> None:
        del h5["model_weights/conv/conv/kernel:0"]
        h5["model_weights/conv/conv"].create_dataset(
            "kernel:0",
            data=np.ones(KERNEL, np.float32),
            chunks=KERNEL,
            compression=32026,
            allow_unknown_filter=True,
        )

    path = legacy_h5(tmp_path / "plugin.h5", edit)
    assert_refused(
        tmp_path, [path], "kernel:0 is compressed with HDF5 filter 32026, which is not read", [path]
    )


def test_an_8_gib_fill_value_dataset_at_the_root_is_refused_unread(tmp_path: Path) -> None:
    """~10 KB on disk, 8 GiB declared, reached through an absolute name: never allocated."""

    def edit(h5: h5py.File, folder: Path) -> None:
        h5.create_dataset("huge", (2**31,), np.float32, fillvalue=1.0)
        _weight_names(h5, "/huge", "conv/bias:0")

    path = legacy_h5(tmp_path / "huge.h5", edit)
    assert path.stat().st_size < 20_000
    assert_refused(tmp_path, [path], "name '/huge' is an absolute path", [path])


def test_an_8_gib_fill_value_weight_is_refused_by_its_declared_size(tmp_path: Path) -> None:
    def edit(h5: h5py.File, folder: Path) -> None:
        h5["model_weights/conv/conv"].create_dataset("huge", (2**31,), np.float32, fillvalue=1.0)
        _weight_names(h5, "conv/huge", "conv/bias:0")

    path = legacy_h5(tmp_path / "huge.h5", edit)
    started = time.perf_counter()
    stderr = assert_refused(tmp_path, [path], "the weights take 8,589,934,600 bytes (as declared)", [path])
    assert "the limit is 1,610,612,736 (--max-weight-size)" in stderr
    assert time.perf_counter() - started < 10


# --- HDF5 structure: located errors, not tracebacks -------------------------------------------------


def _scalar_names(attribute: str) -> H5Edit:
    def edit(h5: h5py.File, folder: Path) -> None:
        group = h5["model_weights"] if attribute == "layer_names" else h5["model_weights/conv"]
        group.attrs[attribute] = b"conv"

    return edit


def _layer_dataset(h5: h5py.File, folder: Path) -> None:
    del h5["model_weights/conv"]
    h5["model_weights/conv"] = np.ones(3, np.float32)


def _string_weight(h5: h5py.File, folder: Path) -> None:
    del h5["model_weights/conv/conv/kernel:0"]
    h5["model_weights/conv/conv/kernel:0"] = np.array([b"not", b"numbers"])


LEGACY_STRUCTURES = {
    "layer_names-scalar": (
        _scalar_names("layer_names"),
        "model_weights: attribute layer_names must be a list",
    ),
    "weight_names-scalar": (
        _scalar_names("weight_names"),
        "model_weights/conv: attribute weight_names must be",
    ),
    "layer-group-is-a-dataset": (_layer_dataset, "model_weights/conv is a dataset, not a group"),
    "string-weights": (_string_weight, "model_weights/conv/conv/kernel:0 holds 'string' values, not numbers"),
}


@pytest.mark.parametrize("case", sorted(LEGACY_STRUCTURES))
def test_a_broken_legacy_structure_is_a_located_error(tmp_path: Path, case: str) -> None:
    edit, fragment = LEGACY_STRUCTURES[case]
    path = legacy_h5(tmp_path / "broken.h5", edit)
    stderr = assert_refused(tmp_path, [path], fragment, [path])
    assert stderr.startswith(f"{path}: "), stderr


def test_a_vars_entry_that_is_a_scalar_dataset_is_a_located_error(tmp_path: Path) -> None:
    def edit(h5: h5py.File, folder: Path) -> None:
        del h5["layers/conv2d_transpose/vars"]
        h5["layers/conv2d_transpose/vars"] = np.float32(1.0)

    path = keras_archive(tmp_path / "vars.keras", weights_h5(edit))
    assert_refused(
        tmp_path, [path], "model.weights.h5 in the archive: layers/conv2d_transpose/vars is a dataset", [path]
    )


def test_a_corrupt_hdf5_file_is_a_located_error(tmp_path: Path) -> None:
    path = legacy_h5(tmp_path / "model.h5")
    data = bytearray(path.read_bytes())
    data[200:1200] = bytes(1000)  # the root group's header and more: zeroed
    path.write_bytes(bytes(data))
    stderr = assert_refused(tmp_path, [path], "its structure cannot be read (", [path])
    assert stderr.startswith(f"{path}: its structure cannot be read"), stderr


# --- .keras archives ---------------------------------------------------------------------------------


def _patched_member(path: Path, name: str, *, method: int | None = None, flags: int | None = None) -> Path:
    """Rewrite a member's compression method or flags in its local and central headers."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    central = next(
        i
        for i in range(len(data))
        if data[i : i + 4] == b"PK\x01\x02"
        and struct.unpack_from("<I", data, i + 42)[0] == info.header_offset
    )
    for offset, field in ((info.header_offset, 6), (central, 8)):
        if flags is not None:
            struct.pack_into("<H", data, offset + field, flags)
        if method is not None:
            struct.pack_into("<H", data, offset + field + 2, method)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("encrypted", "model.weights.h5 is encrypted"),
        ("deflate64", "model.weights.h5 is compressed with zip method 9"),
        ("unknown-method", "model.weights.h5 is compressed with zip method 77"),
    ],
)
def test_unreadable_zip_members_are_located_errors(tmp_path: Path, case: str, fragment: str) -> None:
    path = keras_archive(tmp_path / f"{case}.keras")
    if case == "encrypted":
        _patched_member(path, "model.weights.h5", flags=1)
    else:
        _patched_member(path, "model.weights.h5", method=9 if case == "deflate64" else 77)
    assert_refused(tmp_path, [path], fragment, [path])


def test_a_bzip2_bomb_member_is_refused_before_decompressing(tmp_path: Path) -> None:
    """zipfile decompresses bzip2 in unbounded steps: the method itself is refused."""
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(_legacy_config()))
        archive.writestr("model.weights.h5", bytes(40 * 2**20), zipfile.ZIP_BZIP2)
    assert path.stat().st_size < 10_000
    assert_refused(tmp_path, [path], "model.weights.h5 is compressed with zip method 12", [path])


def test_a_deflate_bomb_member_is_refused_by_its_declared_size(tmp_path: Path) -> None:
    """40 MB of zeros in ~40 KB, declared as such: over 1 MiB + 16 MiB of slack, never inflated."""
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(_legacy_config()))
        archive.writestr("model.weights.h5", bytes(40 * 2**20), zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    assert_refused(
        tmp_path,
        [path, "--max-weight-size", "1MiB"],
        "model.weights.h5 declares 41,943,040 bytes; the limit is 17,825,792",
        [path],
    )


def test_a_64_mib_config_json_of_tiny_containers_is_refused_before_parsing(tmp_path: Path) -> None:
    """`{}` x 22 million (63 MiB), deflated to ~64 KB: Python would hold it in 1.7 GB."""
    config = json.dumps(_legacy_config())
    filler = ",".join(["{}"] * (21 * 2**20))
    text = (
        config[:-3]
        + ', {"class_name": "Reshape", "config": {"name": "r", "target_shape": ['
        + filler
        + "]}}]}}"
    )
    path = tmp_path / "wide.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", text)
        archive.writestr("model.weights.h5", weights_h5())
    assert path.stat().st_size < 200_000
    assert_refused(tmp_path, [path], "JSON values; the limit is 8,000,000", [path])


def test_a_member_lying_about_its_size_is_cut_and_refused(tmp_path: Path) -> None:
    path = tmp_path / "liar.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(_legacy_config()))
        archive.writestr("model.weights.h5", bytes(8 * 2**20), zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model.weights.h5")
    for i in range(len(data) - 4):  # declare 1 KiB in both headers
        if data[i : i + 4] == b"PK\x03\x04" and struct.unpack_from("<I", data, i + 22)[0] == info.file_size:
            struct.pack_into("<I", data, i + 22, 1024)
        if data[i : i + 4] == b"PK\x01\x02" and struct.unpack_from("<I", data, i + 24)[0] == info.file_size:
            struct.pack_into("<I", data, i + 24, 1024)
    path.write_bytes(bytes(data))
    assert_refused(tmp_path, [path], "model.weights.h5 is corrupt (Bad CRC-32", [path])


def test_an_external_link_in_an_archive_weights_file_is_refused(tmp_path: Path) -> None:
    files = canaries(tmp_path)

    def edit(h5: h5py.File, folder: Path) -> None:
        del h5["layers/conv2d_transpose/vars/0"]
        h5["layers/conv2d_transpose/vars/0"] = h5py.ExternalLink(str(folder / "canary.h5"), "/data")

    path = keras_archive(tmp_path / "ext.keras", weights_h5(edit, tmp_path))
    assert_refused(tmp_path, [path], "layers/conv2d_transpose/vars/0 is an external link", [path, *files])


# --- config JSON + weights ----------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("which", ["weights", "config"])
def test_a_fifo_is_refused_without_blocking(tmp_path: Path, which: str) -> None:
    config = tmp_path / "model.json"
    config.write_text(json.dumps(_legacy_config()))
    weights = tmp_path / "model.weights.h5"
    weights.write_bytes(weights_h5())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args = [fifo if which == "config" else config, "--weights", fifo if which == "weights" else weights]
    command = [*CLI, "validate", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT, env=ENV)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"{args[0]}: ") and "is not a regular file" in result.stderr
    assert len(result.stderr.splitlines()) == 2, result.stderr  # the problem and the summary


def test_weights_with_an_absolute_name_beside_a_config_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "model.json"
    config.write_text(json.dumps(_legacy_config()))

    def edit(h5: h5py.File, folder: Path) -> None:
        h5.attrs["layer_names"] = [b"conv"]
        h5["conv"].attrs["weight_names"] = [b"/layers/conv2d_transpose/vars/0", b"bias"]

    def keras2(h5: h5py.File, folder: Path) -> None:
        h5.create_group("conv")
        edit(h5, folder)

    weights = tmp_path / "w.h5"
    weights.write_bytes(weights_h5(keras2))
    assert_refused(
        tmp_path,
        [config, "--weights", weights],
        f"{weights}: conv: name '/layers/conv2d_transpose",
        [config, weights],
    )


# --- a stalled HDF5 read is stopped -----------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _looping_h5(path: Path) -> Path:
    """One byte changed (a link name's length, 11 -> 132) makes HDF5 2.0 loop in C while reading
    the structure, where neither SIGINT nor SIGTERM stops it."""
    legacy_h5(path)
    data = bytearray(path.read_bytes())
    at = data.find(struct.pack("<Q", len("input_layer")) + b"input_layer")
    if at < 0:
        pytest.skip("this HDF5 version lays the file out differently")
    data[at] = 132
    path.write_bytes(bytes(data))
    return path


def test_an_hdf5_file_that_loops_the_library_is_stopped_and_reported(tmp_path: Path) -> None:
    """The worker is killed (SIGKILL) once the time limit has passed; the CLI says so, exit 2."""
    path = _looping_h5(tmp_path / "loop.h5")
    env = {**ENV, "DECONVC_HDF5_SECONDS": "2"}
    command = [*CLI, "validate", str(path)]
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"{path}: reading its structure took longer than 2 s"), result.stderr
    assert len(result.stderr.splitlines()) == 2, result.stderr  # the problem and the summary
    assert time.monotonic() - started < 60


# --- memory: the weights held about once -----------------------------------------------------------------

# Measured on Linux/CPython 3.11 (HDF5 2.0): the processes' own peak without weights is ~100 MiB
# (the CLI ~60, the HDF5 helper ~40) plus ~80 MiB for a worker streaming 16 MiB slabs; 256 MiB leaves
# room for other builds. `compile` holds the weights twice (as read, and in ONNX's order).
CONSTANT_BYTES = 256 * 2**20


def _process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree_peak(args: list[str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run the CLI; the sum of its processes' own peaks (the CLI, the HDF5 helper and workers),
    polled every few milliseconds: an upper bound on the tree's peak resident memory."""
    process = subprocess.Popen(
        [*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV
    )
    peaks: dict[int, int] = {}
    while process.poll() is None:
        for pid in _process_tree(process.pid):
            peaks[pid] = max(peaks.get(pid, 0), _peak_rss(pid))
        time.sleep(0.005)
    stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr), sum(peaks.values())


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_a_100_mb_model_is_read_and_compiled_holding_its_weights_about_once(tmp_path: Path) -> None:
    channels = 1664  # a 3x3 kernel of 1664x1664: 99.7 MB of float32
    weights_file = tmp_path / "model.weights.h5"
    with h5py.File(weights_file, "w") as h5:
        rng = np.random.default_rng(0)
        h5["layers/conv2d_transpose/vars/0"] = rng.standard_normal((3, 3, channels, channels), np.float32)
        h5["layers/conv2d_transpose/vars/1"] = np.zeros(channels, np.float32)
    weight_bytes = 3 * 3 * channels * channels * 4 + channels * 4
    path = tmp_path / "big.keras"
    with zipfile.ZipFile(path, "w") as archive:
        config = sequential(conv("conv", channels, 3, strides=[2, 2]), input_shape=[2, 2, channels])
        archive.writestr("config.json", json.dumps(config))
        archive.write(weights_file, "model.weights.h5")
    weights_file.unlink()
    result, peak = _tree_peak(["validate", str(path)])
    assert result.returncode == 0 and not result.stderr, result.stderr
    assert peak < weight_bytes + CONSTANT_BYTES, f"validate peaked at {peak / 2**20:.0f} MiB"
    result, peak = _tree_peak(["compile", str(path), "-o", str(tmp_path / "big.onnx")])
    assert result.returncode == 0 and not result.stderr, result.stderr
    assert peak < 2 * weight_bytes + CONSTANT_BYTES, f"compile peaked at {peak / 2**20:.0f} MiB"


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_looping_read_ends_when_the_cli_is_stopped(tmp_path: Path, sig: signal.Signals) -> None:
    """The CLI stopped during a read that loops in C (the default 60 s limit): its HDF5 helper
    and the spinning worker end with it, not a CPU-bound orphan."""
    path = _looping_h5(tmp_path / "loop.h5")
    process = subprocess.Popen([*CLI, "validate", str(path)], cwd=ROOT, stderr=subprocess.DEVNULL)
    tree: set[int] = set()
    deadline = time.monotonic() + 60
    while len(tree) < 3 and time.monotonic() < deadline:  # the CLI, the helper, the worker
        tree |= set(_process_tree(process.pid))
        time.sleep(0.02)
    assert len(tree) >= 3, tree
    time.sleep(0.5)  # the worker is in the loop now
    process.send_signal(sig)
    process.wait(30)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [pid for pid in tree if _alive(pid)]
