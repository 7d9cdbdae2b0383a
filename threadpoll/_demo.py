"""``python -m threadpoll demo``: the five promises, each shown working, with its trace.

Each promise is one scenario from ``threadpoll._timeline`` (real threads, a real TCP
connection over 127.0.0.1, the runtime's trace recording), told as a few lines of story, the
recorded timeline beneath it, and a verdict computed from what the threads and the trace
observed. The exit status is 0 only if every promise held.

Go: none (a teaching tool)
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from dataclasses import dataclass
from typing import Callable, TextIO

from threadpoll._runtime.proc import Runtime, get_runtime
from threadpoll._timeline import _READERS as _N
from threadpoll._timeline import POLLER, Result, fds_line, render, run
from threadpoll.errors import DeadlineExceededError, NetClosingError

__all__ = ["PROMISES", "main"]

Check = Callable[[Result], "tuple[bool, str]"]


@dataclass(frozen=True)
class Promise:
    number: int
    name: str
    scenario: str
    story: str
    check: Check


def _note_time(r: Result, column: str, prefix: str) -> float | None:
    for ev in r.events:
        if ev.kind == "note" and r.label(ev) == column and ev.info.startswith(prefix):
            return ev.t
    return None


def _ms(seconds: float) -> str:
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} us"
    return f"{seconds * 1000:.1f} ms"


def _plural(n: object, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _check_close(r: Result) -> tuple[bool, str]:
    err = r.outcome.get("error")
    if not isinstance(err, NetClosingError):
        return False, f"the reader did not get the closing error (outcome {r.outcome})"
    fd = r.fds["reader"]
    if ("closer", "parked", "pdNil") not in r.states(fd, "r"):
        return False, "close() did not unpark the reader (no r: parked -> pdNil by the closer)"
    began = _note_time(r, "closer", "close()")
    woke = _note_time(r, "reader", "raised")
    delay = f" {_ms(woke - began)} after close() began," if began and woke else ""
    return True, f"the parked reader woke{delay} with {type(err).__name__}: {err}"


def _check_close_reuse(r: Result) -> tuple[bool, str]:
    o = r.outcome
    number = r.fds["reader"]
    destroyed = [ev.t for ev in r.events if ev.kind == "destroy" and ev.fd == number]
    returned = _note_time(r, "closer", "close() returned")
    if not destroyed or returned is None or destroyed[0] > returned:
        return False, "close() returned before the descriptor was destroyed"
    if not isinstance(o.get("fstat_after_close"), OSError):
        return False, f"fd {number} was still open when close() returned"
    if r.fds.get("new-owner") != number:
        return False, f"the new connection did not get fd {number}"
    if not isinstance(o.get("old_read"), NetClosingError):
        return False, f"the old handle did not fail with the closing error: {o.get('old_read')}"
    if o.get("new_read") != b"fresh":
        return False, f"the new owner of fd {number} read {o.get('new_read')!r}"
    who = next(r.label(ev) for ev in r.events if ev.kind == "destroy" and ev.fd == number)
    return True, (
        f"close(2) ran (in {who}) before close() returned; the old handle failed with "
        f"the closing error, and fd {number}'s new owner read all its bytes"
    )


def _check_deadline_past(r: Result) -> tuple[bool, str]:
    o = r.outcome
    if not isinstance(o.get("parked_error"), DeadlineExceededError):
        return False, "the parked reader was not woken with DeadlineExceededError"
    fd = r.fds["reader"]
    states = r.states(fd, "r")
    if ("setter", "parked", "pdNil") not in states:
        return False, "moving the deadline did not unpark the reader"
    if ("poller", "pdNil", "pdReady") not in states:
        return False, "the data did not arrive while the deadline was in the past"
    if not isinstance(o.get("buffered_error"), DeadlineExceededError):
        return False, "a read with data buffered did not fail with the past deadline"
    if o.get("read") != b"late":
        return False, f"after clearing the deadline, read returned {o.get('read')!r}"
    after = o.get("buffered_failed_after")
    took = f" (in {_ms(after)})" if isinstance(after, float) else ""
    return True, (
        f"the parked reader woke with 'i/o timeout'; with data buffered a read still failed "
        f"at once{took}; cleared, it read {o['read']!r}"
    )


def _check_two_writers(r: Result) -> tuple[bool, str]:
    o = r.outcome
    if not o.get("whole"):
        got = o.get("received")
        shown = got[:40] if isinstance(got, bytes) else got
        return False, f"the writes interleaved: {shown!r}..."
    fd = r.fds["writers"]
    owners = [who for who, _, _ in r.states(fd, "w") if who != POLLER]
    parks = sum(1 for who, _, new in r.states(fd, "w") if new == "parked")
    if owners != sorted(owners):
        return False, f"the two writers' waits interleaved: {owners}"
    received = o["received"]
    size = len(received) if isinstance(received, bytes) else "?"
    return True, (
        f"{size} bytes arrived as two whole writes ({o['first']!r} first); "
        f"the writers parked {parks} times between them"
    )


def _check_one_poller(r: Result) -> tuple[bool, str]:
    reads = r.outcome.get("reads")
    if reads != [f"hi {i}".encode() for i in range(1, _N + 1)]:
        return False, f"the readers read {reads!r}"
    readied = [ev for ev in r.events if ev.kind == "state" and ev.new == "pdReady"]
    woken = {ev.fd for ev in readied if ev.old == "parked"}
    if {r.fds[f"reader-{i}"] for i in range(1, _N + 1)} - woken:
        return False, "not every parked reader was readied from parked"
    others = {r.label(ev) for ev in readied if r.label(ev) != POLLER}
    if others:
        return False, f"threads other than the poller readied pollDescs: {sorted(others)}"
    polled = {r.label(ev) for ev in r.events if ev.kind == "netpoll"}
    if polled - {POLLER}:
        return False, f"threads other than the poller called netpoll: {sorted(polled)}"
    return True, (
        f"one thread, {r.poller_name}, readied all {_N} parked readers "
        f"({_plural(r.outcome['poller_wakeups'], 'netpoll return')}, "
        f"{_plural(r.outcome['poller_events'], 'event')})"
    )


PROMISES = [
    Promise(
        1,
        "close wakes everyone",
        "close",
        "A thread is parked in read() on a TCP socket with no data; another thread calls "
        "close(). With the stdlib, on Linux, that reader would sleep on: close(2) does not "
        "wake a thread blocked in recv(2). Here close() evicts the socket's pollDesc "
        "(r: parked -> pdNil) and the reader fails at once with the closing error.",
        _check_close,
    ),
    Promise(
        2,
        "close is safe",
        "close-reuse",
        "close() waits on the close semaphore (csema) until the last operation has left the "
        "descriptor; whoever drops the last reference runs destroy: unregister, then "
        "close(2). Only then does close() return. A new connection then takes the same fd "
        "number: the old handle fails with the closing error, it never reaches the new "
        "socket.",
        _check_close_reuse,
    ),
    Promise(
        3,
        "deadlines, not timeouts",
        "deadline-past",
        "A reader is parked with no deadline; another thread moves its read deadline into "
        "the past, and the reader wakes with 'i/o timeout'. Data arrives next (the poller "
        "marks it r: pdNil -> pdReady), yet a read fails at once: the deadline is still in "
        "the past. Clearing it lets the data through.",
        _check_deadline_past,
    ),
    Promise(
        4,
        "whole writes",
        "two-writers",
        "Two threads write 64 KiB each to one socket whose buffers hold far less. The first "
        "parks mid-write holding the descriptor's write lock; the second waits for that "
        "lock, not for the socket. The reader gets one whole block, then the other.",
        _check_two_writers,
    ),
    Promise(
        5,
        "one poller",
        "one-poller",
        "Three readers park on three sockets and a writer sends each a line. No reader polls: "
        "one poller thread blocks in netpoll and readies each parked reader "
        "(r: parked -> pdReady), as Go's netpoll readies goroutines.",
        _check_one_poller,
    ),
]


def _wrap(text: str, indent: str = "   ") -> str:
    return textwrap.fill(text, width=79, initial_indent=indent, subsequent_indent=indent)


def _poller_stats(rt: Runtime) -> str:
    with rt.lock:
        open_pds = len(rt.open_pds)
    return (
        f"poller stats ({rt.name}): {rt.poller_wakeups} netpoll returns, {rt.events} "
        f"events, {rt.breaks} breaks, {rt.stale_events_dropped} stale events dropped, "
        f"{rt.deadline_expiries} deadline expiries; {open_pds} descriptors registered now"
    )


def main(rt: Runtime | None = None, out: TextIO | None = None) -> int:
    """Run every promise's scenario, print the story, return 0 if all held, else 1."""
    out = out if out is not None else sys.stdout
    color = out.isatty() and "NO_COLOR" not in os.environ
    if rt is None:
        rt = get_runtime()
    started = time.monotonic()
    deaths = getattr(rt, "poller_deaths", 0)

    def verdict(held: bool) -> str:
        word = "held" if held else "FAILED"
        if color:
            return f"\x1b[{'32' if held else '31;1'}m{word}\x1b[0m"
        return word

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    say("threadpoll demo: Go's blocking I/O semantics for OS threads")
    say(_wrap(f"backend {rt.name}; each step is real threads on TCP over 127.0.0.1.", ""))
    say(
        _wrap(
            "Timelines: one column per thread, ms since the step began; r/w is the pollDesc's "
            "read or write state (Go's rg/wg: pdNil, pdReady, pdWait, parked).",
            "",
        )
    )
    results: list[tuple[Promise, bool, str]] = []
    ran: list[Result] = []
    for p in PROMISES:
        say()
        say(f"{p.number}. {p.name.capitalize()}")
        say(_wrap(p.story))
        try:
            r = run(p.scenario, rt)
        except Exception as e:  # noqa: BLE001 - a failed promise is reported, not raised
            held, why = False, f"the scenario failed: {type(e).__name__}: {e}"
        else:
            ran.append(r)
            say()
            say(_wrap(fds_line(r)))
            say(render(r, compact=True, indent="   "))
            try:
                held, why = p.check(r)
            except Exception as e:  # noqa: BLE001
                held, why = False, f"the check failed: {type(e).__name__}: {e}"
        say()
        say(_wrap(f"{verdict(held)}: {why}"))
        results.append((p, held, why))

    # Over the whole run: nothing but the one poller thread ever readied a pollDesc.
    pollers = {r.poller_ident for r in ran}
    foreign = sorted(
        {r.label(ev) for r in ran for ev in r.events if ev.kind == "netpollready"} - {POLLER}
    )
    say()
    say(_wrap(_poller_stats(rt), ""))
    died = getattr(rt, "poller_deaths", 0) - deaths
    if died:
        why = (
            f"the poller thread died {_plural(died, 'time')} and was replaced "
            f"(last: {getattr(rt, 'poller_error', None)!r})"
        )
        results[4] = (PROMISES[4], False, why)
    elif len(pollers) > 1 or foreign:
        why = f"more than one thread acted as the poller ({foreign or sorted(pollers)})"
        results[4] = (PROMISES[4], False, why)
    say()
    say("Summary")
    failed = []
    for p, held, why in results:
        say(f"  {verdict(held):6}  {p.number}. {p.name}")
        if not held:
            failed.append(f"promise {p.number} ({p.name}): {why}")
    took = time.monotonic() - started
    if failed:
        for line in failed:
            say(_wrap(f"FAILED: {line}", ""))
        return 1
    say(f"All five promises held ({took:.2f} s).")
    return 0
