"""Parking primitives for OS threads: Go's semacquire/semrelease.

Go parks goroutines with ``gopark``/``goready`` and counts with the runtime semaphores
``semacquire``/``semrelease`` (runtime/sema.go). threadpoll runs on real OS threads, so a
parked "goroutine" is a thread asleep in the kernel on a lock. The pollDesc waiters park on
Conditions built on the pollDesc's own lock (see netpoll.py); this module holds the counting
semaphore used by the fdMutex (rsema, wsema) and the FD's close semaphore (csema).

Differences from Go:
- DIVERGENCE(go): ``Sema`` is a ``threading.Semaphore`` — the OS (futex) does the sleeping,
  there is no runtime-level queue of waiters and no hand-off.

Go: runtime/sema.go, runtime/proc.go (gopark, goready)
"""

from __future__ import annotations

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
        self._sem = threading.Semaphore(0)

    def acquire(self) -> None:
        """Block until the count is positive, then decrement it.

        Go: runtime/sema.go semacquire
        """
        self._sem.acquire()

    def release(self, n: int = 1) -> None:
        """Add ``n`` to the count, waking up to ``n`` sleepers.

        Go: runtime/sema.go semrelease
        """
        self._sem.release(n)


def semacquire(s: Sema) -> None:
    """Go: runtime/sema.go sync_runtime_Semacquire"""
    s.acquire()


def semrelease(s: Sema) -> None:
    """Go: runtime/sema.go sync_runtime_Semrelease"""
    s.release()
