"""`CompileOptions`: every choice a compile takes besides the model, validated once, here; and the
choices `export.ExportOptions` offers (nothing here imports onnx: the CLI builds its options from it).

- `opset`: the default-domain ONNX opset (11 to 26: the newest onnxruntime 1.31 loads).
- `target`: `cpu`, `cuda` (every ConvTranspose kept on onnxruntime's CUDA provider), `mobile`
  (the lowerings onnxruntime's NNAPI and CoreML providers take: `strategies.mobile_strategy`) or
  `auto` (cuda when a CUDA session can really be created here, else cpu: resolved by `resolved`).
- `strategy`: how every transposed convolution is lowered, over what layers and the model ask.
- `seed`: seeds the weights that initializers make, over the spec's `seed`.
- `dtype`: a dtype policy for the whole model, over what its layers say: `float32`, `float16`
  (float16 in and out) or `mixed_float16` (float32 in and out around float16 compute).
- `interface`: fixed input sizes and names for dims and outputs (`model_interface`), given to the
  built model before it is checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from deconv_compiler.errors import CompileError
from deconv_compiler.model_interface import ModelInterface
from deconv_compiler.strategies import CHOICES

MIN_OPSET = 11
DEFAULT_OPSET = 17
# The newest default-domain opset the supported onnxruntime releases load (tests check it).
MAX_OPSET = 26
TARGETS = ("cpu", "cuda", "mobile")
TARGET_CHOICES = (*TARGETS, "auto")
DTYPE_CHOICES = ("float32", "float16", "mixed_float16")


@dataclass(frozen=True)
class CompileOptions:
    opset: int = DEFAULT_OPSET
    target: str = "cpu"
    strategy: str | None = None  # None: each layer's, else the model's, else auto
    seed: int | None = None  # None: the model's
    dtype: str | None = None  # None: each layer's own policy
    interface: ModelInterface = ModelInterface()

    def __post_init__(self) -> None:
        if isinstance(self.opset, bool) or not isinstance(self.opset, int):
            raise CompileError(f"opset must be an integer, got {self.opset!r}")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise CompileError(f"opset {self.opset} is not supported: choose {MIN_OPSET} to {MAX_OPSET}")
        if self.target not in TARGET_CHOICES:
            raise CompileError(f"target {self.target!r} is not supported: choose {', '.join(TARGET_CHOICES)}")
        if self.strategy is not None and self.strategy not in CHOICES:
            raise CompileError(f"unknown strategy {self.strategy!r}; choose {', '.join(CHOICES)}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise CompileError(f"seed must be an integer, got {self.seed!r}")
        if self.seed is not None and self.seed < 0:
            raise CompileError(f"seed must be >= 0, got {self.seed}")
        if self.target == "mobile" and self.strategy == "tune":
            raise CompileError(
                "strategy tune times the candidates on this machine, not on a phone: with target "
                "mobile, use auto (the lowerings NNAPI and CoreML take) or name a strategy"
            )
        if self.dtype is not None and self.dtype not in DTYPE_CHOICES:
            raise CompileError(f"dtype {self.dtype!r} is not supported: choose {', '.join(DTYPE_CHOICES)}")

    def resolved(self) -> CompileOptions:
        """The same options with target `auto` decided: cuda when a CUDA session can be created."""
        if self.target != "auto":
            return self
        from deconv_compiler.runtime import resolve_provider  # onnxruntime only when asked

        return replace(self, target=resolve_provider("auto"))


# --- export -----------------------------------------------------------------------------------

FORMATS = ("onnx", "ort")
PRECISIONS = ("fp32", "fp16", "int8")
EXTERNAL_DATA_ABOVE = 3 * 2**29  # 1.5 GiB of weights: beyond it, `.onnx` + `.onnx.data`
# A model's name is its file's stem, a folder of a Triton repository and a segment of Triton's
# URLs (/v2/models/NAME/infer): plain letters, digits, `_`, `-` and `.`, not starting with a dot.
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# Triton's own choice when it completes a config for a batching model itself
# (`--backend-config=default-max-batch-size`, 4): the same number a user would get by letting
# Triton fill the config in, and small enough that one batch never multiplies a large
# decoder's activation memory by much. Raise it with `--max-batch-size` where memory allows.
DEFAULT_MAX_BATCH_SIZE = 4
RESERVED_PREFIX = "deconv_compiler."  # metadata keys of ours
METADATA_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]*")
