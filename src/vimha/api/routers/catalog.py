"""The compute catalog (issue 14): flavors, images (and their data: the image store),
networks with their subnet and pool, ports."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from vimha.api import auth
from vimha.api.compute_schemas import FlavorIn, ImageIn, NetworkIn, PortIn
from vimha.api.deps import runtime
from vimha.api.problems import ApiProblem
from vimha.domain import addressing
from vimha.domain.clock import iso
from vimha.domain.compute import Flavor, Image, Network, Port
from vimha.engine.catalog import CHUNK
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/vim/v1", tags=["catalog"])
MAX_IMAGE = 8 << 30


def flavor_view(f: Flavor) -> dict[str, Any]:
    return f.to_dict()


def image_view(i: Image, base: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": i.id,
        "name": i.name,
        "status": i.status,
        "size": i.size,
        "diskFormat": i.disk_format,
        "containerFormat": i.container_format,
        "properties": dict(i.properties),
        "visibility": i.visibility,
        "minDiskGib": i.min_disk_gib,
        "minRamMib": i.min_ram_mib,
        "createdAt": iso(i.created_at),
        "updatedAt": iso(i.updated_at),
        "_links": {
            "self": {"href": f"{base}/vim/v1/images/{i.id}"},
            "file": {"href": f"{base}/vim/v1/images/{i.id}/file"},
        },
    }
    if i.digest:
        out["digest"] = f"sha256:{i.digest}"
    return out


def network_view(n: Network, free: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": n.id,
        "name": n.name,
        "subnetId": n.subnet_id,
        "cidr": n.cidr,
        "gateway": n.gateway,
        "allocationPool": {"start": n.pool_start, "end": n.pool_end},
        "mtu": n.mtu,
        "createdAt": iso(n.created_at),
    }
    if free is not None:
        out["freeAddresses"] = free
    return out


def port_view(p: Port) -> dict[str, Any]:
    return {
        "id": p.id,
        "networkId": p.network_id,
        "macAddress": p.mac,
        "ipAddress": p.ip,
        "instanceId": p.instance_id,
        "name": p.name,
        "tags": list(p.tags),
        "bond": p.bond,
    }


# -- flavors ------------------------------------------------------------------------------
@router.get("/flavors")
def list_flavors(
    rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> list[dict[str, Any]]:
    return [flavor_view(f) for f in rt.store.compute.flavors()]


@router.post("/flavors", status_code=201)
def create_flavor(
    body: FlavorIn, rt: Runtime = Depends(runtime), _: auth.Principal = auth.admin
) -> dict[str, Any]:
    flavor = rt.catalog.create_flavor(
        body.name, body.vcpus, body.ramMib, body.diskGib, body.extraSpecs, body.id
    )
    return flavor_view(flavor)


@router.get("/flavors/{flavorId}")
def get_flavor(
    flavorId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    return flavor_view(rt.store.compute.flavor(flavorId))


@router.delete("/flavors/{flavorId}", status_code=204)
def delete_flavor(
    flavorId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.admin
) -> Response:
    rt.catalog.delete_flavor(flavorId)
    return Response(status_code=204)


# -- images -------------------------------------------------------------------------------
@router.get("/images")
def list_images(
    rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> list[dict[str, Any]]:
    base = rt.config.api.base_url
    return [image_view(i, base) for i in rt.store.compute.images()]


@router.post("/images", status_code=201)
def create_image(
    body: ImageIn, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> dict[str, Any]:
    """Register an image (status `queued`); its data follows with PUT .../file."""
    image = rt.catalog.create_image(
        body.name,
        body.diskFormat,
        body.containerFormat,
        body.properties,
        body.id,
        body.minDiskGib,
        body.minRamMib,
        body.visibility,
    )
    return image_view(image, rt.config.api.base_url)


@router.get("/images/{imageId}")
def get_image(
    imageId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    return image_view(rt.store.compute.image(imageId), rt.config.api.base_url)


@router.delete("/images/{imageId}", status_code=204)
def delete_image(
    imageId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> Response:
    rt.catalog.delete_image(imageId)
    return Response(status_code=204)


async def spool_body(request: Request) -> tempfile.SpooledTemporaryFile[bytes]:
    """The request body in a temporary file (large images never sit in memory)."""
    spool: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
        CHUNK * 4
    )  # closed by the caller
    size = 0
    async for piece in request.stream():
        size += len(piece)
        if size > MAX_IMAGE:
            spool.close()
            raise ApiProblem(413, f"image data larger than {MAX_IMAGE >> 30} GiB")
        spool.write(piece)
    spool.seek(0)
    return spool


def _read(spool: tempfile.SpooledTemporaryFile[bytes]) -> Iterator[bytes]:
    while piece := spool.read(CHUNK):
        yield piece


@router.put(
    "/images/{imageId}/file",
    status_code=204,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_image(
    imageId: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.operator,
) -> Response:
    """The image's data, stored once under its SHA-256 (content-addressed)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/octet-stream":
        raise ApiProblem(415, f"content type must be application/octet-stream, not {ctype}")
    await run_in_threadpool(rt.store.compute.image, imageId)  # 404 before reading the body
    spool = await spool_body(request)
    try:
        await run_in_threadpool(rt.catalog.upload, imageId, _read(spool))
    finally:
        spool.close()
    return Response(status_code=204)


@router.get("/images/{imageId}/file")
def download_image(
    imageId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.host_reader
) -> StreamingResponse:
    """The image's data (agents fetch what their guests need)."""
    image, data = rt.catalog.data(imageId)
    return StreamingResponse(
        data,
        media_type="application/octet-stream",
        headers={"Content-Length": str(image.size), "X-Image-Digest": f"sha256:{image.digest}"},
    )


# -- networks and ports -------------------------------------------------------------------
@router.get("/networks")
def list_networks(
    rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> list[dict[str, Any]]:
    return [network_view(n) for n in rt.store.compute.networks()]


@router.post("/networks", status_code=201)
def create_network(
    body: NetworkIn, rt: Runtime = Depends(runtime), _: auth.Principal = auth.admin
) -> dict[str, Any]:
    pool = body.allocationPool
    network = rt.catalog.create_network(
        body.name, body.cidr, body.gateway, pool.start if pool else None, pool.end if pool else None
    )
    return network_view(network)


@router.get("/networks/{networkId}")
def get_network(
    networkId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    network = rt.store.compute.network(networkId)
    used = len(rt.store.compute.ports(network_id=network.id))
    free = addressing.pool_size(network.pool_start, network.pool_end) - used
    return network_view(network, max(free, 0))


@router.delete("/networks/{networkId}", status_code=204)
def delete_network(
    networkId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.admin
) -> Response:
    rt.catalog.delete_network(networkId)
    return Response(status_code=204)


@router.get("/ports")
def list_ports(
    network: str | None = None,
    instance: str | None = None,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> list[dict[str, Any]]:
    network_id = rt.store.compute.network(network).id if network else None
    return [port_view(p) for p in rt.store.compute.ports(network_id, instance)]


@router.post("/ports", status_code=201)
def create_port(
    body: PortIn, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> dict[str, Any]:
    port = rt.catalog.create_port(
        body.network, body.macAddress, body.ipAddress, body.name, tuple(body.tags)
    )
    return port_view(port)


@router.get("/ports/{portId}")
def get_port(
    portId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    return port_view(rt.store.compute.port(portId))


@router.delete("/ports/{portId}", status_code=204)
def delete_port(
    portId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> Response:
    rt.catalog.delete_port(portId)
    return Response(status_code=204)
