"""threadpoll.socket behaves like a blocking kernel socket (issue 11, items 8-12).

Where the stdlib's behaviour is the kernel's, the test checks a plain ``socket.socket`` does
the same thing first, so a test can only pass by matching what the stdlib really does. Every
test takes the ``rt`` fixture and so runs on every backend.
"""

from __future__ import annotations

import array
import errno
import io
import os
import socket as stdsocket
import struct
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from support import HoldAt, Runner, pd_of, wait_parked, wait_until

import threadpoll.socket as ts
from threadpoll._runtime.netpoll import PD_PARKED
from threadpoll.errors import DeadlineExceededError, NetClosingError

TIMED_OUT = (stdsocket.timeout, TimeoutError)  # one class from 3.10 on
BIG = bytes(range(256)) * 16384  # 4 MiB: more than a socket pair's buffers hold
WAITALL = getattr(stdsocket, "MSG_WAITALL", 0)
needs_waitall = pytest.mark.skipif(not WAITALL, reason="no MSG_WAITALL")
needs_timeo = pytest.mark.skipif(
    not hasattr(stdsocket, "SO_RCVTIMEO") or sys.platform != "linux",
    reason="SO_RCVTIMEO/SO_SNDTIMEO's struct timeval layout is checked on Linux",
)


@pytest.fixture
def pair(rt: Any) -> Iterator[tuple[ts.socket, ts.socket]]:
    a, b = ts.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def tcp_pair(rt: Any) -> Iterator[tuple[ts.socket, ts.socket]]:
    with ts.create_server(("127.0.0.1", 0)) as lst:
        a = ts.create_connection(lst.getsockname())
        b, _ = lst.accept()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def drain(sock: Any, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = sock.recv(min(n - len(out), 1 << 20))
        if not data:
            break
        out += data
    return bytes(out)


def parked_or_done(sock: ts.socket, r: Runner, mode: str = "r") -> Callable[[], bool]:
    pd = pd_of(sock._desc)
    return lambda: r.done.is_set() or (pd.rg if mode == "r" else pd.wg) == PD_PARKED


def timeval(seconds: float) -> bytes:
    return struct.pack("@ll", int(seconds), int((seconds % 1) * 1e6))


# --- 8. blocking send sends everything ------------------------------------------------------


@pytest.mark.timeout(20)
def test_blocking_send_sends_everything(pair: tuple[ts.socket, ts.socket]) -> None:
    a, b = pair
    reader = Runner(lambda: drain(b, len(BIG)))
    assert a.send(BIG) == len(BIG)
    assert reader.join() == BIG
    # A buffer whose items are not bytes: the count is in bytes, as the stdlib's.
    ints = array.array("i", range(len(BIG) // 4))
    reader = Runner(lambda: drain(b, len(BIG)))
    assert a.send(ints) == len(BIG)
    assert reader.join() == ints.tobytes()
    # Flags that do not ask for a non-blocking call: still everything.
    flags = getattr(stdsocket, "MSG_NOSIGNAL", 0) or getattr(stdsocket, "MSG_OOB", 0)
    if flags == getattr(stdsocket, "MSG_NOSIGNAL", -1):
        reader = Runner(lambda: drain(b, len(BIG)))
        assert a.send(BIG, flags) == len(BIG)
        assert reader.join() == BIG


@pytest.mark.timeout(20)
def test_send_with_a_timeout_returns_what_the_kernel_took(
    pair: tuple[ts.socket, ts.socket],
) -> None:
    """With a timeout the stdlib's send is one non-blocking send(2) after a poll: short."""
    a, _ = pair
    a.settimeout(5)
    n = a.send(BIG)
    assert 0 < n < len(BIG)


@pytest.mark.timeout(20)
def test_blocking_send_cut_short_carries_written(pair: tuple[ts.socket, ts.socket]) -> None:
    a, _ = pair
    r = Runner(lambda: a.send(BIG))
    wait_until(parked_or_done(a, r, "w"), what="send parked or returned")
    a.close()
    exc = r.join_exc()
    assert isinstance(exc, NetClosingError), f"send returned {r.result!r}"
    assert 0 < exc.written < len(BIG)  # type: ignore[attr-defined]


# --- 8. MSG_WAITALL -------------------------------------------------------------------------


def _recv_waitall(sock: ts.socket, n: int, how: str) -> bytes:
    if how == "recv":
        return sock.recv(n, WAITALL)
    if how == "recv_into":
        buf = bytearray(n)
        k = sock.recv_into(buf, 0, WAITALL)
        return bytes(buf[:k])
    data, _, _, _ = sock.recvmsg(n, 0, WAITALL)
    return data


@needs_waitall
@pytest.mark.timeout(20)
@pytest.mark.parametrize("how", ["recv", "recv_into", "recvmsg"])
def test_waitall_waits_for_the_full_count(pair: tuple[ts.socket, ts.socket], how: str) -> None:
    a, b = pair
    a.sendall(b"abc")  # before the reader starts: parked, it has read these
    r = Runner(lambda: _recv_waitall(b, 10, how))
    wait_until(parked_or_done(b, r), what="the reader parked or returned")
    a.sendall(b"defghij")
    assert r.join() == b"abcdefghij"


@needs_waitall
@pytest.mark.timeout(20)
@pytest.mark.parametrize("how", ["recv", "recv_into", "recvmsg"])
def test_waitall_returns_short_at_eof(pair: tuple[ts.socket, ts.socket], how: str) -> None:
    a, b = pair
    a.sendall(b"abc")
    a.shutdown(stdsocket.SHUT_WR)
    assert _recv_waitall(b, 10, how) == b"abc"
    assert _recv_waitall(b, 10, how) == b""


@needs_waitall
@pytest.mark.timeout(20)
def test_waitall_is_woken_by_close_and_deadlines(pair: tuple[ts.socket, ts.socket]) -> None:
    a, b = pair
    b.set_read_deadline(time.monotonic() + 0.05)
    with pytest.raises(DeadlineExceededError):
        b.recv(10, WAITALL)
    # Cut short after some data: what was read comes back (the kernel's rule), not lost.
    b.set_read_deadline(None)
    a.sendall(b"abc")  # before the reader starts: parked, it has read these
    r = Runner(lambda: b.recv(10, WAITALL))
    wait_until(parked_or_done(b, r), what="the reader parked or returned")
    b.set_read_deadline(time.monotonic())
    assert r.join() == b"abc"
    b.set_read_deadline(None)
    r = Runner(lambda: b.recv(10, WAITALL))
    wait_parked(b._desc, "r")
    b.close()
    assert isinstance(r.join_exc(), NetClosingError)


@needs_waitall
@pytest.mark.timeout(20)
def test_waitall_over_tcp(tcp_pair: tuple[ts.socket, ts.socket]) -> None:
    a, b = tcp_pair
    r = Runner(lambda: b.recv(len(BIG), WAITALL))
    a.sendall(BIG)
    assert r.join() == BIG


# --- 8. SO_RCVTIMEO / SO_SNDTIMEO ----------------------------------------------------------


def _kernel_timeout_error(call: Callable[[], object]) -> tuple[type, int | None, float]:
    t0 = time.monotonic()
    with pytest.raises(OSError) as info:
        call()
    return type(info.value), info.value.errno, time.monotonic() - t0


@needs_timeo
@pytest.mark.timeout(20)
def test_so_rcvtimeo_bounds_a_blocking_read_as_the_stdlib(
    pair: tuple[ts.socket, ts.socket],
) -> None:
    _, b = pair
    plain_a, plain_b = stdsocket.socketpair()
    with plain_a, plain_b:
        plain_b.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVTIMEO, timeval(0.1))
        expected = _kernel_timeout_error(lambda: plain_b.recv(1))[:2]
    assert expected == (BlockingIOError, errno.EAGAIN)
    b.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVTIMEO, timeval(0.1))
    for call in (
        lambda: b.recv(1),
        lambda: b.recv_into(bytearray(1)),
        lambda: b.recvfrom(1),
        lambda: b.recvmsg(1),
        lambda: b.recv(1, WAITALL),
    ):
        kind, err, took = _kernel_timeout_error(call)
        assert (kind, err) == expected
        assert took >= 0.09
    # Set to 0 again: no bound (the reader parks until the data comes).
    b.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVTIMEO, timeval(0))
    r = Runner(lambda: b.recv(1))
    wait_parked(b._desc, "r")
    pair[0].sendall(b"!")
    assert r.join() == b"!"


