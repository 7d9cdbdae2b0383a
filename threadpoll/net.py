"""Go-style networking on threadpoll's FD: ``dial``, ``listen``, ``listen_packet``.

Read beside Go's ``net`` package: ``dial.go`` (Dial, dialSerial, partialDeadline),
``ipsock.go`` (SplitHostPort), ``sock_posix.go`` and ``fd_unix.go`` (socket, connect),
``sockopt_*.go`` and ``tcpsock_posix.go`` (the default socket options), ``unixsock_posix.go``
(the listener that removes its socket file). Every connection, listener and packet connection
owns one ``threadpoll.lowlevel.FD``, so all five promises hold: ``close()`` from any thread
wakes every blocked ``read``, ``write``, ``accept``, ``read_from`` and ``write_to`` with
``NetClosingError``; deadlines are absolute ``time.monotonic()`` seconds; writes are whole.

Networks: ``tcp``, ``tcp4``, ``tcp6``, ``udp``, ``udp4``, ``udp6`` (addresses ``"host:port"``,
``"[v6]:port"``, ``(host, port)`` or the stdlib's IPv6 4-tuple), ``unix`` and ``unixgram``
(a path; on Linux a leading ``@`` names the abstract namespace, as in Go).

How a dial runs (Go: net.Dialer.DialContext):

1. Validate everything: the network, the address, the port (numeric, or a service name looked
   up with getaddrinfo), ``timeout`` and ``deadline``. Bad input raises TypeError or
   ValueError before anything is opened.
2. Resolve the name with ``socket.getaddrinfo``. With a deadline, the lookup runs in a daemon
   thread named ``threadpoll-resolver-N`` that is abandoned if the deadline passes first
   (getaddrinfo cannot be interrupted); its late answer is dropped. Literal IP addresses are
   converted without a thread.
3. Try the addresses in order (Go's dialSerial), each with its share of the time left
   (Go's partialDeadline); the first error is raised if all fail.
4. For each: a non-blocking, close-on-exec socket; ``connect``; on EINPROGRESS, wrap it in an
   FD, set the FD's write deadline to the dial deadline and ``wait_write``; then read SO_ERROR
   (and, on 0, check ``getpeername``: the poller may wake us spuriously, Go issues 14548 and
   19289); clear the deadline. Any failure closes what was opened.

Differences from Go:

- DIVERGENCE(go): no Happy Eyeballs (RFC 6555): the addresses of a ``tcp`` or ``udp`` dial are
  tried one after the other in getaddrinfo's order, never raced.
- DIVERGENCE(go): a listen on ``tcp``/``udp`` with an empty host is dual-stack (``[::]`` with
  IPV6_V6ONLY off) where the system allows it, as in Go; an explicit ``0.0.0.0`` stays IPv4
  (Go makes it dual-stack too), so a Python caller who writes an IPv4 address gets IPv4
  addresses back.
- DIVERGENCE(go): errors are the stdlib's (``ConnectionRefusedError``, ``socket.gaierror``,
  ...), not wrapped in an OpError; addresses are the stdlib's tuples and strings.
- DIVERGENCE(go): ``close()`` is idempotent, Python's convention (Go's second Close fails).
- DIVERGENCE(go): ``PacketConn.write_to`` needs a literal IP address: resolving a name there
  would be a blocking lookup that no deadline bounds (Go's WriteTo takes a resolved address).
"""

from __future__ import annotations

import _socket
import errno
import math
import numbers
import os
import socket
import sys
import threading
import time
from typing import IO, Any, Callable, NamedTuple, TypeVar, Union, cast

from typing_extensions import Buffer

from threadpoll._poll.fd_poll_runtime import deadline_value
from threadpoll._poll.fd_unix import CONNECT_PENDING, FD
from threadpoll._poll.fd_unix import conn_read as _conn_read
from threadpoll._poll.fd_unix import conn_read_into as _conn_read_into
from threadpoll._poll.fd_unix import conn_write as _conn_write
from threadpoll._poll.finalizer import finalizer as _finalizer
from threadpoll.errors import ClosingError, DeadlineExceededError, NotPollableError

__all__ = [
    "Conn",
    "Listener",
    "PacketConn",
    "dial",
    "listen",
    "listen_packet",
    "Addr",
    "AddressArg",
    "IPv4Addr",
    "IPv6Addr",
    "UnixAddr",
]

#: An IPv4 address as the stdlib socket module gives it: ``(host, port)``.
IPv4Addr = tuple[str, int]
#: An IPv6 address as the stdlib socket module gives it: ``(host, port, flowinfo, scope_id)``.
IPv6Addr = tuple[str, int, int, int]
#: A unix socket's address: a path (str), or bytes for a Linux abstract name; ``""`` when
#: the socket is unnamed.
UnixAddr = Union[str, bytes]
#: An address as ``local_addr``, ``remote_addr``, ``Listener.addr`` and ``read_from`` give it.
Addr = Union[IPv4Addr, IPv6Addr, UnixAddr]

#: What dial, listen, listen_packet and ``write_to`` accept as an address: ``"host:port"``,
#: ``"[v6]:port"``, a ``(host, port)`` tuple (port a number or a service name), an IPv6
#: 4-tuple as ``read_from`` returns it, or a unix path.
AddressArg = Union[
    str, bytes, "os.PathLike[str]", tuple[str, Union[int, str]], tuple[str, int, int, int]
]

