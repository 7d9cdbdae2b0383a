"""The network poller: Go's runtime/netpoll.go for OS threads.

Read this file beside Go's ``src/runtime/netpoll.go``. The names are Go's (``netpollblock``,
``netpollunblock``, ``netpollready``, ``netpollcheckerr``, ``poll_runtime_pollWait`` →
``runtime_poll_wait``), spelled in PEP 8.

A particular backend (netpoll_epoll.py, netpoll_kqueue.py, netpoll_poll.py) must define a
class with the following methods (see ``Backend`` below):

    netpollinit(rt)              initialise the poller; rt is the Runtime it serves
    netpollopen(fd, pd) -> int   arm notifications for fd, associated with pd; 0 or an errno
    netpollclose(fd) -> int      disable notifications for fd; 0 or an errno
    netpoll(delay) -> int        poll; delay < 0 blocks, == 0 polls, > 0 waits at most delay
                                 nanoseconds; readies pollDescs with netpollready and
                                 returns how many waiters it readied
    netpoll_break()              wake the poller if it is blocked in netpoll
    netpoll_is_poll_descriptor(fd) -> bool
                                 whether fd is one of the poller's own descriptors
    netpollarm(pd, mode)         (for modes in ``arm_modes``) arm interest in mode before a
                                 wait: per wait for level-triggered backends, as Go's
                                 netpoll_aix.go; once per descriptor for epoll's writes
    netpolldeinit()              release the backend's descriptors (not in Go)
    netpoll_after_fork(rt)       in a forked child: fresh poller descriptors (not in Go)

and two attributes: ``name``, and ``arm_modes``, the modes runtime_poll_wait arms with
netpollarm before each wait ("rw" for a level-triggered backend, "w" for epoll's lazy
writes, "" when netpollopen armed everything once).

A backend touches a pollDesc only through ``netpollready`` and ``PollDesc.set_event_err``.
The backends import this module; this module imports none of them. Which backend runs, the
poller thread that calls netpoll, its death and restart, and fork live in proc.py.

How a thread waits: the ``rg``/``wg`` binary semaphore. Each mode of a pollDesc holds one
of four states (Go's names in the second column):

    state      Go       meaning
    PD_NIL     pdNil    nobody waits, no notification pending
    PD_READY   pdReady  an I/O notification is pending; the next netpollblock consumes it
    PD_WAIT    pdWait   a thread has published that it is about to park
    PD_PARKED  G        a thread is asleep on the mode's wake lock (Go stores the *g)

The transition table, the same for ``wg``. It restates what Go's netpollblock,
netpollunblock, netpollready, poll_runtime_pollReset, poll_runtime_pollOpen and
poll_runtime_pollClose do; comments, the tests and the documentation cite its rows as
"netpoll.py row 9" (or "row 9" inside this file):

    row who: where                    from -> to        what follows
     1  reader: netpollblock          READY -> NIL      returns True at once (consumed)
     2  reader: netpollblock          NIL -> WAIT       goes on to the re-check (row 4)
     3  reader: netpollblock          WAIT or PARKED    InternalError "double wait"
     4  reader: after row 2           (re-check)        netpollcheckerr; non-zero: no park
     5  reader: netpollblockcommit    WAIT -> PARKED    asleep; if WAIT changed meanwhile
                                                        (rows 8, 13), it does not park
     6  reader: on waking or not      any -> NIL        returns old == READY
        parking
     7  poller: netpollready          NIL -> READY      a notification is kept pending
     8  poller: netpollready          WAIT -> READY     the reader's commit fails; it sees
                                                        READY at row 6 and returns True
     9  poller: netpollready          PARKED -> READY   the parked thread is woken
    10  poller: netpollready          READY -> READY    nothing: edges coalesce
    11  closer, deadline, setter:     NIL -> NIL        nothing ("only set pdReady for
        netpollunblock(ioready=False)                   ioready")
    12  same                          READY -> READY    nothing: readiness survives
    13  same                          WAIT -> NIL       the reader's commit fails; it sees
                                                        NIL at row 6 and returns False
    14  same                          PARKED -> NIL     the parked thread is woken
    15  reader: poll_reset, at the    any -> NIL        discards a stale READY; only when
        start of every operation                        netpollcheckerr is 0
    16  runtime_poll_open             -> NIL, both      InternalError if WAIT or PARKED
    17  runtime_poll_close            (none)            InternalError unless closing, or
                                                        if WAIT or PARKED

Rows 1-6 are Go's netpollblock, rows 7-10 netpollunblock with ioready=true (called by
netpollready), rows 11-14 netpollunblock with ioready=false (called by poll_runtime_pollUnblock,
netpolldeadlineimpl and poll_runtime_pollSetDeadline), all in src/runtime/netpoll.go.

Differences from Go:
- DIVERGENCE(go): rg/wg are plain ints guarded by pd.lock instead of atomics, and a parked
  thread sleeps on its mode's wake lock (``rwake``/``wwake``: a bare lock used as a binary
  semaphore, one per mode, so readying a reader never wakes the writer). Go's lock-free CAS
  steps become short critical sections; the order of publication that Go's comments insist
  on is kept (publish WAIT, then re-check).
- DIVERGENCE(go): a Python signal handler can raise (Ctrl-C) in a parked main thread at any
  bytecode boundary. netpollblock and _park are written so that one such exception, wherever
  it lands, leaves pd.lock released, the mode's state not WAIT or PARKED, and no stale
  waiter to swallow a later wake-up (threading.Condition.wait leaves one behind when the
  exception lands in its prologue). The main thread also sleeps in slices of at most
  ``_MAIN_SLICE`` seconds: CPython's lock checks for signals before it spins and sleeps, not
  after, so a SIGINT that lands in that gap (free-threaded builds spin up to 40
  ``sched_yield`` calls first) would otherwise wait for the end of the park to be handled.
- DIVERGENCE(go): no deadline timers. A deadline is an absolute ``time.monotonic()`` value; it is
  "expired" once the clock reaches it. Whoever looks at it after that expires it
  (``netpolldeadlineimpl``: the checks before and after parking, in ``_checkerr``), and a parked
  thread waits on its wake lock with a timeout equal to the time left. When that wait times out, the
  parked thread itself runs what Go's ``netpolldeadlineimpl`` does (mark the deadline expired,
  unblock the mode). ``netpollcheckerr`` itself is a pure read, as Go's. This keeps expiry precise
  to the OS's timed wait, needs no timer thread, and costs nothing for descriptors without
  deadlines. ``rseq``/``wseq`` are still bumped on every deadline change and on close, as Go does,
  and show up in traces.
- DIVERGENCE(go): the poller always blocks (``netpoll(-1)``): it has no timers to wait for.
  ``netpoll_break`` is used to stop it, to apply a level-triggered backend's new interest,
  and after fork.
- DIVERGENCE(go): one dedicated poller thread runs netpoll here, so a wake-up is two
  hand-offs (kernel -> poller -> parked thread). Go has no poller thread: the M about to stop
  polls (findRunnable). The C core does that for one or two waiters (threadpoll/_c/netpoll.c,
  "the poll leader": a parking thread polls when nobody does and at most one other thread
  waits; its poller pthread polls while more do); this runtime keeps the plainer shape,
  which is the one to read.
- DIVERGENCE(go): ``select.epoll`` has no per-event user data, so the epoll backend keeps a
  fd → pollDesc table; see netpoll_epoll.py for why stale events stay harmless.
- DIVERGENCE(go): the poller is a Python thread, and it can die (an exception escaping a backend).
  ``Runtime._poller_died`` (proc.py) wakes every waiter with POLL_ERR_POLLER (internal/poll raises
  PollerError with the exception as ``__cause__``) and starts a successor at once. Until a successor
  has completed a netpoll (``poller_down``), a thread that would park is told the same at once:
  nobody would ready it. A successor first polls without blocking, and only once that worked
  declares the poller up and readies every open pollDesc once, so an edge the dead poller fetched
  but never delivered cannot leave a thread parked for ever. A poller that dies again before
  completing a netpoll is restarted with exponential back-off (1 ms doubling, at most 1 s).
- DIVERGENCE(go): fork (proc.py). In a child, every runtime gets fresh locks and a fresh
  backend with the inherited descriptors re-registered; waiters recorded in pollDescs (parent
  threads) are cleared (``PollDesc.after_fork_in_child``); the poller starts at the child's
  first open or wait (runtime_poll_wait).

Go: runtime/netpoll.go
"""

