"""TLS keeps the promises: threadpoll.tls (over a Conn) and the drop-in ssl.SSLSocket.

Each behaviour runs on every front (``front``: "tls" for ``threadpoll.tls.TLSConn``, "dropin"
for ``SSLContext.wrap_socket`` on a threadpoll socket, "dropin-bio" for the same on its
memory-BIO route) and on every backend (``rt``). The
certificates in tests/tls/ were made once with the openssl CLI for these tests: a CA, a server
certificate for localhost/127.0.0.1/::1 and a client certificate signed by it, and a second
server certificate signed by another CA (valid until 2126).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import select
import shutil
import signal
import socket as stdsocket
import ssl
import subprocess
import sys
import termios
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from kqueue_emul import _ioctl_int
from support import Meeting, Runner, parked, run_all, wait_parked, wait_until

import threadpoll.socket as ts
import threadpoll.testing
from threadpoll import _sslsocket, net, tls
from threadpoll._sslsocket import SSLSocket as TPSSLSocket
from threadpoll.errors import DeadlineExceededError, NetClosingError

CERTS = Path(__file__).parent / "tls"
CA = str(CERTS / "ca.pem")
SERVER = str(CERTS / "server.pem")
CLIENT = str(CERTS / "client.pem")
WRONG_CA_SERVER = str(CERTS / "wrongca.pem")
OPENSSL = shutil.which("openssl")


def _openssl_key_update_reason() -> str | None:
    """Why the openssl command cannot be the KeyUpdate peer, or None if it can: its s_client
    sends a KeyUpdate for the command letters k and K from OpenSSL 1.1.1 on (LibreSSL's,
    macOS's /usr/bin/openssl, has no such command)."""
    if OPENSSL is None:
        return "no openssl command to act as the TLS 1.3 peer"
    import re
    import subprocess

    out = subprocess.run([OPENSSL, "version"], capture_output=True, text=True, timeout=30).stdout
    m = re.match(r"OpenSSL (\d+)\.(\d+)\.(\d+)([a-z]?)", out)
    if m is None:
        return f"{OPENSSL} is not OpenSSL ({out.strip()!r}): no KeyUpdate command"
    major, minor, patch = (int(x) for x in m.groups()[:3])
    if (major, minor, patch) < (1, 1, 1):
        return f"{out.strip()} has no TLS 1.3 (OpenSSL 1.1.1 or later needed)"
    return None


KEY_UPDATE_SKIP = _openssl_key_update_reason()

# "dropin-bio": the drop-in forced onto its memory-BIO route (threadpoll/_sslsocket.py, "Two
# routes"), which it takes by itself for a client with post-handshake authentication.
FRONTS = ["tls", "dropin", "dropin-bio"]

# Python 3.9 sets OP_IGNORE_UNEXPECTED_EOF in new contexts: OpenSSL then takes a peer that
# closes without close_notify for one that sent it, in the stdlib's ssl and here alike.
IGNORES_UNEXPECTED_EOF = bool(
    ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).options & getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
)


def server_ctx(cert: str = SERVER) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert)
    return ctx


def client_ctx() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(CA)
    return ctx


class End:
    """One end of a TLS connection, the same calls on both fronts."""

    def __init__(self, obj: Any, front: str) -> None:
        self.obj = obj
        self.front = front

    @property
    def fd(self) -> Any:
        """What support.wait_parked takes: the FD's holder."""
        return self.obj.conn if self.front == "tls" else self.obj._desc

    def fileno(self) -> int:
        return int(self.obj.fileno())

    def read(self, n: int) -> bytes:
        return bytes(self.obj.read(n) if self.front == "tls" else self.obj.recv(n))

    def write(self, data: bytes) -> None:
        if self.front == "tls":
            self.obj.write(data)
        else:
            self.obj.sendall(data)

    def handshake(self) -> None:
        if self.front == "tls":
            self.obj.handshake()
        else:
            self.obj.do_handshake()

    def set_read_deadline(self, t: float | None) -> None:
        self.obj.set_read_deadline(t)

    def set_write_deadline(self, t: float | None) -> None:
        self.obj.set_write_deadline(t)

    def close(self) -> None:
        self.obj.close()


def raw_pair(front: str) -> tuple[Any, Any]:
    """A connected pair of threadpoll endpoints: Conns (tls) or sockets (dropin)."""
    if front == "tls":
        ln = net.listen("tcp", "127.0.0.1:0")
        try:
            r = Runner(ln.accept)
            a = net.dial("tcp", ln.addr)
            return a, r.join()
        finally:
            ln.close()
    a, b = ts.socketpair()
    return a, b


def wrap(
    raw: Any,
    front: str,
    ctx: ssl.SSLContext,
    server_side: bool,
    hostname: str | None,
    handshake: bool = True,
) -> End:
    if front == "tls":
        c = tls.server(raw, ctx) if server_side else tls.client(raw, ctx, server_hostname=hostname)
        e = End(c, front)
        if handshake:
            e.handshake()
        return e
    s = ctx.wrap_socket(
        raw,
        server_side=server_side,
        server_hostname=None if server_side else hostname,
        do_handshake_on_connect=handshake,
    )
    return End(s, front)


def tls_pair(
    front: str, sctx: ssl.SSLContext | None = None, cctx: ssl.SSLContext | None = None
) -> tuple[End, End]:
    """(client, server), handshake done."""
    a, b = raw_pair(front)
    sctx = sctx or server_ctx()
    cctx = cctx or client_ctx()
    r = Runner(lambda: wrap(b, front, sctx, True, None), name="tls-server")
    try:
        c = wrap(a, front, cctx, False, "localhost")
    except BaseException:
        a.close()
        b.close()
        r.join_exc()
        raise
    return c, r.join()


