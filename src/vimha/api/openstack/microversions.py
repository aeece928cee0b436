"""Compute microversions (Nova's rules): `OpenStack-API-Version: compute 2.x`, or the legacy
`X-OpenStack-Nova-API-Version: 2.x`; `latest` is the maximum; no header is the minimum. A
version outside the range is refused (406), a malformed one too (400), before routing. Every
Compute v2.1 response says which version served it (both headers, and `Vary`)."""

from __future__ import annotations

import json

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vimha.domain.errors import InvalidInput

Version = tuple[int, int]
MIN: Version = (2, 1)
MAX: Version = (2, 79)
PREFIX = "/compute/v2.1"
HEADER = "OpenStack-API-Version"
LEGACY = "X-OpenStack-Nova-API-Version"


def text(v: Version) -> str:
    return f"{v[0]}.{v[1]}"


class NotAcceptable(InvalidInput):
    """A well-formed version outside the supported range (406)."""


def parse(value: str) -> Version:
    major, dot, minor = value.strip().partition(".")
    if not dot or not major.isdigit() or not minor.isdigit():
        raise InvalidInput(f"API version string {value} format is not valid. It must be X.Y")
    return int(major), int(minor)


def negotiate(header: str | None, legacy: str | None) -> Version:
    """The version a request asks for (pure). InvalidInput or NotAcceptable otherwise."""
    asked = None
    if header:
        for part in header.split(","):
            service, _, version = part.strip().partition(" ")
            if service.lower() == "compute":
                asked = version.strip()
    if asked is None and legacy:
        asked = legacy.strip()
    if not asked:
        return MIN
    if asked.lower() == "latest":
        return MAX
    wanted = parse(asked)
    if not MIN <= wanted <= MAX:
        raise NotAcceptable(
            f"Version {asked} is not supported by the API. "
            f"Minimum is {text(MIN)} and maximum is {text(MAX)}."
        )
    return wanted


def of(request: Request) -> Version:
    """The microversion serving this Compute request."""
    version: Version = getattr(request.state, "compute_version", MIN)
    return version


class Microversions:
    """ASGI middleware for the Compute v2.1 paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            version = negotiate(headers.get(HEADER.lower()), headers.get(LEGACY.lower()))
        except InvalidInput as exc:
            status, key = (
                (406, "computeFault")
                if isinstance(exc, NotAcceptable)
                else (
                    400,
                    "badRequest",
                )
            )
            body = json.dumps({key: {"code": status, "message": exc.detail}}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})["compute_version"] = version
        served = text(version)

        async def with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"openstack-api-version", f"compute {served}".encode()),
                    (b"x-openstack-nova-api-version", served.encode()),
                    (b"vary", f"{HEADER}, {LEGACY}".encode()),
                ]
            await send(message)

        await self.app(scope, receive, with_version)
