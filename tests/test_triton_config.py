"""Triton `config.pbtxt` text: it parses into Triton's own `ModelConfig` protobuf (from the installed
tritonclient) and agrees with the model it serves; bad settings and untypable tensors are refused."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper

import deconv_compiler as dc
from deconv_compiler.triton_config import (
    DEFAULT_MAX_BATCH_SIZE,
    TritonConfigError,
    TritonSettings,
    repository_paths,
    triton_config,
)

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
# ONNX element type → Triton data type name, written here from Triton's model_config.proto
# (not taken from the module under test).
EXPECTED_TYPES = {
    TensorProto.FLOAT: "TYPE_FP32",
    TensorProto.FLOAT16: "TYPE_FP16",
    TensorProto.INT64: "TYPE_INT64",
}


def _model_config_pb2() -> ModuleType:
    """tritonclient.grpc.model_config_pb2, loaded by path: the package's __init__ needs grpcio."""
    spec = importlib.util.find_spec("tritonclient")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


MC = _model_config_pb2()


def parse(text: str) -> Any:
    return text_format.Parse(text, MC.ModelConfig())


def compiled(spec: str, **options: Any) -> onnx.ModelProto:
    return dc.compile_model(dc.load_model(SPECS / spec), dc.CompileOptions(**options))


