"""Drop-in sockets: a ``socket.socket`` subclass on threadpoll's FD.

``threadpoll.socket.socket`` has the stdlib's constructor, methods and behaviour, plus the five
promises: ``close()`` from another thread wakes every blocked call with ``NetClosingError``;
close is safe (it returns once every call has left and the OS fd is closed); ``set_deadline``,
``set_read_deadline`` and ``set_write_deadline`` take absolute ``time.monotonic()`` times;
``sendall`` never interleaves with another writer; one poller thread does all the waiting.
``patch()`` swaps it into the stdlib ``socket`` module, so threaded code written for the stdlib
(socketserver, http.server, http.client, smtplib, xmlrpc, ...) runs on it unchanged.

How a socket is built:

- The OS fd has one closer, the FD: it is made in ``__init__`` over the socket's own fd with
  ``sock=self``, so its socket calls go through the C-level methods of this very object. The
  C-level object never closes the fd itself: the FD detaches it and then close(2)s the fd,
  once the last call has left.
- The descriptor stays in the mode the user's code set, as the stdlib sets it: blocking for
  ``settimeout(None)``, non-blocking for a timeout or ``setblocking(False)`` (a child process
  that inherits it sees that mode). The C-level timeout is None or 0, so the C-level calls
  never wait by themselves; every attempt that may wait passes ``MSG_DONTWAIT``, so it never
  blocks whatever the mode (another holder of the open file description may change it at
  any time). accept, connect and sendfile have no such flag: they make the descriptor
  non-blocking for their syscall only (a ``settimeout`` meanwhile sets the mode as that
  syscall returns: ``_nonblocking``); so does each step of a TLS socket (``_sslsocket``:
  OpenSSL's own reads and writes).
- ``settimeout`` keeps its stdlib meaning, a per-call timeout raising ``TimeoutError('timed
  out')`` (``socket.timeout``), kept here in Python (``gettimeout`` reports it) while the
  C-level timeout stays 0. It bounds the whole call, the wait for the read or write lock
  included; ``sendall``'s timeout is its total budget. A deadline and a timeout may both be
  set: the earlier fires, the deadline as ``DeadlineExceededError``.
- A blocking call calls an FD method (``FD.recv``, ``FD.send``, ``FD.raw_read``...) with a
  ``CallLimit``, and the FD does the rest: its call gate for that direction (a lock whose
  wait the call's timeout bounds: the FD's read and write locks, Go's fdMutex, have no timed
  wait), then Go's steps: the read or write lock, prepare, the C-level call with
  ``MSG_DONTWAIT`` (holding no lock of its own, so a signal handler on this thread may use
  the socket), on EAGAIN park in the runtime. A non-blocking call (``settimeout(0)``,
  ``setblocking(False)``, ``MSG_DONTWAIT``) takes only an FD reference and makes one C-level
  call, as the stdlib's does: it never waits for anything, so deadlines, which bound waits,
  do not apply to it.
- A blocking call (no timeout) behaves as the kernel's blocking call would: ``send`` sends
  everything (``_send_all``), ``MSG_WAITALL`` waits for the full count (``_recv_all``), and
  ``SO_RCVTIMEO``/``SO_SNDTIMEO``, cached in the ``_Desc`` when set or adopted, bound its
  waits with the stdlib's ``BlockingIOError`` (``_kernel_until``).
- Every other method that touches the fd (``bind``, ``listen``, ``getsockname``,
  ``setsockopt``, ``shutdown``, ``dup``, ...) holds an FD reference while it runs.
- ``close()`` keeps the stdlib's ``makefile()`` reference counting: the FD closes, and wakes
  everyone, when the socket and every file made from it are closed. ``shutdown()`` wakes
  blocked threads at once.
- An unclosed socket that is garbage collected emits ``ResourceWarning`` as the stdlib's does;
  its FD is closed, without waiting, by the finalizer thread (``threadpoll/_poll/finalizer.py``).
- A second socket object made over an fd that a live threadpoll socket, Conn, Listener or
  PacketConn owns (``socket(fileno=other.fileno())``) shares its FD: a second registration of
  one fd with the poller would corrupt the first.
- Signal handlers run on the main thread inside whatever call it is making, and may use the
  same socket: ``close()`` from one does not wait for its own thread's call, and a call in
  the direction its own thread is in raises ``RuntimeError`` (it would wait for itself).

Per-call timeouts. A call with a timeout hands the FD a ``CallLimit``: while it waits, the
pollDesc's deadline for its direction is the earlier of the user's deadline and the call's
limit (Go's net sets a deadline per call where it needs one, as dial does for its context),
and the runtime's parked thread times its own wait, so no timer thread is needed. Which one
fired decides the error: ``TimeoutError('timed out')`` or ``DeadlineExceededError``.

What ``patch()`` does not cover: modules that bound the stdlib names at import (``from socket
import socket``) keep them; in the stdlib that is ``ssl``, on purpose: ``ssl.SSLSocket`` must
subclass the stdlib class, so ``patch()`` imports ``ssl`` first.

TLS: ``SSLContext.wrap_socket()`` on a threadpoll socket returns ``threadpoll._sslsocket.
SSLSocket``, an instance of both ``ssl.SSLSocket`` and this module's ``socket``, whose TLS runs
the stdlib's ``_ssl`` on this descriptor in non-blocking steps that park between them (or, for
a client with post-handshake authentication, an SSLObject fed through it), so the promises
hold under TLS too (the hook is installed when this module is imported; see
``threadpoll/_sslsocket.py``).
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import io
import math
import operator
import os
import socket as _stdsocket
import struct
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from typing import Any, Callable, TypeVar

from typing_extensions import Self, final

from threadpoll._poll import fd_unix
from threadpoll._poll.fd_unix import FD, CallLimit
from threadpoll._poll.fd_unix import try_recv as _try_recv
from threadpoll._poll.fd_unix import try_recv_into as _try_recv_into
from threadpoll._poll.fd_unix import try_send as _try_send
from threadpoll._poll.finalizer import finalizer as _finalizer
from threadpoll.errors import ClosingError, with_written

__all__ = [
    "socket",
    "wrap",
    "create_connection",
    "create_server",
    "socketpair",
    "fromfd",
    "patch",
    "unpatch",
    "patched",
]

_T = TypeVar("_T")

# The C socket type: its methods, called unbound, bypass this module's overrides.
_CSocket = _socket.socket
_StdSocket = _stdsocket.socket

# What the stdlib module holds before patch() replaces it.
_orig_socket = _stdsocket.socket
_orig_socketpair = _stdsocket.socketpair
_orig_create_connection = _stdsocket.create_connection
_orig_create_server = _stdsocket.create_server
_orig_fromfd = _stdsocket.fromfd

_monotonic = time.monotonic
_MSG_DONTWAIT = getattr(_socket, "MSG_DONTWAIT", 0)
_MSG_WAITALL = getattr(_socket, "MSG_WAITALL", 0)
_CONNECT_IN_PROGRESS = (errno.EINPROGRESS, errno.EINTR)
# The socket options that bound a blocking call's wait in the kernel, and struct timeval's
# layout (tv_usec is a long on Linux, an int on macOS: little-endian either way there).
_SO_RCVTIMEO = getattr(_socket, "SO_RCVTIMEO", None)
_SO_SNDTIMEO = getattr(_socket, "SO_SNDTIMEO", None)
_KERNEL_TIMEOUTS = tuple(o for o in (_SO_RCVTIMEO, _SO_SNDTIMEO) if o is not None)
_TIMEVAL_SEC = struct.Struct("@l")
_TIMEVAL_USEC = struct.Struct("@i" if sys.platform == "darwin" else "@l")
_TIMEVAL_SIZE = 16


def _timeval_seconds(raw: bytes) -> float:
    """A struct timeval, as getsockopt returns it, in seconds."""
    if len(raw) < _TIMEVAL_SEC.size + _TIMEVAL_USEC.size:
        return 0.0
    sec: int = _TIMEVAL_SEC.unpack_from(raw, 0)[0]
    usec: int = _TIMEVAL_USEC.unpack_from(raw, _TIMEVAL_SEC.size)[0]
    return max(0.0, sec + usec / 1e6)


# The largest per-call timeout the C socket accepts: nanoseconds in a signed 64-bit integer.
_TIMEOUT_NS_MAX = (1 << 63) - 1


# What a blocking call of each C-level read returns once the socket's read side is shut down
# and nothing is queued: an empty datagram from nobody (a stream socket returns it too, as
# EOF, without asking; see FD.shutdown). Fresh values each time: the lists are the caller's.
_EMPTY_READS: dict[Callable[..., Any], Callable[[], Any]] = {
    _CSocket.recv: lambda: b"",
    _CSocket.recv_into: lambda: 0,
    _CSocket.recvfrom: lambda: (b"", None),
    _CSocket.recvfrom_into: lambda: (0, None),
}
if hasattr(_CSocket, "recvmsg"):
    _EMPTY_READS[_CSocket.recvmsg] = lambda: (b"", [], 0, None)
    _EMPTY_READS[_CSocket.recvmsg_into] = lambda: (0, [], 0, None)


def _timed_out() -> OSError:
    """The stdlib's per-call timeout error, ``socket.timeout('timed out')``."""
    return _stdsocket.timeout("timed out")


