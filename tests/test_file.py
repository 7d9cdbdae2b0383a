"""Tests for threadpoll.file: pipe() and File.

Every behavioural test takes ``rt`` and so runs on every backend. Blocked threads are observed
through their pollDesc (support.wait_parked), never by sleeping.
"""

from __future__ import annotations

import errno
import gc
import math
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Runner, wait_parked, wait_until

from threadpoll import file as tpfile
from threadpoll.errors import DeadlineExceededError, FileClosingError, NoDeadlineError
from threadpoll.file import File, pipe


@pytest.fixture
def pipe_pair() -> Iterator[tuple[File, File]]:
    r, w = pipe()
    try:
        yield r, w
    finally:
        r.close()
        w.close()


def _pollable(f: File) -> bool:
    return not f._fd.is_blocking


def _fill(w: File) -> Runner:
    """Start a writer that blocks once the pipe is full."""
    writer = Runner(lambda: w.write(bytes(1 << 20)), name="writer")
    wait_parked(w, "w")
    return writer


# --- pipes ----------------------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_pipe_round_trip(rt: Any, pipe_pair: tuple[File, File]) -> None:
    r, w = pipe_pair
    assert (r.name, w.name) == ("|0", "|1")  # Go's names for os.Pipe's ends
    assert _pollable(r) and _pollable(w)
    # (The FD's own number: File.fileno() is Go's Fd(), which makes the descriptor blocking.)
    assert os.get_blocking(r._fd.fileno()) is False
    assert os.get_blocking(w._fd.fileno()) is False
    assert os.get_inheritable(r._fd.fileno()) is False
    assert os.get_inheritable(w._fd.fileno()) is False
    assert w.write(b"hello") == 5
    assert r.read(100) == b"hello"
    assert w.write(memoryview(b"into")) == 4
    buf = bytearray(10)
    assert r.read_into(buf) == 4 and buf[:4] == b"into"
    assert r.read(0) == b""  # at once, with nothing to read


@pytest.mark.timeout(20)
def test_pipe_large_write_is_whole(rt: Any, pipe_pair: tuple[File, File]) -> None:
    """A write bigger than the pipe buffer parks until the reader drains it, then finishes."""
    r, w = pipe_pair
    payload = os.urandom(1 << 20)
    writer = Runner(lambda: w.write(payload), name="writer")
    got = bytearray()
    while len(got) < len(payload):
        got += r.read(1 << 16)
    assert writer.join() == len(payload)
    assert bytes(got) == payload


@pytest.mark.timeout(10)
def test_pipe_eof(rt: Any, pipe_pair: tuple[File, File]) -> None:
    r, w = pipe_pair
    w.write(b"last")
    w.close()
    assert r.read(100) == b"last"
    assert r.read(100) == b""
    assert r.read(100) == b""


@pytest.mark.timeout(10)
def test_pipe_eof_wakes_a_parked_reader(rt: Any, pipe_pair: tuple[File, File]) -> None:
    r, w = pipe_pair
    reader = Runner(lambda: r.read(100), name="reader")
    wait_parked(r, "r")
    w.close()
    assert reader.join() == b""


@pytest.mark.timeout(10)
def test_write_to_a_pipe_without_reader(rt: Any, pipe_pair: tuple[File, File]) -> None:
    r, w = pipe_pair
    r.close()
    with pytest.raises(BrokenPipeError) as info:
        w.write(b"nobody")
    assert info.value.written == 0  # type: ignore[attr-defined]


@pytest.mark.timeout(10)
def test_close_wakes_blocked_reader(rt: Any, pipe_pair: tuple[File, File]) -> None:
    r, w = pipe_pair
    reader = Runner(lambda: r.read(100), name="reader")
    wait_parked(r, "r")
    r.close()
    assert isinstance(reader.join_exc(), FileClosingError)
    assert r.fileno() == -1


@pytest.mark.timeout(10)
def test_close_wakes_blocked_writer(rt: Any, pipe_pair: tuple[File, File]) -> None:
    r, w = pipe_pair
    writer = _fill(w)
    w.close()
    e = writer.join_exc()
    assert isinstance(e, FileClosingError)
    assert e.written > 0  # the pipe took its buffer's worth first


@pytest.mark.timeout(10)
def test_close_is_idempotent_and_later_use_fails(rt: Any, pipe_pair: tuple[File, File]) -> None:
    r, w = pipe_pair
    r.close()
    r.close()
    assert "closed" in repr(r)
    for op in (
        lambda: r.read(1),
        lambda: r.read(0),
        lambda: r.read_into(bytearray(1)),
        lambda: r.write(b"x"),
        lambda: r.set_deadline(None),
        lambda: r.set_read_deadline(None),
        lambda: r.set_write_deadline(None),
        lambda: r.fd(),
    ):
        with pytest.raises(FileClosingError):
            op()


