"""onnx model + numpy inputs → outputs, timings and node placement on onnxruntime.

The one module that makes onnxruntime sessions to run models (`precision` and `ort_format` also
import onnxruntime, for its quantizer, float16 converter, ORT-format writer and mobile checker).
Providers are `cpu`, `cuda` and `auto` (CUDA when usable, else CPU). `get_available_providers()`
lists what the wheel was built with, not what loads, so "usable" means: a session was created and
`session.get_providers()` lists CUDA.
Asking for `cuda` never runs silently on the CPU: it is an error that says why CUDA is missing.

A run can be given a time limit (`SessionConfig.timeout_s`): a watchdog thread sets onnxruntime's
`RunOptions.terminate` once a run has lasted that long, and the run ends with `RunTimeout`.
onnxruntime checks the flag before each node, a Loop's or Scan's body nodes included, so a Loop
with a trip count of 2**62 stops; one kernel that runs long is not cut short. A single run (and
a benchmark's warm-up) is made in a worker thread, so that Ctrl-C and SIGTERM, whose handlers
Python runs in the main thread, stop it the same way. External data of a model given as bytes is
read from the folder passed as `external_data_folder` (the model file's), where onnxruntime itself
also refuses paths that lead out of it. A result holds tensors of numbers only (`UnsupportedOutput`).
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from deconv_compiler.errors import DeconvError, RuntimeFailure, first_line, shown
from deconv_compiler.metadata import STRATEGIES, read_metadata

if TYPE_CHECKING:
    import onnx

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
CONV_ALGO_SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")


class ProviderUnavailable(DeconvError):
    """The requested execution provider cannot be used here (a usage problem: exit code 2)."""


class UnsupportedOutput(DeconvError):
    """A model's output is not a tensor of numbers (strings, a sequence, a map): exit code 2."""


class RunTimeout(DeconvError):
    """A run lasted longer than the time limit it was given and was stopped (exit code 2)."""


@dataclass(frozen=True)
class SessionConfig:
    """Session settings that matter for speed (onnxruntime's defaults unless said otherwise)."""

    provider: str = "cpu"  # cpu | cuda | auto
    threads: int = 0  # intra-op threads; 0 lets onnxruntime choose
    spinning: bool = True  # intra-op thread spinning: faster alone, much slower on a busy machine
    optimization: str = "all"  # graph optimization level: disable | basic | extended | all
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    use_tf32: bool = True  # CUDA: TF32 matmuls/convs on Ampere+; off for exact fp32 comparisons
    timeout_s: float | None = None  # seconds one run may last before it is stopped; None: no limit


@cache
def onnxruntime() -> ModuleType:
    """The onnxruntime module, or a clear error about how it is (not) installed."""
    installed = _onnxruntime_distributions()
    if len(installed) > 1:
        raise RuntimeFailure(
            f"both {' and '.join(installed)} are installed; they overwrite each other's files. "
            "Uninstall both, then install one: deconv-compiler[cpu] or deconv-compiler[gpu]"
        )
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        raise ProviderUnavailable(
            "onnxruntime is not installed: pip install 'deconv-compiler[cpu]' "
            "(or 'deconv-compiler[gpu]' for CUDA)"
        ) from None


def _onnxruntime_distributions() -> list[str]:
    names = {"onnxruntime", "onnxruntime-gpu"}
    found = set()
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in names:
            found.add(name)
    return sorted(found)


def cuda_unavailable_reason() -> str | None:
    """Why CUDA cannot run here, or None if a CUDA session can be created."""
    ort = onnxruntime()
    if PROVIDERS["cuda"] not in ort.get_available_providers():
        return (
            "this onnxruntime package has no CUDA execution provider (it is the CPU build): "
            "install deconv-compiler[gpu] in a fresh environment (not beside onnxruntime)"
        )
    if PROVIDERS["cuda"] in _probe_session_providers("cuda"):
        return None
    if not Path("/dev/nvidiactl").exists() and not Path("/dev/dxg").exists():
        return "no NVIDIA GPU is visible (no /dev/nvidiactl): onnxruntime-gpu is installed but has no device"
    missing = [lib for lib in ("libcudart.so.12", "libcublasLt.so.12", "libcudnn.so.9") if not _loadable(lib)]
    if missing:
        return (
            f"the CUDA 12 / cuDNN 9 libraries onnxruntime-gpu needs cannot be loaded ({', '.join(missing)}): "
            "install them (e.g. pip install nvidia-cudnn-cu12 nvidia-cublas-cu12 nvidia-cuda-runtime-cu12)"
        )
    return "onnxruntime could not create a CUDA session (see onnxruntime's log with verbose logging)"


