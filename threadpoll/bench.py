"""``python -m threadpoll bench``: threadpoll against the stdlib and the usual alternatives.

    python -m threadpoll bench [--quick] [--json PATH] [--only SCENARIO ...] [--rounds N]

What it measures (one table per *case*; a scenario has one or more cases):

* ``fastpath``   ``recv(64)`` with data already buffered (AF_UNIX socketpair; TCP loopback).
* ``pingpong``   a round trip between two threads (tasks for asyncio/trio/gevent),
  AF_UNIX and TCP, 1 B and 4 KiB.
* ``echo``       an echo server, thread per connection, 64-byte request/response, driven by
  K = 10, 100, 1000 stdlib blocking client threads in this process; requests per second.
* ``closewake``  ``close()`` from one thread -> a thread blocked in ``recv`` returns; p50/p99.
* ``deadline``   how late a 5 ms read deadline (or timeout) fires; p50/p99.
* ``memory``     Python heap per open descriptor (tracemalloc), stdlib vs wrapped.

How it measures:

* A case holds *variants*: functions that set up, run one measured block and return an
  :class:`Outcome` (a number, or latency samples). Rounds are interleaved: round ``r`` runs
  every variant once, the order rotated by ``r``, so slow drifts of the machine hit every
  variant alike. Scalars are the median over rounds; latency samples are pooled over rounds.
* Ratios are to the case's stdlib baseline (stdlib blocking sockets, unless the case says
  otherwise). Run-to-run noise on a small VM is +-15-25 %: read ratios, not absolute times.
* Every variant runs in its own daemon thread under a hard time limit, so a variant that hangs
  (threadpoll is young) is reported and disabled instead of hanging the run; every case has a
  time budget and the whole run a global one. Servers bind to 127.0.0.1 or AF_UNIX only.
* threadpoll variants import threadpoll lazily and show ``unavailable: ...`` when it cannot be
  imported. gevent runs in a child process (its hub must not share this one); it is shown as
  unavailable when it is not installed.

Exit status: 0, or 1 when a variant crashed or hung. Speed is never a failure.
"""

from __future__ import annotations

import os
import shutil
import sys

if __name__ == "__main__":  # pragma: no cover - run as a file
    # As a file (python3 threadpoll/bench.py), sys.path[0] is this package's directory, where
    # threadpoll/socket.py would shadow the stdlib socket module. Put the project root there
    # instead: `import socket` stays the stdlib's and `import threadpoll` works.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    sys.path.insert(0, os.path.dirname(_here))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import selectors  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable, Literal, cast  # noqa: E402

__all__ = ["main"]

SCENARIOS = ("fastpath", "pingpong", "echo", "closewake", "deadline", "memory", "tls")

Kind = Literal["time", "rate", "latency", "bytes"]

# Variant names. A variant that hangs is disabled by name for the rest of the run.
V_STDLIB = "stdlib blocking"
V_TIMEOUT = "stdlib settimeout(5)"
V_SELECT = "selectors select+recv"
V_ASYNCIO = "asyncio sock_recv"
V_ASYNCIO_PROTO = "asyncio Protocol"
V_TRIO = "trio"
V_GEVENT = "gevent"
V_TPS = "threadpoll drop-in socket"
V_CONN = "threadpoll Conn"
# The same fronts on the C core (threadpoll._cpoll); the rows above run the Python runtime.
V_TPS_C = "threadpoll drop-in socket, C core"
V_CONN_C = "threadpoll Conn, C core"
V_TPS_BOTH = "threadpoll drop-in both ends"  # echo: the clients are threadpoll sockets too
V_TPS_BOTH_C = "threadpoll drop-in both ends, C core"
V_FLOOR = "floor: read(2) in Python"
V_SSL = "stdlib ssl"
V_SSL_TPS = "threadpoll drop-in ssl"
V_TLS = "threadpoll.tls"
V_FLOOR_LOCK = "floor: + one lock"

ECHO_SIZE = 64  # bytes per echo request and response, as in reference/perf-notes.md
ECHO_STACK = 256 * 1024  # thread stack while spawning echo threads: 1000 x 8 MiB is 8 GB
FASTPATH_BATCH = 128  # recv(64) calls per refill of the buffer: 8 KiB, far below any rcvbuf
DEADLINE_S = 0.005  # the deadline / timeout whose overshoot is measured
STDLIB_CLOSE_WAIT_S = 0.02  # how long "stdlib close() alone" waits for a wake that never comes


# ---------------------------------------------------------------------------------------------
# Data model


@dataclass
class RunCtx:
    """What one run of one variant gets. JSON-able: it crosses into child processes."""

    params: dict[str, Any]
    window_s: float  # the measured block's length (or a cap on it)
    max_ops: int  # a cap on operations (or samples) in the measured block
    hard_s: float  # the run is abandoned after this long
    quick: bool


@dataclass
class Outcome:
    """What a variant returns: a scalar ``value``, or latency ``samples`` in microseconds."""

    value: float | None = None
    samples: list[float] = field(default_factory=list)
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)


class Unavailable(Exception):
    """A variant cannot run here (a module is missing)."""


class Skip(Exception):
    """A variant or case cannot run here (limits too low); the message says why."""


def _available() -> str | None:
    return None


@dataclass(frozen=True)
class Variant:
    name: str
    run: Callable[[RunCtx], Outcome]
    probe: Callable[[], str | None] = _available  # None when it can run, else why not
    note: str = ""


@dataclass
class Case:
    scenario: str
    id: str
    title: str
    kind: Kind
    unit: str  # short unit for JSON and the table: "us", "req/s", "B"
    measure: str  # what the number is, for people
    baseline: str  # the variant every ratio divides by
    variants: list[Variant]
    params: dict[str, Any]
    rounds: int
    budget_s: float
    window_s: float
    max_ops: int
    hard_s: float
    requires: Callable[[], str | None] = _available  # a reason to skip the whole case


@dataclass
class VariantResult:
    name: str
    note: str = ""
    status: str = "ok"  # ok | unavailable | skipped | error
    reason: str = ""
    values: list[float] = field(default_factory=list)  # one per round (scalar kinds)
    samples: list[float] = field(default_factory=list)  # pooled over rounds (latency)
    notes: list[str] = field(default_factory=list)
    extras: dict[str, list[float]] = field(default_factory=dict)
    median: float | None = None
    p50: float | None = None
    p99: float | None = None
    ratio: float | None = None
    ratio_p99: float | None = None


@dataclass
class CaseResult:
    case: Case
    variants: list[VariantResult]
    rounds_run: int = 0
    skipped: str = ""
    note: str = ""
    elapsed_s: float = 0.0


# ---------------------------------------------------------------------------------------------
# Small helpers


def _import(name: str) -> Any:
    """Import lazily; the result is Any (threadpoll is not written yet, trio has no types)."""
    return importlib.import_module(name)


_probe_cache: dict[str, str | None] = {}


