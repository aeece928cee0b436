"""The HA metrics page's data (issue 20, VNF-4) over one window (`?window=1h|1d|30d`), the
figures of `GET /vim/v1/metrics` and `/vim/v1/metrics/incidents` drawn as charts by
Chart.js: availability of each VNF's service, outage time per VNF and per host, the
incidents' stage times (detection, fencing, placement, boot, serving, total: mean, p50, p99,
max) against their targets, and each recent incident's recovery stage by stage. Each chart
is a JSON configuration built here; `static/ui.js` draws it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from vimha.api.ui.incidents import STAGES, when
from vimha.domain.incidents import SPANS
from vimha.engine.runtime import Runtime

WINDOWS = ("1h", "1d", "30d")
BARS_MAX = 20  # VNFs or hosts in a chart: those with the most outage time
RECENT = 30  # incidents in the per-incident chart
STAGE_COLOURS = {
    "detect": "#d93025",
    "fence": "#8e1b1b",
    "place": "#3b7dd8",
    "boot": "#6d28d9",
    "serve": "#1f9d55",
}
STAT_COLOURS = {
    "p50Seconds": "#3b7dd8",
    "meanSeconds": "#64748b",
    "p99Seconds": "#d99a00",
    "maxSeconds": "#d93025",
}


def percent(a: float | None) -> float | None:
    return None if a is None else round(100 * a, 4)


def _options(y_title: str, **more: Any) -> dict[str, Any]:
    """Common options; `more` replaces whole keys (`scales=...`)."""
    return {
        "scales": {"y": {"beginAtZero": True, "title": {"display": True, "text": y_title}}},
        "plugins": {"legend": {"position": "bottom"}},
        **more,
    }


def availability_chart(vnfs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The availability (%) of each VNF's service; the axis starts just under the lowest,
    so that 99.9 and 100 do not look the same."""
    rows = [
        (v["name"], percent(v["service"]["availability"]))
        for v in vnfs
        if v["service"]["availability"] is not None
    ]
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: (r[1] or 0.0, r[0]))[:BARS_MAX]
    low = min(v for _, v in rows if v is not None)
    floor = max(0.0, min(99.0, low - 0.5 * (100 - low) - 0.01))
    return {
        "type": "bar",
        "data": {
            "labels": [n for n, _ in rows],
            "datasets": [
                {
                    "label": "service availability (%)",
                    "data": [v for _, v in rows],
                    "backgroundColor": [
                        "#1f9d55" if (v or 0) >= 99.999 else "#d99a00" for _, v in rows
                    ],
                }
            ],
        },
        "options": {
            "scales": {
                "y": {
                    "min": round(floor, 3),
                    "max": 100,
                    "title": {"display": True, "text": "%"},
                }
            },
            "plugins": {"legend": {"display": False}},
        },
    }


def outage_chart(
    vnfs: Sequence[Mapping[str, Any]], hosts: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | None:
    """Outage seconds and failures of the VNFs' services and of the hosts that had any."""
    rows = [
        (f"VNF {v['name']}", v["service"]["outageSeconds"], v["service"]["failures"]) for v in vnfs
    ] + [(f"host {h['host']}", h["outageSeconds"], h["failures"]) for h in hosts]
    rows = [r for r in rows if r[1] or r[2]]
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: (-r[1], -r[2], r[0]))[:BARS_MAX]
    return {
        "type": "bar",
        "data": {
            "labels": [r[0] for r in rows],
            "datasets": [
                {
                    "label": "outage (s)",
                    "data": [r[1] for r in rows],
                    "backgroundColor": "#d93025",
                    "yAxisID": "y",
                },
                {
                    "label": "failures",
                    "data": [r[2] for r in rows],
                    "backgroundColor": "#8a8f98",
                    "yAxisID": "y1",
                },
            ],
        },
        "options": _options(
            "outage (s)",
            scales={
                "y": {"beginAtZero": True, "title": {"display": True, "text": "outage (s)"}},
                "y1": {
                    "beginAtZero": True,
                    "position": "right",
                    "grid": {"drawOnChartArea": False},
                    "ticks": {"precision": 0},
                    "title": {"display": True, "text": "failures"},
                },
            },
        ),
    }


