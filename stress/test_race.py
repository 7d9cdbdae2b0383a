"""Close, read, write and deadline changes racing across hundreds of threads, on every backend.

Two kinds of descriptor pairs run at once:

- *Checked streams*: three writers send framed messages into one end while one reader drains
  the other, a deadline mover keeps moving the read deadline (past, near future, none) and a
  closer closes the writers' end once enough has been written. Every message a write reported
  as written must arrive exactly once, whole, in its writer's order; the only partial message
  allowed is the one write that the close interrupted, at the very end, and exactly as long as
  its ``.written`` says.
- *Chaos pairs*: readers and writers on both ends, deadline movers on both directions, and two
  threads racing to close each end. Only documented errors may come out; exactly one close of
  each FD succeeds; nothing hangs.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Callable

import pytest
from stress_support import Group, close_quietly, fd_pair, frame, parse_frames, scaled, timeout

from threadpoll._poll.fd_unix import FD
from threadpoll._runtime.proc import Runtime
from threadpoll.errors import ClosingError, DeadlineExceededError

pytestmark = [pytest.mark.stress, pytest.mark.timeout(timeout(180))]

WRITERS = 3


class Checked:
    """One checked stream and its threads."""

    def __init__(self, rt: Runtime, sid: int, rng: random.Random) -> None:
        self.sid = sid
        self.a, self.b = fd_pair(rt)
        self.seed = rng.randrange(1 << 30)
        self.close_after = rng.randrange(400, 2000)
        self.written: list[list[int]] = [[] for _ in range(WRITERS)]
        self.partial: list[bytes] = []  # what the write a close cut short did write
        self.total = 0
        self.lock = threading.Lock()
        self.enough = threading.Event()
        self.reader_done = threading.Event()
        self.frames: list[tuple[int, int]] = []  # (writer, seq) of each whole message read
        self.tail = b""  # bytes of a message not yet whole
        self.nbytes = 0
        self.deadline_errors = 0

    def writer(self, w: int) -> None:
        try:
            self._write(w)
        finally:
            self.enough.set()  # a writer that stops (or fails) lets the closer go

    def _write(self, w: int) -> None:
        rng = random.Random(self.seed + w)
        seq = 0
        while True:
            # Mostly small messages; one in eight larger than a socket buffer, so a close
            # often finds a writer parked half-way through one.
            big = rng.random() < 0.125
            msg = frame(self.sid, w, seq, rng.randrange(1, 1 << 19 if big else 1 << 14))
            try:
                self.a.write(msg)
            except ClosingError as e:
                if e.written:
                    self.partial.append(msg[: e.written])
                return
            self.written[w].append(seq)
            seq += 1
            with self.lock:
                self.total += 1
                if self.total >= self.close_after:
                    self.enough.set()

    def closer(self) -> None:
        # Scaled: at scale 10 on a loaded machine, 60 s may pass before close_after
        # messages are written, and an early close fails the count checked at the end.
        self.enough.wait(timeout(60))
        self.a.close()

    def reader(self) -> None:
        rng = random.Random(self.seed - 1)
        try:
            while True:
                try:
                    chunk = self.b.read(rng.randrange(1, 65536))
                except DeadlineExceededError:
                    self.deadline_errors += 1
                    self.b.set_read_deadline(None)
                    continue
                if not chunk:
                    return
                self.nbytes += len(chunk)
                frames, self.tail = parse_frames(self.tail + chunk, self.sid)
                self.frames += frames
        finally:
            self.reader_done.set()

    def mover(self) -> None:
        rng = random.Random(self.seed - 2)
        while not self.reader_done.is_set():
            r = rng.random()
            try:
                if r < 0.3:
                    self.b.set_read_deadline(time.monotonic() - 1)
                elif r < 0.7:
                    self.b.set_read_deadline(time.monotonic() + rng.random() * 0.002)
                else:
                    self.b.set_read_deadline(None)
            except ClosingError:
                return
            # Pacing the load (how often the deadline moves), not synchronisation.
            self.reader_done.wait(rng.random() * 0.002)

    def start(self, g: Group) -> None:
        for w in range(WRITERS):
            g.spawn(lambda w=w: self.writer(w), f"s{self.sid}-writer{w}")
        g.spawn(self.reader, f"s{self.sid}-reader")
        g.spawn(self.mover, f"s{self.sid}-mover")
        g.spawn(self.closer, f"s{self.sid}-closer")

    def check(self) -> int:
        frames, tail = self.frames, self.tail
        per_writer: list[list[int]] = [[] for _ in range(WRITERS)]
        for w, seq in frames:
            per_writer[w].append(seq)
        assert len(self.partial) <= 1, f"stream {self.sid}: {len(self.partial)} writes cut short"
        for w in range(WRITERS):
            assert per_writer[w] == self.written[w], (
                f"stream {self.sid} writer {w}: received {len(per_writer[w])} messages, "
                f"wrote {len(self.written[w])}"
            )
        if self.partial:
            assert tail == self.partial[0], f"stream {self.sid}: the cut write's bytes differ"
        else:
            assert tail == b"", f"stream {self.sid}: {len(tail)} stray bytes at the end"
        return len(frames)


class Chaos:
    """A pair everyone hammers at once."""

    def __init__(self, rt: Runtime, cid: int, rng: random.Random) -> None:
        self.cid = cid
        self.a, self.b = fd_pair(rt)
        self.seed = rng.randrange(1 << 30)
        self.ops = 0
        self.limit = rng.randrange(2000, 6000)
        self.closed = {id(self.a): 0, id(self.b): 0}
        self.lock = threading.Lock()
        self.go_close = threading.Event()

    def _count(self) -> None:
        with self.lock:
            self.ops += 1
            if self.ops >= self.limit:
                self.go_close.set()

    def reader(self, fd: FD, k: int) -> None:
        rng = random.Random(self.seed + k)
        while True:
            try:
                if not fd.read(rng.randrange(1, 32768)):
                    return
            except (ClosingError, ConnectionResetError):
                return
            except DeadlineExceededError:
                pass
            self._count()

    def writer(self, fd: FD, k: int) -> None:
        rng = random.Random(self.seed + 100 + k)
        data = b"c" * 32768
        while True:
            try:
                fd.write(data[: rng.randrange(1, len(data))])
            except (ClosingError, BrokenPipeError, ConnectionResetError):
                return
            except DeadlineExceededError:
                pass
            self._count()

    def mover(self, fd: FD, k: int) -> None:
        rng = random.Random(self.seed + 200 + k)
        setters = (fd.set_read_deadline, fd.set_write_deadline, fd.set_deadline)
        while True:
            t = rng.choice((None, time.monotonic() - 1, time.monotonic() + rng.random() * 0.003))
            try:
                rng.choice(setters)(t)
            except ClosingError:
                return
            self._count()
            self.go_close.wait(rng.random() * 0.002)  # pacing the load

    def closer(self, fd: FD) -> None:
        self.go_close.wait(60)
        try:
            fd.close()
        except ClosingError:
            return  # the other closer won
        with self.lock:
            self.closed[id(fd)] += 1

    def _until_closed(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            finally:
                self.go_close.set()  # a thread that stops (or fails) lets the closers go

        return run

    def start(self, g: Group) -> None:
        for name, fd in (("a", self.a), ("b", self.b)):
            for k in range(2):
                read = self._until_closed(lambda fd=fd, k=k: self.reader(fd, k))
                write = self._until_closed(lambda fd=fd, k=k: self.writer(fd, k))
                g.spawn(read, f"c{self.cid}{name}-reader{k}")
                g.spawn(write, f"c{self.cid}{name}-writer{k}")
                g.spawn(lambda fd=fd: self.closer(fd), f"c{self.cid}{name}-closer{k}")
            g.spawn(lambda fd=fd: self.mover(fd, 0), f"c{self.cid}{name}-mover")

    def check(self) -> None:
        assert self.closed == {id(self.a): 1, id(self.b): 1}, "each FD closes exactly once"
        assert self.a.fileno() == -1 and self.b.fileno() == -1


def test_close_read_write_deadline_race(rt: Runtime) -> None:
    rng = random.Random(20260101)
    checked = [Checked(rt, i, rng) for i in range(scaled(12))]
    chaos = [Chaos(rt, i, rng) for i in range(scaled(8))]
    g = Group()
    try:
        for c in checked:
            c.start(g)
        for x in chaos:
            x.start(g)
        assert len(g.threads) == 6 * len(checked) + 14 * len(chaos)  # 184 at scale 1
        g.join_all(timeout=timeout(150))
    finally:
        for c in checked:
            close_quietly(c.a, c.b)
        for x in chaos:
            close_quietly(x.a, x.b)
    messages = sum(c.check() for c in checked)
    for x in chaos:
        x.check()
    assert messages >= sum(c.close_after for c in checked)
    assert sum(c.deadline_errors for c in checked) > 0, "the deadline movers never hit a reader"
    print(_debug_stats(checked))


def _debug_stats(checked: list[Checked]) -> str:
    return (
        f"partial={sum(len(c.partial) for c in checked)} "
        f"deadline_errors={sum(c.deadline_errors for c in checked)} "
        f"bytes={sum(c.nbytes for c in checked)}"
    )
