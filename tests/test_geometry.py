"""`deconv_compiler.geometry`: the per-axis arithmetic, against definitions written independently.

- Keras' side: `deconv_compiler.reference` (`keras_output_length`, `keras_crop_start`,
  `full_length`), itself proven against real Keras's shapes in test_reference.py.
- ONNX's side: the ConvTranspose definition, simulated here on one axis in plain numpy: scatter
  every input sample into a buffer `(i - 1) * s + ke + output_padding` long, then drop `pads`
  from both ends. The result must be Keras' window of the full scatter, sample for sample.
"""

from __future__ import annotations

import numpy as np
import pytest

from deconv_compiler import geometry, reference

# (k, s, d, padding, output_padding); Keras refuses stride > 1 together with dilation > 1
AXES = [
    (k, s, d, padding, op)
    for k in range(1, 7)
    for s, d in ((1, 1), (1, 2), (1, 3), (2, 1), (3, 1), (4, 1))
    for padding in ("valid", "same")
    for op in (None, *range(s))
]
AXIS_IDS = [f"k{k}-s{s}-d{d}-{p}-op{op}" for k, s, d, p, op in AXES]
LENGTHS = (1, 2, 3, 5)


def onnx_conv_transpose_1d(
    x: np.ndarray, w: np.ndarray, s: int, d: int, begin: int, end: int, output_padding: int
) -> np.ndarray:
    """ONNX ConvTranspose on one axis, one channel, from the operator's definition."""
    ke = (len(w) - 1) * d + 1
    full = np.zeros((len(x) - 1) * s + ke + output_padding)
    for n, value in enumerate(x):
        for t, tap in enumerate(w):
            full[n * s + t * d] += value * tap
    return full[begin : len(full) - end]


@pytest.mark.parametrize(("k", "s", "d", "padding", "op"), AXES, ids=AXIS_IDS)
def test_output_length_is_keras_length(k: int, s: int, d: int, padding: str, op: int | None) -> None:
    for i in LENGTHS:
        assert geometry.output_length(i, k, s, d, padding, op) == reference.keras_output_length(
            i, k, s, d, padding, op
        ), f"input length {i}"


@pytest.mark.parametrize(("k", "s", "d", "padding", "op"), AXES, ids=AXIS_IDS)
def test_total_crop_is_full_scatter_minus_keras_length_for_every_input_length(
    k: int, s: int, d: int, padding: str, op: int | None
) -> None:
    total = geometry.total_crop(k, s, d, padding, op)
    for i in LENGTHS:
        expected = reference.full_length(i, k, s, d) - reference.keras_output_length(i, k, s, d, padding, op)
        assert total == expected, f"input length {i}"


@pytest.mark.parametrize(("k", "s", "d", "padding", "op"), AXES, ids=AXIS_IDS)
def test_onnx_axis_pads_are_legal_for_onnxruntime(
    k: int, s: int, d: int, padding: str, op: int | None
) -> None:
    """onnxruntime refuses negative pads and `output_padding >= stride`; an extension is never
    combined with a crop."""
    pads = geometry.onnx_axis_pads(k, s, d, padding, op)
    assert pads.begin >= 0 and pads.end >= 0 and 0 <= pads.output_padding < s
    assert pads.output_padding == 0 or pads.begin == pads.end == 0
    assert pads.end - pads.begin in (0, 1), "an odd crop goes to the end, as Keras crops"


@pytest.mark.parametrize(("k", "s", "d", "padding", "op"), AXES, ids=AXIS_IDS)
def test_onnx_pads_reproduce_the_keras_window_sample_for_sample(
    k: int, s: int, d: int, padding: str, op: int | None
) -> None:
    pads = geometry.onnx_axis_pads(k, s, d, padding, op)
    rng = np.random.default_rng(k * 1000 + s * 100 + d * 10 + (op or 0))
    w = rng.standard_normal(k)
    for i in LENGTHS:
        length = reference.keras_output_length(i, k, s, d, padding, op)
        if length <= 0:  # Keras' empty output (same, op 0, even ke, i 1): refused by the validator
            continue
        x = rng.standard_normal(i)
        onnx_y = onnx_conv_transpose_1d(x, w, s, d, pads.begin, pads.end, pads.output_padding)
        keras_y = reference.conv_transpose(
            x.reshape(1, i, 1), w.reshape(k, 1, 1), None, strides=(s,), padding=padding,
            output_padding=None if op is None else (op,), dilation_rate=(d,), data_format="channels_last",
        )[0, :, 0]  # fmt: skip
        assert len(onnx_y) == length == geometry.output_length(i, k, s, d, padding, op)
        np.testing.assert_allclose(onnx_y, keras_y, rtol=1e-12, atol=1e-12, err_msg=f"input length {i}")
        if pads.output_padding == 0:
            assert pads.begin == reference.keras_crop_start(k, s, d, padding, op)


@pytest.mark.parametrize(("k", "d"), [(1, 1), (3, 1), (3, 2), (4, 3), (5, 4)], ids=lambda v: str(v))
def test_effective_kernel(k: int, d: int) -> None:
    assert geometry.effective_kernel(k, d) == reference.dilated_kernel_extent(k, d)


# (k, s, padding, output_padding) → ONNX (pads begin/end, output_padding) on one axis, dilation 1:
# worked out by hand from facts.md §2. test_structure.py checks the emitted ConvTranspose on the same table.
PADS_TABLE = [
    pytest.param(2, 4, "valid", None, [0, 0], [2], id="valid-k2-s4-k-smaller-than-s-extends"),
    pytest.param(3, 2, "valid", 1, [0, 0], [1], id="valid-k3-s2-op1-extends"),
    pytest.param(4, 2, "same", None, [1, 1], [0], id="same-k4-s2"),
    pytest.param(3, 2, "same", 1, [0, 1], [0], id="same-k3-s2-op1-odd-crop-at-end"),
    pytest.param(5, 3, "same", 0, [2, 2], [0], id="same-k5-s3-op0"),
    pytest.param(2, 3, "same", 2, [0, 0], [0], id="same-k2-s3-op2"),
    pytest.param(1, 3, "same", None, [0, 0], [2], id="same-k1-s3-extends"),
]


@pytest.mark.parametrize(("k", "s", "padding", "op", "pads", "output_padding"), PADS_TABLE)
def test_pads_table(
    k: int, s: int, padding: str, op: int | None, pads: list[int], output_padding: list[int]
) -> None:
    got = geometry.onnx_axis_pads(k, s, 1, padding, op)
    assert ([got.begin, got.end], [got.output_padding]) == (pads, output_padding)


@pytest.mark.parametrize(
    ("i", "k", "s", "d", "padding", "op", "length"),
    [
        pytest.param(3, 1, 3, 1, "valid", None, 9, id="valid-k-smaller-than-s-none"),
        pytest.param(3, 1, 3, 1, "valid", 0, 7, id="valid-op0-is-not-none"),
        pytest.param(3, 2, 2, 1, "same", None, 6, id="same-none-is-i-times-s"),
        pytest.param(3, 2, 2, 1, "same", 0, 4, id="same-op0-even-kernel"),
        pytest.param(1, 4, 2, 1, "same", 0, 0, id="same-op0-even-kernel-empty"),
        pytest.param(4, 3, 1, 2, "valid", None, 8, id="valid-dilated"),
    ],
)
def test_output_length_special_cases(
    i: int, k: int, s: int, d: int, padding: str, op: int | None, length: int
) -> None:
    """`op=None` is not `op=0`; the length can be 0 (callers reject it)."""
    assert geometry.output_length(i, k, s, d, padding, op) == length
