"""The threadpoll pytest plugin (registered through the ``pytest11`` entry point).

What it adds to a test run:

- **A parked-thread dump when pytest-timeout fires.** A test that hangs in threadpoll I/O
  usually hangs because some thread is parked on a descriptor nobody will ever make ready.
  pytest-timeout already prints every thread's stack; this plugin adds ``threadpoll.dump()``
  (which thread, ``fd=``, ``read``/``write``, for how long, the deadline, the pollDesc state).
  With pytest-timeout's ``signal`` method the dump is part of the test's failure report
  (appended to the "Timeout" failure message); with the ``thread`` method, which ends the
  process, it is written to stderr just before pytest-timeout's own output and exit.
- **An opt-in leak check.** The fixture ``threadpoll_leak_check`` fails a test that leaves
  threadpoll descriptors open or threads parked, naming each one. ``--threadpoll-leaks`` (or
  the ini option ``threadpoll_leaks = true``) applies it to every test. Descriptors and
  parked threads that existed before the test are not counted, nor threadpoll's own poller.

How the dump gets in: pytest-timeout calls its module functions ``timeout_sigalrm`` (signal
method) and ``timeout_timer`` (thread method) when a test times out, looking them up in its
module at the moment it arms the timer. The plugin wraps both at ``pytest_configure`` and puts
the originals back at ``pytest_unconfigure``. Its hooks ``pytest_timeout_set_timer`` /
``pytest_timeout_cancel_timer`` are for replacing the timer, not for adding to its report, so
wrapping is the smaller intervention. Without pytest-timeout, only the leak check is active.

Staying out of the way. The plugin loads in every pytest run of every project where threadpoll
is installed, so:

- It starts no thread and makes no runtime. A timeout gets the dump only when some thread is
  parked in threadpoll at that moment; in a process where no threadpoll runtime exists the
  wrapper hands straight to pytest-timeout's own function without importing anything.
- ``--threadpoll-leaks`` adds its per-test fixture only when it is on; otherwise no test gets
  any fixture from this plugin.
- It needs pytest ``MIN_PYTEST`` (7.0) or newer. Below that it adds no option, wraps nothing
  and checks nothing, and says so with one ``PytestConfigWarning`` per run (a test that asks
  for the ``threadpoll_leak_check`` fixture by name still gets it).
- Opt out entirely with ``-p no:threadpoll`` (on the command line, in ``addopts``, or in
  ``PYTEST_ADDOPTS``).
"""

from __future__ import annotations

import sys
import time
import warnings
import weakref
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, TypeVar, cast

if TYPE_CHECKING:
    # mypy sees pytest as Any: threadpoll is checked as Python 3.9 code, and following the
    # import would make mypy parse the installed pytest, whose recent releases use 3.10+
    # syntax. The plugin's pytest objects are therefore typed Any below.
    pytest: Any
else:
    import pytest

__all__ = ["MIN_PYTEST", "threadpoll_leak_check"]

# The oldest pytest this plugin supports (pytest 7.0 brought what it and its tests use, such
# as ``pytest.Pytester``); below it the plugin disables itself with one warning.
MIN_PYTEST = (7, 0)

# How long the leak check lets a test's own threads finish tearing down before it reports.
LEAK_GRACE = 1.0

_HEADER = "threadpoll: parked threads at timeout"

_F = TypeVar("_F", bound=Callable[..., Any])


def _fixture(**kwargs: Any) -> Callable[[_F], _F]:
    """pytest.fixture, typed."""
    return cast(Callable[[_F], _F], pytest.fixture(**kwargs))


def _version_tuple(text: str) -> tuple[int, ...]:
    """(6, 2, 5) from "6.2.5"; a pre-release or local suffix ("8.1.0.dev12+g...") ends it."""
    out = []
    for part in text.split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(int(digits))
        if len(digits) != len(part):
            break
    return tuple(out)


def _supported() -> bool:
    """Whether the running pytest is one this plugin supports (read at each hook, not at
    import, so that a run can tell; it is a string compare's worth of work)."""
    return _version_tuple(str(getattr(pytest, "__version__", "0"))) >= MIN_PYTEST


