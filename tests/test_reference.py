"""Prove the numpy oracle in `reference.py` against real Keras 3 (jax backend) and Keras' own table.

Two kinds of tests live here:

* keras-free ones (the literal table in `keras_table.py`, output lengths, the crop rule, sparsemax
  algebra) that always run;
* `@pytest.mark.keras` ones that build real Keras layers / activations and compare; they are
  skipped cleanly when Keras (or its jax backend) is not installed.

Keras is imported lazily through the `keras` fixture, after setting `KERAS_BACKEND=jax` and
`XLA_FLAGS=--xla_disable_hlo_passes=algsimp` (jax 0.10.2's CPU compiler aborts the process on some
conv-transpose layers without it; the `2d-cl-k2x3-s2x1-same-op0x0` case below is one of them).
"""

from __future__ import annotations

import itertools
import os
import zlib
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import pytest
from numpy.typing import NDArray

from deconv_compiler import reference
from tests import keras_table

_XLA_WORKAROUND = "--xla_disable_hlo_passes=algsimp"

RTOL = 1e-5
"""Relative tolerance of every float32-Keras vs float64-reference comparison."""


@pytest.fixture(scope="module")
def keras() -> ModuleType:
    """The real Keras module on the jax backend, or a clean skip when it cannot be imported.

    The environment is set here, before the first import of keras/jax (tests/conftest.py does
    the same for the whole session; this keeps the module correct on its own)."""
    os.environ["KERAS_BACKEND"] = "jax"
    if _XLA_WORKAROUND not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_XLA_WORKAROUND}".strip()
    pytest.importorskip("jax")
    module = pytest.importorskip("keras")
    if module.backend.backend() != "jax":
        pytest.skip(f"Keras was already imported with the {module.backend.backend()} backend")
    assert isinstance(module, ModuleType)
    return module


