"""Placement (issue 15): placement groups (Nova's server groups at any level), a placement
explained for a hypothetical request, and scaling a VNF's VDU (SOL 003 operations)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from vimha.api import auth
from vimha.api.compute_schemas import ExplainIn, PlacementGroupIn, ScaleIn, VnfIn
from vimha.api.deps import runtime
from vimha.domain.affinity import GroupPolicy, PlacementGroup, domain_of
from vimha.domain.clock import iso
from vimha.domain.compute import VnfOperation
from vimha.domain.errors import InvalidInput, NotFound
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/vim/v1", tags=["placement"])


def group_view(
    rt: Runtime, g: PlacementGroup, members: dict[str, str | None] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": g.id,
        "name": g.name,
        "policy": g.policy.value,
        "level": g.level,
        "maxPerDomain": g.limit,
        "vnfId": g.vnf_id,
        "generation": g.generation,
    }
    if members is not None:
        views = rt.host_views()
        out["members"] = [
            {
                "instanceId": iid,
                "host": host,
                "domain": domain_of(
                    dict(views[host].location.levels), g.level, rt.config.topology.hierarchy
                )
                if host in views
                else None,
            }
            for iid, host in sorted(members.items())
        ]
    return out


def operation_view(op: VnfOperation, base: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": op.id,
        "vnfInstanceId": op.vnf_id,
        "operation": op.operation,
        "operationState": op.state,
        "operationParams": dict(op.params),
        "result": dict(op.result),
        "startTime": iso(op.started_at),
        "_links": {"self": {"href": f"{base}/vim/v1/vnf-operations/{op.id}"}},
    }
    if op.finished_at is not None:
        out["finishTime"] = iso(op.finished_at)
    return out


@router.get("/placement-groups")
def list_groups(
    rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> list[dict[str, Any]]:
    return [group_view(rt, g) for g in rt.store.compute.groups()]


@router.post("/placement-groups", status_code=201)
def create_group(
    body: PlacementGroupIn, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> dict[str, Any]:
    """A group instances join at creation (`groups` of a VDU, or a server group); its rule
    is checked now: a level no host declares, or maxPerDomain < 1, is refused."""
    group = rt.compute.create_group(
        body.name, GroupPolicy(body.policy), body.level, body.maxPerDomain
    )
    return group_view(rt, group, {})


@router.get("/placement-groups/{groupId}")
def get_group(
    groupId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    g = rt.store.compute.group(groupId)
    return group_view(rt, g, rt.store.compute.members(g.id))


@router.delete("/placement-groups/{groupId}", status_code=204)
def delete_group(
    groupId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> Response:
    g = rt.store.compute.group(groupId)
    rt.compute.run(lambda uow, done: uow.compute.delete_group(g.id))
    return Response(status_code=204)


@router.post("/placement/explain")
def explain(
    body: ExplainIn, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    """For a hypothetical request: each filter's survivors (and why each host was
    removed), each candidate's weight, the host it would get; nothing is claimed."""
    try:
        flavor = rt.store.compute.flavor(body.flavor)
    except NotFound as exc:
        raise InvalidInput(f"flavor: {exc.detail}") from None
    return rt.scaling.explain(flavor, body.image, body.sal, body.priority, body.groups, body.hints)


@router.post("/vnfs/{vnfId}/scale", status_code=202)
async def scale(
    vnfId: str, body: ScaleIn, rt: Runtime = Depends(runtime), who: auth.Principal = auth.operator
) -> JSONResponse:
    """Scale a VDU out or in by `steps` instances, within its minCount and maxCount; the
    operation's state says how it ended (FAILED with the reason)."""
    vnf = await run_in_threadpool(rt.store.compute.vnf, vnfId)
    request = VnfIn.model_validate(vnf.descriptor).to_domain()
    vdu = next((v for v in request.vdus if v.name == body.vdu), None)
    if vdu is None:
        raise InvalidInput(f"vdu: {vnf.name} has no VDU {body.vdu!r}")
    op = await run_in_threadpool(rt.scaling.scale, vnf.id, body.type, vdu, body.steps, who.name)
    base = rt.config.api.base_url
    return JSONResponse(
        operation_view(op, base),
        status_code=202,
        headers={"Location": f"{base}/vim/v1/vnf-operations/{op.id}"},
    )


@router.get("/vnfs/{vnfId}/operations")
def vnf_operations(
    vnfId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> list[dict[str, Any]]:
    vnf = rt.store.compute.vnf(vnfId)
    base = rt.config.api.base_url
    return [operation_view(op, base) for op in rt.store.compute.operations(vnf.id)]


@router.get("/vnf-operations/{opId}")
def get_operation(
    opId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    return operation_view(rt.store.compute.operation(opId), rt.config.api.base_url)