def stages_chart(stages: Mapping[str, Any]) -> dict[str, Any] | None:
    """Per stage: p50, mean, p99 and max as bars, the target as a line."""
    per = stages.get("stages", {})
    if not any(per.get(s, {}).get("count") for s in SPANS):
        return None
    datasets: list[dict[str, Any]] = [
        {
            "type": "bar",
            "label": key.removesuffix("Seconds"),
            "data": [per[s][key] for s in SPANS],
            "backgroundColor": colour,
        }
        for key, colour in STAT_COLOURS.items()
    ]
    datasets.append(
        {
            "type": "line",
            "label": "target",
            "data": [per[s]["targetSeconds"] for s in SPANS],
            "borderColor": "#1d2330",
            "backgroundColor": "#1d2330",
            "borderDash": [6, 4],
            "pointStyle": "line",
            "pointRadius": 10,
            "showLine": False,
        }
    )
    return {
        "type": "bar",
        "data": {"labels": list(SPANS), "datasets": datasets},
        "options": _options("seconds"),
    }


def recent_chart(incidents: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Each recent incident's stages stacked (oldest on the left): how its recovery went."""
    rows = [i for i in incidents if any(b["seconds"] is not None for b in i["budgets"])]
    rows = list(reversed(rows[:RECENT]))
    if not rows:
        return None

    def seconds(inc: Mapping[str, Any], span: str) -> float | None:
        return next((b["seconds"] for b in inc["budgets"] if b["stage"] == span), None)

    return {
        "type": "bar",
        "data": {
            "labels": [f"{when(i['openedAt'])[11:]} {i['subject']}" for i in rows],
            "datasets": [
                {
                    "label": span,
                    "data": [seconds(i, span) for i in rows],
                    "backgroundColor": STAGE_COLOURS[span],
                    "stack": "stages",
                }
                for span in STAGES
            ],
        },
        "options": _options(
            "seconds",
            scales={
                "x": {"stacked": True},
                "y": {
                    "stacked": True,
                    "beginAtZero": True,
                    "title": {"display": True, "text": "seconds"},
                },
            },
        ),
    }


def sal_rows(sals: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for s in sals:
        for level in ("service", "instances"):
            f = s[level]
            out.append(
                {
                    "sal": s["sal"],
                    "level": "VNF service" if level == "service" else "instances",
                    "count": s["vnfs"] if level == "service" else s["instanceCount"],
                    "availability": percent(f["availability"]),
                    "nines": f["nines"],
                    "outage": f["outageSeconds"],
                    "failures": f["failures"],
                    "mttr": f["mttrSeconds"],
                    "mtbf": f["mtbfSeconds"],
                }
            )
    return out


async def page(rt: Runtime, params: dict[str, str]) -> dict[str, Any]:
    window = params.get("window", "1d")
    if window not in WINDOWS:
        window = "1d"
    availability = rt.insight.availability
    incidents = rt.insight.incidents

    def reads() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        summary = availability.summary(window)
        since = summary["from"]  # ISO times in UTC, one precision: they compare as text
        recent = [
            i
            for i in incidents.list_incidents(None, None, RECENT * 2)
            if i["kind"] != "ELEMENT" and i["openedAt"] >= since
        ]
        return summary, recent

    summary, recent = await asyncio.to_thread(reads)
    stages = summary["incidents"]
    return {
        "window": window,
        "windows": WINDOWS,
        "from": when(summary["from"]),
        "to": when(summary["to"]),
        "sals": sal_rows(summary["sals"]),
        "stages": [{"stage": s, **stages["stages"][s]} for s in SPANS],
        "opened": stages["opened"],
        "open": stages["open"],
        "hosts": len(summary["hosts"]),
        "hostsOut": sum(1 for h in summary["hosts"] if h["outageSeconds"]),
        "vnfs": len(summary["vnfs"]),
        "charts": {
            "availability": availability_chart(summary["vnfs"]),
            "outages": outage_chart(summary["vnfs"], summary["hosts"]),
            "stages": stages_chart(stages),
            "recent": recent_chart(recent),
        },
    }
