"""A signal handler at the start of every function an operation calls: it may use the same
object, in the same direction, and must be refused or served, never left waiting for its own
thread.

CPython runs a signal handler between bytecodes of whatever the main thread is running. With
the GIL, a signal sent by another thread mostly lands where the main thread released the GIL
(around a blocking call); without it (free-threaded builds) it lands anywhere, and
stress/test_signal_storm.py hung there: a handler's ``send`` landed in the drop-in socket's
unlock after the owner field was cleared and before the direction lock was released, saw no
owner, and waited for ever on the lock its own thread held.

Here a trace function stands in for the handler, deterministically: at every call event of a
threadpoll function during the operation it calls one same-direction method of the object, as
a handler landing there would. On any build, either implementation.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any, Callable

import pytest
from support import Runner

import threadpoll
import threadpoll.socket as ts
from threadpoll._runtime.proc import Runtime

pytestmark = [pytest.mark.timeout(30)]

_PACKAGE = threadpoll.__file__.rsplit("/", 1)[0] + "/"

Op = Callable[[], Any]


def _every_call(op: Op, action: Op) -> tuple[int, int]:
    """Run op with action called at the start of every threadpoll function it calls (never
    inside action itself); returns (calls visited, actions refused as re-entrant).

    A function's start (its RESUME) is where CPython checks for pending signals, besides
    loops' backward jumps and returns from C calls; a line inside a ``with lock:`` body
    that calls nothing is not, and threadpoll relies on that (fd_mutex.py).
    """
    visits = [0, 0]
    busy = [False]

    def glob(frame: FrameType, event: str, arg: Any) -> Any:
        if busy[0] or not frame.f_code.co_filename.startswith(_PACKAGE):
            return None
        busy[0] = True
        visits[0] += 1
        try:
            action()
        except RuntimeError as e:
            assert "reentrant call" in str(e), e
            visits[1] += 1
        finally:
            busy[0] = False
        return None

    sys.settrace(glob)
    try:
        op()
    finally:
        sys.settrace(None)
    return visits[0], visits[1]


def _echo(read: Callable[[], bytes], write: Callable[[bytes], Any]) -> Callable[[], None]:
    def run() -> None:
        while True:
            data = read()
            if not data:
                return
            write(data)

    return run


@pytest.fixture
def sock(rt: Runtime) -> Iterator[tuple[Any, Any]]:
    a, b = ts.socketpair()
    peer = Runner(_echo(lambda: a.recv(4096), a.sendall), name="echo")
    yield a, b
    b.close()
    peer.join()
    a.close()


def test_socket_send_at_every_call_of_sendall(sock: tuple[Any, Any]) -> None:
    a, b = sock
    calls, refused = _every_call(lambda: b.sendall(b"x" * 100), lambda: b.send(b""))
    assert calls > 0 and refused > 0, (calls, refused)
    got = b""
    while len(got) < 100:
        got += b.recv(100)
    assert got == b"x" * 100


def test_socket_recv_at_every_call_of_recv(sock: tuple[Any, Any]) -> None:
    a, b = sock
    b.sendall(b"hello")
    out: list[bytes] = []
    # Whether a call lands under the read lock depends on whether the echo is back yet; the
    # ones that do must be refused (not hang), which _every_call checks.
    calls, _ = _every_call(lambda: out.append(b.recv(5)), lambda: b.recv(0))
    assert calls > 0
    assert out == [b"hello"]


def test_conn_write_and_read_at_every_call(rt: Runtime) -> None:
    ln = threadpoll.listen("tcp", ("127.0.0.1", 0))
    c = threadpoll.dial("tcp", ln.addr)
    s = ln.accept()
    ln.close()
    peer = Runner(_echo(lambda: c.read(4096), c.write), name="echo-conn")
    try:
        calls, _ = _every_call(lambda: s.write(b"y" * 50), lambda: s.write(b""))
        assert calls > 0
        got: list[bytes] = []
        while sum(map(len, got)) < 50:
            _every_call(lambda: got.append(s.read(50)), lambda: s.read(0))
        assert b"".join(got) == b"y" * 50
    finally:
        s.close()
        peer.join()
        c.close()
