"""Helpers for the stress tests: scale, resource limits, framed streams, thread groups."""

from __future__ import annotations

import os
import resource
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

import pytest

from threadpoll._poll.fd_unix import FD
from threadpoll._runtime.proc import Runtime

SCALE = float(os.environ.get("THREADPOLL_STRESS_SCALE", "1") or "1")


def timeout(base: float) -> float:
    """A pytest-timeout value for a test that takes about base/10 seconds at scale 1."""
    return base * max(1.0, SCALE)


def scaled(n: int, minimum: int = 1) -> int:
    """n times THREADPOLL_STRESS_SCALE, at least ``minimum``."""
    return max(minimum, int(round(n * SCALE)))


def raise_nofile(needed: int) -> None:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; skip the test with a reason if it
    is still below ``needed`` descriptors (plus those already open)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, needed * 2)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/dev/fd"))
    if soft != resource.RLIM_INFINITY and soft < needed + in_use + 64:
        pytest.skip(
            f"RLIMIT_NOFILE is {soft} (hard {hard}) even after raising it: "
            f"{needed} descriptors needed on top of {in_use} open"
        )


@contextmanager
def stack_size(size: int) -> Iterator[None]:
    """Threads started inside get ``size``-byte stacks (many threads, little memory)."""
    old = threading.stack_size(size)
    try:
        yield
    finally:
        threading.stack_size(old)


def fd_pair(rt: Runtime | None = None, kind: str = "unix") -> tuple[FD, FD]:
    """A connected unix socket pair as two FDs."""
    a, b = socket.socketpair()
    return (
        FD(a.detach(), net="unix", kind=kind, runtime=rt),
        FD(b.detach(), net="unix", kind=kind, runtime=rt),
    )


def close_quietly(*fds: FD) -> None:
    for f in fds:
        if not f.closing():
            try:
                f.close()
            except OSError:
                pass  # closed meanwhile by another thread


# A frame: magic, stream id, writer id, sequence number, payload length; then the payload,
# every byte of which is (stream * 7 + writer * 13 + seq) & 0xFF.
MAGIC = 0x7E5A11ED
HEADER = struct.Struct("!IIIII")


def frame(stream: int, writer: int, seq: int, size: int) -> bytes:
    fill = (stream * 7 + writer * 13 + seq) & 0xFF
    return HEADER.pack(MAGIC, stream, writer, seq, size) + bytes([fill]) * size


def parse_frames(data: bytes, stream: int) -> tuple[list[tuple[int, int]], bytes]:
    """Split a stream into (writer, seq) frames, checking each; returns them and the
    incomplete tail. Any corruption (a foreign stream's bytes, a torn frame) raises."""
    out = []
    i = 0
    while len(data) - i >= HEADER.size:
        magic, sid, w, seq, size = HEADER.unpack_from(data, i)
        if magic != MAGIC or sid != stream:
            raise AssertionError(
                f"stream {stream}: bad header at offset {i}: magic {magic:#x}, stream {sid}"
            )
        end = i + HEADER.size + size
        if end > len(data):
            break
        body = data[i + HEADER.size : end]
        fill = (stream * 7 + w * 13 + seq) & 0xFF
        if body.count(fill) != size:
            raise AssertionError(f"stream {stream}: frame ({w}, {seq}) payload corrupted")
        out.append((w, seq))
        i = end
    return out, data[i:]


class Group:
    """Threads that run callables and keep the first unexpected exception of each."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[tuple[str, BaseException]] = []
        self._lock = threading.Lock()

    def spawn(self, fn: Callable[[], Any], name: str) -> None:
        def target() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported by join_all
                with self._lock:
                    self.errors.append((name, e))

        t = threading.Thread(target=target, name=name, daemon=True)
        self.threads.append(t)
        t.start()

    def join_all(self, timeout: float) -> None:
        """Join every thread within ``timeout`` seconds in all; fail naming the stuck ones
        (with threadpoll's dump) or the first errors."""
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        if stuck:
            from threadpoll._diag import dump

            raise AssertionError(f"{len(stuck)} threads hung: {stuck[:20]}\n{dump()}")
        if self.errors:
            name, e = self.errors[0]
            msgs = [f"{n}: {type(x).__name__}: {x}" for n, x in self.errors[:10]]
            raise AssertionError(
                f"{len(self.errors)} thread(s) failed:\n  " + "\n  ".join(msgs)
            ) from e
