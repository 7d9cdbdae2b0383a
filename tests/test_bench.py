"""``python -m threadpoll bench``: a --quick smoke run of two scenarios, checked through its JSON.

Speed is never asserted: only that every case ran, that the stdlib baselines produced positive
numbers, and that the other variants either measured something or say why they could not.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from threadpoll import bench
from threadpoll.bench import echo

STDLIB_VARIANTS = (bench.V_STDLIB, bench.V_TIMEOUT, bench.V_SELECT)
THREADPOLL_VARIANTS = (bench.V_TPS, bench.V_CONN)


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.mark.timeout(120)
def test_quick_fastpath_and_pingpong_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "b.json"
    rc = bench.main(["--quick", "--json", str(path), "--only", "fastpath", "pingpong"])
    doc = json.loads(path.read_text(encoding="utf-8"))

    assert doc["schema"] == "threadpoll-bench/1"
    assert doc["quick"] is True
    assert doc["only"] == ["fastpath", "pingpong"]
    machine = doc["machine"]
    for key in (
        "platform",
        "cpu_count",
        "python_implementation",
        "python_version",
        "threadpoll_backend",
    ):
        assert machine[key], key
    assert isinstance(machine["gil_enabled"], bool)

    ids = [case["id"] for case in doc["cases"]]
    assert ids == [
        "fastpath/unix",
        "fastpath/tcp",
        "pingpong/unix-1B",
        "pingpong/unix-4KiB",
        "pingpong/tcp-1B",
        "pingpong/tcp-4KiB",
    ]
    for case in doc["cases"]:
        assert case["kind"] == "time" and case["unit"] == "us" and case["better"] == "lower"
        assert case["baseline"] == bench.V_STDLIB
        assert case["skipped"] is None and case["rounds_run"] >= 1
        variants = {v["name"]: v for v in case["variants"]}
        assert set(STDLIB_VARIANTS + THREADPOLL_VARIANTS) <= set(variants)
        for name in STDLIB_VARIANTS:
            v = variants[name]
            assert v["status"] == "ok", (case["id"], v)
            assert _positive(v["median"]) and _positive(v["ratio"]), (case["id"], v)
            assert v["rounds"] and all(_positive(x) for x in v["rounds"]), (case["id"], v)
        assert variants[bench.V_STDLIB]["ratio"] == 1.0
        for v in case["variants"]:
            # threadpoll (still being written), trio and gevent (optional) may be unavailable;
            # nothing may crash or hang.
            if v["status"] == "ok":
                assert _positive(v["median"]) and _positive(v["ratio"]), (case["id"], v)
            else:
                assert v["status"] == "unavailable", (case["id"], v)
                assert v["reason"].startswith("unavailable:") and v["median"] is None
    assert doc["errors"] == 0 and rc == 0

    out = capsys.readouterr().out
    assert "python:" in out and "== fastpath/unix:" in out and "== pingpong/tcp-4KiB:" in out


def _serve_mute(c: Any) -> None:
    """Reads until EOF and never answers: no request ever completes."""
    while c.recv(65536):
        pass


@pytest.mark.timeout(60)
def test_echo_with_no_request_completed_is_no_figure_not_an_error() -> None:
    """On a busy machine (K = 1000, --quick) the window can pass with no reply at all."""
    ctx = bench.RunCtx({"k": 2, "warmup_s": 0.0}, 0.05, 0, 10.0, True)
    out = echo._echo_drive(echo._stdlib_thread_server(_serve_mute, ctx), ctx)
    assert out.value is None and "no request completed" in out.note


@pytest.mark.parametrize("where", ["missing-dir/x.json", "."])
def test_json_path_is_checked_before_the_run(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / where
    with pytest.raises(SystemExit) as e:
        bench.main(["--quick", "--json", str(path)])
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert "--json" in captured.err
    assert "does not exist" in captured.err or "is a directory" in captured.err
    assert "threadpoll bench" not in captured.out  # nothing ran
