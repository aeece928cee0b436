"""The data of the service groups, VNFs and alarms pages (the topology's is in
topology.py). Each is `async (runtime, query parameters) -> dict` for its template; the
store is read in a worker thread, what the controller observes itself on the event loop."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from vimha.domain.alarms import Alarm
from vimha.domain.compute import InstanceStatus
from vimha.engine.runtime import Runtime

ALARMS_MAX = 500  # active alarms listed (newest first); the counts cover all of them
CLEARED_MAX = 50
INSTANCES_MAX = 2000
SEVERITIES = ("CRITICAL", "MAJOR", "MINOR", "WARNING", "INDETERMINATE")
STEPS = ("detected", "fenced", "promoted", "serving")


def _ago(at: float | None, now: float) -> str:
    if at is None:
        return ""
    s = max(now - at, 0.0)
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%f")[:-3]


def timeline(last: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
    """The last switch-over as steps with their offsets from the first one, in ms."""
    if not last:
        return None
    times = {k: last.get(k) for k in STEPS}
    start = next((t for t in times.values() if t is not None), None)
    steps = [
        {
            "step": k,
            "offsetMs": None if t is None or start is None else round((t - start) * 1000),
            "at": None if t is None else _clock(t),
        }
        for k, t in times.items()
    ]
    return {**last, "steps": steps, "ago": _ago(start, now)}


async def groups(rt: Runtime, params: dict[str, str]) -> dict[str, Any]:
    now = time.time()
    views = rt.groups.views()
    health = params.get("health", "").upper()
    shown = [v for v in views if not health or v["health"] == health]
    for v in shown:
        v["timeline"] = timeline(v.get("lastSwitchover"), now)
    return {
        "groups": shown,
        "total": len(views),
        "health": health,
        "healths": ("OK", "DEGRADED", "SWITCHING_OVER", "DOWN"),
    }


async def vnfs(rt: Runtime, params: dict[str, str]) -> dict[str, Any]:
    q = params.get("q", "").strip().lower()[:100]
    status = params.get("status", "").strip().upper()[:20]

    def reads() -> dict[str, Any]:
        c = rt.store.compute
        every_vnf = c.vnfs()
        instances = c.instances()
        pgroups = c.groups()
        return {"vnfs": every_vnf, "instances": instances, "pgroups": pgroups}

    got = await asyncio.to_thread(reads)
    names = {g.id: g.name for g in got["pgroups"]}
    host_health = {h: v.health for h, v in rt.host_views().items()}
    out = []
    listed = 0
    for v in got["vnfs"]:
        rows = []
        for i in got["instances"]:
            if i.spec.vnf_id != v.id:
                continue
            if status and i.status.value != status:
                continue
            if q and q not in i.name.lower() and q not in v.name.lower():
                continue
            if listed >= INSTANCES_MAX:
                break
            listed += 1
            rows.append(
                {
                    "id": i.id,
                    "name": i.name,
                    "vdu": i.spec.vdu,
                    "status": i.status.value,
                    "taskState": i.task_state.value if i.task_state else None,
                    "host": i.host,
                    "hostHealth": host_health.get(i.host or ""),
                    "incarnation": i.incarnation,
                    "sal": i.spec.sal.value,
                    "priority": i.spec.priority,
                    "groups": [names.get(g, g) for g in i.spec.groups],
                    "fault": i.fault.message if i.fault else None,
                }
            )
        if (q or status) and not rows:
            continue
        out.append(
            {
                "id": v.id,
                "name": v.name,
                "sal": v.sal.value,
                "priority": v.priority,
                "status": v.status,
                "preemptible": v.preemptible,
                "instances": rows,
                "placementGroups": [
                    {
                        "name": g.name,
                        "policy": g.policy.value,
                        "level": g.level,
                        "maxPerDomain": g.limit,
                    }
                    for g in got["pgroups"]
                    if g.vnf_id == v.id
                ],
            }
        )
    others = [g for g in got["pgroups"] if g.vnf_id is None]
    return {
        "vnfs": out,
        "total": len(got["vnfs"]),
        "instances": len(got["instances"]),
        "listed": listed,
        "cut": listed >= INSTANCES_MAX,
        "q": q,
        "status": status,
        "statuses": [s.value for s in InstanceStatus if s is not InstanceStatus.DELETED],
        "otherGroups": [
            {"name": g.name, "policy": g.policy.value, "level": g.level} for g in others
        ],
    }


def alarm_row(a: Alarm) -> dict[str, Any]:
    return {
        "id": a.id,
        "etag": a.etag,
        "object": a.managed_object_id,
        "severity": a.perceived_severity.value,
        "peak": a.peak_severity.value,
        "faultType": a.fault_type,
        "probableCause": a.probable_cause,
        "eventType": a.event_type.value,
        "raised": a.alarm_raised_time.strftime("%Y-%m-%d %H:%M:%S"),
        "changed": a.alarm_changed_time.strftime("%H:%M:%S") if a.alarm_changed_time else "",
        "cleared": a.alarm_cleared_time.strftime("%H:%M:%S") if a.alarm_cleared_time else "",
        "ackState": a.ack_state.value,
        "details": "; ".join(a.fault_details),
        "place": a.location.path,
    }


async def alarms(rt: Runtime, params: dict[str, str]) -> dict[str, Any]:
    severity = params.get("severity", "").strip().upper()[:20]
    ack = params.get("ack", "").strip().upper()[:20]
    q = params.get("q", "").strip().lower()[:100]
    cleared = params.get("cleared", "") in ("1", "on", "true")

    def reads() -> tuple[list[Alarm], list[Alarm], dict[str, int]]:
        s = rt.store
        gone = s.latest_alarms(False, CLEARED_MAX) if cleared else []
        return s.latest_alarms(True, ALARMS_MAX), gone, s.active_alarm_counts()

    active, gone, counts = await asyncio.to_thread(reads)

    def keep(a: Alarm) -> bool:
        if severity and a.perceived_severity.value != severity:
            return False
        if ack and a.ack_state.value != ack:
            return False
        return not q or q in a.managed_object_id.lower() or q in a.fault_type.lower()

    return {
        "alarms": [alarm_row(a) for a in active if keep(a)],
        "cleared": [alarm_row(a) for a in gone if keep(a)] if cleared else None,
        "counts": [(s, counts.get(s, 0)) for s in SEVERITIES],
        "active": sum(counts.values()),
        "cut": sum(counts.values()) > ALARMS_MAX,
        "filters": {"severity": severity, "ack": ack, "q": q, "cleared": cleared},
        "severities": SEVERITIES,
    }


async def badge(rt: Runtime) -> dict[str, Any]:
    """The alarm counts every page shows in its header."""
    counts = await asyncio.to_thread(rt.store.active_alarm_counts)
    top = next((s for s in SEVERITIES if counts.get(s)), None)
    return {"active": sum(counts.values()), "top": top, "critical": counts.get("CRITICAL", 0)}
