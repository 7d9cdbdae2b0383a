"""A poller-break storm: threads call netpoll_break without pause while data flows and
deadlines fire. Breaks must never cost a readiness event (the poller drains the wake-up and
goes on), and every byte still arrives once, in order."""

from __future__ import annotations

import random
import threading
import time

import pytest
from stress_support import Group, close_quietly, fd_pair, scaled, timeout

from threadpoll._runtime import proc
from threadpoll.errors import DeadlineExceededError

pytestmark = [pytest.mark.stress, pytest.mark.timeout(timeout(120))]


def test_poller_break_storm() -> None:
    rt = proc.get_runtime()
    stop = threading.Event()
    breakers = Group()
    calls = [0] * 4

    def storm(k: int) -> None:
        while not stop.is_set():
            rt.backend.netpoll_break()
            calls[k] += 1

    before = (rt.breaks, rt.poller_wakeups)
    for k in range(len(calls)):
        breakers.spawn(lambda k=k: storm(k), f"breaker-{k}")
    pairs = [fd_pair(rt) for _ in range(scaled(8))]
    g = Group()
    size = 1 << 20
    try:
        for i, (a, b) in enumerate(pairs):
            data = random.Random(i).randbytes(size)

            def write(a=a, data=data) -> None:
                a.write(data)
                a.close()

            def read(b=b, data=data, i=i) -> None:
                got = bytearray()
                while True:
                    chunk = b.read(65536)
                    if not chunk:
                        break
                    got += chunk
                assert bytes(got) == data, f"pair {i}: stream corrupted"

            def deadlines(b=b) -> None:
                # Reads on the same FD would race the checked reader for the read lock;
                # deadlines on a fresh pair, each one fired by the parked thread itself.
                x, y = fd_pair(rt)
                try:
                    for _ in range(20):
                        x.set_read_deadline(time.monotonic() + 0.002)
                        try:
                            x.read(1)
                        except DeadlineExceededError:
                            continue
                        raise AssertionError("read returned with nothing written")
                finally:
                    close_quietly(x, y)

            g.spawn(write, f"writer-{i}")
            g.spawn(read, f"reader-{i}")
            g.spawn(deadlines, f"deadlines-{i}")
        g.join_all(timeout=timeout(100))
    finally:
        stop.set()
        breakers.join_all(timeout=10)
        for a, b in pairs:
            close_quietly(a, b)
    assert sum(calls) > 1000
    assert rt.breaks > before[0] and rt.poller_wakeups > before[1]
