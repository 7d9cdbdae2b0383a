"""The poller's life: which backend, the poller thread, its death and restart, and fork.

Go's runtime polls the network from its scheduler (``runtime/proc.go``: ``findRunnable``
and ``sysmon`` call ``netpoll``) and picks its backend at build time. threadpoll has no
scheduler: a poller thread per runtime blocks in the backend's netpoll and readies the
threads whose descriptors became ready (``netpoll.netpollready``). This module holds that
thread's life, and the runtime objects it serves:

- ``Runtime``: one poller with its backend, pollDesc cache and counters (Go's package-level
  state of ``runtime/netpoll.go``); ``ensure_poller`` starts its thread at the first open.
- the poller thread (``Runtime._poller_loop``), its death (``_poller_died``: every waiter is
  told, a successor starts) and the successor's back-off and sweep;
- fork (``Runtime.after_fork_in_child``, run for every live runtime in a forked child);
- the backend choice (``backend_names``, ``new_backend``) and the default runtime
  (``runtime_poll_server_init``, ``get_runtime``, ``set_default_runtime``).

netpoll.py never imports this module: it reaches a runtime only through the pollDesc it is
given (``pd.rt``). The backends import netpoll.py, and this module imports both.

Go: runtime/proc.go (findRunnable's netpoll call, sysmon), runtime/netpoll.go
(netpollGenericInit, poll_runtime_pollServerInit)
"""

from __future__ import annotations

import os
import signal
import threading
import time
import weakref

from typing_extensions import final

from threadpoll._runtime import trace
from threadpoll._runtime.netpoll import (
    PD_PARKED,
    PD_WAIT,
    Backend,
    Hooks,
    PollCache,
    PollDesc,
    netpollgoready,
    netpollready,
    netpollunblock,
    throw,
)

__all__ = [
    "Runtime",
    "backend_names",
    "new_backend",
    "runtime_poll_server_init",
    "get_runtime",
    "set_default_runtime",
]


def _poller_backoff(failures: int) -> float:
    """Seconds a restarted poller waits before polling: none after a poller that worked,
    then 1 ms doubling per death in a row, at most 1 s.

    Go: none
    """
    if failures <= 0:
        return 0.0
    return float(min(0.001 * 2 ** (failures - 1), 1.0))


