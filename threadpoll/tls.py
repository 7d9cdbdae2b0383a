"""Go-style TLS over a threadpoll ``Conn``: ``client``, ``server``, ``dial``, ``listen``.

Read beside Go's ``crypto/tls/conn.go``. As Go's ``tls.Conn`` sits on a ``net.Conn``, a
``TLSConn`` sits on a ``threadpoll.net.Conn``: OpenSSL (through the stdlib's ``ssl``) does the
protocol on two memory BIOs, and every byte that reaches or leaves the wire goes through the
Conn's descriptor, whose reads and writes park on its pollDesc (Go's ``Conn.Read`` and
``Conn.Write``). So the promises hold under TLS: ``close()`` from any thread wakes a thread
blocked anywhere in TLS with ``NetClosingError``; the Conn's deadlines bound every TLS
operation; one thread may read while another writes. Errors are the stdlib's ``ssl``
exceptions unchanged, plus the closing and deadline errors.

The TLS machinery (the two-BIO shuffle, its locks) is in ``threadpoll._tlsengine``, shared with
the drop-in ``ssl.SSLSocket``.

Differences from Go:

- DIVERGENCE(go): after a write fails part-way (a deadline, a reset) the records already
  sealed are kept and go out first on the next write, where Go marks the connection broken
  for writing; ``.written`` counts the plaintext sealed so far (it is committed), in steps of
  up to 64 KiB (``_CHUNK``), so the retry ``write(data[e.written:])`` sends no byte twice. A
  write whose deadline has already passed fails before it seals anything (``.written`` 0).
- DIVERGENCE(go): OpenSSL decides the protocol; ``ssl`` has no call to send a TLS 1.3
  KeyUpdate, so ``TLSConn`` cannot start one (it answers the peer's, as OpenSSL does).
"""

from __future__ import annotations

import _socket
import ssl
import time
from typing import Any

from threadpoll._tlsengine import _Engine, _fill_bytes, _FillBytes, _Transport
from threadpoll.net import Addr, AddressArg, Conn, Listener
from threadpoll.net import dial as _net_dial
from threadpoll.net import listen as _listen

__all__ = ["TLSConn", "TLSListener", "client", "server", "dial", "listen"]

_MSG_DONTWAIT = getattr(_socket, "MSG_DONTWAIT", 0)
# Go's closeNotify write deadline (crypto/tls/conn.go Conn.closeNotify): 5 s.
_CLOSE_NOTIFY_SECONDS = 5.0


# --- the Go-style front ------------------------------------------------------------------------


class _ConnTransport(_Transport):
    """A TLSConn's way to the wire: its Conn's FD, whose deadlines bound every wait. Each
    try is one non-blocking syscall under the FD's read or write lock, with the FD's parking
    between tries (Go: the Conn's Read and Write, each one pass of internal/poll's loop; in C
    on the C core). Where the platform has MSG_DONTWAIT each try passes it, so the
    descriptor's O_NONBLOCK flag, which another holder of the open file description may
    clear, never matters."""

    __slots__ = ("_fd",)

    def __init__(self, conn: Conn) -> None:
        self._fd = conn._fd

    def recv_into(self, buf: memoryview) -> int:
        return int(self._fd.recv_into(buf, 0, 0))

    def send(self, data: memoryview) -> int:
        return int(self._fd.send(data, 0))

    def check(self, read: bool) -> None:
        # A read returns plaintext already decrypted or in the memory BIO whatever the
        # deadline, as Go's Conn.Read returns c.input's; a write with a past deadline fails
        # before it seals anything (Go seals, fails and breaks the connection).
        if not read:
            self._fd.check_err(False)

    def fill_bytes(self) -> _FillBytes | None:
        return _fill_bytes if self._fd._cfd else None

    def peek_into(self, buf: memoryview) -> int | None:
        if not _MSG_DONTWAIT:
            return None
        fd = self._fd
        try:
            fd.incref()
        except OSError:
            return None
        try:
            # The FD's socket object, made on the first peek (a Conn's FD lets go of it).
            sock = fd._socket_or_none()
            if sock is None:
                return None
            return int(_socket.socket.recv_into(sock, buf, 0, _MSG_DONTWAIT))
        except OSError:
            return None  # nothing yet, or an error the next read reports
        finally:
            fd.decref()