_SOCK_NONBLOCK = getattr(_socket, "SOCK_NONBLOCK", 0)
_SOCK_CLOEXEC = getattr(_socket, "SOCK_CLOEXEC", 0)

# Go's defaultTCPKeepAliveIdle and defaultTCPKeepAliveInterval (net/tcpsock.go): 15 s.
_KEEPALIVE_SECONDS = 15
# The keep-alive idle option: TCP_KEEPIDLE (Linux, the BSDs), TCP_KEEPALIVE (macOS; Python has
# the name from 3.10, its value is 0x10 in <netinet/tcp.h>).
_TCP_KEEPIDLE: int | None = getattr(
    socket,
    "TCP_KEEPIDLE",
    getattr(socket, "TCP_KEEPALIVE", 0x10 if sys.platform in ("darwin", "ios") else None),
)
_TCP_KEEPINTVL: int | None = getattr(socket, "TCP_KEEPINTVL", None)

# sizeof(sockaddr_un.sun_path): 108 on Linux, 104 on macOS and the BSDs.
_UNIX_PATH_MAX = 108 if sys.platform.startswith("linux") else 104
# A leading "@" names Linux's abstract namespace (Go: net/unixsock_posix.go, sockaddr).
_ABSTRACT_UNIX = sys.platform.startswith("linux")

_MAX_PORT = 65535


class _Network(NamedTuple):
    """One of Go's network names and what it means to the socket layer."""

    name: str
    family: int  # AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC for "tcp"/"udp"
    sotype: int  # SOCK_STREAM or SOCK_DGRAM


_NETWORKS = {
    "tcp": _Network("tcp", socket.AF_UNSPEC, socket.SOCK_STREAM),
    "tcp4": _Network("tcp4", socket.AF_INET, socket.SOCK_STREAM),
    "tcp6": _Network("tcp6", socket.AF_INET6, socket.SOCK_STREAM),
    "udp": _Network("udp", socket.AF_UNSPEC, socket.SOCK_DGRAM),
    "udp4": _Network("udp4", socket.AF_INET, socket.SOCK_DGRAM),
    "udp6": _Network("udp6", socket.AF_INET6, socket.SOCK_DGRAM),
    "unix": _Network("unix", socket.AF_UNIX, socket.SOCK_STREAM),
    "unixgram": _Network("unixgram", socket.AF_UNIX, socket.SOCK_DGRAM),
}


def _network(network: object, allowed: tuple[str, ...]) -> _Network:
    """Go: net/dial.go parseNetwork"""
    if not isinstance(network, str):
        raise TypeError(f"network must be a str, not {type(network).__name__}")
    nw = _NETWORKS.get(network)
    if nw is None or network not in allowed:
        raise ValueError(f"unknown network {network!r} (expected one of {', '.join(allowed)})")
    return nw


# --- addresses -------------------------------------------------------------------------------


def _split_host_port(hostport: str) -> tuple[str, str]:
    """Split "host:port", "[v6]:port" or ":port" into host and port strings.

    Go: net/ipsock.go SplitHostPort
    """
    missing_port = "missing port in address"
    too_many_colons = "too many colons in address"

    def addr_err(why: str) -> ValueError:
        return ValueError(f"address {hostport!r}: {why}")

    j = k = 0
    # The port starts after the last colon.
    i = hostport.rfind(":")
    if i < 0:
        raise addr_err(missing_port)
    if hostport[0] == "[":
        # Expect the first ']' just before the last ':'.
        end = hostport.find("]")
        if end < 0:
            raise addr_err("missing ']' in address")
        if end + 1 == len(hostport):  # there can't be a ':' behind the ']' now
            raise addr_err(missing_port)
        if end + 1 != i:
            # Either ']' isn't followed by a colon, or it is followed by a colon that is
            # not the last one.
            if hostport[end + 1] == ":":
                raise addr_err(too_many_colons)
            raise addr_err(missing_port)
        host = hostport[1:end]
        j, k = 1, end + 1  # there can't be a '[' resp. ']' before these positions
    else:
        host = hostport[:i]
        if ":" in host:
            raise addr_err(too_many_colons)
    if "[" in hostport[j:]:
        raise addr_err("unexpected '[' in address")
    if "]" in hostport[k:]:
        raise addr_err("unexpected ']' in address")
    return host, hostport[i + 1 :]


def _port(port: object, nw: _Network) -> int:
    """A port number from an int, a decimal string, or a service name ("http").

    An empty string means port 0, as in Go (golang.org/issue/13610). Service names are looked
    up with getaddrinfo (the services database, no DNS); an unknown one is a ValueError.

    Go: net/port.go parsePort and net/lookup.go LookupPort
    """
    if isinstance(port, bool) or not isinstance(port, (int, str)):
        raise TypeError(f"port must be an int or a str, not {type(port).__name__}")
    if isinstance(port, int):
        n = port
    elif port == "":
        n = 0
    elif port.isascii() and port.isdigit():
        n = int(port)
    else:
        if not _is_service_name(port):
            raise ValueError(f"invalid port {port!r}")
        try:
            infos = socket.getaddrinfo(None, port, socket.AF_UNSPEC, nw.sotype, 0, 0)
        except (OSError, UnicodeError):
            infos = []
        if not infos:
            raise ValueError(f"unknown port {nw.name}/{port}") from None
        n = int(infos[0][4][1])
    if not 0 <= n <= _MAX_PORT:
        raise ValueError(f"invalid port {port!r}: not in 0..{_MAX_PORT}")
    return n


