"""Services of the hosts (ARCH-10): as each node's agent observes them (last check, status,
restart counts), reported with PUT /vim/v1/hosts/{hostId}/services and read here.

Services are declared in a node's agent config, or here (POST/PATCH/DELETE, stored in the
database): the node's agent fetches its declared services (GET .../services/declared) every
few seconds and starts, changes or stops their supervision."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.api.routers.hosts import json_body, merge_patch, read_json, validation_problem
from vimha.domain.errors import InvalidInput, NotFound
from vimha.engine.runtime import Runtime
from vimha.servicespec import ServiceConfig

router = APIRouter(prefix="/vim/v1", tags=["services"])


class ServiceStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["compute", "storage", "network", "control", "other"]
    check: str = Field(max_length=32)
    status: Literal["STARTING", "RUNNING", "RESTARTING", "GAVE_UP"]
    lastCheckOk: bool
    lastCheckDetail: str = Field("", max_length=1000)
    lastFailure: str = Field("", max_length=1000)
    restarts: int = Field(ge=0, description="Restarts within the restart window")
    totalRestarts: int = Field(ge=0, description="Restarts since the agent started")
    lastCheckAt: datetime


class ServiceView(BaseModel):
    model_config = ConfigDict(extra="allow")
    hostId: str
    name: str
    kind: str
    check: str
    status: str
    source: str = Field(description="agent: declared in the agent config; api: declared here")


class HostServices(BaseModel):
    model_config = ConfigDict(extra="forbid")
    services: list[ServiceStatus] = Field(max_length=1000)

    @field_validator("services")
    @classmethod
    def _unique(cls, value: list[ServiceStatus]) -> list[ServiceStatus]:
        names = [s.name for s in value]
        if len(set(names)) != len(names):
            raise ValueError("service names must be unique")
        return value


def _declared(rt: Runtime, host: str) -> None:
    if rt.health is None or host not in rt.health.hosts:
        raise NotFound(f"host {host} is not declared")


@router.put("/hosts/{hostId}/services", status_code=204)
def report_services(
    hostId: str,
    body: HostServices,
    rt: Runtime = Depends(runtime),
    principal: auth.Principal = auth.reporter,
) -> None:
    """The node's agent reports its services: the whole list, replacing the previous one."""
    auth.own_host(principal, hostId)
    _declared(rt, hostId)
    rt.services.report(hostId, [s.model_dump(mode="json") for s in body.services])


def _merged(rt: Runtime, host: str | None) -> list[dict[str, Any]]:
    """Reported services, marked with where they are declared, and the services declared
    here that the host's agent has not reported yet (status DECLARED)."""
    declared = {(h, n): spec for h, n, spec in rt.store.list_services(host)}
    hosts = [host] if host is not None else rt.services.hosts()
    out = []
    for h in hosts:
        for s in rt.services.of(h):
            out.append({**s, "source": "api" if (h, s["name"]) in declared else "agent"})
    reported = {(s["hostId"], s["name"]) for s in out}
    for (h, n), spec in declared.items():
        if (h, n) not in reported:
            out.append(
                {
                    "hostId": h,
                    "name": n,
                    "kind": spec.get("kind", "other"),
                    "check": spec.get("check", "process"),
                    "status": "DECLARED",
                    "source": "api",
                }
            )
    return sorted(out, key=lambda s: (s["hostId"], s["name"]))


@router.get("/services", response_model=list[ServiceView])
def list_services(
    hostId: str | None = Query(None, description="Only this host's services"),
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> list[dict[str, Any]]:
    """Every service with its status, last check and restart counts."""
    if hostId is not None:
        _declared(rt, hostId)
    return _merged(rt, hostId)


@router.get("/services/{hostId}/{name}", response_model=ServiceView)
def get_service(
    hostId: str, name: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    for service in _merged(rt, hostId):
        if service["name"] == name:
            return service
    raise NotFound(f"service {name} of host {hostId} is not known")


@router.get("/hosts/{hostId}/services/declared", response_model=list[dict[str, Any]])
def declared_services(
    hostId: str, rt: Runtime = Depends(runtime), principal: auth.Principal = auth.host_reader
) -> list[dict[str, Any]]:
    """The services declared here for this host, as its agent fetches them."""
    auth.own_host(principal, hostId)
    _declared(rt, hostId)
    return [spec for _, _, spec in rt.store.list_services(hostId)]


def _spec(body: Any) -> tuple[str, ServiceConfig]:
    if not isinstance(body, dict):
        raise InvalidInput("a JSON object is required")
    host = body.get("hostId")
    if not isinstance(host, str):
        raise InvalidInput("hostId: the host of the service is required")
    try:
        return host, ServiceConfig.model_validate({k: v for k, v in body.items() if k != "hostId"})
    except ValidationError as exc:
        raise validation_problem(exc) from None


SERVICE_BODY = json_body(ServiceConfig)


@router.post("/services", status_code=201, response_model=ServiceView, openapi_extra=SERVICE_BODY)
async def declare_service(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.admin
) -> JSONResponse:
    """Declare a service for a host (`hostId` and the fields of a service in an agent
    config); the host's agent supervises it within its sync interval."""
    host, cfg = _spec(await read_json(request))
    _declared(rt, host)
    spec = cfg.model_dump(mode="json")
    await asyncio.to_thread(rt.store.add_service, host, cfg.name, spec, rt.clock.now())
    url = f"{rt.config.api.base_url}/vim/v1/services/{host}/{cfg.name}"
    view = next(s for s in _merged(rt, host) if s["name"] == cfg.name)
    return JSONResponse(view, status_code=201, headers={"Location": url})


@router.patch("/services/{hostId}/{name}", response_model=ServiceView)
async def modify_service(
    hostId: str,
    name: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.admin,
) -> dict[str, Any]:
    """Change a service declared here (JSON merge patch); its agent restarts it so."""
    patch = await read_json(request)
    if not isinstance(patch, dict):
        raise InvalidInput("a JSON object is required")
    found = [spec for _, n, spec in rt.store.list_services(hostId) if n == name]
    if not found:
        raise NotFound(f"service {name} of host {hostId} is not declared here")
    merged = merge_patch({**found[0], "hostId": hostId}, patch)
    host, cfg = _spec(merged)
    if host != hostId or cfg.name != name:
        raise InvalidInput("hostId and name cannot change: declare another service")
    spec = cfg.model_dump(mode="json")
    await asyncio.to_thread(rt.store.replace_service, hostId, name, spec, rt.clock.now())
    return next(s for s in _merged(rt, hostId) if s["name"] == name)


@router.delete("/services/{hostId}/{name}", status_code=204)
async def delete_service(
    hostId: str, name: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.admin
) -> None:
    """Stop supervising a service declared here; its agent stops it."""
    await asyncio.to_thread(rt.store.delete_service, hostId, name)
