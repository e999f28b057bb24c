"""What the op planners share: the planning state (`PlanContext`: the steps so far, each tensor's
layout and dtype, Transposes and Casts made once), the layout helpers, the weight cast that refuses
overflow, the small step helpers, and `registrar`, which makes the decorator that files an op
planner in its module's own table."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deconv_compiler.activations import ActivationSite
from deconv_compiler.dtypes import compute_dtype
from deconv_compiler.errors import CompileError
from deconv_compiler.ir import Graph, Node
from deconv_compiler.options import CompileOptions
from deconv_compiler.plan import ActivationStep, CastStep, Constant, NodeStep, Perm, Step, ViewStep

# --- layouts and weights -------------------------------------------------------------------------


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


def cast_weights(layer: str, tensor: str, array: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """Weights in the layer's dtype; values the dtype cannot hold (an initializer's constant
    of 1e300 in float32, a Keras weight of 1e5 compiled in float16) are an error, not infinities."""
    with np.errstate(over="ignore"):
        cast = array.astype(dtype, copy=False)
    if not np.isfinite(cast).all():
        largest = float(np.max(np.abs(array)))
        raise CompileError(
            f"layer {layer!r}: its {tensor} holds values beyond the {dtype} range (|x| up to "
            f"{largest:.4g}); compile it in a wider dtype (--dtype) or check the initializer's arguments"
        )
    return cast


# --- the planning state ------------------------------------------------------------------------


@dataclass
class PlanContext:
    """One `plan_graph` call's state, which every op planner reads and extends: the steps so far,
    each tensor's layout and dtype, IR values' tensors, and the Transposes and Casts already made."""

    graph: Graph
    options: CompileOptions
    tuned: Mapping[str, str]
    steps: list[Step] = field(default_factory=list)
    strategies: dict[str, str] = field(default_factory=dict)
    layouts: dict[str, Perm] = field(default_factory=dict)  # tensor id → physical layout
    dtypes: dict[str, str] = field(default_factory=dict)  # tensor id → dtype
    aliases: dict[str, str] = field(default_factory=dict)  # IR value → tensor id
    converted: dict[tuple[str, Perm | str], str] = field(default_factory=dict)
    counter: int = 0

    def new_id(self) -> str:
        self.counter += 1
        return f"%{self.counter}"

    def policy(self, node: Node) -> str:
        return self.options.dtype or node.policy

    def node(
        self, scope: str, dtype: str, op_type: str, inputs: Sequence[str | Constant], **attrs: Any
    ) -> str:
        out = self.new_id()
        self.steps.append(NodeStep(scope, dtype, op_type, tuple(inputs), out, tuple(attrs.items())))
        self.dtypes[out] = dtype
        return out

    def tensor(self, name: str) -> str:
        return self.aliases.get(name, name)

    def in_layout(self, scope: str, tensor: str, wanted: Perm) -> str:
        """`tensor` permuted into `wanted` (a Transpose only where the layouts differ)."""
        current = self.layouts[tensor]
        if current == wanted:
            return tensor
        if (tensor, wanted) in self.converted:  # one Transpose per tensor and layout, however many readers
            return self.converted[tensor, wanted]
        where = {axis: i for i, axis in enumerate(current)}
        dtype = self.dtypes[tensor]
        out = self.node(scope, dtype, "Transpose", [tensor], perm=[where[axis] for axis in wanted])
        self.layouts[out] = wanted
        self.converted[tensor, wanted] = out
        return out

    def cast(self, scope: str, tensor: str, dtype: str) -> str:
        """`tensor` in `dtype` (a Cast only where it differs, one per tensor and dtype)."""
        if self.dtypes[tensor] == dtype:
            return tensor
        if (tensor, dtype) not in self.converted:
            out = self.new_id()
            self.steps.append(CastStep(scope, dtype, tensor, out))
            self.dtypes[out] = dtype
            self.layouts[out] = self.layouts[tensor]
            self.converted[tensor, dtype] = out
        return self.converted[tensor, dtype]

    def operand(self, scope: str, name: str, dtype: str, layout: Perm | None = None) -> str:
        """IR value `name` as a layer computing in `dtype` reads it: in `layout` if given."""
        tensor = self.tensor(name)
        if layout is not None:
            tensor = self.in_layout(scope, tensor, layout)
        return self.cast(scope, tensor, dtype)

    def define(self, name: str, tensor: str, layout: Perm) -> None:
        self.aliases[name] = tensor
        self.layouts[tensor] = layout

    def floats(self, layer: str, array: Any, dtype: str, name: str | None = None) -> Constant:
        """A constant of `layer` in its compute dtype; one that overflows it is an error, not an infinity."""
        value = np.asarray(array)
        if not np.issubdtype(value.dtype, np.floating):
            value = value.astype(np.float64)
        cast = cast_weights(layer, name or "constant", value, np.dtype(dtype))
        return Constant(np.ascontiguousarray(cast), name)


# --- op planners and their tables ---------------------------------------------------------------


OpPlanner = Callable[[PlanContext, Node, Any], None]


def registrar(table: dict[type, OpPlanner]) -> Callable[..., Callable[[OpPlanner], OpPlanner]]:
    """A decorator maker for `table`: `@plans(SomeOp, OtherOp)` files the op planner under each type."""

    def plans(*op_types: type) -> Callable[[OpPlanner], OpPlanner]:
        def register(planner: OpPlanner) -> OpPlanner:
            for op_type in op_types:
                table[op_type] = planner
            return planner

        return register

    return plans


# --- helpers the op planners share ----------------------------------------------------------------


def single_input(p: PlanContext, node: Node) -> tuple[str, str, Perm]:
    """A one-input layer's input as it reads it (its compute dtype, the layout the tensor has),
    that dtype and that layout."""
    dtype = compute_dtype(p.policy(node))
    x = p.operand(node.name, node.inputs[0], dtype)
    return x, dtype, p.layouts[x]


def apply_activation(p: PlanContext, node: Node, x: str, activation: str, dtype: str) -> str:
    layout = p.layouts[x]
    rank = len(layout)
    axis = layout.index(rank - 1)
    last = node.output.shape[-1]
    in_last = last if activation != "glu" or last is None else 2 * last
    out = p.new_id()
    p.steps.append(ActivationStep(node.name, dtype, x, out, activation, ActivationSite(axis, rank, in_last)))
    p.dtypes[out] = dtype
    p.layouts[out] = layout
    return out


def define_activated(p: PlanContext, node: Node, y: str, layout: Perm, activation: str, dtype: str) -> None:
    """A linear layer's result `y` (in `layout`), then its activation as the next node (the form
    onnxruntime fuses into Conv), as the node's output."""
    p.layouts[y] = layout
    if activation != "linear":
        y = apply_activation(p, node, y, activation, dtype)
    p.define(node.output.name, y, layout)


