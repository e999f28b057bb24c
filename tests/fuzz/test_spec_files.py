"""Any spec *file* given to `deconvc validate` and `deconvc compile` → exit code 0 or 2, never 1 or
a traceback.

Files: arbitrary bytes, truncated and byte-flipped valid specs (generated and from `specs/`),
mutated specs written as YAML (block or flow) or JSON, empty and non-UTF-8 files, very long lines,
YAML tags, anchors and alias bombs, a directory, a missing file, zip/npz/HDF5/ONNX bytes; weight
files named relative to the spec's folder or absolute (refused: weights are read only inside it). A failure says why on stderr; `compile`
writes its output exactly when it succeeds, accepts only what `validate` accepts, and leaves no
file behind when it fails. The CLI runs in this process (click's runner), each example under the
time and memory limits of `limits`.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import deconv_compiler as dc
from tests.fuzz.checks import assert_clean_exit, invoke
from tests.fuzz.limits import FILE_EXAMPLES, Outcomes, memory_limit, time_limit
from tests.fuzz.spec_strategies import EXAMPLE_SPEC_FILES, Case, cases
from tests.onnx_run import compile_spec

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, kernel=np.ones((2, 1, 1)), bias=np.zeros(1))
    return buffer.getvalue()


def _onnx_bytes() -> bytes:
    spec = dc.load_spec({"type": "Conv1DTranspose", "filters": 1, "kernel_size": 2, "input_shape": [3, 1]})
    return compile_spec(spec).SerializeToString()


@dataclass(frozen=True)
class FileCase:
    """What the spec file holds: `content` bytes, or `case` serialized as `fmt`, or a directory."""

    kind: str
    content: bytes = b""
    case: Case | None = None
    fmt: str = "yaml"
    relative_weights: bool = False  # weight files named relative to the spec's folder

    def write(self, directory: Path) -> Path:
        target = directory / ("spec.json" if self.fmt.startswith("json") else "spec.yaml")
        if self.kind == "directory":
            target = directory / "spec_dir"
            target.mkdir()
            return target
        if self.kind == "missing":
            return directory / "no_such_spec.yaml"
        if self.case is not None:
            target.write_bytes(serialize(self.case.build(directory, self.relative_weights), self.fmt))
        else:
            target.write_bytes(self.content)
        return target


def plain(value: Any) -> Any:
    """What a YAML or JSON file can hold: tuples as lists, numpy values as Python's."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def serialize(mapping: Any, fmt: str) -> bytes:
    """A mapping as spec text (a lone surrogate is written as-is: not UTF-8, in YAML and in `json`)."""
    mapping = plain(mapping)
    if fmt == "json":
        return json.dumps(mapping, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if fmt == "json_ascii":
        return json.dumps(mapping, ensure_ascii=True, indent=1).encode()
    if fmt == "yaml_flow":  # "--- " first: text that starts with "{" is read as JSON
        text = "--- " + yaml.safe_dump(mapping, default_flow_style=True, allow_unicode=True, width=10**9)
    else:
        text = yaml.safe_dump(mapping, allow_unicode=True, sort_keys=False)
    return text.encode("utf-8", "surrogatepass")


def _text_of(case: Case, fmt: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return serialize(case.build(Path(folder)), fmt)


FORMATS = ("yaml", "yaml_flow", "json", "json_ascii")
YAML_ODDITIES = (
    b"",
    b"\n\n",
    b"   \t \n",
    b"\xef\xbb\xbf",
    b"\xef\xbb\xbf{}",
    b"---\n",
    b"...\n",
    b"null\n",
    b"~",
    b"[]",
    b"{}",
    b"- filters: 1\n",
    b"'a string'\n",
    b"3\n",
    b".nan\n",
    b"#just a comment\n",
    b"---\nfilters: 1\n---\nfilters: 2\n",
    b"filters: 1\nfilters: 2\nkernel_size: 1\ninput_shape: [2, 1]\ntype: Conv1DTranspose\n",
    b"? [a, b]\n: 1\n",
    b"{[1]: 2}\n",
    b"1: 2\n",
    b"null: 2\n",
    b"filters: !!python/object/apply:os.system ['true']\n",
    b"filters: !!python/name:os.system\n",
    b"!!python/object:collections.OrderedDict {}\n",
    b"filters: !!binary aGVsbG8=\nkernel_size: 1\ninput_shape: [2, 1]\n",
    b"filters: !!set {a, b}\n",
    b"filters: !!omap [{a: 1}]\n",
    b"filters: !!timestamp 2001-12-14\n",
    b"name: 2001-12-14\nfilters: 1\nkernel_size: 1\ninput_shape: [2, 1]\ntype: Conv1DTranspose\n",
    b"filters: !custom 1\n",
    b"filters: &a 1\nkernel_size: *a\ninput_shape: [2, *a]\ntype: Conv1DTranspose\n",
    b"base: &b {filters: 1}\n<<: *b\nkernel_size: 1\ninput_shape: [2, 1]\n",
    b"<<: {filters: 1, kernel_size: 1, input_shape: [2, 1], type: Conv1DTranspose}\n",
    b"kernel_size: &a [*a]\nfilters: 1\ninput_shape: [2, 1]\n",
    b"weights: &a [*a, *a]\nfilters: 1\nkernel_size: 1\ninput_shape: [2, 1]\ntype: Conv1DTranspose\n",
    b"name: &a {x: *a}\n",
    b"filters: *undefined\n",
    b"filters: 1\n\tkernel_size: 1\n",
    b"filters: 0x10\nkernel_size: 0o3\ninput_shape: [1_0, 0b1]\ntype: Conv1DTranspose\n",
    b"filters: 1e3\n",
    b"filters: 1e400\n",
    b"filters: -.inf\n",
    b"filters: 190:20:30\n",
    b"filters: yes\n",
    b"%YAML 1.1\n---\nfilters: 1\n",
    b"%TAG ! tag:example.com,2000:\n---\nfilters: !foo 1\n",
    b'{"filters": 1, "filters": 2}',
    b'{"filters": NaN, "kernel_size": Infinity, "input_shape": [-Infinity]}',
    b'{"a": 1}{"b": 2}',
    b'{"filters": 1,}',
    b"[1, 2, 3]",
    b'{"name": "\\ud800", "type": "Conv1DTranspose", "filters": 1, "kernel_size": 1, "input_shape": [2, 1]}',
    b'{"name": "\\u0000", "type": "Conv1DTranspose", "filters": 1, "kernel_size": 1, "input_shape": [2, 1]}',
    b'{"\\ud800": 1}',
    b'\t{"filters": 1}',
)


def _alias_bomb(levels: int, width: int = 9) -> bytes:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{refs}]")
    lines.append(
        f"weights: *a{levels - 1}\nfilters: 1\nkernel_size: 1\ninput_shape: [2, 1]\ntype: Conv1DTranspose"
    )
    return ("\n".join(lines) + "\n").encode()


def _long_lines() -> tuple[bytes, ...]:
    return (
        b"name: " + b"a" * 200_000 + b"\n",
        b"# " + b"x" * 200_000,
        b"filters: " + b"9" * 5_000 + b"\n",
        b'{"filters": ' + b"9" * 5_000 + b"}",
        b"filters: " + b"9" * 4_000 + b"\nkernel_size: 1\ninput_shape: [2, 1]\n",
        b"seed: 1" + b"0" * 400 + b"\nlayers: [{filters: 1, kernel_size: 1}]\ninput: {shape: [1, 2, 1, 1]}\n",
        b"kernel_initializer: {class_name: Constant, config: {value: 1"
        + b"0" * 400
        + b"}}\nfilters: 1\nkernel_size: 1\ninput_shape: [2, 2, 1]\n",
        b"filters: 1." + b"5" * 100_000 + b"\n",
        b"kernel_size: [" + b"1, " * 10_000 + b"1]\nfilters: 1\ninput_shape: [2, 2, 1]\n",
        b"[" * 20_000 + b"]" * 20_000,
        b'{"a": ' * 20_000 + b"1" + b"}" * 20_000,
        b"a: " + b"[" * 20_000,
        b"- " * 5_000 + b"1",
        b"input_shape: " + b"[" * 3_000 + b"1" + b"]" * 3_000 + b"\nfilters: 1\nkernel_size: 1\n",
        b"kernel_size: " + b"[" * 900 + b"1" + b"]" * 900 + b"\nfilters: 1\ninput_shape: [2, 2, 1]\n",
        b"filters: 1\nkernel_size: 1\ninput_shape: [2, 2, 1]\n" * 1_000,
        b"filters: 1\r\nkernel_size: 1\r\ninput_shape: [2, 2, 1]\r\n",
        b"filters: 1\rkernel_size: 1\rinput_shape: [2, 2, 1]\r",
        _alias_bomb(9),
        _alias_bomb(3),
    )


def _binary_blobs() -> tuple[bytes, ...]:
    return (
        _zip_bytes({"spec.yaml": b"filters: 1\n"}),
        _npz_bytes(),
        HDF5_MAGIC + b"\x00" * 512,
        HDF5_MAGIC,
        _onnx_bytes(),
        b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }"
        + b" " * 50
        + b"\n"
        + b"\x00" * 16,
        b"\x00" * 100,
        b"\xff\xfe" + "filters: 1\n".encode("utf-16-le"),
        "filters: 1\n".encode("utf-16"),
        "filters: 1\n".encode("utf-32"),
        "name: café\nfilters: 1\n".encode("latin-1"),
        b"\x80abc",
        b"filters: 1\xc0\xaf\n",
        b"\xed\xa0\x80",  # an encoded surrogate: not UTF-8
        b"PK\x03\x04" + b"\x00" * 30,
        b"\x1f\x8b\x08\x00" + b"\x00" * 20,  # gzip
        b"GIF89a" + b"\x00" * 20,
    )


