"""Parking primitives for OS threads: Go's semacquire/semrelease.

Go parks goroutines with ``gopark``/``goready`` and counts with the runtime semaphores
``semacquire``/``semrelease`` (runtime/sema.go). threadpoll runs on real OS threads, so a
parked "goroutine" is a thread asleep in the kernel on a lock. The pollDesc waiters park on
their pollDesc's per-mode wake locks (see netpoll.py); this module holds the counting
semaphore used by the fdMutex (rsema, wsema) and the FD's close semaphore (csema).

Differences from Go:
- DIVERGENCE(go): ``Sema`` is a count and a FIFO of sleepers under one bare lock, each sleeper
  on a bare lock of its own that ``release`` hands a token to — Go's semaRoot queue of sudogs
  with hand-off, with the OS (futex) doing the sleeping. Not a ``threading.Semaphore``: its
  Condition can leave a stale waiter queued when Ctrl-C lands in ``Condition.wait``'s
  prologue, and the next release then wakes nobody (a lost wake-up).
- DIVERGENCE(go): the sleeper lock is made per wait, and the Sema's own lock on first use:
  most descriptors never wait on their fdMutex or close semaphores.
- DIVERGENCE(go): a signal handler may raise in the main thread while it sleeps here (or
  anywhere in acquire). The token is then never lost: a sleeper still queued withdraws, one
  already handed a token passes it on. The main thread sleeps in slices of at most
  ``_MAIN_SLICE`` seconds, so that a Ctrl-C that CPython's lock missed (it landed after the
  last check for signals and before the sleep) is handled within one.

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
        self._lock: _thread.LockType | None = None  # made on first use, under _make_lock
        self._count = 0  # guarded by _lock: tokens nobody has taken
        self._sleepers: collections.deque[_Sleeper] | None = None  # guarded by _lock; FIFO

    def _get(self) -> tuple[_thread.LockType, collections.deque[_Sleeper]]:
        """The Sema's lock and sleeper queue, made on first use. Always under _make_lock:
        both callers are on a slow path already, and the lock makes publishing the new
        objects safe without the GIL.

        Go: none
        """
        with _make_lock:
            lock, sleepers = self._lock, self._sleepers
            if lock is None or sleepers is None:
                sleepers = self._sleepers = collections.deque()
                lock = self._lock = _thread.allocate_lock()
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
_make_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """A parent thread may have held _make_lock at the fork: the child gets a fresh one.

    Go: none
    """
    global _make_lock
    _make_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def semacquire(s: Sema) -> None:
    """Go: runtime/sema.go sync_runtime_Semacquire"""
    s.acquire()


def semrelease(s: Sema) -> None:
    """Go: runtime/sema.go sync_runtime_Semrelease"""
    s.release()