def _probe_module(module: str, *attrs: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        key = module + ":" + ",".join(attrs)
        if key not in _probe_cache:
            try:
                mod = importlib.import_module(module)
                for attr in attrs:
                    getattr(mod, attr)
            except Exception as e:  # a half-written threadpoll may fail in any way on import
                _probe_cache[key] = f"unavailable: {type(e).__name__}: {e}"
            else:
                _probe_cache[key] = None
        return _probe_cache[key]

    return probe


def _probe_installed(dist: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        if importlib.util.find_spec(dist) is None:
            return f"unavailable: {dist} not installed"
        return None

    return probe


_probe_tps = _probe_module("threadpoll.socket", "socket", "socketpair", "create_server",
                           "create_connection")
_probe_conn = _probe_module("threadpoll", "dial", "listen")
_probe_trio = _probe_installed("trio")
_probe_gevent = _probe_installed("gevent")


def _nodelay(s: Any) -> None:
    with contextlib.suppress(OSError):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _close(*objs: Any) -> None:
    for o in objs:
        with contextlib.suppress(Exception):
            o.close()


def _hard_close(o: Any) -> None:
    """Close so that a thread blocked on ``o`` returns: on Linux, close() alone does not wake a
    blocked stdlib recv/accept, shutdown() does."""
    shutdown = getattr(o, "shutdown", None)
    if shutdown is not None:
        with contextlib.suppress(Exception):
            shutdown(socket.SHUT_RDWR)
    _close(o)


def _hard_close_all(objs: Sequence[Any]) -> None:
    for o in list(objs):
        _hard_close(o)


def _switches() -> int:
    """Voluntary + involuntary context switches of this process so far (0 where unknown)."""
    try:
        import resource
    except ImportError:
        return 0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return int(ru.ru_nvcsw + ru.ru_nivcsw)


_impl_runtimes: dict[str, Any] = {}


def _impl_runtime(impl: str) -> Any:
    """One runtime per implementation for the whole run, on this machine's best backend."""
    rt = _impl_runtimes.get(impl)
    if rt is None:
        netpoll = _import("threadpoll._runtime.netpoll")
        if impl == "c":
            rt = _import("threadpoll._runtime.netpoll_c").CRuntime()
        else:
            name = os.environ.get("THREADPOLL_BACKEND") or netpoll.backend_names()[0]
            rt = netpoll.Runtime(netpoll.new_backend(name))
        _impl_runtimes[impl] = rt
    return rt


def _shutdown_impl_runtimes() -> None:
    """Stop the runtimes _impl_runtime made (their pollers and descriptors)."""
    while _impl_runtimes:
        _, rt = _impl_runtimes.popitem()
        rt.shutdown()


def _on_impl(impl: str, fn: Callable[[RunCtx], Outcome]) -> Callable[[RunCtx], Outcome]:
    """fn with threadpoll's default runtime set to the given implementation's ("c" or
    "python"), so both show as rows of one run whatever THREADPOLL_IMPL says."""

    def run(ctx: RunCtx) -> Outcome:
        netpoll = _import("threadpoll._runtime.netpoll")
        old = netpoll.set_default_runtime(_impl_runtime(impl))
        try:
            return fn(ctx)
        finally:
            netpoll.set_default_runtime(old)

    return run


def _both_ends(fn: Callable[[RunCtx], Outcome]) -> Callable[[RunCtx], Outcome]:
    """An echo variant whose client sockets are threadpoll drop-in sockets too."""

    def run(ctx: RunCtx) -> Outcome:
        return fn(RunCtx({**ctx.params, "tp_clients": True}, ctx.window_s, ctx.max_ops,
                         ctx.hard_s, ctx.quick))

    return run


def _probe_c() -> str | None:
    try:
        ok = _import("threadpoll._runtime.netpoll_c").available()
    except ImportError as e:
        return f"unavailable: {e}"
    if ok:
        return None
    return "unavailable: the C core is not built"


def _probes(*probes: Callable[[], str | None]) -> Callable[[], str | None]:
    def probe() -> str | None:
        for p in probes:
            reason = p()
            if reason is not None:
                return reason
        return None

    return probe


def _percentile(xs: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks, on sorted ``xs``."""
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


class _Thread:
    """A daemon thread that keeps the exception its target raised."""

    def __init__(self, target: Callable[[], object], name: str) -> None:
        self.exc: BaseException | None = None
        self._target = target
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as e:
            self.exc = e

    def join(self, timeout: float) -> bool:
        """True when the thread has finished."""
        self.thread.join(max(timeout, 0.0))
        return not self.thread.is_alive()


def _join_or_unstick(workers: Sequence[_Thread], timeout: float, unstick: Callable[[], None],
                     what: str) -> None:
    """Join ``workers``; if some are still blocked, call ``unstick`` and give them 1 s more."""
    deadline = time.monotonic() + timeout
    if all(w.join(deadline - time.monotonic()) for w in workers):
        return
    unstick()
    if not all(w.join(1.0) for w in workers):
        raise RuntimeError(f"{what} did not finish (thread left running)")


def _fds_needed(n: int) -> str | None:
    """A reason to skip when the open-file soft limit cannot hold ``n`` more descriptors."""
    try:
        import resource
    except ImportError:
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    in_use = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 32
    if soft != resource.RLIM_INFINITY and soft < n + in_use:
        return (f"RLIMIT_NOFILE is {soft} even after raising it to the hard limit; "
                f"needs {n + in_use}")
    return None


@contextlib.contextmanager
def _nofile_raised() -> Iterator[None]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit for the run, then restore it."""
    try:
        import resource
    except ImportError:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    raised = False
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            raised = True
    try:
        yield
    finally:
        if raised:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---------------------------------------------------------------------------------------------
# Connected pairs: (a, b), a is the driving side, b the measured / echoing side.


def _accept_or_close(accept: Callable[[], Any], dialed: Any) -> Any:
    """``accept()``; if it fails, close the already dialed end too."""
    try:
        return accept()
    except BaseException:
        _close(dialed)
        raise


def _stdlib_pair(transport: str) -> tuple[socket.socket, socket.socket]:
    if transport == "unix":
        return socket.socketpair()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        ls.settimeout(5.0)
        a = socket.create_connection(ls.getsockname()[:2], timeout=5.0)
        b = _accept_or_close(lambda: ls.accept()[0], a)
    for s in (a, b):
        s.settimeout(None)
        _nodelay(s)
    return a, b


def _tps_pair(transport: str) -> tuple[Any, Any]:
    tps = _import("threadpoll.socket")
    if transport == "unix":
        a, b = tps.socketpair()
        return a, b
    ls = tps.create_server(("127.0.0.1", 0))
    try:
        ls.settimeout(5.0)
        a = tps.create_connection(ls.getsockname()[:2], timeout=5.0)
        b = _accept_or_close(lambda: ls.accept()[0], a)
    finally:
        _close(ls)
    for s in (a, b):
        s.settimeout(None)
        _nodelay(s)
    return a, b


_unix_paths = itertools.count()


def _conn_pair(transport: str, tmpdir: str) -> tuple[Any, Any]:
    tp = _import("threadpoll")
    if transport == "unix":
        path = os.path.join(tmpdir, f"pair{next(_unix_paths)}.sock")  # fresh: no reuse race
        ln = tp.listen("unix", path)
        address: str = path
    else:
        ln = tp.listen("tcp", "127.0.0.1:0")
        address = f"127.0.0.1:{ln.addr[1]}"
    try:
        if hasattr(ln, "set_deadline"):
            ln.set_deadline(time.monotonic() + 5.0)
        a = tp.dial(transport, address, timeout=5.0)
        b = _accept_or_close(ln.accept, a)
    finally:
        _close(ln)
    return a, b


def _stdlib_listener(k: int) -> socket.socket:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(k + 16)
    return ls


# ---------------------------------------------------------------------------------------------
# Child processes (gevent): the child runs one variant function of this file by name.


def _in_child(fn_name: str) -> Callable[[RunCtx], Outcome]:
    def run(ctx: RunCtx) -> Outcome:
        spec = json.dumps({"fn": fn_name, "ctx": dataclasses.asdict(ctx)})
        try:
            proc = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--_child", spec],
                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=max(ctx.hard_s - 1.0, 1.0), check=False)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"child process timed out after {e.timeout:.0f} s") from None
        lines = proc.stdout.strip().splitlines()
        if not lines:
            raise RuntimeError(f"child exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
        reply = json.loads(lines[-1])
        if "unavailable" in reply:
            raise Unavailable(reply["unavailable"])
        if "skip" in reply:
            raise Skip(reply["skip"])
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return Outcome(**reply["ok"])

    return run


def _child_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    fn = globals()[spec["fn"]]
    try:
        out = fn(RunCtx(**spec["ctx"]))
        reply: dict[str, Any] = {"ok": dataclasses.asdict(out)}
    except ImportError as e:
        reply = {"unavailable": f"unavailable: {type(e).__name__}: {e}"}
    except Skip as e:
        reply = {"skip": str(e)}
    except BaseException as e:
        reply = {"error": f"{type(e).__name__}: {e}"}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
    os._exit(0)  # do not wait for a gevent hub thread that may still be winding down


# ---------------------------------------------------------------------------------------------
# Scenario: fast path. recv(64) with data already buffered: the cost of a call that never waits.


def _fp_loop(recv: Callable[[int], object], fill: Callable[[bytes], object],
             ctx: RunCtx) -> Outcome:
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


async def _fp_loop_async(recv: Callable[[int], Any], fill: Callable[[bytes], object],
                         ctx: RunCtx) -> Outcome:
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


# ---------------------------------------------------------------------------------------------
# Scenario: ping-pong. One side sends `size` bytes and waits for them back; the other echoes.


def _pp_loop(send: Callable[[bytes], object], recv: Callable[[int], bytes], msg: bytes,
             max_ops: int, stop_at: float) -> int:
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


def _pp_threads(a: Any, b: Any, a_recv: Callable[[int], bytes], b_recv: Callable[[int], bytes],
                a_send: Callable[[bytes], object], b_send: Callable[[bytes], object],
                ctx: RunCtx) -> Outcome:
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
    return Outcome(value=elapsed / done * 1e6,
                   extra={"cpu_us_per_req": cpu / done * 1e6, "ctxsw_per_req": sw / done})


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
        return _pp_threads(a, b, _select_recv(sel_a, a, ctx.hard_s),
                           _select_recv(sel_b, b, ctx.hard_s), a.sendall, b.sendall, ctx)
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
        view = view[await s.send(view):]


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


# ---------------------------------------------------------------------------------------------
# Scenario: echo server. K stdlib blocking client threads, each a connection doing 64-byte
# request/response in a loop; the variant is the server. Clients are the same for every
# variant, so differences are the server's.


class _EchoServer:
    """A running server; ``addr`` is where clients connect."""

    addr: tuple[str, int]

    def wait_ready(self, timeout: float) -> None:
        """Return once all K connections are accepted and being served; raise otherwise."""
        raise NotImplementedError

    def stop(self, timeout: float) -> list[str]:
        """Stop (clients have closed their ends by now); return errors seen by the server."""
        raise NotImplementedError


def _serve_blocking(c: Any) -> None:
    while True:
        data = c.recv(65536)
        if not data:
            return
        c.sendall(data)


def _serve_timeout(c: Any) -> None:
    c.settimeout(5.0)
    _serve_blocking(c)


def _serve_select(c: Any) -> None:
    with selectors.DefaultSelector() as sel:
        sel.register(c, selectors.EVENT_READ)
        recv = _select_recv(sel, c, 60.0)
        while True:
            data = recv(65536)
            if not data:
                return
            c.sendall(data)


def _serve_conn(c: Any) -> None:
    while True:
        data = c.read(65536)
        if not data:
            return
        c.write(data)


class _ThreadServer(_EchoServer):
    """Thread per connection: an acceptor thread accepts exactly K and spawns handlers."""

    def __init__(self, k: int, listener: Any, addr: tuple[str, int],
                 accept: Callable[[Any], Any], handle: Callable[[Any], None]) -> None:
        self.addr = addr
        self._k = k
        self._listener = listener
        self._accept = accept
        self._handle = handle
        self._conns: list[Any] = []
        self._handlers: list[_Thread] = []
        self._acceptor = _Thread(self._accept_loop, "bench-echo-acceptor")

    def _accept_loop(self) -> None:
        for _ in range(self._k):
            c = self._accept(self._listener)
            self._conns.append(c)
            self._handlers.append(_Thread(functools.partial(self._serve, c),
                                          "bench-echo-handler"))

    def _serve(self, c: Any) -> None:
        try:
            self._handle(c)
        finally:
            _close(c)

    def wait_ready(self, timeout: float) -> None:
        if not self._acceptor.join(timeout):
            raise RuntimeError("the server did not accept every connection in time")
        if self._acceptor.exc is not None:
            raise self._acceptor.exc

    def stop(self, timeout: float) -> list[str]:
        errors: list[str] = []
        try:
            _join_or_unstick(self._handlers, timeout,
                             functools.partial(_hard_close_all, self._conns), "echo handlers")
        except RuntimeError as e:
            errors.append(str(e))
        _hard_close(self._listener)  # wakes an acceptor still blocked (stdlib: shutdown)
        self._acceptor.join(1.0)
        errors += [f"handler: {type(h.exc).__name__}: {h.exc}" for h in self._handlers
                   if h.exc is not None and not isinstance(h.exc, OSError)]
        return errors


def _accepted(s: Any) -> Any:
    s.settimeout(None)
    _nodelay(s)
    return s


def _stdlib_thread_server(handle: Callable[[Any], None],
                          ctx: RunCtx) -> Callable[[int], _EchoServer]:
    def start(k: int) -> _EchoServer:
        ls = _stdlib_listener(k)
        ls.settimeout(ctx.hard_s)
        return _ThreadServer(k, ls, ls.getsockname()[:2], lambda ls: _accepted(ls.accept()[0]),
                             handle)

    return start


def _tps_thread_server(ctx: RunCtx) -> Callable[[int], _EchoServer]:
    def start(k: int) -> _EchoServer:
        tps = _import("threadpoll.socket")
        ls = tps.create_server(("127.0.0.1", 0), backlog=k + 16)
        ls.settimeout(ctx.hard_s)
        return _ThreadServer(k, ls, ls.getsockname()[:2], lambda ls: _accepted(ls.accept()[0]),
                             _serve_blocking)

    return start


def _conn_thread_server(ctx: RunCtx) -> Callable[[int], _EchoServer]:
    def start(k: int) -> _EchoServer:
        tp = _import("threadpoll")
        ln = tp.listen("tcp", "127.0.0.1:0", backlog=k + 16)
        if hasattr(ln, "set_deadline"):
            ln.set_deadline(time.monotonic() + ctx.hard_s)
        return _ThreadServer(k, ln, ("127.0.0.1", ln.addr[1]), lambda ln: ln.accept(),
                             _serve_conn)

    return start


class _AsyncioServer(_EchoServer):
    """An asyncio Protocol echo server on its own event loop thread."""

    def __init__(self, k: int) -> None:
        self._k = k
        self._lsock = _stdlib_listener(k)
        self.addr = self._lsock.getsockname()[:2]
        self._transports: set[asyncio.Transport] = set()
        self._started = threading.Event()
        self._all_connected = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._thread = _Thread(self._run, "bench-echo-asyncio")
        if not self._started.wait(10.0):
            raise RuntimeError(f"the asyncio server did not start: {self._thread.exc!r}")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(loop))
        finally:
            loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        server = self

        class Echo(asyncio.Protocol):
            transport: asyncio.Transport | None = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = cast(asyncio.Transport, transport)
                server._transports.add(self.transport)
                if len(server._transports) >= server._k:
                    server._all_connected.set()

            def data_received(self, data: bytes) -> None:
                if self.transport is not None:
                    self.transport.write(data)

            def connection_lost(self, exc: Exception | None) -> None:
                server._transports.discard(cast(asyncio.Transport, self.transport))

        srv = await loop.create_server(Echo, sock=self._lsock, backlog=self._k + 16)
        self._stopped = loop.create_future()
        self._loop = loop
        self._started.set()
        try:
            await self._stopped
        finally:
            srv.close()
            for t in list(self._transports):
                t.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(srv.wait_closed(), 2.0)

    def wait_ready(self, timeout: float) -> None:
        if not self._all_connected.wait(timeout):
            raise RuntimeError("the asyncio server did not see every connection in time")

    def stop(self, timeout: float) -> list[str]:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None:
            def set_stopped() -> None:
                if not stopped.done():
                    stopped.set_result(None)

            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(set_stopped)
        if not self._thread.join(timeout):
            return ["the asyncio server thread did not stop"]
        return [f"{type(self._thread.exc).__name__}: {self._thread.exc}"] if self._thread.exc \
            else []


class _TrioServer(_EchoServer):
    """A trio server, task per connection, on its own thread running trio.run."""

    def __init__(self, k: int) -> None:
        self._trio = _import("trio")
        self._k = k
        self._lsock = _stdlib_listener(k)
        self.addr = self._lsock.getsockname()[:2]
        self._connected = 0
        self._started = threading.Event()
        self._all_connected = threading.Event()
        self._token: Any = None
        self._scope: Any = None
        self._thread = _Thread(lambda: self._trio.run(self._main), "bench-echo-trio")
        if not self._started.wait(10.0):
            raise RuntimeError(f"the trio server did not start: {self._thread.exc!r}")

    async def _main(self) -> None:
        trio = self._trio
        ls = trio.socket.from_stdlib_socket(self._lsock)

        async def handle(c: Any) -> None:
            with c:
                while True:
                    data = await c.recv(65536)
                    if not data:
                        return
                    await _trio_sendall(c, data)

        async with trio.open_nursery() as nursery:
            self._token = trio.lowlevel.current_trio_token()
            self._scope = nursery.cancel_scope
            self._started.set()
            with ls:
                for _ in range(self._k):
                    c, _addr = await ls.accept()
                    _nodelay(c)
                    nursery.start_soon(handle, c)
                    self._connected += 1
            self._all_connected.set()

    def wait_ready(self, timeout: float) -> None:
        if not self._all_connected.wait(timeout):
            raise RuntimeError("the trio server did not accept every connection in time")

    def stop(self, timeout: float) -> list[str]:
        # Handlers end on EOF; cancel whatever is left after a grace period.
        if not self._thread.join(min(timeout, 2.0)):
            with contextlib.suppress(Exception):
                self._trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
            if not self._thread.join(timeout):
                return ["the trio server thread did not stop"]
        return [f"{type(self._thread.exc).__name__}: {self._thread.exc}"] if self._thread.exc \
            else []


class _GeventServer(_EchoServer):
    """A gevent server, greenlet per connection, its hub on its own thread (child process)."""

    def __init__(self, k: int, hard_s: float) -> None:
        self._k = k
        self._hard_s = hard_s
        self._started = threading.Event()
        self._all_connected = threading.Event()
        self._thread = _Thread(self._run, "bench-echo-gevent")
        if not self._started.wait(10.0):
            raise RuntimeError(f"the gevent server did not start: {self._thread.exc!r}")

    def _run(self) -> None:
        gevent = _import("gevent")
        gsocket = _import("gevent.socket")
        ls = gsocket.socket(fileno=_stdlib_listener(self._k).detach())
        ls.settimeout(self._hard_s)
        self.addr = ls.getsockname()[:2]
        self._started.set()

        def handle(c: Any) -> None:
            try:
                _serve_blocking(c)
            finally:
                c.close()

        greenlets = []
        with ls:
            for _ in range(self._k):
                c, _addr = ls.accept()
                _accepted(c)
                greenlets.append(gevent.spawn(handle, c))
        self._all_connected.set()
        gevent.joinall(greenlets, timeout=self._hard_s)

    def wait_ready(self, timeout: float) -> None:
        if not self._all_connected.wait(timeout):
            raise RuntimeError("the gevent server did not accept every connection in time")

    def stop(self, timeout: float) -> list[str]:
        if not self._thread.join(timeout):
            return ["the gevent server thread did not stop"]
        return [f"{type(self._thread.exc).__name__}: {self._thread.exc}"] if self._thread.exc \
            else []


def _echo_client(s: socket.socket, i: int, counts: list[int], go: threading.Event,
                 stop: list[bool], errors: list[str]) -> None:
    msg = b"x" * ECHO_SIZE
    n = 0
    # Wait until every thread exists: spawning the 1000th thread while 999 are busy is
    # starved of the GIL for a long time.
    go.wait()
    try:
        while not stop[0]:
            s.sendall(msg)
            got = 0
            while got < ECHO_SIZE:
                data = s.recv(ECHO_SIZE - got)
                if not data:
                    raise ConnectionError("the server closed the connection")
                got += len(data)
            n += 1
            counts[i] = n
    except OSError as e:
        if not stop[0]:
            errors.append(f"client {i}: {type(e).__name__}: {e}")


_NO_REQUEST_NOTE = "no request completed in the window (machine busy?): no figure"


def _echo_drive(start: Callable[[int], _EchoServer], ctx: RunCtx) -> Outcome:
    """Start the server, connect K clients, count requests over the window, clean up."""
    k: int = ctx.params["k"]
    counts = [0] * k
    go = threading.Event()
    stop = [False]
    errors: list[str] = []
    clients: list[socket.socket] = []
    workers: list[_Thread] = []
    server: _EchoServer | None = None
    old_stack = threading.stack_size(ECHO_STACK)
    try:
        try:
            server = start(k)
            connect = _import("threadpoll.socket").create_connection if ctx.params.get(
                "tp_clients") else socket.create_connection
            for _ in range(k):
                s = connect(server.addr, timeout=ctx.hard_s)
                _accepted(s)
                clients.append(s)
            for i, s in enumerate(clients):
                try:
                    workers.append(_Thread(
                        functools.partial(_echo_client, s, i, counts, go, stop, errors),
                        "bench-echo-client"))
                except RuntimeError as e:  # "can't start new thread"
                    raise Skip(f"cannot start {2 * k} threads: {e}") from None
            server.wait_ready(ctx.hard_s)
        finally:
            threading.stack_size(old_stack)
        go.set()
        time.sleep(ctx.params["warmup_s"])
        c0, t0, cpu0, sw0 = sum(counts), time.perf_counter(), time.process_time(), _switches()
        time.sleep(ctx.window_s)
        c1, t1, cpu1, sw1 = sum(counts), time.perf_counter(), time.process_time(), _switches()
    finally:
        stop[0] = True
        go.set()
        try:
            _join_or_unstick(workers, 5.0, functools.partial(_hard_close_all, clients),
                             "echo clients")
        finally:
            _close(*clients)  # the server's handlers read EOF
            if server is not None:
                errors += server.stop(5.0)
    if errors:
        raise RuntimeError(f"{len(errors)} error(s), first: {errors[0]}")
    if c1 == c0:
        # A figure we could not take, not a fault: at K = 1000 on a busy 2-core machine the
        # window can pass before any client's request comes back. Speed is never a failure.
        return Outcome(note=_NO_REQUEST_NOTE)
    return Outcome(value=(c1 - c0) / (t1 - t0),
                   extra={"cpu_us_per_req": (cpu1 - cpu0) / (c1 - c0) * 1e6,
                          "ctxsw_per_req": (sw1 - sw0) / (c1 - c0)})


def _echo_stdlib(ctx: RunCtx) -> Outcome:
    return _echo_drive(_stdlib_thread_server(_serve_blocking, ctx), ctx)


def _echo_timeout(ctx: RunCtx) -> Outcome:
    return _echo_drive(_stdlib_thread_server(_serve_timeout, ctx), ctx)


def _echo_select(ctx: RunCtx) -> Outcome:
    return _echo_drive(_stdlib_thread_server(_serve_select, ctx), ctx)


def _echo_asyncio(ctx: RunCtx) -> Outcome:
    return _echo_drive(_AsyncioServer, ctx)


def _echo_trio(ctx: RunCtx) -> Outcome:
    return _echo_drive(_TrioServer, ctx)


def _gevent_echo(ctx: RunCtx) -> Outcome:  # runs in a child process
    _import("gevent")
    return _echo_drive(lambda k: _GeventServer(k, ctx.hard_s), ctx)


def _echo_tps(ctx: RunCtx) -> Outcome:
    return _echo_drive(_tps_thread_server(ctx), ctx)


def _echo_conn(ctx: RunCtx) -> Outcome:
    return _echo_drive(_conn_thread_server(ctx), ctx)


# ---------------------------------------------------------------------------------------------
# Scenario: close-to-wake. A thread blocks in a read; another records t0 and closes; the
# reader records t1 when its call returns or raises. Samples are t1 - t0 in microseconds.


def _closewake_threads(make_pair: Callable[[], tuple[Any, Any]], read: Callable[[Any], object],
                       close: Callable[[Any], None], ctx: RunCtx, wake_wait: float) -> Outcome:
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

        def reader(r: Any = r, entered: threading.Event = entered, woke: list[float] = woke,
                   got: list[object] = got) -> None:
            entered.set()
            try:
                got.append(read(r))
            except Exception as e:  # the closing error is the expected outcome
                got.append(e)
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
            _join_or_unstick([t], 2.0, functools.partial(_hard_close, peer),
                             "the closewake reader")
            late_data += got[:1] == [b"z"]
        finally:
            _close(peer, r)
    note = ""
    if misses:
        note = (f"not woken within {wake_wait * 1e3:.0f} ms in {misses}/{ctx.max_ops}; "
                f"{late_data} then returned data sent after the close")
    return Outcome(samples=samples, note=note)


def _stdlib_shutdown_close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


def _cw_stdlib(ctx: RunCtx) -> Outcome:
    return _closewake_threads(socket.socketpair, lambda r: r.recv(1), _stdlib_shutdown_close,
                              ctx, 1.0)


def _cw_stdlib_close_only(ctx: RunCtx) -> Outcome:
    ctx = dataclasses.replace(ctx, max_ops=min(ctx.max_ops, 3))  # each try costs the wait
    return _closewake_threads(socket.socketpair, lambda r: r.recv(1), lambda r: r.close(), ctx,
                              STDLIB_CLOSE_WAIT_S)


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
    return _closewake_threads(lambda: _tps_pair("unix"), lambda r: r.recv(1), lambda r: r.close(),
                              ctx, 1.0)


def _cw_conn(ctx: RunCtx) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="tpbench") as tmp:
        return _closewake_threads(lambda: _conn_pair("unix", tmp), lambda r: r.read(1),
                                  lambda r: r.close(), ctx, 1.0)


