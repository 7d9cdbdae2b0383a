"""The public API's types, checked by mypy --strict on small programs a user would write.

``write()`` and friends take ``typing_extensions.Buffer``, so ``conn.write("text")`` is a type
error; addresses are typed, so what ``remote_addr`` returns can be unpacked without ``Any``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import threadpoll

pytest.importorskip("mypy")
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

GOOD = """
from __future__ import annotations
import threadpoll
from threadpoll.net import Addr, dial

def use(conn: threadpoll.Conn, f: threadpoll.File) -> None:
    conn.write(b"x")
    conn.write(bytearray(b"x"))
    conn.write(memoryview(b"x"))
    f.write(b"x")
    conn.read_into(bytearray(4))
    addr: Addr = conn.remote_addr
    if isinstance(addr, tuple) and len(addr) == 2:
        host, port = addr
        reveal_type(port)

c = dial("tcp", ("127.0.0.1", 80))
"""

BAD = """
import threadpoll

def use(conn: threadpoll.Conn, f: threadpoll.File, p: threadpoll.PacketConn) -> None:
    conn.write("text")
    f.write("text")
    p.write_to("text", ("127.0.0.1", 9))
    conn.write(5)
"""


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    prog = tmp_path / "prog.py"
    prog.write_text(source, encoding="utf-8")
    env = dict(os.environ)
    # An editable install is an import hook mypy cannot follow: point it at the checkout.
    # An installed wheel is found in site-packages (it ships py.typed).
    root = Path(threadpoll.__file__).resolve().parent.parent
    if root.name not in ("site-packages", "dist-packages"):
        env["MYPYPATH"] = str(root)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--python-version",
            "3.9",
            "--config-file",
            os.devnull,
            str(prog),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=280,
    )


def test_public_api_accepts_buffers_and_types_addresses(tmp_path: Path) -> None:
    r = _mypy(tmp_path, GOOD)
    assert r.returncode == 0, r.stdout
    assert re.search(r'Revealed type is "(builtins\.)?int"', r.stdout), r.stdout


def test_write_of_str_or_int_is_a_type_error(tmp_path: Path) -> None:
    r = _mypy(tmp_path, BAD)
    assert r.returncode == 1, r.stdout
    errors = [line for line in r.stdout.splitlines() if ": error:" in line]
    assert [int(line.split(":")[1]) for line in errors] == [5, 6, 7, 8], r.stdout
    assert all("Buffer" in line for line in errors), r.stdout
