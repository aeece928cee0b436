"""The dashboard's ASGI application, mounted at /ui by `vimha.api.ui.install`.

Server-rendered HTML (Jinja2) made live with htmx and its SSE extension, both served from
static/vendor/ (built from the npm registry at install time). Every response carries a
strict Content-Security-Policy: scripts and styles from this origin only, no inline code,
no eval (htmx is configured without it); pages and fragments are never cached.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vimha.api.auth import TokenAuth
from vimha.api.ui import maintenance, session, views
from vimha.api.ui.live import Feed
from vimha.api.ui.pages import BY_SLUG, PAGES, STATIC, Page, Renderer, missing_assets
from vimha.api.ui.session import COOKIE, PREFIX, LoginRequired, Refused, Viewer
from vimha.domain.alarms import AckState
from vimha.domain.errors import Conflict, NotFound, PreconditionFailed, Temporary
from vimha.engine.runtime import Runtime

log = logging.getLogger("vimha.ui")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
NO_STORE = {"Cache-Control": "no-store", "Vary": "HX-Request, HX-Target"}
FILTER_FIELDS = frozenset({"q", "severity", "ack", "cleared"})


class _Guard:
    """Security headers on every response; gzip on all but the event stream; assets cached
    (their URLs carry a version)."""

    def __init__(self, app: ASGIApp) -> None:
        self.plain = app
        self.gzip = GZipMiddleware(app, minimum_size=1024)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.plain(scope, receive, send)
            return
        path: str = scope["path"]
        static = "/static/" in path

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(HEADERS)
                if static:
                    headers.append((b"cache-control", b"public, max-age=86400, immutable"))
                message["headers"] = headers
            await send(message)

        inner = self.plain if path.endswith("/events") else self.gzip
        await inner(scope, receive, with_headers)


def _htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def create_ui(rt: Runtime, auth: TokenAuth) -> FastAPI:
    ui = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, title="vimha dashboard")
    ui.state.runtime = rt
    ui.state.auth = auth
    renderer = Renderer()
    feed = Feed(rt)
    ui.state.feed = feed
    ui.mount("/static", StaticFiles(directory=STATIC), name="static")

    def pages() -> list[Page]:
        return [p for p in PAGES if p.available(rt)]

    ui.include_router(maintenance.routes(rt, renderer, lambda: BY_SLUG["maintenance"]))

    @ui.exception_handler(LoginRequired)
    async def login_required(request: Request, _: Exception) -> Response:
        if _htmx(request):  # a fragment or an action: the whole page goes to the login
            return Response(status_code=200, headers={"HX-Redirect": f"{PREFIX}/login"})
        return RedirectResponse(session.login_url(request), status_code=303)

    @ui.exception_handler(Refused)
    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        html = renderer.render("notice.html", notice=("error", exc.reason))
        headers = {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML", **NO_STORE}
        return HTMLResponse(html, status_code=exc.status, headers=headers)

    @ui.exception_handler(Temporary)
    async def unavailable(request: Request, exc: Exception) -> Response:
        html = renderer.render("notice.html", notice=("error", f"Try again shortly: {exc}"))
        headers = {"Retry-After": "1", **NO_STORE}
        return HTMLResponse(html, status_code=503, headers=headers)

    @ui.exception_handler(HTTPException)
    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        html = renderer.render("notice.html", notice=("error", f"{status}: no such page"))
        return HTMLResponse(html, status_code=status, headers=NO_STORE)

    @ui.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse(f"{PREFIX}/{PAGES[0].slug}", status_code=303)

    @ui.get("/login", include_in_schema=False)
    async def login_form(request: Request, next: str | None = None) -> Response:
        return _login_page(renderer, session.safe_next(next), None, 200)

    @ui.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        if not session.same_origin(request):
            raise Refused(403, "cross-origin login refused")
        fields = await session.form(request)
        token, target = fields.get("token", ""), session.safe_next(fields.get("next"))
        opened = None
        if 0 < len(token.strip()) <= 4096:
            opened = await session.open_session(rt, auth, token.strip())
        if opened is None:
            return _login_page(renderer, target, "That token is not valid.", 401)
        response = RedirectResponse(target, status_code=303)
        session.set_cookie(response, request, *opened)
        return response

    @ui.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        who = await session.actor(request, "reader")
        await session.close_session(rt, request)
        log.info("dashboard: %s logged out", who.principal.name)
        response: Response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        if _htmx(request):
            response = Response(headers={"HX-Redirect": f"{PREFIX}/login"})
        session.clear_cookie(response, request)
        return response

    @ui.get("/events", include_in_schema=False)
    async def events(request: Request, topics: str = "") -> Response:
        await session.viewer(request)
        token = request.cookies.get(COOKIE)

        async def still_allowed() -> bool:
            return await auth.aidentify(token) is not None

        wanted = frozenset(t for t in topics.split(",") if t)
        return StreamingResponse(
            feed.stream(wanted, still_allowed, "last-event-id" in request.headers),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @ui.get("/badge", include_in_schema=False)
    async def badge(request: Request) -> Response:
        await session.viewer(request)
        html = renderer.render("badge.html", badge=await views.badge(rt))
        return HTMLResponse(html, headers=NO_STORE)

    @ui.post("/alarms/{alarm_id}/ack", include_in_schema=False)
    async def acknowledge(alarm_id: str, request: Request) -> Response:
        who = await session.actor(request, "operator")
        fields = await session.form(request)
        try:
            await run_in_threadpool(
                rt.faults.acknowledge, alarm_id, AckState.ACKNOWLEDGED, fields.get("etag") or None
            )
            notice = ("ok", f"Alarm {alarm_id} acknowledged by {who.principal.name}.")
            log.info("dashboard: %s acknowledged alarm %s", who.principal.name, alarm_id)
        except (Conflict, PreconditionFailed, NotFound) as exc:
            notice = ("error", str(exc))
        if not _htmx(request):
            return RedirectResponse(f"{PREFIX}/alarms", status_code=303)
        params = {k: v for k, v in fields.items() if k in FILTER_FIELDS}
        page = BY_SLUG["alarms"]
        data = await page.data(rt, params)
        # the outcome goes to #flash (out of band), where live refreshes leave it
        html = renderer.body(page, data, viewer=who, notice=None) + renderer.render(
            "flash.html", notice=notice
        )
        return HTMLResponse(html, headers=NO_STORE)

    @ui.get("/{slug}", include_in_schema=False)
    async def show(slug: str, request: Request) -> Response:
        page = BY_SLUG.get(slug)
        if page is None or not page.available(rt):
            raise HTTPException(404)
        who = await session.viewer(request)
        data = await page.data(rt, dict(request.query_params))
        context: dict[str, Any] = {"viewer": who, "notice": None}
        if _htmx(request) and request.headers.get("hx-target") in ("page", "live"):
            return HTMLResponse(renderer.body(page, data, **context), headers=NO_STORE)
        html = renderer.full(
            page,
            data,
            pages(),
            badge=await views.badge(rt),
            missing=missing_assets(),
            **context,
        )
        return HTMLResponse(html, headers=NO_STORE)

    return ui


def _login_page(renderer: Renderer, target: str, error: str | None, status: int) -> Response:
    html = renderer.render("login.html", next=target, error=error, missing=missing_assets())
    return HTMLResponse(html, status_code=status, headers=NO_STORE)


def guarded(ui: FastAPI) -> ASGIApp:
    return _Guard(ui)


__all__ = ["Viewer", "create_ui", "guarded"]
