"""threadpoll.socket: the stdlib's socket behaviour, plus the five promises.

Every test takes the ``rt`` fixture, so it runs on every backend with that backend's runtime
as the default one (which is what the sockets register with).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import http.client
import http.server
import io
import os
import select
import selectors
import signal
import smtplib
import socket as stdsocket
import socketserver
import ssl
import tempfile
import threading
import time
import urllib.request
import warnings
import weakref
import xmlrpc.client
import xmlrpc.server
from collections.abc import Iterator
from typing import Any, Callable, cast

import pytest
from support import (
    Meeting,
    OnLine,
    Runner,
    blocked_on_call_gate,
    pd_of,
    run_all,
    wait_parked,
    wait_until,
)

import threadpoll.socket as ts
from threadpoll._poll import fd_unix
from threadpoll._runtime.netpoll import PD_PARKED
from threadpoll.errors import DeadlineExceededError, NetClosingError

TIMED_OUT = (stdsocket.timeout, TimeoutError)


@pytest.fixture
def pair(rt: Any) -> Iterator[tuple[ts.socket, ts.socket]]:
    a, b = ts.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def listener(rt: Any) -> Iterator[ts.socket]:
    s = ts.create_server(("127.0.0.1", 0))
    try:
        yield s
    finally:
        s.close()


def fill(sock: ts.socket) -> int:
    """Write into sock without blocking until the kernel buffers are full; bytes written."""
    was = sock.gettimeout()
    sock.setblocking(False)
    n = 0
    chunk = b"x" * 65536
    try:
        while True:
            try:
                n += sock.send(chunk)
            except BlockingIOError:
                return n
    finally:
        sock.settimeout(was)


def drain(sock: ts.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = sock.recv(n - len(out))
        if not data:
            break
        out += data
    return bytes(out)


@contextlib.contextmanager
def pending_connect_target() -> Iterator[tuple[Any, ...]]:
    """An address whose connects stay in progress: a listener with a full accept queue (the
    kernel drops further SYNs). Skips where the platform completes them anyway."""
    lst = stdsocket.socket()
    fillers: list[stdsocket.socket] = []
    try:
        lst.bind(("127.0.0.1", 0))
        lst.listen(0)
        addr = lst.getsockname()
        f = stdsocket.create_connection(addr, timeout=5)
        fillers.append(f)
        probe = stdsocket.socket()
        fillers.append(probe)
        probe.setblocking(False)
        probe.connect_ex(addr)
        # A capability probe, not synchronisation: a dropped SYN is retried after 1 s.
        _, w, _ = select.select([], [probe], [], 0.3)
        if w:
            pytest.skip("this platform completes connects to a full accept queue")
        yield addr
    finally:
        for s in fillers:
            s.close()
        lst.close()


# --- the class ---------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_subclass_of_stdlib_socket_roundtrip(pair: tuple[ts.socket, ts.socket]) -> None:
    a, b = pair
    assert isinstance(a, stdsocket.socket)
    assert type(a) is ts.socket
    assert repr(a).startswith("<threadpoll.socket.socket fd=")
    assert a.family == stdsocket.AF_UNIX and a.type == stdsocket.SOCK_STREAM
    a.sendall(b"hello")
    assert b.recv(5) == b"hello"
    buf = bytearray(5)
    b.sendall(b"world")
    assert a.recv_into(buf) == 5 and buf == b"world"
    assert a.gettimeout() is None and a.getblocking() and a.timeout is None
    # The descriptor stays in the mode the stdlib socket would give it: blocking.
    assert os.get_blocking(a.fileno())


@pytest.mark.timeout(10)
def test_recv_zero_and_after_close(pair: tuple[ts.socket, ts.socket]) -> None:
    a, b = pair
    assert b.recv(0) == b""
    a.close()
    assert b.recv(10) == b""  # EOF
    with pytest.raises(OSError) as info:
        a.recv(1)
    assert isinstance(info.value, NetClosingError)
    assert info.value.errno == errno.EBADF
    a.close()  # idempotent, as the stdlib's
    assert a.fileno() == -1
    with pytest.raises(OSError):
        a.getsockname()


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "value",
    [None, 0, 0.0, 1, 2.5, True, 1e-10, 0.1, -1, -0.5, "x", float("nan"), float("inf"), 10**12],
)
def test_settimeout_validates_like_stdlib(rt: Any, value: Any) -> None:
    with ts.socket() as ours, stdsocket.socket() as theirs:
        try:
            theirs.settimeout(value)
        except Exception as e:  # noqa: BLE001 - compared below
            with pytest.raises(type(e)):
                ours.settimeout(value)
            return
        ours.settimeout(value)
        assert ours.gettimeout() == theirs.gettimeout()
        assert ours.timeout == theirs.timeout
        assert ours.getblocking() == theirs.getblocking()


@pytest.mark.timeout(10)
def test_setblocking_and_default_timeout(rt: Any) -> None:
    with ts.socket() as s:
        s.setblocking(False)
        assert s.gettimeout() == 0.0 and not s.getblocking()
        s.setblocking(True)
        assert s.gettimeout() is None and s.getblocking()
    old = stdsocket.getdefaulttimeout()
    stdsocket.setdefaulttimeout(3.0)
    try:
        with ts.socket() as s:
            assert s.gettimeout() == 3.0
    finally:
        stdsocket.setdefaulttimeout(old)
    with ts.socket(type=stdsocket.SOCK_STREAM | getattr(stdsocket, "SOCK_NONBLOCK", 0)) as s:
        if hasattr(stdsocket, "SOCK_NONBLOCK"):
            assert s.gettimeout() == 0.0


# --- timeouts ------------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_timeout_raises_timed_out(pair: tuple[ts.socket, ts.socket]) -> None:
    a, b = pair
    b.settimeout(0.05)
    t0 = time.monotonic()
    with pytest.raises(TIMED_OUT) as info:
        b.recv(1)
    assert time.monotonic() - t0 >= 0.05
    assert str(info.value) == "timed out"
    assert not isinstance(info.value, DeadlineExceededError)
    # The socket is still usable, and a timeout does not stick.
    a.sendall(b"z")
    assert b.recv(1) == b"z"


@pytest.mark.timeout(10)
def test_timeout_bounds_the_wait_for_the_read_lock(pair: tuple[ts.socket, ts.socket]) -> None:
    a, b = pair
    holder = Runner(lambda: b.recv(10), name="holder")  # no timeout: parks holding the lock
    wait_parked(b._desc, "r")
    b.settimeout(0.1)  # read at the start of each call: the holder keeps waiting forever
    t0 = time.monotonic()
    with pytest.raises(TIMED_OUT):
        b.recv(10)
    assert 0.1 <= time.monotonic() - t0 < 5
    b.close()
    assert isinstance(holder.join_exc(), NetClosingError)


@pytest.mark.timeout(10)
def test_sendall_timeout_is_the_total_budget(pair: tuple[ts.socket, ts.socket]) -> None:
    """The reader takes a little every 20 ms: each wait of the sender is far shorter than its
    timeout, so only a budget for the whole call can end it."""
    a, b = pair
    stop = threading.Event()
    taken = []

    def slow_reader() -> None:
        while not stop.wait(0.02):  # the pace of a slow peer, not synchronisation
            taken.append(len(b.recv(65536)))

    reader = threading.Thread(target=slow_reader)
    reader.start()
    try:
        a.settimeout(0.3)
        t0 = time.monotonic()
        with pytest.raises(TIMED_OUT) as info:
            a.sendall(b"y" * (64 << 20))
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        reader.join()
    assert 0.3 <= elapsed < 2, elapsed
    assert len(taken) >= 3 and info.value.written > 0  # type: ignore[attr-defined]


@pytest.mark.timeout(10)
def test_deadline_earlier_than_timeout(pair: tuple[ts.socket, ts.socket]) -> None:
    a, b = pair
    b.settimeout(5)
    b.set_read_deadline(time.monotonic() + 0.05)
    with pytest.raises(DeadlineExceededError) as info:
        b.recv(1)
    assert isinstance(info.value, stdsocket.timeout)
    assert str(info.value) == "i/o timeout"
    # A past deadline fails at once, even with data buffered.
    a.sendall(b"data")
    with pytest.raises(DeadlineExceededError):
        b.recv(4)
    b.set_read_deadline(None)
    assert b.recv(4) == b"data"


@pytest.mark.timeout(10)
def test_timeout_earlier_than_deadline(pair: tuple[ts.socket, ts.socket]) -> None:
    _, b = pair
    b.settimeout(0.05)
    b.set_deadline(time.monotonic() + 5)
    with pytest.raises(TIMED_OUT) as info:
        b.recv(1)
    assert not isinstance(info.value, DeadlineExceededError)


@pytest.mark.timeout(10)
def test_deadline_moved_into_the_past_wakes_blocked_recv(
    pair: tuple[ts.socket, ts.socket],
) -> None:
    _, b = pair
    r = Runner(lambda: b.recv(1))
    wait_parked(b._desc, "r")
    b.set_read_deadline(time.monotonic() - 1)
    assert isinstance(r.join_exc(), DeadlineExceededError)


@pytest.mark.timeout(10)
def test_write_deadline_bounds_sendall(pair: tuple[ts.socket, ts.socket]) -> None:
    a, _ = pair
    r = Runner(lambda: a.sendall(b"w" * (32 << 20)))
    wait_parked(a._desc, "w")
    a.set_write_deadline(time.monotonic() - 1)  # moved into the past under a parked writer
    exc = r.join_exc()
    assert isinstance(exc, DeadlineExceededError) and exc.written > 0
    a.set_write_deadline(time.monotonic() + 0.05)
    with pytest.raises(DeadlineExceededError):
        a.sendall(b"w")  # the buffer is full: it waits, until the deadline


# --- non-blocking mode ---------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_nonblocking_never_parks(pair: tuple[ts.socket, ts.socket], listener: ts.socket) -> None:
    a, b = pair
    b.setblocking(False)
    with pytest.raises(BlockingIOError) as info:
        b.recv(1)
    assert info.value.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
    a.settimeout(0)
    n = fill(a)
    assert n > 0
    with pytest.raises(BlockingIOError):
        a.send(b"more")
    with pytest.raises(BlockingIOError) as winfo:
        a.sendall(b"more")
    assert winfo.value.written == 0  # type: ignore[attr-defined]
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):
        listener.accept()
    c = ts.socket()
    try:
        c.setblocking(False)
        assert c.connect_ex(listener.getsockname()) in (0, errno.EINPROGRESS)
    finally:
        c.close()
    pd = pd_of(b._desc)
    assert pd.rg != PD_PARKED and pd_of(a._desc).wg != PD_PARKED


@pytest.mark.timeout(10)
def test_msg_dontwait_on_a_blocking_socket(pair: tuple[ts.socket, ts.socket]) -> None:
    if not hasattr(stdsocket, "MSG_DONTWAIT"):
        pytest.skip("no MSG_DONTWAIT")
    _, b = pair
    with pytest.raises(BlockingIOError):
        b.recv(1, stdsocket.MSG_DONTWAIT)


@pytest.mark.timeout(10)
def test_selector_loop_on_nonblocking_sockets(pair: tuple[ts.socket, ts.socket]) -> None:
    a, b = pair
    a.setblocking(False)
    b.setblocking(False)
    sel = selectors.DefaultSelector()
    try:
        sel.register(b, selectors.EVENT_READ)
        got = bytearray()
        a.send(b"ping")
        while len(got) < 4:
            for _key, _ in sel.select(5):
                got += b.recv(10)
        assert got == b"ping"
    finally:
        sel.close()


@pytest.mark.timeout(20)
def test_asyncio_runs_under_patch(rt: Any) -> None:
    async def main() -> bytes:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(await r.readline())
            await w.drain()
            w.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        assert isinstance(getattr(w.get_extra_info("socket"), "_sock", None), ts.socket)
        w.write(b"async\n")
        line = await r.readline()
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
        return line

    with ts.patched():
        assert asyncio.run(main()) == b"async\n"


# --- close wakes everyone ------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_close_wakes_blocked_recv(pair: tuple[ts.socket, ts.socket]) -> None:
    _, b = pair
    r = Runner(lambda: b.recv(10))
    wait_parked(b._desc, "r")
    fd = b._desc.fd
    b.close()
    # close returned: the reader has left and the OS descriptor is closed.
    assert fd.sysfd == -1 and b.fileno() == -1
    assert isinstance(r.join_exc(), NetClosingError)


@pytest.mark.timeout(10)
def test_close_wakes_blocked_sendall_with_written(pair: tuple[ts.socket, ts.socket]) -> None:
    a, _ = pair
    r = Runner(lambda: a.sendall(b"s" * (32 << 20)))
    wait_parked(a._desc, "w")
    a.close()
    exc = r.join_exc()
    assert isinstance(exc, NetClosingError)
    assert exc.written > 0


@pytest.mark.timeout(10)
def test_close_wakes_blocked_accept(listener: ts.socket) -> None:
    r = Runner(listener.accept)
    wait_parked(listener._desc, "r")
    listener.close()
    assert isinstance(r.join_exc(), NetClosingError)


@pytest.mark.timeout(15)
def test_close_wakes_blocked_connect(rt: Any) -> None:
    with pending_connect_target() as addr:
        c = ts.socket()
        r = Runner(lambda: c.connect(addr))
        wait_parked(c._desc, "w")
        c.close()
        assert isinstance(r.join_exc(), NetClosingError)


@pytest.mark.timeout(15)
def test_connect_timeout_and_connect_ex(rt: Any) -> None:
    with pending_connect_target() as addr:
        with ts.socket() as c:
            c.settimeout(0.1)
            t0 = time.monotonic()
            with pytest.raises(TIMED_OUT) as info:
                c.connect(addr)
            assert str(info.value) == "timed out"
            assert time.monotonic() - t0 < 5
        with ts.socket() as c:
            c.settimeout(0.1)
            assert c.connect_ex(addr) == errno.EWOULDBLOCK
        with ts.socket() as c:
            c.set_write_deadline(time.monotonic() + 0.05)
            with pytest.raises(DeadlineExceededError):
                c.connect(addr)


@pytest.mark.timeout(10)
def test_connect_refused(rt: Any) -> None:
    with stdsocket.socket() as tmp:
        tmp.bind(("127.0.0.1", 0))
        addr = tmp.getsockname()  # bound, not listening: refused
        with ts.socket() as c:
            with pytest.raises(ConnectionRefusedError):
                c.connect(addr)
        with ts.socket() as c:
            assert c.connect_ex(addr) == errno.ECONNREFUSED
        with pytest.raises(ConnectionRefusedError):
            ts.create_connection(addr, timeout=5)
    c = ts.socket()
    c.close()
    assert c.connect_ex(addr) == errno.EBADF


@pytest.mark.timeout(10)
def test_close_wakes_lock_waiters_too(pair: tuple[ts.socket, ts.socket]) -> None:
    _, b = pair
    first = Runner(lambda: b.recv(1), name="first")
    wait_parked(b._desc, "r")
    second = Runner(lambda: b.recv(1), name="second")  # waits for the FD's read call gate
    wait_until(
        lambda: blocked_on_call_gate(second.thread.ident), what="second waiting for the gate"
    )
    b.close()
    assert isinstance(first.join_exc(), NetClosingError)
    assert isinstance(second.join_exc(), NetClosingError)


@pytest.mark.timeout(10)
def test_close_from_a_signal_handler_on_the_blocked_thread(
    pair: tuple[ts.socket, ts.socket],
) -> None:
    """close() in a handler running on top of this thread's own recv must not wait for it."""
    if (
        not hasattr(signal, "pthread_kill")
        or threading.current_thread() is not threading.main_thread()
    ):
        pytest.skip("needs pthread_kill and the main thread")
    _, b = pair
    main = threading.get_ident()

    def kick() -> None:
        wait_parked(b._desc, "r")
        signal.pthread_kill(main, signal.SIGUSR1)

    old = signal.signal(signal.SIGUSR1, lambda *_: b.close())
    try:
        kicker = Runner(kick)
        with pytest.raises(NetClosingError):
            b.recv(1)
        kicker.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert b.fileno() == -1


