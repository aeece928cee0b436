"""VNFs and their instances (issue 14): create a VNF from its descriptor, list and show
instances (SOL 013 filters and paging), ask for reboot, stop, start, pause, unpause, delete
(with If-Match on the instance's ETag), read the instance actions, get a console URL."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from vimha.api import auth
from vimha.api.compute_schemas import RebootIn, VnfIn
from vimha.api.deps import FILTER, MARKER, runtime, selector
from vimha.api.sol import decode_marker, page
from vimha.domain.clock import iso
from vimha.domain.compute import Instance, Vnf
from vimha.domain.filters import known_paths, parse_filter
from vimha.domain.instance_faults import view
from vimha.domain.instance_states import Request as Ask
from vimha.domain.selectors import Selector
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/vim/v1", tags=["vnfs and instances"])

INSTANCE_PATHS = known_paths(
    [
        "id",
        "name",
        "vnfId",
        "vdu",
        "index",
        "status",
        "taskState",
        "powerState",
        "host",
        "incarnation",
        "imageId",
        "sal",
        "priority",
        "flavor/*",
        "ports/*",
        "metadata/*",
        "groups",
        "createdAt",
        "updatedAt",
    ]
)


def vnf_view(v: Vnf, instances: list[Instance], base: str) -> dict[str, Any]:
    return {
        "id": v.id,
        "name": v.name,
        "sal": v.sal.value,
        "priority": v.priority,
        "status": v.status,
        "createdAt": iso(v.created_at),
        "descriptor": dict(v.descriptor),
        "instances": [
            {
                "id": i.id,
                "name": i.name,
                "vdu": i.spec.vdu,
                "status": i.status.value,
                "host": i.host,
                "incarnation": i.incarnation,
            }
            for i in instances
        ],
        "_links": {"self": {"href": f"{base}/vim/v1/vnfs/{v.id}"}},
    }


@router.get("/vnfs")
def list_vnfs(
    rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> list[dict[str, Any]]:
    base = rt.config.api.base_url
    every = rt.store.compute.instances()
    return [
        vnf_view(v, [i for i in every if i.spec.vnf_id == v.id], base)
        for v in rt.store.compute.vnfs()
    ]


@router.post("/vnfs", status_code=201)
async def create_vnf(
    body: VnfIn, rt: Runtime = Depends(runtime), who: auth.Principal = auth.operator
) -> JSONResponse:
    """Create a VNF from its descriptor: every instance placed and claimed, or nothing
    (409 with the reason when some instance has no valid host)."""
    vnf, instances = await run_in_threadpool(rt.compute.create_vnf, body.to_domain(), who.name)
    base = rt.config.api.base_url
    return JSONResponse(
        vnf_view(vnf, instances, base),
        status_code=201,
        headers={"Location": f"{base}/vim/v1/vnfs/{vnf.id}"},
    )


@router.get("/vnfs/{vnfId}")
def get_vnf(
    vnfId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    vnf = rt.store.compute.vnf(vnfId)
    return vnf_view(vnf, rt.store.compute.instances(vnf_id=vnf.id), rt.config.api.base_url)


@router.delete("/vnfs/{vnfId}", status_code=202)
async def delete_vnf(
    vnfId: str, rt: Runtime = Depends(runtime), who: auth.Principal = auth.operator
) -> dict[str, Any]:
    """Delete the VNF and its instances (each is deleted by its agent)."""
    vnf = await run_in_threadpool(rt.compute.delete_vnf, vnfId, who.name)
    return {"id": vnf.id, "name": vnf.name, "status": "DELETING"}


@router.get("/instances")
def list_instances(
    request: Request,
    filter: str | None = FILTER,
    nextpage_opaque_marker: str | None = MARKER,
    select: Selector = Depends(selector),
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> JSONResponse:
    """Instances (not deleted), oldest first; e.g. filter=(eq,host,cmp-1)."""
    flt = parse_filter(filter, INSTANCE_PATHS)
    after = decode_marker(nextpage_opaque_marker)
    base = rt.config.api.base_url
    items = (
        (n, view(i, base)) for n, i in enumerate(rt.store.compute.instances(), start=1) if n > after
    )
    return page(items, flt, select, frozenset(), rt.config.api.page_size, request)


@router.get("/instances/{instanceId}")
def get_instance(
    instanceId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> JSONResponse:
    instance = rt.store.compute.instance(instanceId)
    return JSONResponse(view(instance, rt.config.api.base_url), headers={"ETag": instance.etag})


async def _ask(
    rt: Runtime, instance_id: str, what: Ask, who: str, if_match: str | None
) -> JSONResponse:
    instance = await run_in_threadpool(rt.compute.request, instance_id, what, who, if_match)
    return JSONResponse(
        view(instance, rt.config.api.base_url), status_code=202, headers={"ETag": instance.etag}
    )


@router.post("/instances/{instanceId}/reboot", status_code=202)
async def reboot_instance(
    instanceId: str,
    body: RebootIn | None = None,
    if_match: str | None = Header(None),
    rt: Runtime = Depends(runtime),
    who: auth.Principal = auth.operator,
) -> JSONResponse:
    """SOFT (the guest restarts itself) or HARD (power cycled)."""
    hard = body is not None and body.type == "HARD"
    return await _ask(rt, instanceId, Ask.REBOOT_HARD if hard else Ask.REBOOT, who.name, if_match)


def _simple(what: Ask, doc: str) -> None:
    async def endpoint(
        instanceId: str,
        if_match: str | None = Header(None),
        rt: Runtime = Depends(runtime),
        who: auth.Principal = auth.operator,
    ) -> JSONResponse:
        return await _ask(rt, instanceId, what, who.name, if_match)

    endpoint.__doc__ = doc
    router.add_api_route(
        f"/instances/{{instanceId}}/{what.value}",
        endpoint,
        methods=["POST"],
        status_code=202,
        name=f"{what.value}_instance",
    )


_simple(Ask.STOP, "Power the guest off (SHUTOFF).")
_simple(Ask.START, "Power a SHUTOFF guest on.")
_simple(Ask.PAUSE, "Pause the guest.")
_simple(Ask.UNPAUSE, "Resume a paused guest.")


@router.delete("/instances/{instanceId}", status_code=202)
async def delete_instance(
    instanceId: str,
    if_match: str | None = Header(None),
    rt: Runtime = Depends(runtime),
    who: auth.Principal = auth.operator,
) -> JSONResponse:
    return await _ask(rt, instanceId, Ask.DELETE, who.name, if_match)


@router.get("/instances/{instanceId}/actions")
def instance_actions(
    instanceId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> list[dict[str, Any]]:
    """Every request on the instance and what the hypervisor did to it, oldest first."""
    rt.store.compute.instance(instanceId)
    return [
        {
            "action": a.action,
            "requestId": a.request_id,
            "user": a.user,
            "startedAt": iso(a.started_at),
            "finishedAt": iso(a.finished_at) if a.finished_at else None,
            "result": a.result,
            "message": a.message,
        }
        for a in rt.store.compute.actions(instanceId)
    ]