def pytest_addoption(parser: Any) -> None:
    if not _supported():
        return
    group = parser.getgroup("threadpoll")
    group.addoption(
        "--threadpoll-leaks",
        action="store_true",
        default=None,
        help="fail every test that leaves threadpoll descriptors open or threads parked",
    )
    parser.addini(
        "threadpoll_leaks",
        "apply the threadpoll leak check to every test (like --threadpoll-leaks)",
        type="bool",
        default=False,
    )


# --- the dump on timeout -----------------------------------------------------------------

_WRAPPED = "_threadpoll_wrapped"  # a wrapper's attribute holding the function it wraps
# id(config) -> (pytest-timeout's module, the names this config wrapped). A plain dict, not
# config.stash: pytest.StashKey is new in pytest 7.0, and this module must import on any pytest.
_wrapped_by: dict[int, tuple[ModuleType, list[str]]] = {}


def _timeout_module(config: Any) -> ModuleType | None:
    mod = config.pluginmanager.getplugin("timeout")
    if isinstance(mod, ModuleType) and hasattr(mod, "timeout_sigalrm"):
        return mod
    return None


def _debugging(mod: ModuleType, settings: Any) -> bool:
    """pytest-timeout does nothing while a debugger runs; neither do we."""
    is_debugging = getattr(mod, "is_debugging", None)
    if getattr(settings, "disable_debugger_detection", False) or is_debugging is None:
        return False
    return bool(is_debugging())


def _dump_if_parked() -> str | None:
    """dump(), or None when no thread is parked in threadpoll (a test that never used it).

    A process that never made a threadpoll runtime is told apart without importing anything.
    """
    proc = sys.modules.get("threadpoll._runtime.proc")
    if proc is None or not getattr(proc, "_runtimes", None):
        return None
    from threadpoll import _diag

    if not _diag.parked():
        return None
    return _diag.dump()


def _wrap_sigalrm(mod: ModuleType, orig: Callable[..., Any]) -> Callable[..., Any]:
    def timeout_sigalrm(item: Any, settings: Any) -> Any:
        __tracebackhide__ = True
        if _debugging(mod, settings):
            return orig(item, settings)
        text = _dump_if_parked()  # now: the unwinding below un-parks the test's thread
        if text is None:
            return orig(item, settings)
        try:
            return orig(item, settings)
        except pytest.fail.Exception as e:
            msg = f"{e.msg}\n\n{_HEADER}\n{text}"
            raise pytest.fail.Exception(msg, pytrace=e.pytrace) from None

    setattr(timeout_sigalrm, _WRAPPED, orig)
    return timeout_sigalrm


def _wrap_timer(mod: ModuleType, orig: Callable[..., Any]) -> Callable[..., Any]:
    def timeout_timer(item: Any, settings: Any) -> Any:
        if _debugging(mod, settings):
            return orig(item, settings)
        try:
            text = _dump_if_parked()
            if text is None:
                return orig(item, settings)
            capman = item.config.pluginmanager.getplugin("capturemanager")
            if capman is not None:
                capman.suspend_global_capture(item)  # idempotent; the original does it too
            sys.stderr.write(f"\n+++ {_HEADER} +++\n{text}\n")
            sys.stderr.flush()
        except Exception as e:  # noqa: BLE001 - the original must still run and exit
            sys.stderr.write(f"threadpoll: dump failed: {e!r}\n")
        return orig(item, settings)  # dumps the stacks, then os._exit(1)

    setattr(timeout_timer, _WRAPPED, orig)
    return timeout_timer


def _warn_unsupported(config: Any) -> None:
    have = getattr(pytest, "__version__", "?")
    need = ".".join(map(str, MIN_PYTEST))
    message = (
        f"threadpoll's pytest plugin needs pytest>={need} (this is pytest {have}); it is "
        "disabled for this run. Upgrade pytest, or silence this with -p no:threadpoll."
    )
    warning_class = getattr(pytest, "PytestConfigWarning", UserWarning)
    issue = getattr(config, "issue_config_time_warning", None)
    if issue is not None:
        issue(warning_class(message), stacklevel=2)
    else:  # pytest < 6.0
        warnings.warn(warning_class(message), stacklevel=2)


