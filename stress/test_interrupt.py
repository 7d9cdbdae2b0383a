"""Ctrl-C while parked, over and over: SIGINT delivered to the main thread while it is
parked in a read or a write (with and without a deadline) raises KeyboardInterrupt there and
leaves the descriptor usable: no stale waiter, no "double wait", the stream intact."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest
from stress_support import close_quietly, fd_pair, scaled, timeout
from support import Runner, wait_until

from threadpoll._poll.fd_unix import FD
from threadpoll._runtime import netpoll, proc
from threadpoll._runtime.netpoll import PD_NIL, PD_PARKED, PD_READY

pytestmark = [pytest.mark.stress, pytest.mark.timeout(timeout(120))]


@pytest.fixture
def sigint() -> Iterator[list[int]]:
    """SIGINT raises KeyboardInterrupt only while armed (a stray one must not end the run)."""
    armed = [0]

    def handler(sig: int, frame: FrameType | None) -> None:
        if armed[0]:
            armed[0] = 0
            raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, handler)
    yield armed
    signal.signal(signal.SIGINT, old)


def test_keyboard_interrupt_while_parked_repeatedly(sigint: list[int]) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    rt = proc.get_runtime()
    a, b = fd_pair(rt)
    main = threading.main_thread().ident
    assert main is not None
    pd = a.pd.runtime_ctx
    assert pd is not None
    rounds = scaled(200)
    interrupted = 0
    try:
        for i in range(rounds):
            mode = "r" if i % 2 == 0 else "w"
            if i % 3 == 0:
                a.set_deadline(netpoll._monotonic() + 60)  # the timed wait path
            else:
                a.set_deadline(None)
            filled = _fill(a) if mode == "w" else 0  # so the write below parks at once

            def kill(mode: str = mode) -> None:
                wait_until(
                    lambda: (pd.rg if mode == "r" else pd.wg) == PD_PARKED,
                    what=f"main thread parked ({mode})",
                )
                sigint[0] = 1
                signal.pthread_kill(main, signal.SIGINT)

            killer = Runner(kill, name="killer")
            try:
                if mode == "r":
                    a.read(10)
                else:
                    a.write(b"w" * (1 << 20))
            except KeyboardInterrupt as e:
                interrupted += 1
                written = getattr(e, "written", 0)
            else:
                raise AssertionError(f"round {i}: the {mode} returned without an interrupt")
            killer.join()
            # No stale waiter: the state is reset, nobody is recorded as parked.
            assert pd.rg in (PD_NIL, PD_READY) and pd.wg in (PD_NIL, PD_READY)
            assert pd.rparked_by is None and pd.wparked_by is None
            # Still usable, and the stream holds exactly what was written.
            if mode == "r":
                b.write(b"ok")
                assert a.read(10) == b"ok"
            else:
                assert _drain(b) == filled + written
                b.write(b"ok")
                assert a.read(10) == b"ok"
    finally:
        close_quietly(a, b)
    assert interrupted == rounds


def _fill(fd: FD) -> int:
    """Fill the send buffer with raw non-blocking writes; returns the bytes written."""
    n = 0
    while True:
        try:
            n += os.write(fd.fileno(), b"f" * 65536)
        except BlockingIOError:
            return n


def _drain(fd: FD) -> int:
    """Read everything buffered with raw non-blocking reads; returns the byte count."""
    n = 0
    while True:
        try:
            chunk = os.read(fd.fileno(), 1 << 20)
        except BlockingIOError:
            return n
        n += len(chunk)
