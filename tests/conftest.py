"""Shared fixtures: one runtime per backend, and a leak check after every test.

Every behavioural test takes the ``rt`` fixture, which is parametrized over every backend this
machine can run: epoll and poll on Linux, kqueue and poll on the BSDs and macOS, plus the
kqueue backend over the epoll-backed kqueue emulation (tests/kqueue_emul.py) on Linux. The
fixture makes that runtime the default one for the test, so the fronts (net, file, socket)
use it too.

Every implementation × backend: where the C core is built, ``c-epoll`` (or ``c-kqueue``) runs
each behavioural test on the C core's runtime as well. Tests that drive the Python runtime's
hook points (``Hooks``), its tracing or its internals are marked ``python_runtime`` and are
skipped there; the C core gets those races through stress and the sanitizer run.
``THREADPOLL_TEST_BACKENDS`` picks params by name (``c-epoll`` included);
``THREADPOLL_TEST_IMPL=c`` or ``python`` keeps one implementation's params only.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from threadpoll._runtime import proc  # noqa: E402
from threadpoll._runtime.netpoll import PD_PARKED, PD_WAIT  # noqa: E402
from threadpoll._runtime.proc import Runtime, new_backend  # noqa: E402


def _backend_params() -> list[str]:
    names = []
    if hasattr(select, "epoll"):
        names.append("epoll")
        names.append("epoll-lazy")  # EpollBackend(lazy_write=True): EPOLLOUT armed on demand
    if hasattr(select, "kqueue"):
        names.append("kqueue")
    else:
        try:
            import kqueue_emul  # noqa: F401
        except ImportError:
            pass
        else:
            names.append("kqueue-emul")
    if hasattr(select, "poll"):
        names.append("poll")
    from threadpoll._runtime import netpoll_c

    if netpoll_c.available():
        names.append("c-" + netpoll_c.backend_name())
    impl = os.environ.get("THREADPOLL_TEST_IMPL")
    if impl == "c":
        names = [n for n in names if n.startswith("c-")]
    elif impl == "python":
        names = [n for n in names if not n.startswith("c-")]
    only = os.environ.get("THREADPOLL_TEST_BACKENDS")
    if only:
        names = [n for n in names if n in only.split(",")]
    return names


BACKENDS = _backend_params()
PY_BACKENDS = [n for n in BACKENDS if not n.startswith("c-")]  # the Python runtime's only
_runtimes: dict[str, Runtime] = {}


def make_runtime(name: str) -> Runtime:
    """A fresh runtime for the named test backend (callers shut it down)."""
    if name == "epoll-lazy":
        from threadpoll._runtime.netpoll_epoll import EpollBackend

        return Runtime(EpollBackend(lazy_write=True))
    if name == "kqueue-emul":
        import kqueue_emul

        from threadpoll._runtime.netpoll_kqueue import KqueueBackend

        return Runtime(KqueueBackend(select_module=kqueue_emul.module()))
    if name.startswith("c-"):
        from threadpoll._runtime import netpoll_c

        return netpoll_c.CRuntime(name[2:])  # type: ignore[no-any-return]
    return Runtime(new_backend(name))


def runtime_for(name: str) -> Runtime:
    rt = _runtimes.get(name)
    if rt is None:
        rt = _runtimes[name] = make_runtime(name)
    return rt


@pytest.fixture(scope="session", autouse=True)
def _all_runtimes() -> Iterator[None]:
    # Made before the first test, so their descriptors and poller threads are not leaks.
    for name in BACKENDS:
        runtime_for(name)
    proc.get_runtime()
    yield


@pytest.fixture(params=BACKENDS)
def rt(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    """The runtime of one backend, installed as the default runtime for the test."""
    if request.param.startswith("c-") and request.node.get_closest_marker("python_runtime"):
        pytest.skip("drives the Python runtime's hook points or internals")
    runtime = runtime_for(request.param)
    runtime.hooks.after_eagain = runtime.hooks.before_park = runtime.hooks.before_ready = None
    old = proc.set_default_runtime(runtime)
    try:
        yield runtime
    finally:
        runtime.hooks.after_eagain = runtime.hooks.before_park = None
        runtime.hooks.before_ready = None
        proc.set_default_runtime(old)


def _fd_set() -> dict[str, str]:
    out = {}
    for name in os.listdir("/dev/fd"):
        try:
            out[name] = os.readlink(f"/dev/fd/{name}")
        except OSError:
            out[name] = "?"
    return out


# threadpoll's own threads, not leaks (the leak check excludes the runtime's threads): the
# pollers, abandoned resolver threads of timed-out dials, and the finalizer thread.
_RUNTIME_THREADS = ("threadpoll-poller", "threadpoll-resolver", "threadpoll-finalizer")


def _our_threads() -> list[threading.Thread]:
    return [
        t for t in threading.enumerate() if t.is_alive() and not t.name.startswith(_RUNTIME_THREADS)
    ]


def _all_known_runtimes() -> list[Runtime]:
    rts = list(_runtimes.values())
    d = proc._default
    if d is not None and d not in rts:
        rts.append(d)
    return rts


@pytest.fixture(autouse=True)
def _leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaks a descriptor, a thread, a registered pollDesc or a parked waiter."""
    if request.node.get_closest_marker("no_leak_check"):
        yield
        return
    fds = _fd_set()
    threads = set(_our_threads())
    open_pds = {id(rt): len(rt.open_pds) for rt in _all_known_runtimes()}
    yield
    deadline = time.monotonic() + 5.0
    while True:
        leaked_threads = [t for t in _our_threads() if t not in threads]
        now = _fd_set()
        leaked_fds = {k: v for k, v in now.items() if k not in fds}
        parked = []
        leaked_pds = []
        for runtime in _all_known_runtimes():
            with runtime.lock:
                pds = list(runtime.open_pds.values())
            for pd in pds:
                if pd.rg in (PD_WAIT, PD_PARKED) or pd.wg in (PD_WAIT, PD_PARKED):
                    parked.append(f"{runtime.name}: {pd!r}")
            if len(pds) > open_pds.get(id(runtime), 0):
                was = open_pds.get(id(runtime), 0)
                leaked_pds.append(f"{runtime.name}: {len(pds)} open, was {was}")
        if not (leaked_threads or leaked_fds or parked or leaked_pds):
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)  # threads and descriptors being torn down by the test's own threads
    msgs = []
    if leaked_threads:
        msgs.append(f"threads left running: {[t.name for t in leaked_threads]}")
    if leaked_fds:
        msgs.append(f"descriptors left open: {leaked_fds}")
    if parked:
        msgs.append(f"waiters left parked: {parked}")
    if leaked_pds:
        msgs.append(f"pollDescs left registered: {leaked_pds}")
    pytest.fail("leak after test: " + "; ".join(msgs), pytrace=False)


def pytest_report_header() -> str:
    """Which threadpoll this run tests: the checkout, or an installed wheel (.ci/run's release
    phase runs this suite against the wheel it built, from outside the checkout)."""
    import threadpoll

    return f"threadpoll {threadpoll.__version__} from {os.path.dirname(threadpoll.__file__)}"
