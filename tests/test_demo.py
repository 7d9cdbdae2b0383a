"""The command line: ``python -m threadpoll demo`` and ``trace`` (threadpoll/__main__.py,
threadpoll/_demo.py), run as a user runs them, in a subprocess."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time

import pytest

from threadpoll import _demo, _timeline
from threadpoll._runtime.proc import Runtime, backend_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMISES = [
    "close wakes everyone",
    "close is safe",
    "deadlines, not timeouts",
    "whole writes",
    "one poller",
]


def run_cli(
    *args: str, backend: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("THREADPOLL_BACKEND", None)
    if backend is not None:
        env["THREADPOLL_BACKEND"] = backend
    return subprocess.run(
        [sys.executable, "-m", "threadpoll", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", backend_names())
def test_demo_holds_every_promise(backend: str) -> None:
    started = time.monotonic()
    p = run_cli("demo", backend=backend)
    took = time.monotonic() - started
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert f"backend {backend}" in out
    for n, name in enumerate(PROMISES, 1):
        assert re.search(rf"^  held\s+{n}\. {re.escape(name)}$", out, re.M), out
        assert f"{n}. {name.capitalize()}" in out  # the promise's own section
    assert "FAILED" not in out
    assert out.rstrip().endswith("s).") and "All five promises held" in out
    # Each section shows its trace: state changes in a timeline with a poller column.
    assert out.count("pdWait->parked") >= 5
    assert "evict" in out and "destroy: close(" in out and "csema" in out
    assert all(len(line) <= 80 for line in out.splitlines()), "wider than 80 columns"
    assert "\x1b[" not in out  # no colour when stdout is not a terminal
    assert took < 30


@pytest.mark.python_runtime
@pytest.mark.timeout(60)
def test_demo_fails_loudly_when_a_promise_breaks(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken promise makes the demo exit 1 and name it (the check is not decorative)."""
    real_run = _demo.run

    def sabotaged(name: str, runtime: Runtime | None = None) -> _timeline.Result:
        r = real_run(name, runtime)
        if name == "two-writers":
            r.outcome["whole"] = False  # as if the two writes had interleaved
        return r

    monkeypatch.setattr(_demo, "run", sabotaged)
    out = io.StringIO()
    assert _demo.main(rt, out) == 1
    text = out.getvalue()
    assert re.search(r"^  FAILED\s+4\. whole writes$", text, re.M), text
    assert "FAILED: promise 4 (whole writes): the writes interleaved" in text
    for n in (1, 2, 3, 5):
        assert re.search(rf"^  held\s+{n}\. ", text, re.M)


@pytest.mark.timeout(60)
def test_demo_reports_a_scenario_that_cannot_run(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = _demo.run

    def stuck(name: str, runtime: Runtime | None = None) -> _timeline.Result:
        if name == "close":
            raise _timeline.ScenarioError("timed out waiting for the reader to park")
        return real_run(name, runtime)

    monkeypatch.setattr(_demo, "run", stuck)
    out = io.StringIO()
    assert _demo.main(rt, out) == 1
    assert "FAILED: promise 1 (close wakes everyone): the scenario failed" in out.getvalue()


@pytest.mark.python_runtime
@pytest.mark.timeout(60)
def test_demo_reports_a_poller_death(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A poller that died and was replaced during the run breaks promise 5."""
    if not hasattr(rt, "poller_deaths"):
        pytest.skip("this runtime does not count poller deaths")
    real_run = _demo.run

    def dying(name: str, runtime: Runtime | None = None) -> _timeline.Result:
        r = real_run(name, runtime)
        if name == "deadline-past":
            monkeypatch.setattr(rt, "poller_deaths", rt.poller_deaths + 1)
        return r

    monkeypatch.setattr(_demo, "run", dying)
    out = io.StringIO()
    assert _demo.main(rt, out) == 1
    text = out.getvalue()
    assert "FAILED: promise 5 (one poller): the poller thread died 1 time" in text, text


@pytest.mark.timeout(60)
def test_trace_list() -> None:
    p = run_cli("trace", "--list")
    assert p.returncode == 0, p.stderr
    listed = [line.split()[0] for line in p.stdout.splitlines()]
    assert listed == list(_timeline.SCENARIOS)
    for name in ["data", "close", "deadline", "deadline-past", "backpressure", "two-writers"]:
        assert name in listed
    assert all(len(line) <= 80 for line in p.stdout.splitlines())


@pytest.mark.timeout(60)
def test_trace_data() -> None:
    p = run_cli("trace", "data")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "trace data: data arrives for a parked reader"
    header = next(line for line in lines if line.split()[:1] == ["ms"])
    assert header.split() == ["ms", "reader", "writer", "poller"]
    body = lines[lines.index(header) + 1 :]
    # The reader's r state, in order, each in its column; the poller readies it.
    reader_col, poller_col = header.index("reader"), header.index("poller")
    seen = [
        (line[9:].lstrip(), len(line) - len(line[9:].lstrip()))
        for line in body
        if "->" in line and "pd" in line and not line[9:].lstrip().startswith("fd")
    ]
    assert [text for text, _ in seen] == [
        "r pdNil->pdWait",
        "r pdWait->parked",
        "r parked->pdReady",
        "r pdReady->pdNil",
    ]
    assert [col for _, col in seen] == [reader_col, reader_col, poller_col, reader_col]
    assert any(line[poller_col:].startswith("netpoll -> ") for line in body)
    assert all(len(line) <= 80 for line in lines)


@pytest.mark.timeout(60)
def test_trace_data_json() -> None:
    p = run_cli("trace", "data", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["scenario"] == "data"
    fd = doc["fds"]["reader"]
    states = [
        (e["column"], e["old"], e["new"])
        for e in doc["events"]
        if e["kind"] == "state" and e["fd"] == fd and e["mode"] == "r"
    ]
    assert states == [
        ("reader", "pdNil", "pdWait"),
        ("reader", "pdWait", "parked"),
        ("poller", "parked", "pdReady"),
        ("reader", "pdReady", "pdNil"),
    ]
    assert doc["poller"].startswith("threadpoll-poller")
    assert {"ms", "t", "thread", "kind", "fd", "mode", "old", "new", "info"} <= set(
        doc["events"][0]
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", backend_names())
def test_trace_every_scenario_on_every_backend(backend: str) -> None:
    for name in _timeline.SCENARIOS:
        p = run_cli("trace", name, "--backend", backend)
        assert p.returncode == 0, (name, p.stdout, p.stderr)
        assert f"backend {backend}" in p.stdout
        assert all(len(line) <= 80 for line in p.stdout.splitlines()), p.stdout


@pytest.mark.timeout(60)
def test_trace_unknown_scenario() -> None:
    p = run_cli("trace", "no-such-thing")
    assert p.returncode == 2
    assert "unknown scenario 'no-such-thing'" in p.stderr
    assert "two-writers" in p.stderr


@pytest.mark.timeout(60)
def test_bench_is_delegated() -> None:
    p = run_cli("bench", "--help")
    assert p.returncode == 0, p.stderr
    assert "usage: python -m threadpoll bench" in p.stdout


@pytest.mark.timeout(60)
def test_usage() -> None:
    p = run_cli()
    assert p.returncode == 2
    assert "{demo,trace,bench}" in p.stderr
