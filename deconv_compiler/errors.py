"""Errors raised by the compiler.

Every error the user can cause derives from `DeconvError`. A `SpecError` carries *all* the
problems found in one spec, each with a field path (`layers[0].strides[1]`) and, where the
spec came from a file, the file and line. The CLI turns `DeconvError` into exit code 2.
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


class DeconvError(Exception):
    """Base class of every error caused by the user's input."""


class SpecError(DeconvError):
    """A spec (or its weights) is invalid; `problems` lists everything found, in order."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class CompileError(DeconvError):
    """The spec is valid but cannot be lowered with the chosen options (e.g. opset too old)."""


class RuntimeFailure(DeconvError):
    """onnxruntime could not create a session or run the model."""


class DeconvWarning(UserWarning):
    """A model compiles but will not run everywhere (e.g. float64 on onnxruntime's CPU provider)."""
