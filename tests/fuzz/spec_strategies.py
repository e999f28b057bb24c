"""Spec mappings for the fuzz tests: a valid spec (single-layer or model form) + a few mutations →
`Case`, which `Case.build` turns into the mapping `load_spec` is given.

Valid specs (`valid_specs`, one `layer_args` per layer): ranks 1-3, small sizes, random paddings,
output_padding, dilation, activations, data formats, dtype policies, initializers, regularizers,
constraints, inline or .npz weights; each says whether it is valid by construction (Keras' output
lengths, from the reference). Mutations (`mutations`): wrong types, missing and unknown keys
(unicode, non-string), extreme numbers, NaN/inf, huge and deeply nested lists, cyclic containers,
numpy scalars and arrays, broken inline weights and broken weight files. Values that cannot be
hashed, printed or reused (cyclic, huge, generators, files) are placeholders (`Special`,
`InlineWeights`, `NpzWeights`, `BrokenInline`) made fresh per example and shown by name in
hypothesis' reports. `for_files=True` keeps to what a YAML or JSON file can hold.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import types
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from deconv_compiler import reference
from deconv_compiler.activations import NAMES as ACTIVATION_NAMES

SPECS_DIR = Path(__file__).resolve().parents[2] / "specs"
EXAMPLE_SPEC_FILES = sorted(p for p in SPECS_DIR.iterdir() if p.suffix in (".yaml", ".yml", ".json"))

# --- special values: built per example, shown by name in hypothesis' reports ----------------------


def _nested_list(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _nested_dict(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def _cyclic_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def _cyclic_dict() -> dict[str, Any]:
    value: dict[str, Any] = {"class_name": "Zeros"}
    value["config"] = value
    return value


class _IntLike(int):
    """An int subclass (e.g. an IntEnum member or a numpy-ish wrapper) with a custom repr."""

    def __repr__(self) -> str:
        return f"IntLike({int(self)})"


# Values any serialized spec (YAML or JSON text) can hold too.
FILE_SPECIALS: dict[str, Callable[[], Any]] = {
    "HUGE_LIST": lambda: [1] * 10_000,
    "HUGE_LIST_OF_LISTS": lambda: [[1, 1]] * 10_000,
    "HUGE_STRING": lambda: "a" * 100_000,
    "NESTED_LIST_100": lambda: _nested_list(100),
    "NESTED_DICT_100": lambda: _nested_dict(100),
    "INT_10_400": lambda: 10**400,  # beyond float: math.isfinite raises OverflowError
    "NEG_INT_10_400": lambda: -(10**400),
    "INT_4000_DIGITS": lambda: 10**3999,  # prints, but only just
}
# Values only the Python API can be given.
PY_SPECIALS: dict[str, Callable[[], Any]] = {
    **FILE_SPECIALS,
    "NESTED_LIST_5000": lambda: _nested_list(5_000),
    "NESTED_DICT_5000": lambda: _nested_dict(5_000),
    "CYCLIC_LIST": _cyclic_list,
    "CYCLIC_DICT": _cyclic_dict,
    "INT_10_5000": lambda: 10**5000,  # str() refuses it (Python's int-to-str digit limit)
    "NP_INT64_3": lambda: np.int64(3),
    "NP_INT32_2": lambda: np.int32(2),
    "NP_FLOAT32_2": lambda: np.float32(2.0),
    "NP_FLOAT64_NAN": lambda: np.float64("nan"),
    "NP_BOOL_TRUE": lambda: np.bool_(True),
    "NP_STR_RELU": lambda: np.str_("relu"),
    "NP_ARRAY_3_3": lambda: np.array([3, 3]),
    "NP_ARRAY_0D_NAN": lambda: np.array(np.nan),
    "NP_ARRAY_2x2": lambda: np.ones((2, 2)),
    "NP_ARRAY_EMPTY": lambda: np.zeros((0,)),
    "TUPLE_2_2": lambda: (2, 2),
    "TUPLE_EMPTY": lambda: (),
    "BYTES": lambda: b"relu",
    "BYTEARRAY": lambda: bytearray(b"\x00\xff"),
    "SET": lambda: {1, 2},
    "FROZENSET": lambda: frozenset({"a"}),
    "RANGE_3": lambda: range(3),
    "GENERATOR": lambda: (i for i in range(3)),
    "MAPPING_PROXY": lambda: types.MappingProxyType({"class_name": "Zeros", "config": {}}),
    "OBJECT": lambda: object(),
    "DECIMAL_3": lambda: Decimal("3"),
    "FRACTION_3": lambda: Fraction(3, 1),
    "COMPLEX_3": lambda: complex(3, 0),
    "INT_SUBCLASS_3": lambda: _IntLike(3),
    "ELLIPSIS": lambda: ...,
    "PATH": lambda: Path("weights.npz"),
    "TYPE": lambda: int,
    "FUNCTION": lambda: len,
}


@dataclass(frozen=True)
class Special:
    """A value made fresh for each example (cyclic, huge, or not hashable), shown by name."""

    name: str

    def __repr__(self) -> str:
        return self.name

    def make(self) -> Any:
        return PY_SPECIALS[self.name]()


WEIGHT_FILE_VARIANTS = (
    "good",
    "good_float16",
    "good_int",
    "wrong_shape",
    "onnx_layout",
    "nan",
    "inf_bias",
    "no_kernel",
    "no_bias",
    "extra_arrays",
    "bool",
    "complex",
    "strings",
    "structured",
    "object_pickle",
    "scalar_kernel",
    "truncated_zip",
    "forged_huge_shape",
    "forged_bad_header",
    "npy_not_npz",
    "text",
    "empty",
    "zip_of_text",
    "directory",
    "fifo",
    "missing",
    "dev_null",
    "dev_zero",
    "nul_in_name",
    "long_name",
)


@dataclass(frozen=True)
class InlineWeights:
    """`weights: [kernel, bias]` as nested lists, numbers from a seeded generator."""

    kernel_shape: tuple[int, ...]
    use_bias: bool
    seed: int

    def make(self) -> list[Any]:
        kernel, bias = _weights(self.kernel_shape, self.seed)
        return [kernel.tolist(), bias.tolist()] if self.use_bias else [kernel.tolist()]


@dataclass(frozen=True)
class NpzWeights:
    """`weights: <path>`: a file written for the example (good, or broken in one way)."""

    kernel_shape: tuple[int, ...]
    use_bias: bool
    seed: int
    variant: str = "good"


def _weights(kernel_shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    kernel = np.round(rng.uniform(-1, 1, kernel_shape), 3)
    bias = np.round(rng.uniform(-1, 1, (kernel_shape[-2],)), 3)
    return kernel, bias


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _forged_npz(path: Path, header: bytes) -> None:
    """An .npz whose kernel.npy header is written by hand (no array data follows)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("kernel.npy", header)
        archive.writestr("bias.npy", header)


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def write_weight_file(spec: NpzWeights, directory: Path, relative: bool) -> str:
    """Create the file `spec` describes in `directory`; return the path the spec names
    (relative: the file name alone, for a spec file in `directory`)."""
    kernel, bias = _weights(spec.kernel_shape, spec.seed)
    good: dict[str, np.ndarray] = {"kernel": kernel, "bias": bias} if spec.use_bias else {"kernel": kernel}
    name = f"w{len(list(directory.iterdir()))}_{spec.variant}.npz"  # one file per placeholder
    target = directory / name
    variant = spec.variant
    if variant == "good":
        _write_npz(target, good)
    elif variant == "good_float16":
        _write_npz(target, {k: v.astype(np.float16) for k, v in good.items()})
    elif variant == "good_int":
        _write_npz(target, {k: np.round(v * 3).astype(np.int32) for k, v in good.items()})
    elif variant == "wrong_shape":
        _write_npz(target, {**good, "kernel": np.zeros((*spec.kernel_shape, 2))})
    elif variant == "onnx_layout":
        rank = len(spec.kernel_shape) - 2
        _write_npz(target, {**good, "kernel": np.transpose(kernel, (rank + 1, rank, *range(rank)))})
    elif variant == "nan":
        flat = kernel.copy().reshape(-1)
        flat[0] = np.nan
        _write_npz(target, {**good, "kernel": flat.reshape(kernel.shape)})
    elif variant == "inf_bias":
        _write_npz(target, {"kernel": kernel, "bias": np.full(bias.shape, np.inf)})
    elif variant == "no_kernel":
        _write_npz(target, {"bias": bias})
    elif variant == "no_bias":
        _write_npz(target, {"kernel": kernel})
    elif variant == "extra_arrays":
        _write_npz(target, {**good, "kernel_1": kernel, "junk": np.arange(3)})
    elif variant == "bool":
        _write_npz(target, {k: v > 0 for k, v in good.items()})
    elif variant == "complex":
        _write_npz(target, {k: v.astype(np.complex128) for k, v in good.items()})
    elif variant == "strings":
        _write_npz(target, {k: v.astype(str) for k, v in good.items()})
    elif variant == "structured":
        _write_npz(target, {"kernel": np.zeros(spec.kernel_shape, dtype=[("a", "<f4")]), "bias": bias})
    elif variant == "object_pickle":
        with open(target, "wb") as handle:
            np.savez(handle, kernel=np.array([kernel, "x"], dtype=object), bias=bias)
    elif variant == "scalar_kernel":
        _write_npz(target, {"kernel": np.float64(1.0), "bias": bias})
    elif variant == "truncated_zip":
        _write_npz(target, good)
        target.write_bytes(target.read_bytes()[: max(1, target.stat().st_size // 2)])
    elif variant == "forged_huge_shape":
        _forged_npz(target, _npy_header("<f8", (10**6, 10**6, 10**6)))
    elif variant == "forged_bad_header":
        _forged_npz(target, b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    \n")
    elif variant == "npy_not_npz":
        with open(target, "wb") as handle:
            np.save(handle, kernel)
    elif variant == "text":
        target.write_text("kernel: [1, 2]\n")
    elif variant == "empty":
        target.write_bytes(b"")
    elif variant == "zip_of_text":
        with zipfile.ZipFile(target, "w") as archive:
            archive.writestr("kernel.npy", "not numpy")
    elif variant == "directory":
        target.mkdir()
    elif variant == "fifo":
        os.mkfifo(target)
    elif variant == "missing":
        pass
    elif variant == "dev_null":
        return "/dev/null"
    elif variant == "dev_zero":
        return "/dev/zero"
    elif variant == "nul_in_name":
        return str(directory / "w\x00.npz")
    elif variant == "long_name":
        return str(directory / ("w" * 5_000 + ".npz"))
    else:  # pragma: no cover
        raise AssertionError(variant)
    return name if relative else str(target)


def materialize(value: Any, directory: Path, relative: bool = False) -> Any:
    """Replace the placeholders in a spec tree by the values they stand for."""
    if isinstance(value, (Special, InlineWeights, BrokenInline)):
        return value.make()
    if isinstance(value, NpzWeights):
        return write_weight_file(value, directory, relative)
    if isinstance(value, dict):
        return {key: materialize(item, directory, relative) for key, item in value.items()}
    if isinstance(value, list):
        return [materialize(item, directory, relative) for item in value]
    return value


# --- valid specs ------------------------------------------------------------------------------------

LAYER_TYPE_NAMES = {
    r: (f"Conv{r}DTranspose", f"Convolution{r}DTranspose", f"layer_conv_{r}d_transpose") for r in (1, 2, 3)
}
ACTIVATIONS: tuple[str | None, ...] = (None, *ACTIVATION_NAMES)
INITIALIZERS: tuple[Any, ...] = (
    "glorot_uniform",
    "GlorotNormal",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "LecunUniform",
    "zeros",
    "ones",
    "orthogonal",
    "random_normal",
    "uniform",
    "truncated_normal",
    "variance_scaling",
    {"class_name": "RandomNormal", "config": {"mean": 0.1, "stddev": 0.2, "seed": 3}},
    {"class_name": "Constant", "config": {"value": 0.25}},
    {"class_name": "VarianceScaling", "config": {"scale": 2.0, "mode": "fan_avg", "distribution": "uniform"}},
    {
        "class_name": "RandomUniform",
        "config": {"minval": -0.5, "maxval": 0.5},
        "module": "keras.initializers",
    },
    {"class_name": "Orthogonal", "config": {"gain": 0.5, "seed": 1}, "registered_name": None},
)
REGULARIZERS: tuple[Any, ...] = ("l1", "l2", "L1L2", {"class_name": "L1L2", "config": {"l1": 0.1, "l2": 0.2}})
CONSTRAINTS: tuple[Any, ...] = (
    "max_norm",
    "non_neg",
    "unit_norm",
    {"class_name": "MinMaxNorm", "config": {"axis": [0, 1]}},
)
DTYPE_POLICIES = ("float32", "float16", "mixed_float16", "float64")
MAX_ELEMENTS = 30_000  # largest layer output a valid example aims for (dynamic sizes counted as 4)


def _int_or_list(draw: Any, values: list[int]) -> Any:
    """Keras' int-or-tuple arguments, written either way when they agree."""
    if len(set(values)) == 1 and draw(st.booleans()):
        return values[0]
    return list(values)


def _case_variant(draw: Any, word: str) -> str:
    return (
        draw(st.sampled_from([word, word.upper(), word.capitalize()]))
        if draw(st.integers(0, 3)) == 0
        else word
    )


def _elements(shape: tuple[int | None, ...]) -> int:
    return math.prod(4 if d is None else d for d in shape)


@st.composite
def layer_args(
    draw: Any, rank: int, shape: tuple[int | None, ...], index: int, single: bool, data_format: str
) -> tuple[dict[str, Any], tuple[int | None, ...], bool]:
    """One valid layer on an input of `shape`: (arguments, output shape, still valid)."""
    channels = shape[-1] if data_format == "channels_last" else shape[1]
    assert channels is not None
    layer: dict[str, Any] = {}
    if rank != 2 or single or draw(st.booleans()):
        layer["type"] = draw(st.sampled_from(LAYER_TYPE_NAMES[rank]))
    filters = draw(st.integers(1, 4))
    layer["filters"] = filters
    kernel = [draw(st.integers(1, 4)) for _ in range(rank)]
    layer["kernel_size"] = _int_or_list(draw, kernel)
    strides = [1] * rank
    if draw(st.integers(0, 2)):
        strides = [draw(st.integers(1, 3)) for _ in range(rank)]
        layer["strides"] = _int_or_list(draw, strides)
    dilation = [1] * rank
    if all(s == 1 for s in strides) and draw(st.booleans()):
        dilation = [draw(st.integers(1, 3)) for _ in range(rank)]
        layer["dilation_rate"] = _int_or_list(draw, dilation)
    padding = draw(st.sampled_from(["valid", "same"]))
    if padding == "same" or draw(st.booleans()):
        layer["padding"] = _case_variant(draw, padding)
    output_padding: list[int] | None = None
    choice = draw(st.integers(0, 3))
    if choice == 1:
        layer["output_padding"] = None
    elif choice >= 2:
        output_padding = [draw(st.integers(0, s - 1)) for s in strides]
        layer["output_padding"] = _int_or_list(draw, output_padding)
    if data_format != "channels_last" or draw(st.integers(0, 3)) == 0:
        layer["data_format"] = _case_variant(draw, data_format) if draw(st.booleans()) else data_format
    activation = draw(st.sampled_from(ACTIVATIONS))
    if activation is not None or draw(st.booleans()):
        layer["activation"] = activation
    use_bias = draw(st.booleans())
    if not use_bias or draw(st.booleans()):
        layer["use_bias"] = use_bias
    if draw(st.integers(0, 4)) == 0:
        layer["dtype"] = draw(st.sampled_from(DTYPE_POLICIES))
    if draw(st.integers(0, 3)) == 0:
        layer["kernel_initializer"] = draw(st.sampled_from(INITIALIZERS))
    if draw(st.integers(0, 3)) == 0:
        layer["bias_initializer"] = draw(st.sampled_from(INITIALIZERS))
    for name in ("kernel_regularizer", "bias_regularizer", "activity_regularizer"):
        if draw(st.integers(0, 7)) == 0:
            layer[name] = draw(st.sampled_from(REGULARIZERS))
    for name in ("kernel_constraint", "bias_constraint"):
        if draw(st.integers(0, 7)) == 0:
            layer[name] = draw(st.sampled_from(CONSTRAINTS))
    if draw(st.integers(0, 3)) == 0:
        # any name Keras accepts (no "/"), unique in the model, some like the graph's own names
        layer["name"] = draw(st.sampled_from([f"layer{index}", f"décodeur_{index}", f"l {index}", "output"]))
        if layer["name"] == "output" and index > 0:
            layer["name"] = f"output_{index}"
    if draw(st.integers(0, 5)) == 0:
        layer["trainable"] = draw(st.booleans())
    if draw(st.integers(0, 5)) == 0:
        layer["seed"] = draw(st.integers(0, 2**32))
    kernel_shape = (*kernel, filters, channels)
    weights = draw(st.integers(0, 5))
    if weights == 0:
        layer["weights"] = InlineWeights(kernel_shape, use_bias, draw(st.integers(0, 99)))
    elif weights == 1:
        layer["weights"] = NpzWeights(kernel_shape, use_bias, draw(st.integers(0, 99)))

    # the output shape, as Keras computes it; glu halves the last axis (and refuses an odd one)
    spatial = shape[1:-1] if data_format == "channels_last" else shape[2:]
    out_spatial: list[int | None] = []
    valid = True
    for axis, length in enumerate(spatial):
        if length is None:
            out_spatial.append(None)
            continue
        op = None if output_padding is None else output_padding[axis]
        out = reference.keras_output_length(length, kernel[axis], strides[axis], dilation[axis], padding, op)
        valid = valid and out > 0
        out_spatial.append(out)
    out_shape = (
        (shape[0], *out_spatial, filters)
        if data_format == "channels_last"
        else (shape[0], filters, *out_spatial)
    )
    if activation == "glu":
        last = out_shape[-1]
        valid = valid and (last is None or last % 2 == 0)
        out_shape = (*out_shape[:-1], None if last is None else last // 2)
    if valid and out_shape[-1] == 0:
        valid = False
    return layer, out_shape, valid


@dataclass(frozen=True)
class Base:
    """A generated spec and whether it is valid by construction."""

    spec: dict[str, Any]
    valid: bool


@st.composite
def valid_specs(draw: Any) -> Base:
    """A small valid spec, single-layer or model form."""
    rank = draw(st.integers(1, 3))
    single = draw(st.booleans())
    max_spatial = 6 if rank < 3 else 4
    spatial = [
        draw(st.one_of(st.none(), st.integers(1, max_spatial)))
        if draw(st.integers(0, 4)) == 0
        else draw(st.integers(1, max_spatial))
        for _ in range(rank)
    ]
    channels = draw(st.integers(1, 4))
    batch = draw(st.sampled_from([None, 1, 2]))
    data_format = draw(st.sampled_from(["channels_last", "channels_first"]))
    shape: tuple[int | None, ...] = (
        (batch, *spatial, channels) if data_format == "channels_last" else (batch, channels, *spatial)
    )
    layers: list[dict[str, Any]] = []
    valid = True
    count = 1 if single else draw(st.integers(1, 3))
    for index in range(count):
        if index > 0:
            data_format = (
                draw(st.sampled_from(["channels_last", "channels_first"]))
                if draw(st.integers(0, 3)) == 0
                else data_format
            )
            channel = shape[-1] if data_format == "channels_last" else shape[1]
            if channel is None or _elements(shape) > MAX_ELEMENTS // 2:
                break
        layer, out_shape, layer_valid = draw(layer_args(rank, shape, index, single, data_format))
        layers.append(layer)
        valid = valid and layer_valid
        shape = out_shape
        if not layer_valid:
            break
    first_shape = (
        (batch, *spatial, channels)
        if layers[0].get("data_format", "channels_last").lower() == "channels_last"
        else (batch, channels, *spatial)
    )
    if single:
        spec = dict(layers[0])
        how = draw(st.integers(0, 2))
        if how == 0:
            spec["input_shape"] = list(first_shape[1:])
            if batch is not None:
                spec["batch_size"] = batch
        elif how == 1:
            spec["batch_input_shape"] = list(first_shape)
        else:
            spec["input_shape"] = list(first_shape[1:])
        if how == 2 and batch is not None and draw(st.booleans()):
            spec["batch_size"] = batch
        return Base(spec, valid)
    spec = {"layers": layers}
    if draw(st.integers(0, 3)):
        spec["input"] = {"shape": list(first_shape)}
        if draw(st.booleans()):
            spec["input"]["dtype"] = draw(st.sampled_from(["float32", "float16", "float64"]))
        if draw(st.booleans()):
            name = draw(st.sampled_from(["latent", "x", "入力", "in put", "output", "input_dim1", "batch"]))
            if all(layer.get("name") != name for layer in layers):  # Keras: names are unique
                spec["input"]["name"] = name
    else:
        layers[0]["input_shape"] = list(first_shape[1:])
        if batch is not None:
            layers[0]["batch_size"] = batch
    if draw(st.booleans()):
        spec["name"] = draw(st.sampled_from(["decoder", "modèle", "m-1"]))
    if draw(st.booleans()):
        spec["seed"] = draw(st.integers(0, 2**32))
    return Base(spec, valid)


# --- mutations ----------------------------------------------------------------------------------------

EXTREME_INTS = (
    0,
    -1,
    1,
    2,
    3,
    5,
    2**31 - 1,
    2**31,
    2**32,
    2**63 - 1,
    2**63,
    2**64,
    -(2**31),
    -(2**63),
    10**30,
    -(10**30),
)
NAME_TRAPS = (
    "output",
    "input",
    "batch",
    "input_dim1",
    "output_dim1",
    "output/Transpose",
    "output/Cast",
    "output/Identity",
    "layer0",
    "layer0/kernel",
    "layer0/bias",
    "layer0/ConvTranspose",
    "layer0/Transpose",
    *(
        f"conv{r}d_transpose{suffix}"
        for r in (1, 2, 3)
        for suffix in ("", "_1", "/kernel", "/ConvTranspose", "/Transpose")
    ),
)
BIG_VALID = (2**31 - 1, 2**30, 2**24, 2**16, 1000, 100)
INTERESTING_STRINGS = (
    "",
    " ",
    "valid",
    "same",
    "VALID",
    "full",
    "causal",
    "channels_first",
    "channels_last",
    "NHWC",
    "relu",
    "glu",
    "threshold",
    "linear",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "Conv2D",
    "float16",
    "float64",
    "mixed_float16",
    "bfloat16",
    "int32",
    "zeros",
    "constant",
    "identity",
    "l2",
    "max_norm",
    "3",
    "-1",
    "nan",
    "inf",
    "null",
    "true",
    "[3, 3]",
    "output",
    "input",
    "batch",
    "output/Transpose",
    "conv2d_transpose",
    "conv2d_transpose/kernel",
    "conv2d_transpose/ConvTranspose",
    "layers",
    "\x00",
    "\n",
    "\t",
    "\ud800",
    "\ufeff",
    "é",
    "ключ",
    "🙂",
    "\u202e",
    "a:b",
    "a/b",
    "{}",
    "'",
    '"',
    "../../etc/passwd",
    "/",
    ".",
    "weights.npz",
)
KEYS = (
    "type",
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "output_padding",
    "data_format",
    "dilation_rate",
    "activation",
    "use_bias",
    "kernel_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "bias_constraint",
    "input_shape",
    "batch_input_shape",
    "batch_size",
    "dtype",
    "name",
    "trainable",
    "weights",
    "seed",
    "layers",
    "input",
    "shape",
    "groups",
    "class_name",
    "config",
    "module",
    "registered_name",
    "filter",
    "kernel_sizes",
    "Filters",
    "units",
    "",
    " filters",
    "ключ",
    "🙂",
    "\x00",
    "\ud800",
    "é" * 50,
    "<x>",
    "[0]",
    "kernel_size[0]",
    "layers.0",
)
PY_ONLY_KEYS: tuple[Any, ...] = (
    1,
    0,
    -1,
    None,
    True,
    1.5,
    float("nan"),
    ("filters",),
    b"filters",
    frozenset(),
)


def scalars(for_files: bool) -> st.SearchStrategy[Any]:
    text = st.text(max_size=12) if for_files else st.text(st.characters(exclude_categories=()), max_size=12)
    return st.one_of(
        st.sampled_from(EXTREME_INTS),
        st.integers(-3, 6),
        st.integers(),
        st.floats(),
        st.sampled_from(
            [
                0.0,
                -0.0,
                0.5,
                1.0,
                2.0,
                3.0,
                1e-300,
                1e300,
                1.7976931348623157e308,
                float("nan"),
                float("inf"),
                float("-inf"),
            ]
        ),
        st.booleans(),
        st.none(),
        text,
        st.sampled_from(INTERESTING_STRINGS),
    )


def garbage(for_files: bool) -> st.SearchStrategy[Any]:
    """Any value: scalars, small containers of them, and the special values."""
    leaf = scalars(for_files)
    specials = FILE_SPECIALS if for_files else PY_SPECIALS
    return st.one_of(
        leaf,
        leaf,
        st.lists(st.integers(-1, 5), max_size=4),  # near misses for int-or-tuple arguments
        st.lists(st.one_of(st.none(), st.integers(-1, 8)), max_size=6),  # and for shapes
        st.lists(leaf, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), leaf, max_size=3),
        st.sampled_from([Special(name) for name in specials]),
        st.builds(
            lambda v: {"class_name": v, "config": {}},
            st.sampled_from(INITIALIZERS[:13] + ("L2", "MaxNorm", "Foo")),
        ),
    )


Path_ = tuple[Any, ...]


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value)
    if isinstance(value, list):
        return list(range(len(value)))
    return []


def all_paths(tree: Any) -> list[Path_]:
    """Every path to a value in the tree (not into weights or placeholders)."""
    found: list[Path_] = []

    def walk(value: Any, path: Path_) -> None:
        for key in _children(value):
            found.append((*path, key))
            if key != "weights":
                walk(value[key], (*path, key))

    walk(tree, ())
    return found


def container_paths(tree: Any, kind: type) -> list[Path_]:
    result = [()] if isinstance(tree, kind) else []
    return result + [p for p in all_paths(tree) if isinstance(get(tree, p), kind)]


def get(tree: Any, path: Path_) -> Any:
    for key in path:
        tree = tree[key]
    return tree


@dataclass(frozen=True)
class Mutation:
    op: str  # set / delete / add / retype / weights
    path: Path_
    value: Any = None

    def __repr__(self) -> str:
        value = "" if self.op == "delete" else f", {self.value!r}"
        return f"{self.op}({list(self.path)}{value})"


def apply(tree: Any, mutation: Mutation) -> Any:
    """Apply one mutation in place (the root may be replaced: returns the new root)."""
    op, path, value = mutation.op, mutation.path, copy.deepcopy(mutation.value)  # never share it
    if op == "add":
        get(tree, path)[value[0]] = value[1]
        return tree
    if not path:
        return tree
    parent, key = get(tree, path[:-1]), path[-1]
    if op == "set":
        parent[key] = value
    elif op == "delete":
        del parent[key]
    elif op == "retype":
        parent[key] = retype(parent[key], value)
    elif op == "weights":
        parent[key] = broken_weights(parent[key], value)
    return tree


RETYPES = ("float", "string", "list", "dict", "negate", "bool", "double", "numpy", "tuple", "upper", "nest")


def retype(value: Any, how: str) -> Any:
    """The same value in another type (3 → 3.0, "3", [3], {"value": 3}, -3, ...)."""
    if isinstance(value, (Special, InlineWeights, NpzWeights)):
        return value
    if how == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value) if abs(value) < 2**1000 else value
    if how == "string":
        if isinstance(value, str):
            return value
        try:
            return json.dumps(value, default=repr)
        except (TypeError, ValueError):
            return repr(value)
    if how == "list":
        return [value]
    if how == "dict":
        return {"value": value}
    if how == "negate" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return -value
    if how == "bool":
        return bool(value) if isinstance(value, (int, float)) else value
    if how == "double" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value * 1000
    if how == "numpy" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return Special("NP_INT64_3" if isinstance(value, int) else "NP_FLOAT32_2")
    if how == "tuple" and isinstance(value, list):
        return Special("TUPLE_2_2")
    if how == "upper" and isinstance(value, str):
        return value.upper()
    if how == "nest" and isinstance(value, list):
        return [value, value]
    return value


WEIGHT_BREAKS = (
    "nan_kernel",
    "inf_bias",
    "string_item",
    "ragged",
    "extra_dim",
    "drop_bias",
    "extra_item",
    "transpose",
    "empty",
    "scalar",
    "bool_items",
    "huge_values",
    "big_int_item",
    "none_item",
    "dict",
    "numpy_array",
    *(f"file:{variant}" for variant in WEIGHT_FILE_VARIANTS),
)


def broken_weights(value: Any, how: str) -> Any:
    """Inline or file weights broken in one way (placeholders carry the layer's kernel shape)."""
    if not isinstance(value, (InlineWeights, NpzWeights)):
        return value
    if how.startswith("file:"):
        return NpzWeights(value.kernel_shape, value.use_bias, value.seed, how[5:])
    if isinstance(value, NpzWeights):
        value = InlineWeights(value.kernel_shape, value.use_bias, value.seed)
    return BrokenInline(value, how)


@dataclass(frozen=True)
class BrokenInline:
    """Inline weights with one defect, made per example."""

    base: InlineWeights
    how: str

    def make(self) -> Any:
        weights = self.base.make()
        kernel = weights[0]
        how = self.how
        if how == "nan_kernel":
            _set_leaf(kernel, float("nan"))
        elif how == "inf_bias" and len(weights) == 2:
            weights[1][0] = float("inf")
        elif how == "string_item":
            _set_leaf(kernel, "0.5")
        elif how == "ragged":
            _leaf_parent(kernel).append(0.0)
        elif how == "extra_dim":
            weights[0] = [kernel]
        elif how == "drop_bias":
            weights = weights[:1]
        elif how == "extra_item":
            weights.append([0.0])
        elif how == "transpose":
            weights[0] = np.asarray(kernel).T.tolist()
        elif how == "empty":
            weights = []
        elif how == "scalar":
            weights[0] = 1.0
        elif how == "bool_items":
            weights[0] = (np.asarray(kernel) > 0).tolist()
        elif how == "huge_values":
            weights[0] = (np.asarray(kernel) * 1e300).tolist()
        elif how == "big_int_item":
            _set_leaf(kernel, 10**30)
        elif how == "none_item":
            _set_leaf(kernel, None)
        elif how == "dict":
            weights = {"kernel": kernel}
        elif how == "numpy_array":
            weights[0] = np.asarray(kernel)
        return weights


def _leaf_parent(nested: Any) -> list[Any]:
    while isinstance(nested[0], list):
        nested = nested[0]
    return nested


def _set_leaf(nested: Any, value: Any) -> None:
    _leaf_parent(nested)[0] = value


@st.composite
def mutations(draw: Any, base: dict[str, Any], for_files: bool) -> tuple[Mutation, ...]:
    """0-4 mutations, each chosen from the paths of the tree as the previous ones left it."""
    tree = copy.deepcopy(base)
    done: list[Mutation] = []
    for _ in range(draw(st.integers(0, 4))):
        paths = all_paths(tree)
        weight_paths = [
            p
            for p in paths
            if p and p[-1] == "weights" and isinstance(get(tree, p), (InlineWeights, NpzWeights))
        ]
        int_paths = [p for p in paths if type(get(tree, p)) is int or isinstance(get(tree, p), list)]
        name_holders = [
            p for p in container_paths(tree, dict) if p == ("input",) or p[:1] == ("layers",) or p == ()
        ]
        ops = ["set", "set", "delete", "add", "retype"]
        op = draw(
            st.sampled_from(
                ops
                + ["weights"] * bool(weight_paths)
                + ["big"] * bool(int_paths)
                + ["rename"] * bool(name_holders)
            )
        )
        if op == "add":
            target = draw(st.sampled_from(container_paths(tree, dict) or [()]))
            if not isinstance(get(tree, target), dict):
                continue
            key = draw(
                st.one_of(st.sampled_from(KEYS), st.text(max_size=6))
                if for_files
                else st.one_of(st.sampled_from(KEYS), st.sampled_from(PY_ONLY_KEYS), st.text(max_size=6))
            )
            mutation = Mutation("add", target, (key, draw(garbage(for_files))))
        elif not paths:
            continue
        elif op == "rename":  # a layer or input named like a tensor of the graph
            holder = draw(st.sampled_from(name_holders))
            mutation = Mutation("add", holder, ("name", draw(st.sampled_from(NAME_TRAPS))))
        elif op == "big":  # a large value that types check, for the size and resource limits
            mutation = Mutation("set", draw(st.sampled_from(int_paths)), draw(st.sampled_from(BIG_VALID)))
        elif op == "weights":
            mutation = Mutation(
                "weights", draw(st.sampled_from(weight_paths)), draw(st.sampled_from(WEIGHT_BREAKS))
            )
        else:
            path = draw(st.sampled_from(paths))
            if op == "set":
                mutation = Mutation("set", path, draw(garbage(for_files)))
            elif op == "delete":
                mutation = Mutation("delete", path)
            else:
                mutation = Mutation("retype", path, draw(st.sampled_from(RETYPES)))
        tree = apply(tree, mutation)
        done.append(mutation)
    return tuple(done)


@dataclass(frozen=True)
class Case:
    """A spec mapping: a valid base and the mutations applied to it."""

    base: Base
    mutations: tuple[Mutation, ...]

    def build(self, directory: Path, relative: bool = False) -> dict[str, Any]:
        tree = copy.deepcopy(self.base.spec)
        for mutation in self.mutations:
            tree = apply(tree, mutation)
        return materialize(tree, directory, relative)  # type: ignore[no-any-return]

    @property
    def expect_valid(self) -> bool:
        return self.base.valid and not self.mutations


@st.composite
def cases(draw: Any, for_files: bool = False) -> Case:
    base = draw(valid_specs())
    return Case(base, draw(mutations(base.spec, for_files)))