def pytest_configure(config: Any) -> None:
    if not _supported():
        _warn_unsupported(config)
        return
    config.addinivalue_line(
        "markers",
        "threadpoll_leaks_ok: exempt a test from the --threadpoll-leaks check",
    )
    on = config.getoption("threadpoll_leaks")
    if on is None:
        on = config.getini("threadpoll_leaks")
    if on:
        config.pluginmanager.register(_LeaksEverywhere(), "threadpoll-leaks-everywhere")
    mod = _timeout_module(config)
    if mod is None:
        return
    wrapped = []
    # A nested session (pytester's inline runs) finds them wrapped already and leaves them.
    for name, wrap in (("timeout_sigalrm", _wrap_sigalrm), ("timeout_timer", _wrap_timer)):
        orig = getattr(mod, name, None)
        if orig is None or hasattr(orig, _WRAPPED):
            continue
        setattr(mod, name, wrap(mod, orig))
        wrapped.append(name)
    _wrapped_by[id(config)] = (mod, wrapped)


def pytest_unconfigure(config: Any) -> None:
    mod, names = _wrapped_by.pop(id(config), (None, []))
    for name in names:
        current = getattr(mod, name, None)
        orig = getattr(current, _WRAPPED, None)
        if orig is not None:
            setattr(mod, name, orig)


# --- the leak check ----------------------------------------------------------------------


class _Snapshot:
    """What threadpoll has open and parked at one moment."""

    def __init__(self) -> None:
        from threadpoll import _diag
        from threadpoll._poll import fd_unix

        # Weak: the check must not keep a test's FDs alive (their finalizers must run).
        self.fds: weakref.WeakSet[Any] = weakref.WeakSet(fd_unix.live_fds())
        self.pds: dict[tuple[int, int], str] = {}
        for rt in _diag._live_runtimes():
            for pd in _diag._open_pds(rt):
                self.pds[(pd.id, pd.fdseq)] = f"fd={pd.fd} {pd.kind or '?'} ({rt.name})"
        self.parked = {
            (p.thread.ident, p.pd.id, p.mode): p for p in _diag.parked() if p.thread.is_alive()
        }


def _leaks(before: _Snapshot, after: _Snapshot) -> list[str]:
    out = []
    new_fds = [fd for fd in after.fds if fd not in before.fds]
    for fd in new_fds:
        out.append(f"descriptor left open: {fd!r}")
    if not new_fds:  # no FD registry: fall back to the runtimes' registered pollDescs
        for pd_key, text in after.pds.items():
            if pd_key not in before.pds:
                out.append(f"descriptor left registered: {text}")
    for parked_key, p in after.parked.items():
        if parked_key not in before.parked:
            out.append(
                f'thread "{p.thread.name}" (id {p.thread.ident}) left parked: '
                f"fd={p.fd} {p.kind or '?'} {p.mode}"
            )
    return out


@_fixture()
def threadpoll_leak_check() -> Iterator[None]:
    """Fail the test if it leaves threadpoll descriptors open or threads parked.

    Threads still tearing down get ``LEAK_GRACE`` seconds to finish before it reports.
    """
    before = _Snapshot()
    yield
    end = time.monotonic() + LEAK_GRACE
    while True:
        leaks = _leaks(before, _Snapshot())
        if not leaks or time.monotonic() > end:
            break
        time.sleep(0.01)  # polls the state of threads that are still winding down
    if leaks:
        from threadpoll._diag import dump

        pytest.fail(
            "threadpoll leak check:\n  " + "\n  ".join(leaks) + "\n\n" + dump(),
            pytrace=False,
        )


class _LeaksEverywhere:
    """Registered by pytest_configure only when --threadpoll-leaks (or the ini option) is on,
    so that a run without it pays for no per-test fixture."""

    @_fixture(autouse=True)
    def _threadpoll_leaks_everywhere(self, request: Any) -> None:
        """--threadpoll-leaks: every test gets threadpoll_leak_check."""
        if request.node.get_closest_marker("threadpoll_leaks_ok") is None:
            request.getfixturevalue("threadpoll_leak_check")
