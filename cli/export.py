"""`deconvc export`: a spec, a saved Keras model or an `.onnx` file → a folder a deployment pipeline
takes (`deconv_compiler.export`), and a summary of it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from deconv_compiler.cli.main import (
    STDIN,
    ByteSize,
    Reporter,
    TuneBar,
    _fail,
    _reported_errors,
    dtype_option,
    max_weight_option,
    open_tune_cache,
    opset_option,
    output_options,
    save_tune_cache,
    seed_option,
    strategy_option,
    target_option,
    tune_cache_option,
    weights_option,
    weights_root_option,
)
from deconv_compiler.cli.shape_options import interface_options, model_interface

from deconv_compiler.options import (
    DEFAULT_MAX_BATCH_SIZE,
    EXTERNAL_DATA_ABOVE,
    FORMATS,
    PRECISIONS,
    CompileOptions,
)

if TYPE_CHECKING:
    from deconv_compiler.export import ExportReport


def _metadata_pair(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", ctx, param)
        pairs.append((key, text))
    return tuple(pairs)


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The folder to write.")
@click.option(
    "--format",
    "file_format",
    type=click.Choice(FORMATS),
    default="onnx",
    show_default=True,
    help="onnx, or ort: onnxruntime's format for its mobile and web packages.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="fp32",
    show_default=True,
    help="fp16: float16 weights and compute, float32 inputs and outputs; int8: QDQ, calibrated.",
)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    default=None,
    help="int8: an .npz of real inputs, one array per model input by name, samples on the first axis "
    "(default: random data, with a warning).",
)
@target_option
@strategy_option
@tune_cache_option
@interface_options
@click.option(
    "--name",
    default=None,
    help="The model's name: its file, or its Triton model folder "
    "(default: the source's file name without suffix).",
)
@click.option(
    "--triton",
    is_flag=True,
    help="Write a Triton model repository: DIR/NAME/config.pbtxt, DIR/NAME/1/model.onnx.",
)
@click.option(
    "--provider",
    type=click.Choice(["cpu", "cuda"]),
    default=None,
    help="Triton: the instance kind (default: cuda for --target cuda, else cpu).",
)
@click.option(
    "--max-batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_BATCH_SIZE,
    show_default=True,
    help="Triton: max_batch_size when the batch axis is dynamic (dynamic batching on).",
)
@click.option(
    "--instances",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Triton: model instances per device.",
)
@click.option(
    "--tensorrt",
    type=click.Choice(["fp32", "fp16"]),
    default=None,
    help="Triton (cuda): run through onnxruntime's TensorRT accelerator at this precision.",
)
@click.option("--cuda-graphs", is_flag=True, help="Triton (cuda): capture CUDA graphs (needs fixed shapes).")
@click.option(
    "--metadata",
    multiple=True,
    callback=_metadata_pair,
    metavar="KEY=VALUE",
    help="Add a metadata entry to the model (repeatable).",
)
@click.option(
    "--external-data-above",
    type=ByteSize(),
    default=EXTERNAL_DATA_ABOVE,
    show_default="1.5GiB",
    help="Weights beyond this size go to NAME.onnx.data beside the model (ONNX external data).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing, non-empty output folder.")
@opset_option
@seed_option
@dtype_option
@weights_option
@weights_root_option
@max_weight_option
@output_options
def export(
    source: Path,
    output: Path,
    file_format: str,
    precision: str,
    calibration: Path | None,
    target: str,
    strategy: str | None,
    tune_cache: Path | None,
    name: str | None,
    triton: bool,
    provider: str | None,
    max_batch_size: int,
    instances: int,
    tensorrt: str | None,
    cuda_graphs: bool,
    metadata: tuple[tuple[str, str], ...],
    external_data_above: int,
    overwrite: bool,
    opset: int,
    weight_seed: int | None,
    dtype: str | None,
    weights: Path | None,
    weights_root: Path | None,
    max_weight_size: int,
    report: Reporter,
    **interface: Any,
) -> None:
    """Export SOURCE (a spec, a saved Keras model or an .onnx file) to the folder OUTPUT, ready for a
    deployment pipeline: ONNX or ORT format, fp32/fp16/int8, fixed shapes, a Triton repository.
    All of OUTPUT is written, or none of it."""
    from deconv_compiler.export import ExportOptions, Tuning, export_model
    from deconv_compiler.triton_config import TritonSettings

    if str(source) == STDIN:
        _fail("export reads its SOURCE from a file (it records the file's name and digest): save it first")
    if not triton and (provider is not None or tensorrt is not None or cuda_graphs):
        _fail("--provider, --tensorrt and --cuda-graphs configure a Triton repository: add --triton")
    started = time.perf_counter()
    with _reported_errors(report=report):
        compile_options = CompileOptions(
            opset, target, strategy, weight_seed, dtype, model_interface(interface)
        )
        settings = None
        if triton:
            settings = TritonSettings(
                name or "model",  # replaced by the model's name, once known
                provider=provider or ("cuda" if target == "cuda" else "cpu"),
                max_batch_size=max_batch_size,
                instance_count=instances,
                tensorrt_precision=tensorrt,
                cuda_graphs=cuda_graphs,
            )
        options = ExportOptions(
            format=file_format,
            precision=precision,
            calibration=calibration,
            name=name,
            triton=settings,
            metadata=metadata,
            external_data_above=external_data_above,
            overwrite=overwrite,
        )
        inputs = [source] if weights is None else [source, weights]
        cache = open_tune_cache(tune_cache, inputs)
        bar = TuneBar(report)
        try:
            exported = export_model(
                source,
                output,
                options,
                compile_options,
                weights,
                weights_root,
                max_weight_size,
                Tuning(cache, bar),
            )
        finally:
            bar.close()
        save_tune_cache(cache, tune_cache, inputs)
    seconds = time.perf_counter() - started
    report.say(summary_text(source, exported, seconds, report.verbose))
    for warning in exported.warnings:
        report.warn(warning)
    report.result({"source": str(source), "seconds": round(seconds, 3), **exported.to_json()})


def summary_text(source: Path, report: ExportReport, seconds: float, verbose: bool) -> str:
    from deconv_compiler.inspection import size_text

    lines = [f"exported {source} to {report.folder}/ in {seconds:.1f} s"]
    for written in report.files:
        lines.append(f"  {written.path}  {size_text(written.size)}")
    what = f"format {report.format}, precision {report.precision}, target {report.target}"
    if report.external_data:
        what += ", weights in external data"
    lines.append(f"  {what}")
    if report.int8_settings:
        lines.append(f"  int8 settings (for this machine's CPU): {report.int8_settings}")
    by_reason: dict[str, list[str]] = {}
    for node, why in report.float_nodes:
        by_reason.setdefault(why, []).append(node)
    for why, nodes in by_reason.items():
        shown_nodes = (
            nodes if verbose or len(nodes) <= 4 else [*nodes[:4], f"... ({len(nodes)} in all; -v lists them)"]
        )
        lines.append(f"  kept in float: {', '.join(shown_nodes)}: {why}")
    if report.error is not None:
        e = report.error
        lines.append(
            f"  error vs fp32 on {report.error_inputs}: max {e.max_abs:.3g} = {e.relative:.3g} of scale "
            f"{e.scale:.3g}, mean {e.mean_abs:.3g}"
        )
    lines.append(f"  nodes: {report.placement.text}")
    if report.mobile is not None:
        for coverage in report.mobile.eps:
            lines.append(f"  mobile: {coverage.text}")
        if report.target != "mobile" and any(c.verdict != "YES" for c in report.mobile.eps):
            lines.append("  (--target mobile and --fix-shape give NNAPI and CoreML the lowerings they take)")
    return "\n".join(lines)
