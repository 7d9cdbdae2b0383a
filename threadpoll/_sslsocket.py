"""The drop-in ``ssl.SSLSocket`` for threadpoll sockets.

``SSLContext.wrap_socket()`` on a ``threadpoll.socket.socket`` returns an ``SSLSocket`` of this
module: an instance of the stdlib's ``ssl.SSLSocket`` *and* of ``threadpoll.socket.socket``.
Its TLS is the stdlib's own ``_ssl`` socket object (OpenSSL reading and writing the descriptor
itself, as under the stdlib's SSLSocket), driven in non-blocking steps: each blocking TLS
operation (handshake, ``recv``, ``recv_into``, ``read``, ``send``, ``sendall``, ``write``,
``unwrap``, ``sendfile``) runs one step and, on ``SSLWantReadError``/``SSLWantWriteError``,
parks on the descriptor's pollDesc like any other read or write, then runs the next. So the
promises hold: ``close()`` from any thread wakes it with ``NetClosingError``; ``settimeout``
bounds the whole call and raises the stdlib's ``TimeoutError('The read operation timed
out')`` (or write, handshake); the read and write deadlines raise ``DeadlineExceededError``;
an error from a write carries ``.written``; one thread may read while another writes. A
non-blocking socket (``settimeout(0)``) raises ``SSLWantReadError``/``SSLWantWriteError`` as
the stdlib's does. Everything else (unexpected EOF, ``suppress_ragged_eofs``, ``pending()``,
``unwrap``, ``select()`` on the socket, ``makefile``, the certificate calls) is the stdlib's
own behaviour, because it is the stdlib's code: OpenSSL reads the socket no further than the
record it needs, as it always does.

A step (``_SSLObj._step``):

- runs under the connection's lock, ``_SSLObj.lock``: OpenSSL's ``SSL`` is not safe for
  concurrent use. The lock guards one step, never a park, so a reader waiting for data never
  stops a writer. It is re-entrant: OpenSSL calls Python back inside a step (the SNI callback,
  the message callback), and ``_ssl`` runs signal handlers between its OpenSSL call and its
  return; a handler may use the same socket.
- holds an FD reference (an ``incref`` for the first try, the FD's read or write lock when it
  runs from ``raw_read``/``raw_write`` after a park), so ``close()`` waits for a running step
  and a recycled fd number can never receive its I/O.
- needs the descriptor non-blocking and the C-level timeout 0: OpenSSL's socket BIO makes
  plain read(2)/write(2) calls, with no ``MSG_DONTWAIT``, and ``_ssl`` waits by itself
  (poll(2)) for any C-level timeout but 0. A socket with a timeout, or non-blocking, is in
  that mode already (the stdlib made the descriptor non-blocking for it, and threadpoll keeps
  its C-level timeout 0). A socket in blocking mode (``settimeout(None)``) keeps a blocking
  descriptor, as DESIGN promises: each step makes it non-blocking (C-level timeout 0,
  O_NONBLOCK) and puts it back after, two ioctl(FIONBIO) calls per step, as accept and
  connect do for their call (``threadpoll.socket._nonblocking``). So a blocking TLS socket's
  descriptor is non-blocking only while a step runs, under the lock; between steps, while
  parked too, it is in the mode the socket's timeout gives it (another holder of the open
  file description sees O_NONBLOCK during a step, and a step does depend on the flag: one
  whose flag another holder clears mid-step would block, as the stdlib's would).
- ``settimeout`` takes the same lock, so a step puts back the mode the timeout gives now.

Writes: one writer at a time holds ``_SSLObj.wlock`` for its whole call (writes never
interleave, and OpenSSL requires a write that wanted I/O to be retried with the same data
before any other). A blocking write goes in steps of up to 64 KiB (``_CHUNK``), so an error
part-way (a deadline, a timeout, close) carries ``.written``: the plaintext of the steps that
finished and of the step that was cut short. DIVERGENCE(go): the step that was cut short
stays with OpenSSL, which has sealed and perhaps sent part of it; the next write sends the
rest of it first (``_SSLObj.unsent``), where Go marks the connection broken for writing. So
``.written`` counts that step as written (it is committed: it will go out before anything
else), and the usual retry, ``sendall(data[e.written:])``, sends no byte twice.

A writer never waits for ``wlock`` where it would wait for itself: a signal handler on top of
its own thread's write, or a callback or handler inside a step (holding ``lock``, which the
writer holding ``wlock`` needs for its next step), gets ``RuntimeError('reentrant call: ...')``
as on a plain threadpoll socket. A read or write whose deadline has passed fails before its
first step, as a plain socket's does. In a forked child, a wlock that a parent thread held
makes every write fail with the poisoned descriptor's error (``_after_fork_in_child``), as
fd_unix's FDs do, instead of waiting for ever.

A socket the poller refused (not pollable) has the stdlib's behaviour and none of the
promises, as a plain threadpoll socket does: its steps are ``_ssl``'s own blocking calls.

Two routes. OpenSSL on a socket holds at most one unfinished write: after a write step that
wanted to write, nothing else may be written until that step is retried with the same data
and finishes. A read that must answer the peer on the spot (the client's Certificate and
Finished for a TLS 1.3 post-handshake CertificateRequest; a TLS 1.2 renegotiation; before
OpenSSL 3.0, a KeyUpdate that asks for one back) while another thread's write is parked
mid-record therefore fails, fatally, with ``SSLError`` (BAD_LENGTH or BAD_WRITE_RETRY), as it
does on the stdlib's own SSLSocket with a timeout used from two threads (without a timeout,
the stdlib's two threads share the ``SSL`` object with no lock at all). So the route is
chosen per connection (``_new_sslobj``):

- ``_SSLObj`` (above): ``_ssl`` on the descriptor, the stdlib's own I/O and copies. Every
  connection takes it, but
- ``_BIOSSLObj``: an SSLObject on two memory BIOs (``threadpoll._tlsengine._Engine``, as
  ``threadpoll.tls``), fed through the descriptor by ``_SockTransport``, for a client whose
  context has ``post_handshake_auth`` on, and for every connection where OpenSSL is older
  than 3.0 (which answers a KeyUpdate from the read; 3.0 leaves it to the next write). Its
  reads queue their answers behind a parked write instead of failing. It costs more: copies
  through the BIOs and more Python per record (per 64 KiB written and read back on the C
  core, 1,154k instructions where the first route makes 593k and the stdlib 558k).
- What is left on the first route: a TLS 1.2 server's renegotiation request (HelloRequest)
  that reaches a client while another thread's write is parked mid-record fails with the
  stdlib's SSLError, as on the stdlib's SSLSocket. (OpenSSL 3.0 servers refuse a client's
  renegotiation with an alert, which OpenSSL sends after the unfinished write.) Clients
  cannot be told apart here: any context that allows TLS 1.2 may meet it.

How it is hooked in: ``SSLContext.sslsocket_class`` is set to ``SSLSocket`` below (when
``threadpoll.socket`` is imported), whose ``_create`` hands any socket that is not a threadpoll
socket to the stdlib's own ``ssl.SSLSocket._create``, unchanged. A context whose
``sslsocket_class`` was set by its user keeps it.
"""

