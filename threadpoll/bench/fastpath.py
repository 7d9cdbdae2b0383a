"""Scenario: fast path. recv(64) with data already buffered: the cost of a call that never waits."""

from __future__ import annotations

import asyncio
import os
import selectors
import tempfile
import threading
import time
from typing import Any, Callable, cast

from threadpoll.bench.common import (
    FASTPATH_BATCH,
    Outcome,
    RunCtx,
    _close,
    _conn_pair,
    _import,
    _stdlib_pair,
    _tps_pair,
)


def _fp_loop(
    recv: Callable[[int], object], fill: Callable[[bytes], object], ctx: RunCtx
) -> Outcome:
    chunk = b"x" * (64 * FASTPATH_BATCH)
    fill(chunk)  # warm-up batch
    for _ in range(FASTPATH_BATCH):
        recv(64)
    total = 0.0
    ops = 0
    stop_at = time.perf_counter() + ctx.window_s
    while True:
        fill(chunk)
        t0 = time.perf_counter()
        for _ in range(FASTPATH_BATCH):
            recv(64)
        total += time.perf_counter() - t0
        ops += FASTPATH_BATCH
        if ops >= ctx.max_ops or time.perf_counter() >= stop_at:
            return Outcome(value=total / ops * 1e6)


def _fp_stdlib(ctx: RunCtx) -> Outcome:
    a, b = _stdlib_pair(ctx.params["transport"])
    try:
        return _fp_loop(b.recv, a.sendall, ctx)
    finally:
        _close(a, b)


def _fp_timeout(ctx: RunCtx) -> Outcome:
    a, b = _stdlib_pair(ctx.params["transport"])
    try:
        b.settimeout(5.0)
        return _fp_loop(b.recv, a.sendall, ctx)
    finally:
        _close(a, b)


def _select_recv(sel: selectors.BaseSelector, s: Any, timeout: float) -> Callable[[int], bytes]:
    """recv preceded by a wait for readability on this thread's own selector."""

    def recv(n: int) -> bytes:
        if not sel.select(timeout):
            raise TimeoutError("select timed out")
        return cast(bytes, s.recv(n))

    return recv


def _fp_select(ctx: RunCtx) -> Outcome:
    a, b = _stdlib_pair(ctx.params["transport"])
    sel = selectors.DefaultSelector()
    try:
        sel.register(b, selectors.EVENT_READ)
        return _fp_loop(_select_recv(sel, b, ctx.hard_s), a.sendall, ctx)
    finally:
        sel.close()
        _close(a, b)


async def _fp_loop_async(
    recv: Callable[[int], Any], fill: Callable[[bytes], object], ctx: RunCtx
) -> Outcome:
    chunk = b"x" * (64 * FASTPATH_BATCH)
    fill(chunk)
    for _ in range(FASTPATH_BATCH):
        await recv(64)
    total = 0.0
    ops = 0
    stop_at = time.perf_counter() + ctx.window_s
    while True:
        fill(chunk)
        t0 = time.perf_counter()
        for _ in range(FASTPATH_BATCH):
            await recv(64)
        total += time.perf_counter() - t0
        ops += FASTPATH_BATCH
        if ops >= ctx.max_ops or time.perf_counter() >= stop_at:
            return Outcome(value=total / ops * 1e6)


def _fp_asyncio(ctx: RunCtx) -> Outcome:
    a, b = _stdlib_pair(ctx.params["transport"])

    async def go() -> Outcome:
        loop = asyncio.get_running_loop()
        b.setblocking(False)
        return await _fp_loop_async(lambda n: loop.sock_recv(b, n), a.sendall, ctx)

    try:
        return asyncio.run(go())
    finally:
        _close(a, b)


def _fp_trio(ctx: RunCtx) -> Outcome:
    trio = _import("trio")
    a, b = _stdlib_pair(ctx.params["transport"])

    async def go() -> Outcome:
        tb = trio.socket.from_stdlib_socket(b)
        return await _fp_loop_async(tb.recv, a.sendall, ctx)

    try:
        return cast(Outcome, trio.run(go))
    finally:
        _close(a, b)


def _gevent_fastpath(ctx: RunCtx) -> Outcome:  # runs in a child process
    gsocket = _import("gevent.socket")
    a, b = _stdlib_pair(ctx.params["transport"])
    gb = gsocket.socket(fileno=b.detach())
    try:
        return _fp_loop(gb.recv, a.sendall, ctx)
    finally:
        _close(a, gb)


def _fp_floor_run(ctx: RunCtx, lock: threading.Lock | None) -> Outcome:
    """A reference floor: read(2) on a non-blocking descriptor from one Python function, with
    ``lock`` (if any) held around it by a with block."""
    a, b = _stdlib_pair(ctx.params["transport"])
    b.setblocking(False)
    fd = b.fileno()
    read = os.read

    def recv(n: int) -> bytes:
        try:
            return read(fd, n)
        except BlockingIOError:
            raise RuntimeError("the fast path found no data") from None

    def recv_locked(n: int) -> bytes:
        with lock:  # type: ignore[union-attr]
            try:
                return read(fd, n)
            except BlockingIOError:
                raise RuntimeError("the fast path found no data") from None

    try:
        return _fp_loop(recv if lock is None else recv_locked, a.sendall, ctx)
    finally:
        _close(a, b)


def _fp_floor(ctx: RunCtx) -> Outcome:
    """Reference: the least any pure-Python wrapper that can wait elsewhere on EAGAIN does."""
    return _fp_floor_run(ctx, None)


def _fp_floor_lock(ctx: RunCtx) -> Outcome:
    """Reference: the floor plus one ``with lock`` around the call, the cheapest way a close
    from another thread can be kept from releasing the descriptor number mid-call (a bare
    acquire/release pair leaves a window where Ctrl-C strands the lock)."""
    return _fp_floor_run(ctx, threading.Lock())


def _fp_tps(ctx: RunCtx) -> Outcome:
    a, b = _tps_pair(ctx.params["transport"])
    try:
        return _fp_loop(b.recv, a.sendall, ctx)
    finally:
        _close(a, b)


def _fp_conn(ctx: RunCtx) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="tpbench") as tmp:
        a, b = _conn_pair(ctx.params["transport"], tmp)
        try:
            return _fp_loop(b.read, a.write, ctx)
        finally:
            _close(a, b)
