"""A timeline drawn as SVG: ``python -m threadpoll trace SCENARIO --svg FILE``.

The picture carries exactly the events of the text timeline (``_timeline.render``, not
compact), in the same order, one row each:

- a lane per thread (the scenario's threads, then the poller), each event written on the
  lane of the thread that recorded it; the time since the start, in microseconds, on the
  left. Rows are events in order, not a linear time scale: the interesting events of a
  scenario happen within microseconds of each other and seconds apart, and a linear axis
  would pile them on one another.
- on the right, one band per pollDesc mode (``fd6 r`` is Go's ``rg`` of descriptor 6, ``fd6
  w`` its ``wg``), coloured by its state from row to row: pdNil, pdWait, parked (Go's G),
  pdReady.
- arrows: a thread that parks points at the band it sleeps on; the thread that wakes it
  (the poller's ``netpollready``, a ``close()``, a deadline setter) points at the parked
  thread's ``unpark``. While parked, a lane is drawn dashed.

Go: none (Go's ``go tool trace`` draws goroutine timelines from runtime/trace.go records)
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from threadpoll._runtime.trace import TraceEvent
from threadpoll._timeline import SCENARIOS, Result, describe, fds_line

__all__ = ["render_svg", "STATE_COLOURS"]

#: The fill of each pollDesc state in the bands (and the legend).
STATE_COLOURS = {
    "pdNil": "#e9ecef",
    "pdWait": "#ffd166",
    "parked": "#ef476f",
    "pdReady": "#06d6a0",
}

_ROW = 20  # px per event row
_TOP = 92  # the first row's baseline region starts here (title, subtitle, lane names)
_LEFT = 84  # the time column
_LANE_W = 212  # px per thread lane
_BAND_W = 46  # px per pollDesc band
_BAND_GAP = 6
_CHAR_W = 6.6  # px per character of the 11 px monospace labels
_FONT = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace"


def _lanes(result: Result) -> list[str]:
    lanes = list(result.columns)
    for ev in result.events:
        lab = result.label(ev)
        if lab not in lanes:
            lanes.append(lab)
    return lanes


def _band_keys(events: list[TraceEvent]) -> list[tuple[int, str]]:
    keys: list[tuple[int, str]] = []
    for ev in events:
        if ev.kind == "state" and ev.fd >= 0 and ev.mode in ("r", "w"):
            key = (ev.fd, ev.mode)
            if key not in keys:
                keys.append(key)
    return sorted(keys)


def _fit(text: str, px: float) -> str:
    room = int(px / _CHAR_W)
    return text if len(text) <= room else text[: max(room - 1, 1)] + "…"


def render_svg(result: Result) -> str:
    """The SVG document for one scenario run."""
    events = result.events
    lanes = _lanes(result)
    keys = _band_keys(events)
    primary = next(iter(result.fds.values()), -1)
    n = len(events)
    lane_x = {lab: _LEFT + i * _LANE_W + 14 for i, lab in enumerate(lanes)}
    bands_left = _LEFT + len(lanes) * _LANE_W + 10
    band_x = {k: bands_left + i * (_BAND_W + _BAND_GAP) for i, k in enumerate(keys)}
    # Wide enough for the bands' heading and the legend's 700 px.
    width = max(bands_left + len(keys) * (_BAND_W + _BAND_GAP) + 16, bands_left + 130, 720)
    legend_y = _TOP + n * _ROW + 28
    height = legend_y + 56

    def row_y(i: int) -> float:
        return _TOP + i * _ROW + _ROW / 2

    out: list[str] = []
    add = out.append
    add(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="{_FONT}" font-size="11">'
    )
    title = f"trace {result.name}: {SCENARIOS[result.name].title}"
    add(f"<title>{escape(title)}</title>")
    add(
        "<defs>"
        '<marker id="wake" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#118ab2"/></marker>'
        '<marker id="sleep" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#9d4edd"/></marker>'
        "</defs>"
    )
    add(f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>')
    add(f'<text x="12" y="24" font-size="15" font-weight="bold">{escape(title)}</text>')
    sub = f"backend {result.backend}, TCP over 127.0.0.1; {fds_line(result)}"
    add(f'<text x="12" y="44" fill="#495057">{escape(sub)}</text>')

    # Zebra rows, then the headers.
    for i in range(n):
        if i % 2:
            add(
                f'<rect x="0" y="{_TOP + i * _ROW}" width="{width}" height="{_ROW}" '
                'fill="#f8f9fa"/>'
            )
    head_y = _TOP - 12
    add(f'<text x="{_LEFT - 10}" y="{head_y}" text-anchor="end" font-weight="bold">µs</text>')
    for lab in lanes:
        add(
            f'<text x="{lane_x[lab] - 6}" y="{head_y}" font-weight="bold">'
            f"{escape(_fit(lab, _LANE_W - 12))}</text>"
        )
    for (fd, mode), x in band_x.items():
        name = f"fd{fd} {mode}"
        add(
            f'<text x="{x + _BAND_W / 2}" y="{head_y}" text-anchor="middle" '
            f'font-weight="bold">{escape(name)}</text>'
        )
    add(f'<text x="{bands_left}" y="{head_y - 16}" fill="#495057">pollDesc rg / wg</text>')

    # Lanes: solid, dashed while the thread is parked.
    asleep: dict[str, list[tuple[int, int]]] = {}
    park_row: dict[tuple[str, int, str], int] = {}
    for i, ev in enumerate(events):
        lab = result.label(ev)
        if ev.kind == "park":
            park_row[(lab, ev.fd, ev.mode)] = i
        elif ev.kind == "unpark":
            start = park_row.pop((lab, ev.fd, ev.mode), None)
            if start is not None:
                asleep.setdefault(lab, []).append((start, i))
    for (lab, _, _), start in park_row.items():  # parked to the end of the run
        asleep.setdefault(lab, []).append((start, n - 1))
    y_first, y_last = _TOP + 4, _TOP + n * _ROW - 4
    for lab in lanes:
        x = lane_x[lab]
        add(f'<line x1="{x}" y1="{y_first}" x2="{x}" y2="{y_last}" stroke="#adb5bd"/>')
        for a, b in asleep.get(lab, []):
            add(
                f'<line x1="{x}" y1="{row_y(a)}" x2="{x}" y2="{row_y(b)}" stroke="#ef476f" '
                'stroke-width="3" stroke-dasharray="4 3"/>'
            )

    # Park arrows, under the bands they pass: a parking thread points at its band.
    for i, ev in enumerate(events):
        lab = result.label(ev)
        if ev.kind == "park" and (ev.fd, ev.mode) in band_x:
            x0 = lane_x[lab] + 8 + len(describe(ev, primary)) * _CHAR_W + 6
            x1 = band_x[(ev.fd, ev.mode)] - 2
            add(
                f'<line class="park" x1="{x0}" y1="{row_y(i) - 4}" x2="{x1}" '
                f'y2="{row_y(i) - 4}" stroke="#9d4edd" stroke-opacity="0.55" '
                'stroke-width="1.5"/>'
            )

    # Bands: the state of each pollDesc mode from row to row.
    for key, x in band_x.items():
        changes = [
            (i, ev) for i, ev in enumerate(events) if ev.kind == "state" and (ev.fd, ev.mode) == key
        ]
        segments: list[tuple[int, int, str]] = [(0, changes[0][0], changes[0][1].old)]
        for j, (i, ev) in enumerate(changes):
            end = changes[j + 1][0] if j + 1 < len(changes) else n
            segments.append((i, end, ev.new))
        for a, b, state in segments:
            if b <= a:
                continue
            y0 = _TOP + a * _ROW + (_ROW / 2 if a else 0)
            y1 = _TOP + b * _ROW + (_ROW / 2 if b < n else 0)
            fill = STATE_COLOURS.get(state, "#ced4da")
            add(
                f'<rect x="{x}" y="{y0}" width="{_BAND_W}" height="{y1 - y0}" fill="{fill}" '
                f'stroke="#ffffff" stroke-width="1"><title>fd{key[0]} {key[1]}: '
                f"{escape(state)}</title></rect>"
            )
            if y1 - y0 >= _ROW:
                add(
                    f'<text x="{x + _BAND_W / 2}" y="{(y0 + y1) / 2 + 4}" '
                    f'text-anchor="middle" font-size="9">{escape(state)}</text>'
                )

    # The park arrows' heads, over the bands they pass, at the band each thread sleeps on.
    for i, ev in enumerate(events):
        if ev.kind == "park" and (ev.fd, ev.mode) in band_x:
            x1 = band_x[(ev.fd, ev.mode)] - 2
            add(
                f'<line x1="{x1 - 10}" y1="{row_y(i) - 4}" x2="{x1}" y2="{row_y(i) - 4}" '
                'stroke="#9d4edd" stroke-width="1.5" marker-end="url(#sleep)"/>'
            )

    # Wake arrows: the waker → the parked thread's unpark.
    for i, ev in enumerate(events):
        lab = result.label(ev)
        if ev.kind != "unpark":
            continue
        for j in range(i - 1, -1, -1):
            w = events[j]
            if w.kind == "state" and w.fd == ev.fd and w.mode == ev.mode and w.old == "parked":
                src = result.label(w)
                if src != lab:
                    x0, x1 = lane_x[src], lane_x[lab]
                    add(
                        f'<path class="wake" d="M{x0},{row_y(j)} C{x0},{row_y(j) + _ROW} '
                        f'{x1},{row_y(i) - _ROW} {x1},{row_y(i) - 5}" fill="none" '
                        'stroke="#118ab2" stroke-width="1.5" marker-end="url(#wake)"/>'
                    )
                break

    # The events, one per row: time on the left, the phrase on the thread's lane.
    for i, ev in enumerate(events):
        lab = result.label(ev)
        us = (ev.t - result.t0) * 1e6
        y = row_y(i) + 4
        text = describe(ev, primary)
        add(
            f'<g class="event" data-kind={quoteattr(ev.kind)} data-thread={quoteattr(lab)} '
            f'data-us="{us:.1f}">'
            f'<text x="{_LEFT - 10}" y="{y}" text-anchor="end" fill="#6c757d">{us:,.0f}</text>'
            f'<circle cx="{lane_x[lab]}" cy="{row_y(i)}" r="4" fill="{_dot(ev)}" '
            'stroke="#495057" stroke-width="0.8"/>'
            f'<text class="label" x="{lane_x[lab] + 9}" y="{y}" stroke="#ffffff" '
            f'stroke-width="3" stroke-opacity="0.85" paint-order="stroke">{escape(text)}</text>'
            "</g>"
        )

    # Legend.
    x = 12
    for state, colour in STATE_COLOURS.items():
        add(f'<rect x="{x}" y="{legend_y}" width="14" height="14" fill="{colour}"/>')
        label = "parked (Go's G)" if state == "parked" else state
        add(f'<text x="{x + 20}" y="{legend_y + 11}">{escape(label)}</text>')
        x += 40 + len(label) * int(_CHAR_W)
    y2 = legend_y + 34
    add(
        f'<line x1="12" y1="{y2 - 4}" x2="44" y2="{y2 - 4}" stroke="#118ab2" '
        'stroke-width="1.5" marker-end="url(#wake)"/>'
        f'<text x="52" y="{y2}">wakes a parked thread (ready → unpark)</text>'
        f'<line x1="330" y1="{y2 - 4}" x2="362" y2="{y2 - 4}" stroke="#9d4edd" '
        'stroke-width="1.5" marker-end="url(#sleep)"/>'
        f'<text x="370" y="{y2}">parks on that pollDesc mode</text>'
        f'<line x1="580" y1="{y2 - 4}" x2="600" y2="{y2 - 4}" stroke="#ef476f" '
        'stroke-width="3" stroke-dasharray="4 3"/>'
        f'<text x="608" y="{y2}">thread asleep</text>'
    )
    add("</svg>")
    return "\n".join(out) + "\n"


def _dot(ev: TraceEvent) -> str:
    if ev.kind == "state":
        return STATE_COLOURS.get(ev.new, "#495057")
    if ev.kind == "note":
        return "#212529"
    return "#adb5bd"
