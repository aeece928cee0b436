"""Fault events from outside monitors (native, OPNFV Doctor, Prometheus Alertmanager).

A batch is validated whole before anything is stored, and stored in one unit of work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.api.problems import ApiProblem
from vimha.api.schemas import AlertmanagerWebhook, DoctorEvent, EventsAccepted, NativeEvent
from vimha.domain.alarms import FaultEvent
from vimha.domain.events import alertmanager_events, doctor_events, native_events
from vimha.engine import metrics
from vimha.engine.runtime import Runtime

router = APIRouter(tags=["events"])
MAX_BATCH = 10000


def _ingest(
    rt: Runtime, source: str, mapper: Callable[[datetime], list[FaultEvent]]
) -> JSONResponse:
    events = mapper(rt.clock.now())
    changes = rt.faults.ingest(events)
    metrics.EVENTS.labels(source).inc(len(events))
    for change in changes:
        metrics.ALARM_CHANGES.labels(change.kind.value).inc()
    # A plain JSONResponse: the hot path skips re-validating its own output.
    return JSONResponse(
        {
            "accepted": len(events),
            "changes": [
                {"alarmId": c.alarm.id, "change": c.kind.value, "reason": c.reason} for c in changes
            ],
        }
    )


def _check_size(items: Sequence[object]) -> None:
    if len(items) > MAX_BATCH:
        raise ApiProblem(413, f"at most {MAX_BATCH} events per request, got {len(items)}")
    if not items:
        raise ApiProblem(400, "no events given")


@router.post("/vim/v1/events", response_model=EventsAccepted)
async def post_events(
    body: NativeEvent | list[NativeEvent],
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.operator,
) -> JSONResponse:
    """Raise, update or clear alarms from one event or a list of events (all or nothing)."""
    items = body if isinstance(body, list) else [body]
    _check_size(items)
    raw = [i.model_dump(exclude_none=True) for i in items]
    hierarchy = rt.config.topology.hierarchy
    return await run_in_threadpool(
        _ingest, rt, "native", lambda now: native_events(raw, now, hierarchy)
    )


@router.put("/events", response_model=EventsAccepted)
async def doctor_inspector(
    body: list[DoctorEvent],
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.operator,
) -> JSONResponse:
    """The OPNFV Doctor inspector interface: a Doctor monitor can point here unchanged."""
    _check_size(body)
    raw = [e.model_dump() for e in body]
    hierarchy = rt.config.topology.hierarchy
    return await run_in_threadpool(
        _ingest, rt, "doctor", lambda now: doctor_events(raw, now, hierarchy)
    )


@router.post("/vim/v1/events/alertmanager", response_model=EventsAccepted)
async def alertmanager(
    body: AlertmanagerWebhook,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.operator,
) -> JSONResponse:
    """The Prometheus Alertmanager webhook receiver (payload version 4)."""
    _check_size(body.alerts)
    raw = body.model_dump(exclude_none=True)
    hierarchy = rt.config.topology.hierarchy
    return await run_in_threadpool(
        _ingest, rt, "alertmanager", lambda now: alertmanager_events(raw, now, hierarchy)
    )
