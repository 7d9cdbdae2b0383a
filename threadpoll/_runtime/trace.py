"""Event hooks for teaching and diagnostics: the runtime's transitions as records.

Go has ``runtime/trace`` (and ``GODEBUG`` knobs) to watch goroutines park and get readied.
threadpoll's equivalent is deliberately tiny: every transition site in the runtime reads

    if trace.enabled:
        trace.emit("park", pd.fd, "r", PD_WAIT, PD_PARKED)

so when tracing is off the cost is one module attribute test per transition (the benchmark
reports it). When on, records go to an in-memory list guarded by a lock, in the order the
events happened (each record is appended while the emitter still holds the lock that made
the transition, so the order is the true order for any one pollDesc).

Differences from Go:
- DIVERGENCE(go): Go's execution tracer is a binary, per-P buffered event stream for every
  goroutine transition; this is a list of named records for the netpoll transitions only,
  meant to be read by people (``python -m threadpoll trace``) and asserted by tests.

Go: none (runtime/trace.go plays this role in Go, with a very different design)
"""

from __future__ import annotations

import threading
import time
from typing import Callable, NamedTuple

__all__ = ["KINDS", "TraceEvent", "enabled", "emit", "start", "stop", "events", "subscribe"]


# Every kind of record the runtime and internal/poll emit, with what it means. Both modules'
# docstrings list these (tests/test_docstrings.py checks that every emitted kind is here).
KINDS = {
    "state": "a pollDesc mode's state changed (old -> new; the rows of netpoll.py's table)",
    "park": "a thread went to sleep on a pollDesc mode (gopark)",
    "unpark": "that thread woke up",
    "netpoll": "the poller's netpoll returned (info: how many events)",
    "netpoll_break": "the poller was woken (netpollBreak)",
    "netpollready": "the poller readied a pollDesc for a mode",
    "open": "a descriptor was registered with the poller (poll_runtime_pollOpen)",
    "close": "a descriptor was unregistered (poll_runtime_pollClose)",
    "evict": "close began: waiters are woken with the closing error (pollUnblock)",
    "deadline": "a deadline was set (info: the absolute deadline)",
    "expire": "a deadline passed and was marked expired (netpolldeadlineimpl)",
    "destroy": "the last reference left after close: close(2) ran (FD.destroy)",
    "csema_wait": "close waits for operations still in flight",
    "csema_release": "they have left: close returns",
    "poller_died": "the poller thread died (info: the exception); a successor starts",
}


class TraceEvent(NamedTuple):
    """One recorded transition.

    ``kind`` is one of (see ``KINDS`` for what each means): state, park, unpark, netpoll,
    netpoll_break, netpollready, open, close, evict, deadline, expire, destroy, csema_wait,
    csema_release, poller_died. ``old``/``new`` are pollDesc state names (``pdNil``,
    ``pdReady``, ``pdWait``, ``parked``) where the event is a state change, else ``""``.
    """

    t: float  # time.monotonic()
    thread: str  # thread name
    ident: int  # thread ident
    kind: str
    fd: int  # -1 when not about one descriptor
    mode: str  # "r", "w", "rw" or ""
    old: str
    new: str
    info: str


# enabled is read without a lock on every transition: a stale read only means one record
# more or less around start()/stop(), never a wrong record.
enabled = False

_lock = threading.Lock()
_events: list[TraceEvent] = []  # guarded by _lock
_subscribers: list[Callable[[TraceEvent], None]] = []  # guarded by _lock


def emit(
    kind: str, fd: int = -1, mode: str = "", old: str = "", new: str = "", info: str = ""
) -> None:
    """Record one transition. Callers test ``trace.enabled`` first.

    Go: none
    """
    th = threading.current_thread()
    ev = TraceEvent(time.monotonic(), th.name, th.ident or 0, kind, fd, mode, old, new, info)
    with _lock:
        _events.append(ev)
        subs = list(_subscribers)
    for fn in subs:
        fn(ev)


def start() -> None:
    """Clear the record and start tracing.

    Go: none
    """
    global enabled
    with _lock:
        _events.clear()
    enabled = True


def stop() -> list[TraceEvent]:
    """Stop tracing and return what was recorded.

    Go: none
    """
    global enabled
    enabled = False
    with _lock:
        out = list(_events)
        _events.clear()
    return out


def events() -> list[TraceEvent]:
    """A copy of the records so far, without stopping.

    Go: none
    """
    with _lock:
        return list(_events)


def subscribe(fn: Callable[[TraceEvent], None] | None) -> None:
    """Call ``fn`` for every event as it is emitted (None removes all subscribers).

    ``fn`` runs in the emitting thread, possibly while a pollDesc lock is held: it must not
    call into threadpoll.

    Go: none
    """
    with _lock:
        if fn is None:
            _subscribers.clear()
        else:
            _subscribers.append(fn)