def _to_numpy(keras: ModuleType, tensor: object) -> NDArray[np.float64]:
    return np.asarray(keras.ops.convert_to_numpy(tensor), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Keras' own table (keras-free)
# --------------------------------------------------------------------------------------------


def _consistency_id(case: keras_table.ConsistencyCase) -> str:
    return f"k{case.kernel_size}-s{case.strides}-{case.padding}-op{case.output_padding}"


def _consistency_reference(case: keras_table.ConsistencyCase) -> NDArray[np.float64]:
    """The reference on the consistency test's input/kernel, flattened to the table's form."""
    k = case.kernel_size
    op = None if case.output_padding is None else (case.output_padding,)
    y = reference.conv_transpose(
        np.ones(keras_table.CONSISTENCY_INPUT_SHAPE),
        np.array(keras_table.consistency_kernel(k)).reshape(k, 1, 1),
        np.zeros(1),
        strides=(case.strides,),
        padding=case.padding,
        output_padding=op,
        dilation_rate=(1,),
        data_format="channels_last",
    )
    return y.reshape(-1)


def test_consistency_table_has_keras_grid() -> None:
    """The table holds exactly Keras' product grid minus the `output_padding >= strides` cases."""
    grid = [
        (k, s, p, op)
        for k, s, p, op in itertools.product(range(1, 5), range(1, 5), ("same", "valid"), (None, 1, 2, 3, 4))
        if op is None or op < s
    ]
    assert len(grid) == 80
    assert [c[:4] for c in keras_table.CONSISTENCY_1D] == grid


@pytest.mark.parametrize("case", keras_table.CONSISTENCY_1D, ids=_consistency_id)
def test_reference_reproduces_consistency_table(case: keras_table.ConsistencyCase) -> None:
    """All 80 literal Keras outputs, exactly (they are small integers)."""
    np.testing.assert_array_equal(_consistency_reference(case), np.array(case.expected))


def _shape_id(case: keras_table.ShapeCase) -> str:
    return f"{case.layer}-{case.input_shape}->{case.output_shape}".replace(" ", "")


def _per_axis(value: int | tuple[int, ...], rank: int) -> tuple[int, ...]:
    return (value,) * rank if isinstance(value, int) else tuple(value)


@pytest.mark.parametrize("case", keras_table.BASIC_SHAPES, ids=_shape_id)
def test_basic_shapes(case: keras_table.ShapeCase) -> None:
    """`keras_output_length` and the reference's actual output give Keras' basic-test shapes."""
    r = case.rank
    ks, ss, ds = (_per_axis(v, r) for v in (case.kernel_size, case.strides, case.dilation_rate))
    op_arg = None if case.output_padding is None else _per_axis(case.output_padding, r)
    ops: tuple[int | None, ...] = (None,) * r if op_arg is None else op_arg
    channels_last = case.data_format == "channels_last"
    spatial_in = case.input_shape[1:-1] if channels_last else case.input_shape[2:]
    in_channels = case.input_shape[-1] if channels_last else case.input_shape[1]
    lengths = tuple(
        reference.keras_output_length(i, k, s, d, case.padding, op)
        for i, k, s, d, op in zip(spatial_in, ks, ss, ds, ops, strict=True)
    )
    n = case.input_shape[0]
    expected = (n, *lengths, case.filters) if channels_last else (n, case.filters, *lengths)
    assert expected == case.output_shape

    y = reference.conv_transpose(
        np.zeros(case.input_shape),
        np.zeros((*ks, case.filters, in_channels)),
        np.zeros(case.filters),
        strides=ss,
        padding=case.padding,
        output_padding=op_arg,
        dilation_rate=ds,
        data_format=case.data_format,
    )
    assert y.shape == case.output_shape


# --------------------------------------------------------------------------------------------
# Geometry rules (keras-free)
# --------------------------------------------------------------------------------------------

_GEOMETRY_GRID = [
    (k, s, d, p, op)
    for k, s, d, p in itertools.product(range(1, 8), range(1, 6), range(1, 4), ("valid", "same"))
    if s == 1 or d == 1  # Keras rejects stride > 1 with dilation > 1
    for op in (None, *range(s))
]


def test_crop_start_is_half_the_excess_floor_first() -> None:
    """Keras' jax padding amounts to: crop `floor(excess / 2)` at the start, where
    `excess = full_length - L` (independent of the input length); a negative excess crops
    nothing and zero-pads the end. This is the explicit-pads rule, derived independently."""
    for k, s, d, p, op in _GEOMETRY_GRID:
        for i in (1, 2, 5):
            length = reference.keras_output_length(i, k, s, d, p, op)
            excess = reference.full_length(i, k, s, d) - length
            assert reference.keras_crop_start(k, s, d, p, op) == max(0, excess // 2), (
                k,
                s,
                d,
                p,
                op,
            )


def test_output_length_special_cases() -> None:
    """`op=None` is not `op=0`; `same` + `op=0` + even ke is `(i-1)*s`, zero at `i=1`."""
    assert reference.keras_output_length(3, 1, 3, 1, "valid", None) == 9  # k < s: (i-1)s + s
    assert reference.keras_output_length(3, 1, 3, 1, "valid", 0) == 7
    assert reference.keras_output_length(3, 2, 2, 1, "same", None) == 6
    assert reference.keras_output_length(3, 2, 2, 1, "same", 0) == 4
    assert reference.keras_output_length(1, 4, 2, 1, "same", 0) == 0
    y = reference.conv_transpose(
        np.ones((1, 1, 2)),
        np.ones((4, 3, 2)),
        np.ones(3),
        strides=(2,),
        padding="same",
        output_padding=(0,),
        dilation_rate=(1,),
        data_format="channels_last",
    )
    assert y.shape == (1, 0, 3)


def test_reference_zero_pads_then_adds_bias_past_the_buffer() -> None:
    """`valid` with k < s: the output is longer than the scatter buffer; the tail is bias only."""
    y = reference.conv_transpose(
        np.array([[[1.0], [2.0]]]),  # (N=1, i=2, C=1)
        np.array([[[10.0]]]),  # k=1, filters=1, C=1
        np.array([0.5]),
        strides=(3,),
        padding="valid",
        output_padding=None,
        dilation_rate=(1,),
        data_format="channels_last",
    )
    np.testing.assert_array_equal(y.reshape(-1), [10.5, 0.5, 0.5, 20.5, 0.5, 0.5])


# --------------------------------------------------------------------------------------------
# Sparsemax (keras-free): Keras 3.15.1 has keras-team/keras#23425
# --------------------------------------------------------------------------------------------


def test_sparsemax_variants() -> None:
    """The exact projection sums to 1; Keras 3.15.1's formula does not once the support has
    more than one element, and the two agree when it has exactly one."""
    x = np.array([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0], [3.0, 1.0, 0.2], [0.1, 0.2, 0.3]])
    exact = reference.sparsemax_exact(x)
    np.testing.assert_allclose(exact[:3], [[0.75, 0.25, 0], [0, 0.25, 0.75], [1, 0, 0]])
    np.testing.assert_allclose(exact.sum(axis=-1), 1.0)
    buggy = reference.sparsemax_keras_3_15(x)
    np.testing.assert_allclose(buggy[:3], [[0.25, 0, 0], [0, 0, 0.25], [1, 0, 0]])
    rng = np.random.default_rng(7)
    one_hot_support = rng.normal(size=(50, 6)) + 5.0 * np.eye(6)[rng.integers(0, 6, 50)]
    np.testing.assert_allclose(
        reference.sparsemax_keras_3_15(one_hot_support), reference.sparsemax_exact(one_hot_support)
    )
    np.testing.assert_array_equal(
        reference.activation("sparsemax", x, "channels_last", exact_sparsemax=True), exact
    )


