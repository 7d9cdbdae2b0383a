"""Helpers for tests: observe the pollDesc state instead of sleeping."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from threadpoll._runtime.netpoll import PD_PARKED, PollDesc


def wait_until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll pred until it is true; fail loudly after timeout seconds.

    This observes state that another thread changes (a pollDesc's rg/wg, a counter); it is not
    sleep-as-synchronisation: the loop ends as soon as the state is reached.
    """
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.0005)


def pd_of(obj: Any) -> PollDesc:
    """The runtime pollDesc behind an FD (or anything with an ``fd``/``_fd`` FD attribute)."""
    fd = obj
    for attr in ("_fd", "fd", "pfd"):
        inner = getattr(fd, attr, None)
        if inner is not None and hasattr(inner, "pd"):
            fd = inner
            break
    pd = fd.pd.runtime_ctx
    assert pd is not None, "descriptor is not pollable"
    return pd


def wait_parked(obj: Any, mode: str = "r", timeout: float = 5.0) -> None:
    """Wait until a thread is parked on obj's pollDesc in mode ("r" or "w")."""
    pd = pd_of(obj)
    wait_until(
        lambda: (pd.rg if mode == "r" else pd.wg) == PD_PARKED,
        timeout,
        f"a thread parked in mode {mode!r} on fd {pd.fd}",
    )


class Runner:
    """Run a callable in a thread and keep its result or exception."""

    def __init__(self, fn: Callable[[], Any], name: str = "runner") -> None:
        self.result: Any = None
        self.exc: BaseException | None = None
        self.done = threading.Event()

        def target() -> None:
            try:
                self.result = fn()
            except BaseException as e:  # noqa: BLE001 - reported to the test
                self.exc = e
            finally:
                self.done.set()

        self.thread = threading.Thread(target=target, name=name, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 10.0) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"{self.thread.name} did not finish within {timeout} s")
        if self.exc is not None:
            raise self.exc
        return self.result

    def join_exc(self, timeout: float = 10.0) -> BaseException | None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"{self.thread.name} did not finish within {timeout} s")
        return self.exc


def run_all(fns: list[Callable[[], Any]], timeout: float = 30.0) -> list[Any]:
    runners = [Runner(f, name=f"worker-{i}") for i, f in enumerate(fns)]
    return [r.join(timeout) for r in runners]
