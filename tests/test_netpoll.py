"""The runtime poller (threadpoll/_runtime/netpoll.py) driven through its entry points.

Every test runs on every backend (the ``rt`` fixture). The races that matter are made
deterministic with the runtime's hook points: ``after_eagain`` is simulated by the reader loop
below, ``before_park`` runs after a thread published PD_WAIT and before it commits to parking,
``before_ready`` runs in the poller between netpoll and netpollready.

"Row 7" and the like are the rows of the rg/wg transition table in netpoll.py's docstring.
Tests named ``test_Go_name`` port Go's test of that name (src/runtime/netpoll*_test.go,
src/internal/poll/*_test.go); the others test what Go leaves to its scheduler.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Callable

import pytest
from conftest import PY_BACKENDS, make_runtime
from support import Runner, impls, interrupt_points, parked, thread_on_line, wait_until

from threadpoll._runtime import netpoll, trace
from threadpoll._runtime.netpoll import (
    EXPIRED,
    NO_DEADLINE,
    PD_NIL,
    PD_PARKED,
    PD_READY,
    PD_WAIT,
    POLL_ERR_CLOSING,
    POLL_ERR_NOT_POLLABLE,
    POLL_ERR_TIMEOUT,
    POLL_NO_ERROR,
    InternalError,
    PollDesc,
    netpollblock,
    netpollgoready,
    netpollunblock,
    runtime_poll_close,
    runtime_poll_open,
    runtime_poll_reset,
    runtime_poll_set_deadline,
    runtime_poll_unblock,
    runtime_poll_wait,
)
from threadpoll._runtime.proc import Runtime

# These tests drive the Python runtime itself (its hook points, tracing and internals);
# the C core has its own in test_cpoll.py.
pytestmark = [pytest.mark.timeout(30), pytest.mark.python_runtime]

Pipe = tuple[int, int, PollDesc]


@contextlib.contextmanager
def pipe_pd(rt: Runtime) -> Iterator[Pipe]:
    """A non-blocking pipe whose read end is registered with rt."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    pd, errno = runtime_poll_open(r, rt)
    assert errno == 0 and pd is not None
    try:
        yield r, w, pd
    finally:
        with pd.lock:
            closing = pd.closing
        if not closing:
            runtime_poll_unblock(pd)
        runtime_poll_close(pd)
        os.close(r)
        os.close(w)


def read_via_runtime(
    r: int, pd: PollDesc, after_eagain: Callable[[], None] | None = None
) -> bytes | int:
    """internal/poll's Read loop, at the runtime level: returns data or a poll error code."""
    code = runtime_poll_reset(pd, "r")
    if code != POLL_NO_ERROR:
        return code
    while True:
        try:
            return os.read(r, 100)
        except BlockingIOError:
            if after_eagain is not None:
                after_eagain()
                after_eagain = None
            code = runtime_poll_wait(pd, "r")
            if code != POLL_NO_ERROR:
                return code


def test_parked_reader_readied_by_poller(rt: Runtime) -> None:
    """The issue's done-criterion: a thread parked on a pipe is readied by the poller."""
    with pipe_pd(rt) as (r, w, pd):
        reader = Runner(lambda: read_via_runtime(r, pd))
        wait_until(parked(pd), what="reader parked")
        events = rt.events
        os.write(w, b"hello")
        assert reader.join() == b"hello"
        assert rt.events > events
        assert pd.rg == PD_NIL


def test_poller_is_one_daemon_thread(rt: Runtime) -> None:
    """One poller thread per runtime, started on the first open; more opens add none."""
    with pipe_pd(rt):
        poller = rt.poller
        assert poller is not None and poller.is_alive() and poller.daemon
        assert poller.name.startswith("threadpoll-poller")
        before = set(threading.enumerate())
        with pipe_pd(rt), pipe_pd(rt), pipe_pd(rt):
            assert set(threading.enumerate()) == before
            assert rt.poller is poller


def test_readiness_without_waiter_is_kept_as_ready(rt: Runtime) -> None:
    """Row 7: an edge that arrives while nobody waits becomes pdReady and is consumed by the
    next netpollblock without parking (row 1)."""
    if "r" in rt.backend.arm_modes:
        pytest.skip("level-triggered backend: interest is armed per wait, nothing is kept")
    with pipe_pd(rt) as (r, w, pd):
        os.write(w, b"x")
        wait_until(lambda: pd.rg == PD_READY, what="pdReady from the poller")
        assert netpollblock(pd, "r", False) is True
        assert pd.rg == PD_NIL
        assert os.read(r, 10) == b"x"


