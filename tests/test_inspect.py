"""`deconv_compiler.inspection`: summaries of real compiled models and of foreign hand-built ones,
their text and JSON renderings, and every way `load_onnx` refuses a file that is not a model."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import deconv_compiler as dc
from deconv_compiler.errors import DeconvError
from deconv_compiler.inspection import (
    GraphRef,
    ModelFileError,
    ModelSummary,
    OpsetSummary,
    TensorRef,
    inspect_model,
    load_onnx,
    render_text,
    summary_to_json,
)
from tests.onnx_run import compile_spec

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
DCGAN = SPECS / "dcgan_generator.yaml"  # (None, 7, 7, 256) -> (None, 28, 28, 1), no bias, seed 7
SEED_EXAMPLE = SPECS / "seed_example.yaml"  # Conv2DTranspose(32, 2, 2, relu) on (4, 10, 8, 128)


def _compile_to_file(spec: Path, path: Path, opset: int = 17) -> Path:
    dc.save_model(compile_spec(dc.load_spec(spec), opset=opset, strategy="native"), path)
    return path


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def dcgan_file(models_dir: Path) -> Path:
    return _compile_to_file(DCGAN, models_dir / "dcgan.onnx")


@pytest.fixture(scope="module")
def dcgan(dcgan_file: Path) -> ModelSummary:
    return inspect_model(load_onnx(dcgan_file))


@pytest.fixture(scope="module")
def seed(models_dir: Path) -> ModelSummary:
    return inspect_model(load_onnx(_compile_to_file(SEED_EXAMPLE, models_dir / "seed.onnx")))


# --- our models -----------------------------------------------------------------------------------


def test_header(dcgan: ModelSummary) -> None:
    assert dcgan.graph_name == "dcgan_generator"
    assert (dcgan.producer_name, dcgan.producer_version) == ("deconv-compiler", dc.__version__)
    assert dcgan.opsets == (OpsetSummary("", 17),)
    assert dcgan.ir_version == helper.find_min_ir_version_for([helper.make_opsetid("", 17)]) == 8


def test_ir_version_follows_the_opset(models_dir: Path) -> None:
    summary = inspect_model(load_onnx(_compile_to_file(SEED_EXAMPLE, models_dir / "seed13.onnx", opset=13)))
    assert summary.opsets == (OpsetSummary("", 13),)
    assert summary.ir_version == 7


def test_inputs_and_outputs_keep_symbolic_dims(dcgan: ModelSummary, seed: ModelSummary) -> None:
    assert [(v.name, v.dtype, v.shape) for v in dcgan.inputs] == [
        ("latent_features", "float32", ("batch", 7, 7, 256))
    ]
    assert [(v.name, v.dtype, v.shape) for v in dcgan.outputs] == [
        ("output", "float32", ("batch", 28, 28, 1))
    ]
    assert [(v.dtype, v.shape) for v in seed.inputs] == [("float32", (4, 10, 8, 128))]
    assert [(v.dtype, v.shape) for v in seed.outputs] == [("float32", (4, 20, 16, 32))]


def test_nodes_and_conv_transpose_attributes(dcgan: ModelSummary) -> None:
    assert [n.op_type for n in dcgan.nodes] == [
        "Transpose",
        *["ConvTranspose", "LeakyRelu"] * 2,
        "ConvTranspose",
        "Tanh",
        "Transpose",
    ]
    convs = [n for n in dcgan.nodes if n.op_type == "ConvTranspose"]
    assert [c.attributes["pads"] for c in convs] == [(2, 2, 2, 2), (1, 1, 2, 2), (1, 1, 2, 2)]
    assert [c.attributes["strides"] for c in convs] == [(1, 1), (2, 2), (2, 2)]
    assert {c.attributes["output_padding"] for c in convs} == {(0, 0)}
    assert {c.attributes["kernel_shape"] for c in convs} == {(5, 5)}
    assert {c.attributes["group"] for c in convs} == {1}
    assert all(len(c.inputs) == 2 for c in convs), "use_bias: false means no B input"
    assert convs[1].inputs[1] == "conv2d_transpose_1/kernel"
    assert dcgan.nodes[0].attributes["perm"] == (0, 3, 1, 2)
    # float attributes are float32 in the file; the summary gives their shortest decimal
    assert {n.attributes["alpha"] for n in dcgan.nodes if n.op_type == "LeakyRelu"} == {0.2}
    assert dcgan.nodes[-1].outputs == ("output",)


def test_bias_and_activation(seed: ModelSummary) -> None:
    assert [n.op_type for n in seed.nodes] == ["Transpose", "ConvTranspose", "Relu", "Transpose"]
    conv = seed.nodes[1]
    assert len(conv.inputs) == 3
    assert conv.attributes["pads"] == (0, 0, 0, 0)
    assert conv.attributes["strides"] == (2, 2)
    assert [(i.name, i.shape) for i in seed.initializers] == [
        ("conv2d_transpose/kernel", (128, 32, 2, 2)),
        ("conv2d_transpose/bias", (32,)),
    ]


def test_initializers_and_parameter_count(dcgan: ModelSummary, dcgan_file: Path) -> None:
    arrays = [numpy_helper.to_array(t) for t in onnx.load(str(dcgan_file)).graph.initializer]
    assert [i.shape for i in dcgan.initializers] == [a.shape for a in arrays]
    assert {i.dtype for i in dcgan.initializers} == {"float32"}
    assert [i.nbytes for i in dcgan.initializers] == [a.nbytes for a in arrays]
    assert dcgan.parameter_count == sum(a.size for a in arrays) == 256 * 128 * 25 + 128 * 64 * 25 + 64 * 25
    assert dcgan.parameter_bytes == 4 * dcgan.parameter_count
    assert not any(i.external or i.sparse for i in dcgan.initializers)


def test_metadata_spec_is_parsed(dcgan: ModelSummary) -> None:
    assert dcgan.metadata["deconv_compiler.version"] == dc.__version__
    spec = dcgan.metadata["deconv_compiler.spec"]
    assert isinstance(spec, dict)
    assert (spec["name"], spec["seed"]) == ("dcgan_generator", 7)
    assert spec["input"]["shape"] == [None, 7, 7, 256]
    assert [layer["class_name"] for layer in spec["layers"]] == ["Conv2DTranspose"] * 3
    assert [layer["config"]["filters"] for layer in spec["layers"]] == [128, 64, 1]
    assert spec["layers"][1]["config"]["strides"] == [2, 2]
    with pytest.raises(TypeError):
        dcgan.metadata["x"] = 1  # type: ignore[index]


def test_render_text(dcgan: ModelSummary) -> None:
    text = render_text(dcgan)
    lines = text.splitlines()
    assert text.endswith("\n")
    assert "graph:       dcgan_generator" in lines
    assert f"producer:    deconv-compiler {dc.__version__}" in lines
    assert "ir_version:  8" in lines
    assert "opsets:      ai.onnx 17" in lines
    assert "  latent_features: float32 [batch, 7, 7, 256]" in lines
    assert "  output: float32 [batch, 28, 28, 1]" in lines
    assert "nodes (8):" in lines
    conv = re.compile(
        r"^  ConvTranspose +conv2d_transpose_1/ConvTranspose +kernel_shape=\[5, 5\] strides=\[2, 2\] "
        r"pads=\[1, 1, 2, 2\] output_padding=\[0, 0\] dilations=\[1, 1\] group=1$"
    )
    assert sum(bool(conv.match(line)) for line in lines) == 1, text
    assert any(re.match(r"^  LeakyRelu +conv2d_transpose/LeakyRelu +alpha=0\.2$", line) for line in lines)
    assert any(re.match(r"^  Tanh +conv2d_transpose_2/Tanh$", line) for line in lines)
    assert "initializers (3): 1,025,600 parameters, 4,102,400 bytes (3.91 MiB)" in lines
    assert any(re.match(r"^  conv2d_transpose/kernel +float32 \[256, 128, 5, 5\] ", line) for line in lines)
    assert f"  deconv_compiler.version: {dc.__version__}" in lines


def test_render_text_spec_block_is_indented_json(dcgan: ModelSummary) -> None:
    lines = render_text(dcgan).splitlines()
    start = lines.index("  deconv_compiler.spec:") + 1
    block = []
    for line in lines[start:]:
        if not line.startswith("    "):
            break
        block.append(line[4:])
    assert block[0] == "{" and block[-1] == "}"
    assert '  "input": {"dtype": "float32", "name": "latent_features", "shape": [null, 7, 7, 256]},' in block
    assert json.loads("\n".join(block)) == dcgan.metadata["deconv_compiler.spec"]


def test_summary_to_json_round_trips(dcgan: ModelSummary, dcgan_file: Path) -> None:
    data = summary_to_json(dcgan)
    text = json.dumps(data, indent=2)
    assert json.loads(text) == data
    # stable: a second load of the same file gives the same text, key order included
    assert json.dumps(summary_to_json(inspect_model(load_onnx(dcgan_file))), indent=2) == text
    assert list(data) == [
        "graph_name",
        "producer_name",
        "producer_version",
        "ir_version",
        "opsets",
        "domain",
        "model_version",
        "doc_string",
        "inputs",
        "outputs",
        "nodes",
        "initializers",
        "parameter_count",
        "parameter_bytes",
        "functions",
        "metadata",
    ]
    assert data["inputs"] == [{"name": "latent_features", "dtype": "float32", "shape": ["batch", 7, 7, 256]}]
    assert data["opsets"] == [{"domain": "", "version": 17}]
    conv = data["nodes"][3]
    assert (conv["op_type"], conv["name"]) == ("ConvTranspose", "conv2d_transpose_1/ConvTranspose")
    assert conv["attributes"]["pads"] == [1, 1, 2, 2]
    assert conv["attributes"]["output_padding"] == [0, 0]
    assert data["parameter_count"] == 1_025_600
    assert data["metadata"]["deconv_compiler.spec"]["layers"][2]["config"]["activation"] == "tanh"


# --- foreign models -------------------------------------------------------------------------------


def _foreign_model() -> onnx.ModelProto:
    """Built by hand, unlike anything we emit: unnamed nodes, TENSOR/GRAPH/STRING/FLOAT attributes,
    an unknown dim and an unknown rank, a non-tensor output, a custom domain, no metadata."""
    then_graph = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 3])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Neg", ["c"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 3])],
    )
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones((2, 3), np.float32))),
        helper.make_node(
            "If", ["flag"], ["chosen"], name="choose", then_branch=then_graph, else_branch=else_graph
        ),
        helper.make_node("LeakyRelu", ["x"], ["y"], alpha=0.1),
        helper.make_node("Pad", ["y", "pads"], ["padded"], mode="reflect"),
        helper.make_node("SequenceConstruct", ["padded", "chosen"], ["seq"]),
        helper.make_node(
            "MyOp", ["padded"], ["custom"], domain="com.example", tags=["a", "b"], scale=[0.5, 2.0]
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", None, 4]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, None),
        ],
        [
            helper.make_tensor_value_info("custom", TensorProto.FLOAT16, None),
            helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None),
        ],
        initializer=[numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0], np.int64), "pads")],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)],
        ir_version=8,
    )


def test_foreign_model(tmp_path: Path) -> None:
    path = tmp_path / "foreign.onnx"
    onnx.save(_foreign_model(), str(path))
    summary = inspect_model(load_onnx(path))

    assert (summary.graph_name, summary.producer_name, summary.producer_version) == ("", "", "")
    assert summary.opsets == (OpsetSummary("", 18), OpsetSummary("com.example", 1))
    assert dict(summary.metadata) == {}
    assert [(v.name, v.dtype, v.shape) for v in summary.inputs] == [
        ("x", "float32", ("N", None, 4)),
        ("flag", "bool", None),
    ]
    assert [(v.name, v.dtype, v.shape) for v in summary.outputs] == [
        ("custom", "float16", None),
        ("seq", "sequence<float32>", None),
    ]
    const, choose, leaky, pad, _, custom = summary.nodes
    assert const.name == "" and const.attributes["value"] == TensorRef("float32", (2, 3))
    assert choose.attributes["then_branch"] == GraphRef("then", 1)
    assert leaky.attributes["alpha"] == 0.1
    assert pad.attributes["mode"] == "reflect"
    assert (custom.domain, custom.attributes["tags"], custom.attributes["scale"]) == (
        "com.example",
        ("a", "b"),
        (0.5, 2.0),
    )
    assert summary.parameter_count == 6 and summary.parameter_bytes == 48

    lines = render_text(summary).splitlines()
    assert "graph:       (none)" in lines
    assert "producer:    (none)" in lines
    assert "opsets:      ai.onnx 18, com.example 1" in lines
    assert "  x: float32 [N, ?, 4]" in lines
    assert "  flag: bool [...]" in lines
    assert "  seq: sequence<float32> [...]" in lines
    assert "metadata (0):" in lines
    assert any(
        re.match(r"^  Constant +\(unnamed\) +value=tensor\(float32 \[2, 3\]\)$", line) for line in lines
    )
    assert any(
        re.match(r"^  If +choose +else_branch=graph\(else, 1 node\) then_branch=graph\(then, 1 node\)$", ln)
        for ln in lines
    )
    assert any(re.match(r'^  Pad +\(unnamed\) +mode="reflect"$', line) for line in lines)
    assert any(
        re.match(r'^  com\.example\.MyOp +\(unnamed\) +scale=\[0\.5, 2\.0\] tags=\["a", "b"\]$', ln)
        for ln in lines
    )

    data = summary_to_json(summary)
    assert json.loads(json.dumps(data)) == data
    assert data["nodes"][0]["attributes"]["value"] == {
        "tensor": {"dtype": "float32", "shape": [2, 3], "sparse": False}
    }
    assert data["nodes"][1]["attributes"]["then_branch"] == {"graph": {"name": "then", "node_count": 1}}
    assert data["inputs"][1] == {"name": "flag", "dtype": "bool", "shape": None}


def test_foreign_spec_metadata_that_is_not_json_stays_a_string() -> None:
    model = _foreign_model()
    helper.set_model_props(model, {"deconv_compiler.spec": "not json {", "author": "someone"})
    summary = inspect_model(model)
    assert dict(summary.metadata) == {"deconv_compiler.spec": "not json {", "author": "someone"}
    assert "  deconv_compiler.spec: not json {" in render_text(summary).splitlines()


def test_initializers_listed_as_inputs_are_not_inputs() -> None:
    """IR < 4 lists every initializer among the graph inputs; they are weights, not inputs."""
    weight = numpy_helper.from_array(np.ones((3,), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "old",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)], ir_version=3)
    summary = inspect_model(model)
    assert [v.name for v in summary.inputs] == ["x"]
    assert [i.name for i in summary.initializers] == ["w"]


def test_external_data_is_not_read(tmp_path: Path) -> None:
    model = compile_spec(dc.load_spec(SEED_EXAMPLE), strategy="native")
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()  # the summary needs only shapes and types
    summary = inspect_model(load_onnx(path))
    assert all(i.external for i in summary.initializers)
    assert [i.nbytes for i in summary.initializers] == [128 * 32 * 2 * 2 * 4, 32 * 4]
    assert "external data" in render_text(summary)


# --- load_onnx refusals ---------------------------------------------------------------------------


def _assert_refused(path: Path, *phrases: str) -> None:
    with pytest.raises(DeconvError) as info:
        load_onnx(path)
    assert isinstance(info.value, ModelFileError)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for phrase in phrases:
        assert phrase in message, message


def test_missing_file(tmp_path: Path) -> None:
    _assert_refused(tmp_path / "nope.onnx", "no such file")


def test_broken_symlink(tmp_path: Path) -> None:
    link = tmp_path / "link.onnx"
    link.symlink_to(tmp_path / "gone.onnx")
    _assert_refused(link, "no such file")


def test_directory(tmp_path: Path) -> None:
    _assert_refused(tmp_path, "is a directory")


def test_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    _assert_refused(fifo, "not a regular file")  # and does not block waiting for a writer


@pytest.mark.parametrize("make", ["file_as_folder", "name_too_long"])
def test_unusable_path(tmp_path: Path, make: str) -> None:
    (tmp_path / "model.onnx").write_bytes(b"x")
    path = tmp_path / "model.onnx" / "inner.onnx" if make == "file_as_folder" else tmp_path / ("m" * 300)
    _assert_refused(path, "cannot read")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    _assert_refused(path, "is empty")


@pytest.mark.parametrize("spec", [SEED_EXAMPLE, DCGAN, SPECS / "upsample_1d.json"], ids=lambda p: p.name)
def test_a_spec_is_not_a_model(tmp_path: Path, spec: Path) -> None:
    for name in (spec.name, "spec.onnx"):  # recognized as text by its content, not only its suffix
        path = tmp_path / name
        shutil.copy(spec, path)
        _assert_refused(path, "not an ONNX model", "text file", "deconvc compile")


def test_other_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.onnx"
    shutil.copy(SPECS / "dilated_with_weights.npz", path)
    _assert_refused(path, "not an ONNX model", "do not decode")


def test_random_bytes(tmp_path: Path) -> None:
    rng = random.Random(0)
    path = tmp_path / "noise.onnx"
    for _ in range(200):
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
        _assert_refused(path, "not an ONNX model")


def test_truncated_models(tmp_path: Path, dcgan_file: Path) -> None:
    data = dcgan_file.read_bytes()
    model = onnx.load_from_string(data)
    header = onnx.ModelProto(
        ir_version=model.ir_version,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
    ).SerializeToString()
    with_graph = onnx.ModelProto()
    with_graph.CopyFrom(model)
    del with_graph.opset_import[:], with_graph.metadata_props[:]
    assert data.startswith(header) and data.startswith(with_graph.SerializeToString())
    path = tmp_path / "cut.onnx"
    # cut inside a field: protobuf cannot decode it
    for cut in (1, 5, len(header) + 3, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        _assert_refused(path, "not an ONNX model")
    # cut between top-level fields: it decodes, but what every model has is missing
    path.write_bytes(header)
    _assert_refused(path, "not a complete ONNX model", "no graph")
    path.write_bytes(with_graph.SerializeToString())
    _assert_refused(path, "not a complete ONNX model", "no opset")


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.onnx"
    shutil.copy(SPECS / "dilated_with_weights.npz", path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running with privileges that ignore file modes (root)")
        _assert_refused(path, "cannot read", "ermission denied")
    finally:
        path.chmod(0o600)
