"""Lowering strategies for one transposed-convolution layer: which exact rewrites apply, their
weights (numpy only), and the `auto` rule that picks one.

Every strategy computes the same numbers as the layer (Keras' crop included); they differ in
which onnxruntime kernels run:
- `native`: one ConvTranspose (GEMM + a serial col2im; onnxruntime fuses nothing into it).
- `conv`: stride 1 as a plain Conv with the flipped, channel-swapped kernel and pads
  `ke - 1 - pad`; onnxruntime fuses the activation into Conv and uses its NCHWc kernels.
- `subpixel`: stride s > 1 split into s**2 phases (2-D, equal strides): phase (rh, rw) is a small
  Conv over the kernel taps rh + s*j, rw + s*j only (no zero taps), the phases are concatenated on
  channels and interleaved by DepthToSpace (DCR), and a Slice takes Keras' window. When k % s == 0
  every phase has the same taps and one Conv with s**2 * filters outputs computes them all.
- `gemm`: kernel == stride with nothing cropped (no overlap between the kernel's footprints): one
  MatMul over channels in the channels-last layout, then Reshape/Transpose/Reshape to interleave
  the taps. A channels_last model needs no edge Transposes for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from deconv_compiler import geometry

STRATEGIES = ("native", "conv", "subpixel", "gemm")
CHOICES = (*STRATEGIES, "auto", "tune")


@dataclass(frozen=True)
class LayerGeometry:
    """What a strategy needs to know about a layer, in ONNX terms (per spatial axis)."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    begins: tuple[int, ...]  # ConvTranspose pads
    ends: tuple[int, ...]
    output_padding: tuple[int, ...]
    spatial: tuple[int | None, ...]  # input sizes; None when dynamic
    in_channels: int
    filters: int
    batch: int | None


def why_not(strategy: str, g: LayerGeometry) -> str | None:
    """None if `strategy` applies to the layer, else the reason it does not."""
    if strategy == "native":
        return None
    if strategy == "conv":
        return None if all(s == 1 for s in g.strides) else f"conv needs stride 1, the strides are {g.strides}"
    if strategy == "subpixel":
        if len(g.strides) != 2 or g.strides[0] != g.strides[1] or g.strides[0] == 1:
            return f"subpixel needs a 2-D layer with equal strides > 1, the strides are {g.strides}"
        return None if all(d == 1 for d in g.dilations) else "subpixel needs dilation 1"
    if strategy == "gemm":
        if g.kernel != g.strides or any(d != 1 for d in g.dilations):
            return (
                f"gemm needs kernel_size == strides and no dilation (kernel {g.kernel}, strides {g.strides})"
            )
        if any(g.begins) or any(g.ends) or any(g.output_padding):
            return "gemm needs a layer that crops nothing (valid padding, no output_padding)"
        if None in g.spatial:
            return "gemm needs static spatial input sizes"
        return None
    return f"unknown strategy {strategy!r}"


def auto_strategy(g: LayerGeometry, layout: str) -> str:
    """The strategy `auto` picks for a float32 layer on the CPU provider (`layout`: the model's
    data_format). From benchmarks/README.md (time / native; 2 threads, ORT_ENABLE_ALL, 2-core
    AVX2 machine, medians of 9 paired rounds):

        case            layout  conv   subpixel  gemm
        A k4 s2 same    first   -      1.20      -
                        last    -      1.17      -
        B k2 s2 valid   first   -      2.22      1.25
                        last    -      1.65      0.73
        C k3 s2 same    first   -      1.25      -
                        last    -      1.27      -
        D k4 s2 same    first   -      0.97      -
                        last    -      0.91      -
        E k3 s1 same    first   0.40   -         -
                        last    0.40   -         -
        F k5 s2 same    first   -      2.54      -
                        last    -      2.39      -

    Inside whole networks (the Pix2Pix generator's decoder, k4 s2 same, batch 1, `tune`'s
    per-layer timings), subpixel gave 0.72-0.99 on inputs of 16x16 and more (16x16 1024->256:
    0.72, 32x32: 0.92, 64x64: 0.99, 128x128 128->3: 0.76) and 0.91-1.25 below (8x8: 0.91,
    4x4: 1.22, 2x2: 1.25); k3 s2 layers (the segmentation U-Net's, 4x4 to 64x64) lost 1.3-2.9x.

    So:
    - stride 1 → conv (onnxruntime fuses the activation into Conv and runs its NCHWc kernels);
    - kernel == stride without crop in a channels_last model → gemm (it works in the model's own
      layout, so the edge Transposes go too);
    - in a channels_last model, a kernel that is a multiple of the stride, at least twice it, on
      a known input of at least 16x16 (256 positions) → subpixel (each phase is a dense Conv with
      no zero taps, and there is enough of the image to amortise DepthToSpace; D is such a layer:
      0.90-0.98 in channels_last, a tie at 0.94-1.06 in channels_first);
    - everything else → native (onnxruntime's ConvTranspose reaches 60-90% of its SGEMM there,
      and subpixel's DepthToSpace and Slice cost more than they save)."""
    if why_not("conv", g) is None:
        return "conv"
    if layout == "channels_last" and why_not("gemm", g) is None:
        return "gemm"
    if layout == "channels_last" and _large_phase_split(g) and why_not("subpixel", g) is None:
        return "subpixel"
    return "native"