from __future__ import annotations

import _thread
import math
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol, cast

from typing_extensions import final

from threadpoll._runtime import trace

if TYPE_CHECKING:
    from threadpoll._runtime.proc import Runtime

__all__ = [
    "POLL_NO_ERROR",
    "POLL_ERR_CLOSING",
    "POLL_ERR_TIMEOUT",
    "POLL_ERR_NOT_POLLABLE",
    "POLL_ERR_POLLER",
    "PD_NIL",
    "PD_READY",
    "PD_WAIT",
    "PD_PARKED",
    "STATE_NAMES",
    "NO_DEADLINE",
    "EXPIRED",
    "InternalError",
    "Backend",
    "Hooks",
    "PollDesc",
    "PollCache",
    "runtime_poll_open",
    "runtime_poll_close",
    "runtime_poll_reset",
    "runtime_poll_wait",
    "runtime_poll_set_deadline",
    "runtime_poll_unblock",
    "netpollready",
    "netpollcheckerr",
    "netpollgoready",
    "netpollblock",
    "netpollunblock",
    "netpolldeadlineimpl",
]

# Error codes returned from runtime_poll_reset and runtime_poll_wait. They must match the
# values internal/poll's convert_err expects.
POLL_NO_ERROR = 0  # no error
POLL_ERR_CLOSING = 1  # descriptor is closed
POLL_ERR_TIMEOUT = 2  # I/O timeout
POLL_ERR_NOT_POLLABLE = 3  # general error polling descriptor
# DIVERGENCE(go): Go's poller cannot die; a Python thread can (an exception in a backend).
# Parked threads then get this code, and internal/poll raises PollerError with the cause.
POLL_ERR_POLLER = 4

