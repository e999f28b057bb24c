"""The graph's shape: op types, attributes, initializers, names, metadata, determinism."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

import deconv_compiler as dc
from tests.onnx_run import compile_spec
from tests.test_geometry import PADS_TABLE  # the hand-worked table; here: the emitted node

SPECS = Path(__file__).resolve().parent.parent / "specs"


def compile_native(spec: dc.ModelSpec, **options: Any) -> onnx.ModelProto:
    """These tests are about the ConvTranspose node itself (the `native` strategy)."""
    return compile_spec(spec, strategy="native", **options)


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _layer(**overrides: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "type": "Conv2DTranspose",
        "filters": 4,
        "kernel_size": 3,
        "strides": 2,
        "input_shape": [5, 6, 3],
    }
    spec.update(overrides)
    return spec


def test_single_layer_graph_is_transpose_convtranspose_activation_transpose() -> None:
    model = compile_native(dc.load_spec(_layer(padding="same", activation="relu")))
    assert [n.op_type for n in model.graph.node] == [
        "Transpose",
        "ConvTranspose",
        "Relu",
        "Transpose",
    ]
    conv = model.graph.node[1]
    attrs = _attrs(conv)
    assert "auto_pad" not in attrs and "output_shape" not in attrs
    # same, k3 s2: total crop ke - s = 1 -> the odd pixel is cropped at the END, as Keras does
    assert attrs["pads"] == [0, 0, 1, 1]
    assert attrs["output_padding"] == [0, 0]
    assert attrs["strides"] == [2, 2] and attrs["kernel_shape"] == [3, 3] and attrs["dilations"] == [1, 1]
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert list(conv.input[1:]) == ["conv2d_transpose/kernel", "conv2d_transpose/bias"]
    assert weights["conv2d_transpose/kernel"].shape == (3, 4, 3, 3)  # (in, filters, kh, kw)
    assert weights["conv2d_transpose/bias"].shape == (4,)


def test_kernel_is_permuted_not_flipped() -> None:
    kernel = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)  # (kh, kw, filters, in)
    spec = _layer(filters=4, kernel_size=[2, 3], input_shape=[4, 4, 5], use_bias=False, weights=[kernel])
    model = compile_native(dc.load_spec(spec))
    (w,) = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("/kernel")]
    np.testing.assert_array_equal(w, kernel.transpose(3, 2, 0, 1).astype(np.float32))


@pytest.mark.parametrize(("k", "s", "padding", "op", "pads", "output_padding"), PADS_TABLE)
def test_explicit_pads_table(
    k: int, s: int, padding: str, op: int | None, pads: list[int], output_padding: list[int]
) -> None:
    spec = {
        "type": "Conv1DTranspose",
        "filters": 1,
        "kernel_size": k,
        "strides": s,
        "padding": padding,
        "output_padding": op,
        "input_shape": [4, 1],
    }
    (conv,) = [n for n in compile_native(dc.load_spec(spec)).graph.node if n.op_type == "ConvTranspose"]
    assert _attrs(conv)["pads"] == pads and _attrs(conv)["output_padding"] == output_padding


def test_channels_last_chain_has_exactly_two_transposes() -> None:
    spec = dc.load_spec(SPECS / "dcgan_generator.yaml")
    ops = [n.op_type for n in compile_spec(spec).graph.node]  # auto: the stride-1 layer is a Conv
    assert ops.count("Transpose") == 2 and ops[0] == "Transpose" and ops[-1] == "Transpose"
    assert ops.count("ConvTranspose") == 2 and ops.count("Conv") == 1


def test_channels_first_has_no_transpose() -> None:
    model = compile_native(dc.load_spec(_layer(data_format="channels_first", input_shape=[3, 5, 6])))
    assert [n.op_type for n in model.graph.node] == ["ConvTranspose"]


def test_no_bias_input_without_use_bias() -> None:
    model = compile_native(dc.load_spec(_layer(use_bias=False)))
    (conv,) = [n for n in model.graph.node if n.op_type == "ConvTranspose"]
    assert len(conv.input) == 2


def test_dynamic_dims_are_symbolic_and_add_no_shape_subgraph() -> None:
    model = compile_native(
        dc.load_spec(_layer(input_shape=[None, None, 3], padding="same", output_padding=1))
    )
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Shape", "Gather", "Concat", "Slice", "Pad"}
    (graph_input,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == ["batch", "input_dim1", "input_dim2", 3]
    out_dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims[0] == "batch" and out_dims[-1] == 4


def test_seed_changes_initialized_weights_only() -> None:
    spec = dc.load_spec(_layer())
    a, b = compile_native(spec, seed=1), compile_native(spec, seed=2)
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]
    assert a.graph.initializer[0].raw_data != b.graph.initializer[0].raw_data


@pytest.mark.parametrize("opset", [11, 13, 17, 21, 26])
def test_opset_and_ir_version_are_pinned(opset: int) -> None:
    model = compile_native(dc.load_spec(_layer()), opset=opset)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", opset)]
    assert model.ir_version == helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    assert model.ir_version <= 13  # onnxruntime 1.31 loads IR <= 13


@pytest.mark.parametrize("opset", [10, 27])
def test_unsupported_opsets_are_refused(opset: int) -> None:
    with pytest.raises(dc.CompileError, match="opset"):
        compile_native(dc.load_spec(_layer()), opset=opset)


def test_max_opset_is_the_newest_onnxruntime_loads() -> None:
    import onnxruntime as ort

    from deconv_compiler.options import MAX_OPSET

    def loads(opset: int) -> bool:
        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])], "g",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )  # fmt: skip
        ops = [helper.make_opsetid("", opset)]
        model = helper.make_model(
            graph, opset_imports=ops, ir_version=min(13, helper.find_min_ir_version_for(ops))
        )
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:
            return False
        return True

    assert loads(MAX_OPSET) and not loads(MAX_OPSET + 1)


def test_metadata_records_version_and_normalized_spec() -> None:
    spec = _layer(
        kernel_regularizer={"class_name": "L2", "config": {"l2": 0.001}},
        kernel_constraint="non_neg",
        trainable=False,
    )
    model = compile_native(dc.load_spec(spec))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["deconv_compiler.version"] == dc.__version__
    recorded = json.loads(props["deconv_compiler.spec"])
    config = recorded["layers"][0]["config"]
    assert config["kernel_regularizer"] == {"class_name": "L2", "config": {"l2": 0.001}}
    assert config["kernel_constraint"] == {"class_name": "NonNeg", "config": {}}
    assert config["trainable"] is False and config["strides"] == [2, 2] and config["padding"] == "valid"
    assert model.producer_name == "deconv-compiler"


def test_regularizers_constraints_and_trainable_do_not_change_the_graph() -> None:
    plain = compile_native(dc.load_spec(_layer()))
    decorated = compile_native(
        dc.load_spec(_layer(kernel_regularizer="l2", bias_regularizer="l1", activity_regularizer="l1l2", kernel_constraint="max_norm", bias_constraint="unit_norm", trainable=False))
    )  # fmt: skip
    assert plain.graph.SerializeToString() == decorated.graph.SerializeToString()


def test_float16_model_declares_float16_and_stores_half_weights() -> None:
    model = compile_native(dc.load_spec(_layer(dtype="float16")))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert {t.data_type for t in model.graph.initializer} == {onnx.TensorProto.FLOAT16}


def test_text_golden_of_a_small_model() -> None:
    """A readable golden: the whole graph of a 1D layer, as onnx's printer writes it."""
    spec = {
        "type": "Conv1DTranspose",
        "filters": 1,
        "kernel_size": 2,
        "strides": 2,
        "padding": "same",
        "activation": "hard_sigmoid",
        "input_shape": [None, 1],
        "weights": [[[[1.0]], [[2.0]]], [0.5]],
    }
    text = onnx.printer.to_text(compile_native(dc.load_spec(spec)).graph)
    lines = "\n".join(line.rstrip() for line in text.strip().splitlines())
    assert lines == GOLDEN_1D.strip(), text


