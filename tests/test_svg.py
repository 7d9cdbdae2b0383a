"""``python -m threadpoll trace SCENARIO --svg FILE``: the timeline as an SVG picture.

The picture must be well-formed XML and carry every event of the text timeline, in order,
each on its thread's lane, with the pollDesc bands and the wake/park arrows.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from threadpoll import _timeline
from threadpoll.__main__ import main
from threadpoll._runtime.proc import Runtime
from threadpoll._svg import render_svg

NS = "{http://www.w3.org/2000/svg}"
# The timelines trace the Python runtime (tracing is the Python runtime's), as test_timeline.
pytestmark = [pytest.mark.timeout(60), pytest.mark.python_runtime]


def _events(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{NS}g") if g.get("class") == "event"]


def _label(g: ET.Element) -> str:
    texts = [t for t in g.iter(f"{NS}text") if t.get("class") == "label"]
    assert len(texts) == 1
    return texts[0].text or ""


@pytest.mark.parametrize("name", list(_timeline.SCENARIOS))
def test_svg_carries_every_event_of_the_text_timeline(rt: Runtime, name: str) -> None:
    result = _timeline.run(name, rt)
    root = ET.fromstring(render_svg(result))  # well-formed, or this raises
    assert root.tag == f"{NS}svg"
    groups = _events(root)

    # The text timeline: a header, then one line per event (nothing elided when not compact).
    lines = _timeline.render(result).splitlines()[1:]
    assert len(groups) == len(lines) == len(result.events)
    for g, line, ev in zip(groups, lines, result.events):
        label = _label(g)
        shown = line[9:].strip()  # the text after the milliseconds column
        if shown.endswith(".."):
            assert label.startswith(shown[:-2]), (label, line)
        else:
            assert label == shown, (label, line)
        assert g.get("data-kind") == ev.kind
        assert g.get("data-thread") == result.label(ev)
        ms = float(line[:9])
        assert abs(float(g.get("data-us", "nan")) / 1000 - ms) < 0.002, (g.attrib, line)

    # A band per pollDesc mode that changed state, and a wake arrow per cross-thread wake.
    heads = {t.text for t in root.iter(f"{NS}text")}
    for ev in result.events:
        if ev.kind == "state":
            assert f"fd{ev.fd} {ev.mode}" in heads
    parks = [e for e in root.iter(f"{NS}line") if e.get("class") == "park"]
    assert len(parks) == sum(ev.kind == "park" for ev in result.events)
    wakes = [e for e in root.iter(f"{NS}path") if e.get("class") == "wake"]
    if name in ("data", "close", "one-poller", "backpressure"):
        assert wakes, "a parked thread was woken by another thread: an arrow must show it"


def test_trace_svg_command_writes_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "data.svg"
    assert main(["trace", "data", "--svg", str(path)]) == 0
    root = ET.parse(path).getroot()
    assert len(_events(root)) > 5
    assert str(path) in capsys.readouterr().out
