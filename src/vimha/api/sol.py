"""SOL 013 conventions shared by the routers: API version header, paging, list rendering."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vimha.domain.errors import InvalidInput
from vimha.domain.filters import Filter
from vimha.domain.selectors import Selector

API_VERSION = "1.0.0"
SUPPORTED_MAJOR = "1"


class VersionHeader:
    """Adds `Version` to every response; refuses (406) a request for an unknown major version.

    A request without `Version` is served with the current version (SOL 013 makes the header
    mandatory; being lenient here costs nothing and helps curl users).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        asked = None
        for name, value in scope["headers"]:
            if name == b"version":
                asked = value.decode("latin-1").strip()
        if asked and asked.split(".")[0] != SUPPORTED_MAJOR:
            body = json.dumps(
                {
                    "type": "https://vimha.dev/problems/406",
                    "title": "Not Acceptable",
                    "status": 406,
                    "detail": f"API version {asked} is not supported; use {API_VERSION}",
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 406,
                    "headers": [
                        (b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"version", API_VERSION.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"version", API_VERSION.encode()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_version)


_QUERY: dict[int, frozenset[str]] = {}  # id(route) -> the query parameters it defines


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def known_query_only(request: HTTPConnection) -> None:
    """SOL 013 clause 6.4: a query parameter that the operation does not define is an
    incorrect query parameter, answered 400 ProblemDetails, not ignored (a misspelt filter
    would otherwise list everything). What an operation defines is what its OpenAPI says;
    operations outside it (the OpenStack faces, whose filters are their own) are not
    checked here. `HTTPConnection`: the dependency is the app's, so a WebSocket route (a
    console) gets it too, and has no `Request`."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    if not route.include_in_schema:
        return  # not an operation of this OpenAPI (the OpenStack faces have their own rules)
    known = _QUERY.get(id(route))
    if known is None:
        known = _QUERY[id(route)] = frozenset(_query_names(route.dependant))
    unknown = sorted(set(request.query_params.keys()) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise InvalidInput(
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)}; this operation takes: {takes}"
        )


def encode_marker(seq: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")


def decode_marker(marker: str | None) -> int:
    if not marker:
        return 0
    try:
        text = base64.urlsafe_b64decode(marker + "=" * (-len(marker) % 4)).decode()
        version, seq = text.split(":")
        if version != "v1" or int(seq) < 0:
            raise ValueError
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput(f"nextpage_opaque_marker {marker!r} is not valid") from None


def page(
    items: Iterator[tuple[int, dict[str, Any]]],
    flt: Filter,
    selector: Selector,
    default_excluded: frozenset[str],
    page_size: int,
    request: Request,
) -> JSONResponse:
    """Filter, select and page `items` ((seq, representation) in seq order)."""
    out: list[dict[str, Any]] = []
    last = 0
    more = False
    for seq, doc in items:
        if not flt.matches(doc):
            continue
        if len(out) == page_size:
            more = True
            break
        out.append(selector.apply(doc, default_excluded))
        last = seq
    headers = {}
    if more:
        query = [
            (k, v) for k, v in request.query_params.multi_items() if k != "nextpage_opaque_marker"
        ]
        query.append(("nextpage_opaque_marker", encode_marker(last)))
        headers["Link"] = f'<{request.url.replace(query=urlencode(query))}>; rel="next"'
    return JSONResponse(out, headers=headers)


def mapped(
    source: Iterator[tuple[int, Any]], render: Callable[[Any], dict[str, Any]]
) -> Iterator[tuple[int, dict[str, Any]]]:
    for seq, item in source:
        yield seq, render(item)
