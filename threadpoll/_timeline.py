"""Timelines: small scenarios that drive the runtime, recorded by the trace, drawn per thread.

``python -m threadpoll trace SCENARIO`` runs one scenario and prints what the runtime did,
one column per thread (reader, writer, closer, setter, poller, ...), one row per event, the
relative time in milliseconds in the first column. Each scenario is a few threads doing
blocking I/O on a TCP connection over 127.0.0.1, wrapped in ``threadpoll.lowlevel.FD``:

    data           data arrives for a parked reader
    close          close() while a reader is parked
    deadline       a read deadline fires while the reader is parked
    deadline-past  a deadline moved into the past wakes the reader; reads fail
    backpressure   a writer fills the buffer and parks; the reader drains it
    two-writers    two writers serialised by the descriptor's write lock
    close-reuse    close() returns after close(2); reusing the number is safe
    one-poller     several parked readers, all readied by the one poller thread

The state changes are those of the rg/wg transition table in the docstring of
``threadpoll/_runtime/netpoll.py`` (Go's netpollblock and netpollunblock), with Go's names:
``pdNil``, ``pdReady``, ``pdWait`` and ``parked`` (Go's *g). ``run(name)`` returns the
recorded events for tests and tools; ``render`` draws them; ``to_json`` serialises them;
``threadpoll._svg.render_svg`` draws them as a picture.

Scenario threads never sleep to synchronise: the driver observes the pollDesc state (a
thread is parked when its mode's state is ``parked``) before the next actor moves.

Go: none (a teaching tool; Go's closest is ``go tool trace`` over runtime/trace.go)
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from threadpoll._poll.fd_mutex import MUTEX_WMASK, load_state
from threadpoll._poll.fd_unix import FD
from threadpoll._runtime import trace
from threadpoll._runtime.netpoll import PD_PARKED, PD_READY, STATE_NAMES, PollDesc
from threadpoll._runtime.proc import Runtime, get_runtime
from threadpoll._runtime.trace import TraceEvent
from threadpoll.errors import DeadlineExceededError, NetClosingError

__all__ = [
    "SCENARIOS",
    "Scenario",
    "Result",
    "ScenarioError",
    "run",
    "render",
    "to_json",
    "tcp_pair",
    "POLLER",
]

POLLER = "poller"  # the column label of the runtime's poller thread
WIDTH = 80  # the terminal width every rendering fits in
_WAIT = 10.0  # seconds any one step may take before the scenario is declared stuck


class ScenarioError(RuntimeError):
    """A scenario could not run to its end (a thread never parked, never finished, ...)."""


@dataclass
class Result:
    """What one scenario run recorded.

    ``events`` holds the runtime's trace records from the scenario's threads and its
    runtime's poller, merged with the scenario's own ``note`` records (what each thread
    called and what it got back), in time order. ``fds`` names the descriptors
    (role → fd number); ``outcome`` holds what the threads observed (data read, errors
    raised, timings), for checks.
    """

    name: str
    backend: str
    t0: float
    events: list[TraceEvent]
    fds: dict[str, int]
    columns: list[str]
    poller_ident: int  # the poller thread when the scenario began
    poller_name: str
    focus: list[int] = field(default_factory=list)
    outcome: dict[str, object] = field(default_factory=dict)

    def label(self, ev: TraceEvent) -> str:
        """The column an event belongs to: its thread's name, or ``poller``.

        By name, not ident: the OS reuses a finished thread's ident, and a poller that
        died is replaced by a new thread of the same name (its ``poller_died`` event shows).
        """
        return POLLER if ev.thread == self.poller_name else ev.thread

    def states(self, fd: int, mode: str) -> list[tuple[str, str, str]]:
        """The state changes of one pollDesc mode as (column, old, new), in order."""
        return [
            (self.label(ev), ev.old, ev.new)
            for ev in self.events
            if ev.kind == "state" and ev.fd == fd and ev.mode == mode
        ]


@dataclass(frozen=True)
class Scenario:
    """One runnable story: its name, a one-line title, and the function that plays it."""

    name: str
    title: str
    play: Callable[[_Stage], None]


# --- plumbing ------------------------------------------------------------------------------


def tcp_pair(rt: Runtime | None = None, bufsize: int = 0) -> tuple[FD, FD]:
    """A connected TCP pair over 127.0.0.1 as two pollable FDs (client side, server side).

    ``bufsize`` > 0 shrinks both sockets' send and receive buffers (the kernel may round it
    up), so a writer meets back-pressure after a few tens of kilobytes.
    """
    ln = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    socks: list[socket.socket] = []
    try:
        if bufsize:
            # Set on the listener so the accepted socket starts with it (before the
            # handshake, which fixes the TCP window scale).
            ln.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
            ln.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
        ln.bind(("127.0.0.1", 0))
        ln.listen(1)
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        socks.append(c)
        if bufsize:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
        c.connect(ln.getsockname())
        s, _ = ln.accept()
        socks.append(s)
        for sk in socks:
            sk.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        for sk in socks:
            sk.close()
        raise
    finally:
        ln.close()
    fds: list[FD] = []
    try:
        for sk in socks:
            fds.append(FD(sk.fileno(), net="tcp", runtime=rt))
            sk.detach()  # the FD owns the descriptor now
    except BaseException:
        for f in fds:
            f.close()
        for sk in socks:
            sk.close()
        raise
    return fds[0], fds[1]


def _pd(fd: FD) -> PollDesc:
    pd = fd.pd.runtime_ctx
    if pd is None:
        raise ScenarioError(f"fd {fd.sysfd} is not registered with the poller")
    return pd


def _state(fd: FD, mode: str) -> int:
    pd = _pd(fd)
    with pd.lock:
        return pd.rg if mode == "r" else pd.wg


def _wait_for(pred: Callable[[], bool], what: str) -> None:
    """Observe state another thread changes until pred holds (not a sleep-as-sync: the
    loop ends the moment the state is reached); ScenarioError after _WAIT seconds."""
    deadline = time.monotonic() + _WAIT
    while not pred():
        if time.monotonic() > deadline:
            raise ScenarioError(f"timed out waiting for {what}")
        time.sleep(0.0002)


def _wait_state(fd: FD, mode: str, state: int) -> None:
    _wait_for(
        lambda: _state(fd, mode) == state,
        f"fd {fd.sysfd} mode {mode} to reach {STATE_NAMES[state]}",
    )


class _Actor:
    """A named thread playing one role; keeps what its function returned or raised."""

    def __init__(self, stage: _Stage, name: str, fn: Callable[[], object]) -> None:
        self.name = name
        self.result: object = None
        self.exc: BaseException | None = None

        def target() -> None:
            try:
                self.result = fn()
            except BaseException as e:  # noqa: BLE001 - reported by join()
                self.exc = e

        self.thread = threading.Thread(target=target, name=name, daemon=True)
        stage.actors.append(self)
        self.thread.start()

    def join(self) -> object:
        self.thread.join(_WAIT)
        if self.thread.is_alive():
            raise ScenarioError(f"thread {self.name} did not finish")
        if self.exc is not None:
            raise self.exc
        return self.result


class _Stage:
    """Everything one scenario run needs: the runtime, its FDs, actors and notes."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.fds: dict[str, int] = {}
        self.focus: list[int] = []  # the fds the story is about (compact renderings)
        self.owned: list[FD] = []
        self.actors: list[_Actor] = []
        self.columns: list[str] = []
        self.notes: list[TraceEvent] = []
        self.notes_lock = threading.Lock()
        self.outcome: dict[str, object] = {}
        self.t0 = 0.0
        self.events: list[TraceEvent] = []
        self.recording = False  # this stage started the process-wide trace

    def pair(self, reader_role: str, writer_role: str, bufsize: int = 0) -> tuple[FD, FD]:
        """A TCP pair, named for the fds line; registration edges settled before tracing.
        The first one is the story's focus."""
        a, b = tcp_pair(self.rt, bufsize)
        self.owned += [a, b]
        self.fds[reader_role] = a.sysfd
        self.fds[writer_role] = b.sysfd
        self.focus.append(a.sysfd)
        self.settle(a, b)
        return a, b

    def settle(self, *fds: FD) -> None:
        """Let the poller deliver the edges a fresh registration produces, so they do not
        land in the middle of the story: on an edge-triggered backend a new connected
        socket is writable at once (wg becomes pdReady). poll(2) reports nothing until a
        thread arms interest, and epoll arms write interest only when a writer first waits."""
        if "w" in self.rt.backend.arm_modes:
            return
        if getattr(self.rt, "impl", "python") == "c":
            # The C core polls only while a thread is parked (the poll leader or the poller,
            # as Go polls only with netpollAnyWaiters): the edges are seen by the first poll,
            # and its transitions are not traced.
            return
        for f in fds:
            _wait_state(f, "w", PD_READY)

    def start(self, *columns: str) -> None:
        """Start recording; columns are the scenario's threads in display order."""
        if trace.enabled:
            raise ScenarioError("a trace recording is already running in this process")
        self.columns = [*columns, POLLER]
        self.t0 = time.monotonic()
        trace.start()
        self.recording = True

    def stop(self) -> None:
        self.recording = False
        self.events = trace.stop()

    def actor(self, name: str, fn: Callable[[], object]) -> _Actor:
        return _Actor(self, name, fn)

    def note(self, text: str) -> None:
        """Record what the calling thread is doing, beside the runtime's own events."""
        if not self.recording:
            return
        th = threading.current_thread()
        ev = TraceEvent(time.monotonic(), th.name, th.ident or 0, "note", -1, "", "", "", text)
        with self.notes_lock:
            self.notes.append(ev)

    def close_all(self) -> None:
        for f in self.owned:
            if not f.closing():
                try:
                    f.close()
                except OSError:
                    pass


