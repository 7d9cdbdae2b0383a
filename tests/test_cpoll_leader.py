"""The C core's poll leader (threadpoll/_c/netpoll.c, "the poll leader").

A thread about to park while nobody polls and at most one other thread follows runs netpoll
itself (Go's findRunnable), readying the others it finds ready, until its own pollDesc is
readied, closed, expires or a signal arrives. Other parks follow on their semaphores. When
the leader's netpoll returns, or it leaves, with two or more followers waiting, the poller
pthread polls for them at once; one follower left behind is covered by the next thread to
park, or by the poller after LEAD_TICK (1 ms). Each test uses a
fresh C runtime, so its counters and its one leader are the test's.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import Runner, wait_until

from threadpoll._runtime import netpoll, netpoll_c
from threadpoll._runtime.netpoll import (
    PD_NIL,
    PD_PARKED,
    POLL_ERR_CLOSING,
    POLL_ERR_TIMEOUT,
    POLL_NO_ERROR,
)

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(not netpoll_c.available(), reason="the C core is not built"),
]

MODE_R = 1


@pytest.fixture
def lrt() -> Iterator[Any]:
    rt = netpoll_c.CRuntime()
    opened: list[tuple[int, int, Any]] = []

    def pipe() -> tuple[int, int, Any]:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        pd, errno = rt.runtime_poll_open(r)
        assert errno == 0 and pd is not None
        opened.append((r, w, pd))
        return r, w, pd

    rt.pipe = pipe
    try:
        yield rt
    finally:
        for _r, _w, pd in opened:
            if not pd.closing:
                netpoll.runtime_poll_unblock(pd)
        rt.shutdown()
        for r, w, _ in opened:
            os.close(r)
            os.close(w)


def _counters(rt: Any) -> tuple[int, int, int]:
    return rt.poller_wakeups, rt.leader_polls, rt.leader_handoffs


def _park(pd: Any, name: str) -> Runner:
    waiter = Runner(lambda: pd.wait("r"), name=name)
    wait_until(lambda: pd.rg == PD_PARKED, what=f"{name} parked")
    return waiter


def test_single_parked_reader_is_readied_by_its_own_poll(lrt: Any) -> None:
    """One waiter: it leads, and the kernel wakes it directly; the poller never polls."""
    r, w, pd = lrt.pipe()
    base = _counters(lrt)
    waiter = _park(pd, "reader")
    wait_until(lambda: pd.lead == MODE_R, what="the reader leading")
    os.write(w, b"x")
    assert waiter.join() == POLL_NO_ERROR
    assert pd.lead == 0
    wakeups, leader_polls, handoffs = (a - b for a, b in zip(_counters(lrt), base))
    assert leader_polls >= 1
    assert wakeups == leader_polls, "every netpoll return was the leader's"
    assert handoffs == 0


def test_close_wakes_a_leader(lrt: Any) -> None:
    r, w, pd = lrt.pipe()
    waiter = _park(pd, "reader")
    wait_until(lambda: pd.lead == MODE_R, what="the reader leading")
    breaks = lrt.breaks
    netpoll.runtime_poll_unblock(pd)
    assert waiter.join() == POLL_ERR_CLOSING
    assert lrt.breaks > breaks
    assert pd.lead == 0 and pd.rg == PD_NIL


@pytest.mark.parametrize("when", ["soon", "past"])
def test_deadline_moved_earlier_wakes_a_leader(lrt: Any, when: str) -> None:
    """The leader's poll is timed to its own deadline; a deadline moved earlier (or into the
    past) breaks the poll, so the leader re-times it or returns."""
    r, w, pd = lrt.pipe()
    waiter = _park(pd, "reader")
    wait_until(lambda: pd.lead == MODE_R, what="the reader leading")
    d = time.monotonic() + 0.05 if when == "soon" else float("-inf")
    pd.set_deadline(d, "r")
    assert waiter.join() == POLL_ERR_TIMEOUT
    assert pd.lead == 0


def test_leader_keeps_leading_when_it_readied_every_follower(lrt: Any) -> None:
    """A follower the leader readies no longer counts: with nobody left waiting the leader
    stays in netpoll, and the poller never polls."""
    ra, wa, leader_pd = lrt.pipe()
    base = _counters(lrt)
    leader = _park(leader_pd, "leader")
    wait_until(lambda: leader_pd.lead == MODE_R, what="the first waiter leading")
    for i in range(3):
        rf, wf, pd = lrt.pipe()
        follower = _park(pd, f"follower-{i}")
        assert pd.lead == 0 and pd.follow == MODE_R, "one leader at a time"
        assert lrt.nfollowers == 1
        os.write(wf, b"x")
        assert follower.join() == POLL_NO_ERROR
        assert pd.follow == 0 and lrt.nfollowers == 0
        assert leader_pd.rg == PD_PARKED and leader_pd.lead == MODE_R
    os.write(wa, b"x")
    assert leader.join() == POLL_NO_ERROR
    wakeups, leader_polls, handoffs = (a - b for a, b in zip(_counters(lrt), base))
    assert leader_polls >= 4 and wakeups == leader_polls and handoffs == 0


def test_leader_hands_over_to_the_poller_while_followers_wait(lrt: Any) -> None:
    """The leader's netpoll returns (a follower's data) with two followers still waiting: it
    steps down and follows, and the poller polls for all three at once (nobody leads). Echo
    with many connections depends on this: followers use the poller, not a leader that
    happens to be parked."""
    ra, wa, leader_pd = lrt.pipe()
    pipes = [lrt.pipe() for _ in range(3)]
    leader = _park(leader_pd, "leader")
    wait_until(lambda: leader_pd.lead == MODE_R, what="the first waiter leading")
    followers = [_park(pd, f"follower-{i}") for i, (_, _, pd) in enumerate(pipes)]
    assert lrt.nfollowers == 3 and not lrt.poller_leads
    assert all(pd.lead == 0 and pd.follow == MODE_R for _, _, pd in pipes)
    base = _counters(lrt)
    os.write(pipes[0][1], b"x")
    assert followers[0].join() == POLL_NO_ERROR
    wait_until(
        lambda: leader_pd.lead == 0 and leader_pd.follow == MODE_R and lrt.poller_leads,
        what="the leader stepping down and the poller polling",
    )
    assert leader_pd.rg == PD_PARKED and lrt.nfollowers == 3
    for (_, w, _), f in zip(pipes[1:], followers[1:]):
        os.write(w, b"x")
        assert f.join() == POLL_NO_ERROR
    os.write(wa, b"x")
    assert leader.join() == POLL_NO_ERROR
    wakeups, leader_polls, handoffs = (a - b for a, b in zip(_counters(lrt), base))
    assert leader_polls == 1 and handoffs >= 1
    assert wakeups - leader_polls >= 3, "the poller readied the followers and the old leader"
    assert lrt.nfollowers == 0


def test_leader_with_one_follower_keeps_leading(lrt: Any) -> None:
    """One follower is not enough to hand over: the leader's netpoll returns (another
    follower's data) and it leads on, covering the one left (ping-pong's two threads)."""
    ra, wa, leader_pd = lrt.pipe()
    (_r1, w1, pd1), (_r2, w2, pd2) = lrt.pipe(), lrt.pipe()
    leader = _park(leader_pd, "leader")
    wait_until(lambda: leader_pd.lead == MODE_R, what="the first waiter leading")
    f1, f2 = _park(pd1, "follower-1"), _park(pd2, "follower-2")
    base = _counters(lrt)
    os.write(w1, b"x")
    assert f1.join() == POLL_NO_ERROR
    assert leader_pd.lead == MODE_R and lrt.nfollowers == 1
    os.write(w2, b"x")
    assert f2.join() == POLL_NO_ERROR
    os.write(wa, b"x")
    assert leader.join() == POLL_NO_ERROR
    wakeups, leader_polls, handoffs = (a - b for a, b in zip(_counters(lrt), base))
    assert wakeups == leader_polls >= 3 and handoffs == 0


def test_a_follower_re_timing_its_wait_still_counts(lrt: Any) -> None:
    """A deadline moved earlier wakes a follower only to re-time its wait: it still waits
    for someone's netpoll, so it stays counted (else the poller could stop polling for it)."""
    ra, wa, leader_pd = lrt.pipe()
    rb, wb, follower_pd = lrt.pipe()
    leader = _park(leader_pd, "leader")
    wait_until(lambda: leader_pd.lead == MODE_R, what="the first waiter leading")
    follower = _park(follower_pd, "follower")
    assert lrt.nfollowers == 1
    follower_pd.set_deadline(time.monotonic() + 30.0, "r")  # earlier than none
    follower_pd.set_deadline(time.monotonic() + 20.0, "r")
    assert follower_pd.rg == PD_PARKED and follower_pd.follow == MODE_R
    assert lrt.nfollowers == 1
    os.write(wb, b"x")
    assert follower.join() == POLL_NO_ERROR
    assert lrt.nfollowers == 0
    os.write(wa, b"x")
    assert leader.join() == POLL_NO_ERROR


