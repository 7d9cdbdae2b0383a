"""internal/poll.FD on threads (threadpoll/_poll/fd_unix.py), driven directly.

The FD-level behaviour of Go's ``src/net/timeout_test.go``, ``src/net/net_test.go``,
``src/os/timeout_test.go`` and ``src/os/pipe_test.go`` is ported here by name. (The EOF
table of ``src/internal/poll/fd_posix_test.go`` has no counterpart: reads return ``b""`` at
end of file, so there is no ``eofError``.) Sockets are made with the stdlib and handed
to an FD with ``detach()``; pipes come from ``os.pipe()``. Every behavioural test takes the
``rt`` fixture, so it runs on every backend this machine has.

Where Go sleeps "to give the other goroutine a chance to enter the Read", these tests wait
until the pollDesc shows a parked thread (``support.wait_parked``) or until the fdMutex shows
a lock holder or waiter. They sleep only where time itself is the behaviour under test: a
deadline that must fire, or must not fire, at a given moment.
"""

from __future__ import annotations

import array
import errno
import gc
import math
import os
import signal
import socket
import struct
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

import pytest
from support import (
    HoldAt,
    Meeting,
    OnLine,
    Runner,
    blocked_on_call_gate,
    pd_of,
    run_all,
    thread_on_line,
    wait_parked,
    wait_until,
)

from threadpoll._poll import fd_unix
from threadpoll._poll.fd_mutex import (
    MUTEX_REF,
    MUTEX_REF_MASK,
    MUTEX_RLOCK,
    MUTEX_RMASK,
    MUTEX_RWAIT,
    MUTEX_WLOCK,
)
from threadpoll._poll.fd_unix import FD
from threadpoll._runtime.netpoll import EXPIRED, NO_DEADLINE, PD_NIL, PD_PARKED
from threadpoll._runtime.proc import Runtime, runtime_poll_server_init
from threadpoll.errors import (
    ClosingError,
    DeadlineExceededError,
    FileClosingError,
    NetClosingError,
    NoDeadlineError,
)

pytestmark = pytest.mark.timeout(20)

# --- helpers -------------------------------------------------------------------------------


class Closer:
    """Owns the FDs and raw descriptors a test makes; closes what is left at teardown."""

    def __init__(self) -> None:
        self.fds: list[FD] = []
        self.raw: list[int] = []

    def fd(self, sysfd: int, **kw: Any) -> FD:
        f = FD(sysfd, **kw)
        self.fds.append(f)
        return f

    def own(self, n: int) -> int:
        self.raw.append(n)
        return n

    def disown(self, n: int) -> None:
        self.raw.remove(n)

    def close_all(self) -> None:
        for f in reversed(self.fds):
            if not f.closing():
                # In a thread: a leaked reference would make close() wait forever, and a
                # hang in teardown is past pytest-timeout's reach; this fails instead.
                Runner(f.close, name="teardown-close").join(10)
        for n in self.raw:
            os.close(n)


@pytest.fixture
def fds() -> Iterator[Closer]:
    c = Closer()
    try:
        yield c
    finally:
        c.close_all()


def past() -> float:
    return time.monotonic() - 5.0


def sleep_past(t: float) -> None:
    """Let the clock pass t: for tests whose subject is a deadline passing, not a thread."""
    while time.monotonic() <= t:
        time.sleep(max(t - time.monotonic(), 0.0) + 0.001)


def pipe(c: Closer, *, was_blocking: bool = True) -> tuple[FD, FD]:
    r, w = os.pipe()
    if not was_blocking:
        os.set_blocking(r, False)
        os.set_blocking(w, False)
    return c.fd(r, net="file"), c.fd(w, net="file")


def unix_pair(c: Closer) -> tuple[FD, FD]:
    a, b = socket.socketpair()
    return c.fd(a.detach(), net="unix"), c.fd(b.detach(), net="unix")


def tcp_listener(c: Closer, backlog: int = 16) -> tuple[FD, Any]:
    ln = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ln.bind(("127.0.0.1", 0))
    ln.listen(backlog)
    addr = ln.getsockname()
    return c.fd(ln.detach(), net="tcp"), addr


def tcp_pair(c: Closer) -> tuple[FD, FD]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as ln:
        ln.bind(("127.0.0.1", 0))
        ln.listen(1)
        client = socket.create_connection(ln.getsockname())
        server, _ = ln.accept()
    return c.fd(client.detach(), net="tcp"), c.fd(server.detach(), net="tcp")


def udp_pair(c: Closer) -> tuple[FD, Any, FD, Any]:
    socks = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append((s.getsockname(), s.detach()))
    (a_addr, a), (b_addr, b) = socks
    kw: dict[str, Any] = {"net": "udp", "is_stream": False}
    return c.fd(a, **kw), a_addr, c.fd(b, **kw), b_addr


STREAM_KINDS = ["pipe", "unix", "tcp"]


def stream_pair(kind: str, c: Closer) -> tuple[FD, FD]:
    """(rd, wr): bytes written to wr arrive at rd."""
    if kind == "pipe":
        return pipe(c)
    if kind == "unix":
        return unix_pair(c)
    return tcp_pair(c)


def closing_error(kind: str) -> type[ClosingError]:
    return FileClosingError if kind == "pipe" else NetClosingError


def fill(fd: FD) -> int:
    """Write to fd's raw descriptor until the kernel says EAGAIN; returns the byte count."""
    chunk = b"\0" * 65536
    total = 0
    while True:
        try:
            total += os.write(fd.sysfd, chunk)
        except BlockingIOError:
            return total


def drain(fd: FD) -> int:
    """Read fd's raw descriptor until EAGAIN (or EOF); returns the byte count."""
    total = 0
    while True:
        try:
            b = os.read(fd.sysfd, 1 << 20)
        except BlockingIOError:
            return total
        if not b:
            return total
        total += len(b)


def read_all(fd: FD) -> bytes:
    """Read through the FD until EOF."""
    out = bytearray()
    while True:
        b = fd.read(1 << 20)
        if not b:
            return bytes(out)
        out += b


def assert_closed(num: int, st: os.stat_result) -> None:
    """The OS descriptor num is closed: EBADF, or the number now names another file."""
    try:
        st2 = os.fstat(num)
    except OSError as e:
        assert e.errno == errno.EBADF
        return
    assert (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino), f"fd {num} is still open"


def refs(fd: FD) -> int:
    return fd.fdmu.state & MUTEX_REF_MASK


def state(fd: FD, mode: str) -> int:
    pd = pd_of(fd)
    with pd.lock:
        return pd.rg if mode == "r" else pd.wg


@dataclass
class Blocked:
    """An FD operation that parks until something happens to the FD."""

    fd: FD
    mode: str  # "r" or "w": the pollDesc side it parks on
    call: Callable[[], Any]
    closing: type[ClosingError]


BLOCKING_OPS = [
    "read-pipe",
    "read-unix",
    "read-tcp",
    "write-pipe",
    "write-unix",
    "write-tcp",
    "accept",
    "recvfrom",
    "recvmsg",
    "raw_read-pipe",
]


def blocked_op(name: str, c: Closer) -> Blocked:
    op, _, kind = name.partition("-")
    if op == "accept":
        ln, _ = tcp_listener(c)
        return Blocked(ln, "r", ln.accept, NetClosingError)
    if op == "recvfrom":
        _, _, b, _ = udp_pair(c)
        return Blocked(b, "r", lambda: b.recvfrom(100), NetClosingError)
    if op == "recvmsg":
        _, b = unix_pair(c)
        return Blocked(b, "r", lambda: b.recvmsg(100), NetClosingError)
    rd, wr = stream_pair(kind, c)
    err = closing_error(kind)
    if op == "read":
        return Blocked(rd, "r", lambda: rd.read(100), err)
    if op == "raw_read":

        def f(fd: int) -> bool:
            try:
                os.read(fd, 100)
            except BlockingIOError:
                return False
            return True

        return Blocked(rd, "r", lambda: rd.raw_read(f), err)
    assert op == "write"
    fill(wr)
    return Blocked(wr, "w", lambda: wr.write(b"w" * (1 << 20)), err)


# --- close ---------------------------------------------------------------------------------


@pytest.mark.parametrize("op", BLOCKING_OPS)
def test_close_unblocks_blocked_op(rt: Runtime, fds: Closer, op: str) -> None:
    """Port of os TestClosedPipeRaceRead / TestClosedPipeRaceWrite, for every blocking
    operation: close() wakes the parked thread with the closing error, and returns only after
    the OS descriptor is closed (promises 1 and 2)."""
    b = blocked_op(op, fds)
    num = b.fd.sysfd
    st = os.fstat(num)
    pd = pd_of(b.fd)
    runner = Runner(b.call)
    wait_parked(b.fd, b.mode)
    b.fd.close()
    # close() has returned: the descriptor is destroyed, unregistered and closed.
    assert b.fd.sysfd == -1
    assert pd.id not in rt.open_pds
    assert_closed(num, st)
    exc = runner.join_exc()
    assert type(exc) is b.closing
    if b.mode == "w":
        assert 0 <= exc.written < (1 << 20)  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["pipe", "unix"])
