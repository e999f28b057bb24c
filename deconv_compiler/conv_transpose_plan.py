"""A transposed convolution's plan: its strategy by one precedence (command line > layer > model
> `auto`), `auto` by the measured rule, and its ONNX attributes and weights in that strategy's form."""

from __future__ import annotations

import numpy as np

from deconv_compiler import geometry
from deconv_compiler.activations import ActivationSite
from deconv_compiler.conv_layer import ConvTransposeLayer
from deconv_compiler.errors import CompileError
from deconv_compiler.ir import ConvTransposeOp, Graph, Node
from deconv_compiler.options import CompileOptions
from deconv_compiler.plan import ConvPlan
from deconv_compiler.plan_context import cast_weights, channels_last_layout, internal_layout
from deconv_compiler.strategies import (
    CHOICES,
    FORMS,
    STRATEGIES,
    LayerGeometry,
    auto_strategy,
    mobile_strategy,
    why_not,
)
from deconv_compiler.weights import LayerWeights


def requested_strategy(options: CompileOptions, layer: ConvTransposeLayer, graph: Graph) -> str:
    """What is asked of a layer: the command line over the layer over the model over `auto`."""
    return options.strategy or layer.strategy or graph.strategy or "auto"


def layers_to_tune(graph: Graph, options: CompileOptions) -> tuple[Node, ...]:
    """The transposed convolutions whose strategy the tuner must time (they ask for `tune`)."""
    return tuple(
        node
        for node in graph.nodes
        if isinstance(node.op, ConvTransposeOp)
        and requested_strategy(options, node.op.layer, graph) == "tune"
    )


def layer_geometry(layer: ConvTransposeLayer) -> LayerGeometry:
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


def choose_strategy(layer: ConvTransposeLayer, requested: str, target: str, dtype: str) -> str:
    """`requested` checked against the layer (a forced strategy that cannot apply is an error),
    or `auto` resolved by its rule. `auto` keeps the native graph on the CUDA target and for
    float16/float64 layers: the rule was measured for float32 on the CPU provider. On the mobile
    target, `auto` takes the lowering NNAPI and CoreML run, whatever the dtype."""
    g = layer_geometry(layer)
    if requested == "auto" and target == "mobile":
        return mobile_strategy(g)
    if requested == "auto":
        return auto_strategy(g, layer.data_format) if target == "cpu" and dtype == "float32" else "native"
    if requested not in STRATEGIES:
        raise CompileError(
            f"layer {layer.name!r}: unknown strategy {requested!r}; choose {', '.join(CHOICES)}"
        )
    reason = why_not(requested, g)
    if reason is not None:
        raise CompileError(f"layer {layer.name!r}: strategy {requested!r} does not apply: {reason}")
    return requested


def plan_conv(
    layer: ConvTransposeLayer, weights: LayerWeights, dtype: str, target: str, strategy: str
) -> ConvPlan:
    """ONNX attributes and weights of one transposed convolution by `strategy` (already chosen)."""
    rank = layer.rank
    # Keras kernel (k..., filters, in) → ONNX W (in, filters, k...): no spatial flip.
    weight = np.transpose(weights.kernel, (rank + 1, rank, *range(rank)))
    np_dtype = np.dtype(dtype)
    weight = cast_weights(layer.name, "kernel", weight, np_dtype)
    bias = None if weights.bias is None else cast_weights(layer.name, "bias", weights.bias, np_dtype)
    form = FORMS[strategy](weight, layer_geometry(layer), target)
    layout = (channels_last_layout if strategy == "gemm" else internal_layout)(layer.data_format, rank + 2)
    return ConvPlan(
        name=layer.name,
        dtype=dtype,
        bias=bias,
        kernel_shape=layer.kernel_size,
        strides=layer.strides,
        dilations=layer.dilation_rate,
        activation=layer.activation,
        activation_site=ActivationSite(
            axis=layout.index(rank + 1), rank=rank + 2, axis_size=layer.conv_output_shape[-1]
        ),
        layout=layout,
        form=form,
    )
