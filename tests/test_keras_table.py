"""Keras' own test table, run through the compiler and onnxruntime.

The expected values are literal Keras 3.15.1 outputs (tests/keras_table.py): the 80 cases of
Keras' 1-D consistency test and the output shapes of its basic tests.
"""

from __future__ import annotations

import numpy as np
import pytest

import deconv_compiler as dc
from tests.keras_table import BASIC_SHAPES, CONSISTENCY_1D, ConsistencyCase, ShapeCase
from tests.onnx_run import compile_spec, run_cpu


def test_table_has_the_80_cases_of_keras_consistency_test() -> None:
    assert len(CONSISTENCY_1D) == 80
    assert len({c[:4] for c in CONSISTENCY_1D}) == 80


@pytest.mark.parametrize(
    "case",
    CONSISTENCY_1D,
    ids=[f"k{c.kernel_size}-s{c.strides}-{c.padding}-op{c.output_padding}" for c in CONSISTENCY_1D],
)
def test_consistency_1d(case: ConsistencyCase) -> None:
    kernel_size, strides, padding, output_padding, expected = case
    kernel = np.arange(1, kernel_size + 1, dtype=np.float64).reshape(kernel_size, 1, 1)
    spec = {
        "type": "Conv1DTranspose",
        "filters": 1,
        "kernel_size": kernel_size,
        "strides": strides,
        "padding": padding,
        "output_padding": output_padding,
        "dilation_rate": 1,
        "input_shape": [3, 1],
        "batch_size": 1,
        "weights": [kernel, np.zeros(1)],
    }
    y = run_cpu(compile_spec(dc.load_spec(spec)), np.ones((1, 3, 1), np.float32))
    np.testing.assert_array_equal(y.reshape(-1), np.asarray(expected, np.float32))


@pytest.mark.parametrize("case", BASIC_SHAPES, ids=[f"{c.layer}-{c.input_shape}" for c in BASIC_SHAPES])
def test_basic_output_shapes(case: ShapeCase) -> None:
    def listed(value: int | tuple[int, ...]) -> int | list[int]:
        return list(value) if isinstance(value, tuple) else value

    spec = {
        "type": case.layer,
        "filters": case.filters,
        "kernel_size": listed(case.kernel_size),
        "strides": listed(case.strides),
        "padding": case.padding,
        "output_padding": case.output_padding,
        "data_format": case.data_format,
        "dilation_rate": listed(case.dilation_rate),
        "batch_input_shape": list(case.input_shape),
    }
    model_spec = dc.load_spec(spec)
    assert model_spec.output_shape == tuple(case.output_shape)
    y = run_cpu(compile_spec(model_spec), np.zeros(case.input_shape, np.float32))
    assert y.shape == tuple(case.output_shape)
