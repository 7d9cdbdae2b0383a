"""What tracing costs when it is off: ``python stress/trace_cost.py`` (not a test).

Every transition site in the runtime reads ``if trace.enabled:``. This script measures that
cost two ways and prints the numbers the benchmark reports:

1. The flag test alone: ``timeit`` of ``if trace.enabled: pass`` against ``pass``.
2. End to end, against a copy of threadpoll whose transition sites are compiled out
   (``if trace.enabled:`` rewritten to ``if False:``, which CPython drops at compile time):
   a read on a socketpair with data waiting (the fast path), and a ping-pong round trip
   between two threads, in which both park and are readied by the poller. Each variant runs
   in its own process, interleaved over several rounds; medians are reported.

It also counts the transitions each operation makes (with tracing on), so the per-operation
overhead can be checked against flag-test cost x transitions.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import timeit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, socket, sys, threading, time
from threadpoll._poll.fd_unix import FD
from threadpoll._runtime import trace

def pair():
    a, b = socket.socketpair()
    return FD(a.detach(), net="unix"), FD(b.detach(), net="unix")

def fast_read(n):
    a, b = pair()
    payload = b"x" * 64
    t0 = time.perf_counter()
    for _ in range(n):
        b.write(payload)
        a.read(64)
    dt = time.perf_counter() - t0
    a.close(); b.close()
    return dt / n * 1e9

def ping_pong(n):
    a, b = pair()
    def echo():
        for _ in range(n):
            b.write(b.read(1))
    t = threading.Thread(target=echo); t.start()
    t0 = time.perf_counter()
    for _ in range(n):
        a.write(b"p"); a.read(1)
    dt = time.perf_counter() - t0
    t.join(); a.close(); b.close()
    return dt / n * 1e9

out = {"fast_read_ns": fast_read(int(sys.argv[1])), "ping_pong_ns": ping_pong(int(sys.argv[2]))}
if hasattr(trace, "start") and "count" in sys.argv:
    a, b = pair()
    b.write(b"x" * 64); trace.start(); a.read(64); out["fast_read_transitions"] = len(trace.stop())
    def echo():
        b.write(b.read(1))
    t = threading.Thread(target=echo); t.start()
    trace.start(); a.write(b"p"); a.read(1); t.join()
    out["ping_pong_transitions"] = len(trace.stop())
    a.close(); b.close()
print(json.dumps(out))
"""


def _compiled_out_copy(dest: str) -> int:
    """Copy the package with every ``if trace.enabled:`` made ``if False:``; returns how many
    sites were rewritten."""
    shutil.copytree(os.path.join(ROOT, "threadpoll"), os.path.join(dest, "threadpoll"))
    n = 0
    for dirpath, _, files in os.walk(os.path.join(dest, "threadpoll")):
        for f in files:
            if f.endswith(".py"):
                p = os.path.join(dirpath, f)
                with open(p) as fh:
                    src = fh.read()
                n += src.count("if trace.enabled:")
                with open(p, "w") as fh:
                    fh.write(src.replace("if trace.enabled:", "if False:"))
    return n


def _run(path: str, reads: int, pongs: int, count: bool) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=path)
    args = [sys.executable, "-c", CHILD, str(reads), str(pongs)] + (["count"] if count else [])
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True, cwd=path)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    # 1. The flag test alone.
    # ``trace`` as a global, as it is in the runtime's modules (LOAD_GLOBAL + LOAD_ATTR).
    from threadpoll._runtime import trace

    g = {"trace": trace}
    n = 5_000_000
    flag = min(timeit.repeat("if trace.enabled: pass", number=n, repeat=7, globals=g)) / n * 1e9
    empty = min(timeit.repeat("pass", number=n, repeat=7, globals=g)) / n * 1e9
    print(f"flag test: {flag - empty:.1f} ns per transition site ({flag:.1f} ns vs {empty:.1f})")

    # 2. End to end, interleaved processes.
    with tempfile.TemporaryDirectory() as tmp:
        sites = _compiled_out_copy(tmp)
        counts = _run(ROOT, 2000, 200, count=True)
        rounds: dict[str, list[dict[str, float]]] = {"with flag": [], "compiled out": []}
        for _ in range(7):
            rounds["with flag"].append(_run(ROOT, 50_000, 5_000, count=False))
            rounds["compiled out"].append(_run(tmp, 50_000, 5_000, count=False))
    print(f"sites rewritten: {sites}")
    print(
        f"transitions: fast read {counts['fast_read_transitions']:.0f}, "
        f"ping-pong round trip {counts['ping_pong_transitions']:.0f}"
    )
    med = {
        k: {m: statistics.median(r[m] for r in v) for m in ("fast_read_ns", "ping_pong_ns")}
        for k, v in rounds.items()
    }
    for m in ("fast_read_ns", "ping_pong_ns"):
        a, b = med["with flag"][m], med["compiled out"][m]
        print(
            f"{m}: with flag {a:.0f} ns, compiled out {b:.0f} ns, difference {a - b:+.0f} ns "
            f"({(a - b) / b * 100:+.1f}%)"
        )


if __name__ == "__main__":
    main()
