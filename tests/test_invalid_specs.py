"""Invalid specs: a table of (name, spec, field path, message fragment), plus the behaviour around it.

Each table case must raise `SpecError` with one problem at exactly that path (as `format_path`
renders it) whose message contains the fragment. A spec is a Python mapping or YAML text; YAML text
is written to a temporary file and loaded from there, so relative weight paths and line numbers are
exercised too. Further tests: every problem in a spec is reported at once, line numbers and the
`file:line: path: message` format for YAML and JSON, YAML/JSON reading problems, and near misses
that Keras accepts and so must not be rejected.

"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import deconv_compiler as dc
from deconv_compiler.errors import Problem, format_path

# --- the table ----------------------------------------------------------------------------------

DELETE = object()  # marks an argument to remove from the base layer

BASE_LAYER: dict[str, Any] = {
    "type": "Conv2DTranspose",
    "filters": 4,
    "kernel_size": 3,
    "input_shape": [5, 5, 3],
}


def layer(**changes: Any) -> dict[str, Any]:
    """The base layer (valid) with some arguments changed, added or (with DELETE) removed."""
    spec = dict(BASE_LAYER)
    for key, value in changes.items():
        if value is DELETE:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


def model(*layers: Any, **top: Any) -> dict[str, Any]:
    """A model-form spec on a (1, 5, 5, 3) input."""
    return {"name": "m", "input": {"shape": [1, 5, 5, 3]}, "layers": list(layers), **top}


def zeros(*shape: int) -> Any:
    """A nested list of zeros (an inline weight)."""
    return np.zeros(shape).tolist()


@dataclass(frozen=True)
class Case:
    name: str
    spec: Mapping[str, Any] | str  # a mapping, or YAML text (loaded from a file)
    path: str  # exactly as format_path renders it
    fragment: str  # a piece of the message
    setup: Callable[[Path], None] | None = None  # writes files the spec refers to

    def load(self, directory: Path) -> dc.ModelSpec:
        if self.setup is not None:
            self.setup(directory)
        if isinstance(self.spec, str):
            file = directory / f"{self.name}.yaml"
            file.write_text(self.spec, encoding="utf-8")
            return dc.load_spec(file)
        return dc.load_spec(self.spec)


# fmt: off
CASES: list[Case] = [
    # filters
    Case("filters_zero", layer(filters=0), "filters", "must be >= 1, got 0"),
    Case("filters_negative", layer(filters=-3), "filters", "must be >= 1, got -3"),
    Case("filters_float", layer(filters=2.0), "filters", "must be an integer, got 2.0"),
    Case("filters_string", layer(filters="8"), "filters", 'must be an integer, got "8"'),
    Case("filters_bool", layer(filters=True), "filters", "must be an integer, got true"),
    Case("filters_missing", layer(filters=DELETE), "filters", "required argument is missing"),
    Case("filters_yaml_infinity", "filters: .inf\nkernel_size: 3\ninput_shape: [5, 5, 3]\n",
         "filters", "must be an integer"),
    # kernel_size
    Case("kernel_size_zero", layer(kernel_size=0), "kernel_size", "must be >= 1, got 0"),
    Case("kernel_size_three_values_for_2d", layer(kernel_size=[3, 3, 3]), "kernel_size",
         "must be an integer or a list of 2 integers, got 3 values"),
    Case("kernel_size_one_value_for_3d",
         layer(type="Conv3DTranspose", kernel_size=[3], input_shape=[4, 4, 4, 2]),
         "kernel_size", "a list of 3 integers, got 1 values"),
    Case("kernel_size_float", layer(kernel_size=2.5), "kernel_size", "got 2.5 (number)"),
    Case("kernel_size_float_item", layer(kernel_size=[3, 2.0]), "kernel_size[1]",
         "must be an integer, got 2.0"),
    Case("kernel_size_string", layer(kernel_size="3"), "kernel_size", "got '3' (string)"),
    Case("kernel_size_nested_list", layer(kernel_size=[[3], [3]]), "kernel_size[0]",
         "must be an integer, got [3] (list)"),
    Case("kernel_size_null", layer(kernel_size=None), "kernel_size", "got None (null)"),
    Case("kernel_size_missing", layer(kernel_size=DELETE), "kernel_size",
         "required argument is missing"),
    Case("kernel_size_numpy_scalar", layer(kernel_size=np.int64(3)), "kernel_size",
         "must be an integer or a list of 2 integers"),
    # strides, dilation_rate
    Case("strides_zero_in_one_axis", layer(strides=[1, 0]), "strides[1]", "must be >= 1, got 0"),
    Case("strides_bool", layer(strides=True), "strides", "(boolean)"),
    Case("strides_bool_item", layer(strides=[2, True]), "strides[1]", "must be an integer"),
    Case("strides_empty_list", layer(strides=[]), "strides", "got 0 values"),
    Case("dilation_rate_zero", layer(dilation_rate=0), "dilation_rate", "must be >= 1, got 0"),
    Case("dilation_rate_negative_item", layer(dilation_rate=[1, -2]), "dilation_rate[1]",
         "must be >= 1, got -2"),
    Case("strides_with_dilation_same_axis", layer(strides=2, dilation_rate=2), "dilation_rate",
         "`strides > 1` not supported in conjunction with `dilation_rate > 1`"),
    Case("strides_with_dilation_other_axes", layer(strides=[2, 1], dilation_rate=[1, 2]),
         "dilation_rate", "strides=(2, 1) and dilation_rate=(1, 2)"),
    # output_padding
    Case("output_padding_scalar_equal_strides", layer(strides=2, output_padding=2),
         "output_padding", "must be strictly less than strides"),
    Case("output_padding_with_default_strides", layer(output_padding=1), "output_padding",
         "output_padding=(1, 1), strides=(1, 1)"),
    Case("output_padding_one_axis_too_big", layer(strides=[2, 2], output_padding=[0, 2]),
         "output_padding[1]", "must be strictly less than strides"),
    Case("output_padding_negative", layer(strides=2, output_padding=-1), "output_padding",
         "must be >= 0, got -1"),
    Case("output_padding_negative_item", layer(strides=2, output_padding=[0, -1]),
         "output_padding[1]", "must be >= 0, got -1"),
    Case("output_padding_wrong_length", layer(strides=2, output_padding=[1]), "output_padding",
         "got 1 values"),
    # padding, data_format
    Case("padding_full", layer(padding="full"), "padding", "must be 'valid' or 'same'"),
    Case("padding_causal", layer(padding="causal"), "padding", "got 'causal'"),
    Case("padding_integer", layer(padding=1), "padding", "got 1"),
    Case("padding_null", layer(padding=None), "padding", "got None"),
    Case("data_format_invalid", layer(data_format="NHWC"), "data_format",
         "'channels_last' or 'channels_first'"),
    # unknown arguments
    Case("typo_filter", layer(filter=4), "filter",
         "unrecognized argument 'filter' (Keras rejects unknown keyword arguments); "
         "did you mean 'filters'?"),
    Case("typo_kernel_sizes", layer(kernel_sizes=3), "kernel_sizes", "did you mean 'kernel_size'?"),
    Case("groups", layer(groups=1), "groups", "no `groups` argument"),
    # activation
    Case("activation_unknown", layer(activation="relux"), "activation",
         "unknown activation 'relux'; did you mean 'relu'?"),
    Case("activation_wrong_case", layer(activation="Relu"), "activation",
         "(names are case-sensitive)"),
    Case("activation_threshold", layer(activation="threshold"), "activation",
         "needs `threshold` and `default_value`"),
    Case("activation_not_a_string", layer(activation=3), "activation",
         "must be an activation name or null"),
    Case("activation_empty_string", layer(activation=""), "activation", "unknown activation ''"),
    # initializers
    Case("initializer_unknown", layer(kernel_initializer="glorot"), "kernel_initializer",
         "unknown initializer 'glorot'; did you mean"),
    Case("initializer_wrong_case", layer(kernel_initializer="Glorot_Uniform"),
         "kernel_initializer", "did you mean 'GlorotUniform'?"),
    Case("initializer_constant_without_value", layer(bias_initializer="constant"),
         "bias_initializer", "Constant needs a 'value'"),
    Case("initializer_config_unknown_key",
         layer(kernel_initializer={"class_name": "RandomNormal", "config": {"stdev": 1.0}}),
         "kernel_initializer.config.stdev", "RandomNormal has no argument 'stdev'"),
    Case("initializer_config_bad_value",
         layer(kernel_initializer={"class_name": "VarianceScaling", "config": {"mode": "fan"}}),
         "kernel_initializer.config.mode", "must be one of fan_in, fan_out, fan_avg"),
    Case("initializer_identity", layer(kernel_initializer="identity"), "kernel_initializer",
         "only builds 2D matrices"),
    Case("initializer_not_a_name", layer(kernel_initializer=3), "kernel_initializer",
         "must be a initializer name or {class_name, config}"),
    # regularizers
    Case("regularizer_unknown", layer(kernel_regularizer="l3"), "kernel_regularizer",
         "unknown regularizer 'l3'"),
    Case("regularizer_l1_l2", layer(kernel_regularizer="l1_l2"), "kernel_regularizer",
         "unknown regularizer 'l1_l2'; did you mean 'l1l2'?"),
    Case("regularizer_negative_l2",
         layer(bias_regularizer={"class_name": "L2", "config": {"l2": -0.1}}),
         "bias_regularizer.config.l2", "must be >= 0, got -0.1"),
    Case("regularizer_dict_bad_class",
         layer(activity_regularizer={"class_name": "Foo", "config": {}}),
         "activity_regularizer.class_name", "unknown regularizer 'Foo'"),
    Case("regularizer_dict_unknown_key",
         layer(kernel_regularizer={"class_name": "L2", "config": {}, "extra": 1}),
         "kernel_regularizer.extra", "unrecognized key in a serialized regularizer"),
    # constraints
    Case("constraint_unknown", layer(kernel_constraint="maxnorm"), "kernel_constraint",
         "unknown constraint 'maxnorm'; did you mean 'max_norm'?"),
    Case("constraint_bad_axis",
         layer(bias_constraint={"class_name": "MaxNorm", "config": {"axis": "x"}}),
         "bias_constraint.config.axis", "must be an integer or a list"),
    # dtype
    Case("dtype_int32", layer(dtype="int32"), "dtype",
         "must be one of float16, float32, float64, mixed_float16, got 'int32'"),
    Case("dtype_bfloat16", layer(dtype="bfloat16"), "dtype", "no ConvTranspose kernel for bfloat16"),
    Case("dtype_mixed_bfloat16", layer(dtype="mixed_bfloat16"), "dtype",
         "no ConvTranspose kernel for bfloat16"),
    Case("input_dtype_is_not_a_policy", model({"filters": 4, "kernel_size": 1}, input={"shape": [None, 5, 5, 3], "dtype": "mixed_float16"}),
         "input.dtype", "must be one of float16, float32, float64, got 'mixed_float16'"),
    # other simple arguments
    Case("use_bias_string", layer(use_bias="true"), "use_bias", 'must be true or false, got "true"'),
    Case("trainable_integer", layer(trainable=1), "trainable", "must be true or false, got 1"),
    Case("name_empty", layer(name=""), "name", "must not be empty"),
    Case("seed_negative", layer(seed=-1), "seed", "must be >= 0, got -1"),
    # type
    Case("type_conv4d", layer(type="Conv4DTranspose"), "type",
         "unknown layer type 'Conv4DTranspose'; did you mean 'Conv3DTranspose'?"),
    Case("type_conv2d", layer(type="Conv2D"), "type",
         "unknown layer type 'Conv2D'; supported: Conv1DTranspose"),
    Case("type_null", layer(type=None), "type", "got null"),
    # the input description
    Case("input_rank_mismatch", layer(input_shape=[7, 3]), "input_shape",
         "Conv2DTranspose expects a rank-4 input"),
    Case("input_rank_one_for_2d", layer(input_shape=[7]), "input_shape",
         "expects a rank-4 input (batch, 2 spatial, channels); got shape (None, 7) of rank 2"),
    Case("input_rank_mismatch_batch_input_shape",
         layer(type="Conv1DTranspose", input_shape=DELETE, batch_input_shape=[1, 4, 4, 3]),
         "batch_input_shape", "Conv1DTranspose expects a rank-3 input"),
    Case("channels_unknown", layer(input_shape=[5, 5, None]), "input_shape",
         "the channel dimension must be known"),
    Case("channels_unknown_channels_first",
         layer(data_format="channels_first", input_shape=[None, 5, 5]), "input_shape",
         "(channels_first)"),
    Case("input_shape_and_batch_input_shape", layer(batch_input_shape=[1, 5, 5, 3]),
         "batch_input_shape", "give either input_shape or batch_input_shape, not both"),
    Case("batch_size_disagrees",
         layer(input_shape=DELETE, batch_input_shape=[2, 5, 5, 3], batch_size=3), "batch_size",
         "3 disagrees with batch_input_shape[0]=2"),
    Case("batch_size_zero", layer(batch_size=0), "batch_size", "must be >= 1, got 0"),
    Case("input_missing", layer(input_shape=DELETE), "input_shape",
         "required: give input_shape (without batch) or batch_input_shape"),
    Case("input_shape_zero_size", layer(input_shape=[0, 5, 3]), "input_shape[0]",
         "must be >= 1, got 0"),
    Case("input_shape_not_a_list", layer(input_shape="5,5,3"), "input_shape", "must be a list"),
    # shapes that come out wrong
    Case("empty_output",  # same + op 0 + even kernel gives (i-1)*s = 0 for i = 1
         {"type": "Conv1DTranspose", "filters": 2, "kernel_size": 2, "padding": "same",
          "output_padding": 0, "input_shape": [1, 3]},
         "output_padding", "the output would be empty along spatial axis 0"),
    Case("glu_on_odd_axis", layer(filters=3, activation="glu"), "activation",
         "its size is 3 (odd)"),
    Case("glu_on_odd_axis_channels_first",
         layer(activation="glu", data_format="channels_first", input_shape=[3, 5, 5]),
         "activation", "its size is 7 (odd)"),
    # weights
    Case("weights_kernel_wrong_shape", layer(weights=[zeros(3, 3, 4), zeros(4)]), "weights[0]",
         "kernel has shape (3, 3, 4), expected (3, 3, 4, 3) = kernel_size + (filters, in_channels)"),
    Case("weights_kernel_onnx_layout", layer(kernel_size=2, weights=[zeros(3, 4, 2, 2), zeros(4)]),
         "weights[0]", "that is the ONNX/PyTorch layout"),
    Case("weights_bias_wrong_shape", layer(kernel_size=1, weights=[zeros(1, 1, 4, 3), zeros(5)]),
         "weights[1]", "bias has shape (5,), expected (4,)"),
    Case("weights_bias_with_use_bias_false",
         layer(kernel_size=1, use_bias=False, weights=[zeros(1, 1, 4, 3), zeros(4)]),
         "weights[1]", "a bias was given but use_bias is false"),
    Case("weights_bias_missing", layer(kernel_size=1, weights=[zeros(1, 1, 4, 3)]), "weights",
         "use_bias is true but no bias was given (expected shape (4,))"),
    Case("weights_list_of_three", layer(kernel_size=1, weights=[1, 2, 3]), "weights",
         "got a list of 3 items"),
    Case("weights_non_numeric",
         layer(kernel_size=1, weights=[[[[["a"] * 3] * 4]], zeros(4)]), "weights[0]",
         "must hold numbers"),
    Case("weights_ragged",
         layer(kernel_size=1, weights=[[[[[0.0] * 3, [0.0] * 2, [0.0] * 3, [0.0] * 3]]], zeros(4)]),
         "weights[0]", "is not a rectangular nested list of numbers"),
    Case("weights_nan", layer(kernel_size=1, weights=[[[[[float("nan")] * 3] * 4]], zeros(4)]),
         "weights[0]", "NaN or infinite"),
    Case("weights_not_list_or_path", layer(weights=3), "weights",
         "must be a path to an .npz file or a [kernel, bias] list"),
    Case("weights_npz_missing",
         "filters: 4\nkernel_size: 3\ninput_shape: [5, 5, 3]\nweights: missing.npz\n",
         "weights", "weights file 'missing.npz' not found"),
    # the model form
    Case("model_layers_empty", model(), "layers", "must have at least 1 item(s)"),
    Case("model_layers_not_a_list", {"input": {"shape": [1, 5, 5, 3]}, "layers": {"a": 1}},
         "layers", "must be a list, got mapping"),
    Case("model_layers_null", {"input": {"shape": [1, 5, 5, 3]}, "layers": None}, "layers",
         "must be a list, got null"),
    Case("model_layer_not_a_mapping", model(5), "layers[0]",
         "a layer must be a mapping of Keras arguments, got integer"),
    Case("model_error_in_second_layer",
         model({"filters": 4, "kernel_size": 1}, {"filters": 2, "kernel_size": [3, 0]}),
         "layers[1].kernel_size[1]", "must be >= 1, got 0"),
    Case("model_channel_mismatch",  # layer 1 gets 4 channels from layer 0, its kernel says 3
         model({"filters": 4, "kernel_size": 1},
               {"filters": 2, "kernel_size": 1, "weights": [zeros(1, 1, 2, 3), zeros(2)]}),
         "layers[1].weights[0]", "kernel has shape (1, 1, 2, 3), expected (1, 1, 2, 4)"),
    Case("model_duplicate_layer_names",
         model({"filters": 4, "kernel_size": 1, "name": "up"},
               {"filters": 2, "kernel_size": 1, "name": "up"}),
         "layers[1].name", "layer name 'up' is already used by layers[0]"),
    Case("model_duplicate_default_names",  # the first layer takes the default name explicitly
         model({"filters": 4, "kernel_size": 1},
               {"filters": 2, "kernel_size": 1, "name": "conv2d_transpose"}),
         "layers[1].name", "is already used by layers[0]"),
    Case("model_input_wrong_rank", model({"filters": 4, "kernel_size": 1}) | {
        "input": {"shape": [1, 5, 3]}}, "input.shape", "expects a rank-4 input"),
    Case("model_input_missing", {"layers": [{"filters": 4, "kernel_size": 1}]}, "input",
         "required: give input.shape"),
    Case("model_input_not_a_mapping",
         {"input": [1, 5, 5, 3], "layers": [{"filters": 4, "kernel_size": 1}]}, "input",
         "must be a mapping, got list"),
    Case("model_input_unknown_key",
         {"input": {"shape": [1, 5, 5, 3], "batch": 1}, "layers": [{"filters": 4, "kernel_size": 1}]},
         "input.batch", "unrecognized key 'batch'"),
    Case("model_input_dtype", model({"filters": 4, "kernel_size": 1}) | {
        "input": {"shape": [1, 5, 5, 3], "dtype": "int8"}}, "input.dtype", "got 'int8'"),
    Case("model_unknown_top_level_key", model({"filters": 4, "kernel_size": 1}, optimizer="adam"),
         "optimizer", "unrecognized key 'optimizer'"),
    Case("model_top_level_typo", model({"filters": 4, "kernel_size": 1}, sed=3), "sed",
         "did you mean 'seed'?"),
    Case("model_first_layer_input_disagrees",
         model({"filters": 4, "kernel_size": 1, "input_shape": [5, 5, 4]}),
         "layers[0].input_shape", "disagrees with input.shape"),
    Case("model_later_layer_input_disagrees",
         model({"filters": 4, "kernel_size": 1},
               {"filters": 2, "kernel_size": 1, "input_shape": [5, 5, 7]}),
         "layers[1].input_shape", "disagrees with this layer's actual input (1, 5, 5, 4)"),
    Case("weights_path_is_a_single_npy", "filters: 4\nkernel_size: 3\ninput_shape: [5, 5, 3]\n"
         "weights: kernel.npy\n", "weights", "single .npy array",
         setup=lambda d: np.save(d / "kernel.npy", np.zeros((3, 3, 4, 3)))),
    Case("type_wrong_case", layer(type="conv2dtranspose"), "type",
         "did you mean 'Conv2DTranspose'?"),
]
# fmt: on

_names = [case.name for case in CASES]
assert len(_names) == len(set(_names)), sorted({n for n in _names if _names.count(n) > 1})


PARAMS = [pytest.param(case, id=case.name) for case in CASES]


def _problems(case: Case, directory: Path) -> tuple[Problem, ...]:
    with pytest.raises(dc.SpecError) as info:
        case.load(directory)
    assert info.value.problems, "a SpecError must list at least one problem"
    return info.value.problems


def _show(problems: tuple[Problem, ...]) -> str:
    return "\n".join(f"  {format_path(p.path)}: {p.message}" for p in problems)


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 45


@pytest.mark.parametrize("case", PARAMS)
def test_invalid_spec_is_rejected_at_its_field(case: Case, tmp_path: Path) -> None:
    problems = _problems(case, tmp_path)
    at_path = [p for p in problems if format_path(p.path) == case.path]
    assert at_path, f"no problem at {case.path!r}; got:\n{_show(problems)}"
    assert any(case.fragment in p.message for p in at_path), (
        f"no problem at {case.path!r} mentions {case.fragment!r}; got:\n{_show(problems)}"
    )


@pytest.mark.parametrize("case", PARAMS)
def test_no_problem_is_reported_twice(case: Case, tmp_path: Path) -> None:
    problems = _problems(case, tmp_path)
    seen = [(p.path, p.message) for p in problems]
    assert len(seen) == len(set(seen)), _show(problems)


def test_scalar_output_padding_is_reported_once() -> None:
    with pytest.raises(dc.SpecError) as info:
        dc.load_spec(layer(strides=2, output_padding=2))
    assert len(info.value.problems) == 1, _show(info.value.problems)


@pytest.mark.parametrize(
    "dtype",
    [32, {"class_name": "DTypePolicy", "config": {"name": "float32"}}],
    ids=["integer", "policy_mapping"],
)
def test_non_string_dtype_is_reported_once(dtype: Any) -> None:
    with pytest.raises(dc.SpecError) as info:
        dc.load_spec(layer(dtype=dtype))
    assert len(info.value.problems) == 1, _show(info.value.problems)


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"kernel_size": 10**23}, "kernel_size"),
        ({"strides": 10**23}, "strides"),
        ({"filters": 10**23}, "filters"),
        ({"input_shape": [10**23, 5, 3]}, "input_shape[0]"),
    ],
    ids=["kernel_size", "strides", "filters", "input_shape"],
)
def test_sizes_beyond_int64_are_spec_errors(changes: dict[str, Any], path: str) -> None:
    with pytest.raises(dc.SpecError) as info:
        dc.load_spec(layer(**changes))
    assert any(format_path(p.path) == path for p in info.value.problems)


# --- near misses that Keras accepts: they must NOT be rejected -----------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"padding": "SAME"}, id="padding_upper_case"),
        pytest.param({"padding": "Valid"}, id="padding_mixed_case"),
        pytest.param({"strides": 2, "output_padding": 1}, id="output_padding_below_strides"),
        pytest.param({"strides": [2, 1], "output_padding": [1, 0]}, id="output_padding_per_axis"),
        pytest.param({"dilation_rate": [1, 2]}, id="dilation_with_unit_strides"),
        pytest.param({"kernel_initializer": "GlorotUniform"}, id="initializer_class_name"),
        pytest.param({"kernel_regularizer": "l1l2"}, id="regularizer_l1l2"),
        pytest.param({"kernel_constraint": "MaxNorm"}, id="constraint_class_name"),
        pytest.param({"bias_initializer": None}, id="bias_initializer_null"),
        pytest.param({"data_format": None}, id="data_format_null"),
        pytest.param(
            {"data_format": "CHANNELS_LAST"},
            id="data_format_upper_case",
        ),
    ],
)
def test_keras_accepts_and_so_do_we(changes: dict[str, Any]) -> None:
    dc.load_spec(layer(**changes))


# --- every problem at once -----------------------------------------------------------------------


def test_all_problems_in_one_spec_are_reported_at_once() -> None:
    with pytest.raises(dc.SpecError) as info:
        dc.load_spec(layer(filters=0, strides=[1, 0], activation="Relu"))
    paths = [format_path(p.path) for p in info.value.problems]
    assert sorted(paths) == ["activation", "filters", "strides[1]"], paths


def test_problems_in_several_layers_are_reported_at_once() -> None:
    spec = model(
        {"filters": 0, "kernel_size": 1},
        {"filters": 2, "kernel_size": 1, "padding": "full"},
        {"filters": 2, "kernel_size": 1, "activation": "nope"},
    )
    with pytest.raises(dc.SpecError) as info:
        dc.load_spec(spec)
    paths = {format_path(p.path) for p in info.value.problems}
    assert {"layers[0].filters", "layers[1].padding", "layers[2].activation"} <= paths, paths


def test_spec_error_text_lists_every_problem() -> None:
    with pytest.raises(dc.SpecError) as info:
        dc.load_spec(layer(filters=0, padding="full"))
    assert str(info.value).splitlines() == [str(p) for p in info.value.problems]
    assert len(info.value.problems) == 2


def test_load_spec_refuses_other_python_types() -> None:
    with pytest.raises(TypeError, match="path or a mapping"):
        dc.load_spec([BASE_LAYER])  # type: ignore[arg-type]


# --- line numbers and the file:line: path: message format ---------------------------------------

YAML_WITH_ERRORS = """\
# line 1: a comment
type: Conv2DTranspose
filters: 0
kernel_size: 3
strides:
  - 1
  - 0
