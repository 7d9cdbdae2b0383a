"""threadpoll: Go's blocking I/O semantics for Python threads.

Close wakes everyone, close is safe, deadlines instead of timeouts, whole writes, one
poller. The tour is in README.md and on the documentation site (``docs/``).

The public names below are loaded on first use (PEP 562): ``import threadpoll`` alone, which
the pytest plugin's entry point does in every pytest run where threadpoll is installed, costs
a few hundred microseconds and starts nothing. ``from threadpoll import dial`` loads what it
needs; a name's module is imported once.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

if sys.platform == "win32":  # pragma: no cover
    raise ImportError(
        "threadpoll needs epoll, kqueue or poll(2) and POSIX file descriptors; "
        "Windows has none of them"
    )

if TYPE_CHECKING:
    from threadpoll import trace
    from threadpoll._diag import dump, dump_on_signal, stats
    from threadpoll.errors import (
        ClosingError,
        DeadlineExceededError,
        FileClosingError,
        NetClosingError,
        NoDeadlineError,
        NotPollableError,
        PollerError,
        WallClockDeadlineWarning,
    )
    from threadpoll.file import File, pipe
    from threadpoll.net import Conn, Listener, PacketConn, dial, listen, listen_packet

__version__ = "0.1.0"

__all__ = [
    "dump",
    "dump_on_signal",
    "stats",
    "trace",
    "dial",
    "listen",
    "listen_packet",
    "Conn",
    "Listener",
    "PacketConn",
    "pipe",
    "File",
    "ClosingError",
    "DeadlineExceededError",
    "FileClosingError",
    "NetClosingError",
    "NoDeadlineError",
    "NotPollableError",
    "PollerError",
    "WallClockDeadlineWarning",
]

# Where each public name lives.
_HOME = {
    "dump": "threadpoll._diag",
    "dump_on_signal": "threadpoll._diag",
    "stats": "threadpoll._diag",
    "dial": "threadpoll.net",
    "listen": "threadpoll.net",
    "listen_packet": "threadpoll.net",
    "Conn": "threadpoll.net",
    "Listener": "threadpoll.net",
    "PacketConn": "threadpoll.net",
    "pipe": "threadpoll.file",
    "File": "threadpoll.file",
    "ClosingError": "threadpoll.errors",
    "DeadlineExceededError": "threadpoll.errors",
    "FileClosingError": "threadpoll.errors",
    "NetClosingError": "threadpoll.errors",
    "NoDeadlineError": "threadpoll.errors",
    "NotPollableError": "threadpoll.errors",
    "PollerError": "threadpoll.errors",
    "WallClockDeadlineWarning": "threadpoll.errors",
}
# Submodules that ``import threadpoll`` used to load eagerly; ``threadpoll.net.dial`` and the
# like keep working after a bare ``import threadpoll``.
_SUBMODULES = frozenset({"trace", "net", "file", "socket", "errors", "lowlevel", "testing"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value: Any = importlib.import_module(f"threadpoll.{name}")
    elif name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
    else:
        raise AttributeError(f"module 'threadpoll' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
