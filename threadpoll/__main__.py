"""``python -m threadpoll``: ``demo``, ``trace`` and ``bench``.

    python -m threadpoll demo                 the five promises, each shown with its trace
    python -m threadpoll trace [SCENARIO]     one scenario's timeline, a column per thread
    python -m threadpoll trace --list         the scenarios
    python -m threadpoll trace data --json    the recorded events as JSON, for tools
    python -m threadpoll trace --list --json  the scenarios as JSON
    python -m threadpoll trace data --svg F   the timeline drawn as an SVG picture in F
    python -m threadpoll bench [...]          threadpoll against the alternatives
    python -m threadpoll --version            the installed version

``--backend NAME`` (demo, trace) runs on a fresh runtime of that backend instead of the
default one (which ``THREADPOLL_BACKEND`` also chooses).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from threadpoll._runtime.proc import Runtime

__all__ = ["main"]


def _version() -> str:
    from threadpoll import __version__

    return __version__


def _backend_env_problem() -> str | None:
    """One line saying what is wrong with $THREADPOLL_BACKEND, or None."""
    import os

    from threadpoll._runtime.proc import backend_names

    name = os.environ.get("THREADPOLL_BACKEND") or None
    if name is None or name in backend_names():
        return None
    return (
        f"THREADPOLL_BACKEND={name!r} is not a backend on this machine "
        f"(choose one of: {', '.join(backend_names())}, or unset it)"
    )


def _parser() -> argparse.ArgumentParser:
    from threadpoll._runtime.proc import backend_names
    from threadpoll._timeline import SCENARIOS

    p = argparse.ArgumentParser(
        prog="python -m threadpoll",
        description="Go's runtime network poller for OS threads: see it work.",
    )
    p.add_argument("--version", action="version", version=f"threadpoll {_version()}")
    sub = p.add_subparsers(dest="command", metavar="{demo,trace,bench}")
    sub.required = True
    backends = backend_names()

    demo = sub.add_parser("demo", help="show each of the five promises holding (exit 0 if all do)")
    demo.add_argument("--backend", choices=backends, help="run on this backend")

    tr = sub.add_parser(
        "trace",
        help="one scenario's state transitions as a timeline, one column per thread",
        description="Run a scenario and print the runtime's transitions, one column per "
        "thread. Scenarios: " + ", ".join(SCENARIOS) + ".",
    )
    tr.add_argument("scenario", nargs="?", default="data", help="the scenario (default: data)")
    tr.add_argument("--list", action="store_true", help="list the scenarios and exit")
    tr.add_argument("--json", action="store_true", help="print the events as JSON")
    tr.add_argument("--svg", metavar="FILE", help="draw the timeline as an SVG picture in FILE")
    tr.add_argument("--compact", action="store_true", help="leave out the poller's plumbing events")
    tr.add_argument("--backend", choices=backends, help="run on this backend")

    sub.add_parser(
        "bench",
        help="threadpoll against the stdlib and the alternatives (bench --help for options)",
        add_help=False,
    )
    return p


def _runtime(name: str | None) -> Runtime | None:
    """A fresh runtime of the named backend, or None for the default runtime. ``trace`` and
    ``demo`` show the Python runtime's transitions, so they always run on the Python runtime
    (the C core records none), whatever THREADPOLL_IMPL says."""
    from threadpoll._runtime import proc

    if name is None:
        if proc.get_runtime().impl == "python":
            return None
        name = os.environ.get("THREADPOLL_BACKEND") or proc.backend_names()[0]
    return proc.Runtime(proc.new_backend(name))


def _trace(args: argparse.Namespace) -> int:
    from threadpoll import _timeline

    if args.list and args.json:
        import json

        doc = [{"name": s.name, "title": s.title} for s in _timeline.SCENARIOS.values()]
        print(json.dumps(doc, indent=1))
        return 0
    if args.list:
        width = max(len(n) for n in _timeline.SCENARIOS)
        for s in _timeline.SCENARIOS.values():
            print(f"{s.name:{width}}  {s.title}")
        return 0
    if args.scenario not in _timeline.SCENARIOS:
        names = ", ".join(_timeline.SCENARIOS)
        print(f"unknown scenario {args.scenario!r}; choose one of: {names}", file=sys.stderr)
        return 2
    rt = _runtime(args.backend)
    try:
        result = _timeline.run(args.scenario, rt)
    except _timeline.ScenarioError as e:
        print(f"trace {args.scenario}: {e}", file=sys.stderr)
        return 1
    finally:
        if rt is not None:
            rt.shutdown()  # a runtime of its own: its poller and descriptors go with it
    if args.json:
        print(_timeline.to_json(result))
        return 0
    if args.svg:
        from threadpoll._svg import render_svg

        with open(args.svg, "w", encoding="utf-8") as f:
            f.write(render_svg(result))
        print(f"trace {result.name}: {len(result.events)} events drawn in {args.svg}")
        return 0
    title = _timeline.SCENARIOS[args.scenario].title
    print(textwrap.fill(f"trace {result.name}: {title}", width=79))
    about = f"backend {result.backend}, TCP over 127.0.0.1; {_timeline.fds_line(result)}"
    print(textwrap.fill(about, width=79))
    print("r/w: the pollDesc's read/write state (Go's rg/wg); parked is Go's G")
    print()
    print(_timeline.render(result, compact=args.compact))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    if argv is None:
        argv = sys.argv[1:]
    problem = _backend_env_problem()
    if problem is not None and not {"-h", "--help", "--version"} & set(argv):
        print(f"python -m threadpoll: {problem}", file=sys.stderr)
        return 2
    if argv and argv[0] == "bench":
        # Every option after "bench" is the benchmark's own; it is imported only when used.
        from threadpoll import bench

        return int(bench.main(argv[1:]))
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from threadpoll import _demo

        rt = _runtime(args.backend)
        try:
            return _demo.main(rt)
        finally:
            if rt is not None:
                rt.shutdown()
    return _trace(args)


if __name__ == "__main__":
    try:
        rc = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``... | head``): as the Python docs advise, point stdout at
        # devnull so the interpreter's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        rc = 1
    sys.exit(rc)