# --------------------------------------------------------------------------------------------
# Reference vs real Keras layers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerCase:
    """One Keras conv-transpose layer to build; per-axis tuples, Keras layout sizes."""

    spatial: tuple[int, ...]
    in_channels: int
    filters: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: str
    output_padding: tuple[int, ...] | None
    dilation_rate: tuple[int, ...]
    data_format: str = "channels_last"
    activation: str | None = None
    use_bias: bool = True

    @property
    def rank(self) -> int:
        return len(self.spatial)

    @property
    def id(self) -> str:
        def axes(v: tuple[int, ...] | None) -> str:
            return "None" if v is None else "x".join(map(str, v))

        fmt = "cl" if self.data_format == "channels_last" else "cf"
        parts = [
            f"{self.rank}d-{fmt}-k{axes(self.kernel_size)}-s{axes(self.strides)}",
            f"{self.padding}-op{axes(self.output_padding)}",
        ]
        if any(d > 1 for d in self.dilation_rate):
            parts.append(f"d{axes(self.dilation_rate)}")
        if self.activation:
            parts.append(self.activation)
        if not self.use_bias:
            parts.append("nobias")
        return "-".join(parts)


def _case(
    spatial: tuple[int, ...],
    k: tuple[int, ...],
    s: tuple[int, ...],
    padding: str,
    op: tuple[int, ...] | None = None,
    d: tuple[int, ...] | None = None,
    *,
    cf: bool = False,
    in_channels: int = 3,
    filters: int = 4,
    activation: str | None = None,
    use_bias: bool = True,
) -> LayerCase:
    """Compact `LayerCase` constructor for the table below (`cf`: channels_first)."""
    return LayerCase(
        spatial=spatial,
        in_channels=in_channels,
        filters=filters,
        kernel_size=k,
        strides=s,
        padding=padding,
        output_padding=op,
        dilation_rate=d or (1,) * len(spatial),
        data_format="channels_first" if cf else "channels_last",
        activation=activation,
        use_bias=use_bias,
    )


