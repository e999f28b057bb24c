"""`ModelSpec` + weights → `LoweringPlan`: everything in ONNX vocabulary, still free of onnx.

Per layer: the ConvTranspose attributes (explicit pads and output_padding from `geometry`), the
weights in ONNX layout, the activation and the axis it acts on, and the Transpose (if any) that
brings the incoming tensor into the graph's internal NC... layout. For an all-channels_last
chain that is one Transpose at the input and one at the output, none in between.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from deconv_compiler import geometry
from deconv_compiler.activations import ActivationSite
from deconv_compiler.errors import CompileError
from deconv_compiler.spec import LayerSpec, ModelSpec
from deconv_compiler.strategies import (
    CHOICES,
    STRATEGIES,
    ConvForm,
    GemmForm,
    LayerGeometry,
    SubpixelForm,
    auto_strategy,
    conv_form,
    gemm_form,
    subpixel_form,
    why_not,
)
from deconv_compiler.weights import LayerWeights, initial_weights

MIN_OPSET = 11
DEFAULT_OPSET = 17
# The newest default-domain opset the supported onnxruntime releases load (tests check it).
MAX_OPSET = 26

Perm = tuple[int, ...]


@dataclass(frozen=True, eq=False)
class LayerPlan:
    """One Keras layer as ONNX: [Transpose] → [Cast] → ConvTranspose(+bias) → activation."""

    name: str
    to_internal: Perm | None  # Transpose applied to the incoming tensor, if any
    cast_to: str | None  # dtype the incoming tensor is cast to, if it differs
    dtype: str
    weight: np.ndarray  # ONNX layout (in_channels, filters, *kernel_size)
    bias: np.ndarray | None
    kernel_shape: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]  # begins then ends
    output_padding: tuple[int, ...]
    crop_end: tuple[int, ...]  # samples a Slice removes from the end of each spatial axis
    activation: str
    activation_site: ActivationSite
    output_shape: tuple[int | None, ...]  # in `layout`
    layout: Perm  # the Keras axes in the order this layer takes and gives them (N, C, spatial... unless gemm)
    strategy: str = "native"
    form: ConvForm | SubpixelForm | GemmForm | None = None  # the strategy's weights, if not native


@dataclass(frozen=True, eq=False)
class LoweringPlan:
    name: str
    opset: int
    input_name: str
    input_shape: tuple[int | None, ...]  # Keras layout
    input_dtype: str
    output_name: str
    output_shape: tuple[int | None, ...]  # Keras layout
    output_dtype: str
    layers: tuple[LayerPlan, ...]
    to_keras: Perm | None  # Transpose from the internal layout back to Keras' at the output
    output_cast: str | None  # dtype the result is cast to (float32 under a mixed policy)
    metadata: tuple[tuple[str, str], ...]


def internal_layout(data_format: str, tensor_rank: int) -> Perm:
    """Axes of the Keras tensor in the order the ONNX graph works in (N, C, spatial...)."""
    if data_format == "channels_first":
        return tuple(range(tensor_rank))
    return (0, tensor_rank - 1, *range(1, tensor_rank - 1))


def channels_last_layout(data_format: str, tensor_rank: int) -> Perm:
    """Axes of the Keras tensor in N, spatial..., C order (the gemm strategy's)."""
    if data_format == "channels_last":
        return tuple(range(tensor_rank))
    return (0, *range(2, tensor_rank), 1)


def layer_geometry(layer: LayerSpec) -> LayerGeometry:
    axis_pads = [
        geometry.onnx_axis_pads(
            layer.kernel_size[a],
            layer.strides[a],
            layer.dilation_rate[a],
            layer.padding,
            None if layer.output_padding is None else layer.output_padding[a],
        )
        for a in range(layer.rank)
    ]
    spatial = layer.input_shape[1:-1] if layer.data_format == "channels_last" else layer.input_shape[2:]
    return LayerGeometry(
        kernel=layer.kernel_size,
        strides=layer.strides,
        dilations=layer.dilation_rate,
        begins=tuple(p.begin for p in axis_pads),
        ends=tuple(p.end for p in axis_pads),
        output_padding=tuple(p.output_padding for p in axis_pads),
        spatial=tuple(spatial),
        in_channels=layer.in_channels,
        filters=layer.filters,
        batch=layer.input_shape[0],
    )


def choose_strategy(layer: LayerSpec, requested: str, target: str = "cpu") -> str:
    """`requested` checked against the layer (a forced strategy that cannot apply is an error),
    or `auto` resolved by its rule. `auto` keeps the native graph on the CUDA target and for
    float16/float64 layers: the rule was measured for float32 on the CPU provider."""
    g = layer_geometry(layer)
    if requested == "auto":  # the rule was measured for float32 on the CPU provider
        return (
            auto_strategy(g, layer.data_format) if target == "cpu" and layer.dtype == "float32" else "native"
        )
    if requested not in STRATEGIES:
        raise CompileError(
            f"layer {layer.name!r}: unknown strategy {requested!r}; choose {', '.join(CHOICES)}"
        )
    reason = why_not(requested, g)
    if reason is not None:
        raise CompileError(f"layer {layer.name!r}: strategy {requested!r} does not apply: {reason}")
    return requested


def _transpose_between(current: Perm, wanted: Perm) -> Perm | None:
    """Permutation T with current[T[i]] == wanted[i]; None when it is the identity."""
    where = {axis: i for i, axis in enumerate(current)}
    perm = tuple(where[axis] for axis in wanted)
    return None if perm == tuple(range(len(perm))) else perm


TARGETS = ("cpu", "cuda")


def plan_layer(
    layer: LayerSpec,
    weights: LayerWeights,
    to_internal: Perm | None,
    cast_to: str | None,
    target: str = "cpu",
    strategy: str = "native",
) -> LayerPlan:
    """ONNX attributes and weights of one layer.

    target "cuda": onnxruntime runs a ConvTranspose with asymmetric pads on the CPU even in a
    CUDA session (onnxruntime#11312), which hits every Keras `same` layer with odd `ke - s`.
    There the pads become symmetric (the smaller side on both ends) and a Slice crops the rest
    from the end: the same numbers, all on the GPU. The crop is a negative end index, so
    dynamic sizes still need no shape subgraph.
    """
    g = layer_geometry(layer)
    begins, ends = g.begins, g.ends
    crop_end = (0,) * layer.rank
    if target == "cuda":
        crop_end = tuple(end - begin for begin, end in zip(begins, ends, strict=True))
        ends = begins
    rank = layer.rank
    # Keras kernel (k..., filters, in) → ONNX W (in, filters, k...): no spatial flip.
    weight = np.transpose(weights.kernel, (rank + 1, rank, *range(rank)))
    dtype = np.dtype(layer.dtype)
    weight, bias = _cast(layer.name, "kernel", weight, dtype), _cast(layer.name, "bias", weights.bias, dtype)
    strategy = choose_strategy(layer, strategy, target)
    form: ConvForm | SubpixelForm | GemmForm | None = None
    layout = internal_layout(layer.data_format, rank + 2)
    if strategy == "conv":
        form = conv_form(weight, g)
    elif strategy == "subpixel":
        form = subpixel_form(weight, g)
    elif strategy == "gemm":
        form = gemm_form(weight, g)
        layout = channels_last_layout(layer.data_format, rank + 2)
    keras_last_axis = layout.index(rank + 1)
    return LayerPlan(
        name=layer.name,
        to_internal=to_internal,
        cast_to=cast_to,
        dtype=layer.dtype,
        weight=np.ascontiguousarray(weight),
        bias=bias,
        kernel_shape=layer.kernel_size,
        strides=layer.strides,
        dilations=layer.dilation_rate,
        pads=begins + ends,
        output_padding=g.output_padding,
        crop_end=crop_end,
        activation=layer.activation,
        activation_site=ActivationSite(
            axis=keras_last_axis, rank=rank + 2, axis_size=layer.conv_output_shape[-1]
        ),
        output_shape=tuple(layer.output_shape[a] for a in layout),
        layout=layout,
        strategy=strategy,
        form=form,
    )


def _cast(layer: str, tensor: str, array: np.ndarray | None, dtype: np.dtype[Any]) -> Any:
    """Weights in the layer's dtype; values the dtype cannot hold (an initializer's constant
    of 1e300 in float32, say) are an error, not infinities in the model."""
    if array is None:
        return None
    with np.errstate(over="ignore"):
        cast = array.astype(dtype)
    if not np.all(np.isfinite(cast)):
        raise CompileError(
            f"layer {layer!r}: its {tensor} overflows {dtype} (check the initializer's arguments)"
        )
    return cast


def layer_weights(spec: ModelSpec, index: int, seed: int | None = None) -> LayerWeights:
    """The weights of layer `index`: from the spec, else from its initializers, seeded by the
    layer's own `seed` or by the model seed (`seed` overrides the spec's) and the layer's index."""
    layer = spec.layers[index]
    if layer.weights is not None:
        return layer.weights
    base_seed = spec.seed if seed is None else seed
    layer_seed = layer.seed if layer.seed is not None else base_seed * 1000 + index
    return initial_weights(
        layer.kernel_initializer, layer.bias_initializer, layer.kernel_shape, layer.use_bias, layer_seed
    )


def plan_model(
    spec: ModelSpec,
    opset: int = DEFAULT_OPSET,
    seed: int | None = None,
    metadata: tuple[tuple[str, str], ...] = (),
    target: str = "cpu",
    strategy: str | None = None,
) -> LoweringPlan:
    """Plan every layer of the chain; weights not given in the spec come from the initializers.

    `strategy` (any of `strategies.CHOICES` but tune, which the compiler resolves first) overrides
    the spec's per-layer and model-wide choices."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise CompileError(f"opset {opset} is not supported: choose {MIN_OPSET} to {MAX_OPSET}")
    if target not in TARGETS:
        raise CompileError(f"target {target!r} is not supported: choose {' or '.join(TARGETS)}")
    tensor_rank = len(spec.input_shape)
    current: Perm = tuple(range(tensor_rank))  # the graph input is the Keras tensor itself
    dtype = spec.input_dtype
    layers = []
    origins = {}
    strategies: dict[str, str] = {}
    for index, layer in enumerate(spec.layers):
        weights = layer_weights(spec, index, seed)
        origins[layer.name] = weights.origin
        requested = strategy or layer.strategy or spec.strategy
        chosen = choose_strategy(layer, requested, target)
        strategies[layer.name] = chosen
        wanted = (channels_last_layout if chosen == "gemm" else internal_layout)(
            layer.data_format, tensor_rank
        )
        to_internal = _transpose_between(current, wanted)
        cast_to = layer.dtype if layer.dtype != dtype else None
        layers.append(plan_layer(layer, weights, to_internal, cast_to, target, chosen))
        current, dtype = wanted, layer.dtype
    return LoweringPlan(
        name=spec.name,
        opset=opset,
        input_name=spec.input_name,
        input_shape=spec.input_shape,
        input_dtype=spec.input_dtype,
        output_name=spec.output_name,
        output_shape=spec.output_shape,
        output_dtype=spec.output_dtype,
        layers=tuple(layers),
        to_keras=_transpose_between(current, tuple(range(tensor_rank))),
        output_cast=spec.output_dtype if spec.output_dtype != dtype else None,
        metadata=(
            *metadata,
            ("deconv_compiler.weights", json.dumps(origins, sort_keys=True)),
            ("deconv_compiler.strategies", json.dumps(strategies, sort_keys=True)),
        ),
    )