@pytest.mark.timeout(10)
def test_shutdown_wakes_blocked_reader(pair: tuple[ts.socket, ts.socket]) -> None:
    _, b = pair
    r = Runner(lambda: b.recv(10))
    wait_parked(b._desc, "r")
    b.shutdown(stdsocket.SHUT_RD)
    assert r.join() == b""


@pytest.mark.timeout(10)
def test_shutdown_wakes_reader_while_makefile_keeps_it_open(
    pair: tuple[ts.socket, ts.socket],
) -> None:
    _, b = pair
    f = b.makefile("rb", buffering=0)
    r = Runner(lambda: f.read(10))
    wait_parked(b._desc, "r")
    b.close()  # a file is open: the descriptor stays open, the reader keeps waiting
    assert b.fileno() != -1 and pd_of(b._desc).rg == PD_PARKED
    b.shutdown(stdsocket.SHUT_RDWR)
    assert r.join() == b""
    f.close()
    assert b.fileno() == -1


DGRAM_KINDS = ["udp", "udp-connected", "unixgram"]


def _dgram(kind: str, mod: Any) -> tuple[Any, Any]:
    """(sock, peer): a datagram socket made by ``mod`` (the stdlib ``socket`` module or
    ``threadpoll.socket``) and a plain socket that can send to it with ``_send``."""
    if kind == "unixgram":
        return mod.socketpair(stdsocket.AF_UNIX, stdsocket.SOCK_DGRAM)  # type: ignore[no-any-return]
    s = mod.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    peer = stdsocket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    if kind == "udp-connected":
        s.connect(peer.getsockname())
    return s, peer


