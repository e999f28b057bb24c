"""A graph (from a spec or a saved Keras model) compiled and run on onnxruntime vs the numpy
reference of every layer → `CheckReport`.

What a user runs before shipping a model: the same weights go through the compiled graph and
through `deconv_compiler.reference` (an independent float64 implementation of Keras' layers,
itself proven against real Keras in the test suite), layer by layer in Keras layout, and the
largest difference over every output is judged against a tolerance for the dtype and provider.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from deconv_compiler import reference
from deconv_compiler.compiler import compile_model
from deconv_compiler.dtypes import compute_dtype, io_dtype
from deconv_compiler.errors import InternalError
from deconv_compiler.ir import (
    ActivationOp,
    BatchNormOp,
    ClipOp,
    ConcatenateOp,
    ConvOp,
    ConvTransposeOp,
    DenseOp,
    EluOp,
    ExpandDimsOp,
    FlattenOp,
    GlobalPoolOp,
    Graph,
    GroupNormOp,
    IdentityOp,
    LayerNormOp,
    LeakyReluOp,
    MergeOp,
    NormalizeOp,
    PadOp,
    PermuteOp,
    PoolOp,
    PReluOp,
    ReluOp,
    RepeatVectorOp,
    RescaleOp,
    ReshapeOp,
    ScalarOp,
    SliceOp,
    SoftmaxOp,
    SqueezeOp,
    UnitNormOp,
    UpSampleOp,
)
from deconv_compiler.options import CompileOptions
from deconv_compiler.planner import made_weights
from deconv_compiler.runtime import SessionConfig, run_model
from deconv_compiler.weights import LayerWeights

DEFAULT_SIZES = {"batch": 2, "spatial": 5}


def tolerance(dtype: str, provider: str, use_tf32: bool) -> float:
    """Largest accepted error relative to max(1, max|reference|)."""
    if dtype == "float16":
        return 1e-2  # 11-bit mantissa, accumulations included
    if dtype == "float64":
        return 1e-9
    if provider == "cuda" and use_tf32:
        return 5e-3  # TF32 keeps a 10-bit mantissa in convolutions
    return 1e-5


@dataclass(frozen=True)
class CheckReport:
    provider: str
    input_shape: tuple[int, ...]  # the first input's
    dtype: str  # the least precise compute dtype of the model
    max_abs_error: float
    scale: float  # max(1, max|reference|) over the outputs
    tolerance: float
    cpu_nodes: tuple[str, ...]

    @property
    def relative_error(self) -> float:
        return self.max_abs_error / self.scale

    @property
    def passed(self) -> bool:
        return self.relative_error <= self.tolerance


def concrete_input_shape(
    shape: Sequence[int | None], given: tuple[int, ...] | None = None
) -> tuple[int, ...]:
    """A declared input shape with dynamic sizes filled in (from `given`, else small defaults)."""
    if given is not None:
        return given
    batch, *rest = shape
    filled = [DEFAULT_SIZES["spatial"] if d is None else d for d in rest]
    return (DEFAULT_SIZES["batch"] if batch is None else batch, *filled)


def reference_outputs(
    graph: Graph, inputs: Sequence[np.ndarray], seed: int | None = None, dtype: str | None = None
) -> list[np.ndarray]:
    """Every output of `graph` through the numpy reference, in float64, with the weights the
    compiled model has (initializers seeded by `seed`, else the model's). Each layer sees its
    inputs and weights rounded to its compute dtype (`dtype`, a policy, over the layer's own),
    as the compiled graph holds them."""
    values: dict[str, np.ndarray] = {
        value.name: np.asarray(x, dtype=np.float64) for value, x in zip(graph.inputs, inputs, strict=True)
    }
    for node in made_weights(graph, seed).nodes:
        compute = np.dtype(compute_dtype(dtype or node.policy))
        args = [_rounded(values[name], compute) for name in node.inputs]
        values[node.output.name] = _REFERENCES[type(node.op)](node.op, args, compute)
    return [values[output.value] for output in graph.outputs]


def _rounded(array: Any, dtype: np.dtype[Any]) -> np.ndarray:
    return np.asarray(array).astype(dtype).astype(np.float64)


Reference = Callable[[Any, list[np.ndarray], np.dtype[Any]], np.ndarray]


def _conv_transpose(op: ConvTransposeOp, args: list[np.ndarray], dtype: np.dtype[Any]) -> np.ndarray:
    weights = op.weights
    if not isinstance(weights, LayerWeights):
        raise InternalError(f"layer {op.layer.name!r}: weights were not made")
    layer = op.layer
    return reference.layer(
        args[0],
        _rounded(weights.kernel, dtype),
        None if weights.bias is None else _rounded(weights.bias, dtype),
        activation_name=layer.activation,
        strides=layer.strides,
        padding=layer.padding,
        output_padding=layer.output_padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )


def _dense(op: DenseOp, args: list[np.ndarray], dtype: np.dtype[Any]) -> np.ndarray:
    bias = None if op.bias is None else _rounded(op.bias, dtype)
    return reference.dense(args[0], _rounded(op.kernel, dtype), bias, op.activation)


def _batch_norm(op: BatchNormOp, args: list[np.ndarray], dtype: np.dtype[Any]) -> np.ndarray:
    return reference.batch_normalization(
        args[0], op.axis, op.mean, op.variance, op.gamma, op.beta, op.epsilon
    )


def _reshape(op: ReshapeOp, args: list[np.ndarray], dtype: np.dtype[Any]) -> np.ndarray:
    return args[0].reshape((args[0].shape[0], *op.target))


def _concatenate(op: ConcatenateOp, args: list[np.ndarray], dtype: np.dtype[Any]) -> np.ndarray:
    return np.concatenate(args, axis=op.axis)


def _conv(op: ConvOp, args: list[np.ndarray], dtype: np.dtype[Any]) -> np.ndarray:
    """The grouped conv, then the pointwise 1x1 conv if any, the bias after the last, then the
    activation (on Keras' axis -1)."""
    data_format = "channels_first" if op.channels_first else "channels_last"
    bias = None if op.bias is None else _rounded(op.bias, dtype)
    y = reference.conv(
        args[0], _rounded(op.kernel, dtype), bias if op.pointwise is None else None,
        strides=op.strides, padding=op.padding, dilation_rate=op.dilation_rate, groups=op.groups,
        data_format=data_format,
    )  # fmt: skip
    if op.pointwise is not None:
        y = reference.conv(
            y, _rounded(op.pointwise, dtype), bias, strides=(1,) * op.rank, padding="valid",
            dilation_rate=(1,) * op.rank, groups=1, data_format=data_format,
        )  # fmt: skip
    return reference.activation(op.activation, y, data_format)


def _pool(op: PoolOp, args: list[np.ndarray], dtype: np.dtype[Any]) -> np.ndarray:
    data_format = "channels_first" if op.channels_first else "channels_last"
    return reference.pool(args[0], op.function, op.pool_size, op.strides, op.padding, data_format)


def _unit_norm(op: UnitNormOp, args: list[np.ndarray], dtype: np.dtype[Any]) -> np.ndarray:
    cap = 1e12 if 1e12 <= float(np.finfo(dtype).max) else np.inf  # Keras' 1 / 1e-12 in the dtype
    return reference.unit_normalization(args[0], op.axes, cap)


def _normalize(op: NormalizeOp, args: list[np.ndarray], dtype: np.dtype[Any]) -> np.ndarray:
    return reference.normalize(args[0], _rounded(op.mean, dtype), _rounded(op.variance, dtype), op.invert)


def _slice(op: SliceOp, args: list[np.ndarray], dtype: np.dtype[Any]) -> np.ndarray:
    return np.take(args[0], np.arange(op.start, op.stop), axis=op.axis)


def _scalar(op: ScalarOp, args: list[np.ndarray], dtype: np.dtype[Any]) -> np.ndarray:
    constant = float(_rounded(op.constant, dtype))
    return reference.scalar(op.function, args[0], constant, op.constant_first)


_REFERENCES: dict[type, Reference] = {
    ConvTransposeOp: _conv_transpose,
    DenseOp: _dense,
    BatchNormOp: _batch_norm,
    ActivationOp: lambda op, args, dtype: reference.activation(op.activation, args[0], "channels_last"),
    ReluOp: lambda op, args, dtype: reference.relu(args[0], op.negative_slope, op.max_value, op.threshold),
    LeakyReluOp: lambda op, args, dtype: reference.leaky_relu(args[0], op.negative_slope),
    EluOp: lambda op, args, dtype: reference.elu(args[0], op.alpha),
    PReluOp: lambda op, args, dtype: reference.prelu(args[0], _rounded(op.alpha, dtype)),
    SoftmaxOp: lambda op, args, dtype: reference.softmax(args[0], op.axes),
    IdentityOp: lambda op, args, dtype: args[0],
    MergeOp: lambda op, args, dtype: reference.merge(op.function, args),
    ScalarOp: _scalar,
    ClipOp: lambda op, args, dtype: reference.clip(args[0], op.low, op.high),
    ConvOp: _conv,
    PoolOp: _pool,
    GlobalPoolOp: lambda op, args, dtype: reference.global_pool(args[0], op.function, op.axes, op.keepdims),
    # Keras computes Layer/GroupNormalization in float32 with weights it never casts down
    LayerNormOp: lambda op, args, dtype: reference.layer_normalization(
        args[0], op.axes, op.gamma, op.beta, op.epsilon, op.rms_scaling
    ),
    GroupNormOp: lambda op, args, dtype: reference.group_normalization(
        args[0], op.groups, op.axis, op.gamma, op.beta, op.epsilon
    ),
    UnitNormOp: _unit_norm,
    RescaleOp: lambda op, args, dtype: reference.rescale(
        args[0], _rounded(op.scale, dtype), _rounded(op.offset, dtype)
    ),
    NormalizeOp: _normalize,
    PermuteOp: lambda op, args, dtype: np.transpose(args[0], op.perm),
    RepeatVectorOp: lambda op, args, dtype: reference.repeat_vector(args[0], op.times),
    SliceOp: _slice,
    SqueezeOp: lambda op, args, dtype: np.squeeze(args[0], axis=op.axes),
    ExpandDimsOp: lambda op, args, dtype: np.expand_dims(args[0], axis=op.axes),
    ConcatenateOp: _concatenate,
    ReshapeOp: _reshape,
    FlattenOp: lambda op, args, dtype: reference.flatten(args[0], op.channels_first),
    PadOp: lambda op, args, dtype: reference.pad_or_crop(args[0], op.axes, op.begins, op.ends),
    UpSampleOp: lambda op, args, dtype: reference.upsample(args[0], op.axes, op.factors, op.interpolation),
}


def check_graph(
    graph: Graph,
    config: SessionConfig | None = None,
    shape: tuple[int, ...] | None = None,
    input_seed: int = 0,
    options: CompileOptions | None = None,
    tolerance_override: float | None = None,
) -> CheckReport:
    """Compile (for the provider that will run it), run on random inputs, compare every output.
    `shape` sizes the first input; the others take its batch and fill dynamic sizes."""
    config = config or SessionConfig()
    # compiled for the provider that runs it (a CUDA run gets the CUDA-resident lowering)
    options = replace(options or CompileOptions(), target=config.provider).resolved()
    graph = made_weights(graph, options.seed)  # once, for the compiled model and the reference
    model = compile_model(graph, options)
    rng = np.random.default_rng(input_seed)
    feeds: dict[str, np.ndarray] = {}
    for index, value in enumerate(graph.inputs):
        if index == 0:
            dims = concrete_input_shape(value.shape, shape)
        else:
            batch = next(iter(feeds.values())).shape[0]
            dims = concrete_input_shape((value.shape[0] or batch, *value.shape[1:]))
        dtype = io_dtype(options.dtype) if options.dtype else value.dtype
        feeds[value.name] = rng.standard_normal(dims).astype(dtype)
    result = run_model(model, feeds, config)
    expected = reference_outputs(graph, list(feeds.values()), options.seed, options.dtype)
    error, scale = 0.0, 1.0
    for (name, actual), want in zip(result.outputs.items(), expected, strict=True):
        if actual.shape != want.shape:
            raise InternalError(f"output {name}: shape {actual.shape} != the reference's {want.shape}")
        if want.size:
            scale = max(scale, float(np.max(np.abs(want))))
            error = max(error, float(np.max(np.abs(actual.astype(np.float64) - want))))
    dtype = _least_precise({compute_dtype(options.dtype or node.policy) for node in graph.nodes})
    return CheckReport(
        provider=result.provider,
        input_shape=tuple(next(iter(feeds.values())).shape),
        dtype=dtype,
        max_abs_error=error,
        scale=scale,
        tolerance=tolerance_override
        if tolerance_override is not None
        else tolerance(dtype, result.provider, config.use_tf32),
        cpu_nodes=result.cpu_nodes,
    )


def _least_precise(dtypes: set[str]) -> str:
    for dtype in ("float16", "float32", "float64"):
        if dtype in dtypes:
            return dtype
    return "float32"
