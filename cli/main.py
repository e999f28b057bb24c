"""`deconvc`: a thin click layer over the library. Errors become exit codes here only, by whose
fault they are: 2 for a bad spec, file, input or usage; 1 for a failure inside onnxruntime, a
failed `check`, or a bug of ours ("internal error: ... please report"; the traceback with --debug).

Only the commands that build or run a model import onnx and onnxruntime: `--help`, `validate` and
`schema` start fast."""

from __future__ import annotations

import atexit
import functools
import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, TypeVar, cast

import click
import numpy as np
from deconv_compiler.cli.shape_options import interface_options, model_interface

import deconv_compiler
from deconv_compiler.errors import DeconvError, DeconvWarning, InvalidInput, RuntimeFailure, shown
from deconv_compiler.frontend import (
    KERAS_SUFFIXES,
    STDIN,
    data_kind,
    file_kind,
    is_stream,
    load_model,
    load_model_data,
)
from deconv_compiler.ir import Graph
from deconv_compiler.limits import MAX_INPUT_BYTES, MAX_WEIGHT_BYTES
from deconv_compiler.options import (
    DEFAULT_OPSET,
    DTYPE_CHOICES,
    MAX_OPSET,
    MIN_OPSET,
    TARGET_CHOICES,
    CompileOptions,
)
from deconv_compiler.output_file import atomic_output, check_output
from deconv_compiler.runtime import CONV_ALGO_SEARCHES, OPTIMIZATION_LEVELS, SessionConfig
from deconv_compiler.strategies import CHOICES

if TYPE_CHECKING:
    import onnx

    from deconv_compiler.inspection import RunInput
    from deconv_compiler.tuning import TuneCache

EXIT_RUNTIME = 1
EXIT_INTERNAL = 1
EXIT_INPUT = 2
MAX_RUN_TIMEOUT_S = 10**6  # about 11 days: a finite wait for the watchdog thread
F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = EXIT_INPUT) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _reported_errors(writes: bool = True, report: Reporter | None = None) -> Iterator[None]:
    """Print errors (one line per problem) and compile warnings (through `report`, which -q
    silences); exit with their code."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DeconvWarning)
            yield
        for warning in caught:
            if report is None:
                click.echo(f"warning: {warning.message}", err=True)
            else:
                report.warn(str(warning.message))
    except InvalidInput as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        for note in exc.notes:
            click.echo(note, err=True)
        count = len(exc.problems)
        found = f"{count} problem{'s' if count != 1 else ''} found"
        click.echo(f"error: {found}{'; nothing was written' if writes else ''}", err=True)
        sys.exit(EXIT_INPUT)
    except RuntimeFailure as exc:
        _fail(str(exc), EXIT_RUNTIME)
    except DeconvError as exc:
        _fail(str(exc))
    except Exception as exc:  # a bug of ours (InternalError or anything unexpected): not the input's fault
        if _debug():
            traceback.print_exc()
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not message.startswith("internal error: "):
            message = f"internal error: {type(exc).__name__}: {message}"
        click.echo(f"{message} (please report it, with the input; --debug shows the traceback)", err=True)
        sys.exit(EXIT_INTERNAL)


def _debug() -> bool:
    context = click.get_current_context(silent=True)
    return bool(context is not None and context.find_root().params.get("debug"))


class Reporter:
    """Where a command's messages go, by `output_options`: the result as text (`say`, plus
    `detail` with -v) or as one JSON object (`result`, with --json) on standard output; `note`
    and `warn` on standard error; -q keeps only errors (and a --json result, which was asked
    for). A command that writes its data to standard output (`-o -`) sets `data_on_stdout`:
    every message then goes to standard error."""

    def __init__(self, as_json: bool = False, quiet: bool = False, verbose: bool = False) -> None:
        self.as_json, self.quiet, self.verbose = as_json, quiet, verbose
        self.data_on_stdout = False
        self.warnings: list[str] = []

    def say(self, text: str) -> None:
        """The command's text result (not with --json or -q)."""
        if not self.quiet and not self.as_json:
            click.echo(text, err=self.data_on_stdout)

    def detail(self, text: str) -> None:
        """More of it, with -v (on standard error with --json, which keeps standard output JSON)."""
        if self.verbose:
            click.echo(text, err=self.data_on_stdout or self.as_json)

    def note(self, text: str) -> None:
        """A remark on standard error (not with -q)."""
        if not self.quiet:
            click.echo(text, err=True)

    def warn(self, text: str) -> None:
        """`warning: TEXT` on standard error (not with -q); a --json result lists it too."""
        self.warnings.append(text)
        if not self.quiet:
            click.echo(f"warning: {text}", err=True)

    def result(self, data: dict[str, Any]) -> None:
        """The result as one JSON object, with --json (any warnings under "warnings")."""
        if self.as_json:
            if self.warnings:
                data = {**data, "warnings": list(self.warnings)}
            click.echo(json.dumps(data, indent=2), err=self.data_on_stdout)

    def progress(self, total: int, label: str) -> _Progress:
        """A progress bar on standard error, shown once the work lasts over a second (never with
        -q or --json)."""
        return _Progress(total, quiet=self.quiet or self.as_json, label=label)


