"""`deconvc export`: every form it writes loads in onnxruntime and computes the source's numbers
(the numpy reference for specs, Keras itself for a saved model); the folder is all or nothing;
bad requests exit 2 with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from deconv_compiler.cli.main import main

import deconv_compiler as dc
from tests.onnx_run import assert_close, spec_reference
from tests.test_cli import assert_clean_failure, invoke

ROOT = Path(__file__).resolve().parent.parent
DCGAN = ROOT / "specs" / "dcgan_generator.yaml"
SEED = ROOT / "specs" / "seed_example.yaml"


def run_file(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The written model as a user loads it: onnxruntime from the file (external data beside it)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return list(session.run(None, feed))


def dcgan_input(batch: int = 2) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((batch, 7, 7, 256)).astype(np.float32)


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_spec_to_onnx_folder_with_metadata_visible_in_inspect(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    result = invoke("export", DCGAN, "-o", out, "--metadata", "team=vision", "--metadata", "stage=prod")
    assert result.exit_code == 0, result.output
    assert listing(out) == ["dcgan_generator.onnx"]
    assert f"{out / 'dcgan_generator.onnx'}" in result.output and "CPU provider: all" in result.output
    x = dcgan_input()
    (y,) = run_file(out / "dcgan_generator.onnx", {"latent_features": x})
    assert_close(y, spec_reference(dc.load_spec(DCGAN), x))
    model = onnx.load(out / "dcgan_generator.onnx")
    assert model.producer_name == "deconv-compiler" and "dcgan_generator.yaml" in model.doc_string
    props = {p.key: p.value for p in model.metadata_props}
    assert props["team"] == "vision" and props["stage"] == "prod"
    source = json.loads(props["deconv_compiler.source"])
    import hashlib

    assert source["sha256"] == hashlib.sha256(DCGAN.read_bytes()).hexdigest()
    shown = invoke("inspect", out / "dcgan_generator.onnx").output
    assert "team: vision" in shown and source["sha256"] in shown


def test_external_data_past_the_switch_point_loads_and_is_exact(tmp_path: Path) -> None:
    out = tmp_path / "big"
    result = invoke("export", DCGAN, "-o", out, "--external-data-above", "1MiB", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["external_data"] is True
    assert listing(out) == ["dcgan_generator.onnx", "dcgan_generator.onnx.data"]
    assert (out / "dcgan_generator.onnx").stat().st_size < 100_000  # the weights are beside it
    x = dcgan_input(1)
    (y,) = run_file(out / "dcgan_generator.onnx", {"latent_features": x})
    assert_close(y, spec_reference(dc.load_spec(DCGAN), x))
    model = onnx.load(out / "dcgan_generator.onnx", load_external_data=False)
    offsets = [
        int(entry.value)
        for tensor in model.graph.initializer
        for entry in tensor.external_data
        if entry.key == "offset"
    ]
    assert offsets and all(offset % 4096 == 0 for offset in offsets)


def test_fixed_shape_names_and_mobile_target(tmp_path: Path) -> None:
    out = tmp_path / "mobile"
    result = invoke(
        "export", DCGAN, "-o", out, "--fix-shape", "1,7,7,256", "--output-names", "image", "--target", "mobile",
        "--name", "gen",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    model = onnx.load(out / "gen.onnx")
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 28, 28, 1]
    assert model.graph.output[0].name == "image"
    assert "ConvTranspose" not in {node.op_type for node in model.graph.node}
    x = dcgan_input(1)
    (y,) = run_file(out / "gen.onnx", {"latent_features": x})
    assert_close(y, spec_reference(dc.load_spec(DCGAN), x))


def test_an_onnx_file_is_exported_as_it_is(tmp_path: Path) -> None:
    compiled = tmp_path / "seed.onnx"
    assert invoke("compile", SEED, "-o", compiled).exit_code == 0
    out = tmp_path / "from-onnx"
    result = invoke("export", compiled, "-o", out, "--metadata", "k=v")
    assert result.exit_code == 0, result.output
    before, after = onnx.load(compiled), onnx.load(out / "seed.onnx")
    assert before.graph == after.graph  # the same graph, weights included
    assert (
        json.loads({p.key: p.value for p in after.metadata_props}["deconv_compiler.source"])["kind"] == "onnx"
    )
    result = invoke("export", compiled, "-o", tmp_path / "again", "--strategy", "subpixel")
    assert result.exit_code == 0 and "exported as it is: --strategy, --opset" in result.output


def test_a_failed_export_leaves_no_folder_and_keeps_the_previous_one(tmp_path: Path) -> None:
    # float64 compiles, but onnxruntime's CPU provider has no float64 ConvTranspose: the
    # verification run of the written model fails, after the files were written
    specs = tmp_path / "specs"
    specs.mkdir()
    float64 = specs / "seed.yaml"
    float64.write_text(SEED.read_text() + "dtype: float64\n")
    out = tmp_path / "deploy"
    result = invoke("export", float64, "-o", out)
    assert result.exit_code == 1 and not out.exists(), result.output
    assert "cannot load the model" in result.output or "NOT_IMPLEMENTED" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["specs"]  # no temporary left either
    assert invoke("export", SEED, "-o", out).exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*")}
    result = invoke("export", float64, "-o", out, "--overwrite", "--name", "seed_example")
    assert result.exit_code == 1
    assert {p: p.read_bytes() for p in out.rglob("*")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy", "specs"]


def test_an_existing_folder_is_refused_unless_empty_or_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    out.mkdir()
    assert invoke("export", SEED, "-o", out).exit_code == 0  # empty: taken
    result = invoke("export", SEED, "-o", out)
    assert_clean_failure(result)
    assert "exists and is not empty" in result.output and "--overwrite" in result.output
    (out / "notes.txt").write_text("mine")
    result = invoke("export", SEED, "-o", out, "--overwrite")
    assert result.exit_code == 0 and listing(out) == ["seed_example.onnx"]
    inside = out / "spec.yaml"
    inside.write_text(SEED.read_text())
    result = invoke("export", inside, "-o", out, "--overwrite")
    assert_clean_failure(result)
    assert "holds an input" in result.output
    (tmp_path / "file").write_text("x")
    assert "is a file, not a directory" in invoke("export", SEED, "-o", tmp_path / "file").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "int4"], "'int4' is not one of 'fp32', 'fp16', 'int8'"),
        (["--format", "tflite"], "'tflite' is not one of 'onnx', 'ort'"),
        (
            ["--fix-shape", "1,8,8,256"],
            "--fix-shape 1,8,8,256: input 'latent_features' is (batch, 7, 7, 256): axis 1 is 7, not 8",
        ),
        (["--calibration", "x.npz"], "--calibration is for --precision int8, not fp32"),
        (["--metadata", "deconv_compiler.spec=x"], "keys starting with deconv_compiler. are the compiler's"),
        (["--metadata", "novalue"], "'novalue' is not KEY=VALUE"),
        (["--name", "../up"], "--name '../up': use letters"),
        (["--tensorrt", "fp16"], "configure a Triton repository: add --triton"),
        (["--triton", "--format", "ort"], "does not take --format ort"),
    ],
    ids=[
        "precision",
        "format",
        "fix-shape",
        "calibration-fp32",
        "reserved-key",
        "metadata-pair",
        "name",
        "tensorrt-alone",
        "triton-ort",
    ],
)
def test_bad_requests_exit_2_with_nothing_written(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "deploy"
    result = invoke("export", DCGAN, "-o", out, *args)
    assert_clean_failure(result)
    assert message in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_command_is_listed() -> None:
    from click.testing import CliRunner

    assert "export" in CliRunner().invoke(main, ["--help"]).output


def scale_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected)) / max(1.0, float(np.max(np.abs(expected)))))


def test_fp16_keeps_float32_io_within_1e_2_of_scale(tmp_path: Path) -> None:
    out = tmp_path / "half"
    result = invoke("export", DCGAN, "-o", out, "--precision", "fp16", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["precision"] == "fp16" and report["error_vs_fp32"]["max_abs"] < 1e-2
    model = onnx.load(out / "dcgan_generator.onnx")
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {t.data_type for t in model.graph.initializer if t.name.endswith("kernel")} == {
        onnx.TensorProto.FLOAT16
    }
    x = dcgan_input()
    (y,) = run_file(out / "dcgan_generator.onnx", {"latent_features": x})
    assert y.dtype == np.float32
    assert scale_error(y, spec_reference(dc.load_spec(DCGAN), x)) < 1e-2


def test_int8_with_calibration_reports_and_bounds_its_error(tmp_path: Path) -> None:
    calibration = tmp_path / "calibration.npz"
    samples = np.random.default_rng(3).standard_normal((16, 7, 7, 256)).astype(np.float32)
    np.savez(calibration, latent_features=samples)
    out = tmp_path / "int8"
    result = invoke("export", DCGAN, "-o", out, "--precision", "int8", "--calibration", calibration, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    error = report["error_vs_fp32"]
    assert error["max_abs"] / error["scale"] < 0.05 and "16 samples" in error["inputs"]
    assert report["int8"]["settings"] and report["warnings"] == []  # calibrated: no random-data warning
    kept = {entry["node"] for entry in report["int8"]["float_nodes"]}
    model = onnx.load(out / "dcgan_generator.onnx")
    assert {n.name for n in model.graph.node if n.op_type == "ConvTranspose"} <= kept
    assert "DequantizeLinear" in {n.op_type for n in model.graph.node}
    x = samples[:2]
    (y,) = run_file(out / "dcgan_generator.onnx", {"latent_features": x})
    assert scale_error(y, spec_reference(dc.load_spec(DCGAN), x)) < 0.05


def test_int8_on_random_data_warns(tmp_path: Path) -> None:
    result = invoke("export", SEED, "-o", tmp_path / "q", "--precision", "int8")
    assert result.exit_code == 0, result.output
    assert "warning: int8 calibrated on random data" in result.output


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"z": (4, 7, 7, 256)}, "has no array named 'latent_features'"),
        ({"latent_features": (4, 7, 7, 255)}, "array 'latent_features' has shape (4, 7, 7, 255)"),
    ],
    ids=["wrong-name", "wrong-shape"],
)
def test_bad_calibration_exits_2_with_nothing_written(
    tmp_path: Path, arrays: dict[str, tuple[int, ...]], message: str
) -> None:
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, **{name: np.zeros(shape, np.float32) for name, shape in arrays.items()})
    out = tmp_path / "deploy"
    result = invoke("export", DCGAN, "-o", out, "--precision", "int8", "--calibration", calibration)
    assert_clean_failure(result)
    assert message in result.output and not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["calibration.npz"]


def test_ort_format_for_mobile_loads_and_every_node_goes_to_nnapi(tmp_path: Path) -> None:
    out = tmp_path / "phone"
    result = invoke(
        "export", DCGAN, "-o", out, "--format", "ort", "--target", "mobile", "--fix-shape", "1,7,7,256", "--json"
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert listing(out) == ["dcgan_generator.ort"]
    report = json.loads(result.output)
    nnapi = next(ep for ep in report["mobile"]["eps"] if ep["ep"] == "NNAPI")
    assert nnapi["nodes"] == nnapi["total"] and nnapi["partitions"] == 1
    x = dcgan_input(1)
    (y,) = run_file(out / "dcgan_generator.ort", {"latent_features": x})
    assert_close(y, spec_reference(dc.load_spec(DCGAN), x))
    text = invoke("export", DCGAN, "-o", tmp_path / "as-compiled", "--format", "ort").output
    assert "NNAPI: 0/" in text  # dynamic shapes and ConvTranspose: nothing for NNAPI


def test_triton_repository_parses_with_tritons_proto_and_agrees_with_the_model(tmp_path: Path) -> None:
    from tests.test_triton_config import MC, assert_agrees, parse

    repository = tmp_path / "models"
    result = invoke(
        "export", DCGAN, "-o", repository, "--triton", "--name", "dcgan", "--precision", "fp16",
        "--max-batch-size", "16", "--instances", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert listing(repository) == ["dcgan", "dcgan/1", "dcgan/1/model.onnx", "dcgan/config.pbtxt"]
    config = parse((repository / "dcgan" / "config.pbtxt").read_text())
    model = onnx.load(repository / "dcgan" / "1" / "model.onnx")
    assert config.name == "dcgan" and config.max_batch_size == 16
    assert_agrees(config, model, batching=True, max_batch_size=16)
    group = config.instance_group[0]
    assert group.count == 2 and MC.ModelInstanceGroup.Kind.Name(group.kind) == "KIND_CPU"
    # a second model joins the repository; its own folder must be new or empty
    result = invoke("export", SEED, "-o", repository, "--triton", "--provider", "cuda", "--tensorrt", "fp16")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in repository.iterdir()) == ["dcgan", "seed_example"]
    config = parse((repository / "seed_example" / "config.pbtxt").read_text())
    assert config.max_batch_size == 0  # seed_example's batch is fixed at 4: no batching by Triton
    assert MC.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == "KIND_GPU"
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    again = invoke("export", SEED, "-o", repository, "--triton")
    assert_clean_failure(again)
    assert "seed_example exists and is not empty" in again.output


def test_compile_to_file_switches_to_external_data_past_the_limit(tmp_path: Path) -> None:
    from deconv_compiler.compiler import compile_to_file

    path = tmp_path / "dcgan.onnx"
    compile_to_file(dc.load_model(DCGAN), None, path, external_data_above=2**20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dcgan.onnx", "dcgan.onnx.data"]
    x = dcgan_input(1)
    (y,) = run_file(path, {"latent_features": x})
    assert_close(y, spec_reference(dc.load_spec(DCGAN), x))
    inline = tmp_path / "inline.onnx"
    compile_to_file(dc.load_model(DCGAN), None, inline)  # under the default: one file, as before
    one, two = onnx.load(inline), onnx.load(path)  # external data loaded
    assert one.graph.node == two.graph.node
    weights = [{t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer} for m in (one, two)]
    assert weights[0].keys() == weights[1].keys()
    assert all(np.array_equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_a_tuned_export_repeats_byte_for_byte_with_its_tune_cache(tmp_path: Path) -> None:
    cache = tmp_path / "tune.json"
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        result = invoke("export", SEED, "-o", out, "--strategy", "tune", "--tune-cache", cache)
        assert result.exit_code == 0, result.output
    assert cache.exists()
    assert (first / "seed_example.onnx").read_bytes() == (second / "seed_example.onnx").read_bytes()
