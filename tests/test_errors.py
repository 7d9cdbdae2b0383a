"""Tests for threadpoll.errors: Go's messages, errno/strerror, class relations, ``.written``."""

from __future__ import annotations

import copy
import errno
import pickle
import socket

import pytest

from threadpoll import errors
from threadpoll.errors import (
    ClosingError,
    DeadlineExceededError,
    FileClosingError,
    NetClosingError,
    NoDeadlineError,
    NotPollableError,
    PollerError,
    with_written,
)

# (class, Go's exact message, errno)
CASES = [
    (NetClosingError, "use of closed network connection", errno.EBADF),
    (FileClosingError, "use of closed file", errno.EBADF),
    (DeadlineExceededError, "i/o timeout", errno.ETIMEDOUT),
    (NoDeadlineError, "file type does not support deadline", errno.ENOTSUP),
    (NotPollableError, "not pollable", errno.EPERM),
    (PollerError, "threadpoll: poller thread died", errno.EIO),
]
ALL = [cls for cls, _, _ in CASES] + [ClosingError]


@pytest.mark.parametrize(("cls", "message", "code"), CASES)
def test_message_errno_strerror(cls: type[OSError], message: str, code: int) -> None:
    e = cls()
    assert str(e) == message
    assert e.strerror == message
    assert e.errno == code
    assert isinstance(e, OSError)
    assert e.written == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(("cls", "message", "code"), CASES)
def test_raise_and_format(cls: type[OSError], message: str, code: int) -> None:
    with pytest.raises(cls) as info:
        raise cls()
    assert str(info.value) == message
    # The traceback line shows Go's message, not "[Errno N] ...".
    assert info.exconly().endswith(": " + message)


def test_closing_errors() -> None:
    for cls in (NetClosingError, FileClosingError):
        e = cls()
        assert isinstance(e, ClosingError)
        assert isinstance(e, OSError)
        assert e.errno == errno.EBADF
    assert not issubclass(NetClosingError, FileClosingError)
    assert not issubclass(FileClosingError, NetClosingError)
    assert not issubclass(ClosingError, TimeoutError)
    assert ClosingError().errno == errno.EBADF
    # Go's errNetClosing: neither a timeout nor temporary.
    assert NetClosingError().timeout() is False
    assert NetClosingError().temporary() is False


def test_deadline_exceeded_is_a_timeout() -> None:
    e = DeadlineExceededError()
    assert isinstance(e, TimeoutError)
    assert isinstance(e, socket.timeout)
    assert isinstance(e, OSError)
    assert not isinstance(e, ClosingError)
    assert e.timeout() is True
    assert e.temporary() is True  # as Go's DeadlineExceededError says
    # Code written for socket timeouts catches it.
    with pytest.raises(socket.timeout):
        raise DeadlineExceededError()


def test_other_classes_are_plain_oserrors() -> None:
    for cls in (NoDeadlineError, NotPollableError, PollerError):
        assert issubclass(cls, OSError)
        assert not issubclass(cls, (ClosingError, TimeoutError))


def test_poller_error_cause() -> None:
    boom = ValueError("boom")
    with pytest.raises(PollerError) as info:
        try:
            raise boom
        except ValueError as e:
            raise PollerError() from e
    assert info.value.__cause__ is boom
    assert str(info.value) == "threadpoll: poller thread died"


@pytest.mark.parametrize("cls", ALL)
def test_pickle_and_copy(cls: type[OSError]) -> None:
    e = with_written(cls(), 7)
    for clone in (pickle.loads(pickle.dumps(e)), copy.copy(e), copy.deepcopy(e)):
        assert type(clone) is cls
        assert str(clone) == str(e)
        assert clone.errno == e.errno
        assert clone.strerror == e.strerror
        assert clone.written == 7  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(cls())).written == 0


def test_with_written_on_our_errors() -> None:
    e = NetClosingError()
    assert with_written(e, 5) is e
    assert e.written == 5
    # The class default is untouched.
    assert NetClosingError().written == 0
    assert NetClosingError.written == 0


def test_with_written_on_kernel_errors() -> None:
    e = BrokenPipeError(errno.EPIPE, "Broken pipe")
    assert with_written(e, 1024) is e
    assert e.written == 1024  # type: ignore[attr-defined]
    assert str(e) == "[Errno 32] Broken pipe"  # untouched otherwise
    # Any exception, OSError or not.
    v = with_written(ValueError("x"), 0)
    assert v.written == 0  # type: ignore[attr-defined]


def test_with_written_rejects_bad_counts() -> None:
    with pytest.raises(ValueError):
        with_written(OSError(), -1)
    with pytest.raises(TypeError):
        with_written(OSError(), True)
    with pytest.raises(TypeError):
        with_written(OSError(), 1.0)  # type: ignore[arg-type]


def test_all() -> None:
    assert sorted(errors.__all__) == sorted(
        [
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
    )
    for name in errors.__all__:
        assert hasattr(errors, name)