def _is_service_name(s: str) -> bool:
    """RFC 6335 §5.1 syntax: letters, digits and single hyphens, at least one letter."""
    return (
        0 < len(s) <= 15
        and s.isascii()
        and all(c.isalnum() or c == "-" for c in s)
        and any(c.isalpha() for c in s)
        and not s.startswith("-")
        and not s.endswith("-")
        and "--" not in s
    )


class _InetAddr(NamedTuple):
    host: str  # "" for the local system (dial) or the wildcard (listen)
    port: int
    flowinfo: int
    scope_id: int


def _inet_addr(address: object, nw: _Network) -> _InetAddr:
    """Parse an IP network's address argument (no name resolution here).

    Go: net/ipsock.go internetAddrList (its parsing half)
    """
    flowinfo = scope_id = 0
    if isinstance(address, str):
        host, port_s = _split_host_port(address)
        port = _port(port_s, nw)
    elif isinstance(address, tuple):
        if len(address) not in (2, 4):
            raise ValueError(
                f"address tuple must be (host, port) or (host, port, flowinfo, scope_id), "
                f"not {len(address)} items"
            )
        host = address[0]
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, not {type(host).__name__}")
        port = _port(address[1], nw)
        if len(address) == 4:
            for v in address[2:]:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise TypeError(f"flowinfo and scope_id must be ints, not {type(v).__name__}")
                if v < 0:
                    raise ValueError(f"flowinfo and scope_id must be >= 0, not {v}")
            flowinfo, scope_id = address[2], address[3]
    else:
        raise TypeError(
            f"address must be a 'host:port' str or a (host, port) tuple, "
            f"not {type(address).__name__}"
        )
    if "\0" in host:
        raise ValueError("host contains a NUL character")
    return _InetAddr(host, port, flowinfo, scope_id)


def _ip_family(host: str) -> int | None:
    """AF_INET or AF_INET6 if host is a literal IP address (an IPv6 zone allowed), else None.

    Go: net/ip.go ParseIP (its question: is this a literal?)
    """
    try:
        socket.inet_pton(socket.AF_INET, host)
        return socket.AF_INET
    except (OSError, ValueError):
        pass
    try:
        socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
        return socket.AF_INET6
    except (OSError, ValueError):
        return None


def _unix_addr(address: object) -> str | bytes:
    """A unix socket address from a path (str, bytes or path-like); "@name" is abstract.

    Go: net/unixsock_posix.go UnixAddr.sockaddr
    """
    if isinstance(address, tuple) or not isinstance(address, (str, bytes, os.PathLike)):
        raise TypeError(f"a unix address must be a path, not {type(address).__name__}")
    path = os.fspath(address)
    if not path:
        raise ValueError("missing unix socket path")
    raw = os.fsencode(path)
    if _ABSTRACT_UNIX and raw[:1] in (b"@", b"\0"):
        # Abstract namespace: "@name" as in Go, or b"\0name" as getsockname reports it.
        if b"\0" in raw[1:]:
            raise ValueError("unix socket path contains a NUL character")
        raw = b"\0" + raw[1:]
        path = raw if isinstance(path, bytes) else "\0" + path[1:]
    elif b"\0" in raw:
        raise ValueError("unix socket path contains a NUL character")
    if len(raw) > _UNIX_PATH_MAX:
        raise ValueError(f"unix socket path too long ({len(raw)} bytes, at most {_UNIX_PATH_MAX})")
    return path


# --- name resolution, bounded by the dial deadline --------------------------------------------

_AddrInfo = tuple[int, int, int, str, Any]

_resolver_lock = threading.Lock()
_resolver_seq = 0  # guarded by _resolver_lock: numbers the resolver threads


def _getaddrinfo(
    host: str | None, port: int, family: int, sotype: int, flags: int, deadline: float
) -> list[_AddrInfo]:
    """socket.getaddrinfo, given up on at deadline (absolute monotonic seconds or +inf).

    Go: net/cgo_unix.go cgoLookupIP (its select on ctx.Done while the lookup runs)
    """
    if host is not None and _ip_family(host) is not None:
        # A literal needs no lookup: convert it here, without a thread.
        flags |= socket.AI_NUMERICHOST
        deadline = math.inf
    if deadline == math.inf:
        return list(socket.getaddrinfo(host, port, family, sotype, 0, flags))
    if deadline <= time.monotonic():
        raise DeadlineExceededError()

    global _resolver_seq
    result: list[_AddrInfo] = []
    error: list[BaseException] = []
    done = threading.Event()
    # The socket module's getaddrinfo as it is now (tests replace it with a slow one).
    lookup = socket.getaddrinfo

    def run() -> None:
        try:
            result.extend(lookup(host, port, family, sotype, 0, flags))
        except BaseException as e:  # noqa: BLE001 - handed to the dialing thread
            error.append(e)
        finally:
            done.set()

    with _resolver_lock:
        _resolver_seq += 1
        name = f"threadpoll-resolver-{_resolver_seq}"
    # Daemon: getaddrinfo cannot be cancelled, so an abandoned lookup must not keep the
    # process alive; it finishes on its own and nobody reads its answer.
    threading.Thread(target=run, name=name, daemon=True).start()
    while not done.wait(min(deadline - time.monotonic(), threading.TIMEOUT_MAX)):
        if time.monotonic() >= deadline:
            raise DeadlineExceededError()
    if error:
        raise error[0]
    return result