@pytest.mark.timeout(10)
def test_pipe_read_deadline(rt: Any, pipe_pair: tuple[File, File]) -> None:
    r, w = pipe_pair
    # Expires while blocked.
    t0 = time.monotonic()
    r.set_read_deadline(t0 + 0.05)
    with pytest.raises(DeadlineExceededError):
        r.read(10)
    assert time.monotonic() - t0 >= 0.05
    # A past deadline fails at once even with data buffered, until it is changed.
    w.write(b"buffered")
    r.set_read_deadline(time.monotonic() - 1)
    with pytest.raises(DeadlineExceededError):
        r.read(10)
    r.set_read_deadline(None)
    assert r.read(10) == b"buffered"
    # Moved into the past while a reader is parked.
    reader = Runner(lambda: r.read(10), name="reader")
    wait_parked(r, "r")
    r.set_deadline(-math.inf)
    assert isinstance(reader.join_exc(), DeadlineExceededError)
    r.set_deadline(None)
    w.write(b"again")
    assert r.read(10) == b"again"


@pytest.mark.timeout(10)
def test_pipe_write_deadline(rt: Any, pipe_pair: tuple[File, File]) -> None:
    r, w = pipe_pair
    writer = _fill(w)
    w.set_write_deadline(time.monotonic() - 1)
    e = writer.join_exc()
    assert isinstance(e, DeadlineExceededError)
    assert e.written > 0
    for bad, exc in ((math.nan, ValueError), (True, TypeError), ("soon", TypeError)):
        with pytest.raises(exc):
            w.set_write_deadline(bad)


@pytest.mark.timeout(10)
def test_fd_hands_back_the_descriptor_in_its_original_mode(rt: Any) -> None:
    # pipe(): made blocking by pipe2, non-blocking by File; fd() gives a blocking end back.
    r, w = pipe()
    try:
        assert os.get_blocking(r._fd.fileno()) is False
        rfd = r.fd()
        assert os.get_blocking(rfd) is True
        with pytest.raises(FileClosingError):
            r.read(1)
        r.close()  # a no-op now: the descriptor is the caller's
        w.write(b"still open")
        assert os.read(rfd, 100) == b"still open"
        os.close(rfd)
    finally:
        w.close()
    # A descriptor that was already non-blocking stays so.
    a, b = os.pipe()
    os.set_blocking(a, False)
    f = File(a)
    assert _pollable(f)
    assert f.fd() == a
    assert os.get_blocking(a) is False
    os.close(a)
    os.close(b)


@pytest.mark.timeout(10)
def test_fd_wakes_a_blocked_reader(rt: Any) -> None:
    a, b = os.pipe()
    try:
        f = File(a)
        reader = Runner(lambda: f.read(10), name="reader")
        wait_parked(f, "r")
        assert f.fd() == a
        assert isinstance(reader.join_exc(), FileClosingError)
        assert os.get_blocking(a) is True
    finally:
        os.close(a)
        os.close(b)


@pytest.mark.timeout(10)
def test_file_takes_a_plain_pipe(rt: Any) -> None:
    """A blocking os.pipe() end becomes non-blocking and pollable: deadlines work."""
    a, b = os.pipe()
    with File(a, "r") as r, File(b) as w:
        assert r.name == "r" and w.name is None
        assert _pollable(r) and _pollable(w)
        assert os.get_blocking(a) is False
        r.set_read_deadline(time.monotonic() + 0.02)
        with pytest.raises(DeadlineExceededError):
            r.read(1)
        w.write(b"z")
        r.set_read_deadline(None)
        assert r.read(1) == b"z"
    assert r.fileno() == -1 and w.fileno() == -1


# --- other kinds of descriptor --------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_regular_file_is_blocking_and_has_no_deadlines(rt: Any, tmp_path: Path) -> None:
    path = tmp_path / "data"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    with File(fd, str(path)) as f:
        assert not _pollable(f)
        assert os.get_blocking(fd) is True
        assert "blocking" in repr(f) and "file" in repr(f)
        assert f.write(b"regular") == 7
        os.lseek(fd, 0, os.SEEK_SET)
        assert f.read(100) == b"regular"
        assert f.read(100) == b""  # EOF
        for setter in (f.set_deadline, f.set_read_deadline, f.set_write_deadline):
            with pytest.raises(NoDeadlineError):
                setter(time.monotonic() + 1)
            with pytest.raises(NoDeadlineError):
                setter(None)
            with pytest.raises(ValueError):
                setter(math.nan)  # bad arguments are checked first
    with pytest.raises(FileClosingError):
        f.set_deadline(None)
    assert path.read_bytes() == b"regular"


