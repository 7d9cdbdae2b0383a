"""Recording the runtime's transitions: park, netpoll, netpollready, unblock, evict, ...

Go has ``runtime/trace`` to watch goroutines block in the netpoller and get readied;
threadpoll records the same story for OS threads::

    import threadpoll.trace

    with threadpoll.trace.recording() as events:
        conn.read(100)                          # parks until the peer writes
    print(threadpoll.trace.format_events(events))

    +0.000000 s  MainThread          state         fd=5  r  pdNil -> pdWait
    +0.000012 s  MainThread          state         fd=5  r  pdWait -> parked
    +0.000015 s  MainThread          park          fd=5  r
    +0.000231 s  threadpoll-poller   netpoll                    1 events
    +0.000240 s  threadpoll-poller   netpollready  fd=5  r
    ...

Each record is a ``TraceEvent``: time (``time.monotonic()``), thread name and ident, the kind
of transition, fd, mode (``r``, ``w``, ``rw`` or ``""``), the old and new pollDesc state names
(``pdNil``, ``pdReady``, ``pdWait``, ``parked``) where the event is a state change, and free
text. Kinds: park, unpark, state, netpoll, netpoll_break, netpollready, evict, expire,
deadline, open, close, destroy, csema_wait, csema_release, poller_died.

Recording is process-wide (every runtime, every thread) and not nestable: ``start()`` while a
recording runs raises ``RuntimeError``, as Go's ``trace.Start`` does. When no recording runs,
each transition costs one module-attribute test (``if trace.enabled:``) and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from threadpoll._runtime import trace as _rt
from threadpoll._runtime.trace import TraceEvent

__all__ = ["TraceEvent", "start", "stop", "recording", "events", "is_recording", "format_events"]


def is_recording() -> bool:
    """Whether a recording is running."""
    return _rt.enabled


def start() -> None:
    """Start recording, from an empty record. Raises RuntimeError if one already runs."""
    if _rt.enabled:
        raise RuntimeError("threadpoll.trace: tracing is already enabled")
    _rt.start()


def stop() -> list[TraceEvent]:
    """Stop recording and return the events, in the order they happened. Raises
    RuntimeError if no recording runs."""
    if not _rt.enabled:
        raise RuntimeError("threadpoll.trace: tracing is not enabled")
    return _rt.stop()


def events() -> list[TraceEvent]:
    """The events recorded so far, without stopping."""
    return _rt.events()


@contextmanager
def recording() -> Iterator[list[TraceEvent]]:
    """Record for the duration of a ``with`` block. The list it gives is empty inside the
    block and holds every event once the block ends (also when it raises)."""
    out: list[TraceEvent] = []
    start()
    try:
        yield out
    finally:
        out.extend(stop())


def _fd_text(fd: int) -> str:
    return f"fd={fd}" if fd >= 0 else ""


def format_events(evs: Iterable[TraceEvent], *, columns: bool = False) -> str:
    """Render events as text, times relative to the first event.

    By default one line per event: time, thread, kind, fd, mode, ``old -> new``, info. With
    ``columns=True``, a timeline with one column per thread (in order of first appearance),
    each event written in its thread's column.
    """
    evs = list(evs)
    if not evs:
        return ""
    t0 = evs[0].t
    if not columns:
        width = max(len(e.thread) for e in evs)
        lines = []
        for e in evs:
            change = f"{e.old} -> {e.new}" if (e.old or e.new) else ""
            fields = [_fd_text(e.fd).ljust(6), e.mode.ljust(2), change, e.info]
            tail = "  ".join(f for f in fields if f.strip()).rstrip()
            lines.append(f"+{e.t - t0:.6f} s  {e.thread.ljust(width)}  {e.kind.ljust(13)} {tail}")
        return "\n".join(lines) + "\n"
    threads: list[str] = []
    for e in evs:
        if e.thread not in threads:
            threads.append(e.thread)
    col = 30
    header = " " * 14 + "".join(t[: col - 2].ljust(col) for t in threads)
    lines = [header.rstrip()]
    for e in evs:
        text = " ".join(
            p
            for p in (
                e.kind,
                _fd_text(e.fd),
                e.mode,
                f"{e.old}->{e.new}" if (e.old or e.new) else "",
            )
            if p
        )
        i = threads.index(e.thread)
        cell = text[: col - 2].ljust(col)
        lines.append((f"+{e.t - t0:.6f} s  " + " " * (col * i) + cell).rstrip())
    return "\n".join(lines) + "\n"
