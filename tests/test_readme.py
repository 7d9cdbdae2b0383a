"""README.md's examples run as they stand.

Every fenced block marked ```python in README.md is a runnable example: each is run in a fresh
interpreter (this one, so the same threadpoll) from the repository root and must exit 0. The
examples assert what they claim, so a promise that stops holding fails here too. Blocks meant
only to be read use another language tag (```text, ```sh).

Relative links in README.md must name files that exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

# A fence opens with ```python at the start of a line and closes with ``` alone on a line.
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of every ```python block in README.md."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in _BLOCK.finditer(text)]


BLOCKS = python_blocks()


def test_readme_has_its_examples() -> None:
    # The problem, the quickstart (two) and one per promise: losing one should be a decision.
    assert len(BLOCKS) >= 8, [line for line, _ in BLOCKS]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("line,code", BLOCKS, ids=[f"line-{line}" for line, _ in BLOCKS])
def test_readme_example_runs(line: int, code: str) -> None:
    env = dict(os.environ)
    env.pop("THREADPOLL_BACKEND", None)
    p = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=45,
    )
    assert p.returncode == 0, f"README.md line {line} exited {p.returncode}:\n{p.stderr}"
    # An exception in a thread does not change the exit status; it must not happen either.
    assert "Traceback" not in p.stderr, f"README.md line {line}:\n{p.stderr}"


def test_readme_relative_links_exist() -> None:
    if not os.path.isdir(os.path.join(ROOT, "threadpoll")):
        pytest.skip("README's links point into a checkout; this run tests an installed wheel")
    with open(README, encoding="utf-8") as f:
        text = f.read()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert local, "README.md links no file"
    missing = [link for link in local if not os.path.exists(os.path.join(ROOT, link))]
    assert not missing, f"README.md links files that do not exist: {missing}"
