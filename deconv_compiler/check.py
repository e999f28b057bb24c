"""`onnx.ModelProto` → the same model, proven well-formed, or `InternalError` (a model we generate
that fails these checks is our bug, not the user's).

Runs the ONNX checker (full check) and strict shape inference, then our own invariants: every
ConvTranspose has explicit pads and output_padding and no `auto_pad`/`output_shape`; the graph's
input and output carry their shapes; the inferred output shape agrees with the declared one.
"""

from __future__ import annotations

import math

import onnx
from onnx import shape_inference

from deconv_compiler.errors import InternalError

_FORBIDDEN = ("auto_pad", "output_shape")


def check_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Validate `model`; return the shape-inferred copy of its weightless view (value_info filled in)."""
    view = shape_view(model)
    try:
        onnx.checker.check_model(view, full_check=True)
        inferred = shape_inference.infer_shapes(view, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, shape_inference.InferenceError) as exc:
        raise InternalError(f"the generated model is invalid: {exc}") from exc
    problems = [*_conv_transpose_problems(model), *_io_problems(model, inferred)]
    if problems:
        raise InternalError("the generated model breaks an invariant: " + "; ".join(problems))
    return inferred


# Initializers larger than this are checked as typed graph inputs: the checker and shape inference
# serialize the whole model (about 1 s for a 200 MB Pix2Pix generator) but need only the types
# and shapes of weights; small ones (shapes, axes, pads) keep their values for data propagation.
_VIEW_ELEMENTS = 1024


def shape_view(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every large initializer turned into a graph input of the same type and shape."""
    view = _without_initializers(model)
    for tensor in model.graph.initializer:
        if math.prod(tensor.dims) <= _VIEW_ELEMENTS:
            view.graph.initializer.append(tensor)
        else:
            typed = onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
            view.graph.input.append(typed)
    return view


def _without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    light = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(light, field, getattr(model, field))
    light.opset_import.extend(model.opset_import)
    light.metadata_props.extend(model.metadata_props)
    graph = model.graph
    light.graph.name = graph.name
    light.graph.node.extend(graph.node)
    light.graph.input.extend(graph.input)
    light.graph.output.extend(graph.output)
    light.graph.value_info.extend(graph.value_info)
    return light


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