# The per-mode states (Go: pdNil, pdReady, pdWait, and a *g for a parked goroutine).
PD_NIL = 0
PD_READY = 1
PD_WAIT = 2
PD_PARKED = 3
STATE_NAMES = ("pdNil", "pdReady", "pdWait", "parked")

# Deadlines: absolute time.monotonic() seconds. NO_DEADLINE is Go's rd == 0; EXPIRED is
# Go's rd < 0 (set once the clock has passed the deadline, or for a deadline in the past).
NO_DEADLINE = math.inf
EXPIRED = -math.inf

# A lock's acquire cannot wait more than threading.TIMEOUT_MAX seconds; a longer deadline is
# waited for in slices (the loop re-checks after each).
_WAIT_MAX = min(threading.TIMEOUT_MAX, 1e6)

# The longest the main thread sleeps in one go while parked: a signal that CPython's lock
# missed (it arrived after the last check and before the sleep began) is handled this late
# at worst. Other threads never run Python signal handlers and sleep in _WAIT_MAX slices.
_MAIN_SLICE = 0.1

_monotonic = time.monotonic


class InternalError(RuntimeError):
    """A broken runtime invariant: Go's ``throw("runtime: ...")``.

    Never raised by a correct program; raised instead of ``assert`` so ``python -O`` keeps it.
    """


def throw(msg: str) -> InternalError:
    """Build the exception for a broken invariant; callers ``raise throw("runtime: ...")``.

    Go: runtime/panic.go throw
    """
    return InternalError(msg)


class Backend(Protocol):
    """The contract every backend module's poller class fulfils (see the module docstring)."""

    name: str
    arm_modes: str  # the modes runtime_poll_wait arms with netpollarm before each wait

    def netpollinit(self, rt: Runtime) -> None:
        """Go: runtime/netpoll.go netpollinit"""

    def netpolldeinit(self) -> None:
        """Go: none"""

    def netpollopen(self, fd: int, pd: PollDesc) -> int:
        """Go: runtime/netpoll.go netpollopen"""

    def netpollclose(self, fd: int) -> int:
        """Go: runtime/netpoll.go netpollclose"""

    def netpoll(self, delay: int) -> int:
        """Go: runtime/netpoll.go netpoll"""

    def netpoll_break(self) -> None:
        """Go: runtime/netpoll.go netpollBreak"""

    def netpoll_is_poll_descriptor(self, fd: int) -> bool:
        """Go: runtime/netpoll.go netpollIsPollDescriptor"""

    def netpollarm(self, pd: PollDesc, mode: str) -> None:
        """Go: runtime/netpoll_aix.go netpollarm"""

    def netpoll_after_fork(self, rt: Runtime) -> None:
        """Drop the parent's poller descriptors (without touching the parent's
        registrations) and make fresh ones, as netpollinit does.

        Go: none
        """


@final
class Hooks:
    """Test hook points, all None in normal operation (one attribute test each).

    Benign race: tests set them while threads run; an unlocked read sees the old or the new
    callable (an attribute load is atomic, also without the GIL).

    - ``after_eagain(pd, mode)``: internal/poll calls it when a syscall said EAGAIN, before
      it waits (the window in which readiness may arrive before the thread parks).
    - ``before_park(pd, mode)``: after the thread published PD_WAIT and re-checked
      netpollcheckerr, before it commits to PD_PARKED, with no lock held (the window in which
      a close or deadline change must still be seen).
    - ``before_ready(pd, mode)``: in the poller, between netpoll returning an event and
      netpollready acting on it, with no lock held.
    """

    __slots__ = ("after_eagain", "before_park", "before_ready")

    def __init__(self) -> None:
        """Go: none"""
        self.after_eagain: Callable[[PollDesc, str], None] | None = None
        self.before_park: Callable[[PollDesc, str], None] | None = None
        self.before_ready: Callable[[PollDesc, str], None] | None = None


_pd_ids = 0
_pd_ids_lock = threading.Lock()


def _next_pd_id() -> int:
    """Go: none"""
    global _pd_ids
    with _pd_ids_lock:
        _pd_ids += 1
        return _pd_ids


