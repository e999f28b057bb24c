"""onnx model → ORT-format bytes for a target (cpu | cuda | mobile), and → its mobile EP coverage.

`to_ort_format` converts the way onnxruntime's own `convert_onnx_models_to_ort` tool does: a CPU
session that saves its optimized graph to a `.ort` file (`session.save_model_format=ORT`), at the
optimization level and style that suit the target (`ORT_STYLES`, with the reasons). It guarantees
bytes that onnxruntime loads back as an ORT-format model, or an `OrtFormatError` that carries the
first line of onnxruntime's message. Nothing is written outside a temporary folder.

`mobile_coverage` tells how much of the model the mobile execution providers (NNAPI, CoreML
NeuralNetwork, CoreML MLProgram) would take, with onnxruntime's mobile usability checker
(`onnxruntime.tools.mobile_helpers.usability_checker`) run the way its `checker` runs it: on the
model after basic optimizations (what an ORT-format model for mobile holds) and shape inference,
first as it is (a node with a dynamically shaped input counts as refused), then, when an input is
dynamic, as if its shapes were fixed. Estimates from op tables, as the checker's are: an op's
caveats (e.g. NNAPI's 2-D-only Conv) are not checked.

This module may import onnxruntime (it is a deployment tool, like runtime.py).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from deconv_compiler.errors import CompileError, RuntimeFailure, first_line
from deconv_compiler.runtime import onnxruntime

TARGETS = ("cpu", "cuda", "mobile")


@dataclass(frozen=True)
class OrtStyle:
    """How one target's ORT-format model is optimized at conversion. Choose well: when an
    ORT-format model is loaded, onnxruntime re-optimizes it only in limited ways (replaying saved
    runtime optimizations), never with the full optimizer an .onnx model gets."""

    level: str  # onnxruntime graph optimization level: basic | all
    disabled_optimizers: tuple[str, ...]
    config: tuple[tuple[str, str], ...]  # extra session config entries
    why: str


ORT_STYLES = {
    # The tool's default ("Fixed" style, level all) with its default platform: NCHWc is excluded
    # because it rewrites the graph into x86-only kernels (MLAS NCHWc) that ARM and WebAssembly
    # builds, where ORT-format models are mostly used, do not have. The stride-1 `conv` lowering
    # loses its NCHWc speed-up on x86 with it (facts §7): serve .onnx there.
    "cpu": OrtStyle(
        level="all",
        disabled_optimizers=("NchwcTransformer",),
        config=(),
        why="all optimizations except the x86-only NCHWc layout, as convert_onnx_models_to_ort does",
    ),
    # Conversion runs on the CPU provider, so fusions beyond basic would be chosen for the CPU
    # (e.g. Conv + activation → com.microsoft FusedConv) and baked in; the CUDA provider may lack
    # a kernel for the fused form and send the node back to the CPU. Basic optimizations are
    # provider-independent ONNX-to-ONNX rewrites (constant folding, redundant nodes).
    "cuda": OrtStyle(
        level="basic",
        disabled_optimizers=(),
        config=(),
        why="basic optimizations only: later fusions would be chosen for the CPU provider",
    ),
    # The tool's "Runtime" style, which its help recommends for NNAPI and CoreML: basic
    # optimizations are applied, later ones only saved, to be replayed at load time on the nodes
    # the compiling EP did not take (session.enable_saved_runtime_optimizations). Fusing first
    # would hide nodes from NNAPI/CoreML.
    "mobile": OrtStyle(
        level="all",
        disabled_optimizers=("NchwcTransformer",),
        config=(("optimization.minimal_build_optimizations", "save"),),
        why="basic optimizations, later ones saved for runtime (the tool's Runtime style for NNAPI/CoreML)",
    ),
}


class OrtFormatError(RuntimeFailure):
    """onnxruntime could not convert the model to ORT format (its message's first line)."""


def to_ort_format(model: onnx.ModelProto, target: str) -> bytes:
    """The model as ORT-format bytes, optimized for `target` (see `ORT_STYLES`)."""
    if target not in TARGETS:
        raise CompileError(f"ORT-format target {target!r} is not supported: choose {', '.join(TARGETS)}")
    style = ORT_STYLES[target]
    ort = onnxruntime()
    with tempfile.TemporaryDirectory(prefix="deconvc-ort-") as folder:
        path = Path(folder) / "model.ort"
        options = ort.SessionOptions()
        options.graph_optimization_level = _level(ort, style.level)
        options.optimized_model_filepath = str(path)
        options.log_severity_level = 3  # errors only: the conversion's warnings are not the user's
        options.add_session_config_entry("session.save_model_format", "ORT")
        for key, value in style.config:
            options.add_session_config_entry(key, value)
        try:
            ort.InferenceSession(
                model.SerializeToString(),
                options,
                providers=["CPUExecutionProvider"],
                disabled_optimizers=list(style.disabled_optimizers) or None,
            )
        except Exception as error:  # onnxruntime raises untyped pybind errors
            raise OrtFormatError(
                f"onnxruntime could not convert the model to ORT format: {first_line(error)}"
            ) from None
        if not path.is_file():
            raise OrtFormatError(f"onnxruntime created a session but wrote no ORT-format file to {path}")
        return path.read_bytes()


@dataclass(frozen=True)
class EpCoverage:
    """What one mobile EP would take of the model, as onnxruntime's usability checker estimates it."""

    ep: str  # NNAPI | CoreML NeuralNetwork | CoreML MLProgram
    nodes: int  # nodes it would take
    total: int  # nodes in the model (after basic optimizations)
    partitions: int
    verdict: str  # the checker's YES | MAYBE | NO for the model as it is
    unsupported_ops: tuple[str, ...]  # `domain:op` types it has no kernel for, sorted
    dynamic_shape_nodes: int  # nodes refused only because an input's shape is dynamic
    fixed_shapes: EpCoverage | None = None  # the same, were every shape fixed (dynamic models only)

    @property
    def text(self) -> str:
        """One line for a summary, e.g. `NNAPI: 18/18 nodes in 1 partition (YES)`."""
        plural = "" if self.partitions == 1 else "s"
        line = f"{self.ep}: {self.nodes}/{self.total} nodes in {self.partitions} partition{plural}"
        line += f" ({self.verdict})"
        notes = []
        if self.dynamic_shape_nodes:
            notes.append(f"{self.dynamic_shape_nodes} refused for dynamic shapes")
        if self.unsupported_ops:
            notes.append(
                f"no kernel for {', '.join(op.removeprefix('ai.onnx:') for op in self.unsupported_ops)}"
            )
        if self.fixed_shapes is not None:
            fixed = self.fixed_shapes
            notes.append(
                f"with fixed shapes: {fixed.nodes}/{fixed.total} in {fixed.partitions} ({fixed.verdict})"
            )
        return line + (f"; {'; '.join(notes)}" if notes else "")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ep": self.ep,
            "nodes": self.nodes,
            "total": self.total,
            "partitions": self.partitions,
            "verdict": self.verdict,
            "unsupported_ops": list(self.unsupported_ops),
            "dynamic_shape_nodes": self.dynamic_shape_nodes,
        }
        if self.fixed_shapes is not None:
            data["fixed_shapes"] = self.fixed_shapes.to_json()
        return data


