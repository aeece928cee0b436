"""Every error as RFC 7807 / SOL 013 ProblemDetails (application/problem+json)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from vimha.domain.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    SchemaMismatch,
    Temporary,
    VimhaError,
)

log = logging.getLogger("vimha.api")
PROBLEM = "application/problem+json"

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class ApiProblem(Exception):
    """Raised by handlers for an HTTP-level problem not expressed by a domain error."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def problem(
    status: int, detail: str, instance: str = "", headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://vimha.dev/problems/{status}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


Face = Callable[[Request, int, str, dict[str, str]], Response | None]


def respond(
    request: Request, status: int, detail: str, headers: dict[str, str] | None = None
) -> Response:
    """The error as the API the request went to answers errors: a face installed on the app
    (the OpenStack APIs, `api/openstack/errors.py`) for its paths, else ProblemDetails."""
    for face in getattr(request.app.state, "error_faces", ()):
        answer: Response | None = face(request, status, detail, headers or {})
        if answer is not None:
            return answer
    return problem(status, detail, request.url.path, headers)


def status_of(exc: VimhaError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, PreconditionFailed):
        return 412
    if isinstance(exc, InvalidInput):
        return 400
    if isinstance(exc, SchemaMismatch | Temporary):
        return 503
    return 500


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def _api(request: Request, exc: ApiProblem) -> Response:
        return respond(request, exc.status, exc.detail, exc.headers)

    @app.exception_handler(VimhaError)
    async def _domain(request: Request, exc: VimhaError) -> Response:
        status = status_of(exc)
        headers = {}
        if isinstance(exc, Temporary):
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.detail)
        return respond(request, status, exc.detail, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for err in exc.errors()[:5]:
            loc = "/".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg', 'invalid')}")
        return respond(request, 400, "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "")
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no resource at {request.url.path}"
        if exc.status_code == 405:
            detail = f"method {request.method} is not supported on {request.url.path}"
        return respond(request, exc.status_code, detail, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return respond(request, 500, "internal error; see the controller log")