# ---------------------------------------------------------------------------------------------
# Scenario: deadline overshoot. Read with nothing to read and a limit DEADLINE_S away;
# the sample is (time the call returned - the limit) in microseconds, on time.monotonic().


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


# ---------------------------------------------------------------------------------------------
# Scenario: memory per open descriptor: tracemalloc's view of the Python heap (kernel socket
# buffers and thread stacks are not in it) while N connected pairs are open.


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


def _mem_tps(ctx: RunCtx) -> Outcome:
    return _mem_measure(lambda: _tps_pair("unix"), ctx)


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
    out.note = "; ".join(filter(None, ["TCP pairs via dial + accept", out.note]))
    return out


# ---------------------------------------------------------------------------------------------
# Scenario: TLS 1.3 over TCP loopback. Bulk transfer (one thread writes 64 KiB at a time, the
# other reads) and a 1-byte ping-pong: the stdlib's ssl on stdlib sockets, the same ssl on
# threadpoll sockets (the drop-in), and threadpoll.tls over Conns. A throwaway self-signed
# certificate is made with the openssl command.


def _tls_contexts() -> tuple[Any, Any]:
    ssl = _import("ssl")
    with tempfile.TemporaryDirectory(prefix="tpbench") as tmp:
        pem = os.path.join(tmp, "cert.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost", "-keyout", pem, "-out", pem],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
        )
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(pem)
        cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        cctx.load_verify_locations(pem)
    return sctx, cctx