def _resolve_dial(nw: _Network, a: _InetAddr, deadline: float) -> list[tuple[int, Any]]:
    """The (family, sockaddr) list to try for a dial, in order.

    Go: net/ipsock.go internetAddrList
    """
    # An empty host means the local system (Go dials the unspecified address, which the
    # kernel takes as this host); getaddrinfo(None, ...) without AI_PASSIVE gives loopback.
    host = a.host or None
    infos = _getaddrinfo(host, a.port, nw.family, nw.sotype, 0, deadline)
    out = []
    for family, _, _, _, sa in infos:
        if family == socket.AF_INET6 and (a.flowinfo or a.scope_id):
            sa = (sa[0], sa[1], a.flowinfo or sa[2], a.scope_id or sa[3])
        if family in (socket.AF_INET, socket.AF_INET6):
            out.append((family, sa))
    if not out:
        raise socket.gaierror(socket.EAI_NONAME, f"no suitable address found for {a.host!r}")
    return out


def _resolve_listen(nw: _Network, a: _InetAddr) -> tuple[int, Any]:
    """The (family, sockaddr) to bind a listener to.

    Go: net/ipsock.go favoriteAddrFamily and addrList.forResolve
    """
    if a.host == "" and nw.family == socket.AF_UNSPEC:
        # Go: a wildcard listen on "tcp"/"udp" is dual-stack where IPv4-mapped addresses work.
        if socket.has_dualstack_ipv6():
            return socket.AF_INET6, ("::", a.port, a.flowinfo, a.scope_id)
        return socket.AF_INET, ("0.0.0.0", a.port)
    host = a.host or None
    infos = socket.getaddrinfo(host, a.port, nw.family, nw.sotype, 0, socket.AI_PASSIVE)
    # Go's forResolve: prefer IPv4 unless the address was written as IPv6.
    want6 = ":" in a.host
    chosen = [info for info in infos if (info[0] == socket.AF_INET6) == want6] or infos
    if not chosen:
        raise socket.gaierror(socket.EAI_NONAME, f"no suitable address for {a.host!r}")
    family: int = chosen[0][0]
    sa: Any = chosen[0][4]
    if family == socket.AF_INET6 and (a.flowinfo or a.scope_id):
        sa = (sa[0], sa[1], a.flowinfo or sa[2], a.scope_id or sa[3])
    return family, sa


def _dial_deadline(timeout: object, deadline: object) -> float:
    """The earlier of timeout (seconds from now) and deadline (absolute), +inf for none.

    Go: net/dial.go Dialer.deadline
    """
    d = deadline_value(deadline)  # None/+inf → none, -inf → expired; NaN/bools/junk rejected
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
            raise TypeError(f"timeout must be None or seconds, not {type(timeout).__name__}")
        t = float(timeout)
        if math.isnan(t):
            raise ValueError("timeout must not be NaN")
        if t < 0:
            raise ValueError(f"timeout must be >= 0, not {timeout!r}")
        d = min(d, time.monotonic() + t)
    return d


def _partial_deadline(now: float, deadline: float, addrs_remaining: int) -> float:
    """The deadline for one of the remaining addresses: an equal share of the time left, but
    at least 2 s of it when that much is left.

    Go: net/dial.go partialDeadline
    """
    if deadline == math.inf:
        return deadline
    time_remaining = deadline - now
    if time_remaining <= 0:
        raise DeadlineExceededError()
    # Tentatively allocate equal time to each remaining address.
    timeout = time_remaining / addrs_remaining
    # If the time per address is too short, steal from the end of the list.
    sane_minimum = 2.0
    if timeout < sane_minimum:
        timeout = min(time_remaining, sane_minimum)
    return now + timeout


# --- sockets ---------------------------------------------------------------------------------


def _new_socket(family: int, sotype: int, proto: int = 0) -> _socket.socket:
    """A non-blocking, close-on-exec socket.

    It is a C-level ``_socket.socket``, not ``socket.socket``: threadpoll.socket.patch() may
    replace the latter, and these must stay plain. The FD owns the descriptor; this object
    only makes the socket calls and is detached, never closed: when the FD is destroyed, or
    once a Conn on the C core is made (FD.shed_socket).

    Go: net/sock_cloexec.go sysSocket
    """
    s = _socket.socket(family, sotype | _SOCK_NONBLOCK | _SOCK_CLOEXEC, proto)
    if not _SOCK_NONBLOCK:
        s.setblocking(False)
    return s


def _set_default_sockopts(s: _socket.socket, family: int, nw: _Network) -> None:
    """Go: net/sockopt_linux.go (and sockopt_bsd.go) setDefaultSockopts"""
    if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
        # Allow both IP versions even if the OS default is otherwise; tcp6/udp6 mean IPv6
        # only. Some systems never admit this option, so its error is ignored.
        try:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(nw.name.endswith("6")))
        except OSError:
            pass
    if nw.sotype == socket.SOCK_DGRAM and family == socket.AF_INET:
        # Allow broadcast.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)


def _set_tcp_sockopts(s: _socket.socket) -> None:
    """TCP_NODELAY and a 15 s keep-alive on every TCP connection, dialled or accepted; errors
    are ignored, as Go ignores them.

    Go: net/tcpsock_posix.go newTCPConn (setNoDelay, setKeepAlive, setKeepAliveIdle,
    setKeepAliveInterval)
    """
    opts = [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    ]
    if _TCP_KEEPIDLE is not None:
        opts.append((socket.IPPROTO_TCP, _TCP_KEEPIDLE, _KEEPALIVE_SECONDS))
    if _TCP_KEEPINTVL is not None:
        opts.append((socket.IPPROTO_TCP, _TCP_KEEPINTVL, _KEEPALIVE_SECONDS))
    for level, opt, value in opts:
        try:
            s.setsockopt(level, opt, value)
        except OSError:
            pass


