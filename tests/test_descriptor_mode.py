"""Descriptors stay in the mode the user's code set, and nothing depends on it.

- Another holder of the open file description may clear ``O_NONBLOCK`` at any time: socket
  attempts use ``MSG_DONTWAIT``, so a reader still parks and close still wakes it.
- A blocking drop-in socket's descriptor is blocking (``os.get_blocking``, a child process);
  ``setblocking``/``settimeout`` change it as the stdlib's do; accept, connect, sendfile and
  each step of a TLS socket make it non-blocking only for the call or step, and a
  ``settimeout`` from another thread meanwhile is kept.
- A ``File`` handed to a child (``fileno()``, Go's ``Fd()``) is made blocking first.
- A second front on a registered descriptor shares the first's FD, or is refused plainly.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest
from support import HoldAt, Runner, wait_parked, wait_until

import threadpoll
import threadpoll.socket as ts
from threadpoll._runtime.proc import Runtime
from threadpoll.errors import NetClosingError

needs_cat = pytest.mark.skipif(shutil.which("cat") is None, reason="needs cat")


def _tcp_conns() -> tuple[threadpoll.Conn, threadpoll.Conn]:
    ln = threadpoll.listen("tcp", ("127.0.0.1", 0))
    try:
        c = threadpoll.dial("tcp", ln.addr)
        return c, ln.accept()
    finally:
        ln.close()


# --- item 2: O_NONBLOCK cleared behind threadpoll's back -------------------------------------


@pytest.mark.timeout(10)
@pytest.mark.parametrize("how", ["set_blocking", "stdlib socket on the fd"])
def test_conn_reader_parks_and_close_wakes_it_when_o_nonblock_is_cleared(
    rt: Runtime, how: str
) -> None:
    c, s = _tcp_conns()
    try:
        if how == "set_blocking":
            os.set_blocking(s.fileno(), True)
        else:
            other = socket.socket(fileno=s.fileno())
            other.settimeout(None)  # clears O_NONBLOCK on the shared description
            other.detach()
        assert os.get_blocking(s.fileno())
        reader = Runner(lambda: s.read(10), name="reader")
        wait_parked(s, "r")  # parked in the runtime, not blocked in read(2)
        s.close()
        assert isinstance(reader.join_exc(), NetClosingError)
    finally:
        c.close()
        s.close()


@pytest.mark.timeout(10)
def test_conn_writer_parks_and_close_wakes_it_when_o_nonblock_is_cleared(rt: Runtime) -> None:
    c, s = _tcp_conns()
    try:
        os.set_blocking(s.fileno(), True)
        writer = Runner(lambda: s.write(b"x" * (64 << 20)), name="writer")
        wait_parked(s, "w")
        s.close()
        err = writer.join_exc()
        assert isinstance(err, NetClosingError)
        assert err.written > 0  # type: ignore[attr-defined]
    finally:
        c.close()
        s.close()


@pytest.mark.timeout(10)
def test_dropin_with_timeout_parks_and_close_wakes_it_when_o_nonblock_is_cleared(
    rt: Runtime,
) -> None:
    a, b = ts.socketpair()
    try:
        b.settimeout(60)
        assert not os.get_blocking(b.fileno())  # as the stdlib sets it for a timeout
        os.set_blocking(b.fileno(), True)  # behind threadpoll's back
        reader = Runner(lambda: b.recv(10), name="reader")
        wait_parked(b._desc.fd, "r")
        b.close()
        assert isinstance(reader.join_exc(), NetClosingError)
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(10)
def test_packetconn_reader_parks_and_close_wakes_it_when_o_nonblock_is_cleared(
    rt: Runtime,
) -> None:
    p = threadpoll.listen_packet("udp", ("127.0.0.1", 0))
    try:
        os.set_blocking(p.fileno(), True)
        reader = Runner(lambda: p.read_from(10), name="reader")
        wait_parked(p, "r")
        p.close()
        assert isinstance(reader.join_exc(), NetClosingError)
    finally:
        p.close()


# --- item 3: the descriptor's mode is the user's ---------------------------------------------


def _modes(sock: socket.socket) -> list[bool]:
    seen = [os.get_blocking(sock.fileno())]
    for call in (
        lambda: sock.settimeout(0),
        lambda: sock.settimeout(None),
        lambda: sock.settimeout(2.5),
        lambda: sock.setblocking(True),
        lambda: sock.setblocking(False),
    ):
        call()
        seen.append(os.get_blocking(sock.fileno()))
    return seen


@pytest.mark.timeout(10)
def test_dropin_descriptor_mode_follows_the_stdlib(rt: Runtime) -> None:
    a, b = ts.socketpair()
    x, y = socket.socketpair()
    try:
        assert os.get_blocking(a.fileno()) and os.get_blocking(b.fileno())
        assert a.type == socket.SOCK_STREAM and not a.type & getattr(socket, "SOCK_NONBLOCK", 0)
        assert _modes(a) == _modes(x) == [True, False, True, False, True, False]
        # Blocking again: a blocking call still parks (and so is woken by close).
        b.setblocking(True)
        reader = Runner(lambda: b.recv(1), name="reader")
        wait_parked(b._desc.fd, "r")
        assert os.get_blocking(b.fileno())
        a.sendall(b"!")
        assert reader.join() == b"!"
    finally:
        for s in (a, b, x, y):
            s.close()


@pytest.mark.timeout(10)
def test_setblocking_on_a_closed_socket_fails_as_the_stdlib(rt: Runtime) -> None:
    a, b = ts.socketpair()
    x, y = socket.socketpair()
    for s in (a, b, x, y):
        s.close()
    for s in (a, x):
        with pytest.raises(OSError) as info:
            s.setblocking(False)
        assert info.value.errno == 9  # EBADF
        with pytest.raises(OSError):
            s.settimeout(1.0)


@pytest.mark.timeout(10)
def test_accept_and_connect_leave_the_descriptors_blocking(rt: Runtime) -> None:
    ln = ts.socket()
    ln.bind(("127.0.0.1", 0))
    ln.listen()
    c = ts.socket()
    try:
        acceptor = Runner(ln.accept, name="acceptor")
        wait_parked(ln._desc.fd, "r")
        assert os.get_blocking(ln.fileno())  # parked without O_NONBLOCK
        c.connect(ln.getsockname())
        conn, _ = acceptor.join()
        try:
            assert os.get_blocking(ln.fileno())
            assert os.get_blocking(c.fileno())
            assert os.get_blocking(conn.fileno())
            c.sendall(b"ping")
            assert conn.recv(4) == b"ping"
        finally:
            conn.close()
    finally:
        c.close()
        ln.close()


# A settimeout from another thread while accept, connect or sendfile is in its syscall (which
# needs O_NONBLOCK: none has MSG_DONTWAIT). A trace holds the calling thread on the syscall's
# line until the settimeout has returned.


def _recv_raises_at_once(sock: ts.socket, peer: socket.socket) -> None:
    """sock (timeout 0) and its descriptor are non-blocking: recv on the empty socket raises
    BlockingIOError at once, as the stdlib's. A recv still blocked in the kernel after 5 s is
    freed with a byte from peer, and the test fails."""
    assert sock.gettimeout() == 0.0
    reader = Runner(lambda: sock.recv(1), name="reader")
    try:
        exc = reader.join_exc(5.0)
    except AssertionError:
        peer.sendall(b"!")
        reader.join_exc()
        raise
    assert isinstance(exc, BlockingIOError)
    assert not os.get_blocking(sock.fileno())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("before, after", [(None, 0.0), (5.0, None)], ids=["to-0", "to-None"])
def test_settimeout_during_accepts_syscall_is_kept(
    rt: Runtime, before: float | None, after: float | None
) -> None:
    """The descriptor ends in the mode the new timeout gives it, and the accept parks in the
    runtime. Unfixed, the accept put back the mode it found (settimeout(0) undone); and a
    settimeout(None) made its accept(2) block in the kernel, where close cannot wake it."""
    ln = ts.socket()
    ln.bind(("127.0.0.1", 0))
    ln.listen()
    ln.settimeout(before)
    hold = HoldAt(ts._accept_nonblocking, "_CSocket._accept(")
    acceptor = Runner(lambda: hold.run(ln.accept), name="acceptor")
    try:
        assert hold.reached.wait(10)
        ln.settimeout(after)
        hold.release()
        wait_parked(ln._desc.fd, "r")  # no connection: parked, not in accept(2)
        assert ln.gettimeout() == after
        assert os.get_blocking(ln.fileno()) == (after is None)  # as the stdlib sets it
    finally:
        hold.release()
        if not acceptor.done.is_set():
            with socket.create_connection(ln.getsockname(), timeout=5):
                conn, _ = acceptor.join()
                conn.close()
        ln.close()


@pytest.mark.timeout(30)
def test_settimeout_during_connects_syscall_is_kept(rt: Runtime) -> None:
    """settimeout(0.0) while a blocking connect is in connect(2): once connected, the socket
    is non-blocking. Unfixed, the connect put back the blocking mode, and a recv with
    timeout 0 blocked in the kernel."""
    with ts.create_server(("127.0.0.1", 0)) as ln:
        c = ts.socket()
        hold = HoldAt(ts.socket._connect_attempt, "_CSocket.connect(self, address)")
        addr = ln.getsockname()
        connector = Runner(lambda: hold.run(lambda: c.connect(addr)), name="connector")
        try:
            assert hold.reached.wait(10)
            c.settimeout(0.0)
            hold.release()
            connector.join()
            conn, _ = ln.accept()
            with conn:
                _recv_raises_at_once(c, conn)
        finally:
            hold.release()
            c.close()


@pytest.mark.skipif(not hasattr(os, "sendfile"), reason="no os.sendfile")
@pytest.mark.timeout(30)
def test_settimeout_during_sendfiles_syscall_is_kept(rt: Runtime) -> None:
    """settimeout(0.0) while a blocking sendfile is in sendfile(2): afterwards the socket
    is non-blocking. Unfixed, sendfile put back the blocking mode, as connect did."""
    a, b = ts.socketpair()
    with tempfile.TemporaryFile() as f:
        f.write(b"hello")
        f.seek(0)
        hold = HoldAt(ts.socket._sendfile_use_sendfile, "os_sendfile(sysfd")
        sender = Runner(lambda: hold.run(lambda: a.sendfile(f)), name="sender")
        try:
            assert hold.reached.wait(10)
            a.settimeout(0.0)
            hold.release()
            assert sender.join() == 5
            assert b.recv(5) == b"hello"
            _recv_raises_at_once(a, b)
        finally:
            hold.release()
            a.close()
            b.close()


@needs_cat
@pytest.mark.timeout(20)
def test_inetd_style_child_echoes_through_the_socket(rt: Runtime) -> None:
    """A child inherits the accepted socket as stdin and stdout, as with inetd: it sees a
    blocking descriptor (with O_NONBLOCK, cat's read fails with EAGAIN)."""
    with ts.create_server(("127.0.0.1", 0)) as ln:
        with ts.create_connection(ln.getsockname()) as c:
            conn, _ = ln.accept()
            with conn:
                proc = subprocess.Popen(["cat"], stdin=conn, stdout=conn, stderr=subprocess.PIPE)
            # Let cat read an empty socket first: asleep in read(2), or gone with EAGAIN.
            wait_until(lambda: _asleep_or_gone(proc), what="cat reading")
            c.sendall(b"hello inetd\n")
            c.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                chunk = c.recv(100)
                if not chunk:
                    break
                got += chunk
            _, err = proc.communicate(timeout=10)
            assert proc.returncode == 0, err
            assert got == b"hello inetd\n"


def _asleep_or_gone(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the child has exited or sleeps in the kernel (Linux /proc; elsewhere True)."""
    if proc.poll() is not None:
        return True
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "S"
    except OSError:
        return True


@pytest.mark.timeout(20)
def test_file_handed_to_a_child_is_blocking(rt: Runtime) -> None:
    """fileno() is Go's Fd(): the child writes more than a pipe holds into a blocking pipe
    (with O_NONBLOCK, its write would fail with EAGAIN)."""
    r, w = threadpoll.pipe()
    try:
        code = "import sys; sys.stdout.buffer.write(b'x' * 1000000)"
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=w, stderr=subprocess.PIPE)
        assert os.get_blocking(w.fileno())
        w.close()
        total = 0
        while True:
            chunk = r.read(1 << 16)
            if not chunk:
                break
            total += len(chunk)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert total == 1000000
    finally:
        r.close()
        w.close()


# --- item 4: a second front on a registered descriptor ---------------------------------------


@pytest.mark.timeout(10)
def test_dropin_on_a_conns_descriptor_shares_it(rt: Runtime) -> None:
    c, s = _tcp_conns()
    try:
        other = ts.socket(fileno=s.fileno())
        try:
            # Both fronts keep working: the Conn parks and is readied, the socket reads.
            reader = Runner(lambda: s.read(5), name="reader")
            wait_parked(s, "r")
            c.write(b"first")
            assert reader.join() == b"first"
            c.write(b"second")
            assert other.recv(6) == b"second"
            other.sendall(b"back")
            assert c.read(4) == b"back"
            # One descriptor: closing the socket closes the Conn and wakes its reader.
            reader = Runner(lambda: s.read(5), name="reader")
            wait_parked(s, "r")
            other.close()
            assert isinstance(reader.join_exc(), NetClosingError)
        finally:
            other.close()
    finally:
        c.close()
        s.close()


@pytest.mark.timeout(10)
def test_stdlib_socket_on_a_dropin_descriptor_leaves_both_working(rt: Runtime) -> None:
    a, b = ts.socketpair()
    try:
        plain = socket.socket(fileno=b.fileno())
        try:
            assert plain.getblocking() and os.get_blocking(plain.fileno())
            a.sendall(b"one")
            assert plain.recv(3) == b"one"  # blocking, as the stdlib expects
            reader = Runner(lambda: b.recv(3), name="reader")
            wait_parked(b._desc.fd, "r")
            a.sendall(b"two")
            assert reader.join() == b"two"
        finally:
            plain.detach()
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("how", ["fromfd", "wrap"])
def test_fromfd_and_wrap_of_a_registered_descriptor(rt: Runtime, how: str) -> None:
    a, b = ts.socketpair()
    try:
        if how == "fromfd":
            other = ts.fromfd(b.fileno(), b.family, b.type)  # a dup: its own registration
        else:
            other = ts.wrap(socket.socket(fileno=b.fileno()))  # the same fd: shares b's FD
        with other:
            reader = Runner(lambda: b.recv(3), name="reader")
            wait_parked(b._desc.fd, "r")
            a.sendall(b"one")
            assert reader.join() == b"one"
            reader = Runner(lambda: other.recv(3), name="reader")
            wait_parked(other._desc.fd, "r")
            a.sendall(b"two")
            assert reader.join() == b"two"
        if how == "wrap":
            # Closing other closed b's descriptor too (that is the point of sharing): b's own
            # close then reports EBADF, as the stdlib's does for a descriptor another socket
            # object closed.
            with pytest.raises(OSError) as info:
                b.close()
            assert info.value.errno == errno.EBADF
            return
        # A duplicate is independent: closing it leaves b working.
        a.sendall(b"three")
        assert b.recv(5) == b"three"
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(10)
def test_file_on_a_registered_descriptor_is_refused(rt: Runtime) -> None:
    c, s = _tcp_conns()
    try:
        with pytest.raises(OSError, match="already owned by a threadpoll") as info:
            threadpoll.File(s.fileno())
        assert info.value.errno == 16  # EBUSY
        # The Conn is untouched.
        reader = Runner(lambda: s.read(2), name="reader")
        wait_parked(s, "r")
        c.write(b"ok")
        assert reader.join() == b"ok"
    finally:
        c.close()
        s.close()
