"""10,000 open descriptors with 1,000 readers parked at once (default backend).

Every reader must get exactly its own descriptor's bytes when the writes come, in any order;
then everything closes and nothing is left registered. RLIMIT_NOFILE's soft limit is raised to
the hard limit first; the test is skipped, with the numbers, where that is still too low.
Thread stacks are 256 KiB while the readers start (1,000 default-sized stacks would reserve
8 GiB of address space on Linux).
"""

from __future__ import annotations

import random
import time

import pytest
from stress_support import (
    Group,
    close_quietly,
    fd_pair,
    raise_nofile,
    scaled,
    stack_size,
    timeout,
)
from support import wait_until

from threadpoll import _diag
from threadpoll._runtime import proc
from threadpoll._runtime.netpoll import PD_PARKED

pytestmark = [pytest.mark.stress, pytest.mark.timeout(timeout(180))]


def test_ten_thousand_descriptors_thousand_parked_readers() -> None:
    n_fds = scaled(10_000, minimum=2)
    n_readers = min(scaled(1_000), n_fds // 2)
    raise_nofile(n_fds)
    rt = proc.get_runtime()
    base_open = len(rt.open_pds)
    pairs = []
    g = Group()
    t0 = time.monotonic()
    try:
        for _ in range(n_fds // 2):
            pairs.append(fd_pair(rt))
        t_open = time.monotonic() - t0
        assert len(rt.open_pds) == base_open + 2 * len(pairs)
        rng = random.Random(99)
        chosen = rng.sample(range(len(pairs)), n_readers)
        msgs = {i: f"pair {i} says {rng.random()}".encode() for i in chosen}

        def read(i: int) -> None:
            got = pairs[i][1].read(256)
            if got != msgs[i]:
                raise AssertionError(f"pair {i} read {got!r}, expected {msgs[i]!r}")

        with stack_size(256 * 1024):
            for i in chosen:
                g.spawn(lambda i=i: read(i), f"reader-{i}")
        pds = [pairs[i][1].pd.runtime_ctx for i in chosen]
        wait_until(
            lambda: all(pd is not None and pd.rg == PD_PARKED for pd in pds),
            timeout=60,
            what=f"{n_readers} readers parked",
        )
        s = _diag.stats()
        assert s["parked_readers"] >= n_readers and s["open_descriptors"] >= n_fds
        assert len(_diag.parked()) >= n_readers
        t_parked = time.monotonic() - t0
        for i in reversed(chosen):
            pairs[i][0].write(msgs[i])
        g.join_all(timeout=60)
        t_read = time.monotonic() - t0
    finally:
        for a, b in pairs:
            close_quietly(a, b)
    assert len(rt.open_pds) == base_open
    print(
        f"{n_fds} fds, {n_readers} readers: opened {t_open:.2f} s, all parked "
        f"{t_parked:.2f} s, all read {t_read:.2f} s, closed {time.monotonic() - t0:.2f} s"
    )
