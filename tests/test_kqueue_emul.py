"""Tests of tests/kqueue_emul.py, the epoll-backed emulation of select.kqueue.

The API cases port CPython's Lib/test/test_kqueue.py; the behaviour cases follow the
checklist "What is emulated" in kqueue_emul.py's docstring (its section marks, as there).
Threads synchronise on events and on the emulation's own waiter count, never on sleeps.
"""

from __future__ import annotations

import errno
import operator
import os
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import kqueue_emul
import pytest
from support import Runner, wait_until

pytestmark = pytest.mark.timeout(10)  # every test here could block if the emulation is wrong

ADD = kqueue_emul.KQ_EV_ADD
DELETE = kqueue_emul.KQ_EV_DELETE
ENABLE = kqueue_emul.KQ_EV_ENABLE
DISABLE = kqueue_emul.KQ_EV_DISABLE
ONESHOT = kqueue_emul.KQ_EV_ONESHOT
CLEAR = kqueue_emul.KQ_EV_CLEAR
EOF = kqueue_emul.KQ_EV_EOF
ERROR = kqueue_emul.KQ_EV_ERROR
READ = kqueue_emul.KQ_FILTER_READ
WRITE = kqueue_emul.KQ_FILTER_WRITE
EV_RECEIPT = 0x40  # raw: CPython does not export it


class Fds:
    """Descriptors a test opens; whatever is still open is closed at teardown."""

    def __init__(self) -> None:
        self.raw: list[int] = []
        self.objs: list[Any] = []

    def pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self.raw += [r, w]
        return r, w

    def close(self, fd: int) -> None:
        self.raw.remove(fd)
        os.close(fd)

    def add(self, obj: Any) -> Any:
        self.objs.append(obj)
        return obj

    def socketpair(self) -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        self.objs += [a, b]
        return a, b

    def tcp_pair(self) -> tuple[socket.socket, socket.socket]:
        srv = self.add(socket.create_server(("127.0.0.1", 0)))
        c = self.add(socket.create_connection(srv.getsockname()))
        s = self.add(srv.accept()[0])
        srv.close()
        return c, s

    def close_all(self) -> None:
        for obj in reversed(self.objs):
            obj.close()
        for fd in reversed(self.raw):
            os.close(fd)
        self.raw.clear()


@pytest.fixture
def fds() -> Iterator[Fds]:
    f = Fds()
    try:
        yield f
    finally:
        f.close_all()


@pytest.fixture(params=kqueue_emul.FLAVORS)
def m(request: pytest.FixtureRequest) -> kqueue_emul.KqueueModule:
    return kqueue_emul.module(request.param)


@pytest.fixture
def kq(m: kqueue_emul.KqueueModule) -> Iterator[Any]:
    q = m.kqueue()
    try:
        yield q
    finally:
        q.close()


def add(m: Any, kq: Any, ident: Any, filt: int = READ, flags: int = ADD, udata: int = 0) -> None:
    kq.control([m.kevent(ident, filt, flags, 0, 0, udata)], 0)


def poll(kq: Any, n: int = 16) -> list[tuple[int, int]]:
    """(ident, filter) of what is ready now."""
    return [(e.ident, e.filter) for e in kq.control(None, n, 0)]


def waiting(kq: Any) -> bool:
    """True once a thread is in (or about to enter) the blocking part of control()."""
    return bool(kq._core.waiters)


# --- API surface (kqueue_emul checklist 1) --------------------------------------------


def test_constants(m: Any) -> None:
    assert (m.KQ_FILTER_READ, m.KQ_FILTER_WRITE, m.KQ_FILTER_AIO, m.KQ_FILTER_VNODE) == (
        -1,
        -2,
        -3,
        -4,
    )
    assert (m.KQ_FILTER_PROC, m.KQ_FILTER_SIGNAL, m.KQ_FILTER_TIMER) == (-5, -6, -7)
    assert (m.KQ_EV_ADD, m.KQ_EV_DELETE, m.KQ_EV_ENABLE, m.KQ_EV_DISABLE) == (1, 2, 4, 8)
    assert (m.KQ_EV_ONESHOT, m.KQ_EV_CLEAR, m.KQ_EV_SYSFLAGS, m.KQ_EV_FLAG1) == (
        0x10,
        0x20,
        0xF000,
        0x2000,
    )
    assert (m.KQ_EV_EOF, m.KQ_EV_ERROR, m.KQ_NOTE_LOWAT) == (0x8000, 0x4000, 1)
    for absent in (
        "KQ_FILTER_USER",
        "EVFILT_USER",
        "KQ_NOTE_TRIGGER",
        "KQ_EV_RECEIPT",
        "KQ_EV_DISPATCH",
        "KQ_FILTER_EXCEPT",
        "KQ_FILTER_EMPTY",
        "epoll",
        "poll",
    ):
        assert not hasattr(m, absent), absent
    assert m.error is OSError


def test_module_rejects_unknown_flavor() -> None:
    with pytest.raises(ValueError):
        kqueue_emul.module("linux")


