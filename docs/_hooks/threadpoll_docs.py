"""MkDocs hooks for the threadpoll site (mkdocs.yml names this file under ``hooks``).

- ``<!-- readme: HEADING -->`` in a page is replaced by README.md's section of that ``##``
  heading (to the next ``##``), so the tour has one source. Links from README to source
  files (``threadpoll/...``, ``tests/...``) become plain text: the site has the API reference.
- ``<!-- netpoll-table -->`` is replaced by the rg/wg state and transition tables from the
  docstring of ``threadpoll/_runtime/netpoll.py``.
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
    if "<!-- traces -->" in markdown:
        markdown = markdown.replace("<!-- traces -->", _traces())
    return markdown
