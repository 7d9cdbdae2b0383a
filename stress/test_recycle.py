"""The fd-recycling canary: no thread ever receives another descriptor's bytes.

Many workers open, use and close connections as fast as they can, so fd numbers are reused
within microseconds. Each connection has a unique id and every byte on it belongs to the
repeating 8-byte pattern of that id, so a read that returned bytes from a different
connection (a recycled fd number) is caught at the byte it happened. Closes come from the
other thread of the connection while its operations are in flight, in both directions.
"""

from __future__ import annotations

import itertools
import random
import struct
import threading

import pytest
from stress_support import Group, close_quietly, fd_pair, scaled, timeout

from threadpoll._runtime import proc
from threadpoll.errors import ClosingError

pytestmark = [pytest.mark.stress, pytest.mark.timeout(timeout(180))]

_ids = itertools.count(1)
_ids_lock = threading.Lock()


def _new_id() -> int:
    with _ids_lock:
        return next(_ids)


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self.bytes = 0
        self.reader_closed = 0
        self.writer_closed = 0


def one_connection(rng: random.Random, stats: Stats) -> None:
    conn = _new_id()
    token = struct.pack("!Q", conn)
    a, b = fd_pair(proc.get_runtime())
    # Who closes what: the reader closes the writer's end once it has read enough, or the
    # writer closes the reader's end (while the reader is parked or mid-read) once it has
    # written enough.
    reader_closes = rng.random() < 0.5
    limit = rng.randrange(1, 200_000)
    chunk = token * rng.randrange(1, 4096)
    wrote = [0]

    def write() -> None:
        off = 0
        try:
            while True:
                # Always a whole number of tokens from the current offset's phase.
                data = chunk[off % 8 :] + chunk[: off % 8]
                off += a.write(data)
                wrote[0] = off
                if not reader_closes and off >= limit:
                    b.close()  # from the writer's thread, under the reader's feet
                    with stats.lock:
                        stats.writer_closed += 1
                    return
        except (ClosingError, BrokenPipeError, ConnectionResetError):
            return

    w = threading.Thread(target=write, name=f"canary-writer-{conn}", daemon=True)
    w.start()
    got = 0
    try:
        while True:
            try:
                data = b.read(rng.randrange(1, 65536))
            except ClosingError:
                break
            if not data:
                break
            phase = got % 8
            want = (token * (len(data) // 8 + 2))[phase : phase + len(data)]
            if data != want:
                i = next(j for j in range(len(data)) if data[j] != want[j])
                raise AssertionError(
                    f"connection {conn} read a foreign byte at offset {got + i}: "
                    f"{data[max(0, i - 8) : i + 8].hex()} (token {token.hex()})"
                )
            got += len(data)
            if reader_closes and got >= limit:
                a.close()  # from the reader's thread, under the writer's feet
                with stats.lock:
                    stats.reader_closed += 1
                break
    finally:
        w.join(30)
        assert not w.is_alive(), f"connection {conn}: writer hung"
        close_quietly(a, b)
    with stats.lock:
        stats.connections += 1
        stats.bytes += got


def test_recycled_fd_never_delivers_foreign_bytes() -> None:
    workers = scaled(16)
    rounds = 150
    stats = Stats()
    g = Group()

    def worker(k: int) -> None:
        rng = random.Random(1000 + k)
        for _ in range(rounds):
            one_connection(rng, stats)

    for k in range(workers):
        g.spawn(lambda k=k: worker(k), f"canary-{k}")
    g.join_all(timeout=timeout(150))
    assert stats.connections == workers * rounds
    assert stats.reader_closed > 0 and stats.writer_closed > 0