# --- Waiting: per-call limits ----------------------------------------------------------------


def _kernel_timed_out() -> OSError:
    """What a blocking stdlib call raises when SO_RCVTIMEO or SO_SNDTIMEO expires: the
    kernel's EAGAIN, unchanged (``BlockingIOError``)."""
    return BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))


def _connect_timed_out() -> OSError:
    """What a blocking connect raises when SO_SNDTIMEO expires: the kernel's EINPROGRESS."""
    return BlockingIOError(errno.EINPROGRESS, os.strerror(errno.EINPROGRESS))


def _kernel_until(d: _Desc, reading: bool) -> float | None:
    """When a blocking call that starts now must give up, by SO_RCVTIMEO (reads, accept) or
    SO_SNDTIMEO (writes, connect); None if that option is not set."""
    k = d.rcvtimeo if reading else d.sndtimeo
    return _monotonic() + k if k else None


def _limit(
    d: _Desc, timeout: float | None, reading: bool, expired: Callable[[], OSError] = _timed_out
) -> CallLimit:
    """The limit of a call that starts now: its timeout (``expired()`` when it passes, by
    default TimeoutError('timed out')) or, for a blocking call, SO_RCVTIMEO or SO_SNDTIMEO
    (the kernel's EAGAIN when it passes, as the stdlib's blocking call raises)."""
    if timeout is None:
        return CallLimit(_kernel_until(d, reading), _kernel_timed_out)
    return CallLimit(_monotonic() + timeout, expired)


# The limit of a blocking call with no timeout of its own: no limit, but the FD's call gate.
# Never changed (calls that renew their budget make their own CallLimit).
_NO_LIMIT = CallLimit(None, _timed_out)


# --- Descriptors shared by socket objects ------------------------------------------------


@final
class _Desc:
    """What every threadpoll socket object on one OS descriptor shares: the FD and the
    front's state kept per descriptor (whether it is pollable, its kernel timeouts). The
    waits for another caller in the same direction, bounded by a call's timeout, are the
    FD's (its call gates: FD._gated).
    """

    __slots__ = (
        "fd",
        "pollable",
        "direct",
        "rcvtimeo",
        "sndtimeo",
        "nonblocking_calls",
        "blocking_after",
        "__weakref__",
    )

    def __init__(self, fd: FD) -> None:
        self.fd = fd
        self.pollable = fd.pollable()
        # SO_RCVTIMEO and SO_SNDTIMEO in seconds (0: none), as last read from the socket:
        # they bound a blocking call's wait as the kernel's do (see socket._io). Written
        # under lock() (_read_kernel_timeouts), with direct. Benign race: calls read the
        # three without it, so a call racing a setsockopt sees the old or the new value of
        # each, as a blocking call racing setsockopt in the kernel does.
        self.rcvtimeo = 0.0
        self.sndtimeo = 0.0
        # Whether the fast path (FD.recv, FD.send... with _NO_LIMIT) may serve a blocking
        # call: pollable, and no kernel timeout to honour (that is _io's work). One
        # attribute, so the fast path tests one thing.
        self.direct = self.pollable
        # The calls now in a syscall that needs O_NONBLOCK (see _nonblocking), and the mode
        # the last of them puts back: the descriptor's when the first began, or the one a
        # settimeout asked for since. Guarded by lock().
        self.nonblocking_calls = 0
        self.blocking_after = False

    def lock(self) -> threading.RLock:
        """This descriptor's lock: the stripe of _desc_locks its id falls in."""
        return _desc_locks[id(self) >> 4 & _DESC_LOCK_MASK]

    def set_kernel_timeouts(self, rcvtimeo: float, sndtimeo: float) -> None:
        self.rcvtimeo = rcvtimeo
        self.sndtimeo = sndtimeo
        self.direct = self.pollable and not (rcvtimeo or sndtimeo)


# fd number → the _Desc of the live socket that owns it. Guarded by _descs_lock.
_descs: weakref.WeakValueDictionary[int, _Desc] = weakref.WeakValueDictionary()
_descs_lock = threading.RLock()  # re-entrant: a signal handler may make a socket meanwhile
# Taken by _real_close to test and set _released as one step. Re-entrant: a signal handler
# may close a socket meanwhile (held for two lines, never across a call that can wait).
_release_lock = threading.RLock()
# The descriptors' locks (_Desc.lock), shared by stripe as the FDs' short locks are (no lock
# per descriptor). One guards a descriptor's mode fields and the writes of its kernel-timeout
# cache. Held only for a few lines whose syscalls (fcntl, ioctl, getsockopt) never wait,
# and never while taking another. Re-entrant: a signal handler on the holding thread may set
# a timeout meanwhile.
_DESC_LOCK_MASK = 63
_desc_locks = [threading.RLock() for _ in range(_DESC_LOCK_MASK + 1)]


def _after_fork_in_child() -> None:
    # Only the forking thread exists in the child: a lock a parent thread held at the fork
    # would never be released, and a parent thread's call in a non-blocking syscall never
    # leaves it here. (The FD's own locks and call gates are internal/poll's.) The
    # descriptor's mode is left as it is: the parent's call puts it back on the shared file.
    global _descs_lock
    _descs_lock = threading.RLock()
    _desc_locks[:] = [threading.RLock() for _ in range(_DESC_LOCK_MASK + 1)]
    for d in list(_descs.values()):
        d.nonblocking_calls = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _net_name(family: int, type: int) -> str:
    """Go's network name for the FD (it shows in dump() and traces)."""
    if family in (_socket.AF_INET, getattr(_socket, "AF_INET6", -1)):
        if type == _socket.SOCK_STREAM:
            return "tcp"
        if type == _socket.SOCK_DGRAM:
            return "udp"
        return "ip"
    if family == getattr(_socket, "AF_UNIX", -1):
        if type == _socket.SOCK_STREAM:
            return "unix"
        if type == _socket.SOCK_DGRAM:
            return "unixgram"
        return "unixpacket"
    return "socket"


