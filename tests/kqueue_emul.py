"""An emulation of Python's ``select.kqueue`` / ``select.kevent`` on Linux epoll.

Why this exists
---------------
threadpoll has a kqueue backend (``netpoll_kqueue.py``, the twin of Go's
``netpoll_kqueue.go``) but its CI runs on Linux. The test suite runs that real
backend here by handing it this module in place of ``select``::

    emul = kqueue_emul.module("freebsd")          # or "xnu"
    backend = KqueueBackend(select_module=emul)

The object returned by :func:`module` has ``kqueue``, ``kevent``, ``error`` and
the ``KQ_*`` constants with their BSD values. Like CPython it has no
``KQ_FILTER_USER``/``EVFILT_USER``, ``EV_RECEIPT`` or ``EV_DISPATCH`` (raw ints
still work where noted below). The *flavor* picks the kernel whose visible
quirks are reproduced: FreeBSD strips ADD/DELETE/ENABLE/DISABLE from returned
``flags``, reports an EV_ERROR event as ``flags == EV_ERROR``, answers a change
on a closed fd with EBADF, refuses EV_ENABLE|EV_DISABLE (EINVAL) and a WRITE
filter on a pipe whose reader is gone (EPIPE), and treats ``tv_sec > INT32_MAX``
as "wait forever". xnu echoes the flags as submitted, ORs EV_ERROR into them,
answers ENOENT for a change on a closed fd, lets DISABLE win, accepts the
widowed pipe, and rejects ``tv_sec > INT32_MAX`` with EINVAL, so a caller that
forgets to cap its timeout (Go caps at 1e6 s) is caught. The facts behind all of
this come from the kqueue(2) manual pages of macOS and FreeBSD and from their
kernels' kern_event.c; the numbered checklist below names each one.

How it works
------------
A kqueue is a set of *knotes* keyed by (ident, filter). Each emulated
kqueue holds:

* three epoll instances. ``rep`` holds every fd with a READ knote, registered
  ``EPOLLIN|EPOLLRDHUP|EPOLLET``; ``wep`` every fd with a WRITE knote,
  ``EPOLLOUT|EPOLLET``. Keeping the filters in separate instances matters: an
  epoll event carries the fd's whole current mask, so with one instance a
  write-space wakeup on a socket with unread input would look like a new READ
  edge. Linux wakes a socket's waiters with a key (``EPOLLIN`` for arrivals,
  ``EPOLLOUT`` for freed space) and epoll drops wakeups whose key misses the
  item's mask, so each instance only sees its own filter's edges. The outer
  ``ep`` watches ``rep``, ``wep`` and a wake pipe (level-triggered); its fd is
  ``kqueue.fileno()``.
* the knote table in Python: mode bits fixed at creation (EV_CLEAR, EV_ONESHOT,
  raw EV_DISPATCH), enabled/disabled, udata, the NOTE_LOWAT parameters, and the
  (st_dev, st_ino) of the object the ident named when the knote was made.
* the *active queue*: a FIFO (an OrderedDict) of knotes waiting to be returned.

``control()`` applies the changelist in order under the kqueue lock, then
scans: it drains both inner epolls with a zero timeout (every edge becomes
"knote active"; nothing fetched from epoll is ever dropped), then pops knotes
from the active queue and **re-runs the filter** on each, as kqueue_scan does:
readiness comes from a zero-timeout poll(2) plus FIONREAD and friends
(see ``_evaluate``). A knote whose condition no longer holds is silently
dropped. A level knote (no EV_CLEAR) goes back to the tail of the queue, so
calls truncated by ``max_events`` rotate through every ready knote; an
EV_CLEAR knote is deactivated until the next epoll edge or re-registration;
an EV_ONESHOT knote is returned without re-running the filter and deleted.
Because every fd is registered edge-triggered, "level" is the active queue plus
the re-check, and "edge" is exactly one activation per kernel wakeup: unread
data does not re-trigger an EV_CLEAR knote, a new arrival does.

If nothing is ready, ``control()`` blocks in ``ep.poll`` *without* the lock.
A registration made by another thread meanwhile goes straight into ``rep`` or
``wep``, so the kernel itself wakes the waiter if the fd is or becomes ready;
a knote queued in user space (EV_ADD/EV_ENABLE on something already ready, a
regular file) writes a byte to the wake pipe. So the threadpoll pattern, one
poller blocked in ``control(None, 64, None)`` while other threads call
``control([...], 0)``, is safe and nothing registered meanwhile is missed.

What is emulated (the checklist)
--------------------------------
1. API surface: positional-only ``control``; ``max_events == 0`` applies
   the changes and returns ``[]`` without waiting, even with timeout None; the
   ValueError/TypeError cases with CPython's messages and check order; timeouts
   rounded up to the next millisecond so the call waits at least that long;
   ``kevent`` field conversions (``udata``, ``flags``, ``fflags`` wrap,
   ``ident``, ``filter``, ``data`` are range-checked), ordering by the field
   tuple (udata compared as a signed pointer, as CPython does), unhashable;
   idempotent ``close()``, ``closed``, ValueError on a closed object, no
   context manager, close-on-exec fd; a forked child sees every kqueue
   ``closed`` and does not inherit its fds (``os.register_at_fork``).
   ``kqueue.fromfd()`` works for the fd of a live emulated kqueue (the two
   objects share it); any other fd gives OSError(EBADF).
2. Changelist errors: with ``max_events == 0`` the first failing change raises
   OSError and later changes are skipped; otherwise each failure becomes an
   EV_ERROR event (``data`` = errno) and the call returns at once without
   scanning; an error with no room left raises OSError. Raw EV_RECEIPT (0x40)
   is honoured. EV_DELETE or a modification of an unknown knote is ENOENT; a
   bad fd is EBADF; an object kqueue cannot watch is EINVAL; an unknown filter
   is EINVAL; filter 0 is skipped on FreeBSD, as its kevent loop does.
3. Flag semantics: EV_ADD on an existing knote keeps its EV_CLEAR and
   EV_ONESHOT, replaces udata and the NOTE_LOWAT parameters, applies
   EV_ENABLE/EV_DISABLE, re-runs the filter and queues the knote if ready; any
   other change to an existing knote does the same (FreeBSD's path).
   EV_ENABLE re-runs the filter. EV_ADD|EV_DELETE deletes an existing knote
   and adds a missing one. Returned ``flags`` follow the flavor plus EV_EOF;
   ``udata`` is returned as last set.
4. READ/WRITE on sockets, pipes/FIFOs, regular files, and on other fds epoll
   accepts (ttys, character devices). Regular files (epoll says EPERM) and
   directories are watched in user space: READ fires iff size - offset != 0
   (``data`` may be negative), WRITE always (``data`` 0 on FreeBSD, 1 on xnu);
   raw NOTE_FILE_POLL (0x2) makes READ fire always on FreeBSD. While any such
   knote is enabled a blocked ``control()`` re-scans every 10 ms, standing in
   for the vnode KNOTE a write would raise; an EV_CLEAR one re-fires when
   (size, mtime) changed since it last fired.
5. EV_EOF: READ on a socket: EPOLLRDHUP (peer FIN or local
   SHUT_RD), with ``data`` = bytes still readable. READ on a pipe: EPOLLHUP
   (every writer gone; for a FIFO, Linux reports it only if a writer came and
   went since this open, like FreeBSD's ``pipe_wgen``). WRITE on a pipe:
   EPOLLERR (reader gone), ``data`` 0. WRITE on a socket: EPOLLHUP (full
   disconnect or reset), and a local ``shutdown(SHUT_WR)``, which Linux does
   not show in the poll mask: for TCP it is read from TCP_INFO's state
   (FIN_WAIT1/2, CLOSING, LAST_ACK, TIME_WAIT, CLOSE), for AF_UNIX stream
   sockets from a zero-length ``send(MSG_DONTWAIT|MSG_NOSIGNAL)`` that fails
   with EPIPE (with length 0 the kernel sends nothing and wakes nobody).
6. ``data``: READ is FIONREAD (TCP, AF_UNIX, pipes, ttys); a listening
   TCP socket reports its accept-queue length from TCP_INFO (``tcpi_unacked``),
   a listening AF_UNIX socket reports 1 while connections are waiting. WRITE
   is SO_SNDBUF - SIOCOUTQ for sockets (Linux doubles SO_SNDBUF, so this is
   larger than a BSD ``sbspace``), F_GETPIPE_SZ - FIONREAD for pipes.
   Thresholds: READ fires at SO_RCVLOWAT (or NOTE_LOWAT); a pipe's WRITE fires
   at 512 free bytes (PIPE_BUF; NOTE_LOWAT too on xnu); a socket's WRITE needs
   Linux's EPOLLOUT and NOTE_LOWAT if given. A pending socket error fires READ
   and WRITE without EV_EOF.
7. Wrong-end pipe filters: silent on FreeBSD; on xnu they fire only with
   EV_EOF, when the other side is gone.
8. close and dup: kqueue forgets an fd's knotes at close; epoll
   keeps watching the open file while a dup lives. Before an ident is used
   (any change naming it, any event delivered for it) its fstat is compared
   with the one recorded at EV_ADD; if the fd is closed or names another
   object, all its knotes are purged first. This is lazy rather than a sweep
   of every ident at each call, with the same observable results: a knote is
   only visible through a change or an event, and both check first.

What is not emulated, or only approximately (Limits)
--------------------------------------------------------
* ``fflags`` is always 0. On an EOF kqueue puts ``so_error`` there, but Linux
  can only read it through ``getsockopt(SO_ERROR)``, which *clears* it, so
  reading it would steal the error from the code under test. Callers must read
  SO_ERROR themselves (Go and trio do; mio's "EV_EOF with fflags != 0 means
  error" cannot be exercised here).
* Edge counts are Linux's, not BSD's. Linux raises a TCP write-space wakeup
  only after a send found the buffer full, and a pipe wakes writers only when
  it was full, while FreeBSD KNOTEs on every socket-buffer wakeup; so an
  EV_CLEAR WRITE knote fires less often here. Linux state changes (local
  shutdown, FIN, reset) wake both filters, so an EV_CLEAR READ knote can fire
  again with old unread data after such a change. A new arrival racing the
  scan can produce one extra edge. Code that treats every event as "try the
  syscall again" (Go, trio) is unaffected; code that counts edges is not
  tested faithfully.
* ``data`` values and low-water marks are approximations (above). UDP READ
  reports only the next datagram's size, not the total queued. SO_SNDLOWAT
  is fixed at 1 on Linux. A never-connected TCP socket is writable with
  EV_EOF here (Linux polls it as EPOLLOUT|EPOLLHUP); BSD does not fire it.
  Local SHUT_WR is not detected on datagram or seqpacket sockets (a zero-length
  send would transmit an empty datagram).
* Filters other than READ and WRITE (AIO, VNODE, PROC, SIGNAL, TIMER, USER,
  ...) raise NotImplementedError rather than pretend; EV_ONESHOT returns the
  values at delivery, not at activation.
* Kernel quirks with no Linux counterpart: the macOS FIFO that never reports
  EOF (golang/go#24164), READ on a macOS FIFO's write end, old macOS EPIPE at
  attach, the ``tv_sec > 1e8`` limit of macOS <= 10.14, the stray ETIMEDOUT
  (golang/go#59679), FreeBSD's 24-hour timeout cap, tty and device filters
  beyond FIONREAD/EPOLLOUT, 32-bit layouts, and the order of events within one
  batch (here: FIFO by activation).
* Identity is (st_dev, st_ino): closing an fd and getting the same number back
  for the same inode (reopening a FIFO or a tty, ``dup2`` of a dup) keeps the
  old knote here, where kqueue would have dropped it. If an epoll item survives
  for a closed fd because a dup keeps the file open, its edges arrive under the
  fd number; they are re-checked against whatever the number names now, which
  can add a spurious edge for a new file with the same number.
* Races: changes are applied atomically under one lock, so a close racing a
  kevent in another thread, or EINTR after a partial changelist, cannot
  happen here. Closing a kqueue while another thread waits in ``control()``
  does not wake it (as on the BSDs); when it wakes it returns what it found.
* Polling ``kqueue.fileno()`` with select/poll shows kernel-side readiness
  only, not knotes queued in user space (regular files, re-registrations).

Passing against this emulation proves the poller matches this model of
kqueue; run the real-kernel checks on macOS and FreeBSD CI.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import fcntl
import math
import operator
import os
import select
import socket
import stat
import struct
import termios
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any, ClassVar

__all__ = ["FLAVORS", "KqueueModule", "kevent", "module"]

FLAVORS = ("freebsd", "xnu")

# --- BSD constants, as CPython's select module exposes them --------------------

KQ_FILTER_READ = -1
KQ_FILTER_WRITE = -2
KQ_FILTER_AIO = -3
KQ_FILTER_VNODE = -4
KQ_FILTER_PROC = -5
KQ_FILTER_SIGNAL = -6
KQ_FILTER_TIMER = -7

KQ_EV_ADD = 0x0001
KQ_EV_DELETE = 0x0002
KQ_EV_ENABLE = 0x0004
KQ_EV_DISABLE = 0x0008
KQ_EV_ONESHOT = 0x0010
KQ_EV_CLEAR = 0x0020
KQ_EV_SYSFLAGS = 0xF000
KQ_EV_FLAG1 = 0x2000
KQ_EV_EOF = 0x8000
KQ_EV_ERROR = 0x4000

KQ_NOTE_LOWAT = 0x0001

# Not exported by CPython, but honoured as raw ints (the fields are plain ints).
_EV_RECEIPT = 0x0040
_EV_DISPATCH = 0x0080
_EV_FORCEONESHOT = 0x0100  # FreeBSD only
_NOTE_FILE_POLL = 0x0002  # FreeBSD EVFILT_READ on vnodes: always fire

# Filter numbers that exist on the kernel but are not emulated: a change naming
# one raises NotImplementedError instead of a misleading errno.
# FreeBSD: AIO..EMPTY = -3..-13. xnu: AIO..EVFILT_SYSCOUNT(18) = -3..-18.
_UNEMULATED_FILTERS = {
    "freebsd": frozenset(range(-13, -2)),
    "xnu": frozenset(range(-18, -2)),
}

_INT32_MAX = 2**31 - 1
_U16 = 2**16
_U32 = 2**32
_U64 = 2**64
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1

# One blocking epoll_wait is capped below epoll's INT_MAX milliseconds; a longer
# wait is several of them.
_MAX_WAIT_S = 86400.0
# While user-space (vnode) knotes are enabled, a blocked control() re-scans this
# often: BSD would wake it with a KNOTE when the file is written.
_VNODE_RESCAN_S = 0.010
_PIPE_BUF = 512  # FreeBSD and xnu pipe write low-water mark
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_POLLRDHUP = getattr(select, "POLLRDHUP", 0x2000)
_EPOLLRDHUP = getattr(select, "EPOLLRDHUP", 0x2000)
_SIOCOUTQ = termios.TIOCOUTQ  # same ioctl number on Linux

# TCP states from include/net/tcp_states.h in which the send side is shut.
_TCP_FIN_WAIT1, _TCP_FIN_WAIT2, _TCP_TIME_WAIT, _TCP_CLOSE = 4, 5, 6, 7
_TCP_LAST_ACK, _TCP_CLOSING = 9, 11
_TCP_SEND_SHUT_STATES = frozenset(
    (_TCP_FIN_WAIT1, _TCP_FIN_WAIT2, _TCP_TIME_WAIT, _TCP_CLOSE, _TCP_LAST_ACK, _TCP_CLOSING)
)

# --- raw socket calls on an fd we do not own ---------------------------------
# socket.socket(fileno=fd) would adopt the fd (closing it on collection) and,
# with a default timeout set, flip O_NONBLOCK on the shared file description.
# ctypes calls libc on the bare fd instead.

_libc = ctypes.CDLL(None, use_errno=True)
_c_getsockopt = _libc.getsockopt
_c_getsockopt.argtypes = (
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint32),
)
_c_getsockopt.restype = ctypes.c_int
_c_send = _libc.send
_c_send.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_c_send.restype = ctypes.c_ssize_t


def _getsockopt(fd: int, level: int, name: int, size: int) -> bytes | None:
    """getsockopt(2) on a bare fd; None on failure."""
    buf = ctypes.create_string_buffer(size)
    length = ctypes.c_uint32(size)
    if _c_getsockopt(fd, level, name, buf, ctypes.byref(length)) != 0:
        return None
    return buf.raw[: length.value]


def _getsockopt_int(fd: int, level: int, name: int) -> int | None:
    raw = _getsockopt(fd, level, name, 4)
    if raw is None or len(raw) < 4:
        return None
    return int(struct.unpack("i", raw[:4])[0])


def _unix_send_shut(fd: int) -> bool:
    """True if an AF_UNIX stream socket's send side is shut.

    A zero-length send on a unix stream socket checks SEND_SHUTDOWN (EPIPE)
    before its copy loop, which then runs zero times: nothing is queued and
    the peer is not woken.
    """
    flags = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
    if _c_send(fd, None, 0, flags) >= 0:
        return False
    return ctypes.get_errno() == errno.EPIPE


def _ioctl_int(fd: int, request: int) -> int | None:
    buf = bytearray(4)
    try:
        fcntl.ioctl(fd, request, buf, True)
    except OSError:
        return None
    return int(struct.unpack("i", bytes(buf))[0])


def _poll_mask(fd: int) -> int:
    """The fd's current poll(2) mask, without waiting."""
    p = select.poll()
    p.register(fd, select.POLLIN | select.POLLOUT | _POLLRDHUP)
    ready = p.poll(0)
    return ready[0][1] if ready else 0


