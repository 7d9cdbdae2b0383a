"""Scenario: echo server. K stdlib blocking client threads, each a connection doing 64-byte
request/response in a loop; the variant is the server. Clients are the same for every variant,
so differences are the server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import selectors
import socket
import threading
import time
from typing import Any, Callable, cast

from threadpoll.bench.common import (
    ECHO_SIZE,
    ECHO_STACK,
    Outcome,
    RunCtx,
    Skip,
    _close,
    _hard_close,
    _hard_close_all,
    _import,
    _join_or_unstick,
    _nodelay,
    _stdlib_listener,
    _switches,
    _Thread,
)
from threadpoll.bench.fastpath import _select_recv
from threadpoll.bench.pingpong import _trio_sendall


class _EchoServer:
    """A running server; ``addr`` is where clients connect."""

    addr: tuple[str, int]

    def wait_ready(self, timeout: float) -> None:
        """Return once all K connections are accepted and being served; raise otherwise."""
        raise NotImplementedError

    def stop(self, timeout: float) -> list[str]:
        """Stop (clients have closed their ends by now); return errors seen by the server."""
        raise NotImplementedError


def _serve_blocking(c: Any) -> None:
    while True:
        data = c.recv(65536)
        if not data:
            return
        c.sendall(data)


def _serve_timeout(c: Any) -> None:
    c.settimeout(5.0)
    _serve_blocking(c)


def _serve_select(c: Any) -> None:
    with selectors.DefaultSelector() as sel:
        sel.register(c, selectors.EVENT_READ)
        recv = _select_recv(sel, c, 60.0)
        while True:
            data = recv(65536)
            if not data:
                return
            c.sendall(data)


def _serve_conn(c: Any) -> None:
    while True:
        data = c.read(65536)
        if not data:
            return
        c.write(data)


class _ThreadServer(_EchoServer):
    """Thread per connection: an acceptor thread accepts exactly K and spawns handlers."""

    def __init__(
        self,
        k: int,
        listener: Any,
        addr: tuple[str, int],
        accept: Callable[[Any], Any],
        handle: Callable[[Any], None],
    ) -> None:
        self.addr = addr
        self._k = k
        self._listener = listener
        self._accept = accept
        self._handle = handle
        self._conns: list[Any] = []
        self._handlers: list[_Thread] = []
        self._acceptor = _Thread(self._accept_loop, "bench-echo-acceptor")

    def _accept_loop(self) -> None:
        for _ in range(self._k):
            c = self._accept(self._listener)
            self._conns.append(c)
            self._handlers.append(_Thread(functools.partial(self._serve, c), "bench-echo-handler"))

    def _serve(self, c: Any) -> None:
        try:
            self._handle(c)
        finally:
            _close(c)

    def wait_ready(self, timeout: float) -> None:
        if not self._acceptor.join(timeout):
            raise RuntimeError("the server did not accept every connection in time")
        if self._acceptor.exc is not None:
            raise self._acceptor.exc

    def stop(self, timeout: float) -> list[str]:
        errors: list[str] = []
        try:
            _join_or_unstick(
                self._handlers,
                timeout,
                functools.partial(_hard_close_all, self._conns),
                "echo handlers",
            )
        except RuntimeError as e:
            errors.append(str(e))
        _hard_close(self._listener)  # wakes an acceptor still blocked (stdlib: shutdown)
        self._acceptor.join(1.0)
        errors += [
            f"handler: {type(h.exc).__name__}: {h.exc}"
            for h in self._handlers
            if h.exc is not None and not isinstance(h.exc, OSError)
        ]
        return errors


def _accepted(s: Any) -> Any:
    s.settimeout(None)
    _nodelay(s)
    return s


def _stdlib_thread_server(
    handle: Callable[[Any], None], ctx: RunCtx
) -> Callable[[int], _EchoServer]:
    def start(k: int) -> _EchoServer:
        ls = _stdlib_listener(k)
        ls.settimeout(ctx.hard_s)
        return _ThreadServer(
            k, ls, ls.getsockname()[:2], lambda ls: _accepted(ls.accept()[0]), handle
        )

    return start


def _tps_thread_server(ctx: RunCtx) -> Callable[[int], _EchoServer]:
    def start(k: int) -> _EchoServer:
        tps = _import("threadpoll.socket")
        ls = tps.create_server(("127.0.0.1", 0), backlog=k + 16)
        ls.settimeout(ctx.hard_s)
        return _ThreadServer(
            k, ls, ls.getsockname()[:2], lambda ls: _accepted(ls.accept()[0]), _serve_blocking
        )

    return start


def _conn_thread_server(ctx: RunCtx) -> Callable[[int], _EchoServer]:
    def start(k: int) -> _EchoServer:
        tp = _import("threadpoll")
        ln = tp.listen("tcp", "127.0.0.1:0", backlog=k + 16)
        if hasattr(ln, "set_deadline"):
            ln.set_deadline(time.monotonic() + ctx.hard_s)
        return _ThreadServer(k, ln, ("127.0.0.1", ln.addr[1]), lambda ln: ln.accept(), _serve_conn)

    return start


class _AsyncioServer(_EchoServer):
    """An asyncio Protocol echo server on its own event loop thread."""

    def __init__(self, k: int) -> None:
        self._k = k
        self._lsock = _stdlib_listener(k)
        self.addr = self._lsock.getsockname()[:2]
        self._transports: set[asyncio.Transport] = set()
        self._started = threading.Event()
        self._all_connected = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._thread = _Thread(self._run, "bench-echo-asyncio")
        if not self._started.wait(10.0):
            raise RuntimeError(f"the asyncio server did not start: {self._thread.exc!r}")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(loop))
        finally:
            loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        server = self

        class Echo(asyncio.Protocol):
            transport: asyncio.Transport | None = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = cast(asyncio.Transport, transport)
                server._transports.add(self.transport)
                if len(server._transports) >= server._k:
                    server._all_connected.set()

            def data_received(self, data: bytes) -> None:
                if self.transport is not None:
                    self.transport.write(data)

            def connection_lost(self, exc: Exception | None) -> None:
                server._transports.discard(cast(asyncio.Transport, self.transport))

        srv = await loop.create_server(Echo, sock=self._lsock, backlog=self._k + 16)
        self._stopped = loop.create_future()
        self._loop = loop
        self._started.set()
        try:
            await self._stopped
        finally:
            srv.close()
            for t in list(self._transports):
                t.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(srv.wait_closed(), 2.0)

    def wait_ready(self, timeout: float) -> None:
        if not self._all_connected.wait(timeout):
            raise RuntimeError("the asyncio server did not see every connection in time")

    def stop(self, timeout: float) -> list[str]:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None:

            def set_stopped() -> None:
                if not stopped.done():
                    stopped.set_result(None)

            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(set_stopped)
        if not self._thread.join(timeout):
            return ["the asyncio server thread did not stop"]
        return (
            [f"{type(self._thread.exc).__name__}: {self._thread.exc}"] if self._thread.exc else []
        )


class _TrioServer(_EchoServer):
    """A trio server, task per connection, on its own thread running trio.run."""

    def __init__(self, k: int) -> None:
        self._trio = _import("trio")
        self._k = k
        self._lsock = _stdlib_listener(k)
        self.addr = self._lsock.getsockname()[:2]
        self._connected = 0
        self._started = threading.Event()
        self._all_connected = threading.Event()
        self._token: Any = None
        self._scope: Any = None
        self._thread = _Thread(lambda: self._trio.run(self._main), "bench-echo-trio")
        if not self._started.wait(10.0):
            raise RuntimeError(f"the trio server did not start: {self._thread.exc!r}")

    async def _main(self) -> None:
        trio = self._trio
        ls = trio.socket.from_stdlib_socket(self._lsock)

        async def handle(c: Any) -> None:
            with c:
                while True:
                    data = await c.recv(65536)
                    if not data:
                        return
                    await _trio_sendall(c, data)

        async with trio.open_nursery() as nursery:
            self._token = trio.lowlevel.current_trio_token()
            self._scope = nursery.cancel_scope
            self._started.set()
            with ls:
                for _ in range(self._k):
                    c, _addr = await ls.accept()
                    _nodelay(c)
                    nursery.start_soon(handle, c)
                    self._connected += 1
            self._all_connected.set()

    def wait_ready(self, timeout: float) -> None:
        if not self._all_connected.wait(timeout):
            raise RuntimeError("the trio server did not accept every connection in time")

    def stop(self, timeout: float) -> list[str]:
        # Handlers end on EOF; cancel whatever is left after a grace period.
        if not self._thread.join(min(timeout, 2.0)):
            with contextlib.suppress(Exception):
                self._trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
            if not self._thread.join(timeout):
                return ["the trio server thread did not stop"]
        return (
            [f"{type(self._thread.exc).__name__}: {self._thread.exc}"] if self._thread.exc else []
        )


class _GeventServer(_EchoServer):
    """A gevent server, greenlet per connection, its hub on its own thread (child process)."""

    def __init__(self, k: int, hard_s: float) -> None:
        self._k = k
        self._hard_s = hard_s
        self._started = threading.Event()
        self._all_connected = threading.Event()
        self._thread = _Thread(self._run, "bench-echo-gevent")
        if not self._started.wait(10.0):
            raise RuntimeError(f"the gevent server did not start: {self._thread.exc!r}")

    def _run(self) -> None:
        gevent = _import("gevent")
        gsocket = _import("gevent.socket")
        ls = gsocket.socket(fileno=_stdlib_listener(self._k).detach())
        ls.settimeout(self._hard_s)
        self.addr = ls.getsockname()[:2]
        self._started.set()

        def handle(c: Any) -> None:
            try:
                _serve_blocking(c)
            finally:
                c.close()

        greenlets = []
        with ls:
            for _ in range(self._k):
                c, _addr = ls.accept()
                _accepted(c)
                greenlets.append(gevent.spawn(handle, c))
        self._all_connected.set()
        gevent.joinall(greenlets, timeout=self._hard_s)

    def wait_ready(self, timeout: float) -> None:
        if not self._all_connected.wait(timeout):
            raise RuntimeError("the gevent server did not accept every connection in time")

    def stop(self, timeout: float) -> list[str]:
        if not self._thread.join(timeout):
            return ["the gevent server thread did not stop"]
        return (
            [f"{type(self._thread.exc).__name__}: {self._thread.exc}"] if self._thread.exc else []
        )


def _echo_client(
    s: socket.socket,
    i: int,
    counts: list[int],
    go: threading.Event,
    stop: list[bool],
    errors: list[str],
) -> None:
    msg = b"x" * ECHO_SIZE
    n = 0
    # Wait until every thread exists: spawning the 1000th thread while 999 are busy is
    # starved of the GIL for a long time.
    go.wait()
    try:
        while not stop[0]:
            s.sendall(msg)
            got = 0
            while got < ECHO_SIZE:
                data = s.recv(ECHO_SIZE - got)
                if not data:
                    raise ConnectionError("the server closed the connection")
                got += len(data)
            n += 1
            counts[i] = n
    except OSError as e:
        if not stop[0]:
            errors.append(f"client {i}: {type(e).__name__}: {e}")


_NO_REQUEST_NOTE = "no request completed in the window (machine busy?): no figure"


def _echo_drive(start: Callable[[int], _EchoServer], ctx: RunCtx) -> Outcome:
    """Start the server, connect K clients, count requests over the window, clean up."""
    k: int = ctx.params["k"]
    counts = [0] * k
    go = threading.Event()
    stop = [False]
    errors: list[str] = []
    clients: list[socket.socket] = []
    workers: list[_Thread] = []
    server: _EchoServer | None = None
    old_stack = threading.stack_size(ECHO_STACK)
    try:
        try:
            server = start(k)
            connect = (
                _import("threadpoll.socket").create_connection
                if ctx.params.get("tp_clients")
                else socket.create_connection
            )
            for _ in range(k):
                s = connect(server.addr, timeout=ctx.hard_s)
                _accepted(s)
                clients.append(s)
            for i, s in enumerate(clients):
                try:
                    workers.append(
                        _Thread(
                            functools.partial(_echo_client, s, i, counts, go, stop, errors),
                            "bench-echo-client",
                        )
                    )
                except RuntimeError as e:  # "can't start new thread"
                    raise Skip(f"cannot start {2 * k} threads: {e}") from None
            server.wait_ready(ctx.hard_s)
        finally:
            threading.stack_size(old_stack)
        go.set()
        time.sleep(ctx.params["warmup_s"])
        c0, t0, cpu0, sw0 = sum(counts), time.perf_counter(), time.process_time(), _switches()
        time.sleep(ctx.window_s)
        c1, t1, cpu1, sw1 = sum(counts), time.perf_counter(), time.process_time(), _switches()
    finally:
        stop[0] = True
        go.set()
        try:
            _join_or_unstick(
                workers, 5.0, functools.partial(_hard_close_all, clients), "echo clients"
            )
        finally:
            _close(*clients)  # the server's handlers read EOF
            if server is not None:
                errors += server.stop(5.0)
    if errors:
        raise RuntimeError(f"{len(errors)} error(s), first: {errors[0]}")
    if c1 == c0:
        # A figure we could not take, not a fault: at K = 1000 on a busy 2-core machine the
        # window can pass before any client's request comes back. Speed is never a failure.
        return Outcome(note=_NO_REQUEST_NOTE)
    return Outcome(
        value=(c1 - c0) / (t1 - t0),
        extra={
            "cpu_us_per_req": (cpu1 - cpu0) / (c1 - c0) * 1e6,
            "ctxsw_per_req": (sw1 - sw0) / (c1 - c0),
        },
    )


def _echo_stdlib(ctx: RunCtx) -> Outcome:
    return _echo_drive(_stdlib_thread_server(_serve_blocking, ctx), ctx)


def _echo_timeout(ctx: RunCtx) -> Outcome:
    return _echo_drive(_stdlib_thread_server(_serve_timeout, ctx), ctx)


def _echo_select(ctx: RunCtx) -> Outcome:
    return _echo_drive(_stdlib_thread_server(_serve_select, ctx), ctx)


def _echo_asyncio(ctx: RunCtx) -> Outcome:
    return _echo_drive(_AsyncioServer, ctx)


def _echo_trio(ctx: RunCtx) -> Outcome:
    return _echo_drive(_TrioServer, ctx)


def _gevent_echo(ctx: RunCtx) -> Outcome:  # runs in a child process
    _import("gevent")
    return _echo_drive(lambda k: _GeventServer(k, ctx.hard_s), ctx)


def _echo_tps(ctx: RunCtx) -> Outcome:
    return _echo_drive(_tps_thread_server(ctx), ctx)


def _echo_conn(ctx: RunCtx) -> Outcome:
    return _echo_drive(_conn_thread_server(ctx), ctx)
