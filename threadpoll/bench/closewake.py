"""Scenario: close-to-wake. A thread blocks in a read; another records t0 and closes; the reader
records t1 when its call returns or raises. Samples are t1 - t0 in microseconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import socket
import tempfile
import threading
import time
from typing import Any, Callable

from threadpoll.bench.common import (
    STDLIB_CLOSE_WAIT_S,
    Outcome,
    RunCtx,
    _close,
    _conn_pair,
    _hard_close,
    _import,
    _join_or_unstick,
    _Thread,
    _tps_pair,
)


def _closewake_threads(
    make_pair: Callable[[], tuple[Any, Any]],
    read: Callable[[Any], object],
    close: Callable[[Any], None],
    ctx: RunCtx,
    wake_wait: float,
) -> Outcome:
    """``make_pair() -> (peer, reader_end)``. A reader that is not woken within ``wake_wait``
    is released by data from the peer and counted as a miss."""
    samples: list[float] = []
    misses = 0
    late_data = 0
    for _ in range(ctx.max_ops):
        peer, r = make_pair()
        entered = threading.Event()
        woke: list[float] = []
        got: list[object] = []

        def reader(
            r: Any = r,
            entered: threading.Event = entered,
            woke: list[float] = woke,
            got: list[object] = got,
        ) -> None:
            entered.set()
            try:
                got.append(read(r))
            except Exception as e:  # the closing error is the expected outcome
                # Its type, not the error: kept with its traceback, the error would hold
                # this frame, whose ``got`` holds the error, a cycle per sample that only
                # the cyclic GC frees, in collections that land in later samples' windows.
                got.append(type(e))
            woke.append(time.perf_counter())

        try:
            t = _Thread(reader, "bench-closewake-reader")
            if not entered.wait(5.0):
                raise RuntimeError("the reader thread did not start")
            time.sleep(0.001)  # let it reach the blocking call and park there
            t0 = time.perf_counter()
            close(r)
            if t.join(wake_wait):
                samples.append((woke[0] - t0) * 1e6)
                continue
            misses += 1
            with contextlib.suppress(OSError):
                peer.sendall(b"z")  # a stdlib recv still blocked on the closed socket gets this
            _join_or_unstick([t], 2.0, functools.partial(_hard_close, peer), "the closewake reader")
            late_data += got[:1] == [b"z"]
        finally:
            _close(peer, r)
    note = ""
    if misses:
        note = (
            f"not woken within {wake_wait * 1e3:.0f} ms in {misses}/{ctx.max_ops}; "
            f"{late_data} then returned data sent after the close"
        )
    return Outcome(samples=samples, note=note)


def _stdlib_shutdown_close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


def _cw_stdlib(ctx: RunCtx) -> Outcome:
    return _closewake_threads(
        socket.socketpair, lambda r: r.recv(1), _stdlib_shutdown_close, ctx, 1.0
    )


def _cw_stdlib_close_only(ctx: RunCtx) -> Outcome:
    ctx = dataclasses.replace(ctx, max_ops=min(ctx.max_ops, 3))  # each try costs the wait
    return _closewake_threads(
        socket.socketpair, lambda r: r.recv(1), lambda r: r.close(), ctx, STDLIB_CLOSE_WAIT_S
    )


def _cw_trio(ctx: RunCtx) -> Outcome:
    trio = _import("trio")
    testing = _import("trio.testing")

    async def go() -> list[float]:
        samples: list[float] = []
        for _ in range(ctx.max_ops):
            peer, r = socket.socketpair()
            try:
                tr = trio.socket.from_stdlib_socket(r)
                woke: list[float] = []

                async def reader(tr: Any = tr, woke: list[float] = woke) -> None:
                    with contextlib.suppress(trio.ClosedResourceError, OSError):
                        await tr.recv(1)
                    woke.append(time.perf_counter())

                with trio.fail_after(5.0):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(reader)
                        await testing.wait_all_tasks_blocked()
                        t0 = time.perf_counter()
                        tr.close()
                samples.append((woke[0] - t0) * 1e6)
            finally:
                _close(peer, r)
        return samples

    return Outcome(samples=trio.run(go))


def _gevent_closewake(ctx: RunCtx) -> Outcome:  # runs in a child process
    gevent = _import("gevent")
    gsocket = _import("gevent.socket")
    samples: list[float] = []
    for _ in range(ctx.max_ops):
        peer, r = socket.socketpair()
        gr = gsocket.socket(fileno=r.detach())
        woke: list[float] = []

        def reader(gr: Any = gr, woke: list[float] = woke) -> None:
            with contextlib.suppress(Exception):
                gr.recv(1)
            woke.append(time.perf_counter())

        try:
            g = gevent.spawn(reader)
            gevent.sleep(0)  # the reader runs until it waits in recv
            t0 = time.perf_counter()
            gr.close()
            g.join(timeout=1.0)
            if not woke:
                raise RuntimeError("close() did not wake the gevent reader")
            samples.append((woke[0] - t0) * 1e6)
        finally:
            _close(peer, gr)
    return Outcome(samples=samples)


def _cw_tps(ctx: RunCtx) -> Outcome:
    return _closewake_threads(
        lambda: _tps_pair("unix"), lambda r: r.recv(1), lambda r: r.close(), ctx, 1.0
    )


def _cw_conn(ctx: RunCtx) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="tpbench") as tmp:
        return _closewake_threads(
            lambda: _conn_pair("unix", tmp), lambda r: r.read(1), lambda r: r.close(), ctx, 1.0
        )
