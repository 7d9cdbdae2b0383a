"""Tests for threadpoll._poll.fd_mutex: Go's fd_mutex_test.go, ported whole, plus try-lock.

Every test runs on both implementations' fdMutex: the Python one (``FDMutex``) and the C
core's (``threadpoll._cpoll.FDMutex``, when built), which share the API and the state word.
"""

from __future__ import annotations

import functools
import os
import queue
import random
import sys
import threading
import time
from typing import Callable, cast

import pytest
from support import impls, thread_on_line

from threadpoll._poll.fd_mutex import (
    MUTEX_CLOSED,
    MUTEX_REF,
    MUTEX_REF_MASK,
    MUTEX_RLOCK,
    MUTEX_RMASK,
    MUTEX_RWAIT,
    MUTEX_WLOCK,
    MUTEX_WMASK,
    MUTEX_WWAIT,
    OVERFLOW_MSG,
    FDMutex,
    FDMutexError,
    poison_after_fork,
)
from threadpoll._runtime import netpoll_c

STRESS_SCALE = float(os.environ.get("THREADPOLL_STRESS_SCALE", "1"))

MutexFactory = Callable[[], FDMutex]


@pytest.fixture(params=impls())
def new_mutex(request: pytest.FixtureRequest) -> MutexFactory:
    """Makes a fresh fdMutex of the implementation under test."""
    if request.param == "c":
        assert netpoll_c.cpoll is not None
        return cast(MutexFactory, netpoll_c.cpoll.FDMutex)
    return FDMutex


def refs(mu: FDMutex) -> int:
    return (mu.state & MUTEX_REF_MASK) // MUTEX_REF


def read_waiters(mu: FDMutex) -> int:
    return (mu.state & MUTEX_RMASK) // MUTEX_RWAIT