# --- kevent ------------------------------------------------------------------


def _conv_ident_init(value: object) -> int:
    # CPython: PyLong_AsSize_t for ints, else PyObject_AsFileDescriptor.
    if isinstance(value, int):
        return _conv_uintptr(value)
    fileno = getattr(value, "fileno", None)
    if fileno is None:
        raise TypeError("argument must be an int, or have a fileno() method.")
    fd = fileno()
    if not isinstance(fd, int):
        raise TypeError("fileno() returned a non-integer")
    if fd < 0:
        raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
    return int(fd)


def _conv_uintptr(value: object) -> int:
    v = operator.index(value)  # type: ignore[arg-type]
    if v < 0:
        raise OverflowError("can't convert negative int to unsigned")
    if v >= _U64:
        raise OverflowError("int too big to convert")
    return v


def _conv_short(value: object) -> int:
    if isinstance(value, float):
        raise TypeError("integer argument expected, got float")
    v = operator.index(value)  # type: ignore[arg-type]
    if v < -(2**15):
        raise OverflowError("signed short integer is less than minimum")
    if v >= 2**15:
        raise OverflowError("signed short integer is greater than maximum")
    return v


def _mask(bits: int) -> Any:
    def conv(value: object) -> int:
        if isinstance(value, float):
            raise TypeError("integer argument expected, got float")
        return operator.index(value) % bits  # type: ignore[arg-type]

    return conv


