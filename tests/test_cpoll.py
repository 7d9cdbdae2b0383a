"""The C core (threadpoll._cpoll): what the behavioural suite cannot see from outside.

The behavioural tests run on the C core through the ``rt`` fixture (``c-epoll`` /
``c-kqueue``); these cover what is particular to it: choosing the implementation, the poller
pthread (no Python thread, every signal blocked), the invariants the Python runtime checks in
tests/test_netpoll.py through its hook points (here through the C pollDesc's own entry
points), Ctrl-C-style interrupts that return, and fork.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from typing import Any

import pytest
from conftest import BACKENDS
from support import Runner, wait_parked, wait_until

from threadpoll._runtime import netpoll, netpoll_c, proc
from threadpoll._runtime.netpoll import (
    PD_NIL,
    PD_PARKED,
    PD_READY,
    POLL_ERR_CLOSING,
    POLL_ERR_TIMEOUT,
    POLL_NO_ERROR,
    InternalError,
)

C_BACKENDS = [n for n in BACKENDS if n.startswith("c-")]
needs_c = pytest.mark.skipif(not C_BACKENDS, reason="the C core is not built")
pytestmark = [pytest.mark.timeout(30)]
# The tests that take crt run on the C core's params of the rt fixture only.
on_c = pytest.mark.parametrize("rt", C_BACKENDS, indirect=True)


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ)
    for k in ("THREADPOLL_IMPL", "THREADPOLL_BACKEND"):
        e.pop(k, None)
    e.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=60
    )


IMPL = "import threadpoll.lowlevel as l; print(l.impl(), l.backend())"


@needs_c
def test_threadpoll_impl_chooses_the_implementation() -> None:
    assert _run(IMPL, THREADPOLL_IMPL="c").stdout.split() == ["c", netpoll_c.backend_name()]
    assert _run(IMPL, THREADPOLL_IMPL="python").stdout.split()[0] == "python"
    # The poll backend has no C version: it runs on the Python runtime either way.
    out = _run(IMPL, THREADPOLL_IMPL="c", THREADPOLL_BACKEND="poll").stdout.split()
    assert out == ["python", "poll"]


def test_default_impl_is_the_documented_one() -> None:
    out = _run(IMPL).stdout.split()
    assert out[0] == (netpoll_c.DEFAULT_IMPL if netpoll_c.available() else "python")


def test_asking_for_c_where_it_is_not_built_says_so() -> None:
    code = "import sys; sys.modules['threadpoll._cpoll'] = None\n" + IMPL
    r = _run(code, THREADPOLL_IMPL="c")
    assert r.returncode != 0
    assert "THREADPOLL_IMPL=c but the C core is not built" in r.stderr


def test_bad_impl_name_is_refused() -> None:
    r = _run(IMPL, THREADPOLL_IMPL="rust")
    assert r.returncode != 0
    assert "THREADPOLL_IMPL must be 'c' or 'python'" in r.stderr


@pytest.fixture
def crt(rt: Any) -> Any:
    """The rt fixture's runtime when it is the C core's (the session's runtimes are made by
    conftest.py's own fixtures, so none is created, and leaked, here)."""
    if rt.impl != "c":
        pytest.skip("a C-core test")
    return rt


@pytest.fixture
def pipe_pd(crt: Any) -> Any:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    pd, errno = netpoll.runtime_poll_open(r, crt)
    assert errno == 0 and pd is not None
    yield r, w, pd
    if not pd.closing:
        netpoll.runtime_poll_unblock(pd)
    netpoll.runtime_poll_close(pd)
    os.close(r)
    os.close(w)


def _poller_tasks() -> list[str]:
    out = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() == "threadpoll-cpol":
                    out.append(tid)
        except OSError:
            pass
    return out


@on_c
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_poller_is_one_pthread_with_every_signal_blocked(crt: Any) -> None:
    """The C poller is not a Python thread, and blocks signals so they reach the others."""
    crt.ensure_poller()
    assert not [t for t in threading.enumerate() if "cpol" in t.name]
    wait_until(lambda: bool(_poller_tasks()), what="the C poller pthread (named at start)")
    tasks = _poller_tasks()
    for tid in tasks:
        with open(f"/proc/self/task/{tid}/status") as f:
            blk = next(line for line in f if line.startswith("SigBlk:"))
        # Every standard signal (1-31) blocked; the kernel refuses only SIGKILL and SIGSTOP.
        mask = int(blk.split()[1], 16)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGALRM):
            assert mask & (1 << (sig - 1)), f"signal {sig} not blocked in the poller"


