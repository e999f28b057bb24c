"""The per-example time limit: a runaway fails its own example with `Hang` and leaves nothing armed.

A `Hang` raised inside a finalizer is swallowed by Python and reported as "unraisable", which pytest
(warnings as errors) turns into an error in whatever test's teardown comes next: here it must
still fail the guarded block, and never reach pytest's unraisable hook.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

import pytest

from tests.fuzz.limits import Hang, _expired, time_limit

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="POSIX interval timers")


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def _nothing_armed() -> None:
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert time_limit._active is None


def test_a_busy_loop_fails_with_hang_on_cpu_time() -> None:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGPROF, signal.SIGALRM)}
    with pytest.raises(Hang, match="spin used more than 0.2 s of CPU time"):
        with time_limit("spin", cpu_s=0.2, wall_s=30):
            _spin(10)
    _nothing_armed()
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers


def test_a_blocked_wait_fails_with_hang_on_wall_time() -> None:
    with pytest.raises(Hang, match="did not finish within 0.2 s"):
        with time_limit("sleep", cpu_s=30, wall_s=0.2):
            time.sleep(10)
    _nothing_armed()


def test_a_hang_swallowed_in_a_finalizer_still_fails_the_block() -> None:
    class SlowToDelete:
        def __del__(self) -> None:
            _spin(1)  # the limit expires in here: Python cannot propagate the Hang

    seen: list[Any] = []
    hook = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        with pytest.raises(Hang, match="finalizer used more than"):
            with time_limit("finalizer", cpu_s=0.2, wall_s=30):
                obj = SlowToDelete()
                del obj
    finally:
        sys.unraisablehook = hook
    assert seen == [], "a Hang reached the unraisable hook"
    _nothing_armed()


def test_a_block_within_its_limit_is_left_alone() -> None:
    with time_limit("quick", cpu_s=5, wall_s=5) as guard:
        _spin(0.05)
    assert guard.fired is None
    _nothing_armed()


def test_a_signal_after_the_block_is_ignored() -> None:
    with time_limit("done", cpu_s=5, wall_s=5):
        pass
    _expired(signal.SIGPROF, None)  # what a signal already on its way when the block ended runs
