"""Identity v3 (Keystone's subset OpenStack clients need), at /identity.

Users are vimha's configured tokens: user `admin` in domain `Default`, whose password is the
admin token; every other configured token is a user of its name, with its role (reader,
operator, admin; shown as Keystone's reader, member, admin). Methods `password` and `token`.
One project, `admin` (every instance belongs to it); a request without a scope is scoped to
it (the users' default project, as Keystone does), `"scope": "unscoped"` is not. The service
catalog (identity, compute, image, network in `auth.region`) is built from the address the
client used, so it works through the balancers and on any controller.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.api.openstack.common import base, body, iso_micro, member
from vimha.api.problems import ApiProblem
from vimha.domain import identity as ident
from vimha.domain.identity import IssuedToken
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/identity", include_in_schema=False)
DENIED = "The request you have made requires authentication."
UPDATED = "2024-01-01T00:00:00Z"
MEDIA = [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]
SERVICES = (
    ("identity", "keystone", "/identity"),
    ("compute", "nova", "/compute/v2.1"),
    ("image", "glance", "/image"),
    ("network", "neutron", "/network"),
)


def _version(root: str) -> dict[str, Any]:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": UPDATED,
        "links": [{"rel": "self", "href": f"{root}/identity/v3/"}],
        "media-types": MEDIA,
    }


@router.get("")
@router.get("/")
def versions(request: Request) -> JSONResponse:
    """Version discovery (300 Multiple Choices, as Keystone answers)."""
    return JSONResponse({"versions": {"values": [_version(base(request))]}}, status_code=300)


@router.get("/v3")
@router.get("/v3/")
def version(request: Request) -> dict[str, Any]:
    return {"version": _version(base(request))}


def catalog(root: str, region: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{kind}-service",
            "type": kind,
            "name": name,
            "endpoints": [
                {
                    "id": f"{kind}-{interface}",
                    "interface": interface,
                    "region": region,
                    "region_id": region,
                    "url": root + path,
                }
                for interface in ("public", "internal", "admin")
            ],
        }
        for kind, name, path in SERVICES
    ]


def _domain() -> dict[str, str]:
    return {"id": ident.DOMAIN_ID, "name": ident.DOMAIN_NAME}


def _project(name: str, root: str) -> dict[str, Any]:
    return {
        "id": name,
        "name": name,
        "domain_id": ident.DOMAIN_ID,
        "description": "",
        "enabled": True,
        "is_domain": False,
        "parent_id": ident.DOMAIN_ID,
        "tags": [],
        "options": {},
        "links": {"self": f"{root}/identity/v3/projects/{name}"},
    }


def token_view(token: IssuedToken, root: str, region: str, with_catalog: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "methods": list(token.methods),
        "user": {
            "id": token.user,
            "name": token.user,
            "domain": _domain(),
            "password_expires_at": None,
        },
        "audit_ids": [token.audit_id],
        "issued_at": iso_micro(token.issued_at, z=True),
        "expires_at": iso_micro(token.expires_at, z=True),
    }
    if token.project is not None:
        out["project"] = {"id": token.project, "name": token.project, "domain": _domain()}
        out["is_domain"] = False
        out["roles"] = [{"id": r, "name": r} for r in ident.KEYSTONE_ROLES[token.role]]
        if with_catalog:
            out["catalog"] = catalog(root, region)
    return out


def _scope(scope: object) -> str | None:
    """The project a request scopes to; ApiProblem(401) for a scope vimha has not."""
    if scope is None:
        return ident.PROJECT  # the user's default project
    if scope == "unscoped":
        return None
    project = scope.get("project") if isinstance(scope, dict) else None
    if not isinstance(project, dict):
        raise ApiProblem(401, "vimha scopes tokens to a project only (project admin)")
    wanted = project.get("id") if "id" in project else project.get("name")
    if wanted != ident.PROJECT or (
        "id" not in project and not ident.in_default_domain(project.get("domain"))
    ):
        raise ApiProblem(401, f"project {wanted} not found in domain Default: vimha has one, admin")
    return ident.PROJECT


@router.post("/v3/auth/tokens", status_code=201)
async def issue(request: Request, nocatalog: str | None = None) -> JSONResponse:
    """Authenticate (password or token) and get a token in `X-Subject-Token`."""
    rt: Runtime = request.app.state.runtime
    token_auth: auth.TokenAuth = request.app.state.auth
    doc = member(await body(request), "auth")
    proof = member(doc, "identity")
    methods = proof.get("methods")
    if not isinstance(methods, list) or not methods:
        raise ApiProblem(400, "auth.identity.methods: a list of methods is required")
    parent: IssuedToken | None = None
    if "password" in methods:
        user = member(member(proof, "password"), "user")
        name = user.get("name") if "name" in user else user.get("id")
        if "name" in user and not ident.in_default_domain(user.get("domain")):
            raise ApiProblem(401, DENIED)
        principal = token_auth.password(str(name), str(user.get("password", "")))
        used: tuple[str, ...] = ("password",)
    elif "token" in methods:
        given = str(member(proof, "token").get("id", ""))
        principal = token_auth.configured(given)
        if principal is None and given:
            parent = await run_in_threadpool(rt.identity.validate, given)
            principal = None if parent is None else auth.Principal(parent.user, parent.role)
        used = ("token", *(parent.methods if parent else ()))
        used = tuple(dict.fromkeys(used))
    else:
        raise ApiProblem(401, f"unsupported authentication methods {methods}: password, token")
    if principal is None:
        raise ApiProblem(401, DENIED)
    project = _scope(doc.get("scope"))
    token, issued = await rt.identity.issue(principal.name, principal.role, project, used, parent)
    view = token_view(issued, base(request), rt.config.auth.region, nocatalog is None)
    return JSONResponse({"token": view}, status_code=201, headers={"X-Subject-Token": token})


async def _subject(request: Request) -> tuple[str, IssuedToken]:
    rt: Runtime = request.app.state.runtime
    subject = request.headers.get("x-subject-token", "")
    found = await run_in_threadpool(rt.identity.validate, subject) if subject else None
    if found is None:
        raise ApiProblem(404, f"Could not find token: {subject[:8]}...")
    return subject, found


@router.get("/v3/auth/tokens")
async def validate(
    request: Request, nocatalog: str | None = None, _: auth.Principal = auth.reader
) -> JSONResponse:
    """Validate the token in `X-Subject-Token` (404 if unknown, expired or revoked)."""
    rt: Runtime = request.app.state.runtime
    subject, found = await _subject(request)
    view = token_view(found, base(request), rt.config.auth.region, nocatalog is None)
    return JSONResponse({"token": view}, headers={"X-Subject-Token": subject})


@router.head("/v3/auth/tokens")
async def check(request: Request, _: auth.Principal = auth.reader) -> Response:
    subject, _found = await _subject(request)
    return Response(status_code=200, headers={"X-Subject-Token": subject})


@router.delete("/v3/auth/tokens", status_code=204)
async def revoke(request: Request, _: auth.Principal = auth.reader) -> Response:
    """Revoke the token in `X-Subject-Token` (on every controller within seconds)."""
    rt: Runtime = request.app.state.runtime
    subject, _found = await _subject(request)
    await rt.identity.revoke(subject)
    return Response(status_code=204)


@router.get("/v3/auth/catalog")
def auth_catalog(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    return {"catalog": catalog(base(request), rt.config.auth.region), "links": {}}


@router.get("/v3/auth/projects")
@router.get("/v3/projects")
def projects(request: Request, _: auth.Principal = auth.reader) -> dict[str, Any]:
    root = base(request)
    return {"projects": [_project(ident.PROJECT, root)], "links": {"self": None}}


@router.get("/v3/projects/{project_id}")
def project(project_id: str, request: Request, _: auth.Principal = auth.reader) -> dict[str, Any]:
    if project_id not in (ident.PROJECT,):
        raise ApiProblem(404, f"Could not find project: {project_id}.")
    return {"project": _project(project_id, base(request))}


@router.get("/v3/users/{user_id}")
def user(user_id: str, request: Request, who: auth.Principal = auth.reader) -> dict[str, Any]:
    """The caller itself (vimha lists no other user: they are its configured tokens)."""
    if user_id != who.name:
        raise ApiProblem(404, f"Could not find user: {user_id}.")
    return {
        "user": {
            "id": who.name,
            "name": who.name,
            "domain_id": ident.DOMAIN_ID,
            "default_project_id": ident.PROJECT,
            "enabled": True,
            "password_expires_at": None,
            "options": {},
            "links": {"self": f"{base(request)}/identity/v3/users/{who.name}"},
        }
    }


@router.get("/v3/domains/{domain_id}")
def domain(domain_id: str, request: Request, _: auth.Principal = auth.reader) -> dict[str, Any]:
    if domain_id != ident.DOMAIN_ID:
        raise ApiProblem(404, f"Could not find domain: {domain_id}.")
    return {
        "domain": {
            **_domain(),
            "description": "",
            "enabled": True,
            "tags": [],
            "options": {},
            "links": {"self": f"{base(request)}/identity/v3/domains/{domain_id}"},
        }
    }