def _parse_timeout(value: object) -> float | None:
    """Validate a timeout as the C socket does; returns what gettimeout() will report."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            raise ValueError("Invalid value NaN (not a number)")
        ns_f = value * 1e9
        if not -_TIMEOUT_NS_MAX <= ns_f <= _TIMEOUT_NS_MAX:
            raise OverflowError("timestamp too large to convert to C _PyTime_t")
        ns = math.ceil(ns_f)  # _PyTime_ROUND_TIMEOUT rounds up: wait at least that long
    else:
        ns = operator.index(value) * 1_000_000_000  # type: ignore[arg-type]
        if not -_TIMEOUT_NS_MAX <= ns <= _TIMEOUT_NS_MAX:
            raise OverflowError("timestamp too large to convert to C _PyTime_t")
    if ns < 0:
        raise ValueError("Timeout value out of range")
    return ns / 1e9


def _dontwait(flags: object) -> bool:
    return isinstance(flags, int) and bool(flags & _MSG_DONTWAIT)


def _nowait(flags: int) -> int:
    """flags for one attempt that must not block, whatever the descriptor's mode."""
    return flags | _MSG_DONTWAIT if isinstance(flags, int) else flags


def _materialise(items: Any) -> Any:
    """An iterable argument as a list, iterated once (lists and tuples as they are; anything
    not iterable as it is, for the C call's own TypeError)."""
    if type(items) is list or type(items) is tuple:
        return items
    try:
        it = iter(items)
    except TypeError:
        return items
    return list(it)


def _flags_at(args: tuple[Any, ...], i: int) -> object:
    return args[i] if len(args) > i else 0


def _pad(args: tuple[Any, ...], n: int) -> tuple[Any, ...]:
    """args with the C call's defaults (0) filled in up to n arguments (the flags)."""
    return args if len(args) >= n or not args else args + (0,) * (n - len(args))


def _with_dontwait(args: tuple[Any, ...], i: int) -> tuple[Any, ...]:
    """args with MSG_DONTWAIT added to the flags at args[i] (left alone if not an int: the
    C call then raises the stdlib's TypeError)."""
    if len(args) <= i:
        return args
    f = args[i]
    if not isinstance(f, int):
        return args
    return (*args[:i], f | _MSG_DONTWAIT, *args[i + 1 :])


def _accept_nonblocking(sock: socket) -> tuple[int, Any]:
    """One accept(2) that never blocks (accept has no MSG_DONTWAIT: see _nonblocking)."""
    with _nonblocking(sock):
        return _CSocket._accept(sock)  # type: ignore[attr-defined, no-any-return]


@contextlib.contextmanager
def _nonblocking(sock: socket) -> Iterator[None]:
    """The descriptor non-blocking (O_NONBLOCK, and the C-level timeout 0 that connect
    needs) for one syscall that has no MSG_DONTWAIT: accept(2), connect(2), sendfile(2).

    The caller holds an FD reference. Calls of this kind overlap (accept and connect hold
    different FD locks; a view shares the descriptor; a signal handler may make one), so
    they are counted: the first saves the descriptor's mode, the last puts it back. A
    settimeout meanwhile does not change the mode under a call that needs O_NONBLOCK (its
    syscall would then block in the kernel, where close cannot wake it): it records its mode
    for the last call to put on instead, so neither undoes the other.

    DIVERGENCE(go): Go's descriptors are non-blocking for life. Here a blocking socket's
    descriptor is blocking, as the stdlib promises, except during these calls."""
    d = sock._desc
    n = _CSocket.fileno(sock)
    with d.lock():
        if not d.nonblocking_calls:
            d.blocking_after = os.get_blocking(n)  # EBADF if closed
        d.nonblocking_calls += 1
        try:
            if d.blocking_after or _CSocket.gettimeout(sock) != 0.0:
                _CSocket.settimeout(sock, 0.0)
        except BaseException:
            d.nonblocking_calls -= 1
            raise
    try:
        yield
    finally:
        with d.lock():
            d.nonblocking_calls -= 1
            # Read after the count drops: a signal handler's settimeout that finds no call
            # running sets the mode itself, and records it for this line as well.
            blocking = d.blocking_after
            if not d.nonblocking_calls and _CSocket.fileno(sock) == n:
                if blocking or _CSocket.gettimeout(sock) != 0.0:
                    _CSocket.settimeout(sock, None if blocking else 0.0)


def _bytes_view(data: Any) -> memoryview:
    """A flat byte view of a bytes-like object, with the stdlib's TypeError otherwise."""
    if isinstance(data, str):
        raise TypeError("a bytes-like object is required, not 'str'")
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None
    if view.format == "B" and view.ndim == 1:
        return view
    try:
        return view.cast("B")
    finally:
        view.release()


# --- The socket --------------------------------------------------------------------------


