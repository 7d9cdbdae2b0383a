"""``python -m threadpoll``: the small things a new user trips on first."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import threadpoll
from threadpoll._timeline import SCENARIOS

pytestmark = pytest.mark.timeout(60)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadpoll", *args],
        capture_output=True,
        text=True,
        timeout=50,
        env={**os.environ, **(env or {})},
    )


def test_version() -> None:
    r = _cli("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"threadpoll {threadpoll.__version__}"


@pytest.mark.parametrize("args", [["demo"], ["trace", "data"], ["bench", "--quick"]])
def test_unknown_backend_in_the_environment_is_one_clear_line(args: list[str]) -> None:
    r = _cli(*args, env={"THREADPOLL_BACKEND": "bogus"})
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "THREADPOLL_BACKEND='bogus'" in lines[0] and "epoll" in lines[0]
    assert r.stdout == ""


def test_trace_list_json() -> None:
    r = _cli("trace", "--list", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [s["name"] for s in doc] == list(SCENARIOS)
    assert all(s["title"] for s in doc)


def test_a_reader_that_goes_away_is_no_traceback() -> None:
    """``python -m threadpoll trace data | head -1``: the pipe closes early; no traceback."""
    p = subprocess.Popen(
        [sys.executable, "-m", "threadpoll", "trace", "data"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.readline()  # the first line, as head -1 takes it
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(50)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