def output_options(func: F) -> F:
    """--json, -q/--quiet and -v/--verbose, handed to the command as one `report: Reporter`."""

    @functools.wraps(func)
    def command(*args: Any, as_json: bool, quiet: bool, verbose: bool, **kwargs: Any) -> Any:
        if quiet and verbose:
            raise click.UsageError("give at most one of -q/--quiet and -v/--verbose")
        return func(*args, report=Reporter(as_json, quiet, verbose), **kwargs)

    options = [
        click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object."),
        click.option(
            "-q", "--quiet", is_flag=True, help="Print nothing but errors (no warnings, notes, progress)."
        ),
        click.option("-v", "--verbose", is_flag=True, help="Print more: per-layer details and timings."),
    ]
    wrapped: Any = command
    for option in reversed(options):
        wrapped = option(wrapped)
    return cast(F, wrapped)


def _shown_path(path: Path) -> str:
    return "<stdin>" if str(path) == STDIN else str(path)


def _files(*paths: Path | None) -> list[Path]:
    """The named files among `paths` (not `-`): what an output may not replace."""
    return [path for path in paths if path is not None and str(path) != STDIN]


def _reads_stream(path: Path, weights: Path | None = None, suffixes: tuple[str, ...] = ()) -> bool:
    """`-`, or a pipe or FIFO not named as a Keras model (nor as one of `suffixes`): read once,
    told by its bytes. A Keras model (or a config with --weights) is read from regular files
    only, which refuses a FIFO without waiting on it."""
    if str(path) == STDIN:
        if weights is not None:
            _fail("--weights goes with a Keras config file; standard input (-) takes only a spec")
        return True
    return weights is None and path.suffix.lower() not in (*KERAS_SUFFIXES, *suffixes) and is_stream(path)


def _read_stream(path: Path) -> bytes:
    """All of standard input (`-`) or of a pipe, read once."""
    try:
        if str(path) == STDIN:
            return sys.stdin.buffer.read()
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        _fail(f"cannot read {_shown_path(path)}: {exc.strerror or exc}")


def _load(
    spec: Path,
    weights: Path | None,
    max_weight_size: int = MAX_WEIGHT_BYTES,
    weights_root: Path | None = None,
) -> Graph:
    """`load_model`, or `load_model_data` for standard input or a pipe (a spec only; its
    weights relative to --weights-root, else the current directory)."""
    if _reads_stream(spec, weights):
        return load_model_data(_read_stream(spec), _shown_path(spec), max_weight_size, weights_root)
    return load_model(spec, weights, max_weight_size, weights_root=weights_root)


def _onnx_from_bytes(data: bytes, external_data_needed: bool) -> onnx.ModelProto:
    """An ONNX model read from standard input, with `load_onnx`'s checks (through a private
    temporary file, which messages name as <stdin>). It has no folder, so no external data."""
    from deconv_compiler.inspection import load_onnx

    with tempfile.TemporaryDirectory(prefix="deconvc-") as folder:
        path = Path(folder) / "stdin.onnx"
        path.write_bytes(data)
        try:
            return load_onnx(path, external_data_needed)
        except DeconvError as exc:
            _fail(str(exc).replace(str(path), "<stdin>").replace(folder, "<no folder>"))


def _binary_stdout(what: str) -> BinaryIO:
    """Standard output for binary data (`-o -`); refused on a terminal (exit 2)."""
    stream = sys.stdout.buffer
    if stream.isatty():
        _fail(f"not writing {what} to a terminal: redirect standard output (> FILE, | ...) or name a file")
    return stream


def _write_stdout(stream: BinaryIO, chunks: Sequence[bytes | memoryview]) -> int:
    """Write `chunks` to standard output; its size. A closed pipe (`| head -c`) is exit 2."""
    try:
        for chunk in chunks:
            stream.write(chunk)
        stream.flush()
    except OSError as exc:
        try:  # nothing more reaches a closed pipe; do not let the exit's flush fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        _fail(f"cannot write to standard output: {exc.strerror or exc}")
    return sum(memoryview(chunk).nbytes for chunk in chunks)


opset_option = click.option(
    "--opset",
    type=click.IntRange(MIN_OPSET, MAX_OPSET),
    default=DEFAULT_OPSET,
    show_default=True,
    help="Target ONNX opset (default domain).",
)
seed_option = click.option(
    "--seed",
    "weight_seed",
    type=click.IntRange(min=0),
    default=None,
    help="Seed for weights made by initializers (overrides the spec's).",
)