@pytest.fixture(params=FRONTS)
def front(request: pytest.FixtureRequest, rt: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "dropin-bio":
        monkeypatch.setattr(_sslsocket, "_BIO_ONLY", True)
    return str(request.param)


@pytest.fixture
def pair(front: str) -> Any:
    c, s = tls_pair(front)
    try:
        yield c, s
    finally:
        c.close()
        s.close()


def assert_fd_closed(n: int) -> None:
    with pytest.raises(OSError):
        os.fstat(n)


def test_dropin_is_an_ssl_socket_and_a_threadpoll_socket(rt: Any) -> None:
    c, s = tls_pair("dropin")
    try:
        assert isinstance(c.obj, ssl.SSLSocket) and isinstance(c.obj, ts.socket)
        assert type(c.obj) is TPSSLSocket
        assert c.obj.version() == "TLSv1.3"
        # A stdlib socket still gets the stdlib's SSLSocket.
        x, y = stdsocket.socketpair()
        with x, y:
            w = client_ctx().wrap_socket(
                x, server_hostname="localhost", do_handshake_on_connect=False
            )
            assert type(w) is ssl.SSLSocket
            w.close()
    finally:
        c.close()
        s.close()


def test_dropin_route(rt: Any) -> None:
    """The drop-in runs _ssl on the descriptor, except for a client with post-handshake
    authentication on, whose reads may have to answer the server on the spot while another
    thread's write is parked mid-record (OpenSSL on a socket allows one unfinished write):
    that one takes the memory-BIO route, whose reads queue their answers."""
    c, s = tls_pair("dropin")
    try:
        assert type(c.obj._sslobj) is _sslsocket._SSLObj
        assert type(s.obj._sslobj) is _sslsocket._SSLObj
    finally:
        c.close()
        s.close()
    sctx = server_ctx()
    sctx.post_handshake_auth = True
    cctx = client_ctx()
    cctx.post_handshake_auth = True
    c, s = tls_pair("dropin", sctx, cctx)
    try:
        assert type(c.obj._sslobj) is _sslsocket._BIOSSLObj
        assert type(s.obj._sslobj) is _sslsocket._SSLObj  # a server's reads never answer
    finally:
        c.close()
        s.close()


# --- full duplex --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_full_duplex_8mib_each_way(pair: tuple[End, End]) -> None:
    """One thread reads while another writes, on both ends at once: 8 MiB each way."""
    n = 8 << 20
    data = {"c": os.urandom(n), "s": os.urandom(n)}
    got: dict[str, bytearray] = {"c": bytearray(), "s": bytearray()}
    c, s = pair

    def reader(end: End, key: str) -> Callable[[], None]:
        def run() -> None:
            while len(got[key]) < n:
                b = end.read(65536)
                assert b, "EOF before all data arrived"
                got[key] += b

        return run

    runners = [
        Runner(lambda: c.write(data["c"]), "c-writer"),
        Runner(lambda: s.write(data["s"]), "s-writer"),
        Runner(reader(c, "c"), "c-reader"),
        Runner(reader(s, "s"), "s-reader"),
    ]
    for r in runners:
        r.join(50)
    assert bytes(got["s"]) == data["c"]
    assert bytes(got["c"]) == data["s"]


# --- close wakes everyone -------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_close_wakes_handshake(front: str) -> None:
    """A client handshake waiting for a server that never answers: close() wakes it."""
    a, b = raw_pair(front)
    try:
        c = wrap(a, front, client_ctx(), False, "localhost", handshake=False)
        r = Runner(c.handshake)
        wait_parked(c.fd, "r")
        n = c.fileno()
        t0 = time.monotonic()
        c.close()
        assert isinstance(r.join_exc(), NetClosingError)
        assert time.monotonic() - t0 < 2
        assert_fd_closed(n)
    finally:
        b.close()


@pytest.mark.timeout(20)
def test_close_wakes_read(pair: tuple[End, End]) -> None:
    c, _ = pair
    r = Runner(lambda: c.read(100))
    wait_parked(c.fd, "r")
    n = c.fileno()
    c.close()
    assert isinstance(r.join_exc(), NetClosingError)
    assert_fd_closed(n)


@contextlib.contextmanager
def _heap_growth() -> Iterator[Callable[[], int]]:
    """tracemalloc on for the block (unless it already is); yields a function that says how
    many more bytes are traced than at the block's start."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        yield lambda: tracemalloc.get_traced_memory()[0] - before
    finally:
        if not tracing:
            tracemalloc.stop()


def test_parked_reader_holds_no_buffer_of_the_size_it_asked_for(pair: tuple[End, End]) -> None:
    """A read parks for the data before it makes its result: a thread parked in
    read(32 MiB) holds no 32 MiB (a server with many parked readers would)."""
    c, s = pair
    n = 32 << 20
    with _heap_growth() as growth:
        r = Runner(lambda: c.read(n))
        wait_parked(c.fd, "r")
        held = growth()
        s.write(b"data")
        assert r.join() == b"data"
    assert held < n // 8, f"{held} bytes held by a parked read({n})"


@pytest.mark.timeout(30)
def test_reader_parked_on_a_half_arrived_record_holds_no_such_buffer(front: str) -> None:
    """The same while a record is half there: a relay passes the first 200 bytes of the
    server's next record and holds the rest, so the reader has begun the record and parks
    for its end. It holds no 32 MiB either."""
    n = 32 << 20
    lns = [stdsocket.create_server(("127.0.0.1", 0)) for _ in range(2)]  # server, relay
    half = threading.Event()
    sent_half = threading.Event()
    gate = threading.Event()
    socks: list[stdsocket.socket] = []
    threads: list[threading.Thread] = []

    def pump(src: stdsocket.socket, dst: stdsocket.socket, cut: bool) -> None:
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                if cut and half.is_set():
                    dst.sendall(d[:200])
                    sent_half.set()
                    gate.wait(20)
                    d = d[200:]
                    half.clear()
                dst.sendall(d)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(stdsocket.SHUT_WR)
            except OSError:
                pass

    def relay() -> None:
        a, _ = lns[1].accept()
        b = stdsocket.create_connection(lns[0].getsockname())
        socks.extend((a, b))
        t = threading.Thread(target=pump, args=(a, b, False), name="relay-up")
        t.start()
        threads.append(t)
        pump(b, a, True)

    r_thread = threading.Thread(target=relay, name="relay")
    r_thread.start()
    threads.append(r_thread)
    server = Runner(lambda: server_ctx().wrap_socket(lns[0].accept()[0], server_side=True))
    addr = lns[1].getsockname()
    raw: Any = net.dial("tcp", f"{addr[0]}:{addr[1]}") if front == "tls" else None
    if raw is None:
        raw = ts.create_connection(addr)
    c = wrap(raw, front, client_ctx(), False, "localhost")
    srv = server.join()
    try:
        srv.sendall(b"x")  # settle: the session tickets come before it
        assert c.read(10) == b"x"
        with _heap_growth() as growth:
            half.set()
            r = Runner(lambda: c.read(n))
            srv.sendall(b"y" * 16000)
            assert sent_half.wait(10)
            # Parked with nothing left in the kernel: the reader took the 200 bytes.
            wait_until(
                lambda: parked(c.fd)() and _ioctl_int(c.fileno(), termios.FIONREAD) == 0,
                what="the reader parked mid-record",
            )
            held = growth()
            gate.set()
            got = r.join()
        assert got == b"y" * len(got) and 0 < len(got) <= 16000
        assert held < n // 8, f"{held} bytes held by a read({n}) parked mid-record"
    finally:
        gate.set()
        c.close()
        srv.close()
        for sk in [*socks, *lns]:
            sk.close()
        for t in threads:
            t.join(10)


@pytest.mark.timeout(20)
def test_close_wakes_write_blocked_on_full_buffer(pair: tuple[End, End]) -> None:
    """The peer never reads: the writer parks on a full buffer; close wakes it, with
    .written set, and a reader parked at the same time is woken too."""
    c, _ = pair
    w = Runner(lambda: c.write(b"w" * (64 << 20)), "writer")
    rd = Runner(lambda: c.read(100), "reader")
    wait_parked(c.fd, "w")
    wait_parked(c.fd, "r")
    n = c.fileno()
    c.close()
    exc = w.join_exc()
    assert isinstance(exc, NetClosingError)
    assert 0 <= exc.written < 64 << 20
    assert isinstance(rd.join_exc(), NetClosingError)
    assert_fd_closed(n)


@pytest.mark.timeout(20)
def test_reader_parked_does_not_stop_writer(pair: tuple[End, End]) -> None:
    """A reader parked for data holds no lock a writer needs."""
    c, s = pair
    r = Runner(lambda: c.read(100))
    wait_parked(c.fd, "r")
    c.write(b"ping")  # would hang if the reader held the SSL object's lock
    assert s.read(100) == b"ping"
    s.write(b"pong")
    assert r.join() == b"pong"


# --- deadlines and timeouts -------------------------------------------------------------------


class RawTLSPeer:
    """A TLS server driven by hand over a stdlib socket (ssl.SSLObject): it can send half a
    record, or close without close_notify."""

    def __init__(self, sock: stdsocket.socket) -> None:
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = server_ctx().wrap_bio(self.inc, self.out, server_side=True)

    def handshake(self) -> None:
        while True:
            try:
                self.obj.do_handshake()
                self.sock.sendall(self.out.read())
                return
            except ssl.SSLWantReadError:
                self.sock.sendall(self.out.read())
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError from None
                self.inc.write(data)

    def seal(self, data: bytes) -> bytes:
        self.obj.write(data)
        return self.out.read()


def raw_peer_pair(front: str) -> tuple[End, RawTLSPeer, Runner]:
    """A client End (handshake running in a Runner) and a RawTLSPeer server."""
    if front == "tls":
        ln = stdsocket.create_server(("127.0.0.1", 0))
        with ln:
            conn = net.dial("tcp", ln.getsockname())
            peer_sock, _ = ln.accept()
        end = End(tls.client(conn, client_ctx(), server_hostname="localhost"), front)
    else:
        x, peer_sock = stdsocket.socketpair()
        end = End(
            client_ctx().wrap_socket(
                ts.wrap(x), server_hostname="localhost", do_handshake_on_connect=False
            ),
            front,
        )
    peer = RawTLSPeer(peer_sock)
    r = Runner(end.handshake)
    peer.handshake()
    r.join()
    return end, peer, r


@pytest.mark.timeout(20)
def test_read_deadline_fires_mid_record(front: str) -> None:
    c, peer, _ = raw_peer_pair(front)
    try:
        rec = peer.seal(b"x" * 1000)
        peer.sock.sendall(rec[: len(rec) // 2])  # half a record: TLS has nothing to give
        c.set_read_deadline(time.monotonic() + 0.1)
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            c.read(1000)
        assert 0.05 < time.monotonic() - t0 < 3
        # The rest of the record arrives; with the deadline cleared, the read completes.
        c.set_read_deadline(None)
        peer.sock.sendall(rec[len(rec) // 2 :])
        assert c.read(1000) == b"x" * 1000
    finally:
        c.close()
        peer.sock.close()


@pytest.mark.timeout(20)
def test_deadline_moved_into_the_past_wakes_reader(pair: tuple[End, End]) -> None:
    c, s = pair
    r = Runner(lambda: c.read(100))
    wait_parked(c.fd, "r")
    c.set_read_deadline(time.monotonic() - 1)
    assert isinstance(r.join_exc(), DeadlineExceededError)
    # The connection is still usable once the deadline is cleared.
    c.set_read_deadline(None)
    s.write(b"after")
    assert c.read(100) == b"after"


@pytest.mark.timeout(20)
def test_write_deadline_moved_into_the_past_wakes_writer(pair: tuple[End, End]) -> None:
    c, s = pair
    w = Runner(lambda: c.write(b"w" * (64 << 20)))
    wait_parked(c.fd, "w")
    c.set_write_deadline(time.monotonic() - 1)
    exc = w.join_exc()
    assert isinstance(exc, DeadlineExceededError)
    assert exc.written >= 0
    # The peer, which never read, goes first: TLSConn.close's close_notify then fails at once
    # instead of waiting out Go's 5 s closeNotify deadline behind a full buffer.
    s.close()


@pytest.mark.timeout(30)
def test_write_cut_short_is_finished_by_the_next_write(pair: tuple[End, End]) -> None:
    """A write that a deadline cuts short: ``.written`` counts the 64 KiB step that was cut
    (OpenSSL holds it, and the next write sends the rest of it first), so the standard
    retry, ``write(data[e.written:])``, delivers the data exactly once."""
    c, s = pair
    data = os.urandom(8 << 20).replace(b"E", b"F")  # more than the socket buffers hold
    w = Runner(lambda: c.write(data), "writer")
    wait_parked(c.fd, "w")
    c.set_write_deadline(time.monotonic() - 1)
    exc = w.join_exc()
    assert isinstance(exc, DeadlineExceededError)
    written = exc.written
    c.set_write_deadline(None)
    got = bytearray()

    def read_to_end() -> None:
        while not got.endswith(b"END"):
            b = s.read(65536)
            assert b, "EOF before the second write's data"
            got.extend(b)

    r = Runner(read_to_end, "reader")
    c.write(data[written:])  # the standard retry: what .written says was not written
    c.write(b"END")
    r.join(20)
    assert len(got) - 3 == len(data)
    assert bytes(got[:-3]) == data


@pytest.mark.timeout(20)
def test_past_deadline_raises_even_when_the_call_could_finish(pair: tuple[End, End]) -> None:
    """A deadline in the past fails the call at once, as on a plain socket, even when its
    first step could finish (data buffered to read, room to write)."""
    c, s = pair
    s.write(b"hello")
    r, _, _ = select.select([c.fileno()], [], [], 10)
    assert r, "the record never arrived"
    c.set_read_deadline(time.monotonic() - 1)
    with pytest.raises(DeadlineExceededError):
        c.read(100)
    c.set_write_deadline(time.monotonic() - 1)
    with pytest.raises(DeadlineExceededError) as ei:
        c.write(b"x")
    assert ei.value.written == 0  # type: ignore[attr-defined]  # nothing sealed or sent
    c.set_read_deadline(None)
    c.set_write_deadline(None)
    assert c.read(100) == b"hello"
    c.write(b"y")
    got = b""
    while len(got) < 1:
        got += s.read(100)
    assert got == b"y"  # the failed write left nothing behind to go out first


@pytest.mark.timeout(20)
def test_closed_wins_over_a_past_deadline(front: str) -> None:
    """A descriptor closed under the connection fails its reads and writes with the closing
    error, not the deadline's, even with both deadlines in the past (Go's netpollcheckerr
    reports closing first)."""
    c, s = tls_pair(front)
    try:
        s.write(b"hello")
        r, _, _ = select.select([c.fileno()], [], [], 10)
        assert r, "the record never arrived"
        c.set_read_deadline(time.monotonic() - 1)
        c.set_write_deadline(time.monotonic() - 1)
        assert threadpoll.testing.close_all() >= 1
        for op in (lambda: c.write(b"x"), lambda: c.read(100)):
            with pytest.raises(OSError) as ei:
                op()
            assert not isinstance(ei.value, DeadlineExceededError), repr(ei.value)
    finally:
        for end in (c, s):
            try:
                end.close()
            except OSError:
                pass  # a drop-in socket whose descriptor was closed under it: EBADF


@pytest.mark.timeout(20)
@pytest.mark.parametrize("route", ["dropin", "dropin-bio"])
def test_dropin_nonblocking_calls_have_no_deadlines(
    rt: Any, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-blocking TLS socket ignores its deadlines, as a plain threadpoll socket does
    (a call that never waits has nothing for them to bound)."""
    if route == "dropin-bio":
        monkeypatch.setattr(_sslsocket, "_BIO_ONLY", True)
    c, s = tls_pair(route)
    try:
        c.obj.settimeout(0.0)
        c.set_read_deadline(time.monotonic() - 1)
        c.set_write_deadline(time.monotonic() - 1)
        assert c.obj.send(b"ping") == 4
        assert s.read(100) == b"ping"
        s.write(b"pong")
        r, _, _ = select.select([c.fileno()], [], [], 10)
        assert r, "the record never arrived"
        got = b""
        while len(got) < 4:
            try:
                got += c.obj.recv(100)
            except ssl.SSLWantReadError:
                select.select([c.fileno()], [], [], 10)
        assert got == b"pong"
    finally:
        c.close()
        s.close()