def _probe_openssl() -> str | None:
    reason = _available()
    if reason is not None:
        return reason
    try:
        _import("ssl")
    except ImportError:
        return "no ssl module"
    if shutil.which("openssl") is None:
        return "no openssl command to make a certificate"
    return None


def _tls_socket_pair(sock_pair: Callable[[], tuple[Any, Any]]) -> tuple[Any, Any]:
    """A (client, server) pair of ssl sockets over sock_pair(), handshake done."""
    sctx, cctx = _tls_contexts()
    a, b = sock_pair()
    box: list[Any] = []
    t = _Thread(lambda: box.append(sctx.wrap_socket(b, server_side=True)), "bench-tls-accept")
    try:
        c = cctx.wrap_socket(a, server_hostname="localhost")
    except BaseException:
        _close(a, b)
        raise
    t.join(10.0)
    if t.exc is not None or not box:
        _close(c, b)
        raise t.exc or RuntimeError("TLS server handshake did not finish")
    return c, box[0]


def _tls_conn_pair() -> tuple[Any, Any]:
    tls = _import("threadpoll.tls")
    sctx, cctx = _tls_contexts()
    ln = tls.listen("tcp", "127.0.0.1:0", sctx)
    try:
        box: list[Any] = []

        def accept() -> None:
            s = ln.accept()
            box.append(s)
            s.handshake()

        t = _Thread(accept, "bench-tls-accept")
        c = tls.dial("tcp", ln.addr, cctx, server_hostname="localhost", timeout=10.0)
        t.join(10.0)
        if t.exc is not None:
            _close(c, *box)
            raise t.exc
        return c, box[0]
    finally:
        _close(ln)