@final
class Runtime:
    """One poller with its backend, pollDesc cache and poller thread.

    Go has exactly one of these per process. threadpoll has one default runtime
    (``get_runtime()``); tests make one per backend so every backend runs in one process.

    Go: none (the package-level state of runtime/netpoll.go)
    """

    __slots__ = (
        "backend",
        "cache",
        "hooks",
        "lock",
        "open_pds",
        "poller",
        "stopping",
        "poller_error",
        "poller_deaths",
        "poller_failures",
        "poller_down",
        "stat_lock",
        "poller_wakeups",
        "events",
        "breaks",
        "stale_events_dropped",
        "deadline_expiries",
        "closes_waited",
        "__weakref__",
    )

    impl = "python"  # which implementation (the C core's CRuntime says "c")

    def __init__(self, backend: Backend) -> None:
        """Go: runtime/netpoll.go netpollGenericInit"""
        self.backend = backend
        self.cache = PollCache(self)
        self.hooks = Hooks()
        self.lock = threading.Lock()
        self.open_pds: dict[int, PollDesc] = {}  # guarded by lock: id → pd, open ones
        self.poller: threading.Thread | None = None  # guarded by lock
        self.stopping = False  # guarded by lock
        # The poller's last death (None if it never died) and how many times it died; both
        # guarded by lock. poller_failures counts deaths in a row with no netpoll completed
        # in between, and sets how long a restarted poller backs off (_poller_backoff).
        self.poller_error: BaseException | None = None
        self.poller_deaths = 0
        self.poller_failures = 0
        # The exception that killed the last poller, from its death until a successor has
        # completed a netpoll; None while the poller works. Written under lock, read by
        # netpollblock under pd.lock (one attribute load).
        self.poller_down: BaseException | None = None
        # Counters. The poller thread alone writes poller_wakeups, events and
        # stale_events_dropped; the others are written under stat_lock. Benign race:
        # stats() reads them all without a lock, and may see a count a moment old.
        self.stat_lock = threading.Lock()
        self.poller_wakeups = 0
        self.events = 0
        self.breaks = 0
        self.stale_events_dropped = 0
        self.deadline_expiries = 0
        self.closes_waited = 0
        backend.netpollinit(self)
        _runtimes_add(self)

    @property
    def name(self) -> str:
        """The backend's name.

        Go: none
        """
        return self.backend.name

    def count_expiry(self) -> None:
        """Go: none"""
        with self.stat_lock:
            self.deadline_expiries += 1

    def count_break(self) -> None:
        """Go: none"""
        with self.stat_lock:
            self.breaks += 1

    def count_close_waited(self) -> None:
        """Go: none"""
        with self.stat_lock:
            self.closes_waited += 1

    def ensure_poller(self) -> None:
        """Start the poller thread if it is not running (first open; first wait in a forked
        child). A poller that dies restarts itself (_poller_died).

        Go: none (Go's scheduler polls the network itself)
        """
        with self.lock:
            if self.poller is not None and self.poller.is_alive():
                return
            if self.stopping:
                raise throw("runtime: poller used after shutdown")
            self._start_poller()

    def _start_poller(self) -> None:
        """Start a poller thread. Must be called while holding rt.lock.

        Go: none
        """
        t = threading.Thread(
            target=self._poller_loop,
            name=f"threadpoll-poller-{self.backend.name}",
            daemon=True,
        )
        self.poller = t
        t.start()

    def _poller_loop(self) -> None:
        """The poller thread: block in netpoll, ready whoever became ready, repeat.

        Go: runtime/proc.go findRunnable (its netpoll(delay) call) and sysmon
        """
        if hasattr(signal, "pthread_sigmask"):
            # Signals must reach the main thread, not interrupt the poller's epoll_wait.
            signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        wakeups = self.poller_wakeups
        try:
            with self.lock:
                restarted = self.poller_error is not None
                backoff = _poller_backoff(self.poller_failures)
            if restarted:
                if backoff > 0:
                    # DIVERGENCE(go): a poller that keeps dying at once (a broken backend)
                    # is restarted with exponential back-off, not in a hot loop. The sleep
                    # is the back-off itself, not synchronisation.
                    time.sleep(backoff)
                # Poll once without blocking before declaring the poller up: a backend that
                # still fails dies here, before the sweep, and threads that would park keep
                # being told (netpollblock) instead of readied to park again at each restart.
                self.backend.netpoll(0)
                self.poller_wakeups += 1
                with self.lock:
                    self.poller_down = None
                self._sweep_after_death()
            while True:
                with self.lock:
                    if self.stopping:
                        return
                self.backend.netpoll(-1)
                self.poller_wakeups += 1
        except BaseException as exc:  # noqa: B036 - the poller must report any death
            self._poller_died(exc, self.poller_wakeups > wakeups)

    def _poller_died(self, exc: BaseException, healthy: bool) -> None:
        """Wake every thread waiting on a pollDesc with POLL_ERR_POLLER, then start a new
        poller (unless the runtime is shutting down). ``healthy`` says whether the dead
        poller completed a netpoll since it started; if not, the new one backs off first.

        Which waiters are told: those in PD_WAIT or PD_PARKED, in either mode. An edge the
        dead poller fetched but never delivered may be lost, and nobody but the poller would
        wake them. A thread that has not published PD_WAIT yet is told when it does, as long
        as the poller is down (netpollblock); after that, the new poller's sweep
        (_sweep_after_death) readies it. Descriptors nobody waits on are left alone, so their
        next operation simply works (once the poller is up again, if it must park).

        Runs in the dying poller thread.

        Go: none (Go's poller cannot die)
        """
        with self.lock:
            self.poller_error = exc
            self.poller_down = exc  # before looking at waiters: see netpollblock
            self.poller_deaths += 1
            self.poller_failures = 0 if healthy else self.poller_failures + 1
            pds = list(self.open_pds.values())
        if trace.enabled:
            trace.emit("poller_died", info=repr(exc))
        for pd in pds:
            with pd.lock:
                if pd.rg not in (PD_WAIT, PD_PARKED) and pd.wg not in (PD_WAIT, PD_PARKED):
                    continue
                pd.poller_err = exc
                for mode in ("r", "w"):
                    if netpollunblock(pd, mode, False):
                        netpollgoready(pd, mode)
        with self.lock:
            if self.stopping:
                return
            try:
                self._start_poller()
            except RuntimeError:
                # "can't create new thread at interpreter shutdown": nobody is left to serve.
                self.poller = None

    def _sweep_after_death(self) -> None:
        """In a restarted poller: ready every open pollDesc once in both modes, so an edge
        the dead poller fetched and dropped cannot leave a thread parked for ever. A thread
        that did not need it retries its syscall and gets EAGAIN (a spurious wake-up, which
        internal/poll absorbs). pollDescs whose waiters were told of the death are skipped:
        they must see POLL_ERR_POLLER, not readiness.

        Go: none
        """
        with self.lock:
            pds = list(self.open_pds.values())
        for pd in pds:
            with pd.lock:
                if pd.closing or pd.poller_err is not None:
                    continue
            netpollready(pd, "rw")

    def netpollready(self, pd: PollDesc, mode: str) -> int:
        """``netpoll.netpollready``, as a method: code that holds a runtime of either
        implementation readies through it (the C core's runtime has the same method).

        Go: runtime/netpoll.go netpollready
        """
        return netpollready(pd, mode)

    def shutdown(self) -> None:
        """Stop the poller thread and release the backend (tests; process exit).

        Go: none
        """
        with self.lock:
            self.stopping = True
            t = self.poller
        if t is not None and t.is_alive():
            self.backend.netpoll_break()
            t.join()
        self.backend.netpolldeinit()
        _runtimes_discard(self)

    def after_fork_in_child(self) -> None:
        """Rebuild in a forked child: fresh locks, backend and poller (started lazily).

        The child has only the forking thread, so every waiter recorded in a pollDesc
        belonged to a parent thread that does not exist here: clear them. Locks that a
        parent thread held at the fork would never be released: replace them.

        Go: none (Go does not support fork in a multi-threaded process)
        """
        self.lock = threading.Lock()
        self.stat_lock = threading.Lock()
        self.cache = PollCache(self)
        self.poller = None  # started by the child's first open or wait (runtime_poll_wait)
        self.poller_error = None
        self.poller_failures = 0
        self.poller_down = None
        pds = list(self.open_pds.values())
        backend = self.backend
        backend.netpoll_after_fork(self)
        for pd in pds:
            pd.after_fork_in_child()
            backend.netpollopen(pd.fd, pd)


