"""The dashboard's sessions: a login form trades a token for a session, kept in a cookie.

- The token typed into the form (a configured one, or one the Identity face issued; a
  reader's or above, never a node agent's) is checked by `TokenAuth`, then traded for a
  new token of the same user and role issued by the Identity service
  (`engine/identity.py`: stored hashed with an expiry, valid on every controller, revoked
  at logout). Only that session token is kept, in an HttpOnly,
  SameSite=Strict cookie whose path is /ui; no token ever appears in a URL or in a page.
- A reader sees; an operator or an admin acts. Every state-changing request is a POST that
  must come from the dashboard's own origin (Origin, Sec-Fetch-Site) and carry the session's
  CSRF token (`X-CSRF-Token` header, or a `csrf` form field): an HMAC of a fixed label keyed
  by the session token, so any controller can check it and no page of another origin can
  compute it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import Request
from fastapi.responses import Response

from vimha.api.auth import RANK, Principal, TokenAuth
from vimha.engine.runtime import Runtime

COOKIE = "vimha_ui"
PREFIX = "/ui"
CSRF_HEADER = "x-csrf-token"
_CSRF_LABEL = b"vimha dashboard csrf v1"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who looks at the dashboard, and the CSRF token of their session."""

    principal: Principal
    csrf: str

    @property
    def can_act(self) -> bool:
        return self.can("operator")

    def can(self, role: str) -> bool:
        """At least `role` (reader, operator, admin)."""
        return RANK[self.principal.role] >= RANK[role]


class LoginRequired(Exception):
    """No valid session: the page redirects to the login form."""


class Refused(Exception):
    """A state-changing request refused (status, reason)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


FORM_LIMIT = 16 * 1024


async def form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the last value of each), read once per request."""
    cached: dict[str, str] | None = getattr(request.state, "form", None)
    if cached is not None:
        return cached
    fields: dict[str, str] = {}
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        body = await request.body()
        if len(body) > FORM_LIMIT:
            raise Refused(413, "form too large")
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    request.state.form = fields
    return fields


def _person(principal: Principal) -> bool:
    """Readers and above; a node agent's token opens no dashboard (it may only report for
    its own host)."""
    return RANK.get(principal.role, -1) >= RANK["reader"]


def csrf_token(session: str) -> str:
    return hmac.new(session.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def safe_next(target: str | None) -> str:
    """Where to go after the login: a dashboard path only (no open redirect)."""
    if not target:
        return PREFIX + "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(PREFIX + "/"):
        return PREFIX + "/"
    if "//" in parts.path or "\\" in target:
        return PREFIX + "/"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def login_url(request: Request) -> str:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{PREFIX}/login?next={quote(here, safe='')}"


async def viewer(request: Request) -> Viewer:
    """The session's viewer; raises LoginRequired."""
    session = request.cookies.get(COOKIE)
    auth: TokenAuth = request.app.state.auth
    principal = await auth.aidentify(session) if session else None
    if principal is None or session is None or not _person(principal):
        raise LoginRequired()
    return Viewer(principal, csrf_token(session))


def same_origin(request: Request) -> bool:
    """The request comes from a page of this origin. Browsers send Sec-Fetch-Site (which no
    page can set); older ones only Origin. A client that sends neither is no browser: the
    CSRF token still guards it."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is not None:
        return urlsplit(origin).netloc == request.headers.get("host", "")
    return True


async def actor(request: Request, role: str = "operator") -> Viewer:
    """The viewer of a state-changing request: same origin, the session's CSRF token, and
    at least `role`. Raises LoginRequired or Refused."""
    if not same_origin(request):
        raise Refused(403, "cross-origin request refused")
    who = await viewer(request)
    sent = request.headers.get(CSRF_HEADER) or (await form(request)).get("csrf")
    if sent is None or not hmac.compare_digest(sent.encode(), who.csrf.encode()):
        raise Refused(403, "missing or wrong CSRF token: reload the page")
    if RANK[who.principal.role] < RANK[role]:
        raise Refused(403, f"{who.principal.name} has role {who.principal.role}; this needs {role}")
    return who


async def open_session(rt: Runtime, auth: TokenAuth, token: str) -> tuple[str, float] | None:
    """Trade a valid token for a session token (and its lifetime in seconds), or None."""
    principal = await auth.aidentify(token)
    if principal is None or not _person(principal):
        return None
    parent = None
    if auth.configured(token) is None:  # an issued token: the session ends no later
        parent = await asyncio.to_thread(rt.identity.validate, token)
        if parent is None:
            return None
    session, issued = await rt.identity.issue(
        principal.name, principal.role, None, ("dashboard",), parent
    )
    lifetime = (issued.expires_at - rt.clock.now()).total_seconds()
    return session, max(lifetime, 0.0)


def set_cookie(response: Response, request: Request, session: str, lifetime: float) -> None:
    response.set_cookie(
        COOKIE,
        session,
        max_age=int(lifetime),
        path=PREFIX,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path=PREFIX, secure=request.url.scheme == "https", httponly=True, samesite="strict"
    )


async def close_session(rt: Runtime, request: Request) -> None:
    session = request.cookies.get(COOKIE)
    if session:
        await rt.identity.revoke(session)
