"""A compiled model + `ModelInterface` → the same model with the inputs and outputs the deployment
wants: fixed input sizes (`--fix-shape`, `--batch`), names for the dims left dynamic
(`--dim-names`) and for the outputs (`--output-names`).

NNAPI, CoreML, TensorRT and TFLite converters want static shapes; serving stacks want readable
dim and output names. The change is made on the ONNX graph (inputs, outputs, node output names),
never on the weights, and the output shapes are re-inferred through the whole graph by onnx's
strict shape inference: a fixed size that the model cannot take (a Reshape to a fixed length, a
Concat of mismatched sizes) is refused here, naming the option, instead of failing at run time.

Guarantees: every requested size is checked against the declared one first (a static size may
only be restated, never changed); each output dim becomes the inferred size where inference
knows it, else keeps (the renamed) symbol; names are unique among the graph's values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deconv_compiler.errors import DeconvError, shown

if TYPE_CHECKING:  # onnx loads only when a model is changed: options import this module
    import onnx

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]*\Z")


class InterfaceError(DeconvError):
    """A fixed shape or name the model cannot take."""


@dataclass(frozen=True)
class InputShape:
    """`--fix-shape`: the full shape of one input, by name, or by position when `name` is None."""

    sizes: tuple[int, ...]
    name: str | None = None

    @property
    def text(self) -> str:
        sizes = ",".join(map(str, self.sizes))
        return sizes if self.name is None else f"{self.name}={sizes}"


@dataclass(frozen=True)
class ModelInterface:
    """What the deployment wants of the model's inputs and outputs; empty: the model as compiled."""

    shapes: tuple[InputShape, ...] = ()
    batch: int | None = None
    dim_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for shape in self.shapes:
            if not shape.sizes or any(size < 1 for size in shape.sizes):
                raise InterfaceError(f"--fix-shape {shape.text}: sizes must be >= 1")
        if self.batch is not None and self.batch < 1:
            raise InterfaceError(f"--batch must be >= 1, got {self.batch}")
        for option, names in (("--dim-names", self.dim_names), ("--output-names", self.output_names)):
            for name in names:
                if not _NAME.match(name):
                    raise InterfaceError(
                        f"{option}: {shown(name)} is not a name (a letter or _ first, then letters, "
                        "digits, _ . : / -)"
                    )
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise InterfaceError(f"{option}: {', '.join(map(shown, repeated))} given twice")

    @property
    def empty(self) -> bool:
        return not (self.shapes or self.batch is not None or self.dim_names or self.output_names)


def parse_shape(text: str) -> InputShape:
    """`1,64,64,3` or `NAME=1,64,64,3` (an input by name: for models of several inputs)."""
    name, sep, sizes = text.rpartition("=")
    try:
        parsed = tuple(int(part) for part in sizes.split(","))
    except ValueError:
        raise InterfaceError(
            f"--fix-shape {text}: give comma-separated sizes such as 1,64,64,3 (or NAME=1,64,64,3)"
        ) from None
    return InputShape(parsed, name if sep else None)


def split_names(text: str | None) -> tuple[str, ...]:
    """A comma-separated option value as names (None: no names)."""
    return () if text is None else tuple(part.strip() for part in text.split(","))


def apply_interface(model: onnx.ModelProto, interface: ModelInterface) -> None:
    """Give `model` the interface asked for, in place (its graph's inputs, outputs, value_info and
    node output names; weights untouched). Raises `InterfaceError` naming the option."""
    if interface.empty:
        return
    graph = model.graph
    weights = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    for request in interface.shapes:
        _fix_input(_input_for(request, inputs, len(interface.shapes)), request)
    if interface.batch is not None:
        for value in inputs:
            _fix_batch(value, interface.batch)
    renamed = _dim_renames(inputs, interface.dim_names)
    for value in (*inputs, *graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in renamed:
                dim.dim_param = renamed[dim.dim_param]
    if interface.output_names:
        _rename_outputs(graph, interface.output_names)
    _infer_outputs(model, interface)


def _input_for(request: InputShape, inputs: Sequence[onnx.ValueInfoProto], count: int) -> onnx.ValueInfoProto:
    names = ", ".join(shown(value.name) for value in inputs)
    if request.name is not None:
        for value in inputs:
            if value.name == request.name:
                return value
        raise InterfaceError(f"--fix-shape {request.text}: the model has no input {shown(request.name)}; "
                             f"its inputs: {names}")  # fmt: skip
    if count != 1 or len(inputs) != 1:
        raise InterfaceError(
            f"--fix-shape {request.text}: the model has {len(inputs)} inputs ({names}); name the input "
            "of each shape, as NAME=1,64,64,3"
        )
    return inputs[0]


def _dims(value: onnx.ValueInfoProto) -> list[onnx.TensorShapeProto.Dimension]:
    return list(value.type.tensor_type.shape.dim)


def _dims_text(value: onnx.ValueInfoProto) -> str:
    shown_dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in _dims(value)]
    return "(" + ", ".join(shown_dims) + ")"


