"""A signal handler may use the object its thread is inside.

CPython runs a Python signal handler on the main thread, between bytecodes: inside whatever
threadpoll call that thread is making. The handler may call any method of the same object
(set a deadline, read an address, write, shut down, close) and nothing may deadlock, wherever
the interrupted call is: in its first attempt at the syscall, parked in the runtime, or
waiting for the read lock another thread holds.

Each front (drop-in socket, Conn, Listener, PacketConn, File) is driven into each of the three
places, observed (a profile hook on the syscall's C call for the first attempt; the pollDesc
or the lock's state for the others), and the main thread is sent SIGUSR1 there.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
from support import Runner, blocked_on_call_gate, wait_parked, wait_until

import threadpoll
import threadpoll.socket as ts
from threadpoll._poll.fd_mutex import MUTEX_RMASK
from threadpoll._poll.fd_unix import FD
from threadpoll._runtime.netpoll import PD_PARKED
from threadpoll._runtime.park import Sema
from threadpoll._runtime.proc import Runtime
from threadpoll.errors import ClosingError, DeadlineExceededError

SIG = getattr(signal, "SIGUSR1", 0)

pytestmark = [
    pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill"),
    pytest.mark.timeout(10),
]

# The C calls that are a front's first attempt at its syscall (os.read for a pipe, the
# socket's own methods otherwise): the profile hook fires the signal just before the first.
# The C calls a first attempt makes: the syscalls' wrappers, and on the C core its first
# attempts themselves (threadpoll/_c/fd_unix.c: no Python runs inside them, so the handler
# runs as they return).
_SYSCALLS = frozenset(
    {"read", "readv", "write", "recv", "recv_into", "recvfrom", "_accept", "send", "sendto"}
    | {"fd_read", "fd_read_into", "fd_write", "fd_send", "fd_accept"}
    | {"conn_read", "conn_read_into", "conn_write", "try_recv", "try_send"}
)


@pytest.fixture
def main_thread() -> int:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run on the main thread only")
    return threading.get_ident()


@dataclass
class Front:
    """One object under test and what to do with it."""

    obj: Any
    fd: FD
    call: Callable[[], Any]  # the main thread's blocking call on obj
    prime: Callable[[], None]  # make call's first attempt succeed at once
    actions: list[Callable[[], Any]]  # what the handler does, in order (close last)
    peers: list[Any] = field(default_factory=list)  # closed at the end

    def close_all(self) -> None:
        for p in [*self.peers, self.obj]:
            with contextlib.suppress(OSError):
                p.close()


def _socket_front() -> Front:
    a, b = ts.socketpair()
    return Front(
        obj=b,
        fd=b._desc.fd,
        call=lambda: b.recv(16),
        prime=lambda: a.sendall(b"data"),
        actions=[
            lambda: b.set_read_deadline(None),
            b.getsockname,
            lambda: b.send(b"x"),
            lambda: b.shutdown(socket.SHUT_WR),
            b.close,
        ],
        peers=[a],
    )


def _conn_front() -> Front:
    ln = threadpoll.listen("tcp", ("127.0.0.1", 0))
    c = threadpoll.dial("tcp", ln.addr)
    s = ln.accept()
    ln.close()
    return Front(
        obj=s,
        fd=s._fd,
        call=lambda: s.read(16),
        prime=lambda: c.write(b"data"),
        actions=[
            lambda: s.set_read_deadline(None),
            lambda: s.local_addr,
            lambda: s.write(b"x"),
            s.close_write,
            s.close,
        ],
        peers=[c],
    )


def _listener_front() -> Front:
    ln = threadpoll.listen("tcp", ("127.0.0.1", 0))
    dialed: list[Any] = []

    def accept_one() -> None:
        dialed.append(ln.accept())

    def prime() -> None:
        dialed.append(threadpoll.dial("tcp", ln.addr))

    class Peers:
        def close(self) -> None:
            for c in dialed:
                c.close()

    return Front(
        obj=ln,
        fd=ln._fd,
        call=accept_one,
        prime=prime,
        actions=[lambda: ln.set_deadline(None), lambda: ln.addr, ln.fileno, ln.close],
        peers=[Peers()],
    )


def _packet_front() -> Front:
    pc = threadpoll.listen_packet("udp", ("127.0.0.1", 0))
    peer = threadpoll.listen_packet("udp", ("127.0.0.1", 0))
    return Front(
        obj=pc,
        fd=pc._fd,
        call=lambda: pc.read_from(16),
        prime=lambda: peer.write_to(b"data", pc.local_addr),
        actions=[
            lambda: pc.set_read_deadline(None),
            lambda: pc.local_addr,
            lambda: pc.write_to(b"x", peer.local_addr),
            pc.close,
        ],
        peers=[peer],
    )


def _file_front() -> Front:
    r, w = threadpoll.pipe()
    return Front(
        obj=r,
        fd=r._fd,
        call=lambda: r.read(16),
        prime=lambda: w.write(b"data"),
        actions=[lambda: r.set_read_deadline(None), r.fileno, r.close],
        peers=[w],
    )


FRONTS = {
    "socket": _socket_front,
    "Conn": _conn_front,
    "Listener": _listener_front,
    "PacketConn": _packet_front,
    "File": _file_front,
}


class _Handler:
    """A SIGUSR1 handler that runs the front's actions once and keeps what happened."""

    def __init__(self, actions: list[Callable[[], Any]]) -> None:
        self.actions = actions
        self.ran = threading.Event()
        self.errors: list[BaseException] = []

    def __call__(self, signum: int, frame: object) -> None:
        if self.ran.is_set():
            return
        try:
            for act in self.actions:
                try:
                    act()
                except ClosingError as e:
                    self.errors.append(e)  # a close elsewhere may have come first
        finally:
            self.ran.set()


