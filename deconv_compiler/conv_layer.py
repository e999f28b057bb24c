"""One transposed-convolution layer's Keras arguments → a validated `ConvTransposeLayer`.

The validator both front ends share: a spec's layer and a `Conv*DTranspose` saved in a Keras
file are held to exactly the same rules. Pydantic models (`arguments`) define the argument set,
defaults and the JSON Schema; the checks Keras makes that depend on the layer's rank or on
several arguments (tuple lengths, `output_padding < strides`, strides with dilation, empty
outputs, channel counts, weight shapes) are written out here, each with a field path. Problems
go to a `Problems` collector that locates them (file and, for YAML/JSON, line).
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError

from deconv_compiler import activations, geometry
from deconv_compiler.arguments import LAYER_TYPES, LayerArgs
from deconv_compiler.dtypes import DTYPES, POLICIES, REFUSED_DTYPES, compute_dtype, io_dtype
from deconv_compiler.errors import FieldPath, Problem, shown
from deconv_compiler.keras_objects import (
    CONSTRAINT,
    INITIALIZER,
    REGULARIZER,
    KerasObject,
    Vocabulary,
    parse_keras_object,
)
from deconv_compiler.limits import MAX_SIZE, MAX_WEIGHT_BYTES
from deconv_compiler.weights import LayerWeights, WeightsFolder, load_layer_weights

# --- the validated, frozen result ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ConvTransposeLayer:
    """One layer, every argument explicit and checked; shapes in Keras layout with batch."""

    path: FieldPath
    name: str
    rank: int
    filters: int
    in_channels: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Literal["valid", "same"]
    output_padding: tuple[int, ...] | None
    data_format: Literal["channels_last", "channels_first"]
    dilation_rate: tuple[int, ...]
    activation: str
    use_bias: bool
    kernel_initializer: KerasObject
    bias_initializer: KerasObject
    regularizers: Mapping[str, KerasObject | None]
    constraints: Mapping[str, KerasObject | None]
    trainable: bool
    dtype_policy: str  # a dtype name, or a Keras policy such as mixed_float16
    input_shape: tuple[int | None, ...]
    conv_output_shape: tuple[int | None, ...]  # before the activation
    output_shape: tuple[int | None, ...]  # after it (glu halves Keras' axis -1)
    weights: LayerWeights | None
    seed: int | None
    strategy: str | None = None  # not Keras: a forced lowering strategy

    @property
    def dtype(self) -> str:
        """The compute dtype: the graph's ConvTranspose and weights use it."""
        return compute_dtype(self.dtype_policy)

    @property
    def io_dtype(self) -> str:
        """What the layer takes and gives as a model's first or last layer (float32 under a mixed policy)."""
        return io_dtype(self.dtype_policy)

    @property
    def type_name(self) -> str:
        return f"Conv{self.rank}DTranspose"

    @property
    def kernel_shape(self) -> tuple[int, ...]:
        """Keras' kernel layout: kernel_size + (filters, in_channels)."""
        return (*self.kernel_size, self.filters, self.in_channels)

    def keras_config(self) -> dict[str, Any]:
        """The layer as Keras' `get_config()` would describe it (JSON-able)."""
        none_or_json = {
            k: (v.to_json() if v else None) for k, v in {**self.regularizers, **self.constraints}.items()
        }
        return {
            "class_name": self.type_name,
            "config": {
                "name": self.name,
                "trainable": self.trainable,
                "dtype": self.dtype_policy,
                "filters": self.filters,
                "kernel_size": list(self.kernel_size),
                "strides": list(self.strides),
                "padding": self.padding,
                "output_padding": None if self.output_padding is None else list(self.output_padding),
                "data_format": self.data_format,
                "dilation_rate": list(self.dilation_rate),
                "activation": self.activation,
                "use_bias": self.use_bias,
                "kernel_initializer": self.kernel_initializer.to_json(),
                "bias_initializer": self.bias_initializer.to_json(),
                **none_or_json,
            },
        }


@dataclass
class Problems:
    """Where validators report: each problem located by `locate` (file and line), kept in order."""

    locate: Callable[[FieldPath, str], Problem]
    found: list[Problem] = field(default_factory=list)

    def add(self, path: FieldPath, message: str) -> None:
        self.found.append(self.locate(path, message))


# --- validation --------------------------------------------------------------------------------


