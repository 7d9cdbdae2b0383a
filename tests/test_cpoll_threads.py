"""The C core without the GIL: the fields several threads touch, touched at once.

Each test hammers one field or lifecycle step of the C core from several threads. With the
GIL they are quick checks that the values stay sane; on a free-threaded build (3.13t,
PYTHON_GIL=0) they are the races the C core's locking fixes: before it, a reader of
``pd.kind`` could take a reference to a str another thread's store had just freed (a
crash), an fdMutex could call a ``reentry_check`` that a setter had just released, and a
``netpoll_break`` racing ``shutdown`` could write to a closed, reused descriptor.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import sysconfig
import threading
from typing import Any, Callable

import pytest
from support import Runner

from threadpoll._runtime import netpoll_c

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not netpoll_c.available(), reason="the C core is not built"),
]

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def _together(fns: list[Callable[[], None]]) -> None:
    """Run each fn on a thread of its own, all released at once; re-raise the first
    failure."""
    start = threading.Barrier(len(fns))

    def run(fn: Callable[[], None]) -> Callable[[], None]:
        def go() -> None:
            start.wait()
            fn()

        return go

    runners = [Runner(run(fn), name=f"hammer-{i}") for i, fn in enumerate(fns)]
    for r in runners:
        r.join(50.0)


@pytest.mark.skipif(not FREE_THREADED, reason="a free-threaded build's property")
def test_importing_the_c_core_leaves_the_gil_disabled() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON_GIL", "THREADPOLL_IMPL")}
    code = (
        "import sys, threadpoll, threadpoll.lowlevel as l\n"
        "from threadpoll._runtime import netpoll_c\n"
        "assert netpoll_c.available(), 'the C core did not load'\n"
        "print(l.impl(), sys._is_gil_enabled())\n"
    )
    r = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["c", "False"], (r.stdout, r.stderr)
    assert "GIL" not in r.stderr


@pytest.fixture
def crt() -> Any:
    rt = netpoll_c.CRuntime()
    yield rt
    rt.shutdown()


def test_kind_stored_and_read_by_many_threads(crt: Any) -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    pd, err = crt.runtime_poll_open(r)
    assert err == 0
    rounds = 20000

    def store(tag: str) -> Callable[[], None]:
        def run() -> None:
            for i in range(rounds):
                pd.kind = f"{tag}-{i}"  # a fresh str each time: the old one is freed

        return run

    def load() -> None:
        for _ in range(rounds):
            k = pd.kind
            assert k.__class__ is str and k[:2] in ("a-", "b-"), k

    try:
        pd.kind = "a-0"
        _together([store("a"), store("b"), load, load])
    finally:
        pd.unblock()
        crt.runtime_poll_close(pd)
        os.close(r)
        os.close(w)


def test_fdmutex_fields_swapped_while_used() -> None:
    from threadpoll._poll.fd_mutex import Sema

    mu = netpoll_c.cpoll.FDMutex()
    rounds = 5000
    checks = [0]

    def check(read: bool) -> None:
        checks[0] += 1  # racy count (only its being positive is asserted)

    def swap() -> None:
        for _ in range(rounds):
            mu.reentry_check = lambda read: check(read)  # a fresh callable: the old one dies
            mu.wsema = mu.wsema  # a store of the same object: a reader must never see it freed

    def lock_unlock() -> None:
        # Contended read locks: a waiter calls reentry_check, then sleeps on rsema.
        for _ in range(rounds):
            assert mu.rwlock(True)
            mu.rwunlock(True)

    def read_fields() -> None:
        for _ in range(rounds):
            assert isinstance(mu.wsema, Sema)
            assert callable(mu.reentry_check)

    mu.reentry_check = lambda read: check(read)
    _together([swap, lock_unlock, lock_unlock, read_fields])
    assert mu.state == 0, hex(mu.state)


@pytest.mark.parametrize("round_", range(10))
def test_shutdown_races_breaks_opens_and_another_shutdown(round_: int) -> None:
    rt = netpoll_c.CRuntime()
    r, w = os.pipe()
    os.set_blocking(r, False)
    pd, err = rt.runtime_poll_open(r)  # starts the poller
    assert err == 0
    done = threading.Event()
    opened: list[Any] = []
    refused = [0]

    def breaker() -> None:
        while not done.is_set():
            rt.netpoll_break()
            rt.netpoll_is_poll_descriptor(w)

    def opener() -> None:
        for _ in range(50):
            a, b = os.pipe()
            try:
                p, e = rt.runtime_poll_open(a)
            except OSError as exc:
                assert exc.errno == errno.ESHUTDOWN, exc
                refused[0] += 1
            else:
                assert e == 0 and p is not None
                opened.append(p)
            finally:
                os.close(a)  # an fd number reused at once: a use after close would show
                os.close(b)

    def shut() -> None:
        rt.shutdown()

    breakers = [Runner(breaker, name=f"breaker-{i}") for i in range(2)]
    try:
        _together([opener, shut, shut])
        assert not rt.poller_running
        # Shut down: no descriptor of the runtime is used any more. A pipe made now takes
        # the freed numbers; a break still running must not write into it.
        a, b = os.pipe()
        try:
            os.set_blocking(a, False)
            for _ in range(1000):
                rt.netpoll_break()
            with pytest.raises(BlockingIOError):
                os.read(a, 8)
            assert not rt.netpoll_is_poll_descriptor(a)
            assert not rt.netpoll_is_poll_descriptor(b)
        finally:
            os.close(a)
            os.close(b)
        with pytest.raises(OSError) as e:
            rt.runtime_poll_open(r)
        assert e.value.errno == errno.ESHUTDOWN
    finally:
        done.set()
        for br in breakers:
            br.join()
        os.close(r)
        os.close(w)
