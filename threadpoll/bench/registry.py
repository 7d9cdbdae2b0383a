"""The registry: scenarios -> cases -> variants."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

from threadpoll.bench.closewake import (
    _cw_conn,
    _cw_stdlib,
    _cw_stdlib_close_only,
    _cw_tps,
    _cw_trio,
    _gevent_closewake,
)
from threadpoll.bench.common import (
    DEADLINE_S,
    V_ASYNCIO,
    V_ASYNCIO_PROTO,
    V_CONN,
    V_CONN_C,
    V_FLOOR,
    V_FLOOR_LOCK,
    V_GEVENT,
    V_SELECT,
    V_SSL,
    V_SSL_TPS,
    V_SSL_TPS_C,
    V_STDLIB,
    V_TIMEOUT,
    V_TLS,
    V_TLS_C,
    V_TPS,
    V_TPS_BOTH,
    V_TPS_BOTH_C,
    V_TPS_C,
    V_TRIO,
    Case,
    Kind,
    Variant,
    _available,
    _both_ends,
    _fds_needed,
    _in_child,
    _on_impl,
    _probe_c,
    _probe_conn,
    _probe_gevent,
    _probe_tps,
    _probe_trio,
    _probes,
)
from threadpoll.bench.deadline import (
    _dl_asyncio,
    _dl_conn,
    _dl_select,
    _dl_stdlib,
    _dl_tps_deadline,
    _dl_tps_timeout,
    _dl_trio,
    _gevent_deadline,
)
from threadpoll.bench.echo import (
    _echo_asyncio,
    _echo_conn,
    _echo_select,
    _echo_stdlib,
    _echo_timeout,
    _echo_tps,
    _echo_trio,
    _gevent_echo,
)
from threadpoll.bench.fastpath import (
    _fp_asyncio,
    _fp_conn,
    _fp_floor,
    _fp_floor_lock,
    _fp_select,
    _fp_stdlib,
    _fp_timeout,
    _fp_tps,
    _fp_trio,
    _gevent_fastpath,
)
from threadpoll.bench.memory import _mem_conn, _mem_stdlib, _mem_tps
from threadpoll.bench.pingpong import (
    _gevent_pingpong,
    _pp_asyncio,
    _pp_conn,
    _pp_select,
    _pp_stdlib,
    _pp_timeout,
    _pp_tps,
    _pp_trio,
)
from threadpoll.bench.tls import (
    _probe_openssl,
    _tls_bulk_conn,
    _tls_bulk_stdlib,
    _tls_bulk_tps,
    _tls_pp_conn,
    _tls_pp_stdlib,
    _tls_pp_tps,
)


@dataclass(frozen=True)
class _Budget:
    rounds: int
    budget_s: float  # no new round starts after this much time in the case
    window_s: float
    max_ops: int
    hard_s: float  # one run of one variant is abandoned after this


_QUICK = {
    "fastpath": _Budget(2, 8.0, 0.04, 50_000, 5.0),
    "pingpong": _Budget(2, 8.0, 0.06, 5_000, 5.0),
    "echo": _Budget(1, 15.0, 0.15, 0, 15.0),
    "closewake": _Budget(2, 6.0, 0.0, 15, 5.0),
    "deadline": _Budget(2, 5.0, 0.0, 10, 5.0),
    "memory": _Budget(1, 5.0, 0.0, 100, 8.0),
    "tls": _Budget(2, 8.0, 0.06, 256, 8.0),
    "tls-bulk": _Budget(2, 8.0, 0.06, 256, 8.0),
}
_FULL = {
    "fastpath": _Budget(5, 60.0, 0.25, 2_000_000, 30.0),
    "pingpong": _Budget(5, 60.0, 0.35, 200_000, 30.0),
    "echo": _Budget(3, 120.0, 1.0, 0, 60.0),
    "closewake": _Budget(3, 40.0, 0.0, 100, 30.0),
    "deadline": _Budget(3, 40.0, 0.0, 60, 30.0),
    "memory": _Budget(3, 60.0, 0.0, 1000, 60.0),
    "tls": _Budget(3, 60.0, 0.35, 2048, 30.0),
    # A bulk round moves 94 MiB in about a tenth of a second, where one stall of the machine
    # moves the figure by a quarter: many short rounds, and their median.
    "tls-bulk": _Budget(15, 60.0, 0.0, 1500, 30.0),
}
# The whole run: --quick must end within a minute on 2 cores even when every threadpoll
# variant hangs (each hang costs its hard limit, then the variant is disabled by name).
_GLOBAL_BUDGET_S = {True: 50.0, False: 900.0}


def _cases(quick: bool, rounds: int | None, only: Sequence[str]) -> list[Case]:
    budgets = _QUICK if quick else _FULL
    one_thread = "two tasks in one thread"
    gevent_note = "own process; greenlets in one thread"

    def case(
        scenario: str,
        id: str,
        title: str,
        kind: Kind,
        unit: str,
        measure: str,
        baseline: str,
        variants: list[Variant],
        params: dict[str, Any],
        requires: Callable[[], str | None] = _available,
        budget: str = "",
    ) -> Case:
        b = budgets[budget or scenario]
        return Case(
            scenario,
            id,
            title,
            kind,
            unit,
            measure,
            baseline,
            variants,
            params,
            rounds or b.rounds,
            b.budget_s,
            b.window_s,
            b.max_ops,
            b.hard_s,
            requires,
        )

    out: list[Case] = []
    if "fastpath" in only:
        for transport, desc in (("unix", "AF_UNIX socketpair"), ("tcp", "TCP loopback")):
            out.append(
                case(
                    "fastpath",
                    f"fastpath/{transport}",
                    f"recv(64) with data buffered, {desc}",
                    "time",
                    "us",
                    "us per recv",
                    V_STDLIB,
                    [
                        Variant(V_STDLIB, _fp_stdlib),
                        Variant(V_TIMEOUT, _fp_timeout),
                        Variant(V_SELECT, _fp_select),
                        Variant(V_ASYNCIO, _fp_asyncio),
                        Variant(V_TRIO, _fp_trio, _probe_trio),
                        Variant(
                            V_GEVENT, _in_child(_gevent_fastpath), _probe_gevent, "own process"
                        ),
                        Variant(V_TPS, _on_impl("python", _fp_tps), _probe_tps),
                        Variant(V_CONN, _on_impl("python", _fp_conn), _probe_conn, "Conn.read"),
                        Variant(V_TPS_C, _on_impl("c", _fp_tps), _probes(_probe_tps, _probe_c)),
                        Variant(
                            V_CONN_C,
                            _on_impl("c", _fp_conn),
                            _probes(_probe_conn, _probe_c),
                            "Conn.read",
                        ),
                        Variant(V_FLOOR, _fp_floor, note="reference: os.read in one function"),
                        Variant(
                            V_FLOOR_LOCK,
                            _fp_floor_lock,
                            note="reference: the same inside one `with lock`",
                        ),
                    ],
                    {"transport": transport},
                )
            )
    if "pingpong" in only:
        for transport in ("unix", "tcp"):
            for size, size_name in ((1, "1B"), (4096, "4KiB")):
                desc = "AF_UNIX socketpair" if transport == "unix" else "TCP loopback"
                out.append(
                    case(
                        "pingpong",
                        f"pingpong/{transport}-{size_name}",
                        f"{size_name} round trip between two threads, {desc}",
                        "time",
                        "us",
                        "us per round trip",
                        V_STDLIB,
                        [
                            Variant(V_STDLIB, _pp_stdlib),
                            Variant(V_TIMEOUT, _pp_timeout),
                            Variant(V_SELECT, _pp_select, note="a selector per thread"),
                            Variant(V_ASYNCIO, _pp_asyncio, note=one_thread),
                            Variant(V_TRIO, _pp_trio, _probe_trio, one_thread),
                            Variant(
                                V_GEVENT, _in_child(_gevent_pingpong), _probe_gevent, gevent_note
                            ),
                            Variant(V_TPS, _on_impl("python", _pp_tps), _probe_tps, "both ends"),
                            Variant(V_CONN, _on_impl("python", _pp_conn), _probe_conn),
                            Variant(
                                V_TPS_C,
                                _on_impl("c", _pp_tps),
                                _probes(_probe_tps, _probe_c),
                                "both ends",
                            ),
                            Variant(
                                V_CONN_C, _on_impl("c", _pp_conn), _probes(_probe_conn, _probe_c)
                            ),
                        ],
                        {"transport": transport, "size": size},
                    )
                )
    if "echo" in only:
        warmup = 0.05 if quick else 0.25
        for k in (10, 100, 1000):
            out.append(
                case(
                    "echo",
                    f"echo/K={k}",
                    f"echo server, {k} connections, 64 B request/response, "
                    "stdlib client threads in-process",
                    "rate",
                    "req/s",
                    "requests per second",
                    V_STDLIB,
                    [
                        Variant(V_STDLIB, _echo_stdlib, note="thread per connection"),
                        Variant(V_TIMEOUT, _echo_timeout, note="server side"),
                        Variant(V_SELECT, _echo_select, note="a selector per handler thread"),
                        Variant(V_ASYNCIO_PROTO, _echo_asyncio, note="one loop thread"),
                        Variant(V_TRIO, _echo_trio, _probe_trio, "task per connection"),
                        Variant(
                            V_GEVENT,
                            _in_child(_gevent_echo),
                            _probe_gevent,
                            "own process, clients there too",
                        ),
                        Variant(V_TPS, _on_impl("python", _echo_tps), _probe_tps),
                        Variant(V_CONN, _on_impl("python", _echo_conn), _probe_conn),
                        Variant(V_TPS_C, _on_impl("c", _echo_tps), _probes(_probe_tps, _probe_c)),
                        Variant(
                            V_CONN_C, _on_impl("c", _echo_conn), _probes(_probe_conn, _probe_c)
                        ),
                        Variant(
                            V_TPS_BOTH,
                            _on_impl("python", _both_ends(_echo_tps)),
                            _probe_tps,
                            "client and server",
                        ),
                        Variant(
                            V_TPS_BOTH_C,
                            _on_impl("c", _both_ends(_echo_tps)),
                            _probes(_probe_tps, _probe_c),
                            "client and server",
                        ),
                    ],
                    {"k": k, "warmup_s": warmup},
                    requires=functools.partial(_fds_needed, 2 * k + 64),
                )
            )
    if "closewake" in only:
        out.append(
            case(
                "closewake",
                "closewake",
                "close() from another thread -> blocked recv returns",
                "latency",
                "us",
                "us from close() to the reader's return",
                "stdlib shutdown+close",
                [
                    Variant(
                        "stdlib shutdown+close",
                        _cw_stdlib,
                        note="stdlib best effort: close() alone does not wake recv on Linux",
                    ),
                    Variant(
                        "stdlib close() alone", _cw_stdlib_close_only, note="shows the stdlib gap"
                    ),
                    Variant(V_TRIO, _cw_trio, _probe_trio, "task in the same thread"),
                    Variant(
                        V_GEVENT,
                        _in_child(_gevent_closewake),
                        _probe_gevent,
                        "own process; greenlet in the same thread",
                    ),
                    Variant(V_TPS, _on_impl("python", _cw_tps), _probe_tps, "socketpair, close()"),
                    Variant(V_CONN, _on_impl("python", _cw_conn), _probe_conn, "AF_UNIX, close()"),
                    Variant(
                        V_TPS_C,
                        _on_impl("c", _cw_tps),
                        _probes(_probe_tps, _probe_c),
                        "socketpair, close()",
                    ),
                    Variant(
                        V_CONN_C,
                        _on_impl("c", _cw_conn),
                        _probes(_probe_conn, _probe_c),
                        "AF_UNIX, close()",
                    ),
                ],
                {},
            )
        )
    if "deadline" in only:
        out.append(
            case(
                "deadline",
                "deadline",
                f"read limit {DEADLINE_S * 1e3:g} ms away, nothing to read",
                "latency",
                "us",
                "us the read returned after its limit",
                "stdlib settimeout",
                [
                    Variant("stdlib settimeout", _dl_stdlib, note="settimeout(0.005)"),
                    Variant("selectors select(timeout)", _dl_select),
                    Variant("asyncio", _dl_asyncio, note="wait_for(sock_recv)"),
                    Variant(V_TRIO, _dl_trio, _probe_trio, "move_on_at"),
                    Variant(
                        V_GEVENT,
                        _in_child(_gevent_deadline),
                        _probe_gevent,
                        "own process; settimeout",
                    ),
                    Variant("threadpoll drop-in set_read_deadline", _dl_tps_deadline, _probe_tps),
                    Variant("threadpoll drop-in settimeout", _dl_tps_timeout, _probe_tps),
                    Variant(
                        "threadpoll Conn set_read_deadline",
                        _on_impl("python", _dl_conn),
                        _probe_conn,
                    ),
                    Variant(
                        "threadpoll Conn set_read_deadline, C core",
                        _on_impl("c", _dl_conn),
                        _probes(_probe_conn, _probe_c),
                    ),
                ],
                {},
            )
        )
    if "memory" in only:
        out.append(
            case(
                "memory",
                "memory",
                "Python heap per open descriptor (tracemalloc), N pairs open",
                "bytes",
                "B",
                "bytes per descriptor",
                "stdlib socketpair",
                [
                    Variant("stdlib socketpair", _mem_stdlib),
                    Variant("threadpoll drop-in socketpair", _mem_tps, _probe_tps),
                    Variant(V_CONN, _on_impl("python", _mem_conn), _probe_conn),
                    Variant(V_CONN_C, _on_impl("c", _mem_conn), _probes(_probe_conn, _probe_c)),
                ],
                {},
            )
        )
    if "tls" in only:
        out.append(
            case(
                "tls",
                "tls/bulk",
                "TLS 1.3 bulk transfer, 64 KiB writes, one writer thread, TCP loopback",
                "rate",
                "MB/s",
                "megabytes per second",
                V_SSL,
                [
                    Variant(V_SSL, _tls_bulk_stdlib, _probe_openssl, "stdlib sockets"),
                    Variant(
                        V_SSL_TPS,
                        _on_impl("python", _tls_bulk_tps),
                        _probe_openssl,
                        "SSLContext.wrap_socket on threadpoll sockets",
                    ),
                    Variant(
                        V_TLS,
                        _on_impl("python", _tls_bulk_conn),
                        _probe_openssl,
                        "TLSConn over Conn",
                    ),
                    Variant(
                        V_SSL_TPS_C, _on_impl("c", _tls_bulk_tps), _probes(_probe_openssl, _probe_c)
                    ),
                    Variant(
                        V_TLS_C, _on_impl("c", _tls_bulk_conn), _probes(_probe_openssl, _probe_c)
                    ),
                ],
                {},
                requires=_probe_openssl,
                budget="tls-bulk",
            )
        )
        out.append(
            case(
                "tls",
                "tls/pingpong-1B",
                "TLS 1.3 1B round trip between two threads, TCP loopback",
                "time",
                "us",
                "us per round trip",
                V_SSL,
                [
                    Variant(V_SSL, _tls_pp_stdlib, _probe_openssl, "stdlib sockets"),
                    Variant(V_SSL_TPS, _on_impl("python", _tls_pp_tps), _probe_openssl),
                    Variant(V_TLS, _on_impl("python", _tls_pp_conn), _probe_openssl),
                    Variant(
                        V_SSL_TPS_C, _on_impl("c", _tls_pp_tps), _probes(_probe_openssl, _probe_c)
                    ),
                    Variant(
                        V_TLS_C, _on_impl("c", _tls_pp_conn), _probes(_probe_openssl, _probe_c)
                    ),
                ],
                {"size": 1},
                requires=_probe_openssl,
            )
        )
    return out