def _new_fd(s: _socket.socket, nw: _Network) -> FD:
    """Hand s's descriptor to a new FD (closing s if that fails). A socket the poller refuses
    is an error for net, as in Go.

    Go: net/fd_unix.go newFD and netFD.init
    """
    try:
        fd = FD(
            s.fileno(),
            net=nw.name,
            pollable=True,
            is_stream=nw.sotype == socket.SOCK_STREAM,
            kind=nw.name,
            sock=cast(socket.socket, s),
        )
    except BaseException:
        s.close()
        raise
    if fd.is_blocking:
        fd.close()
        raise NotPollableError()
    return fd


def _connect(fd: FD, deadline: float) -> None:
    """Wait for a non-blocking connect in progress to finish, until deadline.

    Go: net/fd_unix.go netFD.connect (the part after EINPROGRESS)
    """
    if deadline != math.inf:
        fd.set_write_deadline(deadline)
    nerr = fd.wait_connect()
    if nerr:
        raise OSError(nerr, os.strerror(nerr))
    if deadline != math.inf:
        fd.set_write_deadline(None)


def _dial_one(nw: _Network, family: int, sa: Any, deadline: float) -> Conn:
    """Open one socket and connect it to sa; everything opened is closed on failure.

    Go: net/sock_posix.go socket and netFD.dial
    """
    s = _new_socket(family, nw.sotype)
    try:
        _set_default_sockopts(s, family, nw)
        err = s.connect_ex(sa)
        if err not in (0, errno.EISCONN, *CONNECT_PENDING):
            raise OSError(err, os.strerror(err))
    except BaseException:
        s.close()
        raise
    fd = _new_fd(s, nw)  # Go: fd.init after connect returned; it owns s's descriptor now
    try:
        if err in CONNECT_PENDING:
            _connect(fd, deadline)
        if nw.sotype == socket.SOCK_STREAM and family != socket.AF_UNIX:
            _set_tcp_sockopts(s)
        return Conn(fd, s, nw.name)
    except BaseException:
        fd.close()
        raise


# --- the public API ----------------------------------------------------------------------------


def dial(
    network: str,
    address: AddressArg,
    *,
    timeout: float | None = None,
    deadline: float | None = None,
) -> Conn:
    """Connect to address on the named network and return the connection.

    ``timeout`` (seconds) and ``deadline`` (absolute ``time.monotonic()`` seconds): the
    earlier bounds the whole dial, name resolution included, and raises
    ``DeadlineExceededError``; neither carries over to the returned Conn. Kernel errors
    (``ConnectionRefusedError``, ...) and lookup errors (``socket.gaierror``) pass through;
    bad arguments raise TypeError or ValueError before anything is opened.

    Go: net.Dial, net.DialTimeout, net.Dialer.DialContext
    """
    nw = _network(network, tuple(_NETWORKS))
    d = _dial_deadline(timeout, deadline)
    targets: list[tuple[int, Any]]
    if nw.family == socket.AF_UNIX:
        targets = [(socket.AF_UNIX, _unix_addr(address))]
    else:
        targets = _resolve_dial(nw, _inet_addr(address, nw), d)
    # Go: net/dial.go sysDialer.dialSerial.
    first_err: OSError | None = None
    for i, (family, sa) in enumerate(targets):
        now = time.monotonic()
        if now >= d:
            raise DeadlineExceededError()
        try:
            part = _partial_deadline(now, d, len(targets) - i)
        except DeadlineExceededError as e:
            if first_err is None:
                first_err = e
            break
        try:
            return _dial_one(nw, family, sa, part)
        except OSError as e:
            if first_err is None:
                first_err = e
    raise first_err if first_err is not None else DeadlineExceededError()


def listen(network: str, address: AddressArg, *, backlog: int = 128) -> Listener:
    """Listen on a stream network: ``tcp``, ``tcp4``, ``tcp6`` or ``unix``.

    TCP listeners get SO_REUSEADDR, as in Go. A unix listener removes its socket file on
    close (if the path still names the file it created).

    Go: net.Listen
    """
    nw = _network(network, ("tcp", "tcp4", "tcp6", "unix"))
    if isinstance(backlog, bool) or not isinstance(backlog, int):
        raise TypeError(f"backlog must be an int, not {type(backlog).__name__}")
    if backlog < 0:
        raise ValueError(f"backlog must be >= 0, not {backlog}")
    family: int
    sa: Any
    if nw.family == socket.AF_UNIX:
        family, sa = socket.AF_UNIX, _unix_addr(address)
    else:
        family, sa = _resolve_listen(nw, _inet_addr(address, nw))
    s = _new_socket(family, nw.sotype)
    unlink: tuple[str | bytes, int, int] | None = None
    try:
        _set_default_sockopts(s, family, nw)
        if family != socket.AF_UNIX:
            # Allow reuse of recently-used addresses (Go: setDefaultListenerSockopts).
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(sa)
        if family == socket.AF_UNIX and not _is_abstract(sa):
            st = os.stat(sa)
            unlink = (sa, st.st_dev, st.st_ino)
        s.listen(backlog)
    except BaseException:
        s.close()
        if unlink is not None:
            _unlink_if_same(unlink)
        raise
    try:
        fd = _new_fd(s, nw)
        try:
            return Listener(fd, s, nw.name, unlink)
        except BaseException:
            fd.close()
            raise
    except BaseException:
        if unlink is not None:
            _unlink_if_same(unlink)
        raise


