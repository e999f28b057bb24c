"""Hostile and broken inputs, and the guarantees about output files.

Each case is a named test: YAML bombs and tags, deep nesting, absurd sizes, unsafe or broken
weight files, interrupted and killed writes, determinism across processes, parallel use.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest

import deconv_compiler as dc
from deconv_compiler.errors import format_path
from tests.onnx_run import compile_spec

ROOT = Path(__file__).resolve().parent.parent
SEED_EXAMPLE = ROOT / "specs" / "seed_example.yaml"


def _problems(spec: object, **kwargs: int) -> list[str]:
    with pytest.raises(dc.SpecError) as info:
        dc.load_spec(spec, **kwargs)  # type: ignore[arg-type]
    return [f"{format_path(p.path)}: {p.message}" for p in info.value.problems]


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# --- YAML ----------------------------------------------------------------------------------------

BILLION_LAUGHS = """\
a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
filters: *i
"""


def test_billion_laughs_is_refused_quickly_in_bounded_memory(tmp_path: Path) -> None:
    path = _write(tmp_path / "bomb.yaml", BILLION_LAUGHS)
    tracemalloc.start()
    started = time.perf_counter()
    problems = _problems(path)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # 9 levels of 10 aliases: 10**9 leaves, each list and key counted too
    assert problems == [
        "<spec>: refused: YAML aliases expand this document to 2,345,679,021 values "
        "from 30 written ones (an alias bomb?)"
    ]
    assert elapsed < 10.0 and peak < 20 * 2**20  # a sanity bound: expanding it would take hours


def test_a_few_honest_aliases_are_fine(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "anchors.yaml",
        """\
        input: {shape: [null, 4, 4, 3]}
        layers:
          - &block {type: Conv2DTranspose, filters: 3, kernel_size: 3, strides: 2, padding: same}
          - *block
        """,
    )
    assert len(dc.load_spec(path).layers) == 2


def test_python_tags_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "tag.yaml", "filters: !!python/object/apply:os.system ['echo pwned']\n")
    assert "only plain YAML is accepted" in _problems(path)[0]


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_deeply_nested_documents_are_a_clear_error(tmp_path: Path, suffix: str) -> None:
    depth = 50_000
    text = ("kernel_size: " if suffix == "yaml" else "") + "[" * depth + "]" * depth
    if suffix == "json":
        text = '{"kernel_size": ' + text + "}"
    (problem,) = _problems(_write(tmp_path / f"deep.{suffix}", text))
    assert "nested too deeply" in problem


def test_duplicate_keys_are_errors_not_overwrites(tmp_path: Path) -> None:
    path = _write(tmp_path / "dup.yaml", "filters: 2\nkernel_size: 3\nfilters: 4\ninput_shape: [4, 4, 1]\n")
    assert _problems(path) == ["filters: duplicate key"]


# --- sizes ---------------------------------------------------------------------------------------


def test_huge_weights_are_refused_before_any_allocation() -> None:
    spec = {"filters": 4096, "kernel_size": [1000, 1000], "input_shape": [4, 4, 4096]}
    tracemalloc.start()
    (problem,) = _problems(spec)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert problem == (
        "kernel_size: the weights would take 62500.0 GiB (kernel (1000, 1000, 4096, 4096), float32); "
        "the limit is 1.5 GiB"
    )
    assert peak < 20 * 2**20


def test_the_weight_limit_is_configurable() -> None:
    spec = {"filters": 64, "kernel_size": 8, "input_shape": [4, 4, 64]}  # 1 MiB of float32
    assert dc.load_spec(spec).layers[0].filters == 64
    assert "the limit is 512.0 KiB" in _problems(spec, max_weight_bytes=512 * 1024)[0]


def test_output_sizes_that_overflow_are_refused() -> None:
    spec = {
        "type": "Conv1DTranspose",
        "filters": 1,
        "kernel_size": 1,
        "strides": 2**30,
        "input_shape": [8, 1],
    }
    (problem,) = _problems(spec)
    assert "output length along spatial axis 0 would be 8,589,934,592, beyond 2,147,483,647" in problem


# --- weight files --------------------------------------------------------------------------------


def _weights_spec(tmp_path: Path, name: str) -> Path:
    return _write(
        tmp_path / "s.yaml", f"filters: 2\nkernel_size: 3\ninput_shape: [4, 4, 1]\nweights: {name}\n"
    )


def test_pickled_objects_in_npz_are_refused(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "w.npz",
        kernel=np.array([object()] * 18, dtype=object).reshape(3, 3, 2, 1),
        bias=np.zeros(2),
    )
    (problem,) = _problems(_weights_spec(tmp_path, "w.npz"))
    assert "pickled Python objects, which are refused (allow_pickle=False)" in problem


def test_nan_and_inf_weights_are_named(tmp_path: Path) -> None:
    kernel = np.zeros((3, 3, 2, 1))
    kernel[0, 0, 0, 0] = np.nan
    np.savez(tmp_path / "w.npz", kernel=kernel, bias=np.array([np.inf, 0.0]))
    problems = _problems(_weights_spec(tmp_path, "w.npz"))
    assert any("kernel holds 1 NaN or infinite value(s)" in p for p in problems)


def test_wrong_weight_dtypes_are_named(tmp_path: Path) -> None:
    np.savez(tmp_path / "w.npz", kernel=np.full((3, 3, 2, 1), "x"), bias=np.zeros(2))
    (problem,) = _problems(_weights_spec(tmp_path, "w.npz"))
    assert "array of <U1 where numbers were expected" in problem


def test_missing_weight_file_names_the_path_as_written_and_resolved(tmp_path: Path) -> None:
    (problem,) = _problems(_weights_spec(tmp_path, "sub/w.npz"))
    assert f"weights file 'sub/w.npz' not found (looked at {tmp_path / 'sub' / 'w.npz'})" in problem


# --- output files --------------------------------------------------------------------------------

BIG_SPEC = "filters: 512\nkernel_size: 10\ninput_shape: [4, 4, 1024]\n"  # ~200 MiB of float32 weights


def _deconvc(*args: str | Path) -> list[str]:
    return [sys.executable, "-c", "from deconv_compiler.cli.main import main; main()", *map(str, args)]


def _temporaries(folder: Path, pid: int) -> list[Path]:
    return list(folder.glob(f".model.onnx.{pid}.*.tmp"))


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=["SIGTERM", "SIGHUP", "SIGKILL"]
)
def test_a_killed_compile_leaves_the_previous_file_intact(tmp_path: Path, sig: signal.Signals) -> None:
    spec = _write(tmp_path / "big.yaml", BIG_SPEC)
    out = tmp_path / "model.onnx"
    dc.save_model(compile_spec(dc.load_spec(SEED_EXAMPLE)), out)
    previous = out.read_bytes()
    process = subprocess.Popen(
        _deconvc("compile", spec, "-o", out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    # the run first makes and removes an empty temporary (can the folder take files?); the real
    # one is being written once it has bytes
    while process.poll() is None and time.monotonic() < deadline:
        if any(_size(path) for path in _temporaries(tmp_path, process.pid)):
            break
        time.sleep(0.001)
    process.send_signal(sig)  # mid-write when the temporary was seen (else the run had ended)
    process.wait(timeout=60)
    after = out.read_bytes()
    assert after == previous or onnx.load_from_string(after).graph.initializer[0].dims == [1024, 512, 10, 10]
    if sig != signal.SIGKILL:
        assert process.returncode in (0, 128 + sig)
        assert not _temporaries(tmp_path, process.pid)  # the handler unwinds: removed at once
    dc.save_model(compile_spec(dc.load_spec(SEED_EXAMPLE)), out)  # the next save clears leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.yaml", "model.onnx"]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed or removed meanwhile
        return 0


def test_a_failed_compile_leaves_the_previous_file_intact(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous")
    bad = _write(tmp_path / "bad.yaml", "filters: 0\nkernel_size: 3\ninput_shape: [4, 4, 1]\n")
    result = subprocess.run(_deconvc("compile", bad, "-o", out), capture_output=True, text=True)
    assert result.returncode == 2 and out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "model.onnx"]


def test_output_is_byte_identical_across_processes(tmp_path: Path) -> None:
    spec = ROOT / "specs" / "dcgan_generator.yaml"
    outputs = []
    for run, hash_seed in enumerate(("1", "2")):
        out = tmp_path / f"m{run}.onnx"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(_deconvc("compile", spec, "-o", out), check=True, capture_output=True, env=env)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == compile_spec(dc.load_spec(spec)).SerializeToString()


def test_eight_parallel_compiles_into_one_directory_lose_nothing(tmp_path: Path) -> None:
    specs = []
    for i in range(8):
        specs.append(
            _write(
                tmp_path / f"s{i}.yaml",
                f"filters: {i + 1}\nkernel_size: 3\nstrides: 2\ninput_shape: [5, 5, 2]\nseed: {i}\n",
            )
        )

    def compile_one(i: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _deconvc("compile", specs[i], "-o", tmp_path / f"m{i}.onnx"), capture_output=True, text=True
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(compile_one, range(8)))
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]
    for i in range(8):
        written = (tmp_path / f"m{i}.onnx").read_bytes()
        assert written == compile_spec(dc.load_spec(specs[i])).SerializeToString()
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_deeply_nested_list_of_the_wrong_length_is_named_not_printed() -> None:
    """Found by the fuzzer: the message once printed the whole list (repr recursion past 5,000 levels)."""
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(dc.SpecError) as caught:
        dc.load_spec({"filters": 1, "kernel_size": [deep, 1, 1], "input_shape": [4, 4, 1]})
    assert "kernel_size: must be an integer or a list of 2 integers, got 3 values" in str(caught.value)
    assert len(str(caught.value)) < 300