@contextlib.contextmanager
def _handler(actions: list[Callable[[], Any]]) -> Iterator[_Handler]:
    h = _Handler(actions)
    old = signal.signal(SIG, h)
    try:
        yield h
    finally:
        signal.signal(SIG, old)


@contextlib.contextmanager
def _signal_at_first_syscall(main: int) -> Iterator[None]:
    """Send SIG to this thread just before its first C call in _SYSCALLS (a profile hook
    sees C calls): the handler runs inside the first attempt."""
    fired = [False]

    def prof(frame: object, event: str, arg: Any) -> None:
        if event == "c_call" and not fired[0] and getattr(arg, "__name__", "") in _SYSCALLS:
            fired[0] = True
            signal.pthread_kill(main, SIG)

    sys.setprofile(prof)
    try:
        yield
    finally:
        sys.setprofile(None)
    assert fired[0], "the call made none of the expected syscalls"


def _finish(front: Front, main_result: Runner | None = None) -> None:
    front.close_all()
    assert front.fd.fileno() == -1, "the handler's close did not release the descriptor"


def _run_main_call(front: Front) -> BaseException | None:
    try:
        front.call()
    except (ClosingError, DeadlineExceededError) as e:
        return e
    return None


@pytest.mark.parametrize("kind", list(FRONTS))
def test_handler_during_first_attempt(rt: Runtime, main_thread: int, kind: str) -> None:
    """The handler runs just before the call's first syscall (data is there already)."""
    front = FRONTS[kind]()
    try:
        front.prime()
        with _handler(front.actions) as h:
            with _signal_at_first_syscall(main_thread):
                _run_main_call(front)
        assert h.ran.is_set()
        assert not h.errors, h.errors
    finally:
        _finish(front)


