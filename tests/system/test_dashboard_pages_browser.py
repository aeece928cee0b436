"""The incidents, HA metrics and maintenance pages in a real browser (Debian's chromium
through Playwright) against an embedded cloud of their own: each loads without console
errors and fetches nothing from elsewhere; an admin plans, starts and aborts a maintenance
from the page while a reader's and an operator's pages follow it live with no control, and
their forged requests are refused; a host powered off becomes an incident that appears
without a reload, its timeline drawn per stage by Chart.js, and the metrics' charts drawn."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import require_system
from tests.support.browser import WAIT_MS, Session, chromium, chromium_path
from tests.system.test_embedded_cloud import Cloud, running_cloud, until

pytestmark = pytest.mark.system
NEW = {"incidents": "Incidents", "metrics": "HA metrics", "maintenance": "Maintenance"}
DRAWN = "c => window.Chart !== undefined && window.Chart.getChart(c) !== undefined"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    require_system(importlib.util.find_spec("playwright") is not None, "playwright missing")
    require_system(chromium_path() is not None, "chromium missing")
    with running_cloud(tmp_path_factory.mktemp("dashboard-pages")) as c:
        until(lambda: c.get("/vim/v1/vnfs"), 90)  # the demo VNFs
        yield c


@pytest.fixture(scope="module")
def browser(cloud: Cloud) -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def sessions(browser: Any, cloud: Cloud) -> Iterator[dict[str, Session]]:
    made = {role: Session(browser, cloud, role) for role in ("admin", "operator", "reader")}
    for s in made.values():
        s.page.on("dialog", lambda d: d.accept())  # the abort's confirmation
    yield made
    for s in made.values():
        s.close()


def test_the_new_pages_load_without_console_errors(sessions: dict[str, Session]) -> None:
    for role, session in sessions.items():
        links = session.page.locator("header.top nav a").evaluate_all(
            "links => links.map(a => a.getAttribute('href'))"
        )
        assert {f"/ui/{slug}" for slug in NEW} <= set(links), links
        for slug, title in NEW.items():
            page = session.goto(slug)
            assert page.title().startswith(title)
            assert page.locator("#live-body").count() == 1
        page = session.goto("metrics?window=30d")
        assert page.locator("#f-window").input_value() == "30d"
        assert session.errors == [], (role, session.errors)
        assert session.hosts == {urlsplit(session.cloud.url).netloc}, session.hosts


def _call(cloud: Cloud, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {cloud.token}"}
    return httpx.request(method, cloud.url + path, headers=headers, timeout=30, **kw)


def _quiet_host(cloud: Cloud) -> str:
    """A compute host whose maintenance the plan accepts, the one with the fewest
    instances (the less the session moves, the less it disturbs the rest)."""
    counts = {h: 0 for h, v in cloud.hosts().items() if h.startswith("cmp-")}
    for i in cloud.get("/vim/v1/instances"):
        if i["host"] in counts:
            counts[i["host"]] += 1
    for host in sorted(counts, key=lambda h: (counts[h], h)):
        r = _call(cloud, "POST", "/vim/v1/maintenance", json={"hosts": [host], "dryRun": True})
        if r.status_code == 200 and r.json()["plan"]["feasible"]:
            return host
    raise AssertionError(f"no host can go into maintenance: {counts}")


def test_an_admin_starts_and_aborts_a_maintenance_others_cannot(
    sessions: dict[str, Session], cloud: Cloud
) -> None:
    admin, operator, reader = sessions["admin"], sessions["operator"], sessions["reader"]
    host = _quiet_host(cloud)
    watching = reader.goto("maintenance")
    assert watching.locator("#start").count() == 0
    assert "started and aborted by an admin" in watching.locator(".hint").inner_text()
    forged = watching.request.post(
        f"{cloud.url}/ui/maintenance",
        form={"csrf": reader.csrf(), "hosts": host, "dryRun": "0"},
        headers={"Origin": cloud.url},
    )
    assert forged.status == 403 and "needs admin" in forged.text()
    assert operator.goto("maintenance").locator("#start").count() == 0

    page = admin.goto("maintenance")
    page.fill("#m-hosts", host)
    page.click("button:text('Show the plan')")
    page.wait_for_selector(f'#flash .plan [data-plan-host="{host}"]')
    assert "can be done" in page.locator("#flash .notice").inner_text()
    assert _call(cloud, "GET", "/vim/v1/maintenance").json() == []  # only a plan

    page.click("#m-start")
    page.wait_for_selector("article[data-session]")
    assert "started by admin" in page.locator("#flash .notice").inner_text()
    (session,) = _call(cloud, "GET", "/vim/v1/maintenance").json()
    sid = session["id"]
    assert session["hosts"] == [host] and session["createdBy"] == "admin"
    page.wait_for_url(re.compile(rf".*/ui/maintenance\?id={sid}$"))

    # the reader's page follows without a reload, with nothing to click
    watching.wait_for_selector(f'tr[data-session-row="{sid}"]')
    assert watching.locator("form.abort").count() == 0
    assert watching.evaluate("window.vimhaNotReloaded") is True
    ops = operator.goto(f"maintenance?id={sid}")
    ops.wait_for_selector(f'article[data-session="{sid}"]')
    assert ops.locator("form.abort").count() == 0
    forged = ops.request.post(
        f"{cloud.url}/ui/maintenance/{sid}/abort",
        form={"csrf": operator.csrf()},
        headers={"Origin": cloud.url},
    )
    assert forged.status == 403 and "needs admin" in forged.text()
    assert _call(cloud, "GET", f"/vim/v1/maintenance/{sid}").json()["state"] != "ABORTED"

    page.click(f'article[data-session="{sid}"] form.abort button')
    page.wait_for_selector(f'article[data-session="{sid}"][data-state="ABORTED"]')
    assert "aborted by admin" in page.locator("#flash .notice").inner_text()
    assert page.locator("form.abort").count() == 0
    watching.wait_for_selector(f'tr[data-session-row="{sid}"][data-state="ABORTED"]')
    assert page.evaluate("window.vimhaNotReloaded") is True
    for s in (admin, operator, reader):
        assert s.errors == [], s.errors
    until(lambda: cloud.hosts()[host]["healthStatus"] == "UP", 60)


def test_a_host_failure_is_an_incident_drawn_live(
    sessions: dict[str, Session], cloud: Cloud
) -> None:
    reader = sessions["reader"]
    page = reader.goto("incidents")
    before = set(
        page.locator("tr[data-incident-row]").evaluate_all(
            "rs => rs.map(r => r.dataset.incidentRow)"
        )
    )
    cloud.chaos("power-off", "cmp-2")

    def fenced() -> str | None:
        for i in cloud.get("/vim/v1/incidents", kind="HOST"):
            fence = next(b for b in i["budgets"] if b["stage"] == "fence")
            if i["subject"] == "cmp-2" and fence["seconds"] is not None:
                return str(i["id"])
        return None

    incident = until(fenced, 90)
    assert incident not in before
    page.wait_for_selector(f'tr[data-incident-row="{incident}"]', timeout=WAIT_MS)
    assert page.evaluate("window.vimhaNotReloaded") is True  # arrived live

    page = reader.goto(f"incidents?id={incident}")
    canvas = page.locator(f'article[data-incident="{incident}"] canvas[data-chart]')
    canvas.wait_for()
    page.wait_for_function(f"() => ({DRAWN})(document.querySelector('canvas[data-chart]'))")
    assert page.locator('tr[data-stage="fence"]').count() == 1
    box = canvas.bounding_box()
    assert box is not None and box["width"] > 200 and box["height"] > 100

    page = reader.goto("metrics?window=1h")
    page.wait_for_selector("#chart-stages")
    for name in ("stages", "recent"):
        assert page.locator(f"#chart-{name}").evaluate(DRAWN) is True, name
    assert reader.errors == [], reader.errors