@on_c
def test_readiness_without_waiter_is_kept_as_ready(crt: Any, pipe_pd: Any) -> None:
    r, w, pd = pipe_pd
    # Readiness is seen when someone polls, and the C core polls only while a thread is
    # parked (as Go's findRunnable polls only with netpollAnyWaiters): a thread parked on
    # another descriptor leads, and finds this one ready with nobody waiting on it.
    r2, w2 = os.pipe()
    os.set_blocking(r2, False)
    other, errno = netpoll.runtime_poll_open(r2, crt)
    assert errno == 0 and other is not None
    try:
        leader = Runner(lambda: other.wait("r"), name="leader")
        wait_until(lambda: other.rg == PD_PARKED, what="a thread parked on another pollDesc")
        os.write(w, b"x")
        wait_until(lambda: pd.rg == PD_READY, what="the poll's PD_READY")
        assert pd.wait("r") == POLL_NO_ERROR  # consumed at once, without parking
        assert pd.rg == PD_NIL
        os.write(w2, b"x")
        assert leader.join() == POLL_NO_ERROR
    finally:
        if not other.closing:
            netpoll.runtime_poll_unblock(other)
        netpoll.runtime_poll_close(other)
        os.close(r2)
        os.close(w2)


@on_c
def test_close_wakes_parked_waiter_and_keeps_pending_ready(pipe_pd: Any) -> None:
    r, w, pd = pipe_pd
    waiter = Runner(lambda: pd.wait("r"))
    wait_until(lambda: pd.rg == PD_PARKED, what="a parked reader")
    assert pd.rparked_by is waiter.thread
    netpoll.runtime_poll_unblock(pd)
    assert waiter.join() == POLL_ERR_CLOSING
    with pytest.raises(InternalError, match="runtime: unblock on closing polldesc"):
        netpoll.runtime_poll_unblock(pd)


@on_c
def test_double_wait_throws(pipe_pd: Any) -> None:
    r, w, pd = pipe_pd
    waiter = Runner(lambda: pd.wait("r"))
    wait_until(lambda: pd.rg == PD_PARKED, what="a parked reader")
    with pytest.raises(InternalError, match="runtime: double wait"):
        pd.wait("r")
    os.write(w, b"x")
    assert waiter.join() == POLL_NO_ERROR


@on_c
def test_close_with_a_waiter_throws(pipe_pd: Any, crt: Any) -> None:
    r, w, pd = pipe_pd
    with pytest.raises(InternalError, match="close polldesc w/o unblock"):
        netpoll.runtime_poll_close(pd)


@on_c
def test_deadline_moved_earlier_retimes_the_parked_wait(pipe_pd: Any) -> None:
    r, w, pd = pipe_pd
    netpoll.runtime_poll_set_deadline(pd, time.monotonic() + 3600, "r")
    waiter = Runner(lambda: pd.wait("r"))
    wait_until(lambda: pd.rg == PD_PARKED, what="a parked reader")
    start = time.monotonic()
    netpoll.runtime_poll_set_deadline(pd, start + 0.05, "r")
    assert waiter.join() == POLL_ERR_TIMEOUT
    assert 0.04 <= time.monotonic() - start < 2.0
    assert pd.rd == netpoll.EXPIRED


