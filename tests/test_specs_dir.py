"""Every example in specs/ compiles, runs on onnxruntime, matches the reference, and fits the schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml

import deconv_compiler as dc
from tests.onnx_run import assert_close, compile_spec, run_cpu, spec_reference

ROOT = Path(__file__).resolve().parent.parent
SPEC_FILES = sorted(p for p in (ROOT / "specs").iterdir() if p.suffix in (".yaml", ".yml", ".json"))
SCHEMA_FILE = ROOT / "specs" / "schema" / "spec.schema.json"


def test_there_are_examples() -> None:
    assert len(SPEC_FILES) >= 5


@pytest.mark.parametrize("path", SPEC_FILES, ids=[p.name for p in SPEC_FILES])
def test_example_compiles_runs_and_matches_reference(path: Path) -> None:
    spec = dc.load_spec(path)
    model = compile_spec(spec)
    rng = np.random.default_rng(0)
    shape = tuple(3 if d is None else d for d in spec.input_shape)
    x = rng.standard_normal(shape).astype(np.float32)
    expected = spec_reference(spec, x)  # the numpy reference, with the model's own weights
    assert_close(run_cpu(model, x), expected, context=path.name)


def test_schema_file_is_up_to_date() -> None:
    """Regenerate with: deconvc schema > specs/schema/spec.schema.json"""
    assert json.loads(SCHEMA_FILE.read_text()) == json.loads(json.dumps(dc.spec_json_schema()))


@pytest.mark.parametrize("path", SPEC_FILES, ids=[p.name for p in SPEC_FILES])
def test_examples_satisfy_the_schema(path: Path) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_schema_rejects_what_an_editor_should_flag() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    assert not validator.is_valid(
        {"filters": 2, "kernel_size": 3, "strides": 2, "paddin": "same", "input_shape": [4, 4, 2]}
    )
    assert not validator.is_valid(
        {"filters": 2, "kernel_size": 3, "activation": "Relu", "input_shape": [4, 4, 2]}
    )
    assert validator.is_valid({"filters": 2, "kernel_size": 3, "padding": "SAME", "input_shape": [4, 4, 2]})