@dataclass(frozen=True)
class MobileCoverage:
    """Per mobile EP, what it would take; `dynamic_inputs` names the inputs with a dynamic shape."""

    eps: tuple[EpCoverage, ...]
    dynamic_inputs: tuple[str, ...]

    def ep(self, name: str) -> EpCoverage:
        for coverage in self.eps:
            if coverage.ep == name:
                return coverage
        raise KeyError(f"no coverage for {name!r}: have {', '.join(c.ep for c in self.eps)}")

    @property
    def text(self) -> str:
        return "\n".join(coverage.text for coverage in self.eps)

    def to_json(self) -> dict[str, Any]:
        return {"dynamic_inputs": list(self.dynamic_inputs), "eps": [c.to_json() for c in self.eps]}

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False)


def mobile_coverage(model: onnx.ModelProto) -> MobileCoverage:
    """The usability checker's estimate for NNAPI, CoreML NeuralNetwork and CoreML MLProgram."""
    from onnxruntime.tools.mobile_helpers import usability_checker as checker
    from onnxruntime.tools.onnx_model_utils import is_fixed_size_tensor

    prepared = onnx.shape_inference.infer_shapes(_basic_optimized(model), strict_mode=True)
    # (the checker's own check_shapes logs through a logger it may not be given: not used)
    dynamic_inputs = tuple(value.name for value in prepared.graph.input if not is_fixed_size_tensor(value))
    eps: list[tuple[str, Callable[[onnx.ModelProto, bool], Any]]] = [
        ("NNAPI", checker.check_nnapi_partitions),
        (
            "CoreML NeuralNetwork",
            lambda m, fixed: checker.check_coreml_partitions(
                m, fixed, "coreml_supported_neuralnetwork_ops.md"
            ),
        ),
        (
            "CoreML MLProgram",
            lambda m, fixed: checker.check_coreml_partitions(m, fixed, "coreml_supported_mlprogram_ops.md"),
        ),
    ]
    found = []
    for name, check in eps:
        as_is = _ep_coverage(name, check(prepared, True))
        if dynamic_inputs:
            # require_fixed_input_sizes=False: the checker's "if modified to have fixed input shapes"
            as_is = _with_fixed(as_is, _ep_coverage(name, check(prepared, False)))
        found.append(as_is)
    return MobileCoverage(tuple(found), dynamic_inputs)


def _ep_coverage(name: str, info: Any) -> EpCoverage:
    return EpCoverage(
        ep=name,
        nodes=int(info.num_supported_nodes),
        total=int(info.num_nodes),
        partitions=int(info.num_partitions),
        verdict=str(info.suitability().name),
        unsupported_ops=tuple(sorted(str(op) for op in info.unsupported_ops)),
        dynamic_shape_nodes=int(info.nodes_unsupported_due_to_dynamic_input),
    )


def _with_fixed(as_is: EpCoverage, fixed: EpCoverage) -> EpCoverage:
    return EpCoverage(
        as_is.ep,
        as_is.nodes,
        as_is.total,
        as_is.partitions,
        as_is.verdict,
        as_is.unsupported_ops,
        as_is.dynamic_shape_nodes,
        fixed,
    )


def _basic_optimized(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model as onnxruntime's basic optimizations leave it (what the checker analyzes by
    default, and what an ORT-format model for mobile holds)."""
    ort = onnxruntime()
    with tempfile.TemporaryDirectory(prefix="deconvc-mobile-") as folder:
        path = Path(folder) / "basic.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(path)
        options.log_severity_level = 3
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises untyped pybind errors
            raise OrtFormatError(
                f"onnxruntime could not optimize the model for the mobile check: {first_line(error)}"
            ) from None
        return onnx.load(str(path))


def _level(ort: Any, level: str) -> Any:
    return {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