@needs_timeo
@pytest.mark.timeout(20)
def test_so_rcvtimeo_bounds_accept_and_is_read_from_an_adopted_fd(rt: Any) -> None:
    with ts.create_server(("127.0.0.1", 0)) as lst:
        lst.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVTIMEO, timeval(0.1))
        kind, err, _ = _kernel_timeout_error(lst.accept)
        assert (kind, err) == (BlockingIOError, errno.EAGAIN)
    plain_a, plain_b = stdsocket.socketpair()
    plain_b.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVTIMEO, timeval(0.1))
    with plain_a, plain_b, ts.fromfd(plain_b.fileno(), plain_b.family, plain_b.type) as s:
        kind, err, took = _kernel_timeout_error(lambda: s.recv(1))
        assert (kind, err) == (BlockingIOError, errno.EAGAIN) and took >= 0.09


@needs_timeo
@pytest.mark.timeout(20)
def test_so_sndtimeo_bounds_a_blocking_write_as_the_stdlib(
    pair: tuple[ts.socket, ts.socket],
) -> None:
    a, _ = pair
    # The kernel's rule, checked on a plain socket: a blocking send that times out part-way
    # returns the count it sent; one that sent nothing fails with EAGAIN.
    plain_a, plain_b = stdsocket.socketpair()
    with plain_a, plain_b:
        plain_a.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_SNDTIMEO, timeval(0.1))
        assert 0 < plain_a.send(BIG) < len(BIG)
        assert _kernel_timeout_error(lambda: plain_a.send(BIG))[:2] == (
            BlockingIOError,
            errno.EAGAIN,
        )
    a.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_SNDTIMEO, timeval(0.1))
    n = a.send(BIG)
    assert 0 < n < len(BIG)
    kind, err, took = _kernel_timeout_error(lambda: a.send(BIG))
    assert (kind, err) == (BlockingIOError, errno.EAGAIN) and took >= 0.09
    with pytest.raises(BlockingIOError) as info:
        a.sendall(BIG)
    assert info.value.written == 0  # type: ignore[attr-defined]