@final
class PollDesc:
    """Network poller descriptor: one per registered descriptor incarnation.

    Go: runtime/netpoll.go pollDesc
    """

    __slots__ = (
        "rt",
        "id",
        "fd",
        "fdseq",
        "lock",
        "rwake",
        "wwake",
        "rg",
        "wg",
        "closing",
        "event_err",
        "rd",
        "wd",
        "rseq",
        "wseq",
        "poller_err",
        "rparked_by",
        "wparked_by",
        "rparked_at",
        "wparked_at",
        "kind",
    )

    def __init__(self, rt: Runtime) -> None:
        """Go: none (pollDescs are allocated by pollcache.alloc)"""
        self.rt = rt  # constant
        self.id = _next_pd_id()  # constant; with fdseq it forms the backend's event tag
        # fd and fdseq are written by runtime_poll_open and PollCache.free under lock: a
        # poller death's sweep, an event the poller took before a close, and the
        # diagnostics may still reach a freed pollDesc, and they read both under lock.
        # Benign race: the backends read them without it where their own lock or the
        # PollCache's orders them (netpollarm checks fd against its table; netpollopen
        # runs after the alloc that wrote fdseq).
        self.fd = -1
        self.fdseq = 0  # incarnation counter, bumped on free (stale-event guard)
        # Protects every field below. An RLock, for two reasons. A signal handler running on
        # a thread that is inside one of this lock's critical sections may re-enter it (set
        # a deadline, close, shut down): re-entry is harmless because each unblocker only
        # moves the state towards "not parked" and the parking thread re-checks the state
        # after every step that could have missed it (see netpollblock and _park). And its C
        # methods _release_save/_acquire_restore, which _park uses to sleep: the restore
        # cannot be interrupted by a signal (see _park).
        self.lock = threading.RLock()
        # A parked reader (writer) sleeps on rwake (wwake): a bare lock kept locked, used as
        # a binary semaphore. Released only by netpollgoready, under lock, for a thread found
        # PD_PARKED; acquired only by that thread, which drops a stale token (one a park
        # that ended otherwise left behind) when it commits. They synchronise themselves.
        self.rwake = _new_wake()
        self.wwake = _new_wake()
        self.rg = PD_NIL  # guarded by lock: read state (see module docstring)
        self.wg = PD_NIL  # guarded by lock: write state
        self.closing = False  # guarded by lock: set by runtime_poll_unblock (evict)
        self.event_err = False  # guarded by lock: the backend saw an error event
        self.rd = NO_DEADLINE  # guarded by lock: read deadline (absolute monotonic seconds)
        self.wd = NO_DEADLINE  # guarded by lock: write deadline
        self.rseq = 0  # guarded by lock: bumped when rd changes or the pd is reused
        self.wseq = 0  # guarded by lock: bumped when wd changes or the pd is reused
        self.poller_err: BaseException | None = None  # guarded by lock: poller died
        # For dump(): who is parked and since when (guarded by lock).
        self.rparked_by: threading.Thread | None = None
        self.wparked_by: threading.Thread | None = None
        self.rparked_at = 0.0
        self.wparked_at = 0.0
        self.kind = ""  # what the descriptor is ("tcp", "pipe", ...), set by internal/poll

    def set_event_err(self, b: bool, seq: int | None) -> None:
        """Record whether the backend saw an error event for this incarnation.

        ``seq`` is the fdseq the event was tagged with; an event for an earlier incarnation
        (or an untagged one, None) may clear but never set the bit (Go issue 59545).

        Go: runtime/netpoll.go pollDesc.setEventErr
        """
        with self.lock:
            if seq is not None and seq == self.fdseq:
                self.event_err = b
            elif not b:
                self.event_err = False

    def after_fork_in_child(self) -> None:
        """In a forked child: fresh locks (a parent thread may have held them), and neither
        waiters nor pending readiness (the waiters were parent threads, and the backend is
        new).

        Go: none (Go does not fork a multi-threaded runtime)
        """
        self.lock = threading.RLock()
        self.rwake = _new_wake()
        self.wwake = _new_wake()
        self.rg = self.wg = PD_NIL
        self.rparked_by = self.wparked_by = None

    def __repr__(self) -> str:
        """Go: none"""
        # Benign race: without lock, each field one load (a repr may mix two moments).
        return (
            f"<PollDesc fd={self.fd} seq={self.fdseq} rg={STATE_NAMES[self.rg]} "
            f"wg={STATE_NAMES[self.wg]} closing={self.closing}>"
        )


# The Python runtime's pollDesc type, for the entry points below that hand a C pollDesc
# (threadpoll._cpoll.PollDesc, netpoll_c.py) to its own methods. Typed as a plain type so
# the comparison is not narrowed away: the C type is not a subclass.
_PYTHON_PD: type = PollDesc


@final
class PollCache:
    """A free list of pollDescs, so incarnations are reused as Go's pollcache does.

    Go: runtime/netpoll.go pollCache
    """

    __slots__ = ("rt", "lock", "first")

    def __init__(self, rt: Runtime) -> None:
        """Go: none"""
        self.rt = rt
        self.lock = threading.Lock()
        self.first: list[PollDesc] = []  # guarded by lock: the free list

    def alloc(self) -> PollDesc:
        """Go: runtime/netpoll.go pollCache.alloc"""
        with self.lock:
            if self.first:
                return self.first.pop()
        return PollDesc(self.rt)

    def free(self, pd: PollDesc) -> None:
        """Return pd to the free list. Bumping fdseq makes events for the old incarnation
        recognisable as stale.

        Go: runtime/netpoll.go pollCache.free
        """
        with pd.lock:
            pd.fdseq += 1
            pd.kind = ""
        with self.lock:
            self.first.append(pd)


def _new_wake() -> _thread.LockType:
    """A wake lock with no token: locked, so that the parked thread's acquire sleeps.

    Go: none
    """
    wake = _thread.allocate_lock()
    wake.acquire()
    return wake


