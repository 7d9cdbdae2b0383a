"""The FD side of the poller (threadpoll/_poll/fd_poll_runtime.py): deadline_value,
convert_err, err_closing and PollHandle.

deadline_value and convert_err are pure functions and are tested once; PollHandle talks to a
runtime and takes the ``rt`` fixture, so it runs on every backend.
"""

from __future__ import annotations

import errno
import math
import os
import time
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from support import Runner, wait_parked

from threadpoll._poll import fd_unix
from threadpoll._poll.fd_poll_runtime import PollHandle, convert_err, deadline_value, err_closing
from threadpoll._runtime.netpoll import (
    EXPIRED,
    NO_DEADLINE,
    PD_NIL,
    POLL_ERR_CLOSING,
    POLL_ERR_NOT_POLLABLE,
    POLL_ERR_POLLER,
    POLL_ERR_TIMEOUT,
    POLL_NO_ERROR,
    InternalError,
    PollDesc,
)
from threadpoll._runtime.proc import Runtime
from threadpoll.errors import (
    DeadlineExceededError,
    FileClosingError,
    NetClosingError,
    NotPollableError,
    PollerError,
)

pytestmark = pytest.mark.timeout(20)


# --- deadline_value ------------------------------------------------------------------------


@pytest.mark.parametrize("t", [None, math.inf, float("inf")])
def test_deadline_value_none_and_inf_mean_no_deadline(t: Any) -> None:
    assert deadline_value(t) == NO_DEADLINE


def test_deadline_value_minus_inf_is_expired() -> None:
    assert deadline_value(-math.inf) == EXPIRED


@pytest.mark.parametrize("t", [0, 1, 12.5, Fraction(7, 2), -3.0])
def test_deadline_value_real_numbers_pass_as_floats(t: Any) -> None:
    """Any real number is a time.monotonic() value; a past one is stored by the runtime as
    expired (runtime_poll_set_deadline), not here."""
    v = deadline_value(t)
    assert type(v) is float and v == float(t)


def test_deadline_value_past_is_not_no_deadline() -> None:
    """Go: "don't confuse deadline right now with no deadline"."""
    now = time.monotonic()
    assert deadline_value(now) == now != NO_DEADLINE


@pytest.mark.parametrize(
    "t, expected", [(10**400, NO_DEADLINE), (-(10**400), EXPIRED)], ids=["huge", "-huge"]
)
def test_deadline_value_saturates_beyond_float_range(t: int, expected: float) -> None:
    """A deadline beyond float's range saturates, as Go's does beyond int64 nanoseconds,
    instead of raising OverflowError."""
    assert deadline_value(t) == expected
    assert deadline_value(Fraction(t)) == expected


