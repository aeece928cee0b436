"""Compute v2.1: os-hypervisors and os-services over vimha's compute hosts and their health.

Every compute host is one hypervisor and one `nova-compute` service, `up` while its health
is UP or DEGRADED. Ids are integers before 2.53 and UUIDs (stable, derived from the host's
name) from 2.53. Forcing a compute service down (`forced_down`, OPNFV Doctor's inspector)
fences the host and recovers its instances (engine/evacuation.py); disabling one is a
maintenance session in vimha (501 names it); deleting one is removing the host.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.api.openstack import microversions
from vimha.api.openstack.common import body
from vimha.api.problems import ApiProblem
from vimha.domain.compute import HostResources
from vimha.domain.errors import InvalidInput, NotFound
from vimha.engine import evacuation
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/compute/v2.1", include_in_schema=False)
DISABLE = (
    "disabling a compute service is a maintenance session in vimha: POST "
    "/vim/v1/maintenance (vimha maintenance start) empties the host within its VNFs' budgets"
)


def compute_hosts(rt: Runtime) -> dict[str, HostResources]:
    """Every compute host: those that reported their resources, and those declared with the
    compute role that have not (yet: a host fenced before its agent reported is one), with
    no capacity."""
    known = dict(rt.store.compute.hosts())
    declared = rt.health.hosts if rt.health is not None else {}
    for name, cfg in declared.items():
        if "compute" in cfg.roles and name not in known:
            known[name] = HostResources(name, 0, 0, 0)
    return dict(sorted(known.items()))


def _uuid(kind: str, host: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vimha:{kind}:{host}"))


class _Hosts:
    """The compute hosts with their resources, health, zone, instances (one read)."""

    def __init__(self, rt: Runtime, v: microversions.Version) -> None:
        self.v = v
        self.resources = compute_hosts(rt)
        self.views = rt.host_views()
        self.instances = rt.store.compute.instances()
        self.numbers = {h: n for n, h in enumerate(self.resources, start=1)}

    def id(self, kind: str, host: str) -> int | str:
        return _uuid(kind, host) if self.v >= (2, 53) else self.numbers[host]

    def find(self, kind: str, ref: str) -> str:
        for host in self.resources:
            if ref in (str(self.id(kind, host)), _uuid(kind, host)):
                return host
        raise NotFound(f"{kind.capitalize()} with ID {ref} could not be found.")

    def health(self, host: str) -> str:
        view = self.views.get(host)
        return view.health if view else "UNKNOWN"

    def state(self, host: str) -> str:
        return "up" if self.health(host) in ("UP", "DEGRADED") else "down"

    def zone(self, host: str) -> str:
        view = self.views.get(host)
        return dict(view.location.levels).get("zone", "nova") if view else "nova"

    def on(self, host: str) -> list[Any]:
        return [i for i in self.instances if i.host == host]


def _hypervisor(h: _Hosts, host: str, detail: bool, servers: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": h.id("hypervisor", host),
        "hypervisor_hostname": host,
        "state": h.state(host),
        "status": "enabled",
    }
    if detail:
        r: HostResources = h.resources[host]
        on = h.on(host)
        info = {"traits": sorted(r.traits)}
        out |= {
            "hypervisor_type": r.hypervisor,
            "hypervisor_version": 1,
            "host_ip": "",
            # a JSON object from 2.28, a string holding one before
            "cpu_info": info if h.v >= (2, 28) else json.dumps(info),
            "vcpus": r.vcpus,
            "memory_mb": r.ram_mib,
            "local_gb": r.disk_gib,
            "vcpus_used": r.used_vcpus,
            "memory_mb_used": r.used_ram_mib,
            "local_gb_used": r.used_disk_gib,
            "free_ram_mb": int(r.free_ram_mib),
            "free_disk_gb": int(r.free_disk_gib),
            "current_workload": sum(1 for i in on if i.task_state is not None),
            "running_vms": len(on),
            "disk_available_least": int(r.free_disk_gib),
            "service": {"host": host, "id": h.id("service", host), "disabled_reason": None},
        }
    if servers:
        out["servers"] = [{"name": i.name, "uuid": i.id} for i in h.on(host)]
    return out


@router.get("/os-hypervisors")
def list_hypervisors(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    h = _Hosts(rt, microversions.of(request))
    return {"hypervisors": [_hypervisor(h, host, False) for host in h.resources]}


@router.get("/os-hypervisors/detail")
def list_hypervisors_detail(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    h = _Hosts(rt, microversions.of(request))
    return {"hypervisors": [_hypervisor(h, host, True) for host in h.resources]}


@router.get("/os-hypervisors/statistics")
def hypervisor_statistics(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    h = _Hosts(rt, microversions.of(request))
    every = [_hypervisor(h, host, True) for host in h.resources]
    keys = (
        "vcpus", "memory_mb", "local_gb", "vcpus_used", "memory_mb_used", "local_gb_used",
        "free_ram_mb", "free_disk_gb", "current_workload", "running_vms", "disk_available_least",
    )  # fmt: skip
    stats = {k: sum(int(x[k]) for x in every) for k in keys}
    return {"hypervisor_statistics": {"count": len(every), **stats}}


@router.get("/os-hypervisors/{ref}")
def show_hypervisor(
    ref: str,
    request: Request,
    with_servers: str | None = None,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> Any:
    h = _Hosts(rt, microversions.of(request))
    host = h.find("hypervisor", ref)
    servers = with_servers is not None and with_servers.lower() in ("true", "1")
    return {"hypervisor": _hypervisor(h, host, True, servers)}


@router.get("/os-hypervisors/{ref}/uptime")
def hypervisor_uptime(ref: str, _: auth.Principal = auth.reader) -> Any:
    raise ApiProblem(501, "a hypervisor's uptime is not reported by vimha's agents")


@router.get("/os-hypervisors/{pattern}/search")
@router.get("/os-hypervisors/{pattern}/servers")
def search_hypervisors(
    pattern: str, request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    h = _Hosts(rt, microversions.of(request))
    found = [host for host in h.resources if pattern in host]
    if not found:
        raise NotFound(f"No hypervisor matching '{pattern}' could be found.")
    servers = request.url.path.endswith("/servers")
    return {"hypervisors": [_hypervisor(h, host, False, servers) for host in found]}


@router.get("/os-services")
def list_services(
    request: Request,
    host: str | None = None,
    binary: str | None = None,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> Any:
    v = microversions.of(request)
    h = _Hosts(rt, v)
    out = []
    for name in h.resources:
        if (host and host != name) or (binary and binary != "nova-compute"):
            continue
        service = _service(h, name, rt)
        out.append(service)
    return {"services": out}


def _service(h: _Hosts, host: str, rt: Runtime) -> dict[str, Any]:
    forced = evacuation.forced_down(rt, host, up=h.state(host) == "up")
    service: dict[str, Any] = {
        "id": h.id("service", host),
        "binary": "nova-compute",
        "host": host,
        "zone": h.zone(host),
        "status": "enabled",
        "state": "down" if forced else h.state(host),
        "updated_at": None,
        "disabled_reason": None,
    }
    if h.v >= (2, 11):
        service["forced_down"] = forced
    return service


@router.put("/os-services/force-down")
async def force_down_legacy(
    request: Request, rt: Runtime = Depends(runtime), who: auth.Principal = auth.admin
) -> Any:
    """2.11 to 2.52: `{"host", "binary", "forced_down"}`."""
    v = microversions.of(request)
    if v < (2, 11) or v >= (2, 53):
        raise NotFound("force-down needs a microversion from 2.11 to 2.52")
    doc = await body(request)
    host, binary = doc.get("host"), doc.get("binary")
    if not isinstance(host, str) or binary != "nova-compute":
        raise InvalidInput("force-down: host (a compute host) and binary nova-compute")
    h = _Hosts(rt, v)
    if host not in h.resources:
        raise NotFound(f"Compute host {host} could not be found.")
    _forced(rt, host, doc.get("forced_down"), who)
    return {"service": {"host": host, "binary": binary, "forced_down": doc["forced_down"]}}


@router.put("/os-services/{ref}")
async def change_service(
    ref: str, request: Request, rt: Runtime = Depends(runtime), who: auth.Principal = auth.admin
) -> Any:
    """2.53 and later: `forced_down` fences the host (its instances are recovered once it is
    off); disabling a service is a maintenance session in vimha (`vimha maintenance`)."""
    v = microversions.of(request)
    if v < (2, 53):
        raise NotFound(f"Service {ref} could not be found (by id from microversion 2.53).")
    doc = await body(request)
    h = _Hosts(rt, v)
    host = h.find("service", ref)
    if unknown := sorted(set(doc) - {"forced_down", "status", "disabled_reason"}):
        raise InvalidInput(f"Additional properties are not allowed: {', '.join(unknown)}")
    if doc.get("status", "enabled") != "enabled":
        raise ApiProblem(501, DISABLE)
    if "forced_down" in doc:
        _forced(rt, host, doc["forced_down"], who)
    return {"service": _service(_Hosts(rt, v), host, rt)}


@router.delete("/os-services/{ref}")
def delete_service(ref: str, _: auth.Principal = auth.admin) -> Any:
    raise ApiProblem(501, "a compute host is removed from vimha's inventory (/vim/v1/hosts)")


def _forced(rt: Runtime, host: str, forced: Any, who: auth.Principal) -> None:
    if not isinstance(forced, bool):
        raise InvalidInput("Invalid input for field/attribute forced_down: true or false")
    if forced:
        evacuation.force_down(rt, host, who.name)
    # false: nothing to undo; a fenced host serves again once powered on and heard


@router.get("/os-aggregates")
def list_aggregates(_: auth.Principal = auth.reader) -> Any:
    """vimha defines no host aggregates (its hosts' locations, zones and racks, are shown as
    availability zones): always empty."""
    return {"aggregates": []}


@router.post("/os-aggregates")
def create_aggregate(_: auth.Principal = auth.admin) -> Any:
    raise ApiProblem(501, "host aggregates are not supported by vimha (see host locations)")