def _tls_stdlib_pair() -> tuple[Any, Any]:
    return _tls_socket_pair(lambda: _stdlib_pair("tcp"))


def _tls_tps_pair() -> tuple[Any, Any]:
    return _tls_socket_pair(lambda: _tps_pair("tcp"))


def _tls_bulk(pair: tuple[Any, Any], write: str, read: str, ctx: RunCtx) -> Outcome:
    """MB/s from a writer thread to this thread over one TLS connection; closes both."""
    a, b = pair
    chunk = b"b" * 65536
    total = ctx.max_ops * 65536
    send = getattr(a, write)
    recv = getattr(b, read)

    def writer() -> None:
        for _ in range(ctx.max_ops):
            send(chunk)

    try:
        t0 = time.perf_counter()
        w = _Thread(writer, "bench-tls-writer")
        got = 0
        while got < total:
            data = recv(65536)
            if not data:
                raise ConnectionError("EOF during the bulk transfer")
            got += len(data)
        elapsed = time.perf_counter() - t0
        w.join(10.0)
        if w.exc is not None:
            raise w.exc
    finally:
        _close(a, b)
    return Outcome(value=total / elapsed / 1e6)


def _tls_bulk_stdlib(ctx: RunCtx) -> Outcome:
    return _tls_bulk(_tls_stdlib_pair(), "sendall", "recv", ctx)


def _tls_bulk_tps(ctx: RunCtx) -> Outcome:
    return _tls_bulk(_tls_tps_pair(), "sendall", "recv", ctx)


def _tls_bulk_conn(ctx: RunCtx) -> Outcome:
    return _tls_bulk(_tls_conn_pair(), "write", "read", ctx)


def _tls_pp_stdlib(ctx: RunCtx) -> Outcome:
    a, b = _tls_stdlib_pair()
    return _pp_threads(a, b, a.recv, b.recv, a.sendall, b.sendall, ctx)


def _tls_pp_tps(ctx: RunCtx) -> Outcome:
    a, b = _tls_tps_pair()
    return _pp_threads(a, b, a.recv, b.recv, a.sendall, b.sendall, ctx)


def _tls_pp_conn(ctx: RunCtx) -> Outcome:
    a, b = _tls_conn_pair()
    return _pp_threads(a, b, a.read, b.read, a.write, b.write, ctx)


