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
  C-level object runs in non-blocking mode (timeout 0) and never closes the fd itself: the FD
  detaches it and then close(2)s the fd, once the last call has left.
- ``settimeout`` keeps its stdlib meaning, a per-call timeout raising ``TimeoutError('timed
  out')`` (``socket.timeout``), kept here in Python (``gettimeout`` reports it) while the
  C-level timeout stays 0. It bounds the whole call, the wait for the read or write lock
  included; ``sendall``'s timeout is its total budget. A deadline and a timeout may both be
  set: the earlier fires, the deadline as ``DeadlineExceededError``.
- A blocking call takes, in order: the descriptor's per-direction lock (a plain lock, acquired
  with the call's timeout), the FD's read or write lock, then loops: try the C-level call; on
  EAGAIN park in the runtime. A non-blocking call (``settimeout(0)``, ``setblocking(False)``,
  ``MSG_DONTWAIT``) takes only an FD reference and makes one C-level call, as the stdlib's does:
  it never waits for anything, so deadlines, which bound waits, do not apply to it.
- Every other method that touches the fd (``bind``, ``listen``, ``getsockname``,
  ``setsockopt``, ``shutdown``, ``dup``, ...) holds an FD reference while it runs.
- ``close()`` keeps the stdlib's ``makefile()`` reference counting: the FD closes, and wakes
  everyone, when the socket and every file made from it are closed. ``shutdown()`` wakes
  blocked threads at once.
- An unclosed socket that is garbage collected emits ``ResourceWarning`` as the stdlib's does;
  its FD is closed, without waiting, by the helper thread (see ``_Helper``).
- A second socket object made over an fd that a live threadpoll socket owns
  (``socket(fileno=other.fileno())``) shares its FD: a second registration of one fd with the
  poller would corrupt the first.

Per-call timeouts. ``runtime_poll_wait`` has no timeout parameter, so a call with a timeout
arms a timer with the helper thread before it parks; when the timer fires, the helper wakes
the parked thread with ``netpollready`` (a spurious readiness, which the runtime allows: the
woken thread retries its syscall, gets EAGAIN again, sees its time is up and raises
``TimeoutError``). A ``runtime_poll_wait(pd, mode, until)`` in the runtime would make the
helper's timers unnecessary.

What ``patch()`` does not cover: modules that bound the stdlib names at import (``from socket
import socket``) keep them; in the stdlib that is ``ssl``, on purpose: ``ssl.SSLSocket`` must
subclass the stdlib class, so ``patch()`` imports ``ssl`` first. ``SSLContext.wrap_socket()``
accepts a threadpoll socket (through ``detach()``) and returns a stdlib ``SSLSocket``, which
does its own blocking I/O (none of the promises hold under TLS) and is not an instance of the
patched class.
"""

from __future__ import annotations

import _socket
import _thread
import collections
import contextlib
import errno
import heapq
import math
import operator
import os
import socket as _stdsocket
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from typing import Any, Callable, TypeVar

from typing_extensions import Self, final

from threadpoll._poll.fd_mutex import (
    MUTEX_CLOSED,
    MUTEX_REF,
    MUTEX_REF_MASK,
    MUTEX_RLOCK,
    MUTEX_WLOCK,
    FDMutex,
)
from threadpoll._poll.fd_poll_runtime import convert_err
from threadpoll._poll.fd_unix import FD, MAX_RW
from threadpoll._runtime import trace as trace_state
from threadpoll._runtime.netpoll import (
    NO_DEADLINE,
    PD_NIL,
    POLL_NO_ERROR,
    PollDesc,
    runtime_poll_reset,
)
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
_get_ident = threading.get_ident
_MSG_DONTWAIT = getattr(_socket, "MSG_DONTWAIT", 0)
_CONNECT_IN_PROGRESS = (errno.EINPROGRESS, errno.EINTR)
# A connect that is not finished yet, when SO_ERROR is read after a wake-up (Go's list).
_CONNECT_PENDING = (errno.EINPROGRESS, errno.EALREADY, errno.EINTR)


def _await_connect(
    wait_write: Callable[[], None], so_error: Callable[[], int], getpeername: Callable[[], object]
) -> int:
    """Wait for a non-blocking connect in progress to finish; its error number (0:
    connected). Shared by socket.connect and net.dial.

    Go: net/fd_unix.go netFD.connect (the loop after EINPROGRESS)
    """
    while True:
        # Performing multiple connect system calls on a non-blocking socket under Unix
        # variants does not necessarily result in earlier errors being returned. Instead,
        # once the poller tells us that the socket is ready, get the SO_ERROR socket option
        # to see if the connection succeeded or failed (Go issue 7474).
        wait_write()
        err = so_error()
        if err in _CONNECT_PENDING:
            continue
        if err == errno.EISCONN:
            return 0
        if err == 0:
            # The poller can wake us up spuriously (Go issues 14548 and 19289; here a
            # timeout's timer too). Check that we are really connected; if not, wait again.
            try:
                getpeername()
            except OSError:
                continue
            return 0
        return err
# The largest per-call timeout the C socket accepts: nanoseconds in a signed 64-bit integer.
_TIMEOUT_NS_MAX = (1 << 63) - 1


def _timed_out() -> OSError:
    """The stdlib's per-call timeout error, ``socket.timeout('timed out')``."""
    return _stdsocket.timeout("timed out")


# --- The helper thread: per-call timers and finalizer closes -----------------------------


@final
class _Timer:
    """One parked call's time limit: wake ``pd``'s ``mode`` waiter at ``until``."""

    __slots__ = ("until", "seq", "pd", "mode", "armed")

    def __init__(self, until: float, seq: int, pd: PollDesc, mode: str) -> None:
        self.until = until
        self.seq = seq
        self.pd = pd
        self.mode = mode
        self.armed = True  # guarded by _Helper.lock

    def __lt__(self, other: _Timer) -> bool:
        return (self.until, self.seq) < (other.until, other.seq)


@final
class _Helper:
    """A daemon thread, ``threadpoll-timers``, with two jobs:

    - Per-call timeouts: a call that parks with a timeout arms a ``_Timer``; when it is due,
      the thread wakes the parked call with ``netpollready`` (held under ``lock``, so once
      ``disarm`` returns the timer can no longer fire: the pollDesc may be freed after that).
    - Finalizer closes: ``__del__`` must not take a lock (a garbage collection can run while
      this very thread holds one of the runtime's locks, which are not reentrant), so it queues
      the FD on ``closes`` and pokes the thread, which closes it without waiting.

    ``wake`` is a binary semaphore made of a bare lock: ``poke`` releases it (never blocking,
    so ``__del__`` may call it), the thread acquires it to sleep until the next timer.
    """

    __slots__ = ("lock", "wake", "heap", "seq", "disarmed", "closes", "thread")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = _thread.allocate_lock()
        self.wake.acquire()
        self.heap: list[_Timer] = []  # guarded by lock
        self.seq = 0  # guarded by lock
        self.disarmed = 0  # guarded by lock: disarmed timers still in heap
        self.closes: collections.deque[FD] = collections.deque()  # thread-safe by itself
        self.thread: threading.Thread | None = None  # guarded by lock

    def start(self) -> None:
        """Start the thread if it is not running (first socket; after fork)."""
        if self.thread is not None:
            return
        with self.lock:
            if self.thread is None:
                # A runtime thread for good: the timer half of Go's poller loop (findRunnable
                # checks timers, then netpolls until the next one) and the finalizer closer.
                t = threading.Thread(target=self._run, name="threadpoll-timers", daemon=True)
                t.start()
                self.thread = t

    def poke(self) -> None:
        """Wake the thread. Never blocks and takes no lock."""
        try:
            self.wake.release()
        except RuntimeError:
            pass  # already released: a wake-up is pending

    def arm(self, pd: PollDesc, mode: str, until: float) -> _Timer:
        with self.lock:
            self.seq += 1
            t = _Timer(until, self.seq, pd, mode)
            heapq.heappush(self.heap, t)
            first = self.heap[0] is t
        if first:
            self.poke()
        if self.thread is None:
            self.start()
        return t

    def disarm(self, t: _Timer) -> None:
        with self.lock:
            if not t.armed:
                return
            t.armed = False
            self.disarmed += 1
            # Long timeouts on short waits would pile up disarmed timers: drop them when they
            # are most of the heap.
            if self.disarmed > 64 and self.disarmed * 2 > len(self.heap):
                self.heap = [x for x in self.heap if x.armed]
                heapq.heapify(self.heap)
                self.disarmed = 0

    def close_later(self, fd: FD) -> None:
        """Close fd from the helper thread. Takes no lock (for ``__del__``)."""
        self.closes.append(fd)
        self.poke()

    def finalize(
        self, owner: object, fd: FD | None, _warn: Callable[..., None] = warnings.warn
    ) -> None:
        """A front's ``__del__`` (Go sets a finalizer that closes the descriptor): warn as the
        stdlib does, then hand the close to this thread. A garbage collection can run while
        the collecting thread holds a runtime lock (the poller holds its backend's), so the
        close must not run inline. Takes no lock and never waits."""
        if fd is None or fd.closing():
            return
        try:
            _warn(f"unclosed {owner!r}", ResourceWarning, source=owner)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
        self.close_later(fd)

    def _run(self) -> None:
        while True:
            timeout = -1.0
            with self.lock:
                now = _monotonic()
                while self.heap:
                    t = self.heap[0]
                    if t.armed and t.until > now:
                        timeout = min(t.until - now, threading.TIMEOUT_MAX)
                        break
                    heapq.heappop(self.heap)
                    if not t.armed:
                        self.disarmed -= 1
                        continue
                    t.armed = False
                    try:
                        # A spurious readiness: the woken call retries and sees its time is up.
                        t.pd.rt.netpollready(t.pd, t.mode)
                    except Exception:  # noqa: BLE001 - the helper must outlive a bad hook
                        pass
            while self.closes:
                _close_nowait(self.closes.popleft())
            self.wake.acquire(True, timeout)

    def after_fork_in_child(self) -> None:
        """The child has no helper thread and no parked calls: start afresh, lazily."""
        self.lock = threading.Lock()
        self.wake = _thread.allocate_lock()
        self.wake.acquire()
        self.heap = []
        self.disarmed = 0
        self.thread = None  # started again by the child's next socket or timed wait


def _close_nowait(fd: FD) -> None:
    """Close fd without waiting for calls in flight (the last one to leave destroys it)."""
    try:
        if fd.fdmu.incref_and_close():
            fd.pd.evict()
            fd.decref()
    except Exception:  # noqa: BLE001 - a finalizer's close has nobody to report to
        pass


_helper = _Helper()


def _wait(fd: FD, mode: str, until: float | None) -> None:
    """Park until fd is ready for mode, or raise: the closing error, DeadlineExceededError
    (the FD's deadline), or TimeoutError('timed out') once ``until`` has passed."""
    if until is None:
        fd.pd.wait(mode, False)
        return
    if _monotonic() >= until:
        raise _timed_out()
    pd = fd.pd.runtime_ctx
    if pd is None:
        fd.pd.wait(mode, False)  # raises: not pollable
        return
    t = _helper.arm(pd, mode, until)
    try:
        fd.pd.wait(mode, False)
    finally:
        _helper.disarm(t)


def _acquire(lock: threading.Lock, until: float | None) -> None:
    """Acquire lock, or raise TimeoutError('timed out') once ``until`` has passed."""
    if until is None:
        lock.acquire()
        return
    while not lock.acquire(False):
        left = until - _monotonic()
        if left <= 0:
            raise _timed_out()
        if lock.acquire(True, min(left, threading.TIMEOUT_MAX)):
            return


# --- Descriptors shared by socket objects ------------------------------------------------


@final
class _Desc:
    """What every threadpoll socket object on one OS descriptor shares: the FD, and the
    per-direction locks taken before the FD's read and write locks.

    The FD's own locks cannot be waited for with a timeout; these can, so a call's timeout
    bounds its wait for the lock. A waiter here holds no FD reference: close wakes the holder,
    which then lets the next one in to fail at once with the closing error. ``rowner`` and
    ``wowner`` name the thread holding each direction, so that a close from that very thread
    (a signal handler interrupting its own recv) does not wait for itself.
    """

    __slots__ = ("fd", "pollable", "rlock", "wlock", "rowner", "wowner", "__weakref__")

    def __init__(self, fd: FD) -> None:
        self.fd = fd
        self.pollable = fd.pd.pollable()
        self.rlock = threading.Lock()
        self.wlock = threading.Lock()
        self.rowner: int | None = None  # written by the rlock holder
        self.wowner: int | None = None  # written by the wlock holder

    def lock(self, reading: bool, until: float | None) -> None:
        """Take this direction's lock (waiting until ``until`` at most), then the FD's read
        or write lock (the closing error if closed)."""
        lk = self.rlock if reading else self.wlock
        _acquire(lk, until)
        try:
            if reading:
                self.fd.read_lock()
            else:
                self.fd.write_lock()
        except BaseException:
            lk.release()
            raise
        if reading:
            self.rowner = threading.get_ident()
        else:
            self.wowner = threading.get_ident()

    def unlock(self, reading: bool) -> None:
        if reading:
            self.rowner = None
            try:
                self.fd.read_unlock()
            finally:
                self.rlock.release()
        else:
            self.wowner = None
            try:
                self.fd.write_unlock()
            finally:
                self.wlock.release()

    def held_by_me(self) -> bool:
        me = threading.get_ident()
        return self.rowner == me or self.wowner == me


# fd number → the _Desc of the live socket that owns it. Guarded by _descs_lock.
_descs: weakref.WeakValueDictionary[int, _Desc] = weakref.WeakValueDictionary()
_descs_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # Only the forking thread exists in the child: a lock a parent thread held at the fork
    # would never be released. (The FD's own locks are internal/poll's to handle.)
    global _descs_lock
    _descs_lock = threading.Lock()
    for d in list(_descs.values()):
        d.rlock = threading.Lock()
        d.wlock = threading.Lock()
        d.rowner = d.wowner = None
    _helper.after_fork_in_child()


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


def _flags_at(args: tuple[Any, ...], i: int) -> object:
    return args[i] if len(args) > i else 0


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

    __slots__ = ("_desc", "_timeout", "_view")

    _desc: _Desc
    _timeout: float | None
    _view: bool

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
        n = _CSocket.fileno(self)
        try:
            with _descs_lock:
                d = _descs.get(n)
                if d is not None and d.fd.sysfd == n and not d.fd.closing():
                    # Another live threadpoll socket owns this fd: share its FD.
                    self._view = True
                    if d.pollable:
                        _CSocket.settimeout(self, 0.0)
                else:
                    fd = FD(n, net=_net_name(self.family, self.type), sock=self)
                    d = _Desc(fd)
                    _descs[n] = d
                self._desc = d
            if not d.pollable:
                # The poller refused the descriptor: the stdlib's own timeouts, no promises.
                _CSocket.settimeout(self, self._timeout)
        except BaseException:
            if fileno is None:
                _CSocket.close(self)
            else:
                _CSocket.detach(self)  # the caller still owns its fd
            raise
        _helper.start()

    # --- finalization and close ----------------------------------------------------------

    def __del__(
        self,
        _warn: Callable[..., None] = warnings.warn,
        _helper: _Helper = _helper,
        _c_fileno: Callable[[_socket.socket], int] = _CSocket.fileno,
        _c_detach: Callable[[_socket.socket], int] = _CSocket.detach,
    ) -> None:
        # No lock may be taken here (see _Helper): the close itself runs on the helper thread.
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
                _helper.close_later(d.fd)
            _c_detach(self)
            return
        if d.fd.closing():
            return
        _warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2, source=self)
        _helper.close_later(d.fd)

    def _real_close(self, _ss: Any = None) -> None:
        """Close the FD: wake every blocked call with NetClosingError, return once they have
        all left and the fd is closed. Called by close() once no makefile() file is open."""
        d = self._desc
        try:
            if d.held_by_me():
                # This thread is itself inside a call on this socket (a signal handler runs
                # on top of it): waiting for that call to leave would wait forever.
                lock = d.fd.fdmu._lock
                if lock.acquire(False):
                    lock.release()
                    _close_nowait(d.fd)
                else:
                    # ... and it may be in its first attempt, holding the FD's state lock
                    # (see _io_blocking): the finalizer thread closes it once that returns.
                    _helper.close_later(d.fd)
            else:
                d.fd.close()
        except ClosingError:
            pass  # already closed (the stdlib's close is idempotent)
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
        if self._view:
            return _CSocket.detach(self)
        try:
            n = self._desc.fd.detach()
        except ClosingError:
            return -1
        os.set_blocking(n, self._timeout is None)
        return n

    # --- timeouts, blocking mode and deadlines -------------------------------------------

    def settimeout(self, value: float | None, /) -> None:
        t = _parse_timeout(value)
        self._timeout = t
        if not self._desc.pollable:
            _CSocket.settimeout(self, t)

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

    def _io(self, op: Callable[..., _T], mode: str, flags: object, args: tuple[Any, ...]) -> _T:
        """Run the C-level call ``op(self, *args)`` as the stdlib would for this socket's
        timeout, waiting in the runtime instead of in poll(2)."""
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
        until = None if timeout is None else _monotonic() + timeout
        reading = mode == "r"
        d.lock(reading, until)
        try:
            fd.pd.prepare(mode, False)
            while True:
                try:
                    return op(self, *args)
                except BlockingIOError:
                    pass
                _wait(fd, mode, until)
        finally:
            d.unlock(reading)

    def _io_blocking(self, op: Callable[..., _T], reading: bool, args: tuple[Any, ...]) -> _T:
        """_io for the common call: a blocking socket (no timeout), no flags. The same steps
        as _Desc.lock, the FD's prepare and _Desc.unlock, written out in line: this is the
        path the fast-path benchmark measures, and each method call costs ~60 ns."""
        d = self._desc
        if not d.pollable:
            return self._io(op, "r" if reading else "w", 0, args)
        fd = d.fd
        fdmu = fd.fdmu
        if reading:
            mode = "r"
            lk = d.rlock
            bit = MUTEX_RLOCK
        else:
            mode = "w"
            lk = d.wlock
            bit = MUTEX_WLOCK
        with lk:  # a with block: no window for Ctrl-C between acquire and try
            if reading:
                d.rowner = _get_ident()
            else:
                d.wowner = _get_ident()
            held = False
            try:
                pd = fd.pd.runtime_ctx
                if (
                    op is _CSocket.recv
                    and fd._cfast
                    and pd is not None
                    and args[0].__class__ is int
                    and 0 < args[0] <= MAX_RW
                    and not fd.is_blocking
                ):
                    # The C core: FD.read's first attempt and loop (threadpoll/_c/fd_unix.c),
                    # recv(MSG_DONTWAIT) each time, under this socket's own read lock.
                    return fd._read_c(pd, args[0])  # type: ignore[return-value]
                if pd is not None and fdmu.__class__ is FDMutex:  # the C core's: no state lock
                    # The first attempt inside the fdMutex's state lock, holding no reference,
                    # as FD.read makes it (DIVERGENCE(go) there): while the lock is held no
                    # close can release the descriptor, and the socket is non-blocking, so op
                    # returns at once. On EAGAIN this thread takes the FD's read or write lock
                    # right there, as the locked path would have, and goes on to park.
                    dl = pd.rd if reading else pd.wd
                    with fdmu._lock:
                        old = fdmu.state
                        new = (old | bit) + MUTEX_REF
                        if not (
                            old & (MUTEX_CLOSED | bit)
                            or not new & MUTEX_REF_MASK
                            or fd.is_blocking
                            or pd.closing
                            or pd.poller_err is not None
                            or (reading and pd.event_err)
                            or (dl != NO_DEADLINE and dl <= _monotonic())
                            or trace_state.enabled
                        ):
                            if reading:
                                pd.rg = PD_NIL
                            else:
                                pd.wg = PD_NIL
                            try:
                                return op(self, *args)
                            except BlockingIOError:
                                fdmu.state = new
                                held = True
                if not held:
                    if not fdmu.rwlock(reading):
                        raise fd._closed_error()
                    held = True
                    if pd is not None:
                        res = runtime_poll_reset(pd, mode)
                        if res != POLL_NO_ERROR:
                            raise convert_err(res, False, pd)  # type: ignore[misc]
                    try:
                        return op(self, *args)
                    except BlockingIOError:
                        pass
                while True:
                    fd.pd.wait(mode, False)
                    try:
                        return op(self, *args)
                    except BlockingIOError:
                        pass
            finally:
                if reading:
                    d.rowner = None
                else:
                    d.wowner = None
                if held and fdmu.rwunlock(reading):
                    fd._destroy()

    def _write(self, op: Callable[..., _T], flags: object, args: tuple[Any, ...]) -> _T:
        try:
            return self._io(op, "w", flags, args)
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
        if self._timeout is None and not flags:
            return self._io_blocking(_CSocket.recv, True, (bufsize,))
        return self._io(_CSocket.recv, "r", flags, (bufsize, flags))

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if self._timeout is None and not flags:
            return self._io_blocking(_CSocket.recv_into, True, (buffer, nbytes))
        return self._io(_CSocket.recv_into, "r", flags, (buffer, nbytes, flags))

    def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        return self._io(_CSocket.recvfrom, "r", flags, (bufsize, flags))

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        return self._io(_CSocket.recvfrom_into, "r", flags, (buffer, nbytes, flags))

    if hasattr(_CSocket, "recvmsg"):

        def recvmsg(self, *args: Any) -> tuple[bytes, list[Any], int, Any]:
            return self._io(_CSocket.recvmsg, "r", _flags_at(args, 2), args)

        def recvmsg_into(self, *args: Any) -> tuple[int, list[Any], int, Any]:
            return self._io(_CSocket.recvmsg_into, "r", _flags_at(args, 2), args)

    def _accept(self) -> tuple[int, Any]:
        op: Callable[[_socket.socket], tuple[int, Any]] = _CSocket._accept  # type: ignore[attr-defined]
        return self._io(op, "r", 0, ())

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
        if self._timeout is None and not flags:
            try:
                return self._io_blocking(_CSocket.send, False, (data,))
            except BaseException as e:
                with_written(e, 0)
                raise
        return self._write(_CSocket.send, flags, (data, flags))

    def sendto(self, data: Any, *args: Any) -> int:
        return self._write(_CSocket.sendto, args[0] if len(args) > 1 else 0, (data, *args))

    if hasattr(_CSocket, "sendmsg"):

        def sendmsg(self, *args: Any) -> int:
            return self._write(_CSocket.sendmsg, _flags_at(args, 2), args)

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
            until = None if timeout is None else _monotonic() + timeout
            try:
                d.lock(False, until)
                try:
                    fd.pd.prepare_write(False)
                    while True:
                        try:
                            pos += _CSocket.send(self, view[pos:], flags)
                        except BlockingIOError:
                            _wait(fd, "w", until)
                            continue
                        if pos >= total:
                            return None
                finally:
                    d.unlock(False)
            except BaseException as e:
                with_written(e, pos)
                raise

    def _sendfile_use_sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        # The stdlib's os.sendfile path waits in its own selector, outside the FD: fall back
        # to _sendfile_use_send, which goes through send().
        raise _stdsocket._GiveupOnSendfile(  # type: ignore[attr-defined]
            "threadpoll sockets send files with send()"
        )

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
        try:
            d.lock(False, until)
        except ClosingError:
            if raising:
                raise
            return errno.EBADF
        except OSError:  # the timeout, waiting for the write lock
            if raising:
                raise
            return errno.EWOULDBLOCK
        try:
            try:
                fd.pd.prepare_write(False)
            except OSError as e:
                if raising:
                    raise
                return e.errno or errno.EBADF
            # Address errors (gaierror, TypeError) raise from here, as in the stdlib.
            err = _CSocket.connect_ex(self, address)
            if err not in _CONNECT_IN_PROGRESS:
                return err
            try:
                return self._connect_wait(fd, until)
            except OSError as e:
                if raising:
                    raise
                return e.errno if e.errno is not None else errno.EWOULDBLOCK
        finally:
            d.unlock(False)

    def _connect_wait(self, fd: FD, until: float | None) -> int:
        """Wait for a non-blocking connect to finish; its error number (0: connected).

        Go: net/fd_unix.go netFD.connect (the loop after EINPROGRESS)
        """
        return _await_connect(
            lambda: _wait(fd, "w", until),
            lambda: int(_CSocket.getsockopt(self, _socket.SOL_SOCKET, _socket.SO_ERROR)),
            lambda: _CSocket.getpeername(self),
        )

    # --- the rest: a reference each -------------------------------------------------------

    def shutdown(self, how: int, /) -> None:
        """Shut down one or both halves, and wake the threads blocked in that direction at
        once (their retried calls then see EOF or EPIPE from the kernel)."""
        fd = self._desc.fd
        fd.incref()
        try:
            _CSocket.shutdown(self, how)
            pd = fd.pd.runtime_ctx
            if pd is not None:
                mode = {_socket.SHUT_RD: "r", _socket.SHUT_WR: "w"}.get(how, "rw")
                pd.rt.netpollready(pd, mode)
        finally:
            fd.decref()

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
    runtime). ``all_errors`` needs Python 3.11 (ExceptionGroup), as in the stdlib."""
    if all_errors and sys.version_info < (3, 11):
        raise TypeError("create_connection() got an unexpected keyword argument 'all_errors'")
    host, port = address
    exceptions: list[OSError] = []
    for af, socktype, proto, _canonname, sa in _stdsocket.getaddrinfo(
        host, port, 0, _socket.SOCK_STREAM
    ):
        sock = None
        try:
            sock = socket(af, socktype, proto)
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
    touched. ``ssl`` is imported first so that ``ssl.SSLSocket`` keeps the stdlib base."""
    try:
        import ssl  # noqa: F401
    except ImportError:
        pass
    with _patch_lock:
        for name, obj in _PATCHES.items():
            setattr(_stdsocket, name, obj)


def unpatch() -> None:
    """Put the stdlib's own functions and class back (idempotent)."""
    with _patch_lock:
        for name, obj in _ORIGINALS.items():
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