def test_readiness_between_eagain_and_park_is_not_lost(rt: Runtime) -> None:
    """Data that arrives after the syscall said EAGAIN but before the thread parks must wake
    it: on edge-triggered backends the edge is kept as pdReady; on poll it is seen when the
    wait arms interest."""
    with pipe_pd(rt) as (r, w, pd):

        def arrive() -> None:
            os.write(w, b"late")
            if "r" not in rt.backend.arm_modes:
                wait_until(lambda: pd.rg == PD_READY, what="edge delivered before park")

        trace.start()
        try:
            got = read_via_runtime(r, pd, after_eagain=arrive)
        finally:
            events = trace.stop()
        assert got == b"late"
        if "r" not in rt.backend.arm_modes:
            assert not [e for e in events if e.kind == "park"], "should not have parked"


def test_close_between_check_and_park(rt: Runtime) -> None:
    """Row 13: an unblock that finds pdWait turns it to pdNil, the commit to park fails, and
    pollWait's re-check reports closing. The thread never sleeps."""
    with pipe_pd(rt) as (r, w, pd):
        seen = []

        def before_park(p: PollDesc, mode: str) -> None:
            seen.append(p.rg)
            # Close from another thread, inside the window, and wait for it to finish.
            closer = Runner(lambda: runtime_poll_unblock(p), name="closer")
            closer.join()

        rt.hooks.before_park = before_park
        try:
            trace.start()
            try:
                code = read_via_runtime(r, pd)
            finally:
                events = trace.stop()
        finally:
            rt.hooks.before_park = None
        assert seen == [PD_WAIT]
        assert code == POLL_ERR_CLOSING
        assert not [e for e in events if e.kind == "park"]
        assert pd.rg == PD_NIL


def test_deadline_into_past_between_check_and_park(rt: Runtime) -> None:
    with pipe_pd(rt) as (r, w, pd):
        rt.hooks.before_park = lambda p, m: runtime_poll_set_deadline(p, EXPIRED, "r")
        try:
            code = read_via_runtime(r, pd)
        finally:
            rt.hooks.before_park = None
        assert code == POLL_ERR_TIMEOUT


def test_ready_between_check_and_park(rt: Runtime) -> None:
    """Row 8: the poller turns pdWait into pdReady; the commit fails and the swap sees
    pdReady, so netpollblock returns True without sleeping."""
    with pipe_pd(rt) as (r, w, pd):
        done = []

        def before_park(p: PollDesc, mode: str) -> None:
            os.write(w, b"z")
            if "r" in rt.backend.arm_modes:
                return  # interest is armed: the poller readies the parked thread instead
            wait_until(lambda: p.rg == PD_READY, what="poller readied pdWait")
            done.append(True)

        rt.hooks.before_park = before_park
        try:
            assert read_via_runtime(r, pd) == b"z"
        finally:
            rt.hooks.before_park = None
        if "r" not in rt.backend.arm_modes:
            assert done == [True]


def test_close_wakes_parked_reader(rt: Runtime) -> None:
    with pipe_pd(rt) as (r, w, pd):
        reader = Runner(lambda: read_via_runtime(r, pd))
        wait_until(parked(pd))
        t0 = time.monotonic()
        runtime_poll_unblock(pd)
        assert reader.join() == POLL_ERR_CLOSING
        assert time.monotonic() - t0 < 1.0
        assert runtime_poll_reset(pd, "r") == POLL_ERR_CLOSING


def test_close_keeps_pending_ready(rt: Runtime) -> None:
    """Row 12: close and timeout never erase a pending pdReady."""
    with pipe_pd(rt) as (r, w, pd):
        with pd.lock:
            pd.rg = PD_READY
        runtime_poll_unblock(pd)
        assert pd.rg == PD_READY
        assert netpollblock(pd, "r", False) is True  # consumed; the caller re-checks after
        assert runtime_poll_wait(pd, "r") == POLL_ERR_CLOSING