def i64(values: Any) -> Constant:
    return Constant(np.asarray(values, dtype=np.int64))


def reduce(
    p: PlanContext, scope: str, dtype: str, op_type: str, x: str, axes: Sequence[int], keepdims: bool = True
) -> str:
    # axes moved from an attribute to an input: ReduceSum's in opset 13, the other reductions' in 18
    if p.options.opset >= (13 if op_type == "ReduceSum" else 18):
        return p.node(scope, dtype, op_type, [x, i64(list(axes))], keepdims=int(keepdims))
    return p.node(scope, dtype, op_type, [x], axes=list(axes), keepdims=int(keepdims))


def axes_node(p: PlanContext, scope: str, dtype: str, op_type: str, x: str, axes: Sequence[int]) -> str:
    """Squeeze / Unsqueeze: their axes became an input in opset 13."""
    if p.options.opset >= 13:
        return p.node(scope, dtype, op_type, [x, i64(list(axes))])
    return p.node(scope, dtype, op_type, [x], axes=list(axes))


def view(p: PlanContext, scope: str, x: str, layout: Perm) -> str:
    out = p.new_id()
    p.steps.append(ViewStep(scope, p.dtypes[x], x, out))
    p.dtypes[out] = p.dtypes[x]
    p.layouts[out] = layout
    return out


def without_axes(layout: Perm, axes: Sequence[int]) -> Perm:
    """The layout of a tensor once Keras `axes` are gone: the rest keep their physical order."""
    return tuple(a - sum(1 for r in axes if r < a) for a in layout if a not in axes)


def full_rank(array: np.ndarray, layout: Perm) -> np.ndarray:
    """A constant that broadcasts against the Keras shape (numpy rules), for a tensor in `layout`."""
    if array.ndim == 0:
        return array
    rank = len(layout)
    return np.transpose(array.reshape((1,) * (rank - array.ndim) + array.shape), layout)


def along(array: np.ndarray, axes: Sequence[int], layout: Perm) -> np.ndarray:
    """`array`, sized like the Keras `axes` (in order), as a constant for a tensor in `layout`."""
    shape = [1] * len(layout)
    for axis, size in zip(axes, array.shape, strict=True):
        shape[axis] = size
    return np.transpose(array.reshape(shape), layout)


def spatial_shape(p: PlanContext, node: Node, channels_first: bool) -> tuple[int | None, ...]:
    shape = p.graph.values[node.inputs[0]].shape
    return tuple(shape[2:] if channels_first else shape[1:-1])