def test_kevent_fields(m: Any, fds: Fds) -> None:
    """Port of test_kqueue.TestKQueue.test_create_event."""
    r, _ = fds.pipe()
    ev = m.kevent(r)
    other = m.kevent(1000)
    assert (ev.ident, ev.filter, ev.flags, ev.fflags, ev.data, ev.udata) == (r, READ, ADD, 0, 0, 0)
    assert ev == ev and ev != other and ev < other and other >= ev
    for op in (operator.lt, operator.le, operator.gt, operator.ge):
        for bad in (None, 1, "ev"):
            with pytest.raises(TypeError):
                op(ev, bad)
    assert ev != 1 and not (ev == None)  # noqa: E711 - == against a non-kevent is False
    ev = m.kevent(1, 2, 3, 4, 5, 6)
    assert (ev.ident, ev.filter, ev.flags, ev.fflags, ev.data, ev.udata) == (1, 2, 3, 4, 5, 6)
    assert m.kevent(0, 1, 0xFFFF).flags == 0xFFFF
    assert m.kevent(0, 1, 2, 0xFFFFFFFF).fflags == 0xFFFFFFFF
    assert m.kevent(0, 1, 0x1_0003).flags == 3  # "H": wraps, no overflow check
    with pytest.raises(TypeError):
        hash(ev)


def test_kevent_ident_conversions(m: Any, fds: Fds) -> None:
    a, _ = fds.socketpair()
    assert m.kevent(a).ident == a.fileno()  # anything with fileno()
    assert m.kevent(True).ident == 1
    with pytest.raises(OverflowError):
        m.kevent(-1)
    with pytest.raises(OverflowError):
        m.kevent(2**64)
    with pytest.raises(TypeError):
        m.kevent("3")
    with pytest.raises(TypeError):
        m.kevent(3.0)
    with pytest.raises(OverflowError):
        m.kevent(1, 2**15)  # filter is a C short
    with pytest.raises(OverflowError):
        m.kevent(1, READ, ADD, 0, 2**63)  # data is intptr_t
    with pytest.raises(TypeError):
        m.kevent(1, READ, 1.0)


def test_kevent_udata_wraps_and_round_trips(m: Any, kq: Any, fds: Fds) -> None:
    assert m.kevent(1, udata=2**64 + 5).udata == 5
    assert m.kevent(1, udata=-1).udata == 2**64 - 1
    big = 2 * sys.maxsize + 1
    r, w = fds.pipe()
    os.write(w, b"x")
    add(m, kq, r, READ, ADD, udata=big)
    (ev,) = kq.control(None, 4, 0)
    assert ev.udata == big
    add(m, kq, r, READ, ADD, udata=2**64 + 3)  # EV_ADD on an existing knote replaces udata
    (ev,) = kq.control(None, 4, 0)
    assert ev.udata == 3


def test_kevent_fields_writable_and_ordering(m: Any) -> None:
    ev = m.kevent(5)
    ev.ident, ev.filter, ev.flags, ev.fflags, ev.data, ev.udata = 6, WRITE, 0x10005, 7, -8, 9
    assert (ev.ident, ev.filter, ev.flags, ev.fflags, ev.data, ev.udata) == (
        6,
        WRITE,
        5,
        7,
        -8,
        9,
    )
    assert sorted([m.kevent(3), m.kevent(1), m.kevent(2)]) == [m.kevent(i) for i in (1, 2, 3)]
    # CPython compares udata as a signed pointer.
    assert m.kevent(1, udata=2**63) < m.kevent(1, udata=0)
    assert repr(m.kevent(3)).startswith("<select.kevent ident=3 filter=-1 flags=0x1 ")
    with pytest.raises(TypeError):

        class Sub(m.kevent):  # type: ignore[misc, name-defined]
            pass


def test_kqueue_create_and_close(m: Any) -> None:
    """Port of test_kqueue.TestKQueue.test_create_queue, test_close, test_fd_non_inheritable."""
    kq = m.kqueue()
    assert kq.fileno() > 0
    assert os.get_inheritable(kq.fileno()) is False
    assert not kq.closed
    kq.close()
    assert kq.closed
    kq.close()  # idempotent
    for call in (kq.fileno, lambda: kq.control(None, 4), lambda: kq.control(None, 0)):
        with pytest.raises(ValueError, match="I/O operation on closed kqueue object"):
            call()
    with pytest.raises(TypeError):
        m.kqueue(1)


def test_kqueue_is_not_a_context_manager(kq: Any) -> None:
    assert not hasattr(kq, "__enter__") and not hasattr(kq, "__exit__")
    with pytest.raises((TypeError, AttributeError)):
        with kq:
            pass