@needs_timeo
@pytest.mark.timeout(20)
def test_two_threads_setting_so_rcvtimeo_leave_the_kernels_value_cached(
    pair: tuple[ts.socket, ts.socket],
) -> None:
    """Two threads set SO_RCVTIMEO at once: the cache that blocking calls honour ends as the
    kernel's value. Each setsockopt reads the options back and stores them; unfixed, the
    first thread's read (the older value) could be stored after the second's. A trace holds
    the first thread between its read and its store until the second thread's setsockopt
    has returned, or a second has passed (fixed: the second waits for that store)."""
    a, _ = pair
    sol, opt = stdsocket.SOL_SOCKET, stdsocket.SO_RCVTIMEO
    hold = HoldAt(ts.socket._read_kernel_timeouts, "d.set_kernel_timeouts(rcv, snd)", 1.0)
    first = Runner(lambda: hold.run(lambda: a.setsockopt(sol, opt, timeval(1))), name="first")
    try:
        assert hold.reached.wait(10)
        a.setsockopt(sol, opt, timeval(2))
    finally:
        hold.release()
        first.join()
    kernel = ts._timeval_seconds(a.getsockopt(sol, opt, 16))
    assert kernel == 2.0
    assert a._desc.rcvtimeo == kernel


# --- 8. repeated connect --------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_repeated_connect_reports_what_the_stdlib_reports(rt: Any) -> None:
    with stdsocket.socket() as tmp:
        tmp.bind(("127.0.0.1", 0))
        refused = tmp.getsockname()  # bound, not listening
        with ts.socket() as c:
            assert [c.connect_ex(refused) for _ in range(3)] == [errno.ECONNREFUSED] * 3
            for _ in range(2):
                with pytest.raises(ConnectionRefusedError):
                    c.connect(refused)
    with ts.create_server(("127.0.0.1", 0)) as lst, ts.socket() as c:
        addr = lst.getsockname()
        c.connect(addr)
        assert [c.connect_ex(addr) for _ in range(2)] == [errno.EISCONN] * 2
        with pytest.raises(OSError) as info:
            c.connect(addr)
        assert info.value.errno == errno.EISCONN


