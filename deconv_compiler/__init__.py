"""deconv-compiler: Keras transposed-convolution specs and saved Keras models → exact ONNX graphs."""

from __future__ import annotations

__version__ = "0.1.0"

from deconv_compiler.arguments import spec_json_schema  # noqa: E402
from deconv_compiler.compiler import compile_keras_model, compile_spec, save_model  # noqa: E402
from deconv_compiler.errors import (  # noqa: E402
    CompileError,
    DeconvError,
    DeconvWarning,
    Problem,
    SpecError,
)
from deconv_compiler.keras_model import KerasGraph, load_keras_model  # noqa: E402
from deconv_compiler.spec import LayerSpec, ModelSpec, load_spec  # noqa: E402

__all__ = [
    "CompileError",
    "DeconvError",
    "DeconvWarning",
    "KerasGraph",
    "LayerSpec",
    "ModelSpec",
    "Problem",
    "SpecError",
    "__version__",
    "compile_keras_model",
    "compile_spec",
    "load_keras_model",
    "load_spec",
    "save_model",
    "spec_json_schema",
]
