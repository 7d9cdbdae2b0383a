"""FD: a file descriptor with Go's blocking semantics on OS threads.

Read beside Go's ``internal/poll/fd_unix.go`` (and fd_posix.go, fd_mutex.go's FD wrappers).
An FD owns one OS descriptor. Every operation takes a reference through the FD's fdMutex
(reads the read lock, writes the write lock, the rest a plain reference), tries its syscall
without blocking, and on EAGAIN parks in the runtime until the poller readies
it. ``close`` marks the fdMutex closed, evicts the parked threads, and waits on the close
semaphore until the last in-flight operation has dropped its reference; whoever drops it
runs ``_destroy``: unregister from the poller, then close(2). So close(2) never runs while
another thread may still be inside a syscall on that descriptor, and a recycled fd number
can never receive another descriptor's I/O.

Return conventions are Python's: ``read`` returns ``b""`` at EOF (Go's io.EOF), writes
return the byte count and raise with ``.written`` set when they fail part-way.

Differences from Go:
- DIVERGENCE(go): socket calls (accept, recvfrom, sendto, recvmsg, sendmsg, shutdown) go
  through a non-owning ``socket.socket`` on the same descriptor, in non-blocking mode
  (timeout 0), because Python has no fd-level recvfrom; it is detached before close(2).
- DIVERGENCE(go): FD's constructor sets O_NONBLOCK itself for a pollable descriptor and
  restores the original mode when registration fails (Go leaves that to net and os).
- DIVERGENCE(go): EINTR is retried by Python itself (PEP 475); a signal handler that raises
  propagates its exception, leaving the descriptor usable.
- DIVERGENCE(go): ``read_into``/``recvfrom_into`` fill a caller's buffer, Python's style.
- DIVERGENCE(go): ``recv``, ``recv_into`` and ``send`` serve the drop-in socket's blocking
  calls, and ``raw_read``, ``raw_write`` and ``wait_connect`` take a ``CallLimit``, a time
  limit for that call alone (a stdlib socket's timeout): while the call waits, its
  direction's pollDesc deadline is the earlier of the user's deadline and the limit, the way
  Go's net sets a write deadline for a dial's context. No timer thread is involved.
- DIVERGENCE(go): a call that brings a ``CallLimit`` (the drop-in socket's and the TLS
  drop-in's) first takes its direction's call gate, a lock with a timed wait, because a
  stdlib socket's timeout bounds the whole call, the wait for another caller included, and
  Go's fdMutex has no timed wait. See ``FD._gated``.
- DIVERGENCE(go): on a socket, reads and writes are ``recv``/``send`` with ``MSG_DONTWAIT``
  rather than read(2)/write(2), so an attempt never blocks even when another holder of the
  open file description (a child process, ``socket.socket(fileno=...)``) has cleared
  ``O_NONBLOCK``: close still wakes every waiter and returns. Pipes, FIFOs, ttys and accept
  keep Go's rule: whoever clears ``O_NONBLOCK`` on a descriptor threadpoll owns has made it a
  blocking descriptor that close cannot interrupt.

Signal handlers. A Python signal handler runs on the main thread between bytecodes, inside
whatever call that thread is making, and may call any method of the same FD. So no lock of
ours is held while Python code can run except the fdMutex's re-entrant state lock (see
fd_mutex.py for why re-entry is harmless there); the syscalls run with no lock held, as in
Go (readLock, prepareRead, read(2), waitRead). ``close`` from a handler whose thread is inside
an operation on the same FD does not wait for that operation (it cannot leave until the
handler returns): the descriptor is closed when the operation drops its reference.

Go: internal/poll/fd_unix.go
"""

from __future__ import annotations

import _socket
import errno
import fcntl
import os
import socket
import sys
import threading
import time
import weakref
from collections.abc import Iterable
from types import FrameType
from typing import Any, Callable, TypeVar

from typing_extensions import Buffer, final

from threadpoll._poll.fd_mutex import (
    FDMutex,
    load_state,
    poison_after_fork,
    refs_of,
    set_shared_reentry_check,
)
from threadpoll._poll.fd_poll_runtime import (
    PollHandle,
    convert_err,
    deadline_value,
    err_closing,
)
from threadpoll._runtime import trace
from threadpoll._runtime.netpoll import NO_DEADLINE, PollDesc
from threadpoll._runtime.netpoll_c import cpoll as _cpoll
from threadpoll._runtime.park import Sema
from threadpoll._runtime.proc import Runtime, get_runtime
from threadpoll.errors import DeadlineExceededError, NoDeadlineError, with_written

__all__ = [
    "FD",
    "CallLimit",
    "acquire_until",
    "MAX_RW",
    "CONNECT_PENDING",
    "live_fds",
    "owner_of",
]

_T = TypeVar("_T")

# The C socket type. FD calls its methods unbound, so a socket.socket subclass that overrides
# recv and friends in Python (threadpoll.socket) can hand itself to an FD without recursion.
_CSocket = _socket.socket

# Darwin and FreeBSD can't read or write 2GB+ files at a time, even on 64-bit systems.
# Reads are truncated and writes chunked to it, for stream descriptors only.
MAX_RW = 1 << 30

