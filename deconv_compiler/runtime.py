"""onnx model + numpy inputs → outputs, timings and node placement on onnxruntime.

The only module that imports onnxruntime. Providers are `cpu`, `cuda` and `auto` (CUDA when
usable, else CPU). `get_available_providers()` lists what the wheel was built with, not what
loads, so "usable" means: a session was created and `session.get_providers()` lists CUDA.
Asking for `cuda` never runs silently on the CPU: it is an error that says why CUDA is missing.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from deconv_compiler.errors import DeconvError, RuntimeFailure
from deconv_compiler.metadata import STRATEGIES, read_metadata

if TYPE_CHECKING:
    import onnx

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
CONV_ALGO_SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")


class ProviderUnavailable(DeconvError):
    """The requested execution provider cannot be used here (a usage problem: exit code 2)."""


@dataclass(frozen=True)
class SessionConfig:
    """Session settings that matter for speed (onnxruntime's defaults unless said otherwise)."""

    provider: str = "cpu"  # cpu | cuda | auto
    threads: int = 0  # intra-op threads; 0 lets onnxruntime choose
    spinning: bool = True  # intra-op thread spinning: faster alone, much slower on a busy machine
    optimization: str = "all"  # graph optimization level: disable | basic | extended | all
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    use_tf32: bool = True  # CUDA: TF32 matmuls/convs on Ampere+; off for exact fp32 comparisons


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
    model: onnx.ModelProto | bytes, config: SessionConfig = SessionConfig(), profile_dir: str | None = None
) -> Session:
    """A session on the configured provider; never falls back to the CPU silently."""
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
) -> RunResult:
    """Run once. A bare array feeds the model's single input. On CUDA, the nodes onnxruntime
    placed on the CPU are reported (it sends e.g. ConvTranspose with asymmetric pads there)."""
    with tempfile.TemporaryDirectory() as profile_dir:
        want_placement = resolve_provider(config.provider) == "cuda"
        session = make_session(model, config, profile_dir if want_placement else None)
        feeds = {session.input_names[0]: inputs} if isinstance(inputs, np.ndarray) else dict(inputs)
        started = time.perf_counter()
        try:
            values = session.inner.run(None, feeds)
        except Exception as exc:
            raise RuntimeFailure(_failure_message(exc, "failed to run the model")) from exc
        seconds = time.perf_counter() - started
        cpu_nodes = _cpu_nodes(session.inner.end_profiling()) if want_placement else ()
    names = [o.name for o in session.inner.get_outputs()]
    return RunResult(dict(zip(names, values, strict=True)), session.provider, seconds, cpu_nodes)


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


def _failure_message(exc: Exception, what: str) -> str:
    text = _first_line(exc)
    if "NOT_IMPLEMENTED" in text and "ConvTranspose" in text:
        return (
            f"onnxruntime {what}: {text}. Its CPU provider has ConvTranspose kernels for float32 "
            "(and float16, through casts) only: run a float64 model with --provider cuda, "
            "or compile it with dtype float32"
        )
    return f"onnxruntime {what}: {text}"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


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


def conv_transpose_flops(model: onnx.ModelProto, input_shape: tuple[int, ...]) -> int:
    """FLOPs of the transposed convolutions for one run: 2 * N * C_in * prod(in spatial) * F * prod(k)
    per ConvTranspose (or the Conv/MatMul nodes of another strategy)."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, input_shape, strict=True):
        dim.Clear()
        dim.dim_value = size
    inferred = onnx.shape_inference.infer_shapes(fixed)
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
) -> BenchResult:
    """Time `iterations` runs after `warmup`, with I/O binding so that on CUDA the input stays on
    the device and host copies are not timed (on the CPU, binding costs nothing)."""
    ort = onnxruntime()
    with tempfile.TemporaryDirectory() as profile_dir:
        session = make_session(model, config, profile_dir)
        device = "cuda" if session.provider == "cuda" else "cpu"
        binding = session.inner.io_binding()
        binding.bind_ortvalue_input(session.input_names[0], ort.OrtValue.ortvalue_from_numpy(x, device, 0))
        for output in session.inner.get_outputs():
            binding.bind_output(output.name, device, 0)
        try:
            for _ in range(max(warmup, 1)):  # the first run also writes the placement profile
                session.inner.run_with_iobinding(binding)
            placement = session.inner.end_profiling()
            latencies = []
            for _ in range(iterations):
                started = time.perf_counter()
                session.inner.run_with_iobinding(binding)
                binding.synchronize_outputs()
                latencies.append((time.perf_counter() - started) * 1000.0)
                if on_iteration is not None:
                    on_iteration()
        except Exception as exc:
            raise RuntimeFailure(_failure_message(exc, "failed to run the model")) from exc
        cpu_nodes = _cpu_nodes(placement) if session.provider == "cuda" else ()
    return BenchResult(
        provider=session.provider,
        input_shape=tuple(x.shape),
        iterations=iterations,
        latencies_ms=tuple(latencies),
        conv_transpose_flops=conv_transpose_flops(model, tuple(x.shape)),
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
