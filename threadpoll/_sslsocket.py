"""The drop-in ``ssl.SSLSocket`` for threadpoll sockets.

``SSLContext.wrap_socket()`` on a ``threadpoll.socket.socket`` returns an ``SSLSocket`` of this
module: an instance of the stdlib's ``ssl.SSLSocket`` *and* of ``threadpoll.socket.socket``.
Its TLS runs on an SSLObject over two memory BIOs (``threadpoll.tls._Engine``), fed through
the socket's descriptor by calls that park on its pollDesc, never by ``_ssl`` doing blocking
I/O on the fd. So every blocking TLS operation (handshake, ``recv``, ``recv_into``, ``read``,
``send``, ``sendall``, ``write``, ``unwrap``, ``sendfile``) keeps the promises: ``close()``
from any thread wakes it with ``NetClosingError``; ``settimeout`` bounds the whole call and
raises the stdlib's ``TimeoutError('The read operation timed out')`` (or write, handshake);
the read and write deadlines raise ``DeadlineExceededError``; an error from a write carries
``.written``; one thread may read while another writes. A non-blocking socket
(``settimeout(0)``) raises ``SSLWantReadError``/``SSLWantWriteError`` as the stdlib's does.

How it is hooked in: ``SSLContext.sslsocket_class`` is set to ``SSLSocket`` below (when
``threadpoll.socket`` is imported), whose ``_create`` hands any socket that is not a threadpoll
socket to the stdlib's own ``ssl.SSLSocket._create``, unchanged. A context whose
``sslsocket_class`` was set by its user keeps it.

All the raw I/O goes through ``_SockTransport``: one attempt with ``MSG_DONTWAIT`` (so it never
depends on the fd's O_NONBLOCK flag), then park on the pollDesc until ready, the call's time
limit, the deadline, or close.
"""

from __future__ import annotations

import _socket
import errno
import os
import socket as _stdsocket
import ssl
import time
import weakref
from typing import Any, Callable

from threadpoll import socket as _tpsocket
from threadpoll._poll.fd_unix import CallLimit, acquire_until
from threadpoll._tlsengine import _Engine, _Transport
from threadpoll.errors import DeadlineExceededError, with_written

__all__ = ["SSLSocket", "install"]

_CSocket = _socket.socket
_StdSSLSocket = ssl.SSLSocket
_MSG_DONTWAIT = getattr(_socket, "MSG_DONTWAIT", 0)
_monotonic = time.monotonic


class _SockTransport(_Transport):
    """One TLS call's way to the wire: the socket's descriptor, parking on its pollDesc until
    ``until`` (absolute monotonic seconds, None for no limit); ``nonblocking`` makes one
    attempt and raises BlockingIOError. ``what`` names the operation in the timeout error,
    as ``_ssl`` does ("read", "write", "handshake")."""

    __slots__ = ("sock", "until", "nonblocking", "what")

    def __init__(self, sock: SSLSocket, what: str) -> None:
        self.sock = sock
        self.what = what
        timeout = sock._timeout
        self.nonblocking = timeout == 0.0
        self.until = None if timeout is None or timeout == 0.0 else _monotonic() + timeout

    def _timed_out(self) -> OSError:
        return _stdsocket.timeout(f"The {self.what} operation timed out")

    def _io(self, reading: bool, op: Callable[..., int], *args: Any) -> int:
        sock = self.sock
        d = sock._desc
        fd = d.fd
        if self.nonblocking or not d.pollable:
            fd.incref()
            try:
                if not d.pollable:
                    return op(sock, *args[:-1], 0)  # the C-level timeout waits
                return op(sock, *args)
            finally:
                fd.decref()
        got: list[int] = []

        def attempt(_sysfd: int) -> bool:
            try:
                got.append(op(sock, *args))
            except BlockingIOError:
                return False
            return True

        try:
            if reading:
                fd.raw_read(attempt, CallLimit(self.until, self._timed_out))
            else:
                fd.raw_write(attempt, CallLimit(self.until, self._timed_out))
            return got[0]
        except _stdsocket.timeout as e:  # TimeoutError from 3.10; its own class on 3.9
            if isinstance(e, DeadlineExceededError):
                raise
            raise self._timed_out() from None

    def recv_into(self, buf: memoryview) -> int:
        if self.until is None and not self.nonblocking:
            d = self.sock._desc
            if d.direct:
                # No limit of its own: the FD's read loop (in C on the C core), which
                # adds MSG_DONTWAIT to each try and parks between tries.
                return int(d.fd.recv_into(buf, 0, 0))
        return self._io(True, _CSocket.recv_into, buf, 0, _MSG_DONTWAIT)

    def send(self, data: memoryview) -> int:
        if self.until is None and not self.nonblocking:
            d = self.sock._desc
            if d.direct:
                return int(d.fd.send(data, 0))  # as recv_into: the FD's own write loop
        return self._io(False, _CSocket.send, data, _MSG_DONTWAIT)

    def peek_into(self, buf: memoryview) -> int | None:
        d = self.sock._desc
        if not d.pollable or not _MSG_DONTWAIT:
            return None
        try:
            d.fd.incref()
        except OSError:
            return None
        try:
            return int(_CSocket.recv_into(self.sock, buf, 0, _MSG_DONTWAIT))
        except OSError:
            return None  # nothing yet, or an error the next read reports
        finally:
            d.fd.decref()

    def acquire(self, lock: Any) -> None:
        acquire_until(lock, self.until, self._timed_out)


