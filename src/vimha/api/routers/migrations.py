"""Migration of instances (issue 19, VNF-7): ask for one, follow it, and the agents' side of
a cold migration (the source uploads the stopped guest's disk, the destination fetches it)."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from vimha.api import auth
from vimha.api.compute_schemas import MigrateIn
from vimha.api.deps import runtime
from vimha.api.problems import ApiProblem
from vimha.api.routers.catalog import spool_body
from vimha.domain.errors import NotFound
from vimha.domain.migration import Kind, State, state_key
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/vim/v1", tags=["migration and maintenance"])
CHUNK = 1 << 20


@router.post("/instances/{instanceId}/migrate", status_code=202)
async def migrate(
    instanceId: str,
    body: MigrateIn | None = None,
    rt: Runtime = Depends(runtime),
    who: auth.Principal = auth.operator,
) -> JSONResponse:
    """Migrate the instance by its policy (live where allowed and its bound can be met,
    else cold where allowed), within its VNF's disruption budget: 202 with the migration,
    409 with the reason when it cannot be now (its state, its policy, the budget, no valid
    host)."""
    ask = body or MigrateIn()
    rec = await run_in_threadpool(
        rt.migrations.start,
        instanceId,
        who.name,
        ask.host,
        Kind(ask.kind) if ask.kind else None,
    )
    return JSONResponse(rt.migrations.view(rec), status_code=202)


@router.get("/migrations")
def list_migrations(
    instanceId: str | None = Query(None),
    sessionId: str | None = Query(None),
    active: bool | None = Query(None),
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> list[dict[str, Any]]:
    """Newest first: kind, hosts, state, the reason of its kind, the interruption measured."""
    found = rt.store.maintenance.migrations(instanceId, active, sessionId)
    return [rt.migrations.view(m) for m in found]


@router.get("/migrations/{migrationId}")
def get_migration(
    migrationId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    return rt.migrations.view(rt.store.maintenance.migration(migrationId))


@router.put(
    "/hosts/{hostId}/migrations/{migrationId}/state",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_state(
    hostId: str,
    migrationId: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    who: auth.Principal = auth.reporter,
) -> dict[str, Any]:
    """The source's agent: the stopped guest's disk (a tar), kept in the image store until
    the migration ends; the destination is told to start it."""
    auth.own_host(who, hostId)
    rec = await run_in_threadpool(rt.store.maintenance.migration, migrationId)
    if rec.source != hostId or rec.state not in (State.READY, State.RUNNING):
        raise NotFound(f"no cold migration {migrationId} to export from {hostId}")
    spool = await spool_body(request)
    try:
        digest = await run_in_threadpool(_save, rt, spool, state_key(migrationId))
    finally:
        spool.close()
    done = await run_in_threadpool(rt.migrations.exported, hostId, migrationId, digest)
    return {"digest": digest, "state": done.state.value}


def _save(rt: Runtime, spool: Any, key: str) -> str:
    """The state kept under the migration's own key; its sha256 returned (recorded, and
    checked by the destination)."""
    sha = hashlib.sha256()
    while piece := spool.read(CHUNK):
        sha.update(piece)
    spool.seek(0)
    rt.store.compute.save_image_data(key, iter(lambda: spool.read(CHUNK), b""))
    return sha.hexdigest()


@router.get("/hosts/{hostId}/migrations/{migrationId}/state")
def download_state(
    hostId: str,
    migrationId: str,
    rt: Runtime = Depends(runtime),
    who: auth.Principal = auth.host_reader,
) -> StreamingResponse:
    """The destination's agent: what the source uploaded."""
    auth.own_host(who, hostId)
    rec = rt.store.maintenance.migration(migrationId)
    if rec.dest != hostId or rec.state_digest is None:
        raise ApiProblem(404, f"no guest state of migration {migrationId} for {hostId}")
    return StreamingResponse(
        rt.store.compute.image_data(state_key(rec.id)),
        media_type="application/octet-stream",
        headers={"X-State-Digest": f"sha256:{rec.state_digest}"},
    )