class socket(_StdSocket):
    """A stdlib ``socket.socket`` on threadpoll's FD: same constructor and methods, plus
    close-wakes-everyone, safe close, deadlines and whole writes. See the module docstring.
    """

    __slots__ = ("_desc", "_timeout", "_view", "_released")

    _desc: _Desc
    # The stdlib's timeout, as gettimeout() reports it. Benign race: calls read it once,
    # without a lock (settimeout writes it before it takes the descriptor's lock, which
    # guards the mode only), so a call racing a settimeout sees the old or the new value, as
    # the stdlib's calls, which read sock_timeout once, do.
    _timeout: float | None
    _view: bool
    _released: bool  # this object has closed or detached its descriptor

    def __init__(
        self,
        family: int = -1,
        type: int = -1,
        proto: int = -1,
        fileno: int | None = None,
    ) -> None:
        super().__init__(family, type, proto, fileno)
        # The C-level constructor decided the stdlib's initial timeout (the default timeout,
        # or 0 for SOCK_NONBLOCK): keep it, before the FD sets the C-level timeout to 0.
        self._timeout = _CSocket.gettimeout(self)
        self._view = False
        self._released = False
        n = _CSocket.fileno(self)
        try:
            with _descs_lock:
                d = _descs.get(n)
                owner = None
                if d is None or d.fd.sysfd != n or d.fd.closing():
                    d = None
                    owner = fd_unix.owner_of(n)
                if d is not None:
                    # Another live threadpoll socket owns this fd: share its FD.
                    self._view = True
                elif owner is not None and not owner.is_file:
                    # A Conn, Listener or PacketConn owns it: share its FD as well (one
                    # registration with the poller; closing either closes both).
                    self._view = True
                    d = _Desc(owner)
                    _descs[n] = d
                else:
                    fd = FD(n, net=_net_name(self.family, self.type), sock=self, keep_mode=True)
                    d = _Desc(fd)
                    _descs[n] = d
                self._desc = d
            if d.pollable and self._timeout:
                # A per-call timeout is kept here; the C level must never wait by itself
                # (the descriptor is already non-blocking, as the stdlib made it).
                _CSocket.settimeout(self, 0.0)
            if not d.pollable:
                # The poller refused the descriptor: the stdlib's own timeouts, no promises.
                _CSocket.settimeout(self, self._timeout)
            elif fileno is not None and not self._view:
                # An adopted descriptor (accept, fromfd, dup...) may carry kernel timeouts.
                self._read_kernel_timeouts()
        except BaseException:
            if fileno is None:
                _CSocket.close(self)
            else:
                _CSocket.detach(self)  # the caller still owns its fd
            raise
        _finalizer.start()

    # --- finalization and close ----------------------------------------------------------

    def __del__(
        self,
        _warn: Callable[..., None] = warnings.warn,
        _close_later: Callable[[FD], None] = _finalizer.close_later,
        _c_fileno: Callable[[_socket.socket], int] = _CSocket.fileno,
        _c_detach: Callable[[_socket.socket], int] = _CSocket.detach,
    ) -> None:
        # No lock may be taken here (see _poll/finalizer.py): the close runs on its thread.
        # Default arguments, not globals: this may run while the interpreter shuts down.
        try:
            d = self._desc
        except AttributeError:
            return  # __init__ failed and cleaned up
        if self._view:
            if _c_fileno(self) == -1:
                return
            if not d.fd.closing():
                _warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2, source=self)
                _close_later(d.fd)
            _c_detach(self)
            return
        if d.fd.closing():
            return
        _warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2, source=self)
        _close_later(d.fd)

    def _real_close(self, _ss: Any = None) -> None:
        """Close the FD: wake every blocked call with NetClosingError, return once they have
        all left and the fd is closed. Called by close() once no makefile() file is open.
        Once: a second close() of this object does nothing, as the stdlib's; but if another
        object on the same descriptor closed it first, EBADF, as the stdlib's close(2)."""
        with _release_lock:  # two threads closing this object: one closes, one returns
            if self._released:
                return
            self._released = True
        d = self._desc
        try:
            # A close from a signal handler whose thread is inside a call on this socket
            # does not wait for that call (FD.close sees it on the stack).
            d.fd.close()
        except ClosingError:
            if self._view and d.fd.detached():
                # The owner detached the descriptor, giving it back open: this object's own
                # C-level fd is the only one left on it; close that, as the stdlib would.
                _CSocket.close(self)
                return
            # Another socket object on this descriptor (socket(fileno=...)) closed it.
            raise OSError(errno.EBADF, os.strerror(errno.EBADF)) from None
        except ConnectionResetError:
            pass  # as the stdlib's sock_close: the fd is closed all the same
        finally:
            if self._view:
                _CSocket.detach(self)

    def detach(self) -> int:
        """Give the fd back, unregistered and in the blocking mode the stdlib socket would
        have for its timeout (blocking for None); -1 if already closed. Blocked calls are woken
        with NetClosingError first, as by close."""
        self._closed = True
        self._released = True
        if self._view:
            return _CSocket.detach(self)
        try:
            n = self._desc.fd.detach()
        except ClosingError:
            return -1
        except RuntimeError:
            # Refused (from a signal handler): still open, and still this object's to close.
            self._closed = False
            self._released = False
            raise
        os.set_blocking(n, self._timeout is None)
        return n

    # --- timeouts, blocking mode and deadlines -------------------------------------------

    def settimeout(self, value: float | None, /) -> None:
        t = _parse_timeout(value)
        self._timeout = t
        d = self._desc
        if not d.pollable:
            _CSocket.settimeout(self, t)
            return
        with d.lock():
            d.blocking_after = t is None
            if d.nonblocking_calls:
                # A call is in a syscall that needs O_NONBLOCK: the last such call to leave
                # puts this mode on (see _nonblocking); calls made from now on see t.
                if _CSocket.fileno(self) == -1:
                    raise OSError(errno.EBADF, os.strerror(errno.EBADF))
                return
            # The descriptor's mode as the stdlib sets it (blocking for None, else
            # non-blocking; OSError on a closed socket), and a C-level timeout that never
            # waits by itself: None makes plain calls, ours add MSG_DONTWAIT.
            _CSocket.settimeout(self, None if t is None else 0.0)

    def gettimeout(self) -> float | None:
        return self._timeout

    @property
    def timeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool, /) -> None:
        if sys.version_info >= (3, 12):
            block = bool(flag)
        else:
            block = operator.index(flag) != 0
        self.settimeout(None if block else 0.0)

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def set_deadline(self, t: float | None) -> None:
        """Set the read and write deadlines: absolute time.monotonic() seconds, or None.
        A call parked past its deadline fails with DeadlineExceededError."""
        self._desc.fd.set_deadline(t)

    def set_read_deadline(self, t: float | None) -> None:
        """Set the read deadline (recv*, accept): absolute time.monotonic() seconds, or None."""
        self._desc.fd.set_read_deadline(t)

    def set_write_deadline(self, t: float | None) -> None:
        """Set the write deadline (send*, connect): absolute time.monotonic() seconds, or
        None."""
        self._desc.fd.set_write_deadline(t)

    # --- the I/O loop ----------------------------------------------------------------------

    def _io(
        self,
        op: Callable[..., _T],
        mode: str,
        flags: object,
        args: tuple[Any, ...],
        flags_at: int | None = None,
    ) -> _T:
        """Run the C-level call ``op(self, *args)`` as the stdlib would for this socket's
        timeout, waiting in the runtime instead of in poll(2). ``args[flags_at]`` holds the
        call's flags: an attempt that may wait adds ``MSG_DONTWAIT`` there, so it never
        blocks whatever the descriptor's mode."""
        d = self._desc
        fd = d.fd
        timeout = self._timeout
        if timeout == 0.0 or not d.pollable or _dontwait(flags):
            # Never waits: a reference for the one call, as the stdlib makes it.
            fd.incref()
            try:
                return op(self, *args)
            finally:
                fd.decref()
        reading = mode == "r"
        if flags_at is not None:
            args = _with_dontwait(args, flags_at)
        # A blocking call: SO_RCVTIMEO or SO_SNDTIMEO bound its waits, as they bound the
        # kernel's, and it then fails with EAGAIN as the stdlib's does. With a timeout, the
        # stdlib's call keeps trying until it times out, even after a shutdown. Either limit
        # bounds the wait for the FD's call gate too.
        limit = _limit(d, timeout, reading)
        empty = _EMPTY_READS.get(op) if reading and timeout is None else None
        got: list[_T] = []

        def attempt(_sysfd: int) -> bool:
            try:
                got.append(op(self, *args))
            except BlockingIOError:
                if empty is None or not fd.read_shut:
                    return False
                got.append(empty())
            return True

        if reading:
            fd.raw_read(attempt, limit)
        else:
            fd.raw_write(attempt, limit)
        return got[0]

    def _write(
        self,
        op: Callable[..., _T],
        flags: object,
        args: tuple[Any, ...],
        flags_at: int | None = None,
    ) -> _T:
        try:
            return self._io(op, "w", flags, args, flags_at)
        except BaseException as e:
            with_written(e, 0)
            raise

    def _ref(self, op: Callable[..., _T], *args: Any) -> _T:
        """Run ``op(self, *args)`` holding an FD reference (NetClosingError once closed)."""
        fd = self._desc.fd
        fd.incref()
        try:
            return op(self, *args)
        finally:
            fd.decref()

    # --- reads -----------------------------------------------------------------------------

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        if self._timeout is None:
            if not flags:
                d = self._desc
                if d.direct:
                    fd = d.fd
                    # A first try straight into C (a call that finds data never waits, so it
                    # needs no call gate), else the gated call, which waits.
                    data = _try_recv(fd, fd.fdmu, bufsize)
                    if data is not None:
                        return data
                    return fd.recv(bufsize, 0, _NO_LIMIT)
            elif self._waits_for_all(flags):
                return self._recv_waitall(bufsize, flags)
        return self._io(_CSocket.recv, "r", flags, (bufsize, flags), 1)

    def _recv_waitall(self, bufsize: int, flags: int) -> bytes:
        """recv with MSG_WAITALL, blocking (see _recv_all). A method of its own: the closure
        would make recv build cells for its arguments on every call, the fast one too."""
        parts: list[bytes] = []

        def attempt(pos: int, fl: int) -> tuple[int, bool]:
            data = _CSocket.recv(self, bufsize - pos if pos else bufsize, fl)
            parts.append(data)
            return len(data), False

        self._recv_all(bufsize, flags, attempt)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if self._timeout is None:
            if not flags:
                d = self._desc
                if d.direct:
                    fd = d.fd
                    n = _try_recv_into(fd, fd.fdmu, buffer, nbytes)  # as recv: a first try
                    if n is not None:
                        return n
                    return fd.recv_into(buffer, nbytes, 0, _NO_LIMIT)
            elif self._waits_for_all(flags):
                n = self._recv_into_waitall(buffer, nbytes, flags)
                if n is not None:
                    return n
        return self._io(_CSocket.recv_into, "r", flags, (buffer, nbytes, flags), 2)

    def _recv_into_waitall(self, buffer: Any, nbytes: int, flags: int) -> int | None:
        """recv_into with MSG_WAITALL, blocking (see _recv_all); None if buffer is not a
        buffer (the stdlib's call raises its error). A method of its own, as _recv_waitall."""
        try:
            view = _bytes_view(buffer)
        except TypeError:
            return None  # not a buffer: the C call raises the stdlib's error
        with view:
            want = nbytes if isinstance(nbytes, int) and nbytes > 0 else view.nbytes

            def attempt(pos: int, fl: int) -> tuple[int, bool]:
                if not pos:  # the C call checks the arguments as the stdlib's
                    return _CSocket.recv_into(self, buffer, nbytes, fl), False
                return _CSocket.recv_into(self, view[pos:want], 0, fl), False

            return self._recv_all(want, flags, attempt)

    def _waits_for_all(self, flags: object) -> bool:
        """Whether a blocking call with these flags must loop until its buffer is full:
        MSG_WAITALL on a pollable stream socket (not with MSG_PEEK or MSG_DONTWAIT)."""
        return (
            isinstance(flags, int)
            and bool(flags & _MSG_WAITALL)
            and not flags & (_MSG_DONTWAIT | _socket.MSG_PEEK)
            and self._desc.pollable
            and _CSocket.type.__get__(self) == _socket.SOCK_STREAM
        )

    def _recv_all(
        self, want: int, flags: int, attempt: Callable[[int, int], tuple[int, bool]]
    ) -> int:
        """A blocking read with MSG_WAITALL: ``attempt(pos, flags)`` reads what is there
        after the ``pos`` bytes already read, returning (count, stop); loop, parking on
        EAGAIN, until ``want`` bytes, EOF or a stop. As in the kernel, a call cut short
        after some data returns what was read so far, never losing it: by close, a deadline
        or SO_RCVTIMEO (the next call reports those again), or by a read error (which the
        kernel would report at the next call; here that call sees what follows it, EOF for
        a reset connection). Returns the total read."""
        d = self._desc
        fl = _nowait(flags & ~_MSG_WAITALL)
        pos = 0

        def read_some(_sysfd: int) -> bool:
            nonlocal pos
            while True:
                try:
                    n, stop = attempt(pos, fl)
                except BlockingIOError:
                    return False
                pos += n
                if stop or not n or pos >= want:
                    return True

        try:
            d.fd.raw_read(read_some, _limit(d, None, True))
        except OSError:
            if pos:
                return pos
            raise
        return pos

    def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        return self._io(_CSocket.recvfrom, "r", flags, (bufsize, flags), 1)

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        return self._io(_CSocket.recvfrom_into, "r", flags, (buffer, nbytes, flags), 2)

    if hasattr(_CSocket, "recvmsg"):

        def recvmsg(self, *args: Any) -> tuple[bytes, list[Any], int, Any]:
            flags = _flags_at(args, 2)
            if self._timeout is None and self._waits_for_all(flags):
                return self._recvmsg_all(*args)
            return self._io(_CSocket.recvmsg, "r", flags, _pad(args, 3), 2)

        def _recvmsg_all(
            self, bufsize: int, ancbufsize: int = 0, flags: int = 0
        ) -> tuple[bytes, list[Any], int, Any]:
            """recvmsg with MSG_WAITALL, blocking: data until bufsize bytes or EOF, stopping
            after a message that carries ancillary data (the kernel does not merge those)."""
            got: list[tuple[bytes, list[Any], int, Any]] = []

            def attempt(pos: int, fl: int) -> tuple[int, bool]:
                r = _CSocket.recvmsg(self, bufsize - pos if pos else bufsize, ancbufsize, fl)
                got.append(r)
                return len(r[0]), bool(r[1])

            self._recv_all(bufsize, flags, attempt)
            if len(got) == 1:
                return got[0]
            anc = [a for r in got for a in r[1]]
            return b"".join(r[0] for r in got), anc, got[-1][2], got[0][3]

        def recvmsg_into(self, *args: Any) -> tuple[int, list[Any], int, Any]:
            # Any iterable of buffers, a generator included: made a list once, so a call
            # that waits and retries still fills them.
            if args:
                args = (_materialise(args[0]), *args[1:])
            return self._io(_CSocket.recvmsg_into, "r", _flags_at(args, 2), _pad(args, 3), 2)

    def _accept(self) -> tuple[int, Any]:
        if not self._desc.pollable:
            # The poller refused the descriptor: the stdlib's own call, and its timeout.
            return self._ref(_CSocket._accept)  # type: ignore[attr-defined, no-any-return]
        return self._io(_accept_nonblocking, "r", 0, ())

    def accept(self) -> tuple[socket, Any]:
        """Wait for a connection; returns (threadpoll socket, address) as the stdlib does."""
        n, addr = self._accept()
        try:
            sock = socket(self.family, self.type, self.proto, fileno=n)
        except BaseException:
            os.close(n)
            raise
        # Issue #7995: if no default timeout is set and the listening socket had a (non-zero)
        # timeout, force the new socket in blocking mode.
        if _stdsocket.getdefaulttimeout() is None and self.gettimeout():
            sock.setblocking(True)
        return sock, addr

    # --- writes ----------------------------------------------------------------------------

    def send(self, data: Any, flags: int = 0, /) -> int:
        """Send data. In blocking mode all of it, as Linux's blocking stream send does (unless
        SO_SNDTIMEO expires part-way: then the count sent so far); with a timeout or
        non-blocking, what the kernel took, as the stdlib's does."""
        if self._timeout is None:
            if flags:
                if not _dontwait(flags):
                    return self._send_all(data, flags, -1)
            else:
                d = self._desc
                try:
                    if d.direct:
                        fd = d.fd
                        n = _try_send(fd, fd.fdmu, data)  # as recv: a first try, then gated
                        if n is None:
                            n = fd.send(data, 0, _NO_LIMIT)
                    else:
                        n = self._io(_CSocket.send, "w", 0, (data, 0), 1)
                except BaseException as e:
                    if getattr(e, "written", None) is None:  # FD.send may have set it
                        with_written(e, 0)
                    raise
                t = type(data)
                if (t is bytes or t is bytearray) and n == len(data):
                    return n
                return self._send_all(data, 0, n)
        return self._write(_CSocket.send, flags, (data, flags), 1)

    def _send_all(self, data: Any, flags: int, sent: int) -> int:
        """The rest of a blocking send() that made ``sent`` bytes' progress already (-1: no
        attempt yet): send until all of data is sent, holding the write lock, parking on
        EAGAIN. SO_SNDTIMEO bounds the waits as in the kernel: once it expires, the count so
        far, or EAGAIN if nothing was sent. An error part-way carries ``.written``.

        The first attempt (the fast path's) and this loop take the write lock separately, so
        another thread's send() may come between them; Linux's blocking sends, which release
        the socket lock while they wait for buffer space, interleave too. ``sendall`` never
        does.
        """
        with _bytes_view(data) as view:
            total = view.nbytes
            if sent >= total:
                return sent
            d = self._desc
            if not d.pollable:
                return self._ref(_CSocket.send, view[max(sent, 0) :], flags) + max(sent, 0)
            pos = max(sent, 0)
            nowait = _nowait(flags)

            def send_rest(_sysfd: int) -> bool:
                nonlocal pos
                while True:  # do-while: send(b"") sends one empty datagram
                    try:
                        pos += _CSocket.send(self, view[pos:], nowait)
                    except BlockingIOError:
                        return False
                    if pos >= total:
                        return True

            try:
                try:
                    d.fd.raw_write(send_rest, _limit(d, None, False))
                except BlockingIOError:
                    if pos:
                        return pos  # SO_SNDTIMEO: the kernel returns the count
                    raise
            except BaseException as e:
                with_written(e, pos)
                raise
            return pos

    def sendto(self, data: Any, *args: Any) -> int:
        if len(args) == 1:
            args = (0, *args)  # sendto(data, address): the same as flags 0
        return self._write(_CSocket.sendto, args[0] if len(args) > 1 else 0, (data, *args), 1)

    if hasattr(_CSocket, "sendmsg"):

        def sendmsg(self, *args: Any) -> int:
            # Buffers and ancillary data may be any iterables (generators too): made lists
            # once, so a call that waits and retries still sends them.
            args = tuple(_materialise(a) if i < 2 else a for i, a in enumerate(args))
            if len(args) == 1:
                args = (args[0], (), 0)
            elif len(args) == 2:
                args = (*args, 0)
            return self._write(_CSocket.sendmsg, _flags_at(args, 2), args, 2)

    if hasattr(_CSocket, "sendmsg_afalg"):

        def sendmsg_afalg(self, *args: Any, **kwargs: Any) -> int:
            op = _CSocket.sendmsg_afalg
            return self._write(lambda s, *a: op(s, *a, **kwargs), 0, args)

    def sendall(self, data: Any, flags: int = 0, /) -> None:
        """Send all of data, holding the write lock throughout (writers never interleave).
        The timeout is the budget for the whole call. An error raised part-way carries
        ``.written``, the bytes already sent."""
        with _bytes_view(data) as view:
            total = view.nbytes
            d = self._desc
            fd = d.fd
            timeout = self._timeout
            if not d.pollable:
                try:
                    return self._ref(_CSocket.sendall, view, flags)
                except BaseException as e:
                    with_written(e, 0)
                    raise
            pos = 0
            if timeout is None and not flags and d.direct and fd._cfd:
                # Go's whole write loop in C (FD.write); ``.written`` on a failure part-way.
                fd.write(view, _NO_LIMIT)
                return None
            if timeout == 0.0 or _dontwait(flags):
                fd.incref()
                try:
                    while True:  # do-while: sendall(b"") sends one empty datagram
                        pos += _CSocket.send(self, view[pos:], flags)
                        if pos >= total:
                            return None
                except BaseException as e:
                    with_written(e, pos)
                    raise
                finally:
                    fd.decref()
            dflags = flags | _MSG_DONTWAIT if isinstance(flags, int) else flags
            # SO_SNDTIMEO, for a blocking call: as in the stdlib's loop of blocking send(2)s,
            # EAGAIN once one makes no progress for that long.
            limit = _limit(d, timeout, False)

            def send_all(_sysfd: int) -> bool:
                nonlocal pos
                while True:
                    try:
                        pos += _CSocket.send(self, view[pos:], dflags)
                    except BlockingIOError:
                        return False
                    if pos >= total:
                        return True
                    if limit.until is not None and timeout is None:
                        limit.until = _kernel_until(d, False)

            try:
                fd.raw_write(send_all, limit)
            except BaseException as e:
                with_written(e, pos)
                raise
            return None

    def _sendfile_use_sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """The stdlib's zero-copy path, step for step (os.sendfile, the same checks and
        fall-backs, the timeout bounding each wait, the file's position moved past what was
        sent), waiting in the runtime while holding the write lock instead of in a
        selector: close wakes it, the write deadline bounds it, and it never interleaves
        with another writer. An error part-way carries ``.written``."""
        giveup = _stdsocket._GiveupOnSendfile  # type: ignore[attr-defined]
        os_sendfile = getattr(os, "sendfile", None)
        if os_sendfile is None:
            raise giveup("os.sendfile() not available on this platform")
        d = self._desc
        if not d.pollable:
            # The C-level socket keeps the stdlib's own timeout: its path works as it is.
            return int(super()._sendfile_use_sendfile(file, offset, count))  # type: ignore[misc]
        self._check_sendfile_params(file, offset, count)  # type: ignore[attr-defined]
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation) as err:
            raise giveup(err) from None  # not a regular file
        try:
            fsize = os.fstat(fileno).st_size
        except OSError as err:
            raise giveup(err) from None  # not a regular file
        if not fsize:
            return 0  # empty file
        # Truncate to 1GiB to avoid OverflowError, see bpo-38319.
        blocksize = min(count or fsize, 2**30)
        timeout = self._timeout
        if timeout == 0:
            raise ValueError("non-blocking sockets are not supported")
        total_sent = 0
        try:
            # As the stdlib's, the timeout bounds each wait for progress, not the whole call:
            # ``until`` moves on after each block sent (and only then: the runtime may wake
            # a waiter spuriously, so a wake-up alone proves nothing).
            until = None if timeout is None else _monotonic() + timeout
            limit = CallLimit(until, _timed_out)

            def send_blocks(sysfd: int) -> bool:
                nonlocal blocksize, offset, total_sent
                while True:
                    if count:
                        blocksize = count - total_sent
                        if blocksize <= 0:
                            return True
                    try:
                        # sendfile(2) has no MSG_DONTWAIT: the descriptor is non-blocking for
                        # the duration of the call only, as for accept and connect.
                        with _nonblocking(self):
                            sent = os_sendfile(sysfd, fileno, offset, blocksize)
                    except BlockingIOError:
                        return False
                    except OSError as err:
                        if total_sent == 0:
                            # Not a regular mmap(2)-like file, most likely: fall back on
                            # send(), as the stdlib does.
                            raise giveup(err) from None
                        raise err from None
                    if sent == 0:
                        return True  # EOF
                    offset += sent
                    total_sent += sent
                    if timeout is not None:
                        limit.until = _monotonic() + timeout

            d.fd.raw_write(send_blocks, limit)
            return total_sent
        except giveup:
            raise
        except BaseException as e:
            with_written(e, total_sent)
            raise
        finally:
            if total_sent > 0 and hasattr(file, "seek"):
                file.seek(offset)

    def _sendfile_use_send(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """The stdlib's fall-back (read the file, send() each block), with ``.written`` on
        an error part-way: the bytes sent by the whole call."""
        self._check_sendfile_params(file, offset, count)  # type: ignore[attr-defined]
        if self._timeout == 0:
            raise ValueError("non-blocking sockets are not supported")
        if offset:
            file.seek(offset)
        blocksize = min(count, 8192) if count else 8192
        total_sent = 0
        try:
            while True:
                if count:
                    blocksize = min(count - total_sent, blocksize)
                    if blocksize <= 0:
                        break
                data = memoryview(file.read(blocksize))
                if not data:
                    break  # EOF
                while True:
                    try:
                        sent = self.send(data)
                    except BlockingIOError:
                        continue  # SO_SNDTIMEO expired with nothing sent: as the stdlib
                    except BaseException as e:
                        total_sent += getattr(e, "written", 0)
                        with_written(e, total_sent)
                        raise
                    total_sent += sent
                    if sent < len(data):
                        data = data[sent:]
                    else:
                        break
            return total_sent
        finally:
            if total_sent > 0 and hasattr(file, "seek"):
                file.seek(offset + total_sent)

    # --- connect ---------------------------------------------------------------------------

    def connect(self, address: Any, /) -> None:
        """Connect, waiting in the runtime (close wakes it; the timeout and the write
        deadline bound it)."""
        err = self._connect(address, True)
        if err:
            raise OSError(err, os.strerror(err))

    def connect_ex(self, address: Any, /) -> int:
        """Like connect, but return the error number instead of raising, as the stdlib does
        (EWOULDBLOCK for the timeout, EBADF once closed); address errors still raise."""
        return self._connect(address, False)

    def _connect(self, address: Any, raising: bool) -> int:
        d = self._desc
        fd = d.fd
        timeout = self._timeout
        if timeout == 0.0 or not d.pollable:
            try:
                fd.incref()
            except ClosingError:
                if raising:
                    raise
                return errno.EBADF
            try:
                if raising:
                    _CSocket.connect(self, address)
                    return 0
                return _CSocket.connect_ex(self, address)
            finally:
                fd.decref()
        until = None if timeout is None else _monotonic() + timeout
        got: list[int] = []
        started = False
        gate_timed_out = False

        def connect_locked(_sysfd: int) -> bool:
            nonlocal started
            started = True
            got.append(self._connect_locked(address, raising, timeout, until))
            return True

        def gate_expired() -> OSError:
            nonlocal gate_timed_out
            gate_timed_out = True
            return _timed_out()

        # The limit bounds the wait for the write call gate only: connect_locked never
        # returns False, and bounds its own wait for the outcome.
        try:
            fd.raw_write(connect_locked, CallLimit(until, gate_expired))
        except OSError as e:
            if raising or started:
                raise
            if gate_timed_out:
                return errno.EWOULDBLOCK  # the timeout, waiting for the write call gate
            return e.errno or errno.EBADF  # closed (EBADF), or the write deadline
        return got[0]

    def _connect_locked(
        self, address: Any, raising: bool, timeout: float | None, until: float | None
    ) -> int:
        """connect's work, holding the FD's write lock: the attempt and, if it is in
        progress, the wait for its outcome (the FD's netFD.connect loop)."""
        err = self._connect_attempt(address, raising)
        if err == errno.ECONNABORTED and timeout is None:
            # Linux: the first connect(2) after a non-blocking connect failed only resets
            # the socket, reporting ECONNABORTED; a blocking connect resets it itself, so
            # the stdlib's reports the real error every time. Make the real attempt.
            err = self._connect_attempt(address, raising)
        if err not in _CONNECT_IN_PROGRESS:
            return err
        # SO_SNDTIMEO bounds a blocking connect; the kernel then reports EINPROGRESS.
        if timeout is None:
            limit = _limit(self._desc, None, False)
            limit.expired = _connect_timed_out
        else:
            limit = CallLimit(until, _timed_out)
        try:
            err = self._desc.fd.wait_connect(limit)
        except OSError as e:
            if raising:
                raise
            return e.errno if e.errno is not None else errno.EWOULDBLOCK
        if err == 0 and timeout is None:
            # Linux marks a socket whose non-blocking connect completed as connected only
            # at its next connect(2) (which returns 0); until then a connect returns 0
            # again. A blocking connect is one call that does both: make the second, so
            # that a later connect reports EISCONN as the stdlib's does.
            with contextlib.suppress(OSError), _nonblocking(self):
                _CSocket.connect_ex(self, address)
        return err

    def _connect_attempt(self, address: Any, raising: bool) -> int:
        """One non-blocking connect(2); its error number. Address errors (gaierror,
        TypeError) raise, and so, from connect(), does every error but the ones the caller
        goes on from: raised by the C call the user made, its message names that call.
        connect(2) has no MSG_DONTWAIT: the descriptor is non-blocking for the call only
        (not while its outcome is awaited)."""
        with _nonblocking(self):
            if not raising:
                return _CSocket.connect_ex(self, address)
            try:
                _CSocket.connect(self, address)
            except OSError as e:
                if e.errno in _CONNECT_IN_PROGRESS or e.errno == errno.ECONNABORTED:
                    return e.errno
                raise
            return 0

    # --- the rest: a reference each -------------------------------------------------------

    def shutdown(self, how: int, /) -> None:
        """Shut down one or both halves, and wake the threads blocked in that direction at
        once (their retried calls then see EOF or EPIPE from the kernel; a blocking read of a
        shut datagram socket returns an empty datagram, as the stdlib's does)."""
        self._desc.fd.shutdown(how)

    def dup(self) -> Self:
        """A new threadpoll socket on a duplicate (close-on-exec) of the fd."""
        n = self._desc.fd.dup()
        try:
            sock = type(self)(self.family, self.type, self.proto, fileno=n)
        except BaseException:
            os.close(n)
            raise
        sock.settimeout(self.gettimeout())
        return sock

    def bind(self, address: Any, /) -> None:
        self._ref(_CSocket.bind, address)

    def listen(self, *args: Any) -> None:
        self._ref(_CSocket.listen, *args)

    def getsockname(self) -> Any:
        return self._ref(_CSocket.getsockname)

    def getpeername(self) -> Any:
        return self._ref(_CSocket.getpeername)

    def getsockopt(self, *args: Any) -> Any:
        return self._ref(_CSocket.getsockopt, *args)

    def setsockopt(self, *args: Any) -> None:
        self._ref(_CSocket.setsockopt, *args)
        if len(args) > 1 and args[0] == _socket.SOL_SOCKET and args[1] in _KERNEL_TIMEOUTS:
            self._read_kernel_timeouts()

    def _read_kernel_timeouts(self) -> None:
        """Cache SO_RCVTIMEO and SO_SNDTIMEO in the descriptor, for blocking calls to honour
        (read where they can change: an adopted fd, and setsockopt)."""
        d = self._desc
        if not d.pollable or _SO_RCVTIMEO is None or _SO_SNDTIMEO is None:
            return  # not pollable: the stdlib's blocking calls, where the kernel honours them
        get: Callable[..., bytes] = _CSocket.getsockopt
        sol = _socket.SOL_SOCKET
        try:
            d.fd.incref()
        except ClosingError:
            return  # closed: nothing to honour
        try:
            # Read and stored as one step: two threads' setsockopt could otherwise store
            # their reads in the other order, the cache keeping the older value. In one step,
            # the last read stored is also the last made, after both setsockopt calls.
            with d.lock():
                rcv = _timeval_seconds(get(self, sol, _SO_RCVTIMEO, _TIMEVAL_SIZE))
                snd = _timeval_seconds(get(self, sol, _SO_SNDTIMEO, _TIMEVAL_SIZE))
                d.set_kernel_timeouts(rcv, snd)
        except OSError:
            pass  # not a socket the kernel gives them for: nothing to honour
        finally:
            d.fd.decref()

    def get_inheritable(self) -> bool:
        return bool(self._desc.fd.control(os.get_inheritable))

    def set_inheritable(self, inheritable: bool) -> None:
        self._desc.fd.control(lambda n: os.set_inheritable(n, inheritable))


# --- Module-level functions, mirroring the stdlib's ----------------------------------------


def wrap(sock: _socket.socket) -> socket:
    """Adopt a stdlib socket: return a threadpoll socket on its fd, with its timeout; the
    stdlib object is detached (closed without closing the fd). A threadpoll socket is
    returned as it is."""
    if isinstance(sock, socket):
        return sock
    ssl = sys.modules.get("ssl")
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise TypeError("threadpoll.socket.wrap() cannot adopt an ssl.SSLSocket")
    if not isinstance(sock, _CSocket):
        raise TypeError(f"wrap() needs a socket.socket, not {type(sock).__name__}")
    timeout = sock.gettimeout()
    new = socket(sock.family, sock.type, sock.proto, fileno=sock.fileno())
    _CSocket.detach(sock)
    if isinstance(sock, _StdSocket):
        sock._closed = True  # type: ignore[attr-defined]
    new.settimeout(timeout)
    return new


def socketpair(
    family: int | None = None, type: int = _socket.SOCK_STREAM, proto: int = 0
) -> tuple[socket, socket]:
    """Like socket.socketpair(), with threadpoll sockets."""
    if family is None:
        family = getattr(_socket, "AF_UNIX", _socket.AF_INET)
    a, b = _socket.socketpair(family, type, proto)
    try:
        sa = socket(family, type, proto, a.fileno())
    except BaseException:
        a.close()
        b.close()
        raise
    a.detach()
    try:
        sb = socket(family, type, proto, b.fileno())
    except BaseException:
        sa.close()
        b.close()
        raise
    b.detach()
    return sa, sb


def fromfd(fd: int, family: int, type: int, proto: int = 0) -> socket:
    """Like socket.fromfd(): a threadpoll socket on a duplicate of fd."""
    nfd = _socket.dup(fd)
    try:
        return socket(family, type, proto, nfd)
    except BaseException:
        os.close(nfd)
        raise


def create_connection(
    address: tuple[str | None, int],
    timeout: Any = _stdsocket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
    source_address: Any = None,
    *,
    all_errors: bool = False,
) -> socket:
    """Like socket.create_connection(), with a threadpoll socket (its connect waits in the
    runtime). ``all_errors`` needs Python 3.11 (ExceptionGroup), as in the stdlib.

    The socket is made, as the stdlib's function makes it, with whatever ``socket.socket``
    is at call time once something has replaced the stdlib's class: threadpoll's under
    ``patch()``, or a class the program installed itself, such as PySocks'
    ``socket.socket = socks.socksocket``, whose proxy must not be bypassed. Otherwise (the
    stdlib's class in place) a threadpoll socket."""
    if all_errors and sys.version_info < (3, 11):
        raise TypeError("create_connection() got an unexpected keyword argument 'all_errors'")
    make: Callable[..., socket] = _stdsocket.socket  # type: ignore[assignment]
    if make is _orig_socket:
        make = socket
    host, port = address
    exceptions: list[OSError] = []
    for af, socktype, proto, _canonname, sa in _stdsocket.getaddrinfo(
        host, port, 0, _socket.SOCK_STREAM
    ):
        sock = None
        try:
            sock = make(af, socktype, proto)
            if timeout is not _stdsocket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sa)
            exceptions.clear()  # break a reference cycle
            return sock
        except OSError as exc:
            if not all_errors:
                exceptions.clear()  # raise only the last error
            exceptions.append(exc)
            if sock is not None:
                sock.close()
    if exceptions:
        try:
            if not all_errors:
                raise exceptions[0]
            raise ExceptionGroup(  # type: ignore[name-defined]  # noqa: F821
                "create_connection failed", exceptions
            )
        finally:
            exceptions.clear()  # break a reference cycle
    raise OSError("getaddrinfo returns an empty list")