def test_close_waits_for_operation_in_syscall(rt: Runtime, fds: Closer, kind: str) -> None:
    """close() waits on the close semaphore while an operation is inside its syscall (here a
    raw_read callback that has not returned): the OS descriptor stays open until it leaves.

    Go: internal/poll FD.Close (runtime_Semacquire(&fd.csema))
    """
    rd, _ = stream_pair(kind, fds)
    num = rd.sysfd
    st = os.fstat(num)
    entered, release = threading.Event(), threading.Event()

    def f(fd: int) -> bool:
        entered.set()
        release.wait(10)
        return True

    op = Runner(lambda: rd.raw_read(f))
    assert entered.wait(5)
    closer = Runner(rd.close, name="closer")
    wait_until(rd.closing, what="close() to mark the FD closed")
    # A bounded look for a close() that returns too early; the real check is the fstat.
    assert not closer.done.wait(0.05), "close() returned while an operation was in its syscall"
    assert os.fstat(num).st_ino == st.st_ino  # still open: no close(2) under a running syscall
    release.set()
    op.join()
    closer.join()
    assert rd.sysfd == -1
    assert_closed(num, st)


@pytest.mark.parametrize("kind", ["pipe", "unix"])
def test_recycled_fd_number_never_gets_old_waiters_io(rt: Runtime, fds: Closer, kind: str) -> None:
    """Close FD A while a reader is parked on it, give A's number to a new pipe B: A's reader
    gets the closing error and never B's data, which B reads intact (promise 2)."""
    a, _ = stream_pair(kind, fds)
    num = a.sysfd
    reader = Runner(lambda: a.read(100))
    wait_parked(a, "r")
    a.close()
    br, bw = os.pipe()
    if br != num:
        os.dup2(br, num, inheritable=False)  # the number is free: close() closed it
        os.close(br)
        br = num
    b_r = fds.fd(br, net="file")
    b_w = fds.fd(bw, net="file")
    b_w.write(b"for B only")
    exc = reader.join_exc()
    assert type(exc) is closing_error(kind)
    assert b_r.read(100) == b"for B only"


@pytest.mark.parametrize("kind", ["pipe", "unix"])
def test_double_close_error(rt: Runtime, fds: Closer, kind: str) -> None:
    """Port of os TestDoubleCloseError: a second close() raises the closing error."""
    rd, _ = stream_pair(kind, fds)
    rd.close()
    with pytest.raises(closing_error(kind)) as ei:
        rd.close()
    assert type(ei.value) is closing_error(kind)


@pytest.mark.parametrize("kind", ["pipe", "unix"])
def test_conn_close(rt: Runtime, fds: Closer, kind: str) -> None:
    """Port of net TestConnClose (and os's ErrClosed): after close, every operation raises
    the closing error, a zero-byte read included."""
    rd, _ = stream_pair(kind, fds)
    rd.close()
    err = closing_error(kind)
    calls: list[Callable[[], Any]] = [
        lambda: rd.read(1),
        lambda: rd.read(0),
        lambda: rd.read_into(bytearray(1)),
        lambda: rd.write(b"x"),
        lambda: rd.write(b""),
        lambda: rd.pread(1, 0),
        lambda: rd.pwrite(b"x", 0),
        lambda: rd.set_deadline(None),
        lambda: rd.set_read_deadline(time.monotonic() + 1),
        lambda: rd.set_write_deadline(None),
        lambda: rd.raw_read(lambda fd: True),
        lambda: rd.raw_write(lambda fd: True),
        rd.dup,
        rd.fstat,
        lambda: rd.control(lambda fd: fd),
        rd.set_blocking,
        rd.close,
        rd.detach,
    ]
    if kind != "pipe":
        calls += [
            rd.accept,
            lambda: rd.recvfrom(1),
            lambda: rd.recvfrom_into(bytearray(1)),
            lambda: rd.recvmsg(1),
            lambda: rd.sendto(b"x", ("127.0.0.1", 9)),
            lambda: rd.sendmsg([b"x"]),
            lambda: rd.shutdown(socket.SHUT_RDWR),
        ]
    for call in calls:
        with pytest.raises(ClosingError) as ei:
            call()
        assert type(ei.value) is err


def test_listener_close(rt: Runtime, fds: Closer) -> None:
    """Port of net TestListenerClose: accept on a closed listener fails."""
    ln, _ = tcp_listener(fds)
    ln.close()
    with pytest.raises(NetClosingError):
        ln.accept()


def test_packet_conn_close(rt: Runtime, fds: Closer) -> None:
    """Port of net TestPacketConnClose: recvfrom on a closed packet conn fails."""
    _, _, b, _ = udp_pair(fds)
    b.close()
    with pytest.raises(NetClosingError):
        b.recvfrom(1)


def test_close_unblocks_read(rt: Runtime, fds: Closer) -> None:
    """Port of net TestCloseUnblocksRead (issue 17695): the peer's close wakes a blocked
    read, which returns EOF (b"")."""
    client, server = tcp_pair(fds)
    reader = Runner(lambda: client.read(1))
    wait_parked(client, "r")
    server.close()
    assert reader.join() == b""


