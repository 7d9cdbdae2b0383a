"""Go-style files and pipes on threadpoll's FD: ``pipe()`` and ``File``.

Read beside Go's ``os`` package: ``file_unix.go`` (newFile: which descriptors are pollable),
``pipe2_unix.go`` (Pipe), ``file_posix.go`` and ``file.go`` (Read, Write, Close, the
deadline setters). A File owns one ``threadpoll.lowlevel.FD`` with ``net="file"``, so
closing errors are ``FileClosingError`` and, for a pollable descriptor, ``close()`` from any
thread wakes every thread blocked in ``read`` or ``write``.

Which descriptors are pollable is decided from the descriptor's kind (fstat) before it is
registered, the same way on every backend (Go: newFile's kind checks):

    kind                                     pollable  mode
    regular file, directory                  never     left as it is (blocking)
    FIFO or pipe on macOS (File(fd) only)    never     left as it is
    tty, or fd 0/1/2                         only if already non-blocking; never changed
    other pipes, FIFOs, sockets, char devs   yes       made non-blocking, then registered

If the backend refuses a descriptor (epoll answers EPERM for /dev/null, say), its original
blocking mode is restored and it behaves as a regular file: blocking I/O, and every
``set_*deadline`` raises ``NoDeadlineError``. ``fd()`` hands the descriptor back, detached, in
the blocking mode it had when the File took it (the open file description may be shared with
other processes, a subprocess's pipe for one).

Differences from Go:

- DIVERGENCE(go): ``close()`` is idempotent, Python's convention (Go's second Close fails
  with ErrFileClosing).
- ``fileno()`` is Go's ``Fd()``: it puts the descriptor in blocking mode first, so a child
  process that inherits it (``subprocess.Popen(stdout=w)``) sees a plain blocking pipe; the
  File keeps working, but close no longer wakes its blocked threads.
- DIVERGENCE(go): ``fd()`` gives the descriptor away (detached, original mode restored) and
  the File is closed to further use; Go's ``Fd()`` keeps owning it and sets blocking mode.
- Whoever clears ``O_NONBLOCK`` on a pipe a File owns (another holder of the open file
  description) takes over its blocking, as in Go: a read or write then blocks in the
  syscall, where close cannot wake it. Pipes have no per-call non-blocking flag (sockets
  do: Conn uses ``MSG_DONTWAIT``).
- DIVERGENCE(go): ``File(fd)`` makes pipes, FIFOs, sockets and character devices
  non-blocking itself; Go's ``os.NewFile`` polls only descriptors already non-blocking.
- DIVERGENCE(go): Go's kindOpenFile treats FIFOs on macOS as not pollable (no kqueue EOF
  event, Go issue 24164); fstat cannot tell an anonymous pipe from a FIFO there, so
  ``File(fd)`` treats both as not pollable on macOS, while ``pipe()`` (Go's kindPipe) stays
  pollable everywhere.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import IO, Any

from typing_extensions import Buffer

from threadpoll._poll.fd_unix import FD
from threadpoll._poll.finalizer import finalizer as _finalizer
from threadpoll.errors import ClosingError

__all__ = ["File", "pipe"]

_STD_STREAMS = (0, 1, 2)


def _pollable(st_mode: int, is_tty: bool, fd: int, blocking: bool, platform: str) -> bool:
    """Whether File(fd) registers the descriptor with the poller, from its kind alone.

    Go: os/file_unix.go newFile (its pollable decision)
    """
    if stat.S_ISREG(st_mode) or stat.S_ISDIR(st_mode):
        # Regular files and directories are always "ready"; no backend can wait on them.
        return False
    if stat.S_ISFIFO(st_mode) and platform in ("darwin", "ios"):
        # On Darwin, kqueue does not work properly with fifos: closing the last writer does
        # not cause a kqueue event for any readers (Go issue 24164).
        return False
    if is_tty or fd in _STD_STREAMS:
        # Shared with the terminal or the parent process: never flip their mode; poll them
        # only if someone already made them non-blocking.
        return not blocking
    return True


def _kind(st_mode: int, is_tty: bool) -> str:
    """A short name for the descriptor's kind (shown by repr and threadpoll.dump)."""
    if is_tty:
        return "tty"
    if stat.S_ISREG(st_mode):
        return "file"
    if stat.S_ISDIR(st_mode):
        return "dir"
    if stat.S_ISFIFO(st_mode):
        return "pipe"
    if stat.S_ISSOCK(st_mode):
        return "socket"
    if stat.S_ISCHR(st_mode):
        return "chardev"
    return "other"


