"""Compute v2.1: version discovery, flavors (with extra specs, e.g. `hw:watchdog_action`
and vimha's own keys), key pairs, limits, availability zones."""

from __future__ import annotations

import zlib
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.api.openstack import microversions
from vimha.api.openstack.common import base, body, flag, iso_micro, member
from vimha.api.openstack.compute_hosts import compute_hosts
from vimha.api.openstack.compute_views import flavor_view
from vimha.api.problems import ApiProblem
from vimha.domain.errors import InvalidInput, NotFound
from vimha.domain.identity import PROJECT
from vimha.engine.runtime import Runtime

root_router = APIRouter(prefix="/compute", include_in_schema=False)
router = APIRouter(prefix="/compute/v2.1", include_in_schema=False)
UNLIMITED = -1


def _version(root: str) -> dict[str, Any]:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": microversions.text(microversions.MAX),
        "min_version": microversions.text(microversions.MIN),
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": f"{root}/compute/v2.1/"}],
        "media-types": [
            {
                "base": "application/json",
                "type": "application/vnd.openstack.compute+json;version=2.1",
            }
        ],
    }


@root_router.get("")
@root_router.get("/")
def versions(request: Request) -> Any:
    """Version discovery: v2.1 with its microversion range (no token needed)."""
    return {"versions": [_version(base(request))]}


@router.get("")
@router.get("/")
def version(request: Request) -> Any:
    return {"version": _version(base(request))}


# -- flavors ------------------------------------------------------------------------------
def _flavor(rt: Runtime, ref: str) -> Any:
    try:
        return rt.store.compute.flavor(ref)
    except NotFound:
        raise NotFound(f"Flavor {ref} could not be found.") from None


