"""`deconvc`: a thin click layer over the library. Domain errors become exit codes here only:
2 for a bad spec, file or usage, 1 for a failure inside onnxruntime."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
import numpy as np
import onnx

import deconv_compiler
from deconv_compiler.errors import DeconvError, RuntimeFailure, SpecError
from deconv_compiler.plan import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from deconv_compiler.weights import pickle_refusal

EXIT_RUNTIME = 1
EXIT_INPUT = 2


def _fail(message: str, code: int = EXIT_INPUT) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _reported_errors(writes: bool = True) -> Iterator[None]:
    """Print domain errors as one line per problem and exit with their code; no traceback."""
    try:
        yield
    except SpecError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        count = len(exc.problems)
        if count > 1:
            click.echo(f"error: {count} problems found{'; nothing was written' if writes else ''}", err=True)
        sys.exit(EXIT_INPUT)
    except RuntimeFailure as exc:
        _fail(str(exc), EXIT_RUNTIME)
    except DeconvError as exc:
        _fail(str(exc))


opset_option = click.option(
    "--opset",
    type=click.IntRange(MIN_OPSET, MAX_OPSET),
    default=DEFAULT_OPSET,
    show_default=True,
    help="Target ONNX opset (default domain).",
)
seed_option = click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=None,
    help="Seed for weights made by initializers (overrides the spec's).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(deconv_compiler.__version__, prog_name="deconvc")
def main() -> None:
    """Compile Keras transposed-convolution specs (YAML or JSON) to ONNX for onnxruntime."""


@main.command()
@click.argument("spec", type=click.Path(path_type=Path))
def validate(spec: Path) -> None:
    """Check SPEC without building anything; list every problem found."""
    with _reported_errors(writes=False):
        model_spec = deconv_compiler.load_spec(spec)
    click.echo(f"{spec}: ok: {_describe(model_spec)}")


@main.command(name="compile")
@click.argument("spec", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write the .onnx model.",
)
@opset_option
@seed_option
def compile_command(spec: Path, output: Path, opset: int, seed: int | None) -> None:
    """Compile SPEC to an ONNX model at OUTPUT (written only if everything succeeds)."""
    _check_output_path(output, spec)
    with _reported_errors():
        started = time.perf_counter()
        model_spec = deconv_compiler.load_spec(spec)
        model = deconv_compiler.compile_spec(model_spec, opset=opset, seed=seed)
        deconv_compiler.save_model(model, output)
    elapsed = time.perf_counter() - started
    click.echo(f"wrote {output} (opset {opset}, {_describe(model_spec)}) in {elapsed * 1000:.0f} ms")


@main.command()
@click.argument("model_or_spec", type=click.Path(path_type=Path))
@click.option("--input", "input_path", type=click.Path(path_type=Path), help="Input array (.npy).")
@click.option("--random", "random_input", is_flag=True, help="Feed a random input of the model's shape.")
@click.option("--shape", help="Sizes for dynamic dimensions with --random, e.g. 1,16,16,8.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of --random.")
@click.option("--output", type=click.Path(path_type=Path), help="Save the output array (.npy).")
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
def run(
    model_or_spec: Path,
    input_path: Path | None,
    random_input: bool,
    shape: str | None,
    seed: int,
    output: Path | None,
    provider: str,
) -> None:
    """Run a model (or a spec, compiled in memory) once on onnxruntime."""
    from deconv_compiler.runtime import run_model  # onnxruntime loads only for commands that run

    if (input_path is None) == (not random_input):
        _fail("give exactly one of --input FILE.npy or --random")
    if output is not None:
        _check_output_path(output, model_or_spec)
    with _reported_errors():
        model = _load_model_or_spec(model_or_spec)
        declared = model.graph.input[0]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(declared.type.tensor_type.elem_type)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in declared.type.tensor_type.shape.dim]
        if random_input:
            x = np.random.default_rng(seed).standard_normal(_concrete_shape(dims, shape)).astype(dtype)
        else:
            assert input_path is not None
            x = _read_input(input_path, dims, dtype)
        started = time.perf_counter()
        result = run_model(model, {declared.name: x}, provider=provider)
        elapsed = time.perf_counter() - started
    y = next(iter(result.outputs.values()))
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    click.echo(
        f"output {tuple(y.shape)} {y.dtype} on {result.providers[0]} in {elapsed * 1000:.1f} ms "
        f"(session + run); mean {float(np.mean(y)):.6g}, max |y| {peak:.6g}"
    )
    if output is not None:
        np.save(output, y)
        click.echo(f"wrote {output}")


@main.command()
def schema() -> None:
    """Print the JSON Schema of spec files."""
    click.echo(json.dumps(deconv_compiler.spec_json_schema(), indent=2, sort_keys=True))


def _describe(spec: deconv_compiler.ModelSpec) -> str:
    def fmt(shape: tuple[int | None, ...]) -> str:
        return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"

    count = len(spec.layers)
    layers = f"{count} layer{'s' if count != 1 else ''}"
    return f"{layers}, input {fmt(spec.input_shape)} -> output {fmt(spec.output_shape)}"


def _check_output_path(output: Path, spec: Path) -> None:
    if output.exists() and output.is_dir():
        _fail(f"output {output} is a directory")
    if not output.parent.exists() and str(output.parent) not in ("", "."):
        _fail(f"output directory {output.parent} does not exist")
    if output.exists() and spec.exists() and output.resolve() == spec.resolve():
        _fail(f"output {output} is the spec file itself")


def _load_model_or_spec(path: Path) -> onnx.ModelProto:
    try:
        head = path.read_bytes()[:64]
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}")
    text = head.lstrip()
    if path.suffix != ".onnx" and (text[:1] in (b"{", b"[") or not _looks_binary(head)):
        return deconv_compiler.compile_spec(deconv_compiler.load_spec(path))
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others
        _fail(f"{path} is not a readable ONNX model: {exc}")


def _looks_binary(head: bytes) -> bool:
    return b"\x00" in head or any(b > 0x7F for b in head[:8])


def _concrete_shape(dims: list[int | None], given: str | None) -> tuple[int, ...]:
    if given is None:
        if None in dims:
            _fail(f"the model's input has dynamic dimensions {_dims_text(dims)}: give --shape")
        return tuple(d for d in dims if d is not None)
    try:
        sizes = tuple(int(part) for part in given.split(","))
    except ValueError:
        _fail(f"--shape must be comma-separated integers, got {given!r}")
    if len(sizes) != len(dims) or any(d is not None and d != s for d, s in zip(dims, sizes, strict=False)):
        _fail(f"--shape {given} does not fit the model's input {_dims_text(dims)}")
    if any(s <= 0 for s in sizes):
        _fail(f"--shape sizes must be > 0, got {given}")
    return sizes


def _read_input(path: Path, dims: list[int | None], dtype: Any) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        _fail(f"cannot read input {path}: {pickle_refusal(exc)}")
    if not isinstance(x, np.ndarray):
        x.close()
        _fail(f"input {path} must be a single .npy array (got an .npz archive)")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        _fail(f"input {path} holds {x.dtype} values; the model expects numbers ({np.dtype(dtype).name})")
    if x.ndim != len(dims) or any(d is not None and d != s for d, s in zip(dims, x.shape, strict=False)):
        _fail(f"input {path} has shape {x.shape}; the model expects {_dims_text(dims)}")
    return x.astype(dtype)


def _dims_text(dims: list[int | None]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in dims) + ")"
