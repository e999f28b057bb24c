"""Conformance against real Keras: random Conv{1,2,3}DTranspose specs compiled to ONNX and run on
onnxruntime (CPU, float32) must match the Keras layers themselves (jax backend), with the same
weights, to 1e-5 relative to the output's scale: max|onnx - keras| <= 1e-5 * max(1, max|keras|).

Cases come from `tests/keras_oracle.py` (deterministic seeds); `test_case_coverage` checks that
the generated set still covers what it must, so a generator change cannot quietly drop a feature.
"""

from __future__ import annotations

import collections
import importlib.util
from typing import Any

import numpy as np
import pytest

import deconv_compiler as dc
from deconv_compiler.strategies import STRATEGIES
from tests import keras_oracle as oracle
from tests.onnx_run import compile_spec, run_cpu

pytestmark = pytest.mark.keras
if importlib.util.find_spec("keras") is None or importlib.util.find_spec("jax") is None:
    pytest.skip("needs keras and jax (pip install -e '.[test]')", allow_module_level=True)

N_CASES = 576  # 18 per activation slot (31 names + none): every (rank, format) pair 3 times
CASES = oracle.make_cases(N_CASES)
RTOL = 1e-5


def _describe(case: oracle.CaseConfig, spec: dict[str, Any]) -> str:
    """The case's configuration, readable and without the weight arrays."""
    shown = dict(spec)
    if "layers" in shown:
        shown["layers"] = [{k: v for k, v in la.items() if k != "weights"} for la in shown["layers"]]
    else:
        shown.pop("weights", None)
    return (
        f"{case.id} (seed {case.seed}, x {case.x_shape}, opset {case.opset or 'default'}, "
        f"weights as {'lists' if case.weights_as_lists else 'arrays'}): {shown}"
    )


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_matches_keras(case: oracle.CaseConfig) -> None:
    spec, x, expected = oracle.build_case(case)
    model_spec = dc.load_spec(spec)
    opset = {} if case.opset is None else {"opset": case.opset}
    for target in ("cpu", "cuda"):  # the CUDA target's Slice-cropped form must match Keras too
        actual = run_cpu(compile_spec(model_spec, target=target, **opset), x)  # strategy auto
        _assert_matches_keras(actual, expected, f"target {target}; {_describe(case, spec)}")
    for strategy in STRATEGIES:  # and every strategy forced, wherever it applies to every layer
        try:
            model = compile_spec(model_spec, strategy=strategy, **opset)
        except dc.CompileError as exc:
            assert "does not apply" in str(exc)
            continue
        _assert_matches_keras(run_cpu(model, x), expected, f"strategy {strategy}; {_describe(case, spec)}")


def _assert_matches_keras(actual: np.ndarray, expected: np.ndarray, context: str) -> None:
    assert actual.dtype == np.float32, f"output dtype {actual.dtype}; {context}"
    assert actual.shape == expected.shape, f"shape {actual.shape} != Keras {expected.shape}; {context}"
    assert np.all(np.isfinite(expected)), f"Keras output not finite (oracle bug); {context}"
    scale = max(1.0, float(np.max(np.abs(expected))))
    error = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(error)), error.shape))
    assert float(error[worst]) <= RTOL * scale, (
        f"max |onnx - keras| = {float(error[worst]):.3g} > {RTOL:g} x {scale:.3g} at {worst} "
        f"(onnx {float(actual[worst])!r}, keras {float(expected[worst])!r}); {context}"
    )


def test_case_ids_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids)


def test_case_coverage() -> None:
    """What the generated cases must exercise (cheap: no Keras, no onnxruntime)."""
    layers = [layer for case in CASES for layer in case.layers]
    axes = [axis for layer in layers for axis in layer.axes()]  # (k, s, d, op)

    act_count = collections.Counter(layer.activation for layer in layers)
    for name in oracle.ACTIVATIONS:
        assert act_count[name] >= 10, f"activation {name!r} only {act_count[name]} times"
    assert act_count[oracle.NO_ACTIVATION] >= 10
    for name in oracle.AXIS_ACTIVATIONS:
        fmts = collections.Counter(layer.fmt for layer in layers if layer.activation == name)
        assert min(fmts["channels_last"], fmts["channels_first"]) >= 5, (name, fmts)

    rank_fmt = collections.Counter((layer.rank, layer.fmt) for layer in layers)
    assert all(rank_fmt[(r, f)] >= 50 for r in (1, 2, 3) for f in ("channels_last", "channels_first"))

    forms = collections.Counter(case.form for case in CASES)
    assert forms["layer"] >= 200 and forms["model"] >= 150
    chain_lengths = collections.Counter(len(case.layers) for case in CASES if case.form == "model")
    assert all(chain_lengths[n] >= 20 for n in (1, 2, 3))
    assert sum(len({la.fmt for la in case.layers}) > 1 for case in CASES) >= 5  # mixed formats

    pads = collections.Counter(layer.pad for layer in layers)
    assert min(pads["valid"], pads["same"]) >= 200
    spellings = {layer.padding for layer in layers}
    assert {None, "valid", "same", "Same", "SAME", "Valid", "VALID"} <= spellings

    assert sum(op is None for *_, op in axes) >= 200
    assert sum(op == 0 for *_, op in axes) >= 100
    assert sum(op is not None and op > 0 for *_, op in axes) >= 100
    assert sum(not layer.output_padding_given for layer in layers) >= 50
    assert sum(d > 1 for _, _, d, _ in axes) >= 150
    assert sum(k < s for k, s, _, _ in axes) >= 100
    assert sum(k == s and s > 1 for k, s, _, _ in axes) >= 100
    assert sum(len(set(layer.axes())) > 1 for layer in layers) >= 100  # per-axis tuples
    assert sum(not layer.use_bias for layer in layers) >= 100
    types = {layer.type_name for layer in layers}
    assert len(types) == 9, types  # Conv{r}DTranspose, Convolution{r}DTranspose, layer_conv_{r}d_transpose

    declared = [case.declared_shape for case in CASES]
    assert sum(shape[0] is None for shape in declared) >= 100
    assert sum(any(d is None for d in shape[1:]) for shape in declared) >= 50
    assert sum(case.weights_as_lists for case in CASES) >= 20
    opsets = collections.Counter(case.opset for case in CASES)
    assert all(opsets[o] >= 50 for o in oracle.OPSETS)
