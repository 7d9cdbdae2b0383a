"""Parking primitives for OS threads: Go's semacquire/semrelease.

Go parks goroutines with ``gopark``/``goready`` and counts with the runtime semaphores
``semacquire``/``semrelease`` (runtime/sema.go). threadpoll runs on real OS threads, so a
parked "goroutine" is a thread asleep in the kernel on a lock. The pollDesc waiters park on
Conditions built on the pollDesc's own lock (see netpoll.py); this module holds the counting
semaphore used by the fdMutex (rsema, wsema) and the FD's close semaphore (csema).

Differences from Go:
- DIVERGENCE(go): a ``Sema`` is a count and a FIFO of sleeping threads, each asleep on a
  bare lock of its own that ``release`` hands the token to, all guarded by a re-entrant
  lock. Not a ``threading.Semaphore``: its Condition's plain lock is held across Python
  code, so a signal handler that releases the semaphore (a close, waking lock waiters) on a
  thread inside its ``acquire`` would wait for ever. Here re-entry is harmless: a sleeper
  registers before its last look at the count, so a release by a handler on its own thread
  is never lost, and nothing sleeps while holding the lock.
- DIVERGENCE(go): the state is made on first use. Go's semaphore is one ``uint32``; an FD
  has three of these that most descriptors never touch (rsema and wsema only see contended
  locks, csema only a close that has to wait).

Go: runtime/sema.go, runtime/proc.go (gopark, goready)
"""

from __future__ import annotations

import collections
import os
import threading
from _thread import LockType
from _thread import allocate_lock as _allocate_lock

from typing_extensions import final

__all__ = ["Sema", "semacquire", "semrelease"]


@final
class _SemaState:
    """A Sema's count and sleepers, made on first use.

    Go: none
    """

    __slots__ = ("lock", "count", "sleepers")

    def __init__(self) -> None:
        """Go: none"""
        self.lock = threading.RLock()  # re-entrant for signal handlers (module docstring)
        self.count = 0  # guarded by lock: tokens nobody has taken
        self.sleepers: collections.deque[LockType] = collections.deque()  # guarded by lock


@final
class Sema:
    """A counting semaphore that starts at zero, as Go's ``uint32`` semaphores do.

    Go: runtime/sema.go semaphore (a *uint32 with semacquire/semrelease)
    """

    __slots__ = ("_st",)

    def __init__(self) -> None:
        """Go: none"""
        self._st: _SemaState | None = None  # guarded by _make_lock; made on first use

    def _get(self) -> _SemaState:
        """The state, made on first use. Always under the lock: both callers are on a slow
        path already, and the lock makes publishing the new object safe without the GIL.

        Go: none
        """
        with _make_lock:
            st = self._st
            if st is None:
                new = _SemaState()
                # A signal handler on this thread may have made (and used) one while
                # _SemaState() ran: keep that one, or its token would be lost.
                st = self._st
                if st is None:
                    st = self._st = new
            return st

    def acquire(self) -> None:
        """Block until the count is positive, then decrement it. A sleeper is handed its
        token directly by ``release`` (FIFO). An exception while asleep (a signal handler
        raising) leaves no stale sleeper: a token handed over meanwhile is passed on.

        Go: runtime/sema.go semacquire
        """
        st = self._get()
        with st.lock:
            if st.count > 0:
                st.count -= 1
                return
            me = _allocate_lock()
            me.acquire()
            st.sleepers.append(me)
            # Registered: from here a release hands us its token. Look once more for one
            # that came before (a handler on this very thread may have released).
            if st.count > 0:
                st.count -= 1
                st.sleepers.remove(me)
                return
        try:
            me.acquire()  # asleep until release() hands us the token
        except BaseException:
            with st.lock:
                try:
                    st.sleepers.remove(me)
                except ValueError:
                    self._release_locked(st, 1)  # we were handed a token: pass it on
            raise

    def release(self, n: int = 1) -> None:
        """Add ``n`` tokens, handing each to the longest sleeper if there is one.

        Go: runtime/sema.go semrelease
        """
        st = self._get()
        with st.lock:
            self._release_locked(st, n)

    @staticmethod
    def _release_locked(st: _SemaState, n: int) -> None:
        """Must be called while holding st.lock.

        Go: runtime/sema.go semrelease1
        """
        for _ in range(n):
            if st.sleepers:
                st.sleepers.popleft().release()
            else:
                st.count += 1


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
