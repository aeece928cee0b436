"""Compute v2.1 servers (Nova's API over vimha's instances): list, show, create, update,
delete, actions, instance actions, interfaces, metadata, consoles.

Creation and every action go to the same engine calls as the native API
(`ComputeService` through `ServerService`, `ComputeService.request`): one code path, two
vocabularies. A server no host can take answers 202 and goes to ERROR with Nova's fault
("No valid host was found. ..."), as Nova does.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.api.openstack import compute_requests, microversions
from vimha.api.openstack.common import base, body, member
from vimha.api.openstack.compute_views import (
    STATUS_FILTER,
    action_view,
    interface_view,
    server_view,
    sort_actions,
    summary,
)
from vimha.api.problems import ApiProblem
from vimha.api.routers import consoles
from vimha.domain.clock import parse_iso
from vimha.domain.compute import Instance, InstanceStatus, Sal
from vimha.domain.errors import InvalidInput, NotFound
from vimha.domain.instance_states import Request as Ask
from vimha.domain.migration import Kind
from vimha.engine import evacuation
from vimha.engine.compute import HostView
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/compute/v2.1", include_in_schema=False)
SIMPLE = {
    "os-stop": Ask.STOP,
    "os-start": Ask.START,
    "pause": Ask.PAUSE,
    "unpause": Ask.UNPAUSE,
    "forceDelete": Ask.DELETE,
}
# A rebuild is from the instance's spec, fixed at creation: these keys are accepted (the
# image must be the instance's own), any other is refused.
REBUILD_KEYS = frozenset({"imageRef", "adminPass", "preserve_ephemeral", "OS-DCF:diskConfig"})
# Nova's migrations: by the instance's migration policy, within its VNF's budget (issue 19).
MIGRATIONS = {"migrate": Kind.COLD, "os-migrateLive": Kind.LIVE}
NOT_IN_VIMHA = {
    "resize", "confirmResize", "revertResize", "suspend", "resume", "lock", "unlock",
    "shelve", "shelveOffload", "unshelve", "createImage", "createBackup", "rescue",
    "unrescue", "changePassword", "os-resetState", "injectNetworkInfo", "resetNetwork",
    "addFloatingIp", "removeFloatingIp", "addFixedIp", "removeFixedIp", "addSecurityGroup",
    "removeSecurityGroup", "trigger_crash_dump", "restore", "os-getConsoleOutput",
    "os-getVNCConsole", "os-getSPICEConsole", "os-getRDPConsole",
}  # fmt: skip


def _instance(rt: Runtime, server_id: str, deleted_too: bool = False) -> Instance:
    try:
        instance = rt.store.compute.instance(server_id)
    except NotFound:
        raise NotFound(f"Instance {server_id} could not be found.") from None
    if instance.status is InstanceStatus.DELETED and not deleted_too:
        raise NotFound(f"Instance {server_id} could not be found.")
    return instance


def _view(
    rt: Runtime,
    request: Request,
    i: Instance,
    show: bool = True,
    views: dict[str, HostView] | None = None,
) -> dict[str, Any]:
    """Nova's view of an instance (`views`: the hosts' health and place, read once for a
    whole list)."""
    views = rt.host_views() if views is None else views
    host = views.get(i.host or "")
    health = (host.health if host else "UNKNOWN") if i.host else None
    zone = dict(host.location.levels).get("zone", "nova") if host else "nova"
    created = next((a for a in rt.store.compute.actions(i.id) if a.action == "create"), None)
    return server_view(i, base(request), microversions.of(request), health, zone, created, show)


def _matches(rt: Runtime, i: Instance, q: dict[str, str]) -> bool:
    if "name" in q and not re.search(q["name"], i.name):
        return False
    if "status" in q and STATUS_FILTER.get(q["status"].upper()) is not i.status:
        return False
    if "host" in q and i.host != q["host"]:
        return False
    if "flavor" in q and q["flavor"] not in (i.spec.flavor.id, i.spec.flavor.name):
        return False
    if "image" in q and q["image"] != i.spec.image_id:
        return False
    if "ip" in q and not any(re.search(q["ip"], p.ip) for p in i.spec.ports):
        return False
    if "changes-since" in q and i.updated_at < parse_iso(q["changes-since"]):
        return False
    if "changes-before" in q and i.updated_at > parse_iso(q["changes-before"]):
        return False
    return "reservation_id" not in q


def _listed(rt: Runtime, request: Request) -> tuple[list[Instance], str | None]:
    # openstacksdk sends every filter it knows, unset ones as the string "None"
    q = {k: v for k, v in request.query_params.items() if v != "None"}
    deleted = q.get("deleted", "").lower() in ("true", "1") or q.get("status", "") == "DELETED"
    try:
        every = [i for i in rt.store.compute.instances(deleted=deleted) if _matches(rt, i, q)]
    except re.error as exc:
        raise InvalidInput(f"Invalid filter: {exc}") from None
    reverse = q.get("sort_dir", "desc") != "asc"
    every.sort(key=lambda i: (i.created_at, i.id), reverse=reverse)
    if "marker" in q:
        ids = [i.id for i in every]
        if q["marker"] not in ids:
            raise InvalidInput(f"marker [{q['marker']}] not found")
        every = every[ids.index(q["marker"]) + 1 :]
    limit = int(q["limit"]) if q.get("limit", "").isdigit() else None
    if limit is None or len(every) <= limit:
        return every, None
    page = every[:limit]
    return page, page[-1].id


def _page(request: Request, key: str, items: list[dict[str, Any]], last: str | None) -> Any:
    out: dict[str, Any] = {key: items}
    if last is not None:
        params = {**dict(request.query_params), "marker": last}
        query = "&".join(f"{k}={v}" for k, v in params.items())
        out[f"{key}_links"] = [{"rel": "next", "href": f"{request.url.path}?{query}"}]
    return out


@router.get("/servers")
def list_servers(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    page, last = _listed(rt, request)
    return _page(request, "servers", [summary(i, base(request)) for i in page], last)


@router.get("/servers/detail")
def list_servers_detail(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    page, last = _listed(rt, request)
    views = rt.host_views()
    items = [_view(rt, request, i, show=False, views=views) for i in page]
    return _page(request, "servers", items, last)


@router.post("/servers", status_code=202)
async def create_server(
    request: Request, rt: Runtime = Depends(runtime), who: auth.Principal = auth.operator
) -> JSONResponse:
    doc = await body(request)
    keypairs = {name: key for name, key, _, _ in await run_in_threadpool(rt.store.compute.keypairs)}
    networks = await run_in_threadpool(rt.store.compute.networks)
    req = compute_requests.parse(
        doc, microversions.of(request), networks, keypairs, auth.RANK[who.role] >= 2
    )
    for n in req.vdu.networks:
        if n.port_id is not None:
            try:
                await run_in_threadpool(rt.store.compute.port, n.port_id)
            except NotFound:
                raise InvalidInput(f"Port id {n.port_id} could not be found.") from None
    groups: tuple[str, ...] = ()
    if req.group is not None:
        try:
            group = await run_in_threadpool(rt.store.compute.group, req.group)
        except NotFound:
            raise InvalidInput(f"os:scheduler_hints.group: group {req.group} not found") from None
        groups = (group.id,)
    plans = await run_in_threadpool(
        rt.compute.plan_vdu, req.vdu, req.vdu.name, Sal.LEVEL_3, 0, 0, "server", groups
    )
    named = [
        replace(
            p,
            name=req.vdu.name if req.max_count == 1 else f"{req.vdu.name}-{p.index + 1}",
            vdu=None,
            instance_id=str(uuid.uuid4()),
        )
        for p in plans
    ]
    made = await run_in_threadpool(rt.servers.create, named, who.name, req.min_count)
    root = base(request)
    first = made[0]
    if req.reservation_id:
        created = next(a for a in rt.store.compute.actions(first.id) if a.action == "create")
        return JSONResponse({"reservation_id": f"r-{created.request_id[4:12]}"}, status_code=202)
    return JSONResponse(
        {
            "server": {
                "id": first.id,
                "links": summary(first, root)["links"],
                "OS-DCF:diskConfig": "MANUAL",
                "security_groups": [{"name": "default"}],
            }
        },
        status_code=202,
        headers={"Location": f"{root}/compute/v2.1/servers/{first.id}"},
    )


@router.get("/servers/{server_id}")
def show_server(
    server_id: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> Any:
    return {"server": _view(rt, request, _instance(rt, server_id))}


@router.put("/servers/{server_id}")
async def update_server(
    server_id: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    who: auth.Principal = auth.operator,
) -> Any:
    """The name only (vimha keeps no description, no access IPs)."""
    server = member(await body(request), "server")
    unknown = set(server) - {"name", "description"}
    if unknown or server.get("description"):
        what = ", ".join(sorted(unknown)) or "description"
        raise InvalidInput(f"server: vimha can change the name only ({what})")
    instance = await run_in_threadpool(_instance, rt, server_id)
    if "name" in server:
        instance = await run_in_threadpool(
            rt.servers.rename, server_id, str(server["name"]), who.name
        )
    return {"server": await run_in_threadpool(_view, rt, request, instance)}


async def _ask(rt: Runtime, server_id: str, what: Ask, who: auth.Principal) -> None:
    await run_in_threadpool(_instance, rt, server_id)
    await run_in_threadpool(rt.compute.request, server_id, what, who.name)


@router.delete("/servers/{server_id}", status_code=204)
async def delete_server(
    server_id: str, rt: Runtime = Depends(runtime), who: auth.Principal = auth.operator
) -> Response:
    await _ask(rt, server_id, Ask.DELETE, who)
    return Response(status_code=204)


@router.post("/servers/{server_id}/action")
async def server_action(
    server_id: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    who: auth.Principal = auth.operator,
) -> Response:
    doc = await body(request)
    if len(doc) != 1:
        raise InvalidInput("Malformed request body: one action per request")
    ((action, arg),) = doc.items()
    if action == "reboot":
        kind = (arg or {}).get("type") if isinstance(arg, dict) else None
        if kind not in ("SOFT", "HARD"):
            raise InvalidInput("Invalid input for field/attribute type: SOFT or HARD")
        await _ask(rt, server_id, Ask.REBOOT_HARD if kind == "HARD" else Ask.REBOOT, who)
    elif action in SIMPLE:
        await _ask(rt, server_id, SIMPLE[action], who)
    elif action == "os-getSerialConsole":
        url = await _console(rt, request, server_id, who, arg)
        return JSONResponse({"console": {"type": "serial", "url": url}})
    elif action in MIGRATIONS:
        await run_in_threadpool(_instance, rt, server_id)
        host = arg.get("host") if isinstance(arg, dict) else None
        if host is not None and not isinstance(host, str):
            raise InvalidInput("Invalid input for field/attribute host: a host name or null")
        await run_in_threadpool(rt.migrations.start, server_id, who.name, host, MIGRATIONS[action])
    elif action == "rebuild":
        instance = await run_in_threadpool(_rebuild, rt, server_id, arg, who)
        view = await run_in_threadpool(_view, rt, request, instance)
        return JSONResponse({"server": view}, status_code=202)
    elif action == "evacuate":
        auth.check_role(who, "admin")  # Nova's policy: the caller vouches the host is off
        if not isinstance(arg, dict) or arg.get("host") is not None:
            raise InvalidInput(
                "evacuate: vimha places the instance by its rules; no target host (host: null)"
            )
        await run_in_threadpool(evacuation.evacuate, rt, server_id, who.name)
        if microversions.of(request) >= (2, 14):
            return Response(status_code=200)
        return JSONResponse({"adminPass": None}, status_code=200)
    elif action in NOT_IN_VIMHA:
        await run_in_threadpool(_instance, rt, server_id)
        raise ApiProblem(501, f"{action}: not supported by vimha")
    else:
        raise InvalidInput(f"There is no such action: {action}")
    return Response(status_code=202)


def _rebuild(rt: Runtime, server_id: str, arg: Any, who: auth.Principal) -> Instance:
    """Nova's rebuild: a new incarnation from the stored spec (fresh disk, the same ports and
    config drive), as `repair` does."""
    instance = _instance(rt, server_id)
    if not isinstance(arg, dict) or "imageRef" not in arg:
        raise InvalidInput("rebuild: imageRef is required")
    if unknown := sorted(set(arg) - REBUILD_KEYS):
        raise InvalidInput(
            f"rebuild: vimha rebuilds from the instance's spec, fixed at creation; "
            f"not changeable: {', '.join(unknown)}"
        )
    if str(arg["imageRef"]).rsplit("/", 1)[-1] != instance.spec.image_id:
        raise InvalidInput(
            f"rebuild: imageRef must be the instance's image ({instance.spec.image_id}): "
            "a replacement starts in the same initial state"
        )
    return evacuation.rebuild(rt, server_id, who.name, "rebuild")


async def _console(
    rt: Runtime, request: Request, server_id: str, who: auth.Principal, arg: object
) -> str:
    kind = arg.get("type") if isinstance(arg, dict) else None
    if kind != "serial":
        raise InvalidInput(f"console type {kind}: vimha offers the serial console only")
    if auth.RANK[who.role] < auth.RANK["operator"]:
        raise ApiProblem(403, f"{who.name} has role {who.role}; needs operator")
    await run_in_threadpool(_instance, rt, server_id)
    made = await consoles.create_console(server_id, request, rt, who)
    return str(made["url"])


@router.post("/servers/{server_id}/remote-consoles")
async def remote_console(
    server_id: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    who: auth.Principal = auth.operator,
) -> Any:
    """The serial console (2.6): a websocket streaming the guest's serial console."""
    console = member(await body(request), "remote_console")
    if console.get("protocol") != "serial":
        raise InvalidInput(f"protocol {console.get('protocol')}: vimha offers serial only")
    url = await _console(rt, request, server_id, who, console)
    return {"remote_console": {"protocol": "serial", "type": "serial", "url": url}}


