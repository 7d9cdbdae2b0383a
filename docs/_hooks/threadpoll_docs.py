"""MkDocs hooks for the threadpoll site (mkdocs.yml names this file under ``hooks``).

- ``<!-- readme: HEADING -->`` in a page is replaced by README.md's section of that ``##``
  heading (to the next ``##``), so the tour has one source. Links from README to source
  files (``threadpoll/...``, ``tests/...``) become plain text: the site has the API reference.
- ``<!-- netpoll-table -->`` is replaced by the rg/wg state and transition tables from the
  docstring of ``threadpoll/_runtime/netpoll.py``.
- ``<!-- reading-guide -->`` is replaced by one table per module of ``threadpoll._runtime``
  and ``threadpoll._poll``: every function's Go counterpart (the ``Go:`` line that ends its
  docstring, which tests/test_docstrings.py requires) on the left, the function on the right.
- ``<!-- traces -->`` becomes one section per ``python -m threadpoll trace`` scenario with its
  picture; the SVGs are drawn during the build (``traces/NAME.svg``) and are never in git.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_SOURCE_LINK = re.compile(r"\[([^\]]+)\]\((?:\./)?((?:threadpoll|tests|stress)/[^)]*)\)")
_svgs: dict[str, str] = {}


def _readme_section(heading: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    try:
        start = lines.index(f"## {heading}")
    except ValueError:
        raise ValueError(f"README.md has no section '## {heading}'") from None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), None)
    body = "\n".join(lines[start + 1 : end])
    return _SOURCE_LINK.sub(r"\1", body).strip() + "\n"


def _netpoll_table() -> str:
    import threadpoll._runtime.netpoll as netpoll

    doc = netpoll.__doc__ or ""
    start = doc.index("How a thread waits")
    end = doc.index("Differences from Go:")
    out = []
    for para in doc[start:end].strip().split("\n\n"):
        if para.startswith("    "):  # an indented table: a code block
            out.append("```text\n" + "\n".join(line[4:] for line in para.splitlines()) + "\n```")
        else:
            out.append(para)
    return "\n\n".join(out) + "\n"


GO_SOURCE = "https://github.com/golang/go/blob/go1.22.0/src/"
_GO_FILE = re.compile(r"\b((?:runtime|internal|net|os|io|syscall)/[\w/]*\.go)\b")
# The modules in the order a reader meets them: the runtime, its backends and helpers, then
# internal/poll from the bottom up.
_GUIDE_ORDER = [
    "threadpoll._runtime.netpoll",
    "threadpoll._runtime.proc",
    "threadpoll._runtime.netpoll_epoll",
    "threadpoll._runtime.netpoll_kqueue",
    "threadpoll._runtime.netpoll_poll",
    "threadpoll._runtime.park",
    "threadpoll._runtime.trace",
    "threadpoll._runtime.netpoll_c",
    "threadpoll._poll.fd_mutex",
    "threadpoll._poll.fd_poll_runtime",
    "threadpoll._poll.fd_unix",
]


def _guide_functions(module: Any) -> list[tuple[int, str, Any]]:
    """(line, qualified name, function) for every function and method written in module."""
    import inspect

    found: dict[int, tuple[int, str, Any]] = {}

    def add(func: Any) -> None:
        if isinstance(func, (staticmethod, classmethod)):
            func = func.__func__
        elif isinstance(func, property):
            func = func.fget
        func = inspect.unwrap(func) if callable(func) else func
        if not inspect.isfunction(func) or func.__module__ != module.__name__:
            return
        if "<locals>" in func.__qualname__:
            return
        code = func.__code__
        found[id(code)] = (code.co_firstlineno, func.__qualname__, func)

    def walk_class(cls: type) -> None:
        for name, attr in vars(cls).items():
            if name.startswith("__") and name.endswith("__") and name != "__init__":
                continue
            if inspect.isclass(attr) and attr.__qualname__.startswith(cls.__qualname__ + "."):
                walk_class(attr)
            else:
                add(attr)

    for attr in vars(module).values():
        if inspect.isclass(attr) and attr.__module__ == module.__name__:
            walk_class(attr)
        else:
            add(attr)
    return sorted(found.values(), key=lambda t: t[0])


def _go_cell(doc: str | None) -> str:
    """The left-hand cell: the ``Go:`` line, with each Go file linked to Go's source."""
    import inspect

    text = "\n" + inspect.cleandoc(doc or "")
    at = text.rfind("\nGo: ")
    go = " ".join(text[at + 5 :].split()) if at >= 0 else "?"
    if go.startswith("none"):
        rest = go[4:].strip()
        return "—" + (f" {rest}" if rest else "")
    return _GO_FILE.sub(lambda m: f"[{m.group(1)}]({GO_SOURCE}{m.group(1)})", go)


def _reading_guide() -> str:
    import importlib

    parts = []
    for name in _GUIDE_ORDER:
        module = importlib.import_module(name)
        path = name.replace(".", "/") + ".py"
        rows = ["| Go (file, function) | threadpoll |", "|---|---|"]
        for _, qualname, func in _guide_functions(module):
            ours = f"`{qualname}`"
            if (
                name.endswith("fd_unix")
                and qualname.startswith("FD.")
                and not (qualname.split(".", 1)[1].startswith("_"))
            ):
                ours += " (front-facing)"
            rows.append(f"| {_go_cell(func.__doc__)} | {ours} |")
        parts.append(f"## {path}\n\n" + "\n".join(rows) + "\n")
    return "\n".join(parts)


def _traces() -> str:
    from threadpoll import _timeline
    from threadpoll._svg import render_svg

    parts = []
    for name, scenario in _timeline.SCENARIOS.items():
        result = _timeline.run(name)
        _svgs[name] = render_svg(result)
        parts.append(
            f"## {name}\n\n{scenario.title}.\n\n"
            f"`python -m threadpoll trace {name} --svg {name}.svg` "
            f"({len(result.events)} events on {result.backend}):\n\n"
            f"![trace {name}](traces/{name}.svg)\n"
        )
    return "\n".join(parts)


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    if not _svgs:
        _traces()
    for name, svg in _svgs.items():
        files.append(File.generated(config, f"traces/{name}.svg", content=svg))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def readme(m: re.Match[str]) -> str:
        return _readme_section(m.group(1).strip())

    markdown = re.sub(r"<!-- readme: (.+?) -->", readme, markdown)
    if "<!-- netpoll-table -->" in markdown:
        markdown = markdown.replace("<!-- netpoll-table -->", _netpoll_table())
    if "<!-- reading-guide -->" in markdown:
        markdown = markdown.replace("<!-- reading-guide -->", _reading_guide())
    if "<!-- traces -->" in markdown:
        markdown = markdown.replace("<!-- traces -->", _traces())
    return markdown