@on_c
def test_deadline_moved_later_keeps_the_waiter_parked(pipe_pd: Any) -> None:
    r, w, pd = pipe_pd
    netpoll.runtime_poll_set_deadline(pd, time.monotonic() + 0.2, "r")
    waiter = Runner(lambda: pd.wait("r"))
    wait_until(lambda: pd.rg == PD_PARKED, what="a parked reader")
    netpoll.runtime_poll_set_deadline(pd, netpoll.NO_DEADLINE, "r")
    assert not waiter.done.wait(0.4)  # the old deadline passes: still parked
    os.write(w, b"x")
    assert waiter.join() == POLL_NO_ERROR


@on_c
def test_bad_arguments(pipe_pd: Any, crt: Any) -> None:
    r, w, pd = pipe_pd
    with pytest.raises(ValueError):
        pd.wait("x")
    with pytest.raises(ValueError):
        pd.wait("rw")
    with pytest.raises(TypeError):
        pd.reset(1)
    with pytest.raises(ValueError, match="NaN"):
        pd.set_deadline(float("nan"), "r")
    with pytest.raises(ValueError):
        pd.rg = PD_READY  # only the inline prepare's PD_NIL store is allowed
    with pytest.raises(TypeError):
        crt.poll_close(object())


@on_c
@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_signal_handler_that_returns_leaves_the_thread_parked(pipe_pd: Any) -> None:
    """A handler that returns (no exception) ends the wait only to run it: the thread parks
    again and is woken by the data, as Condition.wait behaves in the Python runtime."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")
    r, w, pd = pipe_pd
    calls = []
    main = threading.main_thread().ident
    assert main is not None

    def handler(signum: int, frame: Any) -> None:
        calls.append(signum)

    def kick() -> None:
        wait_until(lambda: pd.rg == PD_PARKED, what="the main thread parked")
        signal.pthread_kill(main, signal.SIGUSR1)
        wait_until(lambda: calls != [] and pd.rg == PD_PARKED, what="parked again")
        os.write(w, b"x")

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        kicker = Runner(kick, name="kicker")
        assert pd.wait("r") == POLL_NO_ERROR
        kicker.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert calls == [signal.SIGUSR1]


def _fork(child: Any) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 70
        try:
            code = child()
        finally:
            os._exit(code)
    return pid


def _wait_child(pid: int, timeout: float = 20.0) -> int:
    end = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} hung")
        time.sleep(0.005)  # polling the child's state


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_gets_a_fresh_poller(rt: Any) -> None:
    """On either runtime: a child parks on an inherited descriptor, readied by its own fresh
    poller; the parent's registration is untouched."""
    from threadpoll.file import pipe

    ra, wa = pipe()
    ctl_r, ctl_w = os.pipe()
    try:

        def child() -> int:
            signal.alarm(15)  # a hang ends the child, not the test run
            os.write(ctl_w, b"p")
            return 0 if ra.read(100) == b"from parent" else 1

        pid = _fork(child)
        assert os.read(ctl_r, 1) == b"p"
        wa.write(b"from parent")
        assert _wait_child(pid) == 0
        wa.write(b"x")
        reader = Runner(lambda: ra.read(1))
        assert reader.join() == b"x"
        reader = Runner(lambda: ra.read(1))
        wait_parked(ra, "r")
        wa.write(b"y")
        assert reader.join() == b"y"
    finally:
        os.close(ctl_r)
        os.close(ctl_w)
        ra.close()
        wa.close()


