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
class AddOp:
    pass


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
    | SoftmaxOp | IdentityOp | AddOp | ConcatenateOp | ReshapeOp | FlattenOp | PadOp | UpSampleOp
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

    @cached_property
    def values(self) -> Mapping[str, Value]:
        """Every value by name: the inputs and each node's output."""
        return {v.name: v for v in (*self.inputs, *(node.output for node in self.nodes))}
