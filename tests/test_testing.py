"""threadpoll.testing: expire_all_deadlines, close_all, wait_parked."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest
from support import Runner, pd_of

from threadpoll import testing
from threadpoll._poll import fd_unix
from threadpoll._poll.fd_unix import FD
from threadpoll._runtime.netpoll import EXPIRED, NO_DEADLINE, PD_NIL
from threadpoll._runtime.proc import Runtime
from threadpoll.errors import DeadlineExceededError, NetClosingError

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pairs(rt: Runtime) -> Iterator[list[tuple[FD, FD]]]:
    """Three connected unix socket pairs on the test's runtime."""
    out = []
    for _ in range(3):
        a, b = socket.socketpair()
        out.append((FD(a.detach(), net="unix", runtime=rt), FD(b.detach(), net="unix", runtime=rt)))
    yield out
    for p in out:
        for f in p:
            if not f.closing():
                f.close()


def test_expire_all_deadlines_wakes_only_threads_with_deadlines(
    rt: Runtime, pairs: list[tuple[FD, FD]]
) -> None:
    (a0, b0), (a1, b1), (a2, b2) = pairs
    a0.set_read_deadline(time.monotonic() + 3600)
    a2.set_write_deadline(time.monotonic() + 3600)
    with_deadline = Runner(lambda: a0.read(1), name="with-deadline")
    without = Runner(lambda: a1.read(1), name="without")
    testing.wait_parked(a0, "r")
    testing.wait_parked(a1, "r")
    assert testing.expire_all_deadlines() == 2  # a0 read, a2 write
    assert isinstance(with_deadline.join_exc(), DeadlineExceededError)
    # Expired stays expired, as a deadline in the past does, until it is changed.
    with pytest.raises(DeadlineExceededError):
        a0.read(1)
    with pytest.raises(DeadlineExceededError):
        a2.write(b"x")
    assert pd_of(a2).wd == EXPIRED and pd_of(a2).rd == NO_DEADLINE
    # The thread without a deadline is still parked and still works.
    assert pd_of(a1).rg != PD_NIL
    b1.write(b"y")
    assert without.join() == b"y"
    assert testing.expire_all_deadlines() == 0  # nothing pending any more
    a0.set_read_deadline(None)
    b0.write(b"z")
    assert a0.read(1) == b"z"


def test_close_all_closes_every_descriptor(rt: Runtime, pairs: list[tuple[FD, FD]]) -> None:
    mine = {f for p in pairs for f in p}
    others = [f for f in fd_unix.live_fds() if f not in mine]
    if others:
        pytest.skip(f"other live FDs in this process would be closed too: {others}")
    # The reader's peer is a stdlib socket, so only close_all can end its read.
    a, peer = socket.socketpair()
    with peer:
        fa = FD(a.detach(), net="unix", runtime=rt)
        mine.add(fa)
        reader = Runner(lambda: fa.read(1), name="reader")
        testing.wait_parked(fa, "r")
        nums = [f.fileno() for f in mine]
        assert testing.close_all() == 7
        assert isinstance(reader.join_exc(), NetClosingError)
    assert all(f.closing() and f.fileno() == -1 for f in mine)
    assert fd_unix.live_fds() == []
    for n in nums:
        with pytest.raises(OSError):
            os.fstat(n)  # EBADF: the OS descriptor is gone (no test made a new one since)
    assert testing.close_all() == 0


def test_wait_parked_by_fd_number_and_front(rt: Runtime, pairs: list[tuple[FD, FD]]) -> None:
    (a0, b0), (a1, b1), _ = pairs

    class Front:  # a front object keeps its FD in an attribute, as Conn does
        def __init__(self, fd: FD) -> None:
            self._fd = fd

    r0 = Runner(lambda: a0.read(1), name="r0")
    testing.wait_parked(a0.fileno(), "r")
    r1 = Runner(lambda: a1.read(1), name="r1")
    testing.wait_parked(Front(a1), "r")
    b0.write(b"0")
    b1.write(b"1")
    assert (r0.join(), r1.join()) == (b"0", b"1")


def test_wait_parked_times_out_and_checks_arguments(
    rt: Runtime, pairs: list[tuple[FD, FD]]
) -> None:
    (a0, _), _, _ = pairs
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        testing.wait_parked(a0, "w", timeout=0.05)
    assert time.monotonic() - t0 < 2
    with pytest.raises(ValueError):
        testing.wait_parked(a0, "rw")
    with pytest.raises(ValueError):
        testing.wait_parked(object())


def test_parked_is_the_dump_view(rt: Runtime, pairs: list[tuple[FD, FD]]) -> None:
    (a0, b0), _, _ = pairs
    r = Runner(lambda: a0.read(1), name="seen")
    testing.wait_parked(a0, "r")
    assert [p.mode for p in testing.parked() if p.thread is r.thread] == ["read"]
    b0.write(b".")
    r.join()