@pytest.mark.timeout(20)
def test_connect_errors_name_the_call_made(rt: Any) -> None:
    for bad in (("127.0.0.1", "port"), "not a tuple", ("127.0.0.1",)):
        with stdsocket.socket() as plain:
            with pytest.raises(TypeError) as expected:
                plain.connect(bad)  # type: ignore[arg-type]
        with ts.socket() as c:
            with pytest.raises(TypeError) as info:
                c.connect(bad)
        assert str(info.value) == str(expected.value)


# --- 9. iterables of buffers ----------------------------------------------------------------


@pytest.mark.timeout(20)
def test_recvmsg_into_takes_a_generator_and_waits(pair: tuple[ts.socket, ts.socket]) -> None:
    a, b = pair
    bufs = [bytearray(3), bytearray(5)]
    r = Runner(lambda: b.recvmsg_into(x for x in bufs))
    wait_parked(b._desc, "r")
    a.sendall(b"abcdefgh")
    assert r.join()[0] == 8
    assert bufs == [bytearray(b"abc"), bytearray(b"defgh")]


@pytest.mark.timeout(20)
def test_sendmsg_takes_a_generator_and_waits(pair: tuple[ts.socket, ts.socket]) -> None:
    a, b = pair
    filled = 0
    a.setblocking(False)
    try:
        while True:
            filled += a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    a.setblocking(True)
    parts = [b"hello ", b"world"]
    r = Runner(lambda: a.sendmsg(p for p in parts))
    wait_parked(a._desc, "w")
    assert drain(b, filled) == b"x" * filled
    assert r.join() == 11
    assert drain(b, 11) == b"hello world"


# --- 10. create_connection uses socket.socket as it is at call time --------------------------


@pytest.mark.timeout(20)
@pytest.mark.parametrize("base", ["patched", "stdlib"])
def test_create_connection_under_patch_uses_the_installed_class(rt: Any, base: str) -> None:
    """PySocks' documented set-up, ``socket.socket = socks.socksocket``, after patch(): the
    stdlib's create_connection then goes through the proxy class, and so must ours."""
    made: list[object] = []
    with ts.patched():
        parent: type = stdsocket.socket if base == "patched" else ts._orig_socket

        class Proxy(parent):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                made.append(self)

        with ts.create_server(("127.0.0.1", 0)) as lst:
            installed = stdsocket.socket
            stdsocket.socket = Proxy  # type: ignore[misc]
            try:
                c = stdsocket.create_connection(lst.getsockname(), timeout=5)
            finally:
                stdsocket.socket = installed  # type: ignore[misc]
            with c:
                assert type(c) is Proxy and made == [c]
                s, _ = lst.accept()
                with s:
                    c.sendall(b"via proxy")
                    assert drain(s, 9) == b"via proxy"
    # Without a replacement installed, threadpoll's own create_connection makes its socket.
    with ts.create_server(("127.0.0.1", 0)) as lst:
        with ts.create_connection(lst.getsockname()) as c:
            assert type(c) is ts.socket


@pytest.mark.timeout(20)
def test_patch_and_unpatch_leave_a_class_the_program_installed(rt: Any) -> None:
    """``socket.socket = socks.socksocket`` before patch(): replacing it would silently
    bypass the proxy, so patch() keeps it (and says so), and so does unpatch()."""
    was_patched = ts.is_patched()
    installed = stdsocket.socket
    ts.unpatch()

    class Proxy(ts._orig_socket):  # type: ignore[misc, name-defined]
        pass

    try:
        stdsocket.socket = Proxy  # type: ignore[misc]
        with pytest.warns(RuntimeWarning, match="left in place"):
            ts.patch()
        assert stdsocket.socket is Proxy
        assert stdsocket.create_connection is ts.create_connection  # the rest is patched
        ts.unpatch()
        assert stdsocket.socket is Proxy
        assert stdsocket.create_connection is ts._orig_create_connection
        # Built on threadpoll's class (defined after patch()): kept, and nothing to warn of.
        stdsocket.socket = ts.socket  # type: ignore[misc]

        class Ours(ts.socket):
            pass

        stdsocket.socket = Ours  # type: ignore[misc]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ts.patch()
        assert stdsocket.socket is Ours
    finally:
        stdsocket.socket = installed  # type: ignore[misc]
        ts.unpatch()
        if was_patched:
            ts.patch()