@on_c
def test_open_pds_is_the_c_table_of_registered_pds(crt: Any) -> None:
    """open_pds is read from the C table: a pollDesc is in it from poll_open to poll_close
    only, and a pollDesc the pollcache hands out again is back in it (once)."""
    r, w = os.pipe()
    try:
        os.set_blocking(r, False)
        before = set(crt.open_pds)
        pd, errno = netpoll.runtime_poll_open(r, crt)
        assert errno == 0
        assert set(crt.open_pds) == before | {pd.id} and crt.open_pds[pd.id] is pd
        netpoll.runtime_poll_unblock(pd)
        netpoll.runtime_poll_close(pd)
        assert set(crt.open_pds) == before
        again, errno = netpoll.runtime_poll_open(r, crt)
        assert errno == 0
        ids = [p.id for p in crt.open_pd_list()]
        assert ids.count(again.id) == 1 and set(ids) == before | {again.id}
        netpoll.runtime_poll_unblock(again)
        netpoll.runtime_poll_close(again)
        assert set(crt.open_pds) == before
    finally:
        os.close(r)
        os.close(w)


@on_c
def test_stats_and_dump_on_the_c_core(crt: Any, pipe_pd: Any) -> None:
    from threadpoll import _diag

    r, w, pd = pipe_pd
    before = crt.events
    waiter = Runner(lambda: pd.wait("r"), name="c-parked")
    wait_until(lambda: pd.rg == PD_PARKED, what="a parked reader")
    old = proc.set_default_runtime(crt)
    try:
        s = _diag.stats()
        assert s["parked_readers"] >= 1
        assert '"c-parked"' in _diag.dump()
    finally:
        proc.set_default_runtime(old)
    os.write(w, b"x")
    assert waiter.join() == POLL_NO_ERROR
    assert crt.events > before


@needs_c
@pytest.mark.timeout(20)
def test_lazy_write_arms_write_interest_when_a_writer_first_waits() -> None:
    """With lazy_write the descriptor is registered for reading only; the first writer that
    parks adds EPOLLOUT, so freed buffer space still wakes it (no lost wake-up)."""
    crt = netpoll_c.CRuntime(lazy_write=True)
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        b.setblocking(False)
        pd, errno = netpoll.runtime_poll_open(a.fileno(), crt)
        assert errno == 0 and pd is not None
        try:
            chunk = b"x" * 65536
            while True:  # fill the send buffer: the next write would block
                try:
                    a.send(chunk)
                except BlockingIOError:
                    break
            assert pd.reset("w") == POLL_NO_ERROR
            waiter = Runner(lambda: pd.wait("w"), name="lazy-writer")
            wait_until(lambda: pd.wg == PD_PARKED, what="a parked writer")
            while True:  # free the space; the edge must reach the parked writer
                try:
                    if not b.recv(1 << 20):
                        break
                except BlockingIOError:
                    break
            assert waiter.join() == POLL_NO_ERROR
        finally:
            netpoll.runtime_poll_unblock(pd)
            netpoll.runtime_poll_close(pd)
    finally:
        a.close()
        b.close()
        crt.shutdown()


# --- internal/poll's loops in C (threadpoll/_c/fd_unix.c), driven directly ---------------


@pytest.fixture
def cpair(crt: Any) -> Any:
    """Two pollable FDs on a connected AF_UNIX stream socketpair, on the C core."""
    from threadpoll._poll.fd_unix import FD

    a, b = socket.socketpair()
    fa = FD(a.detach(), net="unix", runtime=crt)
    fb = FD(b.detach(), net="unix", runtime=crt)
    assert fa._cfast and fb._cfast
    yield fa, fb
    for f in (fa, fb):
        if not f.fdmu.closing():
            f.close()


def _c(fd: Any, name: str, *args: Any) -> Any:
    """Call _cpoll.fd_<name>(fd, fdmu, pd, sysfd, *args)."""
    return getattr(netpoll_c.cpoll, "fd_" + name)(fd, fd.fdmu, fd.pd.runtime_ctx, fd.sysfd, *args)