def _read_expecting(st: _Stage, conn: FD, exc_type: type[BaseException], key: str) -> None:
    """A read(64) meant to fail with exc_type: note it, and keep the error as outcome[key]."""
    st.note("read(64)")
    try:
        conn.read(64)
    except exc_type as e:
        st.outcome[key] = e
        st.note(f"raised {_exc_text(e)}")


def _exc_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


# --- the scenarios -------------------------------------------------------------------------


def _play_data(st: _Stage) -> None:
    a, b = st.pair("reader", "writer")
    st.start("reader", "writer")

    def read() -> bytes:
        st.note("read(64)")
        data = a.read(64)
        st.note(f"read -> {data!r}")
        return data

    def write() -> None:
        st.note("write(b'hello')")
        b.write(b"hello")
        st.note("write -> 5")

    reader = st.actor("reader", read)
    _wait_state(a, "r", PD_PARKED)
    st.actor("writer", write).join()
    st.outcome["read"] = reader.join()


def _play_close(st: _Stage) -> None:
    a, _ = st.pair("reader", "peer")
    st.start("reader", "closer")

    def read() -> None:
        st.note("read(64)")
        t = time.monotonic()
        try:
            a.read(64)
        except NetClosingError as e:
            st.outcome["woke_after"] = time.monotonic() - t
            st.outcome["error"] = e
            st.note(f"raised {_exc_text(e)}")

    def close() -> None:
        st.note("close()")
        a.close()
        st.note("close() returned")

    reader = st.actor("reader", read)
    _wait_state(a, "r", PD_PARKED)
    st.actor("closer", close).join()
    reader.join()