def _get(pd: PollDesc, mode: str) -> int:
    """Go: none"""
    return pd.rg if mode == "r" else pd.wg


def _set(pd: PollDesc, mode: str, new: int) -> None:
    """Set the mode's state. Must be called while holding pd.lock.

    Go: none (a store to pd.rg / pd.wg)
    """
    if trace.enabled:
        old = pd.rg if mode == "r" else pd.wg
        if old != new:
            trace.emit("state", pd.fd, mode, STATE_NAMES[old], STATE_NAMES[new])
    if mode == "r":
        pd.rg = new
    else:
        pd.wg = new


# --- The runtime entry points internal/poll uses -----------------------------------------


def runtime_poll_open(fd: int, rt: Runtime) -> tuple[PollDesc | None, int]:
    """Register fd with rt's poller; returns (pd, 0) or (None, errno). (Go has one runtime;
    here it is named: ``proc.get_runtime()`` is the default one.)

    Go: runtime/netpoll.go poll_runtime_pollOpen
    """
    if rt.impl != "python":  # the C core (netpoll_c.py) carries its own entry points
        return cast(Any, rt).runtime_poll_open(fd)  # type: ignore[no-any-return]
    rt.ensure_poller()
    pd = rt.cache.alloc()
    with pd.lock:
        if pd.rg not in (PD_NIL, PD_READY):
            raise throw("runtime: blocked read on free polldesc")
        if pd.wg not in (PD_NIL, PD_READY):
            raise throw("runtime: blocked write on free polldesc")
        pd.fd = fd
        pd.closing = False
        pd.event_err = False
        pd.poller_err = None
        pd.rseq += 1
        pd.rg = PD_NIL
        pd.rd = NO_DEADLINE
        pd.wseq += 1
        pd.wg = PD_NIL
        pd.wd = NO_DEADLINE
    with rt.lock:
        rt.open_pds[pd.id] = pd
    errno = rt.backend.netpollopen(fd, pd)
    if errno != 0:
        with rt.lock:
            del rt.open_pds[pd.id]
        rt.cache.free(pd)
        return None, errno
    if trace.enabled:
        trace.emit("open", fd, "rw", info=rt.backend.name)
    return pd, 0


def runtime_poll_close(pd: PollDesc) -> None:
    """Unregister pd's descriptor and free pd. The descriptor must have been evicted
    (runtime_poll_unblock) and have no waiters; close(2) comes after this, never before.

    Go: runtime/netpoll.go poll_runtime_pollClose
    """
    if pd.__class__ is not _PYTHON_PD:  # a C pollDesc (netpoll_c.py)
        cast(Any, pd).rt.runtime_poll_close(pd)
        return
    with pd.lock:
        if not pd.closing:
            raise throw("runtime: close polldesc w/o unblock")
        if pd.wg in (PD_WAIT, PD_PARKED):
            raise throw("runtime: blocked write on closing polldesc")
        if pd.rg in (PD_WAIT, PD_PARKED):
            raise throw("runtime: blocked read on closing polldesc")
        fd = pd.fd
    rt = pd.rt
    rt.backend.netpollclose(fd)
    with rt.lock:
        rt.open_pds.pop(pd.id, None)
    if trace.enabled:
        trace.emit("close", fd, "rw")
    rt.cache.free(pd)


def runtime_poll_reset(pd: PollDesc, mode: str) -> int:
    """Prepare pd for an operation in mode: fail fast on close/deadline/event error, and
    discard a stale PD_READY left by an earlier edge (the syscall comes next anyway).

    Go: runtime/netpoll.go poll_runtime_pollReset
    """
    if pd.__class__ is not _PYTHON_PD:  # a C pollDesc (netpoll_c.py)
        return int(cast(Any, pd).reset(mode))
    # Go reads pd.atomicInfo and stores pdNil without taking pd.lock; so does the common
    # case here. Every field read below is one atomic attribute load (also on free-threaded
    # CPython), and a close or deadline change that races with this check is one that
    # happened just after it, exactly as in Go. The caller holds the mode's fdMutex lock
    # (internal/poll's prepareRead/prepareWrite), so no thread of this mode is in WAIT or
    # PARKED: the store of PD_NIL may race only with a PD_READY store (the poller's, a
    # PollHandle.wake, a poller death's sweep), and either order is a valid outcome (a lost
    # stale READY is what this function is for; a kept one makes the next wait return at
    # once and retry).
    # Anything unusual — closing, an event error, a poller death, a deadline that has
    # passed, tracing on — takes the locked path, which reports and records it.
    d = pd.rd if mode == "r" else pd.wd
    if not (
        pd.closing
        or pd.poller_err is not None
        or (mode == "r" and pd.event_err)
        or (d != NO_DEADLINE and d <= _monotonic())
        or trace.enabled
    ):
        if mode == "r":
            pd.rg = PD_NIL
        else:
            pd.wg = PD_NIL
        return POLL_NO_ERROR
    with pd.lock:
        errcode = _checkerr(pd, mode)
        if errcode != POLL_NO_ERROR:
            return errcode
        if mode == "r":
            if pd.rg != PD_NIL:
                _set(pd, "r", PD_NIL)
        elif pd.wg != PD_NIL:
            _set(pd, "w", PD_NIL)
    return POLL_NO_ERROR