@router.get("/servers/{server_id}/os-instance-actions")
def instance_actions(
    server_id: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> Any:
    i = _instance(rt, server_id, deleted_too=True)
    v = microversions.of(request)
    actions = sort_actions(rt.store.compute.actions(server_id))
    return {"instanceActions": [action_view(a, i.project, v, False) for a in actions]}


@router.get("/servers/{server_id}/os-instance-actions/{request_id}")
def instance_action(
    server_id: str,
    request_id: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> Any:
    i = _instance(rt, server_id, deleted_too=True)
    for a in rt.store.compute.actions(server_id):
        if a.request_id == request_id:
            return {"instanceAction": action_view(a, i.project, microversions.of(request), True)}
    raise NotFound(f"Action for request_id {request_id} on instance {server_id} not found")


@router.get("/servers/{server_id}/os-interface")
def interfaces(
    server_id: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> Any:
    i = _instance(rt, server_id)
    subnets = {n.id: n.subnet_id for n in rt.store.compute.networks()}
    return {"interfaceAttachments": interface_view(i, subnets, microversions.of(request))}


@router.get("/servers/{server_id}/os-interface/{port_id}")
def interface(
    server_id: str,
    port_id: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> Any:
    i = _instance(rt, server_id)
    subnets = {n.id: n.subnet_id for n in rt.store.compute.networks()}
    for entry in interface_view(i, subnets, microversions.of(request)):
        if entry["port_id"] == port_id:
            return {"interfaceAttachment": entry}
    raise NotFound(f"Port {port_id} is not attached to instance {server_id}")


@router.get("/servers/{server_id}/metadata")
def metadata(
    server_id: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    return {"metadata": dict(_instance(rt, server_id).spec.metadata)}


@router.get("/servers/{server_id}/metadata/{key}")
def metadata_item(
    server_id: str, key: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    meta = _instance(rt, server_id).spec.metadata
    if key not in meta:
        raise NotFound(f"Metadata item was not found: {key}")
    return {"meta": {key: meta[key]}}


@router.api_route("/servers/{server_id}/metadata", methods=["PUT", "POST"])
@router.api_route("/servers/{server_id}/metadata/{key}", methods=["PUT", "DELETE"])
def change_metadata(
    server_id: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> Any:
    _instance(rt, server_id)
    raise ApiProblem(
        501,
        "server metadata is part of the instance's spec, fixed at creation (a replacement "
        "starts in the same initial state): not changeable in vimha",
    )


@router.get("/servers/{server_id}/os-volume_attachments")
def volume_attachments(
    server_id: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    """vimha has no block storage: never any volume."""
    _instance(rt, server_id)
    return {"volumeAttachments": []}


@router.get("/servers/{server_id}/tags")
def tags(server_id: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader) -> Any:
    """vimha has no server tags: always empty."""
    _instance(rt, server_id)
    return {"tags": []}