@st.composite
def file_cases(draw: Any) -> FileCase:
    kind = draw(
        st.sampled_from(
            [
                "bytes",
                "prefix",
                "flips",
                "mutated",
                "mutated",
                "valid",
                "oddity",
                "long",
                "binary",
                "example_prefix",
                "example_flips",
                "directory",
                "missing",
            ]
        )
    )
    if kind == "bytes":
        return FileCase(kind, draw(st.binary(max_size=300)))
    if kind == "oddity":
        return FileCase(kind, draw(st.sampled_from(YAML_ODDITIES)))
    if kind == "long":
        return FileCase(kind, draw(st.sampled_from(_LONG_LINES)))
    if kind == "binary":
        blob = draw(st.sampled_from(_BINARY_BLOBS))
        return FileCase(kind, blob[: draw(st.integers(0, len(blob)))] if draw(st.booleans()) else blob)
    if kind in ("directory", "missing"):
        return FileCase(kind)
    if kind in ("example_prefix", "example_flips"):
        text = draw(st.sampled_from(EXAMPLE_SPEC_FILES)).read_bytes()
    else:
        fmt = draw(st.sampled_from(FORMATS))
        case = draw(cases(for_files=True))
        if kind in ("mutated", "valid"):
            if kind == "valid":
                case = Case(case.base, ())
            return FileCase(kind, case=case, fmt=fmt, relative_weights=draw(st.booleans()))
        text = _text_of(Case(case.base, ()), fmt)
    if kind.endswith("prefix"):
        return FileCase(kind, text[: draw(st.integers(0, len(text)))])
    data = bytearray(text)
    for _ in range(draw(st.integers(1, 5))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return FileCase(kind, bytes(data))


_LONG_LINES = _long_lines()
_BINARY_BLOBS = _binary_blobs()


OUTCOMES = Outcomes("test_any_file_gives_exit_0_or_2")


@settings(max_examples=FILE_EXAMPLES)
@given(file_case=file_cases())
def test_any_file_gives_exit_0_or_2(file_case: FileCase) -> None:
    with (
        tempfile.TemporaryDirectory() as folder,
        time_limit("the example"),
        memory_limit(),
    ):
        directory = Path(folder)
        spec_file = file_case.write(directory)
        result = invoke(["validate", str(spec_file)])
        assert_clean_exit(result, "validate")
        valid = file_case.kind == "valid" and file_case.case is not None and file_case.case.base.valid
        if valid and file_case.relative_weights:
            assert result.exit_code == 0, f"a valid spec was refused: {result.stderr}"
        out = directory / "out" / "model.onnx"
        out.parent.mkdir()
        # a smaller weight limit than the default 4 GiB keeps each example within seconds
        compiled = invoke(["compile", str(spec_file), "-o", str(out), "--max-weight-size", "16MiB"])
        assert_clean_exit(compiled, "compile")
        if compiled.exit_code == 0:
            assert out.is_file(), "compile succeeded but wrote nothing"
            assert result.exit_code == 0, "compile accepted what validate refused"
        else:
            assert not out.exists(), "compile failed but wrote its output"
            assert sorted(p.name for p in out.parent.iterdir()) == [], "compile left files behind"
        OUTCOMES.record(
            f"{file_case.kind}: validate exit {result.exit_code}, compile exit {compiled.exit_code}"
        )