def test_poller_gives_the_right_back_when_nobody_waits(lrt: Any) -> None:
    """The leader leaves one follower behind: the poller covers it (after LEAD_TICK); once
    it has readied it the poller stops polling, and the next lone parker leads again and is
    readied without a poller wake-up."""
    ra, wa, leader_pd = lrt.pipe()
    rb, wb, follower_pd = lrt.pipe()
    leader = _park(leader_pd, "leader")
    wait_until(lambda: leader_pd.lead == MODE_R, what="the first waiter leading")
    follower = _park(follower_pd, "follower")
    os.write(wa, b"x")  # the leader leaves a follower uncovered: the poller takes over
    assert leader.join() == POLL_NO_ERROR
    os.write(wb, b"x")
    assert follower.join() == POLL_NO_ERROR
    wait_until(lambda: not lrt.poller_leads, what="the poller giving the right back")
    base = _counters(lrt)
    os.read(ra, 1)
    lone = _park(leader_pd, "lone reader")
    wait_until(lambda: leader_pd.lead == MODE_R, what="the lone reader leading")
    os.write(wa, b"x")
    assert lone.join() == POLL_NO_ERROR
    wakeups, leader_polls, handoffs = (a - b for a, b in zip(_counters(lrt), base))
    assert leader_polls >= 1 and wakeups == leader_polls and handoffs == 0