def test_control_argument_errors(m: Any, kq: Any) -> None:
    with pytest.raises(TypeError):
        kq.control(None, 1, timeout=0)  # positional-only
    with pytest.raises(TypeError):
        kq.control(changelist=None, max_events=1)
    with pytest.raises(ValueError, match="Length of eventlist must be 0 or positive, got -1"):
        kq.control(None, -1, "not checked yet")
    with pytest.raises(TypeError):
        kq.control(None, 1.0)
    with pytest.raises(ValueError, match="timeout must be positive or None"):
        kq.control(None, 1, -1)
    with pytest.raises(ValueError, match="timeout must be positive or None"):
        kq.control(None, 1, -0.001)
    for bad in ("1", float("nan"), 1e300, [1]):
        with pytest.raises(TypeError, match="timeout argument must be a number or None"):
            kq.control(None, 1, bad)
    with pytest.raises(TypeError, match="changelist is not iterable"):
        kq.control(5, 0)
    with pytest.raises(TypeError, match="changelist must be an iterable of select.kevent"):
        kq.control([m.kevent(0), 1], 0)
    assert kq.control(None, 1, 0) == []
    assert kq.control([], 1, 0.0) == []
    assert kq.control(None, True, False) == []  # bools are ints


def test_control_accepts_any_iterable(m: Any, kq: Any, fds: Fds) -> None:
    """Port of test_kqueue.TestKQueue.test_issue30058."""
    a, _ = fds.socketpair()
    ev = m.kevent(a, READ, ADD | ENABLE)
    kq.control([ev], 0)
    kq.control((ev,), 0)

    class BadList:
        def __len__(self) -> int:
            return 0

        def __iter__(self) -> Iterator[Any]:
            for _ in range(100):
                yield ev

    kq.control(BadList(), 0)
    kq.control(iter([ev]), 0)


def test_max_events_zero_never_blocks(m: Any, kq: Any, fds: Fds) -> None:
    a, _ = fds.socketpair()
    start = time.monotonic()
    assert kq.control(None, 0, None) == []
    assert kq.control([m.kevent(a, WRITE, ADD)], 0, None) == []  # ready, still not returned
    assert kq.control([m.kevent(a, READ, ADD)], 0) == []
    assert time.monotonic() - start < 1.0
    assert poll(kq) == [(a.fileno(), WRITE)]


def test_timeout_waits_at_least_that_long(kq: Any) -> None:
    for timeout in (0.05, 0.0004):  # the second is below one epoll millisecond
        start = time.monotonic()
        assert kq.control(None, 4, timeout) == []
        assert time.monotonic() - start >= timeout


def test_overlong_timeout(m: Any, kq: Any) -> None:
    """xnu rejects tv_sec > INT32_MAX with EINVAL; FreeBSD waits forever."""
    assert kq.control(None, 0, 2**31 - 1) == []
    if m.flavor == "xnu":
        with pytest.raises(OSError) as exc:
            kq.control(None, 0, 2**31)
        assert exc.value.errno == errno.EINVAL
    else:
        assert kq.control(None, 0, 2**31) == []


def test_queue_event_tcp(m: Any, fds: Fds) -> None:
    """Port of test_kqueue.TestKQueue.test_queue_event, with fromfd sharing one queue."""
    client, server = fds.tcp_pair()
    kq = m.kqueue()
    kq2 = m.kqueue.fromfd(kq.fileno())
    try:
        for sock, q in ((server, kq), (client, kq2)):
            q.control([m.kevent(sock.fileno(), WRITE, ADD | ENABLE)], 0)
            q.control([m.kevent(sock.fileno(), READ, ADD | ENABLE)], 0)
        assert set(poll(kq)) == {(client.fileno(), WRITE), (server.fileno(), WRITE)}
        client.send(b"Hello!")
        server.send(b"world!!!")
        got: set[tuple[int, int]] = set()
        while len(got) < 4:
            got |= {(e.ident, e.filter) for e in kq.control(None, 4, 5)}
        assert got == {
            (client.fileno(), WRITE),
            (client.fileno(), READ),
            (server.fileno(), WRITE),
            (server.fileno(), READ),
        }
        kq.control([m.kevent(client.fileno(), WRITE, DELETE)], 0)
        kq.control([m.kevent(client.fileno(), READ, DELETE)], 0)
        kq.control([m.kevent(server.fileno(), READ, DELETE)], 0, 0)
        assert set(poll(kq)) == {(server.fileno(), WRITE)}
    finally:
        kq.close()
        kq2.close()
    with pytest.raises(OSError):
        m.kqueue.fromfd(0)


def test_socketpair_read_data(m: Any, kq: Any, fds: Fds) -> None:
    """Port of test_kqueue.TestKQueue.testPair."""
    a, b = fds.socketpair()
    a.send(b"foo")
    r = kq.control([m.kevent(a, READ, ADD | ENABLE), m.kevent(b, READ, ADD | ENABLE)], 1, 1)
    assert r and not r[0].flags & ERROR
    assert b.recv(r[0].data) == b"foo"


def test_returned_flags_per_flavor(m: Any, kq: Any, fds: Fds) -> None:
    a, _ = fds.socketpair()
    add(m, kq, a, WRITE, ADD | ENABLE | CLEAR | EOF)  # system flags are stripped on input
    (ev,) = kq.control(None, 4, 0)
    if m.flavor == "freebsd":
        assert ev.flags == CLEAR
    else:
        assert ev.flags == ADD | ENABLE | CLEAR
    assert ev.fflags == 0