def _send(kind: str, sock: Any, peer: Any, data: bytes) -> None:
    if kind == "unixgram":
        peer.send(data)
    else:
        peer.sendto(data, sock.getsockname())


def _outcome(f: Callable[[], Any]) -> Any:
    """What f returns, or the class and errno of what it raises: comparable across fronts."""
    try:
        return ("returned", f())
    except OSError as e:
        return ("raised", type(e).__name__, e.errno)


RECV_CALLS: dict[str, Callable[[Any], Any]] = {
    "recv": lambda s: s.recv(10),
    "recv_into": lambda s: s.recv_into(bytearray(10)),
    "recvfrom": lambda s: s.recvfrom(10),
    "recvfrom_into": lambda s: s.recvfrom_into(bytearray(10)),
    "recv-peek": lambda s: s.recv(10, stdsocket.MSG_PEEK),
}
if hasattr(stdsocket.socket, "recvmsg"):
    RECV_CALLS["recvmsg"] = lambda s: s.recvmsg(10, 64)
    RECV_CALLS["recvmsg_into"] = lambda s: s.recvmsg_into([bytearray(10)], 64)


@pytest.mark.parametrize("call", RECV_CALLS)
@pytest.mark.parametrize("kind", DGRAM_KINDS)
@pytest.mark.timeout(10)
def test_datagram_shutdown_rd_wakes_blocked_reader_like_stdlib(
    rt: Any, kind: str, call: str
) -> None:
    """shutdown(SHUT_RD) of a datagram socket wakes a thread blocked in any recv call, which
    returns what the stdlib's returns there (an empty datagram from nobody), and so does every
    later blocking read, at once. The shutdown itself raises as the stdlib's does (ENOTCONN
    for an unconnected UDP socket, which Linux shuts down all the same)."""
    recv = RECV_CALLS[call]
    plain, plain_peer = _dgram(kind, stdsocket)
    with plain, plain_peer:
        want_shutdown = _outcome(lambda: plain.shutdown(stdsocket.SHUT_RD))
        want = _outcome(lambda: recv(plain))  # blocking, but returns at once: shut down
    s, peer = _dgram(kind, ts)
    with s, peer:
        reader = Runner(lambda: _outcome(lambda: recv(s)), name="reader")
        wait_parked(s._desc, "r")
        assert _outcome(lambda: s.shutdown(stdsocket.SHUT_RD)) == want_shutdown
        assert reader.join() == want
        assert _outcome(lambda: recv(s)) == want