def session_options(func: F) -> F:
    """The onnxruntime settings that matter for speed, shared by run, check and bench."""
    options = [
        click.option(
            "--provider",
            type=click.Choice(["cpu", "cuda", "auto"]),
            default="cpu",
            show_default=True,
            help="Execution provider; auto takes CUDA when a CUDA session can be created.",
        ),
        click.option(
            "--threads",
            type=click.IntRange(min=0),
            default=0,
            help="Intra-op threads (0: onnxruntime decides).",
        ),
        click.option(
            "--spin/--no-spin",
            default=True,
            show_default=True,
            help="Intra-op thread spinning (faster alone, slower on a busy machine).",
        ),
        click.option(
            "--opt-level",
            type=click.Choice(OPTIMIZATION_LEVELS),
            default="all",
            show_default=True,
            help="Graph optimization level.",
        ),
        click.option(
            "--cudnn-conv-algo-search",
            type=click.Choice(CONV_ALGO_SEARCHES),
            default="EXHAUSTIVE",
            show_default=True,
            help="CUDA: how cuDNN picks convolution algorithms.",
        ),
        click.option(
            "--tf32/--no-tf32", default=True, show_default=True, help="CUDA: allow TF32 math for float32."
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, max=MAX_RUN_TIMEOUT_S, min_open=True),
            default=None,
            callback=_a_number_of_seconds,
            help="Stop a run of the model that lasts longer than this many seconds (exit code 2); "
            "checked before each node, so a Loop with a huge trip count stops too.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _a_number_of_seconds(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and math.isnan(value):  # FloatRange lets nan through: it compares false
        raise click.BadParameter("nan is not a number of seconds", ctx, param)
    return value


def _session_config(kwargs: dict[str, Any]) -> SessionConfig:
    return SessionConfig(
        provider=kwargs["provider"],
        threads=kwargs["threads"],
        spinning=kwargs["spin"],
        optimization=kwargs["opt_level"],
        cudnn_conv_algo_search=kwargs["cudnn_conv_algo_search"],
        use_tf32=kwargs["tf32"],
        timeout_s=kwargs["timeout"],
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(deconv_compiler.__version__, prog_name="deconvc")
@click.option("--debug", is_flag=True, help="Show the traceback of an internal error.")
def main(debug: bool) -> None:
    """Compile Keras transposed-convolution specs (YAML or JSON) and saved Keras models to ONNX."""
    # SIGTERM and SIGHUP (a closed terminal) unwind like Ctrl-C, so a half-written output's
    # temporary is removed at once
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, _unwind)


def _unwind(signum: int, frame: object) -> None:
    """Raise SystemExit so that `finally` blocks run; once they have, end the process without
    the rest of the interpreter's teardown: onnxruntime's threads, stopped mid-run, can abort the
    process from their C++ destructors ("terminate called without an active exception")."""
    atexit.register(_exit_now, 128 + signum)
    sys.exit(128 + signum)


def _exit_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class ByteSize(click.ParamType):
    """A size such as 4GiB, 512MiB, 100KiB or plain bytes."""

    name = "size"
    UNITS = {"gib": 2**30, "mib": 2**20, "kib": 2**10, "gb": 10**9, "mb": 10**6, "kb": 10**3, "b": 1, "": 1}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower().replace(" ", "")
        number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(number) :]
        try:
            size = float(number) * self.UNITS[unit]
        except (ValueError, KeyError):
            self.fail(f"{value!r} is not a size like 4GiB, 512MiB or 1000000", param, ctx)
        if not 0 < size < 2**63:
            self.fail(f"{value!r} must be a positive size", param, ctx)
        return int(size)


max_weight_option = click.option(
    "--max-weight-size",
    type=ByteSize(),
    default="1.5GiB",
    show_default=True,
    help="Refuse layers whose weights would be larger (checked before anything is allocated).",
)


weights_option = click.option(
    "--weights",
    type=click.Path(path_type=Path),
    default=None,
    help="Keras weights for a config JSON: a .weights.h5 for a model, an .npz (kernel, bias) for a layer.",
)


weights_root_option = click.option(
    "--weights-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The folder a spec's weights: files must lie inside, symbolic links followed; paths stay "
    "relative to the spec (default: the spec's own folder).",
)


dtype_option = click.option(
    "--dtype",
    type=click.Choice(DTYPE_CHOICES),
    default=None,
    help="dtype policy for the whole model (default: the model's own): float16 in and out, or "
    "mixed_float16 (float32 in and out around float16 compute).",
)


tune_cache_option = click.option(
    "--tune-cache",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A JSON file of tune's choices: layers it records are not timed again (the same strategies and "
    "metadata, byte for byte); the others are timed and added (the file is created if missing). A file "
    "that is no such cache is an error.",
)


target_option = click.option(
    "--target",
    type=click.Choice(TARGET_CHOICES),
    default="cpu",
    show_default=True,
    help="cuda: keep every ConvTranspose on the GPU in onnxruntime's CUDA provider (symmetric pads + "
    "Slice); mobile: the lowerings onnxruntime's NNAPI and CoreML providers take (no ConvTranspose "
    "where a rewrite applies); auto: cuda when a CUDA session can be created here, else cpu.",
)
strategy_option = click.option(
    "--strategy",
    type=click.Choice(CHOICES),
    default=None,
    help="How transposed convolutions are lowered, overriding the spec (default: the spec's, auto). "
    "auto: per layer by a measured rule; tune: time the candidates here and keep the fastest.",
)


SPEC_HELP = (
    " SPEC may be - (standard input) or a pipe (/dev/stdin, <(...)): a spec only, read once; its weights: "
    "paths are then relative to --weights-root, else the current directory."
)