def parse_conv_layer(
    data: Mapping[str, Any],
    path: FieldPath,
    input_shape: tuple[int | None, ...] | None,
    input_path: FieldPath | None,
    problems: Problems,
    *,
    counts: dict[int, int],
    weights_folder: WeightsFolder | None = None,
    max_weight_bytes: int = MAX_WEIGHT_BYTES,
) -> ConvTransposeLayer | None:
    """Validate one transposed-convolution layer's Keras arguments (keys already clean) against
    the shape it is called on (`input_shape`, reported at `input_path`); None when a problem was
    reported. `counts` numbers unnamed layers per rank as Keras does (conv2d_transpose_1...);
    `weights:` paths are read inside `weights_folder` (None: only inline weights)."""
    before = len(problems.found)
    if "groups" in data:
        problems.add((*path, "groups"), "Keras 3 transposed convolutions have no `groups` argument")
    args = validate_arguments(LayerArgs, {k: v for k, v in data.items() if k != "groups"}, path, problems)
    rank = _layer_type(data.get("type", "Conv2DTranspose"), (*path, "type"), problems)
    data_format = _data_format(data.get("data_format"), (*path, "data_format"), problems)

    def tuple_arg(name: str, default: Any, minimum: int, nullable: bool = False) -> tuple[int, ...] | None:
        value = data.get(name, default)
        if nullable and value is None:
            return None
        return _int_tuple(value, rank, name, minimum, (*path, name), problems) if rank else None

    kernel_size = tuple_arg("kernel_size", None, 1) if "kernel_size" in data else None
    strides = tuple_arg("strides", 1, 1)
    dilation = tuple_arg("dilation_rate", 1, 1)
    output_padding = tuple_arg("output_padding", None, 0, nullable=True)
    padding = _padding(data.get("padding", "valid"), (*path, "padding"), problems)
    activation = parse_activation(data.get("activation"), (*path, "activation"), problems)
    raw_dtype = data.get("dtype")
    dtype = check_dtype(raw_dtype, (*path, "dtype"), problems) if isinstance(raw_dtype, str) else "float32"

    def keras_object(name: str, vocab: Vocabulary, default: Any) -> KerasObject | None:
        value = data.get(name, default)
        if value is None:
            return None
        return parse_keras_object(value, vocab, (*path, name), problems.add)

    # Keras: `bias_initializer=None` falls back to the variable default, glorot_uniform (not zeros).
    kernel_init = keras_object("kernel_initializer", INITIALIZER, "glorot_uniform") or (
        None if data.get("kernel_initializer") is not None else _default_initializer()
    )
    bias_init = keras_object("bias_initializer", INITIALIZER, "zeros") or (
        None if data.get("bias_initializer", "zeros") is not None else _default_initializer()
    )
    regularizers = {
        name: keras_object(name, REGULARIZER, None)
        for name in ("kernel_regularizer", "bias_regularizer", "activity_regularizer")
    }
    constraints = {
        name: keras_object(name, CONSTRAINT, None) for name in ("kernel_constraint", "bias_constraint")
    }

    if strides and dilation and any(s > 1 for s in strides) and any(d > 1 for d in dilation):
        problems.add(
            (*path, "dilation_rate"),
            f"`strides > 1` not supported in conjunction with `dilation_rate > 1`. "
            f"Received: strides={strides} and dilation_rate={dilation}",
        )
    if strides and output_padding is not None:
        too_large = [
            axis for axis, (op, s) in enumerate(zip(output_padding, strides, strict=True)) if op >= s
        ]
        per_axis = isinstance(data.get("output_padding"), (list, tuple))
        for axis in too_large if per_axis else too_large[:1]:
            problems.add(
                (*path, "output_padding", axis) if per_axis else (*path, "output_padding"),
                f"must be strictly less than strides: output_padding={output_padding}, strides={strides}",
            )
    if args is None or len(problems.found) > before or rank is None or data_format is None:
        return None
    assert kernel_size and strides and dilation and padding and activation and dtype
    assert kernel_init is not None and bias_init is not None

    assert data_format is not None
    name = args.name
    if name is None:  # Keras numbers only the names it makes: conv2d_transpose, conv2d_transpose_1...
        counts[rank] = counts.get(rank, 0) + 1
        name = f"conv{rank}d_transpose" + (f"_{counts[rank] - 1}" if counts[rank] > 1 else "")
    if input_shape is None or input_path is None:
        return None
    in_channels, output_shape = _chain_shapes(
        input_shape, input_path, rank, data_format, args.filters, kernel_size, strides, dilation,
        padding, output_padding, path, problems,
    )  # fmt: skip
    if in_channels is None or output_shape is None:
        return None
    conv_output_shape = output_shape
    if activations.ACTIVATIONS[activation].needs_even_axis:
        axis_size = output_shape[-1]
        if axis_size is not None and axis_size % 2:
            problems.add(
                (*path, "activation"),
                f"glu splits the last axis in two halves; its size is {axis_size} (odd): "
                f"output shape {shape_text(output_shape)}",
            )
            return None
        output_shape = (*output_shape[:-1], None if axis_size is None else axis_size // 2)
    kernel_shape = (*kernel_size, args.filters, in_channels)
    weight_bytes = (math.prod(kernel_shape) + args.filters) * np.dtype(compute_dtype(dtype)).itemsize
    if weight_bytes > max_weight_bytes:
        problems.add(
            (*path, "filters" if args.filters >= math.prod(kernel_size) else "kernel_size"),
            f"the weights would take {_size_text(weight_bytes)} (kernel {kernel_shape}, {dtype}); "
            f"the limit is {_size_text(max_weight_bytes)}",
        )
        return None
    weights = None
    if args.weights is not None:
        weights = load_layer_weights(
            args.weights,
            kernel_shape,
            args.use_bias,
            weights_folder,
            (*path, "weights"),
            problems.add,
            max_weight_bytes,
        )
        if weights is not None:
            compute = compute_dtype(dtype)
            limit = float(np.finfo(compute).max)
            for tensor, array in (("kernel", weights.kernel), ("bias", weights.bias)):
                if array is not None and array.size and max(-float(array.min()), float(array.max())) > limit:
                    message = f"{tensor} holds values beyond the {compute} range (|x| > {limit:.4g})"
                    problems.add((*path, "weights"), message)
                    weights = None
        if weights is None:
            return None
    return ConvTransposeLayer(
        path=path,
        name=name,
        rank=rank,
        filters=args.filters,
        in_channels=in_channels,
        kernel_size=kernel_size,
        strides=strides,
        padding=padding,
        output_padding=output_padding,
        data_format=data_format,
        dilation_rate=dilation,
        activation=activation,
        use_bias=args.use_bias,
        kernel_initializer=kernel_init,
        bias_initializer=bias_init,
        regularizers=regularizers,
        constraints=constraints,
        trainable=True if args.trainable is None else args.trainable,
        dtype_policy=dtype,
        input_shape=input_shape,
        conv_output_shape=conv_output_shape,
        output_shape=output_shape,
        weights=weights,
        seed=args.seed,
        strategy=args.strategy,
    )


def _chain_shapes(
    input_shape: tuple[int | None, ...],
    input_path: FieldPath,
    rank: int,
    data_format: str,
    filters: int,
    kernel_size: tuple[int, ...],
    strides: tuple[int, ...],
    dilation: tuple[int, ...],
    padding: str,
    output_padding: tuple[int, ...] | None,
    path: FieldPath,
    problems: Problems,
) -> tuple[int | None, tuple[int | None, ...] | None]:
    """Input channels and Keras' output shape of one layer, or problems."""
    if len(input_shape) != rank + 2:
        problems.add(
            input_path,
            f"Conv{rank}DTranspose expects a rank-{rank + 2} input (batch, {rank} spatial, channels); "
            f"got shape {shape_text(input_shape)} of rank {len(input_shape)}",
        )
        return None, None
    channels_last = data_format == "channels_last"
    channels = input_shape[-1] if channels_last else input_shape[1]
    spatial = input_shape[1:-1] if channels_last else input_shape[2:]
    if channels is None:
        problems.add(
            input_path,
            f"the channel dimension must be known, got shape {shape_text(input_shape)} ({data_format})",
        )
        return None, None
    out_spatial: list[int | None] = []
    for axis, length in enumerate(spatial):
        if length is None:
            out_spatial.append(None)
            continue
        op = None if output_padding is None else output_padding[axis]
        out = geometry.output_length(length, kernel_size[axis], strides[axis], dilation[axis], padding, op)
        if out <= 0:
            problems.add(
                (*path, "output_padding" if op is not None else "kernel_size"),
                f"the output would be empty along spatial axis {axis}: length {out} from input length "
                f"{length}, kernel_size {kernel_size[axis]}, strides {strides[axis]}, padding '{padding}', "
                f"output_padding {op} (Keras' own result is an empty tensor; onnxruntime refuses it)",
            )
            return None, None
        if out > MAX_SIZE:
            problems.add(
                (*path, "strides"),
                f"the output length along spatial axis {axis} would be {out:,}, beyond {MAX_SIZE:,} "
                f"(input length {length}, strides {strides[axis]})",
            )
            return None, None
        out_spatial.append(out)
    batch = input_shape[0]
    shape = (batch, *out_spatial, filters) if channels_last else (batch, filters, *out_spatial)
    return channels, shape


# --- small checks ----------------------------------------------------------------------------


def _default_initializer() -> KerasObject:
    return KerasObject("GlorotUniform", {"seed": None, "input_axes": None, "output_axes": None})


def _int_tuple(
    value: Any, rank: int, name: str, minimum: int, path: FieldPath, problems: Problems
) -> tuple[int, ...] | None:
    """Keras' `standardize_tuple`: an int (broadcast) or exactly `rank` ints, each >= minimum."""
    if is_int(value):
        values, item_paths = [value] * rank, [path] * rank
    elif isinstance(value, (list, tuple)):
        if len(value) != rank:
            listed = shown(list(value))  # bounded: the list may be nested thousands deep
            problems.add(
                path, f"must be an integer or a list of {rank} integers, got {len(value)} values: {listed}"
            )
            return None
        values, item_paths = list(value), [(*path, i) for i in range(rank)]
    else:
        problems.add(
            path, f"must be an integer or a list of {rank} integers, got {shown(value)} ({kind_of(value)})"
        )
        return None
    ok = True
    for item, item_path in zip(values, item_paths, strict=True):
        if not is_int(item):
            problems.add(item_path, f"must be an integer, got {shown(item)} ({kind_of(item)})")
            ok = False
        elif item < minimum:
            problems.add(item_path, f"must be >= {minimum}, got {shown(item)}")
            ok = False
        elif item > MAX_SIZE:
            problems.add(item_path, f"must be <= {MAX_SIZE}, got {shown(item)}")
            ok = False
        if item_path == path and not ok:
            break  # a broadcast scalar: one message is enough
    return tuple(values) if ok else None


def clean_keys(data: Mapping[Any, Any], path: FieldPath, problems: Problems) -> dict[str, Any]:
    """The mapping without keys no spec can have (not strings, or not valid unicode), each reported."""
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            problems.add((*path, shown(key)), f"keys must be strings, got {kind_of(key)}")
        elif not _encodable(key):
            problems.add((*path, shown(key)), "the key is not valid unicode text")
        else:
            clean[key] = value
    if isinstance(clean.get("input"), Mapping):
        clean["input"] = clean_keys(clean["input"], (*path, "input"), problems)
    return clean


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _layer_type(value: Any, path: FieldPath, problems: Problems) -> int | None:
    """Rank of a layer type name (Keras class names, their aliases, the R function names)."""
    if isinstance(value, str) and value in LAYER_TYPES:
        return LAYER_TYPES[value]
    if not isinstance(value, str):
        problems.add(path, f"must be a layer type name, got {_show(value)}")
        return None
    by_lower = {name.lower(): name for name in LAYER_TYPES}
    close = difflib.get_close_matches(value, list(LAYER_TYPES), n=1)
    hint = by_lower.get(value.lower()) or (close[0] if close else None)
    suffix = f"; did you mean {shown(hint)}?" if hint else f"; supported: {', '.join(LAYER_TYPES)}"
    problems.add(path, f"unknown layer type {shown(value)}{suffix}")
    return None


def _data_format(
    value: Any, path: FieldPath, problems: Problems
) -> Literal["channels_last", "channels_first"] | None:
    """Keras lower-cases data_format; None means its default, channels_last."""
    if value is None:
        return "channels_last"
    if isinstance(value, str) and value.lower() in ("channels_last", "channels_first"):
        return "channels_last" if value.lower() == "channels_last" else "channels_first"
    problems.add(path, f"must be 'channels_last' or 'channels_first', got {_show(value)}")
    return None


def _padding(value: Any, path: FieldPath, problems: Problems) -> Literal["valid", "same"] | None:
    if isinstance(value, str) and value.lower() in ("valid", "same"):
        return "valid" if value.lower() == "valid" else "same"
    problems.add(path, f"must be 'valid' or 'same' (case-insensitive), got {shown(value)}")
    return None


def parse_activation(value: Any, path: FieldPath, problems: Problems) -> str | None:
    """A Keras activation name (or None for linear) → the activation table's name."""
    if value is None:
        return "linear"
    if not isinstance(value, str):
        problems.add(path, f"must be an activation name or null, got {shown(value)} ({kind_of(value)})")
        return None
    name = activations.canonical_activation(value)
    if name is not None:
        return name
    if value in activations.REFUSED:
        problems.add(path, f"{shown(value)} {activations.REFUSED[value]}")
        return None
    hint = difflib.get_close_matches(value.lower(), activations.NAMES, n=1)
    suffix = f"; did you mean {shown(hint[0])}? (names are case-sensitive)" if hint else ""
    problems.add(path, f"unknown activation {shown(value)}{suffix}")
    return None


def check_dtype(value: Any, path: FieldPath, problems: Problems, policies: bool = True) -> str | None:
    """A dtype name, or (for layers) a Keras dtype policy name."""
    accepted = POLICIES if policies else DTYPES
    if value in accepted:
        return str(value)
    if isinstance(value, str) and value in REFUSED_DTYPES:
        problems.add(path, f"{shown(value)} is not supported: {REFUSED_DTYPES[value]}")
    else:
        problems.add(path, f"must be one of {', '.join(accepted)}, got {shown(value)}")
    return None


_PYDANTIC_MESSAGES: dict[str, Callable[[Any], str]] = {
    "missing": lambda e: "required argument is missing",
    "int_type": lambda e: f"must be an integer, got {_show(e['input'])}",
    "bool_type": lambda e: f"must be true or false, got {_show(e['input'])}",
    "string_type": lambda e: f"must be a string, got {_show(e['input'])}",
    "list_type": lambda e: f"must be a list, got {_show(e['input'])}",
    "greater_than": lambda e: f"must be >= {e['ctx']['gt'] + 1}, got {shown(e['input'])}",
    "greater_than_equal": lambda e: f"must be >= {e['ctx']['ge']}, got {shown(e['input'])}",
    "less_than_equal": lambda e: f"must be <= {e['ctx']['le']}, got {shown(e['input'])}",
    "string_too_short": lambda e: "must not be empty",
    "too_short": lambda e: f"must have at least {e['ctx']['min_length']} item(s)",
    "literal_error": lambda e: f"must be one of {e['ctx']['expected']}, got {_show(e['input'])}",
    "model_type": lambda e: f"must be a mapping, got {_show(e['input'])}",
    "model_attributes_type": lambda e: f"must be a mapping, got {_show(e['input'])}",
}


def validate_arguments(model: type[Any], data: Mapping[str, Any], path: FieldPath, problems: Problems) -> Any:
    """Validate with a pydantic model, turning its errors into our problems."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = tuple(
                part for part in error["loc"] if not (isinstance(part, str) and part.startswith(("[", "<")))
            )
            if error["type"] == "extra_forbidden":
                loc = tuple(error["loc"])  # the user's own key, whatever its first character
                key = str(loc[-1])
                known = list(model.model_fields)
                hint = difflib.get_close_matches(key, known, n=1)
                suffix = f"; did you mean {shown(hint[0])}?" if hint else ""
                what = (
                    f"unrecognized argument {shown(key)} (Keras rejects unknown keyword arguments)"
                    if model is LayerArgs
                    else f"unrecognized key {shown(key)}"
                )
                problems.add((*path, *loc), what + suffix)
                continue
            render = _PYDANTIC_MESSAGES.get(error["type"])
            problems.add((*path, *loc), render(error) if render else error["msg"])
        return None


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def shape_text(shape: tuple[int | None, ...]) -> str:
    return str(tuple(shape))


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape}"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "mapping",
    }.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    """JSON spelling for scalars (true, null, "text"), bounded like every shown value."""
    if isinstance(value, (str, bool, float, type(None))):
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return shown(value) if isinstance(value, int) else kind_of(value)


def _size_text(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
