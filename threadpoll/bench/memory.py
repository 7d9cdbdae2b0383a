"""Scenario: memory per open descriptor: tracemalloc's view of the Python heap (kernel socket
buffers and thread stacks are not in it) while N connected pairs are open.

threadpoll's pollDescs are never freed: a closed descriptor's goes back to the runtime's
pollcache (as Go's), and the next open takes it from there. So only a process's first round
makes them; later rounds (the median, with 3 rounds) reuse them and leave them out. The JSON
output's ``rounds`` has every round, the first included.
"""

from __future__ import annotations

import gc
import socket
import tracemalloc
from typing import Any, Callable

from threadpoll.bench.common import Outcome, RunCtx, Skip, _close, _fds_needed, _import, _tps_pair


def _mem_measure(open_pair: Callable[[], tuple[Any, Any]], ctx: RunCtx) -> Outcome:
    n = ctx.max_ops
    note = ""
    reason = _fds_needed(2 * n + 64)
    if reason is not None:
        n = max(10, n // 10)
        note = f"N reduced to {n}: {reason}"
        if _fds_needed(2 * n + 64) is not None:
            raise Skip(reason)
    _close(*open_pair())  # warm-up: lazy runtime set-up (poller, caches) is not per descriptor
    pairs: list[tuple[Any, Any]] = []
    tracing = tracemalloc.is_tracing()
    gc.collect()
    if not tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            pairs.append(open_pair())
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        if not tracing:
            tracemalloc.stop()
        for a, b in pairs:
            _close(a, b)
    return Outcome(value=(after - before) / (2 * n), note=note)


def _mem_stdlib(ctx: RunCtx) -> Outcome:
    return _mem_measure(socket.socketpair, ctx)


_REUSED = "pollDescs reused after round 1"


def _mem_tps(ctx: RunCtx) -> Outcome:
    out = _mem_measure(lambda: _tps_pair("unix"), ctx)
    out.note = "; ".join(filter(None, [_REUSED, out.note]))
    return out


def _mem_conn(ctx: RunCtx) -> Outcome:
    tp = _import("threadpoll")
    ln = tp.listen("tcp", "127.0.0.1:0")
    address = f"127.0.0.1:{ln.addr[1]}"

    def open_pair() -> tuple[Any, Any]:
        return tp.dial("tcp", address, timeout=5.0), ln.accept()

    try:
        out = _mem_measure(open_pair, ctx)
    finally:
        _close(ln)
    out.note = "; ".join(filter(None, ["TCP pairs via dial + accept", _REUSED, out.note]))
    return out