def runtime_poll_wait(pd: PollDesc, mode: str) -> int:
    """Wait until pd is ready for mode; returns a poll error code.

    Go: runtime/netpoll.go poll_runtime_pollWait
    """
    if pd.__class__ is not _PYTHON_PD:  # a C pollDesc (netpoll_c.py)
        return int(cast(Any, pd).wait(mode))
    with pd.lock:
        errcode = _checkerr(pd, mode)
    if errcode != POLL_NO_ERROR:
        return errcode
    rt = pd.rt
    if rt.poller is None:
        # A forked child starts its poller lazily, at the first wait (one attribute test;
        # a poller that died has already started its successor, so this is None only
        # before the first start).
        rt.ensure_poller()
    backend = rt.backend
    if mode in backend.arm_modes:
        # Level-triggered backends arm interest for this wait (Go: solaris/aix); epoll arms
        # write interest the first time a writer waits (netpoll_epoll.py, arm_modes).
        backend.netpollarm(pd, mode)
    while not netpollblock(pd, mode, False):
        with pd.lock:
            errcode = _checkerr(pd, mode)
        if errcode != POLL_NO_ERROR:
            return errcode
        # Can happen if a deadline fired and unblocked us, but before we had a chance to
        # run the deadline was reset. Pretend it has not happened and retry.
    return POLL_NO_ERROR


def runtime_poll_set_deadline(pd: PollDesc, d: float, mode: str) -> None:
    """Set mode's deadline ("r", "w" or "rw") to d, an absolute time.monotonic() value:
    NO_DEADLINE for none, EXPIRED (or any past time) for already expired.

    A parked thread sees the change at once: moved into the past, it wakes with a timeout;
    moved earlier, it re-times its wait; moved later or cleared, it keeps waiting.

    Go: runtime/netpoll.go poll_runtime_pollSetDeadline
    """
    if pd.__class__ is not _PYTHON_PD:  # a C pollDesc (netpoll_c.py)
        cast(Any, pd).set_deadline(d, mode)
        return
    if math.isnan(d):
        raise ValueError("threadpoll: deadline is NaN")
    with pd.lock:
        if pd.closing:
            return
        if d != NO_DEADLINE and d != EXPIRED and d <= _monotonic():
            d = EXPIRED  # "don't confuse deadline right now with no deadline"
        if trace.enabled:
            trace.emit("deadline", pd.fd, mode, info=repr(d))
        for m in ("r", "w"):
            if m not in mode:
                continue
            old = pd.rd if m == "r" else pd.wd
            if old == d:
                continue  # the same value again: no seq bump (Go: timers untouched)
            if m == "r":
                pd.rd = d
                pd.rseq += 1
            else:
                pd.wd = d
                pd.wseq += 1
            if d == EXPIRED:
                if netpollunblock(pd, m, False):
                    netpollgoready(pd, m)
            elif d < old and _get(pd, m) == PD_PARKED:
                netpollgoready(pd, m)  # re-time the parked thread's wait


def runtime_poll_unblock(pd: PollDesc) -> None:
    """Evict: mark pd closing and wake every thread parked on it (they see
    POLL_ERR_CLOSING). Any pending PD_READY is kept.

    Go: runtime/netpoll.go poll_runtime_pollUnblock
    """
    if pd.__class__ is not _PYTHON_PD:  # a C pollDesc (netpoll_c.py)
        cast(Any, pd).unblock()
        return
    with pd.lock:
        if pd.closing:
            raise throw("runtime: unblock on closing polldesc")
        pd.closing = True
        pd.rseq += 1
        pd.wseq += 1
        if trace.enabled:
            trace.emit("evict", pd.fd, "rw")
        if netpollunblock(pd, "r", False):
            netpollgoready(pd, "r")
        if netpollunblock(pd, "w", False):
            netpollgoready(pd, "w")


# --- Readiness, errors, parking: what the entry points and the poller share ------------


def netpollready(pd: PollDesc, mode: str) -> int:
    """Declare that I/O is ready on pd for mode ("r", "w" or "rw"); returns how many
    parked threads it readied. Called by the backend's netpoll, without pd.lock held.

    Go: runtime/netpoll.go netpollready
    """
    if pd.__class__ is not _PYTHON_PD:  # a C pollDesc (netpoll_c.py)
        return int(cast(Any, pd).rt.netpollready(pd, mode))
    hook = pd.rt.hooks.before_ready
    if hook is not None:
        hook(pd, mode)
    n = 0
    with pd.lock:
        if trace.enabled:
            trace.emit("netpollready", pd.fd, mode)
        if "r" in mode and netpollunblock(pd, "r", True):
            netpollgoready(pd, "r")
            n += 1
        if "w" in mode and netpollunblock(pd, "w", True):
            netpollgoready(pd, "w")
            n += 1
    return n


