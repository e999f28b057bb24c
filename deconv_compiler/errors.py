"""Errors raised by the compiler, by whose fault they are.

Every error the user can cause derives from `DeconvError`: the CLI turns it into exit code 2
(1 for `RuntimeFailure`). An `InvalidInput` carries *all* the problems found in one input, each
with a field path (`layers[0].strides[1]`) and, where the input came from a file, the file and
(for YAML/JSON specs) the line: `SpecError` for specs, `KerasModelError` for saved Keras models.
A bug of ours is an `InternalError`, never a `DeconvError`: the CLI exits 1 and asks for a report.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

FieldPath = tuple[str | int, ...]


def format_path(path: FieldPath) -> str:
    """Render `("layers", 0, "strides", 1)` as `layers[0].strides[1]`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "<spec>"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 3, 60, 60, 8, 6


def shown(value: Any) -> str:
    """A user's value as a message shows it: bounded in length and depth, whatever it is
    (a 10**5-digit integer or a list nested 10**4 deep would break repr)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of about {int(value.bit_length() * 0.30103):,} digits"
    try:
        return _REPR.repr(value)
    except (RecursionError, ValueError):
        return f"a {type(value).__name__}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec, located as precisely as we can."""

    path: FieldPath
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        field = f"{format_path(self.path)}: " if self.path else ""
        return f"{where}{field}{self.message}"


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first non-blank line of an exception's message (its class name when it has none), for
    errors raised by libraries whose messages run over many lines; at most `limit` characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


class DeconvError(Exception):
    """Base class of every error caused by the user's input."""


class InvalidInput(DeconvError):
    """An input is invalid; `problems` lists everything found, in order."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...], notes: tuple[str, ...] = ()) -> None:
        self.problems = tuple(problems)
        self.notes = notes  # said once after the problems (e.g. what is supported)
        super().__init__("\n".join([*(str(p) for p in self.problems), *notes]))


class SpecError(InvalidInput):
    """A spec (YAML/JSON file or mapping) or its weights are invalid."""


class KerasModelError(InvalidInput):
    """A saved Keras model (.keras, .h5, config JSON + weights) is invalid or cannot be compiled."""


class CompileError(DeconvError):
    """The input is valid but cannot be lowered with the chosen options (e.g. opset too old)."""


class OutputFileError(DeconvError):
    """An output cannot be written where asked, or may not be: the path is an input, a directory,
    a link or a device, its folder is missing or read-only, its name too long (`output_file`)."""


class InternalError(Exception):
    """A bug of ours: a failed postcondition or an unexpected state. Not the user's fault."""

    def __init__(self, message: str) -> None:
        super().__init__(f"internal error: {message}")


class RuntimeFailure(DeconvError):
    """onnxruntime could not create a session or run the model."""


class DeconvWarning(UserWarning):
    """A model compiles but will not run everywhere (e.g. float64 on onnxruntime's CPU provider)."""
