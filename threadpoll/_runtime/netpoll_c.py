"""The C core's runtime, as the rest of threadpoll sees it.

``threadpoll._cpoll`` (sources in ``threadpoll/_c/``) implements Go's runtime/netpoll.go in
C: the pollDesc with its per-mode states, deadlines and sequence numbers, netpoll without the
GIL (epoll on Linux, kqueue on the BSDs and macOS), run by the thread about to park when at
most one other waits and by a poller pthread while more do, netpollready,
netpollblock and netpollunblock, and parking on a per-pollDesc, per-mode semaphore with the
GIL released. ``CRuntime`` is that runtime with the Python-side bookkeeping the Python
``Runtime`` has (the open pollDesc table for dump() and stats(), the locks diagnostics
take), so internal/poll, the fronts and the diagnostics use either runtime unchanged: the
runtime_poll_* entry points in netpoll.py hand a C pollDesc to its own methods.

Which implementation runs is chosen once (``chosen_impl``): ``THREADPOLL_IMPL=c|python``,
else the default below.

Differences from the Python runtime:
- The hook points (``Hooks``) are never called and tracing records nothing: tests that drive
  them run on the Python runtime (DESIGN: "The C core and the tests").
- The C poller cannot die and restart: a failing epoll_wait/kevent is a bug, and aborts.
- ``pd.lock`` is the runtime's ``pd_lock``, a Python lock that only serialises diagnostic
  readers; every field of a C pollDesc is read under its C lock one at a time.

Go: runtime/netpoll.go
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import threading
from typing import Any

from typing_extensions import final

from threadpoll._runtime import netpoll, proc

__all__ = ["CRuntime", "POLLDESC_TYPES", "available", "chosen_impl", "DEFAULT_IMPL"]


# A free-threaded build (3.13t): the C core runs there too. It declares that it does not need
# the GIL (Py_MOD_GIL_NOT_USED; threadpoll/_c/netpoll.h gives the locking rules that make it
# true), so importing it leaves the GIL disabled.
FREE_THREADED_BUILD = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

_cpoll: Any
_import_error: ImportError | None
try:
    # By name: the package's lazy __getattr__ (PEP 562) would otherwise stand in for it in
    # the type checker's eyes.
    _cpoll = importlib.import_module("threadpoll._cpoll")
except ImportError as e:  # not built: no compiler at install time, or an unknown platform
    _cpoll = None
    _import_error = e
else:
    _import_error = None
    _cpoll._init(netpoll.InternalError)

# The C core where it is built and its backend has been verified: epoll (Linux), where the
# whole behavioural suite runs on it (tests/conftest.py). Its kqueue backend has not run on
# macOS or a BSD yet, so there the Python runtime stays the default until the GitHub
# workflow's macOS jobs pass with THREADPOLL_IMPL=c.
DEFAULT_IMPL = "c" if _cpoll is not None and _cpoll.backend == "epoll" else "python"

# Whether chosen_impl has printed its notice. Benign race: tested and set without a lock.
# get_runtime reaches it under proc._default_lock; two direct callers of
# runtime_poll_server_init at once would only print the notice twice.
_said = False

# The extension module itself (None when it is not built), for internal/poll's C half.
cpoll: Any = _cpoll

# Every pollDesc type there is: the Python runtime's, and the C core's where it is built.
POLLDESC_TYPES: tuple[type, ...] = (netpoll.PollDesc,) + (
    (_cpoll.PollDesc,) if _cpoll is not None else ()
)


def available() -> bool:
    """Whether the C core was built and imports.

    Go: none
    """
    return _cpoll is not None


def chosen_impl() -> str:
    """The implementation to run: ``$THREADPOLL_IMPL`` ("c" or "python"), else the default
    (the C core where it is built, when DEFAULT_IMPL says so). Asking for "c" where it is not
    built is an ImportError that says why.

    Go: none
    """
    global _said
    want = os.environ.get("THREADPOLL_IMPL", "")
    if want == "python":
        return "python"
    if want == "c":
        if _cpoll is None:
            raise ImportError(
                f"threadpoll: THREADPOLL_IMPL=c but the C core is not built ({_import_error}); "
                "reinstall with a C compiler and the Python headers, or unset THREADPOLL_IMPL"
            )
        return "c"
    if want:
        raise ValueError(f"threadpoll: THREADPOLL_IMPL must be 'c' or 'python', not {want!r}")
    if DEFAULT_IMPL == "c":
        return "c"
    if _cpoll is None:
        if not _said:
            _said = True
            print("threadpoll: the C core is not built; using the Python runtime", file=sys.stderr)
    return "python"


def backend_name() -> str:
    """The C core's backend ("epoll" or "kqueue"), or "" when it is not built.

    Go: none (Go picks its backend at build time, by GOOS)
    """
    return str(_cpoll.backend) if _cpoll is not None else ""


class _BackendInfo:
    """What code written for the Python runtime reads of ``rt.backend``: the name, the
    arming facts, and the two calls diagnostics make.

    Go: none
    """

    __slots__ = ("name", "arm_modes", "_rt")

    def __init__(self, name: str, rt: Any) -> None:
        """Go: none"""
        self.name = name
        self.arm_modes = ""
        self._rt = rt

    def netpoll_break(self) -> None:
        """Go: runtime/netpoll.go netpollBreak"""
        self._rt.netpoll_break()

    def netpoll_is_poll_descriptor(self, fd: int) -> bool:
        """Go: runtime/netpoll.go netpollIsPollDescriptor"""
        return bool(self._rt.netpoll_is_poll_descriptor(fd))


_Base: Any = _cpoll.Runtime if _cpoll is not None else object


@final
class CRuntime(_Base):  # type: ignore[misc]
    """The C core's runtime: its pollDescs, netpoll run by a parking thread that leads or by
    the poller pthread (netpoll.c, "the poll leader"), and the bookkeeping the
    diagnostics and tests read (open_pds, the counters, lock, stat_lock, hooks).

    Go: none (the package-level state of runtime/netpoll.go)
    """

    impl = "c"

    def __init__(self, name: str | None = None, *, lazy_write: bool | None = None) -> None:
        """``lazy_write``: arm EPOLLOUT when a writer first waits, as EpollBackend's option
        (default: $THREADPOLL_EPOLL_LAZY_WRITE=1).

        Go: runtime/netpoll.go netpollGenericInit
        """
        if _cpoll is None:
            raise ImportError("threadpoll: the C core is not built")
        if name is not None and name != _cpoll.backend:
            raise ValueError(
                f"threadpoll: the C core has no {name!r} backend (it has {_cpoll.backend!r})"
            )
        if lazy_write is None:
            lazy_write = os.environ.get("THREADPOLL_EPOLL_LAZY_WRITE") == "1"
        super().__init__(lazy_write=lazy_write)
        self.lazy_write = lazy_write
        self.name: str = _cpoll.backend
        self.backend = _BackendInfo(self.name, self)
        self.hooks = netpoll.Hooks()  # never called by the C core
        self.lock = threading.Lock()  # what the diagnostics hold to read open_pds
        self.stat_lock = threading.Lock()
        self.pd_lock = threading.RLock()  # what a C pollDesc's ``lock`` attribute gives
        self.stopping = False  # guarded by lock, as Runtime's (the C core has its own)
        self.poller_error: BaseException | None = None
        self.poller_deaths = 0
        proc._runtimes_add(self)

    @property
    def poller(self) -> object | None:
        """Something true while the poller pthread runs (netpoll.py tests ``rt.poller``).

        Go: none
        """
        return True if self.poller_running else None

    @property
    def open_pds(self) -> dict[int, Any]:
        """id -> C pollDesc, the open ones: read from the C runtime's table each time (a
        snapshot), which is their only registry (no entry per descriptor here).

        Go: none
        """
        return {pd.id: pd for pd in self.open_pd_list()}

    def runtime_poll_open(self, fd: int) -> tuple[Any, int]:
        """Go: runtime/netpoll.go poll_runtime_pollOpen"""
        return self.poll_open(fd)  # type: ignore[no-any-return]

    def runtime_poll_close(self, pd: Any) -> None:
        """Go: runtime/netpoll.go poll_runtime_pollClose"""
        self.poll_close(pd)

    def shutdown(self) -> None:
        """Stop the poller pthread and release the backend (tests; process exit).

        Go: none
        """
        with self.lock:
            self.stopping = True
        super().shutdown()
        proc._runtimes_discard(self)

    def after_fork_in_child(self) -> None:
        """Fresh locks, semaphores and backend; the poller starts at the first wait.

        Go: none
        """
        self.lock = threading.Lock()
        self.stat_lock = threading.Lock()
        self.pd_lock = threading.RLock()
        super().after_fork_in_child()