def dims_of(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


def assert_agrees(config: Any, model: onnx.ModelProto, batching: bool, max_batch_size: int) -> None:
    """Every field Triton checks against the model at load time."""
    assert config.platform == "onnxruntime_onnx"
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == (max_batch_size if batching else 0)
    assert config.HasField("dynamic_batching") == batching
    for declared, values in ((config.input, model.graph.input), (config.output, model.graph.output)):
        assert [t.name for t in declared] == [v.name for v in values]
        for entry, value in zip(declared, values, strict=True):
            assert MC.DataType.Name(entry.data_type) == EXPECTED_TYPES[value.type.tensor_type.elem_type]
            full = dims_of(value)
            assert list(entry.dims) == (full[1:] if batching else full), entry.name


@pytest.mark.parametrize(
    ("spec", "batching"),
    [
        ("dcgan_generator.yaml", True),
        ("dilated_with_weights.yaml", True),
        ("upsample_1d.json", True),
        ("inline_weights.yaml", True),
        ("seed_example.yaml", False),  # batch_size 4: a fixed batch
        ("volume_3d_channels_first.yaml", False),
    ],
)
def test_example_specs_give_a_config_that_agrees_with_the_model(spec: str, batching: bool) -> None:
    model = compiled(spec)
    config = parse(triton_config(model, TritonSettings("model")))
    assert_agrees(config, model, batching, DEFAULT_MAX_BATCH_SIZE)
    assert [(g.count, MC.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group] == [
        (1, "KIND_CPU")
    ]
    assert not config.HasField("optimization")


def test_dynamic_spatial_dims_are_minus_one() -> None:
    config = parse(triton_config(compiled("dilated_with_weights.yaml"), TritonSettings("m")))
    assert list(config.input[0].dims) == [-1, -1, 2]
    assert list(config.output[0].dims) == [-1, -1, 4]


def test_fixed_batch_made_by_editing_a_compiled_model() -> None:
    model = compiled("dcgan_generator.yaml")
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 2  # replaces dim_param "batch"
    config = parse(triton_config(model, TritonSettings("m", max_batch_size=16)))
    assert_agrees(config, model, batching=False, max_batch_size=16)
    assert list(config.input[0].dims) == [2, 7, 7, 256]


def test_max_batch_size_is_the_settings_one_when_batching() -> None:
    model = compiled("dcgan_generator.yaml")
    config = parse(triton_config(model, TritonSettings("m", max_batch_size=64, instance_count=3)))
    assert_agrees(config, model, batching=True, max_batch_size=64)
    assert config.instance_group[0].count == 3


def test_float16_io() -> None:
    model = compiled("dcgan_generator.yaml", dtype="float16")
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    config = parse(triton_config(model, TritonSettings("m")))
    assert_agrees(config, model, batching=True, max_batch_size=DEFAULT_MAX_BATCH_SIZE)
    assert MC.DataType.Name(config.output[0].data_type) == "TYPE_FP16"


def _two_input_model(
    batch_a: str | int = "batch", batch_b: str | int = "batch", elem_b: int = TensorProto.FLOAT
) -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["b"], ["b32"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["a", "b32"], ["y"]),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [batch_a, 3, "w"]),
            helper.make_tensor_value_info("b", elem_b, [batch_b, 3, "w"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_a, 3, "w"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_multi_input_model_with_a_shared_batch() -> None:
    model = _two_input_model(elem_b=TensorProto.INT64)
    onnx.checker.check_model(model)
    config = parse(triton_config(model, TritonSettings("two")))
    assert_agrees(config, model, batching=True, max_batch_size=DEFAULT_MAX_BATCH_SIZE)
    assert [list(t.dims) for t in config.input] == [[3, -1], [3, -1]]


def test_differently_named_dim0_is_not_a_batch() -> None:
    """Two symbolic sizes may differ; Triton would force them equal, so no batching."""
    model = _two_input_model(batch_a="n", batch_b="m")
    config = parse(triton_config(model, TritonSettings("two")))
    assert_agrees(config, model, batching=False, max_batch_size=0)
    assert list(config.input[0].dims) == [-1, 3, -1]


def test_one_fixed_dim0_turns_batching_off() -> None:
    model = _two_input_model(batch_b=1)
    config = parse(triton_config(model, TritonSettings("two")))
    assert_agrees(config, model, batching=False, max_batch_size=0)


def test_batch_only_tensors_are_reshaped_from_one() -> None:
    """A rank-1 [batch] tensor has no dims left once batched: Triton wants [1] reshaped to []."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "vector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
    )
    config = parse(triton_config(helper.make_model(graph, ir_version=8), TritonSettings("v")))
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    assert list(config.input[0].dims) == [1]
    assert config.input[0].HasField("reshape") and list(config.input[0].reshape.shape) == []


def test_gpu_instances_and_accelerators_as_the_backend_documents_them() -> None:
    settings = TritonSettings(
        "m",
        provider="cuda",
        instance_count=2,
        tensorrt_precision="fp16",
        tensorrt_workspace_bytes=1 << 30,
        cuda_graphs=True,
        cudnn_conv_algo_search="HEURISTIC",
        use_tf32=False,
    )
    assert settings.tensorrt_precision == "FP16"
    config = parse(triton_config(compiled("seed_example.yaml"), settings))  # fixed shapes, for CUDA graphs
    assert [(g.count, MC.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group] == [
        (2, "KIND_GPU")
    ]
    accelerators = config.optimization.execution_accelerators
    assert not accelerators.cpu_execution_accelerator
    found = [(a.name, dict(a.parameters)) for a in accelerators.gpu_execution_accelerator]
    assert found == [
        ("tensorrt", {"precision_mode": "FP16", "max_workspace_size_bytes": "1073741824"}),
        ("cuda", {"enable_cuda_graph": "1", "cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"}),
    ]
    # model-level parameters would make the backend reset cudnn_conv_algo_search (deprecated path)
    assert not config.parameters


def test_tensorrt_alone_on_a_batching_model() -> None:
    settings = TritonSettings("m", provider="cuda", tensorrt_precision="FP32")
    config = parse(triton_config(compiled("inline_weights.yaml"), settings))
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert (accelerator.name, dict(accelerator.parameters)) == ("tensorrt", {"precision_mode": "FP32"})
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE


def test_cuda_graphs_need_fixed_shapes() -> None:
    settings = TritonSettings("m", provider="cuda", cuda_graphs=True)
    with pytest.raises(TritonConfigError) as caught:
        triton_config(compiled("dcgan_generator.yaml"), settings)
    assert "CUDA graphs" in str(caught.value) and "'latent_features' has dynamic dims [-1, 7, 7, 256]" in str(
        caught.value
    )
    config = parse(triton_config(compiled("seed_example.yaml"), settings))  # batch 4, all fixed
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert (accelerator.name, dict(accelerator.parameters)) == ("cuda", {"enable_cuda_graph": "1"})


def test_text_is_deterministic_commented_and_readable() -> None:
    model = compiled("dcgan_generator.yaml")
    settings = TritonSettings("dcgan", comments=("compiled from specs/dcgan_generator.yaml",))
    text = triton_config(model, settings)
    assert text == triton_config(compiled("dcgan_generator.yaml"), settings)
    header = text.splitlines()[:4]
    assert all(line.startswith("# ") for line in header)
    assert "dcgan_generator" in header[0] and header[3] == "# compiled from specs/dcgan_generator.yaml"
    assert (
        '\n  {\n    name: "latent_features"\n    data_type: TYPE_FP32\n    dims: [ 7, 7, 256 ]\n  }\n' in text
    )
    assert text.endswith("]\n")


def test_odd_tensor_names_survive_the_text_format() -> None:
    model = _two_input_model()
    model.graph.input[0].name = 'latent "z"\\ü\n'
    model.graph.node[1].input[0] = model.graph.input[0].name
    config = parse(triton_config(model, TritonSettings("odd")))
    assert config.input[0].name == 'latent "z"\\ü\n'


def test_repository_paths() -> None:
    assert repository_paths("dcgan") == ("dcgan/config.pbtxt", "dcgan/1/model.onnx")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": "my model"}, "Triton model name 'my model' is not usable"),
        ({"name": "../x"}, "is not usable"),
        ({"name": ".hidden"}, "not starting with '.'"),
        ({"name": ""}, "is not usable"),
        ({"name": "a" * 129}, "at most 128"),
        ({"provider": "gpu"}, "provider must be one of cpu, cuda, got 'gpu'"),
        ({"max_batch_size": 0}, "max_batch_size must be an integer >= 1, got 0"),
        ({"max_batch_size": True}, "max_batch_size must be an integer >= 1"),
        ({"instance_count": 0}, "instance count must be an integer >= 1, got 0"),
        (
            {"tensorrt_precision": "FP16"},
            "TensorRT need provider cuda (GPU instances), but the provider is 'cpu'",
        ),
        ({"cuda_graphs": True, "use_tf32": False}, "CUDA graphs, use_tf32 need provider cuda"),
        (
            {"provider": "cuda", "tensorrt_precision": "INT8"},
            "TensorRT precision must be one of FP32, FP16, got 'INT8'",
        ),
        ({"provider": "cuda", "tensorrt_workspace_bytes": 1 << 30}, "workspace size needs TensorRT"),
        (
            {"provider": "cuda", "tensorrt_precision": "FP32", "tensorrt_workspace_bytes": -1},
            "positive number of bytes",
        ),
        (
            {"provider": "cuda", "cudnn_conv_algo_search": "FAST"},
            "one of EXHAUSTIVE, HEURISTIC, DEFAULT, got 'FAST'",
        ),
        ({"provider": "cuda", "use_tf32": 1}, "use_tf32 must be true or false, got 1"),
        ({"comments": ("two\nlines",)}, "one line of text"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(TritonConfigError) as caught:
        TritonSettings(**({"name": "m"} | kwargs))
    assert fragment in str(caught.value)
    assert isinstance(caught.value, dc.DeconvError)


def test_types_triton_cannot_take_are_refused() -> None:
    model = _two_input_model(elem_b=TensorProto.BFLOAT16)
    with pytest.raises(TritonConfigError) as caught:
        triton_config(model, TritonSettings("m"))
    message = str(caught.value)
    assert (
        "input 'b' has element type BFLOAT16" in message
        and "expected one of" in message
        and "FLOAT16" in message
    )


def test_unknown_rank_and_zero_sizes_are_refused() -> None:
    model = _two_input_model()
    model.graph.output[0].type.tensor_type.ClearField("shape")
    with pytest.raises(TritonConfigError, match="output 'y' has no shape"):
        triton_config(model, TritonSettings("m"))
    model = _two_input_model(batch_b=0)
    with pytest.raises(TritonConfigError, match="input 'b' has size 0 on axis 0"):
        triton_config(model, TritonSettings("m"))


def test_non_tensor_outputs_are_refused() -> None:
    model = _two_input_model()
    model.graph.output[0].CopyFrom(
        helper.make_value_info(
            "y", helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, None))
        )
    )
    with pytest.raises(TritonConfigError, match="output 'y' is sequence_type: .* takes only tensors"):
        triton_config(model, TritonSettings("m"))


def _vector_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "vector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


# Where Triton stops on a valid repository that this machine cannot serve: the onnxruntime
# backend is not installed (PyTriton's bundle), or GPU instances on a machine without GPUs.
_CANNOT_SERVE_HERE = (
    "unable to find backend library for backend 'onnxruntime'",
    "has kind KIND_GPU but no GPUs are available",
)


@pytest.mark.skipif(shutil.which("tritonserver") is None, reason="no tritonserver binary on PATH")
def test_tritonserver_accepts_the_repository(tmp_path: Path) -> None:
    """Triton reads a repository of our configs with auto-completion off, so it validates each
    config as written (dims, reshape, batching, instance groups) before it looks the backend up,
    then loads the model where its onnxruntime backend (and, for KIND_GPU, a GPU) is there."""
    gpu = TritonSettings("gpu", provider="cuda", tensorrt_precision="FP16", cuda_graphs=True, use_tf32=False)
    cases = {
        "dcgan": (compiled("dcgan_generator.yaml"), TritonSettings("dcgan")),
        "fixed": (compiled("seed_example.yaml"), TritonSettings("fixed", instance_count=2)),
        "half": (compiled("dcgan_generator.yaml", dtype="float16"), TritonSettings("half")),
        "vector": (_vector_model(), TritonSettings("vector")),
        "two": (_two_input_model(elem_b=TensorProto.INT64), TritonSettings("two")),
        "gpu": (compiled("seed_example.yaml"), gpu),
    }
    for name, (model, settings) in cases.items():
        config_path, model_path = repository_paths(name)
        (tmp_path / model_path).parent.mkdir(parents=True)
        (tmp_path / config_path).write_text(triton_config(model, settings))
        onnx.save(model, tmp_path / model_path)
    server = shutil.which("tritonserver")
    assert server is not None
    command = [server, "--model-repository", str(tmp_path), "--disable-auto-complete-config",
               "--exit-on-error=true", "--allow-http=false", "--allow-grpc=false", "--allow-metrics=false"]  # fmt: skip
    log = _server_log_until(command, ("| Model ", "error: creating server"))  # the status table, or a failure
    assert "Poll failed" not in log, log[-4000:]
    statuses = {
        row.split("|")[1].strip(): row.split("|")[3].strip()
        for row in log.splitlines()
        if row.startswith("| ") and row.split("|")[1].strip() in cases
    }
    assert set(statuses) == set(cases), log[-4000:]
    for name, status in statuses.items():
        assert status == "READY" or any(reason in status for reason in _CANNOT_SERVE_HERE), (
            f"{name}: {status}"
        )


def _server_log_until(command: list[str], markers: tuple[str, ...], timeout_s: float = 60.0) -> str:
    """Run a server, collect its log until a marker appears, it exits, or time runs out; stop it."""
    lines: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        assert process.stdout is not None
        stream = process.stdout
        reader = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline and process.poll() is None:
                if any(marker in line for line in list(lines) for marker in markers):
                    break
                time.sleep(0.2)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            reader.join(timeout=10)
    return "".join(lines)