@main.command(
    help="Check SPEC (or a saved Keras model) without building anything; list every problem found."
    + SPEC_HELP
)
@click.argument("spec", type=click.Path(path_type=Path))
@weights_option
@weights_root_option
@max_weight_option
@output_options
def validate(
    spec: Path, weights: Path | None, weights_root: Path | None, max_weight_size: int, report: Reporter
) -> None:
    started = time.perf_counter()
    with _reported_errors(writes=False, report=report):
        loaded = _load(spec, weights, max_weight_size, weights_root)
    elapsed = time.perf_counter() - started
    report.say(f"{_shown_path(spec)}: ok: {_describe(loaded)}")
    for node in loaded.nodes:
        report.detail(f"  {node.name}: {node.kind} -> {_dims_text(list(node.output.shape))} {node.policy}")
    report.detail(f"read in {elapsed * 1000:.0f} ms")
    report.result(
        {"file": _shown_path(spec), "ok": True, **_graph_json(loaded), "seconds": round(elapsed, 6)}
    )


@main.command(
    name="compile",
    help="Compile SPEC (a spec file, or a saved Keras model: .keras, .h5, config JSON + --weights) to an "
    "ONNX model at OUTPUT (written only if everything succeeds; - writes it to standard output, never "
    "to a terminal, and every message goes to standard error)." + SPEC_HELP,
)
@click.argument("spec", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write the .onnx model (- for standard output).",
)
@opset_option
@seed_option
@target_option
@strategy_option
@tune_cache_option
@interface_options
@dtype_option
@weights_option
@weights_root_option
@max_weight_option
@output_options
def compile_command(
    spec: Path,
    output: Path,
    opset: int,
    weight_seed: int | None,
    target: str,
    strategy: str | None,
    tune_cache: Path | None,
    dtype: str | None,
    weights: Path | None,
    weights_root: Path | None,
    max_weight_size: int,
    report: Reporter,
    **interface: Any,
) -> None:
    to_stdout = str(output) == STDIN
    stream = _binary_stdout("an ONNX model") if to_stdout else None  # before anything is read
    report.data_on_stdout = to_stdout
    inputs = _files(spec, weights)
    with _reported_errors(report=report):
        if not to_stdout:
            check_output(output, inputs)  # before reading them
        started = time.perf_counter()
        cache = open_tune_cache(tune_cache, inputs, None if to_stdout else output)
        loaded = _load(spec, weights, max_weight_size, weights_root)
        read = time.perf_counter()
        options = CompileOptions(
            opset, target, strategy, weight_seed, dtype, model_interface(interface)
        ).resolved()
        bar = TuneBar(report)
        try:
            if to_stdout:
                from deconv_compiler.compiler import compile_detached, file_bytes

                built = compile_detached(loaded, options, cache, bar)
                metadata = {prop.key: prop.value for prop in built.model.metadata_props}
                chunks, external = file_bytes(built), ()
            else:
                from deconv_compiler.compiler import compile_to_file

                written = compile_to_file(loaded, options, output, cache, bar)
                metadata, external = dict(written.metadata), written.files[1:]
        finally:
            bar.close()
        save_tune_cache(cache, tune_cache, [*inputs, *loaded.sources])
    if to_stdout:
        assert stream is not None
        size = _write_stdout(stream, chunks)
    else:
        size = output.stat().st_size
    elapsed = time.perf_counter() - started
    from deconv_compiler.metadata import STRATEGIES, TUNING, read_metadata

    parsed = read_metadata(metadata)
    strategies, tuning = parsed.get(STRATEGIES, {}), parsed.get(TUNING, {})
    shown_output = "<stdout>" if to_stdout else str(output)
    beside = "".join(f" + {path} (its weights: external data)" for path in external)
    report.say(
        f"wrote {shown_output}{beside} (opset {opset}, target {options.target}, {_describe(loaded)}) "
        f"in {elapsed * 1000:.0f} ms"
    )
    for name, chosen in strategies.items():
        timed = tuning.get(name, {}).get("time_vs_native") if isinstance(tuning, dict) else None
        ratios = f" (time vs native: {', '.join(f'{k} {v:g}' for k, v in timed.items())})" if timed else ""
        report.detail(f"  {name}: {chosen}{ratios}")
    if cache is not None:
        report.detail(f"tune cache {tune_cache}: {cache.hits} layer(s) reused, {cache.added} timed and added")
    report.detail(
        f"read in {(read - started) * 1000:.0f} ms, compiled and written in "
        f"{(time.perf_counter() - read) * 1000:.0f} ms; {size:,} bytes"
    )
    report.result(
        {
            "output": shown_output,
            "bytes": size,
            "external_data": [str(path) for path in external],
            "opset": opset,
            "target": options.target,
            "dtype": options.dtype,
            **_graph_json(loaded),
            "strategies": strategies,
            "tuning": tuning,
            "tune_cache": None
            if cache is None
            else {"file": str(tune_cache), "reused": cache.hits, "added": cache.added},
            "seconds": round(elapsed, 6),
        }
    )


