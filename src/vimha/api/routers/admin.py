"""Operations: retention policy (FAULT-7), stored notifications, status (ARCH-10), metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vimha import __version__
from vimha.api import auth
from vimha.api.deps import FILTER, MARKER, runtime, selector
from vimha.api.schemas import (
    NotificationRecord,
    PurgeResult,
    RetentionPolicyBody,
    RetentionPolicyOut,
    Status,
)
from vimha.api.sol import decode_marker, page
from vimha.domain.clock import iso
from vimha.domain.filters import known_paths, parse_filter
from vimha.domain.selectors import Selector
from vimha.engine.metrics import REGISTRY
from vimha.engine.runtime import Runtime
from vimha.ports.store import DeliveryRecord

router = APIRouter(prefix="/vim/v1", tags=["operations"])

NOTIFICATION_PATHS = known_paths(
    [
        "id",
        "subscriptionId",
        "notificationType",
        "status",
        "createdAt",
        "deliveredAt",
        "attemptCount",
        "objectId",
    ]
)
NOTIFICATION_DEFAULT_EXCLUDED = frozenset({"payload", "attempts"})


def render_delivery(d: DeliveryRecord) -> dict[str, Any]:
    return {
        "id": d.id,
        "subscriptionId": d.subscription_id,
        "notificationType": d.notification_type,
        "status": d.status.value,
        "createdAt": iso(d.created_at),
        "deliveredAt": iso(d.delivered_at) if d.delivered_at else None,
        "attemptCount": d.attempt_count,
        "attempts": [
            {"at": iso(a.at), "durationMs": round(a.duration_ms, 3), "ok": a.ok, "detail": a.detail}
            for a in d.attempts
        ],
        "payload": d.payload,
    }


@router.get("/retention-policy", response_model=RetentionPolicyOut)
def get_retention(
    rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    """How long cleared alarms (per the highest severity they reached) and notifications
    are kept. Active alarms and undelivered notifications are never aged out."""
    return rt.retention.current().to_dict()


@router.patch("/retention-policy", response_model=RetentionPolicyOut)
def change_retention(
    body: RetentionPolicyBody, rt: Runtime = Depends(runtime), _: auth.Principal = auth.admin
) -> dict[str, Any]:
    """Change the policy at run time; keys not given keep their value."""
    return rt.retention.update(body.model_dump(exclude_none=True)).to_dict()


@router.post("/retention-policy/apply", response_model=PurgeResult)
async def apply_retention(
    rt: Runtime = Depends(runtime), _: auth.Principal = auth.admin
) -> dict[str, int]:
    """Run the ageing job now (it also runs every `ageing.interval`)."""
    counts = await run_in_threadpool(rt.retention.run_once)
    return {
        "alarms": counts.alarms,
        "history": counts.history,
        "deliveries": counts.deliveries,
        "notifications": counts.notifications,
    }


@router.get("/notifications", response_model=list[NotificationRecord])
def list_notifications(
    request: Request,
    filter: str | None = FILTER,
    nextpage_opaque_marker: str | None = MARKER,
    select: Selector = Depends(selector),
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> JSONResponse:
    """Stored notifications, one per subscriber, with delivery status (oldest first)."""
    flt = parse_filter(filter, NOTIFICATION_PATHS)
    after = decode_marker(nextpage_opaque_marker)
    items = ((d.seq, render_delivery(d)) for d in rt.store.iter_deliveries(after, 500))
    return page(items, flt, select, NOTIFICATION_DEFAULT_EXCLUDED, rt.config.api.page_size, request)


@router.get("/notifications/{notificationId}", response_model=NotificationRecord)
def get_notification(
    notificationId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    """One stored notification with its payload and every delivery attempt."""
    return render_delivery(rt.store.get_delivery(notificationId))


@router.get("/status", response_model=Status)
def status(rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader) -> dict[str, Any]:
    """The controller at a glance (ARCH-10)."""
    counts_fn = getattr(rt.store, "counts", None)
    counts = counts_fn() if counts_fn else {}
    lanes = {
        sid: {"queued": len(lane.queue), "spilled": lane.spilled}
        for sid, lane in rt.dispatcher.lanes.items()
        if lane.queue or lane.spilled
    }
    return {
        "status": "DEGRADED" if rt.failed.is_set() else "UP",
        "version": __version__,
        "vimConnectionId": rt.config.vim_connection_id,
        "startedAt": iso(rt.started_at),
        "store": {
            "backend": rt.store.characteristics.__class__.__name__,
            "distributed": rt.store.characteristics.distributed,
            **counts,
        },
        "deliveryLanes": lanes,
        "dispatcherRestarts": getattr(rt.dispatcher, "restarts", 0),
        "coordination": {
            "backend": rt.config.coordination.url.split("://", 1)[0],
            "distributed": rt.coordination.characteristics.distributed,
            "singletonRole": rt.elector.holding.role.value,
            "epoch": rt.elector.holding.epoch,
            "controller": rt.me,
            "controllers": sorted(rt.presence.peers),
        },
        "judging": judging(rt),
    }


def judging(rt: Runtime) -> dict[str, Any]:
    """How many hosts this controller judges, and whether the judging is split (issue 22)."""
    health = rt.health
    if health is None:
        return {"split": False, "hosts": 0, "of": 0}
    mine = health.mine()
    share = rt.judging.share if rt.judging is not None else None
    return {
        "split": rt.judging is not None and rt.judging.split(len(health.hosts)),
        "hosts": len(mine) if mine is not None else len(health.hosts),
        "of": len(health.hosts),
        "reason": share.reason if share is not None else "every controller judges every host",
    }


metrics_router = APIRouter(tags=["operations"])


@metrics_router.get(
    "/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}}
)
def prometheus(_: auth.Principal = auth.reader) -> Response:
    """Prometheus metrics (scrape with a bearer token)."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
