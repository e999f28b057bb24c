"""Budgets of the fuzz tests: hypothesis profiles → examples per property, per-example time and
memory limits, and the tally that proves a property checked what it claims.

Profiles: "ci" (the default: derandomized, no example database, the same 5,250 examples every run)
and "thorough" (10x the examples, a fresh random draw each run, failures replayed from
.hypothesis/): `HYPOTHESIS_PROFILE=thorough python -m pytest tests/fuzz`. Loading this module
loads the profile, so every fuzz module imports its example count from here.

Limits: `time_limit` turns a hang into a `Hang` raised in that example, `memory_limit` turns a
runaway allocation into a MemoryError in that example, instead of stalling or killing the run.
The time limit counts the process' CPU time (ITIMER_PROF), which a loaded machine does not inflate
the way it inflates wall time, with a far larger wall-clock limit (ITIMER_REAL) behind it for a hang
that blocks without using the CPU (a FIFO opened for reading, a deadlock).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, settings

# --- hypothesis profiles and example counts ----------------------------------------------------

_COMMON: dict[str, Any] = {
    "deadline": None,
    # no explain phase: its line tracing makes the deep-nesting examples 50x slower (false hangs)
    "phases": [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
}
settings.register_profile("ci", max_examples=1_500, derandomize=True, database=None, **_COMMON)
settings.register_profile("thorough", max_examples=15_000, derandomize=False, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def examples(share: float) -> int:
    """A property's number of examples: a share of the profile's max_examples."""
    return max(1, int(settings.default.max_examples * share))


MAPPING_EXAMPLES = examples(2.0)  # ci: 3,000; thorough: 30,000
FILE_EXAMPLES = examples(1.0)  # ci: 1,500; thorough: 15,000
KERAS_EXAMPLES = examples(0.5)  # ci: 750; thorough: 7,500

# --- time ------------------------------------------------------------------------------------------

# The slowest examples (a 10,000-item kernel_size, 1,000 repeated keys: two CLI runs each) use
# 0.6 s of CPU here; 100x that never fires on a sound run, however busy the machine (a 3x
# oversubscribed 2-core machine ran tests/fuzz in 7 minutes without a Hang).
EXAMPLE_CPU_S = 60.0
# Only for a hang that sleeps or blocks (no CPU used): wall time, 5x the CPU limit, for a loaded machine.
EXAMPLE_WALL_S = 300.0
# After the first Hang, another one every this many seconds until the block is left: a Hang that
# Python had to swallow (raised inside a __del__ or a weakref callback) is raised again elsewhere.
_REPEAT_S = 2.0


class Hang(Exception):
    """An example ran past its time limit."""


class time_limit:  # noqa: N801 - a context manager, used like contextlib's
    """Raise `Hang` in the main thread if the block uses more than `cpu_s` seconds of the process'
    CPU time or `wall_s` seconds of wall time (POSIX; elsewhere, and off the main thread, no limit).

    The timers are cancelled and the previous handlers and unraisable hook restored on every exit.
    A timer signal handled after the block ended (or while it is ending) does nothing, and a Hang
    swallowed inside the block (Python reports an exception raised in a finalizer as "unraisable",
    which pytest turns into a teardown error) is kept from pytest and raised when the block ends,
    so a hang always fails its own example and never leaks into another test's teardown.
    """

    _active: time_limit | None = None  # the block being timed; the handler raises only into it

    def __init__(self, what: str, cpu_s: float = EXAMPLE_CPU_S, wall_s: float = EXAMPLE_WALL_S) -> None:
        self.what = what
        self.cpu_s = cpu_s
        self.wall_s = wall_s
        self.fired: str | None = None  # why the limit was hit, once it is
        self._enabled = False
        self._handlers: dict[int, Any] = {}
        self._hook: Any = None

    def __enter__(self) -> time_limit:
        if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
            return self  # Python runs signal handlers in the main thread only
        if time_limit._active is not None:
            raise RuntimeError("time_limit blocks do not nest")
        self._enabled = True
        self._handlers = {sig: signal.signal(sig, _expired) for sig in (signal.SIGPROF, signal.SIGALRM)}
        self._hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        time_limit._active = self
        signal.setitimer(signal.ITIMER_PROF, self.cpu_s, _REPEAT_S)
        signal.setitimer(signal.ITIMER_REAL, self.wall_s, _REPEAT_S)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: types.TracebackType | None
    ) -> bool:
        # First, before any call: from here on the handler only records (see `_expired`).
        time_limit._active = None
        if not self._enabled:
            return False
        self._enabled = False
        try:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.setitimer(signal.ITIMER_REAL, 0)
            # A signal that arrived before the cancel has been handled by now (CPython runs pending
            # handlers after each call), by `_expired`: restoring SIG_DFL with one still pending
            # would have Python report "signal ignored due to race condition" as unraisable.
        finally:
            for sig, handler in self._handlers.items():
                signal.signal(sig, handler)
            sys.unraisablehook = self._hook
        if self.fired is not None and kind is None:
            raise Hang(self.fired)  # the Hang was swallowed (a finalizer, a broad `except`)
        return False

    def _unraisable(self, unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, Hang):
            return  # recorded in `fired`: raised again, into the block or when it ends
        self._hook(unraisable)

    def message(self, signum: int) -> str:
        if signum == signal.SIGPROF:
            return f"{self.what} used more than {self.cpu_s:g} s of CPU time"
        return f"{self.what} did not finish within {self.wall_s:g} s (wall time)"


def _expired(signum: int, frame: types.FrameType | None) -> None:
    guard = time_limit._active
    if guard is None:
        return  # the block has ended: nothing left to interrupt
    guard.fired = guard.fired or guard.message(signum)
    if frame is not None and frame.f_code is time_limit.__exit__.__code__:
        return  # the block is ending: `__exit__` raises it once the timers are off
    raise Hang(guard.fired)


# --- memory ----------------------------------------------------------------------------------------

EXAMPLE_MEMORY_BYTES = 4 * 2**30  # address space one example may add: beyond it, MemoryError


def _address_space() -> int | None:
    """This process' virtual memory size in bytes (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class memory_limit:  # noqa: N801 - a context manager, used like contextlib's
    """Cap the address space at its current size + `extra` (Linux): a runaway allocation fails
    with MemoryError in the example instead of the machine killing the whole test run."""

    def __init__(self, extra: int = EXAMPLE_MEMORY_BYTES) -> None:
        self.extra = extra
        self._previous: tuple[int, int] | None = None

    def __enter__(self) -> memory_limit:
        try:
            import resource
        except ImportError:  # pragma: no cover
            return self
        used = _address_space()
        if used is None:
            return self
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = used + self.extra if hard == resource.RLIM_INFINITY else min(used + self.extra, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        self._previous = (soft, hard)
        return self

    def __exit__(self, *exc_info: object) -> bool:
        if self._previous is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, self._previous)
        return False


# --- what the examples did ---------------------------------------------------------------------------


class Outcomes:
    """What a property did with each example: sent to `hypothesis.event` (shown by
    `--hypothesis-show-statistics`) and counted, so a test placed after the property in its module
    (pytest runs a module's tests in order) can require that enough examples were really checked."""

    def __init__(self, prop: str) -> None:
        self.prop = prop
        self.counts: Counter[str] = Counter()

    def record(self, outcome: str) -> None:
        event(outcome)
        self.counts[outcome] += 1

    def require(self, outcome: str, floor: int) -> None:
        total = sum(self.counts.values())
        if total == 0:
            pytest.skip(f"{self.prop} did not run in this session: the floor is checked right after it")
        shown = ", ".join(f"{name}: {count}" for name, count in self.counts.most_common())
        assert self.counts[outcome] >= floor, (
            f"{self.prop}: only {self.counts[outcome]} of {total} examples ended '{outcome}' "
            f"(floor {floor}); all outcomes: {shown}"
        )
