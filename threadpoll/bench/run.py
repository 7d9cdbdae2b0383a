"""Running the cases (interleaved rounds, each run guarded by a thread and a hard time limit),
describing the machine, the output, and the entry point ``main``."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import threading
import time
from typing import Any

from threadpoll.bench.common import (
    SCENARIOS,
    Case,
    CaseResult,
    Outcome,
    RunCtx,
    Skip,
    Unavailable,
    Variant,
    VariantResult,
    _child_main,
    _import,
    _nofile_raised,
    _percentile,
    _shutdown_impl_runtimes,
)
from threadpoll.bench.registry import _GLOBAL_BUDGET_S, _cases


def _run_guarded(v: Variant, ctx: RunCtx, label: str) -> tuple[str, Outcome | None, str]:
    """Run ``v`` in a daemon thread; (status, outcome, reason). status "hung" when it did not
    finish within ctx.hard_s (its thread is left behind)."""
    box: list[tuple[str, Outcome | None, str]] = []

    def target() -> None:
        try:
            box.append(("ok", v.run(ctx), ""))
        except (Unavailable, ImportError) as e:
            box.append(
                (
                    "unavailable",
                    None,
                    f"unavailable: {type(e).__name__}: {e}"
                    if isinstance(e, ImportError)
                    else str(e),
                )
            )
        except Skip as e:
            box.append(("skipped", None, str(e)))
        except BaseException as e:
            box.append(("error", None, f"{type(e).__name__}: {e}"))

    gc.collect()
    t = threading.Thread(target=target, name=f"bench {label}", daemon=True)
    t.start()
    t.join(ctx.hard_s + 2.0)
    if not box:
        return "hung", None, f"did not finish within {ctx.hard_s:.0f} s (thread left running)"
    return box[0]


def _run_case(
    case: Case, quick: bool, global_deadline: float, disabled: dict[str, str]
) -> CaseResult:
    results = [VariantResult(v.name, note=v.note) for v in case.variants]
    cr = CaseResult(case, results)
    skip = case.requires()
    if skip:
        cr.skipped = skip
        return cr
    runnable: list[tuple[Variant, VariantResult]] = []
    for v, vr in zip(case.variants, results):
        reason = v.probe()
        if reason is not None:
            vr.status, vr.reason = "unavailable", reason
        else:
            runnable.append((v, vr))
    t_case = time.monotonic()
    for r in range(case.rounds):
        if r > 0 and time.monotonic() - t_case > case.budget_s:
            cr.note = f"case time budget: ran {r} of {case.rounds} rounds"
            break
        shift = r % len(runnable) if runnable else 0
        for v, vr in runnable[shift:] + runnable[:shift]:
            if time.monotonic() > global_deadline:
                cr.note = f"the run's time budget ran out in round {r + 1}"
                break
            if vr.status != "ok":
                continue
            if v.name in disabled:
                vr.status, vr.reason = "skipped", disabled[v.name]
                continue
            hard_s = min(case.hard_s, max(global_deadline - time.monotonic(), 1.0))
            ctx = RunCtx(dict(case.params), case.window_s, case.max_ops, hard_s, quick)
            status, out, reason = _run_guarded(v, ctx, f"{case.id} / {v.name}")
            if status == "hung":
                disabled[v.name] = f"disabled: hung earlier in {case.id}"
                status = "error"
            if out is None:
                vr.status, vr.reason = status, reason
                continue
            if out.value is not None:
                vr.values.append(out.value)
            vr.samples.extend(out.samples)
            if out.note and out.note not in vr.notes:
                vr.notes.append(out.note)
            for key, x in out.extra.items():
                vr.extras.setdefault(key, []).append(x)
        else:
            cr.rounds_run = r + 1
            continue
        break
    cr.elapsed_s = time.monotonic() - t_case
    _aggregate(cr)
    return cr


def _aggregate(cr: CaseResult) -> None:
    for vr in cr.variants:
        if vr.values:
            vr.median = statistics.median(vr.values)
        if vr.samples:
            xs = sorted(vr.samples)
            vr.p50, vr.p99 = _percentile(xs, 0.50), _percentile(xs, 0.99)
            vr.median = vr.p50
    base = next((vr for vr in cr.variants if vr.name == cr.case.baseline), None)
    for vr in cr.variants:
        if base is None:
            break
        if vr.median is not None and base.median:
            vr.ratio = vr.median / base.median
        if vr.p99 is not None and base.p99:
            vr.ratio_p99 = vr.p99 / base.p99


# ---------------------------------------------------------------------------------------------
# Describing the machine, and the output.


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Hardware", "Processor")):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version_of(dist: str) -> str:
    if importlib.util.find_spec(dist) is None:
        return "not installed"
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "installed"


def _threadpoll_backend() -> str:
    try:
        return str(_import("threadpoll.lowlevel").backend())
    except Exception as e:
        return f"unavailable ({type(e).__name__}: {e})"


def describe_machine() -> dict[str, Any]:
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    gil: bool = bool(is_gil_enabled()) if callable(is_gil_enabled) else True
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    nofile: list[int] | None = None
    with contextlib.suppress(ImportError):
        import resource

        nofile = list(resource.getrlimit(resource.RLIMIT_NOFILE))
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python_implementation": platform.python_implementation(),
        "python_version": platform.python_version(),
        "python_build": " ".join(platform.python_build()),
        "python_compiler": platform.python_compiler(),
        "executable": sys.executable,
        "gil_enabled": gil,
        "free_threaded_build": bool(_sysconfig_var("Py_GIL_DISABLED")),
        "threadpoll_backend": _threadpoll_backend(),
        "trio": _version_of("trio"),
        "gevent": _version_of("gevent"),
        "rlimit_nofile": nofile,
    }


def _sysconfig_var(name: str) -> object:
    import sysconfig

    return sysconfig.get_config_var(name)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _variant_note(vr: VariantResult) -> str:
    parts = []
    if vr.status != "ok":
        parts.append(vr.reason if vr.status == "unavailable" else f"{vr.status}: {vr.reason}")
    if vr.note:
        parts.append(vr.note)
    parts += vr.notes
    cpu = vr.extras.get("cpu_us_per_req")
    if cpu:
        parts.append(f"cpu/req {statistics.median(cpu):.0f} us (process)")
    sw = vr.extras.get("ctxsw_per_req")
    if sw:
        parts.append(f"ctx switches/req {statistics.median(sw):.1f}")
    text = "; ".join(parts)
    return text if len(text) <= 110 else text[:107] + "..."


def render_header(machine: dict[str, Any], quick: bool) -> str:
    m = machine
    aff = f", {m['cpu_affinity']} usable" if m["cpu_affinity"] is not None else ""
    load = " ".join(f"{x:.2f}" for x in m["loadavg"]) if m["loadavg"] else "n/a"
    gil = "enabled" if m["gil_enabled"] else "disabled"
    if m["free_threaded_build"]:
        gil += " (free-threaded build)"
    return "\n".join(
        [
            f"threadpoll bench{' --quick (smoke run: numbers are rough)' if quick else ''}",
            f"machine:    {m['platform']} {m['machine']}; {m['cpu_model']}; "
            f"{m['cpu_count']} CPUs{aff}; load {load}",
            f"python:     {m['python_implementation']} {m['python_version']} "
            f"({m['python_build']}) [{m['python_compiler']}]; GIL {gil}",
            f"threadpoll: backend {m['threadpoll_backend']}",
            f"others:     trio {m['trio']}; gevent {m['gevent']}; "
            f"RLIMIT_NOFILE {m['rlimit_nofile']}",
            "method:     interleaved rounds (order rotated each round); median of rounds "
            "(latency: samples pooled);",
            "            ratio = variant / the case's stdlib baseline. Noise is +-15-25%.",
        ]
    )


def render_case(cr: CaseResult) -> str:
    c = cr.case
    better = "higher is better" if c.kind == "rate" else "lower is better"
    lines = [
        f"== {c.id}: {c.title}",
        f"   {c.measure}, {better}; ratio to {c.baseline}; "
        f"{cr.rounds_run} round(s), {cr.elapsed_s:.1f} s" + (f"; {cr.note}" if cr.note else ""),
    ]
    if cr.skipped:
        lines.append(f"   skipped: {cr.skipped}")
        return "\n".join(lines)
    rows: list[tuple[str, ...]]
    if c.kind == "latency":
        rows = [("variant", f"p50 {c.unit}", f"p99 {c.unit}", "x p50", "x p99", "n", "note")]
        for vr in cr.variants:
            never = vr.status == "ok" and not vr.samples
            rows.append(
                (
                    vr.name,
                    "never" if never else _fmt(vr.p50),
                    "never" if never else _fmt(vr.p99),
                    _fmt_ratio(vr.ratio),
                    _fmt_ratio(vr.ratio_p99),
                    str(len(vr.samples)),
                    _variant_note(vr),
                )
            )
    else:
        rows = [("variant", f"median {c.unit}", "ratio", "note")]
        for vr in cr.variants:
            rows.append((vr.name, _fmt(vr.median), _fmt_ratio(vr.ratio), _variant_note(vr)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for j, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(w) for cell, w in zip(row[1:-1], widths[1:])
        ]
        lines.append(("   " + "  ".join(cells + [row[-1]])).rstrip())
        if j == 0:
            lines.append("   " + "  ".join("-" * w for w in widths) + "  ----")
    return "\n".join(lines)


def _case_json(cr: CaseResult) -> dict[str, Any]:
    c = cr.case
    return {
        "id": c.id,
        "scenario": c.scenario,
        "title": c.title,
        "kind": c.kind,
        "unit": c.unit,
        "measure": c.measure,
        "better": "higher" if c.kind == "rate" else "lower",
        "baseline": c.baseline,
        "params": c.params,
        "rounds_planned": c.rounds,
        "rounds_run": cr.rounds_run,
        "elapsed_s": round(cr.elapsed_s, 3),
        "skipped": cr.skipped or None,
        "note": cr.note,
        "variants": [
            {
                "name": vr.name,
                "status": vr.status,
                "reason": vr.reason,
                "note": "; ".join(filter(None, [vr.note, *vr.notes])),
                "median": vr.median,
                "p50": vr.p50,
                "p99": vr.p99,
                "ratio": vr.ratio,
                "ratio_p99": vr.ratio_p99,
                "rounds": vr.values,
                "samples": vr.samples,
                "extra": {k: statistics.median(xs) for k, xs in vr.extras.items()},
                "extra_rounds": vr.extras,
            }
            for vr in cr.variants
        ],
    }


# ---------------------------------------------------------------------------------------------
# Entry point


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m threadpoll bench",
        description="Benchmark threadpoll against stdlib sockets, selectors, asyncio, trio "
        "and gevent, in one run, as ratios to the stdlib.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run (CI): few rounds, short windows, under a minute",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument(
        "--only",
        nargs="+",
        metavar="SCENARIO",
        choices=SCENARIOS,
        help=f"run only these scenarios: {', '.join(SCENARIOS)}",
    )
    p.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="interleaved rounds per case (default: 2 quick, 3-5 full)",
    )
    p.add_argument("--_child", help=argparse.SUPPRESS)
    return p


def _json_path_problem(path: str) -> str | None:
    """Why the results could not be written to ``path``, or None if they can."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "is a directory"
    if not os.path.isdir(parent):
        return f"directory {parent} does not exist"
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            return "is not writable"
    elif not os.access(parent, os.W_OK | os.X_OK):
        return f"directory {parent} is not writable"
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args._child:
        return _child_main(args._child)
    if args.rounds is not None and args.rounds < 1:
        _parser().error("--rounds must be at least 1")
    if args.json:
        problem = _json_path_problem(args.json)
        if problem:  # say so now, not after minutes of measuring
            _parser().error(f"--json {args.json}: {problem}")
    quick: bool = args.quick
    only: list[str] = args.only or list(SCENARIOS)
    started = time.monotonic()
    started_utc = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    global_deadline = started + _GLOBAL_BUDGET_S[quick]
    results: list[CaseResult] = []
    disabled: dict[str, str] = {}
    with _nofile_raised():
        machine = describe_machine()
        print(render_header(machine, quick), flush=True)
        try:
            for case in _cases(quick, args.rounds, only):
                if time.monotonic() > global_deadline:
                    cr = CaseResult(
                        case,
                        [VariantResult(v.name) for v in case.variants],
                        skipped="the run's global time budget is spent",
                    )
                else:
                    cr = _run_case(case, quick, global_deadline, disabled)
                results.append(cr)
                print("\n" + render_case(cr), flush=True)
        finally:
            _shutdown_impl_runtimes()
    errors = sum(vr.status == "error" for cr in results for vr in cr.variants)
    elapsed = time.monotonic() - started
    print(
        f"\ndone in {elapsed:.1f} s" + (f"; {errors} variant(s) failed" if errors else ""),
        flush=True,
    )
    if args.json:
        doc = {
            "schema": "threadpoll-bench/1",
            "started_utc": started_utc,
            "elapsed_s": round(elapsed, 3),
            "quick": quick,
            "only": only,
            "machine": machine,
            "errors": errors,
            "cases": [_case_json(cr) for cr in results],
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    return 1 if errors else 0
