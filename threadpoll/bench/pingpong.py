"""Scenario: ping-pong. One side sends `size` bytes and waits for them back; the other echoes."""

from __future__ import annotations

import asyncio
import math
import selectors
import socket
import tempfile
import time
from typing import Any, Callable, cast

from threadpoll.bench.common import (
    Outcome,
    RunCtx,
    _close,
    _conn_pair,
    _hard_close,
    _import,
    _join_or_unstick,
    _stdlib_pair,
    _switches,
    _Thread,
    _tps_pair,
)
from threadpoll.bench.fastpath import _select_recv


def _pp_loop(
    send: Callable[[bytes], object],
    recv: Callable[[int], bytes],
    msg: bytes,
    max_ops: int,
    stop_at: float,
) -> int:
    size = len(msg)
    done = 0
    while done < max_ops:
        send(msg)
        got = 0
        while got < size:
            data = recv(size - got)
            if not data:
                raise ConnectionError("peer closed during ping-pong")
            got += len(data)
        done += 1
        if not done & 15 and time.perf_counter() >= stop_at:
            break
    return done


def _pp_echo(send: Callable[[bytes], object], recv: Callable[[int], bytes]) -> None:
    while True:
        data = recv(65536)
        if not data:
            return
        send(data)


def _pp_threads(
    a: Any,
    b: Any,
    a_recv: Callable[[int], bytes],
    b_recv: Callable[[int], bytes],
    a_send: Callable[[bytes], object],
    b_send: Callable[[bytes], object],
    ctx: RunCtx,
) -> Outcome:
    """Round trips between this thread (a) and an echo thread (b); closes a and b."""
    msg = b"x" * ctx.params["size"]
    echo = _Thread(lambda: _pp_echo(b_send, b_recv), "bench-pingpong-echo")
    try:
        _pp_loop(a_send, a_recv, msg, 32, math.inf)  # warm-up
        t0, cpu0, sw0 = time.perf_counter(), time.process_time(), _switches()
        done = _pp_loop(a_send, a_recv, msg, ctx.max_ops, t0 + ctx.window_s)
        elapsed = time.perf_counter() - t0
        cpu, sw = time.process_time() - cpu0, _switches() - sw0
    finally:
        _close(a)  # the echo thread reads EOF and returns
        try:
            _join_or_unstick([echo], 5.0, lambda: _hard_close(b), "the echo thread")
        finally:
            _close(b)
    if echo.exc is not None:
        raise echo.exc
    return Outcome(
        value=elapsed / done * 1e6,
        extra={"cpu_us_per_req": cpu / done * 1e6, "ctxsw_per_req": sw / done},
    )


def _pp_stdlib(ctx: RunCtx) -> Outcome:
    a, b = _stdlib_pair(ctx.params["transport"])
    return _pp_threads(a, b, a.recv, b.recv, a.sendall, b.sendall, ctx)


def _pp_timeout(ctx: RunCtx) -> Outcome:
    a, b = _stdlib_pair(ctx.params["transport"])
    a.settimeout(5.0)
    b.settimeout(5.0)
    return _pp_threads(a, b, a.recv, b.recv, a.sendall, b.sendall, ctx)


def _pp_select(ctx: RunCtx) -> Outcome:
    a, b = _stdlib_pair(ctx.params["transport"])
    sel_a, sel_b = selectors.DefaultSelector(), selectors.DefaultSelector()
    try:
        sel_a.register(a, selectors.EVENT_READ)
        sel_b.register(b, selectors.EVENT_READ)
        return _pp_threads(
            a,
            b,
            _select_recv(sel_a, a, ctx.hard_s),
            _select_recv(sel_b, b, ctx.hard_s),
            a.sendall,
            b.sendall,
            ctx,
        )
    finally:
        sel_a.close()
        sel_b.close()


