"""fork in the middle of I/O (default backend).

Streams run in parent threads (writers parked on full buffers, readers parked on empty ones)
while the main thread forks again and again. Each child starts its own poller lazily, makes a
new pair and parks a thread of its own on it, reports through a pair it inherited, and exits.
The parent's streams must come through intact, its parked threads undisturbed.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import warnings

import pytest
from stress_support import Group, close_quietly, fd_pair, scaled, timeout
from support import wait_until

from threadpoll._runtime import netpoll, proc

pytestmark = [pytest.mark.stress, pytest.mark.timeout(timeout(180))]


def _child(report_fd: object, k: int) -> int:
    """Runs in the child: returns its exit code."""
    signal.alarm(20)  # a hang kills the child, never the test run
    rt = proc.get_runtime()
    a, b = fd_pair(rt)
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(b.read(100)), name="child-reader")
    t.start()
    pd = b.pd.runtime_ctx
    assert pd is not None
    wait_until(lambda: pd.rg == netpoll.PD_PARKED, timeout=10, what="the child's reader")
    a.write(b"child data")
    t.join(10)
    if got != [b"child data"]:
        return 2
    close_quietly(a, b)
    report_fd.write(f"child {k} ok".encode())  # type: ignore[attr-defined]
    return 0


def test_fork_in_the_middle_of_io() -> None:
    rt = proc.get_runtime()
    streams = [fd_pair(rt) for _ in range(6)]
    size = 4 << 20
    progress = [0] * len(streams)
    g = Group()
    for i, (a, b) in enumerate(streams):
        data = random.Random(i).randbytes(size)

        def write(a=a, data=data) -> None:
            for off in range(0, len(data), 1 << 18):
                a.write(data[off : off + (1 << 18)])
            a.close()

        def read(b=b, data=data, i=i) -> None:
            got = bytearray()
            while True:
                chunk = b.read(1 << 16)
                if not chunk:
                    break
                got += chunk
                progress[i] = len(got)
            assert bytes(got) == data, f"stream {i} corrupted"

        g.spawn(write, f"writer-{i}")
        g.spawn(read, f"reader-{i}")

    forks = scaled(16)
    children = []
    reports = []
    try:
        for k in range(forks):
            # Fork once the streams have moved on by another slice: mid-transfer, with
            # threads parked and the poller busy.
            goal = size * (k + 1) // (forks + 2)
            wait_until(lambda goal=goal: min(progress) >= goal, timeout=60, what="progress")
            ra, rb = fd_pair(rt)
            reports.append((ra, rb))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork + threads
                pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 70
                try:
                    code = _child(ra, k)
                finally:
                    os._exit(code)
            children.append(pid)
        g.join_all(timeout=120)
        for k, pid in enumerate(children):
            end = time.monotonic() + 30
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > end:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    raise AssertionError(f"child {k} hung")
                time.sleep(0.005)  # polling the child's state
            assert os.waitstatus_to_exitcode(status) == 0, f"child {k} failed"
            assert reports[k][1].read(100) == f"child {k} ok".encode()
    finally:
        for a, b in streams + reports:
            close_quietly(a, b)
