"""The FD side of the poller: Go's internal/poll/fd_poll_runtime.go.

``PollHandle`` is Go's ``internal/poll.pollDesc``: a handle holding the runtime's pollDesc
(``runtime_ctx``, None when the descriptor is not pollable) with the calls an FD makes —
init, close, evict, prepare, wait. Go's FD holds it as a value field beside its fdMutex;
here one object is both (fd_unix's ``_Core``: one allocation for two of Go's value fields),
so ``PollHandle`` has the methods and the class that mixes it in holds ``runtime_ctx``.
``convert_err`` turns the runtime's integer codes into the public exceptions: the boundary
between the runtime's tier of errors and the user's.

Differences from Go:
- DIVERGENCE(go): prepare and wait raise the converted exception instead of returning an
  error value; ``convert_err`` is still the one place codes become exceptions.
- DIVERGENCE(go): deadlines arrive as absolute ``time.monotonic()`` seconds (or None); there
  is no conversion from wall-clock time.

Go: internal/poll/fd_poll_runtime.go
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import time
import warnings
from types import FrameType
from typing import Literal, overload

from threadpoll._runtime import netpoll
from threadpoll._runtime.netpoll import (
    EXPIRED,
    NO_DEADLINE,
    POLL_ERR_CLOSING,
    POLL_ERR_NOT_POLLABLE,
    POLL_ERR_POLLER,
    POLL_ERR_TIMEOUT,
    POLL_NO_ERROR,
    InternalError,
    PollDesc,
)
from threadpoll._runtime.proc import Runtime, get_runtime
from threadpoll.errors import (
    DeadlineExceededError,
    FileClosingError,
    NetClosingError,
    NotPollableError,
    PollerError,
    WallClockDeadlineWarning,
)

__all__ = ["PollHandle", "convert_err", "err_closing", "deadline_value"]


def err_closing(is_file: bool) -> OSError:
    """The error for an operation on a closed descriptor.

    Go: internal/poll/fd.go errClosing
    """
    return FileClosingError() if is_file else NetClosingError()


# POLL_NO_ERROR gives None; any other code an exception, so ``raise convert_err(res, ...)``
# type-checks once the caller has tested ``res != POLL_NO_ERROR``. The overlap (Literal[0]
# is also an int) is the point: mypy documents this ignore for a literal overload.
@overload
def convert_err(  # type: ignore[overload-overlap]
    res: Literal[0], is_file: bool, pd: PollDesc | None = None
) -> None: ...


@overload
def convert_err(res: int, is_file: bool, pd: PollDesc | None = None) -> BaseException: ...


def convert_err(res: int, is_file: bool, pd: PollDesc | None = None) -> BaseException | None:
    """Turn a runtime poll code into the public exception (None for POLL_NO_ERROR).

    Go: internal/poll/fd_poll_runtime.go convertErr
    """
    if res == POLL_NO_ERROR:
        return None
    if res == POLL_ERR_CLOSING:
        return err_closing(is_file)
    if res == POLL_ERR_TIMEOUT:
        return DeadlineExceededError()
    if res == POLL_ERR_NOT_POLLABLE:
        return NotPollableError()
    if res == POLL_ERR_POLLER:
        err = PollerError()
        if pd is not None:
            with pd.lock:
                err.__cause__ = pd.poller_err
                pd.poller_err = None  # reported once; later operations use a new poller
        return err
    return InternalError(f"unreachable: poll error code {res}")


def deadline_value(t: object) -> float:
    """Validate a public deadline: None or +inf → none; -inf or the past → expired; NaN,
    booleans and non-numbers rejected. Returns the runtime's representation.

    Go: none (Go's time.Time cannot be malformed)
    """
    if t is None:
        return NO_DEADLINE
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise TypeError(
            f"deadline must be None or a time.monotonic() value in seconds, not {type(t).__name__}"
        )
    try:
        v = float(t)
    except OverflowError:
        # An int (or Fraction) beyond float's range: saturate, as Go's runtime does when
        # the deadline overflows int64 nanoseconds.
        v = -math.inf if t < 0 else math.inf
    if math.isnan(v):
        raise ValueError("deadline must not be NaN")
    if v == -math.inf:
        return EXPIRED
    if v > _WALL_CLOCK_GAP and not _wall_clock_warned:
        _warn_if_wall_clock(v)
    return v


# A deadline more than this many seconds past time.monotonic() (about three years) and within
# as much of time.time() was almost surely written as time.time() + timeout.
_WALL_CLOCK_GAP = 1e8
_wall_clock_warned = False  # once per process; a racing second warning would be harmless
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _warn_if_wall_clock(v: float) -> None:
    """Warn (once) when deadline v looks like wall-clock time rather than monotonic time.

    Go: none (Go's deadlines are time.Time values, which carry their own clock)
    """
    global _wall_clock_warned
    if v - time.monotonic() <= _WALL_CLOCK_GAP or abs(v - time.time()) >= _WALL_CLOCK_GAP:
        return
    _wall_clock_warned = True
    # Point the warning at the user's line: the first frame outside threadpoll.
    level = 1
    frame: FrameType | None = sys._getframe(0)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        level, frame = level + 1, frame.f_back
    warnings.warn(
        WallClockDeadlineWarning(
            f"deadline {v:.0f} looks like wall-clock time (time.time()), "
            f"{(v - time.monotonic()) / 31_557_600:.0f} years from now in time.monotonic(): "
            "threadpoll deadlines are time.monotonic() seconds, so this one will not fire "
            "when you expect. Use time.monotonic() + timeout."
        ),
        stacklevel=level,
    )


class PollHandle:
    """The FD's handle on its runtime pollDesc: the methods. ``runtime_ctx`` is held by the
    class that mixes this in, which is also the FD's fdMutex (fd_unix's ``_Core`` and
    ``_CCore``; see the module docstring).

    ``runtime_ctx`` is written by init before the FD is shared, cleared by close when no op
    remains. Benign race: FD's C fast paths read it holding no reference; the C loop takes
    the read or write lock before it uses it, and that fails once the FD is closed.

    Go: internal/poll/fd_poll_runtime.go pollDesc
    """

    __slots__ = ()
    runtime_ctx: PollDesc | None  # the holder's field

    def init(self, sysfd: int, rt: Runtime | None = None) -> int:
        """Register sysfd with rt's poller (by default the default runtime's); returns 0 or
        the backend's errno.

        Go: internal/poll/fd_poll_runtime.go pollDesc.init
        """
        pd, errno = netpoll.runtime_poll_open(sysfd, rt if rt is not None else get_runtime())
        if errno != 0:
            return errno
        # The holder declares the slot (mypy checks this class's empty __slots__ alone).
        self.runtime_ctx = pd  # type: ignore[misc]
        return 0

    def close(self) -> None:
        """Go: internal/poll/fd_poll_runtime.go pollDesc.close"""
        pd = self.runtime_ctx
        if pd is None:
            return
        netpoll.runtime_poll_close(pd)
        self.runtime_ctx = None  # type: ignore[misc]

    def evict(self) -> None:
        """Wake every thread parked on the descriptor; they fail with the closing error.

        Go: internal/poll/fd_poll_runtime.go pollDesc.evict
        """
        pd = self.runtime_ctx
        if pd is None:
            return
        netpoll.runtime_poll_unblock(pd)

    def wake(self, mode: str) -> None:
        """Ready the threads parked in mode ("r", "w" or "rw") as an I/O event would: each
        retries its syscall and takes whatever the kernel says now (after a shutdown: EOF or
        EPIPE), or parks again.

        Go: none (FD.Shutdown leaves the wake-up to the kernel's edge; see FD.shutdown)
        """
        pd = self.runtime_ctx
        if pd is not None:
            pd.rt.netpollready(pd, mode)

    def prepare(self, mode: str, is_file: bool) -> None:
        """Go: internal/poll/fd_poll_runtime.go pollDesc.prepare"""
        pd = self.runtime_ctx
        if pd is None:
            return
        res = netpoll.runtime_poll_reset(pd, mode)
        if res != POLL_NO_ERROR:
            raise convert_err(res, is_file, pd)

    def prepare_read(self, is_file: bool) -> None:
        """Go: internal/poll/fd_poll_runtime.go pollDesc.prepareRead"""
        self.prepare("r", is_file)

    def prepare_write(self, is_file: bool) -> None:
        """Go: internal/poll/fd_poll_runtime.go pollDesc.prepareWrite"""
        self.prepare("w", is_file)

    def wait(self, mode: str, is_file: bool) -> None:
        """Wait until the descriptor is ready for mode, or raise the reason it never will be.

        Go: internal/poll/fd_poll_runtime.go pollDesc.wait
        """
        pd = self.runtime_ctx
        if pd is None:
            raise OSError("waiting for unsupported file type")
        hook = pd.rt.hooks.after_eagain
        if hook is not None:
            hook(pd, mode)
        res = netpoll.runtime_poll_wait(pd, mode)
        if res != POLL_NO_ERROR:
            raise convert_err(res, is_file, pd)

    def wait_read(self, is_file: bool) -> None:
        """Go: internal/poll/fd_poll_runtime.go pollDesc.waitRead"""
        self.wait("r", is_file)

    def wait_write(self, is_file: bool) -> None:
        """Go: internal/poll/fd_poll_runtime.go pollDesc.waitWrite"""
        self.wait("w", is_file)

    def pollable(self) -> bool:
        """Go: internal/poll/fd_poll_runtime.go pollDesc.pollable"""
        return self.runtime_ctx is not None

    def set_deadline(self, d: float, mode: str) -> None:
        """Go: internal/poll/fd_poll_runtime.go setDeadlineImpl (its runtime call)"""
        pd = self.runtime_ctx
        if pd is not None:
            netpoll.runtime_poll_set_deadline(pd, d, mode)