def _play_deadline(st: _Stage) -> None:
    a, _ = st.pair("reader", "peer")
    st.start("reader", "setter")

    def read() -> None:
        _read_expecting(st, a, DeadlineExceededError, "error")

    def set_deadline() -> None:
        st.note("set_read_deadline(now+30ms)")
        a.set_read_deadline(time.monotonic() + 0.030)

    reader = st.actor("reader", read)
    _wait_state(a, "r", PD_PARKED)
    st.actor("setter", set_deadline).join()
    reader.join()


def _play_deadline_past(st: _Stage) -> None:
    a, b = st.pair("reader", "writer")
    st.start("reader", "setter", "writer")
    buffered = threading.Event()

    def read() -> None:
        _read_expecting(st, a, DeadlineExceededError, "parked_error")
        if not buffered.wait(_WAIT):
            raise ScenarioError("the data never arrived")
        st.note("read(64), data buffered")
        t = time.monotonic()
        try:
            a.read(64)
        except DeadlineExceededError as e:
            st.outcome["buffered_error"] = e
            st.outcome["buffered_failed_after"] = time.monotonic() - t
            st.note(f"raised {_exc_text(e)}")
        st.note("set_read_deadline(None)")
        a.set_read_deadline(None)
        st.note("read(64)")
        data = a.read(64)
        st.outcome["read"] = data
        st.note(f"read -> {data!r}")

    def set_past() -> None:
        st.note("set_read_deadline(now-1s)")
        a.set_read_deadline(time.monotonic() - 1.0)

    def write() -> None:
        st.note("write(b'late')")
        b.write(b"late")

    reader = st.actor("reader", read)
    _wait_state(a, "r", PD_PARKED)
    st.actor("setter", set_past).join()
    _wait_for(lambda: "parked_error" in st.outcome or not reader.thread.is_alive(), "reader")
    st.actor("writer", write).join()
    # The poller keeps the arrival as pdReady: a past deadline must fail the read anyway.
    _wait_state(a, "r", PD_READY)
    buffered.set()
    reader.join()