# --- modes (checklist 3) --------------------------------------------------------------


def _reader_writer(kind: str, fds: Fds) -> tuple[int, Any, Any]:
    """(fd to watch, write(data), read(n)) for a socketpair or a pipe."""
    if kind == "socketpair":
        a, b = fds.socketpair()
        return a.fileno(), b.send, a.recv
    r, w = fds.pipe()
    return r, lambda data: os.write(w, data), lambda n: os.read(r, n)


@pytest.mark.parametrize("kind", ["socketpair", "pipe"])
def test_level_triggered(m: Any, kq: Any, fds: Fds, kind: str) -> None:
    fd, write, read = _reader_writer(kind, fds)
    add(m, kq, fd, READ, ADD)
    assert kq.control(None, 4, 0) == []
    write(b"hello")
    for _ in range(3):  # unread data keeps firing
        (ev,) = kq.control(None, 4, 0)
        assert (ev.ident, ev.filter, ev.data) == (fd, READ, 5)
    assert read(2) == b"he"
    assert [e.data for e in kq.control(None, 4, 0)] == [3]
    read(3)
    assert kq.control(None, 4, 0) == []  # re-checked at delivery: dropped


@pytest.mark.parametrize("kind", ["socketpair", "pipe"])
def test_edge_triggered_clear(m: Any, kq: Any, fds: Fds, kind: str) -> None:
    fd, write, read = _reader_writer(kind, fds)
    add(m, kq, fd, READ, ADD | CLEAR)
    write(b"abc")
    (ev,) = kq.control(None, 4, 0)
    assert (ev.ident, ev.filter, ev.data) == (fd, READ, 3)
    assert ev.flags & CLEAR
    assert kq.control(None, 4, 0) == []  # unread data does not re-trigger
    assert kq.control(None, 4, 0.01) == []
    write(b"de")  # a new arrival does; data is the total, not a delta
    assert [e.data for e in kq.control(None, 4, 0)] == [5]
    assert kq.control(None, 4, 0) == []
    read(5)
    write(b"f")
    assert [e.data for e in kq.control(None, 4, 0)] == [1]


def test_write_space_does_not_refire_read_clear(m: Any, kq: Any, fds: Fds) -> None:
    """A send-buffer wakeup is a WRITE edge only; with unread input it must not look like a
    new READ arrival (why the emulation keeps one epoll instance per filter)."""
    a, b = fds.socketpair()
    add(m, kq, a, READ, ADD | CLEAR)
    add(m, kq, a, WRITE, ADD | CLEAR)
    b.send(b"unread")
    assert set(poll(kq)) == {(a.fileno(), READ), (a.fileno(), WRITE)}
    try:
        while True:  # fill a's send buffer so that draining it raises a write-space wakeup
            a.send(b"z" * 65536)
    except BlockingIOError:
        pass
    assert poll(kq) == []
    try:
        while b.recv(1 << 20):
            pass
    except BlockingIOError:
        pass
    assert poll(kq) == [(a.fileno(), WRITE)]


def test_clear_edge_consumed_before_retrieval_is_dropped(m: Any, kq: Any, fds: Fds) -> None:
    a, b = fds.socketpair()
    add(m, kq, a, READ, ADD | CLEAR)
    b.send(b"x")
    a.recv(1)  # the condition no longer holds when the event is fetched
    assert kq.control(None, 4, 0) == []


def test_write_clear_fires_once(m: Any, kq: Any, fds: Fds) -> None:
    a, _ = fds.socketpair()
    add(m, kq, a, WRITE, ADD | CLEAR)
    (ev,) = kq.control(None, 4, 0)
    assert ev.filter == WRITE and ev.data > 0
    assert kq.control(None, 4, 0) == []


def test_ev_add_on_existing_keeps_mode_and_requeues(m: Any, kq: Any, fds: Fds) -> None:
    a, b = fds.socketpair()
    add(m, kq, a, READ, ADD | CLEAR, udata=1)
    b.send(b"xy")
    assert [e.udata for e in kq.control(None, 4, 0)] == [1]
    assert kq.control(None, 4, 0) == []
    add(m, kq, a, READ, ADD, udata=2)  # plain EV_ADD: re-runs the filter, queues, keeps CLEAR
    (ev,) = kq.control(None, 4, 0)
    assert (ev.udata, ev.data) == (2, 2)
    assert ev.flags & CLEAR  # returned flags are the creation's
    assert kq.control(None, 4, 0) == []  # still edge-triggered


def test_oneshot_deleted_after_delivery(m: Any, kq: Any, fds: Fds) -> None:
    a, b = fds.socketpair()
    add(m, kq, a, READ, ADD | ONESHOT)
    b.send(b"x")
    (ev,) = kq.control(None, 4, 0)
    assert ev.flags & ONESHOT
    b.send(b"y")
    assert kq.control(None, 4, 0) == []
    with pytest.raises(OSError) as exc:
        kq.control([m.kevent(a, READ, DELETE)], 0)
    assert exc.value.errno == errno.ENOENT