def listen_packet(network: str, address: AddressArg) -> PacketConn:
    """Listen on a packet network: ``udp``, ``udp4``, ``udp6`` or ``unixgram``.

    Go: net.ListenPacket
    """
    nw = _network(network, ("udp", "udp4", "udp6", "unixgram"))
    family: int
    sa: Any
    if nw.family == socket.AF_UNIX:
        family, sa = socket.AF_UNIX, _unix_addr(address)
    else:
        family, sa = _resolve_listen(nw, _inet_addr(address, nw))
    s = _new_socket(family, nw.sotype)
    try:
        _set_default_sockopts(s, family, nw)
        s.bind(sa)
    except BaseException:
        s.close()
        raise
    fd = _new_fd(s, nw)
    try:
        return PacketConn(fd, s, nw.name)
    except BaseException:
        fd.close()
        raise


def _is_abstract(sa: str | bytes) -> bool:
    return sa[:1] in ("\0", b"\0")


def _unlink_if_same(
    unlink: tuple[str | bytes, int, int],
    _stat: Callable[[str | bytes], os.stat_result] = os.stat,
    _unlink: Callable[[str | bytes], None] = os.unlink,
) -> None:
    """Remove a unix listener's socket file if the path still names the file it made.

    Listener.__del__ calls it, also at interpreter shutdown, after this module's globals
    (``os`` included) may have been set to None: hence the functions bound as defaults.

    Go: net/unixsock_posix.go UnixListener.close (its unlink)
    """
    path, dev, ino = unlink
    try:
        st = _stat(path)
        if (st.st_dev, st.st_ino) == (dev, ino):
            _unlink(path)
    except FileNotFoundError:
        pass


# Host strings seen in remote addresses, each kept once: connections from or to the same host
# (a pool's server, a proxy, loopback) share one str instead of a copy each (58 bytes for
# "127.0.0.1"). Bounded: emptied when full, which only costs later connections the sharing.
# Safe without the GIL: dict get, setdefault and clear are atomic, and any str is correct.
_hosts: dict[str, str] = {}
_HOSTS_MAX = 1024


def _shared_host(host: str) -> str:
    """An equal host string already kept, or host itself, kept from now on."""
    kept = _hosts.get(host)
    if kept is None:
        if len(_hosts) >= _HOSTS_MAX:
            _hosts.clear()
        kept = _hosts.setdefault(host, host)
    return kept


def _format_addr(addr: Addr | None) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return f"[{host}]:{addr[1]}" if ":" in str(host) else f"{host}:{addr[1]}"
    if addr is None or addr == "":
        return "-"
    return str(addr) if isinstance(addr, str) else repr(addr)


_E = TypeVar("_E", bound="_Endpoint")  # the self type of __enter__ (typing.Self needs 3.11)


class _Endpoint:
    """What Conn, Listener and PacketConn share: one FD, close, deadlines, fileno.

    Go: net/net.go conn (its fd and the methods on it)
    """

    __slots__ = ("_fd", "_laddr", "__weakref__")

    def __init__(self, fd: FD, sock: _socket.socket, net: str) -> None:
        """``sock`` and ``net`` are fd's own socket object and network name (_new_fd made fd
        with them): read from fd when needed (FD._socket, _net), not kept twice.

        Go: none
        """
        _finalizer.start()  # the thread our __del__ hands its close to; cheap once running
        self._fd = fd
        # The local address, None until first asked (_local): a Conn asks the OS only when
        # someone wants it, or at close. Listener and PacketConn ask at once.
        self._laddr: Addr | None = None

    @property
    def _net(self) -> str:
        """The network name ("tcp", "udp4", "unix", ...): the FD's.

        Go: none
        """
        return self._fd.net

    def _local(self) -> Addr:
        """The local address, asked of the OS the first time and kept.

        Race-free without the GIL: two first askers store equal values; a close meanwhile
        (Conn.close) stores it before the descriptor is marked closed, so an asker whose
        getsockname then fails with the closing error finds it there.

        Go: none (Go's netFD.setAddr stores both addresses when the conn is made)
        """
        a = self._laddr
        if a is None:
            try:
                a = self._fd.getsockname()
            except ClosingError:
                a = self._laddr  # the close that beat this one stored it first
                if a is None:
                    raise
            self._laddr = a
        return a

    def close(self) -> None:
        """Close it, waking every thread blocked on it with ``NetClosingError``; return once
        the descriptor is closed. A second close does nothing.

        Go: net/net.go conn.Close
        """
        try:
            self._fd.close()
        except ClosingError:
            pass

    def set_deadline(self, t: float | None) -> None:
        """Set the read and write deadlines (absolute ``time.monotonic()`` seconds, None for
        none, a past time to fail every operation at once, blocked ones included).

        Go: net/net.go conn.SetDeadline
        """
        self._fd.set_deadline(t)

    def fileno(self) -> int:
        """The OS descriptor, -1 once closed. Using it directly bypasses every promise."""
        return self._fd.fileno()

    def _repr_local(self) -> Addr | None:
        """The local address for repr: None where it cannot be had (closed unasked)."""
        try:
            return self._local()
        except OSError:
            return None

    def _state(self) -> str:
        return "closed" if self._fd.closing() else f"fd={self._fd.fileno()}"

    def __enter__(self: _E) -> _E:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self, _finalize: Any = _finalizer.finalize) -> None:
        _finalize(self, getattr(self, "_fd", None))  # closes on the finalizer thread


