"""``makefile()`` for ``Conn`` and ``File``: a buffered file object over threadpoll I/O.

For code that wants ``readline()``, iteration over lines, or text. The file object reads with
the object's ``read_into`` and writes with its ``write``, so every promise holds through it:
``close()`` of the Conn or File from another thread wakes a thread blocked in the file
object's ``readline()`` with the closing error, deadlines bound it, writes are whole.

Closing the file object flushes it and leaves the Conn or File open (close that yourself);
unlike ``socket.makefile``, there is no reference counting between the two.
"""

from __future__ import annotations

import io
from typing import IO, Any, Protocol

from typing_extensions import Buffer

__all__ = ["makefile"]


class _Endpoint(Protocol):
    def read_into(self, buf: Buffer) -> int: ...

    def write(self, data: Buffer) -> int: ...

    def fileno(self) -> int: ...


class _Raw(io.RawIOBase):
    """The unbuffered layer: one threadpoll read or write per call."""

    def __init__(self, owner: _Endpoint, mode: str) -> None:
        super().__init__()
        self._owner = owner
        self._reading = "r" in mode
        self._writing = "w" in mode
        self.mode = mode

    def readable(self) -> bool:
        return self._reading

    def writable(self) -> bool:
        return self._writing

    def readinto(self, b: Buffer) -> int:
        self._checkClosed()
        if not self._reading:
            raise io.UnsupportedOperation("file not open for reading")
        return self._owner.read_into(b)

    def write(self, b: Buffer) -> int:
        self._checkClosed()
        if not self._writing:
            raise io.UnsupportedOperation("file not open for writing")
        return self._owner.write(b)

    def fileno(self) -> int:
        self._checkClosed()
        return self._owner.fileno()

    @property
    def name(self) -> int:
        return self._owner.fileno()


def makefile(
    owner: _Endpoint,
    mode: str = "r",
    buffering: int | None = None,
    *,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
) -> IO[Any]:
    """A file object over owner, as ``socket.makefile`` builds one.

    ``mode`` is made of ``r``, ``w`` and ``b`` (``"r"``, ``"rb"``, ``"w"``, ``"wb"``,
    ``"rw"``, ``"rwb"``); ``buffering`` 0 gives the raw binary layer (binary modes only),
    None or a negative number the default buffer size.
    """
    if not isinstance(mode, str) or not set(mode) <= {"r", "w", "b"} or not set(mode) - {"b"}:
        raise ValueError(f"invalid mode {mode!r} (only r, w and b are allowed)")
    reading, writing, binary = "r" in mode, "w" in mode, "b" in mode
    raw = _Raw(owner, ("r" if reading else "") + ("w" if writing else "") + "b")
    if buffering is None or buffering < 0:
        buffering = io.DEFAULT_BUFFER_SIZE
    if buffering == 0:
        if not binary:
            raise ValueError("unbuffered streams must be binary")
        return raw  # type: ignore[return-value]
    buffer: io.BufferedIOBase
    if reading and writing:
        buffer = io.BufferedRWPair(raw, raw, buffering)
    elif reading:
        buffer = io.BufferedReader(raw, buffering)
    else:
        buffer = io.BufferedWriter(raw, buffering)
    if binary:
        return buffer  # type: ignore[return-value]
    text = io.TextIOWrapper(buffer, encoding, errors, newline)  # type: ignore[type-var]
    text.mode = mode  # type: ignore[misc]
    return text