GOLDEN_1D = """
conv1d_transpose (float[batch,input_dim1,1] input) => (float[batch,output_dim1,1] output)
   <float[1,1,2] "conv1d_transpose/kernel" =  {1,2}, float[1] "conv1d_transpose/bias" =  {0.5}>
{
   ["conv1d_transpose/Transpose"] "conv1d_transpose/Transpose" = Transpose <perm: ints = [0, 2, 1]> (input)
   ["conv1d_transpose/ConvTranspose"] "conv1d_transpose/ConvTranspose" = ConvTranspose <dilations: ints = [1], group: int = 1, kernel_shape: ints = [2], output_padding: ints = [0], pads: ints = [0, 0], strides: ints = [2]> ("conv1d_transpose/Transpose", "conv1d_transpose/kernel", "conv1d_transpose/bias")
   ["conv1d_transpose/HardSigmoid"] "conv1d_transpose/HardSigmoid" = HardSigmoid <alpha: float = 0.16666667, beta: float = 0.5> ("conv1d_transpose/ConvTranspose")
   ["output/Transpose"] output = Transpose <perm: ints = [0, 2, 1]> ("conv1d_transpose/HardSigmoid")
}
"""


def test_cuda_target_has_only_symmetric_pads_and_crops_with_slice() -> None:
    """onnxruntime sends ConvTranspose with asymmetric pads to the CPU (onnxruntime#11312)."""
    spec = dc.load_spec(_layer(padding="same", kernel_size=[3, 4], strides=2, input_shape=[None, None, 3]))
    cpu, cuda = compile_native(spec), compile_native(spec, target="cuda")
    (cpu_conv,) = [n for n in cpu.graph.node if n.op_type == "ConvTranspose"]
    assert _attrs(cpu_conv)["pads"] == [0, 1, 1, 1]  # k3 s2 same: asymmetric on axis 0
    nodes = list(cuda.graph.node)
    (conv,) = [n for n in nodes if n.op_type == "ConvTranspose"]
    pads = _attrs(conv)["pads"]
    assert isinstance(pads, list) and pads[:2] == pads[2:] == [0, 1]
    (crop,) = [n for n in nodes if n.op_type == "Slice"]
    consts = {t.name: onnx.numpy_helper.to_array(t).tolist() for t in cuda.graph.initializer}
    assert [consts[name] for name in crop.input[1:]] == [[0], [-1], [2]]  # end -1 on the H axis
    assert {p.key: p.value for p in cuda.metadata_props}["deconv_compiler.target"] == "cuda"


def test_cuda_target_leaves_symmetric_layers_alone() -> None:
    spec = dc.load_spec(_layer(padding="same", kernel_size=4, strides=2))
    cpu, cuda = compile_native(spec), compile_native(spec, target="cuda")
    assert [n.op_type for n in cpu.graph.node] == [n.op_type for n in cuda.graph.node]


def test_unknown_target_is_refused() -> None:
    with pytest.raises(dc.CompileError, match="target"):
        compile_native(dc.load_spec(_layer()), target="tpu")