def netpollcheckerr(pd: PollDesc, mode: str) -> int:
    """The poll error code for mode, in Go's priority order: closing, deadline, event error.

    A pure read, as Go's: a deadline counts once it is EXPIRED (Go's rd < 0); one that has
    merely passed is expired first by ``netpolldeadlineimpl`` (see ``_checkerr``). The
    event-error bit is reported only for reads: a write syscall reports a more specific
    error. Must be called while holding pd.lock.

    Go: runtime/netpoll.go netpollcheckerr
    """
    if pd.closing:
        return POLL_ERR_CLOSING
    if pd.poller_err is not None:
        return POLL_ERR_POLLER
    if (pd.rd if mode == "r" else pd.wd) == EXPIRED:
        return POLL_ERR_TIMEOUT
    if mode == "r" and pd.event_err:
        return POLL_ERR_NOT_POLLABLE
    return POLL_NO_ERROR


def _checkerr(pd: PollDesc, mode: str) -> int:
    """netpollcheckerr once Go's deadline timer would have fired: a passed deadline is
    expired first (not after close or a poller death, which take priority; Go's
    poll_runtime_pollUnblock deletes the timers). Must be called while holding pd.lock.

    Go: none (runtime/netpoll.go netpolldeadlineimpl, then netpollcheckerr)
    """
    if not pd.closing and pd.poller_err is None:
        netpolldeadlineimpl(pd, mode)
    return netpollcheckerr(pd, mode)


def netpollgoready(pd: PollDesc, mode: str) -> None:
    """Wake the thread parked on mode. Must be called while holding pd.lock.

    Go: runtime/netpoll.go netpollgoready (runtime/proc.go goready)
    """
    try:
        (pd.rwake if mode == "r" else pd.wwake).release()
    except RuntimeError:
        pass  # a token is already pending: the parked thread has yet to take it


def netpollblock(pd: PollDesc, mode: str, waitio: bool) -> bool:
    """Park the calling thread until mode is ready, closed or timed out.

    Returns True if I/O is ready, False if the thread was woken by close, a deadline, or
    nothing at all (the caller re-checks the error and may call again). Must be called
    without pd.lock held, by the one thread that owns mode (internal/poll's fdMutex
    guarantees that); a second waiter is ``runtime: double wait``.

    Go: runtime/netpoll.go netpollblock
    """
    # Whoever publishes PD_WAIT takes it back out if an exception (Ctrl-C in the main thread)
    # ends the call early, wherever it lands: ``mine`` is set before the store, so the
    # handler below also runs if it lands between the store and the next statement.
    mine = False
    try:
        with pd.lock:
            old = _get(pd, mode)
            if old == PD_READY:  # row 1: readiness consumed
                _set(pd, mode, PD_NIL)
                return True
            if old != PD_NIL:  # row 3
                raise throw("runtime: double wait")
            mine = True
            _set(pd, mode, PD_WAIT)  # row 2: publish "waiting" ...
            # ... then re-check error states after setting the state to PD_WAIT: unblockers
            # do the opposite (store closing/rd/wd, then look at the state), both under pd.lock.
            park = waitio or _checkerr(pd, mode) == POLL_NO_ERROR
            if park and not waitio:
                down = pd.rt.poller_down
                if down is not None:
                    # DIVERGENCE(go): the poller is dead and its successor not yet known to
                    # work: nobody may ever ready this thread. Report the death instead of
                    # parking (read under pd.lock, after publishing PD_WAIT: _poller_died sets
                    # poller_down before it looks at the pollDescs' waiters, so one of the
                    # two sees the other).
                    pd.poller_err = down
                    park = False
        if park:
            hook = pd.rt.hooks.before_park
            if hook is not None:
                hook(pd, mode)
        with pd.lock:
            # netpollblockcommit: WAIT → PARKED, unless someone changed WAIT meanwhile (row 5).
            # The test and the store are one step with no call between them: a signal handler
            # on this thread that closes or unblocks (WAIT → NIL) runs before or after it,
            # never between (CPython 3.11+ runs handlers only at calls and backward jumps).
            committed = False
            if park:
                if mode == "r":
                    if pd.rg == PD_WAIT:
                        pd.rg = PD_PARKED
                        committed = True
                elif pd.wg == PD_WAIT:
                    pd.wg = PD_PARKED
                    committed = True
            if committed:
                if trace.enabled:
                    trace.emit("state", pd.fd, mode, STATE_NAMES[PD_WAIT], STATE_NAMES[PD_PARKED])
                me = threading.current_thread()
                if mode == "r":
                    pd.rparked_by, pd.rparked_at = me, _monotonic()
                else:
                    pd.wparked_by, pd.wparked_at = me, _monotonic()
                _park(pd, mode)
                if mode == "r":
                    pd.rparked_by = None
                else:
                    pd.wparked_by = None
            # Be careful to not lose a concurrent PD_READY notification (row 6).
            old = _get(pd, mode)
            _set(pd, mode, PD_NIL)
            mine = False
    except BaseException:
        if mine:
            # Every ``with pd.lock`` above has released it (_park returns and raises with
            # it held): take it again to leave no stale waiter. A pending PD_READY stays.
            with pd.lock:
                if _get(pd, mode) in (PD_WAIT, PD_PARKED):
                    _set(pd, mode, PD_NIL)
                if mode == "r":
                    pd.rparked_by = None
                else:
                    pd.wparked_by = None
        raise
    if old == PD_PARKED:  # Go: old > pdWait (a *g left behind)
        raise throw("runtime: corrupted polldesc")
    return old == PD_READY