@pytest.mark.python_runtime  # the Python backend's netpollopen is replaced
@pytest.mark.timeout(30)
def test_dropin_second_writer_waits_on_a_socket_the_poller_refused(
    rt: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drop-in TLS socket whose descriptor the poller refused (epoll_ctl's ENOSPC past
    max_user_watches) is a plain blocking socket: a second thread's write while the first's
    is blocked in the kernel waits for it, as on a pollable socket, and both get all their
    bytes out. It used to raise SSLWantWriteError at once (the wait was taken as timeout
    0)."""
    monkeypatch.setattr(rt.backend, "netpollopen", lambda fd, pd: errno.ENOSPC)
    c, s = tls_pair("dropin")
    try:
        assert not c.obj._desc.pollable
        big = 8 << 20
        first = Runner(lambda: c.write(b"w" * big), "first")
        wait_until(lambda: c.obj._sslobj.wowner != 0, what="the first write holds the lock")
        second = Runner(lambda: c.write(b"x"), "second")
        got = 0
        while got < big:  # the peer reads the first write; the second's then goes out
            got += len(s.read(min(1 << 20, big - got)))
        assert first.join() is None
        assert second.join() is None  # unfixed: SSLWantWriteError
        assert s.read(10) == b"x"
    finally:
        c.close()
        s.close()


@pytest.mark.timeout(30)
def test_dropin_bio_nonblocking_write_does_not_wait_for_a_parked_writer(
    rt: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the memory-BIO route, a non-blocking write while another thread's write is parked
    raises SSLWantWriteError at once (as on the _ssl route) instead of waiting for it."""
    monkeypatch.setattr(_sslsocket, "_BIO_ONLY", True)
    c, s = tls_pair("dropin-bio")
    try:
        w = Runner(lambda: c.write(b"w" * (64 << 20)), "writer")
        wait_parked(c.fd, "w")
        c.obj.settimeout(0.0)  # the parked write keeps the limit it started with
        with pytest.raises(ssl.SSLWantWriteError):
            c.obj.send(b"x")
        c.set_write_deadline(time.monotonic() - 1)
        assert isinstance(w.join_exc(), DeadlineExceededError)
    finally:
        c.close()
        s.close()


@pytest.mark.timeout(20)
def test_past_read_deadline_and_plaintext_already_decrypted(pair: tuple[End, End]) -> None:
    """Plaintext OpenSSL already holds (a read took part of a record): the drop-in fails a
    read with a past deadline, as a plain socket with data in its buffer does; threadpoll.tls
    returns it, as Go's Conn.Read returns what it has already decrypted."""
    c, s = pair
    s.write(b"hello")
    assert c.read(2) == b"he"
    c.set_read_deadline(time.monotonic() - 1)
    if c.front == "tls":
        assert c.read(100) == b"llo"
    else:
        with pytest.raises(DeadlineExceededError):
            c.read(100)
        c.set_read_deadline(None)
        assert c.read(100) == b"llo"


@pytest.mark.timeout(30)
def test_write_from_a_callback_inside_a_read_step_is_refused(front: str) -> None:
    """A callback inside a read step (it holds the step lock) that writes while another
    thread's write is parked (holding the write lock, and needing the step lock for its
    next step) gets RuntimeError at once instead of a deadlock."""
    state: dict[str, Any] = {"armed": False}
    me = threading.get_ident()

    def cb(conn: Any, direction: str, *args: Any) -> None:
        if state["armed"] and direction == "read" and threading.get_ident() == me:
            state["armed"] = False
            try:
                state["c"].write(b"ping")
            except BaseException as e:
                state["exc"] = e

    cctx = client_ctx()
    cctx._msg_callback = cb  # type: ignore[attr-defined]
    c, s = tls_pair(front, cctx=cctx)
    try:
        state["c"] = c
        w = Runner(lambda: c.write(b"w" * (64 << 20)), "writer")
        wait_parked(c.fd, "w")
        s.write(b"hello")
        state["armed"] = True
        assert c.read(100) == b"hello"
        assert isinstance(state.get("exc"), RuntimeError), state.get("exc")
        assert "reentrant call" in str(state["exc"])
        c.set_write_deadline(time.monotonic() - 1)
        assert isinstance(w.join_exc(), DeadlineExceededError)
    finally:
        c.close()
        s.close()


@pytest.mark.timeout(30)
@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
@pytest.mark.parametrize("route", ["dropin", "dropin-bio"])
def test_dropin_write_from_a_handler_on_a_writing_thread_is_refused(
    rt: Any, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal handler that writes on the socket its own thread is writing on gets
    RuntimeError('reentrant call ...'), as on a plain threadpoll socket, instead of waiting
    for itself."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")
    if route == "dropin-bio":
        monkeypatch.setattr(_sslsocket, "_BIO_ONLY", True)
    c, s = tls_pair("dropin")
    main = threading.main_thread().ident
    assert main is not None
    got: list[BaseException | None] = []

    def handler(signum: int, frame: Any) -> None:
        try:
            c.obj.send(b"x")
            got.append(None)
        except BaseException as e:
            got.append(e)
        c.set_write_deadline(time.monotonic() - 1)  # end the outer write

    def kick() -> None:
        try:
            wait_parked(c.fd, "w")
        except BaseException:
            c.close()
            raise
        signal.pthread_kill(main, signal.SIGUSR1)

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        kicker = Runner(kick, name="kicker")
        with pytest.raises(DeadlineExceededError):
            c.write(b"w" * (64 << 20))
        kicker.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
        c.close()
        s.close()
    assert len(got) == 1
    assert isinstance(got[0], RuntimeError), got[0]
    assert "reentrant call" in str(got[0])


def _handler_call_on_top_of(
    parked: Callable[[], Any], fd: Any, mode: str, call: Callable[[], Any], end: Callable[[], None]
) -> BaseException | None:
    """Run parked() on the main thread; once it is parked (mode "r"/"w" on fd), a SIGUSR1
    handler on the main thread runs call() and then end(), which must make parked() fail.
    Returns what call() raised (None if it returned)."""
    main = threading.main_thread().ident
    assert main is not None
    got: list[BaseException | None] = []

    def handler(signum: int, frame: Any) -> None:
        try:
            call()
            got.append(None)
        except BaseException as e:
            got.append(e)
        end()

    def kick() -> None:
        wait_parked(fd, mode)
        signal.pthread_kill(main, signal.SIGUSR1)

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        kicker = Runner(kick, name="kicker")
        with pytest.raises(OSError):
            parked()
        kicker.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert len(got) == 1
    return got[0]


@pytest.mark.timeout(30)
@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_read_from_a_handler_on_a_reading_thread_is_refused(pair: tuple[End, End]) -> None:
    """A signal handler that reads on the connection its own thread is parked reading on
    gets RuntimeError('reentrant call ...') instead of waiting for itself."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")
    c, s = pair
    e = _handler_call_on_top_of(
        lambda: c.read(100),
        c.fd,
        "r",
        lambda: c.read(100),
        lambda: c.set_read_deadline(time.monotonic() - 1),
    )
    assert isinstance(e, RuntimeError), e
    assert "reentrant call" in str(e)
    c.set_read_deadline(None)
    s.write(b"after")
    assert c.read(100) == b"after"  # nothing left half-changed


@pytest.mark.timeout(30)
@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_write_from_a_handler_during_its_threads_handshake_is_refused(front: str) -> None:
    """A signal handler that writes on the connection whose handshake its own thread is
    parked in gets RuntimeError('reentrant call ...') instead of waiting for itself."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")
    a, b = raw_pair(front)
    c: End | None = None
    try:
        c = wrap(a, front, client_ctx(), False, "localhost", handshake=False)
        e = _handler_call_on_top_of(
            c.handshake,
            c.fd,
            "r",  # the server never answers the ClientHello
            lambda: c.write(b"x"),
            lambda: c.set_read_deadline(time.monotonic() - 1),
        )
        assert isinstance(e, RuntimeError), e
        assert "reentrant call" in str(e)
    finally:
        if c is not None:
            c.close()
        a.close()
        b.close()