def test_disable_enable(m: Any, kq: Any, fds: Fds) -> None:
    a, b = fds.socketpair()
    add(m, kq, a, READ, ADD | CLEAR)
    b.send(b"x")
    add(m, kq, a, READ, DISABLE)
    assert kq.control(None, 4, 0) == []
    b.send(b"y")  # an edge while disabled
    assert kq.control(None, 4, 0) == []
    add(m, kq, a, READ, ENABLE)  # re-runs the filter
    assert [e.data for e in kq.control(None, 4, 0)] == [2]
    add(m, kq, a, READ, ADD | DISABLE)
    assert kq.control(None, 4, 0) == []


def test_enable_and_disable_together(m: Any, kq: Any, fds: Fds) -> None:
    a, _ = fds.socketpair()
    ev = m.kevent(a, WRITE, ADD | ENABLE | DISABLE)
    if m.flavor == "freebsd":
        with pytest.raises(OSError) as exc:
            kq.control([ev], 0)
        assert exc.value.errno == errno.EINVAL
    else:
        kq.control([ev], 0)  # xnu: DISABLE wins
        assert kq.control(None, 4, 0) == []


def test_level_break_pipe_pattern(m: Any, kq: Any, fds: Fds) -> None:
    """The backend's wake-up: a non-blocking pipe, plain EV_ADD, drained 16 bytes at a time."""
    r, w = fds.pipe()
    add(m, kq, r, READ, ADD)
    os.write(w, b"z" * 20)
    assert kq.control(None, 64, None)[0].data == 20
    os.read(r, 16)
    assert kq.control(None, 64, None)[0].data == 4
    os.read(r, 16)
    assert kq.control(None, 64, 0) == []


# --- EV_EOF (checklist 5) -------------------------------------------------------------


def test_read_eof_on_peer_close(m: Any, kq: Any, fds: Fds) -> None:
    a, b = fds.socketpair()
    add(m, kq, a, READ, ADD | CLEAR)
    b.send(b"xy")
    b.close()
    (ev,) = kq.control(None, 4, 0)
    assert ev.flags & EOF and ev.data == 2  # EOF while bytes remain
    assert ev.fflags == 0
    assert a.recv(10) == b"xy"


def test_read_eof_on_tcp_fin(m: Any, kq: Any, fds: Fds) -> None:
    c, s = fds.tcp_pair()
    add(m, kq, c, READ, ADD)
    s.send(b"tail")
    s.shutdown(socket.SHUT_WR)  # FIN
    evs = kq.control(None, 4, 5)
    while not evs[0].flags & EOF:  # the data may be seen before the FIN
        evs = kq.control(None, 4, 5)
    assert evs[0].data == 4 and evs[0].fflags == 0


def test_reset_leaves_so_error_for_the_caller(m: Any, kq: Any, fds: Fds) -> None:
    """Linux's getsockopt(SO_ERROR) clears the error; the emulation must never call it."""
    c, s = fds.tcp_pair()
    add(m, kq, c, READ, ADD)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST
    (ev,) = kq.control(None, 4, 5)
    assert ev.flags & EOF
    assert ev.fflags == 0  # documented gap: kqueue would put ECONNRESET here
    (ev,) = kq.control(None, 4, 0)  # still there after a second look
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET


def test_read_eof_on_pipe_writer_close(m: Any, kq: Any, fds: Fds) -> None:
    r, w = fds.pipe()
    add(m, kq, r, READ, ADD | CLEAR)
    os.write(w, b"abc")
    fds.close(w)
    (ev,) = kq.control(None, 4, 0)
    assert ev.flags & EOF and ev.data == 3


def test_read_eof_after_local_shut_rd(m: Any, kq: Any, fds: Fds) -> None:
    a, _ = fds.socketpair()
    add(m, kq, a, READ, ADD | CLEAR)
    assert kq.control(None, 4, 0) == []
    a.shutdown(socket.SHUT_RD)
    (ev,) = kq.control(None, 4, 0)
    assert ev.flags & EOF


def test_write_eof_when_pipe_reader_closes(m: Any, kq: Any, fds: Fds) -> None:
    r, w = fds.pipe()
    add(m, kq, w, WRITE, ADD | CLEAR)
    (ev,) = kq.control(None, 4, 0)
    assert not ev.flags & EOF and ev.data >= 512
    fds.close(r)
    (ev,) = kq.control(None, 4, 0)
    assert ev.flags & EOF and ev.data == 0


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_write_eof_after_local_shut_wr(m: Any, kq: Any, fds: Fds, kind: str) -> None:
    a, _ = fds.socketpair() if kind == "unix" else fds.tcp_pair()
    add(m, kq, a, WRITE, ADD | CLEAR)
    (ev,) = kq.control(None, 4, 0)
    assert not ev.flags & EOF
    a.shutdown(socket.SHUT_WR)  # Linux keeps EPOLLOUT; the emulation tracks it
    (ev,) = kq.control(None, 4, 1)
    assert ev.filter == WRITE and ev.flags & EOF


