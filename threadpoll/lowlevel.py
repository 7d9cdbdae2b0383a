"""The study surface: the runtime and internal/poll layers, for people reading threadpoll
beside Go's runtime and for tests. Names here may change between releases.

    from threadpoll.lowlevel import FD, PollDesc, runtime_poll_open, backend, impl
"""

from __future__ import annotations

from threadpoll._poll.fd_mutex import FDMutex
from threadpoll._poll.fd_poll_runtime import PollHandle, convert_err
from threadpoll._poll.fd_unix import FD, MAX_RW
from threadpoll._runtime.netpoll import (
    PD_NIL,
    PD_PARKED,
    PD_READY,
    PD_WAIT,
    POLL_ERR_CLOSING,
    POLL_ERR_NOT_POLLABLE,
    POLL_ERR_POLLER,
    POLL_ERR_TIMEOUT,
    POLL_NO_ERROR,
    STATE_NAMES,
    Hooks,
    InternalError,
    PollDesc,
    netpollblock,
    netpollcheckerr,
    netpollready,
    netpollunblock,
    runtime_poll_close,
    runtime_poll_open,
    runtime_poll_reset,
    runtime_poll_set_deadline,
    runtime_poll_unblock,
    runtime_poll_wait,
)
from threadpoll._runtime.proc import (
    Runtime,
    backend_names,
    get_runtime,
    runtime_poll_server_init,
    set_default_runtime,
)

__all__ = [
    "FD",
    "FDMutex",
    "MAX_RW",
    "PollHandle",
    "convert_err",
    "PD_NIL",
    "PD_PARKED",
    "PD_READY",
    "PD_WAIT",
    "POLL_ERR_CLOSING",
    "POLL_ERR_NOT_POLLABLE",
    "POLL_ERR_POLLER",
    "POLL_ERR_TIMEOUT",
    "POLL_NO_ERROR",
    "STATE_NAMES",
    "Hooks",
    "InternalError",
    "PollDesc",
    "Runtime",
    "backend",
    "backend_names",
    "impl",
    "get_runtime",
    "netpollblock",
    "netpollcheckerr",
    "netpollready",
    "netpollunblock",
    "runtime_poll_close",
    "runtime_poll_open",
    "runtime_poll_reset",
    "runtime_poll_server_init",
    "runtime_poll_set_deadline",
    "runtime_poll_unblock",
    "runtime_poll_wait",
    "set_default_runtime",
]


def backend() -> str:
    """The name of the default runtime's backend: "epoll", "kqueue" or "poll"."""
    return get_runtime().name


def impl() -> str:
    """Which implementation the default runtime is: "c" (the C core) or "python"."""
    return str(get_runtime().impl)
