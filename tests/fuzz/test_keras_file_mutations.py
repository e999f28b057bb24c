"""Any structurally mutated saved Keras file → `deconvc validate` exits 0 or 2 with a located
message, never a traceback or a hang, and never reads outside the file.

Each example builds a small valid model file (a tf.keras-2 full-model `.h5`, a Keras 3 `.keras`
archive whose `model.weights.h5` it mutates, or a config JSON with its `.weights.h5`) and applies
1-3 structural mutations to its HDF5 side: a weight replaced by an external link, a soft link, a
virtual dataset or externally stored data pointing at a canary file beside it (these must be
refused), or by a dataset of another dtype, shape, chunking or compression (a fill-value-only
dataset declaring gigabytes, a filter that needs a plugin), a group replaced by a dataset, names
attributes made scalars, numbers, absolute or empty names; for archives also the members' zip
compression method (stored, deflate, bzip2, lzma, and patched to deflate64 or an unknown one) or
the encryption flag; and in about a third of the examples 1-4 bytes of the finished HDF5 file or
archive overwritten. The CLI runs in this process (click's runner) under the time and memory
limits of `limits`, with a 5 s limit per HDF5 read so a file that loops the library costs
seconds. No byte of the canary may appear in the output; the input is left intact.
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.checks import assert_clean_exit, invoke
from tests.fuzz.limits import Outcomes, examples, memory_limit, time_limit
from tests.keras_configs import conv, layer, sequential

MUTATED_FILE_EXAMPLES = examples(0.1)  # ci: 150; thorough: 1,500
MARKER = b"CANARY-fuzz-7e21"  # 16 bytes
KERNEL, BIAS = (2, 2, 2, 3), (2,)
OUTCOMES = Outcomes("test_any_mutated_keras_file_is_read_or_refused_with_a_located_error")
# Links and storage that would read another file: whatever else is mutated, these are refused.
FOREIGN = ("external-link", "soft-link", "virtual", "external-storage")


def _config() -> dict[str, Any]:
    return sequential(
        conv("up", 2, 2, strides=[2, 2]),
        layer("BatchNormalization", "bn", axis=-1),
        input_shape=[3, 3, 3],
    )


def _arrays() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return {
        "up": [rng.normal(size=KERNEL).astype(np.float32), rng.normal(size=BIAS).astype(np.float32)],
        "bn": [
            np.ones(2, np.float32),
            np.zeros(2, np.float32),
            np.zeros(2, np.float32),
            np.ones(2, np.float32),
        ],
    }


def _legacy_file(h5: h5py.File) -> list[str]:
    """A tf.keras-2 full-model layout; returns the weight datasets' paths."""
    h5.attrs["model_config"] = json.dumps(_config())
    weights = h5.create_group("model_weights")
    weights.attrs["layer_names"] = [b"input_layer", b"up", b"bn"]
    weights.create_group("input_layer").attrs["weight_names"] = []
    paths = []
    for name, arrays in _arrays().items():
        group = weights.create_group(name)
        names = [f"{name}/w{i}:0" for i in range(len(arrays))]
        group.attrs["weight_names"] = [n.encode() for n in names]
        for weight, array in zip(names, arrays, strict=True):
            group[weight] = array
            paths.append(f"model_weights/{name}/{weight}")
    return paths


def _keras3_file(h5: h5py.File) -> list[str]:
    paths = []
    for key, arrays in zip(("conv2d_transpose", "batch_normalization"), _arrays().values(), strict=True):
        for i, array in enumerate(arrays):
            h5[f"layers/{key}/vars/{i}"] = array
            paths.append(f"layers/{key}/vars/{i}")
    return paths


Mutation = tuple[str, Any]


def _replace(h5: h5py.File, path: str, make: Callable[[h5py.Group, str], Any]) -> None:
    parent, name = path.rsplit("/", 1)
    if path in h5:
        del h5[path]
    make(h5.require_group(parent), name)


