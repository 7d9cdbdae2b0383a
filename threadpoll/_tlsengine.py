"""The TLS engine: an ``ssl`` SSLObject on two memory BIOs, pumped through the network by
threads that park on the descriptor's pollDesc. Used by ``threadpoll.tls`` (over a ``Conn``)
and by the drop-in ``ssl.SSLSocket`` (over a threadpoll socket).

The two-BIO shuffle (``_Engine``, shared with the drop-in ``ssl.SSLSocket`` of
``threadpoll.socket``). Three locks, none held while parked in the kernel's place:

- ``lock`` (Go: none; OpenSSL's ``SSL`` is not safe for concurrent use) guards each
  ``SSLObject`` step and both BIOs. It is held only across one call into OpenSSL, never while
  a thread waits for the network, so a reader parked for data never stops a writer. It is
  re-entrant: OpenSSL calls Python back (SNI, the message callback), and a signal handler may
  run between two steps on the same thread; the BIOs are consistent between steps.
- ``in_lock`` (Go: ``c.in``) makes readers take turns: the thread holding it is the only one
  that reads from the Conn into the incoming BIO.
- ``out_lock`` (Go: ``c.out``) orders the wire: only its holder takes bytes out of the
  outgoing BIO and writes them to the Conn, so records leave in the order OpenSSL sealed them.
  A writer holds it for a whole write (writes never interleave). A reader whose step made
  output (a post-handshake message answered, an alert) flushes it only if ``out_lock`` is free;
  if a writer holds it, that writer sends those bytes too, because every holder looks at the
  outgoing BIO again after letting go (``_kick``). So a reader never waits behind a writer
  blocked on a full buffer.

The handshake takes ``hs_lock`` (Go: ``handshakeMutex``), then ``in_lock``, then ``out_lock``;
``read`` and ``write`` run it first while it is not done, so a writer waits for a handshake a
reader started, not for the reader's next record.

Write errors: as ``threadpoll.tls``'s module docstring says (the records sealed before an
error are kept and go out first; ``.written`` counts them; a past deadline fails first).
"""

from __future__ import annotations

import errno
import os
import ssl
import threading
import weakref
from typing import Any, Callable, TypeVar

from threadpoll._poll.fd_unix import _reentered
from threadpoll._runtime.netpoll_c import cpoll as _cpoll
from threadpoll.errors import with_written

_T = TypeVar("_T")

# fill_bytes(n, fill) (the C core's, where it is built): a bytes object that fill writes in
# place, so a read of several records is one object straight from OpenSSL, not a join of one
# object per record (a copy of the whole read: about 5% of a bulk transfer's instructions).
# A transport on the C core's runtime uses it (_Transport.fill_bytes).
_FillBytes = Callable[[int, Callable[[memoryview], int]], bytes]
_fill_bytes: _FillBytes | None = _cpoll.fill_bytes if _cpoll is not None else None

# The largest read from the wire: many records (2^14 + 256 bytes at most each), so that a bulk
# transfer makes one recv, one BIO copy and one GIL hand-off for several records.
_RECV_SIZE = 262144
# A TLS record header: type, version (2 bytes), length (2 bytes) (RFC 8446 5.1).
_HEADER = 5
# A TLS record's content type for application data (RFC 8446 5.1; TLS 1.3 sends every
# encrypted record, alerts included, under it).
_APPLICATION_DATA = 23
# The smallest record body a framed read goes on to within one call (see _take_bulk_record).
_BULK_RECORD = 1024
# Plaintext sealed per SSLObject.write in a blocking write: .written moves in these steps.
_CHUNK = 65536


def _want_write() -> ssl.SSLWantWriteError:
    return ssl.SSLWantWriteError(ssl.SSL_ERROR_WANT_WRITE, "The operation did not complete (write)")


def _want_read() -> ssl.SSLWantReadError:
    return ssl.SSLWantReadError(ssl.SSL_ERROR_WANT_READ, "The operation did not complete (read)")


def _reentered_handshake() -> RuntimeError:
    """A TLS call from a signal handler on top of its own thread's handshake on the same
    connection (fd_unix's _reentered, for the handshake lock)."""
    return RuntimeError(
        "reentrant call: a TLS call on this connection from a signal handler while its own "
        "thread is in the handshake on it (it would wait for itself)"
    )


