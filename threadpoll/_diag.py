"""Seeing hung I/O: ``dump()``, ``stats()`` and ``dump_on_signal()``.

Go answers "where is my program stuck?" with a goroutine dump (SIGQUIT, or a test timeout)::

    goroutine 7 [IO wait, 2 minutes]:
    internal/poll.runtime_pollWait(...)

threadpoll keeps, in each pollDesc, which thread is parked in which mode and since when
(``rparked_by``/``rparked_at``, written by netpollblock). ``dump()`` walks every live runtime's
open pollDescs and prints one entry per parked thread::

    thread 140213 "reader-1" (tid 50213) [IO wait, 2 minutes]:
        fd=7 tcp read, parked 125.3 s, deadline in 4.1 s
        pollDesc rg=parked wg=pdNil closing=no event_err=no rseq=3 wseq=1 (epoll)
        fdMutex refs=1 rlock rwait=2
        File "server.py", line 42, in handle

The ``fdMutex`` line (when the FD is known) shows threads queued behind the read or write
lock: they are stuck too, but not parked in the poller, so they have no entry of their own.

Reading state from a signal handler. ``dump()`` may run in a signal handler (``dump_on_signal``,
pytest-timeout's SIGALRM), that is in the main thread between two bytecodes, possibly while
that very thread holds a pollDesc or runtime lock. So it never blocks on a lock: it tries each
for a moment and otherwise reads the fields without it (a diagnostic may show a state that is
a few instructions old; it never deadlocks).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Callable, NamedTuple, TextIO, TypedDict, Union

from threadpoll._poll import fd_mutex
from threadpoll._runtime import proc
from threadpoll._runtime.netpoll import NO_DEADLINE, PD_PARKED, STATE_NAMES, PollDesc
from threadpoll._runtime.proc import Runtime

__all__ = ["Parked", "Stats", "parked", "dump", "stats", "dump_on_signal"]

# How long dump() waits for a lock before reading without it (see the module docstring).
_LOCK_PATIENCE = 0.05

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class Parked(NamedTuple):
    """One thread parked in threadpoll, as ``dump()`` shows it."""

    thread: threading.Thread
    fd: int  # the OS descriptor
    kind: str  # what the descriptor is: "tcp", "pipe", ... ("" if unknown)
    mode: str  # "read" or "write"
    parked_for: float  # seconds since it parked
    deadline_in: float | None  # seconds until the deadline (<= 0: expired); None: none
    state: str  # the pollDesc state, e.g. "rg=parked wg=pdNil closing=no ..."
    backend: str  # the runtime's backend name
    pd: PollDesc


class Stats(TypedDict):
    """What ``stats()`` returns; the counters are summed over every live runtime."""

    backend: str  # the default runtime's backend
    runtimes: int
    open_descriptors: int
    parked_readers: int
    parked_writers: int
    poller_wakeups: int
    events: int
    breaks: int
    stale_events_dropped: int
    deadline_expiries: int
    closes_waited: int
    poller_deaths: int
    leader_polls: int


@contextmanager
def _maybe_locked(lock: Any) -> Iterator[None]:
    """Hold lock if it can be had within _LOCK_PATIENCE, else go on without it."""
    got = lock.acquire(True, _LOCK_PATIENCE)
    try:
        yield
    finally:
        if got:
            lock.release()


def _live_runtimes() -> list[Runtime]:
    """Every live runtime, the default one first."""
    with _maybe_locked(proc._runtimes_lock):
        # A copy of the WeakSet's own set of references, not list(WeakSet): its iteration
        # guard races with the removal callback, which runs unlocked in whatever thread
        # frees a runtime ("set changed size during iteration", without the GIL).
        refs: list[weakref.ref[Runtime]] = list(proc._runtimes.data)  # type: ignore[attr-defined]
    rts = [rt for rt in (r() for r in refs) if rt is not None]
    default = proc._default  # benign race: None or a whole Runtime (see proc.get_runtime)
    if default is not None and default in rts:
        rts.remove(default)
        rts.insert(0, default)
    return rts


def _open_pds(rt: Runtime) -> list[PollDesc]:
    with _maybe_locked(rt.lock):
        return list(rt.open_pds.values())


def _deadline_in(d: float, now: float) -> float | None:
    if d == NO_DEADLINE:
        return None
    return d - now  # EXPIRED is -inf: "expired"


def _pd_state(pd: PollDesc) -> str:
    return (
        f"rg={STATE_NAMES[pd.rg]} wg={STATE_NAMES[pd.wg]} "
        f"closing={'yes' if pd.closing else 'no'} "
        f"event_err={'yes' if pd.event_err else 'no'} rseq={pd.rseq} wseq={pd.wseq}"
    )


def parked() -> list[Parked]:
    """Every thread parked in threadpoll right now, longest-parked first."""
    now = time.monotonic()
    out: list[tuple[float, Parked]] = []
    for rt in _live_runtimes():
        for pd in _open_pds(rt):
            with _maybe_locked(pd.lock):
                for mode, state, by, at, d in (
                    ("read", pd.rg, pd.rparked_by, pd.rparked_at, pd.rd),
                    ("write", pd.wg, pd.wparked_by, pd.wparked_at, pd.wd),
                ):
                    if state != PD_PARKED or by is None:
                        continue
                    entry = Parked(
                        thread=by,
                        fd=pd.fd,
                        kind=pd.kind,
                        mode=mode,
                        parked_for=max(0.0, now - at),
                        deadline_in=_deadline_in(d, now),
                        state=_pd_state(pd),
                        backend=rt.name,
                        pd=pd,
                    )
                    out.append((at, entry))
    out.sort(key=lambda e: e[0])
    return [e for _, e in out]


def _wait_label(seconds: float) -> str:
    """Go's ``[IO wait, 2 minutes]``, with seconds below a minute."""
    if seconds >= 60:
        minutes = int(seconds // 60)
        return f"IO wait, {minutes} minute{'s' if minutes != 1 else ''}"
    return f"IO wait, {seconds:.1f} s"


def _deadline_text(deadline_in: float | None) -> str:
    if deadline_in is None:
        return "no deadline"
    if deadline_in <= 0:
        return "deadline expired"
    return f"deadline in {deadline_in:.3g} s"


def _fd_index() -> dict[int, Any]:
    """pollDesc id → FD, for the fdMutex line."""
    from threadpoll._poll import fd_unix

    out = {}
    for fd in fd_unix.live_fds():
        pd = fd.pd.runtime_ctx  # benign race: a pollDesc or None (a diagnostic snapshot)
        if pd is not None:
            out[pd.id] = fd
    return out


def _is_internal(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep)


def _stack_lines(frame: FrameType | None, limit: int = 5) -> list[str]:
    """The thread's frames that led into threadpoll (the caller's side of the call that
    parked), innermost last. Whatever runs above threadpoll's own frames (a signal handler
    that interrupted the park, this dump) is left out.
    """
    if frame is None:
        return []
    summary = traceback.extract_stack(frame)
    first = next((i for i, fs in enumerate(summary) if _is_internal(fs.filename)), len(summary))
    lines = []
    for fs in summary[max(0, first - limit) : first]:
        lines.append(f'File "{fs.filename}", line {fs.lineno}, in {fs.name}')
        if fs.line:
            lines.append(f"    {fs.line.strip()}")
    return lines


def dump(stacks: bool = True) -> str:
    """A report of every thread parked in threadpoll: one entry per parked thread with its
    name and id, ``fd=<n>``, the descriptor's kind, the mode (``read`` or ``write``), how long
    it has been parked, the time to its deadline and the pollDesc state, then (``stacks``) its
    innermost Python frames outside threadpoll. Like Go's ``goroutine 7 [IO wait, 2 minutes]``.

    Safe to call from a signal handler and from any thread; it never blocks on a lock.
    """
    entries = parked()
    rts = _live_runtimes()
    opened = [(rt.name, len(_open_pds(rt))) for rt in rts]
    total = sum(n for _, n in opened)
    where = ", ".join(f"{name}: {n}" for name, n in opened) or "no runtime"
    noun = "thread" if len(entries) == 1 else "threads"
    lines = [f"threadpoll: {len(entries)} {noun} parked; {total} descriptors open ({where})"]
    fds = _fd_index() if entries else {}
    frames = sys._current_frames() if (entries and stacks) else {}
    for e in entries:
        t = e.thread
        native = getattr(t, "native_id", None)
        tid = f" (tid {native})" if native is not None else ""
        lines.append("")
        lines.append(f'thread {t.ident} "{t.name}"{tid} [{_wait_label(e.parked_for)}]:')
        kind = f" {e.kind}" if e.kind else ""
        lines.append(
            f"    fd={e.fd}{kind} {e.mode}, parked {e.parked_for:.3f} s, "
            f"{_deadline_text(e.deadline_in)}"
        )
        lines.append(f"    pollDesc {e.state} ({e.backend})")
        fd = fds.get(e.pd.id)
        if fd is not None:
            lines.append(f"    fdMutex {fd_mutex.state_text(fd_mutex.load_state(fd.fdmu))}")
        if t.ident is not None:
            lines.extend("    " + s for s in _stack_lines(frames.get(t.ident)))
    return "\n".join(lines) + "\n"


def stats() -> Stats:
    """Counters summed over every live runtime, and what is open and parked right now.

    ``closes_waited`` counts closes that had to wait on the close semaphore for an in-flight
    operation to leave (internal/poll counts them; 0 where it does not yet).
    ``poller_wakeups`` counts every return from netpoll; on the C core a parked thread may
    run netpoll itself when at most one other waits (the poll leader), and ``leader_polls``
    counts those returns (always 0 on the Python runtime, whose poller thread alone polls).
    """
    rts = _live_runtimes()
    default = proc._default  # benign race: None or a whole Runtime (see proc.get_runtime)
    backend = default.name if default is not None else proc.get_runtime().name
    s: Stats = {
        "backend": backend,
        "runtimes": len(rts),
        "open_descriptors": 0,
        "parked_readers": 0,
        "parked_writers": 0,
        "poller_wakeups": 0,
        "events": 0,
        "breaks": 0,
        "stale_events_dropped": 0,
        "deadline_expiries": 0,
        "closes_waited": 0,
        "poller_deaths": 0,
        "leader_polls": 0,
    }
    # Benign race: a snapshot. rg/wg (pd.lock), poller_deaths (rt.lock) and the poller's own
    # counters are read without their locks, as proc.py's counters say: each read sees an
    # old or a new value, and stats() promises no moment at which they all held.
    for rt in rts:
        pds = _open_pds(rt)
        s["open_descriptors"] += len(pds)
        for pd in pds:
            if pd.rg == PD_PARKED:
                s["parked_readers"] += 1
            if pd.wg == PD_PARKED:
                s["parked_writers"] += 1
        s["poller_wakeups"] += rt.poller_wakeups
        s["events"] += rt.events
        s["stale_events_dropped"] += rt.stale_events_dropped
        with _maybe_locked(rt.stat_lock):
            s["breaks"] += rt.breaks
            s["deadline_expiries"] += rt.deadline_expiries
            s["closes_waited"] += rt.closes_waited
        s["poller_deaths"] += rt.poller_deaths
        # The C core only: netpoll returns in a parked thread that led (netpoll.c).
        s["leader_polls"] += getattr(rt, "leader_polls", 0)
    return s


_Handler = Union[Callable[[int, Union[FrameType, None]], Any], int, signal.Handlers, None]


def _write(text: str, file: TextIO | None) -> None:
    """Write text from a signal handler: through the stream if it is free, else fd 2."""
    f = sys.stderr if file is None else file
    try:
        if f is None:
            raise OSError("no stderr")
        f.write(text)
        f.flush()
    except (RuntimeError, OSError, ValueError, AttributeError):
        # RuntimeError: "reentrant call" when the signal interrupted a write to the stream.
        try:
            os.write(2, text.encode("utf-8", "replace"))
        except OSError:
            pass


def dump_on_signal(signum: int, *, file: TextIO | None = None) -> _Handler:
    """Print ``dump()`` to stderr (or ``file``) whenever the process receives ``signum``, like
    Go's SIGQUIT dump or ``faulthandler.register``; for servers in production::

        threadpoll.dump_on_signal(signal.SIGUSR1)   # then: kill -USR1 <pid>

    The previous handler is chained: if it was a Python function (``signal.signal`` returned
    a callable, e.g. SIGINT's ``default_int_handler``) it is called after the dump, with the
    same arguments. ``SIG_DFL`` and ``SIG_IGN`` are not chained: for a signal whose default
    action ends the process (SIGQUIT, SIGUSR1, ...) the signal then only dumps, unlike Go's
    SIGQUIT, which dumps and exits. Returns the previous handler, as ``signal.signal`` does.
    Must be called from the main thread (a rule of ``signal.signal``); the dump itself runs in
    the main thread when the signal arrives.
    """
    previous: _Handler = signal.getsignal(signum)

    def handler(sig: int, frame: FrameType | None) -> Any:
        _write(dump(), file)
        if callable(previous):
            return previous(sig, frame)
        return None

    signal.signal(signum, handler)
    return previous
