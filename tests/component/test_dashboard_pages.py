"""The dashboard's incidents, HA metrics and maintenance pages without a browser: an
incident's timeline drawn per stage, the metrics' charts, and maintenance sessions started
and aborted by an admin (the API's role for them), refused to an operator and a reader.
The browser tests are in tests/system/test_dashboard_pages_browser.py."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.component.compute_cloud import Cloud
from tests.component.conftest import ADMIN, OPERATOR, READER, Api
from tests.component.test_dashboard import csrf_of
from vimha.domain.incidents import Affected, Entry, Incident, Kind, Stage, State
from vimha.engine.runtime import Runtime

HTMX = {"HX-Request": "true", "HX-Target": "live", "Origin": "http://vim.example"}


async def login(client: httpx.AsyncClient, token: str) -> str:
    client.cookies.clear()
    r = await client.post(
        "/ui/login", data={"token": token, "next": "/ui/maintenance"}, follow_redirects=True
    )
    assert r.status_code == 200, r.text
    return csrf_of(r.text)


def an_incident(rt: Runtime, subject: str = "cmp-1", fence: float = 1.1) -> Incident:
    """A host failure whose instance serves again 3.4 s later (fencing over its 2 s target
    when `fence` is)."""
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    steps = [
        (0.0, Stage.FAILED, subject, "last heartbeat"),
        (0.4, Stage.DETECTED, subject, "COMPUTE_NODE_FAILURE"),
        (0.4 + fence, Stage.FENCED, subject, "powered off by its BMC"),
        (0.6 + fence, Stage.PLACED, "i-1", "vfw-0 on cmp-2"),
        (1.9 + fence, Stage.BOOTED, "i-1", "ACTIVE"),
        (2.3 + fence, Stage.SERVING, "i-1", "answers its health check"),
    ]
    inc = Incident(
        f"inc-{subject}",
        Kind.HOST,
        subject,
        f"{subject} failed",
        State.RECOVERED,
        t0,
        None,
        affected=(Affected("i-1", subject, 1, "vfw-0"),),
        entries=tuple(Entry(t0 + timedelta(seconds=s), st, o, d) for s, st, o, d in steps),
        recovered_at=t0 + timedelta(seconds=2.3 + fence),
    )
    saved: Incident = rt.insight.incidents.writer.call(lambda uow: uow.insight.save_incident(inc))
    return saved


def charts_of(html: str) -> dict[str, dict[str, Any]]:
    """Each chart's configuration, by its canvas id (or `timeline`)."""
    out = {}
    for m in re.finditer(r"<canvas (?:id=\"chart-(\w+)\" )?data-chart='([^']*)'", html):
        text = m.group(2).replace("&#34;", '"').replace("&amp;", "&")
        out[m.group(1) or "timeline"] = json.loads(text)
    return out


async def test_an_incident_is_drawn_stage_by_stage(api: Api) -> None:
    an_incident(api.runtime, "cmp-1", fence=3.0)  # fencing over its target
    an_incident(api.runtime, "cmp-2")
    await login(api.client, READER)
    r = await api.client.get("/ui/incidents")
    assert r.status_code == 200
    assert r.text.count("data-incident-row=") == 2
    assert "chart.umd.min.js" in r.text and "/static/ui.js" in r.text  # charts load here
    chart = charts_of(r.text)["timeline"]
    took, target = chart["data"]["datasets"]
    assert chart["data"]["labels"] == ["detect", "fence", "place", "boot", "serve"]
    assert chart["options"]["indexAxis"] == "y"
    assert took["data"][0] == [0.0, 0.4] and target["data"][0] == [0.0, 0.5]

    r = await api.client.get("/ui/incidents?id=inc-cmp-1")
    assert 'data-incident="inc-cmp-1"' in r.text and "over target: fence" in r.text
    took = charts_of(r.text)["timeline"]["data"]["datasets"][0]
    assert took["backgroundColor"][1] == "#d93025"  # fencing went over: red
    assert took["data"][1] == [0.4, 3.4]
    assert "powered off by its BMC" in r.text and "vfw-0 on cmp-1" in r.text
    # filters and live refresh keep the choice; an unknown id says so
    r = await api.client.get("/ui/incidents?q=cmp-2", headers=HTMX)
    assert "<html" not in r.text and r.text.count("data-incident-row=") == 1
    r = await api.client.get("/ui/incidents?id=nothing")
    assert "No incident nothing" in r.text
    assert "chart.umd.min.js" not in (await api.client.get("/ui/alarms")).text


