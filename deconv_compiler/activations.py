"""Keras 3 activation names → ONNX node sequences at a given opset.

One table, name → lowering. Each lowering receives an `Emitter` (implemented by the model
builder; this module never touches onnx.helper) and follows the Keras formula, which differs
from ONNX defaults in several places (commented where it does). Where the target opset lacks
the fused op, a composite of older ops is emitted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Emitter(Protocol):
    """What a lowering needs from the graph under construction."""

    opset: int
    float_type: int  # ONNX element type of the activation's tensor

    def op(self, op_type: str, inputs: list[str], n_outputs: int = 1, **attrs: Any) -> list[str]: ...

    def const(self, value: np.ndarray | float) -> str:
        """A constant; Python floats and float arrays take the graph's float type."""
        ...


@dataclass(frozen=True)
class ActivationSite:
    """Where an activation applies: `axis` is Keras' axis -1 in the graph's NC... layout."""

    axis: int
    rank: int  # tensor rank (batch + channels + spatial)
    axis_size: int | None  # None when the axis is dynamic


Lowering = Callable[[Emitter, str, ActivationSite], str]
FLOAT32 = 1  # onnx.TensorProto.FLOAT
FLOAT64 = 11  # onnx.TensorProto.DOUBLE


def _one(em: Emitter, op_type: str, inputs: list[str], **attrs: Any) -> str:
    return em.op(op_type, inputs, **attrs)[0]


def _clip(em: Emitter, x: str, low: float, high: float) -> str:
    return _one(em, "Clip", [x, em.const(low), em.const(high)])  # min/max are inputs from opset 11


def _mul(em: Emitter, a: str, b: str) -> str:
    return _one(em, "Mul", [a, b])


def _softplus(em: Emitter, x: str) -> str:
    return _one(em, "Softplus", [x])