@on_c
def test_c_read_parks_until_data_and_passes_flags(cpair: Any) -> None:
    fa, fb = cpair
    pd = fa.pd.runtime_ctx

    def write_later() -> None:
        wait_until(lambda: pd.rg == PD_PARKED, what="the reader parked")
        _c(fb, "write", b"hello", True)

    w = Runner(write_later, name="writer")
    assert _c(fa, "read", 3, socket.MSG_PEEK) == b"hel"  # parked, woken, peeked
    w.join()
    assert pd.rg == PD_NIL
    buf = bytearray(8)
    assert _c(fa, "read_into", buf, 2, 0) == 2 and buf[:2] == b"he"
    assert _c(fa, "read", 10, 0) == b"llo"
    assert fa.fdmu.state == 0, "the read lock and reference were released"
    with pytest.raises(ValueError, match="buffer too small"):
        _c(fa, "read_into", bytearray(1), 2, 0)
    with pytest.raises(ValueError, match="negative"):
        _c(fa, "read", -1, 0)
    assert _c(fa, "read", 0, 0) == b""


@on_c
def test_c_read_returns_eof_and_write_reports_written(cpair: Any) -> None:
    fa, fb = cpair
    _c(fb, "write", b"xy", True)
    fb.close()
    assert _c(fa, "read", 10, 0) == b"xy"
    assert _c(fa, "read", 10, 0) == b""  # EOF
    assert _c(fa, "read_into", bytearray(4), 0, 0) == 0
    with pytest.raises(OSError) as ei:
        _c(fa, "write", b"z" * 100, True)
    assert isinstance(ei.value, (BrokenPipeError, ConnectionResetError))
    assert ei.value.written == 0  # type: ignore[attr-defined]
    assert fa.fdmu.state == 0