def _loadable(library: str) -> bool:
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


@cache
def _probe_session_providers(provider: str) -> tuple[str, ...]:
    """Providers a real session on a one-node model gets when `provider` is asked for."""
    import onnx
    from onnx import helper

    ort = onnxruntime()
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    opset = [helper.make_opsetid("", 13)]
    model = helper.make_model(graph, opset_imports=opset, ir_version=7)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=[PROVIDERS[provider], PROVIDERS["cpu"]]
        )
    except Exception:  # onnxruntime raises untyped errors when a provider fails to load
        return ()
    return tuple(session.get_providers())


def resolve_provider(requested: str) -> str:
    """`auto` → `cuda` when usable, else `cpu`; `cuda` when not usable → ProviderUnavailable."""
    if requested not in ("cpu", "cuda", "auto"):
        raise ProviderUnavailable(f"unknown provider {requested!r}: choose cpu, cuda or auto")
    if requested == "cpu":
        return "cpu"
    reason = cuda_unavailable_reason()
    if reason is None:
        return "cuda"
    if requested == "auto":
        return "cpu"
    raise ProviderUnavailable(f"--provider cuda: {reason}")


@dataclass(frozen=True, eq=False)
class Session:
    """An onnxruntime session and the provider it really runs on."""

    inner: Any
    provider: str  # cpu | cuda
    config: SessionConfig

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inner.get_inputs()]