def _hard_sigmoid(em: Emitter, x: str) -> str:
    # Keras 3: relu6(x + 3) / 6 = clip(x/6 + 0.5, 0, 1); ONNX's default alpha 0.2 is Keras 2's formula.
    return _one(em, "HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)


def _relu(em: Emitter, x: str, site: ActivationSite) -> str:
    return _one(em, "Relu", [x])


def _relu6(em: Emitter, x: str, site: ActivationSite) -> str:
    return _clip(em, x, 0.0, 6.0)


def _hard_tanh(em: Emitter, x: str, site: ActivationSite) -> str:
    return _clip(em, x, -1.0, 1.0)


def _leaky_relu(em: Emitter, x: str, site: ActivationSite) -> str:
    return _one(em, "LeakyRelu", [x], alpha=0.2)  # Keras' activation default; ONNX's is 0.01


def _elu(em: Emitter, x: str, site: ActivationSite) -> str:
    return _one(em, "Elu", [x], alpha=1.0)


def _selu(em: Emitter, x: str, site: ActivationSite) -> str:
    return _one(em, "Selu", [x], alpha=1.6732632423543772, gamma=1.0507009873554805)


def _celu(em: Emitter, x: str, site: ActivationSite) -> str:
    if em.opset >= 12 and em.float_type == FLOAT32:  # ONNX Celu is defined for float32 only
        return _one(em, "Celu", [x], alpha=1.0)
    # max(0, x) + min(0, exp(x) - 1) with alpha 1
    expm1 = _one(em, "Sub", [_one(em, "Exp", [x]), em.const(1.0)])
    return _one(em, "Add", [_one(em, "Relu", [x]), _one(em, "Min", [expm1, em.const(0.0)])])


def _gelu(em: Emitter, x: str, site: ActivationSite) -> str:
    # Keras' gelu activation is the exact erf form (approximate=False).
    if em.opset >= 20:
        return _one(em, "Gelu", [x], approximate="none")
    erf = _one(em, "Erf", [_one(em, "Mul", [x, em.const(1.0 / math.sqrt(2.0))])])
    half_x = _mul(em, x, em.const(0.5))
    return _mul(em, half_x, _one(em, "Add", [erf, em.const(1.0)]))


def _gelu_tanh(em: Emitter, x: str, site: ActivationSite) -> str:
    # keras.ops.gelu's default (approximate=True): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    if em.opset >= 20:
        return _one(em, "Gelu", [x], approximate="tanh")
    cube = _mul(em, _mul(em, x, x), x)
    inner = _one(em, "Add", [x, _mul(em, cube, em.const(0.044715))])
    tanh = _one(em, "Tanh", [_mul(em, inner, em.const(math.sqrt(2.0 / math.pi)))])
    return _mul(em, _mul(em, x, em.const(0.5)), _one(em, "Add", [tanh, em.const(1.0)]))


def _sigmoid(em: Emitter, x: str, site: ActivationSite) -> str:
    return _one(em, "Sigmoid", [x])


def _silu(em: Emitter, x: str, site: ActivationSite) -> str:
    # ONNX has Swish from opset 24, but onnxruntime 1.31 has no kernel for it: keep x * sigmoid(x).
    return _mul(em, x, _one(em, "Sigmoid", [x]))


def _hard_silu(em: Emitter, x: str, site: ActivationSite) -> str:
    if em.opset >= 14:
        return _one(em, "HardSwish", [x])  # x * clip(x/6 + 0.5, 0, 1), Keras' formula
    return _mul(em, x, _hard_sigmoid(em, x))


def _hard_sigmoid_act(em: Emitter, x: str, site: ActivationSite) -> str:
    return _hard_sigmoid(em, x)


def _sparse_sigmoid(em: Emitter, x: str, site: ActivationSite) -> str:
    return _one(em, "HardSigmoid", [x], alpha=0.5, beta=0.5)  # clip((x + 1) / 2, 0, 1)


def _tanh(em: Emitter, x: str, site: ActivationSite) -> str:
    return _one(em, "Tanh", [x])


def _tanh_shrink(em: Emitter, x: str, site: ActivationSite) -> str:
    return _one(em, "Sub", [x, _one(em, "Tanh", [x])])


def _hard_shrink(em: Emitter, x: str, site: ActivationSite) -> str:
    return _one(em, "Shrink", [x], lambd=0.5, bias=0.0)  # x where |x| > 0.5, else 0


def _soft_shrink(em: Emitter, x: str, site: ActivationSite) -> str:
    return _one(em, "Shrink", [x], lambd=0.5, bias=0.5)  # x -/+ 0.5 beyond ±0.5, else 0


def _softplus_act(em: Emitter, x: str, site: ActivationSite) -> str:
    return _softplus(em, x)


def _softsign(em: Emitter, x: str, site: ActivationSite) -> str:
    return _one(em, "Softsign", [x])


def _exponential(em: Emitter, x: str, site: ActivationSite) -> str:
    return _one(em, "Exp", [x])


def _log_sigmoid(em: Emitter, x: str, site: ActivationSite) -> str:
    return _one(em, "Neg", [_softplus(em, _one(em, "Neg", [x]))])  # -softplus(-x), stable


def _mish(em: Emitter, x: str, site: ActivationSite) -> str:
    if em.opset >= 18:
        return _one(em, "Mish", [x])
    return _mul(em, x, _one(em, "Tanh", [_softplus(em, x)]))


def _squareplus(em: Emitter, x: str, site: ActivationSite) -> str:
    # (x + sqrt(x^2 + b)) / 2 with Keras' b = 4
    root = _one(em, "Sqrt", [_one(em, "Add", [_mul(em, x, x), em.const(4.0)])])
    return _mul(em, _one(em, "Add", [x, root]), em.const(0.5))


def _sparse_plus(em: Emitter, x: str, site: ActivationSite) -> str:
    # 0 for x <= -1, x for x >= 1, (x + 1)^2 / 4 in between
    shifted = _one(em, "Add", [_clip(em, x, -1.0, 1.0), em.const(1.0)])
    middle = _mul(em, _mul(em, shifted, shifted), em.const(0.25))
    below_one = _one(em, "Less", [x, em.const(1.0)])
    return _one(em, "Where", [below_one, middle, x])


def _on_last_axis(em: Emitter, x: str, site: ActivationSite, body: Callable[[str, int], str]) -> str:
    """Apply `body(tensor, axis)` on the Keras axis; below opset 13 Softmax/LogSoftmax flatten
    everything from `axis` on, so the axis is moved last first."""
    last = site.rank - 1
    if em.opset >= 13 or site.axis == last:
        return body(x, site.axis)
    perm = list(range(site.rank))
    perm[site.axis], perm[last] = perm[last], perm[site.axis]
    moved = _one(em, "Transpose", [x], perm=perm)
    return _one(em, "Transpose", [body(moved, last)], perm=perm)


def _softmax(em: Emitter, x: str, site: ActivationSite) -> str:
    return _on_last_axis(em, x, site, lambda t, axis: _one(em, "Softmax", [t], axis=axis))


def _log_softmax(em: Emitter, x: str, site: ActivationSite) -> str:
    return _on_last_axis(em, x, site, lambda t, axis: _one(em, "LogSoftmax", [t], axis=axis))


def _glu(em: Emitter, x: str, site: ActivationSite) -> str:
    # Keras glu: a * sigmoid(b) where a, b are the two halves of axis -1.
    if site.axis_size is None:
        half = _one(em, "Div", [_axis_length(em, x, site), em.const(np.array([2], np.int64))])
        a = _slice(em, x, em.const(np.array([0], np.int64)), half, site.axis)
        b = _slice(em, x, half, em.const(np.array([np.iinfo(np.int64).max], np.int64)), site.axis)
    else:
        n = site.axis_size // 2
        a = _slice(em, x, em.const(np.array([0], np.int64)), em.const(np.array([n], np.int64)), site.axis)
        b = _slice(
            em,
            x,
            em.const(np.array([n], np.int64)),
            em.const(np.array([2 * n], np.int64)),
            site.axis,
        )
    return _mul(em, a, _one(em, "Sigmoid", [b]))


def _slice(em: Emitter, x: str, start: str, end: str, axis: int) -> str:
    return _one(em, "Slice", [x, start, end, em.const(np.array([axis], np.int64))])


def _axis_length(em: Emitter, x: str, site: ActivationSite) -> str:
    shape = _one(em, "Shape", [x])
    index = em.const(np.array([site.axis], np.int64))
    return _one(em, "Gather", [shape, index], axis=0)


def _sparsemax(em: Emitter, x: str, site: ActivationSite) -> str:
    """Keras 3.15.1's sparsemax: max(z - tau, 0) along the Keras axis.

    Keras 3.15.1 computes tau as (sum of the prefix sums over the support - 1) / k, not the
    paper's (k-th prefix sum - 1) / k (keras-team/keras#23425, fixed after 3.15.1 by #23469).
    We lower what Keras 3.15.1 computes, op for op, so the numbers match the model users have.
    """
    axis = site.axis
    if site.axis_size is None:
        k = _axis_length(em, x, site)
    else:
        k = em.const(np.array([site.axis_size], np.int64))
    z_sorted = em.op("TopK", [x, k], n_outputs=2, axis=axis, largest=1, sorted=1)[0]
    cumsum = _cumsum(em, z_sorted, axis)
    ranks = _ranks(em, x, site)
    # support: z_sorted - (cumsum - 1) / r > 0, written as Keras writes it
    margin = _one(em, "Sub", [z_sorted, _one(em, "Div", [_one(em, "Sub", [cumsum, em.const(1.0)]), ranks])])
    support = _one(em, "Greater", [margin, em.const(0.0)])
    support_f = _one(em, "Cast", [support], to=em.float_type)
    k_z = _reduce_sum(em, support_f, axis)
    summed = _reduce_sum(em, _mul(em, support_f, cumsum), axis)
    tau = _one(em, "Div", [_one(em, "Sub", [summed, em.const(1.0)]), k_z])
    return _one(em, "Relu", [_one(em, "Sub", [x, tau])])


def _cumsum(em: Emitter, x: str, axis: int) -> str:
    """Prefix sums along `axis`. CumSum takes float16 only from opset 14: below, in float32."""
    axis_const = em.const(np.array(axis, np.int64))
    if em.opset >= 14 or em.float_type in (FLOAT32, FLOAT64):
        return _one(em, "CumSum", [x, axis_const])
    wide = _one(em, "Cast", [x], to=FLOAT32)
    return _one(em, "Cast", [_one(em, "CumSum", [wide, axis_const])], to=em.float_type)


def _ranks(em: Emitter, x: str, site: ActivationSite) -> str:
    """1, 2, ..., n laid along `site.axis` (broadcastable against x), in x's float type."""
    shape = np.ones(site.rank, np.int64)
    if site.axis_size is not None and site.axis_size <= 4096:  # beyond, a Range beats a huge constant
        shape[site.axis] = site.axis_size
        return em.const(np.arange(1, site.axis_size + 1, dtype=np.float64).reshape(shape))
    length = _one(em, "Gather", [_one(em, "Shape", [x]), em.const(np.array(site.axis, np.int64))], axis=0)
    one = em.const(np.array(1, np.int64))
    ranks = _one(em, "Range", [one, _one(em, "Add", [length, one]), one])
    shape[site.axis] = -1
    return _one(em, "Reshape", [_one(em, "Cast", [ranks], to=em.float_type), em.const(shape)])


def _reduce_sum(em: Emitter, x: str, axis: int) -> str:
    if em.opset >= 13:
        return _one(em, "ReduceSum", [x, em.const(np.array([axis], np.int64))], keepdims=1)
    return _one(em, "ReduceSum", [x], axes=[axis], keepdims=1)


@dataclass(frozen=True)
class Activation:
    name: str
    lower: Lowering | None  # None: identity
    uses_axis: bool = False
    needs_even_axis: bool = False


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("linear", None),
        Activation("relu", _relu),
        Activation("relu6", _relu6),
        Activation("leaky_relu", _leaky_relu),
        Activation("elu", _elu),
        Activation("selu", _selu),
        Activation("celu", _celu),
        Activation("gelu", _gelu),
        Activation("sigmoid", _sigmoid),
        Activation("hard_sigmoid", _hard_sigmoid_act),
        Activation("sparse_sigmoid", _sparse_sigmoid),
        Activation("silu", _silu),
        Activation("hard_silu", _hard_silu),
        Activation("tanh", _tanh),
        Activation("hard_tanh", _hard_tanh),
        Activation("tanh_shrink", _tanh_shrink),
        Activation("hard_shrink", _hard_shrink),
        Activation("soft_shrink", _soft_shrink),
        Activation("softplus", _softplus_act),
        Activation("softsign", _softsign),
        Activation("exponential", _exponential),
        Activation("log_sigmoid", _log_sigmoid),
        Activation("mish", _mish),
        Activation("squareplus", _squareplus),
        Activation("sparse_plus", _sparse_plus),
        Activation("softmax", _softmax, uses_axis=True),
        Activation("log_softmax", _log_softmax, uses_axis=True),
        Activation("glu", _glu, uses_axis=True, needs_even_axis=True),
        Activation("sparsemax", _sparsemax, uses_axis=True),
    )
}
# Not a name Keras accepts as an activation (specs and layers refuse it): what keras.ops.gelu
# computes by default, reached only through that op.
OP_ACTIVATIONS: dict[str, Activation] = {"gelu_tanh": Activation("gelu_tanh", _gelu_tanh)}
ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}
# Keras lists `threshold` too, but it has no defaults, so Keras itself fails on the bare string.
REFUSED = {
    "threshold": "needs `threshold` and `default_value` arguments, which a name cannot give; "
    "Keras rejects it as a string too"
}
NAMES = tuple(sorted([*ACTIVATIONS, *ALIASES]))


def activation(name: str) -> Activation:
    """The table entry of a canonical name (those keras.ops alone reaches included)."""
    return ACTIVATIONS[name] if name in ACTIVATIONS else OP_ACTIVATIONS[name]


def canonical_activation(name: str) -> str | None:
    """Keras' canonical name for an activation string (case-sensitive), or None if unknown."""
    name = ALIASES.get(name, name)
    return name if name in ACTIVATIONS else None