@pytest.mark.parametrize("kind", DGRAM_KINDS)
@pytest.mark.timeout(10)
def test_datagram_reads_after_shutdown_rd_like_stdlib(rt: Any, kind: str) -> None:
    """After shutdown(SHUT_RD) of a datagram socket, each kind of read returns or raises as
    the stdlib's does: a datagram that still arrives (UDP queues it) is read first, then a
    blocking read returns an empty datagram at once, a read with a timeout times out, a
    non-blocking read raises BlockingIOError."""

    def script(s: Any, peer: Any) -> list[Any]:
        out = [_outcome(lambda: s.shutdown(stdsocket.SHUT_RD))]
        out.append(_outcome(lambda: _send(kind, s, peer, b"late")))
        out.append(_outcome(lambda: s.recv(10)))
        out.append(_outcome(lambda: s.recvfrom(10)[0]))
        s.settimeout(0.05)
        out.append(_outcome(lambda: s.recv(10)))
        s.settimeout(0)
        out.append(_outcome(lambda: s.recv(10)))
        s.settimeout(None)
        out.append(_outcome(lambda: s.recv(10, stdsocket.MSG_DONTWAIT)))
        out.append(_outcome(lambda: s.recv(10)))
        return out

    plain, plain_peer = _dgram(kind, stdsocket)
    with plain, plain_peer:
        want = script(plain, plain_peer)
    s, peer = _dgram(kind, ts)
    with s, peer:
        assert script(s, peer) == want
    # socket.timeout is TimeoutError from 3.10 on; on 3.9 a class of its own named "timeout".
    timed_out = ("raised", stdsocket.timeout.__name__, None)
    assert ("returned", b"") in want and timed_out in want