# ---------------------------------------------------------------------------------------------
# The registry: scenarios -> cases -> variants.


@dataclass(frozen=True)
class _Budget:
    rounds: int
    budget_s: float  # no new round starts after this much time in the case
    window_s: float
    max_ops: int
    hard_s: float  # one run of one variant is abandoned after this


_QUICK = {
    "fastpath": _Budget(2, 8.0, 0.04, 50_000, 5.0),
    "pingpong": _Budget(2, 8.0, 0.06, 5_000, 5.0),
    "echo": _Budget(1, 15.0, 0.15, 0, 15.0),
    "closewake": _Budget(2, 6.0, 0.0, 15, 5.0),
    "deadline": _Budget(2, 5.0, 0.0, 10, 5.0),
    "memory": _Budget(1, 5.0, 0.0, 100, 8.0),
    "tls": _Budget(2, 8.0, 0.06, 256, 8.0),
}
_FULL = {
    "fastpath": _Budget(5, 60.0, 0.25, 2_000_000, 30.0),
    "pingpong": _Budget(5, 60.0, 0.35, 200_000, 30.0),
    "echo": _Budget(3, 120.0, 1.0, 0, 60.0),
    "closewake": _Budget(3, 40.0, 0.0, 100, 30.0),
    "deadline": _Budget(3, 40.0, 0.0, 60, 30.0),
    "memory": _Budget(3, 60.0, 0.0, 1000, 60.0),
    "tls": _Budget(3, 60.0, 0.35, 2048, 30.0),
}
# The whole run: --quick must end within a minute on 2 cores even when every threadpoll
# variant hangs (each hang costs its hard limit, then the variant is disabled by name).
_GLOBAL_BUDGET_S = {True: 50.0, False: 900.0}


def _cases(quick: bool, rounds: int | None, only: Sequence[str]) -> list[Case]:
    budgets = _QUICK if quick else _FULL
    one_thread = "two tasks in one thread"
    gevent_note = "own process; greenlets in one thread"

    def case(scenario: str, id: str, title: str, kind: Kind, unit: str, measure: str,
             baseline: str, variants: list[Variant], params: dict[str, Any],
             requires: Callable[[], str | None] = _available) -> Case:
        b = budgets[scenario]
        return Case(scenario, id, title, kind, unit, measure, baseline, variants, params,
                    rounds or b.rounds, b.budget_s, b.window_s, b.max_ops, b.hard_s, requires)

    out: list[Case] = []
    if "fastpath" in only:
        for transport, desc in (("unix", "AF_UNIX socketpair"), ("tcp", "TCP loopback")):
            out.append(case(
                "fastpath", f"fastpath/{transport}", f"recv(64) with data buffered, {desc}",
                "time", "us", "us per recv", V_STDLIB, [
                    Variant(V_STDLIB, _fp_stdlib),
                    Variant(V_TIMEOUT, _fp_timeout),
                    Variant(V_SELECT, _fp_select),
                    Variant(V_ASYNCIO, _fp_asyncio),
                    Variant(V_TRIO, _fp_trio, _probe_trio),
                    Variant(V_GEVENT, _in_child("_gevent_fastpath"), _probe_gevent,
                            "own process"),
                    Variant(V_TPS, _on_impl("python", _fp_tps), _probe_tps),
                    Variant(V_CONN, _on_impl("python", _fp_conn), _probe_conn, "Conn.read"),
                    Variant(V_TPS_C, _on_impl("c", _fp_tps), _probes(_probe_tps, _probe_c)),
                    Variant(V_CONN_C, _on_impl("c", _fp_conn), _probes(_probe_conn, _probe_c),
                            "Conn.read"),
                    Variant(V_FLOOR, _fp_floor, note="reference: os.read in one function"),
                    Variant(V_FLOOR_LOCK, _fp_floor_lock,
                            note="reference: the same inside one `with lock`"),
                ], {"transport": transport}))
    if "pingpong" in only:
        for transport in ("unix", "tcp"):
            for size, size_name in ((1, "1B"), (4096, "4KiB")):
                desc = "AF_UNIX socketpair" if transport == "unix" else "TCP loopback"
                out.append(case(
                    "pingpong", f"pingpong/{transport}-{size_name}",
                    f"{size_name} round trip between two threads, {desc}",
                    "time", "us", "us per round trip", V_STDLIB, [
                        Variant(V_STDLIB, _pp_stdlib),
                        Variant(V_TIMEOUT, _pp_timeout),
                        Variant(V_SELECT, _pp_select, note="a selector per thread"),
                        Variant(V_ASYNCIO, _pp_asyncio, note=one_thread),
                        Variant(V_TRIO, _pp_trio, _probe_trio, one_thread),
                        Variant(V_GEVENT, _in_child("_gevent_pingpong"), _probe_gevent,
                                gevent_note),
                        Variant(V_TPS, _on_impl("python", _pp_tps), _probe_tps,
                                "both ends"),
                        Variant(V_CONN, _on_impl("python", _pp_conn), _probe_conn),
                        Variant(V_TPS_C, _on_impl("c", _pp_tps),
                                _probes(_probe_tps, _probe_c), "both ends"),
                        Variant(V_CONN_C, _on_impl("c", _pp_conn),
                                _probes(_probe_conn, _probe_c)),
                    ], {"transport": transport, "size": size}))
    if "echo" in only:
        warmup = 0.05 if quick else 0.25
        for k in (10, 100, 1000):
            out.append(case(
                "echo", f"echo/K={k}",
                f"echo server, {k} connections, 64 B request/response, "
                "stdlib client threads in-process",
                "rate", "req/s", "requests per second", V_STDLIB, [
                    Variant(V_STDLIB, _echo_stdlib, note="thread per connection"),
                    Variant(V_TIMEOUT, _echo_timeout, note="server side"),
                    Variant(V_SELECT, _echo_select, note="a selector per handler thread"),
                    Variant(V_ASYNCIO_PROTO, _echo_asyncio, note="one loop thread"),
                    Variant(V_TRIO, _echo_trio, _probe_trio, "task per connection"),
                    Variant(V_GEVENT, _in_child("_gevent_echo"), _probe_gevent,
                            "own process, clients there too"),
                    Variant(V_TPS, _on_impl("python", _echo_tps), _probe_tps),
                    Variant(V_CONN, _on_impl("python", _echo_conn), _probe_conn),
                    Variant(V_TPS_C, _on_impl("c", _echo_tps), _probes(_probe_tps, _probe_c)),
                    Variant(V_CONN_C, _on_impl("c", _echo_conn), _probes(_probe_conn, _probe_c)),
                    Variant(V_TPS_BOTH, _on_impl("python", _both_ends(_echo_tps)), _probe_tps,
                            "client and server"),
                    Variant(V_TPS_BOTH_C, _on_impl("c", _both_ends(_echo_tps)),
                            _probes(_probe_tps, _probe_c), "client and server"),
                ], {"k": k, "warmup_s": warmup},
                requires=functools.partial(_fds_needed, 2 * k + 64)))
    if "closewake" in only:
        out.append(case(
            "closewake", "closewake", "close() from another thread -> blocked recv returns",
            "latency", "us", "us from close() to the reader's return", "stdlib shutdown+close", [
                Variant("stdlib shutdown+close", _cw_stdlib,
                        note="stdlib best effort: close() alone does not wake recv on Linux"),
                Variant("stdlib close() alone", _cw_stdlib_close_only,
                        note="shows the stdlib gap"),
                Variant(V_TRIO, _cw_trio, _probe_trio, "task in the same thread"),
                Variant(V_GEVENT, _in_child("_gevent_closewake"), _probe_gevent,
                        "own process; greenlet in the same thread"),
                Variant(V_TPS, _on_impl("python", _cw_tps), _probe_tps, "socketpair, close()"),
                Variant(V_CONN, _on_impl("python", _cw_conn), _probe_conn, "AF_UNIX, close()"),
                Variant(V_TPS_C, _on_impl("c", _cw_tps), _probes(_probe_tps, _probe_c),
                        "socketpair, close()"),
                Variant(V_CONN_C, _on_impl("c", _cw_conn), _probes(_probe_conn, _probe_c),
                        "AF_UNIX, close()"),
            ], {}))
    if "deadline" in only:
        out.append(case(
            "deadline", "deadline", f"read limit {DEADLINE_S * 1e3:g} ms away, nothing to read",
            "latency", "us", "us the read returned after its limit", "stdlib settimeout", [
                Variant("stdlib settimeout", _dl_stdlib, note="settimeout(0.005)"),
                Variant("selectors select(timeout)", _dl_select),
                Variant("asyncio", _dl_asyncio, note="wait_for(sock_recv)"),
                Variant(V_TRIO, _dl_trio, _probe_trio, "move_on_at"),
                Variant(V_GEVENT, _in_child("_gevent_deadline"), _probe_gevent,
                        "own process; settimeout"),
                Variant("threadpoll drop-in set_read_deadline", _dl_tps_deadline, _probe_tps),
                Variant("threadpoll drop-in settimeout", _dl_tps_timeout, _probe_tps),
                Variant("threadpoll Conn set_read_deadline", _on_impl("python", _dl_conn),
                        _probe_conn),
                Variant("threadpoll Conn set_read_deadline, C core", _on_impl("c", _dl_conn),
                        _probes(_probe_conn, _probe_c)),
            ], {}))
    if "memory" in only:
        out.append(case(
            "memory", "memory", "Python heap per open descriptor (tracemalloc), N pairs open",
            "bytes", "B", "bytes per descriptor", "stdlib socketpair", [
                Variant("stdlib socketpair", _mem_stdlib),
                Variant("threadpoll drop-in socketpair", _mem_tps, _probe_tps),
                Variant(V_CONN, _on_impl("python", _mem_conn), _probe_conn),
                Variant(V_CONN_C, _on_impl("c", _mem_conn), _probes(_probe_conn, _probe_c)),
            ], {}))
    if "tls" in only:
        out.append(case(
            "tls", "tls/bulk", "TLS 1.3 bulk transfer, 64 KiB writes, one writer thread, "
            "TCP loopback", "rate", "MB/s", "megabytes per second", V_SSL, [
                Variant(V_SSL, _tls_bulk_stdlib, _probe_openssl, "stdlib sockets"),
                Variant(V_SSL_TPS, _tls_bulk_tps, _probe_openssl,
                        "SSLContext.wrap_socket on threadpoll sockets"),
                Variant(V_TLS, _tls_bulk_conn, _probe_openssl, "TLSConn over Conn"),
            ], {}, requires=_probe_openssl))
        out.append(case(
            "tls", "tls/pingpong-1B", "TLS 1.3 1B round trip between two threads, TCP loopback",
            "time", "us", "us per round trip", V_SSL, [
                Variant(V_SSL, _tls_pp_stdlib, _probe_openssl, "stdlib sockets"),
                Variant(V_SSL_TPS, _tls_pp_tps, _probe_openssl),
                Variant(V_TLS, _tls_pp_conn, _probe_openssl),
            ], {"size": 1}, requires=_probe_openssl))
    return out