def test_not_temporary_read(rt: Runtime, fds: Closer) -> None:
    """Port of net TestNotTemporaryRead (issue 24808): a read after the peer reset the
    connection raises ConnectionResetError, not EOF and not a poller error."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as ln:
        ln.bind(("127.0.0.1", 0))
        ln.listen(1)
        client = socket.create_connection(ln.getsockname())
        server, _ = ln.accept()
    ss = fds.fd(client.detach(), net="tcp")
    reader = Runner(lambda: ss.read(1))
    wait_parked(ss, "r")
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.close()
    exc = reader.join_exc()
    assert isinstance(exc, ConnectionResetError), exc


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_close_read(rt: Runtime, fds: Closer, kind: str) -> None:
    """Port of net TestCloseRead: after shutdown(SHUT_RD) a read returns EOF, and a read
    parked at the time is woken."""
    rd, _ = stream_pair(kind, fds)
    reader = Runner(lambda: rd.read(1))
    wait_parked(rd, "r")
    rd.shutdown(socket.SHUT_RD)
    assert reader.join() == b""
    assert rd.read(1) == b""


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_close_write(rt: Runtime, fds: Closer, kind: str) -> None:
    """Port of net TestCloseWrite: shutdown(SHUT_WR) gives the peer EOF; a later write
    fails (EPIPE) with nothing written."""
    a, b = stream_pair(kind, fds)
    a.shutdown(socket.SHUT_WR)
    assert b.read(1) == b""
    b.shutdown(socket.SHUT_WR)
    assert a.read(1) == b""
    with pytest.raises(BrokenPipeError) as ei:
        a.write(b"x")
    assert ei.value.written == 0  # type: ignore[attr-defined]


DGRAM_READS: dict[str, tuple[Callable[[FD], Any], Any]] = {
    "read": (lambda f: f.read(10), b""),
    "read_into": (lambda f: f.read_into(bytearray(10)), 0),
    "recvfrom": (lambda f: f.recvfrom(10), (b"", None)),
    "recvfrom_into": (lambda f: f.recvfrom_into(bytearray(10)), (0, None)),
    "recvmsg": (lambda f: f.recvmsg(10, 64), (b"", [], 0, None)),
}


@pytest.mark.parametrize("op", DGRAM_READS)
def test_datagram_shutdown_read_wakes_and_returns_empty(rt: Runtime, fds: Closer, op: str) -> None:
    """shutdown(SHUT_RD) of a datagram socket wakes a parked read, which returns an empty
    datagram from nobody, as every later read that finds nothing does: what a blocking
    read(2) returns there (Linux says EAGAIN to a non-blocking one, even after the edge
    the shutdown makes, so a woken reader that retried would park for ever)."""
    read, empty = DGRAM_READS[op]
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    kw: dict[str, Any] = {"net": "unixgram", "is_stream": False}
    fa, fb = fds.fd(a.detach(), **kw), fds.fd(b.detach(), **kw)
    reader = Runner(lambda: read(fb))
    wait_parked(fb, "r")
    fb.shutdown(socket.SHUT_RD)
    assert reader.join() == empty
    assert read(fb) == empty
    with pytest.raises(BrokenPipeError):
        fa.write(b"refused")  # a unix peer may no longer send to it


def test_shutdown_of_unconnected_udp_still_wakes(rt: Runtime, fds: Closer) -> None:
    """Linux shuts an unconnected UDP socket down and wakes its readers, yet reports
    ENOTCONN; FD.shutdown raises that error after doing the same."""
    a, a_addr, b, b_addr = udp_pair(fds)
    reader = Runner(lambda: b.recvfrom(10))
    wait_parked(b, "r")
    with pytest.raises(OSError) as ei:
        b.shutdown(socket.SHUT_RD)
    assert ei.value.errno == errno.ENOTCONN
    assert reader.join() == (b"", None)
    a.sendto(b"late", b_addr)  # UDP still queues it
    assert b.recvfrom(10) == (b"late", a_addr)
    assert b.recvfrom(10) == (b"", None)


@pytest.mark.parametrize("how", ["set_blocking", "pollable=False"])
def test_close_with_blocking_read(rt: Runtime, fds: Closer, how: str) -> None:
    """Port of os TestCloseWithBlockingReadByFd and TestCloseWithBlockingReadByNewFile: a
    descriptor in blocking mode does not make close() wait for a read stuck in read(2); the
    read ends when the writer closes, and destroys the descriptor as it leaves."""
    if how == "set_blocking":
        r, w = pipe(fds)
        r.set_blocking()
    else:
        pr, pw = os.pipe()
        r = fds.fd(pr, net="file", pollable=False)
        w = fds.fd(pw, net="file")
    assert r.is_blocking and os.get_blocking(r.sysfd)
    reader = Runner(lambda: r.read(1))
    wait_until(lambda: bool(r.fdmu.state & MUTEX_RLOCK), what="the reader to take the lock")
    r.close()  # would hang here (until the test's timeout) if it waited for the reader
    w.close()
    exc = reader.join_exc()
    # The read either got into read(2) before close (EOF once the writer closed) or saw
    # the close first.
    assert exc is None and reader.result == b"" or type(exc) is FileClosingError
    assert r.sysfd == -1


@pytest.mark.parametrize("kind", ["pipe", "unix"])
def test_set_blocking_on_parked_reader(rt: Runtime, fds: Closer, kind: str) -> None:
    """Port of os TestFdReadRace (issue 24481): putting the descriptor in blocking mode while
    a read is parked does not hang, and a close then wakes the read without a timeout."""
    rd, _ = stream_pair(kind, fds)
    rd.set_read_deadline(time.monotonic() + 60)
    reader = Runner(lambda: rd.read(10))
    wait_parked(rd, "r")
    rd.set_blocking()
    rd.close()
    exc = reader.join_exc()
    assert type(exc) is closing_error(kind)


# --- construction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, kw, exc",
    [
        ((True,), {}, TypeError),
        (("3",), {}, TypeError),
        ((-1,), {}, ValueError),
        ((0,), {"net": b"tcp"}, TypeError),
    ],
)
def test_constructor_rejects_bad_arguments(
    rt: Runtime, args: tuple[Any, ...], kw: dict[str, Any], exc: type[Exception]
) -> None:
    with pytest.raises(exc):
        FD(*args, **kw)


def test_constructor_failure_leaves_fd_to_caller(rt: Runtime, fds: Closer) -> None:
    """When FD() raises, the caller still owns the descriptor, open and in its original
    blocking mode: a non-socket given a network name, a descriptor that is not open, a
    runtime that refuses to register it."""
    r, w = os.pipe()
    fds.own(r)
    fds.own(w)
    with pytest.raises(OSError) as ei:
        FD(r, net="tcp")
    assert ei.value.errno == errno.ENOTSOCK
    os.close(w)
    fds.disown(w)
    with pytest.raises(OSError) as ei:
        FD(w, net="file")  # closed just now
    assert ei.value.errno == errno.EBADF

    dead = runtime_poll_server_init("poll")
    dead.shutdown()  # registering with it raises
    a, b = socket.socketpair()
    b.close()
    n = fds.own(a.detach())
    with pytest.raises(Exception, match="shutdown"):
        FD(n, net="unix", runtime=dead)
    gc.collect()  # the FD's own socket object must not have closed n
    assert os.get_blocking(n)
    assert os.fstat(n) is not None
    assert os.get_blocking(r) and os.fstat(r) is not None


# --- detach, dup, accept -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pipe", "unix"])
@pytest.mark.parametrize("was_blocking", [True, False])
def test_detach(rt: Runtime, fds: Closer, kind: str, was_blocking: bool) -> None:
    """detach() wakes a parked reader with the closing error, unregisters the descriptor,
    restores its original blocking mode and hands it back open.

    Go: none (os.File.Fd hands out the descriptor but keeps owning it)
    """
    if kind == "pipe":
        r, w = os.pipe()
        os.set_blocking(r, was_blocking)
        rd, wr = fds.fd(r, net="file"), fds.fd(w, net="file")
    else:
        a, b = socket.socketpair()
        a.setblocking(was_blocking)
        rd, wr = fds.fd(a.detach(), net="unix"), fds.fd(b.detach(), net="unix")
    num = rd.sysfd
    assert not os.get_blocking(num)  # made non-blocking while it is pollable
    pd = pd_of(rd)
    reader = Runner(lambda: rd.read(10))
    wait_parked(rd, "r")
    n = fds.own(rd.detach())
    assert n == num
    assert type(reader.join_exc()) is closing_error(kind)
    assert pd.id not in rt.open_pds
    assert rd.sysfd == -1
    assert os.get_blocking(n) is was_blocking
    wr.write(b"still open")
    assert os.read(n, 100) == b"still open"
    with pytest.raises(closing_error(kind)):
        rd.detach()
    with pytest.raises(closing_error(kind)):
        rd.close()


@pytest.mark.parametrize("kind", ["pipe", "unix"])
def test_dup_is_cloexec(rt: Runtime, fds: Closer, kind: str) -> None:
    """dup() is close-on-exec and shares the file status flags (O_NONBLOCK included).

    Go: internal/poll FD.Dup (F_DUPFD_CLOEXEC)
    """
    rd, _ = stream_pair(kind, fds)
    d = fds.own(rd.dup())
    assert d != rd.sysfd
    assert not os.get_inheritable(d)
    assert not os.get_blocking(d)
    assert os.fstat(d).st_ino == rd.fstat().st_ino


def test_accept_returns_nonblocking_cloexec_fd(rt: Runtime, fds: Closer) -> None:
    """A parked accept is readied by a connection; the new descriptor is non-blocking and
    close-on-exec (Go's accept4 with SOCK_NONBLOCK|SOCK_CLOEXEC)."""
    ln, addr = tcp_listener(fds)
    acceptor = Runner(ln.accept)
    wait_parked(ln, "r")
    with socket.create_connection(addr) as client:
        nfd, peer = acceptor.join()
        fds.own(nfd)
        assert peer == client.getsockname()
        assert not os.get_blocking(nfd)
        assert not os.get_inheritable(nfd)
        conn = fds.fd(nfd, net="tcp")
        fds.disown(nfd)
        client.sendall(b"hello")
        assert conn.read(5) == b"hello"


# --- deadlines: net/timeout_test.go, os/timeout_test.go -------------------------------------


def test_accept_timeout(rt: Runtime, fds: Closer) -> None:
    """Port of net TestAcceptTimeout: a past deadline fails accept even with a connection
    pending; a 50 ms deadline lets the pending one through and then fires."""
    ln, addr = tcp_listener(fds)
    with socket.create_connection(addr):
        ln.set_deadline(past())
        for _ in range(2):
            with pytest.raises(DeadlineExceededError):
                ln.accept()
        ln.set_deadline(time.monotonic() + 0.05)
        nfd, _ = ln.accept()  # still pending: the failed accepts took nothing
        os.close(nfd)
        for _ in range(2):
            with pytest.raises(DeadlineExceededError):
                ln.accept()


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_read_timeout(rt: Runtime, fds: Closer, kind: str) -> None:
    """Port of net/os TestReadTimeout: a past read deadline fails reads even with data
    buffered, and consumes nothing; a future one lets reads through until it fires."""
    rd, wr = stream_pair(kind, fds)
    wr.write(b"READ TIMEOUT TEST")
    rd.set_read_deadline(past())
    for _ in range(2):
        with pytest.raises(DeadlineExceededError):
            rd.read(1)
        with pytest.raises(DeadlineExceededError):
            rd.read_into(bytearray(1))
    rd.set_read_deadline(time.monotonic() + 0.05)
    got = b""
    while len(got) < len(b"READ TIMEOUT TEST"):
        got += rd.read(100)  # data is buffered: no wait, so no timeout
    assert got == b"READ TIMEOUT TEST"
    for _ in range(2):  # the first parks and times out, the second fails at once
        with pytest.raises(DeadlineExceededError):
            rd.read(1)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_write_timeout(rt: Runtime, fds: Closer, kind: str) -> None:
    """Port of net/os TestWriteTimeout: a past write deadline fails writes even with buffer
    space, writing nothing; a future one lets writes through until the clock passes it."""
    rd, wr = stream_pair(kind, fds)
    wr.set_write_deadline(past())
    for _ in range(2):
        with pytest.raises(DeadlineExceededError) as ei:
            wr.write(b"WRITE TIMEOUT TEST")
        assert ei.value.written == 0
    t = time.monotonic() + 0.01
    wr.set_write_deadline(t)
    assert wr.write(b"WRITE TIMEOUT TEST") == 18
    sleep_past(t)
    for _ in range(2):
        with pytest.raises(DeadlineExceededError) as ei:
            wr.write(b"WRITE TIMEOUT TEST")
        assert ei.value.written == 0
    wr.close()
    assert read_all(rd) == b"WRITE TIMEOUT TEST"


def test_read_from_timeout(rt: Runtime, fds: Closer) -> None:
    """Port of net TestReadFromTimeout: a past read deadline fails recvfrom even with a
    datagram queued; clearing it delivers the datagram; a 50 ms deadline then fires."""
    a, a_addr, b, b_addr = udp_pair(fds)
    a.sendto(b"READFROM TIMEOUT TEST", b_addr)
    b.set_read_deadline(past())
    for _ in range(2):
        with pytest.raises(DeadlineExceededError):
            b.recvfrom(100)
        with pytest.raises(DeadlineExceededError):
            b.recvfrom_into(bytearray(100))
    b.set_read_deadline(None)
    assert b.recvfrom(100) == (b"READFROM TIMEOUT TEST", a_addr)
    b.set_read_deadline(time.monotonic() + 0.05)
    for _ in range(2):
        with pytest.raises(DeadlineExceededError):
            b.recvfrom(100)


def test_write_to_timeout(rt: Runtime, fds: Closer) -> None:
    """Port of net TestWriteToTimeout: a past write deadline fails sendto with nothing sent."""
    a, a_addr, b, b_addr = udp_pair(fds)
    a.set_write_deadline(past())
    for _ in range(2):
        with pytest.raises(DeadlineExceededError) as ei:
            a.sendto(b"WRITETO TIMEOUT TEST", b_addr)
        assert ei.value.written == 0
    a.set_write_deadline(None)
    assert a.sendto(b"after", b_addr) == 5
    assert b.recvfrom(100) == (b"after", a_addr)  # the failed sends sent nothing


def _setters(fd: FD, mode: str) -> tuple[Callable[[float | None], None], Callable[..., None]]:
    """(the setter for mode, the setter for the other mode)."""
    if mode == "r":
        return fd.set_read_deadline, fd.set_write_deadline
    return fd.set_write_deadline, fd.set_read_deadline


@pytest.mark.parametrize("op", BLOCKING_OPS)
def test_timeout_must_not_return(rt: Runtime, fds: Closer, op: str) -> None:
    """Port of net/os TestReadTimeoutMustNotReturn, TestWriteTimeoutMustNotReturn and net
    TestAcceptTimeoutMustNotReturn: after SetDeadline(past), an expired deadline on the other
    direction and a cleared one on this direction, the operation parks instead of timing out;
    close() then ends it with the closing error, not a timeout."""
    b = blocked_op(op, fds)
    own, other = _setters(b.fd, b.mode)

    def body() -> Any:
        b.fd.set_deadline(past())
        other(past())
        own(None)
        return b.call()

    runner = Runner(body)
    wait_parked(b.fd, b.mode)  # parked: it did not fail in prepare, so it is not expired
    assert not runner.done.is_set()
    b.fd.close()
    exc = runner.join_exc()
    assert type(exc) is b.closing


@pytest.mark.parametrize("op", BLOCKING_OPS)
def test_deadline_in_past_unblocks_op(rt: Runtime, fds: Closer, op: str) -> None:
    """Port of net TestReadTimeoutUnblocksRead (golang.org/cl/30164; net/http depends on it),
    for every blocking operation: moving the deadline into the past wakes the parked thread
    with a timeout, and the deadline stays expired for the next call."""
    b = blocked_op(op, fds)
    own, _ = _setters(b.fd, b.mode)
    runner = Runner(b.call)
    wait_parked(b.fd, b.mode)
    own(time.monotonic() - 1.0)
    exc = runner.join_exc()
    assert type(exc) is DeadlineExceededError
    assert state(b.fd, b.mode) == PD_NIL
    with pytest.raises(DeadlineExceededError):
        b.call()


@pytest.mark.parametrize("op", ["read-pipe", "write-unix", "accept"])
def test_deadline_moved_earlier_rewakes(rt: Runtime, fds: Closer, op: str) -> None:
    """A deadline moved from an hour away to 50 ms away fires about 50 ms later: the parked
    thread re-times its wait (Go's poll_runtime_pollSetDeadline in runtime/netpoll.go re-arms
    the timer on a change)."""
    b = blocked_op(op, fds)
    own, _ = _setters(b.fd, b.mode)
    own(time.monotonic() + 3600)
    runner = Runner(b.call)
    wait_parked(b.fd, b.mode)
    t0 = time.monotonic()
    own(t0 + 0.05)
    exc = runner.join_exc()
    elapsed = time.monotonic() - t0
    assert type(exc) is DeadlineExceededError
    assert 0.05 <= elapsed < 2.0


@pytest.mark.parametrize("new", ["later", "cleared"])
def test_extended_deadline_keeps_waiting(rt: Runtime, fds: Closer, new: str) -> None:
    """A read parked with a deadline that is then moved later (or cleared) keeps waiting past
    the old deadline, and completes with data when it comes (Go: the same pollSetDeadline path)."""
    rd, wr = tcp_pair(fds)
    first = time.monotonic() + 0.15
    rd.set_read_deadline(first)
    reader = Runner(lambda: rd.read(100))
    wait_parked(rd, "r")
    rd.set_read_deadline(time.monotonic() + 60 if new == "later" else None)
    sleep_past(first + 0.05)  # time is the subject: the old deadline must not fire
    assert not reader.done.is_set()
    assert state(rd, "r") == PD_PARKED
    wr.write(b"late data")
    assert reader.join() == b"late data"


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_clearing_expired_deadline_unexpires(rt: Runtime, fds: Closer, kind: str) -> None:
    """An expired deadline, whether set in the past or passed by the clock, is un-expired by
    clearing it or moving it into the future (Go's publishInfo clears the expired bit)."""
    rd, wr = stream_pair(kind, fds)
    wr.write(b"data")
    rd.set_read_deadline(-math.inf)
    with pytest.raises(DeadlineExceededError):
        rd.read(2)
    rd.set_read_deadline(None)
    assert rd.read(2) == b"da"
    t = time.monotonic() + 0.01
    rd.set_read_deadline(t)
    sleep_past(t)
    with pytest.raises(DeadlineExceededError):
        rd.read(2)
    rd.set_read_deadline(time.monotonic() + 60)
    assert rd.read(2) == b"ta"
    wr.set_write_deadline(past())
    with pytest.raises(DeadlineExceededError):
        wr.write(b"x")
    wr.set_write_deadline(math.inf)
    assert wr.write(b"x") == 1
    assert rd.read(1) == b"x"


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_write_deadline_leaves_reads_alone(rt: Runtime, fds: Closer, kind: str) -> None:
    """SetWriteDeadline does not affect reads and SetReadDeadline does not affect writes
    (Go: internal/poll FD.SetWriteDeadline sets only pd.wd; the point of
    net's TestReadTimeoutMustNotReturn)."""
    rd, wr = stream_pair(kind, fds)
    rd.set_write_deadline(past())
    wr.set_read_deadline(past())
    reader = Runner(lambda: rd.read(10))
    wait_parked(rd, "r")
    assert wr.write(b"ok") == 2
    assert reader.join() == b"ok"


@pytest.mark.parametrize("op", ["read", "recvfrom", "write", "accept"])
def test_timeout_fluctuation(rt: Runtime, fds: Closer, op: str) -> None:
    """Port of net TestReadTimeoutFluctuation, TestReadFromTimeoutFluctuation,
    TestWriteTimeoutFluctuation and TestAcceptTimeoutMustReturn: a deadline 50 ms away fails
    the blocked operation no earlier than 50 ms and well within a second."""
    if op == "read":
        fd, _ = tcp_pair(fds)
        call: Callable[[], Any] = lambda: fd.read(256)  # noqa: E731
    elif op == "recvfrom":
        _, _, fd, _ = udp_pair(fds)
        call = lambda: fd.recvfrom(256)  # noqa: E731
    elif op == "write":
        _, fd = unix_pair(fds)
        fill(fd)
        call = lambda: fd.write(b"TIMEOUT WRITER" * 1000)  # noqa: E731
    else:
        fd, _ = tcp_listener(fds)
        fd.set_deadline(None)
        call = fd.accept
    t0 = time.monotonic()
    fd.set_deadline(t0 + 0.05)
    with pytest.raises(DeadlineExceededError):
        call()
    elapsed = time.monotonic() - t0
    assert 0.05 <= elapsed < 1.0


@pytest.mark.parametrize("kind", ["pipe", "tcp"])
def test_various_deadlines(rt: Runtime, fds: Closer, kind: str) -> None:
    """Port of net/os TestVariousDeadlines (scaled down): a reader copying from a writer that
    never stops always ends with a timeout, for deadlines from 1 ns to 20 ms."""
    for timeout in (1e-9, 5e-9, 1e-6, 25e-6, 250e-6, 1e-3, 5e-3, 20e-3):
        rd, wr = stream_pair(kind, fds)

        def write_forever(wr: FD = wr) -> None:
            chunk = b"a" * 4096
            try:
                while True:
                    wr.write(chunk)
            except OSError:
                pass  # the reader closed (EPIPE, ECONNRESET) or we did (closing)

        writer = Runner(write_forever, name="writer")
        t0 = time.monotonic()
        rd.set_deadline(t0 + timeout)
        n = 0
        with pytest.raises(DeadlineExceededError):
            while True:
                b = rd.read(65536)
                assert b, "EOF from a writer that never stops"
                n += len(b)
        rd.close()
        wr.close()
        writer.join()


@pytest.mark.parametrize("kind", ["pipe", "tcp"])
def test_read_write_deadline_race(rt: Runtime, fds: Closer, kind: str) -> None:
    """Port of net/os TestReadWriteDeadlineRace, scaled to a fraction of a second, with
    several threads racing deadline changes (tiny, past, cleared) against a reader and a
    writer: each operation ends with data or a timeout, never with another error."""
    rd, wr = stream_pair(kind, fds)
    stop = threading.Event()
    bad: list[BaseException] = []
    counts = {"data": 0, "timeout": 0}
    lock = threading.Lock()

    def setter(i: int) -> None:
        k = 0
        while not stop.is_set():
            k += 1
            now = time.monotonic()
            choice = (i + k) % 5
            if choice == 0:
                rd.set_read_deadline(now + 2e-6)
                wr.set_write_deadline(now + 2e-6)
            elif choice == 1:
                rd.set_deadline(None)
                wr.set_deadline(None)
            elif choice == 2:
                rd.set_read_deadline(now - 1)
                wr.set_write_deadline(now - 1)
            elif choice == 3:
                rd.set_read_deadline(now + 1e-3)
                wr.set_write_deadline(now + 1e-3)
            else:
                rd.set_deadline(now + 3600)
                wr.set_deadline(now + 3600)

    def loop(op: Callable[[], Any]) -> None:
        while not stop.is_set():
            try:
                op()
                key = "data"
            except DeadlineExceededError:
                key = "timeout"
            except BaseException as e:  # noqa: BLE001 - reported below
                bad.append(e)
                return
            with lock:
                counts[key] += 1

    threads = [Runner(lambda i=i: setter(i), name=f"setter-{i}") for i in range(3)]
    threads += [Runner(lambda: loop(lambda: rd.read(1)), name="reader")]
    threads += [Runner(lambda: loop(lambda: wr.write(b"x")), name="writer")]
    end = time.monotonic() + 0.25
    while time.monotonic() < end and not bad:
        time.sleep(0.01)  # the duration of the race, not synchronisation
    stop.set()
    for t in threads[:3]:
        t.join()
    rd.set_read_deadline(past())  # wake a parked reader or writer so they see stop
    wr.set_write_deadline(past())
    for t in threads[3:]:
        t.join()
    assert not bad, bad
    assert counts["data"] + counts["timeout"] > 0


def test_concurrent_set_deadline(rt: Runtime, fds: Closer) -> None:
    """Port of net TestConcurrentSetDeadline (issue 35367), scaled down: many threads move
    the deadlines of many descriptors steadily earlier; nothing fails, every deadline ends
    in the future."""
    conns = [fd for _ in range(5) for fd in unix_pair(fds)]
    now = time.monotonic()

    def body(i: int) -> None:
        for j in range(40, 0, -1):
            for k, c in enumerate(conns):
                c.set_read_deadline(now + 7200 + i * j * k)
                c.set_write_deadline(now + 3600 + i * j * k)

    runners = [Runner(lambda i=i: body(i), name=f"setter-{i}") for i in range(4)]
    for r in runners:
        r.join()
    for c in conns:
        pd = pd_of(c)
        assert now + 3600 <= pd.wd <= pd.rd < NO_DEADLINE


@pytest.mark.parametrize("mode", ["read", "write"])
def test_racy_read_write(rt: Runtime, fds: Closer, mode: str) -> None:
    """Port of os TestRacyRead / TestRacyWrite (scaled down): several threads read (write)
    with 1 ms deadlines while a peer streams; every error is a timeout, and a buffer may be
    reused at once after a cancelled call."""
    r, w = pipe(fds)
    stop = threading.Event()

    def stream() -> None:
        chunk = bytes(range(256)) * 4
        try:
            while not stop.is_set():
                if mode == "read":
                    w.write(chunk)
                else:
                    r.read(1024)
        except DeadlineExceededError:
            pass

    peer = Runner(stream, name="peer")
    target = r if mode == "read" else w
    setter = target.set_read_deadline if mode == "read" else target.set_write_deadline
    setter(time.monotonic() + 1e-3)

    def worker() -> None:
        b1 = bytearray(1024)
        for _ in range(25):
            try:
                if mode == "read":
                    target.read_into(b1)
                else:
                    target.write(b1)
            except DeadlineExceededError:
                setter(time.monotonic() + 1e-3)
            b1[:] = bytes(1024)  # mutate the buffer right after the call

    workers = [Runner(worker, name=f"worker-{i}") for i in range(4)]
    for wk in workers:
        wk.join()
    stop.set()
    (w.set_write_deadline if mode == "read" else r.set_read_deadline)(past())
    peer.join()


# --- whole writes --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_concurrent_writes_never_interleave(rt: Runtime, fds: Closer, kind: str) -> None:
    """Several threads write large, distinct blocks through one FD at once; every block
    arrives contiguous, because a write holds the write lock until all of it is written
    (promise 4; Go: internal/poll FD.Write takes writeLock around the whole loop)."""
    writers, blocks, size = 4, 3, 300_000
    rd, wr = stream_pair(kind, fds)
    total = writers * blocks * size
    rd.set_read_deadline(time.monotonic() + 15)  # a lost byte fails instead of hanging

    def read_total() -> bytes:
        out = bytearray()
        while len(out) < total:
            b = rd.read(1 << 20)
            assert b, "early EOF"
            out += b
        return bytes(out)

    reader = Runner(read_total, name="reader")
    start = threading.Barrier(writers)

    def write_blocks(w: int) -> None:
        start.wait(5)
        for k in range(blocks):
            tag = 1 + w * blocks + k
            assert wr.write(bytes([tag]) * size) == size

    runners = [Runner(lambda w=w: write_blocks(w), name=f"writer-{w}") for w in range(writers)]
    for r in runners:
        r.join()
    data = reader.join()
    assert len(data) == total
    tags = []
    for i in range(0, total, size):
        block = data[i : i + size]
        assert block == bytes([block[0]]) * size, f"block at {i} is interleaved"
        tags.append(block[0])
    assert sorted(tags) == list(range(1, writers * blocks + 1))


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_partial_write_cut_by_deadline(rt: Runtime, fds: Closer, kind: str) -> None:
    """A 10 MB write to a peer that does not read is cut by its deadline: it raises
    DeadlineExceededError whose ``written`` is what went out, and the peer receives exactly
    that many bytes (Go's internal/poll/fd_unix.go FD.Write returns (nn, err))."""
    rd, wr = stream_pair(kind, fds)
    total = 10 << 20
    wr.set_write_deadline(time.monotonic() + 0.1)
    with pytest.raises(DeadlineExceededError) as ei:
        wr.write(b"z" * total)
    written = ei.value.written
    assert 0 < written < total
    wr.close()
    assert len(read_all(rd)) == written


# --- zero-byte I/O -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_zero_byte_read(rt: Runtime, fds: Closer, kind: str) -> None:
    """Port of net TestZeroByteRead, plus Go's fine print (issue 15735): a zero-byte read
    returns b"" at once, with nothing buffered and with an expired deadline, but queues
    behind a read in progress (it takes the read lock); on a closed FD it raises."""
    rd, wr = stream_pair(kind, fds)
    assert rd.read(0) == b""
    assert rd.read_into(bytearray()) == 0
    rd.set_read_deadline(past())
    assert rd.read(0) == b""
    rd.set_read_deadline(None)
    reader = Runner(lambda: rd.read(10), name="reader")
    wait_parked(rd, "r")
    zero = Runner(lambda: rd.read(0), name="zero")
    wait_until(
        lambda: (rd.fdmu.state & MUTEX_RMASK) // MUTEX_RWAIT == 1,
        what="the zero-byte read to queue for the read lock",
    )
    assert not zero.done.is_set()
    wr.write(b"x")
    assert reader.join() == b"x"
    assert zero.join() == b""
    rd.close()
    with pytest.raises(closing_error(kind)):
        rd.read(0)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_zero_byte_write(rt: Runtime, fds: Closer, kind: str) -> None:
    """A zero-byte write still runs prepare: it returns 0, raises DeadlineExceededError
    (written 0) under an expired deadline and the closing error once closed
    (Go's internal/poll/fd_unix.go FD.Write calls prepareWrite before its loop)."""
    _, wr = stream_pair(kind, fds)
    assert wr.write(b"") == 0
    wr.set_write_deadline(past())
    with pytest.raises(DeadlineExceededError) as ei:
        wr.write(b"")
    assert ei.value.written == 0
    wr.set_write_deadline(None)
    assert wr.write(memoryview(b"")) == 0
    wr.close()
    with pytest.raises(closing_error(kind)):
        wr.write(b"")


# --- pipes: os/pipe_test.go ----------------------------------------------------------------


def test_epipe(rt: Runtime, fds: Closer) -> None:
    """Port of os TestEPIPE: every write to a pipe whose reader is closed raises
    BrokenPipeError, with written 0."""
    r, w = pipe(fds)
    r.close()
    for _ in range(20):
        with pytest.raises(BrokenPipeError) as ei:
            w.write(b"hi")
        assert ei.value.written == 0  # type: ignore[attr-defined]


def test_epipe_while_parked(rt: Runtime, fds: Closer) -> None:
    """A writer parked on a full pipe is woken when the reader closes and raises
    BrokenPipeError whose ``written`` counts what the pipe took before."""
    r, w = pipe(fds)
    total = 1 << 20
    writer = Runner(lambda: w.write(b"p" * total))
    wait_parked(w, "w")
    r.close()
    exc = writer.join_exc()
    assert isinstance(exc, BrokenPipeError), exc
    assert 0 < exc.written < total  # type: ignore[attr-defined]


def test_pipe_eof(rt: Runtime, fds: Closer) -> None:
    """Port of os TestPipeEOF: lines written while the reader is parked arrive in order, and
    the writer's close gives the parked reader EOF."""
    r, w = pipe(fds)

    def write_lines() -> None:
        for i in range(3):
            wait_parked(r, "r")
            w.write(f"line {i}\n".encode())
        wait_parked(r, "r")
        w.close()

    writer = Runner(write_lines, name="writer")
    assert read_all(r) == b"line 0\nline 1\nline 2\n"
    writer.join()


def test_read_nonblocking_fd(rt: Runtime, fds: Closer) -> None:
    """Port of os TestReadNonblockingFd (issue 20915): a read on a non-blocking descriptor
    that is not pollable raises EAGAIN (BlockingIOError), not "waiting for unsupported file
    type"."""
    pr, pw = os.pipe()
    os.set_blocking(pr, False)
    r = fds.fd(pr, net="file", pollable=False)
    fds.own(pw)
    assert r.is_blocking and not r.pd.pollable()
    with pytest.raises(BlockingIOError):
        r.read(1)
    os.write(pw, b"x")
    assert r.read(1) == b"x"


# --- non-pollable descriptors and bad deadlines --------------------------------------------


def test_nonpollable_deadline(rt: Runtime, fds: Closer, tmp_path: Any) -> None:
    """Port of os TestNonpollableDeadline: a regular file is refused by epoll (EPERM) and by
    the poll backend, so it stays in blocking mode and its deadline setters raise
    NoDeadlineError; with pollable=False that holds on every backend."""
    path = str(tmp_path / "f")
    f = fds.fd(os.open(path, os.O_RDWR | os.O_CREAT), net="file")
    g = fds.fd(os.open(path, os.O_RDWR), net="file", pollable=False)
    if rt.name in ("epoll", "poll"):
        assert f.is_blocking and not f.pd.pollable()
        assert os.get_blocking(f.sysfd)
    targets = [g] if f.pd.pollable() else [f, g]
    for fd in targets:
        for setter in (fd.set_deadline, fd.set_read_deadline, fd.set_write_deadline):
            with pytest.raises(NoDeadlineError):
                setter(time.monotonic() + 10)
        assert fd.write(b"regular") == 7
    assert g.pread(7, 0) == b"regular"
    g.close()
    with pytest.raises(FileClosingError):  # closed: the closing error comes first
        g.set_deadline(None)


BAD_DEADLINES = [
    (math.nan, ValueError),
    (True, TypeError),
    (False, TypeError),
    ("1", TypeError),
    (b"1", TypeError),
    (Decimal("1"), TypeError),
    (1j, TypeError),
]


@pytest.mark.parametrize("bad, exc", BAD_DEADLINES, ids=[repr(b) for b, _ in BAD_DEADLINES])
def test_deadline_setters_reject_bad_values(
    rt: Runtime, fds: Closer, bad: Any, exc: type[Exception]
) -> None:
    """The deadline setters reject NaN (ValueError), booleans and non-numbers (TypeError)
    and change nothing, even on a closed FD (arguments are checked first)."""
    rd, wr = unix_pair(fds)
    rd.set_read_deadline(time.monotonic() + 100)
    rd.set_write_deadline(past())
    pd = pd_of(rd)
    before = (pd.rd, pd.wd, pd.rseq, pd.wseq)
    for setter in (rd.set_deadline, rd.set_read_deadline, rd.set_write_deadline):
        with pytest.raises(exc):
            setter(bad)
        assert (pd.rd, pd.wd, pd.rseq, pd.wseq) == before
    assert pd.wd == EXPIRED
    wr.close()
    with pytest.raises(exc):
        wr.set_deadline(bad)


def test_deadline_values(rt: Runtime, fds: Closer) -> None:
    """None and +inf mean no deadline, -inf and any past time mean expired, ints work."""
    rd, _ = unix_pair(fds)
    pd = pd_of(rd)
    rd.set_deadline(math.inf)
    assert (pd.rd, pd.wd) == (NO_DEADLINE, NO_DEADLINE)
    rd.set_read_deadline(-math.inf)
    assert pd.rd == EXPIRED
    rd.set_write_deadline(int(time.monotonic()) - 1)
    assert pd.wd == EXPIRED
    t = int(time.monotonic()) + 100
    rd.set_deadline(t)
    assert (pd.rd, pd.wd) == (t, t)
    rd.set_deadline(None)
    assert (pd.rd, pd.wd) == (NO_DEADLINE, NO_DEADLINE)


# --- interrupts ----------------------------------------------------------------------------


class _Interrupt(Exception):
    """What the test's signal handler raises in the parked main thread."""


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
@pytest.mark.parametrize("op", ["read-pipe", "read-tcp", "write-unix", "accept"])
def test_interrupt_while_parked_leaves_polldesc_clean(rt: Runtime, fds: Closer, op: str) -> None:
    """An exception raised by a signal handler in a thread parked in the runtime (Ctrl-C's
    KeyboardInterrupt, here SIGUSR1's) propagates, leaves the pollDesc at pdNil and the
    fdMutex unlocked, and the descriptor works normally afterwards: no "double wait".

    The operation runs in the main thread, where Python runs signal handlers; a helper sends
    the signal once it sees the main thread parked.
    """
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")
    b = blocked_op(op, fds)
    main = threading.main_thread().ident
    assert main is not None

    def handler(signum: int, frame: Any) -> None:
        raise _Interrupt()

    def kick() -> None:
        try:
            wait_parked(b.fd, b.mode)
        except BaseException:
            b.fd.close()  # do not leave the main thread parked forever
            raise
        signal.pthread_kill(main, signal.SIGUSR1)

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        kicker = Runner(kick, name="kicker")
        with pytest.raises(_Interrupt) as ei:
            b.call()
        kicker.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
    if b.mode == "w":
        assert ei.value.written >= 0  # type: ignore[attr-defined]
    assert state(b.fd, b.mode) == PD_NIL
    assert not b.fd.fdmu.state & (MUTEX_RLOCK | MUTEX_WLOCK)
    assert refs(b.fd) == 0
    # The same operation parks again normally, and is woken normally.
    runner = Runner(b.call)
    wait_parked(b.fd, b.mode)
    b.fd.close()
    assert type(runner.join_exc()) is b.closing


# --- the remaining operations --------------------------------------------------------------


def test_pread_pwrite(rt: Runtime, fds: Closer, tmp_path: Any) -> None:
    """pread/pwrite on a regular file: at an offset, without moving the file position.

    Go: internal/poll FD.Pread, FD.Pwrite
    """
    f = fds.fd(os.open(str(tmp_path / "f"), os.O_RDWR | os.O_CREAT), net="file")
    assert f.pwrite(b"hello, world", 0) == 12
    assert f.pread(5, 7) == b"world"
    assert f.pread(10, 100) == b""  # at EOF
    assert f.pwrite(memoryview(b"HELLO"), 0) == 5
    assert f.pread(100, 0) == b"HELLO, world"
    assert f.read(5) == b"HELLO"  # the file position was never moved
    with pytest.raises(ValueError):
        f.pread(1, -1)
    with pytest.raises(ValueError):
        f.pwrite(b"x", -1)
    with pytest.raises(ValueError):
        f.pread(-1, 0)
    with pytest.raises(TypeError):
        f.pread(True, 0)
    with pytest.raises(TypeError):
        f.pwrite("text", 0)


def test_pread_on_pipe_is_espipe(rt: Runtime, fds: Closer) -> None:
    """pread on a pipe fails with the kernel's ESPIPE, passed through."""
    r, _ = pipe(fds)
    with pytest.raises(OSError) as ei:
        r.pread(1, 0)
    assert ei.value.errno == errno.ESPIPE


def test_recvfrom_sendto_udp(rt: Runtime, fds: Closer) -> None:
    """recvfrom/sendto on UDP: a parked recvfrom is readied by a datagram, an empty
    datagram is b"" (an empty datagram, not end of file), recvfrom_into fills a buffer.

    Go: internal/poll FD.ReadFrom, FD.WriteTo
    """
    a, a_addr, b, b_addr = udp_pair(fds)
    receiver = Runner(lambda: b.recvfrom(100))
    wait_parked(b, "r")
    assert a.sendto(b"dgram", b_addr) == 5
    assert receiver.join() == (b"dgram", a_addr)
    assert a.sendto(b"", b_addr) == 0
    assert b.recvfrom(100) == (b"", a_addr)
    assert a.sendto(memoryview(b"into"), b_addr) == 4
    buf = bytearray(10)
    assert b.recvfrom_into(buf) == (4, a_addr)
    assert buf[:4] == b"into"


def test_recvmsg_sendmsg_scm_rights(rt: Runtime, fds: Closer) -> None:
    """recvmsg/sendmsg over AF_UNIX carry a descriptor (SCM_RIGHTS); a parked recvmsg is
    readied by the sendmsg.

    Go: internal/poll FD.ReadMsg, FD.WriteMsg
    """
    a, b = unix_pair(fds)
    pr, pw = os.pipe()
    fds.own(pr)
    fds.own(pw)
    ints = array.array("i")
    receiver = Runner(lambda: b.recvmsg(16, socket.CMSG_SPACE(ints.itemsize)))
    wait_parked(b, "r")
    sent = a.sendmsg([b"f", b"d"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [pw]))])
    assert sent == 2
    data, anc, flags, _ = receiver.join()
    assert data == b"fd" and flags == 0
    assert len(anc) == 1
    level, typ, cdata = anc[0]
    assert (level, typ) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    ints.frombytes(cdata[: ints.itemsize])
    passed = fds.own(ints[0])
    assert passed != pw
    os.write(passed, b"through the passed fd")
    assert os.read(pr, 100) == b"through the passed fd"