@pytest.mark.timeout(40)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("route", ["dropin", "dropin-bio"])
def test_dropin_fork_while_a_thread_writes(
    rt: Any, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child forked while a parent thread is parked in a TLS write: a write in the child
    fails with the poisoned descriptor's error instead of waiting for ever for the write
    lock the parent thread held."""
    import warnings

    if route == "dropin-bio":
        monkeypatch.setattr(_sslsocket, "_BIO_ONLY", True)
    c, s = tls_pair("dropin")
    try:
        w = Runner(lambda: c.write(b"w" * (64 << 20)), "writer")
        wait_parked(c.fd, "w")
        with warnings.catch_warnings():
            # 3.12+: "This process is multi-threaded, use of fork() may lead to deadlocks".
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 70
            try:
                c.obj.send(b"x")
                code = 1
            except OSError as e:
                code = 0 if "forked" in str(e) else 2
            finally:
                os._exit(code)
        end = time.monotonic() + 20
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > end:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("the child hung")
            time.sleep(0.005)  # polling the child's state
        assert os.waitstatus_to_exitcode(status) == 0
        c.set_write_deadline(time.monotonic() - 1)
        assert isinstance(w.join_exc(), DeadlineExceededError)
    finally:
        c.close()
        s.close()


@pytest.mark.timeout(20)
def test_dropin_blocking_descriptor_stays_blocking(rt: Any) -> None:
    """DESIGN: a blocking socket's descriptor is blocking. A TLS step makes it non-blocking
    for the step alone: after the handshake, a read and a write, and while a reader is
    parked, the descriptor is blocking; with a timeout it is non-blocking, as the stdlib
    makes it."""
    c, s = tls_pair("dropin")
    try:
        n = c.fileno()
        assert os.get_blocking(n)
        r = Runner(lambda: c.read(100), "reader")
        wait_parked(c.fd, "r")
        assert os.get_blocking(n)
        s.write(b"x")
        assert r.join() == b"x"
        c.write(b"y")
        assert s.read(100) == b"y"
        assert os.get_blocking(n)
        c.obj.settimeout(5.0)
        assert not os.get_blocking(n)
        s.write(b"z")
        assert c.read(100) == b"z"
        assert not os.get_blocking(n)
        c.obj.settimeout(None)
        assert os.get_blocking(n)
    finally:
        c.close()
        s.close()


@pytest.mark.timeout(60)
def test_dropin_full_duplex_with_a_timeout(rt: Any) -> None:
    """2 MiB each way from two threads at once on both ends, with ``settimeout(10)``: every
    wait a call with a time limit (the call gates, the per-call pollDesc deadline)."""
    c, s = tls_pair("dropin")
    try:
        c.obj.settimeout(10.0)
        s.obj.settimeout(10.0)
        n = 2 << 20
        data = {"c": os.urandom(n), "s": os.urandom(n)}

        def reader(end: End) -> bytes:
            got = bytearray()
            while len(got) < n:
                b = end.read(65536)
                assert b, "EOF before all data arrived"
                got += b
            return bytes(got)

        runners = [
            Runner(lambda: c.write(data["c"]), "c-writer"),
            Runner(lambda: s.write(data["s"]), "s-writer"),
            Runner(lambda: reader(c), "c-reader"),
            Runner(lambda: reader(s), "s-reader"),
        ]
        results = [r.join(50) for r in runners]
        assert results[3] == data["c"]
        assert results[2] == data["s"]
    finally:
        c.close()
        s.close()


@pytest.mark.timeout(20)
def test_dropin_settimeout_bounds_read_with_stdlib_message(rt: Any) -> None:
    c, s = tls_pair("dropin")
    try:
        c.obj.settimeout(0.1)
        with pytest.raises(stdsocket.timeout) as ei:  # TimeoutError from 3.10
            c.obj.recv(10)
        assert not isinstance(ei.value, DeadlineExceededError)
        assert str(ei.value) == "The read operation timed out"
        c.obj.settimeout(None)
        s.write(b"ok")
        assert c.read(10) == b"ok"
    finally:
        c.close()
        s.close()


@pytest.mark.timeout(20)
def test_dropin_nonblocking_wants_read(rt: Any) -> None:
    c, s = tls_pair("dropin")
    try:
        c.obj.setblocking(False)
        with pytest.raises(ssl.SSLWantReadError):
            c.obj.recv(10)
        s.write(b"nb")
        wait_until_readable(c.obj)
        assert c.obj.recv(10) == b"nb"
    finally:
        c.close()
        s.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("n", [1000, 16384, 20000, 40000, 65536, 100000])
def test_dropin_select_sees_every_unread_record(rt: Any, n: int) -> None:
    """What select()-driven code written for the stdlib relies on: after any recv, the
    plaintext not yet returned is either counted by pending() or still (partly) in the
    kernel, so select() reports the socket readable; never whole records parked in a buffer
    nobody sees. recv(n) may return several records now, but only records it can decrypt
    into its n bytes are taken from the kernel."""
    c, s = tls_pair("dropin")
    try:
        data = os.urandom(150000)
        Runner(lambda: s.write(data)).join(5)  # 10 records, all in the kernel before c reads
        c.obj.setblocking(False)
        wait_until_readable(c.obj)
        got = bytearray()
        import select

        while len(got) < len(data):
            if not c.obj.pending():
                r, _, _ = select.select([c.obj], [], [], 5)
                assert r, f"{len(data) - len(got)} bytes unread, none visible to select()"
            try:
                b = c.obj.recv(n)
            except ssl.SSLWantReadError:
                continue  # the rest of a record is still on its way
            assert 0 < len(b) <= n
            got += b
        assert bytes(got) == data
    finally:
        c.close()
        s.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("size", [3000, 100000])
def test_dropin_select_sees_close_notify_behind_data(rt: Any, size: int) -> None:
    """The peer sends data and then close_notify (unwrap), all of it in the kernel before
    the select()-driven reader reads (ftplib's TLS data connection, asyncore-style): the
    recv that returns the last data must not swallow the close_notify, or select() never
    reports the EOF and the peer's unwrap() waits for ever."""
    c, s = tls_pair("dropin")
    try:
        data = os.urandom(size)
        s.write(data)
        r = Runner(lambda: s.obj.unwrap(), "peer-unwrap")  # sends close_notify, waits for ours
        wait_parked(s.fd, "r")
        c.obj.setblocking(False)
        got = bytearray()
        import select

        while True:
            if not c.obj.pending():
                assert select.select([c.obj], [], [], 5)[0], (
                    f"{len(got)} of {size} bytes read, then nothing visible to select()"
                )
            try:
                b = c.obj.recv(65536)
            except ssl.SSLWantReadError:
                continue
            if not b:
                break
            got += b
        assert bytes(got) == data
        c.obj.setblocking(True)
        c.obj.unwrap()
        r.join()
    finally:
        c.close()
        s.close()


@pytest.mark.timeout(20)
def test_dropin_close_ends_with_fin_when_data_arrives_during_close(
    rt: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TLS client closing right after its handshake has the server's session tickets
    (or any data) coming in; close(2) with unread data makes the kernel answer RST, and the
    server's next read fails with ECONNRESET (test_ssl's ThreadedEchoServer then stops).
    The drop-in drains the socket right before close(2): here the data arrives while close
    is unregistering the descriptor, where another thread can run."""
    from threadpoll._poll import fd_poll_runtime

    with stdsocket.create_server(("127.0.0.1", 0)) as ln:

        def serve() -> ssl.SSLSocket:
            raw, _ = ln.accept()
            return server_ctx().wrap_socket(raw, server_side=True)

        r = Runner(serve)
        raw = ts.socket()
        raw.connect(ln.getsockname())
        c = client_ctx().wrap_socket(raw, server_hostname="localhost")
        s = r.join()
        assert type(s) is ssl.SSLSocket  # the peer is the plain stdlib's
        n = c.fileno()
        unregister = fd_poll_runtime.PollHandle.close

        def late_data(self: Any) -> None:
            s.sendall(b"late")
            import select

            assert select.select([n], [], [], 5)[0]  # in c's receive queue now
            unregister(self)

        monkeypatch.setattr(fd_poll_runtime.PollHandle, "close", late_data)
        c.close()
        monkeypatch.undo()
        # The kernel's word, under TLS (which on Python 3.10-3.12 reports a reset as EOF).
        with s, stdsocket.socket(fileno=os.dup(s.fileno())) as plain:
            assert plain.recv(100) == b""  # the peer's FIN, not an RST


def wait_until_readable(sock: Any) -> None:
    import select

    r, _, _ = select.select([sock], [], [], 5)
    assert r


@pytest.mark.timeout(20)
def test_dropin_makefile_and_sendfile(rt: Any, tmp_path: Path) -> None:
    c, s = tls_pair("dropin")
    try:
        p = tmp_path / "f"
        p.write_bytes(b"line one\nline two\n")
        with open(p, "rb") as f:
            assert c.obj.sendfile(f) == 18
        rf = s.obj.makefile("rb")
        assert rf.readline() == b"line one\n"
        assert rf.readline() == b"line two\n"
        rf.close()
    finally:
        c.close()
        s.close()


# --- post-handshake messages, close_notify, unwrap ---------------------------------------------


@pytest.mark.timeout(30)
def test_post_handshake_auth_answered_by_a_read_while_another_thread_writes(front: str) -> None:
    """TLS 1.3 post-handshake messages: the server asks for the client's certificate after
    the handshake; the client's *read* must send the answer (a read that writes), while
    another client thread writes. (A KeyUpdate with update_requested is the other
    read-makes-output case: test_tls13_key_update, with openssl as the peer.)"""
    sctx = server_ctx()
    sctx.verify_mode = ssl.CERT_OPTIONAL
    sctx.post_handshake_auth = True
    sctx.load_verify_locations(CA)
    cctx = client_ctx()
    cctx.post_handshake_auth = True
    cctx.load_cert_chain(CLIENT)
    c, s = tls_pair(front, sctx, cctx)
    stop = threading.Event()

    def peer_cert() -> Any:
        return s.obj.getpeercert() if front != "tls" else s.obj.peer_certificate()

    try:
        assert not peer_cert()
        got = bytearray()

        def client_reader() -> None:
            while not got.endswith(b"END"):
                b = c.read(65536)
                assert b
                got.extend(b)

        def client_writer() -> None:
            while not stop.is_set():
                c.write(b"c" * 1000)

        r = Runner(client_reader)
        w = Runner(client_writer)
        s.obj.verify_client_post_handshake()
        s.write(b"hello" * 1000 + b"END")
        # The server reads; the client's Certificate/Finished come in among the data.
        seen = 0
        while True:
            seen += len(s.read(65536))
            cert = peer_cert()
            if cert:
                break
        assert dict(x[0] for x in cert["subject"])["commonName"] == "threadpoll test client"
        stop.set()
        r.join()
        assert bytes(got) == b"hello" * 1000 + b"END"
        # Let the writer finish its last write while the server drains.
        while w.thread.is_alive():
            s.obj.settimeout(0.2) if front != "tls" else s.set_read_deadline(time.monotonic() + 0.2)
            try:
                s.read(65536)
            except (stdsocket.timeout, ssl.SSLError):
                pass
        w.join()
    finally:
        stop.set()
        c.close()
        s.close()


class OpenSSLClient:
    """``openssl s_client`` as the peer: the one TLS 1.3 implementation at hand that can send
    a KeyUpdate when told to (``ssl`` has no call for it). Its stdin lines become TLS data,
    except the command letters: a line ``k`` sends a KeyUpdate, ``K`` one with
    update_requested (man openssl-s_client, CONNECTED COMMANDS). What it reads from the
    connection goes to its stdout; it prints ``KEYUPDATE`` on stderr when it obeys a letter."""

    def __init__(self, port: int) -> None:
        import subprocess

        assert OPENSSL is not None
        self.proc = subprocess.Popen(
            [
                OPENSSL,
                "s_client",
                "-connect",
                f"127.0.0.1:{port}",
                "-tls1_3",
                "-servername",
                "localhost",
                "-CAfile",
                CA,
                "-verify_return_error",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out = bytearray()
        self.err = bytearray()
        self.cond = threading.Condition()
        self.pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self.pumps:
            t.start()

    def _pump(self, f: Any, into: bytearray) -> None:
        while True:
            b = f.read1(65536)
            with self.cond:
                into.extend(b)
                self.cond.notify_all()
            if not b:
                return

    def line(self, text: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + b"\n")
        self.proc.stdin.flush()

    def wait_for(self, what: bytes, stream: str = "out", timeout: float = 10.0) -> None:
        buf = self.out if stream == "out" else self.err
        with self.cond:
            ok = self.cond.wait_for(lambda: what in buf or self.proc.poll() is not None, timeout)
            assert ok and what in buf, (
                f"{what!r} not on s_client's {stream}; stdout={bytes(self.out)!r} "
                f"stderr={bytes(self.err)!r}"
            )

    def close(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()  # EOF on stdin: s_client closes and exits
            except OSError:
                pass
        try:
            self.proc.wait(10)
        except Exception:  # noqa: BLE001 - a stuck peer must not outlive the test
            self.proc.kill()
            self.proc.wait()
        for t in self.pumps:
            t.join(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def key_updates(log: list[tuple[str, Any]], direction: str) -> int:
    return sum(1 for d, t in log if d == direction and t == ssl._TLSMessageType.KEY_UPDATE)  # type: ignore[attr-defined]


@pytest.mark.skipif(KEY_UPDATE_SKIP is not None, reason=str(KEY_UPDATE_SKIP))
@pytest.mark.timeout(60)
@pytest.mark.parametrize("letter", [b"k", b"K"], ids=["peer-update", "update-requested"])
def test_tls13_key_update(front: str, letter: bytes) -> None:
    """TLS 1.3 key updates with openssl s_client as the peer. ``k``: the peer rotates its
    sending keys; our reads go on across the KeyUpdate. ``K``: the peer also asks us to
    rotate ours: the read that meets the KeyUpdate makes our own, which must reach the wire
    before the records of our next write (the peer could not read them otherwise). Our
    reader is parked when the KeyUpdate arrives."""
    log: list[tuple[str, Any]] = []
    sctx = server_ctx()

    def on_message(
        conn: Any, direction: str, version: Any, content_type: Any, msg_type: Any, data: Any
    ) -> None:
        if content_type == ssl._TLSContentType.HANDSHAKE:  # type: ignore[attr-defined]
            log.append((direction, msg_type))

    sctx._msg_callback = on_message  # type: ignore[attr-defined]
    if front == "tls":
        ln: Any = net.listen("tcp", "127.0.0.1:0")
        port = int(ln.addr[1])
    else:
        ln = ts.socket()
        ln.bind(("127.0.0.1", 0))
        ln.listen(1)
        port = ln.getsockname()[1]
    peer = OpenSSLClient(port)
    s: End | None = None
    try:
        raw = ln.accept() if front == "tls" else ln.accept()[0]
        s = wrap(raw, front, sctx, True, None)
        peer.line(b"before")
        assert drain(s, 7) == b"before\n"
        assert key_updates(log, "read") == 0
        # Our reader parks for what comes after the KeyUpdate.
        r = Runner(lambda: drain(s, 6), "reader")  # type: ignore[union-attr]
        wait_parked(s.fd, "r")
        peer.line(letter)
        peer.wait_for(b"KEYUPDATE", "err")
        peer.line(b"after")
        assert r.join() == b"after\n"
        assert key_updates(log, "read") == 1
        # Our answer (K) goes out before the data of this write, so the peer reads it.
        s.write(b"reply one\n")
        peer.wait_for(b"reply one\n")
        assert key_updates(log, "write") == (1 if letter == b"K" else 0)
        # And both ways still work on the new keys, many records each way.
        big = b"".join(b"%06d\n" % i for i in range(20000))  # 140 kB, 9 records
        w = Runner(lambda: s.write(big), "writer")  # type: ignore[union-attr]
        peer.wait_for(big[-7:])
        w.join()
        assert big in peer.out
        peer.line(b"x" * 3000)
        assert drain(s, 3001) == b"x" * 3000 + b"\n"
        assert key_updates(log, "read") == 1
    finally:
        peer.close()
        if s is not None:
            s.close()
        ln.close()


@pytest.mark.timeout(20)
def test_close_notify_reads_as_eof(pair: tuple[End, End]) -> None:
    c, s = pair
    if c.front == "tls":
        c.obj.close_write()
        assert s.read(10) == b""
        s.write(b"still open")  # the other direction still works
        assert c.read(100) == b"still open"
    else:
        r = Runner(lambda: s.obj.unwrap())
        plain_c = c.obj.unwrap()
        plain_s = r.join()
        assert plain_c is c.obj and plain_s is s.obj
        # Cleartext after the TLS session ended, both ways.
        plain_c.sendall(b"clear")
        assert plain_s.recv(100) == b"clear"
        plain_s.sendall(b"text")
        assert plain_c.recv(100) == b"text"


@pytest.mark.timeout(20)
def test_peer_closes_without_close_notify(front: str) -> None:
    c, peer, _ = raw_peer_pair(front)
    try:
        peer.sock.sendall(peer.seal(b"last words"))
        peer.sock.close()
        assert c.read(100) == b"last words"
        if front == "tls" and not IGNORES_UNEXPECTED_EOF:
            with pytest.raises(ssl.SSLEOFError):
                c.read(100)
        else:
            assert c.read(100) == b""  # suppress_ragged_eofs, as the stdlib
    finally:
        c.close()


@pytest.mark.timeout(20)
def test_dropin_ragged_eof_raises_when_not_suppressed(rt: Any) -> None:
    x, peer_sock = stdsocket.socketpair()
    c = client_ctx().wrap_socket(
        ts.wrap(x),
        server_hostname="localhost",
        do_handshake_on_connect=False,
        suppress_ragged_eofs=False,
    )
    try:
        peer = RawTLSPeer(peer_sock)
        r = Runner(c.do_handshake)
        peer.handshake()
        r.join()
        peer.sock.close()
        if IGNORES_UNEXPECTED_EOF:
            assert c.recv(100) == b""  # as the stdlib's, with this option
        else:
            with pytest.raises(ssl.SSLEOFError):
                c.recv(100)
    finally:
        c.close()


class _CountingBIO:
    """Stands in for the incoming MemoryBIO where only the framing is followed."""

    pending = 0
    eof = False

    def write(self, data: Any) -> None:
        pass

    def write_eof(self) -> None:
        pass


@pytest.mark.timeout(60)
def test_framing_follows_record_ends_over_any_cut() -> None:
    """_Engine._feed (its shortcuts for a body's rest, a bare header, a body and the next
    header, and _account's loop for the rest) finds the end of the last whole record and
    keeps the last header after every read, whatever the cuts: the framed reads' own, or
    any size (many records at once, as threadpoll.tls reads)."""
    from threadpoll._tlsengine import _HEADER, _Engine

    rng = random.Random(13)
    for _ in range(2000):
        stream = bytearray()
        ends = []
        for _ in range(rng.randrange(1, 8)):
            size = rng.choice([0, 1, 5, 19, 1024, 16401, rng.randrange(17000)])
            stream += bytes([23, 3, 3, size >> 8, size & 255]) + bytes(size)
            ends.append(len(stream))
        e = _Engine.__new__(_Engine)
        e.rbuf = memoryview(bytearray(len(stream)))
        e.hdr, e.hdr_got, e.body_left, e.fed, e.last_end = bytearray(_HEADER), 0, 0, 0, 0
        e.incoming, e.lock = _CountingBIO(), threading.RLock()  # type: ignore[assignment]
        pos = 0
        while pos < len(stream):
            if rng.random() < 0.3:
                want = rng.randrange(1, 40000)
            elif e.hdr_got or not e.body_left:
                want = _HEADER - e.hdr_got
            else:
                want = e.body_left + (_HEADER if rng.random() < 0.7 else 0)
            n = min(want, len(stream) - pos)
            e.rbuf[:n] = stream[pos : pos + n]
            e._feed(n)
            pos += n
            assert e.fed == pos
            assert e.last_end == max([end for end in ends if end <= pos], default=0)
            # The header kept is the last one read whole (what a framed read looks at).
            starts = [0, *ends[:-1]]
            last = max([s for s in starts if s + _HEADER <= pos], default=None)
            if last is not None and not e.hdr_got:
                assert e.hdr == stream[last : last + _HEADER]


def _ragged_outcome(wrap_sock: Callable[[Any], Any], case: str, suppress: bool) -> str:
    """What a client SSLSocket over wrap_sock(a socket) gets when its peer closes without
    close_notify: ``case`` "handshake" (right after reading the ClientHello), "clean" (after
    a whole record), "mid-header" or "mid-body" (inside a record). The error's class and
    code, or what recv returned."""
    x, peer_sock = stdsocket.socketpair()
    c = client_ctx().wrap_socket(
        wrap_sock(x),
        server_hostname="localhost",
        do_handshake_on_connect=False,
        suppress_ragged_eofs=suppress,
    )
    try:
        if case == "handshake":
            r = Runner(c.do_handshake)
            assert peer_sock.recv(65536)  # the ClientHello
            peer_sock.close()
            e = r.join_exc()
            return "no error" if e is None else f"{type(e).__name__} {e.args[0]}"
        peer = RawTLSPeer(peer_sock)
        r = Runner(c.do_handshake)
        peer.handshake()
        r.join()
        record = peer.seal(b"x" * 40)
        peer.sock.sendall(
            {"clean": record, "mid-header": record[:3], "mid-body": record[:20]}[case]
        )
        peer.sock.close()
        try:
            if case == "clean":
                assert c.recv(100) == b"x" * 40
            return f"returned {c.recv(100)!r}"
        except OSError as e:
            return f"{type(e).__name__} {e.args[0]}"
    finally:
        c.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("suppress", [True, False])
@pytest.mark.parametrize("case", ["handshake", "clean", "mid-header", "mid-body"])
def test_dropin_unexpected_eof_is_the_stdlibs(rt: Any, case: str, suppress: bool) -> None:
    """A peer that closes without close_notify: the drop-in raises (or, suppressed, returns)
    what the stdlib's own SSLSocket does on this Python and OpenSSL: SSLEOFError from 3.10
    with OpenSSL 3 (UNEXPECTED_EOF_WHILE_READING), b"" where the context ignores it (3.9
    sets OP_IGNORE_UNEXPECTED_EOF), SSLZeroReturnError for 3.9's handshake."""
    expected = _ragged_outcome(lambda s: s, case, suppress)
    assert _ragged_outcome(ts.wrap, case, suppress) == expected


# --- certificate errors are the stdlib's -----------------------------------------------------


def stdlib_handshake_error(cctx: ssl.SSLContext, hostname: str, cert: str) -> BaseException:
    """The error the plain stdlib (no threadpoll) raises for the same handshake."""
    x, y = stdsocket.socketpair()

    def srv() -> None:
        try:
            server_ctx(cert).wrap_socket(y, server_side=True).close()
        except (OSError, ssl.SSLError):
            y.close()

    t = threading.Thread(target=srv)
    t.start()
    try:
        ssl.SSLSocket._create(x, server_hostname=hostname, context=cctx).close()  # type: ignore[attr-defined]
    except BaseException as e:  # noqa: BLE001
        return e
    finally:
        x.close()
        t.join()
    raise AssertionError("the stdlib handshake succeeded")


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "case",
    ["unknown-ca", "hostname-mismatch"],
)
def test_certificate_errors_are_the_stdlibs(front: str, case: str) -> None:
    if case == "unknown-ca":
        cert, hostname = WRONG_CA_SERVER, "localhost"
    else:
        cert, hostname = SERVER, "example.com"
    expected = stdlib_handshake_error(client_ctx(), hostname, cert)
    a, b = raw_pair(front)
    srv = Runner(lambda: wrap(b, front, server_ctx(cert), True, None))
    try:
        with pytest.raises(ssl.SSLCertVerificationError) as ei:
            c = wrap(a, front, client_ctx(), False, hostname)
            c.close()
        e = ei.value
        assert type(e) is type(expected)
        assert (e.verify_code, e.verify_message, e.reason, e.library) == (
            expected.verify_code,  # type: ignore[attr-defined]
            expected.verify_message,  # type: ignore[attr-defined]
            expected.reason,  # type: ignore[attr-defined]
            expected.library,  # type: ignore[attr-defined]
        )
        assert str(e) == str(expected)
        assert isinstance(srv.join_exc(), (ssl.SSLError, OSError))
    finally:
        a.close()
        b.close()


# --- Go-style API ----------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_tls_dial_listen_and_addresses(rt: Any) -> None:
    with tls.listen("tcp", "127.0.0.1:0", server_ctx()) as ln:

        def accept() -> tls.TLSConn:
            s = ln.accept()
            s.handshake()
            return s

        r = Runner(accept)
        with tls.dial("tcp", ln.addr, client_ctx(), timeout=5) as c:
            with r.join() as s:
                c.write(b"hi")
                assert s.read(10) == b"hi"
                assert c.remote_addr == ln.addr == s.local_addr
                assert c.local_addr == s.remote_addr
                assert c.peer_certificate()["subject"] == ((("commonName", "localhost"),),)
                assert s.peer_certificate() is None
                assert isinstance(c.peer_certificate(binary_form=True), bytes)
                assert c.read(0) == b""
                buf = bytearray(10)
                s.write(b"into")
                assert c.read_into(buf) == 4 and buf[:4] == b"into"


def test_tls_bad_arguments(rt: Any) -> None:
    with pytest.raises(TypeError):
        tls.client(object(), client_ctx())  # type: ignore[arg-type]
    a, b = raw_pair("tls")
    try:
        with pytest.raises(TypeError):
            tls.client(a, object())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="check_hostname requires server_hostname"):
            tls.client(a, client_ctx())
        c = tls.client(a, client_ctx(), server_hostname="localhost")
        with pytest.raises(TypeError):
            c.read("x")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            c.read(-1)
        with pytest.raises(TypeError):
            c.write("str")  # type: ignore[arg-type]
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(20)
def test_close_wakes_read_even_with_a_blocking_fd(pair: tuple[End, End]) -> None:
    """Whoever shares the open file description may clear O_NONBLOCK: TLS reads from the wire
    with MSG_DONTWAIT and parks in the runtime, so close() still wakes it."""
    if not hasattr(stdsocket, "MSG_DONTWAIT"):
        pytest.skip("no MSG_DONTWAIT here")
    c, s = pair
    os.set_blocking(c.fileno(), True)
    r = Runner(lambda: c.read(100))
    wait_parked(c.fd, "r")
    s.write(b"x")
    assert r.join() == b"x"
    r = Runner(lambda: c.read(100))
    wait_parked(c.fd, "r")
    c.close()
    assert isinstance(r.join_exc(), NetClosingError)


@pytest.mark.timeout(20)
def test_dropin_under_patch(rt: Any) -> None:
    with ts.patched():
        ln = stdsocket.create_server(("127.0.0.1", 0))
        with ln:

            def serve() -> bytes:
                raw, _ = ln.accept()
                with server_ctx().wrap_socket(raw, server_side=True) as s:
                    data = s.recv(100)
                    s.sendall(data.upper())
                    return bytes(data)

            r = Runner(serve)
            raw = stdsocket.create_connection(ln.getsockname())
            with client_ctx().wrap_socket(raw, server_hostname="localhost") as c:
                assert isinstance(c, ts.socket) and isinstance(c, ssl.SSLSocket)
                c.sendall(b"patched")
                f = c.makefile("rb")
                assert f.read(7) == b"PATCHED"
                f.close()
            assert r.join() == b"patched"


@pytest.mark.timeout(30)
def test_dropin_nonblocking_send_retry_contract(rt: Any) -> None:
    """Non-blocking send on a full buffer raises SSLWantWriteError, as OpenSSL on a socket
    does; retried with the same data it returns its length once its records are out, and
    the peer receives every byte exactly once."""
    c, s = tls_pair("dropin")
    try:
        c.obj.setblocking(False)
        chunk = os.urandom(65536)
        sent = bytearray()
        while True:
            try:
                n = c.obj.send(chunk)
            except ssl.SSLWantWriteError:
                break
            assert n == len(chunk)
            sent += chunk
        got = bytearray()
        reader = Runner(lambda: got.extend(drain(s, len(sent) + len(chunk))))
        import select

        while True:
            select.select([], [c.obj], [], 5)
            try:
                assert c.obj.send(chunk) == len(chunk)  # the retry, same data
                break
            except ssl.SSLWantWriteError:
                continue
        sent += chunk
        reader.join(20)
        assert bytes(got) == bytes(sent)
    finally:
        c.close()
        s.close()


def drain(end: End, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        b = end.read(n - len(out))
        assert b
        out += b
    return bytes(out)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("first", ["threadpoll._sslsocket", "threadpoll.tls", "threadpoll.socket"])
def test_any_tls_module_imports_first(first: str) -> None:
    """Whichever module a program imports first, the ssl hook is installed (no circular
    import error)."""
    # The hook is threadpoll.socket's (a TLS socket is one of its sockets): once it is
    # imported, whichever came first, wrap_socket builds threadpoll's SSLSocket.
    code = (
        f"import {first}, ssl, sys; import threadpoll.socket; "
        "m = sys.modules['threadpoll._sslsocket']; "
        "assert ssl.SSLContext.sslsocket_class is m.SSLSocket"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert r.returncode == 0, r.stderr


def test_nonblocking_read_reads_the_pending_write_once() -> None:
    """A non-blocking read that finds nothing asks the caller to wait for writability while a
    write's sealed records are still unsent (``_Engine.pending``). That field belongs to the
    writer (out_lock); the reader, which does not hold out_lock, must read it once: a writer
    that finishes between two reads sets it to None (a race a no-GIL build runs into).
    Here a stand-in engine hands out the unsent records on the first read of the field and
    None after, as such a writer would."""
    from threadpoll._tlsengine import _Engine

    class _WriterFinishes(_Engine):
        __slots__ = ("reads",)

        @property  # type: ignore[override]
        def pending(self) -> memoryview | None:
            self.reads += 1
            return memoryview(b"sealed") if self.reads == 1 else None

        @pending.setter
        def pending(self, value: memoryview | None) -> None:
            self.reads = 0

    class _Obj:
        def read(self, n: int) -> bytes:
            raise ssl.SSLWantReadError("The operation did not complete (read)")

    class _Out:
        pending = 0

    class _Transport:
        nonblocking = True

    eng = _WriterFinishes(_Obj(), ssl.MemoryBIO(), _Out(), framed=False)  # type: ignore[arg-type]
    eng.reads = 0
    with pytest.raises(ssl.SSLWantWriteError):
        eng._read_locked(_Transport(), 16, None, [])  # type: ignore[arg-type]
    assert eng.reads == 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize("call", ["recv", "recv_into"])
def test_two_readers_after_unwrap_never_get_the_same_leftover(
    rt: Any, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    """Cleartext the peer sent right behind its close_notify, read with it by the memory-BIO
    route's unwrap, is handed out by the next reads; two threads reading at once must get
    different bytes, as from a kernel socket. The leftover is taken under a lock: with a
    read and then a write of it, both threads could take the same bytes. A stand-in for the
    attribute holds each thread at its second read of it (the first is the cheap check)
    until the other thread gets there too or a second has passed: unfixed, both get there."""
    monkeypatch.setattr(_sslsocket, "_BIO_ONLY", True)
    c, peer, _ = raw_peer_pair("dropin-bio")
    try:
        with contextlib.suppress(ssl.SSLWantReadError):
            peer.obj.unwrap()  # seals our close_notify; would then wait for the client's
        peer.sock.sendall(peer.out.read() + b"clear")
        plain = c.obj.unwrap()
        assert plain._leftover == b"clear"  # the 5 bytes read as the next record's header

        slot: dict[str, bytes] = {"v": plain._leftover}
        reads: dict[int, int] = {}
        second_read = Meeting()

        def get(self: Any) -> bytes:
            me = threading.get_ident()
            reads[me] = reads.get(me, 0) + 1
            if reads[me] == 2:
                second_read.arrive()
            return slot["v"]

        def put(self: Any, value: bytes) -> None:
            slot["v"] = value

        monkeypatch.setattr(TPSSLSocket, "_leftover", property(get, put))

        def read_one() -> bytes:
            if call == "recv":
                return plain.recv(1)  # type: ignore[no-any-return]
            buf = bytearray(1)
            assert plain.recv_into(buf, 1) == 1
            return bytes(buf)

        assert sorted(run_all([read_one, read_one], timeout=10.0)) == [b"c", b"l"]
        assert not second_read.met.is_set()
        assert slot["v"] == b"ear"
    finally:
        c.close()
        peer.sock.close()
