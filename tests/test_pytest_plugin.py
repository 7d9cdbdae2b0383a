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


# --- staying out of the way in other projects ----------------------------------------------

# Loaded with -p before the entry points: makes this pytest look like pytest 6 to threadpoll,
# which has no pytest.StashKey (the plugin used to create one at import and crash every run).
# pytest-timeout, loaded next to it, still gets the real one.
FAKE_OLD_PYTEST = """
import sys
import pytest

pytest.__version__ = "6.2.5"
_real = pytest.StashKey

class StashKey(_real):
    __class_getitem__ = classmethod(lambda cls, item: cls)

    def __init__(self):
        if sys._getframe(1).f_globals.get("__name__", "").startswith("threadpoll"):
            raise AttributeError("module 'pytest' has no attribute 'StashKey'")
        super().__init__()

pytest.StashKey = StashKey
"""

SLEEPS_PAST_TIMEOUT = """
import threading, time
import pytest

@pytest.mark.timeout(1, method="signal")
def test_hangs_elsewhere():
    threading.Event().wait(30)   # hangs, but not in threadpoll
"""


def test_old_pytest_disables_plugin_with_one_warning(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(fakeold=FAKE_OLD_PYTEST)
    pytester.makepyfile(
        test_inner=HANGING_READ.format(method="signal")
        + """
def test_plugin_did_nothing(request):
    import pytest_timeout
    assert not hasattr(pytest_timeout.timeout_sigalrm, "_threadpoll_wrapped")
    assert "_threadpoll_leaks_everywhere" not in request.fixturenames
"""
    )
    pytester.syspathinsert()
    result = _run(pytester, "-p", "fakeold", "-W", "always")
    result.assert_outcomes(failed=1, passed=1)
    out = result.stdout.str() + result.stderr.str()
    assert out.count("threadpoll's pytest plugin needs pytest>=7.0 (this is pytest 6.2.5)") == 1
    assert "threadpoll: parked threads at timeout" not in out


def test_no_dump_when_the_test_did_not_park_in_threadpoll(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SLEEPS_PAST_TIMEOUT)
    result = _run(pytester)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "Timeout (>1.0s) from pytest-timeout." in out
    assert "threadpoll:" not in out and "parked" not in out


def test_no_dump_after_threadpoll_was_used_and_left(pytester: pytest.Pytester) -> None:
    """A runtime exists (an earlier test used threadpoll), but nothing is parked."""
    pytester.makepyfile(
        HELPERS
        + """
def test_uses_threadpoll():
    a, b = pair()
    b.write(b"x")
    assert a.read(1) == b"x"
    a.close()
    b.close()
"""
        + SLEEPS_PAST_TIMEOUT
    )
    result = _run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    assert "threadpoll: parked threads at timeout" not in result.stdout.str()


def test_opt_out_with_p_no_threadpoll(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import pytest_timeout

def test_not_loaded(pytestconfig):
    assert not pytestconfig.pluginmanager.hasplugin("threadpoll")
    assert not hasattr(pytest_timeout.timeout_sigalrm, "_threadpoll_wrapped")
"""
    )
    result = _run(pytester, "-p", "no:threadpoll")
    result.assert_outcomes(passed=1)
    assert "threadpoll" not in result.stdout.str().replace("test_opt_out_with_p_no_threadpoll", "")


def test_no_per_test_fixture_unless_leak_check_is_on(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
def test_fixtures(request):
    assert "_threadpoll_leaks_everywhere" not in request.fixturenames
"""
    )
    _run(pytester).assert_outcomes(passed=1)
    _run(pytester, "--threadpoll-leaks").assert_outcomes(failed=1)  # there it is


def test_version_tuple() -> None:
    from threadpoll.pytest_plugin import _version_tuple

    assert _version_tuple("6.2.5") == (6, 2, 5)
    assert _version_tuple("7.0.0rc1") == (7, 0, 0)
    assert _version_tuple("8.1.0.dev12+g1234") == (8, 1, 0)
    assert _version_tuple("9") == (9,)


def test_loading_the_plugin_imports_no_runtime() -> None:
    """The entry point loads in every project's pytest run: it must not pull in the runtime
    (threads, sockets, the poller's modules) until a test uses threadpoll."""
    import subprocess

    code = (
        "import sys, threading, threadpoll.pytest_plugin\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('threadpoll'))\n"
        "print(loaded, threading.active_count())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert out.strip() == "['threadpoll', 'threadpoll.pytest_plugin'] 1"
