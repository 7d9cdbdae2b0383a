"""The public exceptions, with Go's exact messages.

Go returns a handful of sentinel errors from ``internal/poll`` (fd.go); threadpoll raises one
class per sentinel. Rules for every class in this module:

- ``str(e)`` is exactly Go's message: ``str(NetClosingError())`` is
  ``"use of closed network connection"``, never ``"[Errno 9] ..."``.
- ``e.errno`` and ``e.strerror`` are set (``strerror`` is the message), so code written for
  the stdlib's ``OSError`` keeps working.
- Each is constructible with no arguments, and pickles and copies.
- ``e.written`` is the number of bytes a write had already written when it failed (0 if none).
  Kernel errors (``BrokenPipeError``, ...) get the same attribute through ``with_written``.

Go (internal/poll/fd.go) → threadpoll, with the message:

- ``ErrNetClosing``       → ``NetClosingError``        "use of closed network connection"
- ``ErrFileClosing``      → ``FileClosingError``       "use of closed file"
- ``ErrDeadlineExceeded`` → ``DeadlineExceededError``  "i/o timeout"
- ``ErrNoDeadline``       → ``NoDeadlineError``        "file type does not support deadline"
- ``ErrNotPollable``      → ``NotPollableError``       "not pollable"
- (none)                  → ``PollerError``            "threadpoll: poller thread died"

``NetClosingError`` and ``FileClosingError`` share the base ``ClosingError`` (errno EBADF),
which Go does not have: its ``errClosing(isFile)`` picks one of the two sentinels.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import ClassVar, TypeVar

__all__ = [
    "ClosingError",
    "DeadlineExceededError",
    "FileClosingError",
    "NetClosingError",
    "NoDeadlineError",
    "NotPollableError",
    "PollerError",
    "WallClockDeadlineWarning",
    "with_written",
]

_E = TypeVar("_E", bound=BaseException)


class _GoError(OSError):
    """Shared shape: a fixed Go message and errno, no constructor arguments, ``.written``.

    Subclasses set ``_message`` and ``_errno``.
    """

    # DIVERGENCE(go): Go's sentinels carry no errno — Python code tests ``e.errno``, so each
    # class picks the closest one.
    _message: ClassVar[str] = ""
    _errno: ClassVar[int] = 0

    #: Bytes already written when a write raised this error (0 if none); see ``with_written``.
    written: int = 0

    def __init__(self) -> None:
        super().__init__(self._errno, self._message)

    def __str__(self) -> str:
        # OSError.__str__ would render "[Errno 9] use of closed file"; Go prints the message.
        return self._message

    def __reduce__(self) -> tuple[object, ...]:
        # The default reduce passes ``self.args`` (errno, message) back to ``__init__``,
        # which takes none; ``written`` and other attributes travel in the state dict.
        return (type(self), (), self.__dict__ or None)


class ClosingError(_GoError):
    """An operation on a descriptor that is closed or being closed.

    Catch this to handle both ``NetClosingError`` and ``FileClosingError``. Go has no common
    type; its ``errClosing(isFile)`` picks one of the two sentinels.
    """

    _message = "use of closed file or network connection"
    _errno = errno.EBADF


class NetClosingError(ClosingError):
    """A network connection or listener was used after (or while) it was closed.

    Go: internal/poll/fd.go ErrNetClosing (also net.ErrClosed)
    """

    _message = "use of closed network connection"

    def timeout(self) -> bool:
        """Go: internal/poll/fd.go errNetClosing.Timeout"""
        return False

    def temporary(self) -> bool:
        """Go: internal/poll/fd.go errNetClosing.Temporary"""
        return False


class FileClosingError(ClosingError):
    """A file or pipe was used after (or while) it was closed.

    Go: internal/poll/fd.go ErrFileClosing
    """

    _message = "use of closed file"


if sys.version_info >= (3, 10):
    _SocketTimeout = TimeoutError
else:

    class _SocketTimeout(TimeoutError, socket.timeout):
        """Before 3.10 ``socket.timeout`` is a separate ``OSError`` subclass; be both."""


class DeadlineExceededError(_GoError, _SocketTimeout):
    """The deadline for this direction has passed (or was set in the past).

    A ``TimeoutError`` and a ``socket.timeout``, so code written for socket timeouts catches
    it. Like Go's, it reports both ``timeout()`` and ``temporary()``.

    Go: internal/poll/fd.go ErrDeadlineExceeded (DeadlineExceededError)
    """

    _message = "i/o timeout"
    _errno = errno.ETIMEDOUT

    def timeout(self) -> bool:
        """Go: internal/poll/fd.go DeadlineExceededError.Timeout"""
        return True

    def temporary(self) -> bool:
        """Go: internal/poll/fd.go DeadlineExceededError.Temporary"""
        return True


class NoDeadlineError(_GoError):
    """A deadline was set on a descriptor that is not pollable (a regular file, say).

    Go: internal/poll/fd.go ErrNoDeadline
    """

    _message = "file type does not support deadline"
    _errno = errno.ENOTSUP


class NotPollableError(_GoError):
    """The poller reported an error condition on the descriptor (reads only, as in Go).

    Go: internal/poll/fd.go ErrNotPollable
    """

    _message = "not pollable"
    # EPERM is what epoll_ctl(2) reports for a descriptor that does not support polling.
    _errno = errno.EPERM


class PollerError(_GoError):
    """threadpoll's poller thread died; the exception that killed it is ``__cause__``.

    Raised in the threads that were waiting when it died, and in any thread that would wait
    while the poller is still down (until a restarted poller has polled once).

    Go: none (Go's netpoller runs inside the scheduler and cannot die on its own)
    """

    _message = "threadpoll: poller thread died"
    _errno = errno.EIO


class WallClockDeadlineWarning(UserWarning):
    """A deadline looked like wall-clock time (``time.time() + 1``) rather than a
    ``time.monotonic()`` value: it lies decades in the future and would never fire. Issued
    once per process; the deadline is still accepted as given."""


def with_written(exc: _E, n: int) -> _E:
    """Record on ``exc`` that ``n`` bytes were written before it was raised, and return it.

    Works on any exception, the kernel's ``OSError`` subclasses included::

        except BrokenPipeError as e:
            raise with_written(e, total)
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"written must be an int, not {type(n).__name__}")
    if n < 0:
        raise ValueError(f"written must be >= 0, got {n}")
    # Every BaseException instance has a __dict__, even those of C-level classes.
    exc.written = n  # type: ignore[attr-defined]
    return exc
