"""Observing it: threadpoll._diag (dump, stats, dump_on_signal) and threadpoll.trace."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import FrameType

import pytest
from support import Runner, pd_of, wait_parked, wait_until

import threadpoll.trace
from threadpoll import _diag
from threadpoll._poll.fd_unix import FD
from threadpoll._runtime import netpoll, proc
from threadpoll._runtime.netpoll import PD_PARKED
from threadpoll._runtime.proc import Runtime
from threadpoll.errors import DeadlineExceededError, NetClosingError

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pair(rt: Runtime) -> Iterator[tuple[FD, FD]]:
    """A connected unix socket pair as two FDs on the test's runtime."""
    a, b = socket.socketpair()
    fa = FD(a.detach(), net="unix", kind="unix", runtime=rt)
    fb = FD(b.detach(), net="unix", kind="unix", runtime=rt)
    yield fa, fb
    for f in (fa, fb):
        if not f.closing():
            f.close()


def _entry(text: str, thread: threading.Thread) -> str:
    """The dump entry (header line and its indented lines) of one thread."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"thread {thread.ident} "):
            body = [line]
            for more in lines[i + 1 :]:
                if not more.startswith("    "):
                    break
                body.append(more)
            return "\n".join(body)
    raise AssertionError(f"no entry for thread {thread.name!r} in dump:\n{text}")


def _park_writer(fa: FD) -> Runner:
    """A writer that fills the socket buffer and parks."""
    return Runner(lambda: fa.write(b"x" * (16 << 20)), name="writer-7")


# --- dump ----------------------------------------------------------------------------------


def test_dump_names_each_parked_thread(rt: Runtime, pair: tuple[FD, FD]) -> None:
    fa, fb = pair
    # Both on fa: the writer fills fb's receive buffer, which nobody reads.
    reader = Runner(lambda: fa.read(100), name="reader-42")
    wait_parked(fa, "r")
    writer = _park_writer(fa)
    wait_parked(fa, "w")
    fa.set_read_deadline(time.monotonic() + 300)
    text = _diag.dump()
    assert re.match(r"threadpoll: 2 threads parked; \d+ descriptors open", text)

    r = _entry(text, reader.thread)
    assert f'thread {reader.thread.ident} "reader-42"' in r
    assert "[IO wait, " in r
    assert f"fd={fa.fileno()} unix read, parked " in r
    assert re.search(r"deadline in (29\d|300)(\.\d+)? s", r)
    assert "rg=parked wg=parked" in r and f"({rt.name})" in r
    assert "fdMutex refs=2 rlock wlock" in r
    assert "fa.read(100)" in r  # the parked thread's own frame, outside threadpoll

    w = _entry(text, writer.thread)
    assert f"fd={fa.fileno()} unix write, parked " in w
    assert "no deadline" in w and "wg=parked" in w

    fa.close()
    assert isinstance(reader.join_exc(), NetClosingError)
    assert isinstance(writer.join_exc(), NetClosingError)
    assert _diag.dump().startswith("threadpoll: 0 threads parked")


def test_dump_lists_longest_parked_first(rt: Runtime, pair: tuple[FD, FD]) -> None:
    fa, fb = pair
    first = Runner(lambda: fb.read(1), name="first")
    wait_parked(fb, "r")
    second = Runner(lambda: fa.read(1), name="second")
    wait_parked(fa, "r")
    text = _diag.dump(stacks=False)
    assert text.index('"first"') < text.index('"second"')
    assert "File " not in text
    fa.close()
    fb.close()
    first.join_exc()
    second.join_exc()


@pytest.mark.python_runtime
def test_dump_shows_expired_deadline_and_queued_readers(rt: Runtime, pair: tuple[FD, FD]) -> None:
    fa, fb = pair
    reader = Runner(lambda: fb.read(1), name="holder")
    wait_parked(fb, "r")
    queued = Runner(lambda: fb.read(1), name="queued")  # waits for the read lock, not parked
    wait_until(lambda: (fb.fdmu.state >> 23) & 0xFFFFF == 1, what="a read-lock waiter")
    pd = pd_of(fb)
    with pd.lock:  # the parked reader keeps waiting: it is woken only by notify
        pd.rd = netpoll.EXPIRED
    text = _entry(_diag.dump(), reader.thread)
    assert "deadline expired" in text
    assert "rwait=1" in text
    assert '"queued"' not in _diag.dump()
    fb.close()
    assert isinstance(reader.join_exc(), (NetClosingError, DeadlineExceededError))
    assert isinstance(queued.join_exc(), NetClosingError)


def test_dump_does_not_block_on_a_held_lock(rt: Runtime, pair: tuple[FD, FD]) -> None:
    """As in a signal handler that interrupted the thread holding pd.lock and rt.lock."""
    fa, fb = pair
    reader = Runner(lambda: fb.read(1), name="reader")
    wait_parked(fb, "r")
    pd = pd_of(fb)
    with rt.lock, pd.lock:
        t0 = time.monotonic()
        text = _diag.dump()
        took = time.monotonic() - t0
    assert took < 2.0
    assert f"fd={fb.fileno()} unix read" in text
    fa.write(b"!")
    assert reader.join() == b"!"


@pytest.mark.parametrize(
    ("seconds", "label"),
    [
        (0.04, "IO wait, 0.0 s"),
        (12.34, "IO wait, 12.3 s"),
        (60, "IO wait, 1 minute"),
        (150, "IO wait, 2 minutes"),
    ],
)
def test_wait_label_reads_like_go(seconds: float, label: str) -> None:
    assert _diag._wait_label(seconds) == label


def test_dump_covers_every_live_runtime(rt: Runtime) -> None:
    other = proc.runtime_poll_server_init("poll")
    try:
        a, b = socket.socketpair()
        fa = FD(a.detach(), net="unix", runtime=other)
        fb = FD(b.detach(), net="unix", runtime=rt)
        reader = Runner(lambda: fa.read(1), name="on-other-runtime")
        wait_parked(fa, "r")
        text = _diag.dump()
        assert "(poll)" in _entry(text, reader.thread)
        assert "poll: " in text.splitlines()[0]
        fa.close()
        fb.close()
        reader.join_exc()
    finally:
        other.shutdown()


# --- stats ---------------------------------------------------------------------------------

STAT_KEYS = {
    "backend",
    "open_descriptors",
    "parked_readers",
    "parked_writers",
    "poller_wakeups",
    "events",
    "breaks",
    "stale_events_dropped",
    "deadline_expiries",
    "closes_waited",
    "leader_polls",
}


def test_stats_keys_and_types(rt: Runtime) -> None:
    s = _diag.stats()
    assert STAT_KEYS <= set(s)
    assert s["backend"] == rt.name
    for k, v in s.items():
        if k != "backend":
            assert isinstance(v, int) and v >= 0, k


def test_stats_counts_open_and_parked(rt: Runtime, pair: tuple[FD, FD]) -> None:
    fa, fb = pair
    base = _diag.stats()
    a, b = socket.socketpair()
    fc = FD(a.detach(), net="unix", runtime=rt)
    fd = FD(b.detach(), net="unix", runtime=rt)
    assert _diag.stats()["open_descriptors"] == base["open_descriptors"] + 2
    reader = Runner(lambda: fa.read(1), name="r")
    wait_parked(fa, "r")
    writer = _park_writer(fa)
    wait_parked(fa, "w")
    s = _diag.stats()
    assert s["parked_readers"] == base["parked_readers"] + 1
    assert s["parked_writers"] == base["parked_writers"] + 1
    for f in (fa, fb, fc, fd):
        f.close()
    reader.join_exc()
    writer.join_exc()
    s = _diag.stats()
    assert s["open_descriptors"] == base["open_descriptors"] - 2
    assert s["parked_readers"] == base["parked_readers"]


def test_stats_counters_move(rt: Runtime, pair: tuple[FD, FD]) -> None:
    fa, fb = pair
    base = _diag.stats()
    reader = Runner(lambda: fb.read(1), name="r")
    wait_parked(fb, "r")
    fa.write(b"x")
    assert reader.join() == b"x"
    fb.set_read_deadline(time.monotonic() + 0.01)
    with pytest.raises(DeadlineExceededError):
        fb.read(1)
    rt.backend.netpoll_break()
    wait_until(lambda: _diag.stats()["breaks"] > base["breaks"], what="a break counted")
    s = _diag.stats()
    assert s["events"] > base["events"]
    assert s["poller_wakeups"] > base["poller_wakeups"]
    assert s["deadline_expiries"] == base["deadline_expiries"] + 1


def test_stats_counts_closes_that_waited(rt: Runtime, pair: tuple[FD, FD]) -> None:
    fa, fb = pair
    base = _diag.stats()["closes_waited"]
    fb.close()  # nobody else holds a reference to fb: no wait
    assert _diag.stats()["closes_waited"] == base
    # An operation that stays inside the descriptor (a raw_read callback held on a gate)
    # keeps its reference, so close() must wait on the close semaphore for it.
    entered, gate = threading.Event(), threading.Event()

    def callback(fd: int) -> bool:
        entered.set()
        gate.wait(10)
        return True

    holder = Runner(lambda: fa.raw_read(callback), name="holder")
    assert entered.wait(5)
    closer = Runner(fa.close, name="closer")
    # The count is taken after close's own decref found the holder's reference still there,
    # just before it waits on the semaphore; the holder cannot leave before the gate opens.
    # (Opening it once the close mark is set was a race: the holder could drop its reference
    # before close's decref, which then closed the fd itself without waiting.)
    wait_until(lambda: _diag.stats()["closes_waited"] == base + 1, what="close to wait")
    assert not closer.done.is_set()
    gate.set()
    closer.join()
    holder.join()
    assert _diag.stats()["closes_waited"] == base + 1


@pytest.fixture
def usr1() -> Iterator[int]:
    old = signal.getsignal(signal.SIGUSR1)
    yield signal.SIGUSR1
    signal.signal(signal.SIGUSR1, old)


def test_dump_on_signal_writes_dump(rt: Runtime, pair: tuple[FD, FD], usr1: int) -> None:
    fa, fb = pair
    reader = Runner(lambda: fb.read(1), name="sig-reader")
    wait_parked(fb, "r")
    out = io.StringIO()
    _diag.dump_on_signal(usr1, file=out)
    signal.raise_signal(usr1)
    wait_until(lambda: "sig-reader" in out.getvalue(), what="the dump")
    assert f"fd={fb.fileno()} unix read" in out.getvalue()
    fa.write(b"k")
    assert reader.join() == b"k"


def test_dump_on_signal_chains_python_handler(usr1: int) -> None:
    seen: list[int] = []

    def previous(sig: int, frame: FrameType | None) -> None:
        seen.append(sig)

    signal.signal(usr1, previous)
    out = io.StringIO()
    assert _diag.dump_on_signal(usr1, file=out) is previous
    signal.raise_signal(usr1)
    wait_until(lambda: bool(seen), what="the chained handler")
    assert seen == [usr1]
    assert out.getvalue().startswith("threadpoll: ")


def test_dump_on_signal_does_not_chain_default(usr1: int) -> None:
    """SIG_DFL for SIGUSR1 would end the process; the dump replaces it."""
    signal.signal(usr1, signal.SIG_DFL)
    out = io.StringIO()
    assert _diag.dump_on_signal(usr1, file=out) == signal.SIG_DFL
    signal.raise_signal(usr1)
    wait_until(lambda: bool(out.getvalue()), what="the dump")
    assert os.getpid() > 0  # still alive


def test_dump_on_signal_falls_back_to_fd2(usr1: int, capfd: pytest.CaptureFixture[str]) -> None:
    """A handler that interrupted a write to the stream gets "reentrant call": use fd 2."""

    class Reentrant(io.StringIO):
        def write(self, s: str) -> int:
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")

    _diag.dump_on_signal(usr1, file=Reentrant())
    signal.raise_signal(usr1)
    err: list[str] = []

    def dumped() -> bool:
        err.append(capfd.readouterr().err)
        return "threadpoll: " in "".join(err)

    wait_until(dumped, what="the dump on fd 2")


# --- threadpoll.trace ----------------------------------------------------------------------


@pytest.mark.python_runtime
def test_recording_captures_a_park_and_its_readying(rt: Runtime, pair: tuple[FD, FD]) -> None:
    fa, fb = pair
    num = fb.fileno()
    with threadpoll.trace.recording() as events:
        assert events == []
        reader = Runner(lambda: fb.read(10), name="traced-reader")
        wait_parked(fb, "r")
        fa.write(b"hello")
        assert reader.join() == b"hello"
    assert not threadpoll.trace.is_recording()
    mine = [e for e in events if e.fd == num and "r" in e.mode]
    kinds = [e.kind for e in mine]
    assert "park" in kinds and "unpark" in kinds and "netpollready" in kinds
    assert kinds.index("park") < kinds.index("netpollready") < kinds.index("unpark")
    changes = [(e.old, e.new) for e in mine if e.kind == "state"]
    assert ("pdNil", "pdWait") in changes and ("pdWait", "parked") in changes
    assert ("parked", "pdReady") in changes
    park = next(e for e in mine if e.kind == "park")
    assert park.thread == "traced-reader" and park.ident == reader.thread.ident
    assert any(e.kind == "netpoll" for e in events)
    text = threadpoll.trace.format_events(events)
    assert f"fd={num}" in text and "pdWait -> parked" in text
    assert len(text.splitlines()) == len(events)
    cols = threadpoll.trace.format_events(events, columns=True)
    assert cols.splitlines()[0].split()[0:1] != [] and "traced-reader" in cols.splitlines()[0]


@pytest.mark.python_runtime
def test_recording_records_close_and_deadline(rt: Runtime, pair: tuple[FD, FD]) -> None:
    fa, fb = pair
    num = fb.fileno()
    with threadpoll.trace.recording() as events:
        fb.set_read_deadline(time.monotonic() - 1)
        with pytest.raises(DeadlineExceededError):
            fb.read(1)
        fb.close()
    kinds = [e.kind for e in events if e.fd == num]
    for k in ("deadline", "evict", "close", "destroy"):
        assert k in kinds, (k, kinds)


def test_start_twice_and_stop_without_start_raise() -> None:
    threadpoll.trace.start()
    try:
        with pytest.raises(RuntimeError):
            threadpoll.trace.start()
        assert threadpoll.trace.is_recording()
        assert threadpoll.trace.events() == []
    finally:
        assert threadpoll.trace.stop() == []
    with pytest.raises(RuntimeError):
        threadpoll.trace.stop()


def test_recording_stops_when_block_raises() -> None:
    with pytest.raises(ZeroDivisionError), threadpoll.trace.recording():
        1 / 0  # noqa: B018
    assert not threadpoll.trace.is_recording()


def test_trace_off_records_nothing(rt: Runtime, pair: tuple[FD, FD]) -> None:
    fa, fb = pair
    fa.write(b"x")
    assert fb.read(1) == b"x"
    assert threadpoll.trace.events() == []


def test_format_events_empty() -> None:
    assert threadpoll.trace.format_events([]) == ""


def test_parked_entries_match_pollDesc_state(rt: Runtime, pair: tuple[FD, FD]) -> None:
    fa, fb = pair
    reader = Runner(lambda: fb.read(1), name="p")
    wait_parked(fb, "r")
    entries = [p for p in _diag.parked() if p.thread is reader.thread]
    assert len(entries) == 1
    p = entries[0]
    assert (p.fd, p.kind, p.mode, p.backend) == (fb.fileno(), "unix", "read", rt.name)
    assert p.pd.rg == PD_PARKED and p.deadline_in is None and p.parked_for >= 0
    fa.write(b"z")
    reader.join()