LAYER_CASES: tuple[LayerCase, ...] = (
    # 1D
    _case((5,), (3,), (2,), "valid"),
    _case((5,), (3,), (2,), "same", cf=True),
    _case((4,), (1,), (3,), "valid"),  # k < s: output longer than the scatter buffer
    _case((4,), (2,), (4,), "same"),  # k < s, same
    _case((4,), (2,), (3,), "valid", (1,)),
    _case((4,), (4,), (3,), "same", (2,), cf=True),
    _case((4,), (3,), (3,), "same", (0,)),
    _case((4,), (4,), (2,), "same", (0,)),  # even ke + op 0: (i-1)*s
    _case((1,), (2,), (2,), "same", (0,)),  # ... which is an empty output for i = 1
    _case((6,), (3,), (1,), "same", d=(2,)),
    _case((6,), (2,), (1,), "valid", d=(3,), cf=True),
    _case((5,), (5,), (2,), "same", (1,), activation="tanh", use_bias=False),
    # 2D
    _case((8, 8), (3, 3), (2, 2), "same", in_channels=16, filters=8, activation="relu"),
    _case((5, 4), (2, 3), (2, 1), "valid", cf=True),
    _case((6, 2), (2, 3), (2, 1), "same", (0, 0), in_channels=3, filters=1),  # XLA crash config
    _case((3, 4), (3, 2), (2, 3), "same", (1, 2), activation="leaky_relu"),
    _case((3, 3), (1, 1), (2, 3), "valid", activation="sigmoid", cf=True),
    _case((5, 5), (3, 3), (1, 1), "same", d=(2, 1)),
    _case((4, 4), (2, 2), (3, 3), "same", (2, 2)),
    _case((3, 4), (4, 3), (3, 2), "valid", (2, 1), activation="hard_sigmoid", cf=True),
    _case((4, 3), (5, 5), (2, 2), "same", activation="softmax"),
    _case((3, 4), (2, 2), (2, 2), "same", (0, 0), activation="log_softmax", cf=True),
    _case((4, 4), (3, 3), (2, 2), "same", filters=6, activation="glu"),
    _case((4, 5), (2, 2), (2, 2), "valid", activation="glu", cf=True),  # glu halves last spatial
    _case((3, 3), (3, 3), (2, 2), "same", activation="sparsemax"),
    _case((4, 4), (3, 3), (2, 2), "valid", activation="gelu", use_bias=False),
    # 3D
    _case((3, 3, 3), (2, 2, 2), (2, 2, 2), "valid"),
    _case((3, 4, 3), (2, 2, 3), (2, 1, 2), "valid", cf=True),
    _case((3, 3, 2), (3, 3, 3), (2, 2, 2), "same", (1, 1, 1), activation="elu", cf=True),
    _case((2, 3, 4), (1, 2, 3), (3, 2, 1), "same", activation="selu"),
    _case((4, 4, 4), (3, 2, 2), (1, 1, 1), "same", d=(1, 2, 3), cf=True),
    _case((2, 2, 3), (2, 2, 2), (3, 3, 3), "valid", (2, 1, 0), activation="swish"),
)


def _keras_layer_output(
    keras: ModuleType,
    case: LayerCase,
    x: NDArray[np.float32],
    weights: list[NDArray[np.float32]],
) -> NDArray[np.float64]:
    """Build the real Keras layer for `case`, load `weights`, and run it on `x`."""
    layer_class = getattr(keras.layers, f"Conv{case.rank}DTranspose")
    layer = layer_class(
        filters=case.filters,
        kernel_size=case.kernel_size,
        strides=case.strides,
        padding=case.padding,
        output_padding=case.output_padding,
        data_format=case.data_format,
        dilation_rate=case.dilation_rate,
        activation=case.activation,
        use_bias=case.use_bias,
        kernel_initializer="zeros",  # overwritten below; random initializers cost a jax
        # compilation per kernel shape (seconds per layer)
    )
    layer.build(x.shape)
    layer.set_weights(weights)
    return _to_numpy(keras, layer(x))


