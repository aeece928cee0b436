"""Repair for the VNF and its VNFM, and the operator's word on a failed host (issue 17,
VNF-5): repair an instance (replaced from its spec), report a host as faulty, confirm a
host that cannot be fenced is off (Pacemaker's manual fencing confirmation)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.domain import instance_faults
from vimha.domain.alarms import EventType, FaultEvent, FaultyResourceType, Severity
from vimha.domain.classification import FailureKind
from vimha.domain.compute import InstanceStatus
from vimha.domain.errors import NotFound
from vimha.domain.instance_faults import view
from vimha.engine import evacuation
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/vim/v1", tags=["recovery"])
REPORTED = "HOST_FAULT_REPORTED"


class FaultReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=1000)
    action: Literal["fence", "alarm"] = Field(
        "fence",
        description="fence: vimha fences the host (through its BMC) and recovers its instances; "
        "alarm: vimha only raises the report as an alarm on the host",
    )


@router.post("/instances/{instanceId}/repair", status_code=202)
async def repair(
    instanceId: str, rt: Runtime = Depends(runtime), who: auth.Principal = auth.operator
) -> JSONResponse:
    """Replace the instance from its spec: a new incarnation (fresh disk, the same ports
    and config drive) on the best host; the old one is destroyed by its agent."""

    instance = await run_in_threadpool(evacuation.rebuild, rt, instanceId, who.name)
    return JSONResponse(
        view(instance, rt.config.api.base_url), status_code=202, headers={"ETag": instance.etag}
    )


@router.post("/hosts/{hostId}/report-fault", status_code=202)
async def report_fault(
    hostId: str,
    body: FaultReport,
    rt: Runtime = Depends(runtime),
    who: auth.Principal = auth.operator,
) -> dict[str, Any]:
    """A VNF or VNFM suspects a host. Raised as an alarm on it; with `fence`, vimha powers
    it off through its BMC, and recovers its instances once that is confirmed."""
    health = rt.health
    if health is None or hostId not in health.hosts:
        raise NotFound(f"host {hostId} is not declared")
    detail = f"reported by {who.name}: {body.reason}"
    event = FaultEvent(
        managed_object_id=hostId,
        fault_type=REPORTED,
        probable_cause="a VNF or VNFM reported the host as faulty",
        perceived_severity=Severity.MAJOR,
        event_type=EventType.EQUIPMENT_ALARM,
        event_time=rt.clock.now(),
        faulty_resource_type=FaultyResourceType.COMPUTE,
        resource_id=hostId,
        fault_details=(detail,),
        location=health.locations[hostId],
        source="vnfm",
    )
    await rt.faults.ingest_async([event])
    fencing = False
    if body.action == "fence":
        fencing = health.fencer.force(hostId, FailureKind.COMPUTE_NODE_FAILURE, detail)
    return {
        "hostId": hostId,
        "alarm": REPORTED,
        "fencing": fencing,
        "detail": detail
        if fencing or body.action == "alarm"
        else f"{detail}; not fenced: no BMC, or fencing already under way",
    }


@router.post("/hosts/{hostId}/confirm-down", status_code=202)
async def confirm_down(
    hostId: str, rt: Runtime = Depends(runtime), who: auth.Principal = auth.admin
) -> dict[str, Any]:
    """The operator's word that a failed host is off (it could not be fenced: a partitioned
    rack whose BMCs are silent). Recorded as a confirmed fencing; its instances, UNKNOWN
    until now, are recovered."""
    await run_in_threadpool(rt.confirm_down, hostId, who.name)
    unknown = [
        i.id
        for i in await run_in_threadpool(rt.store.compute.instances, hostId)
        if i.status is InstanceStatus.UNKNOWN
    ]
    return {
        "hostId": hostId,
        "confirmedBy": who.name,
        "recovering": unknown,
        "alarm": instance_faults.InstanceFault.UNKNOWN.value,
    }
