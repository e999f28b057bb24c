"""Any mutated saved-Keras config → a model whose every output matches the numpy reference, or a
located error; never an internal error or a crash.

Each example takes a hand-written Sequential decoder (Dense, Reshape, Conv2DTranspose,
BatchNormalization, LeakyReLU, ZeroPadding2D, Cropping2D, bilinear UpSampling2D, Softmax over two
axes, Flatten) or a Functional DAG (two branches, Add, PReLU, Concatenate, two outputs), both with
weights, and sets or deletes 1-3 values anywhere in its config, as a `.keras` file's `config.json`
could hold them; in a quarter of the examples the first change is a dtype policy (float16,
mixed_float16, float64) for the input or a layer. `parse_saved_model` must raise a
`KerasModelError` whose every problem names the file, or `compile_model` a `CompileError` (an
`InternalError` or anything else fails); otherwise the model runs on onnxruntime's CPU provider,
each input fed in its own dtype, and each output matches `verification.reference_outputs` (the
independent numpy implementation of Keras' layers, fed the same inputs) in shape and in value: to
1e-5 of max(1, max|reference|) in float32, 1e-2 where a layer computes in float16. Models with a
float64 ConvTranspose are compiled but not run (no CPU kernel); every outcome goes to
`hypothesis.event`, and the test after the property requires that enough examples were compared.

The reference follows the graph as the front end parsed it, so this catches wrong lowering,
wrong shapes and wrong numbers, not a config argument misread the same way on both sides: the
Keras conformance tests compare with real Keras for that.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st

import deconv_compiler as dc
from deconv_compiler.ir import ConvTransposeOp, Graph
from deconv_compiler.keras_file import SavedModel
from deconv_compiler.keras_model import parse_saved_model
from deconv_compiler.verification import reference_outputs
from tests.fuzz.checks import TOLERANCE, least_precise
from tests.fuzz.limits import KERAS_EXAMPLES, Outcomes, memory_limit, time_limit
from tests.keras_configs import called, conv, functional, layer, policy, sequential
from tests.onnx_run import assert_close, compile_graph, run_all

FILE = "model.keras"
COMPARED = "compared with the reference"
OUTCOMES = Outcomes("test_any_mutated_keras_config_gives_a_model_that_runs_or_a_located_error")
# The ci profile compares 162 of its 750 examples (584 refused, 4 float64 not run, see the
# events); a tenth (ci: 75) leaves room for a new draw, not for nearly every config refused or skipped.
COMPARED_FLOOR = KERAS_EXAMPLES // 10

Weights = dict[str, tuple[np.ndarray, ...]]


def _keras_bases() -> list[tuple[dict[str, Any], Weights]]:
    rng = np.random.default_rng(0)
    decoder = sequential(
        layer("Dense", "dense", units=12, activation="relu", dtype="float32"),
        layer("Reshape", "reshape", target_shape=[2, 2, 3]),
        conv("up", 4, 3, strides=[2, 2], padding="same", use_bias=False, dtype=policy("float32")),
        layer("BatchNormalization", "bn", axis=-1, dtype=policy("float32")),
        layer("LeakyReLU", "leaky", negative_slope=0.2),
        layer("ZeroPadding2D", "pad", padding=[[1, 0], [0, 2]]),
        layer("Cropping2D", "crop", cropping=[[0, 1], [1, 1]]),
        layer("UpSampling2D", "ups", size=[2, 1], interpolation="bilinear"),
        layer("Softmax", "soft", axis=[1, 2], dtype="float32"),
        layer("Flatten", "flat"),
        input_shape=[5],
        input_dtype="float32",
    )
    decoder_weights = {
        "dense": (rng.normal(size=(5, 12)), rng.normal(size=12)),
        "up": (rng.normal(size=(3, 3, 4, 3)),),
        "bn": tuple(rng.uniform(0.5, 1.5, size=4) for _ in range(4)),
    }
    dag = functional(
        "f",
        [
            called(layer("InputLayer", "z", batch_shape=[None, 3, 3, 2], dtype="float32")),
            called(conv("a", 2, 2, strides=[2, 2], dtype=policy("float32")), "z"),
            called(layer("UpSampling2D", "u", size=[2, 2]), "z"),
            called(layer("Add", "sum", dtype="float32"), "a", "u"),
            called(layer("PReLU", "p", shared_axes=[1, 2]), "sum"),
            called(layer("Concatenate", "cat", axis=-1), "p", "a"),
        ],
        inputs=["z"],
        outputs=["cat", "sum"],
    )
    dag_weights = {
        "a": (rng.normal(size=(2, 2, 2, 2)), rng.normal(size=2)),
        "p": (rng.uniform(0, 0.5, size=(1, 1, 2)),),
    }
    return [(decoder, decoder_weights), (dag, dag_weights)]


KERAS_VALUES = st.sampled_from(
    [None, 0, -1, 1, 2, 3.5, math.nan, True, "x", "same", "channels_first", [], [1], [2, 2], [[1, 1], [0, 2]], {},
     {"a": 1}, [None, 3], 10**12, "linear", [-1], ["a", 0, 0], "float16", "mixed_float16", "float64",
     "bfloat16", policy("mixed_float16"), "__delete__"]
)  # fmt: skip


DTYPE_POLICIES = ("float16", "mixed_float16", "float64", policy("float16"), policy("mixed_float16"))


def _config_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        found += _config_paths(child, (*path, key))
    return found


def _set(config: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    parent: Any = config
    for key in path[:-1]:
        parent = parent[key]
    if value == "__delete__" and isinstance(parent, dict):
        parent.pop(path[-1], None)
    elif value != "__delete__":
        parent[path[-1]] = copy.deepcopy(value)


def _compile(graph: Graph) -> Any:
    """The model, with the DeconvWarning that float64 (and only float64) must give."""
    float64 = any(node.dtype == "float64" for node in graph.nodes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = compile_graph(graph)
    unexpected = [w for w in caught if not issubclass(w.category, dc.DeconvWarning)]
    assert not unexpected, f"compile warned: {[str(w.message) for w in unexpected]}"
    assert bool(caught) == float64, f"DeconvWarning {'missing' if float64 else 'unexpected'}"
    return model


def check_graph_outputs(graph: Graph) -> str:
    """Compile, run on the CPU, compare every output with the numpy reference; returns the outcome."""
    model = _compile(graph)
    if any(isinstance(node.op, ConvTransposeOp) and node.dtype == "float64" for node in graph.nodes):
        return "compiled, not run: float64 (onnxruntime's CPU provider has no float64 ConvTranspose)"
    rng = np.random.default_rng(0)
    feeds = [
        rng.standard_normal([2 if size is None else size for size in value.shape]).astype(value.dtype)
        for value in graph.inputs
    ]
    outputs = run_all(model, *feeds)
    with np.errstate(all="ignore"):  # the oracle, not the system under test
        expected = reference_outputs(graph, feeds)
    assert len(outputs) == len(expected) == len(graph.outputs), (
        f"{len(outputs)} outputs, the reference has {len(expected)}, the graph declares {len(graph.outputs)}"
    )
    dtype = least_precise({node.dtype for node in graph.nodes} or {"float32"})
    event(f"run in {dtype}")
    rtol = TOLERANCE[dtype]
    finite = True
    for declared, actual, want in zip(graph.outputs, outputs, expected, strict=True):
        where = f"output {declared.name!r}"
        assert actual.shape == want.shape, f"{where}: shape {actual.shape} != the reference's {want.shape}"
        assert all(d is None or d == n for d, n in zip(declared.shape, want.shape, strict=True)), (
            f"{where}: declared shape {declared.shape}, the reference gives {want.shape}"
        )
        assert actual.dtype == np.dtype(declared.dtype), f"{where}: dtype {actual.dtype} != {declared.dtype}"
        if not np.all(np.isfinite(want)):
            finite = False  # overflow in the compute dtype: inf/nan on both sides, compared by shape
            continue
        assert_close(actual, want, rtol=rtol, context=where)
    return COMPARED if finite else "run, compared by shape only: the reference is not finite"


@settings(max_examples=KERAS_EXAMPLES)
@given(data=st.data())
def test_any_mutated_keras_config_gives_a_model_that_runs_or_a_located_error(data: st.DataObject) -> None:
    base, weights = data.draw(st.sampled_from(_keras_bases()))
    config = copy.deepcopy(base)
    changes = data.draw(st.integers(1, 3))
    if data.draw(st.integers(0, 3)) == 0:  # the first change: a dtype policy for the input or a layer
        dtype_paths = [path for path in _config_paths(config) if path[-1] == "dtype"]
        _set(config, data.draw(st.sampled_from(dtype_paths)), data.draw(st.sampled_from(DTYPE_POLICIES)))
        changes -= 1
    for _ in range(changes):
        path = data.draw(st.sampled_from(_config_paths(config)))
        value = data.draw(KERAS_VALUES)
        _set(config, path, value)
    with time_limit("the example"), memory_limit():
        try:
            graph = parse_saved_model(SavedModel(FILE, "keras", config, weights, None))
            outcome = check_graph_outputs(graph)
        except dc.KerasModelError as exc:
            assert exc.problems, "KerasModelError without problems"
            assert all(p.file == FILE and p.message.strip() for p in exc.problems), exc.problems
            outcome = "refused: KerasModelError"
        except dc.CompileError as exc:
            assert "internal error" not in str(exc), exc
            outcome = "refused: CompileError"
    OUTCOMES.record(outcome)


def test_enough_keras_configs_were_compared_with_the_reference() -> None:
    """Runs after the property (file order): a property that refuses or skips nearly every example proves little."""
    OUTCOMES.require(COMPARED, COMPARED_FLOOR)
