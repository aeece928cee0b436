"""The rendering logic of the incidents, HA metrics and maintenance pages (pure functions):
an incident's stages laid end to end, the charts' configurations, the maintenance forms'
parsing, the plan and session views; and that every chart configuration is plain JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vimha.api.ui.incidents import row, stage_bars, timeline_chart, when
from vimha.api.ui.maintenance import parse_hosts, parse_window, plan_view
from vimha.api.ui.maintenance import row as session_row
from vimha.api.ui.metrics import (
    availability_chart,
    outage_chart,
    percent,
    recent_chart,
    sal_rows,
    stages_chart,
)
from vimha.domain.errors import InvalidInput
from vimha.domain.incidents import SPANS


def budget(stage: str, seconds: float | None, target: float | None = 1.0) -> dict[str, Any]:
    over = seconds is not None and target is not None and seconds > target
    return {"stage": stage, "seconds": seconds, "targetSeconds": target, "over": over}


def figures(availability: float | None, outage: float = 0.0, failures: int = 0) -> dict[str, Any]:
    return {
        "availability": availability,
        "nines": None,
        "outageSeconds": outage,
        "failures": failures,
        "mttrSeconds": None,
        "mtbfSeconds": None,
    }


TOTAL = budget("total", 9.0)


@pytest.mark.parametrize(
    ("budgets", "expected"),
    [
        ([], []),
        (  # each span starts where the previous one ended
            [budget("detect", 0.4), budget("fence", 1.1), budget("place", 0.2)],
            [("detect", 0.0, 0.4), ("fence", 0.4, 1.5), ("place", 1.5, 1.7)],
        ),
        (  # a span not measured yet has no bar; `total` is not a stage
            [budget("detect", 0.3), budget("fence", None), budget("boot", 2.0), TOTAL],
            [("detect", 0.0, 0.3), ("boot", 0.3, 2.3)],
        ),
    ],
)
def test_stages_are_laid_end_to_end(
    budgets: list[dict[str, Any]], expected: list[tuple[str, float, float]]
) -> None:
    assert [(b["stage"], b["start"], b["end"]) for b in stage_bars(budgets)] == expected


def test_the_timeline_chart_marks_a_stage_over_its_target() -> None:
    assert timeline_chart([]) is None
    spans = [budget("detect", 0.4, 0.5), budget("fence", 3.0, 2.0), budget("boot", 1.0, None)]
    bars = stage_bars(spans)
    chart = timeline_chart(bars)
    assert chart is not None
    took, target = chart["data"]["datasets"]
    assert took["backgroundColor"] == ["#1f9d55", "#d93025", "#1f9d55"]
    assert target["data"] == [[0.0, 0.5], [0.4, 2.4], None]  # no target: no grey bar
    json.dumps(chart, allow_nan=False)


def test_an_incident_row() -> None:
    inc = {
        "id": "i",
        "kind": "HOST",
        "subject": "cmp-1",
        "title": "cmp-1 failed",
        "state": "OPEN",
        "openedAt": "2025-01-02T03:04:05.678Z",
        "affectedInstances": [{"instanceId": "a"}],
        "budgets": [budget("fence", 3.0, 2.0), budget("total", 4.0, 5.0)],
    }
    r = row(inc)
    assert r["opened"] == "2025-01-02 03:04:05" and r["total"] == 4.0 and r["target"] == 5.0
    assert r["over"] == ["fence"] and r["affected"] == 1
    assert when(None) == "" and when("") == ""


def test_availability_axis_starts_under_the_lowest() -> None:
    assert availability_chart([]) is None
    assert availability_chart([{"name": "x", "service": figures(None)}]) is None
    vnfs = [
        {"name": "vfw", "service": figures(0.999)},
        {"name": "vlb", "service": figures(1.0)},
    ]
    chart = availability_chart(vnfs)
    assert chart is not None
    assert chart["data"]["labels"] == ["vfw", "vlb"]  # the worst first
    assert chart["data"]["datasets"][0]["data"] == [99.9, 100.0]
    assert 99.0 <= chart["options"]["scales"]["y"]["min"] < 99.9
    assert chart["data"]["datasets"][0]["backgroundColor"] == ["#d99a00", "#1f9d55"]
    low = availability_chart([{"name": "bad", "service": figures(0.5)}])
    assert low is not None and low["options"]["scales"]["y"]["min"] == pytest.approx(24.99)


def test_outages_keep_the_worst_twenty_with_any() -> None:
    vnfs = [{"name": "vfw", "service": figures(0.9, 30.0, 1)}]
    hosts = [
        {"host": f"cmp-{i}", "outageSeconds": float(i), "failures": 1 if i else 0}
        for i in range(40)
    ]
    chart = outage_chart(vnfs, hosts)
    assert chart is not None
    labels = chart["data"]["labels"]
    assert len(labels) == 20 and labels[:2] == ["host cmp-39", "host cmp-38"]
    assert "VNF vfw" in labels and "host cmp-0" not in labels
    assert outage_chart([], [{"host": "h", "outageSeconds": 0.0, "failures": 0}]) is None


def test_stage_times_against_targets() -> None:
    empty = {s: {"count": 0} for s in SPANS}
    assert stages_chart({"stages": empty}) is None
    per = {
        s: {"count": 2, "meanSeconds": 1.0, "p50Seconds": 0.9, "p99Seconds": 1.4,
            "maxSeconds": 1.5, "targetSeconds": 2.0}
        for s in SPANS
    }  # fmt: skip
    chart = stages_chart({"stages": per})
    assert chart is not None
    labels = [d["label"] for d in chart["data"]["datasets"]]
    assert labels == ["p50", "mean", "p99", "max", "target"]
    assert chart["data"]["datasets"][-1]["type"] == "line"


def test_recent_incidents_stacked_oldest_first() -> None:
    def inc(subject: str, at: str, detect: float | None) -> dict[str, Any]:
        return {"subject": subject, "openedAt": at, "budgets": [budget("detect", detect)]}

    rows = [inc("cmp-2", "2025-01-01T10:00:02Z", 0.3), inc("cmp-1", "2025-01-01T10:00:01Z", 0.2),
            inc("cmp-3", "2025-01-01T10:00:00Z", None)]  # fmt: skip
    chart = recent_chart(rows)
    assert chart is not None
    assert chart["data"]["labels"] == ["10:00:01 cmp-1", "10:00:02 cmp-2"]
    assert chart["data"]["datasets"][0]["data"] == [0.2, 0.3]
    assert recent_chart([]) is None


def test_sal_rows() -> None:
    sals = [{"sal": "LEVEL_1", "vnfs": 2, "instanceCount": 5,
             "service": figures(0.99999), "instances": figures(None)}]  # fmt: skip
    service, instances = sal_rows(sals)
    assert service["level"] == "VNF service" and service["count"] == 2
    assert service["availability"] == 99.999 and instances["availability"] is None
    assert percent(None) is None


@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        ("cmp-1", ("cmp-1",)),
        (" cmp-2, cmp-1 ,cmp-2\ncmp-3 ", ("cmp-2", "cmp-1", "cmp-3")),  # order kept, once
        ("", ()),
    ],
)
def test_hosts_of_the_form(text: str, hosts: tuple[str, ...]) -> None:
    assert parse_hosts(text) == hosts


@pytest.mark.parametrize(("text", "seconds"), [("", None), (" 600 ", 600.0), ("0", 0.0)])
def test_host_window(text: str, seconds: float | None) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-1", "700000"])
def test_host_window_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_window(text)


def test_plan_and_session_views() -> None:
    plan = {
        "feasible": False,
        "refusals": ["vfw: disruption budget keeps at least 1 serving"],
        "hosts": [
            {"host": "cmp-1", "instances": [
                {"instanceId": "i", "name": "", "migrationPolicy": "cold",
                 "defaultAction": "MIGRATE", "expectedHost": None, "reason": "r"}]},
            {"host": "cmp-2", "instances": []},
        ],
    }  # fmt: skip
    v = plan_view(plan)
    assert not v["feasible"] and v["refusals"]
    assert v["hosts"][0]["instances"][0] == {
        "name": "i", "policy": "cold", "default": "MIGRATE", "to": "", "reason": "r"
    }  # fmt: skip
    assert plan_view({}) == {"feasible": True, "refusals": [], "hosts": []}
    session = {
        "id": "0123456789abcdef",
        "hosts": ["cmp-1", "cmp-2"],
        "state": "ABORTED",
        "hostStates": {"cmp-1": "DONE", "cmp-2": "SKIPPED"},
        "createdBy": "admin",
        "createdAt": "2025-01-01T10:00:00Z",
        "startAt": "2025-01-01T10:00:00Z",
    }
    r = session_row(session)
    assert r["short"] == "01234567" and r["final"] and r["done"] == 2
