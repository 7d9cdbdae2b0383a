"""FDMutex: the lifetime and read/write serialisation of one descriptor.

A port of Go's ``internal/poll/fd_mutex.go``. One ``FDMutex`` per ``FD`` manages the
descriptor's lifetime and serialises its Read, Write and Close methods:

- Read operations must do ``rwlock(True)`` / ``rwunlock(True)``.
- Write operations must do ``rwlock(False)`` / ``rwunlock(False)``.
- Misc operations (setsockopt, set_deadline, shutdown, fstat, ...) must do ``incref`` /
  ``decref``, so that they act on the right descriptor even when a concurrent close runs
  (otherwise the fd could be closed, and its number reused, under their feet).
- Close must do ``incref_and_close`` / ``decref``.

Whoever gets True back from ``decref`` or ``rwunlock`` dropped the last reference after close:
it must call ``FD._destroy()`` (close(2) happens there and nowhere else).

Reads are serialised with reads and writes with writes; a read and a write run concurrently.
Misc operations never wait. A waiter holds no reference, and there is no hand-off: an unlock
only wakes one waiter, which then competes for the lock again (barging allowed, no FIFO).

Differences from Go:
- DIVERGENCE(go): Go updates ``state`` with CAS loops on an atomic uint64; Python has no
  atomics, so a small ``threading.Lock`` guards the integer and each CAS loop becomes one
  critical section. Correctness never leans on the GIL (free-threaded builds are safe).
- DIVERGENCE(go): Go panics; threadpoll raises ``FDMutexError`` with Go's messages.

Signal handlers. CPython runs a Python signal handler on the main thread between bytecodes,
so a handler may run while that thread is inside one of the short critical sections below
and call back into the same mutex (a handler that sets a deadline or reads an address takes a
reference). The state lock is therefore re-entrant (an ``RLock``), and re-entry is harmless
for every operation a handler can finish before it returns: the interrupted section is
suspended between two bytecodes, the handler's ``incref``/``decref`` and
``rwlock``/``rwunlock`` pairs leave ``state`` as they found it, and the section then goes on
with the value it read. Two things would not be harmless, and are refused instead:
``incref_and_close`` (its closed bit would be overwritten by the interrupted section's store;
``FD.close`` checks ``held_by_me`` first and hands the close to another thread) and waiting in
``rwlock`` (the holder could never get the state lock to wake us: ``FDMutexError``). On
CPython 3.11 and newer the sections contain no point where a handler can run at all (no call
and no backward jump between acquire and release); on 3.9 and 3.10 any bytecode is such a
point.

Go: internal/poll/fd_mutex.go
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from threadpoll._runtime import netpoll_c
from threadpoll._runtime.park import Sema

__all__ = [
    "FDMutex",
    "FDMutexError",
    "MUTEX_CLOSED",
    "MUTEX_RLOCK",
    "MUTEX_WLOCK",
    "MUTEX_REF",
    "MUTEX_REF_MASK",
    "MUTEX_RWAIT",
    "MUTEX_RMASK",
    "MUTEX_WWAIT",
    "MUTEX_WMASK",
    "OVERFLOW_MSG",
    "INCONSISTENT_MSG",
    "REENTERED_MSG",
    "state_text",
]

# FDMutex.state is organised as follows (a uint64 in Go):
#
#   bit  0       MUTEX_CLOSED   the FD is closed; every later lock operation fails
#   bit  1       MUTEX_RLOCK    lock for read operations
#   bit  2       MUTEX_WLOCK    lock for write operations
#   bits 3..22   refs           total references (read + write + misc), unit MUTEX_REF
#   bits 23..42  read waiters   threads waiting for MUTEX_RLOCK, unit MUTEX_RWAIT
#   bits 43..62  write waiters  threads waiting for MUTEX_WLOCK, unit MUTEX_WWAIT
#
# Each count is 20 bits wide; taking the 1_048_576th raises OVERFLOW_MSG.
MUTEX_CLOSED = 1 << 0
MUTEX_RLOCK = 1 << 1
MUTEX_WLOCK = 1 << 2
MUTEX_REF = 1 << 3
MUTEX_REF_MASK = ((1 << 20) - 1) << 3
MUTEX_RWAIT = 1 << 23
MUTEX_RMASK = ((1 << 20) - 1) << 23
MUTEX_WWAIT = 1 << 43
MUTEX_WMASK = ((1 << 20) - 1) << 43

OVERFLOW_MSG = "too many concurrent operations on a single file or socket (max 1048575)"
INCONSISTENT_MSG = "inconsistent poll.fdMutex"
REENTERED_MSG = (
    "threadpoll: a signal handler waited for a read or write lock while its own thread was "
    "inside the same descriptor's fdMutex"
)


class FDMutexError(RuntimeError):
    """Go's fdMutex panics: a count overflowed, or an unlock without a matching lock.

    Go: internal/poll/fd_mutex.go panic(overflowMsg), panic("inconsistent poll.fdMutex")
    """


class FDMutex:
    """The closed / rlock / wlock / refs / waiters state word and its two semaphores.

    An FD's is also its pollDesc handle (fd_unix's ``_Core``, the one subclass).

    Go: internal/poll/fd_mutex.go fdMutex
    """

    __slots__ = ("_lock", "poisoned", "reentry_check", "rsema", "state", "wsema")

    def __init__(self) -> None:
        """A fresh mutex: open, unlocked, no references (Go's zero value).

        Go: internal/poll/fd_mutex.go fdMutex
        """
        # DIVERGENCE(go): a lock in place of atomic CAS on ``state`` — Python has no atomics.
        # Re-entrant for signal handlers (see the module docstring); nothing else re-enters.
        self._lock = threading.RLock()
        self.state = 0  # guarded by _lock; the layout is documented above MUTEX_CLOSED
        # Read (write) waiters sleep on rsema (wsema), made by the first waiter or waker
        # (_sema: most descriptors never see a wait for their lock). Set once, under _lock;
        # a Sema synchronises itself.
        self.rsema: Sema | None = None
        self.wsema: Sema | None = None
        # DIVERGENCE(go): MUTEX_RLOCK/MUTEX_WLOCK bits held by a thread that no longer exists
        # (a parent thread, in a forked child). rwlock fails instead of waiting for them.
        self.poisoned = 0  # guarded by _lock
        # Called (with ``read``) by a thread about to sleep for a read or write lock: raises
        # if that thread holds the lock itself, further down its stack (a signal handler
        # running on top of its own read), instead of letting it wait for itself. None (the
        # FD's case): the shared check (set_shared_reentry_check) runs, with this mutex.
        self.reentry_check: Callable[[bool], None] | None = None

    def _sema(self, read: bool) -> Sema:
        """The read (``read``) or write waiters' semaphore, made now if this is its first
        use; a second look under _lock makes two first users agree on one.

        Go: none (Go's semaphores are zero-value uint32s)
        """
        sema = self.rsema if read else self.wsema
        if sema is None:
            with self._lock:
                sema = self.rsema if read else self.wsema
                if sema is None:
                    sema = Sema()
                    if read:
                        self.rsema = sema
                    else:
                        self.wsema = sema
        return sema

    def incref(self) -> bool:
        """Add a reference. Return False if the mutex is closed (no reference taken).

        Go: internal/poll/fd_mutex.go fdMutex.incref
        """
        with self._lock:
            old = self.state
            if old & MUTEX_CLOSED:
                return False
            new = old + MUTEX_REF
            if new & MUTEX_REF_MASK == 0:
                raise FDMutexError(OVERFLOW_MSG)
            self.state = new
            return True

    def incref_and_close(self) -> bool:
        """Mark closed and add a reference; wake every waiter. False if already closed.

        The woken waiters see the closed bit when they retry and return False.

        Go: internal/poll/fd_mutex.go fdMutex.increfAndClose
        """
        if self._lock._is_owned():  # type: ignore[attr-defined]
            # Its closed bit would be lost to the interrupted section's store: FD.close
            # checks held_by_me() and hands the close to another thread instead.
            raise FDMutexError(REENTERED_MSG)
        with self._lock:
            old = self.state
            if old & MUTEX_CLOSED:
                return False
            # Mark as closed and acquire a reference.
            new = (old | MUTEX_CLOSED) + MUTEX_REF
            if new & MUTEX_REF_MASK == 0:
                raise FDMutexError(OVERFLOW_MSG)
            # Remove all read and write waiters.
            new &= ~(MUTEX_RMASK | MUTEX_WMASK)
            self.state = new
        # Wake all read and write waiters, one post per waiter removed above.
        for _ in range((old & MUTEX_RMASK) // MUTEX_RWAIT):
            self._sema(True).release()
        for _ in range((old & MUTEX_WMASK) // MUTEX_WWAIT):
            self._sema(False).release()
        return True

    def decref(self) -> bool:
        """Drop a reference. True iff closed and that was the last one: call destroy.

        Go: internal/poll/fd_mutex.go fdMutex.decref
        """
        with self._lock:
            old = self.state
            if old & MUTEX_REF_MASK == 0:
                raise FDMutexError(INCONSISTENT_MSG)
            new = old - MUTEX_REF
            self.state = new
        return new & (MUTEX_CLOSED | MUTEX_REF_MASK) == MUTEX_CLOSED

    def rwlock(self, read: bool, wait: bool = True) -> bool:
        """Add a reference and take the read (``read``) or write lock.

        Return True with the lock held, or False if the mutex is closed (checked again after
        every wakeup). With ``wait=False`` (a try-lock) also return False when the lock is
        busy. A waiter holds no reference while it sleeps.

        Go: internal/poll/fd_mutex.go fdMutex.rwlock
        """
        # Fast path: open and the lock free — one critical section, nothing else set up.
        bit = MUTEX_RLOCK if read else MUTEX_WLOCK
        with self._lock:
            old = self.state
            if not old & (MUTEX_CLOSED | bit):
                new = (old | bit) + MUTEX_REF
                if new & MUTEX_REF_MASK:
                    self.state = new
                    return True
        return self._rwlock_slow(read, wait)

    def _rwlock_slow(self, read: bool, wait: bool) -> bool:
        """rwlock when the fast path could not decide: closed, busy, or a full ref count.

        Go: internal/poll/fd_mutex.go fdMutex.rwlock
        """
        if read:
            mutex_bit = MUTEX_RLOCK
            mutex_wait = MUTEX_RWAIT
            mutex_mask = MUTEX_RMASK
            mutex_sema = self._sema(True)
        else:
            mutex_bit = MUTEX_WLOCK
            mutex_wait = MUTEX_WWAIT
            mutex_mask = MUTEX_WMASK
            mutex_sema = self._sema(False)
        nested = self._lock._is_owned()  # type: ignore[attr-defined]
        while True:
            with self._lock:
                old = self.state
                if old & mutex_bit & self.poisoned:
                    return False  # held by a thread that is gone (fork): never released
                if old & MUTEX_CLOSED:
                    return False
                if old & mutex_bit == 0:
                    # Lock is free, acquire it.
                    new = (old | mutex_bit) + MUTEX_REF
                    if new & MUTEX_REF_MASK == 0:
                        raise FDMutexError(OVERFLOW_MSG)
                    self.state = new
                    return True
                if not wait:
                    return False
                if nested:
                    # A signal handler interrupted this thread inside this mutex's critical
                    # section: the holder could never take the state lock to wake us.
                    raise FDMutexError(REENTERED_MSG)
                # Wait for lock.
                new = old + mutex_wait
                if new & mutex_mask == 0:
                    raise FDMutexError(OVERFLOW_MSG)
                self.state = new
            # An exception out of acquire() (KeyboardInterrupt) or out of the re-entry check
            # leaves our count behind. Harmless: the stale count only makes a later unlock
            # post a spare token, and a waiter that takes a spare token re-checks the state
            # and waits again.
            check = self.reentry_check
            if check is not None:
                check(read)
            elif _shared_reentry_check is not None:
                _shared_reentry_check(self, read)
            mutex_sema.acquire()
            # The signaller has subtracted mutex_wait.

    def rwunlock(self, read: bool) -> bool:
        """Release the read (``read``) or write lock and its reference; wake one waiter.

        Return True iff closed and that was the last reference: the caller must destroy.

        Go: internal/poll/fd_mutex.go fdMutex.rwunlock
        """
        # Fast path: held as expected and nobody waiting for it.
        if read:
            bit, mask = MUTEX_RLOCK, MUTEX_RMASK
        else:
            bit, mask = MUTEX_WLOCK, MUTEX_WMASK
        with self._lock:
            old = self.state
            if old & bit and old & MUTEX_REF_MASK and not old & mask:
                new = (old & ~bit) - MUTEX_REF
                self.state = new
                return new & (MUTEX_CLOSED | MUTEX_REF_MASK) == MUTEX_CLOSED
        return self._rwunlock_slow(read)

    def _rwunlock_slow(self, read: bool) -> bool:
        """rwunlock with waiters to wake, or a misuse to report.

        Go: internal/poll/fd_mutex.go fdMutex.rwunlock
        """
        if read:
            mutex_bit = MUTEX_RLOCK
            mutex_wait = MUTEX_RWAIT
            mutex_mask = MUTEX_RMASK
            mutex_sema = self._sema(True)
        else:
            mutex_bit = MUTEX_WLOCK
            mutex_wait = MUTEX_WWAIT
            mutex_mask = MUTEX_WMASK
            mutex_sema = self._sema(False)
        with self._lock:
            old = self.state
            if old & mutex_bit == 0 or old & MUTEX_REF_MASK == 0:
                raise FDMutexError(INCONSISTENT_MSG)
            # Drop lock, drop reference and wake a waiter if present.
            new = (old & ~mutex_bit) - MUTEX_REF
            if old & mutex_mask:
                new -= mutex_wait
            self.state = new
        if old & mutex_mask:
            mutex_sema.release()
        return new & (MUTEX_CLOSED | MUTEX_REF_MASK) == MUTEX_CLOSED

    def poison_after_fork(self) -> int:
        """In a forked child: make the mutex usable by the one thread left, or poison it.

        The child has only the forking thread. The state lock and the semaphores may be held
        by a thread that is gone: replace them (the state word is read without the lock for
        that reason). Waiter counts belonged to parent threads: cleared. Unless closed, a
        read or write lock bit a parent thread held is poisoned (``rwlock`` fails instead of
        waiting for it), and the references parent threads held are returned, in ``state``'s
        units, for ``clear_poison`` to drop at close; a closed mutex returns 0.

        Go: none (Go does not fork a multi-threaded runtime)
        """
        return poison_after_fork(self)

    def clear_poison(self, refs: int) -> None:
        """Drop the references (``refs``, from ``poison_after_fork``) and the lock bits that
        parent threads held, so that close can proceed as usual in a forked child.

        Go: none
        """
        with self._lock:
            state = self.state
            if not state & MUTEX_CLOSED:
                self.state = (state - refs) & ~self.poisoned
            self.poisoned = 0

    def held_by_me(self) -> bool:
        """Whether the calling thread is inside one of this mutex's critical sections: true
        only in a signal handler that interrupted one.

        Go: none
        """
        return bool(self._lock._is_owned())  # type: ignore[attr-defined]

    def closing(self, _closed: int = MUTEX_CLOSED) -> bool:
        """Report whether close has begun (the closed bit is set).

        The fronts' finalizers call this, also at interpreter shutdown, after this module's
        globals may have been set to None: hence the constant bound as a default.

        Go: internal/poll/fd_mutex.go FD.closing
        """
        with self._lock:
            return self.state & _closed != 0

    def __repr__(self) -> str:
        """Go: none"""
        with self._lock:
            s = self.state
        return f"<FDMutex {state_text(s)}>"


# The re-entry check of a mutex without one of its own (reentry_check None), called with
# the mutex: fd_unix's, which finds the FD waiting for it on the stack. One for all mutexes,
# so an FD costs no closure (as the C core's fdMutex, which fd_unix hands the same one).
_shared_reentry_check: Callable[[FDMutex, bool], None] | None = None


def set_shared_reentry_check(check: Callable[[FDMutex, bool], None]) -> None:
    """Set the shared re-entry check (fd_unix, once at import).

    Go: none
    """
    global _shared_reentry_check
    _shared_reentry_check = check


# The C core's fdMutex (threadpoll/_c/fd_mutex.c) is this type in C, for FDs on the C core's
# runtime; it raises this module's FDMutexError and parks waiters on park.Sema.
if netpoll_c.cpoll is not None:
    netpoll_c.cpoll._init_fd(FDMutexError, Sema, threading.Lock())


def poison_after_fork(mu: Any) -> int:
    """FDMutex.poison_after_fork, for either implementation's mutex. In the forked child
    only one thread runs, so the C core's mutex needs no method of its own for this: its
    fields are set one by one here (its ``clear_poison`` at close is one compare-and-swap).

    Go: none
    """
    state = mu.state
    mu._lock = threading.RLock()
    mu.rsema = Sema()
    mu.wsema = Sema()
    state &= ~(MUTEX_RMASK | MUTEX_WMASK)
    refs = 0
    if not state & MUTEX_CLOSED:
        mu.poisoned = state & (MUTEX_RLOCK | MUTEX_WLOCK)
        refs = state & MUTEX_REF_MASK
    mu.state = state
    return int(refs)


def load_state(mu: Any) -> int:
    """The state word of either implementation's mutex, read without its lock: a snapshot
    for diagnostics and for decisions that a stale value cannot make wrong.

    Go: internal/poll/fd_mutex.go (atomic.LoadUint64(&mu.state))
    """
    return int(mu.state)


def refs_of(state: int) -> int:
    """How many references a state word counts.

    Go: none
    """
    return (state & MUTEX_REF_MASK) // MUTEX_REF


def state_text(state: int) -> str:
    """A state word spelled out: ``refs=N``, then ``closed``/``rlock``/``wlock`` and the
    waiter counts that are set. Takes no lock (dump() reads the word without one).

    Go: none
    """
    parts = [f"refs={(state & MUTEX_REF_MASK) // MUTEX_REF}"]
    if state & MUTEX_CLOSED:
        parts.append("closed")
    if state & MUTEX_RLOCK:
        parts.append("rlock")
    if state & MUTEX_WLOCK:
        parts.append("wlock")
    rwait = (state & MUTEX_RMASK) // MUTEX_RWAIT
    wwait = (state & MUTEX_WMASK) // MUTEX_WWAIT
    if rwait:
        parts.append(f"rwait={rwait}")
    if wwait:
        parts.append(f"wwait={wwait}")
    return " ".join(parts)