# ---------------------------------------------------------------------------------------------
# Running: interleaved rounds, each run guarded by a thread and a hard time limit.


def _run_guarded(v: Variant, ctx: RunCtx, label: str) -> tuple[str, Outcome | None, str]:
    """Run ``v`` in a daemon thread; (status, outcome, reason). status "hung" when it did not
    finish within ctx.hard_s (its thread is left behind)."""
    box: list[tuple[str, Outcome | None, str]] = []

    def target() -> None:
        try:
            box.append(("ok", v.run(ctx), ""))
        except (Unavailable, ImportError) as e:
            box.append(("unavailable", None, f"unavailable: {type(e).__name__}: {e}"
                        if isinstance(e, ImportError) else str(e)))
        except Skip as e:
            box.append(("skipped", None, str(e)))
        except BaseException as e:
            box.append(("error", None, f"{type(e).__name__}: {e}"))

    gc.collect()
    t = threading.Thread(target=target, name=f"bench {label}", daemon=True)
    t.start()
    t.join(ctx.hard_s + 2.0)
    if not box:
        return "hung", None, f"did not finish within {ctx.hard_s:.0f} s (thread left running)"
    return box[0]


def _run_case(case: Case, quick: bool, global_deadline: float,
              disabled: dict[str, str]) -> CaseResult:
    results = [VariantResult(v.name, note=v.note) for v in case.variants]
    cr = CaseResult(case, results)
    skip = case.requires()
    if skip:
        cr.skipped = skip
        return cr
    runnable: list[tuple[Variant, VariantResult]] = []
    for v, vr in zip(case.variants, results):
        reason = v.probe()
        if reason is not None:
            vr.status, vr.reason = "unavailable", reason
        else:
            runnable.append((v, vr))
    t_case = time.monotonic()
    for r in range(case.rounds):
        if r > 0 and time.monotonic() - t_case > case.budget_s:
            cr.note = f"case time budget: ran {r} of {case.rounds} rounds"
            break
        shift = r % len(runnable) if runnable else 0
        for v, vr in runnable[shift:] + runnable[:shift]:
            if time.monotonic() > global_deadline:
                cr.note = f"the run's time budget ran out in round {r + 1}"
                break
            if vr.status != "ok":
                continue
            if v.name in disabled:
                vr.status, vr.reason = "skipped", disabled[v.name]
                continue
            hard_s = min(case.hard_s, max(global_deadline - time.monotonic(), 1.0))
            ctx = RunCtx(dict(case.params), case.window_s, case.max_ops, hard_s, quick)
            status, out, reason = _run_guarded(v, ctx, f"{case.id} / {v.name}")
            if status == "hung":
                disabled[v.name] = f"disabled: hung earlier in {case.id}"
                status = "error"
            if out is None:
                vr.status, vr.reason = status, reason
                continue
            if out.value is not None:
                vr.values.append(out.value)
            vr.samples.extend(out.samples)
            if out.note and out.note not in vr.notes:
                vr.notes.append(out.note)
            for key, x in out.extra.items():
                vr.extras.setdefault(key, []).append(x)
        else:
            cr.rounds_run = r + 1
            continue
        break
    cr.elapsed_s = time.monotonic() - t_case
    _aggregate(cr)
    return cr


def _aggregate(cr: CaseResult) -> None:
    for vr in cr.variants:
        if vr.values:
            vr.median = statistics.median(vr.values)
        if vr.samples:
            xs = sorted(vr.samples)
            vr.p50, vr.p99 = _percentile(xs, 0.50), _percentile(xs, 0.99)
            vr.median = vr.p50
    base = next((vr for vr in cr.variants if vr.name == cr.case.baseline), None)
    for vr in cr.variants:
        if base is None:
            break
        if vr.median is not None and base.median:
            vr.ratio = vr.median / base.median
        if vr.p99 is not None and base.p99:
            vr.ratio_p99 = vr.p99 / base.p99


# ---------------------------------------------------------------------------------------------
# Describing the machine, and the output.


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Hardware", "Processor")):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version_of(dist: str) -> str:
    if importlib.util.find_spec(dist) is None:
        return "not installed"
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return "installed"


def _threadpoll_backend() -> str:
    try:
        return str(_import("threadpoll.lowlevel").backend())
    except Exception as e:
        return f"unavailable ({type(e).__name__}: {e})"