def test_peer_fin_alone_does_not_shut_write_side(m: Any, kq: Any, fds: Fds) -> None:
    c, s = fds.tcp_pair()
    add(m, kq, c, WRITE, ADD)
    s.shutdown(socket.SHUT_WR)
    wait_until(lambda: c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 8, what="FIN")
    (ev,) = kq.control(None, 4, 0)
    assert not ev.flags & EOF


def test_pipe_write_filter_after_reader_closed(m: Any, kq: Any, fds: Fds) -> None:
    r, w = fds.pipe()
    fds.close(r)
    ev = m.kevent(w, WRITE, ADD)
    if m.flavor == "freebsd":
        with pytest.raises(OSError) as exc:
            kq.control([ev], 0)
        assert exc.value.errno == errno.EPIPE
    else:
        kq.control([ev], 0)
        (got,) = kq.control(None, 4, 0)
        assert got.flags & EOF


def test_wrong_end_pipe_filters(m: Any, kq: Any, fds: Fds) -> None:
    r, w = fds.pipe()
    add(m, kq, r, WRITE, ADD)
    add(m, kq, w, READ, ADD)
    os.write(w, b"x")
    assert kq.control(None, 4, 0) == []
    fds.close(r)  # drops r's knote; w's READ knote sees the reader gone
    got = kq.control(None, 4, 0)
    if m.flavor == "freebsd":
        assert got == []
    else:
        assert [(e.ident, e.filter, bool(e.flags & EOF)) for e in got] == [(w, READ, True)]


# --- data (checklist 6) ---------------------------------------------------------------


def test_listen_backlog_data(m: Any, kq: Any, fds: Fds) -> None:
    srv = fds.add(socket.create_server(("127.0.0.1", 0)))
    add(m, kq, srv, READ, ADD)
    assert kq.control(None, 4, 0) == []

    def backlog() -> int:
        evs = kq.control(None, 4, 0)
        return evs[0].data if evs else 0

    fds.add(socket.create_connection(srv.getsockname()))
    fds.add(socket.create_connection(srv.getsockname()))
    wait_until(lambda: backlog() == 2, what="two queued connections")
    fds.add(srv.accept()[0])
    assert backlog() == 1


def test_note_lowat(m: Any, kq: Any, fds: Fds) -> None:
    a, b = fds.socketpair()
    kq.control([m.kevent(a, READ, ADD, m.KQ_NOTE_LOWAT, 4)], 0)
    b.send(b"abc")
    assert kq.control(None, 4, 0) == []
    b.send(b"d")
    assert [e.data for e in kq.control(None, 4, 0)] == [4]


def test_regular_file(m: Any, kq: Any) -> None:
    with tempfile.TemporaryFile() as f:
        f.write(b"0123456789")
        f.flush()
        f.seek(0)
        fd = f.fileno()
        kq.control([m.kevent(fd, READ, ADD), m.kevent(fd, WRITE, ADD)], 0)
        got = {e.filter: e.data for e in kq.control(None, 4, 0)}
        assert got == {READ: 10, WRITE: 1 if m.flavor == "xnu" else 0}
        os.read(fd, 4)
        assert {e.filter: e.data for e in kq.control(None, 4, 0)}[READ] == 6
        os.read(fd, 6)
        assert poll(kq) == [(fd, WRITE)]  # READ fires only while size - offset != 0
        add(m, kq, fd, WRITE, DELETE)
        # A waiter on a file at EOF wakes when another thread appends to it.
        waiter = Runner(lambda: kq.control(None, 4, 5))
        wait_until(lambda: waiting(kq), what="waiter blocked")
        os.pwrite(fd, b"ab", 10)
        assert [(e.filter, e.data) for e in waiter.join()] == [(READ, 2)]


def test_regular_file_clear_fires_on_change(m: Any, kq: Any) -> None:
    with tempfile.TemporaryFile() as f:
        fd = f.fileno()
        add(m, kq, fd, WRITE, ADD | CLEAR)
        assert poll(kq) == [(fd, WRITE)]
        assert poll(kq) == []
        os.write(fd, b"more")
        assert poll(kq) == [(fd, WRITE)]


# --- changelist errors (checklist 2) --------------------------------------------------


def test_delete_unknown_raises_with_max_events_zero(m: Any, kq: Any, fds: Fds) -> None:
    a, _ = fds.socketpair()
    with pytest.raises(OSError) as exc:
        kq.control([m.kevent(a, READ, DELETE)], 0)
    assert exc.value.errno == errno.ENOENT