def _reentered_step() -> RuntimeError:
    """A write waiting for another thread's write from inside a step on the same connection
    (fd_unix's _reentered, for the step lock)."""
    return RuntimeError(
        "reentrant call: a write on this descriptor from a callback or signal handler inside "
        "a TLS step on it while another thread is in a write on it (it would wait for a "
        "thread that waits for it)"
    )


class _Transport:
    """How an engine reaches the wire for one call: the drop-in makes one per call (with the
    call's time limit); a TLSConn has one for its life.

    ``recv_into`` and ``send`` park until the descriptor is ready (or raise the closing,
    deadline or timeout error); a non-blocking transport raises BlockingIOError instead.
    ``acquire`` takes one of the engine's locks within the call's time limit.
    """

    __slots__ = ()

    nonblocking = False  # one attempt, BlockingIOError instead of parking

    def recv_into(self, buf: memoryview) -> int:
        raise NotImplementedError

    def send(self, data: memoryview) -> int:
        raise NotImplementedError

    def acquire(self, lock: threading.Lock) -> None:
        lock.acquire()

    def check(self, read: bool) -> None:
        """Raise the closing error, or the deadline error if the call's read (or write)
        deadline has passed, so that it fails before its first step, as a plain read or
        write does (a step may
        finish without touching the wire: plaintext OpenSSL holds, records sealed into the
        outgoing BIO)."""

    def peek_into(self, buf: memoryview) -> int | None:
        """Read what the kernel already has without waiting (None: nothing, or not
        supported). Errors are left for the next real read."""
        return None

    def fill_bytes(self) -> _FillBytes | None:
        """_fill_bytes where the descriptor is on the C core's runtime, else None: the
        Python runtime, the reference, keeps Python's way (a bytes object per record,
        joined)."""
        return None


