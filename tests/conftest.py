"""Shared test set-up. Keras must use the jax backend (TensorFlow cannot run dilated or
channels_first transposed convolutions on the CPU), and jax 0.10's algebraic simplifier can abort
on some conv-transpose shapes on the CPU, so that pass is disabled before anything imports jax."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_FLAGS", "--xla_disable_hlo_passes=algsimp")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