def _drain(st: _Stage, f: FD, total: int) -> bytes:
    st.note(f"read until {total} bytes")
    chunks = []
    got = 0
    while got < total:
        chunk = f.read(total - got)
        if not chunk:
            raise ScenarioError(f"EOF after {got} of {total} bytes")
        chunks.append(chunk)
        got += len(chunk)
    st.note(f"read {got} bytes")
    return b"".join(chunks)


_SMALL_BUF = 8 * 1024
_BIG = 64 * 1024


def _play_backpressure(st: _Stage) -> None:
    a, b = st.pair("writer", "reader", bufsize=_SMALL_BUF)
    st.start("writer", "reader")
    payload = bytes(range(256)) * (_BIG // 256)

    def write() -> int:
        st.note(f"write({len(payload)} bytes)")
        n = a.write(payload)
        st.note(f"write -> {n}")
        return n

    writer = st.actor("writer", write)
    _wait_state(a, "w", PD_PARKED)
    reader = st.actor("reader", lambda: _drain(st, b, len(payload)))
    st.outcome["written"] = writer.join()
    st.outcome["intact"] = reader.join() == payload


def _play_two_writers(st: _Stage) -> None:
    a, b = st.pair("writers", "reader", bufsize=_SMALL_BUF)
    st.start("writer-1", "writer-2", "reader")
    one, two = b"1" * _BIG, b"2" * _BIG

    def write(data: bytes) -> Callable[[], int]:
        def fn() -> int:
            st.note(f"write({len(data)} x {data[:1]!r})")
            n = a.write(data)
            st.note(f"write -> {n}")
            return n

        return fn

    w1 = st.actor("writer-1", write(one))
    _wait_state(a, "w", PD_PARKED)  # writer-1 holds the write lock and is parked
    w2 = st.actor("writer-2", write(two))
    # writer-2 queues on the fdMutex write lock (not on the pollDesc).
    _wait_for(lambda: load_state(a.fdmu) & MUTEX_WMASK != 0, "writer-2 to wait for the write lock")
    reader = st.actor("reader", lambda: _drain(st, b, len(one) + len(two)))
    w1.join()
    w2.join()
    got = reader.join()
    if not isinstance(got, bytes):
        raise ScenarioError(f"the reader returned {got!r}")
    st.outcome["received"] = got
    st.outcome["whole"] = got in (one + two, two + one)
    st.outcome["first"] = got[:1]


def _play_close_reuse(st: _Stage) -> None:
    import os

    a, b = st.pair("reader", "peer")
    number = a.sysfd
    st.start("reader", "closer", "new-owner")

    def read() -> None:
        _read_expecting(st, a, NetClosingError, "error")

    def close() -> None:
        st.note("close()")
        a.close()
        st.note("close() returned")
        try:
            os.fstat(number)
        except OSError as e:
            st.outcome["fstat_after_close"] = e
            st.note(f"fstat({number}) -> EBADF")
        else:
            st.outcome["fstat_after_close"] = None
            st.note(f"fstat({number}) -> still open!")

    reader = st.actor("reader", read)
    _wait_state(a, "r", PD_PARKED)
    st.actor("closer", close).join()
    reader.join()

    def reuse() -> None:
        # A new connection takes the old number (dup2 makes sure of it), as the kernel
        # does by itself for the lowest free number.
        c, d = tcp_pair(st.rt)
        st.owned += [c, d]
        if c.sysfd != number:
            fdnum = c.detach()
            try:
                os.dup2(fdnum, number, inheritable=False)
            finally:
                os.close(fdnum)
            c = FD(number, net="tcp", runtime=st.rt)
            st.owned.append(c)
        st.fds["new-owner"] = c.sysfd
        st.note(f"new connection on fd {c.sysfd}")
        st.note("old handle: read(64)")
        try:
            a.read(64)
        except NetClosingError as e:
            st.outcome["old_read"] = e
            st.note(f"old handle raised {_exc_text(e)}")
        else:
            st.outcome["old_read"] = None
        st.note("peer writes b'fresh'")
        d.write(b"fresh")
        st.note("read(64)")
        data = c.read(64)
        st.outcome["new_read"] = data
        st.note(f"read -> {data!r}")

    st.actor("new-owner", reuse).join()


_READERS = 3


def _play_one_poller(st: _Stage) -> None:
    pairs = [tcp_pair(st.rt) for _ in range(_READERS)]
    for i, (a, b) in enumerate(pairs, 1):
        st.owned += [a, b]
        st.fds[f"reader-{i}"] = a.sysfd
        st.focus.append(a.sysfd)
        st.settle(a, b)
    names = [f"reader-{i}" for i in range(1, _READERS + 1)]
    rt = st.rt
    before = (rt.poller_wakeups, rt.events)
    st.start(*names, "writer")

    def read(f: FD) -> Callable[[], bytes]:
        def fn() -> bytes:
            st.note("read(64)")
            data = f.read(64)
            st.note(f"-> {data!r}")
            return data

        return fn

    readers = []
    for name, (a, _) in zip(names, pairs):
        readers.append(st.actor(name, read(a)))
        _wait_state(a, "r", PD_PARKED)

    def write() -> None:
        st.note("a line to each")
        for i, (_, b) in enumerate(pairs, 1):
            b.write(f"hi {i}".encode())

    st.actor("writer", write).join()
    st.outcome["reads"] = [r.join() for r in readers]
    st.outcome["poller_wakeups"] = rt.poller_wakeups - before[0]
    st.outcome["poller_events"] = rt.events - before[1]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("data", "data arrives for a parked reader", _play_data),
        Scenario("close", "close() while a reader is parked", _play_close),
        Scenario("deadline", "a read deadline fires while the reader is parked", _play_deadline),
        Scenario(
            "deadline-past",
            "a deadline moved into the past wakes the reader; reads fail",
            _play_deadline_past,
        ),
        Scenario(
            "backpressure",
            "a writer fills the buffer and parks; the reader drains it",
            _play_backpressure,
        ),
        Scenario(
            "two-writers",
            "two writers, serialised by the descriptor's write lock",
            _play_two_writers,
        ),
        Scenario(
            "close-reuse",
            "close() returns after close(2); reusing the number is safe",
            _play_close_reuse,
        ),
        Scenario(
            "one-poller", "parked readers, all readied by the one poller thread", _play_one_poller
        ),
    )
}