def write_waiters(mu: FDMutex) -> int:
    return (mu.state & MUTEX_WMASK) // MUTEX_WWAIT


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``cond`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached within {timeout} s")
        time.sleep(0.0005)


def start(target: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


def join_all(threads: list[threading.Thread], timeout: float = 10.0) -> None:
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "thread did not finish"


def test_mutex_lock(new_mutex: MutexFactory) -> None:
    """Port of internal/poll TestMutexLock."""
    mu = new_mutex()

    assert mu.incref()
    assert not mu.decref()

    assert mu.rwlock(True)
    assert not mu.rwunlock(True)

    assert mu.rwlock(False)
    assert not mu.rwunlock(False)

    assert mu.state == 0


def test_mutex_close(new_mutex: MutexFactory) -> None:
    """Port of internal/poll TestMutexClose."""
    mu = new_mutex()
    assert mu.incref_and_close()

    assert not mu.incref()
    assert not mu.rwlock(True)
    assert not mu.rwlock(False)
    assert not mu.incref_and_close()


@pytest.mark.timeout(30)
def test_mutex_close_unblock(new_mutex: MutexFactory) -> None:
    """Port of internal/poll TestMutexCloseUnblock.

    Go sleeps 1 ms to let the goroutines block; here the read-waiter count in the state word
    says when all four are waiting.
    """
    results: queue.Queue[bool] = queue.Queue()
    mu = new_mutex()
    assert mu.rwlock(True)
    threads = [start(lambda: results.put(mu.rwlock(True))) for _ in range(4)]
    wait_until(lambda: read_waiters(mu) == 4)
    # Concurrent threads must not be able to read lock the mutex,
    assert results.empty()
    # and a waiter holds no reference: only ours is counted.
    assert refs(mu) == 1

    assert mu.incref_and_close()  # Must unblock the readers.
    for _ in range(4):
        assert results.get(timeout=10) is False, "a waiter got the lock after close"
    join_all(threads)
    assert read_waiters(mu) == 0

    assert not mu.decref()
    assert mu.rwunlock(True)  # the last reference after close: the caller must destroy
    assert mu.state == MUTEX_CLOSED


@pytest.mark.timeout(30)
def test_mutex_close_unblock_writers(new_mutex: MutexFactory) -> None:
    """Close wakes write waiters too, and clears both waiter counts at once."""
    results: queue.Queue[bool] = queue.Queue()
    mu = new_mutex()
    assert mu.rwlock(True)
    assert mu.rwlock(False)
    threads = [start(lambda: results.put(mu.rwlock(True))) for _ in range(2)]
    threads += [start(lambda: results.put(mu.rwlock(False))) for _ in range(3)]
    wait_until(lambda: read_waiters(mu) == 2 and write_waiters(mu) == 3)
    assert results.empty()

    assert mu.incref_and_close()
    assert mu.state & (MUTEX_RMASK | MUTEX_WMASK) == 0
    assert [results.get(timeout=10) for _ in range(5)] == [False] * 5
    join_all(threads)

    assert not mu.rwunlock(True)
    assert not mu.rwunlock(False)
    assert mu.decref()


@pytest.mark.timeout(30)
def test_mutex_unlock_wakes_waiter(new_mutex: MutexFactory) -> None:
    """rwunlock posts one waiter, which then takes the lock (no hand-off: it competes)."""
    got: queue.Queue[bool] = queue.Queue()
    mu = new_mutex()
    assert mu.rwlock(False)
    t = start(lambda: got.put(mu.rwlock(False)))
    wait_until(lambda: write_waiters(mu) == 1)
    assert not mu.rwunlock(False)
    assert got.get(timeout=10) is True
    join_all([t])
    assert mu.state == MUTEX_WLOCK | MUTEX_REF
    assert not mu.rwunlock(False)
    assert mu.state == 0


@pytest.mark.timeout(30)
def test_python_mutex_waiter_semaphores_made_by_the_first_wait() -> None:
    """A mutex nobody waits for has no waiter semaphores (memory per descriptor); the first
    waiter of a direction makes that direction's, once, and the unlock wakes it there. (The
    C core's makes them on first need too, and on reading the attribute: not looked at
    here.)"""
    mu = FDMutex()
    assert mu.rsema is None and mu.wsema is None
    assert mu.rwlock(True) and not mu.rwunlock(True)
    assert mu.rsema is None and mu.wsema is None
    assert mu.rwlock(False)
    got: queue.Queue[bool] = queue.Queue()
    t = start(lambda: got.put(mu.rwlock(False)))
    wait_until(lambda: write_waiters(mu) == 1)
    wait_until(lambda: mu.wsema is not None)
    sema = mu.wsema
    assert mu.rsema is None
    assert not mu.rwunlock(False)
    assert got.get(timeout=10) is True
    join_all([t])
    assert mu.wsema is sema
    assert not mu.rwunlock(False)


def test_python_mutex_first_semaphore_use_from_two_threads_makes_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two first users of a direction's semaphore (a waiter and a closer waking it, say)
    agree on one: the second waits under the mutex's lock while the first makes it."""
    from threadpoll._poll import fd_mutex

    mu = FDMutex()
    made: list[object] = []
    second: list[threading.Thread] = []
    result: list[object] = []
    real = fd_mutex.Sema

    def slow_sema() -> object:
        sema = real()
        made.append(sema)
        if len(made) == 1:
            t = start(lambda: result.append(mu._sema(True)))
            second.append(t)
            # The second is past its unlocked look and waits for the lock this one holds.
            wait_until(lambda: thread_on_line(t.ident, FDMutex._sema, "with self._lock:"))
        return sema

    monkeypatch.setattr(fd_mutex, "Sema", slow_sema)
    first = mu._sema(True)
    join_all(second)
    assert result == [first] and made == [first] and mu.rsema is first


def test_mutex_trylock(new_mutex: MutexFactory) -> None:
    """rwlock(read, wait=False) fails at once when the lock is busy, taking nothing."""
    mu = new_mutex()
    assert mu.rwlock(True, False)
    busy = mu.state
    assert busy == MUTEX_RLOCK | MUTEX_REF
    assert not mu.rwlock(True, False)
    assert mu.state == busy  # no reference, no waiter count

    # Reads and writes are independent.
    assert mu.rwlock(False, False)
    assert not mu.rwlock(False, False)
    assert mu.state == MUTEX_RLOCK | MUTEX_WLOCK | 2 * MUTEX_REF

    assert not mu.rwunlock(False)
    assert not mu.rwunlock(True)
    assert mu.rwlock(True, False)
    assert not mu.rwunlock(True)

    assert mu.incref_and_close()
    assert not mu.rwlock(True, False)
    assert not mu.rwlock(False, False)
    assert mu.decref()


def test_mutex_closing(new_mutex: MutexFactory) -> None:
    """closing() reports the closed bit, whatever references remain."""
    mu = new_mutex()
    assert not mu.closing()
    assert mu.incref()
    assert mu.incref_and_close()
    assert mu.closing()
    assert not mu.decref()
    assert mu.decref()
    assert mu.closing()


def test_mutex_panic(new_mutex: MutexFactory) -> None:
    """Port of internal/poll TestMutexPanic."""

    def ensure_panics(f: Callable[[], object]) -> None:
        with pytest.raises(FDMutexError, match="^inconsistent poll.fdMutex$"):
            f()

    mu = new_mutex()
    ensure_panics(lambda: mu.decref())
    ensure_panics(lambda: mu.rwunlock(True))
    ensure_panics(lambda: mu.rwunlock(False))

    ensure_panics(lambda: (mu.incref(), mu.decref(), mu.decref()))
    ensure_panics(lambda: (mu.rwlock(True), mu.rwunlock(True), mu.rwunlock(True)))
    ensure_panics(lambda: (mu.rwlock(False), mu.rwunlock(False), mu.rwunlock(False)))

    # ensure that it's still not broken
    assert mu.incref()
    assert not mu.decref()
    assert mu.rwlock(True)
    assert not mu.rwunlock(True)
    assert mu.rwlock(False)
    assert not mu.rwunlock(False)
    assert mu.state == 0


@pytest.mark.timeout(120)
def test_mutex_overflow_panics(new_mutex: MutexFactory) -> None:
    """Port of internal/poll TestMutexOverflowPanics."""
    mu1 = new_mutex()
    with pytest.raises(FDMutexError) as info:
        for _ in range(1 << 21):
            mu1.incref()
    msg = str(info.value)
    assert "too many" in msg and "inconsistent" not in msg
    assert msg == OVERFLOW_MSG
    # The failed incref changed nothing: every one of the 20 bits is a reference.
    assert mu1.state == MUTEX_REF_MASK


@pytest.mark.parametrize(
    "field",
    ["incref", "incref_and_close", "rlock", "wlock", "rwait", "wwait"],
)
def test_mutex_overflow_each_field(field: str, new_mutex: MutexFactory) -> None:
    """Every 20-bit count raises Go's overflow message and leaves the state as it was."""
    mu = new_mutex()
    full = {
        "incref": MUTEX_REF_MASK,
        "incref_and_close": MUTEX_REF_MASK,
        "rlock": MUTEX_REF_MASK,
        "wlock": MUTEX_REF_MASK,
        "rwait": MUTEX_RLOCK | MUTEX_REF | MUTEX_RMASK,
        "wwait": MUTEX_WLOCK | MUTEX_REF | MUTEX_WMASK,
    }[field]
    op: Callable[[], bool] = {
        "incref": mu.incref,
        "incref_and_close": mu.incref_and_close,
        "rlock": lambda: mu.rwlock(True),
        "wlock": lambda: mu.rwlock(False),
        "rwait": lambda: mu.rwlock(True),
        "wwait": lambda: mu.rwlock(False),
    }[field]
    mu.state = full  # test-only shortcut to a full count
    with pytest.raises(FDMutexError, match="^too many concurrent operations"):
        op()
    assert mu.state == full


@pytest.mark.timeout(300)
def test_mutex_stress(new_mutex: MutexFactory) -> None:
    """Port of internal/poll TestMutexStress.

    Go runs P=8 goroutines of N=1e6 random operations (4 x 1e4 with -short) and raises
    GOMAXPROCS to P. Here N is 200_000 scaled by THREADPOLL_STRESS_SCALE (default 1: about
    two seconds on CPython 3.11, several on 3.9), and a short GIL switch interval stands in
    for GOMAXPROCS: threads then interleave inside the critical sections, so the waiter
    path runs thousands of times.
    """
    p = 8
    n = max(1, int(200_000 * STRESS_SCALE))
    mu = new_mutex()
    read_state = [0, 0]
    write_state = [0, 0]
    errors: list[str] = []
    seeds = random.Random().getrandbits(32)

    def worker(seed: int) -> None:
        try:
            work(seed)
        except Exception as e:  # a thread's exception would only be a warning
            errors.append(repr(e))

    def work(seed: int) -> None:
        r = random.Random(seed)
        for _ in range(n):
            op = r.randrange(3)
            if op == 0:
                if not mu.incref():
                    errors.append("incref failed")
                    return
                if mu.decref():
                    errors.append("decref reported the last reference")
                    return
            elif op == 1:
                if not mu.rwlock(True):
                    errors.append("rwlock(read) failed")
                    return
                # Ensure that it provides mutual exclusion for readers.
                if read_state[0] != read_state[1]:
                    errors.append("two readers inside")
                    return
                read_state[0] += 1
                read_state[1] += 1
                if mu.rwunlock(True):
                    errors.append("rwunlock(read) reported the last reference")
                    return
            else:
                if not mu.rwlock(False):
                    errors.append("rwlock(write) failed")
                    return
                # Ensure that it provides mutual exclusion for writers.
                if write_state[0] != write_state[1]:
                    errors.append("two writers inside")
                    return
                write_state[0] += 1
                write_state[1] += 1
                if mu.rwunlock(False):
                    errors.append("rwunlock(write) reported the last reference")
                    return

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        threads = [start(functools.partial(worker, seeds + i)) for i in range(p)]
        join_all(threads, timeout=240)
    finally:
        sys.setswitchinterval(old_interval)
    assert errors == [], f"seed {seeds}: {errors[:5]}"
    assert read_state[0] == read_state[1]
    assert write_state[0] == write_state[1]
    assert mu.state == 0
    assert mu.incref_and_close()
    assert mu.decref()


def test_mutex_poison_after_fork(new_mutex: MutexFactory) -> None:
    """In a forked child, lock bits held by parent threads are poisoned (rwlock fails at once
    instead of waiting for a thread that is gone), waiter counts are cleared, and the
    references parent threads held come back for clear_poison to drop at close. Called here
    in the parent, as the fork handler would in the child: the mutex cannot tell."""
    mu = new_mutex()
    assert mu.rwlock(True)  # a parent thread's read
    assert mu.incref()  # a parent thread's misc operation
    mu.state += MUTEX_WWAIT  # and a parent thread waiting to write (test-only shortcut)
    refs = poison_after_fork(mu)
    assert refs == 2 * MUTEX_REF
    assert mu.poisoned == MUTEX_RLOCK
    assert mu.state == MUTEX_RLOCK | 2 * MUTEX_REF  # the waiter count is gone
    assert not mu.rwlock(True)  # poisoned: fails, does not wait
    assert mu.rwlock(False)  # the write side was free: the child may use it
    assert not mu.rwunlock(False)
    assert mu.incref_and_close()
    # clear_poison after close leaves the word alone: close already counted on it.
    mu.clear_poison(refs)
    assert mu.poisoned == 0
    assert mu.state == MUTEX_CLOSED | MUTEX_RLOCK | 3 * MUTEX_REF


def test_mutex_clear_poison_lets_close_finish(new_mutex: MutexFactory) -> None:
    """clear_poison before close drops what parent threads held: the child's own close is
    then the last reference."""
    mu = new_mutex()
    assert mu.rwlock(False)
    refs = poison_after_fork(mu)
    mu.clear_poison(refs)
    assert mu.state == 0 and mu.poisoned == 0
    assert mu.incref_and_close()
    assert mu.decref()


def test_mutex_poison_after_fork_of_a_closed_mutex(new_mutex: MutexFactory) -> None:
    """A mutex closed before the fork poisons nothing and reports no references."""
    mu = new_mutex()
    assert mu.rwlock(True)
    assert mu.incref_and_close()
    assert poison_after_fork(mu) == 0
    assert mu.poisoned == 0
    assert mu.state == MUTEX_CLOSED | MUTEX_RLOCK | 2 * MUTEX_REF