@pytest.mark.parametrize("kind", list(FRONTS))
def test_handler_while_parked(rt: Runtime, main_thread: int, kind: str) -> None:
    """The handler runs while the call is parked in the runtime; its close wakes the call."""
    front = FRONTS[kind]()
    try:
        with _handler(front.actions) as h:

            def kick() -> None:
                wait_parked(front.fd, "r")
                signal.pthread_kill(main_thread, SIG)

            kicker = Runner(kick, name="kicker")
            err = _run_main_call(front)
            kicker.join()
        assert h.ran.is_set()
        assert not h.errors, h.errors
        assert isinstance(err, ClosingError), err
    finally:
        _finish(front)


def _waiting_for_read_lock(front: Front, main: int) -> bool:
    """Whether the main thread is asleep waiting for the read lock another thread holds."""
    if isinstance(front.obj, ts.socket):
        # Asleep on the FD's read call gate, which the drop-in's calls take first.
        return blocked_on_call_gate(main)
    return bool(front.fd.fdmu.state & MUTEX_RMASK)


@pytest.mark.parametrize("kind", list(FRONTS))
def test_handler_while_waiting_for_the_lock(rt: Runtime, main_thread: int, kind: str) -> None:
    """The handler runs while the call waits for the read lock that a parked thread holds."""
    front = FRONTS[kind]()
    try:
        holder = Runner(lambda: _run_main_call(front), name="holder")
        wait_parked(front.fd, "r")
        with _handler(front.actions) as h:

            def kick() -> None:
                wait_until(lambda: _waiting_for_read_lock(front, main_thread), what="lock wait")
                signal.pthread_kill(main_thread, SIG)

            kicker = Runner(kick, name="kicker")
            err = _run_main_call(front)
            kicker.join()
        assert h.ran.is_set()
        assert not h.errors, h.errors
        assert isinstance(err, ClosingError), err
        assert isinstance(holder.join(), ClosingError)
    finally:
        _finish(front)


@pytest.mark.parametrize("kind", ["socket", "Conn", "File"])
def test_same_direction_from_the_handler_is_refused(
    rt: Runtime, main_thread: int, kind: str
) -> None:
    """A handler reading on top of its own thread's parked read would wait for itself: it
    gets RuntimeError('reentrant call ...') at once, and the parked read goes on."""
    front = FRONTS[kind]()
    try:
        refused: list[BaseException] = []

        def read_again() -> None:
            try:
                front.call()
            except RuntimeError as e:
                refused.append(e)

        with _handler([read_again]) as h:

            def kick() -> None:
                wait_parked(front.fd, "r")
                signal.pthread_kill(main_thread, SIG)
                h.ran.wait(5)
                front.prime()

            kicker = Runner(kick, name="kicker")
            assert front.call() == b"data"
            kicker.join()
        assert len(refused) == 1 and "reentrant call" in str(refused[0])
    finally:
        _finish(front)


@pytest.mark.python_runtime  # it watches _park, the Python runtime's sleep
@pytest.mark.parametrize("action", ["deadline", "close"])
def test_unblock_from_a_handler_as_the_thread_goes_to_sleep(
    rt: Runtime, main_thread: int, action: str
) -> None:
    """The handler runs in the parked thread's last steps before it sleeps (as it lets go of
    pd.lock to sleep on its wake lock), after it looked at the pollDesc state: an unblock
    from there (a past deadline, a close) must still wake it, not be lost while nobody was
    waiting."""
    r, w = threadpoll.pipe()
    pd = r._fd.pd.runtime_ctx
    assert pd is not None
    fired = [False]

    def prof(frame: object, event: str, arg: Any) -> None:
        if (
            event == "c_call"
            and not fired[0]
            and getattr(arg, "__name__", "") == "_release_save"
            and pd.rg == PD_PARKED
        ):
            fired[0] = True
            signal.pthread_kill(main_thread, SIG)

    def unblock() -> None:
        if action == "deadline":
            r.set_read_deadline(time.monotonic() - 1)
        else:
            r.close()

    try:
        with _handler([unblock]) as h:
            sys.setprofile(prof)
            try:
                with pytest.raises((DeadlineExceededError, ClosingError)):
                    r.read(1)
            finally:
                sys.setprofile(None)
        assert fired[0] and h.ran.is_set()
    finally:
        r.close()
        w.close()


