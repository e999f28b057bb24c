"""What the op planners share: the planning state (`PlanContext`: the steps so far, each tensor's
layout and dtype, Transposes and Casts made once, each layer's weights made once however often
it is called), the layout helpers, the weight cast that refuses overflow, the small step helpers,
and `registrar`, which makes the decorator that files an op planner in its module's own table."""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, TypeVar

import numpy as np

from deconv_compiler.activations import ActivationSite
from deconv_compiler.dtypes import compute_dtype
from deconv_compiler.errors import CompileError
from deconv_compiler.ir import Graph, Node
from deconv_compiler.options import CompileOptions
from deconv_compiler.plan import ActivationStep, CastStep, Constant, NodeStep, Perm, Step, ViewStep

T = TypeVar("T")

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


def cast_weights(
    layer: str, tensor: str, array: np.ndarray, dtype: np.dtype[Any], contiguous: bool = False
) -> np.ndarray:
    """Weights in the layer's dtype (`contiguous`: C-ordered, cast and laid out in one pass, as an
    integer kernel is widened straight to its dtype); values the dtype cannot hold (an
    initializer's constant of 1e300 in float32, a Keras weight of 1e5 compiled in float16) are an
    error, not infinities."""
    with np.errstate(over="ignore", invalid="ignore"):
        cast = np.asarray(array, dtype=dtype, order="C") if contiguous else array.astype(dtype, copy=False)
    if not all_finite(cast):
        largest = max(-float(np.min(array)), float(np.max(array)))
        raise CompileError(
            f"layer {layer!r}: its {tensor} holds values beyond the {dtype} range (|x| up to "
            f"{largest:.4g}); compile it in a wider dtype (--dtype) or check the initializer's arguments"
        )
    return cast


_CHUNK = 2**20


def all_finite(array: np.ndarray) -> bool:
    """No NaN or infinity, checked a chunk at a time: no mask as large as a big kernel."""
    if array.dtype.kind != "f":
        return True
    flat = array.reshape(-1)
    return all(np.isfinite(flat[i : i + _CHUNK]).all() for i in range(0, flat.size, _CHUNK))


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal arrays, bit for bit (so -0.0 is not 0.0)."""
    if a is b:
        return True
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    flat_a, flat_b = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1)
    return bool(np.array_equal(flat_a.view(np.uint8), flat_b.view(np.uint8)))


def _interned(value: Any, pool: list[np.ndarray]) -> Any:
    """`value` (frozen plan data: dataclasses, tuples, arrays) with each array replaced by an equal
    one of `pool` (added to it when new); unchanged parts stay the same objects."""
    if isinstance(value, np.ndarray):
        same = next((array for array in pool if same_values(array, value)), None)
        if same is None:
            pool.append(value)
            return value
        return same
    if is_dataclass(value) and not isinstance(value, type):
        changed = {
            f.name: new
            for f in fields(value)
            if f.init and (new := _interned(getattr(value, f.name), pool)) is not getattr(value, f.name)
        }
        return replace(value, **changed) if changed else value
    if type(value) is tuple:
        items = tuple(_interned(item, pool) for item in value)
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


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
    # Named weights made so far, by the layer object (`Node.weights_of`), the name after the
    # node's scope (`/kernel`) and dtype: a shared layer's calls (a conv called 300 times, a nested
    # model called twice) get its one constant, which the builder writes once.
    weights: dict[tuple[str, str, str], list[Constant]] = field(default_factory=dict)
    layer_arrays: dict[str, list[np.ndarray]] = field(default_factory=dict)  # the same, in layer plans

    def __post_init__(self) -> None:
        # node name → the layer object whose weights it uses (`Node.weights_of`)
        self.weights_of = {node.name: node.weights_of for node in self.graph.nodes}

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
        """A constant of `layer` in its compute dtype; one that overflows it is an error, not an
        infinity. A named one (a weight) is made once: a later call of the layer with the same
        values gets the same constant."""
        value = np.asarray(array)
        if name is None:
            if not np.issubdtype(value.dtype, np.floating):
                value = value.astype(np.float64)
            return Constant(cast_weights(layer, "constant", value, np.dtype(dtype), contiguous=True))
        cast = cast_weights(layer, name, value, np.dtype(dtype), contiguous=True)
        owner = self.weights_of.get(layer, layer)
        made = self.weights.setdefault((owner, name.removeprefix(layer), dtype), [])
        same = next((constant for constant in made if same_values(constant.value, cast)), None)
        if same is not None:
            return same  # this call's copy is dropped here: the plan holds one
        made.append(Constant(cast, name))
        return made[-1]

    def shared(self, layer: str, made: T) -> T:
        """`made` (a layer's frozen plan, its weights in it) holding, for each of its arrays, the
        equal one an earlier call of the layer planned (calls on other sizes too): the plan holds
        one copy, and the builder writes it once."""
        pool = self.layer_arrays.setdefault(self.weights_of.get(layer, layer), [])
        return typing.cast(T, _interned(made, pool))


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