def test_deadline_fires_for_parked_reader(rt: Runtime) -> None:
    with pipe_pd(rt) as (r, w, pd):
        runtime_poll_set_deadline(pd, time.monotonic() + 0.05, "r")
        t0 = time.monotonic()
        assert read_via_runtime(r, pd) == POLL_ERR_TIMEOUT
        elapsed = time.monotonic() - t0
        assert 0.045 <= elapsed < 2.0
        # Sticky: later operations fail at once, even with data buffered.
        os.write(w, b"data")
        assert runtime_poll_reset(pd, "r") == POLL_ERR_TIMEOUT
        assert pd.rd == EXPIRED


def test_deadline_moved_into_past_wakes_parked(rt: Runtime) -> None:
    with pipe_pd(rt) as (r, w, pd):
        reader = Runner(lambda: read_via_runtime(r, pd))
        wait_until(parked(pd))
        runtime_poll_set_deadline(pd, EXPIRED, "r")
        assert reader.join() == POLL_ERR_TIMEOUT


def test_deadline_moved_earlier_rearms_parked(rt: Runtime) -> None:
    with pipe_pd(rt) as (r, w, pd):
        runtime_poll_set_deadline(pd, time.monotonic() + 3600, "r")
        reader = Runner(lambda: read_via_runtime(r, pd))
        wait_until(parked(pd))
        t0 = time.monotonic()
        runtime_poll_set_deadline(pd, time.monotonic() + 0.05, "r")
        assert reader.join() == POLL_ERR_TIMEOUT
        assert time.monotonic() - t0 < 2.0


def test_deadline_extended_keeps_waiting(rt: Runtime) -> None:
    with pipe_pd(rt) as (r, w, pd):
        runtime_poll_set_deadline(pd, time.monotonic() + 0.2, "r")
        reader = Runner(lambda: read_via_runtime(r, pd))
        wait_until(parked(pd))
        runtime_poll_set_deadline(pd, NO_DEADLINE, "r")
        assert not reader.done.wait(0.4)  # the old deadline passes without effect
        assert pd.rg == PD_PARKED
        os.write(w, b"ok")
        assert reader.join() == b"ok"


def test_clearing_expired_deadline_unexpires(rt: Runtime) -> None:
    with pipe_pd(rt) as (r, w, pd):
        runtime_poll_set_deadline(pd, EXPIRED, "r")
        assert runtime_poll_reset(pd, "r") == POLL_ERR_TIMEOUT
        runtime_poll_set_deadline(pd, NO_DEADLINE, "r")
        assert runtime_poll_reset(pd, "r") == POLL_NO_ERROR


def test_write_deadline_leaves_reads_alone(rt: Runtime) -> None:
    with pipe_pd(rt) as (r, w, pd):
        runtime_poll_set_deadline(pd, EXPIRED, "rw")
        runtime_poll_set_deadline(pd, NO_DEADLINE, "r")
        assert runtime_poll_reset(pd, "w") == POLL_ERR_TIMEOUT
        assert runtime_poll_reset(pd, "r") == POLL_NO_ERROR


def test_timeout_wake_then_deadline_reset_parks_again(rt: Runtime) -> None:
    """pollWait's loop: the deadline fired and unblocked the reader, but before it ran the
    deadline was cleared. It must pretend nothing happened and park again."""
    with pipe_pd(rt) as (r, w, pd):
        reader = Runner(lambda: read_via_runtime(r, pd))
        wait_until(parked(pd))
        with pd.lock:  # the reader cannot run until we release
            pd.rd = EXPIRED
            if netpollunblock(pd, "r", False):
                netpollgoready(pd, "r")
            pd.rd = NO_DEADLINE
        wait_until(parked(pd), what="reader parked again")
        assert not reader.done.is_set()
        os.write(w, b"after")
        assert reader.join() == b"after"


def test_double_wait_throws(rt: Runtime) -> None:
    with pipe_pd(rt) as (r, w, pd):
        with pd.lock:
            pd.rg = PD_WAIT
        with pytest.raises(InternalError, match="runtime: double wait"):
            netpollblock(pd, "r", False)
        with pd.lock:
            pd.rg = PD_NIL


