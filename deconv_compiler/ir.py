"""The one intermediate representation: a frozen graph that both front ends produce and the
planner consumes.

A `Graph` is inputs, nodes in topological order and outputs. Every tensor is a `Value` with a
name, a Keras-layout shape (batch first, None where dynamic) and a dtype. A `Node` is one call of
a Keras layer: its name (a shared layer's calls share it), the class it came from, a typed op
(the `Op` union below, in Keras vocabulary: Keras axes, Keras weight layouts), the values it
reads and the one it writes, and its dtype policy. Provenance says where the graph came from
(a spec's normalized text, a Keras file), for the model's metadata.

The spec front end (`spec.spec_graph`) makes a chain of `ConvTransposeOp` nodes; the Keras front
end (`keras_model`) makes any Sequential or Functional DAG of the supported layers. Nothing here
knows about ONNX.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from deconv_compiler.dtypes import compute_dtype, io_dtype

if TYPE_CHECKING:
    from pathlib import Path

    from deconv_compiler.conv_layer import ConvTransposeLayer
    from deconv_compiler.weights import InitializerWeights, LayerWeights

Shape = tuple[int | None, ...]


# --- the ops: one frozen record per kind of layer -----------------------------------------------


@dataclass(frozen=True, eq=False)
class ConvTransposeOp:
    """Conv1DTranspose/Conv2DTranspose/Conv3DTranspose with its validated arguments; weights given
    (Keras layout) or made by its initializers at compile time."""

    layer: ConvTransposeLayer
    weights: LayerWeights | InitializerWeights


@dataclass(frozen=True, eq=False)
class DenseOp:
    kernel: np.ndarray  # (in, units)
    bias: np.ndarray | None
    activation: str


@dataclass(frozen=True, eq=False)
class BatchNormOp:
    """Inference: x * inv + (beta - mean * inv), inv = gamma / sqrt(variance + epsilon) (Keras' order)."""

    axis: int  # Keras axis, non-negative
    mean: np.ndarray
    variance: np.ndarray
    gamma: np.ndarray | None
    beta: np.ndarray | None
    epsilon: float


@dataclass(frozen=True)
class ActivationOp:
    activation: str  # a name of the activation table (Keras' axis -1 for the axis-wise ones)


@dataclass(frozen=True)
class ReluOp:
    """Keras' ReLU layer: max_value, negative_slope and threshold as `activations.relu` applies them."""

    max_value: float | None
    negative_slope: float
    threshold: float


@dataclass(frozen=True)
class LeakyReluOp:
    negative_slope: float


@dataclass(frozen=True)
class EluOp:
    alpha: float


@dataclass(frozen=True, eq=False)
class PReluOp:
    alpha: np.ndarray  # input shape without batch, 1 on shared axes


@dataclass(frozen=True)
class SoftmaxOp:
    axes: tuple[int, ...]  # Keras axes, non-negative


@dataclass(frozen=True)
class IdentityOp:
    """Dropout and noise layers: the identity at inference."""


@dataclass(frozen=True)
class MergeOp:
    """Add, Subtract, Multiply, Average, Maximum, Minimum (layers or keras.ops): elementwise over
    its inputs with Keras' broadcasting (equal ranks, sizes equal or 1)."""

    function: str  # add, subtract, multiply, average, maximum, minimum, divide


@dataclass(frozen=True)
class ScalarOp:
    """keras.ops arithmetic with a Python number: `x <function> constant`, or the reverse."""

    function: str  # add, subtract, multiply, divide, maximum, minimum, power
    constant: float
    constant_first: bool = False


@dataclass(frozen=True)
class ClipOp:
    low: float | None
    high: float | None


@dataclass(frozen=True, eq=False)
class ConvOp:
    """Conv1D/2D/3D; DepthwiseConv1D/2D as a grouped conv (groups = input channels, the depthwise
    kernel reshaped to Conv's layout); SeparableConv1D/2D as that depthwise conv followed by the
    1x1 `pointwise` kernel. Bias after the last conv, then the activation."""

    rank: int
    kernel: np.ndarray  # Keras Conv layout: kernel_size + (in_channels // groups, out_channels)
    bias: np.ndarray | None  # (filters,)
    strides: tuple[int, ...]
    padding: str  # valid, same, causal (1D)
    dilation_rate: tuple[int, ...]
    groups: int
    channels_first: bool
    activation: str
    pointwise: np.ndarray | None = None  # (1,)*rank + (depthwise channels, filters)


@dataclass(frozen=True)
class PoolOp:
    """MaxPooling / AveragePooling 1D-3D. Keras' `same` average counts only real elements."""

    function: str  # max, average
    pool_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: str  # valid, same
    channels_first: bool


@dataclass(frozen=True)
class GlobalPoolOp:
    function: str  # max, average
    axes: tuple[int, ...]  # Keras spatial axes
    keepdims: bool


@dataclass(frozen=True, eq=False)
class LayerNormOp:
    """LayerNormalization: moments over `axes`; gamma/beta have the sizes of those axes."""

    axes: tuple[int, ...]  # Keras axes, non-negative, sorted
    epsilon: float
    gamma: np.ndarray | None
    beta: np.ndarray | None
    rms_scaling: bool


@dataclass(frozen=True, eq=False)
class GroupNormOp:
    """GroupNormalization: channels split into `groups`, moments over each group and all spatial axes."""

    groups: int
    axis: int  # Keras channel axis, non-negative
    epsilon: float
    gamma: np.ndarray | None  # (channels,)
    beta: np.ndarray | None


@dataclass(frozen=True)
class UnitNormOp:
    """UnitNormalization: x * min(1 / ||x||_2 over axes, 1e12) as Keras 3 computes it
    (`normalize(order=2, epsilon=1e-12)`: x / max(||x||, 1e-12); Keras 2 capped at sqrt(1e-12))."""

    axes: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class RescaleOp:
    """Rescaling: x * scale + offset; both broadcast against the Keras shape (numpy rules)."""

    scale: np.ndarray
    offset: np.ndarray


@dataclass(frozen=True, eq=False)
class NormalizeOp:
    """Normalization: (x - mean) / max(sqrt(variance), epsilon), or its inverse; mean and variance
    have the input's rank (1 on the axes not kept)."""

    mean: np.ndarray
    variance: np.ndarray
    invert: bool


@dataclass(frozen=True)
class PermuteOp:
    """Permute layer and keras.ops.transpose keeping the batch axis: output axis i is input axis
    `perm[i]` (perm[0] == 0)."""

    perm: tuple[int, ...]


@dataclass(frozen=True)
class RepeatVectorOp:
    times: int


@dataclass(frozen=True)
class SliceOp:
    """One piece of keras.ops.split: [start, stop) on a Keras axis."""

    axis: int
    start: int
    stop: int


@dataclass(frozen=True)
class SqueezeOp:
    axes: tuple[int, ...]  # Keras axes of size 1 removed (never the batch axis)


@dataclass(frozen=True)
class ExpandDimsOp:
    axes: tuple[int, ...]  # Keras axes of the output that are new (size 1; never 0)


@dataclass(frozen=True)
class ConcatenateOp:
    axis: int  # Keras axis, non-negative


@dataclass(frozen=True)
class ReshapeOp:
    target: tuple[int, ...]  # without batch; -1 at most once


@dataclass(frozen=True)
class FlattenOp:
    channels_first: bool  # Keras moves channels last before flattening


@dataclass(frozen=True)
class PadOp:
    """ZeroPadding: zeros before/after on Keras axes; Cropping: negative amounts."""

    axes: tuple[int, ...]
    begins: tuple[int, ...]
    ends: tuple[int, ...]


@dataclass(frozen=True)
class UpSampleOp:
    axes: tuple[int, ...]  # Keras axes
    factors: tuple[int, ...]
    interpolation: str  # "nearest" (repeat) or "bilinear" (half-pixel, as Keras' image.resize)
    channel_axis: int


Op = (
    ConvTransposeOp | DenseOp | BatchNormOp | ActivationOp | ReluOp | LeakyReluOp | EluOp | PReluOp
    | SoftmaxOp | IdentityOp | MergeOp | ConcatenateOp | ReshapeOp | FlattenOp | PadOp | UpSampleOp
    | ScalarOp | ClipOp | ConvOp | PoolOp | GlobalPoolOp | LayerNormOp | GroupNormOp | UnitNormOp
    | RescaleOp | NormalizeOp | PermuteOp | RepeatVectorOp | SliceOp | SqueezeOp | ExpandDimsOp
)  # fmt: skip


# --- values, nodes, graph -----------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    """A tensor: Keras layout, batch first."""

    name: str
    shape: Shape
    dtype: str


@dataclass(frozen=True, eq=False)
class Node:
    """One call of a layer: reads `inputs` (value names), writes `output`."""

    name: str  # the layer's name; the scope of its ONNX nodes
    kind: str  # the Keras class it came from, as messages and metadata name it
    op: Op
    inputs: tuple[str, ...]
    output: Value
    policy: str = "float32"  # dtype policy: a dtype, or mixed_float16
    # The layer object called (its weight path): the calls of a shared layer, and of the layers of
    # a nested model called twice (`block/conv`, `block:1/conv`), share it and so their weights.
    layer: str = ""

    @property
    def weights_of(self) -> str:
        """Whose weights this node uses: its layer object's, else its own name's."""
        return self.layer or self.name

    @property
    def dtype(self) -> str:
        """What the layer computes in; its inputs are cast to it."""
        return compute_dtype(self.policy)

    @property
    def io_dtype(self) -> str:
        """What the layer gives as a model output (float32 under a mixed policy)."""
        return io_dtype(self.policy)


@dataclass(frozen=True)
class Output:
    """A graph output: `value` (a value name) under the name `name`, declared shape and dtype."""

    name: str
    value: str
    shape: Shape
    dtype: str


@dataclass(frozen=True)
class SpecOrigin:
    """A spec: its normalized Keras config (JSON-able, no weight values)."""

    config: Mapping[str, Any]


@dataclass(frozen=True)
class KerasOrigin:
    """A saved Keras model: the file as given, its format (keras, h5, json) and Keras version."""

    file: str
    format: str
    keras_version: str | None


@dataclass(frozen=True, eq=False)
class Graph:
    name: str
    inputs: tuple[Value, ...]
    nodes: tuple[Node, ...]  # topological order
    outputs: tuple[Output, ...]
    origin: SpecOrigin | KerasOrigin
    strategy: str = "auto"  # the model-wide lowering strategy (a spec's `strategy:`)
    seed: int = 0  # seeds the weights that initializers make (a spec's `seed:`)
    sources: tuple[Path, ...] = ()  # the files it was read from: an output may replace none of them

    @cached_property
    def values(self) -> Mapping[str, Value]:
        """Every value by name: the inputs and each node's output."""
        return {v.name: v for v in (*self.inputs, *(node.output for node in self.nodes))}
