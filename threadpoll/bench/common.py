"""What every scenario shares: the data model, small helpers, connected pairs, child processes."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import itertools
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

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
V_SSL_TPS_C = "threadpoll drop-in ssl, C core"
V_TLS_C = "threadpoll.tls, C core"
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


_probe_tps = _probe_module(
    "threadpoll.socket", "socket", "socketpair", "create_server", "create_connection"
)
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
        proc = _import("threadpoll._runtime.proc")
        if impl == "c":
            rt = _import("threadpoll._runtime.netpoll_c").CRuntime()
        else:
            name = os.environ.get("THREADPOLL_BACKEND") or proc.backend_names()[0]
            rt = proc.Runtime(proc.new_backend(name))
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
        proc = _import("threadpoll._runtime.proc")
        old = proc.set_default_runtime(_impl_runtime(impl))
        try:
            return fn(ctx)
        finally:
            proc.set_default_runtime(old)

    return run


def _both_ends(fn: Callable[[RunCtx], Outcome]) -> Callable[[RunCtx], Outcome]:
    """An echo variant whose client sockets are threadpoll drop-in sockets too."""

    def run(ctx: RunCtx) -> Outcome:
        return fn(
            RunCtx(
                {**ctx.params, "tp_clients": True}, ctx.window_s, ctx.max_ops, ctx.hard_s, ctx.quick
            )
        )

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


def _join_or_unstick(
    workers: Sequence[_Thread], timeout: float, unstick: Callable[[], None], what: str
) -> None:
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
        return (
            f"RLIMIT_NOFILE is {soft} even after raising it to the hard limit; needs {n + in_use}"
        )
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


def _in_child(fn: Callable[[RunCtx], Outcome]) -> Callable[[RunCtx], Outcome]:
    """Run the variant function ``fn`` in a child process (``python -m threadpoll.bench
    --_child``), which finds it by module and name."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def run(ctx: RunCtx) -> Outcome:
        spec = json.dumps(
            {"module": fn.__module__, "fn": fn.__name__, "ctx": dataclasses.asdict(ctx)}
        )
        # The child imports this very threadpoll, wherever the parent found it.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "threadpoll.bench", "--_child", spec],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=env,
                timeout=max(ctx.hard_s - 1.0, 1.0),
                check=False,
            )
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
    fn = getattr(importlib.import_module(spec["module"]), spec["fn"])
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
