"""The spec front end: spec data → validated `ModelSpec` (Keras vocabulary, frozen), or a
`SpecError` listing every problem; then `spec_graph`: the spec as the compiler's one IR.

Two forms are accepted: a single layer (Keras arguments at the top level plus `type` and the
input description) and a model (`name`, `input`, `layers`: a chain). This module handles the
document forms, the input description (R/Keras-2 names included), chaining (each layer takes
its input channels from the previous one) and layer names; each layer's own arguments are
checked by `conv_layer`, the validator saved Keras models go through too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deconv_compiler.arguments import ModelArgs
from deconv_compiler.conv_layer import (
    ConvTransposeLayer,
    Problems,
    check_dtype,
    clean_keys,
    is_int,
    kind_of,
    parse_conv_layer,
    shape_text,
    validate_arguments,
)
from deconv_compiler.errors import FieldPath, SpecError, format_path, shown
from deconv_compiler.ir import ConvTransposeOp, Graph, Node, Output, SpecOrigin, Value
from deconv_compiler.limits import MAX_LAYERS, MAX_WEIGHT_BYTES
from deconv_compiler.source import SpecSource, read_spec_file, source_from_mapping
from deconv_compiler.weights import InitializerWeights, WeightsFolder

# --- the validated, frozen result ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """A validated chain of layers and its input."""

    name: str
    input_name: str
    input_shape: tuple[int | None, ...]
    input_dtype: str
    layers: tuple[ConvTransposeLayer, ...]
    seed: int
    strategy: str = "auto"

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        return self.layers[-1].output_shape

    @property
    def output_name(self) -> str:
        """The graph output's name: "output", unless the input took it."""
        return "output" if self.input_name != "output" else "output_1"

    @property
    def output_dtype(self) -> str:
        return self.layers[-1].io_dtype

    def keras_config(self) -> dict[str, Any]:
        """The whole spec, normalized (no weight values), for the model's metadata."""
        return {
            "name": self.name,
            "input": {
                "name": self.input_name,
                "shape": list(self.input_shape),
                "dtype": self.input_dtype,
            },
            "seed": self.seed,
            "strategy": self.strategy,
            "layers": [layer.keras_config() for layer in self.layers],
        }


# --- validation --------------------------------------------------------------------------------


@dataclass
class _SpecProblems(Problems):
    weights_folder: WeightsFolder | None = None  # where `weights:` paths are read
    max_weight_bytes: int = MAX_WEIGHT_BYTES


def load_spec(
    spec: str | Path | Mapping[str, Any] | SpecSource,
    max_weight_bytes: int = MAX_WEIGHT_BYTES,
    weights_root: str | Path | None = None,
) -> ModelSpec:
    """Read (if a path) and validate a spec; raise `SpecError` with every problem found.

    Layers whose weights would take more than `max_weight_bytes` are refused before anything
    is allocated. `weights:` paths are relative to the spec file's folder and must lie inside
    `weights_root` (default: that folder); a mapping has no folder, so its paths are relative to
    `weights_root` (default: the current directory). See `weights.WeightsFolder`.
    """
    if isinstance(spec, SpecSource):
        source = spec
    elif isinstance(spec, (str, Path)):
        source = read_spec_file(spec)
    elif isinstance(spec, Mapping):
        source = source_from_mapping(spec)
    else:
        raise TypeError(f"load_spec takes a path or a mapping, got {type(spec).__name__}")
    return parse_spec(source, max_weight_bytes, weights_root)


def parse_spec(
    source: SpecSource, max_weight_bytes: int = MAX_WEIGHT_BYTES, weights_root: str | Path | None = None
) -> ModelSpec:
    """Validate spec data (either form) into a `ModelSpec`; `weights_root` as in `load_spec`."""
    folder = WeightsFolder.of(source.base_dir, weights_root)
    problems = _SpecProblems(source.problem, weights_folder=folder, max_weight_bytes=max_weight_bytes)
    data = source.data
    if not isinstance(data, Mapping):
        problems.add((), f"a spec must be a mapping (a layer, or a model with `layers`), got {kind_of(data)}")
        raise SpecError(problems.found)
    data = clean_keys(data, (), problems)
    if "layers" in data:
        spec = _parse_model(data, problems)
    else:
        spec = _parse_single_layer(data, problems)
    if problems.found or spec is None:
        # in file order where lines are known; the sort is stable for the rest
        raise SpecError(sorted(problems.found, key=lambda p: p.line if p.line is not None else 0))
    return spec