def open_tune_cache(
    path: Path | None, inputs: Sequence[Path], output: Path | None = None
) -> TuneCache | None:
    """--tune-cache PATH read (empty when there is no such file; `TuneCacheError` when it is no
    tune cache), and checked to be writable, neither the output nor an input."""
    if path is None:
        return None
    if output is not None and path.resolve() == output.resolve():
        _fail(f"--tune-cache {path} is the output itself")
    from deconv_compiler.tuning import TuneCache

    cache = TuneCache.read(path)
    check_output(path, inputs)
    return cache


def save_tune_cache(cache: TuneCache | None, path: Path | None, inputs: Sequence[Path]) -> None:
    """Write the cache back (atomically) when layers were timed and added to it."""
    if cache is not None and path is not None and cache.added:  # else the file holds them all already
        cache.write(path, inputs)


class TuneBar:
    """`--strategy tune`'s progress, one step per layer timed (`tuning.TuneProgress`)."""

    def __init__(self, report: Reporter) -> None:
        self.report = report
        self.bar: _Progress | None = None

    def __call__(self, done: int, total: int, layer: str) -> None:
        if self.bar is None:
            self.bar = self.report.progress(total, "tuning")
        if done:
            self.bar()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@main.command(
    help="Run a model (or a spec, compiled in memory) once on onnxruntime. MODEL_OR_SPEC may be - "
    "(standard input): an ONNX model or a spec, told by its bytes."
)
@click.argument("model_or_spec", type=click.Path(path_type=Path))
@click.option(
    "--input", "input_path", type=click.Path(path_type=Path), help="Input array: .npy, or .npz by input name."
)
@click.option("--random", "random_input", is_flag=True, help="Feed a random input of the model's shape.")
@click.option("--shape", help="Sizes for dynamic dimensions with --random, e.g. 1,16,16,8.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of --random.")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    help="Save the output array in .npy format, under this name (- for standard output, never a terminal).",
)
@weights_root_option
@session_options
@output_options
def run(
    model_or_spec: Path,
    input_path: Path | None,
    random_input: bool,
    shape: str | None,
    seed: int,
    output: Path | None,
    weights_root: Path | None,
    report: Reporter,
    **session: Any,
) -> None:
    from deconv_compiler.runtime import run_model  # onnxruntime loads only for commands that run

    if (input_path is None) == (not random_input):
        _fail("give exactly one of --input FILE or --random")
    if str(model_or_spec) == STDIN and input_path is not None and str(input_path) == STDIN:
        _fail("the model and --input cannot both be standard input")
    to_stdout = output is not None and str(output) == STDIN
    stream = _binary_stdout("an .npy array") if to_stdout else None
    report.data_on_stdout = to_stdout
    named = _files(model_or_spec, input_path)
    if output is not None and not to_stdout:
        with _reported_errors(report=report):
            check_output(output, named)
    config = _session_config(session)
    with _reported_errors(writes=False, report=report):
        model, read = _model_for(model_or_spec, config, weights_root, report)
        inputs = _run_inputs(model, model_or_spec)
        if random_input:  # --shape sizes the first input; a model's further inputs need static shapes
            sizes = [
                _concrete_shape(list(d.dims), shape if i == 0 else None, None if i == 0 else d.name)
                for i, d in enumerate(inputs)
            ]
            feeds = _random_inputs(np.random.default_rng(seed), inputs, sizes)
        else:
            assert input_path is not None
            feeds = {i.name: _read_input(input_path, i.name, list(i.dims), i.dtype) for i in inputs}
        folder = Path.cwd() if str(model_or_spec) == STDIN else model_or_spec.parent
        result = run_model(model, feeds, config, folder)
    outputs = []
    for name, y in result.outputs.items():
        peak = float(np.max(np.abs(y))) if y.size else 0.0
        mean = float(np.mean(y)) if y.size else 0.0
        label = "output" if len(result.outputs) == 1 else f"output {name}"
        report.say(
            f"{label} {tuple(y.shape)} {y.dtype} on {result.provider} in {result.seconds * 1000:.2f} ms; "
            f"mean {mean:.6g}, max |y| {peak:.6g}"
        )
        outputs.append(
            {"name": name, "shape": list(y.shape), "dtype": str(y.dtype), "mean": mean, "max_abs": peak}
        )
    for name, x in feeds.items():
        report.detail(f"  input {name} {tuple(x.shape)} {x.dtype}")
    report.detail(f"  session: {config}")
    y = next(iter(result.outputs.values()))
    _report_cpu_nodes(result.provider, result.cpu_nodes, report)
    _note_float16_on_cpu(model, result.provider, report)
    if to_stdout:
        assert stream is not None
        import io

        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, y, allow_pickle=False)
        _write_stdout(stream, [buffer.getbuffer()])
    elif output is not None:
        with _reported_errors(report=report), atomic_output(output, [*named, *read]) as handle:
            np.lib.format.write_array(handle, y, allow_pickle=False)  # np.save would append .npy
        report.say(f"wrote {output}")
    report.result(
        {
            "model": _shown_path(model_or_spec),
            "provider": result.provider,
            "seconds": result.seconds,
            "outputs": outputs,
            "output_file": None if output is None else ("<stdout>" if to_stdout else str(output)),
            "cpu_nodes": list(result.cpu_nodes),
        }
    )