def test_error_events_with_room(m: Any, kq: Any, fds: Fds) -> None:
    a, _ = fds.socketpair()
    add(m, kq, a, WRITE, ADD)  # ready: must NOT be returned by the erroring call
    bad = m.kevent(a, READ, DELETE, 7, 0, 99)
    start = time.monotonic()
    (ev,) = kq.control([bad], 4, None)  # returns at once, no scan, no wait
    assert time.monotonic() - start < 1.0
    assert (ev.ident, ev.filter, ev.fflags, ev.data, ev.udata) == (a.fileno(), READ, 7, 2, 99)
    if m.flavor == "freebsd":
        assert ev.flags == ERROR
    else:
        assert ev.flags == DELETE | ERROR
    assert poll(kq) == [(a.fileno(), WRITE)]


def test_first_error_stops_changelist_when_max_events_zero(m: Any, kq: Any, fds: Fds) -> None:
    a, _ = fds.socketpair()
    b, _ = fds.socketpair()
    changes = [m.kevent(a, WRITE, ADD), m.kevent(a, READ, DELETE), m.kevent(b, WRITE, ADD)]
    with pytest.raises(OSError) as exc:
        kq.control(changes, 0)
    assert exc.value.errno == errno.ENOENT
    assert poll(kq) == [(a.fileno(), WRITE)]  # applied before the error; b skipped


def test_errors_continue_when_there_is_room(m: Any, kq: Any, fds: Fds) -> None:
    a, _ = fds.socketpair()
    b, _ = fds.socketpair()
    changes = [m.kevent(a, READ, DELETE), m.kevent(b, WRITE, ADD), m.kevent(b, READ, DELETE)]
    assert [e.data for e in kq.control(changes, 2)] == [errno.ENOENT, errno.ENOENT]
    assert poll(kq) == [(b.fileno(), WRITE)]
    with pytest.raises(OSError):  # more errors than room
        kq.control([m.kevent(a, READ, DELETE), m.kevent(a, WRITE, DELETE)], 1)


def test_bad_fd_and_bad_filter(m: Any, kq: Any, fds: Fds) -> None:
    r, _ = fds.pipe()
    fds.close(r)
    with pytest.raises(OSError) as exc:
        kq.control([m.kevent(r, READ, ADD)], 0)
    assert exc.value.errno == errno.EBADF
    a, _ = fds.socketpair()
    with pytest.raises(OSError) as exc:
        kq.control([m.kevent(a, 5, ADD)], 0)
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(NotImplementedError):
        kq.control([m.kevent(a, m.KQ_FILTER_TIMER, ADD)], 0)
    if m.flavor == "freebsd":
        kq.control([m.kevent(a, 0, ADD)], 0)  # FreeBSD skips filter 0


def test_ev_receipt(m: Any, kq: Any, fds: Fds) -> None:
    a, _ = fds.socketpair()
    (ev,) = kq.control([m.kevent(a, WRITE, ADD | EV_RECEIPT)], 4)
    assert ev.flags & ERROR and ev.data == 0
    assert poll(kq) == [(a.fileno(), WRITE)]


@pytest.mark.parametrize("how", ["closed", "dup-kept-open"])
def test_delete_after_close(m: Any, kq: Any, fds: Fds, how: str) -> None:
    r, w = fds.pipe()
    add(m, kq, r, READ, ADD)
    if how == "dup-kept-open":
        fds.raw.append(os.dup(r))
    fds.close(r)
    with pytest.raises(OSError) as exc:
        kq.control([m.kevent(r, READ, DELETE)], 0)
    assert exc.value.errno == (errno.EBADF if m.flavor == "freebsd" else errno.ENOENT)


def test_close_drops_knotes_even_while_a_dup_keeps_the_file_open(m: Any, kq: Any, fds: Fds) -> None:
    a, b = fds.socketpair()
    n = a.fileno()
    add(m, kq, n, READ, ADD | CLEAR)
    dup = fds.add(a.dup())  # epoll alone would keep reporting a's file through this
    a.close()
    b.send(b"x")
    assert kq.control(None, 4, 0) == []
    # The same number, now naming another socket, is a new ident: a fresh knote that
    # the kernel reports (not the old knote modified, which would miss later edges).
    c, d = fds.socketpair()
    if c.fileno() != n:  # c may already have been given the free number
        os.dup2(c.fileno(), n)
        fds.raw.append(n)
    d.send(b"y")
    assert kq.control(None, 4, 0) == []
    add(m, kq, n, READ, ADD | CLEAR)
    assert [(e.ident, e.data) for e in kq.control(None, 4, 0)] == [(n, 1)]
    assert kq.control(None, 4, 0) == []
    d.send(b"z")  # a kernel edge: only seen if n's new file went into epoll
    assert [(e.ident, e.data) for e in kq.control(None, 4, 0)] == [(n, 2)]
    assert dup.recv(1) == b"x"


# --- truncation and fairness (How it works) -------------------------------------------


