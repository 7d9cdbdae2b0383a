"""The TLS engine of ``threadpoll.tls``: an ``ssl`` SSLObject on two memory BIOs, pumped
through a ``Conn`` by threads that park on the descriptor's pollDesc, as Go's ``crypto/tls``
sits on a ``net.Conn``. (The drop-in ``ssl.SSLSocket``, ``threadpoll/_sslsocket.py``, runs the
stdlib's own ``_ssl`` socket object on the descriptor instead.)

The two-BIO shuffle (``_Engine``). Three locks, none held while parked in the kernel's place:

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

Write errors:

- DIVERGENCE(go): after a write fails part-way (a deadline, a reset) the records already
  sealed are kept and go out first on the next write, where Go marks the connection broken
  for writing; ``.written`` counts the plaintext whose records all reached the kernel, in
  steps of up to 64 KiB (``_CHUNK``).
"""

from __future__ import annotations

import ssl
import threading
from typing import Any, Callable, TypeVar

from threadpoll.errors import with_written

_T = TypeVar("_T")

# The largest read from the wire: many records (2^14 + 256 bytes at most each), so that a bulk
# transfer makes one recv, one BIO copy and one GIL hand-off for several records.
_RECV_SIZE = 262144
# A TLS record header: type, version (2 bytes), length (2 bytes) (RFC 8446 5.1).
_HEADER = 5
# Plaintext sealed per SSLObject.write: .written moves in these steps.
_CHUNK = 65536


