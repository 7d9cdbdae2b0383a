"""Parking primitives for OS threads: Go's semacquire/semrelease.

Go parks goroutines with ``gopark``/``goready`` and counts with the runtime semaphores
``semacquire``/``semrelease`` (runtime/sema.go). threadpoll runs on real OS threads, so a
parked "goroutine" is a thread asleep in the kernel on a lock. The pollDesc waiters park on
Conditions built on the pollDesc's own lock (see netpoll.py); this module holds the counting
semaphore used by the fdMutex (rsema, wsema) and the FD's close semaphore (csema).

Differences from Go:
- DIVERGENCE(go): ``Sema`` is a ``threading.Semaphore`` — the OS (futex) does the sleeping,
  there is no runtime-level queue of waiters and no hand-off.
- DIVERGENCE(go): the ``threading.Semaphore`` is made on first use. Go's semaphore is one
  ``uint32``; a ``threading.Semaphore`` (a Condition, its lock and a deque) is about 1 KB,
  and an FD has three of them that most descriptors never touch (rsema and wsema only see
  contended locks, csema only a close that has to wait).

Go: runtime/sema.go, runtime/proc.go (gopark, goready)
"""

from __future__ import annotations

import os
import threading

from typing_extensions import final

__all__ = ["Sema", "semacquire", "semrelease"]


@final
class Sema:
    """A counting semaphore that starts at zero, as Go's ``uint32`` semaphores do.

    Go: runtime/sema.go semaphore (a *uint32 with semacquire/semrelease)
    """

    __slots__ = ("_sem",)

    def __init__(self) -> None:
        """Go: none"""
        self._sem: threading.Semaphore | None = None  # guarded by _make_lock; made on first use

    def _get(self) -> threading.Semaphore:
        """The semaphore, made on first use. Always under the lock: both callers are on a
        slow path already, and the lock makes publishing the new object safe without the GIL.

        Go: none
        """
        with _make_lock:
            sem = self._sem
            if sem is None:
                sem = self._sem = threading.Semaphore(0)
            return sem

    def acquire(self) -> None:
        """Block until the count is positive, then decrement it.

        Go: runtime/sema.go semacquire
        """
        self._get().acquire()

    def release(self, n: int = 1) -> None:
        """Add ``n`` to the count, waking up to ``n`` sleepers.

        Go: runtime/sema.go semrelease
        """
        self._get().release(n)


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