def _apply(h5: h5py.File, folder: Path, paths: list[str], mutation: Mutation) -> None:
    kind, arg = mutation
    target = paths[arg % len(paths)] if isinstance(arg, int) else paths[0]
    canary = str(folder / "canary.h5")
    if kind == "external-link":
        _replace(h5, target, lambda g, n: g.__setitem__(n, h5py.ExternalLink(canary, "/data")))
    elif kind == "soft-link":
        h5["elsewhere"] = np.ones(KERNEL, np.float32)
        _replace(h5, target, lambda g, n: g.__setitem__(n, h5py.SoftLink("/elsewhere")))
    elif kind == "virtual":
        layout = h5py.VirtualLayout(KERNEL, np.float32)
        layout[...] = h5py.VirtualSource(canary, "data", KERNEL)
        _replace(h5, target, lambda g, n: g.create_virtual_dataset(n, layout))
    elif kind == "external-storage":
        raw = str(folder / "canary.bin")
        _replace(h5, target, lambda g, n: g.create_dataset(n, KERNEL, np.float32, external=[(raw, 0, 96)]))
    elif kind == "dtype":
        value = {
            "float16": np.ones(KERNEL, np.float16),
            "int8": np.ones(KERNEL, np.int8),
            "bool": np.ones(KERNEL, bool),
            "complex": np.ones(KERNEL, np.complex64),
            "string": np.array([b"a", b"b"]),
            "vlen": np.array(["x", "yy"], dtype=h5py.string_dtype()),
            "compound": np.zeros(2, [("a", "f4"), ("b", "i4")]),
            "big-endian": np.ones(KERNEL, ">f8"),
        }[arg]
        _replace(h5, target, lambda g, n: g.__setitem__(n, value))
    elif kind == "shape":
        shape = {"scalar": (), "empty": (0,), "wrong": (3, 2, 2, 2), "huge": (2**33,), "medium": (2**22,)}[
            arg
        ]
        _replace(h5, target, lambda g, n: g.create_dataset(n, shape, np.float32, fillvalue=0.5))
    elif kind == "null":
        _replace(h5, target, lambda g, n: g.__setitem__(n, h5py.Empty(np.float32)))
    elif kind == "storage":
        options = {
            "gzip": {"compression": "gzip", "chunks": True},
            "lzf": {"compression": "lzf", "chunks": True},
            "shuffle": {"shuffle": True, "compression": "gzip", "chunks": (1, 1, 1, 1)},
            "fletcher32": {"fletcher32": True, "chunks": (1, 2, 2, 3)},
            "scaleoffset": {"scaleoffset": 4, "chunks": (2, 2, 2, 3)},
            "big-chunks": {"chunks": (64, 64, 64, 64), "maxshape": (None, None, None, None)},
            "plugin": {"compression": 32026, "allow_unknown_filter": True, "chunks": True},
        }[arg]
        data = np.ones(KERNEL, np.float32)
        _replace(h5, target, lambda g, n: g.create_dataset(n, data=data, **options))
    elif kind == "group-for-dataset":
        _replace(h5, target, lambda g, n: g.create_group(n))
    elif kind == "dataset-for-group":
        group = target.rsplit("/", 1)[0]
        del h5[group]
        h5[group] = np.ones(3, np.float32)
    elif kind == "delete":
        del h5[target]
    elif kind == "attribute":
        holder = h5["model_weights"] if "model_weights" in h5 else h5
        key, value = arg
        groups = [holder, *[obj for obj in holder.values() if isinstance(obj, h5py.Group)]]
        for group in groups[:2] if key == "layer_names" else groups:
            if key in group.attrs or key == "model_config":
                (h5 if key == "model_config" else group).attrs[key] = value


MUTATIONS: st.SearchStrategy[Mutation] = st.one_of(
    st.tuples(st.sampled_from(FOREIGN), st.integers(0, 5)),
    st.tuples(
        st.just("dtype"),
        st.sampled_from(["float16", "int8", "bool", "complex", "string", "vlen", "compound", "big-endian"]),
    ),
    st.tuples(st.just("shape"), st.sampled_from(["scalar", "empty", "wrong", "huge", "medium"])),
    st.tuples(st.just("null"), st.integers(0, 5)),
    st.tuples(
        st.just("storage"), st.sampled_from(["gzip", "lzf", "shuffle", "fletcher32", "scaleoffset", "big-chunks", "plugin"])
    ),
    st.tuples(st.sampled_from(["group-for-dataset", "dataset-for-group", "delete"]), st.integers(0, 5)),
    st.tuples(
        st.just("attribute"),
        st.tuples(
            st.sampled_from(["layer_names", "weight_names", "model_config"]),
            st.sampled_from(
                [b"up", 3, np.arange(4), np.array([[b"a"]]), ["/model_weights/up/up/w0:0"], ["", "."],
                 [b"up/w0:0", b"up/w0:0"], "{not json", "[]", np.array(["bn", "up"], dtype=h5py.string_dtype())]
            ),
        ),
    ),
)  # fmt: skip

