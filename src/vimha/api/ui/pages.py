"""The dashboard's pages: a registry, and their rendering with Jinja2.

A page is a template of its own (`templates/pages/<slug>.html`, the page's body), a data
function `async (runtime, query parameters) -> dict` and the live topics that refresh it
(`live.MARKERS`). `GET /ui/<slug>` renders the body inside the layout; the same URL asked
by htmx for the `page` element renders the body alone, which is how filters apply and how a
live event refreshes it. To add a page (sdn.py, incidents.py, metrics.py, maintenance.py are
such): write its template and data function and add a `Page` to PAGES, with `available`
telling whether its data exists on this controller and `charts` whether it loads Chart.js
(its charts are `data-chart` elements, drawn by our `static/ui.js`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from vimha import __version__
from vimha.api.ui import incidents, maintenance, metrics, sdn, topology, views
from vimha.engine.runtime import Runtime

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
VENDOR = ("htmx.min.js", "htmx-sse.min.js", "chart.umd.min.js")

Data = Callable[[Runtime, dict[str, str]], Awaitable[dict[str, Any]]]


def _always(_: Runtime) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Page:
    slug: str  # /ui/<slug>; templates/pages/<slug>.html
    title: str
    data: Data
    topics: tuple[str, ...]  # live topics that refresh it (besides the alarm badge)
    available: Callable[[Runtime], bool] = _always
    charts: bool = False  # loads Chart.js and ui.js


PAGES: tuple[Page, ...] = (
    Page("topology", "Topology", topology.topology, ("hosts", "compute")),
    Page("groups", "Service groups", views.groups, ("groups",)),
    Page("vnfs", "VNFs and instances", views.vnfs, ("compute", "hosts")),
    Page("alarms", "Alarms", views.alarms, ("alarms",)),
    Page("incidents", "Incidents", incidents.page, ("incidents",), charts=True),
    Page("metrics", "HA metrics", metrics.page, ("incidents",), charts=True),
    Page("maintenance", "Maintenance", maintenance.page, ("maintenance", "hosts")),
    Page("sdn", "SDN", sdn.page, ("sdn",), sdn.available),
)
BY_SLUG = {p.slug: p for p in PAGES}


def asset_version() -> str:
    """Changes with the package and its assets: a long browser cache, never a stale one."""
    h = hashlib.sha256(__version__.encode())
    for name in ("ui.css", "ui.js", *(f"vendor/{v}" for v in VENDOR)):
        path = STATIC / name
        if path.exists():
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def missing_assets() -> list[str]:
    """Vendor files not built (scripts/build-ui-assets.sh, run by `make install`)."""
    return [v for v in VENDOR if not (STATIC / "vendor" / v).exists()]


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["ui"] = "/ui"
    env.globals["version"] = __version__
    return env


class Renderer:
    def __init__(self) -> None:
        self.env = _env()
        self.env.globals["assets"] = asset_version()

    def render(self, template: str, **context: Any) -> str:
        return self.env.get_template(template).render(**context)

    def body(self, page: Page, data: dict[str, Any], **context: Any) -> str:
        """The page's body: its filters (`#filters`) and what live events refresh (the
        `#live-body` inside `#live`)."""
        triggers = ", ".join(f"sse:{t}" for t in page.topics)
        return self.render(
            f"pages/{page.slug}.html", page=page, triggers=triggers, **data, **context
        )

    def full(self, page: Page, data: dict[str, Any], pages: list[Page], **context: Any) -> str:
        body = self.body(page, data, **context)
        topics = sorted({*page.topics, "alarms"})
        return self.render(
            "layout.html", page=page, pages=pages, body=body, topics=",".join(topics), **context
        )
