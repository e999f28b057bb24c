"""Per-axis integer arithmetic: Keras transposed-convolution lengths and ONNX ConvTranspose pads.

Pure functions of ints (no onnx, no numpy). This module is the one place where Keras' output
length turns into ONNX attributes. We always emit explicit `pads` and `output_padding`, never
`auto_pad` or `output_shape`: the meaning of those two has changed across ONNX revisions and
runtimes (onnx#1609, onnxruntime#9370 and #11927), and onnxruntime's `SAME_UPPER` is wrong
whenever the effective kernel is smaller than the stride.
"""

from __future__ import annotations

from dataclasses import dataclass


def effective_kernel(kernel: int, dilation: int) -> int:
    """Extent of a dilated kernel: `(k - 1) * d + 1`."""
    return (kernel - 1) * dilation + 1


def output_length(
    length: int, kernel: int, stride: int, dilation: int, padding: str, output_padding: int | None
) -> int:
    """Keras' output length along one axis (keras `compute_conv_transpose_output_shape`).

    `output_padding=None` is not `output_padding=0`: None lets Keras infer the length.
    The result may be <= 0 (e.g. `same`, output_padding 0, even kernel, length 1); callers reject it.
    """
    ke = effective_kernel(kernel, dilation)
    if padding == "valid":
        if output_padding is None:
            return (length - 1) * stride + max(ke, stride)
        return (length - 1) * stride + ke + output_padding
    if output_padding is None:
        return length * stride
    return (length - 1) * stride + ke % 2 + output_padding


def total_crop(kernel: int, stride: int, dilation: int, padding: str, output_padding: int | None) -> int:
    """`(i - 1) * s + ke - L`: how much the full scatter result is cropped (negative: extended).

    It does not depend on the input length `i`, so dynamic spatial sizes need no shape subgraph.
    """
    ke = effective_kernel(kernel, dilation)
    if padding == "valid":
        return min(ke - stride, 0) if output_padding is None else -output_padding
    return ke - stride if output_padding is None else 2 * (ke // 2) - output_padding


@dataclass(frozen=True)
class AxisPads:
    """ONNX ConvTranspose attributes for one spatial axis."""

    begin: int
    end: int
    output_padding: int


def onnx_axis_pads(
    kernel: int, stride: int, dilation: int, padding: str, output_padding: int | None
) -> AxisPads:
    """Explicit ONNX pads reproducing Keras' crop along one axis.

    Keras (via jax/TF) crops an odd total one more at the END; onnxruntime refuses negative pads,
    so an extension becomes `output_padding`, which is always < stride here.
    """
    total = total_crop(kernel, stride, dilation, padding, output_padding)
    if total >= 0:
        return AxisPads(begin=total // 2, end=total - total // 2, output_padding=0)
    return AxisPads(begin=0, end=0, output_padding=-total)