ZIP_METHODS = [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA, 9, 77, -1]


def _canaries(folder: Path) -> None:
    (folder / "canary.bin").write_bytes(MARKER * 16)
    with h5py.File(folder / "canary.h5", "w") as h5:
        h5["data"] = np.frombuffer(MARKER * 6, np.float32).reshape(KERNEL)


def _hdf5_bytes(folder: Path, form: str, mutations: list[Mutation]) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        paths = _legacy_file(h5) if form == "h5" else _keras3_file(h5)
        for mutation in mutations:
            try:
                _apply(h5, folder, paths, mutation)
            except (KeyError, ValueError, TypeError, OSError):
                pass  # the mutation does not apply to what earlier ones left
    return buffer.getvalue()


def _archive(path: Path, weights: bytes, method: int) -> None:
    stored = method if method in (zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA) else 0
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(_config()), stored)
        archive.writestr("model.weights.h5", weights, stored)
    if method in (9, 77, -1):  # deflate64 or an unknown method, or the encryption flag
        data = bytearray(path.read_bytes())
        for signature, field in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = data.find(signature)
            while at >= 0:
                if method == -1:
                    struct.pack_into("<H", data, at + field, 1)
                else:
                    struct.pack_into("<H", data, at + field + 2, method)
                at = data.find(signature, at + 4)
        path.write_bytes(bytes(data))


@contextmanager
def _short_hdf5_limit() -> Iterator[None]:
    previous = os.environ.get("DECONVC_HDF5_SECONDS")
    os.environ["DECONVC_HDF5_SECONDS"] = "5"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["DECONVC_HDF5_SECONDS"]
        else:
            os.environ["DECONVC_HDF5_SECONDS"] = previous


@settings(max_examples=MUTATED_FILE_EXAMPLES)
@given(
    form=st.sampled_from(["h5", "keras", "weights"]),
    mutations=st.lists(MUTATIONS, min_size=1, max_size=3),
    method=st.sampled_from(ZIP_METHODS),
    flips=st.one_of(st.just([]), st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), max_size=4)),
)
def test_any_mutated_keras_file_is_read_or_refused_with_a_located_error(
    form: str, mutations: list[Mutation], method: int, flips: list[tuple[int, int]]
) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        _canaries(folder)
        weights = _hdf5_bytes(folder, form, mutations)
        path = folder / ("model.json" if form == "weights" else f"model.{form}")
        mutated, args = path, ["validate", str(path)]
        if form == "h5":
            path.write_bytes(weights)
        elif form == "keras":
            _archive(path, weights, method)
        else:  # a config JSON and its .weights.h5
            path.write_text(json.dumps(_config()))
            mutated = folder / "model.weights.h5"
            mutated.write_bytes(weights)
            args += ["--weights", str(mutated)]
        if flips:
            data = bytearray(mutated.read_bytes())
            for offset, value in flips:
                data[offset % len(data)] = value
            mutated.write_bytes(bytes(data))
        before = mutated.read_bytes()
        with _short_hdf5_limit(), time_limit("the example"), memory_limit():
            result = invoke(args)
        assert_clean_exit(result, "validate")
        assert MARKER not in result.stdout_bytes and MARKER not in result.stderr_bytes
        assert mutated.read_bytes() == before
        foreign = any(kind in FOREIGN for kind, _ in mutations)
        if result.exit_code == 2:
            assert result.stderr.startswith(f"{path}: "), result.stderr[-2000:]
            OUTCOMES.record(f"refused ({form})")
        else:
            # a foreign link either survived and was refused, or a later mutation replaced it
            assert not (foreign and not flips and _still_foreign(weights)), result.stdout
            OUTCOMES.record(f"accepted ({form})")


def _still_foreign(weights: bytes) -> bool:
    """Whether the HDF5 bytes still hold a link or dataset that would read another file."""
    found = False
    with h5py.File(io.BytesIO(weights), "r") as h5:

        def visit(name: str, link: Any) -> None:
            nonlocal found
            if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
                found = True
            elif isinstance(link, h5py.HardLink):
                obj = h5[name]
                if isinstance(obj, h5py.Dataset) and (obj.is_virtual or obj.external):
                    found = True

        h5.visititems_links(visit)
    return found


def test_enough_mutated_keras_files_were_read_and_refused() -> None:
    """Runs after the property (file order): both answers must really occur."""
    for form in ("h5", "keras", "weights"):
        OUTCOMES.require(f"refused ({form})", MUTATED_FILE_EXAMPLES // 10)