def create_server(
    address: Any,
    *,
    family: int = _socket.AF_INET,
    backlog: int | None = None,
    reuse_port: bool = False,
    dualstack_ipv6: bool = False,
) -> socket:
    """Like socket.create_server(), returning a threadpoll socket."""
    sock = _orig_create_server(
        address,
        family=family,
        backlog=backlog,
        reuse_port=reuse_port,
        dualstack_ipv6=dualstack_ipv6,
    )
    try:
        return wrap(sock)
    except BaseException:
        sock.close()
        raise


# --- patch() -------------------------------------------------------------------------------

_PATCHES: dict[str, Any] = {
    "socket": socket,
    "socketpair": socketpair,
    "create_connection": create_connection,
    "create_server": create_server,
    "fromfd": fromfd,
}
_ORIGINALS: dict[str, Any] = {
    "socket": _orig_socket,
    "socketpair": _orig_socketpair,
    "create_connection": _orig_create_connection,
    "create_server": _orig_create_server,
    "fromfd": _orig_fromfd,
}
_patch_lock = threading.Lock()


def patch() -> None:
    """Swap threadpoll's socket, socketpair, create_connection, create_server and fromfd
    into the stdlib ``socket`` module (idempotent). Code that looks them up at call time
    (``socket.socket(...)``, as socketserver, http.client, smtplib, ftplib and asyncio do)
    gets threadpoll sockets; names bound earlier by ``from socket import socket`` are not
    touched. ``ssl`` is imported first so that ``ssl.SSLSocket`` keeps the stdlib base.

    A ``socket.socket`` the program installed itself (PySocks'
    ``socket.socket = socks.socksocket``, say) is left in place: replacing it would
    silently bypass it (its proxy). ``RuntimeWarning`` says so, unless that class is built on
    threadpoll's (defined after ``patch()``), in which case it is threadpoll's already."""
    try:
        import ssl  # noqa: F401
    except ImportError:
        pass
    kept = None
    with _patch_lock:
        for name, obj in _PATCHES.items():
            if name == "socket" and _installed_by_program(_stdsocket.socket):
                kept = _stdsocket.socket
                continue
            setattr(_stdsocket, name, obj)
    if kept is not None and not (isinstance(kept, type) and issubclass(kept, socket)):
        warnings.warn(
            f"threadpoll.socket.patch(): socket.socket is {kept!r}, installed by the program; "
            "it is left in place, so socket.socket() does not make threadpoll sockets",
            RuntimeWarning,
            stacklevel=2,
        )