def _park(pd: PollDesc, mode: str) -> None:
    """Sleep on the mode's wake lock while mode is PD_PARKED; expire the deadline if the
    sleep runs out. Must be called while holding pd.lock; returns, or raises, with it held
    as before.

    A signal handler that raises lands at a call's return or a function's entry (CPython
    3.11+ checks for signals at those points and at loop back-edges, and inside a blocking
    acquire). Every such point between releasing pd.lock and re-taking it lies inside the
    ``try``, and the ``finally`` re-takes it in one uninterruptible C call before any
    other: so the exception leaves with the lock held, as Python's ``with`` expects.

    Go: runtime/proc.go gopark, with the timer's runtime/netpoll.go netpolldeadlineimpl
    """
    if trace.enabled:
        trace.emit("park", pd.fd, mode)
    # A token left by a notify for an earlier park (that one ended by its deadline or an
    # exception first) is stale: nobody can have notified this park yet, we hold pd.lock
    # (a signal handler on this thread that unblocks us from here on changes the state,
    # which the loop below looks at before every sleep, and releases the wake lock, so the
    # sleep it may race with returns at once).
    lock = pd.lock
    wake = pd.rwake if mode == "r" else pd.wwake
    wake.acquire(False)
    main = threading.current_thread() is threading.main_thread()
    me = _thread.get_ident()
    while _get(pd, mode) == PD_PARKED:
        d = pd.rd if mode == "r" else pd.wd
        if d == NO_DEADLINE:
            timeout = _WAIT_MAX
        elif netpolldeadlineimpl(pd, mode):
            # The deadline fired while we slept: netpolldeadlineimpl's unblock.
            _set(pd, mode, PD_NIL)
            break
        else:
            timeout = min(d - _monotonic(), _WAIT_MAX)
            if timeout <= 0:
                continue  # it passed since netpolldeadlineimpl looked: expire it on the next turn
        if main and timeout > _MAIN_SLICE:
            timeout = _MAIN_SLICE
        # _release_save/_acquire_restore are the RLock's own C methods that
        # threading.Condition uses: they drop and restore every level of ownership, and the
        # restore cannot be interrupted by a signal (a plain acquire can: a handler raising
        # while it waits for the lock would leave us without it). ``saved`` is preset so the
        # finally has a value should the exception land between the call and the store.
        saved = (1, me)
        try:
            saved = lock._release_save()  # type: ignore[attr-defined]
            wake.acquire(True, timeout)
        finally:
            lock._acquire_restore(saved)  # type: ignore[attr-defined]
    if trace.enabled:
        trace.emit("unpark", pd.fd, mode)


def netpollunblock(pd: PollDesc, mode: str, ioready: bool) -> bool:
    """Move mode's state for a wake-up; return True if a thread is parked there and the
    caller must netpollgoready the mode (before it releases pd.lock).

    Only I/O readiness creates PD_READY. Close and deadline unblocks (ioready=False) never
    create it and never erase one that is pending: "runtime_pollWait will check for
    timeout/cancel before waiting". Must be called while holding pd.lock.

    Go: runtime/netpoll.go netpollunblock
    """
    old = pd.rg if mode == "r" else pd.wg
    if old == PD_READY:
        return False
    if old == PD_NIL and not ioready:
        return False
    _set(pd, mode, PD_READY if ioready else PD_NIL)
    return old == PD_PARKED


def netpolldeadlineimpl(pd: PollDesc, mode: str) -> bool:
    """Whether mode's deadline has expired; one that has passed since anyone looked is
    expired now: marked EXPIRED, counted and traced. Must be called while holding pd.lock.

    DIVERGENCE(go): Go's deadline timer runs netpolldeadlineimpl when the deadline passes
    (it stores rd = -1, then unblocks the waiter). There are no timers here: the threads
    that look at a deadline expire it (``_checkerr``), and a parked thread whose timed
    sleep ran out does the unblocking itself (``_park``).

    Go: runtime/netpoll.go netpolldeadlineimpl
    """
    d = pd.rd if mode == "r" else pd.wd
    if d == NO_DEADLINE:
        return False
    if d == EXPIRED:
        return True
    if d > _monotonic():
        return False
    # The timer firing.
    if mode == "r":
        pd.rd = EXPIRED
    else:
        pd.wd = EXPIRED
    pd.rt.count_expiry()
    if trace.enabled:
        trace.emit("expire", pd.fd, mode)
    return True


def _after_fork_in_child() -> None:
    """Go: none"""
    global _pd_ids_lock
    _pd_ids_lock = threading.Lock()  # a parent thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


if sys.platform == "win32":  # pragma: no cover - the package refuses to import first
    raise ImportError("threadpoll: Windows is not supported (no epoll, kqueue or poll)")
