"""Scenario: deadline overshoot. Read with nothing to read and a limit DEADLINE_S away; the sample
is (time the call returned - the limit) in microseconds, on time.monotonic().
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import tempfile
import time
from typing import Any, Callable

from threadpoll.bench.common import (
    DEADLINE_S,
    Outcome,
    RunCtx,
    _close,
    _conn_pair,
    _import,
    _tps_pair,
)

_TIMEOUTS = (socket.timeout, TimeoutError)


def _overshoot(start_read: Callable[[], float], ctx: RunCtx) -> Outcome:
    """``start_read()`` arms the limit, reads until it fires and returns the limit's time."""
    samples = []
    for _ in range(ctx.max_ops):
        limit = start_read()
        samples.append((time.monotonic() - limit) * 1e6)
    return Outcome(samples=samples)


def _timeout_overshoot(r: Any, ctx: RunCtx) -> Outcome:
    """Overshoot of ``r.recv(1)`` under ``r.settimeout(DEADLINE_S)`` (a per-call timeout)."""
    r.settimeout(DEADLINE_S)

    def once() -> float:
        limit = time.monotonic() + DEADLINE_S
        _expect_timeout(lambda: r.recv(1))
        return limit

    return _overshoot(once, ctx)


def _deadline_overshoot(r: Any, read: Callable[[], object], ctx: RunCtx) -> Outcome:
    """Overshoot of ``read()`` under ``r.set_read_deadline`` (threadpoll's absolute limit)."""

    def once() -> float:
        limit = time.monotonic() + DEADLINE_S
        r.set_read_deadline(limit)
        _expect_timeout(read)
        return limit

    return _overshoot(once, ctx)


def _expect_timeout(read: Callable[[], object]) -> None:
    try:
        read()
    except _TIMEOUTS:
        return
    raise RuntimeError("the read returned instead of timing out")


def _dl_stdlib(ctx: RunCtx) -> Outcome:
    peer, r = socket.socketpair()
    try:
        return _timeout_overshoot(r, ctx)
    finally:
        _close(peer, r)


def _dl_select(ctx: RunCtx) -> Outcome:
    peer, r = socket.socketpair()
    sel = selectors.DefaultSelector()
    try:
        sel.register(r, selectors.EVENT_READ)

        def once() -> float:
            limit = time.monotonic() + DEADLINE_S
            if sel.select(DEADLINE_S):
                raise RuntimeError("select saw data that nobody sent")
            return limit

        return _overshoot(once, ctx)
    finally:
        sel.close()
        _close(peer, r)


def _dl_asyncio(ctx: RunCtx) -> Outcome:
    peer, r = socket.socketpair()

    async def go() -> list[float]:
        loop = asyncio.get_running_loop()
        r.setblocking(False)
        samples = []
        for _ in range(ctx.max_ops):
            limit = time.monotonic() + DEADLINE_S
            try:
                await asyncio.wait_for(loop.sock_recv(r, 1), DEADLINE_S)
            except asyncio.TimeoutError:
                samples.append((time.monotonic() - limit) * 1e6)
            else:
                raise RuntimeError("the read returned instead of timing out")
        return samples

    try:
        return Outcome(samples=asyncio.run(go()))
    finally:
        _close(peer, r)


def _dl_trio(ctx: RunCtx) -> Outcome:
    trio = _import("trio")
    peer, r = socket.socketpair()

    async def go() -> list[float]:
        tr = trio.socket.from_stdlib_socket(r)
        samples = []
        for _ in range(ctx.max_ops):
            deadline = trio.current_time() + DEADLINE_S
            with trio.move_on_at(deadline) as scope:
                await tr.recv(1)
            if not scope.cancelled_caught:
                raise RuntimeError("the read returned instead of timing out")
            samples.append((trio.current_time() - deadline) * 1e6)
        return samples

    try:
        return Outcome(samples=trio.run(go))
    finally:
        _close(peer, r)


def _gevent_deadline(ctx: RunCtx) -> Outcome:  # runs in a child process
    gsocket = _import("gevent.socket")
    peer, r = socket.socketpair()
    gr = gsocket.socket(fileno=r.detach())
    try:
        return _timeout_overshoot(gr, ctx)
    finally:
        _close(peer, gr)


def _dl_tps_deadline(ctx: RunCtx) -> Outcome:
    peer, r = _tps_pair("unix")
    try:
        return _deadline_overshoot(r, lambda: r.recv(1), ctx)
    finally:
        _close(peer, r)


def _dl_tps_timeout(ctx: RunCtx) -> Outcome:
    peer, r = _tps_pair("unix")
    try:
        return _timeout_overshoot(r, ctx)
    finally:
        _close(peer, r)


def _dl_conn(ctx: RunCtx) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="tpbench") as tmp:
        peer, r = _conn_pair("unix", tmp)
        try:
            return _deadline_overshoot(r, lambda: r.read(1), ctx)
        finally:
            _close(peer, r)