@pytest.mark.parametrize("kind", ["pipe", "unix"])
def test_raw_conn_read_write(rt: Runtime, fds: Closer, kind: str) -> None:
    """Port of os TestRawConnReadWrite: raw_read/raw_write call f under the lock, wait for
    readiness whenever f returns False, and honour deadlines without calling f."""
    rd, wr = stream_pair(kind, fds)
    calls: list[int] = []
    got: list[bytes] = []

    def f(fd: int) -> bool:
        calls.append(fd)
        try:
            got.append(os.read(fd, 100))
        except BlockingIOError:
            return False
        return True

    reader = Runner(lambda: rd.raw_read(f))
    wait_parked(rd, "r")
    assert calls and set(calls) == {rd.sysfd} and not got  # tried, EAGAIN, parked
    tried = len(calls)

    def g(fd: int) -> bool:
        os.write(fd, b"raw")
        return True

    wr.raw_write(g)
    reader.join()
    assert got == [b"raw"] and len(calls) == tried + 1

    fill(wr)
    wrote: list[int] = []

    def h(fd: int) -> bool:
        try:
            wrote.append(os.write(fd, b"y"))
        except BlockingIOError:
            return False
        return True

    writer = Runner(lambda: wr.raw_write(h))
    wait_parked(wr, "w")
    drain(rd)
    writer.join()
    assert wrote == [1]

    rd.set_read_deadline(past())
    with pytest.raises(DeadlineExceededError):
        rd.raw_read(f)
    assert len(calls) == tried + 1  # prepare failed before f was called


