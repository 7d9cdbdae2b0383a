"""Helpers for tests: observe the pollDesc state instead of sleeping."""

from __future__ import annotations

import inspect
import os
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any, Callable, TypeVar, cast

from threadpoll._poll.fd_unix import FD
from threadpoll._runtime.netpoll import PD_PARKED, PollDesc
from threadpoll._runtime.netpoll_c import POLLDESC_TYPES
from threadpoll.socket import _Desc


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


def line_of(func: Callable[..., Any], marker: str) -> int:
    """The number of the first source line of ``func`` that contains ``marker``."""
    lines, first = inspect.getsourcelines(func)
    return next(first + i for i, ln in enumerate(lines) if marker in ln)


def thread_on_line(ident: int | None, func: Callable[..., Any], marker: str) -> bool:
    """Whether the thread ``ident``'s top frame is in ``func`` on the first source line of it
    that contains ``marker``. A thread asleep in a C call (a lock's wait, a syscall) has no
    frame of its own there: its top frame is the Python line that made the call."""
    frame = sys._current_frames().get(ident or 0)
    if frame is None or frame.f_code is not func.__code__:
        return False
    return frame.f_lineno == line_of(func, marker)


class Meeting:
    """A point two threads may reach together: ``arrive()`` waits up to ``wait`` seconds for
    the other thread, then goes on either way; ``met`` is set if both were there at once
    (both inside a window that a lock should let only one into)."""

    def __init__(self, wait: float = 1.0) -> None:
        self._barrier = threading.Barrier(2)
        self._wait = wait
        self.met = threading.Event()

    def arrive(self) -> None:
        try:
            self._barrier.wait(self._wait)
        except threading.BrokenBarrierError:
            return
        self.met.set()


def blocked_on_call_gate(ident: int | None) -> bool:
    """Whether the thread ``ident`` is asleep on an FD's call gate (FD._gated): in
    ``acquire_until`` (a call with a timeout), or on the ``with gate:`` line of ``_gated``
    (a call without one)."""
    frame = sys._current_frames().get(ident or 0)
    if frame is not None and frame.f_code.co_name == "acquire_until":
        return True
    return thread_on_line(ident, FD._gated, "with gate:")


def fd_of(obj: Any) -> FD:
    """The FD behind obj, by what obj is: an FD itself; the drop-in socket's descriptor
    holder (``socket._desc``, whose ``fd`` is the FD); any other front (net's Conn,
    Listener and PacketConn, file's File, tls's Conn), which keeps its FD in ``_fd``."""
    if isinstance(obj, FD):
        return obj
    if isinstance(obj, _Desc):
        return obj.fd
    fd = obj._fd
    assert isinstance(fd, FD), f"{type(obj).__name__}._fd is not an FD"
    return fd


def pd_of(obj: Any) -> PollDesc:
    """The runtime pollDesc behind obj: a PollDesc itself, or the FD of ``fd_of(obj)``."""
    if isinstance(obj, POLLDESC_TYPES):
        return cast(PollDesc, obj)
    pd = fd_of(obj).pd.runtime_ctx
    assert pd is not None, "descriptor is not pollable"
    return pd


def parked(obj: Any, mode: str = "r") -> Callable[[], bool]:
    """A predicate: is a thread parked on obj's pollDesc (see pd_of) in mode ("r" or "w")?"""
    pd = pd_of(obj)
    return lambda: (pd.rg if mode == "r" else pd.wg) == PD_PARKED


def wait_parked(obj: Any, mode: str = "r", timeout: float = 5.0, what: str = "") -> None:
    """Wait until a thread is parked on obj's pollDesc (see pd_of) in mode ("r" or "w").

    The one way the tests wait for a thread to block in the runtime before they act; the
    public ``threadpoll.testing.wait_parked`` does the same for users' tests.
    """
    pd = pd_of(obj)
    wait_until(parked(pd, mode), timeout, what or f"a thread parked in mode {mode!r} on fd {pd.fd}")


T = TypeVar("T")


def impls() -> list[str]:
    """The implementations to test: "python", and "c" where the C core is built;
    $THREADPOLL_TEST_IMPL keeps one."""
    from threadpoll._runtime import netpoll_c

    names = ["python"] + (["c"] if netpoll_c.available() else [])
    only = os.environ.get("THREADPOLL_TEST_IMPL")
    return [n for n in names if only in (None, n)]


class InterruptPoint:
    """A profile function that raises KeyboardInterrupt at the ``k``-th function entry or C
    call return in code whose file ``in_scope`` accepts: the points where CPython runs a
    signal handler, so where a Ctrl-C can raise. ``hit`` names the function it landed in
    (None if the run passed fewer than ``k`` points)."""

    def __init__(self, k: int, in_scope: Callable[[str], bool]) -> None:
        self.k = k
        self.in_scope = in_scope
        self.seen = 0
        self.hit: str | None = None

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if event in ("call", "c_return") and self.in_scope(frame.f_code.co_filename):
            self.seen += 1
            if self.seen == self.k:
                self.hit = frame.f_code.co_name
                raise KeyboardInterrupt

    def run(self, fn: Callable[[], T]) -> T:
        """fn() in the calling thread, with this profile function set for its duration."""
        sys.setprofile(self)
        try:
            return fn()
        finally:
            sys.setprofile(None)


def interrupt_points(in_scope: Callable[[str], bool]) -> Iterator[InterruptPoint]:
    """InterruptPoint 1, 2, 3, ... for one harness: the caller runs each in turn and stops
    at the first whose run was not hit (every point has then been tried)."""
    k = 0
    while True:
        k += 1
        yield InterruptPoint(k, in_scope)


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


class OnLine:
    """A trace function that calls ``action()`` each time a thread running under it reaches
    one source line: the first line of ``func`` that contains ``marker`` (in ``func`` or in
    a function nested in it). ``run(fn)`` calls fn on the calling thread with it installed;
    each thread that is to stop there runs its call through ``run``."""

    def __init__(self, func: Callable[..., Any], marker: str, action: Callable[[], Any]) -> None:
        self.line = line_of(func, marker)
        self.file = func.__code__.co_filename
        self._action = action

    def _at_line(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "line" and frame.f_lineno == self.line:
            self._action()
        return self._at_line

    def _tracer(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "call" and frame.f_code.co_filename == self.file:
            return self._at_line
        return None

    def run(self, fn: Callable[[], T]) -> T:
        sys.settrace(self._tracer)
        try:
            return fn()
        finally:
            sys.settrace(None)


class HoldAt(OnLine):
    """OnLine that holds the first thread to get to the line there (it sets ``reached``)
    until ``release()``, or ``wait`` seconds; threads after it pass."""

    def __init__(self, func: Callable[..., Any], marker: str, wait: float = 10.0) -> None:
        super().__init__(func, marker, self._hold)
        self.reached = threading.Event()
        self._go = threading.Event()
        self._wait = wait

    def _hold(self) -> None:
        if not self.reached.is_set():
            self.reached.set()
            self._go.wait(self._wait)

    def release(self) -> None:
        self._go.set()