class _Conn(_Endpoint):
    """What Conn and PacketConn share: per-direction deadlines and the local address.

    Go: net/net.go conn (the struct both embed)
    """

    __slots__ = ()

    def set_read_deadline(self, t: float | None) -> None:
        """Go: net/net.go conn.SetReadDeadline"""
        self._fd.set_read_deadline(t)

    def set_write_deadline(self, t: float | None) -> None:
        """Go: net/net.go conn.SetWriteDeadline"""
        self._fd.set_write_deadline(t)

    @property
    def local_addr(self) -> Addr:
        """Go: net/net.go conn.LocalAddr"""
        return self._local()


class Conn(_Conn):
    """A stream or connected datagram connection: made by ``dial`` and ``Listener.accept``.

    Thread-safe: any thread may read, write, set deadlines or close; ``close()`` wakes every
    thread blocked in ``read`` or ``write`` with ``NetClosingError``.

    Go: net.Conn (net/net.go conn)
    """

    # The remote address: an IP one as its host (_raddr) and port (_rport), the tuple made
    # when asked (40 bytes less per connection than keeping it: the slot costs 16, the tuple
    # 56); any other (a unix path, an IPv6 one with a flow label or scope) whole in _raddr,
    # _rport None.
    __slots__ = ("_raddr", "_rport")

    def __init__(self, fd: FD, sock: _socket.socket, net: str, raddr: Addr | None = None) -> None:
        """Not for users: dial and Listener.accept make Conns.

        DIVERGENCE(go): the local address is asked of the OS on first use or at close, not
        here (Go's netFD.setAddr): about 150 bytes per connection that most servers never
        read. The remote address stays eager: getpeername fails once a peer has reset the
        connection, and a reset is exactly when one logs it.
        """
        super().__init__(fd, sock, net)
        if raddr is None or raddr == "":
            try:
                raddr = fd.control(lambda _: sock.getpeername())
            except OSError:
                pass
        self._raddr: Addr = "" if raddr is None else raddr
        self._rport: int | None = None
        if type(raddr) is tuple and (len(raddr) == 2 or raddr[2:] == (0, 0)):
            # (host, port), or IPv6's (host, port, 0, 0): remote_addr tells them apart by
            # the host, which has a colon only in IPv6.
            self._raddr = _shared_host(raddr[0])
            self._rport = raddr[1]
        if fd._cfd:
            fd.shed_socket()  # 48 bytes: the C core's reads and writes do without it

    def read(self, n: int) -> bytes:
        """At most n bytes from one successful read; ``b""`` at EOF. ``read(0)`` returns
        ``b""`` at once (after waiting for any read in progress).

        Go: net/net.go conn.Read
        """
        fd = self._fd
        return _conn_read(fd, fd.fdmu, n)  # fd.read(n), straight into C on the C core

    def read_into(self, buf: Buffer) -> int:
        """Like read, into a writable buffer; returns the byte count (0 at EOF).

        Go: net/net.go conn.Read
        """
        fd = self._fd
        return _conn_read_into(fd, fd.fdmu, buf)  # fd.read_into(buf)

    def write(self, data: Buffer) -> int:
        """Write all of data (any bytes-like object) and return its length; concurrent writes
        never interleave. An error part-way has ``.written`` set to the bytes already written.

        Go: net/net.go conn.Write
        """
        fd = self._fd
        return _conn_write(fd, fd.fdmu, data)  # fd.write(data)

    def close(self) -> None:
        """Close it, waking every thread blocked on it with ``NetClosingError``; return once
        the descriptor is closed. A second close does nothing. ``local_addr`` still answers.

        Go: net/net.go conn.Close
        """
        if self._laddr is None:
            try:
                self._local()  # kept for local_addr after close (see __init__)
            except OSError:
                pass  # closed already, or the OS would not say: close anyway
        super().close()

    def close_read(self) -> None:
        """Shut down the reading side: a read blocked on it, and every later read, returns
        ``b""`` at once (after any datagram still queued, on a datagram Conn).

        Go: net/tcpsock.go TCPConn.CloseRead
        """
        self._fd.shutdown(socket.SHUT_RD)

    def close_write(self) -> None:
        """Shut down the writing side: the peer reads EOF; a write blocked on it fails at
        once with ``BrokenPipeError``, as later writes do.

        Go: net/tcpsock.go TCPConn.CloseWrite
        """
        self._fd.shutdown(socket.SHUT_WR)

    def makefile(
        self,
        mode: str = "r",
        buffering: int | None = None,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> IO[Any]:
        """A buffered file object over this Conn, for ``readline()``, line iteration or text
        (modes ``r``, ``w``, ``b`` as in ``socket.makefile``). It reads with ``read_into`` and
        writes with ``write``, so the promises hold through it: a ``close()`` from another
        thread wakes a thread blocked in its ``readline()``. Closing the file object leaves
        the Conn open.

        Go: none (Go wraps a Conn in bufio.NewReader instead)
        """
        from threadpoll._fileobj import makefile

        return makefile(self, mode, buffering, encoding=encoding, errors=errors, newline=newline)

    @property
    def remote_addr(self) -> Addr:
        """Go: net/net.go conn.RemoteAddr"""
        port = self._rport
        if port is None:
            return self._raddr
        host = cast(str, self._raddr)
        return (host, port, 0, 0) if ":" in host else (host, port)

    def __repr__(self) -> str:
        return (
            f"<threadpoll.net.Conn {self._net} {_format_addr(self._repr_local())}"
            f"->{_format_addr(self.remote_addr)} {self._state()}>"
        )


class Listener(_Endpoint):
    """A stream listener made by ``listen``. ``close()`` wakes threads blocked in accept.

    Go: net.Listener (net/tcpsock.go TCPListener, net/unixsock.go UnixListener)
    """

    __slots__ = ("_unlink", "_family", "_sotype")

    def __init__(
        self,
        fd: FD,
        sock: _socket.socket,
        net: str,
        unlink: tuple[str | bytes, int, int] | None = None,
    ) -> None:
        """Not for users: listen makes Listeners."""
        super().__init__(fd, sock, net)
        self._local()  # at once: Go's listener knows its address (and the port it got)
        self._unlink = unlink
        self._family: int = sock.family
        self._sotype: int = sock.type & ~(_SOCK_NONBLOCK | _SOCK_CLOEXEC)

    def accept(self) -> Conn:
        """Wait for and return the next connection (non-blocking, close-on-exec; TCP ones
        get TCP_NODELAY and a 15 s keep-alive, as in Go).

        Go: net/tcpsock.go TCPListener.Accept
        """
        nfd, raddr = self._fd.accept()
        try:
            s = _socket.socket(self._family, self._sotype, 0, nfd)
        except BaseException:
            os.close(nfd)
            raise
        nw = _NETWORKS[self._net]
        fd = _new_fd(s, nw)
        try:
            if self._family != socket.AF_UNIX:
                _set_tcp_sockopts(s)
            return Conn(fd, s, self._net, raddr)
        except BaseException:
            fd.close()
            raise

    def close(self) -> None:
        """Stop listening, waking threads blocked in accept with ``NetClosingError``; a unix
        listener removes its socket file. A second close does nothing.

        Go: net/tcpsock.go TCPListener.Close, net/unixsock_posix.go UnixListener.close
        """
        try:
            self._fd.close()
        except ClosingError:
            return
        if self._unlink is not None:
            _unlink_if_same(self._unlink)

    @property
    def addr(self) -> Addr:
        """Go: net/tcpsock.go TCPListener.Addr"""
        return self._local()

    def __repr__(self) -> str:
        return (
            f"<threadpoll.net.Listener {self._net} {_format_addr(self._repr_local())} "
            f"{self._state()}>"
        )

    def __del__(
        self,
        _finalize: Any = _finalizer.finalize,
        _unlink_if_same: Callable[[tuple[str | bytes, int, int]], None] = _unlink_if_same,
    ) -> None:
        # Also runs at interpreter shutdown, when module globals may be None: everything it
        # calls is bound as a default or reached through self.
        fd = getattr(self, "_fd", None)
        closing = fd is None or fd.closing()
        super().__del__(_finalize)
        if not closing and getattr(self, "_unlink", None) is not None:
            try:
                _unlink_if_same(self._unlink)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001
                pass


class PacketConn(_Conn):
    """A datagram endpoint made by ``listen_packet``: ``read_from`` and ``write_to``.

    Go: net.PacketConn (net/udpsock.go UDPConn, net/unixsock.go UnixConn)
    """

    __slots__ = ("_family",)

    def __init__(self, fd: FD, sock: _socket.socket, net: str) -> None:
        """Not for users: listen_packet makes PacketConns."""
        super().__init__(fd, sock, net)
        self._local()  # at once, as Go's UDPConn: a bound endpoint
        self._family: int = sock.family

    def read_from(self, n: int) -> tuple[bytes, Addr]:
        """One datagram (truncated to n bytes) and the address it came from.

        Go: net/udpsock.go UDPConn.ReadFrom
        """
        return self._fd.recvfrom(n)

    def write_to(self, data: Buffer, addr: AddressArg) -> int:
        """Send data as one datagram to addr (a literal IP address and port, as
        ``read_from`` returns it, or a unix path); returns len(data).

        Go: net/udpsock.go UDPConn.WriteTo
        """
        return self._fd.sendto(data, self._sockaddr(addr))

    def _sockaddr(self, addr: object) -> Any:
        if self._family == socket.AF_UNIX:
            return _unix_addr(addr)
        a = _inet_addr(addr, _NETWORKS[self._net])
        fam = _ip_family(a.host)
        if fam is None:
            raise ValueError(f"write_to needs a literal IP address, not {a.host!r}")
        if fam == socket.AF_INET:
            if self._family == socket.AF_INET:
                return (a.host, a.port)
            return ("::ffff:" + a.host, a.port, 0, 0)  # IPv4-mapped, as Go's ipToSockaddr
        if self._family == socket.AF_INET:
            raise ValueError(f"cannot send to IPv6 address {a.host!r} from an IPv4 socket")
        return (a.host, a.port, a.flowinfo, a.scope_id)

    def __repr__(self) -> str:
        return (
            f"<threadpoll.net.PacketConn {self._net} {_format_addr(self._repr_local())} "
            f"{self._state()}>"
        )