_monotonic = time.monotonic
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_SOCK_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A connect that is not finished yet, when SO_ERROR is read after a wake-up (Go's list).
CONNECT_PENDING = (errno.EINPROGRESS, errno.EALREADY, errno.EINTR)

# Linux applies shutdown(2) of an unconnected socket even as it reports ENOTCONN.
_SHUTDOWN_DESPITE_ENOTCONN = sys.platform.startswith("linux")

# The C core's fdMutex and its FD.Read/FD.Write/FD.Accept loops (threadpoll/_c/fd_unix.c;
# None where it is not built: never used then).
_CFDMutex: Any = _cpoll.FDMutex if _cpoll is not None else FDMutex
_cfd_read: Any = _cpoll.fd_read if _cpoll is not None else None
_cfd_read_into: Any = _cpoll.fd_read_into if _cpoll is not None else None
_cfd_send: Any = _cpoll.fd_send if _cpoll is not None else None
_cfd_write: Any = _cpoll.fd_write if _cpoll is not None else None
_cfd_accept: Any = _cpoll.fd_accept if _cpoll is not None else None
if _cpoll is not None:
    _cpoll._init_io(convert_err)


@final
class _Core(FDMutex, PollHandle):
    """An FD's fdMutex and its pollDesc handle, in one object: Go's FD holds both as value
    fields, with no allocation; here one object instead of two (memory per descriptor, issue
    12). ``FD.fdmu`` and ``FD.pd`` are this same object, read as in Go.

    Go: internal/poll/fd_unix.go FD.fdmu and FD.pd
    """

    __slots__ = ("runtime_ctx",)

    def __init__(self) -> None:
        """Go: none"""
        super().__init__()
        self.runtime_ctx: PollDesc | None = None


@final
class _CCore(_CFDMutex, PollHandle):  # type: ignore[misc]
    """The C core's: its fdMutex with the pollDesc handle's methods; ``runtime_ctx`` is the
    C type's own field (threadpoll/_c/fd_mutex.c), which its fast paths read.

    Go: internal/poll/fd_unix.go FD.fdmu and FD.pd
    """

    __slots__ = ()


def _conn_read_py(fd: FD, fdmu: Any, n: int) -> bytes:
    """Go: internal/poll/fd_unix.go FD.Read"""
    return fd.read(n)


def _conn_read_into_py(fd: FD, fdmu: Any, buf: Buffer) -> int:
    """Go: internal/poll/fd_unix.go FD.Read"""
    return fd.read_into(buf)


def _conn_write_py(fd: FD, fdmu: Any, data: Buffer) -> int:
    """Go: internal/poll/fd_unix.go FD.Write"""
    return fd.write(data)


def _try_none(fd: FD, fdmu: Any, *args: Any) -> None:
    """Go: none"""
    return None


# conn_read(fd, fd.fdmu, n) is fd.read(n), conn_read_into and conn_write likewise; on the C
# core's pollable sockets the C function runs Go's loop itself, with no Python frame between
# the caller (Conn.read) and the syscall. try_recv(fd, fd.fdmu, n), try_recv_into(fd,
# fd.fdmu, buffer, nbytes) and try_send(fd, fd.fdmu, data) are the drop-in's first tries,
# which never wait: the result, or None when the caller must make its gated call
# (threadpoll/_c/fd_unix.c). A call straight into C has no FD frame for _check_reentry and
# _inside_me to find: the C fdMutex records the thread holding each lock (owned_by_me).
conn_read: Callable[[FD, Any, int], bytes] = _cpoll.conn_read if _cpoll else _conn_read_py
conn_read_into: Callable[[FD, Any, Buffer], int] = (
    _cpoll.conn_read_into if _cpoll else _conn_read_into_py
)
conn_write: Callable[[FD, Any, Buffer], int] = _cpoll.conn_write if _cpoll else _conn_write_py
try_recv: Callable[[FD, Any, int], bytes | None] = _cpoll.try_recv if _cpoll else _try_none
try_recv_into: Callable[[FD, Any, Buffer, int], int | None] = (
    _cpoll.try_recv_into if _cpoll else _try_none
)
try_send: Callable[[FD, Any, Buffer], int | None] = _cpoll.try_send if _cpoll else _try_none
# The families whose addresses fd_accept builds itself (the rest take the Python path).
_CACCEPT_FAMILIES = frozenset(
    getattr(socket, f) for f in ("AF_INET", "AF_INET6", "AF_UNIX") if hasattr(socket, f)
)


def _unexpected_eof() -> OSError:
    """Go's io.ErrUnexpectedEOF, for a write(2) that returned 0 without an error.

    Go: io/io.go ErrUnexpectedEOF
    """
    return OSError(errno.EIO, "unexpected EOF")


# Guards _owners and _displaced, and serialises the first use of an FD's lazily made locks
# and close semaphore (FD._made). Re-entrant: a signal handler may make an FD meanwhile.
_live_lock = threading.RLock()

# The FDs' short locks, shared by stripe: an FD's is _short_locks[id(fd) >> 4 & _SHORT_MASK]
# (FD._short_lock). It guards is_blocking against set_blocking, the deadlines (_rd, _wd) and
# call limits (_rcall, _wcall) with the pollDesc deadline made from them, and the making of a
# socket object again (_socket_or_none, shed_socket: _sock). Held only for a few lines that
# make no syscall that can block (a getsockname, an ioctl at most) and wait for nothing, and
# never while taking another: sharing one between FDs costs no per-FD lock (memory per
# descriptor, issue 12) and cannot deadlock. Re-entrant: a signal handler on the holding
# thread may set a deadline, close a descriptor (its own or another of the stripe) or make a
# socket object meanwhile.
_SHORT_MASK = 63
_short_locks = [threading.RLock() for _ in range(_SHORT_MASK + 1)]


def _after_fork_in_child() -> None:
    """Fresh registry and short locks, and every live FD made usable or poisoned
    (FD._after_fork_in_child).

    Go: none
    """
    global _live_lock
    _live_lock = threading.RLock()
    _short_locks[:] = [threading.RLock() for _ in range(_SHORT_MASK + 1)]
    for fd in _live_fds_all():
        fd._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# OS descriptor number → the FD that owns it: every FD made and not destroyed yet, so it is
# also the registry of live FDs. Guarded by _live_lock. It holds an FD itself, as Go's
# runtime holds a registered pollDesc: an FD has no finalizer and lives until destroyed
# (closed or detached); the fronts that own one (Conn, Listener, PacketConn, File) close it
# from theirs. The exception, held through a weakref.ref (see _owner_entry): an FD made on
# a socket object of a class other than _socket.socket's (the drop-in's, which is its own
# front), which must stay collectable for its finalizer to run; a dead one's entry stays
# until its number is registered again. A list indexed by descriptor number (None where no
# FD is), as long as the highest number registered yet: 8 bytes a number, where a dict's
# entry cost about 36 per descriptor (issue 12).
_owners: list[FD | weakref.ref[FD] | None] = []
# The rare FD that lost its _owners entry before it was destroyed: it was closing (owner_of
# ignores it) when a new FD took the same descriptor number. Still live until destroyed (a
# forked child must still make its locks usable). Guarded by _live_lock.
_displaced: weakref.WeakSet[FD] = weakref.WeakSet()


def _live_fds_all() -> list[FD]:
    """Every FD made and not destroyed yet, closing or not.

    Go: none
    """
    with _live_lock:
        entries = [e for e in _owners if e is not None]
        # A copy of the WeakSet's own references, not list(_displaced): its iteration guard
        # races with the removal callbacks, which run unlocked in whatever thread frees an
        # FD ("changed size during iteration", without the GIL).
        refs: list[weakref.ref[FD]] = list(_displaced.data)  # type: ignore[attr-defined]
    fds = [_owner_entry(e) for e in entries] + [r() for r in refs]
    return [fd for fd in fds if fd is not None]


def _owner_at(sysfd: int) -> FD | weakref.ref[FD] | None:
    """The _owners entry for descriptor number sysfd, or None. Under _live_lock.

    Go: none
    """
    return _owners[sysfd] if 0 <= sysfd < len(_owners) else None


def _owner_entry(entry: FD | weakref.ref[FD] | None) -> FD | None:
    """The FD an _owners entry stands for: itself, or what its weakref.ref still reaches.

    Go: none
    """
    if isinstance(entry, weakref.ref):
        return entry()
    return entry


def live_fds() -> list[FD]:
    """Every FD that is not closed yet (for threadpoll.testing and diagnostics).

    Go: none
    """
    return [fd for fd in _live_fds_all() if not fd.fdmu.closing()]


@final
class CallLimit:
    """A time limit for one call, as a stdlib socket's timeout sets it: ``until``, absolute
    ``time.monotonic()`` seconds (None: none), and ``expired``, which makes the error raised
    when it passes (``socket.timeout('timed out')``, say). The caller may move ``until``
    between waits (a budget renewed by progress).

    Go: none (Go's calls have no timeouts; net sets a deadline where it needs one)
    """

    __slots__ = ("until", "expired")

    def __init__(self, until: float | None, expired: Callable[[], BaseException]) -> None:
        """Go: none"""
        self.until = until
        self.expired = expired


def acquire_until(lock: Any, until: float | None, expired: Callable[[], BaseException]) -> None:
    """Acquire lock, waiting until ``until`` (absolute ``time.monotonic()`` seconds; None:
    for ever) at most, then raising ``expired()``.

    Go: none
    """
    if until is None:
        lock.acquire()
        return
    while not lock.acquire(False):
        left = until - _monotonic()
        if left <= 0:
            raise expired()
        if lock.acquire(True, min(left, threading.TIMEOUT_MAX)):
            return


def _reentered(read: bool) -> RuntimeError:
    """A call re-entered from a signal handler in the direction its own thread is in.

    Go: none (a goroutine cannot be interrupted by a handler)
    """
    what = "read" if read else "write"
    return RuntimeError(
        f"reentrant call: a {what} on this descriptor from a signal handler while its own "
        f"thread is in a {what} on it (it would wait for itself)"
    )


@final
class _Rare:
    """An FD's rarely needed state (see FD._rare), made on first need: most descriptors
    never time a call, detach, fork or get refused, and need a close semaphore only once
    they close (memory per descriptor, issue 12). The fields are the FD's properties of the
    same names; each is guarded as the FD documents it.

    Go: none (fields of internal/poll's FD)
    """

    __slots__ = (
        "csema",
        "rcall",
        "wcall",
        "rgate",
        "wgate",
        "detaching",
        "ghost_refs",
        "init_errno",
        "read_shut",
        "kind",
    )

    def __init__(self) -> None:
        """Go: none"""
        self.csema: Sema | None = None
        self.rcall: float | None = None
        self.wcall: float | None = None
        self.rgate: threading.RLock | None = None
        self.wgate: threading.RLock | None = None
        self.detaching = False
        self.ghost_refs = 0
        self.init_errno = 0
        self.read_shut = False
        self.kind = ""


@final
class FD:
    """A file descriptor with Go's internal/poll semantics.

    ``net`` is Go's network name ("tcp", "udp", "unix", "unixgram", "file", ...): "file"
    makes closing errors FileClosingError, anything else NetClosingError, and a name other
    than "file" gives the FD socket operations. ``pollable=False`` (or a backend refusing the
    descriptor, as epoll does regular files) leaves it in blocking mode, where close does not
    wait for in-flight operations and deadlines raise NoDeadlineError.

    Go: internal/poll/fd_unix.go FD
    """

    __slots__ = (
        "fdmu",
        "sysfd",
        "pd",
        "is_blocking",
        "is_stream",
        "net",
        "_sock",
        "_was_blocking",
        "_cfd",
        "_cfast",
        "_rd",
        "_wd",
        "_rare",
        "__weakref__",
    )

    def __init__(
        self,
        sysfd: int,
        *,
        net: str = "file",
        pollable: bool = True,
        is_stream: bool = True,
        kind: str = "",
        runtime: Runtime | None = None,
        sock: socket.socket | None = None,
        keep_mode: bool = False,
    ) -> None:
        """Take ownership of sysfd and register it with the poller if pollable.

        ``sock``, for a socket, is a socket object on sysfd to make the socket calls through
        (its C-level methods, in non-blocking mode); by default the FD makes its own. Either
        way it is detached, never closed: when the FD is destroyed, or earlier by
        shed_socket (net's Conn on the C core). If the constructor raises, sysfd is left as
        it was and the caller still owns it.

        ``keep_mode`` (the drop-in socket) leaves the descriptor's blocking mode and the
        socket object's timeout to the caller: every attempt is then a recv/send with
        ``MSG_DONTWAIT``, whatever the descriptor's mode.

        Go: internal/poll/fd_unix.go FD.Init
        """
        if isinstance(sysfd, bool) or not isinstance(sysfd, int):
            raise TypeError(f"fd must be an int, not {type(sysfd).__name__}")
        if sysfd < 0:
            raise ValueError(f"fd must be >= 0, not {sysfd}")
        if not isinstance(net, str):
            raise TypeError(f"net must be a str, not {type(net).__name__}")
        was_blocking = os.get_blocking(sysfd)  # EBADF for a descriptor that is not open
        owner = owner_of(sysfd)
        if owner is not None:
            # A second registration with the poller would take over the first one's events
            # (or be refused) and wedge its parked threads: refuse it plainly.
            raise OSError(
                errno.EBUSY,
                f"fd {sysfd} is already owned by a threadpoll {owner.kind} descriptor: use "
                f"that object, or pass a duplicate (os.dup({sysfd}))",
            )
        rt = runtime if runtime is not None else get_runtime()
        # On the C core's runtime, the C core's fdMutex (threadpoll/_c/fd_mutex.c), whose
        # state word the C first attempts below update with compare-and-swap.
        self._cfd = rt.impl == "c"
        # The fdMutex is also the pollDesc handle (_Core): self.pd below is the same object.
        core = _CCore() if self._cfd else _Core()
        self.fdmu: FDMutex = core
        # Neither mutex gets a re-entry check of its own: both run _shared_reentry_check,
        # which finds this FD by its mutex on the waiting thread's stack (no closure per FD).
        self._cfast = False  # the C first attempts apply (a pollable socket on the C core)
        # Constant until _destroy, which runs when no op holds a ref. Benign race: the C
        # core's fast paths read it (and pd.runtime_ctx) holding none; the C loop takes the
        # read or write lock before it uses either, and that fails once the FD is closed.
        self.sysfd = sysfd
        self.pd: PollHandle = core
        # What few FDs ever need (the close semaphore before their close, the call gates and
        # limits of timed calls, detach's and fork's marks, a backend's refusal, a shut read
        # side, a kind other than net): in one object made on first need (_rare_state); the
        # properties below read its defaults while there is none.
        self._rare: _Rare | None = None
        self.is_stream = is_stream
        self.net = net  # is_file: net == "file"
        if kind and kind != net:
            self.kind = kind
        self._was_blocking = was_blocking
        # is_blocking, and the deadlines the user set (_rd, _wd) and the limits of the calls
        # waiting now with one of their own (_rcall, _wcall: see _wait), are guarded by the
        # FD's short lock (_short_lock: shared by stripe, none per FD); the pollDesc has the
        # earlier of each pair. A signal handler's close or deadline may run while its thread
        # is inside (the lock is re-entrant; re-entry only reads is_blocking, or makes the
        # socket object, which _socket_or_none allows for). Benign race:
        # the fast paths (read, write, recv, send, accept and the like), File.fileno and the
        # reprs read is_blocking without it. It only goes from False to True (set_blocking);
        # a stale False only picks the C loop, which makes the Python loop's syscalls and
        # parks on the same pollDesc, or has File.fileno call set_blocking again (a no-op).
        self._rd = NO_DEADLINE  # guarded by _short_lock()
        self._wd = NO_DEADLINE  # guarded by _short_lock()
        self._sock: _socket.socket | None = sock
        self.is_blocking = True
        if not self.is_file and sock is None:
            # The C type, not socket.socket: under threadpoll.socket.patch() the latter is
            # threadpoll's own class, which would register the descriptor a second time.
            # Made on sysfd in the try below (as _socket_or_none makes one): from __new__ it
            # holds no descriptor, so no exception can drop one that would close sysfd.
            self._sock = _CSocket.__new__(_CSocket)
        try:
            if self._sock is not None and sock is None:
                _CSocket.__init__(self._sock, fileno=sysfd)
            if pollable:
                if was_blocking and not keep_mode:
                    os.set_blocking(sysfd, False)
                err = self.pd.init(sysfd, runtime)
                if err == 0:
                    self.is_blocking = False
                    self._cfast = self._cfd and not self.is_file
                    pd = self.pd.runtime_ctx
                    if pd is not None:
                        with pd.lock:  # published: runtime_poll_open put it in open_pds
                            pd.kind = self.kind
                        if self._cfast:  # Conn's and the drop-in's calls straight into C
                            self._cmu()._set_fast(pd, sysfd, is_stream)
                else:
                    self.init_errno = err
                    if was_blocking and not keep_mode:
                        os.set_blocking(sysfd, True)  # the backend refused it: restore the mode
            if self._sock is not None and not keep_mode:
                # timeout 0: the socket object's calls never block or poll by themselves; for
                # a blocking FD, timeout None: plain blocking calls.
                _CSocket.settimeout(self._sock, None if self.is_blocking else 0.0)
                if self.is_blocking and not was_blocking:
                    os.set_blocking(sysfd, False)  # settimeout(None) changed it: put it back
        except BaseException:
            # Leave sysfd as it was, the caller's: unregistered, in its original mode, and
            # not closed by our socket object's finalizer.
            if self.pd.pollable():
                self.pd.evict()
                self.pd.close()
            if self._sock is not None and sock is None:
                _CSocket.detach(self._sock)
            os.set_blocking(sysfd, was_blocking)
            raise
        # A socket object of a class of its own (the drop-in's: the front itself) may be
        # finalized by its owner: the FD is held weakly (see _owners).
        weak = sock is not None and sock.__class__ is not _CSocket
        entry: FD | weakref.ref[FD] = weakref.ref(self) if weak else self
        with _live_lock:
            prev = _owner_entry(_owner_at(sysfd))
            if prev is not None:  # closing, not destroyed yet: owner_of let this one in
                _displaced.add(prev)
            if sysfd >= len(_owners):
                _owners.extend([None] * (sysfd + 1 - len(_owners)))  # list over-allocates
            _owners[sysfd] = entry

    def __repr__(self) -> str:
        """Go: none"""
        if self.fdmu.closing():
            state = "closed"
        else:
            state = "blocking" if self.is_blocking else "pollable"
        return f"<threadpoll FD fd={self.sysfd} net={self.net} {state}>"

    # --- references and locks (Go: fd_mutex.go, the FD wrappers) -------------------------

    def incref(self) -> None:
        """Go: internal/poll/fd_mutex.go FD.incref"""
        if not self.fdmu.incref():
            raise self._closed_error()

    def decref(self) -> None:
        """Drop a reference; destroy the descriptor if it was the last after close.

        Go: internal/poll/fd_mutex.go FD.decref
        """
        if self.fdmu.decref():
            err = self._destroy()
            if err is not None:
                raise err

    def read_lock(self) -> None:
        """Go: internal/poll/fd_mutex.go FD.readLock"""
        if not self.fdmu.rwlock(True):
            raise self._closed_error()

    def read_unlock(self) -> None:
        """Go: internal/poll/fd_mutex.go FD.readUnlock"""
        if self.fdmu.rwunlock(True):
            self._destroy()

    def write_lock(self) -> None:
        """Go: internal/poll/fd_mutex.go FD.writeLock"""
        if not self.fdmu.rwlock(False):
            raise self._closed_error()

    def write_unlock(self) -> None:
        """Go: internal/poll/fd_mutex.go FD.writeUnlock"""
        if self.fdmu.rwunlock(False):
            self._destroy()

    def closing(self) -> bool:
        """Go: internal/poll/fd_mutex.go FD.closing"""
        return self.fdmu.closing()

    def _closed_error(self) -> OSError:
        """The error for an FD that cannot be used: closing, or poisoned by fork.

        Go: internal/poll/fd.go errClosing
        """
        # Benign race: poisoned is read without fdmu's lock. It is set only in a forked child
        # (one thread) and cleared by close under the lock; a stale read picks the message.
        if self.fdmu.poisoned:
            return OSError(
                errno.EBADF,
                "threadpoll: this descriptor was in use by another thread when the process "
                "forked; it cannot be used in the child (close it and open a new one)",
            )
        return err_closing(self.is_file)

    def _after_fork_in_child(self) -> None:
        """Make the FD usable in a forked child, or poison it.

        The child has only the forking thread. Locks and semaphores another thread held are
        never released here: replace them. A parent thread's reference or read/write lock
        would never be dropped either, so an FD that had any is poisoned: every operation
        fails with a clear error instead of waiting for ever; close() still releases the
        descriptor. Waiter counts belonged to parent threads: cleared.

        Go: none (Go does not fork a multi-threaded runtime)
        """
        if self._cfd:  # one thread left: the C mutex's fields are set one by one
            self._ghost_refs = poison_after_fork(self.fdmu)
        else:
            self._ghost_refs = self.fdmu.poison_after_fork()
        # A read or write lock held by a parent thread poisons that direction (the mutex
        # fails it); any reference held by one makes close() release the descriptor itself,
        # since the last reference will never be dropped (_ghost_refs not 0).
        if self.csema is not None:  # a close began in the parent: a fresh one, already set
            self.csema = Sema()
            if self._cfd:
                self._cmu().csema = self.csema
        # Fresh gates: made again on first use (the short locks are fresh already).
        self._rgate = self._wgate = None

    def _short_lock(self) -> threading.RLock:
        """This FD's short lock: the stripe of _short_locks its id falls in.

        Go: none (Go's FD guards its deadlines with the pollDesc's lock)
        """
        return _short_locks[id(self) >> 4 & _SHORT_MASK]

    def _rare_state(self) -> _Rare:
        """The FD's _Rare, made now if this is its first need. As _made: made and stored
        under _live_lock after a second look, so two threads' first needs agree on one.

        Go: none
        """
        rare = self._rare
        if rare is not None:
            return rare
        with _live_lock:
            rare = self._rare
            if rare is None:
                rare = _Rare()
                self._rare = rare
            return rare

    # The fields kept in _Rare, read as attributes of the FD (their defaults while there is
    # no _Rare); writing a default makes none.

    @property
    def csema(self) -> Sema | None:
        """The close semaphore, made by the first close or detach (_make_csema): most FDs
        never need one until then. Set once, under _live_lock.

        Go: internal/poll/fd_unix.go FD.csema
        """
        rare = self._rare
        return None if rare is None else rare.csema

    @csema.setter
    def csema(self, v: Sema | None) -> None:
        if v is not None or self._rare is not None:
            self._rare_state().csema = v

    @property
    def _rcall(self) -> float | None:
        """The limit of the read call waiting now with one of its own (see _wait), guarded
        by _short_lock(); the pollDesc has the earlier of it and _rd.

        Go: none
        """
        rare = self._rare
        return None if rare is None else rare.rcall

    @_rcall.setter
    def _rcall(self, v: float | None) -> None:
        if v is not None or self._rare is not None:
            self._rare_state().rcall = v

    @property
    def _wcall(self) -> float | None:
        """The same as _rcall for the write call.

        Go: none
        """
        rare = self._rare
        return None if rare is None else rare.wcall

    @_wcall.setter
    def _wcall(self, v: float | None) -> None:
        if v is not None or self._rare is not None:
            self._rare_state().wcall = v

    @property
    def _rgate(self) -> threading.RLock | None:
        """The read call gate, taken by calls that bring a CallLimit (see _gated); made on
        first use (_made). An RLock only for _is_owned(), which C sets as the lock is
        acquired: the re-entry test has no window where a signal handler on the holding
        thread finds no owner. Never actually re-entered: _gated refuses that.

        Go: none
        """
        rare = self._rare
        return None if rare is None else rare.rgate

    @_rgate.setter
    def _rgate(self, v: threading.RLock | None) -> None:
        if v is not None or self._rare is not None:
            self._rare_state().rgate = v

    @property
    def _wgate(self) -> threading.RLock | None:
        """The write call gate, as _rgate.

        Go: none
        """
        rare = self._rare
        return None if rare is None else rare.wgate

    @_wgate.setter
    def _wgate(self, v: threading.RLock | None) -> None:
        if v is not None or self._rare is not None:
            self._rare_state().wgate = v

    @property
    def _detaching(self) -> bool:
        """Set by detach: the descriptor is given back, not closed. Set under _live_lock
        with the closed mark (see detach); _destroy reads it without, ordered by the
        fdMutex (the detacher sets it before it drops its reference).

        Go: none
        """
        rare = self._rare
        return False if rare is None else rare.detaching

    @_detaching.setter
    def _detaching(self, v: bool) -> None:
        if v or self._rare is not None:
            self._rare_state().detaching = v

    @property
    def _ghost_refs(self) -> int:
        """In a forked child: the references parent threads held; not 0 poisons the FD.
        Set by the fork handler (one thread left), then dropped by close under _live_lock
        (-1 meanwhile). Benign race: close's first test reads it without the lock; it sees
        0 only once they are dropped (or if there were none), and the lock decides the rest.

        Go: none
        """
        rare = self._rare
        return 0 if rare is None else rare.ghost_refs

    @_ghost_refs.setter
    def _ghost_refs(self, v: int) -> None:
        if v or self._rare is not None:
            self._rare_state().ghost_refs = v

    @property
    def init_errno(self) -> int:
        """The backend's errno when it refused the descriptor (epoll: EPERM for a regular
        file), 0 otherwise. Go's net treats a refusal as fatal; os falls back to blocking.

        Go: none
        """
        rare = self._rare
        return 0 if rare is None else rare.init_errno

    @init_errno.setter
    def init_errno(self, v: int) -> None:
        if v or self._rare is not None:
            self._rare_state().init_errno = v

    @property
    def is_file(self) -> bool:
        """Whether this is a file (net "file"): closing errors are FileClosingError, and it
        has no socket operations.

        Go: internal/poll/fd_unix.go FD.isFile
        """
        return self.net == "file"

    @property
    def kind(self) -> str:
        """What the descriptor is ("tcp", "pipe", ...), for diagnostics: net unless the
        maker said otherwise.

        Go: none
        """
        rare = self._rare
        return (rare.kind if rare is not None else "") or self.net

    @kind.setter
    def kind(self, v: str) -> None:
        if v != self.net or self._rare is not None:
            self._rare_state().kind = "" if v == self.net else v

    @property
    def read_shut(self) -> bool:
        """Set once by shutdown of the read side, read without a lock: from then on a read
        that finds nothing returns the empty result instead of waiting (see shutdown).

        Go: none
        """
        rare = self._rare
        return False if rare is None else rare.read_shut

    @read_shut.setter
    def read_shut(self, v: bool) -> None:
        if v or self._rare is not None:
            self._rare_state().read_shut = v

    def _made(self, slot: str) -> threading.RLock:
        """The call gate in ``slot`` (_rgate, _wgate), made now if this is its first use.
        Callers read the slot first and come here only when it is None.

        Race-free without the GIL: the lock is made and stored under _live_lock, after a
        second look at the slot, so two threads' first uses agree on one lock; a reader that
        finds the slot set without taking _live_lock sees a finished lock (a slot is one
        pointer, stored after the lock is made; free-threaded CPython loads and stores slots
        atomically). A signal handler on this thread that makes the lock between the second
        look and the store has finished with it before this thread goes on: replacing it
        loses nothing.

        Go: none (Go's zero-value mutexes need no making)
        """
        with _live_lock:
            lock: threading.RLock | None = getattr(self, slot)
            if lock is None:
                lock = threading.RLock()
                setattr(self, slot, lock)
            return lock

    def _make_csema(self) -> Sema:
        """The close semaphore, made by the first close or detach (the C fdMutex is handed
        it too, for its close hand-off). Under _live_lock, as _made: a second close finds
        the first one's and fails afterwards, never replacing the one the first waits on.
        It is set before the fdMutex is marked closed, so whoever drops the last reference
        (and releases it) finds it.

        Go: none (Go's csema is a zero-value uint32)
        """
        with _live_lock:
            cs = self.csema
            if cs is None:
                cs = Sema()
                if self._cfd:
                    self._cmu().csema = cs  # the C fdMutex's close hand-off (FD.close)
                self.csema = cs
            return cs

    # --- close ---------------------------------------------------------------------------

    def _destroy(self) -> OSError | None:
        """Unregister, close(2), release the close semaphore. Runs exactly once, in
        whoever drops the last reference after close.

        Go: internal/poll/fd_unix.go FD.destroy
        """
        fd = self.sysfd
        if self._cfd:
            self._cmu()._set_fast(None)  # (the closed fdMutex already refuses every call)
        with _live_lock:
            if _owner_entry(_owner_at(fd)) is self:
                _owners[fd] = None
            else:
                _displaced.discard(self)
        # Poller first: an fd number must never be registered while it is closed.
        self.pd.close()
        if self._sock is not None:
            if not self._detaching:
                # The TLS drop-in's last word before close(2) (threadpoll._sslsocket).
                last = getattr(self._sock, "_before_close", None)
                if last is not None:
                    last()
            _CSocket.detach(self._sock)
        err: OSError | None = None
        if not self._detaching:
            try:
                os.close(fd)  # not retried on EINTR: POSIX leaves its state undefined
            except OSError as e:
                err = e
        self.sysfd = -1
        if trace.enabled:
            trace.emit("destroy", fd)
        cs = self.csema
        if cs is not None:  # None: nobody closed it, so nobody waits (a close handed off)
            cs.release()
        return err

    def close(self) -> None:
        """Close the descriptor: wake every parked operation with the closing error and,
        unless in blocking mode, return only after the last one has left and the OS
        descriptor is closed. A second close raises the closing error.

        Go: internal/poll/fd_unix.go FD.Close
        """
        if self._ghost_refs:
            # A forked child: the references and lock bits parent threads held will never
            # be dropped. Drop them here, then close as usual, so close() still waits for
            # the child's own operations before close(2).
            # One compare-and-swap on the C core; under the state lock in Python.
            # Once, under _live_lock: a second closer waits here, then finds 0 (two closers
            # that each read the count without it both dropped it: a count below zero).
            with _live_lock:
                refs = self._ghost_refs
                if refs < 0:
                    # A signal handler on top of this thread's own close, inside this
                    # section: that close goes on when the handler returns.
                    return
                if refs:
                    self._ghost_refs = -1  # being dropped: only this thread can see it
                    self.fdmu.clear_poison(refs)
                    self._ghost_refs = 0
        if not self._cfd and self.fdmu.held_by_me():
            # A signal handler interrupted this thread inside the fdMutex's own critical
            # section (possible on CPython < 3.11 only): closing here would be undone when
            # that section resumes. Hand the close to another thread and do not wait.
            if self.fdmu.closing():
                raise self._closed_error()
            threading.Thread(target=self._close_nowait, name="threadpoll-close").start()
            return
        csema = self.csema or self._make_csema()  # before the mark: see _make_csema
        if not self.fdmu.incref_and_close():
            raise self._closed_error()
        if self._cfd:
            # DIVERGENCE(go): on the C core's fdMutex, when operations are still in flight
            # the last one to leave hands the destroy (unregistration and close(2)) to this
            # waiting closer instead of running it itself (decref_for_close), so a woken
            # reader returns its closing error at once. The wake-up comes after everything
            # else, so the woken find the GIL free sooner (released here on csema).
            pd = self.pd.runtime_ctx  # read now: _destroy clears it
            with self._short_lock():
                blocking = self.is_blocking
            if not blocking and refs_of(load_state(self.fdmu)) > 1 and self._inside_me():
                # A signal handler on a thread inside an operation on this FD: that one
                # cannot leave before the handler returns, so waiting for it would wait for
                # ever. It drops the last reference, and close(2) runs there.
                blocking = True
            # Everything above before the wake-up: the woken operations then find the GIL
            # free sooner (this thread releases it when it waits on csema).
            self.pd.evict()
            if blocking:
                if self.fdmu.decref():
                    cerr = self._destroy()
                    if cerr is not None:
                        raise cerr
                return
            if self._cmu().decref_for_close():
                cerr = self._destroy()
            else:
                if pd is not None:
                    pd.rt.count_close_waited()  # an operation still holds a reference
                # Wait until the last operation has left; it hands the destroy over. (No
                # trace events: the C core records none.)
                try:
                    csema.acquire()
                except BaseException:
                    # Interrupted (Ctrl-C): take the mark back, so that the last operation
                    # destroys the FD, unless it has already left and handed it over.
                    if self._cmu().take_handoff():
                        self._destroy()
                    raise
                cerr = self._destroy() if self._cmu().take_handoff() else None
            if cerr is not None:
                raise cerr
            return
        fd = self.sysfd
        pd = self.pd.runtime_ctx  # read now: _destroy clears it
        # Unblock any I/O. Once it all unblocks and returns, so that it no longer holds a
        # reference, the last decref calls _destroy.
        self.pd.evict()
        err: OSError | None = None
        destroyed = self.fdmu.decref()
        if destroyed:
            err = self._destroy()
        with self._short_lock():
            blocking = self.is_blocking
        if not blocking and not destroyed and self._inside_me():
            # A signal handler on a thread that is itself inside an operation on this FD:
            # that operation cannot leave before the handler returns, so waiting for it
            # would wait for ever. It drops the last reference, and close(2) runs there.
            blocking = True
        if not blocking:
            if not destroyed and pd is not None:
                pd.rt.count_close_waited()  # an operation still holds a reference
            # Wait until the descriptor is closed. If this was the only reference, it is
            # already closed. Only wait if the descriptor is not in blocking mode, since
            # otherwise a blocked operation could keep close from ever returning.
            if trace.enabled:
                trace.emit("csema_wait", fd)
            csema.acquire()
            if trace.enabled:
                trace.emit("csema_release", fd)
        if err is not None:
            raise err

    def _close_nowait(self) -> None:
        """Close without waiting for operations in flight (the last one to leave closes the
        descriptor): for a close handed off by a signal handler.

        Go: none
        """
        try:
            if self.fdmu.incref_and_close():
                self.pd.evict()
                self.decref()
        except OSError:
            pass  # nobody to report to; close(2) errors are what the last decref sees

    def _inside_me(self) -> bool:
        """Whether the calling thread is inside an operation on this FD, further down its
        own stack: true only for a signal handler (or a callback) running on top of one.

        Looks for a threadpoll frame working on this FD (``self`` or ``fd``). Runs only
        when close would otherwise wait, so it costs the fast paths nothing.

        Go: none (a goroutine cannot be interrupted by a handler)
        """
        if self._cfd and self._cmu().owned_by_me():
            return True  # holding the read or write lock: a call straight into C, perhaps
        f: FrameType | None = sys._getframe(2)  # close's caller: never close itself
        while f is not None:
            if f.f_code.co_filename.startswith(_PACKAGE_DIR):
                loc = f.f_locals
                if loc.get("self") is self or loc.get("fd") is self:
                    return True
            f = f.f_back
        return False

    def _check_reentry(self, read: bool) -> None:
        """Raise instead of waiting for the read (``read``) or write lock when this thread
        holds it itself, further down its own stack: a signal handler reading (writing) on
        top of its thread's read (write) would otherwise wait for ever.

        The call waiting now is one operation frame on this FD; a second one below it is
        the interrupted operation. An operation frame called from another frame of this FD
        (a gated call: recv → _gated → recv) is the same operation. Runs only when a thread
        is about to sleep for the lock.

        Go: none (a goroutine cannot be interrupted by a handler)
        """
        names = _READ_OPS if read else _WRITE_OPS
        seen = 0
        f: FrameType | None = sys._getframe(1)
        while f is not None:
            code = f.f_code
            if code.co_name in names and code.co_filename == __file__:
                if f.f_locals.get("self") is self and not self._frame_of_mine(f.f_back):
                    seen += 1
                    if seen == 2:
                        raise _reentered(read)
            f = f.f_back

    def _frame_of_mine(self, f: FrameType | None) -> bool:
        """Whether f is a method of this FD at work.

        Go: none
        """
        return f is not None and f.f_code.co_filename == __file__ and f.f_locals.get("self") is self

    def detach(self) -> int:
        """Give the descriptor back instead of closing it: wake and wait out every operation
        as close does, unregister it, restore its original blocking mode, return it.

        Go: none (os.File.Fd hands out the descriptor but keeps owning it)
        """
        if (not self._cfd and self.fdmu.held_by_me()) or (
            not self.fdmu.closing() and self._inside_me()
        ):
            # A signal handler on a thread that is inside an operation on this FD: that
            # operation cannot leave before the handler returns, and the descriptor must not
            # be handed out while it may still use it.
            raise RuntimeError(
                "reentrant call: detach() from a signal handler while its own thread is in "
                "an operation on this descriptor (it would wait for itself)"
            )
        csema = self.csema or self._make_csema()  # before the mark: see _make_csema
        # The closed mark and the flag in one section under _live_lock, which detached()
        # takes: a close that fails on the mark then sees the flag. Set after the mark with
        # no lock, a close in between read False (a view socket raised EBADF). Set before
        # the mark, a detach that then lost it to a close could make that close's _destroy
        # skip close(2).
        with _live_lock:
            if not self.fdmu.incref_and_close():
                raise self._closed_error()
            self._detaching = True
        fd = self.sysfd
        with self._short_lock():
            blocking = self.is_blocking
        self.pd.evict()
        if self.fdmu.decref():
            self._destroy()
        if not blocking:
            csema.acquire()
        os.set_blocking(fd, self._was_blocking)
        return fd

    def detached(self) -> bool:
        """Whether detach() gave the descriptor back (it is open, and no longer this FD's).
        Under _live_lock: once the FD is marked closed, the answer is final (see detach).

        Go: none
        """
        with _live_lock:
            return self._detaching

    # --- the call gates --------------------------------------------------------------------

    def _gated(self, read: bool, limit: CallLimit, call: Callable[..., _T], *args: Any) -> _T:
        """``call(*args)`` holding the read (``read``) or write call gate, which it waits for
        until ``limit.until`` at most (then ``limit.expired()``, TimeoutError('timed out')
        for a socket timeout).

        The gate stands before the read or write lock of the fdMutex, which has no timed
        wait: a caller waits for the gate, not for the fdMutex, while another caller with a
        limit holds the direction. A waiter holds no FD reference, so close is not held up by
        it: close wakes the holder, which leaves, and the next waiter then fails at once with
        the closing error from the read or write lock. A call from the thread that holds the
        gate (a signal handler on top of its own thread's call) is refused with
        RuntimeError instead of waiting for itself.

        Go: none (Go's calls have no limits of their own; its fdMutex has no timed wait)
        """
        rare = self._rare  # _rgate or _wgate, read without their properties
        gate = (rare and (rare.rgate if read else rare.wgate)) or self._made(
            "_rgate" if read else "_wgate"
        )
        if gate._is_owned():  # type: ignore[attr-defined]  # C's RLock has it
            raise _reentered(read)
        until = limit.until
        if until is None:
            with gate:  # a with block: no window for Ctrl-C between acquire and try
                return call(*args)
        acquire_until(gate, until, limit.expired)
        try:
            return call(*args)
        finally:
            gate.release()

    # --- reads ---------------------------------------------------------------------------

    def read(self, n: int) -> bytes:
        """One successful read(2) of at most n bytes; ``b""`` at EOF or for n == 0.

        Go: internal/poll/fd_unix.go FD.Read
        """
        if n.__class__ is not int or n < 0:
            n = _size(n)
        if n > MAX_RW and self.is_stream:
            n = MAX_RW
        if self._cfast and n and not self.is_blocking:
            pd = self.pd.runtime_ctx
            if pd is not None:
                return self._read_c(pd, n)  # the C core's first attempt
        return self._read_slow(n)

    def _cmu(self) -> Any:
        """The C core's fdMutex (fd_mutex.c), with its methods the Python one lacks.

        Go: none
        """
        return self.fdmu

    def _read_c(self, pd: PollDesc, n: int) -> bytes:
        """FD.read on the C core: Go's whole loop in C (threadpoll/_c/fd_unix.c), recv(2)
        with MSG_DONTWAIT, parking with the GIL released. For a pollable socket only.

        Go: internal/poll/fd_unix.go FD.Read
        """
        return _cfd_read(self, self.fdmu, pd, self.sysfd, n, 0)  # type: ignore[no-any-return]

    def _recv_c(self, pd: PollDesc, n: int, flags: int = 0) -> bytes:
        """socket.recv(n, flags) as FD.Read's loop in C: one successful recv(2), flags passed
        through (MSG_DONTWAIT added; not MSG_WAITALL, which the caller loops for). For a
        pollable socket only.

        Go: internal/poll/fd_unix.go FD.Read
        """
        return _cfd_read(self, self.fdmu, pd, self.sysfd, n, flags)  # type: ignore[no-any-return]

    def _recv_into_c(self, pd: PollDesc, buf: Buffer, nbytes: int = 0, flags: int = 0) -> int:
        """socket.recv_into(buf, nbytes, flags) as FD.Read's loop in C; the arguments are
        checked as the socket module checks them. For a pollable socket only.

        Go: internal/poll/fd_unix.go FD.Read
        """
        return _cfd_read_into(  # type: ignore[no-any-return]
            self, self.fdmu, pd, self.sysfd, buf, nbytes, flags
        )

    def _accept_c(self, pd: PollDesc, sock: _socket.socket) -> tuple[int, Any] | None:
        """FD.accept in C: (descriptor, address), the descriptor non-blocking and
        close-on-exec; None where the C loop does not apply (a family whose addresses it
        does not build): the caller takes the Python path. For a pollable socket only.

        Go: internal/poll/fd_unix.go FD.Accept
        """
        if sock.family not in _CACCEPT_FAMILIES:
            return None
        return _cfd_accept(self, self.fdmu, pd, self.sysfd)  # type: ignore[no-any-return]

    def _read_slow(self, n: int) -> bytes:
        """FD.read as Go writes it: readLock, prepareRead, read(2) (recv on a socket) until
        not EAGAIN, waitRead between tries, readUnlock. The Python runtime's only path; on
        the C core, where the first attempt in C could not decide.

        Go: internal/poll/fd_unix.go FD.Read
        """
        self.read_lock()
        try:
            if n == 0:
                # If the caller wanted a zero byte read, return immediately without trying
                # (after the lock: a zero read still queues behind a read in progress).
                return b""
            self.pd.prepare_read(self.is_file)
            sock = self._socket_or_none()
            pollable = self.pd.pollable()
            while True:
                try:
                    if sock is not None and pollable:
                        return _CSocket.recv(sock, n, _MSG_DONTWAIT)
                    return os.read(self.sysfd, n)
                except BlockingIOError:
                    if not pollable:
                        raise
                    if self.read_shut:
                        return b""
                    self.pd.wait_read(self.is_file)
        finally:
            self.read_unlock()

    def read_into(self, buf: Buffer) -> int:
        """Like read, into a writable buffer; returns the byte count (0 at EOF).

        Go: internal/poll/fd_unix.go FD.Read
        """
        mv = _writable(buf)
        if self._cfast:
            pd = self.pd.runtime_ctx
            if pd is not None and not self.is_blocking:
                return self._recv_into_c(pd, mv)  # the C core's loop
        self.read_lock()
        try:
            if len(mv) == 0:
                return 0
            self.pd.prepare_read(self.is_file)
            if self.is_stream and len(mv) > MAX_RW:
                mv = mv[:MAX_RW]
            sock = self._socket_or_none()
            pollable = self.pd.pollable()
            while True:
                try:
                    if sock is not None and pollable:
                        return _CSocket.recv_into(sock, mv, 0, _MSG_DONTWAIT)
                    return os.readv(self.sysfd, [mv])
                except BlockingIOError:
                    if not pollable:
                        raise
                    if self.read_shut:
                        return 0
                    self.pd.wait_read(self.is_file)
        finally:
            self.read_unlock()

    def pread(self, n: int, off: int) -> bytes:
        """Read at an offset; independent of the read lock and of the poller.

        Go: internal/poll/fd_unix.go FD.Pread
        """
        n = _size(n)
        off = _offset(off)
        self.incref()
        try:
            if self.is_stream and n > MAX_RW:
                n = MAX_RW
            return os.pread(self.sysfd, n, off)
        finally:
            self.decref()

    def recvfrom(self, n: int, flags: int = 0) -> tuple[bytes, Any]:
        """Go: internal/poll/fd_unix.go FD.ReadFrom"""
        n = _size(n)
        return self._sock_read(_CSocket.recvfrom, (n, self._dontwait(flags)), (b"", None))

    def recvfrom_into(self, buf: Buffer, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        """Go: internal/poll/fd_unix.go FD.ReadFrom"""
        args = (buf, nbytes, self._dontwait(flags))
        return self._sock_read(_CSocket.recvfrom_into, args, (0, None))

    def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0
    ) -> tuple[bytes, list[Any], int, Any]:
        """Go: internal/poll/fd_unix.go FD.ReadMsg"""
        args = (bufsize, ancbufsize, self._dontwait(flags))
        empty: tuple[bytes, list[Any], int, Any] = (b"", [], 0, None)
        return self._sock_read(_CSocket.recvmsg, args, empty)

    def _sock_read(self, op: Callable[..., _T], args: tuple[Any, ...], empty: _T) -> _T:
        """Go's read loop for a socket call: readLock, prepareRead, ``op(sock, *args)`` (its
        flags with MSG_DONTWAIT) until not EAGAIN, waitRead between tries, readUnlock.
        ``empty`` is what a read returns once the read side is shut and nothing is queued.

        Go: internal/poll/fd_unix.go FD.Read, FD.ReadFrom, FD.ReadMsg (their shared shape)
        """
        sock = self._socket()
        self.read_lock()
        try:
            self.pd.prepare_read(self.is_file)
            while True:
                try:
                    return op(sock, *args)
                except BlockingIOError:
                    if not self.pd.pollable():
                        raise
                    if self.read_shut:
                        return empty
                    self.pd.wait_read(self.is_file)
        finally:
            self.read_unlock()

    def accept(self) -> tuple[int, Any]:
        """Accept a connection; the new descriptor is non-blocking and close-on-exec.
        ECONNABORTED (the peer gave up while queued) is retried.

        Go: internal/poll/fd_unix.go FD.Accept
        """
        sock = self._socket()
        if self._cfast:
            pd = self.pd.runtime_ctx
            if pd is not None and not self.is_blocking:
                r = self._accept_c(pd, sock)  # the C core's loop
                if r is not None:
                    return r
        self.read_lock()
        try:
            self.pd.prepare_read(self.is_file)
            while True:
                try:
                    # socket._accept: accept4(SOCK_CLOEXEC) where available; returns (fd, addr)
                    fd, addr = _CSocket._accept(sock)  # type: ignore[attr-defined]
                except BlockingIOError:
                    if not self.pd.pollable():
                        raise
                    self.pd.wait_read(self.is_file)
                    continue
                except ConnectionAbortedError:
                    # This means that a socket on the listen queue was closed before we
                    # Accept()ed it; it's a silly error, so try again.
                    continue
                try:
                    os.set_blocking(fd, False)
                except BaseException:
                    os.close(fd)
                    raise
                return fd, addr
        finally:
            self.read_unlock()

    # --- writes --------------------------------------------------------------------------

    def write(self, data: Buffer, limit: CallLimit | None = None) -> int:
        """Write all of data, holding the write lock throughout so writers never
        interleave; returns len(data). A failure part-way raises with ``.written``.
        ``limit``: the caller takes the write call gate first (see _gated).

        Go: internal/poll/fd_unix.go FD.Write
        """
        if limit is not None:
            return self._gated(False, limit, self.write, data)
        mv = _readable(data)
        total = len(mv)
        pd = self.pd.runtime_ctx
        if self._cfd and self._cfast and pd is not None and total and not self.is_blocking:
            return self._write_c(pd, mv, total)  # the C core's first attempt
        return self._write_slow(mv, total)

    def _write_slow(self, mv: memoryview, total: int) -> int:
        """FD.write as Go writes it: writeLock, prepareWrite, the write loop, writeUnlock.

        Go: internal/poll/fd_unix.go FD.Write
        """
        try:
            self.write_lock()
        except BaseException as e:
            with_written(e, 0)
            raise
        try:
            try:
                self.pd.prepare_write(self.is_file)
            except BaseException as e:
                with_written(e, 0)
                raise
            return self._write_locked(mv, total, 0, self.pd.runtime_ctx, False)
        finally:
            self.write_unlock()

    def _write_c(self, pd: PollDesc, mv: memoryview, total: int) -> int:
        """FD.write on the C core: Go's whole write loop in C (threadpoll/_c/fd_unix.c),
        holding the write lock throughout; a failure part-way raises with ``.written``. For
        a pollable socket only.

        Go: internal/poll/fd_unix.go FD.Write
        """
        return _cfd_write(  # type: ignore[no-any-return]
            self, self.fdmu, pd, self.sysfd, mv, self.is_stream
        )

    def _send_c(self, pd: PollDesc, data: Buffer, flags: int = 0) -> int:
        """socket.send(data, flags) in C: one successful send(2), waiting for room on EAGAIN,
        flags passed through (MSG_DONTWAIT added). For a pollable socket only.

        Go: internal/poll/fd_unix.go FD.Write (one round of its loop)
        """
        return _cfd_send(self, self.fdmu, pd, self.sysfd, data, flags)  # type: ignore[no-any-return]

    def _write_locked(
        self, mv: memoryview, total: int, nn: int, pd: PollDesc | None, wait_first: bool
    ) -> int:
        """Go's write loop, from nn bytes written, holding the write lock: write(2) until all
        of mv is written, waiting for room on EAGAIN (first of all if ``wait_first``).

        Go: internal/poll/fd_unix.go FD.Write
        """
        try:
            sock = self._socket_or_none()  # in the try: an error here carries .written too
            if wait_first:
                self.pd.wait_write(self.is_file)
            while True:
                end = total
                if self.is_stream and total - nn > MAX_RW:
                    end = nn + MAX_RW
                eagain = False
                try:
                    chunk = mv if nn == 0 and end == total else mv[nn:end]
                    if sock is not None and pd is not None:
                        n = _CSocket.send(sock, chunk, _MSG_DONTWAIT)
                    else:
                        n = os.write(self.sysfd, chunk)
                except BlockingIOError:
                    n, eagain = 0, True
                if n > end - nn:
                    msg = f"invalid return from write: got {n} from a write of {end - nn}"
                    raise OSError(errno.EIO, msg)
                nn += n
                if nn == total:
                    return nn
                if eagain:
                    if pd is None:
                        raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
                    self.pd.wait_write(self.is_file)
                    continue
                if n == 0:
                    raise _unexpected_eof()
        except BaseException as e:
            with_written(e, nn)
            raise

    def pwrite(self, data: Buffer, off: int) -> int:
        """Write all of data at an offset; independent of the write lock and the poller.

        Go: internal/poll/fd_unix.go FD.Pwrite
        """
        mv = _readable(data, "pwrite()")
        off = _offset(off)
        total = len(mv)
        self.incref()
        try:
            nn = 0
            try:
                while nn < total:
                    end = total
                    if self.is_stream and total - nn > MAX_RW:
                        end = nn + MAX_RW
                    n = os.pwrite(self.sysfd, mv[nn:end], off + nn)
                    if n == 0:
                        raise _unexpected_eof()
                    nn += n
                return nn
            except BaseException as e:
                with_written(e, nn)
                raise
        finally:
            self.decref()

    def sendto(self, data: Buffer, addr: Any, flags: int = 0) -> int:
        """Send one datagram (all or nothing); returns len(data).

        Go: internal/poll/fd_unix.go FD.WriteTo
        """
        mv = _readable(data, "sendto()")
        self._socket()
        try:
            self._sock_write(_CSocket.sendto, (mv, self._dontwait(flags), addr))
        except BaseException as e:
            with_written(e, 0)
            raise
        return len(mv)

    def sendmsg(
        self, buffers: Iterable[Buffer], ancdata: Any = (), flags: int = 0, address: Any = None
    ) -> int:
        """Go: internal/poll/fd_unix.go FD.WriteMsg"""
        self._socket()
        args: tuple[Any, ...] = (list(buffers), list(ancdata), self._dontwait(flags))
        if address is not None:
            args += (address,)
        try:
            return self._sock_write(_CSocket.sendmsg, args)
        except BaseException as e:
            with_written(e, 0)
            raise

    def _sock_write(self, op: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        """Go's write loop for one socket call: writeLock, prepareWrite, ``op(sock, *args)``
        (its flags with MSG_DONTWAIT) until not EAGAIN, waitWrite between tries,
        writeUnlock.

        Go: internal/poll/fd_unix.go FD.WriteTo, FD.WriteMsg (their shared shape)
        """
        sock = self._socket()
        self.write_lock()
        try:
            self.pd.prepare_write(self.is_file)
            while True:
                try:
                    return op(sock, *args)
                except BlockingIOError:
                    if not self.pd.pollable():
                        raise
                    self.pd.wait_write(self.is_file)
        finally:
            self.write_unlock()

    # --- socket calls for the drop-in socket (Go: FD.Read / FD.Write with flags) ---------

    def recv(self, bufsize: int, flags: int = 0, limit: CallLimit | None = None) -> bytes:
        """recv(2) until it does not say EAGAIN, waiting for readability between tries: a
        blocking socket's recv. The arguments go to the C socket call as they are (its
        checks and errors are the stdlib's); each try adds ``MSG_DONTWAIT``. Once the read
        side is shut, a recv that finds nothing returns ``b""``. ``limit``: the call takes
        the read call gate first (see _gated); its wait for data has no limit.

        Go: internal/poll/fd_unix.go FD.Read
        """
        if limit is not None:
            return self._gated(True, limit, self.recv, bufsize, flags)
        if self._cfast and flags.__class__ is int and not self.is_blocking:
            pd = self.pd.runtime_ctx
            if pd is not None and bufsize.__class__ is int and 0 < bufsize <= MAX_RW:
                return self._recv_c(pd, bufsize, flags)  # Go's loop in C
        return self._sock_read(_CSocket.recv, (bufsize, self._dontwait(flags)), b"")

    def recv_into(
        self, buffer: Buffer, nbytes: int = 0, flags: int = 0, limit: CallLimit | None = None
    ) -> int:
        """recv_into(2) as ``recv`` does recv: a blocking socket's; 0 once the read side is
        shut and nothing is queued. ``limit`` as for recv.

        Go: internal/poll/fd_unix.go FD.Read
        """
        if limit is not None:
            return self._gated(True, limit, self.recv_into, buffer, nbytes, flags)
        if self._cfast and not self.is_blocking:
            pd = self.pd.runtime_ctx
            if pd is not None:
                return self._recv_into_c(pd, buffer, nbytes, flags)  # Go's loop in C
        return self._sock_read(_CSocket.recv_into, (buffer, nbytes, self._dontwait(flags)), 0)

    def send(self, data: Buffer, flags: int = 0, limit: CallLimit | None = None) -> int:
        """send(2) until it does not say EAGAIN, waiting for room between tries; returns
        what the kernel took (perhaps less than all of data: ``write`` sends it all). The
        arguments go to the C socket call as they are; each try adds ``MSG_DONTWAIT``.
        ``limit``: the call takes the write call gate first (see _gated).

        Go: internal/poll/fd_unix.go FD.Write (one pass of its loop)
        """
        if limit is not None:
            return self._gated(False, limit, self.send, data, flags)
        if self._cfast and not self.is_blocking:
            pd = self.pd.runtime_ctx
            if pd is not None:
                return self._send_c(pd, data, flags)  # one pass of Go's loop, in C
        return self._sock_write(_CSocket.send, (data, self._dontwait(flags)))

    # --- raw access (Go's syscall.RawConn) -----------------------------------------------

    def raw_read(self, f: Callable[[int], bool], limit: CallLimit | None = None) -> None:
        """Call f(fd) under the read lock until it returns True, waiting for readability
        between calls; f does its own non-blocking syscall.

        ``limit`` bounds this call alone, as a stdlib socket's timeout does (see
        CallLimit), the wait for the read call gate included (see _gated); the read deadline
        still applies, and the earlier of the two ends it.

        Go: internal/poll/fd_unix.go FD.RawRead
        """
        if limit is not None:
            self._gated(True, limit, self._raw_read, f, limit)
            return
        self._raw_read(f, None)

    def _raw_read(self, f: Callable[[int], bool], limit: CallLimit | None) -> None:
        """raw_read's loop, after the call gate.

        Go: internal/poll/fd_unix.go FD.RawRead
        """
        self.read_lock()
        try:
            self.pd.prepare_read(self.is_file)
            while True:
                if f(self.sysfd):
                    return
                self._wait("r", limit)
        finally:
            self.read_unlock()

    def raw_write(self, f: Callable[[int], bool], limit: CallLimit | None = None) -> None:
        """raw_read for writes: f(fd) under the write lock until it returns True.

        Go: internal/poll/fd_unix.go FD.RawWrite
        """
        if limit is not None:
            self._gated(False, limit, self._raw_write, f, limit)
            return
        self._raw_write(f, None)

    def _raw_write(self, f: Callable[[int], bool], limit: CallLimit | None) -> None:
        """raw_write's loop, after the call gate.

        Go: internal/poll/fd_unix.go FD.RawWrite
        """
        self.write_lock()
        try:
            self.pd.prepare_write(self.is_file)
            while True:
                if f(self.sysfd):
                    return
                self._wait("w", limit)
        finally:
            self.write_unlock()

    def pollable(self) -> bool:
        """Whether the descriptor is registered with the poller (it can wait, and has
        deadlines); False for one in blocking mode from the start.

        Go: internal/poll/fd_poll_runtime.go pollDesc.pollable (as fd.pd.pollable())
        """
        return self.pd.pollable()

    def wait_write(self) -> None:
        """Wait for writability with no lock: for connect, before the FD is shared.

        Go: internal/poll/fd_unix.go FD.WaitWrite
        """
        self.pd.wait_write(self.is_file)

    def wait_connect(self, limit: CallLimit | None = None) -> int:
        """Wait for a non-blocking connect in progress to finish; its error number (0:
        connected). The caller holds the write lock, or has not shared the FD yet.
        ``limit`` as for raw_write, but no call gate is taken: the caller holds the write
        lock (or call gate) already.

        Go: net/fd_unix.go netFD.connect (the loop after EINPROGRESS)
        """
        sock = self._socket()
        while True:
            # Performing multiple connect system calls on a non-blocking socket under Unix
            # variants does not necessarily result in earlier errors being returned. Instead,
            # once the poller tells us that the socket is ready, get the SO_ERROR socket
            # option to see if the connection succeeded or failed (Go issue 7474).
            self._wait("w", limit)
            err = _CSocket.getsockopt(sock, socket.SOL_SOCKET, socket.SO_ERROR)
            if err in CONNECT_PENDING:
                continue
            if err == errno.EISCONN:
                return 0
            if err == 0:
                # The poller can wake us up spuriously (Go issues 14548 and 19289). Check
                # that we are really connected; if not, wait again.
                try:
                    _CSocket.getpeername(sock)
                except OSError:
                    continue
                return 0
            return int(err)

    def _wait(self, mode: str, limit: CallLimit | None) -> None:
        """pollDesc.wait for mode, ended also by a limit for this call alone: mode's
        deadline on the pollDesc is the earlier of the user's deadline and ``limit.until``
        while the call waits (Go's net does the same for a dial's context deadline). Only
        the holder of mode's lock waits in mode, so the call has mode's deadline to itself.
        DIVERGENCE(go): Go's calls have no limits of their own (net/fd_unix.go netFD.connect
        sets the write deadline for a dial's context, the pattern followed here).

        Go: internal/poll/fd_poll_runtime.go pollDesc.wait
        """
        if limit is None or limit.until is None:
            self.pd.wait(mode, self.is_file)
            return
        until = limit.until
        if _monotonic() >= until:
            raise limit.expired()
        self._set_call_deadline(mode, until)
        try:
            self.pd.wait(mode, self.is_file)
        except DeadlineExceededError:
            # The earlier limit fired: the user's deadline if it is not later than ours.
            with self._short_lock():
                user = self._rd if mode == "r" else self._wd
            if user > until and _monotonic() >= until:
                raise limit.expired() from None
            raise
        finally:
            self._set_call_deadline(mode, None)

    def _set_call_deadline(self, mode: str, until: float | None) -> None:
        """Set (``until``) or clear (None) the limit of the call waiting in mode, and make
        mode's pollDesc deadline the earlier of it and the user's.

        Go: none (Go's net sets a deadline with SetWriteDeadline and clears it after)
        """
        rare = self._rare or self._rare_state()  # made already by the call's gate
        with _short_locks[id(self) >> 4 & _SHORT_MASK]:  # self._short_lock(), inline
            if mode == "r":
                rare.rcall = until
                user = self._rd
            else:
                rare.wcall = until
                user = self._wd
            self.pd.set_deadline(user if until is None or user < until else until, mode)

    # --- the rest: a reference each ------------------------------------------------------

    def shutdown(self, how: int) -> None:
        """Shut down the reading side (SHUT_RD), the writing side (SHUT_WR) or both, and wake
        the threads parked in those directions at once: their retried calls see what the
        kernel says now (EOF, EPIPE).

        Once the reading side is shut, a read that finds nothing returns the empty result
        (b"", 0, (b"", None), ...) instead of waiting: what a blocking read of a shut datagram
        socket returns. Linux says EAGAIN to a non-blocking one (a stream socket says EOF
        either way), even after the one edge the shutdown makes, so a woken reader that
        retried would park for ever.

        Go: internal/poll/fd_unix.go FD.Shutdown
        """
        sock = self._socket()
        self.incref()
        try:
            try:
                _CSocket.shutdown(sock, how)
            except OSError as e:
                # Linux shuts an unconnected socket (UDP) down all the same and wakes its
                # readers, but reports ENOTCONN (net/ipv4/af_inet.c inet_shutdown): do the
                # same here, and raise the error as the kernel did.
                if e.errno == errno.ENOTCONN and _SHUTDOWN_DESPITE_ENOTCONN:
                    self._shut(how)
                raise
            self._shut(how)
        finally:
            self.decref()

    def _shut(self, how: int) -> None:
        """After shutdown(how): mark the read side shut, and wake the shut directions.

        Go: none
        """
        if how == socket.SHUT_WR:
            mode = "w"
        else:
            mode = "rw" if how == socket.SHUT_RDWR else "r"
            self.read_shut = True  # before the wake-up, which the reader must see it after
        # DIVERGENCE(go): Go's FD.Shutdown leaves the wake-up to the kernel's readiness edge.
        # Linux makes none for a writer blocked on its own unix socket, and a datagram reader
        # woken by one would find EAGAIN; waking here makes every backend and socket type
        # behave as a blocking socket does: shutdown wakes blocked threads at once.
        self.pd.wake(mode)

    def set_blocking(self) -> None:
        """Put the descriptor in blocking mode for good: close will no longer wait for
        in-flight operations (one may be stuck in a syscall no evict can interrupt).

        Go: internal/poll/fd_unix.go FD.SetBlocking
        """
        self.incref()
        try:
            with self._short_lock():
                if self._cfd:
                    self._cmu()._set_fast(None)  # FD.read and the rest decide from now on
                self.is_blocking = True
                os.set_blocking(self.sysfd, True)
        finally:
            self.decref()

    def dup(self) -> int:
        """A close-on-exec duplicate (sharing the file status flags, O_NONBLOCK included).

        Go: internal/poll/fd_unix.go FD.Dup
        """
        self.incref()
        try:
            return fcntl.fcntl(self.sysfd, fcntl.F_DUPFD_CLOEXEC, 0)
        finally:
            self.decref()

    def fstat(self) -> os.stat_result:
        """Go: internal/poll/fd_unix.go FD.Fstat"""
        self.incref()
        try:
            return os.fstat(self.sysfd)
        finally:
            self.decref()

    def fileno(self) -> int:
        """The OS descriptor (-1 once destroyed). Using it directly bypasses every promise.

        Go: internal/poll/fd_unix.go FD.Sysfd (field)
        """
        return self.sysfd

    def control(self, f: Callable[[int], Any]) -> Any:
        """Call f(fd) holding a reference, so the descriptor cannot be closed meanwhile.

        Go: internal/poll/fd_unix.go FD.RawControl
        """
        self.incref()
        try:
            return f(self.sysfd)
        finally:
            self.decref()

    def _dontwait(self, flags: int) -> int:
        """flags with MSG_DONTWAIT for a pollable socket: its attempts never block, whatever
        another holder of the descriptor did to O_NONBLOCK.

        Go: none (Go relies on O_NONBLOCK alone)
        """
        if self.pd.pollable() and isinstance(flags, int):
            return flags | _MSG_DONTWAIT
        return flags

    def _socket_or_none(self) -> _socket.socket | None:
        """The socket object, made again if it was let go (shed_socket); None for a
        descriptor that is not a socket (net "file").

        Made holding a reference, so that _destroy (which detaches the object) runs after it
        is stored, and under the FD's short lock, which set_blocking holds while it changes
        the mode the object's timeout mirrors. The object stored first wins (another
        thread's, or a signal handler's on this one: the lock is re-entrant); a loser is
        detached, never closed. The second look and the store make no call, so no handler
        runs between them on CPython 3.10 and later (which run one only at a call, a
        function's start or a backward jump); 3.9 may run one between any two instructions.
        It is made in two steps so that an exception a signal handler raises never drops
        one that holds the descriptor (its finalizer would close it): __new__'s holds none,
        and from __init__ on it is this try's to detach.

        Go: none
        """
        sock = self._sock
        if sock is not None or self.is_file:
            return sock
        self.incref()
        try:
            with self._short_lock():
                new = _CSocket.__new__(_CSocket)
                try:
                    self._attach(new)
                    # As __init__ sets it: calls that never poll by themselves (timeout 0;
                    # _attach's SOCK_NONBLOCK gives that without a syscall), or None on a
                    # descriptor in blocking mode.
                    timeout = None if self.is_blocking else 0.0
                    if _CSocket.gettimeout(new) != timeout:
                        _CSocket.settimeout(new, timeout)
                    if self._sock is None:
                        self._sock = new
                finally:
                    # By what is stored, not a local: a handler's exception between a
                    # store and a local's would otherwise detach the stored one (3.9).
                    if self._sock is not new:
                        _CSocket.detach(new)
                sock = self._sock
        finally:
            self.decref()
        return sock

    def _attach(self, new: _socket.socket) -> None:
        """Make new, a socket object from _CSocket.__new__ (which holds no descriptor), a
        socket object on sysfd: the caller detaches it (or stores it where _destroy will).

        Go: none
        """
        if self.is_stream:
            # The family from the descriptor (getsockname); the type and protocol as net
            # makes a stream socket, which saves two getsockopt calls; SOCK_NONBLOCK, where
            # there is one, only sets the object's timeout to 0 (no syscall, whatever
            # socket.setdefaulttimeout says), and its type reads SOCK_STREAM all the same.
            _CSocket.__init__(new, -1, socket.SOCK_STREAM | _SOCK_NONBLOCK, 0, self.sysfd)
        else:
            _CSocket.__init__(new, fileno=self.sysfd)

    def getsockname(self) -> Any:
        """The socket's own address (getsockname(2)), holding a reference. Through the FD's
        socket object if it has one; if it let go of it (shed_socket), through one made for
        this call and detached after it, which keeps none and costs about 2 µs less than
        making one to keep (net's Conn asks this at close, before it wakes anyone).

        Go: none (Go's netFD keeps its local address from the start)
        """
        self.incref()
        try:
            sock = self._sock
            if sock is not None:
                return _CSocket.getsockname(sock)
            if self.is_file:
                raise OSError(errno.ENOTSOCK, os.strerror(errno.ENOTSOCK))
            tmp = _CSocket.__new__(_CSocket)  # as _socket_or_none makes one, in two steps
            try:
                self._attach(tmp)
                return _CSocket.getsockname(tmp)
            finally:
                _CSocket.detach(tmp)
        finally:
            self.decref()

    def shed_socket(self) -> None:
        """Let go of the socket object the FD made or was given by net, until it is next
        needed (_socket makes it again). A Conn's reads and writes on the C core go to the
        descriptor number and never use it: an open connection is 48 bytes smaller without
        it (issue 12). For net, before it hands the FD to anyone: the object is detached,
        and a thread still holding it would find it so. A drop-in socket's FD keeps its
        object (the front itself).

        Go: none
        """
        if self._sock is None:
            return
        with self._short_lock():
            sock = self._sock
            if sock is not None and sock.__class__ is _CSocket:
                _CSocket.detach(sock)  # first: an object left attached would close the fd
                self._sock = None

    def _socket(self) -> _socket.socket:
        """The socket object the FD makes its socket calls through (made again if it was let
        go: shed_socket); ENOTSOCK for a descriptor that is not a socket.

        Go: none
        """
        sock = self._sock
        if sock is None:
            sock = self._socket_or_none()
            if sock is None:
                raise OSError(errno.ENOTSOCK, os.strerror(errno.ENOTSOCK))
        return sock

    # --- deadlines -----------------------------------------------------------------------

    def check_err(self, read: bool) -> None:
        """Raise what the pollDesc's prepare would: the closing error, then the deadline
        error if the user's read (or write) deadline has passed. For a caller whose first
        try does not go through the FD's loop (a TLS step), so that a call fails before it
        does anything, as a plain read or write does. The deadline is read without the short
        lock, one attribute load, as Go's prepare reads pd.info; the pollDesc's own prepare
        cannot serve here, since it resets the parked state and needs the FD's read or write
        lock.

        Go: runtime/netpoll.go netpollcheckerr
        """
        if self.fdmu.closing():
            raise self._closed_error()
        dl = self._rd if read else self._wd
        if dl != NO_DEADLINE and dl <= _monotonic():
            raise DeadlineExceededError()

    def set_deadline(self, t: float | None) -> None:
        """Set the read and write deadlines: absolute time.monotonic() seconds, or None.

        Go: internal/poll/fd_poll_runtime.go FD.SetDeadline
        """
        self._set_deadline_impl(t, "rw")

    def set_read_deadline(self, t: float | None) -> None:
        """Go: internal/poll/fd_poll_runtime.go FD.SetReadDeadline"""
        self._set_deadline_impl(t, "r")

    def set_write_deadline(self, t: float | None) -> None:
        """Go: internal/poll/fd_poll_runtime.go FD.SetWriteDeadline"""
        self._set_deadline_impl(t, "w")

    def _set_deadline_impl(self, t: float | None, mode: str) -> None:
        """Go: internal/poll/fd_poll_runtime.go setDeadlineImpl"""
        d = deadline_value(t)  # bad arguments first: nothing changes
        self.incref()  # a closed FD: the closing error, checked before pollability
        try:
            if not self.pd.pollable():
                raise NoDeadlineError()
            with _short_locks[id(self) >> 4 & _SHORT_MASK]:  # self._short_lock(), inline
                if "r" in mode:
                    self._rd = d
                if "w" in mode:
                    self._wd = d
                rare = self._rare  # _rcall and _wcall, read without their properties
                if rare is None or (rare.rcall is None and rare.wcall is None):
                    self.pd.set_deadline(d, mode)
                    return
                # A call with a limit of its own is waiting: it keeps the earlier of the two.
                for m in mode:
                    call = rare.rcall if m == "r" else rare.wcall
                    self.pd.set_deadline(d if call is None or d < call else call, m)
        finally:
            self.decref()


def _size(n: object) -> int:
    """Go: none"""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"size must be an int, not {type(n).__name__}")
    if n < 0:
        raise ValueError(f"negative size: {n}")
    return n


def _offset(off: object) -> int:
    """Go: none"""
    if isinstance(off, bool) or not isinstance(off, int):
        raise TypeError(f"offset must be an int, not {type(off).__name__}")
    if off < 0:
        raise ValueError(f"negative offset: {off}")
    return off


def _readable(data: Buffer, call: str = "write()") -> memoryview:
    """data as bytes; a TypeError that names ``call`` (the method the user called) if it is
    not a bytes-like object.

    Go: none
    """
    if isinstance(data, str):
        raise TypeError(f"{call} needs a bytes-like object, not 'str' (encode it first)")
    try:
        mv = memoryview(data)
    except TypeError:
        raise TypeError(f"{call} needs a bytes-like object, not {type(data).__name__!r}") from None
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


def _writable(buf: Buffer, call: str = "read_into()") -> memoryview:
    """buf as writable bytes; a TypeError that names ``call`` otherwise.

    Go: none
    """
    try:
        mv = memoryview(buf)
    except TypeError:
        raise TypeError(
            f"{call} needs a writable bytes-like object, not {type(buf).__name__!r}"
        ) from None
    if mv.readonly:
        raise TypeError(f"{call} needs a writable buffer, not a read-only {type(buf).__name__}")
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


def owner_of(sysfd: int) -> FD | None:
    """The open FD that owns descriptor number sysfd, if any (a second front on a registered
    descriptor must share it: two registrations of one fd would wedge the first).

    Go: none
    """
    with _live_lock:
        fd = _owner_entry(_owner_at(sysfd))
    if fd is None or fd.sysfd != sysfd or fd.fdmu.closing():
        return None
    return fd


# The FD methods that take the read (write) lock: FD._check_reentry looks for two of them.
_READ_OPS = frozenset(
    {
        "read",
        "read_into",
        "recv",
        "recv_into",
        "recvfrom",
        "recvfrom_into",
        "recvmsg",
        "accept",
        "raw_read",
    }
)
_WRITE_OPS = frozenset({"write", "send", "sendto", "sendmsg", "raw_write"})


def _shared_reentry_check(fdmu: Any, read: bool) -> None:
    """Both implementations' fdMutex's reentry check (one for all of them, so an FD costs no
    closure and weak reference): find the FD whose operation is waiting for fdmu's lock, and
    run its _check_reentry.

    Go: none
    """
    names = _READ_OPS if read else _WRITE_OPS
    f: FrameType | None = sys._getframe(1)
    while f is not None:
        if f.f_code.co_name in names and f.f_code.co_filename == __file__:
            fd = f.f_locals.get("self")
            if fd.__class__ is FD and fd.fdmu is fdmu:
                fd._check_reentry(read)
                return
        f = f.f_back


set_shared_reentry_check(_shared_reentry_check)
if _cpoll is not None:
    _cpoll._init_reentry(_shared_reentry_check)