def _conv_int64(value: object) -> int:
    if isinstance(value, float):
        raise TypeError("integer argument expected, got float")
    v = operator.index(value)  # type: ignore[arg-type]
    if not _I64_MIN <= v <= _I64_MAX:
        raise OverflowError("Python int too large to convert to C long long")
    return v


_conv_u16 = _mask(_U16)  # "H": no overflow check
_conv_u32 = _mask(_U32)  # "I": no overflow check
_conv_u64 = _mask(_U64)  # "K": no overflow check, wraps mod 2**64


def _field(name: str, convert: Any) -> property:
    slot = "_" + name

    def get(self: kevent) -> int:
        return int(getattr(self, slot))

    def set_(self: kevent, value: object) -> None:
        object.__setattr__(self, slot, convert(value))

    return property(get, set_, doc=f"kevent.{name}")


class kevent:
    """select.kevent(ident, filter=KQ_FILTER_READ, flags=KQ_EV_ADD, fflags=0, data=0, udata=0)

    ``ident`` is an int or an object with ``fileno()``. ``udata`` is an
    unsigned pointer-sized int that wraps mod 2**64; it cannot hold an object.
    Fields are writable. ``==`` and ``<`` compare the tuple (ident, filter,
    flags, fflags, data, udata); ordering against anything else is a TypeError.
    """

    __slots__ = ("_ident", "_filter", "_flags", "_fflags", "_data", "_udata")

    def __init__(
        self,
        ident: object,
        filter: int = KQ_FILTER_READ,  # noqa: A002 - CPython's keyword name
        flags: int = KQ_EV_ADD,
        fflags: int = 0,
        data: int = 0,
        udata: int = 0,
    ) -> None:
        # CPython parses the optional fields first, then the ident.
        f = _conv_short(filter)
        fl = _conv_u16(flags)
        ff = _conv_u32(fflags)
        d = _conv_int64(data)
        u = _conv_u64(udata)
        self._ident = _conv_ident_init(ident)
        self._filter = f
        self._flags = fl
        self._fflags = ff
        self._data = d
        self._udata = u

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("type 'select.kevent' is not an acceptable base type")

    ident = _field("ident", _conv_uintptr)
    filter = _field("filter", _conv_short)  # noqa: A003
    flags = _field("flags", _conv_u16)
    fflags = _field("fflags", _conv_u32)
    data = _field("data", _conv_int64)
    udata = _field("udata", _conv_u64)

    @classmethod
    def _make(
        cls, ident: int, filter_: int, flags: int, fflags: int, data: int, udata: int
    ) -> kevent:
        """A result event; fields are trusted."""
        ev = cls.__new__(cls)
        ev._ident = ident
        ev._filter = filter_
        ev._flags = flags % _U16
        ev._fflags = fflags % _U32
        ev._data = data
        ev._udata = udata % _U64
        return ev

    def _key(self) -> tuple[int, int, int, int, int, int]:
        # CPython compares udata as (intptr_t).
        u = self._udata - _U64 if self._udata >= 2**63 else self._udata
        return (self._ident, self._filter, self._flags, self._fflags, self._data, u)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, kevent):
            return NotImplemented
        return self._key() == other._key()

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, kevent):
            return NotImplemented
        return self._key() != other._key()

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, kevent):
            return NotImplemented
        return self._key() < other._key()

    def __le__(self, other: object) -> bool:
        if not isinstance(other, kevent):
            return NotImplemented
        return self._key() <= other._key()

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, kevent):
            return NotImplemented
        return self._key() > other._key()

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, kevent):
            return NotImplemented
        return self._key() >= other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"<select.kevent ident={self._ident} filter={self._filter} "
            f"flags=0x{self._flags:x} fflags=0x{self._fflags:x} "
            f"data=0x{self._data % _U64:x} udata=0x{self._udata:x}>"
        )