def _installed_by_program(cls: object) -> bool:
    """Whether ``socket.socket`` holds a class that is neither the stdlib's nor ours."""
    return cls is not _orig_socket and cls is not socket


def unpatch() -> None:
    """Put the stdlib's own functions and class back (idempotent). A ``socket.socket`` the
    program installed itself is left in place, as ``patch()`` leaves it."""
    with _patch_lock:
        for name, obj in _ORIGINALS.items():
            if name == "socket" and _installed_by_program(_stdsocket.socket):
                continue
            setattr(_stdsocket, name, obj)


def is_patched() -> bool:
    """Whether the stdlib ``socket`` module currently holds threadpoll's socket class."""
    return _stdsocket.socket is socket


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """``with patched():`` runs its body with the stdlib socket module patched, and leaves
    it as it found it (still patched if it was)."""
    was = is_patched()
    patch()
    try:
        yield
    finally:
        if not was:
            unpatch()


# The ssl wrapping hook: SSLContext.wrap_socket() of a threadpoll socket builds threadpoll's
# ssl.SSLSocket (threadpoll/_sslsocket.py), whose TLS parks on the descriptor's pollDesc.
# The module installs it as the last step of its import (it imports this module first).
try:
    from threadpoll import _sslsocket  # noqa: F401
except ImportError:  # an interpreter built without ssl
    pass
