"""deconv-compiler: Keras transposed-convolution specs and saved Keras models → exact ONNX graphs.

    graph = load_model("generator.keras")       # or a spec; or load_spec(...) then spec_graph(...)
    model = compile_model(graph, CompileOptions(opset=17, target="cpu"))
    save_model(model, "generator.onnx")

Names are imported on first use, so `import deconv_compiler` (and `deconvc validate`, `--help`)
never loads onnx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "CompileError": "errors",
    "DeconvError": "errors",
    "DeconvWarning": "errors",
    "InternalError": "errors",
    "InvalidInput": "errors",
    "KerasModelError": "errors",
    "OutputFileError": "errors",
    "Problem": "errors",
    "SpecError": "errors",
    "CompileOptions": "options",
    "ExportOptions": "export",
    "Graph": "ir",
    "ModelSpec": "spec",
    "load_spec": "spec",
    "spec_graph": "spec",
    "load_keras_model": "keras_model",
    "load_model": "frontend",
    "compile_model": "compiler",
    "compile_to_file": "compiler",
    "save_model": "compiler",
    "spec_json_schema": "arguments",
}

if TYPE_CHECKING:
    from deconv_compiler.arguments import spec_json_schema
    from deconv_compiler.compiler import compile_model, compile_to_file, save_model
    from deconv_compiler.errors import (
        CompileError,
        DeconvError,
        DeconvWarning,
        InternalError,
        InvalidInput,
        KerasModelError,
        OutputFileError,
        Problem,
        SpecError,
    )
    from deconv_compiler.export import ExportOptions
    from deconv_compiler.frontend import load_model
    from deconv_compiler.ir import Graph
    from deconv_compiler.keras_model import load_keras_model
    from deconv_compiler.options import CompileOptions
    from deconv_compiler.spec import ModelSpec, load_spec, spec_graph


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'deconv_compiler' has no attribute {name!r}")
    return getattr(importlib.import_module(f"deconv_compiler.{module}"), name)


def __dir__() -> list[str]:
    return list(__all__)


__all__ = [
    "CompileError",
    "CompileOptions",
    "ExportOptions",
    "DeconvError",
    "DeconvWarning",
    "Graph",
    "InternalError",
    "InvalidInput",
    "KerasModelError",
    "ModelSpec",
    "OutputFileError",
    "Problem",
    "SpecError",
    "__version__",
    "compile_model",
    "compile_to_file",
    "load_keras_model",
    "load_model",
    "load_spec",
    "save_model",
    "spec_graph",
    "spec_json_schema",
]