# --- 11. sendfile ---------------------------------------------------------------------------


@pytest.fixture
def big_file() -> Iterator[io.BufferedRandom]:
    with tempfile.TemporaryFile() as f:
        f.write(BIG)
        f.seek(0)
        yield f  # type: ignore[misc]


@pytest.mark.skipif(not hasattr(os, "sendfile"), reason="no os.sendfile")
@pytest.mark.timeout(20)
def test_sendfile_uses_os_sendfile(
    pair: tuple[ts.socket, ts.socket], big_file: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    calls = []
    real = os.sendfile

    def spy(*args: Any) -> int:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(os, "sendfile", spy)
    reader = Runner(lambda: drain(b, len(BIG) - 5))
    assert a.sendfile(big_file, offset=5) == len(BIG) - 5
    assert reader.join() == BIG[5:]
    assert calls and all(c[0] == a.fileno() for c in calls)
    assert big_file.tell() == len(BIG)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("zero_copy", [True, False], ids=["os.sendfile", "send"])
def test_sendfile_cut_short_carries_written(
    pair: tuple[ts.socket, ts.socket], big_file: Any, zero_copy: bool
) -> None:
    a, _ = pair
    if zero_copy and not hasattr(os, "sendfile"):
        pytest.skip("no os.sendfile")
    f = big_file if zero_copy else io.BytesIO(BIG)  # no fileno(): the send() fall-back
    r = Runner(lambda: a.sendfile(f))
    wait_until(parked_or_done(a, r, "w"), what="sendfile parked or returned")
    a.close()
    exc = r.join_exc()
    assert isinstance(exc, NetClosingError), f"sendfile returned {r.result!r}"
    assert 0 < exc.written < len(BIG)  # type: ignore[attr-defined]
    assert f.tell() == exc.written  # type: ignore[attr-defined]


@pytest.mark.timeout(20)
def test_sendfile_timeout_bounds_each_wait(
    pair: tuple[ts.socket, ts.socket], big_file: Any
) -> None:
    a, _ = pair
    a.settimeout(0.05)
    with pytest.raises(TIMED_OUT) as info:
        a.sendfile(big_file)
    assert 0 < info.value.written == big_file.tell()  # type: ignore[attr-defined]


# --- 12. close ------------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_close_after_another_object_closed_the_fd_raises_as_the_stdlib(rt: Any) -> None:
    """CPython's testCloseException."""
    plain = stdsocket.socket()
    stdsocket.socket(fileno=plain.fileno()).close()
    with pytest.raises(OSError) as expected:
        plain.close()
    plain.close()  # once closed by this object, a second close does nothing
    s = ts.socket()
    ts.socket(fileno=s.fileno()).close()
    with pytest.raises(OSError) as info:
        s.close()
    assert info.value.errno == expected.value.errno == errno.EBADF
    s.close()
    # Closed under it with os.close: the same.
    s = ts.socket()
    os.close(s.fileno())
    with pytest.raises(OSError) as info:
        s.close()
    assert info.value.errno == errno.EBADF
    s.close()


@pytest.mark.timeout(20)
def test_close_of_a_second_object_after_the_owner_detached(rt: Any) -> None:
    """CPython's test_socket_fileno: the second object keeps the fd, and closes it."""
    s = ts.socket()
    n = s.fileno()
    s2 = ts.socket(fileno=n)
    assert s.detach() == n
    s2.close()
    with pytest.raises(OSError) as info:
        os.fstat(n)
    assert info.value.errno == errno.EBADF