def _fix_input(value: onnx.ValueInfoProto, request: InputShape) -> None:
    dims = _dims(value)
    declared = f"input {shown(value.name)} is {_dims_text(value)}"
    if len(dims) != len(request.sizes):
        raise InterfaceError(
            f"--fix-shape {request.text}: {declared}: {len(dims)} dims, the shape gives {len(request.sizes)}"
        )
    for axis, (dim, size) in enumerate(zip(dims, request.sizes, strict=True)):
        if dim.HasField("dim_value") and dim.dim_value != size:
            raise InterfaceError(
                f"--fix-shape {request.text}: {declared}: axis {axis} is {dim.dim_value}, not {size}"
            )
    for dim, size in zip(dims, request.sizes, strict=True):
        dim.dim_value = size  # clears dim_param (a oneof)


def _fix_batch(value: onnx.ValueInfoProto, batch: int) -> None:
    dims = _dims(value)
    if not dims:
        raise InterfaceError(f"--batch {batch}: input {shown(value.name)} is a scalar, it has no batch axis")
    if dims[0].HasField("dim_value") and dims[0].dim_value != batch:
        raise InterfaceError(
            f"--batch {batch}: input {shown(value.name)} is {_dims_text(value)}: its batch is fixed at "
            f"{dims[0].dim_value}"
        )
    dims[0].dim_value = batch


def _dim_renames(inputs: Sequence[onnx.ValueInfoProto], names: Sequence[str]) -> dict[str, str]:
    """The inputs' dynamic dims, in order of appearance (a symbol shared by several inputs counts
    once), renamed to `names`, one for each."""
    if not names:
        return {}
    symbols: list[str] = []
    for value in inputs:
        for dim in _dims(value):
            if not dim.HasField("dim_value"):
                if not dim.dim_param:
                    dim.dim_param = f"{value.name}_dim{len(symbols)}"  # an unnamed dim gets a symbol
                if dim.dim_param not in symbols:
                    symbols.append(dim.dim_param)
    if len(names) != len(symbols):
        dynamic = ", ".join(symbols) if symbols else "none"
        raise InterfaceError(
            f"--dim-names gives {len(names)} name(s) for the inputs' {len(symbols)} dynamic dim(s): {dynamic}"
        )
    return dict(zip(symbols, names, strict=True))


def _rename_outputs(graph: onnx.GraphProto, names: Sequence[str]) -> None:
    if len(names) != len(graph.output):
        current = ", ".join(shown(value.name) for value in graph.output)
        raise InterfaceError(
            f"--output-names gives {len(names)} name(s); "
            f"the model has {len(graph.output)} output(s): {current}"
        )
    renames = {
        value.name: name for value, name in zip(graph.output, names, strict=True) if value.name != name
    }
    taken = {
        *(value.name for value in graph.input),
        *(tensor.name for tensor in graph.initializer),
        *(name for node in graph.node for name in node.output),
    } - set(renames)
    clashes = sorted(name for name in renames.values() if name in taken)
    if clashes:
        raise InterfaceError(
            f"--output-names: {', '.join(map(shown, clashes))} already names another value of the model"
        )
    if any(value.name in renames for value in graph.input):
        raise InterfaceError("--output-names: an output that is also a model input cannot be renamed")
    for node in graph.node:
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
    for value in graph.output:
        value.name = renames.get(value.name, value.name)
    for info in graph.value_info:
        info.name = renames.get(info.name, info.name)


def _infer_outputs(model: onnx.ModelProto, interface: ModelInterface) -> None:
    """Output sizes from the fixed inputs, by strict shape inference over the whole graph."""
    from onnx import shape_inference

    from deconv_compiler.check import shape_view

    graph = model.graph
    del graph.value_info[:]  # stale: made for the old input sizes
    view = shape_view(model)
    for value in view.graph.output:
        value.type.tensor_type.ClearField("shape")
    try:
        inferred = shape_inference.infer_shapes(view, check_type=True, strict_mode=True, data_prop=True)
    except shape_inference.InferenceError as exc:
        asked = [
            *(f"--fix-shape {shape.text}" for shape in interface.shapes),
            *([f"--batch {interface.batch}"] if interface.batch is not None else []),
        ]
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InterfaceError(
            f"{' '.join(asked) or 'the new shapes'}: the model cannot take it: {message}"
        ) from None
    found = {value.name: _dims(value) for value in inferred.graph.output}
    for value in graph.output:
        for dim, new in zip(_dims(value), found.get(value.name, []), strict=False):
            if new.HasField("dim_value"):
                if dim.HasField("dim_value") and dim.dim_value != new.dim_value:
                    raise InterfaceError(
                        f"output {shown(value.name)}: declared {dim.dim_value}, inferred {new.dim_value} "
                        "from the fixed input shapes"
                    )
                dim.dim_value = new.dim_value
            elif new.dim_param and not dim.HasField("dim_value"):
                dim.dim_param = new.dim_param
