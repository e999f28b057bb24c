"""ORT-format conversion (loads back in onnxruntime, same numbers as the .onnx) and the mobile EP
coverage that onnxruntime's usability checker estimates, on dynamic and fixed shapes and with the
ConvTranspose-free lowerings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import deconv_compiler as dc
from deconv_compiler.ort_format import (
    ORT_STYLES,
    TARGETS,
    MobileCoverage,
    OrtFormatError,
    mobile_coverage,
    to_ort_format,
)
from tests.onnx_run import assert_close

ROOT = Path(__file__).resolve().parent.parent
EPS = ("NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram")


def dcgan() -> onnx.ModelProto:
    return dc.compile_model(dc.load_model(ROOT / "specs" / "dcgan_generator.yaml"))


def stack(stride: int, kernel: int, strategy: str) -> onnx.ModelProto:
    """Three Conv2DTranspose layers on a dynamic-shape input, all lowered with `strategy`."""
    layers = [
        {"type": "Conv2DTranspose", "filters": filters, "kernel_size": kernel, "strides": stride}
        | {"padding": "same", "activation": activation}
        for filters, activation in ((16, "relu"), (8, "relu"), (3, "tanh"))
    ]
    spec = {"name": "stack", "seed": 1, "input": {"shape": [None, 8, 8, 16]}, "layers": layers}
    return dc.compile_model(dc.spec_graph(dc.load_spec(spec)), dc.CompileOptions(strategy=strategy))


def with_fixed_inputs(model: onnx.ModelProto, size: int = 1) -> onnx.ModelProto:
    """Every dynamic input dim set to `size`; outputs and values re-inferred by onnx."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = size
    for value in fixed.graph.output:
        value.type.tensor_type.ClearField("shape")
    del fixed.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(fixed, strict_mode=True)


def run(model: onnx.ModelProto | bytes, x: np.ndarray, **config: str) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    data = model if isinstance(model, bytes) else model.SerializeToString()
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return dcgan()


@pytest.mark.parametrize("target", TARGETS)
def test_ort_bytes_load_and_give_the_onnx_numbers(model: onnx.ModelProto, target: str) -> None:
    data = to_ort_format(model, target)
    assert data[4:8] == b"ORTM"  # the flatbuffer file identifier of an ORT-format model
    x = np.random.default_rng(0).standard_normal((2, 7, 7, 256)).astype(np.float32)
    expected = run(model, x)
    assert_close(run(data, x, **{"session.load_model_format": "ORT"}), expected, context=target)
    if target == "mobile":  # the saved runtime optimizations replay to the same numbers
        replayed = run(data, x, **{"session.enable_saved_runtime_optimizations": "1"})
        assert_close(replayed, expected, context="mobile, replayed")