def _top_frame_is(thread: threading.Thread, function: str) -> bool:
    frame = sys._current_frames().get(thread.ident or 0)
    return frame is not None and frame.f_code.co_name == function


@pytest.mark.python_runtime
@pytest.mark.parametrize("op", ["read", "write"])
@pytest.mark.timeout(20)
def test_first_attempt_holds_off_close_until_its_syscall_returns(
    rt: Runtime, fds: Closer, monkeypatch: pytest.MonkeyPatch, op: str
) -> None:
    """read and write make their first attempt holding the read or write lock (a reference)
    and no lock of their own, as Go does. A close from another thread while that read(2) or
    write(2) is running must wait for it: the descriptor number is not released mid-call."""
    r, w = pipe(fds)
    fd = r if op == "read" else w
    if op == "read":
        os.write(w.sysfd, b"data")
    seen: dict[str, Any] = {}

    class OsInTheMiddle:
        """fd_unix's ``os``, whose read/write start a close before doing the real call."""

        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        def _middle(self, n: int) -> None:
            if n != fd.sysfd or "closer" in seen:
                return
            seen["state_lock_held"] = fd.fdmu.held_by_me()
            closer = seen["closer"] = Runner(fd.close, name="closer")
            wait_until(
                lambda: fd.fdmu.closing() and fd.fdmu.state & MUTEX_REF_MASK == MUTEX_REF,
                what="close waiting for this call's reference",
            )
            seen["sysfd"] = fd.sysfd
            seen["close_returned"] = closer.done.is_set()

        def read(self, n: int, size: int) -> bytes:
            self._middle(n)
            return os.read(n, size)

        def write(self, n: int, data: Any) -> int:
            self._middle(n)
            return os.write(n, data)

    sysfd = fd.sysfd
    monkeypatch.setattr(fd_unix, "os", OsInTheMiddle())
    if op == "read":
        assert fd.read(10) == b"data"
    else:
        assert fd.write(b"data") == 4
    monkeypatch.undo()
    assert seen["state_lock_held"] is False  # no lock held across the syscall
    assert seen["close_returned"] is False
    assert seen["sysfd"] == sysfd  # still ours while the call ran
    assert seen["closer"].join_exc() is None
    assert fd.sysfd == -1
    if op == "write":
        assert os.read(r.sysfd, 10) == b"data"