@pytest.mark.keras
@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c.id)
def test_reference_matches_keras_layer(keras: ModuleType, case: LayerCase) -> None:
    """Random float32 input and weights through Keras and through the float64 reference."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    n = 2
    x_shape = (
        (n, *case.spatial, case.in_channels)
        if case.data_format == "channels_last"
        else (n, case.in_channels, *case.spatial)
    )
    x = rng.normal(size=x_shape).astype(np.float32)
    kernel = rng.normal(size=(*case.kernel_size, case.filters, case.in_channels)).astype(np.float32)
    bias = rng.normal(size=(case.filters,)).astype(np.float32) if case.use_bias else None

    actual = _keras_layer_output(keras, case, x, [kernel] if bias is None else [kernel, bias])
    expected = reference.layer(
        x,
        kernel,
        bias,
        activation_name=case.activation,
        strides=case.strides,
        padding=case.padding,
        output_padding=case.output_padding,
        dilation_rate=case.dilation_rate,
        data_format=case.data_format,
    )
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * np.max(np.abs(expected), initial=0.0))


@pytest.mark.keras
@pytest.mark.parametrize("case", keras_table.CONSISTENCY_1D, ids=_consistency_id)
def test_keras_still_reproduces_consistency_table(
    keras: ModuleType, case: keras_table.ConsistencyCase
) -> None:
    """Guards the literal table against transcription errors and future Keras changes."""
    k = case.kernel_size
    layer = keras.layers.Conv1DTranspose(
        filters=1,
        kernel_size=k,
        strides=case.strides,
        padding=case.padding,
        output_padding=case.output_padding,
        dilation_rate=1,
        kernel_initializer="zeros",  # assigned below; also avoids a jax compile per shape
    )
    layer.build(keras_table.CONSISTENCY_INPUT_SHAPE)
    layer.kernel.assign(np.array(keras_table.consistency_kernel(k)).reshape(k, 1, 1))
    y = _to_numpy(keras, layer(np.ones(keras_table.CONSISTENCY_INPUT_SHAPE, dtype=np.float32)))
    np.testing.assert_array_equal(y.reshape(-1), np.array(case.expected))


# --------------------------------------------------------------------------------------------
# Reference vs real Keras activations
# --------------------------------------------------------------------------------------------

_THRESHOLDS = (0.0, 0.5, 1.0, 3.0, 6.0)


def _moderate_values() -> NDArray[np.float32]:
    """(8, 3, 6) float32: each threshold (±0, ±0.5, ±1, ±3, ±6) exactly and 1e-3 either side,
    plus random normals scaled by 3. The last axis (6) is even, for glu."""
    special = [t * sign + eps for t in _THRESHOLDS for sign in (1, -1) for eps in (-1e-3, 0, 1e-3)]
    rng = np.random.default_rng(0)
    values = np.concatenate([special, 3.0 * rng.normal(size=144 - len(special))])
    return values.reshape(8, 3, 6).astype(np.float32)


def _large_values() -> NDArray[np.float32]:
    """(4, 2, 6) float32 with |x| up to 80 (still finite for float32 `exp`)."""
    rng = np.random.default_rng(1)
    magnitudes = np.array([10.0, 20.0, 40.0, 80.0])
    special = np.concatenate([magnitudes, -magnitudes])
    values = np.concatenate([special, rng.uniform(-80.0, 80.0, size=48 - len(special))])
    return rng.permutation(values).reshape(4, 2, 6).astype(np.float32)


_ACTIVATION_INPUTS = {"moderate": _moderate_values, "large": _large_values}


@pytest.mark.keras
@pytest.mark.parametrize("values", sorted(_ACTIVATION_INPUTS))
@pytest.mark.parametrize("name", reference.ACTIVATION_NAMES)
def test_activation_matches_keras(keras: ModuleType, name: str, values: str) -> None:
    """`keras.activations.get(name)` on float32 vs the float64 reference.

    The absolute tolerance scales with the largest |input|, because float32 cancellation
    (squareplus, tanh_shrink, softmax's shift) loses digits relative to the inputs, not the
    outputs; the threshold probes sit 1e-3 from each kink, well above it.
    """
    x = _ACTIVATION_INPUTS[values]()
    actual = _to_numpy(keras, keras.activations.get(name)(x))
    expected = reference.activation(name, x, "channels_last")
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.max(np.abs(x))))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * scale)


@pytest.mark.keras
def test_activation_names_are_keras_names(keras: ModuleType) -> None:
    """The 31 names are all Keras 3 string activations except `threshold`, which has required
    arguments and so cannot be used as a string."""
    from keras.src.activations import ALL_OBJECTS_DICT

    assert len(reference.ACTIVATION_NAMES) == 31
    assert set(reference.ACTIVATION_NAMES) == set(ALL_OBJECTS_DICT) - {"threshold"}
    with pytest.raises(TypeError):
        keras.activations.get("threshold")(np.zeros(2, dtype=np.float32))
    with pytest.raises(ValueError):
        reference.activation("threshold", np.zeros(2), "channels_last")


@pytest.mark.keras
def test_keras_sparsemax_is_the_3_15_formula(keras: ModuleType) -> None:
    """Pinned Keras 3.15.1 computes `sparsemax_keras_3_15`, not the simplex projection."""
    x = np.array([[1.0, 0.5, 0.0], [0.1, 0.2, 0.3]], dtype=np.float32)
    actual = _to_numpy(keras, keras.activations.sparsemax(x))
    np.testing.assert_allclose(actual, reference.sparsemax_keras_3_15(x), atol=1e-6)
    assert not np.allclose(actual, reference.sparsemax_exact(x), atol=1e-3)
