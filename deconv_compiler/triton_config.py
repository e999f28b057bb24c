"""onnx model + `TritonSettings` → the text of a Triton `config.pbtxt` for it (onnxruntime backend).

What it guarantees:
- The config agrees with the model, as Triton checks at load time: one `input`/`output` entry per
  graph input/output, in graph order, with the model's names, Triton data types and dims. Triton
  refuses a model whose config disagrees, so anything the config cannot state exactly (an unknown
  rank, bfloat16, a sequence) is refused here, with a `TritonConfigError` that names the tensor.
- Batching: when dim 0 of every input and every output is dynamic, the config batches
  (`max_batch_size` = the settings', dims without the batch axis, `dynamic_batching { }`);
  otherwise `max_batch_size: 0` and the full dims. Every other dynamic dim is -1.
- `instance_group` runs on the chosen provider (KIND_CPU / KIND_GPU); TensorRT and CUDA-provider
  settings are written only when asked for, as the onnxruntime backend's README documents them
  (`optimization { execution_accelerators { gpu_execution_accelerator [...] } }`).
- The text is deterministic (no timestamps, fixed field order), parses with protobuf's text format
  into Triton's `inference.ModelConfig`, and starts with `#` comments saying where it came from.

Pure text: no onnxruntime, no Triton needed. `repository_paths` gives the layout Triton expects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx

from deconv_compiler import __version__
from deconv_compiler.errors import DeconvError
from deconv_compiler.options import DEFAULT_MAX_BATCH_SIZE, MODEL_NAME

PROVIDERS = ("cpu", "cuda")
INSTANCE_KINDS = {"cpu": "KIND_CPU", "cuda": "KIND_GPU"}
# What the onnxruntime backend maps `precision_mode` to (trt_fp16_enable). INT8 needs a
# calibration table and BF16 a recent TensorRT: neither is offered.
TENSORRT_PRECISIONS = ("FP32", "FP16")
CUDNN_CONV_ALGO_SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
MAX_NAME_LENGTH = 128
MODEL_FILENAME = "model.onnx"  # the name Triton's onnxruntime backend looks for by default
MODEL_VERSION = "1"

# The element types Triton's onnxruntime backend converts (onnxruntime_utils.cc,
# OnnxDataTypeToModelConfigDataType); everything else it rejects at load time.
TRITON_TYPES: dict[int, str] = {
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.UINT16: "TYPE_UINT16",
    onnx.TensorProto.UINT32: "TYPE_UINT32",
    onnx.TensorProto.UINT64: "TYPE_UINT64",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.STRING: "TYPE_STRING",
}


class TritonConfigError(DeconvError):
    """Triton settings are invalid, or the model has an input/output Triton cannot describe."""


@dataclass(frozen=True)
class TritonSettings:
    """How the model is served: its name in the repository, the provider its instances run on,
    the largest batch Triton may form (used only when the model's batch dimension is dynamic),
    how many instances, and the opt-in GPU accelerator settings (provider cuda only):

    - `tensorrt_precision`: run through onnxruntime's TensorRT provider (`name: "tensorrt"`) at
      FP32 or FP16 (case-insensitive; written in capitals); `tensorrt_workspace_bytes` its
      workspace (None: the backend's 1 GiB).
    - `cuda_graphs`, `cudnn_conv_algo_search`, `use_tf32`: onnxruntime CUDA provider options
      (`name: "cuda"`; the backend passes them through as `enable_cuda_graph`, ...). None or False
      leaves onnxruntime's default. The config never gets model-level `parameters`: with any
      there, the backend's deprecated path resets cudnn_conv_algo_search to EXHAUSTIVE.
    """

    name: str
    provider: str = "cpu"  # cpu | cuda
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    instance_count: int = 1
    tensorrt_precision: str | None = None  # None | FP32 | FP16
    tensorrt_workspace_bytes: int | None = None
    cuda_graphs: bool = False
    cudnn_conv_algo_search: str | None = None  # EXHAUSTIVE | HEURISTIC | DEFAULT
    use_tf32: bool | None = None  # TF32 matmuls/convs on Ampere+ (onnxruntime's default: on)
    # Extra lines for the `#` header (e.g. what the model was compiled from); never timestamps.
    comments: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not MODEL_NAME.fullmatch(self.name):
            raise TritonConfigError(
                f"Triton model name {self.name!r} is not usable: it names a folder of the repository "
                "and a URL segment, so use letters, digits, '_', '-' and '.', not starting with '.' "
                "or '-' (e.g. 'dcgan_generator')"
            )
        if len(self.name) > MAX_NAME_LENGTH:
            raise TritonConfigError(
                f"Triton model name is {len(self.name)} characters long: at most {MAX_NAME_LENGTH}"
            )
        if self.provider not in PROVIDERS:
            raise TritonConfigError(
                f"Triton provider must be one of {', '.join(PROVIDERS)}, got {self.provider!r}"
            )
        if not _is_int(self.max_batch_size) or self.max_batch_size < 1:
            raise TritonConfigError(
                f"max_batch_size must be an integer >= 1, got {self.max_batch_size!r} "
                "(a model with a fixed batch gets max_batch_size 0 by itself)"
            )
        if not _is_int(self.instance_count) or self.instance_count < 1:
            raise TritonConfigError(
                f"the instance count must be an integer >= 1, got {self.instance_count!r}"
            )
        self._check_accelerators()
        for line in self.comments:
            if not isinstance(line, str) or "\n" in line or "\r" in line:
                raise TritonConfigError(f"a header comment must be one line of text, got {line!r}")

    def _check_accelerators(self) -> None:
        precision = self.tensorrt_precision
        if precision is not None:
            if not isinstance(precision, str) or precision.upper() not in TENSORRT_PRECISIONS:
                raise TritonConfigError(
                    f"TensorRT precision must be one of {', '.join(TENSORRT_PRECISIONS)}, got {precision!r}"
                )
            object.__setattr__(self, "tensorrt_precision", precision.upper())
        workspace = self.tensorrt_workspace_bytes
        if workspace is not None:
            if not _is_int(workspace) or workspace <= 0:
                raise TritonConfigError(
                    f"the TensorRT workspace must be a positive number of bytes, got {workspace!r}"
                )
            if precision is None:
                raise TritonConfigError("a TensorRT workspace size needs TensorRT: give its precision too")
        search = self.cudnn_conv_algo_search
        if search is not None and search not in CUDNN_CONV_ALGO_SEARCHES:
            raise TritonConfigError(
                f"cudnn_conv_algo_search must be one of {', '.join(CUDNN_CONV_ALGO_SEARCHES)}, got {search!r}"
            )
        for flag in ("cuda_graphs", "use_tf32"):
            value = getattr(self, flag)
            if value is not None and not isinstance(value, bool):
                raise TritonConfigError(f"{flag} must be true or false, got {value!r}")
        asked = [
            label
            for label, given in (
                ("TensorRT", precision is not None),
                ("CUDA graphs", self.cuda_graphs),
                ("cudnn_conv_algo_search", search is not None),
                ("use_tf32", self.use_tf32 is not None),
            )
            if given
        ]
        if asked and self.provider != "cuda":
            raise TritonConfigError(
                f"{', '.join(asked)} need provider cuda (GPU instances), but the provider is "
                f"{self.provider!r}: drop them or serve on cuda"
            )

    def tensorrt_parameters(self) -> tuple[tuple[str, str], ...]:
        """The `tensorrt` accelerator's parameters (keys as the onnxruntime backend documents them);
        empty when TensorRT is not asked for."""
        if self.tensorrt_precision is None:
            return ()
        found = [("precision_mode", self.tensorrt_precision)]
        if self.tensorrt_workspace_bytes is not None:
            found.append(("max_workspace_size_bytes", str(self.tensorrt_workspace_bytes)))
        return tuple(found)

    def cuda_parameters(self) -> tuple[tuple[str, str], ...]:
        """The `cuda` accelerator's parameters: onnxruntime CUDA provider option names."""
        found: list[tuple[str, str]] = []
        if self.cuda_graphs:
            found.append(("enable_cuda_graph", "1"))
        if self.cudnn_conv_algo_search is not None:
            found.append(("cudnn_conv_algo_search", self.cudnn_conv_algo_search))
        if self.use_tf32 is not None:
            found.append(("use_tf32", str(int(self.use_tf32))))
        return tuple(found)


@dataclass(frozen=True)
class _Tensor:
    name: str
    data_type: str
    dims: tuple[int, ...]  # -1 for a dynamic dim
    batch_param: str  # dim 0's symbolic name ("" when fixed or unnamed)


def triton_config(model: onnx.ModelProto, settings: TritonSettings) -> str:
    """The `config.pbtxt` text serving `model` as `settings` say (see the module docstring)."""
    inputs = [_tensor(value, "input") for value in _real_inputs(model)]
    outputs = [_tensor(value, "output") for value in model.graph.output]
    if not inputs or not outputs:
        raise TritonConfigError(
            f"the model has {len(inputs)} input(s) and {len(outputs)} output(s): "
            "Triton needs at least one of each"
        )
    tensors = (*inputs, *outputs)
    # Triton batches every input and output along dim 0 together: only a dim 0 that is dynamic
    # everywhere, and never named two different ways (two sizes that may differ), is a batch.
    batching = (
        all(t.dims and t.dims[0] == -1 for t in tensors) and len({t.batch_param for t in tensors} - {""}) <= 1
    )
    if settings.cuda_graphs and any(-1 in t.dims for t in tensors):
        dynamic = next(t for t in tensors if -1 in t.dims)
        raise TritonConfigError(
            f"CUDA graphs: onnxruntime replays a graph captured for one set of shapes, but "
            f"{dynamic.name!r} has dynamic dims {list(dynamic.dims)} (-1; a batch axis included): "
            "fix the model's shapes or drop CUDA graphs"
        )
    lines = [f"# {line}" for line in _header(model, settings, batching)]
    lines += [
        f"name: {_quoted(settings.name)}",
        'platform: "onnxruntime_onnx"',
        'backend: "onnxruntime"',
        f"max_batch_size: {settings.max_batch_size if batching else 0}",
        *_tensor_block("input", inputs, batching),
        *_tensor_block("output", outputs, batching),
    ]
    if batching:
        lines.append("dynamic_batching { }")
    lines += [
        "instance_group [",
        "  {",
        f"    count: {settings.instance_count}",
        f"    kind: {INSTANCE_KINDS[settings.provider]}",
        "  }",
        "]",
    ]
    lines += _optimization(settings)
    return "\n".join(lines) + "\n"


def repository_paths(name: str) -> tuple[str, str]:
    """The config's and the model's paths inside a Triton model repository, relative to its root:
    `NAME/config.pbtxt` and `NAME/1/model.onnx`."""
    return f"{name}/config.pbtxt", f"{name}/{MODEL_VERSION}/{MODEL_FILENAME}"


def _real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    # IR < 4 lists initializers among the inputs; they are weights, not something a client sends.
    initializers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _tensor(value: onnx.ValueInfoProto, role: str) -> _Tensor:
    where = f"{role} {value.name!r}"
    if value.type.WhichOneof("value") != "tensor_type":
        kind = value.type.WhichOneof("value") or "an unknown type"
        raise TritonConfigError(f"{where} is {kind}: Triton's onnxruntime backend takes only tensors")
    tensor = value.type.tensor_type
    data_type = TRITON_TYPES.get(tensor.elem_type)
    if data_type is None:
        type_name = onnx.TensorProto.DataType.Name(tensor.elem_type) if tensor.elem_type else "UNDEFINED"
        raise TritonConfigError(
            f"{where} has element type {type_name}, which Triton's onnxruntime backend cannot take; "
            f"expected one of {', '.join(_type_names())}"
        )
    if not tensor.HasField("shape"):
        raise TritonConfigError(
            f"{where} has no shape (unknown rank): Triton's config needs the rank; give the model "
            "a shape for it (e.g. run onnx shape inference)"
        )
    dims = []
    batch_param = tensor.shape.dim[0].dim_param if tensor.shape.dim else ""
    for axis, dim in enumerate(tensor.shape.dim):
        if dim.HasField("dim_value"):
            if dim.dim_value <= 0:
                raise TritonConfigError(
                    f"{where} has size {dim.dim_value} on axis {axis}: "
                    "Triton dims are positive, or -1 for a dynamic size"
                )
            dims.append(dim.dim_value)
        else:
            dims.append(-1)
    return _Tensor(value.name, data_type, tuple(dims), batch_param)


def _type_names() -> list[str]:
    return [onnx.TensorProto.DataType.Name(t) for t in TRITON_TYPES]


def _tensor_block(field_name: str, tensors: Iterable[_Tensor], batching: bool) -> list[str]:
    lines = [f"{field_name} ["]
    entries = list(tensors)
    for index, tensor in enumerate(entries):
        dims = tensor.dims[1:] if batching else tensor.dims
        lines += [
            "  {",
            f"    name: {_quoted(tensor.name)}",
            f"    data_type: {tensor.data_type}",
        ]
        if dims:
            lines.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
        else:
            # Triton needs at least one dim: a scalar (or a batch of scalars) is [1] reshaped to [].
            lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
        lines.append("  }," if index + 1 < len(entries) else "  }")
    lines.append("]")
    return lines


def _optimization(settings: TritonSettings) -> list[str]:
    accelerators = [
        (name, parameters)
        for name, parameters in (
            ("tensorrt", settings.tensorrt_parameters()),
            ("cuda", settings.cuda_parameters()),
        )
        if parameters
    ]
    if not accelerators:
        return []
    lines = ["optimization {", "  execution_accelerators {", "    gpu_execution_accelerator ["]
    for index, (name, parameters) in enumerate(accelerators):
        lines += ["      {", f"        name: {_quoted(name)}"]
        lines += [
            f"        parameters {{ key: {_quoted(key)} value: {_quoted(value)} }}"
            for key, value in parameters
        ]
        lines.append("      }," if index + 1 < len(accelerators) else "      }")
    lines += ["    ]", "  }", "}"]
    return lines


def _header(model: onnx.ModelProto, settings: TritonSettings, batching: bool) -> list[str]:
    graph = ascii(model.graph.name) if model.graph.name else "(unnamed)"
    batch = (
        f"dim 0 of every input and output is dynamic: Triton batches up to {settings.max_batch_size}"
        if batching
        else "dim 0 is not a batch dimension shared by every input and output: no batching"
    )
    return [
        f"Triton model configuration for the ONNX graph {graph}, written by deconv-compiler {__version__}.",
        "Names, data types and dims come from the model; Triton refuses a config that disagrees with it.",
        batch,
        *settings.comments,
    ]


def _quoted(text: str) -> str:
    """A protobuf text-format string literal: printable ASCII as is, `"` and `\\` escaped, every
    other byte of the UTF-8 encoding as an octal escape (which protobuf's C++ and Python parsers
    read back as the same bytes)."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