# --- knotes ------------------------------------------------------------------

# What an ident names; decides how the filters are computed (see _evaluate).
_KIND_SOCKET = 0
_KIND_PIPE = 1  # pipe or FIFO; see _Knote.readable_end / writable_end
_KIND_VNODE = 2  # regular file or directory: user space, not in epoll
_KIND_OTHER = 3  # anything else epoll accepts (tty, character device, ...)


class _Knote:
    """One registration, keyed by (ident, filter). Guarded by _Core.lock."""

    __slots__ = (
        "ident",
        "filter",
        "kind",
        "dev",
        "ino",
        "flags",
        "mode",
        "sfflags",
        "sdata",
        "udata",
        "disabled",
        "queued",
        "stamp",
        "sock_family",
        "sock_type",
        "sock_proto",
        "readable_end",
        "writable_end",
    )

    def __init__(self, ident: int, filter_: int, st: os.stat_result) -> None:
        self.ident = ident
        self.filter = filter_
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.flags = 0  # returned-flags base (flavor form), set at creation
        self.mode = 0  # EV_CLEAR | EV_ONESHOT | EV_DISPATCH, fixed at creation
        self.sfflags = 0  # filter parameters (NOTE_LOWAT) and its sdata
        self.sdata = 0
        self.udata = 0
        self.disabled = False
        self.queued = False  # True iff in _Core.active
        # vnode EV_CLEAR: (size, mtime) when last returned
        self.stamp: tuple[int, int] | None = None
        self.sock_family = self.sock_type = self.sock_proto = 0
        self.readable_end = self.writable_end = False
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            self.kind = _KIND_SOCKET
            self.sock_family = _getsockopt_int(ident, socket.SOL_SOCKET, socket.SO_DOMAIN) or 0
            self.sock_type = _getsockopt_int(ident, socket.SOL_SOCKET, socket.SO_TYPE) or 0
            self.sock_proto = _getsockopt_int(ident, socket.SOL_SOCKET, socket.SO_PROTOCOL) or 0
        elif stat.S_ISFIFO(mode):
            self.kind = _KIND_PIPE
            access = fcntl.fcntl(ident, fcntl.F_GETFL) & os.O_ACCMODE
            self.readable_end = access in (os.O_RDONLY, os.O_RDWR)
            self.writable_end = access in (os.O_WRONLY, os.O_RDWR)
        elif stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            self.kind = _KIND_VNODE
        else:
            self.kind = _KIND_OTHER

    @property
    def key(self) -> tuple[int, int]:
        return (self.ident, self.filter)

    @property
    def in_epoll(self) -> bool:
        return self.kind != _KIND_VNODE

    @property
    def is_tcp(self) -> bool:
        return (
            self.kind == _KIND_SOCKET
            and self.sock_family in (socket.AF_INET, socket.AF_INET6)
            and self.sock_type == socket.SOCK_STREAM
            and self.sock_proto in (0, socket.IPPROTO_TCP)
        )


def _fstat(ident: int) -> os.stat_result | None:
    try:
        return os.fstat(ident)
    except (OSError, OverflowError):
        return None


# --- the kqueue itself ---------------------------------------------------------