@pytest.mark.parametrize("how", ["SHUT_WR", "SHUT_RDWR"])
@pytest.mark.parametrize("type", ["SOCK_STREAM", "SOCK_DGRAM"])
@pytest.mark.timeout(10)
def test_shutdown_wakes_blocked_writer(rt: Any, type: str, how: str) -> None:
    """A thread blocked sending on a full unix socket (stream or datagram) is woken by
    shutdown of the writing side and fails with BrokenPipeError, as the stdlib's is: Linux
    itself readies no writer there, so the shutdown must."""
    a, b = ts.socketpair(stdsocket.AF_UNIX, getattr(stdsocket, type))
    with a, b:
        chunk = b"x" * (100 if type == "SOCK_DGRAM" else 65536)
        a.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                a.send(chunk)
        a.setblocking(True)
        writer = Runner(lambda: a.sendall(chunk), name="writer")
        wait_parked(a._desc, "w")
        a.shutdown(getattr(stdsocket, how))
        assert isinstance(writer.join_exc(), BrokenPipeError)


@pytest.mark.timeout(10)
def test_makefile_refcount_close_wakes_on_last_file(pair: tuple[ts.socket, ts.socket]) -> None:
    a, b = pair
    f1 = b.makefile("rb", buffering=0)
    f2 = b.makefile("wb")
    b.close()
    assert b.fileno() != -1
    a.sendall(b"abc")
    assert f1.read(3) == b"abc"
    f2.write(b"back")
    f2.flush()
    assert a.recv(4) == b"back"
    f2.close()
    assert b.fileno() != -1
    r = Runner(lambda: f1.read(10))
    wait_parked(b._desc, "r")
    f1.close()  # the last one: the FD closes and wakes the reader
    assert isinstance(r.join_exc(), NetClosingError)
    assert b.fileno() == -1


@pytest.mark.timeout(10)
def test_makefile_timeout_like_stdlib(pair: tuple[ts.socket, ts.socket]) -> None:
    _, b = pair
    b.settimeout(0.05)
    with b.makefile("rb") as f:
        with pytest.raises(TIMED_OUT):
            f.read(1)


# --- whole writes --------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_sendall_never_interleaves(pair: tuple[ts.socket, ts.socket]) -> None:
    a, b = pair
    # Small buffers and a reader taking small bites: every sendall needs many writes, each
    # after a wait, which is where a writer without the lock would let another one in.
    a.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_SNDBUF, 4096)
    b.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, 4096)
    writers, size = 6, 200_000
    total = writers * size

    def read_all() -> bytes:
        out = bytearray()
        while len(out) < total:
            out += b.recv(1024)
        return bytes(out)

    reader = Runner(read_all, name="reader")
    barrier = threading.Barrier(writers)

    def writer(i: int) -> Callable[[], None]:
        def run() -> None:
            barrier.wait()
            a.sendall(bytes([65 + i]) * size)

        return run

    runners = [Runner(writer(i), name=f"writer-{i}") for i in range(writers)]
    for r in runners:
        r.join(20)
    data = reader.join(20)
    assert len(data) == total
    blocks = [data[i : i + size] for i in range(0, total, size)]
    assert sorted(blk[0] for blk in blocks) == [65 + i for i in range(writers)]
    for blk in blocks:
        assert blk == bytes([blk[0]]) * size, "a sendall was interleaved with another"


# --- lifetime ------------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_gc_of_unclosed_socket_warns_and_closes(rt: Any) -> None:
    a, b = ts.socketpair()
    try:
        fdref = weakref.ref(a._desc.fd)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del a
            gc.collect()
        msgs = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert any(m.startswith("unclosed <threadpoll.socket.socket") for m in msgs), msgs
        wait_until(lambda: fdref() is None or fdref().sysfd == -1, what="finalizer close")
        assert b.recv(1) == b""  # the peer sees EOF: the descriptor is closed
    finally:
        b.close()


@pytest.mark.timeout(10)
def test_detach_returns_unregistered_fd_in_stdlib_mode(rt: Any) -> None:
    for timeout, blocking in ((None, True), (0.0, False), (2.0, False)):
        a, b = ts.socketpair()
        open_before = len(rt.open_pds)
        a.settimeout(timeout)
        n = a.detach()
        assert a.fileno() == -1 and n >= 0
        assert os.get_blocking(n) is blocking
        assert len(rt.open_pds) == open_before - 1
        with stdsocket.socket(fileno=n) as plain:
            b.sendall(b"k")
            plain.settimeout(5)
            assert plain.recv(1) == b"k"
        b.close()
    s = ts.socket()
    s.close()
    assert s.detach() == -1


@pytest.mark.timeout(10)
def test_detach_wakes_blocked_reader(pair: tuple[ts.socket, ts.socket]) -> None:
    _, b = pair
    r = Runner(lambda: b.recv(1))
    wait_parked(b._desc, "r")
    n = b.detach()
    try:
        assert isinstance(r.join_exc(), NetClosingError)
    finally:
        os.close(n)