def test_a_leader_that_leaves_does_not_strand_followers(lrt: Any) -> None:
    """The leader is readied and goes on with other work: it signals the poller as it
    leaves, and the poller polls for the follower."""
    ra, wa, leader_pd = lrt.pipe()
    rb, wb, follower_pd = lrt.pipe()
    leader = _park(leader_pd, "leader")
    wait_until(lambda: leader_pd.lead == MODE_R, what="the first waiter leading")
    follower = _park(follower_pd, "follower")
    handoffs = lrt.leader_handoffs
    os.write(wa, b"x")
    assert leader.join() == POLL_NO_ERROR
    os.write(wb, b"x")
    assert follower.join() == POLL_NO_ERROR
    assert lrt.leader_handoffs > handoffs


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
@pytest.mark.parametrize("raising", [False, True], ids=["handler-returns", "handler-raises"])
def test_signal_interrupts_a_leader_and_a_follower_is_still_readied(
    lrt: Any, raising: bool
) -> None:
    """The main thread leads; a signal ends its poll (EINTR). A handler that returns: it
    parks again and is woken by its data. One that raises: the exception leaves the wait,
    the pollDesc is idle, and the follower it led for is still readied."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")
    ra, wa, leader_pd = lrt.pipe()
    rb, wb, follower_pd = lrt.pipe()
    main = threading.main_thread().ident
    assert main is not None
    calls: list[int] = []
    followers: list[Runner] = []

    class Boom(Exception):
        pass

    def handler(signum: int, frame: Any) -> None:
        calls.append(signum)
        if raising:
            raise Boom

    def kick() -> None:
        wait_until(lambda: leader_pd.lead == MODE_R, what="the main thread leading")
        followers.append(_park(follower_pd, "follower"))
        signal.pthread_kill(main, signal.SIGUSR1)
        if not raising:
            wait_until(lambda: calls != [] and leader_pd.rg == PD_PARKED, what="parked again")
            os.write(wa, b"x")

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        kicker = Runner(kick, name="kicker")
        if raising:
            with pytest.raises(Boom):
                leader_pd.wait("r")
        else:
            assert leader_pd.wait("r") == POLL_NO_ERROR
        kicker.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert calls == [signal.SIGUSR1]
    assert leader_pd.rg == PD_NIL and leader_pd.lead == 0
    os.write(wb, b"x")
    assert followers[0].join() == POLL_NO_ERROR


def test_shutdown_stops_a_leader_and_close_still_wakes_it(lrt: Any) -> None:
    r, w, pd = lrt.pipe()
    waiter = _park(pd, "reader")
    wait_until(lambda: pd.lead == MODE_R, what="the reader leading")
    lrt.shutdown()  # returns: the leader's poll is broken and it stops leading
    wait_until(lambda: pd.lead == 0, what="the reader no longer leading")
    assert pd.rg == PD_PARKED
    netpoll.runtime_poll_unblock(pd)
    assert waiter.join() == POLL_ERR_CLOSING
