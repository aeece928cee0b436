"""The incidents page's data (issue 20's incidents): the newest incidents with their
budgets, and one of them (`?id=`, else the newest) with its timeline drawn per stage: each
budgeted span (detect, fence, place, boot, serve) as a bar from where the previous one
ended, beside its target, by Chart.js (`static/ui.js` draws every `data-chart` element),
and every entry of the timeline in a table. The chart's configuration is built here, as
plain JSON: no code is sent to the browser but our own `ui.js`."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from vimha.domain.clock import parse_iso
from vimha.domain.errors import NotFound
from vimha.domain.incidents import SPANS, Kind, State
from vimha.engine.runtime import Runtime

LISTED = 200  # the newest incidents listed; the filters narrow them
STAGES = tuple(s for s in SPANS if s != "total")
COLOURS = {  # the stylesheet's health colours
    "ok": "#1f9d55",
    "over": "#d93025",
    "target": "rgba(138, 143, 152, 0.35)",
    "open": "#d99a00",
}


def when(text: str | None) -> str:
    """An ISO time as the pages show it (UTC, to the second)."""
    if not text:
        return ""
    return parse_iso(text).strftime("%Y-%m-%d %H:%M:%S")


def total(inc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The incident's `total` budget (failure to every instance serving), if any."""
    return next((b for b in inc.get("budgets", ()) if b["stage"] == "total"), None)


def stage_bars(budgets: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The budgeted spans one after the other: each starts where the last known one ended
    (the spans follow each other: detection ends where fencing starts, and so on), in
    seconds from the failure. A span not measured (yet) has no bar."""
    by_span = {b["stage"]: b for b in budgets}
    at = 0.0
    out = []
    for span in STAGES:
        b = by_span.get(span)
        if b is None or b.get("seconds") is None:
            continue
        seconds = float(b["seconds"])
        out.append(
            {
                "stage": span,
                "start": round(at, 3),
                "end": round(at + seconds, 3),
                "seconds": seconds,
                "target": b.get("targetSeconds"),
                "over": bool(b.get("over")),
            }
        )
        at += seconds
    return out


def timeline_chart(bars: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """A Chart.js configuration: one lane per stage, the time it took as a floating bar
    (red when over its target) and its target as a grey bar starting at the same point."""
    if not bars:
        return None
    return {
        "type": "bar",
        "data": {
            "labels": [b["stage"] for b in bars],
            "datasets": [
                {
                    "label": "took (s)",
                    "data": [[b["start"], b["end"]] for b in bars],
                    "backgroundColor": [
                        COLOURS["over"] if b["over"] else COLOURS["ok"] for b in bars
                    ],
                    "barPercentage": 0.9,
                },
                {
                    "label": "target (s)",
                    "data": [
                        [b["start"], round(b["start"] + b["target"], 3)]
                        if b["target"] is not None
                        else None
                        for b in bars
                    ],
                    "backgroundColor": COLOURS["target"],
                    "barPercentage": 0.9,
                },
            ],
        },
        "options": {
            "indexAxis": "y",
            "scales": {
                "x": {"title": {"display": True, "text": "seconds from the failure"}},
                "y": {"stacked": False},
            },
            "plugins": {"legend": {"position": "bottom"}},
        },
    }


def entry_rows(timeline: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "offset": e["offsetSeconds"],
            "at": when(e["at"]),
            "stage": e["stage"],
            "object": e["object"],
            "detail": e["detail"],
            "source": e["source"],
        }
        for e in timeline
    ]


def row(inc: Mapping[str, Any]) -> dict[str, Any]:
    t = total(inc)
    return {
        "id": inc["id"],
        "kind": inc["kind"],
        "subject": inc["subject"],
        "title": inc["title"],
        "state": inc["state"],
        "opened": when(inc["openedAt"]),
        "affected": len(inc.get("affectedInstances", ())),
        "total": None if t is None else t["seconds"],
        "target": None if t is None else t["targetSeconds"],
        "over": [b["stage"] for b in inc.get("budgets", ()) if b.get("over")],
    }


def detail(inc: Mapping[str, Any]) -> dict[str, Any]:
    bars = stage_bars(inc["budgets"])
    return {
        **row(inc),
        "recovered": when(inc.get("recoveredAt")),
        "closed": when(inc.get("closedAt")),
        "rootAlarmId": inc.get("rootAlarmId"),
        "mergedInto": inc.get("mergedInto"),
        "instances": inc.get("affectedInstances", []),
        "budgets": inc["budgets"],
        "chart": timeline_chart(bars),
        "entries": entry_rows(inc.get("timeline", ())),
    }


def matches(inc: Mapping[str, Any], q: str) -> bool:
    if not q:
        return True
    hay = " ".join(
        [inc["subject"], inc["title"], *(a.get("name") or "" for a in inc["affectedInstances"])]
    )
    return q in hay.lower()


async def page(rt: Runtime, params: dict[str, str]) -> dict[str, Any]:
    state = params.get("state", "").strip().upper()[:20]
    kind = params.get("kind", "").strip().upper()[:20]
    q = params.get("q", "").strip().lower()[:100]
    wanted = params.get("id", "").strip()[:64]
    states = [state] if state in State.__members__ else None
    kinds = kind if kind in Kind.__members__ else None
    service = rt.insight.incidents

    def reads() -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        found = service.list_incidents(states, kinds, LISTED)
        chosen = None
        if wanted:
            try:
                chosen = service.show(wanted)
            except NotFound:
                chosen = None
        return found, chosen

    found, chosen = await asyncio.to_thread(reads)
    shown = [i for i in found if matches(i, q)]
    if chosen is None and shown and not wanted:
        chosen = await asyncio.to_thread(service.show, shown[0]["id"])
    return {
        "incidents": [row(i) for i in shown],
        "selected": detail(chosen) if chosen else None,
        "unknown": wanted if wanted and chosen is None else None,
        "cut": len(found) >= LISTED,
        "filters": {"state": state, "kind": kind, "q": q, "id": wanted},
        "states": [s.value for s in State],
        "kinds": [k.value for k in Kind],
    }


def marker(rt: Runtime) -> str:
    """The newest incidents' ids, states and versions (a step of one moves it)."""
    found = rt.store.insight.incidents(None, 50)
    return ",".join(f"{i.id}:{i.state.value}:{i.version}" for i in found)