def mobile_strategy(g: LayerGeometry) -> str:
    """The strategy `auto` picks for the mobile target: the first exact rewrite that onnxruntime's
    mobile providers can take. NNAPI has no ConvTranspose at all and CoreML's NeuralNetwork format
    none either (onnxruntime's mobile usability checker; `tools/mobile_helpers/*_supported_ops.md`),
    while both take Conv, DepthToSpace (DCR), Slice, Concat, MatMul, Reshape and Transpose. So:
    stride 1 → conv; 2-D equal strides → subpixel (Conv + DepthToSpace, all rank 4); kernel ==
    stride without crop → gemm (its 2-D interleave is a rank-6 Transpose, beyond CoreML's rank 5,
    hence after subpixel); anything else (3-D, unequal strides) stays native, on the CPU provider."""
    for strategy in ("conv", "subpixel", "gemm"):
        if why_not(strategy, g) is None:
            return strategy
    return "native"


SUBPIXEL_MIN_POSITIONS = 256  # input positions (16x16) from which subpixel beat native in networks


def _large_phase_split(g: LayerGeometry) -> bool:
    """Every kernel a multiple (2x or more) of its stride (> 1), on a known input of enough
    positions. A kernel equal to its stride (case B) makes each phase a 1x1 Conv: 1.36-1.67."""
    if any(size is None for size in g.spatial):
        return False
    positions = math.prod(int(size or 0) for size in g.spatial)
    return positions >= SUBPIXEL_MIN_POSITIONS and all(
        s > 1 and k > s and k % s == 0 for k, s in zip(g.kernel, g.strides, strict=True)
    )


# --- weights and attributes per strategy (ONNX W layout in: (in, filters, *kernel)) --------------


@dataclass(frozen=True, eq=False)
class NativeForm:
    strategy: ClassVar[str] = "native"
    weight: np.ndarray  # (in, filters, *kernel): Keras' kernel permuted, never flipped
    pads: tuple[int, ...]  # begins then ends
    output_padding: tuple[int, ...]
    crop_end: tuple[int, ...]  # samples a Slice removes from the end of each spatial axis


def native_form(weight: np.ndarray, g: LayerGeometry, target: str) -> NativeForm:
    """One ConvTranspose with explicit pads and output_padding.

    target "cuda": onnxruntime runs a ConvTranspose with asymmetric pads on the CPU even in a
    CUDA session (onnxruntime#11312), which hits every Keras `same` layer with odd `ke - s`.
    There the pads become symmetric (the smaller side on both ends) and a Slice crops the rest
    from the end: the same numbers, all on the GPU. The crop is a negative end index, so
    dynamic sizes still need no shape subgraph.
    """
    begins, ends = g.begins, g.ends
    crop_end = (0,) * len(begins)
    if target == "cuda":
        crop_end = tuple(end - begin for begin, end in zip(begins, ends, strict=True))
        ends = begins
    return NativeForm(np.ascontiguousarray(weight), begins + ends, g.output_padding, crop_end)


@dataclass(frozen=True, eq=False)
class ConvForm:
    strategy: ClassVar[str] = "conv"
    weight: np.ndarray  # (filters, in, *kernel), spatially flipped
    pads: tuple[int, ...]  # begins then ends


