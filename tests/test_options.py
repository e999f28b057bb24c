"""`options.CompileOptions`: every compile choice validated once, at construction, as a `CompileError`
that says what was given and what is accepted; `resolved()` decides the `auto` target."""

from __future__ import annotations

from typing import Any

import pytest

from deconv_compiler import runtime
from deconv_compiler.errors import CompileError, DeconvError
from deconv_compiler.options import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, CompileOptions


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        pytest.param("opset", 10, "opset 10 is not supported: choose 11 to 26", id="opset-too-old"),
        pytest.param("opset", 27, "opset 27 is not supported: choose 11 to 26", id="opset-too-new"),
        pytest.param("opset", -1, "opset -1 is not supported", id="opset-negative"),
        pytest.param("opset", "17", "opset must be an integer, got '17'", id="opset-string"),
        pytest.param("opset", 17.0, "opset must be an integer, got 17.0", id="opset-float"),
        pytest.param("opset", True, "opset must be an integer, got True", id="opset-bool"),
        pytest.param(
            "target",
            "tpu",
            "target 'tpu' is not supported: choose cpu, cuda, mobile, auto",
            id="target-unknown",
        ),
        pytest.param("target", "CPU", "target 'CPU' is not supported", id="target-case-sensitive"),
        pytest.param("target", None, "target None is not supported", id="target-none"),
        pytest.param(
            "strategy",
            "fast",
            "unknown strategy 'fast'; choose native, conv, subpixel, gemm, auto, tune",
            id="strategy-unknown",
        ),  # fmt: skip
        pytest.param("strategy", "Native", "unknown strategy 'Native'", id="strategy-case-sensitive"),
        pytest.param("strategy", "", "unknown strategy ''", id="strategy-empty"),
        pytest.param("seed", -1, "seed must be >= 0, got -1", id="seed-negative"),
        pytest.param("seed", 1.5, "seed must be an integer, got 1.5", id="seed-float"),
        pytest.param("seed", "7", "seed must be an integer, got '7'", id="seed-string"),
        pytest.param("seed", False, "seed must be an integer, got False", id="seed-bool"),
        pytest.param(
            "dtype",
            "bfloat16",
            "dtype 'bfloat16' is not supported: choose float32, float16, mixed_float16",
            id="dtype-bfloat16",
        ),  # fmt: skip
        pytest.param("dtype", "float64", "dtype 'float64' is not supported", id="dtype-float64"),
        pytest.param(
            "dtype", "mixed_bfloat16", "dtype 'mixed_bfloat16' is not supported", id="dtype-mixed-bfloat16"
        ),
        pytest.param("dtype", "half", "dtype 'half' is not supported", id="dtype-alias"),
    ],
)
def test_invalid_options_are_compile_errors(field: str, value: Any, message: str) -> None:
    with pytest.raises(CompileError) as caught:
        CompileOptions(**{field: value})
    assert str(caught.value).startswith(message), str(caught.value)
    assert isinstance(caught.value, DeconvError), "the user's fault: exit code 2"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("opset", MIN_OPSET, id="opset-min"),
        pytest.param("opset", MAX_OPSET, id="opset-max"),
        *(pytest.param("target", t, id=f"target-{t}") for t in ("cpu", "cuda", "auto")),
        *(pytest.param("strategy", s, id=f"strategy-{s}") for s in ("native", "conv", "subpixel", "gemm", "auto", "tune")),
        pytest.param("strategy", None, id="strategy-unset"),
        pytest.param("seed", 0, id="seed-0"),
        pytest.param("seed", 2**40, id="seed-large"),
        pytest.param("seed", None, id="seed-unset"),
        *(pytest.param("dtype", d, id=f"dtype-{d}") for d in ("float32", "float16", "mixed_float16")),
        pytest.param("dtype", None, id="dtype-unset"),
    ],
)  # fmt: skip
def test_valid_options_are_kept_as_given(field: str, value: Any) -> None:
    assert getattr(CompileOptions(**{field: value}), field) == value


def test_defaults() -> None:
    options = CompileOptions()
    assert (options.opset, options.target, options.strategy, options.seed, options.dtype) == (
        DEFAULT_OPSET, "cpu", None, None, None,
    )  # fmt: skip
    assert (MIN_OPSET, DEFAULT_OPSET, MAX_OPSET) == (11, 17, 26)


def test_options_are_frozen() -> None:
    options = CompileOptions()
    with pytest.raises(AttributeError):
        options.opset = 11  # type: ignore[misc]


def test_auto_target_resolves_to_what_this_machine_runs() -> None:
    """cuda only where a CUDA session can really be created; on a CPU-only machine, cpu."""
    expected = "cpu" if runtime.cuda_unavailable_reason() is not None else "cuda"
    resolved = CompileOptions(target="auto", strategy="gemm", seed=3, dtype="float16", opset=13).resolved()
    assert resolved == CompileOptions(target=expected, strategy="gemm", seed=3, dtype="float16", opset=13)


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_a_given_target_is_already_resolved(target: str) -> None:
    options = CompileOptions(target=target)
    assert options.resolved() is options
