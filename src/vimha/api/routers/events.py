"""Fault events from outside monitors (native, OPNFV Doctor, Prometheus Alertmanager).

A batch is validated whole before anything is stored, and stored in one unit of work. Native
events, the hot path, are also served by api/fastpath.py, which calls `ingest` below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.api.problems import ApiProblem
from vimha.api.schemas import AlertmanagerWebhook, DoctorEvent, EventsAccepted, NativeEvent
from vimha.domain.alarms import FaultEvent
from vimha.domain.events import alertmanager_events, doctor_events, native_events, placed
from vimha.engine import metrics
from vimha.engine.runtime import Runtime

router = APIRouter(tags=["events"])
MAX_BATCH = 10000


async def ingest(
    rt: Runtime, source: str, mapper: Callable[[datetime], list[FaultEvent]]
) -> dict[str, Any]:
    """Map (validating everything), store in one unit of work, report the changes."""
    events = [placed(e, rt.inventory) for e in mapper(rt.clock.now())]
    changes = await rt.faults.ingest_async(events)
    metrics.EVENTS.labels(source).inc(len(events))
    for change in changes:
        metrics.ALARM_CHANGES.labels(change.kind.value).inc()
    return {
        "accepted": len(events),
        "changes": [
            {"alarmId": c.alarm.id, "change": c.kind.value, "reason": c.reason} for c in changes
        ],
    }


def check_size(items: Sequence[object]) -> None:
    if len(items) > MAX_BATCH:
        raise ApiProblem(413, f"at most {MAX_BATCH} events per request, got {len(items)}")
    if not items:
        raise ApiProblem(400, "no events given")


async def ingest_native(rt: Runtime, raw: list[Any]) -> dict[str, Any]:
    check_size(raw)
    hierarchy = rt.config.topology.hierarchy
    return await ingest(rt, "native", lambda now: native_events(raw, now, hierarchy))


@router.post("/vim/v1/events", response_model=EventsAccepted)
async def post_events(
    body: NativeEvent | list[NativeEvent],
    rt: Runtime = Depends(runtime),
    principal: auth.Principal = auth.reporter,
) -> JSONResponse:
    """Raise, update or clear alarms from one event or a list of events (all or nothing).
    An agent's token: events about its own host and its parts only."""
    items = body if isinstance(body, list) else [body]
    auth.own_objects(principal, [i.managedObjectId for i in items])
    raw = [i.model_dump(exclude_none=True) for i in items]
    return JSONResponse(await ingest_native(rt, raw))


@router.put("/events", response_model=EventsAccepted)
async def doctor_inspector(
    body: list[DoctorEvent],
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.operator,
) -> JSONResponse:
    """The OPNFV Doctor inspector interface: a Doctor monitor can point here unchanged."""
    check_size(body)
    raw = [e.model_dump() for e in body]
    hierarchy = rt.config.topology.hierarchy
    return JSONResponse(await ingest(rt, "doctor", lambda now: doctor_events(raw, now, hierarchy)))


@router.post("/vim/v1/events/alertmanager", response_model=EventsAccepted)
async def alertmanager(
    body: AlertmanagerWebhook,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.operator,
) -> JSONResponse:
    """The Prometheus Alertmanager webhook receiver (payload version 4)."""
    check_size(body.alerts)
    raw = body.model_dump(exclude_none=True)
    hierarchy = rt.config.topology.hierarchy
    return JSONResponse(
        await ingest(rt, "alertmanager", lambda now: alertmanager_events(raw, now, hierarchy))
    )