@pytest.mark.timeout(10)
def test_directory_is_not_pollable(rt: Any, tmp_path: Path) -> None:
    with File(os.open(tmp_path, os.O_RDONLY)) as d:
        assert not _pollable(d)
        with pytest.raises(NoDeadlineError):
            d.set_deadline(None)
        with pytest.raises(IsADirectoryError):
            d.read(1)


@pytest.mark.skipif(sys.platform in ("darwin", "ios"), reason="FIFOs are not pollable on macOS")
@pytest.mark.timeout(10)
def test_fifo(rt: Any, tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    r = File(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "fifo")
    w = File(os.open(path, os.O_WRONLY))
    try:
        assert _pollable(r) and _pollable(w)
        reader = Runner(lambda: r.read(10), name="reader")
        wait_parked(r, "r")
        w.write(b"fifo")
        assert reader.join() == b"fifo"
        r.set_read_deadline(-math.inf)
        with pytest.raises(DeadlineExceededError):
            r.read(1)
    finally:
        r.close()
        w.close()


@pytest.mark.timeout(10)
def test_socket_descriptor(rt: Any) -> None:
    a, b = socket.socketpair()
    with File(a.detach()) as fa, File(b.detach()) as fb:
        assert _pollable(fa) and "socket" in repr(fa)
        reader = Runner(lambda: fa.read(10), name="reader")
        wait_parked(fa, "r")
        fb.write(b"sock")
        assert reader.join() == b"sock"
        reader = Runner(lambda: fa.read(10), name="reader")
        wait_parked(fa, "r")
        fa.close()
        assert isinstance(reader.join_exc(), FileClosingError)


@pytest.mark.timeout(10)
def test_char_device_refused_by_the_backend_behaves_as_a_regular_file(rt: Any) -> None:
    """/dev/null: epoll refuses it (EPERM), so the mode is restored and it is blocking; a
    backend that accepts it polls it."""
    fd = os.open(os.devnull, os.O_RDWR)
    with File(fd) as f:
        if rt.name == "epoll":
            assert not _pollable(f)
        if _pollable(f):
            assert os.get_blocking(fd) is False
            f.set_deadline(None)
        else:
            assert os.get_blocking(fd) is True  # restored
            with pytest.raises(NoDeadlineError):
                f.set_deadline(None)
        assert f.write(b"gone") == 4
        assert f.read(10) == b""


@pytest.mark.timeout(10)
def test_tty_is_left_blocking_unless_already_non_blocking(rt: Any) -> None:
    try:
        master, slave = os.openpty()
    except OSError as e:
        pytest.skip(f"no pty: {e}")
    try:
        s = File(os.dup(slave))
        assert not _pollable(s)
        assert os.get_blocking(s.fileno()) is True
        with pytest.raises(NoDeadlineError):
            s.set_read_deadline(None)
        s.close()
        os.set_blocking(slave, False)
        s = File(os.dup(slave))
        try:
            assert _pollable(s)
            s.set_read_deadline(time.monotonic() + 0.02)
            with pytest.raises(DeadlineExceededError):
                s.read(10)
            s.set_read_deadline(None)
            reader = Runner(lambda: s.read(100), name="reader")
            wait_parked(s, "r")
            os.write(master, b"typed\n")
            assert reader.join().strip() == b"typed"
        finally:
            s.close()
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.timeout(10)
def test_standard_streams_are_left_blocking_unless_already_non_blocking(rt: Any) -> None:
    """fd 0 replaced by a pipe for the test: a blocking one is not touched, a non-blocking
    one is polled; fd() gives it back either way."""
    saved = os.dup(0)
    a, b = os.pipe()
    try:
        os.dup2(a, 0)
        f = File(0)
        assert not _pollable(f)
        assert os.get_blocking(0) is True
        assert f.fd() == 0
        os.set_blocking(0, False)
        f = File(0)
        assert _pollable(f)
        os.write(b, b"in")
        assert f.read(10) == b"in"
        assert f.fd() == 0
        assert os.get_blocking(0) is False
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(a)
        os.close(b)


@pytest.mark.parametrize(
    ("mode", "tty", "fd", "blocking", "platform", "expected"),
    [
        (stat.S_IFREG, False, 5, True, "linux", False),
        (stat.S_IFREG, False, 5, False, "linux", False),
        (stat.S_IFDIR, False, 5, False, "darwin", False),
        (stat.S_IFIFO, False, 5, True, "linux", True),
        (stat.S_IFIFO, False, 5, True, "darwin", False),
        (stat.S_IFIFO, False, 5, False, "darwin", False),
        (stat.S_IFIFO, False, 5, True, "freebsd14", True),
        (stat.S_IFSOCK, False, 5, True, "darwin", True),
        (stat.S_IFCHR, False, 5, True, "linux", True),
        (stat.S_IFCHR, True, 5, True, "linux", False),
        (stat.S_IFCHR, True, 5, False, "linux", True),
        (stat.S_IFIFO, False, 0, True, "linux", False),
        (stat.S_IFIFO, False, 1, False, "linux", True),
        (stat.S_IFREG, False, 2, False, "linux", False),
    ],
)
def test_pollable_decision(
    mode: int, tty: bool, fd: int, blocking: bool, platform: str, expected: bool
) -> None:
    """The decision is made from the kind alone, identically on every backend."""
    assert tpfile._pollable(mode | 0o644, tty, fd, blocking, platform) is expected


# --- a real subprocess ----------------------------------------------------------------------------

# The child says nothing until told: it echoes each line it gets on stdin, exits at EOF.
CHILD = "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line)\n    sys.stdout.flush()\n"


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        yield proc
    finally:
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        if proc.stdout is not None:
            proc.stdout.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _take_stdout(proc: subprocess.Popen[bytes]) -> File:
    """The child's stdout as a File (a duplicate; the original is closed)."""
    assert proc.stdout is not None
    f = File(os.dup(proc.stdout.fileno()), "child stdout")
    proc.stdout.close()
    return f


def _tell(proc: subprocess.Popen[bytes], line: bytes) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line)
    proc.stdin.flush()