class _SSLObj:
    """What ``ssl.SSLSocket`` keeps in ``_sslobj`` (the C ``_ssl._SSLSocket``), with the same
    methods, but over an _Engine: the stdlib's SSLSocket code runs unchanged on top."""

    __slots__ = ("_engine", "_owner")

    def __init__(self, owner: SSLSocket, server_side: bool, session: Any) -> None:
        # Weak, as _ssl's own link to its socket: the SSLSocket holds this object, and a
        # cycle would keep an unclosed socket from its ResourceWarning and its close.
        self._owner = weakref.ref(owner)
        self._engine = _Engine.new(
            owner._context, server_side, owner.server_hostname, owner, session
        )

    # --- I/O -------------------------------------------------------------------------------

    def do_handshake(self) -> None:
        self._engine.handshake(_SockTransport(self._sock(), "handshake"))

    def read(self, n: int = 1024, buffer: Any = None) -> Any:
        return self._engine.read(_SockTransport(self._sock(), "read"), n, buffer)

    def write(self, data: Any) -> int:
        t = _SockTransport(self._sock(), "write")
        with memoryview(data) as m, m.cast("B") as view:
            return self._engine.write(t, view, t.nonblocking)

    def shutdown(self) -> Any:
        self._engine.shutdown(_SockTransport(self._sock(), "read"))
        sock = self._sock()
        sock._leftover = self._engine.leftover()
        return sock

    def _sock(self) -> SSLSocket:
        sock = self._owner()
        if sock is None:
            raise ValueError("the SSL socket is gone")
        return sock

    # --- no I/O: one step under the engine's lock -----------------------------------------

    def pending(self) -> int:
        return int(self._engine.call(self._engine.obj.pending))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._engine.obj, name)
        if not callable(attr):
            return attr
        engine = self._engine

        def step(*args: Any, **kwargs: Any) -> Any:
            with engine.lock:
                return attr(*args, **kwargs)

        return step

    @property
    def context(self) -> ssl.SSLContext:
        return self._engine.obj.context  # type: ignore[no-any-return]

    @context.setter
    def context(self, ctx: ssl.SSLContext) -> None:
        with self._engine.lock:
            self._engine.obj.context = ctx

    @property
    def session(self) -> Any:
        with self._engine.lock:
            return self._engine.obj.session

    @session.setter
    def session(self, session: Any) -> None:
        with self._engine.lock:
            self._engine.obj.session = session

    @property
    def session_reused(self) -> bool:
        with self._engine.lock:
            return bool(self._engine.obj.session_reused)