def run(name: str, rt: Runtime | None = None) -> Result:
    """Play one scenario on rt (default: the default runtime) and return what it recorded.
    The C core records no trace: where it is the default, the scenario plays on a Python
    runtime of its own, shut down afterwards.

    Raises KeyError for an unknown name and ScenarioError if the scenario got stuck.
    """
    SCENARIOS[name]  # KeyError first, before any runtime is made
    if rt is not None:
        return _run(name, rt)
    rt = get_runtime()
    if rt.impl == "python":
        return _run(name, rt)
    from threadpoll._runtime import proc

    own = proc.Runtime(
        proc.new_backend(os.environ.get("THREADPOLL_BACKEND") or proc.backend_names()[0])
    )
    try:
        return _run(name, own)
    finally:
        own.shutdown()


def _run(name: str, rt: Runtime) -> Result:
    """run's body, on the runtime given."""
    scenario = SCENARIOS[name]
    rt.ensure_poller()
    with rt.lock:
        poller = rt.poller
    if poller is None:
        raise ScenarioError("the runtime has no poller thread")
    st = _Stage(rt)
    try:
        try:
            scenario.play(st)
        finally:
            if st.recording:
                st.stop()
    finally:
        # Closing wakes any thread still parked, so a failed scenario leaves nothing behind.
        st.close_all()
        for actor in st.actors:
            actor.thread.join(_WAIT)
    # Threads by ident and name: another runtime's poller has the same name when its backend
    # has (epoll and lazy-write epoll both run "threadpoll-poller-epoll"). The poller at the
    # end too: one that died during the scenario was replaced (its poller_died shows).
    threads = {(a.thread.ident, a.name) for a in st.actors}
    with rt.lock:
        for p in (poller, rt.poller):
            if p is not None:
                threads.add((p.ident, p.name))
    ours = [ev for ev in st.events if (ev.ident, ev.thread) in threads]
    events = sorted(ours + st.notes, key=lambda ev: ev.t)  # stable: trace order kept
    return Result(
        name=name,
        backend=rt.name,
        t0=st.t0,
        events=events,
        fds=dict(st.fds),
        columns=list(st.columns),
        poller_ident=poller.ident or 0,
        poller_name=poller.name,
        focus=list(st.focus),
        outcome=dict(st.outcome),
    )


