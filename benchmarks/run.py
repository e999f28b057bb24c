"""The benchmark suite: every lowering strategy of the compiler against the `native` graph (what
other exporters emit), per case and layout, on onnxruntime's CPU provider.

    python -m benchmarks.run --out benchmarks/report      # writes report.md and report.json

Method (the machines are shared and noisy): all implementations of a case live in one process
and take turns within each round (rotating order); a case's ratio is the median over rounds of
the per-round time ratio to native. 2 intra-op threads, spinning off, ORT_ENABLE_ALL, float32.
An in-run SGEMM (1024^3 MatMul on onnxruntime, same settings) gives the machine's ceiling.
PyTorch eager conv_transpose2d (NCHW and channels_last) is timed when torch is installed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's OpenMP threads must not spin either

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

import deconv_compiler as dc  # noqa: E402
from benchmarks.networks import NETWORKS, bench_network  # noqa: E402
from benchmarks.networks import markdown as network_markdown  # noqa: E402
from deconv_compiler import reference  # noqa: E402
from deconv_compiler.conv_transpose_plan import choose_strategy  # noqa: E402
from deconv_compiler.runtime import SessionConfig, onnxruntime, time_interleaved  # noqa: E402
from deconv_compiler.strategies import STRATEGIES  # noqa: E402

THREADS = 2
CONFIG = SessionConfig(provider="cpu", threads=THREADS, spinning=False, optimization="all")
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Case:
    name: str
    batch: int
    side: int
    c_in: int
    c_out: int
    kernel: int
    stride: int
    padding: str


CASES = [
    Case("A", 16, 8, 512, 256, 4, 2, "same"),
    Case("B", 4, 32, 256, 128, 2, 2, "valid"),
    Case("C", 8, 16, 128, 64, 3, 2, "same"),
    Case("D", 1, 64, 64, 32, 4, 2, "same"),
    Case("E", 32, 7, 64, 32, 3, 1, "same"),
    Case("F", 1, 128, 32, 3, 5, 2, "same"),
]
# A DCGAN-style generator: 4x4x512 -> 64x64x3 in four stride-2 layers.
CHAIN = [(256, "relu"), (128, "relu"), (64, "relu"), (3, "tanh")]
CHAIN_INPUT = (8, 4, 4, 512)


def layer_spec(case: Case, data_format: str, kernel: np.ndarray, bias: np.ndarray) -> dict[str, Any]:
    spatial = [case.side, case.side]
    shape = (
        [case.batch, *spatial, case.c_in]
        if data_format == "channels_last"
        else [case.batch, case.c_in, *spatial]
    )
    return {
        "type": "Conv2DTranspose", "filters": case.c_out, "kernel_size": case.kernel, "strides": case.stride,
        "padding": case.padding, "data_format": data_format, "batch_input_shape": shape, "weights": [kernel, bias],
    }  # fmt: skip


def flops(case: Case) -> int:
    return 2 * case.batch * case.side**2 * case.c_in * case.c_out * case.kernel**2


def sgemm_model(n: int = 1024) -> onnx.ModelProto:
    b = helper.make_tensor(
        "b", TensorProto.FLOAT, [n, n], np.random.default_rng(1).standard_normal(n * n).astype(np.float32)
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])], initializer=[b],
    )  # fmt: skip
    opset = helper.make_opsetid("", 17)
    return helper.make_model(graph, opset_imports=[opset], ir_version=8)


def torch_timers(case: Case, kernel: np.ndarray, bias: np.ndarray, x_nchw: np.ndarray) -> dict[str, Any]:
    """PyTorch eager conv_transpose2d, NCHW and channels_last, when torch is installed."""
    try:
        import torch
    except ImportError:
        return {}
    torch.set_num_threads(THREADS)
    weight = torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1))))  # (in, out, k, k)
    b = torch.from_numpy(bias)
    x = torch.from_numpy(x_nchw)
    total = case.kernel - case.stride if case.padding == "same" else 0
    pad = total // 2  # torch pads symmetrically: time the same work, crop not included

    def run(tensor: Any) -> Any:
        with torch.no_grad():
            return torch.nn.functional.conv_transpose2d(tensor, weight, b, stride=case.stride, padding=pad)

    return {
        "torch NCHW": (run, x),
        "torch channels_last": (run, x.contiguous(memory_format=torch.channels_last)),
    }


def time_case(
    models: dict[str, onnx.ModelProto], x: np.ndarray, extra: dict[str, Any], rounds: int, budget: float
) -> dict[str, list[float]]:
    """Per-round seconds per run for the ONNX models (interleaved), and torch callables in the same rounds."""
    names = list(models)
    # calibrate runs per round from native
    probe = time_interleaved({"native": models["native"]}, {"input": x}, CONFIG, rounds=1, runs_per_round=1)
    runs = max(1, min(200, int(budget / max(probe["native"][0], 1e-6))))
    times: dict[str, list[float]] = {name: [] for name in [*names, *extra]}
    for _ in range(rounds):
        onnx_times = time_interleaved(models, {"input": x}, CONFIG, rounds=1, runs_per_round=runs, warmup=1)
        for name in names:
            times[name].extend(onnx_times[name])
        for name, (fn, arg) in extra.items():
            fn(arg)
            started = time.perf_counter()
            for _ in range(runs):
                fn(arg)
            times[name].append((time.perf_counter() - started) / runs)
    return times


def paired_ratio(times: dict[str, list[float]], name: str, base: str = "native") -> float:
    return statistics.median(t / b for t, b in zip(times[name], times[base], strict=True))


def run_model_once(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    from deconv_compiler.runtime import run_model

    return next(iter(run_model(model, {"input": x}, CONFIG).outputs.values()))


def bench_layer(
    case: Case, data_format: str, rounds: int, budget: float, sgemm: dict[str, float]
) -> dict[str, Any]:
    rng = np.random.default_rng(ord(case.name))
    kernel = (
        rng.standard_normal((case.kernel, case.kernel, case.c_out, case.c_in))
        / math.sqrt(case.c_in * case.kernel)
    ).astype(np.float32)
    bias = rng.standard_normal(case.c_out).astype(np.float32)
    spec = dc.load_spec(layer_spec(case, data_format, kernel, bias))
    x = rng.standard_normal(spec.input_shape).astype(np.float32)  # type: ignore[arg-type]
    models: dict[str, onnx.ModelProto] = {}
    for strategy in STRATEGIES:
        try:
            models[strategy] = dc.compile_model(dc.spec_graph(spec), dc.CompileOptions(strategy=strategy))
        except dc.CompileError:
            continue
    auto_choice = choose_strategy(spec.layers[0], "auto", "cpu", "float32")
    models["auto"] = models[auto_choice]
    x_nchw = x if data_format == "channels_first" else np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))
    extra = torch_timers(case, kernel, bias, x_nchw) if data_format == "channels_first" else {}
    times = time_case({k: v for k, v in models.items() if k != "auto"}, x, extra, rounds, budget)
    times["auto"] = times[auto_choice]
    expected = reference.layer(
        x, kernel, bias, strides=(case.stride,) * 2, padding=case.padding, output_padding=None,
        dilation_rate=(1, 1), data_format=data_format,
    )  # fmt: skip
    scale = max(1.0, float(np.max(np.abs(expected))))
    rows = {}
    for name in times:
        seconds = statistics.median(times[name])
        error = None
        if name in models:
            error = float(np.max(np.abs(run_model_once(models[name], x) - expected))) / scale
        gflops = flops(case) / seconds / 1e9
        rows[name] = {
            "ms": round(seconds * 1e3, 3),
            "ratio_to_native": round(paired_ratio(times, name), 3),
            "gflops": round(gflops, 1),
            "pct_of_sgemm": round(100 * gflops / sgemm["gflops"], 1),
            "max_rel_error": error,
        }
    return {
        "case": case.name,
        "data_format": data_format,
        "auto_choice": auto_choice,
        "rows": rows,
        **case.__dict__,
    }


def chain_spec(data_format: str, rng: np.random.Generator) -> dict[str, Any]:
    n, h, w, c = CHAIN_INPUT
    shape = [n, h, w, c] if data_format == "channels_last" else [n, c, h, w]
    layers = []
    for filters, activation in CHAIN:
        kernel = (rng.standard_normal((4, 4, filters, c)) / math.sqrt(4 * c)).astype(np.float32)
        layers.append({
            "type": "Conv2DTranspose", "filters": filters, "kernel_size": 4, "strides": 2, "padding": "same",
            "data_format": data_format, "activation": activation, "weights": [kernel, np.zeros(filters, np.float32)],
        })  # fmt: skip
        c = filters
    return {"name": "dcgan_chain", "input": {"shape": shape, "name": "input"}, "layers": layers}


def bench_chain(rounds: int, budget: float) -> dict[str, Any]:
    """The four-layer chain, channels_last vs channels_first, native and auto: interleaved, paired."""
    models, inputs = {}, {}
    for data_format in ("channels_last", "channels_first"):
        spec = dc.load_spec(chain_spec(data_format, np.random.default_rng(7)))
        for strategy in ("native", "auto"):
            graph, options = dc.spec_graph(spec), dc.CompileOptions(strategy=strategy)
            models[f"{strategy} {data_format}"] = dc.compile_model(graph, options)
        inputs[data_format] = np.random.default_rng(8).standard_normal(spec.input_shape).astype(np.float32)  # type: ignore[arg-type]
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            data_format = name.split()[1]
            result = time_interleaved(
                {name: model},
                {"input": inputs[data_format]},
                CONFIG,
                rounds=1,
                runs_per_round=max(1, int(budget / 0.05)),
                warmup=1,
            )
            times[name].extend(result[name])
    return {
        "ms": {name: round(statistics.median(t) * 1e3, 3) for name, t in times.items()},
        "channels_last_vs_first_auto": round(
            paired_ratio(times, "auto channels_last", "auto channels_first"), 3
        ),
        "channels_last_vs_first_native": round(
            paired_ratio(times, "native channels_last", "native channels_first"), 3
        ),
        "auto_vs_native_channels_last": round(
            paired_ratio(times, "auto channels_last", "native channels_last"), 3
        ),
    }


def fresh_process_seconds(args: list[str], repeats: int = 5) -> float:
    """Median wall time of the installed `deconvc` in a new process (imports included)."""
    executable = Path(sys.executable).with_name("deconvc")
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([str(executable), *args], check=True, capture_output=True)
        durations.append(time.perf_counter() - started)
    return round(statistics.median(durations), 3)


def sgemm_ceiling(rounds: int) -> dict[str, float]:
    n = 1024
    a = np.random.default_rng(2).standard_normal((n, n)).astype(np.float32)
    times = time_interleaved({"sgemm": sgemm_model(n)}, {"a": a}, CONFIG, rounds=rounds, runs_per_round=5)
    seconds = statistics.median(times["sgemm"])
    return {"ms": round(seconds * 1e3, 3), "gflops": round(2 * n**3 / seconds / 1e9, 1)}


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summarize(layers: list[dict[str, Any]], chain: dict[str, Any]) -> dict[str, Any]:
    auto = [r["rows"]["auto"]["ratio_to_native"] for r in layers]
    summary: dict[str, Any] = {
        "auto_geomean_ratio_vs_native": round(geometric_mean(auto), 3),
        "auto_worst_ratio_vs_native": max(auto),
        "chain_channels_last_vs_first": chain["channels_last_vs_first_auto"],
        "max_rel_error_any_strategy": max(
            row["max_rel_error"]
            for r in layers
            for row in r["rows"].values()
            if row["max_rel_error"] is not None
        ),
    }
    torch_rows = [r for r in layers if "torch NCHW" in r["rows"]]
    if torch_rows:
        speedups = [r["rows"]["torch NCHW"]["ms"] / r["rows"]["auto"]["ms"] for r in torch_rows]
        summary["auto_speedup_vs_torch_nchw_geomean"] = round(geometric_mean(speedups), 3)
        summary["auto_speedup_vs_torch_nchw_worst"] = round(min(speedups), 3)
    return summary


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Benchmark report",
        "",
        f"Machine: {report['machine']}; onnxruntime {report['onnxruntime']}, {THREADS} intra-op threads, "
        f"spinning off, ORT_ENABLE_ALL, float32; {report['rounds']} interleaved rounds per case; "
        f"ratios are medians of per-round paired ratios to `native`.",
        f"SGEMM ceiling (onnxruntime MatMul 1024^3, in run): {report['sgemm']['gflops']} GFLOP/s.",
        f"PyTorch: {report['torch'] or 'not installed (columns omitted)'}.",
        "",
        "| case | layout | implementation | ms | ratio to native | GFLOP/s | % of SGEMM | max error (rel.) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["layers"]:
        for name, row in r["rows"].items():
            label = f"auto ({r['auto_choice']})" if name == "auto" else name
            error = "" if row["max_rel_error"] is None else f"{row['max_rel_error']:.1e}"
            lines.append(
                f"| {r['case']} | {r['data_format'][9:]} | {label} | {row['ms']} | {row['ratio_to_native']} | "
                f"{row['gflops']} | {row['pct_of_sgemm']} | {error} |"
            )
    chain, summary = report["chain"], report["summary"]
    lines += [
        "",
        "Four-layer DCGAN-style chain (4x4x512 -> 64x64x3, N=8): "
        f"median ms {chain['ms']}; channels_last / channels_first (auto): {chain['channels_last_vs_first_auto']}, "
        f"(native): {chain['channels_last_vs_first_native']}; auto / native (channels_last): "
        f"{chain['auto_vs_native_channels_last']}.",
        "",
        "## Targets",
        "",
        f"- auto vs native, geometric mean over A-F (both layouts): {summary['auto_geomean_ratio_vs_native']} "
        f"(target <= 0.85); worst case {summary['auto_worst_ratio_vs_native']} (target <= 1.05).",
        f"- channels_last chain vs channels_first: {summary['chain_channels_last_vs_first']} (target <= 1.10).",
        f"- largest error of any strategy vs the float64 reference: {summary['max_rel_error_any_strategy']:.1e} "
        "of the output scale (target <= 1e-5).",
        f"- deconvc compile, one layer, fresh process: {report['compile_s']} s (target < 1 s); "
        f"deconvc validate: {report['validate_s']} s (target < 0.5 s).",
    ]
    if "auto_speedup_vs_torch_nchw_geomean" in summary:
        lines.append(
            f"- auto vs PyTorch eager NCHW: {summary['auto_speedup_vs_torch_nchw_geomean']}x faster in geometric "
            f"mean (target >= 1.5), worst {summary['auto_speedup_vs_torch_nchw_worst']}x (target >= 1)."
        )
    else:
        lines.append("- auto vs PyTorch eager: not measured (torch is not installed).")
    if report.get("networks"):
        lines += network_markdown(report["networks"])
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "report", help="report directory")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds per case")
    parser.add_argument("--budget", type=float, default=0.15, help="seconds of native runs per round")
    parser.add_argument("--cases", default="ABCDEF", help="which of the cases A-F to run")
    parser.add_argument(
        "--networks",
        default=",".join(NETWORKS),
        help="whole networks to run (comma-separated; empty for none; needs Keras: pip install -e '.[test]')",
    )
    args = parser.parse_args()
    try:
        import torch

        torch_version: str | None = torch.__version__
    except ImportError:
        torch_version = None
    sgemm = sgemm_ceiling(args.rounds)
    layers = []
    for case in CASES:
        if case.name not in args.cases:
            continue
        for data_format in ("channels_first", "channels_last"):
            print(f"case {case.name} {data_format}", file=sys.stderr, flush=True)
            layers.append(bench_layer(case, data_format, args.rounds, args.budget, sgemm))
    chain = bench_chain(args.rounds, args.budget)
    networks = []
    for name in filter(None, args.networks.split(",")):
        print(f"network {name}", file=sys.stderr, flush=True)
        networks.append(bench_network(name, CONFIG, args.rounds, args.budget, fresh_process_seconds))
    spec = ROOT / "specs" / "seed_example.yaml"
    out_model = args.out / "seed_example.onnx"
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "onnxruntime": onnxruntime().__version__,
        "torch": torch_version,
        "rounds": args.rounds,
        "threads": THREADS,
        "sgemm": sgemm,
        "layers": layers,
        "chain": chain,
        "networks": networks,
        "compile_s": fresh_process_seconds(["compile", str(spec), "-o", str(out_model)]),
        "validate_s": fresh_process_seconds(["validate", str(spec)]),
    }
    out_model.unlink(missing_ok=True)
    report["summary"] = summarize(layers, chain)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "report.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