@pytest.mark.timeout(30)
def test_subprocess_stdout_with_a_read_deadline(rt: Any, child: subprocess.Popen[bytes]) -> None:
    with _take_stdout(child) as out:
        assert _pollable(out)
        t0 = time.monotonic()
        out.set_read_deadline(t0 + 0.1)
        with pytest.raises(DeadlineExceededError):
            out.read(100)
        assert time.monotonic() - t0 >= 0.1
        out.set_read_deadline(None)
        _tell(child, b"hello\n")
        assert out.read(100) == b"hello\n"
        assert child.stdin is not None
        child.stdin.close()
        assert out.read(100) == b""  # the child exited: EOF
    assert child.wait(10) == 0


@pytest.mark.timeout(30)
def test_subprocess_stdout_close_wakes_a_blocked_reader(
    rt: Any, child: subprocess.Popen[bytes]
) -> None:
    out = _take_stdout(child)
    try:
        reader = Runner(lambda: out.read(100), name="reader")
        wait_parked(out, "r")
        out.close()
        assert isinstance(reader.join_exc(), FileClosingError)
    finally:
        out.close()
    assert child.poll() is None  # the child is still waiting on its stdin


# --- bad input and finalizers ---------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_bad_input(rt: Any) -> None:
    with pytest.raises(TypeError):
        File("3")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        File(True)
    with pytest.raises(TypeError):
        File(3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        File(-1)
    a, b = os.pipe()
    try:
        with pytest.raises(TypeError):
            File(a, name=3)  # type: ignore[arg-type]
        assert os.get_blocking(a) is True  # nothing changed
    finally:
        os.close(a)
        os.close(b)
    with pytest.raises(OSError) as info:
        File(a)  # closed now
    assert info.value.errno == errno.EBADF
    with File(os.open(os.devnull, os.O_RDONLY)) as f:
        with pytest.raises(ValueError):
            f.read(-1)
        with pytest.raises(TypeError):
            f.write("text")


@pytest.mark.timeout(10)
def test_unclosed_file_is_closed_by_its_finalizer(rt: Any) -> None:
    r, w = pipe()
    fd = r.fileno()
    with pytest.warns(ResourceWarning, match="unclosed"):
        del r
        gc.collect()

    def closed() -> bool:
        try:
            os.fstat(fd)
        except OSError:
            return True
        return False

    # The finalizer hands the close to threadpoll's finalizer thread (closing inline could
    # deadlock on a runtime lock the collecting thread holds): wait for it.
    wait_until(closed, what="the finalizer's deferred close")
    with pytest.raises(OSError) as info:
        os.fstat(fd)
    assert info.value.errno == errno.EBADF
    with pytest.raises(BrokenPipeError):
        w.write(b"x")  # the read end is gone
    w.close()