@main.command(
    help="Compile SPEC (or a saved Keras model), run it on random input and compare every output with "
    "the numpy reference of Keras' layers." + SPEC_HELP
)
@click.argument("spec", type=click.Path(path_type=Path))
@click.option(
    "--shape", help="Input shape to test with (sizes for dynamic dims); default: batch 2, spatial 5."
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the random input."
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=None,
    help="Largest accepted error relative to max(1, max|expected|) "
    "(default: 1e-5 float32, 5e-3 float32 with TF32, 1e-2 float16, 1e-9 float64).",
)
@opset_option
@dtype_option
@weights_option
@weights_root_option
@session_options
@output_options
def check(
    spec: Path,
    shape: str | None,
    seed: int,
    tolerance: float | None,
    opset: int,
    dtype: str | None,
    weights: Path | None,
    weights_root: Path | None,
    report: Reporter,
    **session: Any,
) -> None:
    from deconv_compiler.verification import check_graph

    config = _session_config(session)
    started = time.perf_counter()
    with _reported_errors(writes=False, report=report):
        graph = _load(spec, weights, weights_root=weights_root)
        given = None if shape is None else _concrete_shape(list(graph.inputs[0].shape), shape)
        options = CompileOptions(opset=opset, dtype=dtype)
        outcome = check_graph(
            graph, config, shape=given, input_seed=seed, options=options, tolerance_override=tolerance
        )
    elapsed = time.perf_counter() - started
    verdict = "PASS" if outcome.passed else "FAIL"
    line = (
        f"{verdict}: {_shown_path(spec)} on {outcome.provider}, input {outcome.input_shape} {outcome.dtype}: "
        f"max error {outcome.max_abs_error:.3g} = {outcome.relative_error:.3g} of scale {outcome.scale:.3g} "
        f"(tolerance {outcome.tolerance:g})"
    )
    if outcome.passed or report.as_json:
        report.say(line)
    else:  # a failed check is the command's error: shown with -q too
        click.echo(line, err=report.quiet)
    report.detail(f"  {_describe(graph)}; checked in {elapsed * 1000:.0f} ms")
    _report_cpu_nodes(outcome.provider, outcome.cpu_nodes, report)
    report.result(
        {
            "file": _shown_path(spec),
            "passed": outcome.passed,
            "provider": outcome.provider,
            "input_shape": list(outcome.input_shape),
            "dtype": str(outcome.dtype),
            "max_abs_error": outcome.max_abs_error,
            "relative_error": outcome.relative_error,
            "scale": outcome.scale,
            "tolerance": outcome.tolerance,
            "cpu_nodes": list(outcome.cpu_nodes),
            "seconds": round(elapsed, 6),
        }
    )
    if not outcome.passed:
        sys.exit(EXIT_RUNTIME)


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@output_options
def inspect(model: Path, report: Reporter) -> None:
    """Summarize an ONNX model: inputs, outputs, nodes and their attributes, metadata. MODEL may be
    - (standard input)."""
    from deconv_compiler.inspection import inspect_model, load_onnx, render_text, summary_to_json

    with _reported_errors(writes=False, report=report):
        if str(model) == STDIN:
            loaded = _onnx_from_bytes(_read_stream(model), external_data_needed=False)
        else:
            loaded = load_onnx(model)
        summary = inspect_model(loaded)
    report.result(summary_to_json(summary))
    if not report.as_json and not report.quiet:
        click.echo(render_text(summary), nl=False)


@main.command(
    help="Time a model (or a spec): latency percentiles, throughput, GFLOP/s of the transposed "
    "convolutions. MODEL_OR_SPEC may be - (standard input)."
)
@click.argument("model_or_spec", type=click.Path(path_type=Path))
@click.option("--batch", help="Batch sizes to time, comma-separated (default: the model's, or 1 if dynamic).")
@click.option(
    "--shape", help="Sizes for dynamic dimensions, e.g. 8,64,64,32 (--batch, if given, overrides the batch)."
)
@click.option(
    "--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Untimed runs first."
)
@click.option(
    "--iters", type=click.IntRange(min=1), default=100, show_default=True, help="Timed runs per batch size."
)
@weights_root_option
@session_options
@output_options
def bench(
    model_or_spec: Path,
    batch: str | None,
    shape: str | None,
    warmup: int,
    iters: int,
    weights_root: Path | None,
    report: Reporter,
    **session: Any,
) -> None:
    from deconv_compiler.runtime import benchmark

    config = _session_config(session)
    results = []
    folder = Path.cwd() if str(model_or_spec) == STDIN else model_or_spec.parent
    with _reported_errors(writes=False, report=report):
        model, _ = _model_for(model_or_spec, config, weights_root, report)
        declared = _bench_input(model, model_or_spec)
        dims = list(declared.dims)
        batches = _batch_sizes(batch, dims, shape)
        for size in batches:
            with_batch = [size, *dims[1:]]
            given = None if shape is None else ",".join([str(size), *shape.split(",")[1:]])
            sizes = _concrete_shape(with_batch, given)
            (x,) = _random_inputs(np.random.default_rng(0), [declared], [sizes]).values()
            progress = report.progress(iters, f"batch {size}")
            try:
                results.append(benchmark(model, x, config, warmup, iters, progress, folder))
            finally:
                progress.close()
    report.result({"model": _shown_path(model_or_spec), "results": [r.to_json() for r in results]})
    report.say(
        f"{_shown_path(model_or_spec)} on {results[0].provider}, threads {config.threads or 'auto'}, "
        f"{iters} runs after {warmup} warm-up"
    )
    report.say(
        f"{'input shape':>24}  {'p50 ms':>9}  {'p90 ms':>9}  {'p99 ms':>9}  {'items/s':>10}  {'GFLOP/s':>8}"
    )
    for r in results:
        report.say(
            f"{str(r.input_shape):>24}  {r.percentile(50):9.3f}  {r.percentile(90):9.3f}  "
            f"{r.percentile(99):9.3f}  {r.throughput:10.1f}  {r.gflops:8.2f}"
        )
    report.detail(f"  session: {config}")
    _report_cpu_nodes(results[0].provider, results[0].cpu_nodes, report)
    _note_float16_on_cpu(model, results[0].provider, report)