def test_sema_made_by_a_handler_during_its_first_use_keeps_the_token(main_thread: int) -> None:
    """A Sema makes its state on first use. A handler that releases the semaphore while its
    thread is making that state (in acquire) must not have its token dropped by a second
    state made over it: the acquire returns."""
    sema = Sema()
    fired = [False]

    def prof(frame: Any, event: str, arg: Any) -> None:
        code = frame.f_code
        if (
            event == "call"
            and not fired[0]
            and code.co_name == "__init__"
            and code.co_filename.endswith("park.py")
        ):
            fired[0] = True
            signal.pthread_kill(main_thread, SIG)

    with _handler([sema.release]) as h:
        sys.setprofile(prof)
        try:
            sema.acquire()
        finally:
            sys.setprofile(None)
    assert fired[0] and h.ran.is_set()


def test_detach_from_the_handler_is_refused(rt: Runtime, main_thread: int) -> None:
    """detach() must wait for every operation to leave before it hands the descriptor out;
    from a handler on top of its own thread's recv it would wait for itself: it raises."""
    front = _socket_front()
    refused: list[BaseException] = []

    def detach() -> None:
        try:
            front.obj.detach()
        except RuntimeError as e:
            refused.append(e)

    try:
        with _handler([detach, front.obj.close]) as h:

            def kick() -> None:
                wait_parked(front.fd, "r")
                signal.pthread_kill(main_thread, SIG)

            kicker = Runner(kick, name="kicker")
            assert isinstance(_run_main_call(front), ClosingError)
            kicker.join()
        assert h.ran.is_set() and len(refused) == 1
        assert "reentrant call" in str(refused[0])
    finally:
        _finish(front)


class _Kick(Exception):
    """What the handler below raises: the signal reached the parked main thread."""


@pytest.mark.timeout(60)
def test_signal_the_moment_the_main_thread_parks_is_seen(rt: Runtime, main_thread: int) -> None:
    """A signal that reaches the main thread just after it publishes PD_PARKED, before it is
    asleep, runs its handler within one sleep slice, not at the next wake-up: the C-level
    handler only marks the signal, and a sleep begun after the mark does not end with EINTR
    for it. Unfixed, such a signal waited for the read deadline below (the C core on Linux;
    found by the interrupted-park stress test under PYTHON_GIL=0). A new thread each round
    spins on the pollDesc state and signals the moment it reads PD_PARKED."""
    a, b = socket.socketpair()
    fa = FD(a.detach(), net="unix", kind="unix", runtime=rt)
    fb = FD(b.detach(), net="unix", kind="unix", runtime=rt)
    pd = fa.pd.runtime_ctx
    assert pd is not None

    def handler(sig: int, frame: object) -> None:
        raise _Kick

    def kill() -> None:
        give_up = time.monotonic() + 5.0
        while pd.rg != PD_PARKED:  # no sleep: the point is to be quick
            if time.monotonic() > give_up:
                raise AssertionError("the main thread never parked")
        signal.pthread_kill(main_thread, SIG)

    late = []
    old = signal.signal(SIG, handler)
    try:
        for i in range(300):
            fa.set_read_deadline(time.monotonic() + 3.0)
            killer = Runner(kill, name="killer")
            start = time.monotonic()
            with pytest.raises(_Kick):
                fa.read(1)
            took = time.monotonic() - start
            killer.join()
            if took > 1.0:
                late.append(f"round {i}: {took:.2f} s")
    finally:
        signal.signal(SIG, old)
        fa.close()
        fb.close()
    assert not late, f"the handler ran late (a sleep slice is 0.1 s): {late}"
