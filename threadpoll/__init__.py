"""threadpoll: Go's blocking I/O semantics for Python threads.

Close wakes everyone, close is safe, deadlines instead of timeouts, whole writes, one
poller. See README.md for the tour and DESIGN notes.
"""

from __future__ import annotations

import sys

if sys.platform == "win32":  # pragma: no cover
    raise ImportError(
        "threadpoll needs epoll, kqueue or poll(2) and POSIX file descriptors; "
        "Windows has none of them"
    )

from threadpoll import trace
from threadpoll._diag import dump, dump_on_signal, stats
from threadpoll.errors import (  # noqa: E402
    ClosingError,
    DeadlineExceededError,
    FileClosingError,
    NetClosingError,
    NoDeadlineError,
    NotPollableError,
    PollerError,
)
from threadpoll.file import File, pipe  # noqa: E402
from threadpoll.net import Conn, Listener, PacketConn, dial, listen, listen_packet  # noqa: E402

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
]
