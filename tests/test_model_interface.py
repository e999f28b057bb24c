"""Fixed input shapes, dim names and output names (`model_interface`): the compiled model takes
them, its output shapes are re-inferred, it still computes the numpy reference's numbers, and
every request the model cannot take is refused naming the option."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import deconv_compiler as dc
from deconv_compiler.model_interface import InterfaceError, ModelInterface, apply_interface, parse_shape
from tests.onnx_run import assert_close, compile_spec, run_all, spec_reference

# A chain with every spatial size dynamic: a k3 s2 `same` layer then a k4 s2 `valid` one.
DYNAMIC = {
    "input": {"shape": [None, None, None, 6], "name": "image"},
    "layers": [
        {"type": "Conv2DTranspose", "filters": 5, "kernel_size": 3, "strides": 2, "padding": "same"},
        {"type": "Conv2DTranspose", "filters": 2, "kernel_size": 4, "strides": 2, "activation": "tanh"},
    ],
}


def dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def compiled(interface: ModelInterface, spec: Any = DYNAMIC, **options: Any) -> onnx.ModelProto:
    return compile_spec(dc.load_spec(spec), interface=interface, **options)


def test_fixed_shape_gives_static_outputs_and_the_reference_numbers() -> None:
    model = compiled(ModelInterface(shapes=(parse_shape("1,9,7,6"),)))
    assert dims(model.graph.input[0]) == [1, 9, 7, 6]
    # same: 9 -> 18, 7 -> 14; then valid k4 s2: (n - 1) * 2 + 4 -> 38, 30
    assert dims(model.graph.output[0]) == [1, 38, 30, 2]
    x = np.random.default_rng(0).standard_normal((1, 9, 7, 6)).astype(np.float32)
    (y,) = run_all(model, x)
    assert_close(y, spec_reference(dc.load_spec(DYNAMIC), x))


def test_named_input_and_batch_only() -> None:
    model = compiled(ModelInterface(shapes=(parse_shape("image=2,4,4,6"),)))
    assert dims(model.graph.output[0]) == [2, 18, 18, 2]
    model = compiled(ModelInterface(batch=3))
    assert dims(model.graph.input[0])[0] == 3
    assert dims(model.graph.output[0])[0] == 3
    assert all(isinstance(d, str) for d in dims(model.graph.input[0])[1:3])  # spatial stays dynamic


def test_dim_names_reach_the_outputs_and_output_names_the_session() -> None:
    interface = ModelInterface(dim_names=("N", "H", "W"), output_names=("decoded",))
    model = compiled(interface)
    assert dims(model.graph.input[0]) == ["N", "H", "W", 6]
    assert dims(model.graph.output[0])[0] == "N"
    assert [o.name for o in model.graph.output] == ["decoded"]
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 6)).astype(np.float32)
    (y,) = run_all(model, x)
    assert_close(y, spec_reference(dc.load_spec(DYNAMIC), x))


def test_restating_what_the_model_declares_changes_no_byte() -> None:
    """The full path runs (sizes checked, shapes re-inferred, names applied) and gives the model
    as compiled: the shape inference agrees with the builder's declared shapes."""
    spec = dc.load_spec({**SEED, "batch_size": 4})
    plain = compile_spec(spec)
    interface = ModelInterface(
        shapes=(parse_shape("4,5,5,3"),), batch=4, output_names=(plain.graph.output[0].name,)
    )
    assert compile_spec(spec, interface=interface).SerializeToString() == plain.SerializeToString()


def test_mobile_target_with_fixed_shapes_has_no_conv_transpose() -> None:
    model = compiled(ModelInterface(shapes=(parse_shape("1,8,8,6"),)), target="mobile")
    ops = {node.op_type for node in model.graph.node}
    assert "ConvTranspose" not in ops and {"Conv", "DepthToSpace"} <= ops
    x = np.random.default_rng(2).standard_normal((1, 8, 8, 6)).astype(np.float32)
    (y,) = run_all(model, x)
    assert_close(y, spec_reference(dc.load_spec(DYNAMIC), x))


SEED = {"type": "Conv2DTranspose", "filters": 4, "kernel_size": 2, "strides": 2, "input_shape": [5, 5, 3]}