# --- internal/poll read_test.go ------------------------------------------------------------


def _special_files() -> list[str]:
    """Go's specialFiles: the ones this machine has (regular files in /proc and /sys, whose
    size is unknown until read, and a character device)."""
    if sys.platform == "linux":
        paths = ["/dev/null", "/proc/stat", "/sys/devices/system/cpu/online"]
    else:
        paths = ["/dev/null"]
    return [p for p in paths if os.access(p, os.R_OK)]


@pytest.mark.timeout(60)
def test_read_special_file(rt: Runtime) -> None:
    """Port of internal/poll TestRead/SpecialFile: four threads per special file each open,
    read to the end and close it, over and over, through FDs the poller refuses (a regular
    file or /dev/null stays in blocking mode); none of them fails."""
    errors: list[BaseException] = []

    def read_file(path: str) -> None:
        try:
            for _ in range(25):
                f = FD(os.open(path, os.O_RDONLY | os.O_CLOEXEC), net="file", runtime=rt)
                try:
                    while f.read(4096):
                        pass
                finally:
                    f.close()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [
        threading.Thread(target=read_file, args=(p,), name=f"special-{i}")
        for p in _special_files()
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(50)
        assert not t.is_alive(), "a reader hung"
    assert errors == []


# --- the call gates (FD._gated): the drop-in socket's per-call timeouts --------------------


def _timed_out() -> OSError:
    return socket.timeout("timed out")


@pytest.mark.timeout(20)
def test_call_gate_timed_call_waits_behind_untimed_one_and_times_out(
    rt: Runtime, fds: Closer
) -> None:
    """A call with a limit waits for the direction's call gate, which a parked call without
    a limit holds, and times out there; the parked call is unaffected and reads on."""
    r, w = unix_pair(fds)
    untimed = Runner(lambda: r.recv(1, 0, fd_unix.CallLimit(None, _timed_out)), name="untimed")
    wait_parked(r, "r")
    start = time.monotonic()
    limit = fd_unix.CallLimit(start + 0.2, _timed_out)
    with pytest.raises(socket.timeout, match="timed out") as ei:
        r.recv(1, 0, limit)
    assert type(ei.value) is socket.timeout  # limit.expired()'s, not a deadline's
    assert time.monotonic() - start >= 0.2
    # It gave up on the gate, never reaching the pollDesc: the untimed call is still the
    # one parked, and its wait has no deadline of the timed call's.
    assert state(r, "r") == PD_PARKED
    assert r._rcall is None
    w.write(b"x")
    assert untimed.join() == b"x"


@pytest.mark.timeout(20)
@pytest.mark.parametrize("mode", ["r", "w"])
def test_call_gate_close_wakes_holder_and_waiter(rt: Runtime, fds: Closer, mode: str) -> None:
    """close wakes the parked holder of the gate; the timed waiter behind it then fails at
    once with the closing error, long before its limit."""
    a, b = unix_pair(fds)
    if mode == "w":
        fill(b)
    forever = fd_unix.CallLimit(None, _timed_out)
    later = fd_unix.CallLimit(time.monotonic() + 60, _timed_out)
    if mode == "r":
        holder = Runner(lambda: b.recv(1, 0, forever), name="holder")
    else:
        holder = Runner(lambda: b.send(b"x" * 65536, 0, forever), name="holder")
    wait_parked(b, mode)
    waiter = Runner(
        lambda: b.recv(1, 0, later) if mode == "r" else b.send(b"y", 0, later), name="waiter"
    )
    wait_until(lambda: blocked_on_call_gate(waiter.thread.ident), what="waiter on the gate")
    start = time.monotonic()
    b.close()
    assert isinstance(holder.join_exc(), NetClosingError)
    assert isinstance(waiter.join_exc(), NetClosingError)
    assert time.monotonic() - start < 30


def test_call_gate_refuses_reentry_from_its_own_thread(rt: Runtime, fds: Closer) -> None:
    """A call made by the thread that holds the gate (a signal handler on top of its own
    thread's call) is refused at once instead of waiting for itself; the other direction's
    gate is another gate."""
    a, b = unix_pair(fds)
    a.write(b"xy")
    limit = fd_unix.CallLimit(None, _timed_out)

    def inside() -> bytes:
        with pytest.raises(RuntimeError, match="reentrant call"):
            b.recv(1, 0, limit)
        b.send(b"z", 0, limit)  # the write gate is free
        return b.recv(1)  # no limit, no gate: Go's read lock, free

    assert b._gated(True, limit, inside) == b"x"
    assert b.recv(1, 0, limit) == b"y"
    assert a.recv(1) == b"z"


# --- what an FD makes on first use (issue 12: memory per descriptor) -----------------------

_LAZY_SLOTS = ("_rgate", "_wgate", "csema")


def _made_slots(f: FD) -> set[str]:
    return {s for s in _LAZY_SLOTS if getattr(f, s) is not None}


def test_locks_and_close_semaphore_made_on_first_use(rt: Runtime, fds: Closer) -> None:
    """An FD makes its call gates and close semaphore only when it first needs each:
    untimed reads and writes need none; a timed call makes its direction's gate only; a
    deadline nothing (the short lock is shared by stripe); close the close semaphore."""
    a, b = unix_pair(fds)
    assert _made_slots(a) == _made_slots(b) == set()
    a.write(b"xy")
    assert b.read(1) == b"x"
    assert b.recv(1) == b"y"
    assert _made_slots(a) == _made_slots(b) == set()
    a.write(b"z", fd_unix.CallLimit(None, _timed_out))
    assert _made_slots(a) == {"_wgate"}
    gate = a._wgate
    a.write(b"w", fd_unix.CallLimit(time.monotonic() + 60, _timed_out))
    assert a._wgate is gate  # made once, then kept
    assert b.recv(2, 0, fd_unix.CallLimit(time.monotonic() + 60, _timed_out)) == b"zw"
    assert _made_slots(b) == {"_rgate"}
    a.set_read_deadline(time.monotonic() + 60)
    assert _made_slots(a) == {"_wgate"}
    b.close()
    assert _made_slots(b) == {"_rgate", "csema"}


def test_first_use_from_two_threads_makes_one_lock(
    rt: Runtime, fds: Closer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two threads' first use of a lock agree on one: the second waits while the first makes
    it (under fd_unix._live_lock), then takes the first one's."""
    a, _ = unix_pair(fds)
    made: list[Any] = []
    second: list[Runner] = []

    class SlowThreading:
        """fd_unix's view of threading: its first RLock() lets a second thread in first."""

        def __getattr__(self, name: str) -> Any:
            return getattr(threading, name)

        def RLock(self) -> Any:  # noqa: N802  # threading's name
            lock = threading.RLock()
            made.append(lock)
            if len(made) == 1:
                second.append(Runner(lambda: a._made("_rgate"), name="second"))
                wait_until(
                    lambda: thread_on_line(second[0].thread.ident, FD._made, "with _live_lock:"),
                    what="second thread in _made",
                )
            return lock

    monkeypatch.setattr(fd_unix, "threading", SlowThreading())
    lock = a._made("_rgate")
    assert second[0].join() is lock
    assert a._rgate is lock and made == [lock]


def test_rare_state_is_made_only_by_what_differs_from_the_defaults(
    rt: Runtime, fds: Closer
) -> None:
    """An FD whose kind is its net, read side open, no refusal, carries no _Rare; a kind of
    its own or a shut read side makes one, and the FD reads the same either way."""
    a, b = unix_pair(fds)
    assert a._rare is None and (a.kind, a.is_file, a.read_shut, a.init_errno) == (
        "unix",
        False,
        False,
        0,
    )
    b.shutdown(socket.SHUT_RD)
    assert b._rare is not None and b.read_shut and b.kind == "unix"
    pr, pw = os.pipe()
    fds.own(pw)
    p = fds.fd(pr, net="file", kind="pipe")
    assert p._rare is not None and p.kind == "pipe" and p.is_file and not p.read_shut
    q = fds.fd(os.dup(pw), net="file", kind="file")
    assert q._rare is None and q.kind == "file" and q.is_file


def test_first_need_of_rare_state_from_two_threads_makes_one(
    rt: Runtime, fds: Closer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An FD's rarely used state (call limits and gates, the close semaphore, detach's and
    fork's marks: FD._rare) is made on first need, and two threads' first needs agree on
    one: the second waits while the first makes it (under fd_unix._live_lock), then takes
    the first one's, so neither thread's write is lost."""
    a, _ = unix_pair(fds)
    assert a._rare is None and a._rcall is None and a.csema is None and a.init_errno == 0
    a._rcall = None  # writing a default makes nothing
    a._detaching = False
    assert a._rare is None
    made: list[Any] = []
    second: list[Runner] = []
    real = fd_unix._Rare

    def slow_rare() -> Any:
        rare = real()
        made.append(rare)
        if len(made) == 1:
            second.append(Runner(lambda: setattr(a, "_wcall", 5.0), name="second"))
            wait_until(
                lambda: thread_on_line(second[0].thread.ident, FD._rare_state, "with _live_lock:"),
                what="second thread waiting",
            )
        return rare

    monkeypatch.setattr(fd_unix, "_Rare", slow_rare)
    a._rcall = 7.0
    second[0].join()
    assert made == [a._rare]
    assert a._rcall == 7.0 and a._wcall == 5.0
    a._rcall = a._wcall = None


def test_closing_fd_whose_number_a_new_fd_took_stays_live_until_destroyed(
    rt: Runtime, fds: Closer
) -> None:
    """A closing FD that an operation still holds (blocking mode: close did not wait) can
    lose its descriptor number to a new FD; it stays in the registry of live FDs (a forked
    child repairs its locks) until it is destroyed, but not in live_fds(): it is closing."""
    pr, pw = os.pipe()
    fds.own(pw)
    old = FD(pr, net="file", pollable=False)
    reader = Runner(lambda: old.read(1), name="reader")
    wait_until(
        lambda: thread_on_line(reader.thread.ident, FD._read_slow, "return os.read("),
        what="the reader past its checks, in read(2)",
    )
    old.close()  # blocking mode: returns at once; the reader's reference keeps pr open
    new = FD(pr, net="file", pollable=False)
    assert old in fd_unix._live_fds_all() and new in fd_unix._live_fds_all()
    assert old not in fd_unix.live_fds() and new in fd_unix.live_fds()
    assert fd_unix.owner_of(pr) is new
    assert new.detach() == pr  # the new one gives the number back; the old one owns it
    os.write(pw, b"x")
    assert reader.join() == b"x"  # the last reference: the old FD is destroyed (pr closed)
    assert old.sysfd == -1 and old not in fd_unix._live_fds_all()


def test_registry_holds_an_fd_until_destroyed_and_a_front_socket_weakly(
    rt: Runtime, fds: Closer
) -> None:
    """The registry of live FDs holds each FD itself (no weak reference per descriptor): one
    dropped unclosed stays live, open and its descriptor's owner until closed, as Go's FD
    (fronts close theirs from their finalizers). An FD made on a socket object of a class of
    its own (the drop-in's: its front) is held weakly, so that the front stays collectable
    (tests/test_socket.py: an unclosed drop-in socket is finalized)."""
    a, b = socket.socketpair()
    sysfd = a.detach()
    fds.own(b.detach())
    f = FD(sysfd, net="unix")
    ref = weakref.ref(f)
    del f
    gc.collect()
    f = ref()
    assert f is not None and f in fd_unix.live_fds() and fd_unix.owner_of(sysfd) is f
    os.fstat(sysfd)  # still open
    f.close()
    assert f not in fd_unix._live_fds_all() and fd_unix.owner_of(sysfd) is None

    class Front(socket.socket):
        pass

    c, d = socket.socketpair()
    fds.own(d.detach())
    front = Front(fileno=c.detach())
    g = FD(front.fileno(), net="unix", sock=front)
    try:
        entry = fd_unix._owners[front.fileno()]
        assert isinstance(entry, weakref.ref) and entry() is g
        assert fd_unix.owner_of(front.fileno()) is g and g in fd_unix.live_fds()
    finally:
        g.close()
    assert g not in fd_unix._live_fds_all()


# --- two threads at a race window ---------------------------------------------------------


@pytest.mark.timeout(20)
def test_two_closes_in_a_forked_child_drop_the_parents_references_once(
    rt: Runtime, fds: Closer
) -> None:
    """In a forked child, close() first drops the references parent threads held (the FD's
    ghost references). Two threads closing at once drop them once: the count is read and
    dropped under fd_unix._live_lock. Read, dropped, then zeroed with no lock, both threads
    could drop them (a no-GIL build runs them side by side): the Python fdMutex's count went
    below zero (FDMutexError "too many concurrent operations"), the C one's raised
    "inconsistent", and the descriptor stayed open. The fork is played here, as the fork
    handler runs it in the child (the FD cannot tell). A trace on each closer holds it just
    after its drop until the other gets there too or a second has passed: unfixed, both
    get there."""
    a, _ = unix_pair(fds)
    a.incref()  # a parent thread's operation, in flight at the fork: never finished
    a._after_fork_in_child()
    assert a._ghost_refs == MUTEX_REF
    at_dropped = Meeting()
    dropped = OnLine(FD.close, "self._ghost_refs = 0", at_dropped.arrive)

    def close() -> str:
        try:
            dropped.run(a.close)
        except NetClosingError:
            return "closing error"
        return "closed"

    assert sorted(run_all([close, close], timeout=10.0)) == ["closed", "closing error"]
    assert a.sysfd == -1 and a._ghost_refs == 0
    assert not at_dropped.met.is_set()  # one thread at a time past the drop


@pytest.mark.timeout(20)
def test_close_that_finds_the_fd_detached_sees_detached(rt: Runtime, fds: Closer) -> None:
    """A close() that fails because detach() marked the FD closed then sees detached() true
    (threadpoll.socket's view socket relies on it to close only its own C-level fd). detach
    marks the fdMutex closed and sets its flag in one section under fd_unix._live_lock,
    which detached() takes. With the flag set after the mark and no lock, a close in between
    read False (the view socket then raised EBADF). A trace holds the detaching thread just
    before it sets the flag until the closer has looked or a second has passed."""
    a, _ = unix_pair(fds)
    # Fixed, the closer waits for _live_lock instead: the hold ends after a second.
    flag = HoldAt(FD.detach, "self._detaching = True", wait=1.0)
    detacher = Runner(lambda: flag.run(a.detach), name="detacher")
    assert flag.reached.wait(10.0)
    with pytest.raises(NetClosingError):
        a.close()
    seen = a.detached()
    flag.release()
    fds.own(detacher.join())
    assert seen


def test_fdmutex_is_also_the_pollDesc_handle(rt: Runtime, fds: Closer) -> None:
    """One object is both the FD's fdMutex and its pollDesc handle (Go's FD holds the two as
    value fields): registered while open, let go of (runtime_ctx None) once closed."""
    r, w = os.pipe()
    fds.own(w)
    fd = fds.fd(r, runtime=rt)
    assert fd.fdmu is fd.pd
    pd = fd.pd.runtime_ctx
    assert pd is not None and pd.fd == r and fd.pd.pollable()
    fd.close()
    assert fd.pd.runtime_ctx is None and not fd.pd.pollable()
