"""Tests for threadpoll.net: dial, listen, listen_packet, Conn, Listener, PacketConn.

Every behavioural test takes ``rt`` and so runs on every backend. Blocked threads are observed
through their pollDesc (support.wait_parked), never by sleeping.
"""

from __future__ import annotations

import errno
import gc
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from support import Runner, wait_parked, wait_until

from threadpoll import net
from threadpoll._poll import fd_unix
from threadpoll.errors import DeadlineExceededError, NetClosingError
from threadpoll.net import Conn, Listener, PacketConn, dial, listen, listen_packet

Closer = Callable[[Any], Any]


@pytest.fixture
def closer() -> Iterator[Closer]:
    """Register things to close at teardown (before the leak check looks)."""
    things: list[Any] = []

    def add(x: Any) -> Any:
        things.append(x)
        return x

    yield add
    for x in reversed(things):
        x.close()


@pytest.fixture
def sockdir(tmp_path: Path) -> Iterator[Path]:
    """A directory for unix sockets whose paths fit in sun_path (tmp_path may be too long)."""
    if len(str(tmp_path)) <= 60:
        yield tmp_path
        return
    d = tempfile.mkdtemp(prefix="tpnet-")
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")


def _pair(kind: str, closer: Closer, sockdir: Path) -> tuple[Conn, Conn]:
    """A connected (client, server) pair over TCP/IPv4 or a unix stream socket."""
    if kind == "tcp":
        ln = listen("tcp4", "127.0.0.1:0")
        target: Any = ln.addr
    else:
        target = str(sockdir / "pair.sock")
        ln = listen("unix", target)
    with ln:
        c = closer(dial(kind, target, timeout=5))
        s = closer(ln.accept())
    return c, s