class TLSConn:
    """A TLS connection over a ``threadpoll.net.Conn``, made by ``client``, ``server``,
    ``dial`` and ``TLSListener.accept``.

    Thread-safe: one thread may read while another writes; writes never interleave;
    ``close()`` from any thread wakes every thread blocked in it with ``NetClosingError``; the
    deadlines bound every operation, the handshake included.

    Go: crypto/tls.Conn
    """

    __slots__ = ("_conn", "_engine", "_t", "_server_side", "__weakref__")

    def __init__(
        self,
        conn: Conn,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        """Not for users: ``client`` and ``server`` make TLSConns."""
        if not isinstance(conn, Conn):
            raise TypeError(f"conn must be a threadpoll.net.Conn, not {type(conn).__name__}")
        if not isinstance(context, ssl.SSLContext):
            raise TypeError(f"context must be an ssl.SSLContext, not {type(context).__name__}")
        if server_hostname is not None and not isinstance(server_hostname, str):
            raise TypeError(
                f"server_hostname must be a str or None, not {type(server_hostname).__name__}"
            )
        if server_side and server_hostname:
            raise ValueError("server_hostname can only be specified in client mode")
        if not server_side and context.check_hostname and not server_hostname:
            raise ValueError("check_hostname requires server_hostname")
        self._conn = conn
        self._server_side = server_side
        self._t = _ConnTransport(conn)
        self._engine = _Engine.new(context, server_side, server_hostname, self, framed=False)

    def handshake(self) -> None:
        """Run the handshake now (``read`` and ``write`` run it first otherwise). A failure
        raises the stdlib's ``ssl.SSLError`` / ``ssl.SSLCertVerificationError``.

        Go: crypto/tls/conn.go Conn.Handshake
        """
        if not self._engine.handshake_done:
            self._engine.handshake(self._t)

    def read(self, n: int) -> bytes:
        """At most n bytes of plaintext; ``b""`` once the peer sent close_notify.
        A peer that closes without it raises ``ssl.SSLEOFError``.

        Go: crypto/tls/conn.go Conn.Read
        """
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        self.handshake()
        if n == 0:
            return b""
        try:
            return bytes(self._engine.read(self._t, n))
        except ssl.SSLZeroReturnError:
            return b""

    def read_into(self, buf: Any) -> int:
        """Like read, into a writable buffer; returns the byte count (0 after close_notify).

        Go: crypto/tls/conn.go Conn.Read
        """
        with memoryview(buf) as m:
            if m.readonly:
                raise TypeError("read_into needs a writable buffer")
            n = m.nbytes
        self.handshake()
        if n == 0:
            return 0
        try:
            return int(self._engine.read(self._t, n, buf))
        except ssl.SSLZeroReturnError:
            return 0

    def write(self, data: Any) -> int:
        """Write all of data and return its length; concurrent writes never interleave. An
        error part-way carries ``.written`` (see the module docstring).

        Go: crypto/tls/conn.go Conn.Write
        """
        if isinstance(data, str):
            raise TypeError("a bytes-like object is required, not 'str'")
        with memoryview(data) as m, m.cast("B") as view:
            return self._engine.write(self._t, view, False)

    def close_write(self) -> None:
        """Send close_notify and shut down the writing side: the peer reads EOF.

        Go: crypto/tls/conn.go Conn.CloseWrite
        """
        if not self._engine.handshake_done:
            raise OSError("tls: CloseWrite called before handshake complete")
        e = self._engine
        self._t.acquire(e.out_lock)
        try:
            with e.lock:
                try:
                    e.obj.shutdown()
                except ssl.SSLWantReadError:
                    pass  # the peer's close_notify is not waited for
            e.flush_locked(self._t)
        finally:
            e.out_lock.release()
        self._conn.close_write()

    def close(self) -> None:
        """Send close_notify (at most 5 s; not if a write is in flight), then close the Conn,
        waking every thread blocked in this connection with ``NetClosingError``. A second
        close does nothing.

        Go: crypto/tls/conn.go Conn.Close
        """
        e = self._engine
        if e.handshake_done and not self._conn._fd.closing():
            try:
                self._conn.set_write_deadline(time.monotonic() + _CLOSE_NOTIFY_SECONDS)
                e.close_notify(self._t)
            except (OSError, ssl.SSLError):
                pass  # closed all the same
        self._conn.close()

    def set_deadline(self, t: float | None) -> None:
        """Go: crypto/tls/conn.go Conn.SetDeadline"""
        self._conn.set_deadline(t)

    def set_read_deadline(self, t: float | None) -> None:
        """Go: crypto/tls/conn.go Conn.SetReadDeadline"""
        self._conn.set_read_deadline(t)

    def set_write_deadline(self, t: float | None) -> None:
        """Go: crypto/tls/conn.go Conn.SetWriteDeadline"""
        self._conn.set_write_deadline(t)

    def peer_certificate(self, binary_form: bool = False) -> Any:
        """The peer's certificate as ``ssl.SSLSocket.getpeercert`` gives it (None if it sent
        none); ValueError before the handshake.

        Go: crypto/tls/conn.go Conn.ConnectionState (PeerCertificates[0])
        """
        if not self._engine.handshake_done:
            raise ValueError("handshake not done yet")
        return self._engine.call(self._engine.obj.getpeercert, binary_form)

    def version(self) -> str | None:
        """The protocol version ("TLSv1.3", ...), None before the handshake."""
        v: str | None = self._engine.call(self._engine.obj.version)
        return v

    def cipher(self) -> tuple[str, str, int] | None:
        """The cipher in use, as ``ssl.SSLSocket.cipher`` gives it."""
        c: tuple[str, str, int] | None = self._engine.call(self._engine.obj.cipher)
        return c

    def selected_alpn_protocol(self) -> str | None:
        p: str | None = self._engine.call(self._engine.obj.selected_alpn_protocol)
        return p

    def verify_client_post_handshake(self) -> None:
        """Server side, TLS 1.3: ask the client for its certificate now; the request goes
        out with the next write (as in ``ssl``).
        """
        self._engine.call(self._engine.obj.verify_client_post_handshake)

    @property
    def local_addr(self) -> Addr:
        """Go: crypto/tls/conn.go Conn.LocalAddr"""
        return self._conn.local_addr

    @property
    def remote_addr(self) -> Addr:
        """Go: crypto/tls/conn.go Conn.RemoteAddr"""
        return self._conn.remote_addr

    @property
    def conn(self) -> Conn:
        """The underlying Conn. Go: crypto/tls/conn.go Conn.NetConn"""
        return self._conn

    def fileno(self) -> int:
        return self._conn.fileno()

    def __enter__(self) -> TLSConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        side = "server" if self._server_side else "client"
        return f"<threadpoll.tls.TLSConn {side} over {self._conn!r}>"


class TLSListener:
    """A listener whose ``accept`` returns server-side TLSConns (the handshake runs on the
    first read or write, or ``handshake()``).

    Go: crypto/tls.listener
    """

    __slots__ = ("_ln", "_context")

    def __init__(self, ln: Listener, context: ssl.SSLContext) -> None:
        if not isinstance(ln, Listener):
            raise TypeError(f"ln must be a threadpoll.net.Listener, not {type(ln).__name__}")
        if not isinstance(context, ssl.SSLContext):
            raise TypeError(f"context must be an ssl.SSLContext, not {type(context).__name__}")
        self._ln = ln
        self._context = context

    def accept(self) -> TLSConn:
        """Go: crypto/tls/tls.go listener.Accept"""
        c = self._ln.accept()
        try:
            return server(c, self._context)
        except BaseException:
            c.close()
            raise

    def close(self) -> None:
        """Go: crypto/tls/tls.go listener.Close"""
        self._ln.close()

    @property
    def addr(self) -> Addr:
        return self._ln.addr

    def set_deadline(self, t: float | None) -> None:
        self._ln.set_deadline(t)

    def fileno(self) -> int:
        return self._ln.fileno()

    def __enter__(self) -> TLSListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<threadpoll.tls.TLSListener over {self._ln!r}>"


def client(conn: Conn, context: ssl.SSLContext, *, server_hostname: str | None = None) -> TLSConn:
    """The client side of TLS over conn (the handshake runs on first use or ``handshake()``).

    Go: crypto/tls.Client
    """
    return TLSConn(conn, context, server_side=False, server_hostname=server_hostname)


def server(conn: Conn, context: ssl.SSLContext) -> TLSConn:
    """The server side of TLS over conn.

    Go: crypto/tls.Server
    """
    return TLSConn(conn, context, server_side=True)


def dial(
    network: str,
    address: AddressArg,
    context: ssl.SSLContext,
    *,
    server_hostname: str | None = None,
    timeout: float | None = None,
    deadline: float | None = None,
) -> TLSConn:
    """Dial and run the client handshake; ``timeout``/``deadline`` bound both (as
    ``threadpoll.net.dial`` documents) and do not carry over to the connection.
    ``server_hostname`` defaults to the address's host.

    Go: crypto/tls.DialWithDialer
    """
    if not isinstance(context, ssl.SSLContext):
        raise TypeError(f"context must be an ssl.SSLContext, not {type(context).__name__}")
    if server_hostname is None and context.check_hostname:
        server_hostname = _host_of(address)
    c = _net_dial(network, address, timeout=timeout, deadline=deadline)
    try:
        tc = client(c, context, server_hostname=server_hostname)
        if timeout is not None or deadline is not None:
            d = min(
                time.monotonic() + timeout if timeout is not None else float("inf"),
                deadline if deadline is not None else float("inf"),
            )
            c.set_deadline(d)
        tc.handshake()
        c.set_deadline(None)
        return tc
    except BaseException:
        c.close()
        raise


def _host_of(address: object) -> str | None:
    if isinstance(address, tuple) and address and isinstance(address[0], str):
        return address[0]
    if isinstance(address, str) and ":" in address:
        host = address.rsplit(":", 1)[0]
        return host[1:-1] if host.startswith("[") else host
    return None


def listen(network: str, address: AddressArg, context: ssl.SSLContext) -> TLSListener:
    """Listen on a stream network; accepted connections are server-side TLSConns.

    Go: crypto/tls.Listen
    """
    if not isinstance(context, ssl.SSLContext):
        raise TypeError(f"context must be an ssl.SSLContext, not {type(context).__name__}")
    return TLSListener(_listen(network, address), context)
