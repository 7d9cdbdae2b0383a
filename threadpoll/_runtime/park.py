"""Parking primitives for OS threads: Go's semacquire/semrelease.

Go parks goroutines with ``gopark``/``goready`` and counts with the runtime semaphores
``semacquire``/``semrelease`` (runtime/sema.go). threadpoll runs on real OS threads, so a
parked "goroutine" is a thread asleep in the kernel on a lock. The pollDesc waiters park on
their pollDesc's per-mode wake locks (see netpoll.py); this module holds the counting
semaphore used by the fdMutex (rsema, wsema) and the FD's close semaphore (csema).

Differences from Go:
- DIVERGENCE(go): a ``Sema`` is a count and a FIFO of sleepers, each asleep on a bare lock
  of its own that ``release`` hands a token to (Go's semaRoot queue of sudogs with
  hand-off, the OS futex doing the sleeping), all guarded by a re-entrant lock. Not a
  ``threading.Semaphore``, for two reasons. Its Condition's plain lock is held across
  Python code, so a signal handler that releases the semaphore (a close, waking lock
  waiters) on a thread inside its ``acquire`` would wait for ever; here re-entry is
  harmless: a sleeper registers before its last look at the count, so a release by a
  handler on its own thread is never lost, and nothing sleeps while holding the lock. And
  its Condition can leave a stale waiter queued when Ctrl-C lands in ``Condition.wait``'s
  prologue, so the next release wakes nobody; here an exception anywhere in ``acquire``
  never loses a token: a sleeper still queued withdraws, one already handed a token passes
  it on.
- DIVERGENCE(go): the main thread sleeps in slices of at most ``_MAIN_SLICE`` seconds, so
  that a Ctrl-C that CPython's lock missed (it landed after the last check for signals and
  before the sleep) is handled within one.
- DIVERGENCE(go): the state is made on first use. Go's semaphore is one ``uint32``; an FD
  has three of these that most descriptors never touch (rsema and wsema only see contended
  locks, csema only a close that has to wait).

Go: runtime/sema.go, runtime/proc.go (gopark, goready)
"""

from __future__ import annotations

import _thread
import collections
import os
import threading

from typing_extensions import final

__all__ = ["Sema", "semacquire", "semrelease"]

# The longest the main thread sleeps in one go (see the module docstring).
_MAIN_SLICE = 0.1


@final
class _Sleeper:
    """One thread waiting in Sema.acquire: its own lock, held until a release hands it a
    token; ``handed`` says one did (guarded by the Sema's lock).

    Go: runtime/sema.go sudog (as semaRoot queues it)
    """

    __slots__ = ("wake", "handed")

    def __init__(self) -> None:
        """Go: none"""
        self.wake = _thread.allocate_lock()
        self.wake.acquire()
        self.handed = False


@final
class Sema:
    """A counting semaphore that starts at zero, as Go's ``uint32`` semaphores do.

    Go: runtime/sema.go semaphore (a *uint32 with semacquire/semrelease)
    """

    __slots__ = ("_lock", "_count", "_sleepers")

    def __init__(self) -> None:
        """Go: none"""
        # Made on first use, under _make_lock; re-entrant for signal handlers (docstring).
        self._lock: threading.RLock | None = None
        self._count = 0  # guarded by _lock: tokens nobody has taken
        self._sleepers: collections.deque[_Sleeper] | None = None  # guarded by _lock; FIFO

    def _get(self) -> tuple[threading.RLock, collections.deque[_Sleeper]]:
        """The Sema's lock and sleeper queue, made on first use. Always under _make_lock:
        both callers are on a slow path already, and the lock makes publishing the new
        objects safe without the GIL.

        Go: none
        """
        with _make_lock:
            lock, sleepers = self._lock, self._sleepers
            if lock is None or sleepers is None:
                new_sleepers: collections.deque[_Sleeper] = collections.deque()
                new_lock = threading.RLock()
                # A signal handler on this thread may have made (and used) the state while
                # the two above were made: keep that one, or its token would be lost.
                lock, sleepers = self._lock, self._sleepers
                if lock is None or sleepers is None:
                    sleepers = self._sleepers = new_sleepers
                    lock = self._lock = new_lock
            return lock, sleepers

    def acquire(self) -> None:
        """Block until the count is positive, then decrement it.

        Go: runtime/sema.go semacquire
        """
        lock, sleepers = self._get()
        me: _Sleeper | None = None
        try:
            with lock:
                if self._count > 0:
                    self._count -= 1
                    return
                sleeper = _Sleeper()
                me = sleeper  # from here the handler below accounts for it
                sleepers.append(sleeper)
                # Registered: from here a release hands us its token. Look once more for one
                # that came before (a handler on this very thread may have released).
                if self._count > 0:
                    self._count -= 1
                    sleepers.remove(sleeper)
                    me = None
                    return
            timeout = _MAIN_SLICE if threading.current_thread() is threading.main_thread() else -1
            while not sleeper.wake.acquire(True, timeout):
                pass
        except BaseException:
            if me is not None:
                # Interrupted (Ctrl-C): withdraw if still queued; a token already handed to
                # us goes to the next sleeper, or back to the count.
                with lock:
                    if me.handed:
                        self._post(1)
                    elif me in sleepers:
                        sleepers.remove(me)
            raise

    def release(self, n: int = 1) -> None:
        """Add ``n`` tokens, handing each to the longest-waiting sleeper if there is one.

        Go: runtime/sema.go semrelease
        """
        lock, _ = self._get()
        with lock:
            self._post(n)

    def _post(self, n: int) -> None:
        """Hand n tokens out. Must be called while holding the Sema's lock.

        Go: runtime/sema.go semrelease1 (its dequeue and readyWithTime)
        """
        sleepers = self._sleepers
        while n > 0 and sleepers:
            sleeper = sleepers.popleft()
            sleeper.handed = True
            sleeper.wake.release()
            n -= 1
        self._count += n


# Serialises the first use of every Sema (a rare event: see the module docstring).
# Re-entrant: a signal handler may release a Sema while its thread is making one.
_make_lock = threading.RLock()


def _after_fork_in_child() -> None:
    """A parent thread may have held _make_lock at the fork: the child gets a fresh one.

    Go: none
    """
    global _make_lock
    _make_lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def semacquire(s: Sema) -> None:
    """Go: runtime/sema.go sync_runtime_Semacquire"""
    s.acquire()


def semrelease(s: Sema) -> None:
    """Go: runtime/sema.go sync_runtime_Semrelease"""
    s.release()
