"""dtype names and Keras dtype policies: which the compiler takes, and what each computes in.

A policy is a dtype name (`float32`: compute and I/O in float32) or a Keras mixed policy
(`mixed_float16`: variables, inputs and outputs in float32, compute in float16). Pure data.
"""

from __future__ import annotations

DTYPES = ("float16", "float32", "float64")
# Keras dtype policies: variables (and the model's inputs and outputs) in float32, compute in float16.
MIXED_POLICIES = {"mixed_float16": "float16"}
POLICIES = (*DTYPES, *MIXED_POLICIES)
REFUSED_DTYPES = {
    "bfloat16": "onnxruntime has no ConvTranspose kernel for bfloat16 (CPU or CUDA)",
    "mixed_bfloat16": "onnxruntime has no ConvTranspose kernel for bfloat16 (CPU or CUDA)",
}


def compute_dtype(policy: str) -> str:
    """What a layer under `policy` computes in (and stores its weights in, in the graph)."""
    return MIXED_POLICIES.get(policy, policy)


def io_dtype(policy: str) -> str:
    """What a model under `policy` takes and gives (float32 under a mixed policy)."""
    return "float32" if policy in MIXED_POLICIES else policy