class _PoisonedLock:
    """What replaces an _Engine lock a parent thread held when the process forked: taking
    it fails with the poisoned FD's error (fd_unix FD._closed_error), word for word.

    Go: none
    """

    __slots__ = ()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        raise OSError(
            errno.EBADF,
            "threadpoll: this descriptor was in use by another thread when the process "
            "forked; it cannot be used in the child (close it and open a new one)",
        )

    def release(self) -> None:
        raise RuntimeError("release unlocked lock")

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Engine:
    """An SSLObject on two memory BIOs, pumped through a _Transport. See the module
    docstring for the locks.

    Go: crypto/tls/conn.go Conn (its in, out and handshake halves)
    """

    __slots__ = (
        "obj",
        "incoming",
        "outgoing",
        "lock",
        "in_lock",
        "out_lock",
        "writer",
        "reader",
        "shaker",
        "pending",
        "retry",
        "rbuf",
        "handshake_done",
        "hs_lock",
        "hdr",
        "hdr_got",
        "body_left",
        "fed",
        "last_end",
        "maybe_pending",
        "read_err",
        "framed",
        "__weakref__",
    )

    def __init__(
        self, obj: Any, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, framed: bool = True
    ) -> None:
        # Read no further than the next record header (see _want_bytes): what the drop-in
        # needs for select() and pending(); threadpoll.tls, which has neither, reads 64 KiB.
        self.framed = framed
        self.obj = obj  # _ssl._SSLSocket over the BIOs; guarded by lock
        self.incoming = incoming  # guarded by lock
        self.outgoing = outgoing  # guarded by lock
        _live.add(self)  # for _after_fork_in_child
        self.lock = threading.RLock()
        self.in_lock = threading.Lock()
        self.out_lock = threading.Lock()
        # The thread idents of the calls that hold out_lock, in_lock and hs_lock (0: none),
        # for the re-entry checks: a signal handler on top of its own thread's call that
        # would wait for that call raises RuntimeError instead (fd_unix's _reentered).
        # Each is written by the holder only, under its lock; another thread reads it only
        # to compare with its own ident, which a stale value never equals.
        self.writer = 0
        self.reader = 0
        self.shaker = 0
        # Sealed bytes taken out of the outgoing BIO, not yet all written. Guarded by out_lock.
        self.pending: memoryview | None = None
        # A non-blocking write whose records are in ``pending``: its plaintext length, which
        # the retried write returns once they are out (OpenSSL's SSL_write retry contract).
        # Guarded by out_lock.
        self.retry: int | None = None
        self.rbuf = memoryview(bytearray(_RECV_SIZE))  # guarded by in_lock
        # Goes from False to True once: set by handshake() (under hs_lock, in_lock and
        # out_lock) or by a read that OpenSSL answered, which it does only once the handshake
        # is over (in_lock only).
        # Benign race: read without a lock. A stale False only calls handshake(), which
        # takes hs_lock and returns at once, or runs a do_handshake that OpenSSL answers at
        # once on a finished connection.
        self.handshake_done = False
        self.hs_lock = threading.Lock()  # Go: handshakeMutex; taken before in_lock
        # The record framing of the bytes read so far (see _want_bytes). Guarded by in_lock.
        self.hdr = bytearray(_HEADER)
        self.hdr_got = 0
        self.body_left = 0
        # Stream offsets (guarded by in_lock): bytes fed to the incoming BIO so far, and the
        # end of the last whole record among them. OpenSSL reads a memory BIO no further
        # than the record it is working on (read_ahead is off), so the BIO holds a whole
        # record OpenSSL has not processed iff last_end > fed - incoming.pending.
        self.fed = 0
        self.last_end = 0
        # The last SSLObject.read filled all it was asked for, so OpenSSL may still hold
        # plaintext of that record (SSL_pending, which costs a GIL hand-off to ask).
        # Guarded by in_lock.
        self.maybe_pending = True
        # An error met after a read had already taken plaintext: raised by the next read,
        # as OpenSSL would raise it again (Go: c.in.err). Guarded by in_lock.
        self.read_err: BaseException | None = None

    @classmethod
    def new(
        cls,
        context: ssl.SSLContext,
        server_side: bool,
        server_hostname: str | None,
        owner: object,
        session: ssl.SSLSession | None = None,
        framed: bool = True,
    ) -> _Engine:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = context._wrap_bio(  # type: ignore[attr-defined]
            incoming,
            outgoing,
            server_side,
            context._encode_hostname(server_hostname),  # type: ignore[attr-defined]
            owner=owner,
            session=session,
        )
        return cls(obj, incoming, outgoing, framed)

    def _after_fork_in_child(self) -> None:
        """In a forked child (one thread left): a lock a parent thread held is never
        released. The step lock is replaced; an I/O lock (hs_lock, in_lock, out_lock) a
        parent thread held, whose operation is unfinished, becomes a _PoisonedLock: the
        calls that need it fail as a poisoned FD's do, instead of waiting for ever.

        Go: none (Go does not fork a multi-threaded runtime)
        """
        if self.lock.acquire(False):  # free, or the forking thread's own (re-entrant)
            self.lock.release()
        else:
            self.lock = threading.RLock()
        for name in ("hs_lock", "in_lock", "out_lock"):
            lock = getattr(self, name)
            if lock.acquire(False):
                lock.release()
            else:
                setattr(self, name, _PoisonedLock())

    def call(self, f: Callable[..., _T], *args: Any) -> _T:
        """One SSLObject step that makes no I/O (getpeercert, cipher, ...), under lock."""
        with self.lock:
            return f(*args)

    # --- the outgoing side ---------------------------------------------------------------

    def flush_locked(self, t: _Transport) -> bool:
        """Write every sealed byte to the wire; False if a non-blocking transport would
        block (the rest stays in ``pending``). Must be called holding out_lock.

        Go: crypto/tls/conn.go Conn.flush
        """
        while True:
            p = self.pending
            if p is None or not p.nbytes:
                with self.lock:
                    data = self.outgoing.read()
                if not data:
                    self.pending = None
                    return True
                p = self.pending = memoryview(data)
            try:
                n = t.send(p)
            except BlockingIOError:
                return False
            self.pending = p[n:]

    def release_out(self, t: _Transport) -> None:
        """Let go of out_lock (taken with _take_out), then send what other threads sealed
        meanwhile (an error doing so is left for the next operation: it is not this
        caller's)."""
        self.writer = 0
        self.out_lock.release()
        with self.lock:
            more = self.outgoing.pending
        if more:
            try:
                self.kick(t)
            except (OSError, ssl.SSLError):
                pass

    def kick(self, t: _Transport) -> None:
        """Send the outgoing BIO's bytes unless another thread holds out_lock, in which case
        that thread sends them (it looks again after letting go)."""
        while self.out_lock.acquire(False):
            self.writer = threading.get_ident()
            try:
                if not self.flush_locked(t):
                    return
            finally:
                self.writer = 0
                self.out_lock.release()
            with self.lock:
                if not self.outgoing.pending:
                    return

    def _flush_quietly(self, t: _Transport) -> None:
        """Best effort for an alert OpenSSL sealed before failing: the failure wins."""
        try:
            self.kick(t)
        except Exception:  # noqa: BLE001 - the SSL error being raised is the one to report
            pass

    # --- the incoming side ---------------------------------------------------------------

    def _want_bytes(self) -> int:
        """How much the next read from the wire may take. Must be called holding in_lock.

        Unframed (threadpoll.tls): all the buffer holds. Framed (the drop-in): the rest of
        the current record and the next record's 5-byte header, never more. Why: OpenSSL on
        a socket reads no further than the record it needs, and code written for the stdlib
        relies on it: a record is never left whole in a buffer that ``select()`` cannot see
        and ``pending()`` does not count (asyncore-style servers wait for readability, then
        read). Taking the next header with the current body costs nothing (that record's
        body is still in the kernel, so the descriptor stays readable) and makes bulk
        transfer one recv per record where OpenSSL makes two.
        """
        cap = self.rbuf.nbytes
        if not self.framed:
            return cap
        if self.body_left:
            return min(self.body_left + _HEADER, cap)
        return _HEADER - self.hdr_got

    def _account(self, n: int) -> None:
        """Follow the record framing over n bytes just read into rbuf: one step per record
        whose header is whole in them."""
        buf = self.rbuf
        hdr = self.hdr
        pos = self.fed
        left = self.body_left
        got = self.hdr_got
        last = self.last_end
        at = -1  # where in buf the last header read whole starts
        i = 0
        while i < n:
            if left:  # the rest of a body
                if left > n - i:
                    left -= n - i
                    break
                i += left
                left = 0
                last = pos + i
            elif got or n - i < _HEADER:  # a header cut between two reads
                take = min(_HEADER - got, n - i)
                hdr[got : got + take] = buf[i : i + take]
                got += take
                i += take
                if got == _HEADER:
                    got = 0
                    at = -1
                    left = (hdr[3] << 8) | hdr[4]
                    if not left:
                        last = pos + i
            else:  # whole headers: one step per record
                while True:
                    at = i
                    end = i + _HEADER + ((buf[i + 3] << 8) | buf[i + 4])
                    if end > n:  # its body goes on in the next read
                        left = end - n
                        last = pos + i
                        i = n
                        break
                    i = end
                    if n - i < _HEADER:
                        last = pos + i
                        break
        if at >= 0:
            hdr[:] = buf[at : at + _HEADER]
        self.body_left = left
        self.hdr_got = got
        self.last_end = last
        self.fed = pos + n

    def _feed(self, n: int) -> bool:
        """Put n bytes just read into rbuf (0: EOF) in the incoming BIO, following the record
        framing over them; returns _record_ready() after it."""
        left = self.body_left
        pos = self.fed
        if self.hdr_got or (n != left + _HEADER and (n != left or not n)):
            self._account(n)
        elif n == left:
            # A framed read's catch, without _account's loop: the rest of a body...
            self.body_left = 0
            self.last_end = self.fed = pos + n
        else:
            # ... or that and the next header whole (a bare header when left is 0).
            hdr = self.hdr
            hdr[:] = self.rbuf[left:n]
            left = (hdr[3] << 8) | hdr[4]
            self.body_left = left
            self.fed = pos + n
            if not left:
                self.last_end = pos + n
            elif n > _HEADER:
                self.last_end = pos + n - _HEADER
        with self.lock:
            if n:
                self.incoming.write(self.rbuf[:n])
            else:
                self.incoming.write_eof()
            return self.last_end > self.fed - self.incoming.pending

    def _record_ready(self) -> bool:
        """The incoming BIO holds a whole record OpenSSL has not processed (see ``fed``).
        Must be called holding in_lock and lock."""
        return self.last_end > self.fed - self.incoming.pending

    def fill(self, t: _Transport, want: ssl.SSLError | None) -> None:
        """Read once from the wire into the incoming BIO (EOF becomes write_eof); ``want``
        (the SSLWantReadError of the step) is raised if a non-blocking transport would block.
        Must be called holding in_lock."""
        with self.lock:
            if self.incoming.eof:
                return
        at_header = not self.body_left
        try:
            n = t.recv_into(self.rbuf[: self._want_bytes()])
        except BlockingIOError:
            if want is None:
                raise
            raise want from None
        self._feed(n)
        if self.framed and n and at_header and self.body_left:
            # That read ended a header: the body most likely came with it. Take it now,
            # without waiting, rather than after another SSLObject step that asks for it.
            m = t.peek_into(self.rbuf[: self._want_bytes()])
            if m is not None:
                self._feed(m)

    def _take_bulk_record(self, t: _Transport) -> bool:
        """Framed, at a record boundary: if the record whose header was just read is a large
        application-data record, take in what arrived of its body and the next header,
        without waiting; True if that record is now whole in the BIO (a framed read may go
        on to it within the same call). A small record may be an alert (TLS 1.3 hides an
        alert's type inside an application-data record of 19 bytes or, padded, a few more):
        decrypted here behind data, a close_notify would be taken from the kernel and kept
        in OpenSSL, and a select()-driven caller would never see its EOF. Must be called
        holding in_lock."""
        hdr = self.hdr
        left = self.body_left
        if (
            self.hdr_got
            or not left
            or hdr[0] != _APPLICATION_DATA
            or ((hdr[3] << 8) | hdr[4]) < _BULK_RECORD
        ):
            return False
        m = t.peek_into(self.rbuf[: min(left + _HEADER, self.rbuf.nbytes)])
        return m is not None and m > 0 and self._feed(m)

    def _prefetch(self, t: _Transport) -> None:
        """At a record boundary, take in what already arrived of the next header (EOF
        included), without waiting. Must be called holding in_lock."""
        with self.lock:
            if self.incoming.eof or self.body_left:
                return
        n = t.peek_into(self.rbuf[: self._want_bytes()])
        if n is not None:
            self._feed(n)

    # --- operations ------------------------------------------------------------------------

    def handshake(self, t: _Transport) -> None:
        """Run the handshake to its end.

        Go: crypto/tls/conn.go Conn.HandshakeContext
        """
        me = threading.get_ident()
        if self.shaker == me:
            raise _reentered_handshake()
        t.acquire(self.hs_lock)
        self.shaker = me
        try:
            if self.handshake_done:
                return
            self._take_in(t)
            try:
                self._take_out(t)
                try:
                    self._handshake_locked(t)
                finally:
                    self.release_out(t)
            finally:
                self._drop_in()
        finally:
            self.shaker = 0
            self.hs_lock.release()

    def _take_in(self, t: _Transport) -> None:
        """Take in_lock for this thread's call (see ``reader``)."""
        me = threading.get_ident()
        if self.reader == me:
            raise _reentered(True)
        t.acquire(self.in_lock)
        self.reader = me

    def _drop_in(self) -> None:
        self.reader = 0
        self.in_lock.release()

    def _take_out(self, t: _Transport) -> None:
        """Take out_lock for this thread's call (see ``writer``); release_out lets it go."""
        me = threading.get_ident()
        if self.writer == me:
            raise _reentered(False)
        if not self.out_lock.acquire(False):
            if self.lock._is_owned():  # type: ignore[attr-defined]  # C's RLock has it
                # Inside a step (a callback, a handler there): the writer holding out_lock
                # needs lock for its next step.
                raise _reentered_step()
            t.acquire(self.out_lock)
        self.writer = me

    def _handshake_locked(self, t: _Transport) -> None:
        while True:
            if not self.flush_locked(t):
                raise _want_write()
            want: ssl.SSLError | None = None
            try:
                with self.lock:
                    self.obj.do_handshake()
            except ssl.SSLWantReadError as e:
                want = e
            except ssl.SSLError:
                self._flush_alert_locked(t)
                raise
            if not self.flush_locked(t):
                raise _want_write()
            if want is None:
                # Take in at once what the peer already sent: a peer that closed right after
                # its Finished has its FIN here, and this side sees EOF, as the stdlib (which
                # reads next, in C) does, rather than the reset the peer's kernel sends back
                # a moment later for our last flight (TLS 1.3 session tickets).
                self._prefetch(t)
                self.handshake_done = True
                return
            self.fill(t, want)

    def _flush_alert_locked(self, t: _Transport) -> None:
        try:
            self.flush_locked(t)
        except Exception:  # noqa: BLE001 - the SSL error being raised is the one to report
            pass

    def read(self, t: _Transport, n: int, buf: Any = None) -> Any:
        """SSLObject.read(n[, buf]), reading from the wire as it needs. Where OpenSSL
        returns one record per call, this goes on while the caller has room: unframed, to
        every whole record already in the BIO; framed (the drop-in), to the next record if
        it is bulk data whose body has already arrived (see _take_bulk_record). So a bulk
        transfer makes one call per 64 KiB, not per 16 KiB record, and no SSLObject.read
        that can only ask for bytes.

        Go: crypto/tls/conn.go Conn.Read
        """
        if not self.handshake_done:
            self.handshake(t)
        # Benign race: the writer's field, read once without out_lock only to decide
        # whether to kick, which takes out_lock and looks again.
        if self.pending is not None and t.nonblocking:
            self.kick(t)  # what a previous non-blocking call could not send
        self._take_in(t)
        try:
            t.check(True)
            err = self.read_err
            if err is not None:
                self.read_err = None
                raise err
            if buf is None:
                fill_bytes = t.fill_bytes() if n > 0 else None
                if fill_bytes is not None:
                    # The result is made only once there is data for it: a thread parks
                    # outside fill_bytes, holding no n-byte buffer.
                    while True:
                        self._await_record(t, n)
                        try:
                            return fill_bytes(
                                n, lambda view: self._read_locked(t, n, view, None, False)
                            )
                        except ssl.SSLWantReadError as e:
                            self.fill(t, e)
                parts: list[bytes] = []
                self._read_locked(t, n, None, parts)
                return parts[0] if len(parts) == 1 else b"".join(parts)
            with memoryview(buf) as m, m.cast("B") as whole:
                if n <= 0 or n > whole.nbytes:
                    n = whole.nbytes  # as _ssl's read(n, buffer)
                return self._read_locked(t, n, whole, None)
        finally:
            self._drop_in()

    def _await_record(self, t: _Transport, n: int) -> None:
        """Before a blocking read's first step: if OpenSSL holds nothing and the BIO no whole
        record, read from the wire first (OpenSSL's read would only ask for bytes: an
        exception and a GIL hand-off). Must be called holding in_lock."""
        if n > 0 and not (self.maybe_pending or t.nonblocking):
            with self.lock:
                empty = not (self.incoming.eof or self._record_ready())
            if empty:
                self.fill(t, None)

    def _read_locked(
        self,
        t: _Transport,
        n: int,
        view: memoryview | None,
        parts: list[bytes] | None,
        wait: bool = True,
    ) -> int:
        """The read loop: plaintext into view (or appended to parts); returns its length.
        With wait false, a read that has nothing yet and must wait for the wire raises
        SSLWantReadError instead (the caller waits, then calls again). Must be called
        holding in_lock."""
        obj = self.obj
        lock = self.lock
        outgoing = self.outgoing
        got = 0
        if wait:
            self._await_record(t, n)
        while True:
            ask = n - got
            try:
                with lock:
                    try:
                        if view is None:
                            r = obj.read(ask)
                            k = len(r)
                        else:
                            k = obj.read(ask, view[got:] if got else view)
                        ready = self._record_ready()
                        # Whether OpenSSL kept plaintext of that record: only a read that
                        # filled all it asked for can have (SSL_pending, one short GIL
                        # release, where a read that can only ask for bytes raises).
                        held = k == ask and k and obj.pending()
                    finally:
                        out = outgoing.pending
            except ssl.SSLWantReadError as e:
                self.maybe_pending = False  # OpenSSL needs bytes: it holds no plaintext
                if out:
                    self.kick(t)
                if got:
                    return got  # the records in the BIO were not data; what we have will do
                # The writer's field (out_lock, not held here): read once, as a writer that
                # finishes meanwhile sets it to None.
                unsent = self.pending
                if t.nonblocking and unsent is not None and unsent.nbytes:
                    # The peer may be waiting for what this read produced (a post-handshake
                    # answer): the caller must wait for writability, as OpenSSL on a socket
                    # would ask it to.
                    raise _want_write() from None
                if not wait:
                    raise
                self.fill(t, e)
                continue
            except ssl.SSLError as e:
                self.maybe_pending = True
                if out:
                    self._flush_quietly(t)
                if got:
                    self.read_err = e  # the plaintext before it first
                    return got
                raise
            self.handshake_done = True
            # A read of nothing is EOF or close_notify, which OpenSSL reports again without
            # reading.
            self.maybe_pending = bool(held) or not k
            if out:
                try:
                    self.kick(t)
                except OSError:
                    pass  # the data read wins; the error shows on the next write
            if parts is not None and (k or not got):
                parts.append(r)
            got += k
            if not k or got >= n:
                return got
            if not ready and not (self.framed and self._take_bulk_record(t)):
                # Framed: go on only to bulk data whose body has arrived (taken without
                # waiting, never more than that record); what is on its way the kernel shows.
                return got

    def write(self, t: _Transport, view: memoryview, nonblocking: bool) -> int:
        """Seal and send all of view; returns its length. A non-blocking call seals it all
        at once and, if the wire takes only part, raises SSLWantWriteError: the caller then
        retries with the same data, as OpenSSL requires, and gets its length back once the
        records are out. An error raised part-way carries ``.written``.

        Go: crypto/tls/conn.go Conn.Write
        """
        if not self.handshake_done:
            self.handshake(t)
        written = 0
        try:
            self._take_out(t)
            try:
                t.check(False)  # before anything is sealed: .written stays 0
                if not self.flush_locked(t):
                    raise _want_write()
                if self.retry is not None:
                    n, self.retry = self.retry, None
                    return n
                total = view.nbytes
                step = total if nonblocking else _CHUNK
                while True:  # do-while: a write of b"" still runs one step
                    chunk = view[written : written + step]
                    n = self._seal(t, chunk)
                    # Sealed: whatever becomes of this flush, the next one sends it, so it
                    # counts in .written (a retry of the rest must not send it twice).
                    written += n
                    if not self.flush_locked(t):
                        # Non-blocking: the caller retries with the same data.
                        written -= n
                        self.retry = n
                        raise _want_write()
                    if written >= total:
                        return total
            finally:
                self.release_out(t)
        except BaseException as e:
            with_written(e, written)
            raise

    def _seal(self, t: _Transport, chunk: memoryview) -> int:
        """SSLObject.write(chunk); a step that wants to read first (a renegotiation) reads
        once from the wire and tries again. Must be called holding out_lock."""
        while True:
            try:
                with self.lock:
                    return int(self.obj.write(chunk))
            except ssl.SSLWantReadError as e:
                want = e
            except ssl.SSLError:
                self._flush_alert_locked(t)
                raise
            self._take_in(t)
            try:
                self.maybe_pending = True  # the handshake may take in application data
                self.fill(t, want)
            finally:
                self._drop_in()

    def shutdown(self, t: _Transport) -> None:
        """Send close_notify and wait for the peer's (SSLObject.unwrap).

        Go: crypto/tls/conn.go Conn.closeNotify (Go does not wait for the peer's)
        """
        self._take_in(t)
        try:
            self._take_out(t)
            try:
                while True:
                    if not self.flush_locked(t):
                        raise _want_write()
                    want: ssl.SSLError | None = None
                    try:
                        with self.lock:
                            self.obj.shutdown()
                    except ssl.SSLWantReadError as e:
                        want = e
                    except ssl.SSLError:
                        self._flush_alert_locked(t)
                        raise
                    if not self.flush_locked(t):
                        raise _want_write()
                    if want is None:
                        return
                    self.fill(t, want)
            finally:
                self.release_out(t)
        finally:
            self._drop_in()

    def close_notify(self, t: _Transport) -> bool:
        """Seal close_notify and send it, unless a write is in flight (then False: the
        caller just closes, as Go's Close does when a Write is active).

        Go: crypto/tls/conn.go Conn.closeNotify
        """
        if not self.out_lock.acquire(False):
            return False
        self.writer = threading.get_ident()
        try:
            with self.lock:
                try:
                    self.obj.shutdown()
                except ssl.SSLError:
                    pass  # wants the peer's close_notify: not waited for
            self.flush_locked(t)
            return True
        finally:
            self.writer = 0
            self.out_lock.release()

    def leftover(self) -> bytes:
        """What the peer sent after its close_notify, read from the wire but not used by
        TLS (the first cleartext bytes after an unwrap)."""
        with self.lock:
            return bytes(self.incoming.read()) if self.incoming.pending else b""


# Every _Engine not collected yet, for _after_fork_in_child.
_live: weakref.WeakSet[_Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """Every live _Engine made usable in a forked child, or poisoned (Go: none)."""
    # The WeakSet's own references (one thread is left: nothing races with this).
    refs: list[weakref.ref[_Engine]] = list(_live.data)  # type: ignore[attr-defined]
    for r in refs:
        eng = r()
        if eng is not None:
            eng._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