def make_session(
    model: onnx.ModelProto | bytes,
    config: SessionConfig = SessionConfig(),
    profile_dir: str | None = None,
    external_data_folder: Path | None = None,
) -> Session:
    """A session on the configured provider; never falls back to the CPU silently. External data
    is looked for in `external_data_folder` (without it, onnxruntime looks in the working folder)."""
    ort = onnxruntime()
    provider = resolve_provider(config.provider)
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.spinning else "0")
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[config.optimization]
    options.log_severity_level = 3
    if external_data_folder is not None:
        options.add_session_config_entry(
            "session.model_external_initializers_file_folder_path", str(external_data_folder)
        )
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(profile_dir, "profile")
    providers: list[Any] = [PROVIDERS["cpu"]]
    if provider == "cuda":
        cuda_options = {
            "cudnn_conv_algo_search": config.cudnn_conv_algo_search,
            "use_tf32": "1" if config.use_tf32 else "0",
        }
        providers = [(PROVIDERS["cuda"], cuda_options), PROVIDERS["cpu"]]
    data = model if isinstance(model, bytes) else model.SerializeToString()
    try:
        inner = ort.InferenceSession(data, options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise RuntimeFailure(_failure_message(exc, "cannot load the model")) from exc
    if PROVIDERS[provider] not in inner.get_providers():
        raise ProviderUnavailable(
            f"the {provider} provider did not load (session got {inner.get_providers()})"
        )
    return Session(inner=inner, provider=provider, config=config)


@dataclass(frozen=True, eq=False)
class RunResult:
    outputs: dict[str, np.ndarray]
    provider: str
    seconds: float  # the run alone, after the session was made
    cpu_nodes: tuple[str, ...] = ()  # op_type/name of nodes onnxruntime placed on the CPU (CUDA runs)


def run_model(
    model: onnx.ModelProto | bytes,
    inputs: Mapping[str, np.ndarray] | np.ndarray,
    config: SessionConfig = SessionConfig(),
    external_data_folder: Path | None = None,
) -> RunResult:
    """Run once. A bare array feeds the model's single input. On CUDA, the nodes onnxruntime
    placed on the CPU are reported (it sends e.g. ConvTranspose with asymmetric pads there)."""
    with tempfile.TemporaryDirectory() as profile_dir:
        want_placement = resolve_provider(config.provider) == "cuda"
        session = make_session(model, config, profile_dir if want_placement else None, external_data_folder)
        feeds = {session.input_names[0]: inputs} if isinstance(inputs, np.ndarray) else dict(inputs)
        started = time.perf_counter()
        with _deadline(config.timeout_s) as bounded:
            values = bounded(lambda options: session.inner.run(None, feeds, options), interruptible=True)
        seconds = time.perf_counter() - started
        cpu_nodes = _cpu_nodes(session.inner.end_profiling()) if want_placement else ()
    names = [o.name for o in session.inner.get_outputs()]
    outputs = dict(zip(names, values, strict=True))
    for name, value in outputs.items():
        _require_numbers(name, value)
    return RunResult(outputs, session.provider, seconds, cpu_nodes)


def run_feeds(
    model: onnx.ModelProto | bytes,
    feeds: Sequence[Mapping[str, np.ndarray]],
    config: SessionConfig = SessionConfig(),
) -> list[dict[str, np.ndarray]]:
    """Every output of one session, for each feed in turn (one session for them all)."""
    session = make_session(model, config)
    names = [o.name for o in session.inner.get_outputs()]
    results = []
    for feed in feeds:
        try:
            values = session.inner.run(None, dict(feed))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise RuntimeFailure(_failure_message(exc, "failed to run the model")) from exc
        results.append({name: np.asarray(v) for name, v in zip(names, values, strict=True)})
    return results


def _require_numbers(name: str, value: Any) -> None:
    """A foreign model's output may be a sequence, a map, an absent optional or strings: a result
    holds tensors of numbers only (what callers compute statistics of and save)."""
    if isinstance(value, np.ndarray) and value.dtype.kind not in "OUS":  # strings come as objects
        return
    what = "strings" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
    raise UnsupportedOutput(
        f"the model's output {shown(name)} holds {what}; only tensors of numbers are shown"
    )


def node_placement(profile_path: str) -> list[tuple[str, str, str]]:
    """(node name, op type, provider) of every node an onnxruntime profile saw run."""
    events = json.loads(Path(profile_path).read_text())
    placed = []
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            args = event.get("args", {})
            placed.append(
                (event["name"][: -len("_kernel_time")], args.get("op_name", "?"), args.get("provider", "?"))
            )
    return placed


def _cpu_nodes(profile_path: str) -> tuple[str, ...]:
    seen = dict.fromkeys(
        f"{op}:{name}"
        for name, op, provider in node_placement(profile_path)
        if provider == PROVIDERS["cpu"] and not op.startswith("Memcpy")
    )
    return tuple(seen)


@contextmanager
def _deadline(seconds: float | None) -> Iterator[Callable[..., Any]]:
    """A function that makes one run (given the RunOptions to pass to onnxruntime), stopped by a
    watchdog thread once it has lasted `seconds` (`RunTimeout`); any other failure of the run is a
    `RuntimeFailure`. One watchdog serves every run of the block, and it costs a run only a lock
    and a notify, so timed benchmark runs are not skewed; without a limit, no thread at all.
    `interruptible=True` runs the call in a worker thread (see `_interruptible`)."""
    options = onnxruntime().RunOptions()
    options.log_severity_level = 4  # the stop is reported once, by us, not as onnxruntime's error log
    state = threading.Condition()
    started: list[float] = []  # the monotonic start of the run in progress, if any
    stopped, closing = threading.Event(), threading.Event()

    def watch() -> None:
        assert seconds is not None
        with state:
            while not closing.is_set():
                if not started:
                    state.wait()
                    continue
                remaining = started[0] + seconds - time.monotonic()
                if remaining > 0:
                    state.wait(remaining)
                    continue
                stopped.set()
                options.terminate = True  # onnxruntime checks it before each node
                state.wait()

    def bounded(call: Callable[[Any], Any], interruptible: bool = False) -> Any:
        if stopped.is_set():
            raise RunTimeout(_timeout_message(seconds))
        if seconds is not None:
            with state:
                started[:] = [time.monotonic()]
                state.notify()
        try:
            return _interruptible(call, options) if interruptible else call(options)
        except Exception as exc:
            if stopped.is_set():
                raise RunTimeout(_timeout_message(seconds)) from None
            raise RuntimeFailure(_failure_message(exc, "failed to run the model")) from exc
        finally:
            if seconds is not None:
                with state:
                    started.clear()

    watchdog = None
    if seconds is not None:
        watchdog = threading.Thread(target=watch, name="deconvc-run-deadline", daemon=True)
        watchdog.start()
    try:
        yield bounded
    finally:
        if watchdog is not None:
            with state:
                closing.set()
                state.notify()
            watchdog.join()


def _interruptible(call: Callable[[Any], Any], options: Any) -> Any:
    """`call(options)` in a worker thread while the main thread waits in short joins: Python runs
    signal handlers in the main thread only, between bytecodes, so a run made there would hold off
    Ctrl-C and SIGTERM until it ends (never, for an endless Loop). Their exception (KeyboardInterrupt,
    SystemExit) stops the run through `terminate` and goes on once the worker is done."""
    outcome: list[tuple[bool, Any]] = []

    def work() -> None:
        try:
            outcome.append((True, call(options)))
        except BaseException as exc:  # handed to the main thread as it is
            outcome.append((False, exc))

    worker = threading.Thread(target=work, name="deconvc-run", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except BaseException:
        options.terminate = True  # onnxruntime checks it before each node
        worker.join()
        raise
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    return value


def _timeout_message(seconds: float | None) -> str:
    return (
        f"the model ran for longer than the time limit ({seconds:g} s, --timeout) and was stopped "
        "(a Loop or Scan with a huge trip count?)"
    )


def _failure_message(exc: Exception, what: str) -> str:
    text = first_line(exc)
    if "NOT_IMPLEMENTED" in text and "ConvTranspose" in text:
        return (
            f"onnxruntime {what}: {text}. Its CPU provider has ConvTranspose kernels for float32 "
            "(and float16, through casts) only: run a float64 model with --provider cuda, "
            "or compile it with dtype float32"
        )
    return f"onnxruntime {what}: {text}"


# --- benchmarking ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchResult:
    provider: str
    input_shape: tuple[int, ...]
    iterations: int
    latencies_ms: tuple[float, ...] = field(repr=False)
    conv_transpose_flops: int
    threads: int
    cpu_nodes: tuple[str, ...]

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))

    @property
    def throughput(self) -> float:
        """Samples (batch items) per second at the median latency."""
        return self.input_shape[0] / (self.percentile(50) / 1000.0)

    @property
    def gflops(self) -> float:
        """Transposed-convolution GFLOP/s at the median latency (2 FLOPs per multiply-add)."""
        return self.conv_transpose_flops / (self.percentile(50) / 1000.0) / 1e9

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "input_shape": list(self.input_shape),
            "iterations": self.iterations,
            "threads": self.threads,
            "latency_ms": {f"p{q}": round(self.percentile(q), 4) for q in (50, 90, 99)}
            | {"min": round(min(self.latencies_ms), 4), "mean": round(float(np.mean(self.latencies_ms)), 4)},
            "throughput_per_s": round(self.throughput, 2),
            "conv_transpose_flops": self.conv_transpose_flops,
            "conv_transpose_gflops_per_s": round(self.gflops, 3),
            "cpu_nodes": list(self.cpu_nodes),
        }