@on_c
def test_c_close_wakes_parked_read_write_and_accept(cpair: Any, crt: Any) -> None:
    from threadpoll._poll.fd_unix import FD
    from threadpoll.errors import NetClosingError

    fa, fb = cpair
    pd = fb.pd.runtime_ctx
    reader = Runner(lambda: _c(fb, "read", 10, 0), name="reader")
    wait_until(lambda: pd.rg == PD_PARKED, what="the reader parked")
    while True:  # fill fb's send buffer (fa never reads), then park a sender on fb too
        try:
            fb._sock.send(b"x" * 65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
    sender = Runner(lambda: _c(fb, "send", b"y" * 10, 0), name="sender")
    wait_until(lambda: pd.wg == PD_PARKED, what="the sender parked")
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    lfd = FD(ls.detach(), net="tcp", runtime=crt)
    acceptor = Runner(lambda: _c(lfd, "accept"), name="acceptor")
    wait_until(lambda: lfd.pd.runtime_ctx.rg == PD_PARKED, what="the acceptor parked")
    for f, rs in ((fb, (reader, sender)), (lfd, (acceptor,))):
        f.close()  # returns once the parked calls have left
        for r in rs:
            assert isinstance(r.join_exc(), NetClosingError)
        assert f.sysfd == -1
    with pytest.raises(NetClosingError):
        # a closed FD: the closing error, before any syscall (or any look at the pollDesc)
        netpoll_c.cpoll.fd_read(fb, fb.fdmu, pd, -1, 1, 0)


@on_c
def test_c_deadline_ends_parked_read_and_write(cpair: Any) -> None:
    from threadpoll.errors import DeadlineExceededError

    fa, fb = cpair
    fa.set_read_deadline(time.monotonic() + 0.05)
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        _c(fa, "read", 10, 0)
    assert time.monotonic() - t0 >= 0.04
    fb.set_write_deadline(time.monotonic() + 0.05)
    with pytest.raises(DeadlineExceededError) as ei:
        _c(fb, "write", b"z" * (8 << 20), True)
    assert 0 < ei.value.written < 8 << 20  # type: ignore[attr-defined]
    assert fa.fdmu.state == 0 and fb.fdmu.state == 0


@on_c
def test_c_write_loop_writes_everything(cpair: Any) -> None:
    fa, fb = cpair
    data = os.urandom(3 << 20)
    got = bytearray()

    def drain() -> None:
        while len(got) < len(data):
            got.extend(_c(fa, "read", 65536, 0))

    r = Runner(drain, name="drain")
    assert _c(fb, "write", memoryview(data), True) == len(data)
    r.join()
    assert bytes(got) == data
    assert _c(fb, "send", b"abc", 0) == 3
    assert _c(fa, "read", 10, 0) == b"abc"


@on_c
def test_c_accept_gives_a_nonblocking_cloexec_descriptor(crt: Any) -> None:
    from threadpoll._poll.fd_unix import FD

    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    port = ls.getsockname()[1]
    lfd = FD(ls.detach(), net="tcp", runtime=crt)
    c = socket.socket()
    try:
        connector = Runner(
            lambda: (
                wait_until(lambda: lfd.pd.runtime_ctx.rg == PD_PARKED, what="parked"),
                c.connect(("127.0.0.1", port)),
            ),
            name="connector",
        )
        nfd, addr = lfd.accept()
        connector.join()
        try:
            assert addr == c.getsockname()
            assert not os.get_blocking(nfd)
            assert not os.get_inheritable(nfd)
        finally:
            os.close(nfd)
    finally:
        c.close()
        lfd.close()


@on_c
@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_c_signal_while_parked_reparks_or_raises(cpair: Any) -> None:
    """A handler that returns: the C loop parks again and reads the data. A handler that
    raises: the exception leaves the call, the read lock released, the pollDesc idle."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")
    fa, fb = cpair
    pd = fa.pd.runtime_ctx
    main = threading.main_thread().ident
    assert main is not None
    calls: list[int] = []
    raising = [False]

    class Boom(Exception):
        pass

    def handler(signum: int, frame: Any) -> None:
        calls.append(signum)
        if raising[0]:
            raise Boom

    def kick(then_write: bool) -> None:
        wait_until(lambda: pd.rg == PD_PARKED, what="the main thread parked")
        n = len(calls)
        signal.pthread_kill(main, signal.SIGUSR1)
        if then_write:
            wait_until(lambda: len(calls) > n and pd.rg == PD_PARKED, what="parked again")
            _c(fb, "write", b"ok", True)

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        k = Runner(lambda: kick(True), name="kicker")
        assert _c(fa, "read", 10, 0) == b"ok"
        k.join()
        raising[0] = True
        k = Runner(lambda: kick(False), name="kicker")
        with pytest.raises(Boom):
            _c(fa, "read", 10, 0)
        k.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert calls == [signal.SIGUSR1, signal.SIGUSR1]
    assert pd.rg == PD_NIL and fa.fdmu.state == 0


@needs_c
def test_c_fdmutex_clear_poison_is_one_atomic_update() -> None:
    """A forked child's close() of a poisoned FD drops the parent threads' references and
    lock bits in one compare-and-swap, keeping what the child's own operations hold."""
    from threadpoll._poll.fd_mutex import MUTEX_CLOSED, MUTEX_REF, MUTEX_RLOCK, MUTEX_WLOCK

    mu = netpoll_c.cpoll.FDMutex()
    mu.state = MUTEX_RLOCK | 3 * MUTEX_REF  # a parent reader (2 refs) and the child's 1 ref
    mu.poisoned = MUTEX_RLOCK
    mu.clear_poison(2 * MUTEX_REF)
    assert mu.state == MUTEX_REF and mu.poisoned == 0
    mu.state = MUTEX_CLOSED | MUTEX_WLOCK | MUTEX_REF
    mu.poisoned = MUTEX_WLOCK
    mu.clear_poison(MUTEX_REF)  # already closed: the state is left alone
    assert mu.state == MUTEX_CLOSED | MUTEX_WLOCK | MUTEX_REF and mu.poisoned == 0
    mu.state = MUTEX_REF
    with pytest.raises(Exception, match="inconsistent"):
        mu.clear_poison(2 * MUTEX_REF)  # more ghosts than references


@needs_c
def test_c_fdmutex_makes_its_rare_state_on_first_need() -> None:
    """The close semaphore, the re-entry check, the waiters' semaphores and a fork's poison
    live in state made on first need: a fresh fdMutex reads as None and 0, a value stored
    reads back, None and 0 store nothing, and the waiters' semaphores are made once."""
    from threadpoll._runtime.park import Sema

    mu = netpoll_c.cpoll.FDMutex()
    assert mu.csema is None and mu.reentry_check is None and mu.poisoned == 0
    mu.csema = None  # none, where nothing was made: still none
    mu.poisoned = 0
    assert mu.csema is None and mu.poisoned == 0
    cs = Sema()
    mu.csema = cs
    assert mu.csema is cs and mu.reentry_check is None and mu.poisoned == 0
    rs = mu.rsema
    assert isinstance(rs, Sema) and mu.rsema is rs and mu.wsema is not rs
    mu.poisoned = 6
    assert mu.poisoned == 6
    mu.csema = None
    assert mu.csema is None and mu.rsema is rs
    with pytest.raises(TypeError):
        del mu.csema


@on_c
def test_c_fdmutex_holds_one_pollDesc_as_the_handles_runtime_ctx(crt: Any) -> None:
    """An FD's C fdMutex is also its pollDesc handle: runtime_ctx is set once (the same
    pollDesc may be set again), None lets go of it, another pollDesc is refused, and the fast
    path's _set_fast must name the same one."""
    from threadpoll._poll import fd_unix

    r, w = os.pipe()
    try:
        h = fd_unix._CCore()
        assert h.runtime_ctx is None and not h.pollable()
        assert h.init(r, crt) == 0
        pd = h.runtime_ctx
        assert pd is not None and pd.fd == r and h.pollable()
        other, err = netpoll.runtime_poll_open(w, crt)
        assert err == 0 and other is not None
        with pytest.raises(RuntimeError, match="one pollDesc"):
            h.runtime_ctx = other
        with pytest.raises(RuntimeError, match="another pollDesc"):
            h._set_fast(other, w, True)
        with pytest.raises(TypeError):
            h.runtime_ctx = 5
        h._set_fast(pd, r, True)
        assert h.runtime_ctx is pd
        h.evict()
        h.close()
        assert h.runtime_ctx is None and not h.pollable()
        netpoll.runtime_poll_unblock(other)
        netpoll.runtime_poll_close(other)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.skipif(
    not C_BACKENDS or sys.platform != "linux" or sys.maxsize < 2**32,
    reason="the sizes are those of 64-bit Linux (futex words)",
)
def test_c_pollDesc_and_fdmutex_keep_their_size() -> None:
    """Memory per descriptor (issue 12): a pollDesc's lock and semaphores are futex words on
    Linux, and an fdMutex keeps what few need apart. Their fields, past the object header:
    128 and 48 bytes (a pollDesc was 232 with a pthread mutex and two sem_t)."""
    cp = netpoll_c.cpoll
    head = object.__basicsize__  # 16, or more on a free-threaded build
    assert cp.PollDesc.__basicsize__ - head <= 128
    assert cp.FDMutex.__basicsize__ - head <= 48


@needs_c
def test_c_close_hands_the_destroy_to_the_waiting_closer() -> None:
    """decref_for_close with an operation in flight: the operation's unlock releases the
    closer's csema instead of destroying; take_handoff then says the closer destroys."""
    from threadpoll._poll.fd_mutex import MUTEX_CLOSED
    from threadpoll._runtime.park import Sema

    mu = netpoll_c.cpoll.FDMutex()
    cs = Sema()
    mu.csema = cs
    assert mu.rwlock(True)  # an operation in flight
    assert mu.incref_and_close()
    assert mu.decref_for_close() is False  # the closer will wait
    assert mu.rwunlock(True) is False  # the operation does not destroy ...
    cs.acquire()  # ... it released the closer (this would hang otherwise)
    assert mu.take_handoff() is True and mu.state == MUTEX_CLOSED
    assert mu.take_handoff() is False
    mu2 = netpoll_c.cpoll.FDMutex()
    assert mu2.incref_and_close()
    assert mu2.decref_for_close() is True  # no operation: the closer destroys at once
    # A closer whose wait is interrupted takes its mark back: the operation destroys.
    mu3 = netpoll_c.cpoll.FDMutex()
    mu3.csema = Sema()
    assert mu3.rwlock(False)
    assert mu3.incref_and_close()
    assert mu3.decref_for_close() is False
    assert mu3.take_handoff() is False  # the operation is still in flight
    assert mu3.rwunlock(False) is True  # so it destroys the FD itself


@needs_c
def test_c_fill_bytes_cuts_to_the_count_and_releases_the_view() -> None:
    """fill_bytes (the TLS engine's read of several records into one bytes object): the
    result is what fill wrote, cut to the count it returned; the view is released when fill
    returns, so a view it kept can no longer write into the (now immutable) bytes."""
    fill_bytes = netpoll_c.cpoll.fill_bytes
    kept: list[memoryview] = []

    def fill(view: memoryview) -> int:
        assert not view.readonly and view.nbytes == 8 and view.format == "B"
        view[:3] = b"abc"
        view[3:5] = b"de"
        kept.append(view)
        return 5

    out = fill_bytes(8, fill)
    assert type(out) is bytes and out == b"abcde"
    with pytest.raises(ValueError):  # released: "operation forbidden on released memoryview"
        kept[0][0] = 0
    assert out == b"abcde"
    assert fill_bytes(4, lambda v: 0) == b""
    full = fill_bytes(3, lambda v: v.__setitem__(slice(None), b"xyz") or 3)
    assert full == b"xyz"


@needs_c
@pytest.mark.parametrize("keep", ["slice", "PickleBuffer"])
def test_c_fill_bytes_never_hands_out_memory_something_can_still_write(keep: str) -> None:
    """A slice of the view (which releasing the view does not release) or another export of
    it (which makes the release fail) still reaches the memory when fill returns: the result
    is then a copy, which writing through what was kept does not change, and the memory
    lives as long as what was kept (the sanitizer run would see a use after free)."""
    import pickle

    fill_bytes = netpoll_c.cpoll.fill_bytes
    kept: list[Any] = []

    def fill(view: memoryview) -> int:
        view[:5] = b"hello"
        kept.append(view[1:] if keep == "slice" else pickle.PickleBuffer(view))
        return 5

    out = fill_bytes(1 << 16, fill)
    assert out == b"hello"
    with memoryview(kept[0]) as m:
        m[:4] = b"JELL"  # the slice starts at 1
        assert bytes(m[:4]) == b"JELL"
    assert out == b"hello"
    del out
    with memoryview(kept[0]) as m:
        m[-100:] = b"Z" * 100  # the memory is still the kept object's
    kept.clear()
    assert fill_bytes(4, lambda v: v.__setitem__(slice(0, 2), b"ok") or 2) == b"ok"


@needs_c
def test_c_fill_bytes_reports_fill_errors_and_bad_input() -> None:
    fill_bytes = netpoll_c.cpoll.fill_bytes

    class Boom(Exception):
        pass

    def boom(view: memoryview) -> int:
        raise Boom("from fill")

    with pytest.raises(Boom, match="from fill"):  # fill's own error, not the release's
        fill_bytes(16, boom)
    for bad in (-1, 17):
        with pytest.raises(ValueError, match="fill returned"):
            fill_bytes(16, lambda v, bad=bad: bad)
    with pytest.raises(TypeError):
        fill_bytes(16, lambda v: "3")
    with pytest.raises(ValueError, match="n must be > 0"):
        fill_bytes(0, lambda v: 0)
    with pytest.raises(TypeError):
        fill_bytes("16", lambda v: 0)
    with pytest.raises(TypeError):
        fill_bytes(16)
