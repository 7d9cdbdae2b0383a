"""Build the optional C core (threadpoll._cpoll).

Everything else about the package is in pyproject.toml. The extension is optional: where it
cannot be built (no C compiler, no Python headers, a platform with neither epoll nor kqueue)
``pip install`` still succeeds and threadpoll runs on its Python runtime, saying so once at
import (threadpoll/_runtime/impl.py). ``THREADPOLL_CFLAGS`` adds compiler flags (CI sets
``-Werror``; the sanitizer script adds ``-fsanitize=address,undefined``).
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_SOURCES = [
    "threadpoll/_c/netpoll.c",
    "threadpoll/_c/netpoll_epoll.c",
    "threadpoll/_c/netpoll_kqueue.c",
    "threadpoll/_c/fd_mutex.c",
    "threadpoll/_c/fd_unix.c",
]


class OptionalBuildExt(build_ext):
    """build_ext that reports a failed build instead of failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - any build failure leaves the Python runtime
            self._skip(e)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            if os.environ.get("THREADPOLL_REQUIRE_C") == "1":
                raise
            self._skip(e)

    def _skip(self, e: BaseException) -> None:
        if os.environ.get("THREADPOLL_REQUIRE_C") == "1":
            raise e
        print(
            f"threadpoll: the C core was not built ({e}); the Python runtime will be used",
            file=sys.stderr,
        )


_cflags = ["-std=c11", "-Wall", "-Wextra"] + os.environ.get("THREADPOLL_CFLAGS", "").split()
_ext = (
    []
    if sys.platform == "win32"
    else [
        Extension(
            "threadpoll._cpoll",
            sources=_SOURCES,
            depends=["threadpoll/_c/netpoll.h"],
            extra_compile_args=_cflags,
            extra_link_args=[f for f in _cflags if f.startswith("-fsanitize")],
            optional=True,
        )
    ]
)

setup(ext_modules=_ext, cmdclass={"build_ext": OptionalBuildExt})