class File:
    """An open file descriptor with Go's ``os.File`` semantics on threadpoll's poller.

    ``File(fd, name=None)`` takes ownership of fd (a pipe, a FIFO, a subprocess's pipe, a
    tty, a socket, a regular file). If the constructor raises, fd is left as it was and the
    caller still owns it. Thread-safe: any thread may read, write, set deadlines or close.

    Go: os.File (os/file_unix.go newFile, os.NewFile)
    """

    __slots__ = ("_fd", "name", "__weakref__")

    def __init__(self, fd: int, name: str | None = None) -> None:
        if isinstance(fd, bool) or not isinstance(fd, int):
            raise TypeError(f"fd must be an int, not {type(fd).__name__}")
        if fd < 0:
            raise ValueError(f"fd must be >= 0, not {fd}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        st_mode = os.fstat(fd).st_mode  # EBADF for a descriptor that is not open
        is_tty = os.isatty(fd)
        pollable = _pollable(st_mode, is_tty, fd, os.get_blocking(fd), sys.platform)
        self._setup(fd, name, pollable, _kind(st_mode, is_tty))

    def _setup(self, fd: int, name: str | None, pollable: bool, kind: str) -> None:
        # FD sets O_NONBLOCK for a pollable descriptor and restores the original mode if the
        # backend refuses it; it then stays in blocking mode (is_blocking).
        _finalizer.start()  # the thread our __del__ hands its close to; cheap once running
        self._fd = FD(fd, net="file", pollable=pollable, is_stream=True, kind=kind)
        #: The name given at construction (pipe() names its ends "|0" and "|1", as Go does).
        self.name = name

    def read(self, n: int) -> bytes:
        """At most n bytes from one successful read; ``b""`` at EOF or for n == 0.

        Go: os/file.go File.Read
        """
        return self._fd.read(n)

    def read_into(self, buf: Buffer) -> int:
        """Like read, into a writable buffer; returns the byte count (0 at EOF).

        Go: os/file.go File.Read
        """
        return self._fd.read_into(buf)

    def write(self, data: Buffer) -> int:
        """Write all of data and return its length; concurrent writes never interleave. An
        error part-way (``BrokenPipeError``, a deadline, close) has ``.written`` set.

        Go: os/file.go File.Write
        """
        return self._fd.write(data)

    def makefile(
        self,
        mode: str = "r",
        buffering: int | None = None,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> IO[Any]:
        """A buffered file object over this File, for ``readline()``, line iteration or text
        (modes ``r``, ``w``, ``b`` as in ``socket.makefile``). It reads with ``read_into`` and
        writes with ``write``, so the promises hold through it: a ``close()`` from another
        thread wakes a thread blocked in its ``readline()``. Closing the file object leaves
        the File open.

        Go: none (Go wraps a Conn in bufio.NewReader instead)
        """
        from threadpoll._fileobj import makefile

        return makefile(self, mode, buffering, encoding=encoding, errors=errors, newline=newline)

    def close(self) -> None:
        """Close the file, waking every thread blocked on it with ``FileClosingError``; for a
        pollable descriptor, return once it is closed. A second close does nothing.

        Go: os/file_posix.go File.Close
        """
        try:
            self._fd.close()
        except ClosingError:
            pass

    def set_deadline(self, t: float | None) -> None:
        """Set the read and write deadlines: absolute ``time.monotonic()`` seconds, None for
        none. ``NoDeadlineError`` if the file is not pollable (a regular file, say).

        Go: os/file.go File.SetDeadline
        """
        self._fd.set_deadline(t)

    def set_read_deadline(self, t: float | None) -> None:
        """Go: os/file.go File.SetReadDeadline"""
        self._fd.set_read_deadline(t)

    def set_write_deadline(self, t: float | None) -> None:
        """Go: os/file.go File.SetWriteDeadline"""
        self._fd.set_write_deadline(t)

    def fileno(self) -> int:
        """The OS descriptor, -1 once closed, put in blocking mode first, as Go's
        ``File.Fd()`` does: whoever asks for the number (a child process handed it by
        ``subprocess``, code that reads it directly) gets a descriptor that behaves as a
        plain one. The File keeps working in blocking mode: from then on close no longer
        wakes a blocked read or write, and deadlines no longer interrupt them.

        Go: os/file_unix.go File.Fd
        """
        fd = self._fd
        if not fd.is_blocking:
            try:
                fd.set_blocking()
            except ClosingError:
                pass  # closed meanwhile: -1 below
        return fd.fileno()

    def fd(self) -> int:
        """Give the descriptor back: wait out operations in progress (waking blocked ones with
        ``FileClosingError``), unregister it, restore its original blocking mode and return
        it. The caller owns it; this File is closed to further use.

        Go: os/file_unix.go File.Fd (which keeps ownership; see the module docstring)
        """
        return self._fd.detach()

    def __enter__(self) -> File:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        fd = self._fd
        if fd.closing():
            state = "closed"
        else:
            state = f"fd={fd.fileno()} {fd.kind} {'blocking' if fd.is_blocking else 'pollable'}"
        name = f" name={self.name!r}" if self.name is not None else ""
        return f"<threadpoll.File{name} {state}>"

    def __del__(self, _finalize: Any = _finalizer.finalize) -> None:
        _finalize(self, getattr(self, "_fd", None))  # closes on the finalizer thread


def pipe() -> tuple[File, File]:
    """A connected pair of Files (read end, write end): pollable, non-blocking,
    close-on-exec. ``fd()`` on either hands back a plain blocking pipe end.

    Go: os/pipe2_unix.go Pipe
    """
    if hasattr(os, "pipe2"):
        r, w = os.pipe2(os.O_CLOEXEC)
    else:
        r, w = os.pipe()  # CPython makes both ends close-on-exec (PEP 446)
    files: list[File] = []
    try:
        for fd, name in ((r, "|0"), (w, "|1")):
            f = File.__new__(File)
            f._setup(fd, name, True, "pipe")  # Go: newFile(p, name, kindPipe, false)
            files.append(f)
    except BaseException:
        for f in files:
            f.close()
        for fd in (r, w)[len(files) :]:
            os.close(fd)
        raise
    return files[0], files[1]
