"""Weights made by initializers follow Keras' definitions.

Keras' random streams depend on the backend, so values cannot match bit for bit; instead we
compare with Keras' own fans and with the distribution of Keras' own draws (jax backend).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import deconv_compiler as dc
from deconv_compiler.keras_objects import INITIALIZER, KerasObject, parse_keras_object
from deconv_compiler.weights import compute_fans, initial_value

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.keras

SHAPE = (4, 4, 64, 48)  # a Conv2DTranspose kernel: (kh, kw, filters, in_channels)


def _ours(identifier: Any, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    problems: list[str] = []
    obj = parse_keras_object(identifier, INITIALIZER, ("init",), lambda path, msg: problems.append(msg))
    assert obj is not None, problems
    return initial_value(obj, shape, np.random.default_rng(0))


def _keras(identifier: Any, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    keras.utils.set_random_seed(1)  # deterministic draws: the comparison is statistical, not flaky
    init = keras.initializers.get(identifier)
    return np.asarray(init(shape, dtype="float32"), dtype=np.float64)


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 3, 4, 5), (2, 2, 2, 6, 3), (7,), (4, 9)])
def test_fans_are_keras_fans(shape: tuple[int, ...]) -> None:
    from keras.src.initializers.random_initializers import compute_fans as keras_fans

    assert compute_fans(shape) == keras_fans(shape)


IDENTIFIERS = [
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "random_normal",
    "random_uniform",
    "truncated_normal",
    "zeros",
    "ones",
    {
        "class_name": "VarianceScaling",
        "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
    },
    {
        "class_name": "VarianceScaling",
        "config": {"scale": 0.5, "mode": "fan_avg", "distribution": "uniform"},
    },
    {"class_name": "RandomNormal", "config": {"mean": 1.0, "stddev": 0.2}},
    {"class_name": "RandomUniform", "config": {"minval": -3.0, "maxval": 1.0}},
    {"class_name": "TruncatedNormal", "config": {"mean": -1.0, "stddev": 0.5}},
    {"class_name": "Constant", "config": {"value": 0.25}},
]


@pytest.mark.parametrize("identifier", IDENTIFIERS, ids=[str(i)[:60] for i in IDENTIFIERS])
def test_distribution_matches_keras_draws(identifier: Any) -> None:
    ours, theirs = _ours(identifier), _keras(identifier)
    assert ours.shape == theirs.shape
    spread = max(float(theirs.std()), 1e-12)
    assert abs(ours.mean() - theirs.mean()) <= 0.05 * spread + 1e-12
    assert ours.std() == pytest.approx(theirs.std(), rel=0.05, abs=1e-12)
    # same shape of distribution: uniform bounds and the 2-sigma truncation move the tails
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        assert abs(np.quantile(ours, q) - np.quantile(theirs, q)) <= 0.06 * spread + 1e-12, q


def test_glorot_uniform_limit_uses_keras_fans() -> None:
    fan_in, fan_out = 4 * 4 * 64, 4 * 4 * 48  # kernel_size * filters, kernel_size * in_channels
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    values = _ours("glorot_uniform")
    assert np.abs(values).max() <= limit
    assert np.abs(values).max() > 0.99 * limit


def test_orthogonal_gives_orthonormal_columns() -> None:
    values = _ours({"class_name": "Orthogonal", "config": {"gain": 2.0}}, (3, 3, 4, 8))
    flat = values.reshape(-1, 8)
    np.testing.assert_allclose(flat.T @ flat, 4.0 * np.eye(8), atol=1e-10)


def test_seeded_initializer_is_reproducible_and_seed_sensitive() -> None:
    a = _ours({"class_name": "HeNormal", "config": {"seed": 5}})
    b = _ours({"class_name": "HeNormal", "config": {"seed": 5}})
    c = _ours({"class_name": "HeNormal", "config": {"seed": 6}})
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bias_initializer_none_is_glorot_uniform_like_keras() -> None:
    layer = keras.layers.Conv2DTranspose(4, 3, bias_initializer=None)
    layer.build((1, 5, 5, 2))
    assert np.any(np.asarray(layer.bias) != 0)  # Keras: not zeros
    spec = dc.load_spec({"filters": 4, "kernel_size": 3, "bias_initializer": None, "input_shape": [5, 5, 2]})
    assert spec.layers[0].bias_initializer == KerasObject(
        "GlorotUniform", {"seed": None, "input_axes": None, "output_axes": None}
    )


def test_default_initializers_are_glorot_uniform_and_zeros() -> None:
    (layer,) = dc.load_spec({"filters": 4, "kernel_size": 3, "input_shape": [5, 5, 2]}).layers
    assert layer.kernel_initializer.class_name == "GlorotUniform"
    assert layer.bias_initializer.class_name == "Zeros"