class SSLSocket(_StdSSLSocket, _tpsocket.socket):  # type: ignore[misc]
    """An ``ssl.SSLSocket`` on a threadpoll socket; see the module docstring."""

    _leftover = b""  # cleartext the peer sent right after its close_notify (see unwrap)
    _discard_at_close = False  # closed while TLS was on: _before_close drains the socket
    # What the stdlib's SSLSocket keeps (Lib/ssl.py SSLSocket._create), typed for mypy.
    _context: ssl.SSLContext
    _session: Any
    _sslobj: _SSLObj | None
    _connected: bool
    do_handshake_on_connect: bool
    suppress_ragged_eofs: bool
    server_hostname: Any

    @classmethod
    def _create(
        cls,
        sock: Any,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: Any = None,
        context: Any = None,
        session: Any = None,
    ) -> Any:
        if not isinstance(sock, _tpsocket.socket):
            # Not ours: the stdlib's own SSLSocket, as if threadpoll were not there.
            return _StdSSLSocket._create.__func__(  # type: ignore[attr-defined]
                _StdSSLSocket,
                sock,
                server_side,
                do_handshake_on_connect,
                suppress_ragged_eofs,
                server_hostname,
                context,
                session,
            )
        # The stdlib's checks, in its order (Lib/ssl.py SSLSocket._create).
        if sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_TYPE) != _socket.SOCK_STREAM:
            raise NotImplementedError("only stream sockets are supported")
        if server_side:
            if server_hostname:
                raise ValueError("server_hostname can only be specified in client mode")
            if session is not None:
                raise ValueError("session can only be specified in client mode")
        if context.check_hostname and not server_hostname:
            raise ValueError("check_hostname requires server_hostname")

        # The stdlib makes the new socket on the same fd, then detaches the old one; a
        # threadpoll fd has one FD, so the old socket gives its fd up first (unregistered)
        # and the new one registers it again.
        family, type_, proto = sock.family, sock.type, sock.proto
        sock_timeout = sock.gettimeout()
        n = sock.detach()
        self = cls.__new__(cls)
        try:
            _tpsocket.socket.__init__(self, family, type_, proto, fileno=n)
        except BaseException:
            os.close(n)
            raise

        # Now this socket owns the descriptor: any failure closes it (as Lib/ssl.py does
        # from 3.13).
        try:
            self._context = context
            self._session = session
            self._closed = False
            self._sslobj = None
            self.server_side = server_side
            self.server_hostname = context._encode_hostname(server_hostname)
            self.do_handshake_on_connect = do_handshake_on_connect
            self.suppress_ragged_eofs = suppress_ragged_eofs

            try:
                self.getpeername()
            except OSError as e:
                if e.errno != errno.ENOTCONN:
                    raise
                connected = False
                blocking = self.getblocking()
                self.setblocking(False)
                try:
                    # As the stdlib: data already waiting on an unconnected socket must
                    # not pass for TLS plaintext.
                    early = _tpsocket.socket.recv(self, 1)
                except OSError as e2:
                    if e2.errno not in (errno.ENOTCONN, errno.EINVAL):
                        raise
                    early = b""
                self.setblocking(blocking)
                if early:
                    reason = "Closed before TLS handshake with data in recv buffer."
                    err = ssl.SSLError(e.errno, reason)
                    err.reason = reason
                    err.library = None  # type: ignore[assignment]
                    raise err from None
            else:
                connected = True

            self.settimeout(sock_timeout)
            self._connected = connected
            if connected:
                self._sslobj = _SSLObj(self, server_side, session)
                if do_handshake_on_connect:
                    if self.gettimeout() == 0.0:
                        raise ValueError(
                            "do_handshake_on_connect should not be specified for "
                            "non-blocking sockets"
                        )
                    self.do_handshake()
        except BaseException:
            try:
                self.close()
            except OSError:
                pass
            raise
        return self

    def do_handshake(self, block: bool = False) -> None:
        """The stdlib's, except that the timeout is restored only if it was changed: the
        stdlib's unconditional restore raises EBADF on a socket another thread closed during
        the handshake, hiding the closing error the promise is about."""
        self._check_connected()  # type: ignore[attr-defined]
        timeout = self.gettimeout()
        if not (timeout == 0.0 and block):
            self._sslobj.do_handshake()  # type: ignore[union-attr]
            return
        try:
            self.settimeout(None)
            self._sslobj.do_handshake()  # type: ignore[union-attr]
        finally:
            self.settimeout(timeout)

    def _real_connect(self, addr: Any, connect_ex: bool) -> Any:
        if self.server_side:
            raise ValueError("can't connect in server-side mode")
        if self._connected or self._sslobj is not None:
            raise ValueError("attempt to connect already-connected SSLSocket!")
        self._sslobj = _SSLObj(self, False, self._session)
        try:
            if connect_ex:
                rc = _tpsocket.socket.connect_ex(self, addr)
            else:
                rc = None
                _tpsocket.socket.connect(self, addr)
            if not rc:
                self._connected = True
                if self.do_handshake_on_connect:
                    self.do_handshake()
            return rc
        except (OSError, ValueError):
            self._sslobj = None
            raise

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send all of data as one whole write (writers never interleave); the timeout is
        the budget for the whole call; an error part-way carries ``.written``."""
        self._checkClosed()  # type: ignore[attr-defined]
        sslobj = self._sslobj
        if sslobj is None or self._timeout == 0.0:
            return _StdSSLSocket.sendall(self, data, flags)
        if flags != 0:
            raise ValueError(f"non-zero flags not allowed in calls to sendall() on {type(self)}")
        try:
            sslobj.write(data)
        except BaseException as e:
            with_written(e, 0)
            raise
        return None

    def _real_close(self) -> None:  # type: ignore[override]
        if self._sslobj is not None:
            self._discard_at_close = True
        _StdSSLSocket._real_close(self)  # type: ignore[attr-defined]

    def _before_close(self) -> None:
        """Throw away what the peer sent and nobody read (a TLS 1.3 server's session
        tickets, typically), so that the kernel ends the connection with FIN, not RST: a
        client that closes right after its handshake must not make the server's next read
        fail with ECONNRESET.

        FD._destroy calls this after unregistering the descriptor, right before close(2):
        the return from the drain's last recv is the only point between the two where
        another thread can take the GIL. Done earlier in close(), the server thread, which
        sends its tickets as soon as it has read our Finished, got the GIL at each syscall
        of close's (the poller's unregistering, a lock) and its tickets could arrive after
        the drain and before close(2): under load, test_ssl's ThreadedEchoServer read
        ECONNRESET and stopped, and the next connection was reset or refused.
        """
        if not self._discard_at_close or not _MSG_DONTWAIT:
            return
        try:
            buf = bytearray(16384)
            for _ in range(16):  # at most 256 KiB: a peer still sending gets its RST
                if not _CSocket.recv_into(self, buf, 0, _MSG_DONTWAIT):
                    return
        except OSError:
            return

    # After unwrap(): the cleartext that arrived with the peer's close_notify comes first.

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        sslobj = self._sslobj
        if sslobj is not None and not flags:
            # Lib/ssl.py SSLSocket.recv and .read in one frame (their _checkClosed does
            # nothing): the bulk path.
            try:
                return sslobj.read(buflen)  # type: ignore[no-any-return]
            except ssl.SSLError as x:
                if x.args[0] == ssl.SSL_ERROR_EOF and self.suppress_ragged_eofs:
                    return b""
                raise
        if self._leftover and sslobj is None and not flags:
            out, self._leftover = self._leftover[:buflen], self._leftover[buflen:]
            return out
        return _StdSSLSocket.recv(self, buflen, flags)

    def recv_into(self, buffer: Any, nbytes: Any = None, flags: int = 0) -> int:
        if self._leftover and self._sslobj is None and not flags:
            with memoryview(buffer) as m, m.cast("B") as v:
                n = min(v.nbytes, nbytes or v.nbytes, len(self._leftover))
                v[:n] = self._leftover[:n]
            self._leftover = self._leftover[n:]
            return n
        return _StdSSLSocket.recv_into(self, buffer, nbytes, flags)


def install() -> None:
    """Make ``SSLContext.wrap_socket()`` build this module's SSLSocket for threadpoll
    sockets (idempotent; a context class whose ``sslsocket_class`` was changed keeps it)."""
    if ssl.SSLContext.sslsocket_class is _StdSSLSocket:
        ssl.SSLContext.sslsocket_class = SSLSocket
