"""Sizes beyond which inputs are refused before anything is allocated, and why."""

from __future__ import annotations

MAX_SIZE = 2**31 - 1  # any count or length beyond int32 is a typo, not a layer (and ONNX dims are int64)
# An .onnx file is one protobuf, which cannot exceed 2 GiB (external data is not written yet):
# layers whose weights would take more are refused before anything is allocated.
MAX_WEIGHT_BYTES = 3 * 2**29
