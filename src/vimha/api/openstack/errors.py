"""Errors as OpenStack clients expect them, per API (the face of `api/problems.respond`).

- Compute (Nova): `{"itemNotFound": {"code": 404, "message": ...}}`, `badRequest`,
  `conflictingRequest` (409), `forbidden`, `notImplemented` (501), `computeFault` (500).
- Network (Neutron): `{"NeutronError": {"type": "PortNotFound", "message": ..., "detail": ""}}`.
- Image (Glance): `{"message": ..., "code": "404 Not Found", "title": "Not Found"}`.
- Identity (Keystone), and every 401: `{"error": {"code": 401, "title": ..., "message": ...}}`
  with `WWW-Authenticate: Keystone uri="..."` (as keystonemiddleware answers: a client then
  authenticates again).

openstacksdk and the `openstack` CLI print the `message`.
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi import Request
from fastapi.responses import JSONResponse, Response

NOVA_KEYS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}
NEUTRON_TYPES = {
    400: "HTTPBadRequest",
    403: "HTTPForbidden",
    404: "HTTPNotFound",
    405: "HTTPMethodNotAllowed",
    409: "Conflict",
    501: "HTTPNotImplemented",
    503: "ServiceUnavailable",
}
NEUTRON_RESOURCES = {"networks": "Network", "subnets": "Subnet", "ports": "Port"}
PREFIXES = ("/compute", "/network", "/image", "/identity")


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def face_of(path: str) -> str | None:
    for prefix in PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return prefix[1:]
    return None


def identity_url(request: Request) -> str:
    return f"{str(request.base_url).rstrip('/')}/identity"


def render(request: Request, status: int, detail: str, headers: dict[str, str]) -> Response | None:
    """The OpenStack error body for a request to one of the OpenStack APIs; None for the
    others (ProblemDetails then)."""
    face = face_of(request.url.path)
    if face is None:
        return None
    out = {k: v for k, v in headers.items() if k.lower() != "www-authenticate"}
    if status == 401 or face == "identity":
        if status == 401:
            out["WWW-Authenticate"] = f'Keystone uri="{identity_url(request)}"'
        body: dict[str, object] = {
            "error": {"code": status, "title": _title(status), "message": detail}
        }
    elif face == "compute":
        body = {NOVA_KEYS.get(status, "computeFault"): {"code": status, "message": detail}}
    elif face == "network":
        kind = NEUTRON_TYPES.get(status, "HTTPInternalServerError")
        if status == 404:
            parts = request.url.path.split("/")
            resource = parts[3] if len(parts) > 4 else ""
            kind = (
                f"{NEUTRON_RESOURCES[resource]}NotFound" if resource in NEUTRON_RESOURCES else kind
            )
        body = {"NeutronError": {"type": kind, "message": detail, "detail": ""}}
    else:
        body = {"message": detail, "code": f"{status} {_title(status)}", "title": _title(status)}
    return JSONResponse(body, status_code=status, headers=out)