def conv_transpose_flops(
    model: onnx.ModelProto, input_shape: tuple[int, ...], input_name: str | None = None
) -> int:
    """FLOPs of the transposed convolutions for one run: 2 * N * C_in * prod(in spatial) * F * prod(k)
    per ConvTranspose (or the Conv/MatMul nodes of another strategy), with the input `input_name`
    (default: the first) of `input_shape`. 0 where shape inference cannot tell (a foreign model)."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    declared = [v for v in fixed.graph.input if input_name in (None, v.name)][:1]
    dims = declared[0].type.tensor_type.shape.dim if declared else []
    if len(dims) != len(input_shape):
        return 0
    for dim, size in zip(dims, input_shape, strict=True):
        dim.Clear()
        dim.dim_value = size
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        return 0  # a foreign model onnx cannot reason about: nothing to count, not a failure
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (*inferred.graph.value_info, *inferred.graph.input)
    }
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    # Our models name the transposed-conv layers in their metadata; their strategies' Conv and
    # MatMul nodes do the same multiply-adds as the ConvTranspose they replace.
    ours = read_metadata({p.key: p.value for p in model.metadata_props}, parsed=(STRATEGIES,))
    strategies = ours.get(STRATEGIES)
    layers = tuple(f"{name}/" for name in strategies) if isinstance(strategies, dict) else ()
    total = 0
    for node in model.graph.node:
        if not node.input:
            continue
        x_shape, w_shape = (
            shapes.get(node.input[0]),
            weights.get(node.input[1]) if len(node.input) > 1 else None,
        )
        if not x_shape or not w_shape or 0 in x_shape:
            continue
        if node.op_type == "ConvTranspose":
            total += 2 * math.prod(x_shape) * math.prod(w_shape[1:])
        elif node.op_type == "Conv" and node.name.startswith(layers):
            y_shape = shapes.get(node.output[0])
            total += 2 * math.prod(y_shape) * math.prod(w_shape[1:]) if y_shape else 0
        elif node.op_type == "MatMul" and node.name.startswith(layers):
            total += 2 * math.prod(x_shape[:-1]) * math.prod(w_shape)
    return total


def benchmark(
    model: onnx.ModelProto,
    x: np.ndarray,
    config: SessionConfig,
    warmup: int,
    iterations: int,
    on_iteration: Callable[[], None] | None = None,
    external_data_folder: Path | None = None,
) -> BenchResult:
    """Time `iterations` runs after `warmup`, with I/O binding so that on CUDA the input stays on
    the device and host copies are not timed (on the CPU, binding costs nothing). The time limit,
    if any, applies to each run."""
    ort = onnxruntime()
    with tempfile.TemporaryDirectory() as profile_dir:
        # Profiled only to find CUDA runs' CPU nodes: a profiling session that fails to load also
        # has onnxruntime log "Could not write a profile" on the terminal.
        want_placement = resolve_provider(config.provider) == "cuda"
        session = make_session(model, config, profile_dir if want_placement else None, external_data_folder)
        device = "cuda" if session.provider == "cuda" else "cpu"
        try:
            binding = session.inner.io_binding()
            value = ort.OrtValue.ortvalue_from_numpy(x, device, 0)
            binding.bind_ortvalue_input(session.input_names[0], value)
            for output in session.inner.get_outputs():
                binding.bind_output(output.name, device, 0)
        except Exception as exc:  # e.g. an input type onnxruntime cannot bind
            raise RuntimeFailure(_failure_message(exc, "cannot bind the model's input")) from exc

        def run_bound(options: Any) -> None:
            session.inner.run_with_iobinding(binding, options)
            binding.synchronize_outputs()

        with _deadline(config.timeout_s) as bounded:
            for _ in range(max(warmup, 1)):  # the first run also writes the placement profile
                bounded(run_bound, interruptible=True)  # the timed runs below are made directly
            placement = session.inner.end_profiling() if want_placement else ""
            latencies = []
            for _ in range(iterations):
                started = time.perf_counter()
                bounded(run_bound)
                latencies.append((time.perf_counter() - started) * 1000.0)
                if on_iteration is not None:
                    on_iteration()
        cpu_nodes = _cpu_nodes(placement) if want_placement else ()
    return BenchResult(
        provider=session.provider,
        input_shape=tuple(x.shape),
        iterations=iterations,
        latencies_ms=tuple(latencies),
        conv_transpose_flops=conv_transpose_flops(model, tuple(x.shape), session.input_names[0]),
        threads=config.threads,
        cpu_nodes=cpu_nodes,
    )


def time_interleaved(
    models: Mapping[str, onnx.ModelProto],
    inputs: Mapping[str, np.ndarray],
    config: SessionConfig,
    rounds: int,
    runs_per_round: int,
    warmup: int = 3,
) -> dict[str, list[float]]:
    """Seconds per run of each model, one value per round, the models taking turns within each
    round (in a rotating order): on a shared, noisy machine the ratios of values from the same
    round are what can be compared, not the values themselves."""
    sessions = {name: make_session(model, config) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    try:
        for session in sessions.values():
            for _ in range(warmup):
                session.inner.run(None, dict(inputs))
        names = list(sessions)
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                run = sessions[name].inner.run
                started = time.perf_counter()
                for _ in range(runs_per_round):
                    run(None, dict(inputs))
                times[name].append((time.perf_counter() - started) / runs_per_round)
    except Exception as exc:
        raise RuntimeFailure(_failure_message(exc, "failed to run the model")) from exc
    return times
