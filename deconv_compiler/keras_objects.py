"""Keras identifiers for initializers, regularizers and constraints → `KerasObject`.

Accepts what `keras.initializers.get` (and the regularizer/constraint equivalents) accept from a
config file: a name (case-sensitive, class name or snake_case alias) or the serialized form
`{"class_name": ..., "config": {...}}`. Checks argument names and value types against each class'
constructor. Regularizers and constraints are training-only: they are validated and recorded in
the model's metadata, but never change the inference graph.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from deconv_compiler.errors import FieldPath, shown

Check = Callable[[Any], str | None]  # returns a message when the value is wrong
REQUIRED = object()


def _number(value: Any) -> str | None:
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        try:
            if math.isfinite(float(value)):
                return None
        except OverflowError:  # an integer beyond any float
            pass
    return f"must be a finite number, got {shown(value)}"


def _non_negative(value: Any) -> str | None:
    return _number(value) or (f"must be >= 0, got {shown(value)}" if value < 0 else None)


def _positive(value: Any) -> str | None:
    return _number(value) or (f"must be > 0, got {shown(value)}" if value <= 0 else None)


def _seed(value: Any) -> str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return None
    return f"must be null or an integer >= 0, got {shown(value)}"


def _axes(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(a, int) and not isinstance(a, bool) for a in value):
        return None
    return f"must be null or a list of integers, got {shown(value)}"


def _axis(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    return _axes(value) if isinstance(value, list) else f"must be an integer or a list, got {shown(value)}"


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}; got {shown(value)}"

    return check


@dataclass(frozen=True)
class Param:
    default: Any
    check: Check


@dataclass(frozen=True)
class KerasClass:
    name: str
    params: Mapping[str, Param]
    refused: str | None = None  # why Keras refuses it on a transposed-convolution weight


_FANS = {
    "seed": Param(None, _seed),
    "input_axes": Param(None, _axes),
    "output_axes": Param(None, _axes),
}

INITIALIZERS: dict[str, KerasClass] = {
    c.name: c
    for c in (
        KerasClass("Zeros", {}),
        KerasClass("Ones", {}),
        # Keras' Constant reads config["value"]: the bare string "constant" fails in Keras too.
        KerasClass("Constant", {"value": Param(REQUIRED, _number)}),
        KerasClass(
            "RandomNormal",
            {
                "mean": Param(0.0, _number),
                "stddev": Param(0.05, _number),
                "seed": Param(None, _seed),
            },
        ),
        KerasClass(
            "RandomUniform",
            {
                "minval": Param(-0.05, _number),
                "maxval": Param(0.05, _number),
                "seed": Param(None, _seed),
            },
        ),
        KerasClass(
            "TruncatedNormal",
            {
                "mean": Param(0.0, _number),
                "stddev": Param(0.05, _number),
                "seed": Param(None, _seed),
            },
        ),
        KerasClass(
            "VarianceScaling",
            {
                "scale": Param(1.0, _positive),
                "mode": Param("fan_in", _one_of("fan_in", "fan_out", "fan_avg")),
                "distribution": Param(
                    "truncated_normal",
                    _one_of("truncated_normal", "untruncated_normal", "uniform", "normal"),
                ),
                **_FANS,
            },
        ),
        KerasClass("GlorotNormal", dict(_FANS)),
        KerasClass("GlorotUniform", dict(_FANS)),
        KerasClass("HeNormal", dict(_FANS)),
        KerasClass("HeUniform", dict(_FANS)),
        KerasClass("LecunNormal", dict(_FANS)),
        KerasClass("LecunUniform", dict(_FANS)),
        KerasClass("Orthogonal", {"gain": Param(1.0, _number), "seed": Param(None, _seed)}),
        KerasClass(
            "Identity",
            {"gain": Param(1.0, _number)},
            refused="Keras' Identity initializer only builds 2D matrices; "
            "transposed-convolution weights are not 2D",
        ),
        KerasClass(
            "STFT",
            {
                "side": Param("real", _one_of("real", "imag")),
                "window": Param("hann", lambda v: None),
                "scaling": Param("density", _one_of("density", "spectrum")),
                "periodic": Param(False, lambda v: None),
            },
            refused="the STFT initializer builds Conv1D kernels of shape (k, 1, filters); "
            "it does not fit a transposed-convolution kernel",
        ),
    )
}
_INITIALIZER_ALIASES = {
    "zeros": "Zeros", "zero": "Zeros", "ones": "Ones", "one": "Ones", "constant": "Constant",
    "random_normal": "RandomNormal", "normal": "RandomNormal",
    "random_uniform": "RandomUniform", "uniform": "RandomUniform",
    "truncated_normal": "TruncatedNormal", "variance_scaling": "VarianceScaling",
    "glorot_normal": "GlorotNormal", "glorot_uniform": "GlorotUniform",
    "he_normal": "HeNormal", "he_uniform": "HeUniform",
    "lecun_normal": "LecunNormal", "lecun_uniform": "LecunUniform",
    "orthogonal": "Orthogonal", "OrthogonalInitializer": "Orthogonal",
    "identity": "Identity", "IdentityInitializer": "Identity",
    "stft": "STFT", "STFTInitializer": "STFT",
}  # fmt: skip

REGULARIZERS: dict[str, KerasClass] = {
    c.name: c
    for c in (
        KerasClass("L1", {"l1": Param(0.01, _non_negative)}),
        KerasClass("L2", {"l2": Param(0.01, _non_negative)}),
        KerasClass("L1L2", {"l1": Param(0.0, _non_negative), "l2": Param(0.0, _non_negative)}),
        KerasClass(
            "OrthogonalRegularizer",
            {
                "factor": Param(0.01, _non_negative),
                "mode": Param("rows", _one_of("rows", "columns")),
            },
        ),
    )
}
_REGULARIZER_ALIASES = {
    "l1": "L1",
    "l2": "L2",
    "l1l2": "L1L2",
    "orthogonal_regularizer": "OrthogonalRegularizer",
}

CONSTRAINTS: dict[str, KerasClass] = {
    c.name: c
    for c in (
        KerasClass("MaxNorm", {"max_value": Param(2, _number), "axis": Param(0, _axis)}),
        KerasClass(
            "MinMaxNorm",
            {
                "min_value": Param(0.0, _number),
                "max_value": Param(1.0, _number),
                "rate": Param(1.0, _number),
                "axis": Param(0, _axis),
            },
        ),
        KerasClass("NonNeg", {}),
        KerasClass("UnitNorm", {"axis": Param(0, _axis)}),
    )
}
_CONSTRAINT_ALIASES = {
    "max_norm": "MaxNorm",
    "min_max_norm": "MinMaxNorm",
    "non_neg": "NonNeg",
    "unit_norm": "UnitNorm",
}


@dataclass(frozen=True)
class Vocabulary:
    kind: str
    classes: Mapping[str, KerasClass]
    aliases: Mapping[str, str]

    def lookup(self, name: str) -> KerasClass | None:
        return self.classes.get(self.aliases.get(name, name))

    def names(self) -> list[str]:
        return sorted(set(self.classes) | set(self.aliases))


INITIALIZER = Vocabulary("initializer", INITIALIZERS, _INITIALIZER_ALIASES)
REGULARIZER = Vocabulary("regularizer", REGULARIZERS, _REGULARIZER_ALIASES)
CONSTRAINT = Vocabulary("constraint", CONSTRAINTS, _CONSTRAINT_ALIASES)


@dataclass(frozen=True)
class KerasObject:
    """A validated initializer/regularizer/constraint: canonical class name and full config."""

    class_name: str
    config: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"class_name": self.class_name, "config": dict(self.config)}


Report = Callable[[FieldPath, str], None]


def parse_keras_object(value: Any, vocab: Vocabulary, path: FieldPath, report: Report) -> KerasObject | None:
    """Validate one identifier; report problems and return None when it is unusable."""
    name: Any
    config: Any
    if isinstance(value, str):
        name, config, config_path = value, {}, path
    elif isinstance(value, Mapping):
        for key in value:
            if key not in ("class_name", "config", "module", "registered_name"):
                report(
                    (*path, key if isinstance(key, str) else shown(key)),
                    f"unrecognized key in a serialized {vocab.kind}",
                )
        name = value.get("class_name")
        config = value.get("config", {})
        config_path = (*path, "config")
        if not isinstance(name, str):
            report((*path, "class_name"), f"must be the {vocab.kind}'s class name, got {shown(name)}")
            return None
        if not isinstance(config, Mapping):
            report(config_path, f"must be a mapping of {name} arguments, got {shown(config)}")
            return None
    else:
        report(path, f"must be a {vocab.kind} name or {{class_name, config}}, got {shown(value)}")
        return None

    keras_class = vocab.lookup(name)
    if keras_class is None:
        hint = difflib.get_close_matches(name, vocab.names(), n=1)
        suffix = f"; did you mean {shown(hint[0])}?" if hint else f"; known: {', '.join(vocab.names())}"
        report(
            path if isinstance(value, str) else (*path, "class_name"),
            f"unknown {vocab.kind} {shown(name)}{suffix}",
        )
        return None
    if keras_class.refused:
        report(path, f"{vocab.kind} {shown(name)} cannot be used here: {keras_class.refused}")
        return None

    ok = True
    full: dict[str, Any] = {}
    for key, item in config.items():
        param = keras_class.params.get(key)
        if param is None:
            report((*config_path, key), f"{keras_class.name} has no argument {shown(key)}")
            ok = False
            continue
        message = param.check(item)
        if message:
            report((*config_path, key), message)
            ok = False
        full[key] = item
    for key, param in keras_class.params.items():
        if key in full:
            continue
        if param.default is REQUIRED:
            report(
                path,
                f"{keras_class.name} needs a {shown(key)} "
                f"(write {{class_name: {keras_class.name}, config: {{{key}: ...}}}})",
            )
            ok = False
        else:
            full[key] = param.default
    return KerasObject(keras_class.name, full) if ok else None
