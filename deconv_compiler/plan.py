"""The plan: the graph in ONNX vocabulary, free of onnx.

Frozen data: `planner.plan_graph` makes it, `builder.build_model` turns each step into ONNX nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from deconv_compiler.activations import ActivationSite
from deconv_compiler.ir import Shape
from deconv_compiler.strategies import Form

Perm = tuple[int, ...]  # a physical layout: the Keras axes in the order the data holds them


@dataclass(frozen=True, eq=False)
class ConvPlan:
    """One transposed convolution as ONNX: its strategy's form, then the bias, then the activation."""

    name: str
    dtype: str
    bias: np.ndarray | None
    kernel_shape: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    activation: str
    activation_site: ActivationSite
    layout: Perm  # the Keras axes in the order this layer takes and gives them
    form: Form

    @property
    def strategy(self) -> str:
        return self.form.strategy


@dataclass(frozen=True, eq=False)
class Constant:
    """An initializer, already in its final dtype; `name` for weights, None for small constants."""

    value: np.ndarray
    name: str | None = None


@dataclass(frozen=True, eq=False)
class NodeStep:
    """One ONNX node; inputs are tensor ids or constants."""

    scope: str
    dtype: str
    op_type: str
    inputs: tuple[str | Constant, ...]
    output: str
    attrs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, eq=False)
class ConvStep:
    scope: str
    dtype: str
    input: str
    output: str
    layer: ConvPlan


@dataclass(frozen=True, eq=False)
class CastStep:
    scope: str
    dtype: str  # the dtype cast to
    input: str
    output: str


@dataclass(frozen=True, eq=False)
class ActivationStep:
    scope: str
    dtype: str
    input: str
    output: str
    activation: str
    site: ActivationSite


@dataclass(frozen=True, eq=False)
class ViewStep:
    """No ONNX node: `output` is the tensor `input` under a new id, with its own layout (a
    Permute relabels the axes of the data it reads, it moves nothing)."""

    scope: str
    dtype: str
    input: str
    output: str


Step = NodeStep | ConvStep | CastStep | ActivationStep | ViewStep


@dataclass(frozen=True)
class PlanValue:
    name: str
    shape: Shape  # Keras layout
    dtype: str


@dataclass(frozen=True, eq=False)
class Plan:
    name: str
    opset: int
    inputs: tuple[PlanValue, ...]
    outputs: tuple[tuple[PlanValue, str], ...]  # graph output, the tensor id that holds it
    steps: tuple[Step, ...]
    strategies: Mapping[str, str]  # transposed-conv layer → its strategy
    weight_origins: Mapping[str, str]  # transposed-conv layer → where its weights came from