def test_exception_while_parked_leaves_no_stale_waiter(rt: Runtime) -> None:
    """A KeyboardInterrupt (here: any exception) raised in a parked thread leaves pdNil, so
    the next wait neither finds a stale waiter nor throws double wait."""
    with pipe_pd(rt) as (r, w, pd):

        class Boom(Exception):
            pass

        class RaisingWake:
            def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
                if blocking:
                    raise Boom
                return False

            def release(self) -> None:
                pass

        with pd.lock:
            real, pd.rwake = pd.rwake, RaisingWake()  # type: ignore[assignment]
        try:
            with pytest.raises(Boom):
                read_via_runtime(r, pd)
        finally:
            with pd.lock:
                pd.rwake = real
        assert pd.rg == PD_NIL
        reader = Runner(lambda: read_via_runtime(r, pd))
        wait_until(parked(pd))
        os.write(w, b"fine")
        assert reader.join() == b"fine"


@pytest.mark.timeout(60)
def test_interrupt_anywhere_in_a_wait_loses_no_wakeup(rt: Runtime) -> None:
    """A signal handler that raises (Ctrl-C) runs where CPython checks for signals: at a
    call's return and a function's entry. For each such point of runtime_poll_wait in turn
    (in threadpoll/_runtime: the runtime, the backend's arm and break; a profile function
    raises KeyboardInterrupt there), the exception comes out as itself,
    pd.lock is free, no waiter is left recorded, and the next wait is woken by the next
    readiness. threading.Condition.wait, interrupted after queueing its waiter and before
    its ``try``, left that waiter queued: the next notify went to it and the reader slept on."""
    runtime_dir = os.path.dirname(netpollblock.__code__.co_filename) + os.sep
    with pipe_pd(rt) as (r, w, pd):
        where: set[str] = set()
        for point in interrupt_points(lambda f: f.startswith(runtime_dir)):
            k = point.k
            wait_once = functools.partial(point.run, lambda: runtime_poll_wait(pd, "r"))
            waiter = Runner(wait_once, name=f"waiter-{k}")
            done = waiter.done
            wait_until(lambda d=done: d.is_set() or pd.rg == PD_PARKED, what="wait or raise")
            if not waiter.done.is_set():
                os.write(w, b"x")  # ready it; the exception may land after the wake-up
            exc = waiter.join_exc()
            _drain(r)
            if point.hit is None:
                assert exc is None and waiter.result == POLL_NO_ERROR
                break
            hit = point.hit
            where.add(hit)
            assert isinstance(exc, KeyboardInterrupt), f"point {k} in {hit}: {exc!r}"
            assert pd.lock.acquire(timeout=5), f"point {k} in {hit}: pd.lock left held"
            pd.lock.release()
            assert pd.rg in (PD_NIL, PD_READY) and pd.rparked_by is None, f"point {k}"
            # No stale waiter: the next wait is woken by the next readiness.
            reader = Runner(lambda: read_via_runtime(r, pd), name=f"reader-{k}")
            wait_until(parked(pd), what=f"reader parked after point {k} in {hit}")
            os.write(w, b"y")
            assert reader.join(5) == b"y", f"point {k} in {hit}"
        assert "_park" in where, (k, where)  # the points covered include the sleep itself


def _drain(r: int) -> None:
    while True:
        try:
            if not os.read(r, 1024):
                return
        except BlockingIOError:
            return


def test_readying_reader_does_not_wake_writer(rt: Runtime) -> None:
    with pipe_pd(rt) as (r, w, pd):
        with pd.lock:
            assert pd.rwake is not pd.wwake
        reader = Runner(lambda: read_via_runtime(r, pd))
        wait_until(parked(pd))
        with pd.lock:
            woke_writer = netpollunblock(pd, "w", True)
        assert woke_writer is False and pd.rg == PD_PARKED
        with pd.lock:
            pd.wg = PD_NIL
        os.write(w, b"r")
        assert reader.join() == b"r"


