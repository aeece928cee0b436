"""Hosts: declared inventory plus observed health (ARCH-10, FAULT-9).

Hosts come from the config file (read-only here) or are declared through this API (stored in
the database, watched at once, kept across restarts). A declaration has the fields of a host
in the config file; its heartbeat key and BMC password are never shown."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.api.problems import ApiProblem
from vimha.config import HostConfig
from vimha.domain.errors import Conflict, InvalidInput, NotFound
from vimha.engine.health import HealthMonitor
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


def compute_views(rt: Runtime) -> dict[str, dict[str, Any]]:
    """Each compute host's resources as placement sees them, and its instances."""
    resources = rt.store.compute.hosts()
    placed: dict[str, list[dict[str, Any]]] = {}
    for i in rt.store.compute.instances():
        if i.host is not None:
            placed.setdefault(i.host, []).append(
                {"id": i.id, "name": i.name, "vnfId": i.spec.vnf_id, "status": i.status.value}
            )
    out = {}
    for name, r in resources.items():
        out[name] = {
            "hypervisor": r.hypervisor,
            "vcpus": r.vcpus,
            "ramMib": r.ram_mib,
            "diskGib": r.disk_gib,
            "usedVcpus": r.used_vcpus,
            "usedRamMib": r.used_ram_mib,
            "usedDiskGib": r.used_disk_gib,
            "allocationRatios": {"cpu": r.cpu_ratio, "ram": r.ram_ratio, "disk": r.disk_ratio},
            "traits": sorted(r.traits),
            "generation": r.generation,
            "instances": placed.get(name, []),
        }
    return out


@router.get("/hosts", response_model=list[Host])
def list_hosts(
    rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> list[dict[str, Any]]:
    """Every declared host with its health, failure kind, reason and network planes, and for
    compute hosts their resources and instances."""
    if rt.health is None:
        return []
    compute = compute_views(rt)
    return [
        {**v, "compute": compute.get(h)}
        for h in rt.health.hosts
        if (v := rt.health.view(h)) is not None
    ]


@router.get("/hosts/{hostId}", response_model=Host)
def get_host(
    hostId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    view = rt.health.view(hostId) if rt.health is not None else None
    if view is None:
        raise NotFound(f"host {hostId} is not declared")
    return {**view, "compute": compute_views(rt).get(hostId)}


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


def validation_problem(exc: ValidationError) -> InvalidInput:
    return InvalidInput(
        "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in exc.errors()
        )
    )


def _validated(rt: Runtime, spec: Any) -> HostConfig:
    if not isinstance(spec, dict):
        raise InvalidInput("a JSON object is required")
    try:
        host = HostConfig.model_validate(spec)
    except ValidationError as exc:
        raise validation_problem(exc) from None
    if (problem := rt.config.host_problem(host)) is not None:
        raise InvalidInput(f"{host.name}: {problem}")
    return host


def _monitor(rt: Runtime) -> HealthMonitor:
    if rt.health is None:
        raise ApiProblem(409, "no heartbeat plane is listened on (heartbeat.listen): no host")
    return rt.health


def _api_declared(health: HealthMonitor, host: str) -> None:
    if host not in health.hosts:
        raise NotFound(f"host {host} is not declared")
    if health.source[host] != "api":
        raise Conflict(f"host {host} is declared in the config file: change it there")


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a route that reads its JSON body itself (to answer ProblemDetails)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


HOST_BODY = json_body(HostConfig)


@router.post("/hosts", status_code=201, response_model=Host, openapi_extra=HOST_BODY)
async def declare_host(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.admin
) -> JSONResponse:
    """Declare a host (the fields of a host in the config file); it is watched at once."""
    health = _monitor(rt)
    host = _validated(rt, await read_json(request))
    if host.name in health.hosts:
        raise Conflict(f"host {host.name} already exists")
    spec = host.model_dump(mode="json")
    await asyncio.to_thread(rt.store.add_host, host.name, spec, rt.clock.now())
    health.declare(host, "api")
    await rt.announce("inventory")
    url = f"{rt.config.api.base_url}/vim/v1/hosts/{host.name}"
    return JSONResponse(health.view(host.name), status_code=201, headers={"Location": url})


@router.patch(
    "/hosts/{hostId}",
    response_model=Host,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/merge-patch+json": {"schema": {"type": "object"}},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    },
)
async def modify_host(
    hostId: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.admin,
) -> dict[str, Any]:
    """Change a host declared through the API (JSON merge patch; `name` cannot change)."""
    health = _monitor(rt)
    _api_declared(health, hostId)
    patch = await read_json(request)
    if not isinstance(patch, dict):
        raise InvalidInput("a JSON object is required")
    if patch.get("name", hostId) != hostId:
        raise InvalidInput("name cannot change: declare a new host and delete this one")
    host = _validated(rt, merge_patch(health.hosts[hostId].model_dump(mode="json"), patch))
    spec = host.model_dump(mode="json")
    await asyncio.to_thread(rt.store.replace_host, hostId, spec, rt.clock.now())
    health.declare(host, "api")
    await rt.announce("inventory")
    view = health.view(hostId)
    assert view is not None
    return view


@router.delete("/hosts/{hostId}", status_code=204)
async def delete_host(
    hostId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.admin
) -> None:
    """Stop watching a host declared through the API; what vimha raised for it is cleared."""
    health = _monitor(rt)
    _api_declared(health, hostId)
    await asyncio.to_thread(rt.store.delete_host, hostId)
    for _host, name, _spec in await asyncio.to_thread(rt.store.list_services, hostId):
        await asyncio.to_thread(rt.store.delete_service, hostId, name)
    await health.forget(hostId)
    await rt.announce("inventory")


async def read_json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except ValueError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from None


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON merge patch."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = value
    return out
