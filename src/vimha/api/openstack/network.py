"""Network v2.0 (Neutron's subset) at /network, over vimha's VNF networks: networks,
subnets (one per network: a vimha network is Neutron's network with its subnet) and ports.

Lists filter by any attribute (`?name=vnf-a`, `?device_id=...`, `?fixed_ips=ip_address=...`)
and select `fields`. A port created with a fixed MAC and IP and given to a server keeps
them. Networks and subnets are created with vimha's own API (`vimha networks`, `POST
/vim/v1/networks`: network, subnet and pool at once): creating them here answers 501.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.api.openstack.common import base, body, iso_z, member
from vimha.api.problems import ApiProblem
from vimha.domain.compute import Instance, InstanceStatus, Network, Port
from vimha.domain.errors import InvalidInput, NotFound
from vimha.domain.identity import PROJECT
from vimha.engine.runtime import Runtime

root_router = APIRouter(prefix="/network", include_in_schema=False)
router = APIRouter(prefix="/network/v2.0", include_in_schema=False)
NOT_FILTERS = {"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse"}
CREATE_NETWORKS = (
    "networks and subnets are created with vimha's API (POST /vim/v1/networks: the network, "
    "its subnet and its pool at once; `vimha networks`)"
)


@root_router.get("")
@root_router.get("/")
def versions(request: Request) -> Any:
    href = f"{base(request)}/network/v2.0/"
    return {
        "versions": [{"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": href}]}]
    }


@router.get("")
@router.get("/")
def resources(request: Request) -> Any:
    root = base(request)
    return {
        "resources": [
            {
                "name": n,
                "collection": f"{n}s",
                "links": [{"rel": "self", "href": f"{root}/network/v2.0/{n}s"}],
            }
            for n in ("network", "subnet", "port")
        ]
    }


@router.get("/extensions")
def extensions(_: auth.Principal = auth.reader) -> Any:
    """None of Neutron's extensions: vimha has networks, subnets and ports only."""
    return {"extensions": []}


def _common(created: Any) -> dict[str, Any]:
    return {
        "tenant_id": PROJECT,
        "project_id": PROJECT,
        "description": "",
        "created_at": iso_z(created),
        "updated_at": iso_z(created),
        "revision_number": 1,
    }


def network_view(n: Network) -> dict[str, Any]:
    return {
        "id": n.id,
        "name": n.name,
        **_common(n.created_at),
        "admin_state_up": True,
        "status": "ACTIVE",
        "subnets": [n.subnet_id],
        "shared": True,
        "router:external": False,
        "mtu": n.mtu,
        "port_security_enabled": False,
        "availability_zones": [],
        "availability_zone_hints": [],
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "is_default": False,
        "tags": [],
    }


def subnet_view(n: Network) -> dict[str, Any]:
    return {
        "id": n.subnet_id,
        "name": n.name,
        "network_id": n.id,
        **_common(n.created_at),
        "ip_version": 4,
        "cidr": n.cidr,
        "gateway_ip": n.gateway,
        "allocation_pools": [{"start": n.pool_start, "end": n.pool_end}],
        "enable_dhcp": False,  # the guest finds its addresses on its config drive
        "dns_nameservers": [],
        "host_routes": [],
        "ipv6_ra_mode": None,
        "ipv6_address_mode": None,
        "subnetpool_id": None,
        "service_types": [],
        "tags": [],
    }


def port_view(p: Port, n: Network, i: Instance | None) -> dict[str, Any]:
    bound = i is not None and i.status is not InstanceStatus.DELETED
    return {
        "id": p.id,
        "name": p.name,
        "network_id": p.network_id,
        "tenant_id": PROJECT,
        "project_id": PROJECT,
        "description": "",
        "revision_number": 1,
        "mac_address": p.mac,
        "fixed_ips": [{"subnet_id": n.subnet_id, "ip_address": p.ip}],
        "device_id": p.instance_id or "",
        "device_owner": "compute:nova" if p.instance_id else "",
        "status": "ACTIVE" if bound and i and i.status is InstanceStatus.ACTIVE else "DOWN",
        "admin_state_up": True,
        "binding:host_id": (i.host or "") if bound and i else "",
        "binding:vnic_type": "normal",
        "binding:vif_type": "unbound" if not bound else "vimha",
        "security_groups": [],
        "allowed_address_pairs": [],
        "extra_dhcp_opts": [],
        "port_security_enabled": False,
        "dns_name": "",
        "tags": list(p.tags),
    }


def _matches(item: dict[str, Any], key: str, wanted: list[str]) -> bool:
    if key == "fixed_ips":
        for want in wanted:
            attr, _, value = want.partition("=")
            if not any(str(ip.get(attr)) == value for ip in item["fixed_ips"]):
                return False
        return True
    value = item[key]
    if isinstance(value, bool):
        return str(value).lower() in (w.lower() for w in wanted)
    if isinstance(value, list):
        return all(w in value for w in wanted)
    return str(value if value is not None else "") in wanted