def test_stale_event_for_recycled_fd_is_harmless(rt: Runtime) -> None:
    """An event fetched for descriptor A, whose number is reused by descriptor B before the
    poller acts on it, is either dropped or a spurious wake-up that B's reader absorbs; A's
    parked reader gets the closing error, never B's data."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    pd_a, _ = runtime_poll_open(r, rt)
    assert pd_a is not None
    reader_a = Runner(lambda: read_via_runtime(r, pd_a), name="reader-A")
    wait_until(parked(pd_a), what="A's reader parked")
    fired = threading.Event()
    swapped: list = []

    def before_ready(p: PollDesc, mode: str) -> None:
        if p is not pd_a or swapped:
            return
        # Close A and give its number to B, inside the poller's window (as FD.close does:
        # evict, wait until the last operation has left, unregister, close(2)).
        runtime_poll_unblock(pd_a)
        reader_a.done.wait(5)
        runtime_poll_close(pd_a)
        os.close(r)
        r2, w2 = os.pipe()
        os.set_blocking(r2, False)
        pd_b, _ = runtime_poll_open(r2, rt)
        swapped.append((r2, w2, pd_b))
        fired.set()

    rt.hooks.before_ready = before_ready
    try:
        os.write(w, b"for A")
        assert fired.wait(5)
    finally:
        rt.hooks.before_ready = None
    assert reader_a.join() == POLL_ERR_CLOSING
    r2, w2, pd_b = swapped[0]
    try:
        assert r2 == r, "the descriptor number was not reused; the test proves nothing"
        assert pd_b is not None
        with pd_b.lock:
            assert not pd_b.event_err
        reader = Runner(lambda: read_via_runtime(r2, pd_b))
        wait_until(parked(pd_b), what="B's reader parked")  # the stale edge gave no data
        os.write(w2, b"for B")
        assert reader.join() == b"for B"
    finally:
        runtime_poll_unblock(pd_b)
        runtime_poll_close(pd_b)
        for fd in (r2, w2, w):
            os.close(fd)


class _SwapAfterWait:
    """Stands in for the epoll backend's ``select.epoll``: once a wait returns an event for
    descriptor ``fd``, it runs ``swap`` before handing the events to the poller, i.e. after
    epoll_wait and before the poller looks the descriptor number up."""

    def __init__(self, ep: object, fd: int, swap: Callable[[], None]) -> None:
        self.ep = ep
        self.fd = fd
        self.swap: Callable[[], None] | None = swap
        self.entered = threading.Event()

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
        self.entered.set()
        events = self.ep.poll(timeout, maxevents)  # type: ignore[attr-defined]
        swap = self.swap
        if swap is not None and any(fd == self.fd for fd, _ in events):
            self.swap = None
            swap()
        return events  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self.ep, name)


def test_stale_epoll_event_readies_the_new_owner_of_the_number(rt: Runtime) -> None:
    """The Python epoll backend's documented spurious wake-up, shown: ``select.epoll`` has no
    per-event user data, so an event fetched for descriptor A whose number is taken by a new
    descriptor B before the poller looks the number up readies B (rg pdNil -> pdReady, with
    no data). B's reader consumes that pdReady, gets EAGAIN, parks, and is readied by B's
    own data: the leading ``pdReady -> pdNil`` that tests/test_timeline.py allows once.
    This pins a DIVERGENCE(go) of netpoll_epoll.py; a backend that carried the pollDesc with
    each event would drop the event instead, and this test would change with it."""
    from threadpoll._runtime.netpoll_epoll import EpollBackend

    backend = rt.backend
    if not isinstance(backend, EpollBackend):
        pytest.skip("the kqueue, poll and C backends carry the pollDesc with each event")
    r, w = os.pipe()
    os.set_blocking(r, False)
    pd_a, _ = runtime_poll_open(r, rt)
    assert pd_a is not None
    b: list = []  # (w2, pd_b) once the swap ran
    failed: list[BaseException] = []

    def swap() -> None:
        # On the poller thread: an exception here would kill the shared runtime's poller,
        # so it is kept for the test to raise.
        try:
            # A closes as FD.close does (evict, unregister, close(2)); B takes its number.
            runtime_poll_unblock(pd_a)
            runtime_poll_close(pd_a)
            os.close(r)
            r2, w2 = os.pipe()
            if r2 != r:
                os.dup2(r2, r)  # the number A had, whatever else is free
                os.close(r2)
            os.set_blocking(r, False)
            pd_b, err = runtime_poll_open(r, rt)
            b.append((w2, pd_b))
            assert err == 0 and pd_b is not None
        except BaseException as e:  # noqa: BLE001 - reported by the test
            failed.append(e)

    real = backend.ep
    proxy = _SwapAfterWait(real, r, swap)
    backend.ep = proxy  # type: ignore[assignment]
    try:
        try:
            backend.netpoll_break()  # the poller's next wait goes through the proxy
            assert proxy.entered.wait(5), "the poller never waited through the proxy"
            dropped = rt.stale_events_dropped
            os.write(w, b"for A")
            wait_until(lambda: bool(b or failed), what="the poller fetched A's event")
        finally:
            backend.ep = real
        if failed:
            raise failed[0]
        w2, pd_b = b[0]
        wait_until(lambda: pd_b.rg == PD_READY, what="A's event readied B")
        assert rt.stale_events_dropped == dropped
        with pd_b.lock:
            assert not pd_b.event_err  # the error bit is kept for registrations older than the wait
        trace.start()
        try:
            reader = Runner(lambda: read_via_runtime(r, pd_b), name="reader-B")
            wait_until(parked(pd_b), what="B's reader parked")  # the stale edge gave no data
            os.write(w2, b"for B")
            assert reader.join() == b"for B"
        finally:
            events = trace.stop()
        states = [
            (ev.old, ev.new)
            for ev in events
            if ev.kind == "state" and ev.fd == r and ev.mode == "r" and ev.thread == "reader-B"
        ]
        assert states == [
            ("pdReady", "pdNil"),
            ("pdNil", "pdWait"),
            ("pdWait", "parked"),
            ("pdReady", "pdNil"),
        ]
    finally:
        proxy.swap = None  # a swap that has not run never will
        if b:
            w2, pd_b = b[0]
            if pd_b is not None:
                runtime_poll_unblock(pd_b)
                runtime_poll_close(pd_b)
            for fd in (r, w2, w):
                os.close(fd)
        elif not failed:  # the swap never ran: A is still open
            runtime_poll_unblock(pd_a)
            runtime_poll_close(pd_a)
            os.close(r)
            os.close(w)


def test_event_err_needs_matching_incarnation(rt: Runtime) -> None:
    with pipe_pd(rt) as (r, w, pd):
        pd.set_event_err(True, pd.fdseq - 1)  # an earlier incarnation's error event
        assert runtime_poll_reset(pd, "r") == POLL_NO_ERROR
        pd.set_event_err(True, None)  # untagged: may not set
        assert runtime_poll_reset(pd, "r") == POLL_NO_ERROR
        pd.set_event_err(True, pd.fdseq)
        assert runtime_poll_reset(pd, "r") == POLL_ERR_NOT_POLLABLE
        assert runtime_poll_reset(pd, "w") == POLL_NO_ERROR  # reported for reads only
        pd.set_event_err(False, None)
        assert runtime_poll_reset(pd, "r") == POLL_NO_ERROR


def test_pollcache_reuses_and_bumps_fdseq(rt: Runtime) -> None:
    with pipe_pd(rt) as (r, w, pd):
        seq = pd.fdseq
        first = pd
    with pipe_pd(rt) as (r, w, pd):
        if pd is first:
            assert pd.fdseq == seq + 1


def test_close_without_unblock_throws(rt: Runtime) -> None:
    with pipe_pd(rt) as (r, w, pd):
        with pytest.raises(InternalError, match="close polldesc w/o unblock"):
            runtime_poll_close(pd)


def test_nan_deadline_rejected(rt: Runtime) -> None:
    with pipe_pd(rt) as (r, w, pd):
        with pytest.raises(ValueError):
            runtime_poll_set_deadline(pd, float("nan"), "r")
        assert pd.rd == NO_DEADLINE


def test_regular_file_refused_or_accepted_consistently(rt: Runtime, tmp_path) -> None:
    """epoll and poll refuse regular files (EPERM): internal/poll then uses blocking mode."""
    path = tmp_path / "f"
    path.write_bytes(b"data")
    fd = os.open(path, os.O_RDONLY)
    try:
        pd, errno = runtime_poll_open(fd, rt)
        if rt.name in ("epoll", "poll"):
            assert pd is None and errno == 1  # EPERM
        else:
            assert pd is not None
            runtime_poll_unblock(pd)
            runtime_poll_close(pd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", PY_BACKENDS)
def test_netpoll_break(name: str) -> None:
    """Port of runtime TestNetpollBreak: netpoll_break interrupts a netpoll blocked for 10 s."""
    runtime = make_runtime(name)  # fresh: no poller thread, we call netpoll ourselves
    try:
        start = time.monotonic()
        started = threading.Event()
        done = threading.Event()

        def poll() -> None:
            started.set()
            runtime.backend.netpoll(10_000_000_000)
            done.set()

        t = threading.Thread(target=poll, name="netpoll-10s")
        t.start()
        started.wait()
        # Loop: the break might be consumed before the netpoll call blocks.
        while not done.wait(0.0001):
            runtime.backend.netpoll_break()
            runtime.backend.netpoll_break()
        t.join()
        assert time.monotonic() - start < 5, "netpoll_break did not interrupt netpoll"
    finally:
        runtime.shutdown()


@pytest.mark.parametrize("name", PY_BACKENDS)
def test_netpoll_break_is_deduplicated(name: str) -> None:
    runtime = make_runtime(name)
    try:
        runtime.backend.netpoll_break()
        runtime.backend.netpoll_break()
        runtime.backend.netpoll_break()
        assert runtime.breaks == 1
        runtime.backend.netpoll(-1)  # consumes the pending wake-up at once
        runtime.backend.netpoll_break()
        assert runtime.breaks == 2
        runtime.backend.netpoll(-1)
    finally:
        runtime.shutdown()


@pytest.mark.parametrize("name", PY_BACKENDS)
def test_nonblocking_poll_leaves_break_pending(name: str) -> None:
    runtime = make_runtime(name)
    try:
        runtime.backend.netpoll_break()
        runtime.backend.netpoll(0)  # a non-blocking poll must not consume the wake-up
        t0 = time.monotonic()
        runtime.backend.netpoll(5_000_000_000)  # returns at once: the break is still there
        assert time.monotonic() - t0 < 2.5
    finally:
        runtime.shutdown()


def test_error_seen_at_recheck_does_not_park(rt: Runtime) -> None:
    """Row 4: the re-check after publishing pdWait finds an error: the thread does not park,
    the swap back to pdNil sees pdWait (not corruption) and netpollblock returns False."""
    with pipe_pd(rt) as (r, w, pd):
        with pd.lock:
            pd.rd = EXPIRED
        trace.start()
        try:
            assert netpollblock(pd, "r", False) is False
        finally:
            events = trace.stop()
        assert pd.rg == PD_NIL
        assert not [e for e in events if e.kind == "park"]
        states = [(e.old, e.new) for e in events if e.kind == "state" and e.fd == r]
        assert states == [("pdNil", "pdWait"), ("pdWait", "pdNil")]


def test_second_registration_of_same_fd_is_refused(rt: Runtime) -> None:
    """Registering a descriptor that is already registered fails with EEXIST and leaves the
    first registration working."""
    import errno as errno_mod

    with pipe_pd(rt) as (r, w, pd):
        pd2, err = runtime_poll_open(r, rt)
        assert pd2 is None and err == errno_mod.EEXIST
        reader = Runner(lambda: read_via_runtime(r, pd))
        wait_until(parked(pd))
        os.write(w, b"still")
        assert reader.join() == b"still"


def test_signal_while_reacquiring_pd_lock_keeps_mutual_exclusion(rt: Runtime) -> None:
    """A signal handler that raises while a woken thread waits to re-acquire pd.lock (held
    by another thread, e.g. the poller) must not leave it running without the lock: the
    exception surfaces only once the lock is back, the holder's critical section is not
    broken, and the pollDesc is clean afterwards."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")

    class Boom(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Boom

    old = signal.signal(signal.SIGUSR1, handler)
    main_ident = threading.get_ident()
    holder_error: list = []
    try:
        with pipe_pd(rt) as (r, w, pd):
            from threadpoll._runtime.netpoll import _park

            def main_blocked_on_relock() -> bool:
                # Woken, and now blocked re-acquiring pd.lock on its line in _park (an
                # RLock's _acquire_restore, which re-acquires in C).
                return thread_on_line(main_ident, _park, "_acquire_restore(")

            def holder() -> None:
                try:
                    wait_until(parked(pd), what="main parked")
                    with pd.lock:
                        runtime_poll_set_deadline(pd, time.monotonic() + 3600, "r")  # no-op
                        # Wake the parked thread without changing its state: it must
                        # re-acquire pd.lock, which we hold.
                        rt_notify(pd)
                        wait_until(main_blocked_on_relock, what="main re-acquiring pd.lock")
                        signal.pthread_kill(main_ident, signal.SIGUSR1)
                        # Give the handler every chance to run while we still hold the lock.
                        deadline = time.monotonic() + 0.2
                        while time.monotonic() < deadline:
                            if not pd.lock._is_owned():  # type: ignore[attr-defined]
                                holder_error.append("pd.lock released under the holder")
                except BaseException as e:  # noqa: BLE001
                    holder_error.append(repr(e))

            def rt_notify(p: PollDesc) -> None:
                from threadpoll._runtime import netpoll

                netpoll.netpollgoready(p, "r")

            t = threading.Thread(target=holder, name="holder")
            t.start()
            with pytest.raises(Boom):
                read_via_runtime(r, pd)
            t.join(10)
            assert not t.is_alive()
            assert holder_error == []
            assert pd.lock.acquire(blocking=False)  # free again
            pd.lock.release()
            assert pd.rg == PD_NIL
            reader = Runner(lambda: read_via_runtime(r, pd))
            wait_until(parked(pd))
            os.write(w, b"ok")
            assert reader.join() == b"ok"
    finally:
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.timeout(60)
def test_sigint_as_the_main_thread_parks_is_not_missed(rt: Runtime) -> None:
    """SIGINT sent the moment the main thread publishes PD_PARKED raises KeyboardInterrupt
    promptly, every time. CPython checks for signals before a lock's acquire spins and sleeps,
    not after (a free-threaded build spins up to 40 sched_yield calls first), so a signal
    that lands in that gap was handled only when the sleep ended: at the deadline, or never.
    The main thread now sleeps in slices of at most _MAIN_SLICE seconds."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    armed = [False]

    def handler(signum: int, frame: object) -> None:
        if armed[0]:  # a stray SIGINT must not end the run
            armed[0] = False
            raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, handler)
    main = threading.get_ident()
    try:
        with pipe_pd(rt) as (r, w, pd):
            for i in range(1000):
                sent = [0.0]

                def kill(sent: list[float] = sent) -> None:
                    wait_until(parked(pd), what="main parked")
                    armed[0] = True
                    sent[0] = time.monotonic()
                    signal.pthread_kill(main, signal.SIGINT)

                killer = Runner(kill, name="killer")
                # A missed signal is handled when the wait ends: at this deadline.
                runtime_poll_set_deadline(pd, time.monotonic() + 4, "r")
                try:
                    code = read_via_runtime(r, pd)
                except KeyboardInterrupt:
                    code = None
                late = time.monotonic() - sent[0]
                killer.join()
                assert code is None, f"round {i}: the read returned {code!r}, no interrupt"
                assert late < 2.0, f"round {i}: the interrupt came {late:.1f} s after SIGINT"
    finally:
        signal.signal(signal.SIGINT, old)


def test_deadline_passing_between_check_and_sleep(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline passes after _park saw it unexpired and before it computed the time
    left: the time left is negative, which a lock's acquire refuses (ValueError: timeout
    value must be positive). The park must expire the deadline instead."""

    real = time.monotonic
    calls = [0]
    armed = [False]

    def clock() -> float:
        # Once armed (just before the park commits): the 1st call (rparked_at) and the 2nd
        # (netpolldeadlineimpl) see the real time; from the 3rd (the time left) on, an hour later.
        if not armed[0]:
            return real()
        calls[0] += 1
        return real() + (3600.0 if calls[0] >= 3 else 0.0)

    def arm(pd: PollDesc, mode: str) -> None:
        armed[0] = True

    monkeypatch.setattr(netpoll, "_monotonic", clock)
    with pipe_pd(rt) as (r, w, pd):
        runtime_poll_set_deadline(pd, real() + 600, "r")
        rt.hooks.before_park = arm
        try:
            assert read_via_runtime(r, pd) == POLL_ERR_TIMEOUT
        finally:
            rt.hooks.before_park = None
        assert calls[0] >= 3


_NETPOLL_DEADLOCK = """
import socket
import sys

# What Go's testprognet does in init(): the first network operation of the program, a dial
# that fails, made before main runs (here: while the main module is still being imported).
probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()  # nothing listens on port now
print("dialing", flush=True)
from threadpoll.net import dial

try:
    dial("tcp", f"127.0.0.1:{port}").close()
except OSError as e:
    print("error:", type(e).__name__, flush=True)
print("done", flush=True)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("impl", impls())
def test_netpoll_deadlock(impl: str) -> None:
    """Port of runtime TestNetpollDeadlock: a program whose first use of the poller is a
    refused dial during start-up neither hangs nor dies; it prints "done" and exits."""
    import subprocess

    env = dict(os.environ, THREADPOLL_IMPL=impl)
    out = subprocess.run(
        [sys.executable, "-c", _NETPOLL_DEADLOCK],
        capture_output=True,
        text=True,
        timeout=50,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("done\n"), out.stdout + out.stderr
