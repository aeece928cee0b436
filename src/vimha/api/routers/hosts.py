"""Hosts: declared inventory plus observed health (ARCH-10, FAULT-9)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.domain.errors import NotFound
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/vim/v1", tags=["hosts"])


class Fencing(BaseModel):
    state: str
    failureKind: str | None = None
    attempts: int
    detail: str
    recoverable: bool


class Host(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    healthStatus: str
    failureKind: str | None = None
    reason: str
    fencing: Fencing | None = None


class FenceRecord(BaseModel):
    seq: int
    hostId: str
    failureKind: str
    startedAt: datetime
    finishedAt: datetime
    result: str
    detail: str


@router.get("/hosts", response_model=list[Host])
def list_hosts(
    rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> list[dict[str, Any]]:
    """Every declared host with its health, failure kind, reason and network planes."""
    if rt.health is None:
        return []
    return [v for h in rt.health.hosts if (v := rt.health.view(h)) is not None]


@router.get("/hosts/{hostId}", response_model=Host)
def get_host(
    hostId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    view = rt.health.view(hostId) if rt.health is not None else None
    if view is None:
        raise NotFound(f"host {hostId} is not declared")
    return view


@router.get("/hosts/{hostId}/fencing", response_model=list[FenceRecord])
def host_fencing(
    hostId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> list[dict[str, Any]]:
    """The host's fencing attempts, newest first: CONFIRMED (power-off read back) or FAILED."""
    if rt.health is None or hostId not in rt.health.hosts:
        raise NotFound(f"host {hostId} is not declared")
    return [
        {
            "seq": r.seq,
            "hostId": r.host,
            "failureKind": r.failure_kind,
            "startedAt": r.started_at,
            "finishedAt": r.finished_at,
            "result": r.result,
            "detail": r.detail,
        }
        for r in rt.store.fence_records(hostId)
    ]