# --- rendering -----------------------------------------------------------------------------

# What a compact rendering leaves out: the poller's plumbing. The state changes it keeps
# already say what netpollready did.
_QUIET_KINDS = frozenset(
    {"netpoll", "netpoll_break", "netpollready", "open", "close", "park", "unpark"}
)


def _deadline_text(ev: TraceEvent) -> str:
    try:
        d = float(ev.info)
    except ValueError:
        return ev.info
    if d == float("inf"):
        return "none"
    if d == float("-inf"):
        return "past"
    return f"{(d - ev.t) * 1000:+.0f}ms"


def describe(ev: TraceEvent, primary: int = -1) -> str:
    """One event as a short phrase (the fd is left out when it is ``primary``)."""
    fd = "" if ev.fd == primary or ev.fd < 0 else f"fd{ev.fd} "
    k = ev.kind
    if k == "state":
        return f"{fd}{ev.mode} {ev.old}->{ev.new}"
    if k == "note":
        return ev.info
    if k == "netpoll":
        n = ev.info.split()[0] if ev.info else "?"
        return f"netpoll -> {n} event" if n == "1" else f"netpoll -> {n} events"
    if k == "netpollready":
        return f"netpollready {fd}{ev.mode}"
    if k in ("park", "unpark", "expire"):
        return f"{k} {fd}{ev.mode}"
    if k == "deadline":
        return f"deadline {fd}{ev.mode} {_deadline_text(ev)}"
    if k == "evict":
        return f"evict fd{ev.fd}"
    if k == "destroy":
        return f"destroy: close({ev.fd})"
    if k == "csema_wait":
        return "csema: wait"
    if k == "csema_release":
        return "csema: released"
    if k == "open":
        return f"pollopen fd{ev.fd} ({ev.info})"
    if k == "close":
        return f"pollclose fd{ev.fd}"
    return " ".join(x for x in (k, fd.strip(), ev.mode, ev.info) if x)


def _fit(text: str, room: int) -> str:
    if len(text) <= room:
        return text
    return text[: max(room - 2, 0)] + ".."


