"""Stress tests: long, many-thread runs under pytest-timeout.

- ``THREADPOLL_SKIP_STRESS=1`` skips this directory (nothing in it is collected).
- ``THREADPOLL_STRESS_SCALE`` (default 1) multiplies each test's main count (descriptor
  pairs and their threads, connections, forks, interrupts, open descriptors), so the work
  grows linearly with it, and the tests' timeouts with it. At scale 1 the whole directory
  takes about 12 s (2 cores); a scale that needs more descriptors than RLIMIT_NOFILE's hard
  limit allows skips that test with the numbers.

The fixtures are tests/'s own: ``rt`` (one runtime per backend), the session's runtimes and the
per-test leak check (descriptors, threads, registered pollDescs, parked waiters). They are
loaded from tests/conftest.py under another module name, since two ``conftest`` modules cannot
import each other, and re-exported here (all its names: a tests/ module's ``from conftest import``
may resolve to this module when both directories run). tests/ is also on ``sys.path``, for
``support``.
"""

from __future__ import annotations

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(os.path.dirname(HERE), "tests")

if os.environ.get("THREADPOLL_SKIP_STRESS") == "1":
    # Nothing here is collected; the names below are still exported, because a tests/
    # module's ``from conftest import ...`` may resolve to this module.
    collect_ignore_glob = ["*"]

if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
_name = "threadpoll_tests_conftest"
_tc = sys.modules.get(_name)
if _tc is None:
    _spec = importlib.util.spec_from_file_location(_name, os.path.join(TESTS, "conftest.py"))
    assert _spec is not None and _spec.loader is not None
    _tc = importlib.util.module_from_spec(_spec)
    sys.modules[_name] = _tc
    _spec.loader.exec_module(_tc)

# Re-export everything: pytest finds the fixtures (rt, _all_runtimes, _leak_check) by
# scanning this module, and ``from conftest import ...`` in a tests/ module may resolve to
# this module (whichever conftest was imported last holds the name ``conftest``).
for _k, _v in vars(_tc).items():
    if not _k.startswith("__"):
        globals().setdefault(_k, _v)