@router.get("/flavors")
def list_flavors(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    v, root = microversions.of(request), base(request)
    return {"flavors": [flavor_view(f, root, v, detail=False) for f in _flavors(rt, request)]}


@router.get("/flavors/detail")
def list_flavors_detail(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    v, root = microversions.of(request), base(request)
    return {"flavors": [flavor_view(f, root, v) for f in _flavors(rt, request)]}


def _flavors(rt: Runtime, request: Request) -> list[Any]:
    q = request.query_params
    out = rt.store.compute.flavors()
    if q.get("minRam", "").isdigit():
        out = [f for f in out if f.ram_mib >= int(q["minRam"])]
    if q.get("minDisk", "").isdigit():
        out = [f for f in out if f.disk_gib >= int(q["minDisk"])]
    if q.get("is_public", "").lower() in ("false", "0"):
        out = []  # every vimha flavor is public
    return sorted(out, key=lambda f: f.id)


@router.get("/flavors/{flavor_id}")
def show_flavor(
    flavor_id: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> Any:
    return {"flavor": flavor_view(_flavor(rt, flavor_id), base(request), microversions.of(request))}


@router.post("/flavors")
async def create_flavor(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.admin
) -> Any:
    f = member(await body(request), "flavor")
    for key, default in (("OS-FLV-EXT-DATA:ephemeral", 0), ("swap", 0)):
        if f.get(key, default) not in (0, "", None):
            raise InvalidInput(f"{key}: vimha flavors have no ephemeral or swap disk")
    if not flag(f.get("os-flavor-access:is_public", True)):
        raise InvalidInput("os-flavor-access:is_public: every vimha flavor is public")
    if f.get("description"):
        raise InvalidInput("description: vimha keeps no flavor description")
    try:
        vcpus, ram, disk = int(f["vcpus"]), int(f["ram"]), int(f.get("disk", 0))
    except (KeyError, TypeError, ValueError):
        raise InvalidInput("flavor: name, ram, vcpus (integers) and disk are required") from None
    flavor = await run_in_threadpool(
        rt.catalog.create_flavor, str(f.get("name", "")), vcpus, ram, disk, {}, f.get("id")
    )
    return {"flavor": flavor_view(flavor, base(request), microversions.of(request))}


@router.delete("/flavors/{flavor_id}", status_code=202)
def delete_flavor(
    flavor_id: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.admin
) -> Response:
    rt.catalog.delete_flavor(_flavor(rt, flavor_id).id)
    return Response(status_code=202)


@router.get("/flavors/{flavor_id}/os-extra_specs")
def extra_specs(
    flavor_id: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    return {"extra_specs": dict(_flavor(rt, flavor_id).extra_specs)}


@router.post("/flavors/{flavor_id}/os-extra_specs")
async def add_extra_specs(
    flavor_id: str, request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.admin
) -> Any:
    specs = member(await body(request), "extra_specs")
    clean = {str(k): str(v) for k, v in specs.items()}
    await run_in_threadpool(rt.catalog.set_flavor_specs, _flavor(rt, flavor_id).id, clean)
    return {"extra_specs": clean}


@router.get("/flavors/{flavor_id}/os-extra_specs/{key}")
def extra_spec(
    flavor_id: str, key: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    specs = _flavor(rt, flavor_id).extra_specs
    if key not in specs:
        raise NotFound(f"Flavor {flavor_id} has no extra specs with key {key}.")
    return {key: specs[key]}


@router.put("/flavors/{flavor_id}/os-extra_specs/{key}")
async def set_extra_spec(
    flavor_id: str,
    key: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.admin,
) -> Any:
    doc = await body(request)
    if set(doc) != {key}:
        raise InvalidInput("Request body and URI mismatch")
    await run_in_threadpool(
        rt.catalog.set_flavor_specs, _flavor(rt, flavor_id).id, {key: str(doc[key])}
    )
    return {key: str(doc[key])}


@router.delete("/flavors/{flavor_id}/os-extra_specs/{key}")
def delete_extra_spec(
    flavor_id: str, key: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.admin
) -> Response:
    rt.catalog.unset_flavor_spec(_flavor(rt, flavor_id).id, key)
    return Response(status_code=200)


@router.get("/flavors/{flavor_id}/os-flavor-access")
def flavor_access(
    flavor_id: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    _flavor(rt, flavor_id)
    raise ApiProblem(404, "Access list not available for public flavors.")


# -- key pairs ----------------------------------------------------------------------------
def _keypair(name: str, key: str, fingerprint: str, v: microversions.Version) -> dict[str, Any]:
    out = {"name": name, "public_key": key, "fingerprint": fingerprint}
    if v >= (2, 2):
        out["type"] = "ssh"
    return out


@router.get("/os-keypairs")
def list_keypairs(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    v = microversions.of(request)
    return {
        "keypairs": [
            {"keypair": _keypair(n, k, f, v)} for n, k, f, _ in rt.store.compute.keypairs()
        ]
    }


@router.post("/os-keypairs")
async def create_keypair(
    request: Request, rt: Runtime = Depends(runtime), who: auth.Principal = auth.operator
) -> JSONResponse:
    """Import a public key (it reaches the config drive of the servers booted with it)."""
    kp = member(await body(request), "keypair")
    v = microversions.of(request)
    if not kp.get("public_key"):
        raise InvalidInput("public_key: required (vimha imports key pairs, it generates none)")
    if kp.get("type", "ssh") != "ssh":
        raise InvalidInput("type: ssh only")
    name, key = str(kp.get("name", "")), str(kp["public_key"])
    if not name:
        raise InvalidInput("Invalid input for field/attribute name: required")
    fingerprint = await run_in_threadpool(rt.catalog.add_keypair, name, key)
    out = {**_keypair(name, key, fingerprint, v), "user_id": who.name}
    return JSONResponse({"keypair": out}, status_code=201 if v >= (2, 2) else 200)


@router.get("/os-keypairs/{name}")
def show_keypair(
    name: str, request: Request, rt: Runtime = Depends(runtime), who: auth.Principal = auth.reader
) -> Any:
    for n, key, fingerprint, created in rt.store.compute.keypairs():
        if n == name:
            view = _keypair(n, key, fingerprint, microversions.of(request))
            return {
                "keypair": {
                    **view,
                    "id": zlib.crc32(n.encode()) & 0x7FFFFFFF,
                    "user_id": who.name,
                    "created_at": iso_micro(created),
                    "updated_at": None,
                    "deleted": False,
                    "deleted_at": None,
                }
            }
    raise NotFound(f"Keypair {name} not found for user {who.name}")


@router.delete("/os-keypairs/{name}")
def delete_keypair(
    name: str, request: Request, rt: Runtime = Depends(runtime), who: auth.Principal = auth.operator
) -> Response:
    if name not in {n for n, _, _, _ in rt.store.compute.keypairs()}:
        raise NotFound(f"Keypair {name} not found for user {who.name}")
    rt.catalog.delete_keypair(name)
    return Response(status_code=204 if microversions.of(request) >= (2, 2) else 202)


# -- limits and zones ---------------------------------------------------------------------
@router.get("/limits")
def limits(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    """vimha has no quotas: every maximum is -1 (unlimited); usage is real."""
    v = microversions.of(request)
    live = [i for i in rt.store.compute.instances() if i.project == PROJECT]
    absolute: dict[str, int] = {
        "maxServerMeta": UNLIMITED,
        "maxTotalInstances": UNLIMITED,
        "maxTotalCores": UNLIMITED,
        "maxTotalRAMSize": UNLIMITED,
        "maxTotalKeypairs": UNLIMITED,
        "maxServerGroups": UNLIMITED,
        "maxServerGroupMembers": UNLIMITED,
        "totalInstancesUsed": len(live),
        "totalCoresUsed": sum(i.spec.flavor.vcpus for i in live),
        "totalRAMUsed": sum(i.spec.flavor.ram_mib for i in live),
        "totalServerGroupsUsed": len(rt.store.compute.groups()),
    }
    if v < (2, 39):
        absolute["maxImageMeta"] = UNLIMITED
    if v < (2, 57):
        absolute |= {"maxPersonality": UNLIMITED, "maxPersonalitySize": UNLIMITED}
    if v < (2, 36):
        absolute |= {
            "maxSecurityGroups": UNLIMITED,
            "maxSecurityGroupRules": UNLIMITED,
            "maxTotalFloatingIps": UNLIMITED,
            "totalSecurityGroupsUsed": 0,
            "totalFloatingIpsUsed": 0,
        }
    return {"limits": {"rate": [], "absolute": absolute}}


def zones(rt: Runtime) -> dict[str, dict[str, str]]:
    """zone -> {compute host -> its health}."""
    views = rt.host_views()
    out: dict[str, dict[str, str]] = {}
    for host in compute_hosts(rt):
        view = views.get(host)
        zone = dict(view.location.levels).get("zone", "nova") if view else "nova"
        out.setdefault(zone, {})[host] = view.health if view else "UNKNOWN"
    return out


def _up(health: str) -> bool:
    return health in ("UP", "DEGRADED")


@router.get("/os-availability-zone")
def availability_zones(rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader) -> Any:
    return {
        "availabilityZoneInfo": [
            {
                "zoneName": z,
                "zoneState": {"available": any(map(_up, hosts.values()))},
                "hosts": None,
            }
            for z, hosts in zones(rt).items()
        ]
    }


@router.get("/os-availability-zone/detail")
def availability_zones_detail(
    rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    return {
        "availabilityZoneInfo": [
            {
                "zoneName": z,
                "zoneState": {"available": any(map(_up, hosts.values()))},
                "hosts": {
                    h: {"nova-compute": {"available": _up(s), "active": True, "updated_at": None}}
                    for h, s in hosts.items()
                },
            }
            for z, hosts in zones(rt).items()
        ]
    }