def test_ort_file_keeps_the_inputs_and_metadata(model: onnx.ModelProto, tmp_path: Path) -> None:
    path = tmp_path / "dcgan.ort"
    path.write_bytes(to_ort_format(model, "cpu"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("latent_features", ["batch", 7, 7, 256])]
    metadata = session.get_modelmeta().custom_metadata_map
    assert {p.key: p.value for p in model.metadata_props} == dict(metadata)


def ort_nodes(data: bytes) -> list[str]:
    """The main graph's `domain:op` node types, read from the ORT-format flatbuffer."""
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py import fbs

    graph = fbs.InferenceSession.InferenceSession.GetRootAs(data, 0).Model().Graph()
    nodes = (graph.Nodes(i) for i in range(graph.NodesLength()))
    return [f"{(node.Domain() or b'').decode()}:{node.OpType().decode()}" for node in nodes]


def test_each_target_is_optimized_as_its_style_says(model: onnx.ModelProto) -> None:
    """cpu: level all (Conv + LeakyRelu fused) without the x86-only NCHWc layout (ReorderInput...);
    cuda and mobile: the model's own ONNX ops, basic rewrites only (mobile saves the later fusions
    as runtime optimization records instead)."""
    onnx_nodes = [f":{node.op_type}" for node in model.graph.node]
    assert ORT_STYLES["cpu"].disabled_optimizers == ("NchwcTransformer",)
    cpu = to_ort_format(model, "cpu")
    assert "com.microsoft:FusedConv" in ort_nodes(cpu) and ":Conv" not in ort_nodes(cpu)
    assert not any(op.startswith("com.microsoft.nchwc:") for op in ort_nodes(cpu))
    assert ort_nodes(to_ort_format(model, "cuda")) == onnx_nodes
    mobile = to_ort_format(model, "mobile")
    assert ort_nodes(mobile) == onnx_nodes
    assert b"ConvActivationFusion" in mobile  # the saved record, replayed where NNAPI/CoreML leave a node


def test_onnxruntime_errors_become_one_line(model: onnx.ModelProto) -> None:
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    broken.graph.node[1].op_type = "NoSuchOp"
    with pytest.raises(OrtFormatError) as caught:
        to_ort_format(broken, "cpu")
    message = str(caught.value)
    assert message.startswith("onnxruntime could not convert the model to ORT format: ")
    assert "NoSuchOp" in message and "\n" not in message
    assert isinstance(caught.value, dc.DeconvError)


def test_unknown_target_is_refused(model: onnx.ModelProto) -> None:
    with pytest.raises(
        dc.CompileError, match="ORT-format target 'tpu' is not supported: choose cpu, cuda, mobile"
    ):
        to_ort_format(model, "tpu")


def coverage_table(coverage: MobileCoverage) -> dict[str, tuple[int, int, int, str, int]]:
    return {c.ep: (c.nodes, c.total, c.partitions, c.verdict, c.dynamic_shape_nodes) for c in coverage.eps}


def test_dynamic_shapes_leave_nothing_to_the_mobile_eps(model: onnx.ModelProto) -> None:
    coverage = mobile_coverage(model)
    assert coverage.dynamic_inputs == ("latent_features",)
    assert [c.ep for c in coverage.eps] == list(EPS)
    for ep in coverage.eps:
        assert (ep.nodes, ep.partitions, ep.verdict, ep.dynamic_shape_nodes) == (0, 0, "NO", ep.total), (
            ep.text
        )
    nnapi = coverage.ep("NNAPI")
    assert nnapi.unsupported_ops == ("ai.onnx:ConvTranspose",)
    assert nnapi.text == (
        "NNAPI: 0/8 nodes in 0 partitions (NO); 8 refused for dynamic shapes; no kernel for ConvTranspose; "
        "with fixed shapes: 6/8 in 3 (NO)"
    )


def test_fixed_shapes_native_strategy_splits_nnapi_at_every_conv_transpose(model: onnx.ModelProto) -> None:
    coverage = mobile_coverage(with_fixed_inputs(model))
    assert coverage.dynamic_inputs == ()
    # the auto strategy lowered the stride-1 layer as a Conv; the two stride-2 layers stay ConvTranspose
    assert coverage_table(coverage) == {
        "NNAPI": (6, 8, 3, "NO", 0),
        "CoreML NeuralNetwork": (6, 8, 3, "NO", 0),
        "CoreML MLProgram": (8, 8, 1, "YES", 0),  # its op table has ConvTranspose
    }
    assert all(ep.fixed_shapes is None for ep in coverage.eps)


@pytest.mark.parametrize(
    ("stride", "kernel", "strategy", "nodes"),
    [(2, 4, "subpixel", 14), (2, 2, "subpixel", 11), (1, 3, "conv", 8)],
)
def test_fixed_shapes_and_conv_lowerings_give_nnapi_every_node(
    stride: int, kernel: int, strategy: str, nodes: int
) -> None:
    model = stack(stride, kernel, strategy)
    assert "ConvTranspose" not in {node.op_type for node in model.graph.node}
    dynamic = mobile_coverage(model)
    fixed_view = dynamic.ep("NNAPI").fixed_shapes
    assert fixed_view is not None and (fixed_view.nodes, fixed_view.verdict) == (nodes, "YES")
    coverage = mobile_coverage(with_fixed_inputs(model))
    assert coverage_table(coverage) == {ep: (nodes, nodes, 1, "YES", 0) for ep in EPS}
    assert coverage.ep("NNAPI").text == f"NNAPI: {nodes}/{nodes} nodes in 1 partition (YES)"


def test_gemm_lowering_suits_nnapi_not_coreml() -> None:
    """MatMul + Reshape/Transpose interleaving: NNAPI takes all 18 nodes, CoreML splits."""
    coverage = mobile_coverage(with_fixed_inputs(stack(2, 2, "gemm")))
    table = coverage_table(coverage)
    assert table["NNAPI"] == (18, 18, 1, "YES", 0)
    assert table["CoreML NeuralNetwork"][3] == "NO" and table["CoreML MLProgram"][3] == "NO"


def test_coverage_json_is_plain_data(model: onnx.ModelProto) -> None:
    import json

    data: Any = json.loads(mobile_coverage(model).to_json_text())
    assert data["dynamic_inputs"] == ["latent_features"]
    nnapi = data["eps"][0]
    assert nnapi["ep"] == "NNAPI" and nnapi["fixed_shapes"]["nodes"] == 6
    assert set(nnapi) == {
        "ep", "nodes", "total", "partitions", "verdict", "unsupported_ops", "dynamic_shape_nodes", "fixed_shapes"
    }  # fmt: skip


def test_conversion_and_check_print_nothing(
    model: onnx.ModelProto, capfd: pytest.CaptureFixture[str]
) -> None:
    """onnxruntime's C++ log (warnings at conversion) and the checker's Python logging stay quiet."""
    for target in TARGETS:
        to_ort_format(model, target)
    mobile_coverage(model)
    assert capfd.readouterr() == ("", "")
