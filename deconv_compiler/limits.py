"""Sizes beyond which inputs are refused before anything is allocated, and why."""

from __future__ import annotations

MAX_SIZE = 2**31 - 1  # any count or length beyond int32 is a typo, not a layer (and ONNX dims are int64)
# An .onnx file is one protobuf, which cannot exceed 2 GiB (external data is not written yet):
# layers whose weights would take more are refused before anything is allocated.
MAX_WEIGHT_BYTES = 3 * 2**29
# Layers in a Keras config (nested models' included) and layer calls once nested models are
# inlined: honest networks have a few thousand; a config of a million empty objects would
# otherwise cost minutes and gigabytes before being refused.
MAX_LAYERS = 200_000
# Values in one tensor, per batch item (a dynamic length counts as its least possible size):
# lengths that each fit int32 can still multiply past what any runtime indexes or allocates.
MAX_ELEMENTS = 2**31 - 1
# An input array of `deconvc run` is read whole into memory before the session runs: its header is
# checked against this before anything is allocated (a forged header can declare 10**12 elements).
# `run --random` and `bench` refuse random inputs that would take more, together, before drawing them.
MAX_INPUT_BYTES = 2**31
# The orthogonal initializer's QR factorization costs about rows * cols**2 for a rows x cols matrix
# (rows >= cols): up to 2**33 (a 8192 x 1024 kernel, a 2048 x 2048 one) takes seconds; 12000 x 12000
# took more than ten minutes. Larger ones are refused before the work starts.
MAX_ORTHOGONAL_WORK = 2**33