def _listed(request: Request, key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    q = request.query_params
    for name in {k for k in q if k not in NOT_FILTERS}:
        if name not in KEYS[key]:
            raise InvalidInput(f"{name} is not a valid filter of {key}")
        items = [i for i in items if _matches(i, name, q.getlist(name))]
    fields = q.getlist("fields")
    if fields:
        items = [{f: i[f] for f in fields if f in i} for i in items]
    return {key: items}


def _one(key: str, items: list[dict[str, Any]], ref: str, what: str, fields: list[str]) -> Any:
    for item in items:
        if ref in (item["id"], item.get("name")):
            return {key: {f: item[f] for f in fields if f in item} if fields else item}
    raise NotFound(f"{what} {ref} could not be found.")


_SAMPLE = Network("", "", "", "10.0.0.0/30", None, "10.0.0.1", "10.0.0.2", datetime.now(UTC))
KEYS = {
    "networks": set(network_view(_SAMPLE)),
    "subnets": set(subnet_view(_SAMPLE)),
    "ports": set(port_view(Port("", "", "", ""), _SAMPLE, None)),
}


@router.get("/networks")
def list_networks(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    return _listed(request, "networks", [network_view(n) for n in rt.store.compute.networks()])


@router.get("/networks/{ref}")
def show_network(
    ref: str, request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    items = [network_view(n) for n in rt.store.compute.networks()]
    return _one("network", items, ref, "Network", request.query_params.getlist("fields"))


@router.get("/subnets")
def list_subnets(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    return _listed(request, "subnets", [subnet_view(n) for n in rt.store.compute.networks()])


@router.get("/subnets/{ref}")
def show_subnet(
    ref: str, request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    items = [subnet_view(n) for n in rt.store.compute.networks()]
    return _one("subnet", items, ref, "Subnet", request.query_params.getlist("fields"))


@router.post("/networks")
@router.post("/subnets")
@router.put("/networks/{ref}")
@router.put("/subnets/{ref}")
@router.delete("/subnets/{ref}")
def change_networks(_: auth.Principal = auth.admin) -> Any:
    raise ApiProblem(501, f"not implemented in vimha's Network API: {CREATE_NETWORKS}")


@router.delete("/networks/{ref}", status_code=204)
def delete_network(
    ref: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.admin
) -> Response:
    """Delete a network with its subnet (409 while it has ports)."""
    rt.catalog.delete_network(rt.store.compute.network(ref).id)
    return Response(status_code=204)


def _ports(rt: Runtime) -> list[dict[str, Any]]:
    networks = {n.id: n for n in rt.store.compute.networks()}
    by_id: dict[str, Instance] = {i.id: i for i in rt.store.compute.instances()}
    return [
        port_view(p, networks[p.network_id], by_id.get(p.instance_id or ""))
        for p in rt.store.compute.ports()
        if p.network_id in networks
    ]


@router.get("/ports")
def list_ports(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    return _listed(request, "ports", _ports(rt))


@router.get("/ports/{ref}")
def show_port(
    ref: str, request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    return _one("port", _ports(rt), ref, "Port", request.query_params.getlist("fields"))


def _fixed_ip(port: dict[str, Any], network: Network) -> str | None:
    ips = port.get("fixed_ips") or []
    if not isinstance(ips, list) or len(ips) > 1:
        raise InvalidInput("fixed_ips: at most one (a vimha network has one IPv4 subnet)")
    if not ips:
        return None
    entry = ips[0]
    if not isinstance(entry, dict):
        raise InvalidInput("fixed_ips: objects with ip_address and/or subnet_id")
    if entry.get("subnet_id") not in (None, network.subnet_id):
        raise InvalidInput(f"fixed_ips: subnet {entry['subnet_id']} is not on network {network.id}")
    return str(entry["ip_address"]) if entry.get("ip_address") else None


@router.post("/ports", status_code=201)
async def create_port(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> JSONResponse:
    """A port of its own, with a fixed MAC and IP if given; a server booted with it keeps
    them (and so does every incarnation of that server)."""
    port = member(await body(request), "port")
    unknown = set(port) - {"network_id", "mac_address", "fixed_ips", "name", "admin_state_up",
                           "tags", "description", "project_id", "tenant_id"}  # fmt: skip
    if unknown:
        raise InvalidInput(f"Unrecognized attribute(s) '{', '.join(sorted(unknown))}'")
    if port.get("admin_state_up") is False or port.get("description"):
        raise InvalidInput("admin_state_up false and description: not supported by vimha")
    try:
        network = await run_in_threadpool(rt.store.compute.network, str(port.get("network_id")))
    except NotFound:
        raise NotFound(f"Network {port.get('network_id')} could not be found.") from None
    tags = port.get("tags") or []
    made: Port = await run_in_threadpool(
        rt.catalog.create_port,
        network.id,
        port.get("mac_address"),
        _fixed_ip(port, network),
        str(port.get("name") or ""),
        tuple(str(t) for t in tags),
    )
    return JSONResponse({"port": port_view(made, network, None)}, status_code=201)


@router.put("/ports/{ref}")
def update_port(ref: str, _: auth.Principal = auth.operator) -> Any:
    raise ApiProblem(501, "not implemented in vimha: a port's MAC and IP are fixed at creation")


@router.delete("/ports/{ref}", status_code=204)
def delete_port(
    ref: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> Response:
    rt.store.compute.port(ref)
    rt.catalog.delete_port(ref)
    return Response(status_code=204)
