"""Errors raised by the compiler.

Every error the user can cause derives from `DeconvError`. A `SpecError` carries *all* the
problems found in one spec, each with a field path (`layers[0].strides[1]`) and, where the
spec came from a file, the file and line. The CLI turns `DeconvError` into exit code 2.
"""

from __future__ import annotations

from dataclasses import dataclass

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