def _essential(events: list[TraceEvent], result: Result) -> list[bool]:
    """Which rows a compact rendering must keep: what the threads did (notes), evictions,
    deadlines, destroy and the close semaphore, and each thread's first three and last two
    state changes. Long runs of the rest (repeated park/ready cycles) are elided."""
    keep = [ev.kind != "state" for ev in events]
    per_column: dict[str, list[int]] = {}
    for i, ev in enumerate(events):
        if ev.kind == "state":
            per_column.setdefault(result.label(ev), []).append(i)
    for column, rows in per_column.items():
        ends = rows[:1] + rows[-1:] if column == POLLER else rows[:3] + rows[-2:]
        for i in ends:
            keep[i] = True
    # Eliding a single row saves nothing: the marker takes a row too.
    for i in range(len(keep)):
        if not keep[i] and (i == 0 or keep[i - 1]) and (i + 1 == len(keep) or keep[i + 1]):
            keep[i] = True
    return keep


def render(result: Result, *, compact: bool = False, indent: str = "") -> str:
    """The timeline: one column per thread, one row per event, milliseconds first.

    ``compact`` keeps only the story's own descriptors (``result.focus``), leaves out the
    poller's plumbing (netpoll returns, breaks, netpollready, park/unpark, registration) and
    elides long runs of repeated state changes. Every line fits in 80 columns with indent.
    """
    width = WIDTH - len(indent)
    primary = next(iter(result.fds.values()), -1)
    events = result.events
    if compact:
        focus = set(result.focus)
        events = [
            ev
            for ev in events
            if ev.kind not in _QUIET_KINDS and (ev.fd < 0 or not focus or ev.fd in focus)
        ]
    columns = list(result.columns)
    for ev in events:
        lab = result.label(ev)
        if lab not in columns:
            columns.append(lab)
    texts = [(ev, describe(ev, primary)) for ev in events]
    time_w = 9  # "  123.456" then a space
    n = len(columns)
    last = max([len(t) for ev, t in texts if result.label(ev) == columns[-1]] + [len(columns[-1])])
    last = min(last, 24)
    step = (width - time_w - 1 - last) // (n - 1) if n > 1 else 0
    step = max(9, min(step, 22))
    starts = {c: time_w + 1 + i * step for i, c in enumerate(columns)}
    header = " " * (time_w - 2) + "ms"
    for c in columns:
        pad = starts[c] - len(header)
        header += " " * max(pad, 1) + _fit(c, step - 1)
    lines = [header[:width]]
    keep = _essential(events, result) if compact else [True] * len(events)
    skipped = 0
    for (ev, text), kept in zip(texts, keep):
        if not kept:
            skipped += 1
            continue
        if skipped:
            lines += _elided(skipped, time_w)
            skipped = 0
        start = starts[result.label(ev)]
        ms = (ev.t - result.t0) * 1000
        lines.append(f"{ms:{time_w}.3f}".ljust(start) + _fit(text, width - start))
    if skipped:
        lines += _elided(skipped, time_w)
    return "\n".join(indent + line for line in lines)


def _elided(n: int, time_w: int) -> list[str]:
    if n == 0:
        return []
    return [" " * (time_w + 1) + f"... {n} more state change{'s' if n > 1 else ''} ..."]


def fds_line(result: Result) -> str:
    """Which descriptor is whose, e.g. ``fd 5: reader, fd 6: writer``."""
    return ", ".join(f"fd {n}: {role}" for role, n in result.fds.items())


def to_json(result: Result) -> str:
    """The run as JSON for tools: the scenario, backend, fds, and every event with its
    relative time in milliseconds and column."""
    doc = {
        "scenario": result.name,
        "title": SCENARIOS[result.name].title,
        "backend": result.backend,
        "fds": result.fds,
        "columns": result.columns,
        "poller": result.poller_name,
        "events": [
            {
                "ms": round((ev.t - result.t0) * 1000, 3),
                "t": ev.t,
                "thread": ev.thread,
                "column": result.label(ev),
                "kind": ev.kind,
                "fd": ev.fd,
                "mode": ev.mode,
                "old": ev.old,
                "new": ev.new,
                "info": ev.info,
            }
            for ev in result.events
        ],
    }
    return json.dumps(doc, indent=1)