def _read_all(c: Conn) -> bytes:
    chunks = []
    while True:
        b = c.read(65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _echo(c: Conn) -> None:
    """Echo until EOF, then half-close."""
    while True:
        b = c.read(65536)
        if not b:
            c.close_write()
            return
        c.write(b)


def _round_trip(client: Conn, server: Conn) -> None:
    payload = os.urandom(200_000)
    echo = Runner(lambda: _echo(server), name="echo")
    writer = Runner(lambda: (client.write(payload), client.close_write()), name="writer")
    assert _read_all(client) == payload
    assert writer.join()[0] == len(payload)
    echo.join()


def _refused_port() -> tuple[socket.socket, int]:
    """A TCP port that refuses connections: bound, never listening (kept reserved)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


# --- round trips on every network -----------------------------------------------------------------


@pytest.mark.timeout(30)
def test_tcp4_echo_round_trip(rt: Any, closer: Closer) -> None:
    ln = closer(listen("tcp4", "127.0.0.1:0"))
    host, port = ln.addr
    assert host == "127.0.0.1" and port > 0
    c = closer(dial("tcp", f"127.0.0.1:{port}"))
    s = closer(ln.accept())
    assert c.remote_addr == ("127.0.0.1", port)
    assert s.local_addr == ("127.0.0.1", port)
    assert s.remote_addr == c.local_addr
    _round_trip(c, s)


@needs_ipv6
@pytest.mark.timeout(30)
def test_tcp6_echo_round_trip(rt: Any, closer: Closer) -> None:
    ln = closer(listen("tcp6", "[::1]:0"))
    assert len(ln.addr) == 4 and ln.addr[0] == "::1"
    port = ln.addr[1]
    c = closer(dial("tcp", f"[::1]:{port}"))
    s = closer(ln.accept())
    assert c.remote_addr[:2] == ("::1", port) and len(c.remote_addr) == 4
    assert s.remote_addr == c.local_addr
    _round_trip(c, s)
    # The listener's own address (a 4-tuple) dials too.
    c2 = closer(dial("tcp6", ln.addr))
    closer(ln.accept())
    assert c2.remote_addr == ln.addr


@pytest.mark.timeout(30)
def test_unix_echo_round_trip_and_socket_file_removed(
    rt: Any, closer: Closer, sockdir: Path
) -> None:
    path = str(sockdir / "echo.sock")
    ln = listen("unix", path)
    try:
        assert ln.addr == path
        assert os.path.exists(path)
        c = closer(dial("unix", path))
        s = closer(ln.accept())
        assert c.remote_addr == path
        assert s.local_addr == path
        _round_trip(c, s)
    finally:
        ln.close()
    assert not os.path.exists(path)
    ln.close()  # idempotent


@pytest.mark.timeout(10)
def test_unix_listener_keeps_a_file_it_did_not_create(rt: Any, sockdir: Path) -> None:
    """Only the socket file the listener made is removed: a file put in its place stays."""
    path = sockdir / "replaced.sock"
    ln = listen("unix", str(path))
    path.unlink()
    path.write_text("someone else's")
    ln.close()
    assert path.read_text() == "someone else's"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux's")
@pytest.mark.timeout(10)
def test_unix_abstract_namespace(rt: Any, closer: Closer) -> None:
    name = f"@threadpoll-test-{uuid.uuid4().hex}"
    ln = closer(listen("unix", name))
    assert ln.addr == b"\0" + name[1:].encode()
    c = closer(dial("unix", name))
    s = closer(ln.accept())
    c.write(b"abstract")
    assert s.read(100) == b"abstract"


@pytest.mark.timeout(10)
def test_unixgram_round_trip(rt: Any, closer: Closer, sockdir: Path) -> None:
    p1, p2 = str(sockdir / "a.sock"), str(sockdir / "b.sock")
    server = closer(listen_packet("unixgram", p1))
    client = closer(listen_packet("unixgram", p2))
    assert server.local_addr == p1
    assert client.write_to(b"ping", p1) == 4
    assert server.read_from(100) == (b"ping", p2)
    assert server.write_to(b"pong", p2) == 4
    assert client.read_from(100) == (b"pong", p1)
    # A dialled unixgram Conn.
    c = closer(dial("unixgram", p1))
    assert c.remote_addr == p1
    assert c.write(b"dialled") == 7
    data, _ = server.read_from(100)
    assert data == b"dialled"


@pytest.mark.timeout(10)
def test_udp_round_trip(rt: Any, closer: Closer) -> None:
    server = closer(listen_packet("udp4", "127.0.0.1:0"))
    host, port = server.local_addr
    c = closer(dial("udp", f"127.0.0.1:{port}"))
    assert c.remote_addr == ("127.0.0.1", port)
    assert c.write(b"hello") == 5
    data, addr = server.read_from(100)
    assert (data, addr) == (b"hello", c.local_addr)
    assert server.write_to(b"world", addr) == 5
    assert c.read(100) == b"world"
    # An empty datagram is not EOF, and read_from has no zero-length shortcut (Go).
    assert server.write_to(b"", addr) == 0
    assert c.read(100) == b""
    # "host:port" strings work for write_to too.
    assert server.write_to(b"str", f"127.0.0.1:{addr[1]}") == 3
    assert c.read(100) == b"str"


@pytest.mark.skipif(not socket.has_dualstack_ipv6(), reason="no dual-stack IPv6")
@pytest.mark.timeout(10)
def test_udp_wildcard_listen_is_dual_stack(rt: Any, closer: Closer) -> None:
    """As Go: "udp" on ":0" listens on [::] with IPV6_V6ONLY off and reaches IPv4 peers."""
    server = closer(listen_packet("udp", ":0"))
    assert server.local_addr[0] == "::" and len(server.local_addr) == 4
    peer = closer(listen_packet("udp4", "127.0.0.1:0"))
    assert server.write_to(b"to v4", peer.local_addr) == 5
    data, addr = peer.read_from(100)
    assert data == b"to v4" and addr[1] == server.local_addr[1]
    assert peer.write_to(b"back", ("127.0.0.1", server.local_addr[1])) == 4
    data, addr = server.read_from(100)
    assert data == b"back" and addr[0] == "::ffff:127.0.0.1"


# --- address forms and resolution -----------------------------------------------------------------

ADDRESS_FORMS: list[tuple[str, Callable[[int], Any]]] = [
    ("host:port", lambda p: f"127.0.0.1:{p}"),
    ("tuple", lambda p: ("127.0.0.1", p)),
    ("tuple with str port", lambda p: ("127.0.0.1", str(p))),
    ("name", lambda p: f"localhost:{p}"),
    ("empty host", lambda p: f":{p}"),
    ("empty host tuple", lambda p: ("", p)),
]


@pytest.mark.parametrize("with_timeout", [False, True], ids=["no-timeout", "timeout"])
@pytest.mark.parametrize(("form", "make"), ADDRESS_FORMS, ids=[f[0] for f in ADDRESS_FORMS])
@pytest.mark.timeout(10)
def test_dial_address_forms(
    rt: Any, closer: Closer, form: str, make: Callable[[int], Any], with_timeout: bool
) -> None:
    # Listening on every IPv4 address: an empty host dials the local system, which may try
    # ::1 first (refused here) and then 127.0.0.1, as Go's dialSerial does.
    ln = closer(listen("tcp4", ":0"))
    assert ln.addr[0] == "0.0.0.0"
    port = ln.addr[1]
    c = closer(dial("tcp", make(port), timeout=5 if with_timeout else None))
    s = closer(ln.accept())
    assert c.remote_addr[1] == port
    c.write(b"x")
    assert s.read(1) == b"x"


SPLIT_OK = [
    # Port of Go's TestSplitHostPort (net/ip_test.go), the cases that parse.
    ("localhost:http", "localhost", "http"),
    ("localhost:80", "localhost", "80"),
    ("golang.org:http", "golang.org", "http"),
    ("127.0.0.1:80", "127.0.0.1", "80"),
    ("[::1]:80", "::1", "80"),
    ("[fe80::1%lo0]:80", "fe80::1%lo0", "80"),
    ("[localhost%lo0]:80", "localhost%lo0", "80"),
    ("localhost%lo0:80", "localhost%lo0", "80"),
    (":80", "", "80"),
    ("[]:80", "", "80"),
    ("127.0.0.1:", "127.0.0.1", ""),
    ("[::1]:", "::1", ""),
    (":", "", ""),
]

SPLIT_BAD = [
    # And the ones that do not.
    "golang.org",
    "127.0.0.1",
    "[::1]",
    "[fe80::1%lo0]",
    "[localhost%lo0]",
    "localhost%lo0",
    "::1",
    "fe80::1%lo0",
    "fe80::1%lo0:80",
    "[foo:bar]",
    "[foo:bar]baz",
    "[foo]bar:baz",
    "[foo]:[bar]:baz",
    "[foo]:[bar]baz",
    "[foo]bar[baz]:qux",
    "foo[bar]:baz",
    "foo]bar:baz",
    "[foo]:1[bar]",
    "[::1:80",
]


@pytest.mark.parametrize(("hostport", "host", "port"), SPLIT_OK)
def test_split_host_port(hostport: str, host: str, port: str) -> None:
    """Port of Go's TestSplitHostPort."""
    assert net._split_host_port(hostport) == (host, port)


@pytest.mark.parametrize("hostport", SPLIT_BAD)
def test_split_host_port_errors(hostport: str) -> None:
    """Port of Go's TestSplitHostPort (the error cases)."""
    with pytest.raises(ValueError, match="address"):
        net._split_host_port(hostport)


def test_port_forms() -> None:
    tcp = net._NETWORKS["tcp"]
    assert net._port(80, tcp) == 80
    assert net._port("443", tcp) == 443
    assert net._port("", tcp) == 0  # Go: golang.org/issue/13610
    assert net._port(65535, tcp) == 65535
    for bad in (65536, -1, "65536", "-1", "+80", "8 0", "٣"):
        with pytest.raises(ValueError):
            net._port(bad, tcp)
    for wrong in (80.0, True, None, b"80"):
        with pytest.raises(TypeError):
            net._port(wrong, tcp)
    with pytest.raises(ValueError, match="unknown port"):
        net._port("notaport", tcp)


def test_service_name_port() -> None:
    try:
        expected = socket.getservbyname("http", "tcp")
    except OSError:
        pytest.skip("no services database on this machine")
    assert net._port("http", net._NETWORKS["tcp"]) == expected


@pytest.mark.timeout(10)
def test_dial_tries_resolved_addresses_in_order(
    rt: Any, closer: Closer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Go's dialSerial: a refused first address falls through to the next one."""
    refusing, refused_port = _refused_port()
    closer(refusing)
    ln = closer(listen("tcp4", "127.0.0.1:0"))
    real = socket.getaddrinfo
    tried: list[Any] = []

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "multi.test":
            tcp = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
            return [(*tcp, ("127.0.0.1", refused_port)), (*tcp, ln.addr)]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    real_dial_one = net._dial_one

    def spy(nw: Any, family: int, sa: Any, deadline: float) -> Conn:
        tried.append(sa)
        return real_dial_one(nw, family, sa, deadline)

    monkeypatch.setattr(net, "_dial_one", spy)
    for timeout in (None, 5.0):  # inline lookup, and the resolver thread
        tried.clear()
        c = closer(dial("tcp", "multi.test:1", timeout=timeout))
        closer(ln.accept())
        assert tried == [("127.0.0.1", refused_port), ln.addr]
        assert c.remote_addr == ln.addr


@pytest.mark.timeout(10)
def test_dial_all_addresses_fail_raises_the_first_error(
    rt: Any, closer: Closer, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusing, refused_port = _refused_port()
    closer(refusing)
    real = socket.getaddrinfo

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "multi.test":
            tcp = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
            return [(*tcp, ("127.0.0.1", refused_port))] * 3
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(ConnectionRefusedError):
        dial("tcp", "multi.test:1")  # the leak check proves all three sockets were closed


@pytest.mark.parametrize("how", ["inline", "resolver thread"])
@pytest.mark.timeout(10)
def test_dial_resolution_errors_pass_through(
    rt: Any, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    real = socket.getaddrinfo

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "nxdomain.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(socket.gaierror) as info:
        dial("tcp", "nxdomain.test:80", timeout=5 if how == "resolver thread" else None)
    assert info.value.errno == socket.EAI_NONAME


@pytest.mark.parametrize("bound", ["timeout", "deadline"])
@pytest.mark.timeout(10)
def test_dial_deadline_bounds_name_resolution(
    rt: Any, monkeypatch: pytest.MonkeyPatch, bound: str
) -> None:
    """A lookup that never answers is abandoned at the deadline; its thread is named
    threadpoll-resolver-N and finishes on its own later."""
    release = threading.Event()
    entered = threading.Event()
    names: list[str] = []
    real = socket.getaddrinfo

    def slow(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.test":
            names.append(threading.current_thread().name)
            entered.set()
            release.wait(10)
            raise socket.gaierror(socket.EAI_AGAIN, "too late")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    limit = 0.2
    t0 = time.monotonic()
    try:
        with pytest.raises(DeadlineExceededError):
            if bound == "timeout":
                dial("tcp", "slow.test:80", timeout=limit)
            else:
                dial("tcp", "slow.test:80", deadline=t0 + limit)
        elapsed = time.monotonic() - t0
    finally:
        release.set()
    assert entered.is_set()
    assert names[0].startswith("threadpoll-resolver-")
    assert limit <= elapsed < limit + 2.0


@pytest.mark.timeout(10)
def test_dial_bound_covers_resolution_and_connect(
    rt: Any, closer: Closer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connect gets what the lookup left of the bound, not a fresh timeout."""
    ln = closer(listen("tcp4", "127.0.0.1:0"))
    real = socket.getaddrinfo
    lookup_done = threading.Event()

    def slowish(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slowish.test":
            lookup_done.wait(0.1)  # a lookup that takes a while (not synchronisation)
            tcp = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
            return [(*tcp, ln.addr)]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slowish)
    deadlines: list[float] = []
    real_dial_one = net._dial_one

    def spy(nw: Any, family: int, sa: Any, deadline: float) -> Conn:
        deadlines.append(deadline)
        return real_dial_one(nw, family, sa, deadline)

    monkeypatch.setattr(net, "_dial_one", spy)
    t0 = time.monotonic()
    closer(dial("tcp", "slowish.test:1", timeout=5))
    t1 = time.monotonic()
    closer(ln.accept())
    assert t1 - t0 >= 0.1
    # Fixed before the 0.1 s lookup: a timeout restarted after it would be >= t0 + 5.1.
    assert deadlines and t0 + 5 <= deadlines[0] < t0 + 5 + 0.05


@pytest.mark.timeout(10)
def test_dial_expired_deadline_opens_nothing(
    rt: Any, closer: Closer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ln = closer(listen("tcp4", "127.0.0.1:0"))

    def no_socket(*args: Any) -> Any:
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(net, "_new_socket", no_socket)
    for kwargs in (
        {"deadline": time.monotonic() - 1},
        {"deadline": -math.inf},
        {"timeout": 0},
        {"timeout": 10, "deadline": time.monotonic() - 1},
    ):
        with pytest.raises(DeadlineExceededError):
            dial("tcp", ln.addr, **kwargs)
        with pytest.raises(DeadlineExceededError):
            dial("tcp", f"localhost:{ln.addr[1]}", **kwargs)


@pytest.mark.timeout(30)
def test_dial_timeout_while_connecting(rt: Any) -> None:
    """A connect that never completes (the listener's accept queue is full, so the kernel
    drops the SYN) fails with DeadlineExceededError at the deadline."""
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    conns: list[Conn] = []
    try:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(0)
        addr = blocker.getsockname()
        limit = 0.2
        for _ in range(16):
            t0 = time.monotonic()
            try:
                conns.append(dial("tcp", addr, timeout=limit))
            except DeadlineExceededError:
                elapsed = time.monotonic() - t0
                assert limit <= elapsed < limit + 2.0
                return
        pytest.skip("the kernel completed every connection (no full accept queue)")
    finally:
        for c in conns:
            c.close()
        blocker.close()


@pytest.mark.timeout(10)
def test_dial_deadline_does_not_carry_over_to_the_conn(rt: Any, closer: Closer) -> None:
    ln = closer(listen("tcp4", "127.0.0.1:0"))
    d = time.monotonic() + 0.05
    c = closer(dial("tcp", ln.addr, deadline=d))
    s = closer(ln.accept())
    wait_until(lambda: time.monotonic() > d, what="the dial deadline to pass")
    assert c.write(b"after") == 5
    assert s.read(10) == b"after"
    s.write(b"reply")
    assert c.read(10) == b"reply"


@pytest.mark.timeout(10)
def test_connection_refused(rt: Any, closer: Closer, sockdir: Path) -> None:
    refusing, port = _refused_port()
    closer(refusing)
    with pytest.raises(ConnectionRefusedError):
        dial("tcp", ("127.0.0.1", port))
    with pytest.raises(ConnectionRefusedError):
        dial("tcp", ("127.0.0.1", port), timeout=5)
    with pytest.raises(FileNotFoundError):
        dial("unix", str(sockdir / "nobody.sock"))
    # A socket file nobody listens on.
    path = str(sockdir / "stale.sock")
    stale = closer(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    stale.bind(path)
    with pytest.raises(ConnectionRefusedError):
        dial("unix", path)


# --- bad input ------------------------------------------------------------------------------------

BAD_CALLS: list[tuple[str, Callable[[], Any], type[Exception]]] = [
    ("no port", lambda: dial("tcp", "nohostport"), ValueError),
    ("service that does not exist", lambda: dial("tcp", "127.0.0.1:notaport"), ValueError),
    ("port not a port", lambda: dial("tcp", "127.0.0.1:8o"), ValueError),
    ("port out of range", lambda: dial("tcp", "127.0.0.1:65536"), ValueError),
    ("negative port", lambda: dial("tcp", "127.0.0.1:-1"), ValueError),
    ("tuple port out of range", lambda: dial("tcp", ("127.0.0.1", 70000)), ValueError),
    ("bool port", lambda: dial("tcp", ("127.0.0.1", True)), TypeError),
    ("float port", lambda: dial("tcp", ("127.0.0.1", 80.0)), TypeError),
    ("3-tuple", lambda: dial("tcp", ("127.0.0.1", 80, 0)), ValueError),
    ("host not a str", lambda: dial("tcp", (127, 80)), TypeError),
    ("address an int", lambda: dial("tcp", 80), TypeError),  # type: ignore[arg-type]
    ("address bytes", lambda: dial("tcp", b"127.0.0.1:80"), TypeError),
    ("too many colons", lambda: dial("tcp", "::1:80"), ValueError),
    ("missing ]", lambda: dial("tcp6", "[::1:80"), ValueError),
    ("NUL in host", lambda: dial("tcp", "a\0b:80"), ValueError),
    ("unknown network", lambda: dial("sctp", "127.0.0.1:80"), ValueError),
    ("network case", lambda: dial("TCP", "127.0.0.1:80"), ValueError),
    ("network not a str", lambda: dial(6, "127.0.0.1:80"), TypeError),  # type: ignore[arg-type]
    ("unix tuple", lambda: dial("unix", ("a", 1)), TypeError),
    ("unix empty", lambda: dial("unix", ""), ValueError),
    ("unix NUL", lambda: dial("unix", "a\0b"), ValueError),
    ("unix too long", lambda: dial("unix", "/tmp/" + "x" * 200), ValueError),
    ("timeout a str", lambda: dial("tcp", "127.0.0.1:80", timeout="1"), TypeError),  # type: ignore[arg-type]
    ("timeout a bool", lambda: dial("tcp", "127.0.0.1:80", timeout=True), TypeError),
    ("timeout negative", lambda: dial("tcp", "127.0.0.1:80", timeout=-1), ValueError),
    ("timeout NaN", lambda: dial("tcp", "127.0.0.1:80", timeout=math.nan), ValueError),
    ("deadline a bool", lambda: dial("tcp", "127.0.0.1:80", deadline=True), TypeError),
    ("deadline NaN", lambda: dial("tcp", "127.0.0.1:80", deadline=math.nan), ValueError),
    ("deadline a str", lambda: dial("tcp", "127.0.0.1:80", deadline="soon"), TypeError),  # type: ignore[arg-type]
    ("listen udp", lambda: listen("udp", "127.0.0.1:0"), ValueError),
    ("listen unixgram", lambda: listen("unixgram", "/tmp/x"), ValueError),
    ("listen backlog negative", lambda: listen("tcp", "127.0.0.1:0", backlog=-1), ValueError),
    ("listen backlog float", lambda: listen("tcp", "127.0.0.1:0", backlog=1.5), TypeError),  # type: ignore[arg-type]
    ("listen no port", lambda: listen("tcp", "127.0.0.1"), ValueError),
    ("listen_packet tcp", lambda: listen_packet("tcp", "127.0.0.1:0"), ValueError),
    ("listen_packet unix", lambda: listen_packet("unix", "/tmp/x"), ValueError),
    ("listen_packet bad port", lambda: listen_packet("udp", "127.0.0.1:99999"), ValueError),
]


@pytest.mark.parametrize(("what", "call", "exc"), BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
@pytest.mark.timeout(10)
def test_bad_input_raises_before_opening_anything(
    rt: Any,
    monkeypatch: pytest.MonkeyPatch,
    what: str,
    call: Callable[[], Any],
    exc: type[Exception],
) -> None:
    def no_socket(*args: Any) -> Any:
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(net, "_new_socket", no_socket)
    with pytest.raises(exc):
        call()


@pytest.mark.timeout(10)
def test_bad_arguments_to_methods(rt: Any, closer: Closer, sockdir: Path) -> None:
    c, s = _pair("tcp", closer, sockdir)
    for bad, exc in ((-1, ValueError), ("1", TypeError), (1.0, TypeError), (True, TypeError)):
        with pytest.raises(exc):
            c.read(bad)
    with pytest.raises(TypeError):
        c.write("text")
    with pytest.raises(TypeError):
        c.read_into(b"read-only")
    for t, exc in ((math.nan, ValueError), (True, TypeError), ("1", TypeError)):
        with pytest.raises(exc):
            c.set_deadline(t)
        with pytest.raises(exc):
            c.set_read_deadline(t)
        with pytest.raises(exc):
            c.set_write_deadline(t)
    pc = closer(listen_packet("udp4", "127.0.0.1:0"))
    with pytest.raises(ValueError, match="literal IP"):
        pc.write_to(b"x", ("localhost", 80))
    with pytest.raises(ValueError):
        pc.write_to(b"x", ("::1", 80))  # IPv6 from an IPv4 socket
    with pytest.raises(TypeError):
        pc.write_to(b"x", 80)
    with pytest.raises(ValueError):
        pc.read_from(-1)
    # Still usable.
    c.write(b"ok")
    assert s.read(2) == b"ok"


# --- close ----------------------------------------------------------------------------------------


def _fill_and_block_writer(c: Conn) -> Runner:
    """Start a writer that blocks once the socket buffers are full."""
    payload = bytes(32 << 20)
    w = Runner(lambda: c.write(payload), name="writer")
    wait_parked(c, "w")
    return w


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest.mark.timeout(20)
def test_close_wakes_blocked_read_and_write(
    rt: Any, closer: Closer, sockdir: Path, kind: str
) -> None:
    c, s = _pair(kind, closer, sockdir)
    reader = Runner(lambda: c.read(100), name="reader")
    wait_parked(c, "r")
    writer = _fill_and_block_writer(c)
    c.close()
    assert isinstance(reader.join_exc(), NetClosingError)
    e = writer.join_exc()
    assert isinstance(e, NetClosingError)
    assert e.written > 0  # the buffers took some of it first
    assert c.fileno() == -1


@pytest.mark.timeout(10)
def test_close_wakes_blocked_accept(rt: Any, sockdir: Path) -> None:
    for ln in (listen("tcp", "127.0.0.1:0"), listen("unix", str(sockdir / "acc.sock"))):
        acceptor = Runner(ln.accept, name="acceptor")
        wait_parked(ln, "r")
        ln.close()
        assert isinstance(acceptor.join_exc(), NetClosingError)
        with pytest.raises(NetClosingError):
            ln.accept()


@pytest.mark.timeout(10)
def test_close_wakes_blocked_read_from(rt: Any, sockdir: Path) -> None:
    for pc in (
        listen_packet("udp4", "127.0.0.1:0"),
        listen_packet("unixgram", str(sockdir / "rf.sock")),
    ):
        reader = Runner(lambda pc=pc: pc.read_from(100), name="reader")
        wait_parked(pc, "r")
        pc.close()
        assert isinstance(reader.join_exc(), NetClosingError)


@pytest.mark.timeout(10)
def test_close_is_idempotent_and_later_use_fails(rt: Any, closer: Closer, sockdir: Path) -> None:
    c, s = _pair("tcp", closer, sockdir)
    assert c.read(0) == b""  # at once, though nothing was sent
    c.close()
    c.close()
    assert "closed" in repr(c)
    assert c.fileno() == -1
    for op in (
        lambda: c.read(1),
        lambda: c.read(0),
        lambda: c.read_into(bytearray(1)),
        lambda: c.write(b"x"),
        lambda: c.close_read(),
        lambda: c.close_write(),
        lambda: c.set_deadline(None),
        lambda: c.set_read_deadline(None),
        lambda: c.set_write_deadline(None),
    ):
        with pytest.raises(NetClosingError):
            op()
    # The addresses are remembered.
    assert c.remote_addr == s.local_addr
    assert s.read(10) == b""  # the peer sees EOF

    ln = listen("tcp", "127.0.0.1:0")
    ln.close()
    ln.close()
    with pytest.raises(NetClosingError):
        ln.set_deadline(None)
    pc = listen_packet("udp", "127.0.0.1:0")
    pc.close()
    pc.close()
    with pytest.raises(NetClosingError):
        pc.write_to(b"x", ("127.0.0.1", 9))


@pytest.mark.timeout(10)
def test_context_managers_close(rt: Any, sockdir: Path) -> None:
    with listen("unix", str(sockdir / "cm.sock")) as ln:
        assert isinstance(ln, Listener)
        with dial("unix", ln.addr) as c, ln.accept() as s:
            assert isinstance(c, Conn)
            c.write(b"cm")
            assert s.read(2) == b"cm"
        assert c.fileno() == -1 and s.fileno() == -1
    assert ln.fileno() == -1
    assert not os.path.exists(sockdir / "cm.sock")
    with listen_packet("udp", "127.0.0.1:0") as pc:
        assert isinstance(pc, PacketConn)
    assert pc.fileno() == -1


@pytest.mark.timeout(10)
def test_unclosed_conn_is_closed_by_its_finalizer(rt: Any, sockdir: Path) -> None:
    with listen("tcp", "127.0.0.1:0") as ln:
        c = dial("tcp", ln.addr)
        s = ln.accept()
        fd = c.fileno()
        with pytest.warns(ResourceWarning, match="unclosed"):
            del c
            gc.collect()
        assert s.read(1) == b""  # the peer sees EOF: the finalizer closed it
        s.close()
    with pytest.raises(OSError) as info:
        os.fstat(fd)
    assert info.value.errno == errno.EBADF


# --- deadlines ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest.mark.timeout(10)
def test_read_deadline(rt: Any, closer: Closer, sockdir: Path, kind: str) -> None:
    c, s = _pair(kind, closer, sockdir)
    # Expires while blocked.
    t0 = time.monotonic()
    c.set_read_deadline(t0 + 0.05)
    with pytest.raises(DeadlineExceededError):
        c.read(10)
    assert time.monotonic() - t0 >= 0.05
    # A past deadline fails at once even when data is buffered, until it is changed.
    s.write(b"ab")
    c.set_read_deadline(None)
    assert c.read(1) == b"a"  # b"b" is buffered now
    c.set_read_deadline(time.monotonic() - 1)
    for _ in range(2):
        with pytest.raises(DeadlineExceededError):
            c.read(1)
    c.set_read_deadline(None)
    assert c.read(1) == b"b"
    # Moved into the past while a reader is parked.
    reader = Runner(lambda: c.read(10), name="reader")
    wait_parked(c, "r")
    c.set_read_deadline(-math.inf)
    assert isinstance(reader.join_exc(), DeadlineExceededError)
    # The write side was never affected.
    c.set_read_deadline(None)
    assert c.write(b"still") == 5
    assert s.read(10) == b"still"


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest.mark.timeout(20)
def test_write_deadline(rt: Any, closer: Closer, sockdir: Path, kind: str) -> None:
    c, s = _pair(kind, closer, sockdir)
    writer = _fill_and_block_writer(c)
    c.set_write_deadline(time.monotonic() - 1)
    e = writer.join_exc()
    assert isinstance(e, DeadlineExceededError)
    assert e.written > 0
    with pytest.raises(DeadlineExceededError):
        c.write(b"x")
    # Reads are unaffected.
    s.write(b"r")
    assert c.read(1) == b"r"


@pytest.mark.timeout(10)
def test_set_deadline_covers_both_directions(rt: Any, closer: Closer, sockdir: Path) -> None:
    c, s = _pair("unix", closer, sockdir)
    c.set_deadline(time.monotonic() - 1)
    with pytest.raises(DeadlineExceededError):
        c.read(1)
    with pytest.raises(DeadlineExceededError):
        c.write(b"x")
    c.set_deadline(math.inf)  # +inf means none
    c.write(b"x")
    assert s.read(1) == b"x"


@pytest.mark.timeout(10)
def test_listener_deadline(rt: Any, closer: Closer) -> None:
    ln = closer(listen("tcp", "127.0.0.1:0"))
    ln.set_deadline(time.monotonic() + 0.05)
    with pytest.raises(DeadlineExceededError):
        ln.accept()
    with pytest.raises(DeadlineExceededError):
        ln.accept()  # sticky until changed
    ln.set_deadline(None)
    acceptor = Runner(ln.accept, name="acceptor")
    wait_parked(ln, "r")
    ln.set_deadline(time.monotonic() - 1)
    assert isinstance(acceptor.join_exc(), DeadlineExceededError)
    ln.set_deadline(None)
    c = closer(dial("tcp", ln.addr))
    s = closer(ln.accept())
    assert s.remote_addr == c.local_addr
    with pytest.raises(ValueError):
        ln.set_deadline(math.nan)


@pytest.mark.timeout(10)
def test_packet_conn_deadlines(rt: Any, closer: Closer) -> None:
    pc = closer(listen_packet("udp4", "127.0.0.1:0"))
    pc.set_read_deadline(time.monotonic() + 0.05)
    with pytest.raises(DeadlineExceededError):
        pc.read_from(10)
    pc.set_read_deadline(None)
    reader = Runner(lambda: pc.read_from(10), name="reader")
    wait_parked(pc, "r")
    pc.set_deadline(-math.inf)
    assert isinstance(reader.join_exc(), DeadlineExceededError)
    with pytest.raises(DeadlineExceededError):
        pc.write_to(b"x", pc.local_addr)
    pc.set_write_deadline(None)
    assert pc.write_to(b"x", pc.local_addr) == 1
    pc.set_read_deadline(None)
    assert pc.read_from(10) == (b"x", pc.local_addr)


# --- the rest of Conn -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest.mark.timeout(10)
def test_close_write_and_close_read(rt: Any, closer: Closer, sockdir: Path, kind: str) -> None:
    c, s = _pair(kind, closer, sockdir)
    c.write(b"last words")
    c.close_write()
    assert _read_all(s) == b"last words"  # then EOF
    with pytest.raises(BrokenPipeError):
        c.write(b"more")
    s.write(b"reply")
    assert c.read(10) == b"reply"
    c.close_read()
    assert c.read(10) == b""


def _dgram_conn(kind: str, closer: Closer, sockdir: Path) -> tuple[Conn, PacketConn]:
    """A dialled datagram Conn and the PacketConn it is connected to."""
    if kind == "udp":
        server = closer(listen_packet("udp4", "127.0.0.1:0"))
        return closer(dial("udp4", server.local_addr)), server
    path = str(sockdir / "dg.sock")
    server = closer(listen_packet("unixgram", path))
    return closer(dial("unixgram", path)), server


@pytest.mark.parametrize("kind", ["udp", "unixgram"])
@pytest.mark.timeout(10)
def test_close_read_wakes_a_datagram_read(
    rt: Any, closer: Closer, sockdir: Path, kind: str
) -> None:
    """close_read wakes a read parked on a datagram Conn, which returns b"" (EOF), as later
    reads do at once; a datagram that still arrives (UDP queues it) is read first."""
    c, server = _dgram_conn(kind, closer, sockdir)
    reader = Runner(lambda: c.read(100), name="reader")
    wait_parked(c, "r")
    c.close_read()
    assert reader.join() == b""
    assert c.read(100) == b""
    assert c.read_into(bytearray(10)) == 0
    if kind == "udp":
        server.write_to(b"late", c.local_addr)
        assert c.read(100) == b"late"
        assert c.read(100) == b""


def _fill_datagrams(c: Conn) -> None:
    """Send datagrams without waiting until the peer's queue is full."""
    while True:
        try:
            os.write(c.fileno(), b"d" * 512)
        except BlockingIOError:
            return


@pytest.mark.parametrize("kind", ["tcp", "unix", "unixgram"])
@pytest.mark.timeout(20)
def test_close_write_wakes_a_blocked_write(
    rt: Any, closer: Closer, sockdir: Path, kind: str
) -> None:
    """close_write wakes a write parked on the Conn at once: it fails with BrokenPipeError,
    ``.written`` saying what went out before."""
    if kind == "unixgram":
        c, _ = _dgram_conn(kind, closer, sockdir)
        _fill_datagrams(c)
        writer = Runner(lambda: c.write(b"one more"), name="writer")
        wait_parked(c, "w")
    else:
        c, _ = _pair(kind, closer, sockdir)
        writer = _fill_and_block_writer(c)
    c.close_write()
    e = writer.join_exc()
    assert isinstance(e, BrokenPipeError), e
    assert e.written >= 0  # type: ignore[attr-defined]


@pytest.mark.timeout(10)
def test_read_into(rt: Any, closer: Closer, sockdir: Path) -> None:
    c, s = _pair("tcp", closer, sockdir)
    s.write(b"into")
    buf = bytearray(10)
    n = c.read_into(buf)
    assert buf[:n] == b"into"[:n] and n > 0
    assert c.read_into(bytearray(0)) == 0


@pytest.mark.timeout(10)
def test_tcp_socket_options(rt: Any, closer: Closer) -> None:
    """As Go sets them: TCP_NODELAY and a 15 s keep-alive on dialled and accepted
    connections, SO_REUSEADDR on listeners."""
    ln = closer(listen("tcp", "127.0.0.1:0"))
    c = closer(dial("tcp", ln.addr))
    s = closer(ln.accept())

    def opt(x: Any, level: int, name: int) -> int:
        with socket.socket(fileno=os.dup(x.fileno())) as probe:
            return probe.getsockopt(level, name)

    assert opt(ln, socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
    for conn in (c, s):
        assert opt(conn, socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert opt(conn, socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert opt(conn, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 15
        if hasattr(socket, "TCP_KEEPINTVL"):
            assert opt(conn, socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 15
    assert os.get_blocking(c.fileno()) is False
    assert os.get_inheritable(c.fileno()) is False
    assert os.get_inheritable(s.fileno()) is False


@pytest.mark.timeout(30)
def test_concurrent_writes_do_not_interleave(rt: Any, closer: Closer, sockdir: Path) -> None:
    c, s = _pair("unix", closer, sockdir)
    block = 256 << 10
    writers = [
        Runner(lambda i=i: [c.write(bytes([i]) * block) for _ in range(4)], name=f"w{i}")
        for i in range(1, 4)
    ]
    got = bytearray()
    while len(got) < 3 * 4 * block:
        got += s.read(1 << 20)
    for w in writers:
        w.join()
    for off in range(0, len(got), block):
        chunk = got[off : off + block]
        assert chunk == bytes([chunk[0]]) * block


@pytest.mark.timeout(10)
def test_repr(rt: Any, closer: Closer, sockdir: Path) -> None:
    ln = closer(listen("tcp4", "127.0.0.1:0"))
    c = closer(dial("tcp4", ln.addr))
    port = ln.addr[1]
    assert repr(ln) == f"<threadpoll.net.Listener tcp4 127.0.0.1:{port} fd={ln.fileno()}>"
    assert f"->127.0.0.1:{port} fd={c.fileno()}>" in repr(c)
    assert repr(c).startswith("<threadpoll.net.Conn tcp4 127.0.0.1:")
    pc = closer(listen_packet("udp4", "127.0.0.1:0"))
    assert repr(pc).startswith("<threadpoll.net.PacketConn udp4 127.0.0.1:")


@pytest.mark.timeout(20)
def test_finalizer_never_closes_inline(rt: Any) -> None:
    """A garbage collection can run while the collecting thread holds a runtime lock (the
    poller holds its backend's lock while it sorts events). A Conn finalized there must not
    close inline (close takes that lock: deadlock); it is closed soon after, elsewhere."""
    import gc
    import warnings as _warnings

    if not hasattr(rt.backend, "lock"):
        pytest.skip("backend has no table lock")
    ln = listen("tcp", "127.0.0.1:0")
    try:
        c = dial("tcp", ln.addr)
        s = ln.accept()
        sysfd = c.fileno()
        backend_lock = rt.backend.lock
        done = threading.Event()

        def drop_while_holding() -> None:
            nonlocal c
            with backend_lock:  # as the poller does around its table
                with _warnings.catch_warnings():
                    _warnings.simplefilter("ignore", ResourceWarning)
                    del c
                    gc.collect()
            done.set()

        t = threading.Thread(target=drop_while_holding, name="collector", daemon=True)
        t.start()
        assert done.wait(10), "the finalizer closed inline and deadlocked on the backend lock"
        t.join()
        wait_until(lambda: not _fd_open(sysfd), what="the deferred close")
        s.close()
    finally:
        ln.close()


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


_EXIT_WITH_LIVE_OBJECTS = """
import os, sys
sys.path.insert(0, {tests!r})
from conftest import make_runtime
from threadpoll._runtime import proc
proc.set_default_runtime(make_runtime({backend!r}))
import threadpoll.socket as tsocket
from threadpoll.file import pipe
from threadpoll.net import dial, listen, listen_packet

ln = listen("tcp", "127.0.0.1:0")
c = dial("tcp", "127.0.0.1:%d" % ln.addr[1])
s = ln.accept()
uln = listen("unix", {path!r})
closed_ln = listen("tcp", "127.0.0.1:0")
closed_ln.close()
closed_c = dial("tcp", "127.0.0.1:%d" % ln.addr[1])
closed_c.close()
pc = listen_packet("udp", "127.0.0.1:0")
r, w = pipe()
ds = tsocket.socket()
ds.connect(ln.addr)
# Keep them for the last phase of shutdown, when threadpoll's modules may already have had
# their globals set to None (a free-threaded build gets there with plain module globals).
os._threadpoll_keep = [ln, c, s, uln, closed_ln, closed_c, pc, r, w, ds]
"""


def test_finalizers_at_interpreter_exit_use_no_module_globals(
    rt: Any, request: pytest.FixtureRequest, sockdir: Path
) -> None:
    """A process that exits with open and closed Listeners, Conns, PacketConns, Files and
    drop-in sockets still alive prints nothing and unlinks its unix listener's socket file.
    On a free-threaded build the finalizers ran after fd_mutex's globals were cleared:
    ``TypeError: unsupported operand type(s) for &: 'int' and 'NoneType'``."""
    import subprocess

    path = str(sockdir / "exit.sock")
    code = _EXIT_WITH_LIVE_OBJECTS.format(
        tests=os.path.dirname(os.path.abspath(__file__)),
        backend=request.node.callspec.params["rt"],
        path=path,
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert not os.path.exists(path), "the unix listener's socket file was left behind"


# --- what a Conn keeps (issue 12: memory per descriptor) -------------------------------------


@pytest.mark.timeout(30)
def test_conn_asks_local_addr_on_first_use_and_keeps_it_after_close(
    rt: Any, closer: Closer
) -> None:
    """A Conn asks the OS for its local address when first asked, or at close if never
    asked, so local_addr answers the same after close; the remote address is kept from the
    start (getpeername fails once the peer has reset the connection)."""
    ln = closer(listen("tcp", "127.0.0.1:0"))
    port = ln.addr[1]
    c = closer(dial("tcp", f"127.0.0.1:{port}", timeout=5.0))
    s = closer(ln.accept())
    assert c._laddr is None and s._laddr is None
    assert c.remote_addr == ("127.0.0.1", port) and s._raddr == "127.0.0.1"
    assert s.local_addr == ("127.0.0.1", port) and s._laddr is not None
    seen = s.remote_addr
    c.close()  # never asked: close keeps it
    assert c.local_addr == seen
    assert "closed" in repr(c) and f"127.0.0.1:{seen[1]}" in repr(c)
    s.close()
    assert s.local_addr == ("127.0.0.1", port)


@pytest.mark.timeout(30)
def test_conn_without_timeouts_makes_no_locks(rt: Any, closer: Closer) -> None:
    """A Conn that reads and writes without deadlines carries no call gates and no close
    semaphore, nor does a deadline (its lock is shared by stripe), the dial's included."""
    ln = closer(listen("tcp", "127.0.0.1:0"))
    c = closer(dial("tcp", f"127.0.0.1:{ln.addr[1]}", timeout=30))
    s = closer(ln.accept())
    _round_trip(c, s)
    lazy = ("_rgate", "_wgate", "csema")
    for conn in (c, s):
        assert [n for n in lazy if getattr(conn._fd, n) is not None] == []
    s.set_read_deadline(time.monotonic() + 60)
    assert [n for n in lazy if getattr(s._fd, n) is not None] == []


@pytest.mark.timeout(30)
def test_conns_share_remote_host_strings(rt: Any, closer: Closer) -> None:
    """Connections from or to the same host keep one host string between them (dialled:
    from getpeername; accepted: from accept); the set of kept ones stays bounded."""
    ln = closer(listen("tcp", "127.0.0.1:0"))
    address = f"127.0.0.1:{ln.addr[1]}"
    c1, c2 = closer(dial("tcp", address)), closer(dial("tcp", address))
    s1, s2 = closer(ln.accept()), closer(ln.accept())
    assert c1.remote_addr == c2.remote_addr == ln.addr
    assert c1.remote_addr[0] is c2.remote_addr[0]
    assert s1.remote_addr[0] is s2.remote_addr[0] is c1.remote_addr[0]
    assert {s1.remote_addr, s2.remote_addr} == {c1.local_addr, c2.local_addr}
    assert 0 < len(net._hosts) <= net._HOSTS_MAX


@pytest.mark.timeout(30)
def test_conn_keeps_remote_address_as_host_and_port(rt: Any, closer: Closer, sockdir: Path) -> None:
    """A Conn keeps an IP remote address as its host and port and makes the tuple when
    asked (40 bytes less per connection), in the shape the socket module gives: a pair for
    IPv4, (host, port, 0, 0) for IPv6 (where there is an IPv6 loopback); a unix address
    whole."""
    networks = [("tcp4", "127.0.0.1:0", 2)]
    if _has_ipv6_loopback():
        networks.append(("tcp6", "[::1]:0", 4))
    for network, address, shape in networks:
        ln = closer(listen(network, address))
        c = closer(dial(network, ln.addr))
        s = closer(ln.accept())
        assert c.remote_addr == ln.addr and len(c.remote_addr) == shape
        assert s.remote_addr == c.local_addr and len(s.remote_addr) == shape
        for conn in (c, s):
            assert (conn._raddr, conn._rport) == conn.remote_addr[:2]
            assert type(conn.remote_addr) is tuple
            assert f"{conn.remote_addr[1]} fd=" in repr(conn)
    c, s = _pair("unix", closer, sockdir)
    assert c.remote_addr == str(sockdir / "pair.sock") and s.remote_addr == ""
    assert c._rport is None and s._rport is None


def _exchange(a: Conn, b: Conn) -> None:
    """One write each way, read back (no shutdown, no address asked)."""
    assert a.write(b"ping") == 4
    assert b.read(4) == b"ping"
    assert b.write(b"pong") == 4
    assert a.read(4) == b"pong"


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest.mark.timeout(30)
def test_conn_makes_its_socket_object_only_when_needed(
    rt: Any, closer: Closer, sockdir: Path, kind: str
) -> None:
    """On the C core a Conn's FD lets go of its socket object once the Conn is made: its
    reads and writes go to the descriptor number without it (48 bytes less per connection).
    What needs one (a shutdown, TLS) makes it again, in non-blocking mode as before; the FD
    detaches it at close, so it never closes the descriptor (or the number's next owner).
    Asking the local address at close keeps none, and a closed Conn makes none. (The Python
    runtime's Conn keeps the object: its reads use it.)"""
    c, s = _pair(kind, closer, sockdir)
    shed = rt.impl == "c"
    assert (c._fd._sock is None, s._fd._sock is None) == (shed, shed)
    _exchange(c, s)
    assert (c._fd._sock is None, s._fd._sock is None) == (shed, shed)
    obj = s._fd._socket()
    assert obj is s._fd._sock and obj.fileno() == s.fileno() and obj.gettimeout() == 0.0
    assert type(obj) is socket.socket.__bases__[0]  # _socket.socket: no front of its own
    assert s.local_addr == c.remote_addr
    s.close_write()
    assert c.read(1) == b""
    s.close()
    assert obj.fileno() == -1  # detached by the FD, which closed the descriptor itself
    had = c._fd._sock
    assert (had is None) == shed
    c.close()  # asks its local address, through an object it does not keep if it has none
    assert c.local_addr == s.remote_addr
    if had is None:
        assert c._fd._sock is None
        with pytest.raises(NetClosingError):
            c._fd._socket()  # a closed FD makes none
    else:
        assert had.fileno() == -1


def _recording_socket_class(made: list[Any]) -> type:
    """A stand-in for fd_unix._CSocket that appends every object made to ``made``."""

    class Recorded(fd_unix._CSocket):  # type: ignore[misc,name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    return Recorded


@pytest.mark.timeout(60)
def test_conn_socket_object_made_once_for_racing_first_needs(
    rt: Any, closer: Closer, sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads that need a Conn's socket object at once get one object between them; every
    other one made in the race is detached, so none closes the descriptor."""
    made: list[Any] = []
    Recorded = _recording_socket_class(made)

    for _ in range(50):
        c, s = _pair("tcp", closer, sockdir)
        s._fd.shed_socket()  # (the Python runtime's Conn keeps its own)
        with monkeypatch.context() as m:
            m.setattr(fd_unix, "_CSocket", Recorded)
            start = threading.Barrier(6)
            got: list[Any] = []

            def need(s: Conn = s, start: threading.Barrier = start, got: list[Any] = got) -> None:
                start.wait()
                got.append(s._fd._socket())

            runners = [Runner(need, name=f"need{i}") for i in range(6)]
            for r in runners:
                r.join()
        assert len(got) == 6 and all(o is s._fd._sock for o in got)
        assert [o for o in made if o is not got[0] and o.fileno() != -1] == []
        made.clear()
        _exchange(c, s)  # the descriptor still works: no loser closed it
        c.close()
        s.close()


@pytest.mark.timeout(60)
def test_conn_socket_object_first_needs_racing_close(
    rt: Any, closer: Closer, sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads that need a Conn's socket object while another thread closes the Conn get
    the object or the closing error; every object made in the race ends detached, so none
    can close the descriptor's number once it is reused."""
    made: list[Any] = []
    Recorded = _recording_socket_class(made)

    for _ in range(30):
        c, s = _pair("tcp", closer, sockdir)
        s._fd.shed_socket()  # (the Python runtime's Conn keeps its own)
        start = threading.Barrier(5)
        outcomes: list[Any] = []

        def need(s: Conn = s, start: threading.Barrier = start, out: list[Any] = outcomes) -> None:
            start.wait()
            for _ in range(3):
                try:
                    out.append(s._fd._socket())
                except NetClosingError as e:
                    out.append(type(e))

        with monkeypatch.context() as m:
            m.setattr(fd_unix, "_CSocket", Recorded)
            runners = [Runner(need, name=f"need{i}") for i in range(4)]
            start.wait()
            s.close()
            for r in runners:
                r.join()
        assert len(outcomes) == 12
        assert all(o is NetClosingError or o.fileno() == -1 for o in outcomes)
        assert [o for o in made if o.fileno() != -1] == []
        made.clear()
        c.close()


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
@pytest.mark.timeout(30)
def test_conn_socket_object_made_again_from_a_signal_handler(
    rt: Any, closer: Closer, sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal handler that needs a Conn's socket object while its thread is making that
    same object (the FD's short lock is re-entrant) gets the one the FD keeps; the object
    that lost is detached and the descriptor stays open."""
    c, s = _pair("tcp", closer, sockdir)
    made: list[Any] = []
    in_handler: list[Any] = []

    class Signalling(fd_unix._CSocket):  # type: ignore[misc,name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)  # from here it holds the descriptor
            made.append(self)
            if len(made) == 1:
                signal.raise_signal(signal.SIGUSR1)  # the handler runs at the next check

    def handler(signum: int, frame: Any) -> None:
        in_handler.append(s._fd._socket())

    s._fd.shed_socket()  # (the Python runtime's Conn keeps its own)

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        with monkeypatch.context() as m:
            m.setattr(fd_unix, "_CSocket", Signalling)
            outer = s._fd._socket()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert len(in_handler) == 1 and in_handler[0] is outer is s._fd._sock
    assert [o for o in made if o is not outer and o.fileno() != -1] == []
    _exchange(c, s)


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as e:
        return type(e), str(e)


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_conn_calls_take_every_argument_as_the_fd_does(
    rt: Any, closer: Closer, sockdir: Path, kind: str
) -> None:
    """Conn.read, read_into and write go straight into C on the C core for the common
    arguments (an int count; bytes, bytearray or a byte memoryview) and through the FD's
    own checks for the rest: every argument gets the same result or error on both
    implementations."""
    from array import array

    c, s = _pair(kind, closer, sockdir)
    assert c.write(b"") == 0
    assert c.write(b"abc") == 3
    assert s.read(0) == b""
    assert s.read(3) == b"abc"
    assert _outcome(lambda: s.read(-1)) == (ValueError, "negative size: -1")
    assert _outcome(lambda: s.read(True)) == (TypeError, "size must be an int, not bool")
    assert _outcome(lambda: s.read(2.0)) == (TypeError, "size must be an int, not float")
    assert _outcome(lambda: c.write("x")) == (
        TypeError,
        "write() needs a bytes-like object, not 'str' (encode it first)",
    )
    assert _outcome(lambda: c.write(3)) == (
        TypeError,
        "write() needs a bytes-like object, not 'int'",
    )
    assert _outcome(lambda: s.read_into(b"xx")) == (
        TypeError,
        "read_into() needs a writable buffer, not a read-only bytes",
    )
    assert _outcome(lambda: s.read_into(None)) == (  # type: ignore[arg-type]
        TypeError,
        "read_into() needs a writable bytes-like object, not 'NoneType'",
    )
    assert s.read_into(bytearray()) == 0
    words = array("i", [1, 2])
    assert c.write(words) == 8  # not bytes: the FD's path casts it
    assert c.write(bytearray(b"de")) == 2
    assert c.write(memoryview(b"xfgx")[1:3]) == 2
    got = array("i", [0, 0])
    assert s.read_into(got) == 8
    assert got == words
    buf = bytearray(8)
    view = memoryview(buf)
    n = 0
    while n < 4:
        n += s.read_into(view[2 + n : 6])
    assert buf == b"\0\0defg\0\0"
    released = memoryview(bytearray(4))
    released.release()
    assert _outcome(lambda: s.read_into(released))[0] is ValueError
    assert _outcome(lambda: c.write(released))[0] is ValueError