class _Core:
    """The state of one emulated kqueue, shared by kqueue objects made by fromfd.

    Lock order: only ``lock``. It is never held across a blocking call: the
    poll(2), ioctl, getsockopt and zero-timeout epoll calls made under it do
    not wait.
    """

    def __init__(self, flavor: str) -> None:
        self.flavor = flavor
        self.pid = os.getpid()  # a kqueue belongs to the process that made it
        self.lock = threading.Lock()
        # All fields below are guarded by lock.
        self.closed = False
        self.waiters = 0  # threads blocked (or about to block) in ep.poll
        self.wake_pending = False  # a byte sits in the wake pipe
        self.knotes: dict[tuple[int, int], _Knote] = {}
        self.vnodes: dict[tuple[int, int], _Knote] = {}  # subset: kind == VNODE
        # The active queue: knotes to return, FIFO. kn.queued iff kn is here.
        self.active: collections.OrderedDict[tuple[int, int], _Knote] = collections.OrderedDict()
        self.wake_r = self.wake_w = -1
        self.ep = select.epoll()  # EPOLL_CLOEXEC; its fd is kqueue.fileno()
        self.fd = self.ep.fileno()
        self.rep = select.epoll()
        self.wep = select.epoll()
        try:
            self.wake_r, self.wake_w = os.pipe()  # non-inheritable
            os.set_blocking(self.wake_r, False)
            os.set_blocking(self.wake_w, False)
            self.ep.register(self.rep.fileno(), select.EPOLLIN)
            self.ep.register(self.wep.fileno(), select.EPOLLIN)
            self.ep.register(self.wake_r, select.EPOLLIN)
        except BaseException:
            self.after_fork_in_child()  # closes whatever was opened, without the lock
            raise

    # -- lifetime ------------------------------------------------------------

    def close(self) -> None:
        """Close the kqueue fd. Waiters keep waiting, as on the BSDs."""
        if self.pid != os.getpid():
            self.after_fork_in_child()  # the lock may have been held at fork
            return
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.ep.close()
            self.release_if_unused_locked()

    def release_if_unused_locked(self) -> None:
        """Free the inner fds once the kqueue is closed and no thread waits in it; the
        last waiter of a kqueue closed under it does this. Must hold lock."""
        if self.closed and self.waiters == 0 and self.wake_r >= 0:
            self._release_locked()

    def _release_locked(self) -> None:
        """Free the inner fds. Must be called with lock held, closed set, no waiters."""
        for kn in list(self.knotes.values()):
            self._drop_locked(kn)
        self.rep.close()
        self.wep.close()
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.wake_r = self.wake_w = -1

    def after_fork_in_child(self) -> None:
        """A kqueue is not inherited across fork: close our copies. No locking,
        since a parent thread may have held the lock at fork time. Idempotent."""
        self.lock = threading.Lock()
        if self.closed and self.wake_r < 0:
            return
        self.closed = True
        for ep in (self.ep, self.rep, self.wep):
            ep.close()
        for fd in (self.wake_r, self.wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.wake_r = self.wake_w = -1
        self.knotes.clear()
        self.vnodes.clear()
        self.active.clear()

    # -- changes -------------------------------------------------------------

    def register(self, ch: tuple[int, int, int, int, int, int]) -> int | None:
        """Apply one change; return 0 or an errno, or None if it is skipped.

        Must be called while holding lock. Go: none (kqueue_register in
        FreeBSD's kern_event.c / kevent_register in xnu).
        """
        ident, filt, flags, fflags, data, udata = ch
        flags &= ~KQ_EV_SYSFLAGS  # both kernels: "user doesn't pass in any system flags"
        freebsd = self.flavor == "freebsd"
        if filt not in (KQ_FILTER_READ, KQ_FILTER_WRITE):
            if filt == 0 and freebsd:
                return None  # FreeBSD's kevent loop: `if (!kevp->filter) continue;`
            if filt in _UNEMULATED_FILTERS[self.flavor]:
                raise NotImplementedError(
                    f"kqueue_emul: filter {filt} is not emulated (only READ and WRITE)"
                )
            return errno.EINVAL
        if flags & KQ_EV_ENABLE and flags & KQ_EV_DISABLE:
            if freebsd:
                return errno.EINVAL
            flags &= ~KQ_EV_ENABLE  # xnu: DISABLE wins

        st = _fstat(ident)
        kn = self.knotes.get((ident, filt))
        if kn is not None and not self._same_object(kn, st):
            self._purge_ident_locked(ident)
            kn = None

        if kn is None:
            if not flags & KQ_EV_ADD:
                if st is None and freebsd:
                    return errno.EBADF  # FreeBSD checks the fd before the knote
                return errno.ENOENT
            if st is None:
                return errno.EBADF
            return self._attach_locked(ident, filt, flags, fflags, data, udata, st)

        if flags & KQ_EV_DELETE:
            self._drop_locked(kn)
            return 0
        # Modify: udata and filter parameters replaced, mode bits kept.
        kn.udata = udata
        kn.sfflags = fflags
        kn.sdata = data
        if flags & KQ_EV_ENABLE:
            kn.disabled = False
        elif flags & KQ_EV_DISABLE:
            self._disable_locked(kn)
        self._rerun_filter_locked(kn)
        return 0

    def _attach_locked(
        self,
        ident: int,
        filt: int,
        flags: int,
        fflags: int,
        data: int,
        udata: int,
        st: os.stat_result,
    ) -> int:
        """Create a knote. Must be called while holding lock."""
        try:
            kn = _Knote(ident, filt, st)
        except OSError as e:
            return e.errno or errno.EBADF
        if self.flavor == "freebsd":
            kn.flags = flags & ~(
                KQ_EV_ADD | KQ_EV_DELETE | KQ_EV_ENABLE | KQ_EV_DISABLE | _EV_FORCEONESHOT
            )
        else:
            kn.flags = flags
        kn.mode = flags & (KQ_EV_CLEAR | KQ_EV_ONESHOT | _EV_DISPATCH)
        kn.sfflags = fflags
        kn.sdata = data
        kn.udata = udata
        kn.disabled = bool(flags & KQ_EV_DISABLE)
        if (
            self.flavor == "freebsd"
            and kn.kind == _KIND_PIPE
            and filt == KQ_FILTER_WRITE
            and kn.writable_end
            and _poll_mask(ident) & select.POLLERR
        ):
            return errno.EPIPE  # pipe_kqfilter: "other end of pipe has been closed"
        if kn.in_epoll:
            ep, events = self._epoll_for(filt)
            try:
                ep.register(ident, events)
            except FileExistsError:
                ep.modify(ident, events)
            except OSError as e:
                if e.errno == errno.EPERM:
                    return errno.EINVAL  # kqueue cannot watch this kind of object
                return e.errno or errno.EINVAL
        else:
            self.vnodes[kn.key] = kn
        self.knotes[kn.key] = kn
        self._rerun_filter_locked(kn)
        return 0

    def _epoll_for(self, filt: int) -> tuple[select.epoll, int]:
        if filt == KQ_FILTER_READ:
            return self.rep, select.EPOLLIN | _EPOLLRDHUP | select.EPOLLET
        return self.wep, select.EPOLLOUT | select.EPOLLET

    def _drop_locked(self, kn: _Knote) -> None:
        """Delete a knote. Must be called while holding lock."""
        self.knotes.pop(kn.key, None)
        self.vnodes.pop(kn.key, None)
        if kn.queued:
            del self.active[kn.key]
            kn.queued = False
        if kn.in_epoll:
            ep, _ = self._epoll_for(kn.filter)
            try:
                ep.unregister(kn.ident)
            except (OSError, ValueError):
                # ENOENT/EBADF: the fd was closed or now names another file; the
                # old epoll item, if any, dies with the old file.
                pass

    def _disable_locked(self, kn: _Knote) -> None:
        kn.disabled = True
        if kn.queued:
            del self.active[kn.key]
            kn.queued = False

    def _purge_ident_locked(self, ident: int) -> None:
        """kqueue drops an fd's knotes when it is closed (knote_fdclose)."""
        for filt in (KQ_FILTER_READ, KQ_FILTER_WRITE):
            kn = self.knotes.get((ident, filt))
            if kn is not None:
                self._drop_locked(kn)

    @staticmethod
    def _same_object(kn: _Knote, st: os.stat_result | None) -> bool:
        return st is not None and st.st_dev == kn.dev and st.st_ino == kn.ino

    def _rerun_filter_locked(self, kn: _Knote) -> None:
        """At EV_ADD/EV_ENABLE kqueue runs the filter and queues the knote if it
        fires. Must be called while holding lock."""
        if kn.disabled or kn.queued:
            return
        fires, _, _ = self._evaluate(kn)
        if fires:
            self._activate_locked(kn)
            self._wake_waiters_locked()

    def _activate_locked(self, kn: _Knote) -> None:
        if not kn.disabled and not kn.queued:
            kn.queued = True
            self.active[kn.key] = kn

    def _wake_waiters_locked(self) -> None:
        """A knote was queued in user space: make a blocked control() look."""
        if self.waiters and not self.wake_pending and self.wake_w >= 0:
            try:
                os.write(self.wake_w, b"\0")
                self.wake_pending = True
            except BlockingIOError:
                pass

    # -- filters -------------------------------------------------------------

    def _evaluate(self, kn: _Knote) -> tuple[bool, bool, int]:
        """Run kn's filter now: (fires, eof, data). Must hold lock.

        Go: none (filt_soread/filt_sowrite, filt_piperead/filt_pipewrite,
        filt_vfsread/filt_vfswrite).
        """
        fd = kn.ident
        xnu = self.flavor == "xnu"
        if kn.kind == _KIND_VNODE:
            if kn.filter == KQ_FILTER_WRITE:
                return True, False, 1 if xnu else 0
            try:
                size = os.fstat(fd).st_size
                offset = os.lseek(fd, 0, os.SEEK_CUR)
            except OSError:
                return False, False, 0
            data = size - offset
            always = not xnu and kn.sfflags & _NOTE_FILE_POLL
            return bool(data != 0 or always), False, data

        mask = _poll_mask(fd)
        if mask & select.POLLNVAL:
            return False, False, 0
        lowat_note = kn.sfflags & KQ_NOTE_LOWAT

        if kn.kind == _KIND_PIPE:
            if kn.filter == KQ_FILTER_READ:
                if not kn.readable_end:
                    # Wrong end. xnu: fires with EV_EOF when the reader is gone.
                    eof = xnu and bool(mask & select.POLLERR)
                    return eof, eof, 0
                data = _ioctl_int(fd, termios.FIONREAD) or 0
                if mask & select.POLLHUP:
                    return True, True, data
                lowat = kn.sdata if (lowat_note and xnu) else 1
                return data >= max(lowat, 1), False, data
            if not kn.writable_end:
                # Wrong end. xnu: fires with EV_EOF when the writers are gone.
                eof = xnu and bool(mask & select.POLLHUP)
                return eof, eof, 0
            if mask & select.POLLERR:
                return True, True, 0  # reader gone
            try:
                size = fcntl.fcntl(fd, _F_GETPIPE_SZ)
            except OSError:
                size = 65536
            data = max(size - (_ioctl_int(fd, termios.FIONREAD) or 0), 0)
            lowat = kn.sdata if (lowat_note and xnu) else _PIPE_BUF
            return bool(mask & select.POLLOUT) and data >= lowat, False, data

        if kn.kind == _KIND_SOCKET:
            if kn.filter == KQ_FILTER_READ:
                return self._soread(kn, mask)
            return self._sowrite(kn, mask)

        # Other epoll-able objects (ttys, character devices).
        eof = bool(mask & select.POLLHUP)
        if kn.filter == KQ_FILTER_READ:
            nread = _ioctl_int(fd, termios.FIONREAD)
            if nread is None:
                return bool(mask & (select.POLLIN | select.POLLHUP)), eof, 0
            return nread > 0 or eof, eof, nread
        return bool(mask & (select.POLLOUT | select.POLLHUP | select.POLLERR)), eof, 0

    def _soread(self, kn: _Knote, mask: int) -> tuple[bool, bool, int]:
        fd = kn.ident
        if _getsockopt_int(fd, socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            # Listening: data is the accept-queue length.
            if kn.is_tcp:
                info = _getsockopt(fd, socket.IPPROTO_TCP, socket.TCP_INFO, 32)
                qlen = struct.unpack_from("I", info, 24)[0] if info and len(info) >= 28 else 0
            else:
                qlen = 1 if mask & select.POLLIN else 0  # AF_UNIX: not countable
            return qlen > 0 or bool(mask & select.POLLERR), False, qlen
        data = _ioctl_int(fd, termios.FIONREAD) or 0
        if mask & _POLLRDHUP:
            return True, True, data  # peer FIN or local SHUT_RD (CANTRCVMORE)
        if mask & select.POLLERR:
            return True, False, data  # pending so_error, no EOF
        if kn.sfflags & KQ_NOTE_LOWAT:
            return data >= kn.sdata, False, data
        lowat = _getsockopt_int(fd, socket.SOL_SOCKET, socket.SO_RCVLOWAT) or 1
        return data >= lowat, False, data

    def _sowrite(self, kn: _Knote, mask: int) -> tuple[bool, bool, int]:
        fd = kn.ident
        sndbuf = _getsockopt_int(fd, socket.SOL_SOCKET, socket.SO_SNDBUF) or 0
        data = max(sndbuf - (_ioctl_int(fd, _SIOCOUTQ) or 0), 0)
        eof = bool(mask & select.POLLHUP)
        if not eof and kn.is_tcp:
            info = _getsockopt(fd, socket.IPPROTO_TCP, socket.TCP_INFO, 1)
            eof = bool(info) and info[0] in _TCP_SEND_SHUT_STATES  # type: ignore[index]
        elif not eof and kn.sock_family == socket.AF_UNIX and kn.sock_type == socket.SOCK_STREAM:
            eof = _unix_send_shut(fd)
        if eof:
            return True, True, data  # CANTSENDMORE
        if mask & select.POLLERR:
            return True, False, data
        if not mask & select.POLLOUT:
            return False, False, data
        if kn.sfflags & KQ_NOTE_LOWAT:
            return data >= kn.sdata, False, data
        return True, False, data

    # -- scanning ------------------------------------------------------------

    def harvest_locked(self) -> None:
        """Turn every edge fetched from the inner epolls into an active knote.
        Nothing fetched is dropped. Must hold lock."""
        for ep, filt in ((self.rep, KQ_FILTER_READ), (self.wep, KQ_FILTER_WRITE)):
            while True:
                events = ep.poll(0, 1024)
                for fd, _mask in events:
                    kn = self.knotes.get((fd, filt))
                    if kn is not None:
                        self._activate_locked(kn)
                if len(events) < 1024:
                    break
        for kn in list(self.vnodes.values()):
            if kn.disabled or kn.queued:
                continue
            if kn.mode & KQ_EV_CLEAR:
                st = _fstat(kn.ident)
                if st is None or (st.st_size, st.st_mtime_ns) == kn.stamp:
                    continue
            fires, _, _ = self._evaluate(kn)
            if fires:
                self._activate_locked(kn)

    def drain_wake_locked(self) -> None:
        if self.wake_pending:
            try:
                while os.read(self.wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            self.wake_pending = False

    def collect_locked(self, max_events: int) -> list[kevent]:
        """Pop up to max_events knotes that still fire. Must hold lock.

        Go: none (kqueue_scan).
        """
        out: list[kevent] = []
        # Each knote is looked at most once per call; level knotes go back to
        # the tail and must not be seen again in this call.
        for _ in range(len(self.active)):
            # A purge below can take other knotes off the queue: stop when it is empty.
            if len(out) >= max_events or not self.active:
                break
            key, kn = self.active.popitem(last=False)
            kn.queued = False
            if not self._same_object(kn, _fstat(kn.ident)):
                self._purge_ident_locked(kn.ident)  # closed since it fired
                continue
            fires, eof, data = self._evaluate(kn)
            if not fires and not kn.mode & KQ_EV_ONESHOT:
                continue  # condition no longer holds: silently dropped
            flags = kn.flags | (KQ_EV_EOF if eof else 0)
            out.append(kevent._make(kn.ident, kn.filter, flags, 0, data, kn.udata))
            if kn.mode & KQ_EV_ONESHOT:
                self._drop_locked(kn)
            elif kn.mode & _EV_DISPATCH:
                kn.disabled = True
            elif kn.mode & KQ_EV_CLEAR:
                if kn.kind == _KIND_VNODE:
                    st = _fstat(kn.ident)
                    kn.stamp = (st.st_size, st.st_mtime_ns) if st else None
            else:
                self._activate_locked(kn)  # level: back to the tail
        return out


# Every live kqueue object, so a forked child can mark them closed.
_live_kqueues: weakref.WeakSet[kqueue] = weakref.WeakSet()
_cores_by_fd: weakref.WeakValueDictionary[int, _Core] = weakref.WeakValueDictionary()


def _forget_core(core: _Core) -> None:
    """Drop core from the fromfd table, unless its fd number now names another."""
    if _cores_by_fd.get(core.fd) is core:
        _cores_by_fd.pop(core.fd, None)


def _after_fork_in_child() -> None:
    # Only kqueues of the parent: another at-fork handler (threadpoll's runtime)
    # may already have made a fresh one in this child.
    pid = os.getpid()
    cores = set()
    for kq in list(_live_kqueues):
        if kq._core is not None and kq._core.pid != pid:
            kq._closed = True
            cores.add(kq._core)
    for core in cores:
        _forget_core(core)
        core.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _parse_timeout(timeout: object) -> int | None:
    """CPython's _PyTime_FromSecondsObject(ROUND_TIMEOUT): ns, rounded away from 0."""
    if timeout is None:
        return None
    try:
        if isinstance(timeout, float):
            if math.isnan(timeout):
                raise ValueError("Invalid value NaN (not a number)")
            scaled = timeout * 1e9
            ns = math.ceil(scaled) if scaled >= 0 else math.floor(scaled)
        else:
            ns = operator.index(timeout) * 10**9  # type: ignore[arg-type]
        if not _I64_MIN <= ns <= _I64_MAX:
            raise OverflowError("timestamp too large to convert to C _PyTime_t")
    except (TypeError, ValueError, OverflowError):
        raise TypeError(
            f"timeout argument must be a number or None, got {type(timeout).__name__}"
        ) from None
    if ns < 0:
        raise ValueError("timeout must be positive or None")
    return ns


def _parse_max_events(max_events: object) -> int:
    if isinstance(max_events, float):
        raise TypeError("'float' object cannot be interpreted as an integer")
    n = operator.index(max_events)  # type: ignore[arg-type]
    if not -(2**31) <= n <= _INT32_MAX:
        raise OverflowError("Python int too large to convert to C int")
    if n < 0:
        raise ValueError(f"Length of eventlist must be 0 or positive, got {n}")
    return n


def _snapshot_changes(changelist: object) -> list[tuple[int, int, int, int, int, int]]:
    if changelist is None:
        return []
    if isinstance(changelist, (list, tuple)):
        seq: Iterable[object] = changelist
    else:
        try:
            it = iter(changelist)  # type: ignore[call-overload]
        except TypeError:
            raise TypeError("changelist is not iterable") from None
        seq = list(it)  # an error raised while iterating propagates as is
    changes = []
    for ev in seq:
        if not isinstance(ev, kevent):
            raise TypeError("changelist must be an iterable of select.kevent objects")
        changes.append((ev._ident, ev._filter, ev._flags, ev._fflags, ev._data, ev._udata))
    return changes


class kqueue:
    """select.kqueue(): an emulated kernel event queue (see the module docstring)."""

    _flavor: ClassVar[str] = "freebsd"
    __slots__ = ("_core", "_closed", "__weakref__")

    def __init__(self) -> None:
        self._closed = True
        self._core: _Core | None = None
        core = _Core(self._flavor)
        self._core = core
        self._closed = False
        _cores_by_fd[core.fd] = core
        _live_kqueues.add(self)

    @classmethod
    def fromfd(cls, fd: int, /) -> kqueue:
        """Wrap the fd of a live emulated kqueue; the objects share the queue."""
        core = _cores_by_fd.get(operator.index(fd))
        if core is None or core.closed:
            raise OSError(errno.EBADF, "kqueue_emul: fromfd() needs an emulated kqueue's fd")
        self = cls.__new__(cls)
        self._core = core
        self._closed = False
        _live_kqueues.add(self)
        return self

    @property
    def closed(self) -> bool:
        """True if the kqueue handler is closed (always, in a forked child)."""
        return self._closed or self._core is None or self._core.pid != os.getpid()

    def _live(self) -> _Core:
        if self.closed:
            raise ValueError("I/O operation on closed kqueue object")
        return self._core  # type: ignore[return-value]

    def fileno(self) -> int:
        """Return the kqueue control file descriptor."""
        return self._live().fd

    def close(self) -> None:
        """Close the kqueue control file descriptor.

        Further operations on the kqueue object will raise an exception.
        """
        if self._closed:
            return
        self._closed = True
        if self._core is not None:
            _forget_core(self._core)
            self._core.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    def control(
        self, changelist: object, max_events: object, timeout: object = None, /
    ) -> list[kevent]:
        """control(changelist, max_events, timeout=None, /) -> list of kevent

        Apply changelist, then wait up to timeout seconds (None: forever) for at
        most max_events events. With max_events == 0 it never waits.
        """
        core = self._live()
        n = _parse_max_events(max_events)
        timeout_ns = _parse_timeout(timeout)
        changes = _snapshot_changes(changelist)
        if timeout_ns is not None and timeout_ns // 10**9 > _INT32_MAX:
            if self._flavor == "xnu":
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            timeout_ns = None  # FreeBSD: an over-long timeout waits forever
        deadline = None if timeout_ns is None else time.monotonic_ns() + timeout_ns

        results: list[kevent] = []
        xnu = self._flavor == "xnu"
        with core.lock:
            if core.closed:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
            room = n
            for ch in changes:
                err = core.register(ch)
                if err is None:
                    continue
                receipt = ch[2] & _EV_RECEIPT
                if not err and not receipt:
                    continue
                if room == 0:
                    if err:
                        raise OSError(err, os.strerror(err))
                    if xnu:
                        continue  # xnu: a receipt with no room is not an error
                    return []  # FreeBSD: `if (nevents == 0) return (error);`
                flags = (ch[2] & ~KQ_EV_SYSFLAGS | KQ_EV_ERROR) if xnu else KQ_EV_ERROR
                results.append(kevent._make(ch[0], ch[1], flags, ch[3], err, ch[5]))
                room -= 1
        if n == 0 or results:
            return results
        return self._scan(core, n, deadline)

    def _scan(self, core: _Core, n: int, deadline: int | None) -> list[kevent]:
        """Wait for and collect up to n events. Go: none (kqueue_scan)."""
        woke = False  # True once we have been blocked in ep.poll
        while True:
            with core.lock:
                if core.closed:
                    # Closed by another thread. Before we blocked, the kernel
                    # would have said EBADF; a waiter returns what it finds.
                    out: list[kevent] = []
                    if woke and core.wake_r >= 0:
                        core.harvest_locked()
                        out = core.collect_locked(n)
                    core.release_if_unused_locked()
                    if not woke:
                        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
                    return out
                core.drain_wake_locked()
                core.harvest_locked()
                out = core.collect_locked(n)
                if out:
                    return out
                if deadline is None:
                    wait = _MAX_WAIT_S
                else:
                    remaining = deadline - time.monotonic_ns()
                    if remaining <= 0:
                        return []
                    # epoll rounds up to the next millisecond, so we wait at
                    # least the time asked for.
                    wait = min(remaining / 1e9, _MAX_WAIT_S)
                if any(not kn.disabled for kn in core.vnodes.values()):
                    wait = min(wait, _VNODE_RESCAN_S)
                core.waiters += 1
            try:
                core.ep.poll(wait)
                woke = True
            except ValueError:
                pass  # closed by another thread just before we blocked
            except BaseException:
                with core.lock:
                    core.waiters -= 1
                    core.release_if_unused_locked()
                raise
            with core.lock:
                core.waiters -= 1


class _XnuKqueue(kqueue):
    _flavor = "xnu"
    __slots__ = ()


_XnuKqueue.__name__ = _XnuKqueue.__qualname__ = "kqueue"

_KQUEUE_CLASSES = {"freebsd": kqueue, "xnu": _XnuKqueue}

# VNODE/PROC notes that CPython exports (values per flavor's sys/event.h).
_NOTES_COMMON = {
    "KQ_NOTE_LOWAT": KQ_NOTE_LOWAT,
    "KQ_NOTE_DELETE": 0x0001,
    "KQ_NOTE_WRITE": 0x0002,
    "KQ_NOTE_EXTEND": 0x0004,
    "KQ_NOTE_ATTRIB": 0x0008,
    "KQ_NOTE_LINK": 0x0010,
    "KQ_NOTE_RENAME": 0x0020,
    "KQ_NOTE_REVOKE": 0x0040,
    "KQ_NOTE_EXIT": 0x80000000,
    "KQ_NOTE_FORK": 0x40000000,
    "KQ_NOTE_EXEC": 0x20000000,
    "KQ_NOTE_PDATAMASK": 0x000FFFFF,
    "KQ_NOTE_TRACK": 0x00000001,
    "KQ_NOTE_TRACKERR": 0x00000002,
    "KQ_NOTE_CHILD": 0x00000004,
}
_NOTE_PCTRLMASK = {"freebsd": 0xF0000000, "xnu": 0xFFF00000}


class KqueueModule:
    """What the kqueue backend sees as its ``select`` module."""

    kevent = kevent
    error = OSError
    KQ_FILTER_READ = KQ_FILTER_READ
    KQ_FILTER_WRITE = KQ_FILTER_WRITE
    KQ_FILTER_AIO = KQ_FILTER_AIO
    KQ_FILTER_VNODE = KQ_FILTER_VNODE
    KQ_FILTER_PROC = KQ_FILTER_PROC
    KQ_FILTER_SIGNAL = KQ_FILTER_SIGNAL
    KQ_FILTER_TIMER = KQ_FILTER_TIMER
    KQ_EV_ADD = KQ_EV_ADD
    KQ_EV_DELETE = KQ_EV_DELETE
    KQ_EV_ENABLE = KQ_EV_ENABLE
    KQ_EV_DISABLE = KQ_EV_DISABLE
    KQ_EV_ONESHOT = KQ_EV_ONESHOT
    KQ_EV_CLEAR = KQ_EV_CLEAR
    KQ_EV_SYSFLAGS = KQ_EV_SYSFLAGS
    KQ_EV_FLAG1 = KQ_EV_FLAG1
    KQ_EV_EOF = KQ_EV_EOF
    KQ_EV_ERROR = KQ_EV_ERROR

    def __init__(self, flavor: str) -> None:
        if flavor not in FLAVORS:
            raise ValueError(f"kqueue_emul: flavor must be one of {FLAVORS}, not {flavor!r}")
        self.flavor = flavor
        self.kqueue = _KQUEUE_CLASSES[flavor]
        for name, value in _NOTES_COMMON.items():
            setattr(self, name, value)
        self.KQ_NOTE_PCTRLMASK = _NOTE_PCTRLMASK[flavor]

    def __repr__(self) -> str:
        return f"<kqueue_emul module flavor={self.flavor!r}>"


def module(flavor: str = "freebsd") -> KqueueModule:
    """A select-like module whose kqueue behaves like the given kernel's."""
    return KqueueModule(flavor)