@pytest.mark.parametrize("flags", [ADD | CLEAR, ADD], ids=["clear", "level"])
def test_truncation_loses_nothing(m: Any, kq: Any, fds: Fds, flags: int) -> None:
    idents = set()
    for _ in range(5):
        a, b = fds.socketpair()
        b.send(b"x")
        add(m, kq, a, READ, flags)
        idents.add(a.fileno())
    seen: list[int] = []
    for want in (2, 2, 1):
        got = kq.control(None, 2, 0)
        seen += [e.ident for e in got]
        if flags & CLEAR:
            assert len(got) == want
        else:
            assert len(got) == 2  # level: all five stay ready
    if flags & CLEAR:
        assert sorted(seen) == sorted(idents)  # each exactly once, none lost
        assert kq.control(None, 2, 0) == []
    else:
        assert set(seen) == idents  # level knotes rotate through the tail


# --- threads (the threadpoll pattern) -------------------------------------------------


def test_registration_while_blocked_is_reported(m: Any, kq: Any, fds: Fds) -> None:
    a, b = fds.socketpair()
    b.send(b"ready before registration")
    poller = Runner(lambda: kq.control(None, 64, None), name="poller")
    wait_until(lambda: waiting(kq), what="poller blocked in control()")
    kq.control([m.kevent(a, READ, ADD | CLEAR), m.kevent(a, WRITE, ADD | CLEAR)], 0)
    got = {(e.ident, e.filter) for e in poller.join()}
    assert (a.fileno(), READ) in got


def test_registration_while_blocked_then_data(m: Any, kq: Any, fds: Fds) -> None:
    a, b = fds.socketpair()
    poller = Runner(lambda: kq.control(None, 64, None), name="poller")
    wait_until(lambda: waiting(kq), what="poller blocked in control()")
    add(m, kq, a, READ, ADD | CLEAR)
    assert not poller.done.is_set()
    b.send(b"now")
    assert [(e.ident, e.data) for e in poller.join()] == [(a.fileno(), 3)]


def test_requeue_in_user_space_wakes_a_blocked_waiter(m: Any, kq: Any, fds: Fds) -> None:
    a, b = fds.socketpair()
    add(m, kq, a, READ, ADD | CLEAR)
    b.send(b"x")
    assert len(kq.control(None, 4, 0)) == 1
    poller = Runner(lambda: kq.control(None, 64, None), name="poller")
    wait_until(lambda: waiting(kq), what="poller blocked in control()")
    add(m, kq, a, READ, ADD)  # no kernel edge: the knote is queued by the filter re-run
    assert [e.ident for e in poller.join()] == [a.fileno()]


def test_concurrent_registrations_all_reported(m: Any, kq: Any, fds: Fds) -> None:
    pairs = [fds.socketpair() for _ in range(40)]
    want = {a.fileno() for a, _ in pairs}
    for _, b in pairs:
        b.send(b"x")
    seen: set[int] = set()
    done = threading.Event()

    def poll_loop() -> None:
        while not want <= seen:
            for ev in kq.control(None, 64, 5):
                if ev.filter == READ:
                    seen.add(ev.ident)
        done.set()

    poller = Runner(poll_loop, name="poller")

    def register(chunk: list[tuple[socket.socket, socket.socket]]) -> None:
        for a, _ in chunk:
            kq.control([m.kevent(a, READ, ADD | CLEAR), m.kevent(a, WRITE, ADD | CLEAR)], 0)

    workers = [Runner(lambda i=i: register(pairs[i::4]), name=f"reg{i}") for i in range(4)]
    for w in workers:
        w.join()
    poller.join()
    assert done.is_set() and seen == want


def test_close_does_not_wake_a_waiter(m: Any, fds: Fds) -> None:
    """As on the BSDs, closing the kqueue leaves a blocked kevent() waiting; it returns
    when an event arrives, and the kqueue's descriptors are then released."""
    kq = m.kqueue()
    a, b = fds.socketpair()
    add(m, kq, a, READ, ADD)
    poller = Runner(lambda: kq.control(None, 4, None), name="poller")
    wait_until(lambda: waiting(kq), what="poller blocked in control()")
    kq.close()
    assert kq.closed and not poller.done.is_set()
    b.send(b"x")
    assert [e.ident for e in poller.join()] == [a.fileno()]
    assert kq._core.wake_r == -1  # released by the last waiter


# --- fork -----------------------------------------------------------------------------


def test_fork_child_sees_closed(m: Any, kq: Any, fds: Fds) -> None:
    a, _ = fds.socketpair()
    add(m, kq, a, WRITE, ADD)
    fd = kq.fileno()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            if not kq.closed:
                code = 1
            else:
                try:
                    kq.control(None, 4, 0)
                    code = 2
                except ValueError:
                    pass
                try:
                    os.fstat(fd)  # the kqueue is not inherited
                    code = 3
                except OSError:
                    pass
                kq.close()
                fresh = m.kqueue()  # the child can make and use its own
                fresh.control([m.kevent(a, WRITE, ADD)], 0)
                if [e.ident for e in fresh.control(None, 4, 0)] != [a.fileno()]:
                    code = 5
                fresh.close()
        except BaseException:
            code = 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not kq.closed
    assert poll(kq) == [(a.fileno(), WRITE)]
