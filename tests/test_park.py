"""Tests for threadpoll._runtime.park: the counting semaphore behind the fdMutex and close."""

from __future__ import annotations

import sys
import threading

import pytest
from support import Runner, interrupt_points, wait_until

from threadpoll._runtime import park
from threadpoll._runtime.park import Sema

pytestmark = pytest.mark.timeout(60)


def _asleep(t: threading.Thread) -> bool:
    """Whether t is blocked inside Sema.acquire's sleep (or, before, Condition.wait)."""
    f = sys._current_frames().get(t.ident or 0)
    return f is not None and f.f_code.co_name in ("acquire", "wait")


def test_release_wakes_sleepers_and_counts_the_rest() -> None:
    s = Sema()
    sleepers = [Runner(s.acquire, name=f"sleeper-{i}") for i in range(3)]
    wait_until(lambda: all(_asleep(r.thread) for r in sleepers), what="three sleepers")
    s.release(5)
    for r in sleepers:
        r.join(5)
    s.acquire()  # two tokens were left over
    s.acquire()
    late = Runner(s.acquire, name="late")
    assert not late.done.wait(0.1)
    s.release()
    late.join(5)


def test_interrupt_anywhere_in_acquire_loses_no_token_and_no_wakeup() -> None:
    """A signal handler that raises (Ctrl-C) runs where CPython checks for signals: at a
    call's return and a function's entry. For each such point in acquire in turn (a profile
    function raises KeyboardInterrupt there), with a token released while the thread sleeps:
    the token is neither lost nor duplicated, and the next sleeper is woken by the next
    release. threading.Semaphore's Condition could keep a stale waiter queued, which the next
    release woke instead of the real sleeper."""
    # park.py, and threading.py for what it calls there (threading.Semaphore, before).
    files = (park.__file__, threading.__file__)
    where: set[str] = set()
    for point in interrupt_points(lambda f: f in files):
        k = point.k
        s = Sema()
        waiter = Runner(lambda s=s, p=point: p.run(s.acquire), name=f"waiter-{k}")
        wait_until(lambda w=waiter: w.done.is_set() or _asleep(w.thread), what="acquire or raise")
        released = not waiter.done.is_set()
        if released:
            s.release()  # the exception may land after the hand-off
        exc = waiter.join_exc()
        if point.hit is None:
            assert exc is None
            break
        where.add(point.hit)
        assert isinstance(exc, KeyboardInterrupt), f"point {k} in {point.hit}: {exc!r}"
        if released:
            # The released token was not consumed: it is still there, exactly once.
            taker = Runner(s.acquire, name=f"taker-{k}")
            taker.join(5)
        # No token left over, and no stale sleeper: the next release wakes the next sleeper.
        sleeper = Runner(s.acquire, name=f"sleeper-{k}")
        wait_until(lambda r=sleeper: _asleep(r.thread), what=f"sleeper after point {k}")
        assert not sleeper.done.is_set(), f"point {k} in {point.hit}: a token was duplicated"
        s.release()
        sleeper.join(5)
    assert "acquire" in where, (k, where)