# Every live runtime, so fork handling can reach them (weak: tests make and drop runtimes).
_runtimes: weakref.WeakSet[Runtime] = weakref.WeakSet()
_runtimes_lock = threading.Lock()


def _runtimes_add(rt: Runtime) -> None:
    """Go: none"""
    with _runtimes_lock:
        _runtimes.add(rt)


def _runtimes_discard(rt: Runtime) -> None:
    """Go: none"""
    with _runtimes_lock:
        _runtimes.discard(rt)


def _after_fork_in_child() -> None:
    """Go: none"""
    global _runtimes_lock, _default_lock
    # A parent thread may have held either at the fork; in the child it never will release
    # them.
    _runtimes_lock = threading.Lock()
    _default_lock = threading.Lock()
    for rt in list(_runtimes):
        rt.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --- The backend choice and the default runtime ---------------------------------------


def backend_names() -> list[str]:
    """The backends this machine can run, in order of preference (epoll, kqueue, poll).

    Go: none (Go picks its backend at build time, by GOOS)
    """
    import select

    names = []
    if hasattr(select, "epoll"):
        names.append("epoll")
    if hasattr(select, "kqueue"):
        names.append("kqueue")
    if hasattr(select, "poll"):
        names.append("poll")
    return names


def new_backend(name: str) -> Backend:
    """Construct the named backend's poller.

    Go: none
    """
    if name == "epoll":
        from threadpoll._runtime.netpoll_epoll import EpollBackend

        return EpollBackend(lazy_write=os.environ.get("THREADPOLL_EPOLL_LAZY_WRITE") == "1")
    if name == "kqueue":
        from threadpoll._runtime.netpoll_kqueue import KqueueBackend

        return KqueueBackend()
    if name == "poll":
        from threadpoll._runtime.netpoll_poll import PollBackend

        return PollBackend()
    raise ValueError(f"threadpoll: unknown backend {name!r} (have {', '.join(backend_names())})")


_default: Runtime | None = None
_default_lock = threading.Lock()


def runtime_poll_server_init(name: str | None = None) -> Runtime:
    """Make a runtime: the named backend, else $THREADPOLL_BACKEND, else the best available.

    Go: runtime/netpoll.go poll_runtime_pollServerInit
    """
    from threadpoll._runtime import netpoll_c  # here: netpoll_c registers runtimes with us

    impl = netpoll_c.chosen_impl()
    if name is None:
        name = os.environ.get("THREADPOLL_BACKEND") or None
    if name is None:
        names = backend_names()
        if not names:
            raise ImportError("threadpoll: this platform has none of epoll, kqueue or poll")
        name = names[0]
    if impl == "c" and name == netpoll_c.backend_name():
        # The C core has its platform's edge-triggered backend; the portable poll backend
        # stays Python-only (it serves the rare POSIX with neither epoll nor kqueue).
        return netpoll_c.CRuntime(name)
    return Runtime(new_backend(name))


def get_runtime() -> Runtime:
    """The default runtime, made on first use.

    Go: none
    """
    global _default
    # Benign race: the unlocked read sees None or a Runtime fully built before it was stored
    # under _default_lock (a module global's store and load are atomic, also without the
    # GIL); None only sends us to the locked path, which decides.
    rt = _default
    if rt is not None:
        return rt
    with _default_lock:
        if _default is None:
            _default = runtime_poll_server_init()
        return _default


def set_default_runtime(rt: Runtime | None) -> Runtime | None:
    """Replace the default runtime (tests run every backend this way); returns the old one.

    Go: none
    """
    global _default
    with _default_lock:
        old, _default = _default, rt
    return old
