"""threadpoll.pytest_plugin, driven through pytest's own ``pytester``.

Every inner run is a subprocess: pytest-timeout's signal method would otherwise take over
this process's SIGALRM (and its thread method ends the process), and the leak tests leave
descriptors open on purpose.
"""

from __future__ import annotations

import sys
from importlib import metadata

import pytest

pytest_plugins = ["pytester"]

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

# An inner test module: helpers to make threadpoll FDs.
HELPERS = """
import socket, threading
import pytest
from threadpoll._poll.fd_unix import FD

def pair():
    a, b = socket.socketpair()
    return FD(a.detach(), net="unix", kind="unix"), FD(b.detach(), net="unix", kind="unix")
"""

HANGING_READ = (
    HELPERS
    + """
@pytest.mark.timeout(1, method="{method}")
def test_hangs():
    a, b = pair()
    try:
        a.read(10)   # nobody ever writes: parks until the timeout
    finally:
        a.close()
        b.close()
"""
)


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=90)


def test_entry_point_is_registered() -> None:
    eps = metadata.entry_points()
    group = eps.select(group="pytest11") if hasattr(eps, "select") else eps.get("pytest11", [])
    assert any(ep.value == "threadpoll.pytest_plugin" for ep in group)


def test_plugin_loaded_and_timeout_wrapped(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.hasplugin("threadpoll")
    pt = sys.modules["pytest_timeout"]
    assert hasattr(pt.timeout_sigalrm, "_threadpoll_wrapped")
    assert hasattr(pt.timeout_timer, "_threadpoll_wrapped")


def test_signal_timeout_report_contains_dump(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(HANGING_READ.format(method="signal"))
    result = _run(pytester)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "Timeout (>1.0s) from pytest-timeout." in out
    assert "threadpoll: parked threads at timeout" in out
    result.stdout.re_match_lines([r".*thread \d+ \"MainThread\".*\[IO wait, .*\]:"])
    result.stdout.re_match_lines([r".*fd=\d+ unix read, parked \d+\.\d+ s, no deadline"])
    result.stdout.re_match_lines([r".*pollDesc rg=parked .*"])
    # Part of the failure report, not stray output: in the FAILURES section.
    assert out.index("FAILURES") < out.index("threadpoll: parked threads at timeout")


def test_thread_timeout_dumps_to_stderr_before_exit(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(HANGING_READ.format(method="thread"))
    result = _run(pytester)
    assert result.ret == 1  # pytest-timeout's os._exit(1)
    err = result.stderr.str()
    assert "+++ threadpoll: parked threads at timeout +++" in err
    result.stderr.re_match_lines([r".*fd=\d+ unix read, parked \d+\.\d+ s, no deadline"])
    # pytest-timeout's own report still follows.
    assert "Timeout" in result.stdout.str() + err


LEAKY = (
    HELPERS
    + """
KEEP = []

def test_leaks_descriptor(threadpoll_leak_check):
    KEEP.extend(pair())

def test_leaves_thread_parked(threadpoll_leak_check):
    a, b = pair()
    KEEP.extend((a, b))
    threading.Thread(target=a.read, args=(1,), name="forever-reader", daemon=True).start()
    while a.pd.runtime_ctx.rg != 3:   # PD_PARKED
        pass

def test_clean(threadpoll_leak_check):
    a, b = pair()
    b.write(b"x")
    assert a.read(1) == b"x"
    a.close()
    b.close()

def test_leaks_without_fixture():
    KEEP.extend(pair())
"""
)


def test_leak_check_fixture_names_leaks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(LEAKY)
    result = _run(pytester)
    result.assert_outcomes(passed=4, errors=2)
    out = result.stdout.str()
    result.stdout.re_match_lines(
        [r".*ERROR at teardown of test_leaks_descriptor.*", r".*threadpoll leak check:.*"]
    )
    result.stdout.re_match_lines([r".*descriptor left open: <threadpoll FD fd=\d+ net=unix .*"])
    result.stdout.re_match_lines(
        [r'.*thread "forever-reader" \(id \d+\) left parked: fd=\d+ unix read.*']
    )
    assert "test_clean" not in out.split("short test summary")[-1]


def test_leaks_option_checks_every_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        HELPERS
        + """
KEEP = []

def test_leaks():
    KEEP.extend(pair())

@pytest.mark.threadpoll_leaks_ok
def test_exempt():
    KEEP.extend(pair())
"""
    )
    result = _run(pytester, "--threadpoll-leaks")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.re_match_lines([r".*ERROR at teardown of test_leaks\b.*"])
    result = _run(pytester)
    result.assert_outcomes(passed=2)


def test_leaks_ini_option(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nthreadpoll_leaks = true\n")
    pytester.makepyfile(HELPERS + "\nKEEP = []\n\ndef test_leaks():\n    KEEP.extend(pair())\n")
    result = _run(pytester)
    result.assert_outcomes(passed=1, errors=1)
