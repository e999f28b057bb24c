"""ModelSpec → compiled model run on onnxruntime vs the numpy reference → `CheckReport`.

What a user runs before shipping a model: the same weights go through the compiled graph and
through `deconv_compiler.reference` (an independent float64 implementation of Keras' layer,
itself proven against real Keras in the test suite), and the largest difference is judged
against a tolerance for the dtype and provider.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deconv_compiler import reference
from deconv_compiler.compiler import compile_spec
from deconv_compiler.plan import DEFAULT_OPSET, layer_weights
from deconv_compiler.runtime import SessionConfig, resolve_provider, run_model
from deconv_compiler.spec import ModelSpec

DEFAULT_SIZES = {"batch": 2, "spatial": 5}


def tolerance(dtype: str, provider: str, use_tf32: bool) -> float:
    """Largest accepted error relative to max(1, max|reference|)."""
    if dtype == "float16":
        return 1e-2  # 11-bit mantissa, accumulations included
    if dtype == "float64":
        return 1e-9
    if provider == "cuda" and use_tf32:
        return 5e-3  # TF32 keeps a 10-bit mantissa in convolutions
    return 1e-5


@dataclass(frozen=True)
class CheckReport:
    provider: str
    input_shape: tuple[int, ...]
    dtype: str
    max_abs_error: float
    scale: float  # max(1, max|reference|)
    tolerance: float
    cpu_nodes: tuple[str, ...]

    @property
    def relative_error(self) -> float:
        return self.max_abs_error / self.scale

    @property
    def passed(self) -> bool:
        return self.relative_error <= self.tolerance


def concrete_input_shape(spec: ModelSpec, given: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The spec's input shape with dynamic sizes filled in (from `given`, else small defaults)."""
    if given is not None:
        return given
    batch, *rest = spec.input_shape
    filled = [DEFAULT_SIZES["spatial"] if d is None else d for d in rest]
    return (DEFAULT_SIZES["batch"] if batch is None else batch, *filled)


def reference_output(spec: ModelSpec, x: np.ndarray, seed: int | None = None) -> np.ndarray:
    """The whole chain through the numpy reference, in float64, with the model's weights."""
    y = x.astype(np.float64)
    for index, layer in enumerate(spec.layers):
        weights = layer_weights(spec, index, seed)
        compute = np.dtype(layer.dtype)  # weights as the compiled graph stores them
        y = reference.layer(
            y.astype(compute).astype(np.float64),
            weights.kernel.astype(compute),
            None if weights.bias is None else weights.bias.astype(compute),
            activation_name=layer.activation,
            strides=layer.strides,
            padding=layer.padding,
            output_padding=layer.output_padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    return y


def check_spec(
    spec: ModelSpec,
    config: SessionConfig | None = None,
    shape: tuple[int, ...] | None = None,
    input_seed: int = 0,
    opset: int = DEFAULT_OPSET,
    seed: int | None = None,
    tolerance_override: float | None = None,
) -> CheckReport:
    """Compile (for the provider that will run it), run on random input, compare."""
    config = config or SessionConfig()
    provider = resolve_provider(config.provider)
    model = compile_spec(spec, opset=opset, seed=seed, target=provider)
    x = np.random.default_rng(input_seed).standard_normal(concrete_input_shape(spec, shape))
    x = x.astype(spec.input_dtype)
    result = run_model(model, x, config)
    actual = next(iter(result.outputs.values())).astype(np.float64)
    expected = reference_output(spec, x, seed)
    if actual.shape != expected.shape:
        raise AssertionError(f"internal error: output shape {actual.shape} != reference {expected.shape}")
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    error = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    compute = spec.layers[-1].dtype
    return CheckReport(
        provider=result.provider,
        input_shape=tuple(x.shape),
        dtype=compute,
        max_abs_error=error,
        scale=scale,
        tolerance=tolerance_override
        if tolerance_override is not None
        else tolerance(compute, result.provider, config.use_tf32),
        cpu_nodes=result.cpu_nodes,
    )