from __future__ import annotations

import _socket
import errno
import os
import socket as _stdsocket
import ssl
import threading
import time
import weakref
from typing import Any, Callable

from threadpoll import socket as _tpsocket
from threadpoll._poll.fd_unix import CallLimit, _reentered, acquire_until
from threadpoll._tlsengine import (
    _Engine,
    _fill_bytes,
    _FillBytes,
    _reentered_step,
    _Transport,
    _want_read,
    _want_write,
)
from threadpoll.errors import DeadlineExceededError, with_written

__all__ = ["SSLSocket", "install"]

_CSocket = _socket.socket
_c_settimeout = _CSocket.settimeout
# Taken to hand out SSLSocket._leftover (cleartext after an unwrap) as one step: two threads
# reading at once get different bytes. Re-entrant: a signal handler may read meanwhile (held
# for a few lines, never across a call that can wait).
_leftover_lock = threading.RLock()
_StdSSLSocket = ssl.SSLSocket
_MSG_DONTWAIT = getattr(_socket, "MSG_DONTWAIT", 0)
_monotonic = time.monotonic
_get_ident = threading.get_ident
_WantRead = ssl.SSLWantReadError
_WantWrite = ssl.SSLWantWriteError
# Plaintext per SSL_write in a blocking write: .written moves in these steps.
_CHUNK = 65536
# OpenSSL before 3.0 answers a KeyUpdate that asks for one back from inside SSL_read (3.0
# leaves it to the next write): there, every connection takes the memory-BIO route.
_BIO_ONLY = ssl.OPENSSL_VERSION_INFO < (3, 0)