def describe_machine() -> dict[str, Any]:
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    gil: bool = bool(is_gil_enabled()) if callable(is_gil_enabled) else True
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    nofile: list[int] | None = None
    with contextlib.suppress(ImportError):
        import resource
        nofile = list(resource.getrlimit(resource.RLIMIT_NOFILE))
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python_implementation": platform.python_implementation(),
        "python_version": platform.python_version(),
        "python_build": " ".join(platform.python_build()),
        "python_compiler": platform.python_compiler(),
        "executable": sys.executable,
        "gil_enabled": gil,
        "free_threaded_build": bool(_sysconfig_var("Py_GIL_DISABLED")),
        "threadpoll_backend": _threadpoll_backend(),
        "trio": _version_of("trio"),
        "gevent": _version_of("gevent"),
        "rlimit_nofile": nofile,
    }


def _sysconfig_var(name: str) -> object:
    import sysconfig
    return sysconfig.get_config_var(name)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _variant_note(vr: VariantResult) -> str:
    parts = []
    if vr.status != "ok":
        parts.append(vr.reason if vr.status == "unavailable" else f"{vr.status}: {vr.reason}")
    if vr.note:
        parts.append(vr.note)
    parts += vr.notes
    cpu = vr.extras.get("cpu_us_per_req")
    if cpu:
        parts.append(f"cpu/req {statistics.median(cpu):.0f} us (process)")
    sw = vr.extras.get("ctxsw_per_req")
    if sw:
        parts.append(f"ctx switches/req {statistics.median(sw):.1f}")
    text = "; ".join(parts)
    return text if len(text) <= 110 else text[:107] + "..."


def render_header(machine: dict[str, Any], quick: bool) -> str:
    m = machine
    aff = f", {m['cpu_affinity']} usable" if m["cpu_affinity"] is not None else ""
    load = " ".join(f"{x:.2f}" for x in m["loadavg"]) if m["loadavg"] else "n/a"
    gil = "enabled" if m["gil_enabled"] else "disabled"
    if m["free_threaded_build"]:
        gil += " (free-threaded build)"
    return "\n".join([
        f"threadpoll bench{' --quick (smoke run: numbers are rough)' if quick else ''}",
        f"machine:    {m['platform']} {m['machine']}; {m['cpu_model']}; "
        f"{m['cpu_count']} CPUs{aff}; load {load}",
        f"python:     {m['python_implementation']} {m['python_version']} "
        f"({m['python_build']}) [{m['python_compiler']}]; GIL {gil}",
        f"threadpoll: backend {m['threadpoll_backend']}",
        f"others:     trio {m['trio']}; gevent {m['gevent']}; "
        f"RLIMIT_NOFILE {m['rlimit_nofile']}",
        "method:     interleaved rounds (order rotated each round); median of rounds "
        "(latency: samples pooled);",
        "            ratio = variant / the case's stdlib baseline. Noise is +-15-25%.",
    ])


def render_case(cr: CaseResult) -> str:
    c = cr.case
    better = "higher is better" if c.kind == "rate" else "lower is better"
    lines = [f"== {c.id}: {c.title}",
             f"   {c.measure}, {better}; ratio to {c.baseline}; "
             f"{cr.rounds_run} round(s), {cr.elapsed_s:.1f} s"
             + (f"; {cr.note}" if cr.note else "")]
    if cr.skipped:
        lines.append(f"   skipped: {cr.skipped}")
        return "\n".join(lines)
    rows: list[tuple[str, ...]]
    if c.kind == "latency":
        rows = [("variant", f"p50 {c.unit}", f"p99 {c.unit}", "x p50", "x p99", "n", "note")]
        for vr in cr.variants:
            never = vr.status == "ok" and not vr.samples
            rows.append((vr.name, "never" if never else _fmt(vr.p50),
                          "never" if never else _fmt(vr.p99), _fmt_ratio(vr.ratio),
                          _fmt_ratio(vr.ratio_p99), str(len(vr.samples)), _variant_note(vr)))
    else:
        rows = [("variant", f"median {c.unit}", "ratio", "note")]
        for vr in cr.variants:
            rows.append((vr.name, _fmt(vr.median), _fmt_ratio(vr.ratio), _variant_note(vr)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for j, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in
                                              zip(row[1:-1], widths[1:])]
        lines.append(("   " + "  ".join(cells + [row[-1]])).rstrip())
        if j == 0:
            lines.append("   " + "  ".join("-" * w for w in widths) + "  ----")
    return "\n".join(lines)


def _case_json(cr: CaseResult) -> dict[str, Any]:
    c = cr.case
    return {
        "id": c.id, "scenario": c.scenario, "title": c.title, "kind": c.kind, "unit": c.unit,
        "measure": c.measure, "better": "higher" if c.kind == "rate" else "lower",
        "baseline": c.baseline, "params": c.params, "rounds_planned": c.rounds,
        "rounds_run": cr.rounds_run, "elapsed_s": round(cr.elapsed_s, 3),
        "skipped": cr.skipped or None, "note": cr.note,
        "variants": [{
            "name": vr.name, "status": vr.status, "reason": vr.reason,
            "note": "; ".join(filter(None, [vr.note, *vr.notes])),
            "median": vr.median, "p50": vr.p50, "p99": vr.p99,
            "ratio": vr.ratio, "ratio_p99": vr.ratio_p99,
            "rounds": vr.values, "samples": vr.samples,
            "extra": {k: statistics.median(xs) for k, xs in vr.extras.items()},
            "extra_rounds": vr.extras,
        } for vr in cr.variants],
    }


# ---------------------------------------------------------------------------------------------
# Entry point


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m threadpoll bench",
        description="Benchmark threadpoll against stdlib sockets, selectors, asyncio, trio "
                    "and gevent, in one run, as ratios to the stdlib.")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run (CI): few rounds, short windows, under a minute")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--only", nargs="+", metavar="SCENARIO", choices=SCENARIOS,
                   help=f"run only these scenarios: {', '.join(SCENARIOS)}")
    p.add_argument("--rounds", type=int, metavar="N",
                   help="interleaved rounds per case (default: 2 quick, 3-5 full)")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    return p


def _json_path_problem(path: str) -> str | None:
    """Why the results could not be written to ``path``, or None if they can."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "is a directory"
    if not os.path.isdir(parent):
        return f"directory {parent} does not exist"
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            return "is not writable"
    elif not os.access(parent, os.W_OK | os.X_OK):
        return f"directory {parent} is not writable"
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args._child:
        return _child_main(args._child)
    if args.rounds is not None and args.rounds < 1:
        _parser().error("--rounds must be at least 1")
    if args.json:
        problem = _json_path_problem(args.json)
        if problem:  # say so now, not after minutes of measuring
            _parser().error(f"--json {args.json}: {problem}")
    quick: bool = args.quick
    only: list[str] = args.only or list(SCENARIOS)
    started = time.monotonic()
    started_utc = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    global_deadline = started + _GLOBAL_BUDGET_S[quick]
    results: list[CaseResult] = []
    disabled: dict[str, str] = {}
    with _nofile_raised():
        machine = describe_machine()
        print(render_header(machine, quick), flush=True)
        try:
            for case in _cases(quick, args.rounds, only):
                if time.monotonic() > global_deadline:
                    cr = CaseResult(case, [VariantResult(v.name) for v in case.variants],
                                    skipped="the run's global time budget is spent")
                else:
                    cr = _run_case(case, quick, global_deadline, disabled)
                results.append(cr)
                print("\n" + render_case(cr), flush=True)
        finally:
            _shutdown_impl_runtimes()
    errors = sum(vr.status == "error" for cr in results for vr in cr.variants)
    elapsed = time.monotonic() - started
    print(f"\ndone in {elapsed:.1f} s" + (f"; {errors} variant(s) failed" if errors else ""),
          flush=True)
    if args.json:
        doc = {
            "schema": "threadpoll-bench/1",
            "started_utc": started_utc,
            "elapsed_s": round(elapsed, 3),
            "quick": quick,
            "only": only,
            "machine": machine,
            "errors": errors,
            "cases": [_case_json(cr) for cr in results],
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
