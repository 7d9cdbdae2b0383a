"""Scenario: TLS 1.3 over TCP loopback. Bulk transfer (one thread writes 64 KiB at a time, the
other reads) and a 1-byte ping-pong: the stdlib's ssl on stdlib sockets, the same ssl on
threadpoll sockets (the drop-in), and threadpoll.tls over Conns. A throwaway self-signed
certificate is made with the openssl command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from typing import Any, Callable

from threadpoll.bench.common import (
    Outcome,
    RunCtx,
    _available,
    _close,
    _import,
    _stdlib_pair,
    _Thread,
    _tps_pair,
)
from threadpoll.bench.pingpong import _pp_threads


def _tls_contexts() -> tuple[Any, Any]:
    ssl = _import("ssl")
    with tempfile.TemporaryDirectory(prefix="tpbench") as tmp:
        pem = os.path.join(tmp, "cert.pem")
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
                "-keyout",
                pem,
                "-out",
                pem,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(pem)
        cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        cctx.load_verify_locations(pem)
    return sctx, cctx


def _probe_openssl() -> str | None:
    reason = _available()
    if reason is not None:
        return reason
    try:
        _import("ssl")
    except ImportError:
        return "no ssl module"
    if shutil.which("openssl") is None:
        return "no openssl command to make a certificate"
    return None


def _tls_socket_pair(sock_pair: Callable[[], tuple[Any, Any]]) -> tuple[Any, Any]:
    """A (client, server) pair of ssl sockets over sock_pair(), handshake done."""
    sctx, cctx = _tls_contexts()
    a, b = sock_pair()
    box: list[Any] = []
    t = _Thread(lambda: box.append(sctx.wrap_socket(b, server_side=True)), "bench-tls-accept")
    try:
        c = cctx.wrap_socket(a, server_hostname="localhost")
    except BaseException:
        _close(a, b)
        raise
    t.join(10.0)
    if t.exc is not None or not box:
        _close(c, b)
        raise t.exc or RuntimeError("TLS server handshake did not finish")
    return c, box[0]


def _tls_conn_pair() -> tuple[Any, Any]:
    tls = _import("threadpoll.tls")
    sctx, cctx = _tls_contexts()
    ln = tls.listen("tcp", "127.0.0.1:0", sctx)
    try:
        box: list[Any] = []

        def accept() -> None:
            s = ln.accept()
            box.append(s)
            s.handshake()

        t = _Thread(accept, "bench-tls-accept")
        c = tls.dial("tcp", ln.addr, cctx, server_hostname="localhost", timeout=10.0)
        t.join(10.0)
        if t.exc is not None:
            _close(c, *box)
            raise t.exc
        return c, box[0]
    finally:
        _close(ln)


def _tls_stdlib_pair() -> tuple[Any, Any]:
    return _tls_socket_pair(lambda: _stdlib_pair("tcp"))


def _tls_tps_pair() -> tuple[Any, Any]:
    return _tls_socket_pair(lambda: _tps_pair("tcp"))


def _tls_bulk(pair: tuple[Any, Any], write: str, read: str, ctx: RunCtx) -> Outcome:
    """MB/s from a writer thread to this thread over one TLS connection; closes both."""
    a, b = pair
    chunk = b"b" * 65536
    total = ctx.max_ops * 65536
    send = getattr(a, write)
    recv = getattr(b, read)

    def writer() -> None:
        for _ in range(ctx.max_ops):
            send(chunk)

    try:
        t0 = time.perf_counter()
        w = _Thread(writer, "bench-tls-writer")
        got = 0
        while got < total:
            data = recv(65536)
            if not data:
                raise ConnectionError("EOF during the bulk transfer")
            got += len(data)
        elapsed = time.perf_counter() - t0
        w.join(10.0)
        if w.exc is not None:
            raise w.exc
    finally:
        _close(a, b)
    return Outcome(value=total / elapsed / 1e6)


def _tls_bulk_stdlib(ctx: RunCtx) -> Outcome:
    return _tls_bulk(_tls_stdlib_pair(), "sendall", "recv", ctx)


def _tls_bulk_tps(ctx: RunCtx) -> Outcome:
    return _tls_bulk(_tls_tps_pair(), "sendall", "recv", ctx)


def _tls_bulk_conn(ctx: RunCtx) -> Outcome:
    return _tls_bulk(_tls_conn_pair(), "write", "read", ctx)


def _tls_pp_stdlib(ctx: RunCtx) -> Outcome:
    a, b = _tls_stdlib_pair()
    return _pp_threads(a, b, a.recv, b.recv, a.sendall, b.sendall, ctx)


def _tls_pp_tps(ctx: RunCtx) -> Outcome:
    a, b = _tls_tps_pair()
    return _pp_threads(a, b, a.recv, b.recv, a.sendall, b.sendall, ctx)


def _tls_pp_conn(ctx: RunCtx) -> Outcome:
    a, b = _tls_conn_pair()
    return _pp_threads(a, b, a.read, b.read, a.write, b.write, ctx)