@pytest.mark.timeout(10)
def test_dup(pair: tuple[ts.socket, ts.socket]) -> None:
    a, b = pair
    b.settimeout(4.0)
    c = b.dup()
    try:
        assert type(c) is ts.socket and c.fileno() != b.fileno()
        assert c.gettimeout() == 4.0 and not c.get_inheritable()
        b.close()
        a.sendall(b"d")
        assert c.recv(1) == b"d"
    finally:
        c.close()


@pytest.mark.timeout(10)
def test_second_object_on_the_same_fd_shares_the_fd(pair: tuple[ts.socket, ts.socket]) -> None:
    """test_httplib's pattern: socket(fileno=response.fileno()), use it, detach it."""
    a, b = pair
    view = ts.socket(fileno=b.fileno())
    assert view._desc is b._desc
    view.sendall(b"via view")
    assert a.recv(8) == b"via view"
    assert view.detach() == b.fileno()
    a.sendall(b"owner")
    assert b.recv(5) == b"owner"
    # A view's close closes the descriptor, as it would with the stdlib.
    view2 = ts.socket(fileno=b.fileno())
    r = Runner(lambda: b.recv(1))
    wait_parked(b._desc, "r")
    view2.close()
    assert isinstance(r.join_exc(), NetClosingError)
    assert view2.fileno() == -1
    # The owner's descriptor was closed by another object: its close fails as the stdlib's.
    with pytest.raises(OSError) as info:
        b.close()
    assert info.value.errno == errno.EBADF


@pytest.mark.timeout(10)
def test_accept_returns_threadpoll_sockets(listener: ts.socket) -> None:
    listener.settimeout(5)
    c = ts.create_connection(listener.getsockname(), timeout=5)
    s, addr = listener.accept()
    try:
        assert type(s) is ts.socket and addr == c.getsockname()
        # Issue #7995, as the stdlib: no default timeout → the accepted socket blocks.
        assert s.gettimeout() is None
        c.sendall(b"hi")
        assert s.recv(2) == b"hi"
    finally:
        s.close()
        c.close()
    listener.settimeout(0.05)
    with pytest.raises(TIMED_OUT):
        listener.accept()


# --- module functions ----------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_wrap_adopts_a_stdlib_socket(rt: Any) -> None:
    p, q = stdsocket.socketpair()
    p.settimeout(2.5)
    w = ts.wrap(p)
    try:
        assert type(w) is ts.socket and w.gettimeout() == 2.5
        assert p.fileno() == -1  # the stdlib object let go of the fd
        assert ts.wrap(w) is w
        q.sendall(b"w")
        assert w.recv(1) == b"w"
    finally:
        w.close()
        q.close()
    with pytest.raises(TypeError):
        ts.wrap(io.BytesIO())  # type: ignore[arg-type]


@pytest.mark.timeout(10)
def test_fromfd_socketpair_create_server_create_connection(rt: Any) -> None:
    a, b = ts.socketpair()
    c = ts.fromfd(a.fileno(), a.family, a.type)
    try:
        assert type(c) is ts.socket and c.fileno() != a.fileno()
        c.sendall(b"f")
        assert b.recv(1) == b"f"
    finally:
        for s in (a, b, c):
            s.close()
    with ts.create_server(("127.0.0.1", 0), backlog=5) as srv:
        assert type(srv) is ts.socket
        with ts.create_connection(srv.getsockname(), timeout=3) as conn:
            assert type(conn) is ts.socket and conn.gettimeout() == 3
            s, _ = srv.accept()
            s.close()
    u1, u2 = ts.socketpair(stdsocket.AF_UNIX, stdsocket.SOCK_DGRAM)
    with u1, u2:
        u1.send(b"dgram")
        assert u2.recvfrom(10)[0] == b"dgram"


@pytest.mark.timeout(10)
def test_udp_recvfrom_into_and_sendto(rt: Any) -> None:
    with ts.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM) as r:
        with ts.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM) as s:
            r.bind(("127.0.0.1", 0))
            r.settimeout(5)
            got = Runner(lambda: r.recvfrom(100))
            wait_parked(r._desc, "r")
            s.sendto(b"one", r.getsockname())
            data, addr = got.join()
            assert data == b"one" and addr[0] == "127.0.0.1"
            s.sendto(b"two", 0, r.getsockname())
            buf = bytearray(10)
            n, _ = r.recvfrom_into(buf)
            assert buf[:n] == b"two"


@pytest.mark.timeout(10)
def test_sendmsg_recvmsg_pass_fds(pair: tuple[ts.socket, ts.socket]) -> None:
    if not hasattr(stdsocket, "send_fds"):
        pytest.skip("no send_fds")
    a, b = pair
    rfd, wfd = os.pipe()
    try:
        stdsocket.send_fds(a, [b"fds"], [wfd])
        msg, fds, _, _ = stdsocket.recv_fds(b, 10, 1)
        assert msg == b"fds" and len(fds) == 1
        os.write(fds[0], b"!")
        os.close(fds[0])
        assert os.read(rfd, 1) == b"!"
    finally:
        os.close(rfd)
        os.close(wfd)


@pytest.mark.timeout(10)
def test_sendfile_falls_back_to_send(pair: tuple[ts.socket, ts.socket]) -> None:
    a, b = pair
    with tempfile.TemporaryFile() as f:
        f.write(b"0123456789" * 1000)
        f.seek(0)
        reader = Runner(lambda: drain(b, 10_000))
        assert a.sendfile(f, offset=5, count=9_000) == 9_000
        a.shutdown(stdsocket.SHUT_WR)
        assert reader.join() == (b"0123456789" * 1000)[5:9_005]


