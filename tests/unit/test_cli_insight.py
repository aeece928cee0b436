"""The terminal views of insight: an incident's timeline drawn with its budgets, the rules,
the figures. Rendered from the API's documents, as the CLI gets them."""

from __future__ import annotations

from datetime import timedelta

from rich.console import Console

from tests.support.traces import T0
from vimha.cli_insight import (
    incidents_table,
    rules_view,
    seconds,
    subject_view,
    summary_view,
    timeline_view,
)
from vimha.config import load_rules
from vimha.domain import metrics as m
from vimha.domain.incidents import Affected, Entry, Incident, Kind, Stage, State, view


def render(thing: object) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(thing)
    return console.export_text()


def at(s: float) -> object:
    return T0 + timedelta(seconds=s)


def incident() -> Incident:
    e = [
        Entry(T0, Stage.FAILED, "cmp-3", "last heartbeat heard", "estimated"),
        Entry(T0 + timedelta(seconds=0.3), Stage.DETECTED, "cmp-3", "all planes lost"),
        Entry(T0 + timedelta(seconds=1.3), Stage.FENCED, "cmp-3", "ForceOff confirmed"),
        Entry(T0 + timedelta(seconds=1.5), Stage.PLACED, "i-1", "vm on cmp-1"),
        Entry(T0 + timedelta(seconds=2.5), Stage.BOOTED, "i-1", "vm ACTIVE"),
        Entry(T0 + timedelta(seconds=3.0), Stage.SERVING, "i-1", "answers", "reported"),
    ]
    return Incident(
        "0f0e0d0c-1111-2222-3333-444455556666",
        Kind.HOST,
        "cmp-3",
        "HOST_HW_FAILURE on cmp-3",
        State.RECOVERED,
        T0 + timedelta(seconds=0.3),
        "a-1",
        ("a-1",),
        (Affected("i-1", "cmp-3", 1, "vfw-fw-0"),),
        tuple(e),
        recovered_at=T0 + timedelta(seconds=3),
    )


def test_an_incident_is_drawn_on_a_time_bar_with_its_budgets() -> None:
    doc = view(incident(), {"fence": 0.5, "total": 5.0}, "http://vim")
    text = render(timeline_view(doc, width=11))
    assert "incident 0f0e0d0c-1111-2222-3333-444455556666  HOST  HOST_HW_FAILURE on cmp-3" in text
    lines = text.splitlines()
    failed = next(line for line in lines if " failed " in line)
    serving = next(line for line in lines if " serving " in line)
    assert failed.startswith("+0.000 s  ●")  # at the start of the bar
    assert "··········●" in serving and "vfw-fw-0" in serving and "(reported)" in serving
    fence = next(line for line in lines if line.startswith("fence "))
    assert "1.000 s" in fence and "███████████ 200 %" in fence  # over: the bar is full
    total = next(line for line in lines if line.startswith("total "))
    assert "3.000 s" in total and "5.000 s" in total and "60 %" in total
    listed = render(incidents_table([doc]))
    assert "0f0e0d0c" in listed and "RECOVERED" in listed and "fence" in listed


def test_rules_and_figures_views() -> None:
    rules = load_rules(None, ("site", "zone", "rack", "host")).to_dict()
    text = render(rules_view({"file": "shipped", "lastError": "oops", **rules}))
    assert "SUSPECTED_LATENT_HW_FAULT (MAJOR)" in text and "3 (2+ instances)" in text
    assert "skipped (no such level): power-domain-failure, power-domain" in text
    assert "last reload failed: oops" in text
    now = T0 + timedelta(hours=1)
    record = m.Record(
        (m.Span(T0, None),),
        (m.Outage(T0 + timedelta(seconds=10), T0 + timedelta(seconds=13.6), "X on y", "state"),),
    )
    fig = m.figures(record, "1h", timedelta(hours=1), now).to_dict()
    text = render(
        subject_view(
            {"windows": {"1h": fig}, "outages": [o.to_dict(now) for o in record.outages]},
            "instance vm",
        )
    )
    assert "99.90000 %" in text and "3.600 s" in text and "X on y" in text
    summary = {
        "window": "1h",
        "sals": [
            {"sal": "LEVEL_1", "vnfs": 1, "instanceCount": 2, "service": fig, "instances": fig}
        ],
        "vnfs": [{"name": "vfw", "sal": "LEVEL_1", "service": fig}],
        "hosts": [{"host": "cmp-1", **fig, "instanceFailures": 2}],
        "incidents": {"window": "1h", "opened": 0, "open": 0, "stages": {}},
    }
    assert "vfw" in render(summary_view(summary))
    assert [seconds(x) for x in (None, 1.5, 600, 7200, 200000)] == [
        "-",
        "1.500 s",
        "10.0 min",
        "2.0 h",
        "2.3 d",
    ]