@dataclass(frozen=True)
class _InputDescription:
    shape: tuple[int | None, ...]
    path: FieldPath


def _parse_single_layer(data: Mapping[str, Any], problems: _SpecProblems) -> ModelSpec | None:
    described = _layer_input_description(data, (), problems)
    if described is None and data.get("input_shape") is None and data.get("batch_input_shape") is None:
        problems.add(("input_shape",), "required: give input_shape (without batch) or batch_input_shape")
    layers = _parse_layers([(data, ())], described, problems)
    if layers is None or described is None:
        return None
    return ModelSpec(
        name=layers[0].name,
        input_name="input",
        input_shape=described.shape,
        input_dtype=layers[0].io_dtype,
        layers=layers,
        seed=0,
    )


def _parse_model(data: Mapping[str, Any], problems: _SpecProblems) -> ModelSpec | None:
    args = validate_arguments(ModelArgs, data, (), problems)
    raw_layers = data.get("layers")
    if not isinstance(raw_layers, (list, tuple)):
        if args is not None:  # pydantic's lax mode took a set or a generator
            problems.add(("layers",), f"must be a list of layers, got {kind_of(raw_layers)}")
        return None
    if len(raw_layers) > MAX_LAYERS:  # checked before any is parsed: each costs a validation
        problems.add(("layers",), f"has {len(raw_layers):,} layers; the limit is {MAX_LAYERS:,}")
        return None
    layer_items: list[tuple[Any, FieldPath]] = [(layer, ("layers", i)) for i, layer in enumerate(raw_layers)]
    described: _InputDescription | None = None
    input_dtype: str | None = None
    if args is not None and args.input is not None:
        input_dtype = check_dtype(args.input.dtype, ("input", "dtype"), problems, policies=False)
        described = _InputDescription(tuple(args.input.shape), ("input", "shape"))
    if raw_layers and isinstance(raw_layers[0], Mapping):
        first = _layer_input_description(raw_layers[0], ("layers", 0), problems)
        if described is None:
            described = first
        elif first is not None and not _shapes_agree(first.shape, described.shape):
            problems.add(
                first.path,
                f"disagrees with input.shape: {shape_text(first.shape)} vs {shape_text(described.shape)}",
            )
    if described is None and args is not None:
        problems.add(("input",), "required: give input.shape (with batch), or input_shape on the first layer")
    layers = _parse_layers(layer_items, described, problems)
    if layers is None or described is None or args is None:
        return None
    return ModelSpec(
        name=args.name,
        input_name=args.input.name if args.input is not None else "input",
        input_shape=described.shape,
        input_dtype=input_dtype or layers[0].io_dtype,
        layers=layers,
        seed=args.seed,
        strategy=args.strategy,
    )


def _layer_input_description(
    data: Mapping[str, Any], path: FieldPath, problems: _SpecProblems
) -> _InputDescription | None:
    """A layer's R/Keras-2 input arguments as one full shape (batch first)."""
    input_shape, batch_input_shape = data.get("input_shape"), data.get("batch_input_shape")
    batch_size = data.get("batch_size")
    for name, shape in (("input_shape", input_shape), ("batch_input_shape", batch_input_shape)):
        if shape is not None and not isinstance(shape, (list, tuple)):  # lax pydantic takes sets
            problems.add((*path, name), f"must be a list of sizes, got {kind_of(shape)}")
    if not _is_shape(input_shape) or not _is_shape(batch_input_shape) or not _is_size(batch_size):
        return None  # type problems were reported above or by pydantic
    if input_shape is not None and batch_input_shape is not None:
        problems.add((*path, "batch_input_shape"), "give either input_shape or batch_input_shape, not both")
        return None
    if batch_input_shape is not None:
        if batch_size is not None and batch_input_shape and batch_input_shape[0] not in (None, batch_size):
            problems.add(
                (*path, "batch_size"),
                f"{batch_size} disagrees with batch_input_shape[0]={batch_input_shape[0]}",
            )
        shape = tuple(batch_input_shape)
        if shape and shape[0] is None and batch_size is not None:
            shape = (batch_size, *shape[1:])
        return _InputDescription(shape, (*path, "batch_input_shape"))
    if input_shape is not None:
        return _InputDescription((batch_size, *input_shape), (*path, "input_shape"))
    return None


