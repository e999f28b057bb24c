"""What every answer of the compiler must look like, shared by the fuzz properties: a `SpecError`
whose every problem has a message and a location, a CLI run that exits 0 or 2 (never 1 or a
traceback), and the tolerance a compiled model's numbers get against the numpy reference.
"""

from __future__ import annotations

import traceback
from typing import Any

from click.testing import CliRunner
from deconv_compiler.cli.main import main

import deconv_compiler as dc

# Largest accepted |onnxruntime - reference| relative to max(1, max|reference|), by compute dtype.
TOLERANCE = {"float32": 1e-5, "float16": 1e-2, "float64": 1e-9}


def least_precise(dtypes: set[str]) -> str:
    """The compute dtype whose tolerance applies to a model computing in `dtypes`."""
    return max(dtypes, key=lambda dtype: TOLERANCE[dtype])


def assert_good_spec_error(error: dc.SpecError, context: str) -> None:
    assert error.problems, f"{context}: SpecError without problems"
    for problem in error.problems:
        assert isinstance(problem, dc.Problem), f"{context}: {problem!r} is not a Problem"
        assert isinstance(problem.message, str) and problem.message.strip(), (
            f"{context}: empty message in {problem!r}"
        )
        assert problem.path or problem.file, (
            f"{context}: problem with neither a field path nor a file: {problem!r}"
        )
        str(problem)  # renders


def invoke(args: list[str]) -> Any:
    """`deconvc ARGS` in this process (click's runner); exceptions are kept on the result."""
    return CliRunner().invoke(main, args, catch_exceptions=True)


def assert_clean_exit(result: Any, command: str) -> None:
    where = f"deconvc {command}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(*result.exc_info))
        raise AssertionError(
            f"{where} raised {type(result.exception).__name__}: {result.exception}\n{trace[-3000:]}"
        )
    assert result.exit_code in (0, 2), f"{where} exited {result.exit_code}: {result.stderr[-2000:]}"
    if result.exit_code == 2:
        assert result.stderr.strip(), f"{where}: exit 2 with nothing on stderr"
        assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, (
            f"{where}: {result.stderr[-2000:]}"
        )