@main.command()
def schema() -> None:
    """Print the JSON Schema of spec files."""
    click.echo(json.dumps(deconv_compiler.spec_json_schema(), indent=2, sort_keys=True))


class _Progress:
    """A progress bar that appears only once a timing loop has run for more than a second."""

    def __init__(self, total: int, quiet: bool, label: str) -> None:
        self.total, self.quiet, self.label = total, quiet, label
        self.done = 0
        self.started = time.perf_counter()
        self.bar: Any = None

    def __call__(self) -> None:
        self.done += 1
        if self.bar is None and not self.quiet and time.perf_counter() - self.started > 1.0:
            self.bar = click.progressbar(length=self.total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
            self.bar.update(self.done)
        elif self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def _note_float16_on_cpu(model: onnx.ModelProto, provider: str, report: Reporter) -> None:
    """onnxruntime's CPU provider has no float16 ConvTranspose: it inserts Casts around the float32
    kernel (measured: no slower than a float32 model, and no faster)."""
    import onnx

    half = onnx.TensorProto.FLOAT16
    if provider == "cpu" and any(
        t.data_type == half and t.name.endswith("/kernel") for t in model.graph.initializer
    ):
        report.note(
            "note: the CPU provider runs float16 ConvTranspose in float32 through Casts it inserts "
            "(about the cost of a float32 model; use CUDA for native float16)"
        )


def _report_cpu_nodes(provider: str, cpu_nodes: tuple[str, ...], report: Reporter) -> None:
    if provider == "cuda" and cpu_nodes:
        report.note(f"note: onnxruntime ran {len(cpu_nodes)} node(s) on the CPU: {', '.join(cpu_nodes)}")
        if any(node.startswith("ConvTranspose:") for node in cpu_nodes):
            report.note("note: compile with --target cuda to keep transposed convolutions on the GPU")


def _describe(loaded: Graph) -> str:
    count = len(loaded.nodes)
    inputs, outputs = [v.shape for v in loaded.inputs], [v.shape for v in loaded.outputs]
    layers = f"{count} layer{'s' if count != 1 else ''}"
    shown_in = ", ".join(_dims_text(list(shape)) for shape in inputs)
    shown_out = ", ".join(_dims_text(list(shape)) for shape in outputs)
    return f"{layers}, input {shown_in} -> output {shown_out}"


def _graph_json(loaded: Graph) -> dict[str, Any]:
    """What `_describe` says, as JSON data."""
    return {
        "layers": [{"name": node.name, "kind": node.kind} for node in loaded.nodes],
        "inputs": [{"name": v.name, "shape": list(v.shape)} for v in loaded.inputs],
        "outputs": [{"name": v.name, "shape": list(v.shape)} for v in loaded.outputs],
    }


def _model_for(
    path: Path, config: SessionConfig, weights_root: Path | None, report: Reporter
) -> tuple[onnx.ModelProto, tuple[Path, ...]]:
    """An .onnx file as it is, or a spec or Keras model compiled for the provider that will run
    it (a CUDA run gets the CUDA-resident lowering); and the files read (a spec's weights too).
    Standard input (or a pipe) holds an ONNX model or a spec, told by its bytes."""
    from deconv_compiler.inspection import external_data_files, load_onnx

    if _reads_stream(path, None, (".onnx",)):
        data = _read_stream(path)
        if data_kind(data) == "onnx":
            return _onnx_from_bytes(data, external_data_needed=True), ()
        graph = load_model_data(data, _shown_path(path), MAX_WEIGHT_BYTES, weights_root)
        return _compiled_in_memory(graph, config, report), graph.sources
    kind = file_kind(path)
    if kind == "onnx":
        model = load_onnx(path, external_data_needed=True)
        return model, (path, *external_data_files(model, path))
    graph = load_model(path, None, MAX_WEIGHT_BYTES, kind, weights_root)
    return _compiled_in_memory(graph, config, report), graph.sources


def _compiled_in_memory(graph: Graph, config: SessionConfig, report: Reporter) -> onnx.ModelProto:
    from deconv_compiler.compiler import compile_model

    bar = TuneBar(report)  # a spec may ask for `strategy: tune`
    try:
        return compile_model(graph, CompileOptions(target=config.provider), tune_progress=bar)
    finally:
        bar.close()


def _run_inputs(model: onnx.ModelProto, path: Path) -> tuple[RunInput, ...]:
    from deconv_compiler.inspection import run_inputs

    return run_inputs(model, path)


def _bench_input(model: onnx.ModelProto, path: Path) -> RunInput:
    """The one input bench feeds: it times a model of one input with a batch axis."""
    inputs = _run_inputs(model, path)
    if len(inputs) != 1:
        names = f" ({', '.join(shown(i.name) for i in inputs[:8])}{', ...' if len(inputs) > 8 else ''})"
        _fail(
            f"{path}: the model has {len(inputs)} inputs{names if inputs else ''}; bench times models "
            "of one input (time others with `deconvc run --timeout ...`)"
        )
    if not inputs[0].dims:
        _fail(f"{path}: input {shown(inputs[0].name)} is a scalar; bench needs a batch axis")
    return inputs[0]


def _random_inputs(
    rng: np.random.Generator, inputs: Sequence[RunInput], sizes: Sequence[tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """Standard-normal values for each input, in order; refused before anything is allocated when
    they would take more than MAX_INPUT_BYTES together. Drawn in chunks (the same numbers as one
    draw), so no float64 copy of a whole input is ever made."""
    total = 0
    for declared, shape in zip(inputs, sizes, strict=True):
        total += math.prod(shape) * declared.dtype.itemsize
        if total > MAX_INPUT_BYTES:
            _fail(
                f"input {shown(declared.name)} of shape {_dims_text(list(shape))} {declared.dtype.name} "
                f"would make the random inputs take {total / 2**30:,.1f} GiB; "
                f"the limit is {MAX_INPUT_BYTES / 2**30:g} GiB"
            )
    feeds = {}
    for declared, shape in zip(inputs, sizes, strict=True):
        values = np.empty(shape, declared.dtype)
        flat = values.reshape(-1)
        for start in range(0, flat.size, _RANDOM_CHUNK):
            flat[start : start + _RANDOM_CHUNK] = rng.standard_normal(min(_RANDOM_CHUNK, flat.size - start))
        feeds[declared.name] = values
    return feeds


_RANDOM_CHUNK = 2**20


def _concrete_shape(dims: list[int | None], given: str | None, name: str | None = None) -> tuple[int, ...]:
    """The input's sizes: `dims`, with `given` (--shape) for the dynamic ones. `name`: an input
    after the first, which --shape does not size."""
    if given is None:
        if None in dims:
            if name is not None:
                _fail(
                    f"input {shown(name)} has dynamic dimensions {_dims_text(dims)}: --shape sizes only the "
                    "first input; give them all with --input FILE.npz"
                )
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


def _batch_sizes(batch: str | None, dims: list[int | None], shape: str | None = None) -> list[int]:
    if batch is None and shape is not None and dims[0] is None:
        batch = shape.split(",")[0].strip() or None  # --shape's batch, when --batch is not given
    if batch is None:
        return [dims[0] or 1]
    try:
        sizes = [int(part) for part in batch.split(",")]
    except ValueError:
        _fail(f"--batch must be comma-separated integers, got {batch!r}")
    if any(s <= 0 for s in sizes):
        _fail(f"--batch sizes must be > 0, got {batch}")
    if dims[0] is not None and any(s != dims[0] for s in sizes):
        _fail(f"the model's batch size is fixed at {dims[0]}; --batch {batch} does not fit")
    return sizes


def _read_input(path: Path, name: str, dims: list[int | None], dtype: Any) -> np.ndarray:
    """The model input `name` from `--input` (an .npy, or an .npz by input name), through
    `array_file`: a regular file, its header checked against the model's input before any data
    is read, then cast to the input's dtype (no copy when it already is)."""
    from deconv_compiler.array_file import ArrayFileError, open_array_file

    try:
        with open_array_file(path, str(path), MAX_INPUT_BYTES) as arrays:
            member = "" if arrays.kind == "npy" else name
            if member not in arrays.names:
                _fail(
                    f"input {path} has no array named {name!r} (the model's input); "
                    f"it has: {', '.join(arrays.names) or 'none'}"
                )
            header = arrays.header(member)
            shape = header.shape
            fits = len(shape) == len(dims) and all(d in (None, s) for d, s in zip(dims, shape, strict=True))
            if not fits:
                _fail(f"input {path} has shape {shape}; the model expects {_dims_text(dims)}")
            x = arrays.read(member, header)
    except ArrayFileError as exc:
        _fail(f"cannot read input {exc}")
    except MemoryError:
        _fail(f"cannot read input {path}: not enough memory")
    return x.astype(dtype, copy=False)


def _dims_text(dims: list[int | None]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in dims) + ")"


from deconv_compiler.cli.export import export  # noqa: E402  (it builds on the options above)

main.add_command(export)