@pytest.mark.parametrize(
    ("interface", "spec", "message"),
    [
        (
            dict(shapes=(parse_shape("1,6,5,3"),)),
            SEED,
            "--fix-shape 1,6,5,3: input 'input' is (batch, 5, 5, 3): axis 1 is 5, not 6",
        ),
        (dict(shapes=(parse_shape("1,5,5"),)), SEED, "is (batch, 5, 5, 3): 4 dims, the shape gives 3"),
        (dict(shapes=(parse_shape("x=1,5,5,3"),)), SEED, "the model has no input 'x'; its inputs: 'input'"),
        (
            dict(dim_names=("a", "b")),
            SEED,
            "--dim-names gives 2 name(s) for the inputs' 1 dynamic dim(s): batch",
        ),
        (dict(output_names=("a", "b")), SEED, "--output-names gives 2 name(s); the model has 1 output(s)"),
        (dict(output_names=("input",)), SEED, "'input' already names another value of the model"),
        (
            dict(batch=2),
            {**SEED, "batch_size": 4},
            "--batch 2: input 'input' is (4, 5, 5, 3): its batch is fixed at 4",
        ),
    ],
    ids=[
        "contradicts-spec",
        "rank",
        "unknown-input",
        "dim-name-count",
        "output-count",
        "output-clash",
        "fixed-batch",
    ],
)
def test_refusals_name_the_option(interface: dict[str, Any], spec: Any, message: str) -> None:
    with pytest.raises(InterfaceError) as raised:
        compiled(ModelInterface(**interface), spec)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: parse_shape("1,a,3"), "give comma-separated sizes"),
        (lambda: ModelInterface(shapes=(parse_shape("1,0,3"),)), "sizes must be >= 1"),
        (lambda: ModelInterface(batch=0), "--batch must be >= 1"),
        (lambda: ModelInterface(dim_names=("9x",)), "'9x' is not a name"),
        (lambda: ModelInterface(output_names=("y", "y")), "--output-names: 'y' given twice"),
    ],
    ids=["not-numbers", "zero-size", "zero-batch", "bad-name", "twice"],
)
def test_bad_values_are_refused_when_given(make: Any, message: str) -> None:
    with pytest.raises(InterfaceError, match=message):
        make()


def test_a_shape_the_graph_cannot_take_is_refused_by_inference() -> None:
    """Two inputs added elementwise: fixing them to different sizes cannot be inferred."""
    from onnx import helper

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", "w"])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", "w"])
    z = helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, ["n", "w"])
    graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"])], "add", [x, y], [z])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    interface = ModelInterface(shapes=(parse_shape("x=2,3"), parse_shape("y=2,4")))
    with pytest.raises(
        InterfaceError, match=r"--fix-shape x=2,3 --fix-shape y=2,4: the model cannot take it"
    ):
        apply_interface(model, interface)
    with pytest.raises(InterfaceError, match="the model has 2 inputs \\('x', 'y'\\); name the input"):
        apply_interface(model, ModelInterface(shapes=(parse_shape("2,3"),)))


def test_compile_takes_the_same_options(tmp_path: Path) -> None:
    from tests.test_cli import assert_clean_failure, invoke

    spec = tmp_path / "dynamic.json"
    spec.write_text(json.dumps(DYNAMIC))
    out = tmp_path / "fixed.onnx"
    result = invoke("compile", spec, "-o", out, "--fix-shape", "2,5,5,6", "--output-names", "up", "--json")
    assert result.exit_code == 0, result.output
    model = onnx.load(out)
    assert dims(model.graph.output[0]) == [2, 22, 22, 2] and model.graph.output[0].name == "up"
    result = invoke("compile", spec, "-o", tmp_path / "bad.onnx", "--fix-shape", "2,5,5,7")
    assert_clean_failure(result)
    assert "axis 3 is 6, not 7" in result.output and not (tmp_path / "bad.onnx").exists()


def test_tune_is_refused_for_the_mobile_target() -> None:
    from deconv_compiler.errors import CompileError

    with pytest.raises(CompileError, match="with target mobile, use auto"):
        dc.CompileOptions(target="mobile", strategy="tune")
