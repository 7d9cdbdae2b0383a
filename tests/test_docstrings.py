"""The teaching contract: every function in ``_runtime`` and ``_poll`` names the Go it follows.

The rule: each function's docstring ends with a line ``Go: <file> <symbol>`` (or
``Go: none`` for helpers of our own), and each module's docstring names its Go file. These
tests walk both packages and report every offender in one message.

What counts as "a function defined in the module": a top-level function or a method (including
staticmethods, classmethods, property getters and Protocol stubs) of a class defined there,
whose code lives in that module's file. Functions imported from elsewhere, code generated at
run time (dataclass ``__init__``), nested defs, and dunder methods other than ``__init__`` are
not checked.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from types import FunctionType, ModuleType

import pytest

PACKAGES = ["threadpoll._runtime", "threadpoll._poll"]

# A module docstring must name Go: "Go", "Go's", or a Go file such as "runtime/netpoll.go".
GO_IN_MODULE_DOC = re.compile(r"\bGo\b|\w\.go\b")


def _modules(package_name: str) -> list[ModuleType]:
    """Import and return every module below ``package_name``, subpackages included."""
    package = importlib.import_module(package_name)

    def onerror(name: str) -> None:
        raise ImportError(f"cannot import {name}")

    names = [
        info.name
        for info in pkgutil.walk_packages(package.__path__, package_name + ".", onerror=onerror)
    ]
    return [importlib.import_module(name) for name in sorted(names)]


def _modules_or_skip(package_name: str) -> list[ModuleType]:
    modules = _modules(package_name)
    if not modules:
        pytest.skip(f"{package_name} has no modules yet")
    return modules


def _as_function(attr: object) -> FunctionType | None:
    """The plain function behind a class attribute, or None if it is not one."""
    if isinstance(attr, (staticmethod, classmethod)):
        attr = attr.__func__
    elif isinstance(attr, property):
        attr = attr.fget
    elif isinstance(attr, functools.cached_property):
        attr = attr.func
    if not isinstance(attr, FunctionType):
        return None
    # Look through decorators that use functools.wraps, to the function as written.
    unwrapped = inspect.unwrap(attr)
    return unwrapped if isinstance(unwrapped, FunctionType) else attr


def _defined_here(func: FunctionType, module: ModuleType) -> bool:
    """True if ``func`` was written in ``module``'s source file, not imported or generated."""
    return (
        func.__module__ == module.__name__
        and func.__code__.co_filename == module.__file__
        and "<locals>" not in func.__qualname__
    )


def _is_skipped_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__") and name != "__init__"


def _class_functions(cls: type, module: ModuleType) -> Iterator[FunctionType]:
    """Methods written in ``cls`` itself (not inherited), and those of its nested classes."""
    for name, attr in vars(cls).items():
        if _is_skipped_dunder(name):
            continue
        if inspect.isclass(attr):
            if attr.__module__ == module.__name__ and attr.__qualname__.startswith(
                cls.__qualname__ + "."
            ):
                yield from _class_functions(attr, module)
            continue
        func = _as_function(attr)
        if func is not None and _defined_here(func, module):
            yield func


def _functions(module: ModuleType) -> Iterator[FunctionType]:
    """Every function and method written in ``module``, each once."""
    seen: set[int] = set()
    for attr in list(vars(module).values()):
        if inspect.isclass(attr):
            if attr.__module__ != module.__name__:
                continue
            candidates: Iterator[FunctionType] = _class_functions(attr, module)
        else:
            func = _as_function(attr)
            if func is None or not _defined_here(func, module):
                continue
            candidates = iter([func])
        for func in candidates:
            if id(func.__code__) not in seen:
                seen.add(id(func.__code__))
                yield func


def _docstring_problem(func: FunctionType) -> str | None:
    """Why ``func``'s docstring breaks the rule, or None if it keeps it."""
    # func.__doc__, not inspect.getdoc: getdoc would inherit a base class's docstring.
    doc = func.__doc__
    if not doc or not doc.strip():
        return "no docstring"
    last = [line for line in inspect.cleandoc(doc).splitlines() if line.strip()][-1].strip()
    if not last.startswith("Go: "):
        return f"last line is {last!r}, not 'Go: <file> <symbol>' or 'Go: none'"
    return None


@pytest.mark.parametrize("package_name", PACKAGES)
def test_every_function_names_its_go_counterpart(package_name: str) -> None:
    """Every function's docstring ends with a ``Go: ...`` line."""
    offenders = []
    for module in _modules_or_skip(package_name):
        for func in _functions(module):
            problem = _docstring_problem(func)
            if problem is not None:
                line = func.__code__.co_firstlineno
                offenders.append(f"{module.__name__}.{func.__qualname__} (line {line}): {problem}")
    assert not offenders, (
        f"{len(offenders)} function(s) in {package_name} do not end their docstring with "
        "'Go: <file> <symbol>' (or 'Go: none'):\n  " + "\n  ".join(offenders)
    )


@pytest.mark.parametrize("package_name", PACKAGES)
def test_every_module_names_its_go_file(package_name: str) -> None:
    """Every module's docstring names the Go file it mirrors."""
    offenders = [
        module.__name__
        for module in _modules_or_skip(package_name)
        if not module.__doc__ or not GO_IN_MODULE_DOC.search(module.__doc__)
    ]
    assert not offenders, (
        f"{len(offenders)} module(s) in {package_name} have no docstring naming their Go "
        "file (or saying 'Go: none'):\n  " + "\n  ".join(offenders)
    )


def _emitted_trace_kinds() -> set[str]:
    """Every kind the package's sources pass to ``trace.emit`` as a literal."""
    import threadpoll

    root = Path(threadpoll.__file__).parent
    kinds: set[str] = set()
    for path in root.rglob("*.py"):
        kinds |= set(re.findall(r'\bemit\(\s*"([a-z_]+)"', path.read_text(encoding="utf-8")))
    return kinds


def test_every_emitted_trace_kind_is_documented() -> None:
    """TraceEvent's docstring, ``trace.KINDS`` and the public threadpoll.trace docstring name
    exactly the kinds the runtime and internal/poll emit: none missing, none never emitted."""
    import threadpoll.trace
    from threadpoll._runtime import trace

    emitted = _emitted_trace_kinds()
    assert "park" in emitted and "state" in emitted  # the scan itself works
    assert set(trace.KINDS) == emitted
    docs = ((trace.TraceEvent.__doc__, "is one of"), (threadpoll.trace.__doc__, "Kinds:"))
    for doc, marker in docs:
        assert doc is not None and marker in doc
        text = re.sub(r"\([^)]*\)", "", doc.split(marker, 1)[1].split(".", 1)[0])
        listed = set(re.findall(r"[a-z_]+", text)) - {"and"}
        assert listed == emitted, (
            f"documented but never emitted: {sorted(listed - emitted)}; "
            f"emitted but not documented: {sorted(emitted - listed)}"
        )
    for name in ("ready", "unblock", "reset"):  # once documented, never emitted
        assert name not in trace.KINDS
