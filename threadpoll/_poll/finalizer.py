"""The finalizer thread: closes the FDs of fronts that were garbage collected unclosed.

Go sets a finalizer on each ``os.File`` and ``netFD`` that closes the descriptor, and runs
finalizers on one goroutine of their own. Here a front's ``__del__`` hands its FD to
``finalizer.finalize``, which warns as the stdlib does and queues the FD; the thread
``threadpoll-finalizer`` closes it without waiting for operations in flight (the last one to
leave closes the descriptor).

Why a thread: ``__del__`` must not take a lock, since a garbage collection can run while the
collecting thread holds one of the runtime's locks (the poller holds its backend's), which are
not re-entrant. So the close cannot run inline; ``finalize`` only appends to a deque and pokes
the thread, neither of which takes a lock or waits.

Go: runtime/mfinal.go (the finalizer goroutine); os/file_unix.go newFile's
runtime.SetFinalizer
"""

from __future__ import annotations

import _thread
import collections
import os
import threading
import warnings
from typing import Callable

from typing_extensions import final

from threadpoll._poll.fd_unix import FD

__all__ = ["finalizer"]


@final
class _Finalizer:
    """The thread and its queue of FDs to close.

    ``wake`` is a binary semaphore made of a bare lock: ``poke`` releases it (never blocking,
    so ``__del__`` may call it), the thread acquires it to sleep until there is work.

    Go: runtime/mfinal.go runfinq
    """

    __slots__ = ("lock", "wake", "closes", "thread")

    def __init__(self) -> None:
        """Go: none"""
        self.lock = threading.RLock()  # re-entrant: a signal handler may start the thread too
        self.wake = _thread.allocate_lock()
        self.wake.acquire()
        self.closes: collections.deque[FD] = collections.deque()  # thread-safe by itself
        self.thread: threading.Thread | None = None  # guarded by lock

    def start(self) -> None:
        """Start the thread if it is not running (first front; after fork).

        Go: runtime/mfinal.go createfing
        """
        # Benign race: the unlocked test sees None (the locked path decides) or a thread
        # already started before it was stored under lock.
        if self.thread is not None:
            return
        with self.lock:
            if self.thread is None:
                t = threading.Thread(target=self._run, name="threadpoll-finalizer", daemon=True)
                if self.thread is None:  # a signal handler here may have started one
                    self.thread = t
                    try:
                        t.start()
                    except BaseException:
                        self.thread = None
                        raise

    def poke(self) -> None:
        """Wake the thread. Never blocks and takes no lock.

        Go: none
        """
        try:
            self.wake.release()
        except RuntimeError:
            pass  # already released: a wake-up is pending

    def close_later(self, fd: FD) -> None:
        """Close fd from the finalizer thread. Takes no lock (for ``__del__``).

        Go: runtime/mfinal.go queuefinalizer
        """
        self.closes.append(fd)
        self.poke()

    def finalize(
        self, owner: object, fd: FD | None, _warn: Callable[..., None] = warnings.warn
    ) -> None:
        """A front's ``__del__``: warn as the stdlib does, then hand the close to the thread.
        Takes no lock and never waits.

        Go: os/file_unix.go (*file).close as a finalizer
        """
        if fd is None or fd.closing():
            return
        try:
            _warn(f"unclosed {owner!r}", ResourceWarning, source=owner)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
        self.close_later(fd)

    def _run(self) -> None:
        """The thread: close what is queued, sleep until poked, repeat.

        Go: runtime/mfinal.go runfinq
        """
        while True:
            while self.closes:
                fd = self.closes.popleft()
                try:
                    fd._close_nowait()
                except Exception:  # noqa: BLE001 - a finalizer's close has nobody to report to
                    pass
            self.wake.acquire()

    def after_fork_in_child(self) -> None:
        """The child has no finalizer thread: start afresh, lazily.

        Go: none (Go does not fork a multi-threaded runtime)
        """
        self.lock = threading.RLock()
        self.wake = _thread.allocate_lock()
        self.wake.acquire()
        self.thread = None  # started again by the child's next front


finalizer = _Finalizer()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=finalizer.after_fork_in_child)
