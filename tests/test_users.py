"""What a new user trips on: file objects over a Conn or File, deadlines written in wall-clock
time, and TypeErrors that name the call. Every test runs on every backend (``rt``)."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from support import wait_parked

import threadpoll
from threadpoll import FileClosingError, NetClosingError, WallClockDeadlineWarning, pipe
from threadpoll._poll import fd_poll_runtime
from threadpoll._runtime.proc import Runtime
from threadpoll.net import Conn, dial, listen

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def conns(rt: Runtime) -> Iterator[tuple[Conn, Conn]]:
    with listen("tcp4", "127.0.0.1:0") as ln:
        c = dial("tcp4", ln.addr, timeout=5)
        s = ln.accept()
    try:
        yield c, s
    finally:
        c.close()
        s.close()


# --- makefile ------------------------------------------------------------------------------


def test_conn_makefile_readline_text_and_binary(conns: tuple[Conn, Conn]) -> None:
    c, s = conns
    s.write(b"one\ntwo\r\nthree")
    s.close_write()
    with c.makefile("rb") as f:
        assert f.readline() == b"one\n"
        assert list(f) == [b"two\r\n", b"three"]
    c.write(b"x")  # closing the file object left the Conn open
    assert s.read(1) == b"x"


def test_conn_makefile_text_write_and_read(conns: tuple[Conn, Conn]) -> None:
    c, s = conns
    with c.makefile("w", encoding="utf-8") as w:
        w.write("héllo\n")
    with s.makefile("r", encoding="utf-8", newline="") as r:
        assert r.readline() == "héllo\n"
    with c.makefile("rwb", buffering=0) as raw:
        s.write(b"ab")
        assert raw.read(2) == b"ab"


@pytest.mark.timeout(10)
def test_close_wakes_a_reader_blocked_in_conn_makefile(conns: tuple[Conn, Conn]) -> None:
    c, s = conns
    s.write(b"partial line, no newline")
    f = c.makefile("r", encoding="utf-8")
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            f.readline()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    wait_parked(c, "r")  # blocked inside readline(), in the buffered reader
    c.close()
    t.join(5)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], NetClosingError), errors


@pytest.mark.timeout(10)
def test_deadline_bounds_a_reader_in_conn_makefile(conns: tuple[Conn, Conn]) -> None:
    c, _ = conns
    c.set_read_deadline(time.monotonic() + 0.05)
    with pytest.raises(threadpoll.DeadlineExceededError):
        c.makefile("rb").readline()


@pytest.mark.timeout(10)
def test_close_wakes_a_reader_blocked_in_file_makefile(rt: Runtime) -> None:
    r, w = pipe()
    try:
        w.write(b"no newline")
        f = r.makefile("rb")
        errors: list[BaseException] = []

        def reader() -> None:
            try:
                f.readline()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=reader)
        t.start()
        wait_parked(r, "r")
        r.close()
        t.join(5)
        assert not t.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], FileClosingError), errors
    finally:
        r.close()
        w.close()


def test_file_makefile_lines(rt: Runtime) -> None:
    r, w = pipe()
    with r, w:
        with w.makefile("w") as fw:
            fw.write("a\nb\n")
        assert r.makefile("r").readline() == "a\n"


@pytest.mark.parametrize("mode", ["", "x", "rt", "b", 5])
def test_makefile_bad_mode(conns: tuple[Conn, Conn], mode: Any) -> None:
    with pytest.raises(ValueError, match="invalid mode"):
        conns[0].makefile(mode)


def test_makefile_unbuffered_text_is_refused(conns: tuple[Conn, Conn]) -> None:
    with pytest.raises(ValueError, match="unbuffered streams must be binary"):
        conns[0].makefile("r", buffering=0)


# --- TypeErrors that name the call ---------------------------------------------------------


@pytest.mark.parametrize("bad", [5, "text", None, 1.5])
def test_write_of_a_non_buffer_names_the_call(conns: tuple[Conn, Conn], bad: Any) -> None:
    c, s = conns
    with pytest.raises(TypeError, match=r"^write\(\) needs a bytes-like object, not '"):
        c.write(bad)
    r, w = pipe()
    with r, w, pytest.raises(TypeError, match=r"^write\(\) needs a bytes-like object"):
        w.write(bad)
    c.write(b"ok")  # nothing changed
    assert s.read(2) == b"ok"


def test_read_into_of_a_non_buffer_names_the_call(conns: tuple[Conn, Conn]) -> None:
    with pytest.raises(TypeError, match=r"^read_into\(\) needs a writable bytes-like object"):
        conns[0].read_into(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^read_into\(\) needs a writable buffer"):
        conns[0].read_into(b"read-only")


# --- deadlines written as wall-clock time ---------------------------------------------------


@pytest.fixture
def fresh_warning() -> Iterator[None]:
    fd_poll_runtime._wall_clock_warned = False
    yield
    fd_poll_runtime._wall_clock_warned = False


def test_wall_clock_deadline_warns_once_and_is_accepted(
    conns: tuple[Conn, Conn], fresh_warning: None
) -> None:
    c, s = conns
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c.set_read_deadline(time.time() + 1)  # the mistake: wall-clock time
        c.set_write_deadline(time.time() + 1)
        c.set_deadline(time.monotonic() + 1)  # right: no warning
    assert len(caught) == 1, [str(w.message) for w in caught]
    w = caught[0]
    assert issubclass(w.category, WallClockDeadlineWarning) and issubclass(w.category, UserWarning)
    assert "time.monotonic()" in str(w.message) and "time.time()" in str(w.message)
    assert w.filename == __file__  # points at the user's line
    # Still accepted as given: a read waits (the deadline is decades away).
    c.set_read_deadline(time.time() + 1)
    s.write(b"x")
    assert c.read(1) == b"x"


def test_far_monotonic_deadline_does_not_warn(
    conns: tuple[Conn, Conn], fresh_warning: None
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conns[0].set_deadline(time.monotonic() + 10 * 365 * 86400)  # 10 years: meant
        conns[0].set_deadline(float("inf"))
        conns[0].set_deadline(None)


def test_wall_clock_dial_deadline_warns(rt: Runtime, fresh_warning: None) -> None:
    with listen("tcp4", "127.0.0.1:0") as ln:
        with pytest.warns(WallClockDeadlineWarning):
            c = dial("tcp4", ln.addr, deadline=time.time() + 5)
        with c, ln.accept():
            pass