padding: same
activation: Relu
input_shape: [5, 5, 3]
"""


def _raise(path: Path) -> tuple[Problem, ...]:
    with pytest.raises(dc.SpecError) as info:
        dc.load_spec(path)
    return info.value.problems


def test_yaml_problems_carry_file_and_line(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(YAML_WITH_ERRORS)
    problems = _raise(file)
    found = {format_path(p.path): p for p in problems}
    assert set(found) == {"filters", "strides[1]", "activation"}
    assert {k: p.line for k, p in found.items()} == {"filters": 3, "strides[1]": 7, "activation": 9}
    assert all(p.file == str(file) for p in problems)
    assert [p.line for p in problems] == sorted(p.line or 0 for p in problems), "in file order"
    assert str(found["strides[1]"]) == f"{file}:7: strides[1]: must be >= 1, got 0"
    assert str(found["filters"]) == f"{file}:3: filters: {found['filters'].message}"


def test_json_problems_carry_file_and_line(tmp_path: Path) -> None:
    file = tmp_path / "bad.json"
    file.write_text(
        "{\n"
        '  "type": "Conv2DTranspose",\n'
        '  "filters": 4,\n'
        '  "kernel_size": 3,\n'
        '  "strides": [\n'
        "    1,\n"
        "    0\n"
        "  ],\n"
        '  "padding": "full",\n'
        '  "input_shape": [5, 5, 3]\n'
        "}\n"
    )
    problems = _raise(file)
    found = {format_path(p.path): p for p in problems}
    assert {k: p.line for k, p in found.items()} == {"strides[1]": 7, "padding": 9}
    assert str(found["strides[1]"]) == f"{file}:7: strides[1]: must be >= 1, got 0"
    assert all(p.file == str(file) for p in problems)


def test_model_layer_problem_line(tmp_path: Path) -> None:
    file = tmp_path / "model.yaml"
    file.write_text(
        "name: m\n"
        "input:\n"
        "  shape: [1, 5, 5, 3]\n"
        "layers:\n"
        "  - type: Conv2DTranspose\n"
        "    filters: 4\n"
        "    kernel_size: 3\n"
        "  - type: Conv2DTranspose\n"
        "    filters: 2\n"
        "    kernel_size: [3, 0]\n"
    )
    (problem,) = _raise(file)
    assert str(problem) == f"{file}:10: layers[1].kernel_size[1]: must be >= 1, got 0"


def test_mapping_problems_have_no_file_or_line() -> None:
    with pytest.raises(dc.SpecError) as info:
        dc.load_spec(layer(filters=0))
    (problem,) = info.value.problems
    assert (problem.file, problem.line) == (None, None)
    assert str(problem) == "filters: must be >= 1, got 0"


def test_weights_npz_path_resolves_next_to_the_spec(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "sub" / "w.npz", kernel=np.zeros((3, 3, 4, 3)), bias=np.zeros(4))
    spec = "filters: 4\nkernel_size: 3\ninput_shape: [5, 5, 3]\nweights: w.npz\n"
    (tmp_path / "sub" / "good.yaml").write_text(spec)
    (tmp_path / "bad.yaml").write_text(spec)  # w.npz is not next to this one
    assert dc.load_spec(tmp_path / "sub" / "good.yaml").layers[0].weights is not None
    (problem,) = _raise(tmp_path / "bad.yaml")
    assert (format_path(problem.path), problem.line) == ("weights", 4)
    assert str(tmp_path / "w.npz") in problem.message


def test_npz_without_kernel_names_what_it_has(tmp_path: Path) -> None:
    np.savez(tmp_path / "w.npz", weight=np.zeros(3))
    (tmp_path / "s.yaml").write_text("filters: 4\nkernel_size: 3\ninput_shape: [5, 5, 3]\nweights: w.npz\n")
    (problem,) = _raise(tmp_path / "s.yaml")
    assert "no array named 'kernel' (found: weight)" in problem.message


def test_weights_file_that_is_not_an_npz(tmp_path: Path) -> None:
    (tmp_path / "w.npz").write_text("not an archive\n")
    (tmp_path / "s.yaml").write_text("filters: 4\nkernel_size: 3\ninput_shape: [5, 5, 3]\nweights: w.npz\n")
    (problem,) = _raise(tmp_path / "s.yaml")
    assert "not an .npz archive" in problem.message
    assert "pickle" not in problem.message


# --- YAML and JSON reading ----------------------------------------------------------------------


def _one_problem(tmp_path: Path, name: str, content: str | bytes) -> Problem:
    file = tmp_path / name
    if isinstance(content, bytes):
        file.write_bytes(content)
    else:
        file.write_text(content, encoding="utf-8")
    problems = _raise(file)
    assert len(problems) == 1, _show(problems)
    assert problems[0].file == str(file)
    return problems[0]


def test_yaml_duplicate_key(tmp_path: Path) -> None:
    p = _one_problem(tmp_path, "d.yaml", "filters: 4\nkernel_size: 3\nfilters: 5\ninput_shape: [5, 5, 3]\n")
    assert (format_path(p.path), p.line, p.message) == ("filters", 3, "duplicate key")


def test_yaml_duplicate_key_in_a_layer(tmp_path: Path) -> None:
    p = _one_problem(
        tmp_path, "d.yaml",
        "input: {shape: [1, 5, 5, 3]}\nlayers:\n  - filters: 4\n    kernel_size: 1\n    filters: 2\n",
    )  # fmt: skip
    assert (format_path(p.path), p.line) == ("layers[0].filters", 5)


def test_json_duplicate_key(tmp_path: Path) -> None:
    p = _one_problem(
        tmp_path, "d.json",
        '{"input": {"shape": [1, 5, 5, 3]},\n "layers": [{"filters": 4,\n'
        '   "kernel_size": 1, "filters": 2}]}\n',
    )  # fmt: skip
    assert (format_path(p.path), p.line, p.message) == ("layers[0].filters", 3, "duplicate key")


TAB_JSON = json.dumps(BASE_LAYER | {"filters": 0}, indent="\t")  # "filters" on line 3


def test_tab_indented_json_keeps_line_numbers(tmp_path: Path) -> None:
    p = _one_problem(tmp_path, "t.json", TAB_JSON)
    assert (format_path(p.path), p.line) == ("filters", 3)


def test_tab_indented_json_duplicate_key_path(tmp_path: Path) -> None:
    text = (
        '{\n\t"input": {"shape": [1, 5, 5, 3]},\n\t"layers": [{"filters": 4,\n'
        '\t\t"kernel_size": 1, "filters": 5}]\n}\n'
    )
    p = _one_problem(tmp_path, "t.json", text)
    assert (format_path(p.path), p.line) == ("layers[0].filters", 4)


def test_yaml_python_tag_is_refused(tmp_path: Path) -> None:
    p = _one_problem(
        tmp_path, "tag.yaml",
        "type: Conv2DTranspose\nfilters: !!python/object/apply:os.system ['echo pwned']\n",
    )  # fmt: skip
    assert p.line == 2
    assert "no tags that build objects" in p.message


def test_yaml_python_object_tag_is_refused(tmp_path: Path) -> None:
    p = _one_problem(tmp_path, "tag.yaml", "filters: 4\nname: !!python/object:collections.OrderedDict {}\n")
    assert p.line == 2
    assert "invalid YAML" in p.message


def test_invalid_yaml_syntax_has_a_line(tmp_path: Path) -> None:
    p = _one_problem(tmp_path, "s.yaml", "filters: 4\nkernel_size: [3, 3\ninput_shape: [5, 5, 3]\n")
    assert p.line == 3
    assert p.message.startswith("invalid YAML: ")
    assert str(p) == f"{tmp_path / 's.yaml'}:3: {p.message}"


def test_invalid_yaml_indentation_has_a_line(tmp_path: Path) -> None:
    p = _one_problem(tmp_path, "s.yaml", "filters: 4\n  kernel_size: 3\n")
    assert (p.line, p.message) == (2, "invalid YAML: mapping values are not allowed here")


def test_invalid_json_syntax_has_a_line(tmp_path: Path) -> None:
    p = _one_problem(tmp_path, "s.json", '{"filters": 4,\n "kernel_size": 3,,\n "x": 1}\n')
    assert p.line == 2
    assert p.message.startswith("invalid JSON: ")


def test_two_yaml_documents_are_refused(tmp_path: Path) -> None:
    p = _one_problem(tmp_path, "m.yaml", "filters: 4\n---\nfilters: 5\n")
    assert p.line == 2
    assert "another document" in p.message


@pytest.mark.parametrize("content", ["", "   \n\n", "# only a comment\n"], ids=["empty", "blank", "comment"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    p = _one_problem(tmp_path, "e.yaml", content)
    assert (p.path, p.message) == ((), "the spec is empty")


def test_non_utf8_bytes(tmp_path: Path) -> None:
    p = _one_problem(tmp_path, "b.yaml", b"filters: 4\nname: \xff\xfe\n")
    assert "not UTF-8 text (byte 17)" in p.message


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbffilters: 4\nkernel_size: 3\ninput_shape: [5, 5, 3]\n")
    assert dc.load_spec(tmp_path / "bom.yaml").layers[0].filters == 4


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("list.yaml", "- filters: 4\n- kernel_size: 3\n", "list"),
        ("list.json", "[1, 2]\n", "list"),
        ("scalar.yaml", "hello\n", "string"),
    ],
    ids=["yaml_list", "json_list", "yaml_scalar"],
)
def test_top_level_not_a_mapping(tmp_path: Path, name: str, content: str, kind: str) -> None:
    p = _one_problem(tmp_path, name, content)
    assert p.path == ()
    assert p.line == 1
    assert p.message.endswith(f"got {kind}")


def test_deeply_nested_json(tmp_path: Path) -> None:
    p = _one_problem(tmp_path, "deep.json", "[" * 100_000 + "]" * 100_000)
    assert "nested too deeply" in p.message


def test_missing_spec_file(tmp_path: Path) -> None:
    problems = _raise(tmp_path / "nope.yaml")
    assert len(problems) == 1
    assert "cannot read spec file: No such file or directory" in problems[0].message


def test_spec_path_is_a_directory(tmp_path: Path) -> None:
    (problem,) = _raise(tmp_path)
    assert "is a directory" in problem.message


def test_non_string_key(tmp_path: Path) -> None:
    file = tmp_path / "k.yaml"
    file.write_text("1: 2\nfilters: 4\nkernel_size: 3\ninput_shape: [5, 5, 3]\n")
    (problem,) = _raise(file)
    assert problem.line == 1
    assert format_path(problem.path) != "[1]"
    assert "1" in problem.message


def test_spec_from_json_text_matches_yaml(tmp_path: Path) -> None:
    """The same spec written as JSON and as YAML loads the same (a sanity check for the readers)."""
    (tmp_path / "s.json").write_text(json.dumps(BASE_LAYER))
    (tmp_path / "s.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in BASE_LAYER.items()))
    a, b = dc.load_spec(tmp_path / "s.json"), dc.load_spec(tmp_path / "s.yaml")
    assert a.keras_config() == b.keras_config()
