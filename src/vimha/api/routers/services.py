"""Services of the hosts (ARCH-10): as each node's agent observes them (last check, status,
restart counts), reported with PUT /vim/v1/hosts/{hostId}/services and read here."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.domain.errors import NotFound
from vimha.engine.runtime import Runtime

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


class Service(ServiceStatus):
    model_config = ConfigDict(extra="allow")
    hostId: str
    reportedAt: str
    reportedMsAgo: int


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
    _: auth.Principal = auth.operator,
) -> None:
    """The node's agent reports its services: the whole list, replacing the previous one."""
    _declared(rt, hostId)
    rt.services.report(hostId, [s.model_dump(mode="json") for s in body.services])


@router.get("/services", response_model=list[Service])
def list_services(
    hostId: str | None = Query(None, description="Only this host's services"),
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> list[dict[str, Any]]:
    """Every reported service with its status, last check and restart counts."""
    if hostId is not None:
        _declared(rt, hostId)
        return rt.services.of(hostId)
    return [s for host in rt.services.hosts() for s in rt.services.of(host)]


@router.get("/services/{hostId}/{name}", response_model=Service)
def get_service(
    hostId: str, name: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    for service in rt.services.of(hostId):
        if service["name"] == name:
            return service
    raise NotFound(f"service {name} of host {hostId} is not known")
