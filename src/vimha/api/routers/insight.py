"""Insight (issue 20): HA metrics per instance, VNF, SAL and host (VNF-4), incidents with
their timeline and stage budgets, and the correlation rules in force (VNF-6)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.domain.incidents import Kind, State
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/vim/v1", tags=["insight"])
Window = Literal["1h", "1d", "30d"]
WINDOW = Query("1d", description="The window the figures cover: 1h, 1d or 30d")


# -- HA metrics (VNF-4) ---------------------------------------------------------------------
@router.get("/metrics", summary="HA metrics of every SAL, VNF and host over one window")
def metrics_summary(
    window: Window = WINDOW, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    """Availability (and in nines), outage time, failures, MTBF and MTTR per SAL (of the
    VNFs' service and of their instances), per VNF and per host, and the incidents' stage
    times, over `window`."""
    return rt.insight.availability.summary(window)


@router.get("/metrics/instances/{instanceId}", summary="HA metrics of one instance")
def metrics_instance(
    instanceId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    """Figures over 1 h, 1 d and 30 d, and every outage of the 30 days with its cause."""
    return rt.insight.availability.instance(instanceId)


@router.get("/metrics/vnfs/{vnfId}", summary="HA metrics of one VNF")
def metrics_vnf(
    vnfId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    """Its service (out while a VDU has no instance up) and its instances, over 1 h, 1 d,
    30 d; the service's outages with their causes."""
    return rt.insight.availability.vnf(vnfId)


@router.get("/metrics/hosts/{hostId}", summary="HA metrics of one host")
def metrics_host(
    hostId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    """Its outages (host failure alarms) and the failures of the instances it ran."""
    return rt.insight.availability.host(hostId)


@router.get("/metrics/sals/{sal}", summary="HA metrics of one service availability level")
def metrics_sal(
    sal: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    return rt.insight.availability.sal(sal)


@router.get("/metrics/incidents", summary="Incident stage times over one window")
def metrics_incidents(
    window: Window = WINDOW, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    """Per stage (detect, fence, place, boot, serve, total): count, mean, p50, p99, max and
    how many went over the target, over the incidents opened in the window."""
    return rt.insight.availability.stages(window)


# -- incidents ------------------------------------------------------------------------------
@router.get("/incidents", summary="Incidents, newest first")
def list_incidents(
    state: State | None = Query(None, description="Only incidents in this state"),
    kind: Kind | None = Query(None, description="Only incidents of this kind"),
    limit: int = Query(100, ge=1, le=10_000, description="At most this many"),
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> list[dict[str, Any]]:
    """Each with its budgets; merged incidents only when asked for (`state=MERGED`)."""
    states = [state.value] if state else None
    return rt.insight.incidents.list_incidents(states, kind.value if kind else None, limit)


@router.get("/incidents/{incidentId}", summary="One incident with its timeline")
def get_incident(
    incidentId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    return rt.insight.incidents.show(incidentId)


# -- correlation rules (VNF-6) --------------------------------------------------------------
@router.get("/correlation/rules", summary="The correlation rules in force")
def get_rules(rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader) -> dict[str, Any]:
    source = rt.insight.rules
    return {"file": source.where, "lastError": source.error, **source.rules.to_dict()}


@router.post("/correlation/rules/reload", summary="Read the rules file again")
def reload_rules(rt: Runtime = Depends(runtime), _: auth.Principal = auth.admin) -> dict[str, Any]:
    """400 with the reason if the file does not validate (the rules in force stay). Every
    controller also reads the file again when it changes."""
    source = rt.insight.rules
    rules = source.reload()
    return {"file": source.where, "lastError": None, **rules.to_dict()}
