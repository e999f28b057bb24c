"""Public networks with transposed convolutions (tests/public_networks.py: 18 networks written after
TensorFlow tutorials and keras.io examples) through `deconvc compile`, from each of the three file
forms Keras writes: a `.keras` archive, a legacy `.h5` file, and `to_json()` with a
`.weights.h5` file. Each compiled model runs on onnxruntime's CPU provider and every output must be
within 1e-4 of Keras' own (`model(x, training=False)`) relative to the output's scale.

Each network is built, saved in the three forms and run by Keras once per module, when a test
first asks for it (`Zoo`). The subclassed CVAE of the TensorFlow tutorial must stay refused: exit
code 2, one located message naming the class, no traceback and no output file.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

# Keras 3.15's Variable.numpy() (used by save and get_weights) trips numpy 2's __array__ copy check.
pytestmark = [
    pytest.mark.keras,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
if importlib.util.find_spec("keras") is None or importlib.util.find_spec("jax") is None:
    pytest.skip("needs keras and jax (pip install -e '.[test]')", allow_module_level=True)

import jax  # noqa: E402
import keras  # noqa: E402

from tests import public_networks as pn  # noqa: E402
from tests.onnx_run import run_all  # noqa: E402
from tests.test_cli import assert_clean_failure, invoke  # noqa: E402

FORMS = ("keras", "h5", "json")  # model.save(.keras), model.save(.h5), to_json() + save_weights()
RTOL = 1e-4  # max |onnx - keras| <= RTOL * max(1, max |keras|), per output
BATCH = 2

# XLA options for Keras' forward pass: XLA's compile is most of what it costs; these skip LLVM's
# expensive passes and change no math (as in tests/test_keras_conformance.py).
_XLA_OPTIONS = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
}


def keras_outputs(model: keras.Model, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """`model(x, training=False)` under one `jax.jit`, as `predict` runs it (op by op, every
    primitive is compiled on its own: several times slower for the larger networks)."""

    def call(*xs: jax.Array) -> object:
        return model(list(xs) if len(xs) > 1 else xs[0], training=False)

    lowered = jax.jit(call).lower(*inputs)
    try:
        compiled = lowered.compile(_XLA_OPTIONS)
    except Exception as error:  # a jaxlib without one of the options: compile as usual
        if "No such compile option" not in str(error):
            raise
        compiled = lowered.compile()
    result = compiled(*inputs)
    return [np.asarray(y) for y in (result if isinstance(result, (list, tuple)) else [result])]


Forms = dict[str, tuple[Path, list[str]]]  # form -> (file, extra CLI arguments)


def save_forms(model: keras.Model, folder: Path, stem: str) -> tuple[Forms, dict[str, str]]:
    """The model in each file form Keras can write it, and for each form Keras itself refuses to
    write, its error."""
    config, weights = folder / f"{stem}.json", folder / f"{stem}.weights.h5"

    def write_json() -> None:
        config.write_text(model.to_json())
        model.save_weights(weights)

    writers = {
        "keras": (lambda: model.save(folder / f"{stem}.keras"), folder / f"{stem}.keras", []),
        "h5": (lambda: model.save(folder / f"{stem}.h5"), folder / f"{stem}.h5", []),  # legacy HDF5
        "json": (write_json, config, ["--weights", str(weights)]),
    }
    forms: Forms = {}
    refused: dict[str, str] = {}
    for form, (write, path, extra) in writers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the legacy-.h5 notice; pytest makes warnings errors
                write()
        except Exception as error:  # Keras cannot write this form of this model
            refused[form] = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
        else:
            forms[form] = (path, extra)
    return forms, refused


@dataclass
class Saved:
    """One network, saved: its files, its test inputs and Keras' outputs for them."""

    name: str
    forms: Forms
    refused: dict[str, str]  # the forms Keras could not write, with its error
    inputs: list[np.ndarray]
    expected: list[np.ndarray]


class Zoo:
    """Builds, saves and runs each network once, when it is first asked for. The Keras model is
    dropped once saved and run (the largest, pix2pix's generator, has 54M weights)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.saved: dict[str, Saved] = {}

    def get(self, name: str) -> Saved:
        if name not in self.saved:
            model = pn.build(name)
            rng = np.random.default_rng(pn.network_seed(name))
            inputs = [
                rng.standard_normal((BATCH, *shape)).astype(np.float32) for shape in pn.INPUT_SHAPES[name]
            ]
            expected = keras_outputs(model, inputs)
            forms, refused = save_forms(model, self.folder, name)
            self.saved[name] = Saved(name, forms, refused, inputs, expected)
            del model
        return self.saved[name]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("public_networks"))


CASES = [pytest.param(name, form, id=f"{name}-{form}") for name in pn.NETWORKS for form in FORMS]


@pytest.mark.parametrize(("name", "form"), CASES)
def test_public_network_compiles_and_matches_keras(zoo: Zoo, name: str, form: str, tmp_path: Path) -> None:
    saved = zoo.get(name)
    if form not in saved.forms:
        pytest.fail(f"Keras could not save {name} as {form}: {saved.refused[form]}")
    path, extra = saved.forms[form]
    out = tmp_path / f"{name}.onnx"
    result = invoke("compile", path, *extra, "-o", out)
    assert result.exit_code == 0, f"deconvc compile {path.name} exited {result.exit_code}:\n{result.output}"
    assert out.exists()

    actual = run_all(onnx.load(str(out)), *saved.inputs)
    assert len(actual) == len(saved.expected), f"{len(actual)} outputs, Keras has {len(saved.expected)}"
    failures = []
    for index, (got, want) in enumerate(zip(actual, saved.expected, strict=True)):
        label = f"{name} ({form}) output {index}"
        if got.shape != want.shape:
            failures.append(f"{label}: shape {got.shape} != Keras' {want.shape}")
            continue
        scale = max(1.0, float(np.max(np.abs(want))))
        error = float(np.max(np.abs(got.astype(np.float64) - want)))
        if not error <= RTOL * scale:  # also catches NaN
            failures.append(f"{label}: max error {error:.3g} > {RTOL:g} x scale {scale:.3g}")
    assert not failures, "\n".join(failures)


# --- the subclassed CVAE stays refused -------------------------------------------------------------


@pytest.fixture(scope="module")
def subclassed_cvae_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Forms, dict[str, str]]:
    return save_forms(
        pn.build_subclassed_cvae(), tmp_path_factory.mktemp("subclassed_cvae"), "subclassed_cvae"
    )


@pytest.mark.parametrize("form", FORMS)
def test_subclassed_cvae_is_refused(
    subclassed_cvae_files: tuple[Forms, dict[str, str]], form: str, tmp_path: Path
) -> None:
    forms, refused = subclassed_cvae_files
    if form not in forms:
        pytest.skip(f"Keras cannot save the subclassed model as {form}: {refused[form]}")
    path, extra = forms[form]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "cvae.onnx"
    result = invoke("compile", path, *extra, "-o", out)
    assert_clean_failure(result)
    problems = [line for line in result.stderr.splitlines() if line.startswith(str(path))]
    assert len(problems) == 1, result.stderr  # one located message ...
    assert "CVAE" in problems[0], result.stderr  # ... naming the class
    assert not out.exists() and not list(out_dir.iterdir())