def conv_form(weight: np.ndarray, g: LayerGeometry, target: str) -> ConvForm:
    """Stride 1: out = full[b : L_full - e] is a correlation with the flipped kernel over the
    input padded by ke - 1 - b before and ke - 1 - e after."""
    rank = len(g.kernel)
    flipped = np.flip(weight, axis=tuple(range(2, 2 + rank))).swapaxes(0, 1)
    extents = [geometry.effective_kernel(k, d) for k, d in zip(g.kernel, g.dilations, strict=True)]
    begins = tuple(ke - 1 - b for ke, b in zip(extents, g.begins, strict=True))
    ends = tuple(ke - 1 - e for ke, e in zip(extents, g.ends, strict=True))
    return ConvForm(np.ascontiguousarray(flipped), begins + ends)


@dataclass(frozen=True, eq=False)
class Phase:
    weight: np.ndarray  # (filters, in, taps_h, taps_w)
    pads: tuple[int, int, int, int]


@dataclass(frozen=True, eq=False)
class SubpixelForm:
    strategy: ClassVar[str] = "subpixel"
    stride: int
    phases: tuple[Phase, ...]  # in DepthToSpace DCR order: rh * s + rw
    crop_begin: tuple[int, int]
    crop_end: tuple[int, int]  # samples removed from the end (a negative Slice end)

    @property
    def uniform(self) -> bool:
        """All phases have as many taps (k % s == 0): one Conv computes them all, no Concat."""
        return len({(p.weight.shape, p.pads) for p in self.phases}) == 1


def subpixel_form(weight: np.ndarray, g: LayerGeometry, target: str) -> SubpixelForm:
    """Phase r of an axis computes out[s*q + r] = sum_j in[q - j] * W[r + s*j] for q < Q, where
    Q = i - 1 + ceil((k + op) / s): a correlation with taps W[r + s*(J-1-t)] over the input padded
    by J - 1 before and Q - i after (both independent of i)."""
    s = g.strides[0]
    per_axis = []
    for k, op in zip(g.kernel, g.output_padding, strict=True):
        tail = -(-(k + op) // s) - 1  # Q - i
        per_axis.append(([max(1, -(-(k - r) // s)) for r in range(s)], tail, s * (tail + 1) - k - op))
    (taps_h, tail_h, extra_h), (taps_w, tail_w, extra_w) = per_axis
    phases = []
    for rh in range(s):
        for rw in range(s):
            jh, jw = taps_h[rh], taps_w[rw]
            taps = np.zeros((g.filters, g.in_channels, jh, jw), dtype=weight.dtype)
            for a in range(jh):
                for b in range(jw):
                    kh, kw = rh + s * (jh - 1 - a), rw + s * (jw - 1 - b)
                    if kh < g.kernel[0] and kw < g.kernel[1]:  # k < s leaves a phase without taps
                        taps[:, :, a, b] = weight[:, :, kh, kw].T
            phases.append(Phase(taps, (jh - 1, jw - 1, tail_h, tail_w)))
    return SubpixelForm(
        stride=s,
        phases=tuple(phases),
        crop_begin=(g.begins[0], g.begins[1]),
        crop_end=(extra_h + g.ends[0], extra_w + g.ends[1]),  # past the full length, then Keras' crop
    )


@dataclass(frozen=True, eq=False)
class GemmForm:
    strategy: ClassVar[str] = "gemm"
    weight: np.ndarray  # (in, prod(kernel) * filters): columns ordered (taps..., filter)
    spatial: tuple[int, ...]


def gemm_form(weight: np.ndarray, g: LayerGeometry, target: str) -> GemmForm:
    rank = len(g.kernel)
    # (in, filters, *k) → (in, *k, filters) → (in, prod(k) * filters)
    columns = np.transpose(weight, (0, *range(2, 2 + rank), 1)).reshape(g.in_channels, -1)
    return GemmForm(np.ascontiguousarray(columns), tuple(int(d) for d in g.spatial if d is not None))


Form = NativeForm | ConvForm | SubpixelForm | GemmForm
# The user's word for a strategy → what builds its form; the builder dispatches on the form's type.
FORMS: dict[str, Callable[[np.ndarray, LayerGeometry, str], Form]] = {
    "native": native_form,
    "conv": conv_form,
    "subpixel": subpixel_form,
    "gemm": gemm_form,
}
