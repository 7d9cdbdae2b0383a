"""``python -m threadpoll bench``: threadpoll against the stdlib and the usual alternatives.

    python -m threadpoll bench [--quick] [--json PATH] [--only SCENARIO ...] [--rounds N]

What it measures (one table per *case*; a scenario has one or more cases):

* ``fastpath``   ``recv(64)`` with data already buffered (AF_UNIX socketpair; TCP loopback).
* ``pingpong``   a round trip between two threads (tasks for asyncio/trio/gevent),
  AF_UNIX and TCP, 1 B and 4 KiB.
* ``echo``       an echo server, thread per connection, 64-byte request/response, driven by
  K = 10, 100, 1000 stdlib blocking client threads in this process; requests per second.
* ``closewake``  ``close()`` from one thread -> a thread blocked in ``recv`` returns; p50/p99.
* ``deadline``   how late a 5 ms read deadline (or timeout) fires; p50/p99.
* ``memory``     Python heap per open descriptor (tracemalloc), stdlib vs wrapped.

How it measures:

* A case holds *variants*: functions that set up, run one measured block and return an
  :class:`Outcome` (a number, or latency samples). Rounds are interleaved: round ``r`` runs
  every variant once, the order rotated by ``r``, so slow drifts of the machine hit every
  variant alike. Scalars are the median over rounds; latency samples are pooled over rounds.
* Ratios are to the case's stdlib baseline (stdlib blocking sockets, unless the case says
  otherwise). Run-to-run noise on a small VM is +-15-25 %: read ratios, not absolute times.
* Every variant runs in its own daemon thread under a hard time limit, so a variant that hangs
  (threadpoll is young) is reported and disabled instead of hanging the run; every case has a
  time budget and the whole run a global one. Servers bind to 127.0.0.1 or AF_UNIX only.
* threadpoll variants import threadpoll lazily and show ``unavailable: ...`` when it cannot be
  imported. gevent runs in a child process (its hub must not share this one); it is shown as
  unavailable when it is not installed.

Exit status: 0, or 1 when a variant crashed or hung. Speed is never a failure.

Where things are: one module per scenario family (``fastpath``, ``pingpong``, ``echo``,
``closewake``, ``deadline``, ``memory``, ``tls``), each holding its variants; ``common`` the
data model, helpers and connected pairs they share; ``registry`` the scenarios' cases and
budgets; ``run`` the interleaved rounds, the output and ``main``.
"""

from __future__ import annotations

from threadpoll.bench.common import (
    SCENARIOS,
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
    RunCtx,
)
from threadpoll.bench.run import main

__all__ = [
    "main",
    "RunCtx",
    "SCENARIOS",
    "V_ASYNCIO",
    "V_ASYNCIO_PROTO",
    "V_CONN",
    "V_CONN_C",
    "V_FLOOR",
    "V_FLOOR_LOCK",
    "V_GEVENT",
    "V_SELECT",
    "V_SSL",
    "V_SSL_TPS",
    "V_SSL_TPS_C",
    "V_STDLIB",
    "V_TIMEOUT",
    "V_TLS",
    "V_TLS_C",
    "V_TPS",
    "V_TPS_BOTH",
    "V_TPS_BOTH_C",
    "V_TPS_C",
    "V_TRIO",
]