@pytest.mark.timeout(20)
def test_ssl_wrap_socket(rt: Any, tmp_path: Any) -> None:
    cert = _keycert(tmp_path)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    # Blocking, with a timeout on one side.
    a, b = ts.socketpair()
    a.settimeout(10)

    def serve() -> bytes:
        with sctx.wrap_socket(b, server_side=True) as s:
            data = s.recv(100)
            s.sendall(data.upper())
            return data

    server = Runner(serve)
    with cctx.wrap_socket(a) as c:
        assert isinstance(c, ssl.SSLSocket) and c.gettimeout() == 10
        assert a.fileno() == -1  # detached into the SSLSocket
        c.sendall(b"tls")
        assert c.recv(100) == b"TLS"
    assert server.join() == b"tls"
    # Non-blocking, driven by a selector.
    a, b = ts.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    ca = cctx.wrap_socket(a, do_handshake_on_connect=False)
    sb = sctx.wrap_socket(b, server_side=True, do_handshake_on_connect=False)
    try:
        assert ca.gettimeout() == 0.0 and not os.get_blocking(ca.fileno())
        pending = [ca, sb]
        deadline = time.monotonic() + 10
        while pending and time.monotonic() < deadline:
            for s in list(pending):
                try:
                    s.do_handshake()
                    pending.remove(s)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
            select.select(pending, [], [], 0.5)
        assert not pending
        ca.send(b"nb")
        select.select([sb], [], [], 5)
        assert sb.recv(2) == b"nb"
    finally:
        ca.close()
        sb.close()