def _timed_out(what: str) -> OSError:
    """The stdlib's timeout error for a TLS operation ("read", "write", "handshake")."""
    return _stdsocket.timeout(f"The {what} operation timed out")


class _SSLObj:
    """What ``ssl.SSLSocket`` keeps in ``_sslobj``, with the same methods: the stdlib's C
    ``_ssl._SSLSocket`` on this socket (``obj``), whose I/O methods run here in steps that
    park between them (see the module docstring). The stdlib's SSLSocket code runs unchanged
    on top."""

    __slots__ = ("obj", "lock", "wlock", "wowner", "unsent", "cut", "_owner", "__weakref__")

    def __init__(self, owner: SSLSocket, server_side: bool, session: Any) -> None:
        # Weak, as _ssl's own links to its socket: the SSLSocket holds this object, and a
        # cycle would keep an unclosed socket from its ResourceWarning and its close.
        self._owner = weakref.ref(owner)
        self.lock = threading.RLock()  # one step at a time (see the module docstring)
        self.wlock = threading.Lock()  # one writer at a time, for its whole call
        # The thread ident of wlock's holder (0: none), for the re-entry checks. Written
        # by the holder only, under wlock. Benign race: _wlock_wait reads it without wlock,
        # only to compare it with its own ident, which only its own thread stores (and
        # clears before letting wlock go), and with _POISONED, stored in a fork child
        # before it has a second thread.
        self.wowner = 0
        # A blocking write's step that an error cut short: its plaintext, which OpenSSL
        # holds part of; the next write finishes it first. Guarded by wlock.
        self.unsent: bytes | None = None
        # The current write step wanted I/O (OpenSSL holds part of it). Guarded by wlock.
        self.cut = False
        # guarded by lock (each call on it is a step or runs under the lock)
        self.obj = owner._context._wrap_socket(  # type: ignore[attr-defined]
            owner, server_side, owner.server_hostname, owner=owner, session=session
        )
        _live.add(self)  # for _after_fork_in_child

    def _after_fork_in_child(self, me: int) -> None:
        """In a forked child (one thread, ``me``): a lock a parent thread held is never
        released. The step lock is replaced (a step a parent thread was in held an FD
        reference or lock, which poisoned the FD: its I/O fails already). A wlock a parent
        thread held (its write unfinished, OpenSSL holding part of it) is replaced by one that
        stays held, marked ``_POISONED``: every write then fails as the poisoned FD's calls
        do, instead of waiting for ever."""
        lock = self.lock
        if lock.acquire(False):  # free, or the forking thread's own (re-entrant)
            lock.release()
        else:
            self.lock = threading.RLock()
        if self.wowner != me:
            wlock = self.wlock
            if wlock.acquire(False):
                wlock.release()
            else:
                wlock = threading.Lock()
                wlock.acquire()
                self.wlock = wlock
                self.wowner = _POISONED

    def _sock(self) -> SSLSocket:
        sock = self._owner()
        if sock is None:
            raise ValueError("the SSL socket is gone")
        return sock

    # --- steps -----------------------------------------------------------------------------

    def _step(self, sock: SSLSocket, op: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """One ``_ssl`` call, non-blocking, under the lock. The caller holds an FD reference."""
        with self.lock:
            if sock._timeout is None:
                _c_settimeout(sock, 0.0)
                try:
                    return op(*args)
                finally:
                    _c_settimeout(sock, None if sock._timeout is None else 0.0)
            return op(*args)

    def _run(
        self,
        what: str,
        op: Callable[..., Any],
        args: tuple[Any, ...],
        start: float = 0.0,
        writing: bool = False,
    ) -> Any:
        """``op(*args)`` (a method of ``obj``) to its end: a first step; then, while it wants
        to read or write, park on the pollDesc in that direction and step again, within the
        call's timeout (counted from ``start``, or from now if 0), the deadlines and close.
        ``what`` names the operation in the timeout error ("" for shutdown: by the direction
        it waits in, as ``_ssl`` names it). A non-blocking socket raises the step's want.
        ``writing``: a write step of a blocking write, which sets ``cut`` once it has wanted
        I/O."""
        sock = self._owner()
        if sock is None:
            raise ValueError("the SSL socket is gone")
        if not start and sock._timeout:
            start = _monotonic()
        d = sock._desc
        fd = d.fd
        fd.incref()
        try:
            if not d.pollable:
                return op(*args)  # the stdlib's own blocking call (see the module docstring)
            if (what == "read" or what == "write") and sock._timeout != 0.0:
                # A deadline that has passed fails the call even if its first step could
                # finish, as in raw_read/raw_write; a non-blocking call has no deadlines.
                fd.check_err(what == "read")
            with self.lock:  # _step, inline: the first try is the hot path
                if sock._timeout is None:
                    _c_settimeout(sock, 0.0)
                    try:
                        return op(*args)
                    finally:
                        _c_settimeout(sock, None if sock._timeout is None else 0.0)
                return op(*args)
        except _WantRead:
            if sock._timeout == 0.0:
                raise
            reading = True
        except _WantWrite:
            if sock._timeout == 0.0:
                raise
            reading = False
        finally:
            fd.decref()
        if writing:
            self.cut = True
        return self._park(sock, what, op, args, reading, start)

    def _park(
        self,
        sock: SSLSocket,
        what: str,
        op: Callable[..., Any],
        args: tuple[Any, ...],
        reading: bool,
        start: float,
    ) -> Any:
        """_run after a step that wanted I/O: park in that direction and step again, under
        the FD's read or write lock, until a step ends."""
        fd = sock._desc.fd
        timeout = sock._timeout
        want = [reading]  # the direction the last step asked for
        got: list[Any] = []

        def expired() -> OSError:
            return _timed_out(what or ("read" if want[0] else "write"))

        limit = None if timeout is None else CallLimit(start + timeout, expired)

        def attempt(_sysfd: int) -> bool:
            try:
                got.append(self._step(sock, op, args))
            except _WantRead:
                if want[0]:
                    return False
                want[0] = True  # the other direction: park there
            except _WantWrite:
                if not want[0]:
                    return False
                want[0] = False
            return True

        while not got:
            if want[0]:
                fd.raw_read(attempt, limit)
            else:
                fd.raw_write(attempt, limit)
        return got[0]

    # --- I/O -------------------------------------------------------------------------------

    def do_handshake(self) -> None:
        self._run("handshake", self.obj.do_handshake, ())

    def read(self, n: int = 1024, buffer: Any = None) -> Any:
        if buffer is None:
            return self._run("read", self.obj.read, (n,))
        return self._run("read", self.obj.read, (n, buffer))

    def write(self, data: Any) -> int:
        sock = self._sock()
        timeout = sock._timeout
        start = _monotonic() if timeout else 0.0
        write = self.obj.write
        # One writer at a time. A second meanwhile: SSLWantWriteError at once for timeout 0;
        # otherwise it waits, on a socket the poller refused as on a pollable one.
        wlock = self.wlock
        if not wlock.acquire(False):
            try:
                self._wlock_wait(timeout, start)
            except BaseException as e:
                if timeout != 0.0:
                    with_written(e, 0)
                raise
        self.wowner = _get_ident()
        try:
            if timeout == 0.0 or not sock._desc.pollable:
                # One step, as the stdlib's: the caller retries with the same data on
                # SSLWantWriteError (OpenSSL's contract), and gets its length once it is out.
                if self.unsent is not None:
                    self._run("write", write, (self.unsent,), start)
                    self.unsent = None
                return int(self._run("write", write, (data,), start))
            if self.unsent is not None:
                try:
                    self._run("write", write, (self.unsent,), start)
                except BaseException as e:
                    with_written(e, 0)
                    raise
                self.unsent = None
            if data.__class__ is bytes and len(data) <= _CHUNK:
                # One step's worth (the bulk path): no view, no chunks.
                self.cut = False
                try:
                    self._run("write", write, (data,), start, True)
                except BaseException as e:
                    if self.cut:
                        # Committed: the next write sends it (see the module docstring).
                        self.unsent = data
                        with_written(e, len(data))
                    else:
                        with_written(e, 0)
                    raise
                return len(data)
            return self._write_chunks(data, start)
        finally:
            self.wowner = 0
            wlock.release()

    def _wlock_wait(self, timeout: float | None, start: float) -> None:
        """Take wlock, which another holds (a first ``acquire(False)`` failed), for a write
        call with this timeout (0: SSLWantWriteError at once); the caller then notes itself
        in ``wowner``. Refused with RuntimeError where waiting would wait for itself: on top
        of this thread's own write (a signal handler), or inside a step on this connection
        (a callback or a handler there holds ``lock``, which the writer that holds wlock
        needs for its next step)."""
        if self.wowner == _POISONED:
            raise _poisoned_by_fork()
        if timeout == 0.0:
            raise _want_write()  # another thread is writing: this would wait
        if self.wowner == _get_ident():
            raise _reentered(False)
        if self.lock._is_owned():  # type: ignore[attr-defined]  # C's RLock has it
            raise _reentered_step()
        acquire_until(self.wlock, None if timeout is None else start + timeout, _write_timed_out)

    def _write_chunks(self, data: Any, start: float) -> int:
        """A blocking write in steps of up to _CHUNK: the rest of write. Must be called
        holding wlock."""
        write = self.obj.write
        written = 0
        with memoryview(data) as m, m.cast("B") as view:
            total = view.nbytes
            while True:  # do-while: a write of b"" still runs one step
                chunk = view[written : written + _CHUNK]
                self.cut = False
                try:
                    self._run("write", write, (chunk,), start, True)
                except BaseException as e:
                    if self.cut:
                        # Committed: the next write sends it (see the module docstring).
                        self.unsent = bytes(chunk)
                        written += chunk.nbytes
                    with_written(e, written)
                    raise
                written += chunk.nbytes
                if written >= total:
                    return total

    def shutdown(self) -> Any:
        """Send close_notify and wait for the peer's (the stdlib's unwrap); a write cut short
        is finished first."""
        start = _monotonic()
        sock = self._sock()
        wlock = self.wlock
        if not wlock.acquire(False):
            self._wlock_wait(sock._timeout, start)
        self.wowner = _get_ident()
        try:
            if self.unsent is not None:
                self._run("write", self.obj.write, (self.unsent,), start)
                self.unsent = None
            return self._run("", self.obj.shutdown, (), start)
        finally:
            self.wowner = 0
            wlock.release()

    # --- no I/O: one step under the lock ---------------------------------------------------

    def pending(self) -> int:
        with self.lock:
            return int(self.obj.pending())

    def __getattr__(self, name: str) -> Any:
        lock = self.lock
        with lock:  # a property of _ssl's object reads OpenSSL's state
            attr = getattr(self.obj, name)
        if not callable(attr):
            return attr

        def step(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return attr(*args, **kwargs)

        return step

    @property
    def context(self) -> ssl.SSLContext:
        with self.lock:
            return self.obj.context  # type: ignore[no-any-return]

    @context.setter
    def context(self, ctx: ssl.SSLContext) -> None:
        with self.lock:
            self.obj.context = ctx

    @property
    def session(self) -> Any:
        with self.lock:
            return self.obj.session

    @session.setter
    def session(self, session: Any) -> None:
        with self.lock:
            self.obj.session = session

    @property
    def session_reused(self) -> bool:
        with self.lock:
            return bool(self.obj.session_reused)


def _write_timed_out() -> OSError:
    return _timed_out("write")


# _SSLObj.wowner of a connection whose write a parent thread was in when the process forked.
_POISONED = -1

# Every _SSLObj not collected yet, for _after_fork_in_child.
_live: weakref.WeakSet[_SSLObj] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """Every live _SSLObj made usable in a forked child, or its writes poisoned."""
    me = threading.get_ident()
    # The WeakSet's own references (one thread is left: nothing races with this).
    refs: list[weakref.ref[_SSLObj]] = list(_live.data)  # type: ignore[attr-defined]
    for r in refs:
        obj = r()
        if obj is not None:
            obj._after_fork_in_child(me)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _poisoned_by_fork() -> OSError:
    """A poisoned FD's error (fd_unix FD._closed_error), word for word."""
    return OSError(
        errno.EBADF,
        "threadpoll: this descriptor was in use by another thread when the process "
        "forked; it cannot be used in the child (close it and open a new one)",
    )


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

    def fill_bytes(self) -> _FillBytes | None:
        return _fill_bytes if self.sock._desc.fd._cfd else None

    def check(self, read: bool) -> None:
        d = self.sock._desc
        if d.pollable and not self.nonblocking:  # a non-blocking call has no deadlines
            d.fd.check_err(read)

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
        if self.nonblocking:
            # Another thread's call holds it (parked, perhaps): this one would wait.
            if not lock.acquire(False):
                raise _want_write() if self.what == "write" else _want_read()
            return
        acquire_until(lock, self.until, self._timed_out)


class _BIOSSLObj:
    """The other ``_sslobj`` (see the module docstring, "Two routes"): the same methods over
    an _Engine, an SSLObject on two memory BIOs fed through the descriptor by
    ``_SockTransport``; the stdlib's SSLSocket code runs unchanged on top."""

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
    def lock(self) -> Any:
        """The engine's step lock (what SSLSocket.settimeout takes, as for _SSLObj)."""
        return self._engine.lock

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

    _leftover = b""  # _BIOSSLObj: cleartext the peer sent right after its close_notify (unwrap)
    # Closed while TLS was on: _before_close drains the socket. Written by the closer before
    # it closes the FD; read by whichever thread destroys the FD, after the last reference
    # leaves: ordered by the fdMutex's lock (the closed mark, then the last decref).
    _discard_at_close = False
    # What the stdlib's SSLSocket keeps (Lib/ssl.py SSLSocket._create), typed for mypy.
    _context: ssl.SSLContext
    _session: Any
    _sslobj: _SSLObj | _BIOSSLObj | None
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
                self._sslobj = _new_sslobj(self, server_side, session)
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
        self._sslobj = _new_sslobj(self, False, self._session)
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
            if not hasattr(e, "written"):
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

    def settimeout(self, value: float | None, /) -> None:
        """threadpoll's, under the TLS connection's lock: a step running meanwhile puts the
        descriptor back in the mode the new timeout gives it (see the module docstring)."""
        sslobj = getattr(self, "_sslobj", None)
        if sslobj is None:
            _tpsocket.socket.settimeout(self, value)
            return
        with sslobj.lock:
            _tpsocket.socket.settimeout(self, value)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        sslobj = self._sslobj
        if sslobj is not None and not flags:
            # Lib/ssl.py SSLSocket.recv and .read in one frame (their _checkClosed does
            # nothing): the bulk path.
            try:
                if sslobj.__class__ is _SSLObj:
                    return sslobj._run("read", sslobj.obj.read, (buflen,))  # type: ignore[no-any-return]
                return sslobj.read(buflen)  # type: ignore[no-any-return]
            except ssl.SSLError as x:
                if x.args[0] == ssl.SSL_ERROR_EOF and self.suppress_ragged_eofs:
                    return b""
                raise
        if self._leftover and sslobj is None and not flags:
            with _leftover_lock:  # two readers never take the same bytes
                left = self._leftover
                if left:
                    self._leftover = left[buflen:]
                    return left[:buflen]
        return _StdSSLSocket.recv(self, buflen, flags)

    def recv_into(self, buffer: Any, nbytes: Any = None, flags: int = 0) -> int:
        if self._leftover and self._sslobj is None and not flags:
            with _leftover_lock, memoryview(buffer) as m, m.cast("B") as v:
                left = self._leftover
                if left:
                    n = min(v.nbytes, nbytes or v.nbytes, len(left))
                    v[:n] = left[:n]
                    self._leftover = left[n:]
                    return n
        return _StdSSLSocket.recv_into(self, buffer, nbytes, flags)


def _new_sslobj(owner: SSLSocket, server_side: bool, session: Any) -> _SSLObj | _BIOSSLObj:
    """The route for a new TLS connection (see the module docstring, "Two routes"): the
    stdlib's ``_ssl`` on the descriptor, unless a read may have to answer the peer on the
    spot (a client with post-handshake authentication on; any connection where OpenSSL older
    than 3.0 answers a KeyUpdate from the read), which takes the memory-BIO engine."""
    if _BIO_ONLY or (not server_side and owner._context.post_handshake_auth):
        return _BIOSSLObj(owner, server_side, session)
    return _SSLObj(owner, server_side, session)


def install() -> None:
    """Make ``SSLContext.wrap_socket()`` build this module's SSLSocket for threadpoll
    sockets (idempotent; a context class whose ``sslsocket_class`` was changed keeps it)."""
    if ssl.SSLContext.sslsocket_class is _StdSSLSocket:
        ssl.SSLContext.sslsocket_class = SSLSocket


install()  # threadpoll.socket imports this module for this
