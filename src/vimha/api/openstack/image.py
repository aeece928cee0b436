"""Image v2 (Glance's subset) at /image, over vimha's content-addressed image store: list,
show, create, update (name and properties), upload and download data, delete.

The data's hash is SHA-256 (`os_hash_algo` sha256: the store's address); the MD5 `checksum`
is not computed (null). vimha images are not protected, hidden or tagged: asking for it is
refused (400), never ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from tempfile import SpooledTemporaryFile
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.api.openstack.common import base, body, flag, iso_z
from vimha.api.problems import ApiProblem
from vimha.api.routers.catalog import spool_body
from vimha.domain.compute import Image
from vimha.domain.errors import InvalidInput, NotFound
from vimha.domain.identity import PROJECT
from vimha.engine.catalog import CHUNK
from vimha.engine.runtime import Runtime

root_router = APIRouter(prefix="/image", include_in_schema=False)
router = APIRouter(prefix="/image/v2", include_in_schema=False)
CORE = {
    "id", "name", "status", "visibility", "protected", "os_hidden", "checksum", "os_hash_algo",
    "os_hash_value", "size", "virtual_size", "min_disk", "min_ram", "disk_format",
    "container_format", "owner", "created_at", "updated_at", "tags", "self", "file", "schema",
    "locations", "direct_url",
}  # fmt: skip
VISIBILITY = ("public", "private", "shared", "community")


def _versions(request: Request) -> JSONResponse:
    root = base(request)
    values = [
        {"id": f"v2.{n}", "status": "CURRENT" if n == 9 else "SUPPORTED",
         "links": [{"rel": "self", "href": f"{root}/image/v2/"}]}
        for n in range(9, -1, -1)
    ]  # fmt: skip
    return JSONResponse({"versions": values}, status_code=300)


@root_router.get("")
@root_router.get("/")
@root_router.get("/versions")
def versions(request: Request) -> JSONResponse:
    """Version discovery (300 Multiple Choices, as Glance answers)."""
    return _versions(request)


def view(i: Image) -> dict[str, Any]:
    return {
        **dict(i.properties),
        "id": i.id,
        "name": i.name,
        "status": i.status,
        "visibility": i.visibility,
        "protected": False,
        "os_hidden": False,
        "checksum": None,
        "os_hash_algo": "sha256" if i.digest else None,
        "os_hash_value": i.digest,
        "size": i.size if i.digest else None,
        "virtual_size": None,
        "min_disk": i.min_disk_gib,
        "min_ram": i.min_ram_mib,
        "disk_format": i.disk_format,
        "container_format": i.container_format,
        "owner": PROJECT,
        "created_at": iso_z(i.created_at),
        "updated_at": iso_z(i.updated_at),
        "tags": [],
        "self": f"/v2/images/{i.id}",
        "file": f"/v2/images/{i.id}/file",
        "schema": "/v2/schemas/image",
    }


def _image(rt: Runtime, image_id: str) -> Image:
    try:
        return rt.store.compute.image(image_id)
    except NotFound:
        raise NotFound(f"No image found with ID {image_id}") from None


@router.get("/images")
def list_images(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    q = request.query_params
    images = rt.store.compute.images()
    for key in ("name", "status", "visibility", "disk_format", "container_format", "id"):
        if key in q:
            wanted = q[key]
            # Glance's `in:` operator: one of a comma-separated list
            allowed = set(wanted[3:].split(",")) if wanted.startswith("in:") else {wanted}
            images = [i for i in images if str(view(i)[key]) in allowed]
    if "marker" in q:
        ids = [i.id for i in images]
        if q["marker"] not in ids:
            raise InvalidInput(f"marker {q['marker']} could not be found")
        images = images[ids.index(q["marker"]) + 1 :]
    out: dict[str, Any] = {"first": "/v2/images", "schema": "/v2/schemas/images"}
    limit = int(q["limit"]) if q.get("limit", "").isdigit() else None
    if limit is not None and len(images) > limit:
        images = images[:limit]
        out["next"] = f"/v2/images?marker={images[-1].id}&limit={limit}"
    out["images"] = [view(i) for i in images]
    return out


@router.post("/images", status_code=201)
async def create_image(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> Any:
    """Register an image (status `queued`); its data follows with PUT .../file."""
    doc = await body(request)
    if flag(doc.get("protected", False)) or flag(doc.get("os_hidden", False)):
        raise InvalidInput("protected, os_hidden: not supported by vimha's image store")
    if doc.get("tags"):
        raise InvalidInput("tags: vimha images have no tags (use properties)")
    visibility = doc.get("visibility", "public")
    if visibility not in VISIBILITY:
        raise InvalidInput(f"visibility: one of {', '.join(VISIBILITY)}")
    props = {k: v for k, v in doc.items() if k not in CORE}
    if not all(isinstance(v, str) for v in props.values()):
        raise InvalidInput("additional properties: string values only")
    try:
        min_disk, min_ram = int(doc.get("min_disk", 0)), int(doc.get("min_ram", 0))
    except (TypeError, ValueError):
        raise InvalidInput("min_disk, min_ram: integers") from None
    image = await run_in_threadpool(
        rt.catalog.create_image,
        str(doc.get("name") or ""),
        str(doc.get("disk_format") or "raw"),
        str(doc.get("container_format") or "bare"),
        props,
        doc.get("id"),
        min_disk,
        min_ram,
        visibility,
    )
    return JSONResponse(
        view(image),
        status_code=201,
        headers={"Location": f"{base(request)}/image/v2/images/{image.id}"},
    )


@router.get("/images/{image_id}")
def show_image(
    image_id: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    return view(_image(rt, image_id))


@router.patch("/images/{image_id}")
async def update_image(
    image_id: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.operator,
) -> Any:
    """JSON patch (application/openstack-images-v2.1-json-patch) of the name and of the
    additional properties; the other attributes are fixed."""
    raw = await request.body()
    try:
        ops = json.loads(raw or b"[]")
    except ValueError as exc:
        raise InvalidInput(f"Malformed JSON patch: {exc}") from None
    if not isinstance(ops, list):
        raise InvalidInput("Malformed JSON patch: a list of operations is expected")
    _image(rt, image_id)
    name: str | None = None
    props: dict[str, str | None] = {}
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or op.get("op") not in ("add", "replace", "remove"):
            raise InvalidInput(f"patch {i}: op add, replace or remove")
        path = str(op.get("path", "")).lstrip("/")
        if path == "name" and op["op"] != "remove":
            name = str(op.get("value", ""))
        elif path in CORE:
            raise ApiProblem(403, f"Attribute '{path}' is read-only or not changeable in vimha")
        elif op["op"] == "remove":
            props[path] = None
        elif isinstance(op.get("value"), str):
            props[path] = op["value"]
        else:
            raise InvalidInput(f"patch {i}: {path}: a string value")
    image = await run_in_threadpool(rt.catalog.update_image, image_id, name, props)
    return view(image)


@router.delete("/images/{image_id}", status_code=204)
def delete_image(
    image_id: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> Response:
    rt.catalog.delete_image(_image(rt, image_id).id)
    return Response(status_code=204)


def _chunks(spool: SpooledTemporaryFile[bytes]) -> Iterator[bytes]:
    while piece := spool.read(CHUNK):
        yield piece


@router.put("/images/{image_id}/file", status_code=204)
async def upload(
    image_id: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.operator,
) -> Response:
    """The image's data, stored once under its SHA-256 (content-addressed)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/octet-stream":
        raise ApiProblem(415, f"Content-Type must be application/octet-stream, not {ctype}")
    await run_in_threadpool(_image, rt, image_id)
    spool = await spool_body(request)
    try:
        await run_in_threadpool(rt.catalog.upload, image_id, _chunks(spool))
    finally:
        spool.close()
    return Response(status_code=204)


@router.get("/images/{image_id}/file")
def download(
    image_id: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Response:
    image = _image(rt, image_id)
    if image.digest is None:
        return Response(status_code=204)
    _stored, data = rt.catalog.data(image.id)
    return StreamingResponse(
        data,
        media_type="application/octet-stream",
        headers={"Content-Length": str(image.size)},
    )