def _keycert(tmp_path: Any) -> str:
    """A self-signed key and certificate: CPython's test one, else made with openssl."""
    with contextlib.suppress(ImportError):
        import test

        here = os.path.dirname(test.__file__)
        for p in (os.path.join(here, "certdata", "keycert.pem"), os.path.join(here, "keycert.pem")):
            if os.path.exists(p):
                return p
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no test certificate: neither CPython's Lib/test nor openssl")
    path = str(tmp_path / "keycert.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-keyout", path, "-out", path + ".crt"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with open(path, "a") as out, open(path + ".crt") as crt:
        out.write(crt.read())
    return path


# --- patch() -------------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_patch_unpatch_patched(rt: Any) -> None:
    names = ("socket", "socketpair", "create_connection", "create_server", "fromfd")
    before = {n: getattr(stdsocket, n) for n in names}
    assert stdsocket.socket is not ts.socket
    with ts.patched():
        for n in names:
            assert getattr(stdsocket, n) is getattr(ts, n)
        with ts.patched():
            pass
        assert stdsocket.socket is ts.socket  # an inner patched() leaves it patched
        a, b = stdsocket.socketpair()
        with a, b:
            assert type(a) is ts.socket
        assert ssl.SSLSocket.__mro__[1] is before["socket"]
    for n in names:
        assert getattr(stdsocket, n) is before[n]
    ts.patch()
    ts.patch()
    ts.unpatch()
    assert stdsocket.socket is before["socket"]


@contextlib.contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[socketserver.BaseServer]:
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        t.join()


@pytest.mark.timeout(30)
def test_socketserver_threading_echo_under_patch(rt: Any) -> None:
    class Echo(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            assert type(self.connection) is ts.socket
            for line in self.rfile:
                self.wfile.write(line.upper())

    with ts.patched():
        srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
        srv.daemon_threads = False
        srv.block_on_close = True  # type: ignore[attr-defined]
        with serving(srv):
            assert type(srv.socket) is ts.socket

            def client(i: int) -> bytes:
                with stdsocket.create_connection(srv.server_address, timeout=10) as c:
                    assert type(c) is ts.socket
                    f = c.makefile("rwb")
                    f.write(b"hello %d\n" % i)
                    f.flush()
                    line = f.readline()
                    f.close()
                    return line

            results = [Runner(lambda i=i: client(i)) for i in range(5)]
            assert [r.join(20) for r in results] == [b"HELLO %d\n" % i for i in range(5)]


class _Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = b"threadpoll:" + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.timeout(30)
def test_http_server_client_and_urllib_under_patch(rt: Any) -> None:
    with ts.patched():
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
        srv.daemon_threads = False
        with serving(srv):
            host, port = srv.server_address[:2]
            conn = http.client.HTTPConnection(str(host), port, timeout=10)
            try:
                for path in ("/a", "/b"):  # keep-alive: two requests on one connection
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    assert resp.status == 200 and resp.read() == b"threadpoll:" + path.encode()
                assert type(conn.sock) is ts.socket
            finally:
                conn.close()
            with urllib.request.urlopen(f"http://{host}:{port}/u", timeout=10) as r:
                assert r.read() == b"threadpoll:/u"


@pytest.mark.timeout(30)
def test_xmlrpc_under_patch(rt: Any) -> None:
    with ts.patched():
        srv = xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False, allow_none=True)
        srv.register_function(lambda a, b: a + b, "add")
        with serving(srv):
            host, port = srv.server_address[:2]
            with xmlrpc.client.ServerProxy(f"http://{host}:{port}/") as proxy:
                assert proxy.add(2, 3) == 5
                assert proxy.add("thread", "poll") == "threadpoll"


class _SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib.sendmail: HELO/EHLO, MAIL, RCPT, DATA, QUIT."""

    received: list[bytes]

    def handle(self) -> None:
        self.wfile.write(b"220 tiny ESMTP\r\n")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line[:4].upper()
            if cmd == b"EHLO":
                self.wfile.write(b"250-tiny\r\n250 8BITMIME\r\n")
            elif cmd in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                self.wfile.write(b"250 OK\r\n")
            elif cmd == b"DATA":
                self.wfile.write(b"354 go ahead\r\n")
                body = []
                for data in self.rfile:
                    if data == b".\r\n":
                        break
                    body.append(data)
                self.server.received.append(b"".join(body))  # type: ignore[attr-defined]
                self.wfile.write(b"250 queued\r\n")
            elif cmd == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"502 not implemented\r\n")


@pytest.mark.timeout(30)
def test_smtplib_against_a_threaded_smtp_server_under_patch(rt: Any) -> None:
    with ts.patched():
        srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SMTPHandler)
        srv.daemon_threads = False
        srv.received = []  # type: ignore[attr-defined]
        with serving(srv):
            host, port = srv.server_address[:2]
            with smtplib.SMTP(str(host), port, timeout=10) as smtp:
                assert type(smtp.sock) is ts.socket
                refused = smtp.sendmail("a@example.com", ["b@example.com"], "Subject: t\r\n\r\nhi")
                assert refused == {}
        assert b"hi" in srv.received[0]  # type: ignore[attr-defined]


@pytest.mark.python_runtime
@pytest.mark.timeout(20)
def test_close_on_the_same_thread_during_the_first_attempt(
    pair: tuple[ts.socket, ts.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blocking recv makes its first attempt holding the FD's read lock, and no state lock
    (FD.recv). A close running on top of it on the same thread (a signal handler) must
    not wait for that call: it returns, the recv completes, and the descriptor is closed as
    the recv drops its reference."""
    a, b = pair
    a.sendall(b"data")
    seen: dict[str, Any] = {}
    real = fd_unix._CSocket

    class CSocketInTheMiddle:
        """``_CSocket`` whose recv runs b.close() first, as a handler on this thread would."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def recv(sock: Any, *args: Any) -> bytes:
            if sock is b and "closed" not in seen:
                seen["state_lock_held"] = b._desc.fd.fdmu.held_by_me()
                b.close()  # would deadlock if it took the state lock here
                seen["closed"] = True
            return cast(bytes, real.recv(sock, *args))

    monkeypatch.setattr(fd_unix, "_CSocket", CSocketInTheMiddle())
    assert b.recv(10) == b"data"
    monkeypatch.undo()
    assert seen == {"state_lock_held": False, "closed": True}
    assert b._desc.fd.sysfd == -1  # closed by the recv's own last reference
    with pytest.raises(OSError):
        b.recv(1)


def test_blocking_calls_take_every_argument_as_the_stdlib_does(
    pair: tuple[ts.socket, ts.socket],
) -> None:
    """The drop-in's blocking recv, recv_into and send try first straight in C for the
    common arguments and leave the rest to the gated call: every argument, good or bad,
    gets what a stdlib socket gives (data buffered, so nothing waits)."""
    from array import array

    def run(a: Any, b: Any) -> list[Any]:
        calls: list[Callable[[], Any]] = [
            lambda: b.recv(0),
            lambda: b.recv(-1),
            lambda: b.recv(1.5),
            lambda: b.recv(True),
            lambda: b.recv(5),
            lambda: b.recv_into(bytearray(4), 8),
            lambda: b.recv_into(bytearray(4), -1),
            lambda: b.recv_into(b"xx"),
            lambda: b.recv_into(None),
            lambda: b.recv_into(memoryview(bytearray(8))[::2]),
            lambda: b.recv_into(bytearray()),
            lambda: b.recv_into(bytearray(4), 2.0),
            lambda: (lambda buf: (b.recv_into(buf, 3), bytes(buf)))(bytearray(4)),
            lambda: (lambda buf: (b.recv_into(buf), buf.tolist()))(array("b", [0, 0])),
            lambda: (lambda buf: (b.recv_into(memoryview(buf)[1:3]), bytes(buf)))(bytearray(4)),
            lambda: a.send("x"),
            lambda: a.send(b""),
            lambda: a.send(array("i", [1])),
            lambda: a.send(bytearray(b"yz")),
            lambda: b.recv(64),
        ]
        out = []
        for i, call in enumerate(calls):
            a.sendall(bytes([65 + i]) * 5)
            try:
                out.append(call())
            except Exception as e:
                out.append((type(e), str(e)))
        return out

    sa, sb = stdsocket.socketpair()
    try:
        want = run(sa, sb)
    finally:
        sa.close()
        sb.close()
    assert run(*pair) == want


@pytest.mark.timeout(30)
def test_two_threads_closing_one_socket_both_return(pair: tuple[ts.socket, ts.socket]) -> None:
    """close() of one socket object from two threads at once: both return, as a second
    close() does (the stdlib's is a no-op then). Its "this object closed already" mark is
    taken under a lock: with a check then a set, both threads could pass the check (a no-GIL
    build runs them side by side), and the later one then found the descriptor closed and
    raised EBADF. A trace on each thread holds it just after the check, until the other
    thread gets there too or a second has passed: unfixed, both get there."""
    a, _ = pair
    past_check = Meeting()
    at_mark = OnLine(ts.socket._real_close, "self._released = True", past_check.arrive)
    run_all([lambda: at_mark.run(a.close)] * 2, timeout=10.0)  # neither raises EBADF
    assert not past_check.met.is_set()  # one thread at a time past the check
    assert a.fileno() == -1
