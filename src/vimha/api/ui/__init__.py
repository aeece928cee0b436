"""The web dashboard (issue 21), served by every controller at /ui behind the API's tokens.

Layout: `app.py` the ASGI application (routes, security headers), `session.py` the login,
the session cookie and CSRF, `pages.py` the page registry and rendering, `topology.py` and
`views.py` each page's data, `live.py` the server-sent events that keep pages current,
`templates/` and `static/` (our own CSS and the vendor files built from the npm registry by
scripts/build-ui-assets.sh). It reads through the engine, like the native API's routers.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from vimha.api.auth import TokenAuth
from vimha.api.ui.app import create_ui, guarded
from vimha.api.ui.live import Feed
from vimha.api.ui.session import PREFIX
from vimha.engine.runtime import Runtime


def install(app: FastAPI, runtime: Runtime, token_auth: TokenAuth) -> Feed:
    """Mount the dashboard at /ui; returns its live feed (closed when the server stops)."""
    token_auth.accept_issued(runtime.identity)
    ui = create_ui(runtime, token_auth)

    async def to_dashboard() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    app.add_api_route(PREFIX, to_dashboard, methods=["GET"], include_in_schema=False)
    app.mount(PREFIX, guarded(ui))
    feed: Feed = ui.state.feed
    app.state.ui_feed = feed
    return feed