def _pp_asyncio(ctx: RunCtx) -> Outcome:
    a, b = _stdlib_pair(ctx.params["transport"])
    msg = b"x" * ctx.params["size"]

    async def go() -> Outcome:
        loop = asyncio.get_running_loop()
        a.setblocking(False)
        b.setblocking(False)

        async def echo() -> None:
            while True:
                data = await loop.sock_recv(b, 65536)
                if not data:
                    return
                await loop.sock_sendall(b, data)

        async def roundtrips(n: int, stop_at: float) -> int:
            done = 0
            while done < n:
                await loop.sock_sendall(a, msg)
                got = 0
                while got < len(msg):
                    data = await loop.sock_recv(a, len(msg) - got)
                    if not data:
                        raise ConnectionError("peer closed during ping-pong")
                    got += len(data)
                done += 1
                if not done & 15 and time.perf_counter() >= stop_at:
                    break
            return done

        task = asyncio.ensure_future(echo())
        await roundtrips(32, math.inf)
        t0 = time.perf_counter()
        done = await roundtrips(ctx.max_ops, t0 + ctx.window_s)
        elapsed = time.perf_counter() - t0
        a.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(task, 5.0)
        return Outcome(value=elapsed / done * 1e6)

    try:
        return asyncio.run(go())
    finally:
        _close(a, b)


async def _trio_sendall(s: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[await s.send(view) :]


def _pp_trio(ctx: RunCtx) -> Outcome:
    trio = _import("trio")
    a, b = _stdlib_pair(ctx.params["transport"])
    msg = b"x" * ctx.params["size"]

    async def go() -> Outcome:
        ta = trio.socket.from_stdlib_socket(a)
        tb = trio.socket.from_stdlib_socket(b)

        async def echo() -> None:
            while True:
                data = await tb.recv(65536)
                if not data:
                    return
                await _trio_sendall(tb, data)

        async def roundtrips(n: int, stop_at: float) -> int:
            done = 0
            while done < n:
                await _trio_sendall(ta, msg)
                got = 0
                while got < len(msg):
                    data = await ta.recv(len(msg) - got)
                    if not data:
                        raise ConnectionError("peer closed during ping-pong")
                    got += len(data)
                done += 1
                if not done & 15 and time.perf_counter() >= stop_at:
                    break
            return done

        with trio.fail_after(ctx.hard_s):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo)
                await roundtrips(32, math.inf)
                t0 = time.perf_counter()
                done = await roundtrips(ctx.max_ops, t0 + ctx.window_s)
                elapsed = time.perf_counter() - t0
                ta.shutdown(socket.SHUT_WR)
        return Outcome(value=elapsed / done * 1e6)

    try:
        return cast(Outcome, trio.run(go))
    finally:
        _close(a, b)


def _gevent_pingpong(ctx: RunCtx) -> Outcome:  # runs in a child process
    gevent = _import("gevent")
    gsocket = _import("gevent.socket")
    sa, sb = _stdlib_pair(ctx.params["transport"])
    a = gsocket.socket(fileno=sa.detach())
    b = gsocket.socket(fileno=sb.detach())
    msg = b"x" * ctx.params["size"]
    try:
        echo = gevent.spawn(_pp_echo, b.sendall, b.recv)
        _pp_loop(a.sendall, a.recv, msg, 32, math.inf)
        t0 = time.perf_counter()
        done = _pp_loop(a.sendall, a.recv, msg, ctx.max_ops, t0 + ctx.window_s)
        elapsed = time.perf_counter() - t0
        a.shutdown(socket.SHUT_WR)
        echo.join(timeout=5.0)
        return Outcome(value=elapsed / done * 1e6)
    finally:
        _close(a, b)


def _pp_tps(ctx: RunCtx) -> Outcome:
    a, b = _tps_pair(ctx.params["transport"])
    return _pp_threads(a, b, a.recv, b.recv, a.sendall, b.sendall, ctx)


def _pp_conn(ctx: RunCtx) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="tpbench") as tmp:
        a, b = _conn_pair(ctx.params["transport"], tmp)
        return _pp_threads(a, b, a.read, b.read, a.write, b.write, ctx)
