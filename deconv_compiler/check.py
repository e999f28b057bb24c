"""`onnx.ModelProto` → the same model, proven well-formed, or `InternalError` (a model we generate
that fails these checks is our bug, not the user's).

Runs the ONNX checker (full check) and strict shape inference, then our own invariants: every
ConvTranspose has explicit pads and output_padding and no `auto_pad`/`output_shape`; the graph's
input and output carry their shapes; the inferred output shape agrees with the declared one.
"""

from __future__ import annotations

import onnx
from onnx import shape_inference

from deconv_compiler.errors import InternalError

_FORBIDDEN = ("auto_pad", "output_shape")


def check_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Validate `model`; return the shape-inferred copy (value_info filled in)."""
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, shape_inference.InferenceError) as exc:
        raise InternalError(f"the generated model is invalid: {exc}") from exc
    problems = [*_conv_transpose_problems(model), *_io_problems(model, inferred)]
    if problems:
        raise InternalError("the generated model breaks an invariant: " + "; ".join(problems))
    return inferred


def _conv_transpose_problems(model: onnx.ModelProto) -> list[str]:
    problems = []
    for node in model.graph.node:
        if node.op_type != "ConvTranspose":
            continue
        names = {a.name for a in node.attribute}
        problems += [f"{node.name} has {name}" for name in _FORBIDDEN if name in names]
        problems += [f"{node.name} lacks {name}" for name in ("pads", "output_padding") if name not in names]
    return problems


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    shape = value.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


def _io_problems(model: onnx.ModelProto, inferred: onnx.ModelProto) -> list[str]:
    problems = []
    for value in (*model.graph.input, *model.graph.output):
        if not value.type.tensor_type.HasField("shape") or None in _dims(value):
            problems.append(f"{value.name} has no complete declared shape")
    declared = {v.name: _dims(v) for v in model.graph.output}
    for value in inferred.graph.output:
        want = declared.get(value.name, [])
        got = _dims(value)
        for a, b in zip(want, got, strict=False):
            if isinstance(a, int) and isinstance(b, int) and a != b:
                problems.append(f"output {value.name} declared {want} but inferred {got}")
                break
    return problems
