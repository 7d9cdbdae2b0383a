"""Helpers for testing code that uses threadpoll.

- ``expire_all_deadlines()``: fast-forward the clock for every descriptor with a deadline, so
  a test of timeout handling needs no real waiting.
- ``close_all()``: close every descriptor threadpoll owns (a test's tear-down, or to check that
  code survives its connections being closed under it).
- ``wait_parked(obj, mode)``: wait until a thread is parked on a descriptor, the
  deterministic way to know "the reader is now blocked" (instead of sleeping).
- ``parked()``: who is parked where (the entries ``threadpoll.dump()`` prints).

Both ``expire_all_deadlines`` and ``close_all`` act through each FD, exactly as a call to its
``set_deadline`` or ``close`` from another thread would, so every promise holds: parked
threads wake with ``DeadlineExceededError`` or the closing error; ``close_all`` returns once
each descriptor's in-flight operations have left and its fd is closed.
"""

from __future__ import annotations

import time
from typing import Any, cast

from threadpoll._diag import Parked, parked
from threadpoll._poll import fd_unix
from threadpoll._runtime import netpoll, netpoll_c
from threadpoll._runtime.netpoll import EXPIRED, NO_DEADLINE, PD_PARKED, PollDesc
from threadpoll.errors import ClosingError

__all__ = ["expire_all_deadlines", "close_all", "wait_parked", "parked", "Parked"]


def _live_fds() -> list[Any]:
    """Every open FD, from internal/poll's registry."""
    return fd_unix.live_fds()


def expire_all_deadlines() -> int:
    """Move every pending deadline (each direction of each open descriptor that has one, not
    yet expired) to "expired", as if the clock had reached it: threads parked on them wake
    with ``DeadlineExceededError`` and later operations fail until the deadline is changed.
    Descriptors without a deadline are untouched. Returns how many deadlines it expired.
    """
    n = 0
    for fd in _live_fds():
        try:
            fd.incref()  # holds the descriptor open (and its pollDesc ours) meanwhile
        except ClosingError:
            continue
        try:
            pd: PollDesc | None = fd.pd.runtime_ctx
            if pd is None:
                continue
            with pd.lock:
                pending = (("r", pd.rd), ("w", pd.wd))
                modes = [m for m, d in pending if d not in (NO_DEADLINE, EXPIRED)]
            for m in modes:
                netpoll.runtime_poll_set_deadline(pd, EXPIRED, m)
                n += 1
        finally:
            fd.decref()
    return n


def close_all() -> int:
    """Close every open threadpoll descriptor (``FD.close`` from this thread: parked threads
    wake with the closing error, and each close returns once the descriptor is gone).
    Returns how many it closed. Objects that owned them (a ``Conn``, a socket) see the
    closing error on their next operation.
    """
    n = 0
    for fd in _live_fds():
        try:
            fd.close()
        except ClosingError:
            continue  # closed meanwhile by its owner
        n += 1
    return n


def _find_pd(obj: Any) -> PollDesc | None:
    """The open pollDesc behind an FD, a front object with one, or a file descriptor number."""
    if isinstance(obj, int) and not isinstance(obj, bool):
        for fd in _live_fds():
            if fd.sysfd == obj:
                pd: PollDesc | None = fd.pd.runtime_ctx
                return pd
        return None
    seen = 0
    while not hasattr(obj, "pd") and seen < 4:
        inner = None
        for attr in ("_fd", "fd", "pfd", "_pfd"):
            cand = getattr(obj, attr, None)
            if cand is not None and not callable(cand) and not isinstance(cand, int):
                inner = cand
                break
        if inner is None:
            fileno = getattr(obj, "fileno", None)
            return _find_pd(fileno()) if callable(fileno) else None
        obj, seen = inner, seen + 1
    handle = getattr(obj, "pd", None)
    pd = getattr(handle, "runtime_ctx", None)
    return cast(PollDesc, pd) if isinstance(pd, netpoll_c.POLLDESC_TYPES) else None


def wait_parked(obj: Any, mode: str = "r", timeout: float = 5.0) -> None:
    """Wait until a thread is parked on ``obj`` in ``mode`` ("r" or "w"), or raise
    ``TimeoutError`` after ``timeout`` seconds. ``obj`` is a threadpoll object (FD, Conn, File,
    socket) or a file descriptor number. This observes the pollDesc state; it is how a test
    knows a thread is blocked before it acts (closes, writes, moves a deadline).
    """
    if mode not in ("r", "w"):
        raise ValueError(f"mode must be 'r' or 'w', not {mode!r}")
    pd = _find_pd(obj)
    if pd is None:
        raise ValueError(f"{obj!r} is not an open, pollable threadpoll descriptor")
    end = time.monotonic() + timeout
    while (pd.rg if mode == "r" else pd.wg) != PD_PARKED:
        if time.monotonic() > end:
            raise TimeoutError(f"no thread parked in mode {mode!r} on fd {pd.fd} in {timeout} s")
        time.sleep(0.0005)  # polling the state, not sleeping as synchronisation