@pytest.mark.parametrize(
    "t, exc",
    [
        (math.nan, ValueError),
        (float("nan"), ValueError),
        (True, TypeError),
        (False, TypeError),
        ("1", TypeError),
        (b"1", TypeError),
        (Decimal("1"), TypeError),
        (1j, TypeError),
        ([1.0], TypeError),
        (object(), TypeError),
    ],
)
def test_deadline_value_rejects(t: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        deadline_value(t)


# --- convert_err and err_closing -----------------------------------------------------------


@pytest.mark.parametrize(
    "code, is_file, expected",
    [
        (POLL_ERR_CLOSING, False, NetClosingError),
        (POLL_ERR_CLOSING, True, FileClosingError),
        (POLL_ERR_TIMEOUT, False, DeadlineExceededError),
        (POLL_ERR_TIMEOUT, True, DeadlineExceededError),
        (POLL_ERR_NOT_POLLABLE, False, NotPollableError),
        (POLL_ERR_NOT_POLLABLE, True, NotPollableError),
        (POLL_ERR_POLLER, False, PollerError),
        (POLL_ERR_POLLER, True, PollerError),
    ],
)
def test_convert_err(code: int, is_file: bool, expected: type[BaseException]) -> None:
    """Go: internal/poll convertErr — one public class per runtime code, a fresh instance
    each time (so .written and __cause__ never leak between operations)."""
    err = convert_err(code, is_file)
    assert type(err) is expected
    assert convert_err(code, is_file) is not err


def test_convert_err_no_error() -> None:
    assert convert_err(POLL_NO_ERROR, False) is None
    assert convert_err(POLL_NO_ERROR, True) is None


def test_convert_err_unknown_code_is_internal_error() -> None:
    err = convert_err(99, False)
    assert isinstance(err, InternalError)
    assert "99" in str(err)


def test_convert_err_poller_cause_is_reported_once(rt: Runtime) -> None:
    """The poller's death is the PollerError's __cause__, taken from the pollDesc once."""
    pd = PollDesc(rt)
    boom = RuntimeError("boom")
    pd.poller_err = boom
    err = convert_err(POLL_ERR_POLLER, False, pd)
    assert type(err) is PollerError and err.__cause__ is boom
    assert pd.poller_err is None
    again = convert_err(POLL_ERR_POLLER, False, pd)
    assert type(again) is PollerError and again.__cause__ is None


def test_err_closing() -> None:
    """Go: internal/poll errClosing."""
    assert type(err_closing(True)) is FileClosingError
    assert type(err_closing(False)) is NetClosingError


# --- PollHandle ----------------------------------------------------------------------------


@pytest.fixture
def pipe_fds() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


def _handle(rt: Runtime | None = None) -> PollHandle:
    """A pollDesc handle as an FD on rt makes it (its fdMutex, which is also its handle)."""
    if rt is not None and rt.impl == "c":
        return fd_unix._CCore()  # type: ignore[no-any-return]
    return fd_unix._Core()


def _open(rt: Runtime, fd: int) -> PollHandle:
    h = _handle(rt)
    assert h.init(fd, rt) == 0
    return h


def _shut(h: PollHandle) -> None:
    pd = h.runtime_ctx
    if pd is not None:
        if not pd.closing:
            h.evict()
        h.close()


def test_poll_handle_lifecycle(rt: Runtime, pipe_fds: tuple[int, int]) -> None:
    """init registers the descriptor; evict makes prepare and wait fail with the closing
    error (net or file, as asked); close unregisters it.

    Go: internal/poll pollDesc.init, evict, close
    """
    r, _ = pipe_fds
    h = _open(rt, r)
    pd = h.runtime_ctx
    assert h.pollable() and pd is not None and pd.fd == r
    assert rt.open_pds.get(pd.id) is pd
    h.prepare_read(False)
    h.prepare_write(False)
    h.evict()
    with pytest.raises(FileClosingError):
        h.prepare_read(True)
    with pytest.raises(NetClosingError):
        h.prepare_write(False)
    with pytest.raises(NetClosingError):
        h.wait_read(False)
    h.close()
    assert not h.pollable() and h.runtime_ctx is None
    assert pd.id not in rt.open_pds


def test_poll_handle_not_pollable() -> None:
    """A handle that was never registered: prepare, evict, close and set_deadline do
    nothing; wait fails as Go's does ("waiting for unsupported file type").

    Go: internal/poll pollDesc.prepare, pollDesc.wait (runtimeCtx == 0)
    """
    h = _handle()
    assert not h.pollable()
    h.prepare_read(False)
    h.prepare_write(True)
    h.evict()
    h.set_deadline(EXPIRED, "rw")
    h.close()
    with pytest.raises(OSError, match="waiting for unsupported file type"):
        h.wait_read(False)


def test_poll_handle_refuses_regular_file(rt: Runtime, tmp_path: Any) -> None:
    """epoll refuses a regular file with EPERM, and the poll backend does the same; init
    returns the errno and the handle stays unregistered (Go: pollDesc.init's error)."""
    if rt.name not in ("epoll", "poll"):
        pytest.skip(f"{rt.name} may accept regular files; the os front decides by kind")
    fd = os.open(str(tmp_path / "f"), os.O_RDWR | os.O_CREAT)
    try:
        h = _handle(rt)
        before = len(rt.open_pds)
        assert h.init(fd, rt) == errno.EPERM
        assert not h.pollable()
        assert len(rt.open_pds) == before
    finally:
        os.close(fd)


def test_poll_handle_deadlines(rt: Runtime, pipe_fds: tuple[int, int]) -> None:
    """An expired deadline makes prepare and wait of that mode fail with
    DeadlineExceededError and leaves the other mode alone; clearing it un-expires it.

    Go: internal/poll setDeadlineImpl, pollDesc.prepare
    """
    r, _ = pipe_fds
    h = _open(rt, r)
    try:
        h.set_deadline(EXPIRED, "r")
        with pytest.raises(DeadlineExceededError):
            h.prepare_read(False)
        with pytest.raises(DeadlineExceededError):
            h.wait_read(False)
        h.prepare_write(False)
        h.set_deadline(NO_DEADLINE, "r")
        h.prepare_read(False)
        h.set_deadline(time.monotonic() - 1, "rw")
        with pytest.raises(DeadlineExceededError):
            h.prepare_write(True)
        with pytest.raises(DeadlineExceededError):
            h.prepare_read(True)
    finally:
        _shut(h)


def test_poll_handle_wait_calls_after_eagain_hook(rt: Runtime, pipe_fds: tuple[int, int]) -> None:
    """wait runs the runtime's after_eagain hook before it waits, then parks until the
    poller readies it.

    Go: internal/poll pollDesc.wait
    """
    r, w = pipe_fds
    h = _open(rt, r)
    seen: list[tuple[int, str]] = []
    rt.hooks.after_eagain = lambda pd, mode: seen.append((pd.fd, mode))
    try:
        h.prepare_read(False)
        with pytest.raises(BlockingIOError):
            os.read(r, 1)
        waiter = Runner(lambda: h.wait_read(False))
        wait_parked(h.runtime_ctx, "r")
        assert seen == [(r, "r")]
        os.write(w, b"x")
        waiter.join()
        pd = h.runtime_ctx
        assert pd is not None and pd.rg == PD_NIL
    finally:
        rt.hooks.after_eagain = None
        _shut(h)
