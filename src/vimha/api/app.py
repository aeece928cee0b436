"""The FastAPI application. The API records intent and wakes the loops; it never acts itself
beyond storing (STYLE rule 8)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi

from vimha import __version__
from vimha.api import openstack, problems, ui
from vimha.api.auth import TokenAuth
from vimha.api.fastpath import EventsFastPath
from vimha.api.routers import (
    admin,
    alarms,
    catalog,
    consoles,
    events,
    groups,
    host_instances,
    hosts,
    insight,
    instances,
    maintenance,
    migrations,
    placement,
    recovery,
    sdn,
    services,
    subscriptions,
    versions,
)
from vimha.api.sol import VersionHeader, known_query_only
from vimha.api.sol_schemas import ProblemDetails
from vimha.engine.runtime import Runtime

ERRORS = {
    400: "Bad request: malformed body, filter or parameter",
    401: "No or invalid token",
    403: "The token's role is not enough",
    404: "No such resource",
    405: "Method not supported on this resource",
    406: "API version not supported",
    409: "Conflict with the resource's state",
    412: "If-Match did not match",
    413: "Too many items in one request",
    415: "Unsupported content type",
    422: "Unprocessable (e.g. callback test failed)",
    500: "Internal error",
    503: "Store unavailable or schema mismatch; retry later",
}


def create_app(runtime: Runtime, token_auth: TokenAuth) -> FastAPI:
    app = FastAPI(
        title="vimha",
        version=__version__,
        description=(
            "High availability for the VIM. Fault management follows ETSI NFV-SOL 003 "
            "clause 7 and SOL 013 (filters, attribute selectors, paging, ProblemDetails)."
        ),
        dependencies=[Depends(known_query_only)],
    )
    app.state.runtime = runtime
    app.state.auth = token_auth
    problems.install(app)
    for module in (
        versions,
        alarms,
        subscriptions,
        events,
        hosts,
        services,
        groups,
        admin,
        catalog,
        instances,
        host_instances,
        consoles,
        placement,
        recovery,
        migrations,
        maintenance,
        sdn,
        insight,
    ):
        app.include_router(module.router)
    app.include_router(alarms.objects_router)
    app.include_router(admin.metrics_router)
    openstack.install(app, runtime, token_auth)
    ui.install(app, runtime, token_auth)
    app.add_middleware(EventsFastPath, runtime=runtime, token_auth=token_auth)
    app.add_middleware(VersionHeader)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _document_problems(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _document_problems(schema: dict[str, Any]) -> None:
    """Every operation may answer ProblemDetails for the error statuses; FastAPI's default
    422 validation schema is replaced, since validation errors answer 400 here."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ProblemDetails"] = ProblemDetails.model_json_schema()
    ref = {"$ref": "#/components/schemas/ProblemDetails"}
    for path, ops in schema.get("paths", {}).items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            for code, text in ERRORS.items():
                if code == 401 and "api_versions" in path:
                    continue
                entry = responses.setdefault(str(code), {"description": text})
                entry["description"] = entry.get("description") or text
                entry["content"] = {"application/problem+json": {"schema": ref}}
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