class _Transport:
    """How an engine reaches the wire: a TLSConn has one for its life.

    ``recv_into`` and ``send`` park until the descriptor is ready (or raise the closing or
    deadline error). ``acquire`` takes one of the engine's locks.
    """

    __slots__ = ()

    def recv_into(self, buf: memoryview) -> int:
        raise NotImplementedError

    def send(self, data: memoryview) -> int:
        raise NotImplementedError

    def acquire(self, lock: threading.Lock) -> None:
        lock.acquire()

    def peek_into(self, buf: memoryview) -> int | None:
        """Read what the kernel already has without waiting (None: nothing, or not
        supported). Errors are left for the next real read."""
        return None


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
        "pending",
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
    )

    def __init__(self, obj: Any, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
        self.obj = obj  # _ssl._SSLSocket over the BIOs; guarded by lock
        self.incoming = incoming  # guarded by lock
        self.outgoing = outgoing  # guarded by lock
        self.lock = threading.RLock()
        self.in_lock = threading.Lock()
        self.out_lock = threading.Lock()
        # Sealed bytes taken out of the outgoing BIO, not yet all written. Guarded by out_lock.
        self.pending: memoryview | None = None
        self.rbuf = memoryview(bytearray(_RECV_SIZE))  # guarded by in_lock
        self.handshake_done = False  # set once, under in_lock and out_lock
        self.hs_lock = threading.Lock()  # Go: handshakeMutex; taken before in_lock
        # The record framing of the bytes read so far (see _account). Guarded by in_lock.
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
        return cls(obj, incoming, outgoing)

    def call(self, f: Callable[..., _T], *args: Any) -> _T:
        """One SSLObject step that makes no I/O (getpeercert, cipher, ...), under lock."""
        with self.lock:
            return f(*args)

    # --- the outgoing side ---------------------------------------------------------------

    def flush_locked(self, t: _Transport) -> None:
        """Write every sealed byte to the wire (what an error leaves unsent stays in
        ``pending``). Must be called holding out_lock.

        Go: crypto/tls/conn.go Conn.flush
        """
        while True:
            p = self.pending
            if p is None or not p.nbytes:
                with self.lock:
                    data = self.outgoing.read()
                if not data:
                    self.pending = None
                    return
                p = self.pending = memoryview(data)
            n = t.send(p)
            self.pending = p[n:]

    def release_out(self, t: _Transport) -> None:
        """Let go of out_lock, then send what other threads sealed meanwhile (an error doing
        so is left for the next operation: it is not this caller's)."""
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
            try:
                self.flush_locked(t)
            finally:
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

    def _account(self, n: int) -> None:
        """Follow the record framing over n bytes just read into rbuf, one step per record
        whose header is whole in them: where the last whole record ends (``last_end``), the
        rest of a body (``body_left``), a header cut between two reads (``hdr``)."""
        buf = self.rbuf
        hdr = self.hdr
        pos = self.fed
        left = self.body_left
        got = self.hdr_got
        last = self.last_end
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
                    left = (hdr[3] << 8) | hdr[4]
                    if not left:
                        last = pos + i
            else:  # whole headers: one step per record
                while True:
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
        self.body_left = left
        self.hdr_got = got
        self.last_end = last
        self.fed = pos + n

    def _feed(self, n: int) -> None:
        """Put n bytes just read into rbuf (0: EOF) in the incoming BIO, following the record
        framing over them. Must be called holding in_lock."""
        self._account(n)
        with self.lock:
            if n:
                self.incoming.write(self.rbuf[:n])
            else:
                self.incoming.write_eof()

    def _record_ready(self) -> bool:
        """The incoming BIO holds a whole record OpenSSL has not processed (see ``fed``).
        Must be called holding in_lock and lock."""
        return self.last_end > self.fed - self.incoming.pending

    def fill(self, t: _Transport) -> None:
        """Read once from the wire into the incoming BIO (EOF becomes write_eof). Must be
        called holding in_lock."""
        with self.lock:
            if self.incoming.eof:
                return
        self._feed(t.recv_into(self.rbuf))

    def _prefetch(self, t: _Transport) -> None:
        """At a record boundary, take in what has already arrived (EOF included), without
        waiting. Must be called holding in_lock."""
        with self.lock:
            if self.incoming.eof or self.body_left:
                return
        n = t.peek_into(self.rbuf)
        if n is not None:
            self._feed(n)

    # --- operations ------------------------------------------------------------------------

    def handshake(self, t: _Transport) -> None:
        """Run the handshake to its end.

        Go: crypto/tls/conn.go Conn.HandshakeContext
        """
        t.acquire(self.hs_lock)
        try:
            if self.handshake_done:
                return
            t.acquire(self.in_lock)
            try:
                t.acquire(self.out_lock)
                try:
                    self._handshake_locked(t)
                finally:
                    self.release_out(t)
            finally:
                self.in_lock.release()
        finally:
            self.hs_lock.release()

    def _handshake_locked(self, t: _Transport) -> None:
        while True:
            self.flush_locked(t)
            want = False
            try:
                with self.lock:
                    self.obj.do_handshake()
            except ssl.SSLWantReadError:
                want = True
            except ssl.SSLError:
                self._flush_alert_locked(t)
                raise
            self.flush_locked(t)
            if not want:
                # Take in at once what the peer already sent: a peer that closed right after
                # its Finished has its FIN here, and this side sees EOF, as the stdlib (which
                # reads next, in C) does, rather than the reset the peer's kernel sends back
                # a moment later for our last flight (TLS 1.3 session tickets).
                self._prefetch(t)
                self.handshake_done = True
                return
            self.fill(t)

    def _flush_alert_locked(self, t: _Transport) -> None:
        try:
            self.flush_locked(t)
        except Exception:  # noqa: BLE001 - the SSL error being raised is the one to report
            pass

    def read(self, t: _Transport, n: int, buf: Any = None) -> Any:
        """SSLObject.read(n[, buf]), reading from the wire as it needs. Where OpenSSL
        returns one record per call, this goes on while the caller has room, to every whole
        record already in the BIO. So a bulk transfer makes one call per 64 KiB, not per
        16 KiB record, and no SSLObject.read that can only ask for bytes.

        Go: crypto/tls/conn.go Conn.Read
        """
        if not self.handshake_done:
            self.handshake(t)
        t.acquire(self.in_lock)
        try:
            err = self.read_err
            if err is not None:
                self.read_err = None
                raise err
            if buf is None:
                parts: list[bytes] = []
                self._read_locked(t, n, None, parts)
                return parts[0] if len(parts) == 1 else b"".join(parts)
            with memoryview(buf) as m, m.cast("B") as whole:
                if n <= 0 or n > whole.nbytes:
                    n = whole.nbytes  # as _ssl's read(n, buffer)
                return self._read_locked(t, n, whole, None)
        finally:
            self.in_lock.release()

    def _read_locked(
        self, t: _Transport, n: int, view: memoryview | None, parts: list[bytes] | None
    ) -> int:
        """The read loop: plaintext into view (or appended to parts); returns its length.
        Must be called holding in_lock."""
        obj = self.obj
        lock = self.lock
        incoming = self.incoming
        outgoing = self.outgoing
        got = 0
        if n > 0 and not self.maybe_pending:
            with lock:
                empty = not (incoming.eof or self._record_ready())
            if empty:
                # OpenSSL holds nothing and the BIO no whole record: its read would only
                # ask for bytes (an exception and a GIL hand-off). Fetch them first.
                self.fill(t)
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
            except ssl.SSLWantReadError:
                self.maybe_pending = False  # OpenSSL needs bytes: it holds no plaintext
                if out:
                    self.kick(t)
                if got:
                    return got  # the records in the BIO were not data; what we have will do
                self.fill(t)
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
            if not k or got >= n or not ready:
                return got

    def write(self, t: _Transport, view: memoryview) -> int:
        """Seal and send all of view, _CHUNK at a time; returns its length. An error raised
        part-way carries ``.written``.

        Go: crypto/tls/conn.go Conn.Write
        """
        if not self.handshake_done:
            self.handshake(t)
        written = 0
        try:
            t.acquire(self.out_lock)
            try:
                self.flush_locked(t)
                total = view.nbytes
                while True:  # do-while: a write of b"" still runs one step
                    chunk = view[written : written + _CHUNK]
                    n = self._seal(t, chunk)
                    self.flush_locked(t)
                    written += n
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
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                self._flush_alert_locked(t)
                raise
            t.acquire(self.in_lock)
            try:
                self.maybe_pending = True  # the handshake may take in application data
                self.fill(t)
            finally:
                self.in_lock.release()

    def close_notify(self, t: _Transport) -> bool:
        """Seal close_notify and send it, unless a write is in flight (then False: the
        caller just closes, as Go's Close does when a Write is active).

        Go: crypto/tls/conn.go Conn.closeNotify
        """
        if not self.out_lock.acquire(False):
            return False
        try:
            with self.lock:
                try:
                    self.obj.shutdown()
                except ssl.SSLError:
                    pass  # wants the peer's close_notify: not waited for
            self.flush_locked(t)
            return True
        finally:
            self.out_lock.release()