async def test_ha_metrics_are_charts(api: Api) -> None:
    await login(api.client, READER)
    r = await api.client.get("/ui/metrics?window=1h")
    assert r.status_code == 200 and "Nothing to draw" in r.text
    an_incident(api.runtime, "cmp-1", fence=3.0)
    for window in ("1h", "1d", "30d", "bogus"):
        r = await api.client.get(f"/ui/metrics?window={window}")
        assert r.status_code == 200, window
    charts = charts_of((await api.client.get("/ui/metrics?window=1d")).text)
    stages = charts["stages"]
    assert stages["data"]["labels"] == ["detect", "fence", "place", "boot", "serve", "total"]
    by_label = {d["label"]: d["data"] for d in stages["data"]["datasets"]}
    assert by_label["max"][1] == 3.0 and by_label["target"][1] == 2.0
    recent = charts["recent"]
    assert [d["label"] for d in recent["data"]["datasets"]][:2] == ["detect", "fence"]
    assert recent["data"]["labels"][0].endswith("cmp-1")


async def test_an_admin_starts_and_aborts_a_maintenance_others_cannot(cloud: Cloud) -> None:
    client = cloud.client
    for token, role in ((READER, "reader"), (OPERATOR, "operator")):
        csrf = await login(client, token)
        page = (await client.get("/ui/maintenance")).text
        assert 'id="start"' not in page and f"you are {role}" in page
        r = await client.post(
            "/ui/maintenance", data={"csrf": csrf, "hosts": "cmp-1"}, headers=HTMX
        )
        assert r.status_code == 403 and "this needs admin" in r.text
    assert await cloud.ok("GET", "/vim/v1/maintenance") == []

    csrf = await login(client, ADMIN)
    page = (await client.get("/ui/maintenance")).text
    assert 'id="start"' in page and '<option value="cmp-2">' in page
    r = await client.post(  # a dry run: its plan in #flash, nothing stored
        "/ui/maintenance", data={"csrf": csrf, "hosts": "cmp-1", "dryRun": "1"}, headers=HTMX
    )
    assert r.status_code == 200 and "can be done" in r.text and 'data-plan-host="cmp-1"' in r.text
    assert await cloud.ok("GET", "/vim/v1/maintenance") == []
    r = await client.post(  # refused by the engine: the reason is shown
        "/ui/maintenance", data={"csrf": csrf, "hosts": "cmp-9", "dryRun": "0"}, headers=HTMX
    )
    assert r.status_code == 200 and "cmp-9 is not a compute host" in r.text
    r = await client.post(
        "/ui/maintenance",
        data={"csrf": csrf, "hosts": "cmp-1", "hostWindow": "600", "dryRun": "0"},
        headers=HTMX,
    )
    assert r.status_code == 200 and "started by admin over cmp-1" in r.text
    (session,) = await cloud.ok("GET", "/vim/v1/maintenance")
    sid = session["id"]
    assert r.headers["hx-push-url"] == f"/ui/maintenance?id={sid}"
    assert f'data-session="{sid}"' in r.text and f'/ui/maintenance/{sid}/abort"' in r.text
    assert session["createdBy"] == "admin" and session["hostWindow"] == 600

    # an operator sees it, with no abort; a forged abort is refused
    csrf_ops = await login(client, OPERATOR)
    page = (await client.get(f"/ui/maintenance?id={sid}")).text
    assert f'data-session="{sid}"' in page and "/abort" not in page
    r = await client.post(f"/ui/maintenance/{sid}/abort", data={"csrf": csrf_ops}, headers=HTMX)
    assert r.status_code == 403

    csrf = await login(client, ADMIN)
    r = await client.post(f"/ui/maintenance/{sid}/abort", data={"csrf": csrf}, headers=HTMX)
    assert r.status_code == 200 and f"Maintenance {sid[:8]} aborted by admin" in r.text

    async def aborted() -> bool:
        return bool((await cloud.ok("GET", f"/vim/v1/maintenance/{sid}"))["state"] == "ABORTED")

    await cloud.until(aborted, 30)
    page = (await client.get(f"/ui/maintenance?id={sid}")).text
    assert 'data-state="ABORTED"' in page and "/abort" not in page
    r = await client.post(f"/ui/maintenance/{sid}/abort", data={"csrf": csrf}, headers=HTMX)
    assert r.status_code == 200 and "is ABORTED" in r.text  # the engine's conflict, shown
    # without htmx (no script): back to the page
    r = await client.post(f"/ui/maintenance/{sid}/abort", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == f"/ui/maintenance?id={sid}"