def _parse_layers(
    items: list[tuple[Any, FieldPath]], described: _InputDescription | None, problems: _SpecProblems
) -> tuple[ConvTransposeLayer, ...] | None:
    """Validate each layer; chain shapes from the input through every layer."""
    shape = described.shape if described is not None else None
    shape_path = described.path if described is not None else None
    layers: list[ConvTransposeLayer] = []
    names: dict[str, FieldPath] = {}
    counts: dict[int, int] = {}
    ok = True
    for index, (data, path) in enumerate(items):
        if not isinstance(data, Mapping):
            problems.add(path, f"a layer must be a mapping of Keras arguments, got {kind_of(data)}")
            ok = False
            shape = None
            continue
        if index > 0:
            later = _layer_input_description(data, path, problems)
            if later is not None and shape is not None and not _shapes_agree(later.shape, shape):
                problems.add(later.path, f"disagrees with this layer's actual input {shape_text(shape)}")
        layer = parse_conv_layer(
            clean_keys(data, path, problems),
            path,
            shape,
            shape_path,
            problems,
            counts=counts,
            weights_folder=problems.weights_folder,
            max_weight_bytes=problems.max_weight_bytes,
        )
        if layer is None:
            ok = False
            shape = None
            continue
        if layer.name in names:
            problems.add(
                (*path, "name"),
                f"layer name {shown(layer.name)} is already used by {format_path(names[layer.name])}",
            )
            ok = False
        names[layer.name] = path
        layers.append(layer)
        shape, shape_path = layer.output_shape, (*path,)
    return tuple(layers) if ok and layers else None


def _is_size(value: Any) -> bool:
    return value is None or (is_int(value) and value > 0)


def _is_shape(value: Any) -> bool:
    return value is None or (isinstance(value, (list, tuple)) and all(_is_size(v) for v in value))


def _shapes_agree(a: tuple[int | None, ...], b: tuple[int | None, ...]) -> bool:
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


# --- the spec as the IR ------------------------------------------------------------------------


def spec_graph(spec: ModelSpec) -> Graph:
    """The chain as a graph: the input, one `ConvTransposeOp` node per layer (weights given, or
    made by the layer's initializers at compile time), the last layer's output."""
    nodes = []
    tensor = spec.input_name
    for index, layer in enumerate(spec.layers):
        weights = layer.weights or InitializerWeights(
            layer.kernel_initializer,
            layer.bias_initializer,
            layer.kernel_shape,
            layer.use_bias,
            layer.seed,
            index,
        )
        output = Value(layer.name, layer.output_shape, layer.dtype)
        op = ConvTransposeOp(layer, weights)
        nodes.append(Node(layer.name, layer.type_name, op, (tensor,), output, layer.dtype_policy))
        tensor = layer.name
    return Graph(
        name=spec.name,
        inputs=(Value(spec.input_name, spec.input_shape, spec.input_dtype),),
        nodes=tuple(nodes),
        outputs=(Output(spec.output_name, tensor, spec.output_shape, spec.output_dtype),),
        origin=SpecOrigin(spec.keras_config()),
        strategy=spec.strategy,
        seed=spec.seed,
        sources=tuple(layer.weights.file for layer in spec.layers if layer.weights and layer.weights.file),
    )
