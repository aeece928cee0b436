"""The dashboard (issue 21) without a browser: login and session cookie, every page for a
reader, CSRF and roles on acknowledgement, logout, live events. The browser tests are in
tests/system/test_dashboard_browser.py."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from tests.component.conftest import ADMIN, AGENT, OPERATOR, READER, Api
from vimha.api.ui.pages import PAGES


async def login(api: Api, token: str) -> httpx.Response:
    return await api.client.post(
        "/ui/login", data={"token": token, "next": "/ui/alarms"}, follow_redirects=False
    )


def csrf_of(html: str) -> str:
    found = re.search(r'"X-CSRF-Token": "([0-9a-f]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def test_pages_need_a_session_and_the_token_never_reaches_the_cookie(api: Api) -> None:
    r = await api.client.get("/ui", follow_redirects=False)
    assert r.status_code == 307
    r = await api.client.get("/ui/alarms?q=x", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login?next=%2Fui%2Falarms%3Fq%3Dx"
    r = await api.client.get("/ui/login")
    assert r.status_code == 200 and 'type="password"' in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]

    for wrong in ("not-a-token-0123456789", AGENT):  # a node agent's token opens nothing
        r = await login(api, wrong)
        assert r.status_code == 401 and "not valid" in r.text
        assert "set-cookie" not in r.headers
    api.client.cookies.set("vimha_ui", AGENT, domain="vim.example", path="/ui")
    assert (await api.client.get("/ui/alarms", follow_redirects=False)).status_code == 303
    api.client.cookies.clear()

    r = await login(api, READER)
    assert r.status_code == 303 and r.headers["location"] == "/ui/alarms"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert READER not in cookie  # a session token of its own, issued by Identity


async def test_every_page_renders_for_a_reader(api: Api) -> None:
    await api.raise_alarm("cmp-9", "CRITICAL")
    await login(api, READER)
    for slug in [p.slug for p in PAGES if p.available(api.runtime)]:
        r = await api.client.get(f"/ui/{slug}")
        assert r.status_code == 200, (slug, r.text[:500])
        assert r.headers["cache-control"] == "no-store"
        assert "<html" in r.text and 'id="live"' in r.text
        assert "ro · reader" in r.text
        fragment = await api.client.get(
            f"/ui/{slug}", headers={"HX-Request": "true", "HX-Target": "live"}
        )
        assert fragment.status_code == 200 and "<html" not in fragment.text
        assert 'id="live-body"' in fragment.text
    r = await api.client.get("/ui/alarms")
    assert "cmp-9" in r.text and "Acknowledge</button>" not in r.text  # a reader sees
    badge = await api.client.get("/ui/badge")
    assert 'data-active="1"' in badge.text
    assert (await api.client.get("/ui/nothing-here")).status_code == 404


async def test_an_operator_acknowledges_a_reader_cannot(api: Api) -> None:
    alarm = await api.raise_alarm("cmp-7", "MAJOR")
    await login(api, READER)
    reader_csrf = csrf_of((await api.client.get("/ui/alarms")).text)
    r = await api.client.post(
        f"/ui/alarms/{alarm}/ack", data={"csrf": reader_csrf}, headers={"HX-Request": "true"}
    )
    assert r.status_code == 403 and "needs operator" in r.text
    assert r.headers["hx-retarget"] == "#flash"

    api.client.cookies.clear()
    await login(api, OPERATOR)
    page = (await api.client.get("/ui/alarms")).text
    assert f'action="/ui/alarms/{alarm}/ack"' in page
    csrf = csrf_of(page)
    # no CSRF token, a wrong one, another origin: refused
    r = await api.client.post(f"/ui/alarms/{alarm}/ack", data={"x": "1"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = await api.client.post(f"/ui/alarms/{alarm}/ack", data={"csrf": reader_csrf})
    assert r.status_code == 403
    r = await api.client.post(
        f"/ui/alarms/{alarm}/ack",
        data={"csrf": csrf},
        headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert r.status_code == 403 and "cross-origin" in r.text
    state = await api.client.get(f"/vimfm/v1/alarms/{alarm}", headers=api.headers())
    assert state.json()["ackState"] == "UNACKNOWLEDGED"

    r = await api.client.post(
        f"/ui/alarms/{alarm}/ack",
        data={"csrf": csrf},
        headers={"HX-Request": "true", "HX-Target": "live", "Origin": "http://vim.example"},
    )
    assert r.status_code == 200 and "acknowledged by ops" in r.text
    state = await api.client.get(f"/vimfm/v1/alarms/{alarm}", headers=api.headers())
    assert state.json()["ackState"] == "ACKNOWLEDGED"
    r = await api.client.post(  # twice: the engine's conflict, shown, not a failure
        f"/ui/alarms/{alarm}/ack", data={"csrf": csrf}, headers={"HX-Request": "true"}
    )
    assert r.status_code == 200 and "already" in r.text


async def test_logout_ends_the_session_everywhere(api: Api) -> None:
    r = await login(api, ADMIN)
    session = r.cookies.get("vimha_ui")
    assert session
    csrf = csrf_of((await api.client.get("/ui/topology")).text)
    r = await api.client.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    # the session token was revoked: even replayed, it opens nothing
    api.client.cookies.set("vimha_ui", session, domain="vim.example", path="/ui")
    r = await api.client.get("/ui/topology", follow_redirects=False)
    assert r.status_code == 303
    r = await api.client.get("/vim/v1/hosts", headers=api.headers(session))
    assert r.status_code == 401


async def test_login_redirects_only_into_the_dashboard(api: Api) -> None:
    for target in ("https://evil.example/ui/x", "//evil.example/ui/", "/vim/v1/hosts", "/ui//x"):
        r = await api.client.post(
            "/ui/login", data={"token": READER, "next": target}, follow_redirects=False
        )
        assert r.headers["location"] == "/ui/", target


async def test_live_feed_tells_of_a_new_alarm(api: Api) -> None:
    feed = api.app.state.ui_feed
    feed.interval = 0.05

    async def allowed() -> bool:
        return True

    stream = feed.stream(frozenset({"alarms", "nonsense"}), allowed)
    assert await anext(stream) == "retry: 2000\nid: 0\n\n"
    got = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.3)  # the first readings are the baseline
    await api.raise_alarm("cmp-5", "MINOR")
    await api.raise_alarm("cmp-6", "MINOR")  # coalesced if both moved within one tick
    assert await asyncio.wait_for(got, 5) == "id: 1\nevent: alarms\ndata: alarms\n\n"
    await stream.aclose()
    assert feed.listeners == 0

    # a browser that reconnects (Last-Event-ID) is told of every topic at once
    resumed = feed.stream(frozenset({"alarms", "hosts"}), allowed, resumed=True)
    await anext(resumed)
    first = [await asyncio.wait_for(anext(resumed), 5) for _ in range(2)]
    assert [e.split("\n")[1] for e in first] == ["event: alarms", "event: hosts"]
    await resumed.aclose()


async def test_event_stream_needs_a_session(api: Api) -> None:
    r = await api.client.get("/ui/events?topics=alarms", follow_redirects=False)
    assert r.status_code == 303
    await login(api, READER)
    api.app.state.ui_feed.close()  # so that the stream ends after its first message
    async with api.client.stream("GET", "/ui/events?topics=alarms") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in r.headers  # never buffered by compression
        assert [line async for line in r.aiter_lines()][:2] == ["retry: 2000", "id: 0"]


def test_templates_render_their_rarer_branches() -> None:
    """Placement groups, faults, a fencing failure, a host without BMC, a switch-over
    timeline, cleared alarms: the branches the embedded cloud seldom shows."""
    from vimha.api.auth import Principal
    from vimha.api.ui.pages import BY_SLUG, Renderer
    from vimha.api.ui.session import Viewer
    from vimha.api.ui.topology import Filters, Group, Section
    from vimha.api.ui.views import timeline

    r = Renderer()
    who = Viewer(Principal("ops", "operator"), "c" * 64)
    host = {
        "id": "cmp-1",
        "healthStatus": "DOWN",
        "failureKind": "HOST_UNREACHABLE",
        "reason": "no plane, no BMC",
        "roles": ["compute"],
        "location": {"path": "s1/z1/r1/cmp-1"},
        "planes": {"mgmt": {"status": "DOWN"}},
        "bmc": None,
        "fencing": {"state": "FAILED", "attempts": 3, "detail": "BMC unreachable"},
        "instances": [{"name": "a-0", "status": "UNKNOWN", "incarnation": 2}],
        "byVnf": [("vfw", [{"name": "a-0", "status": "UNKNOWN", "incarnation": 2}])],
    }
    html = r.body(
        BY_SLUG["topology"],
        {
            "filters": Filters(host="cmp-1"),
            "sections": [Section("s1/z1", [Group("s1/z1/r1", "rack r1", [host])])],
            "cards": [host],
            "cardsCut": 3,
            "shown": 1,
            "total": 4,
            "totals": [("DOWN", 1)],
            "places": ["s1"],
            "roles": ["compute"],
            "statuses": ("DOWN", "UP"),
        },
        viewer=who,
        notice=None,
    )
    assert 'data-health="DOWN"' in html and "3 attempts" in html and "3 more hosts" in html
    vnf = {
        "id": "v",
        "name": "vfw",
        "sal": "LEVEL_1",
        "priority": 9,
        "status": "INSTANTIATED",
        "preemptible": False,
        "placementGroups": [
            {"name": "apart", "policy": "anti-affinity", "level": "rack", "maxPerDomain": 1}
        ],
        "instances": [
            {
                "id": "i",
                "name": "vfw-0",
                "vdu": "fw",
                "status": "ERROR",
                "taskState": "spawning",
                "host": "cmp-1",
                "hostHealth": "FENCED",
                "incarnation": 3,
                "sal": "LEVEL_1",
                "priority": 9,
                "groups": ["apart"],
                "fault": "No valid host",
            }
        ],
    }
    html = r.body(
        BY_SLUG["vnfs"],
        {
            "vnfs": [vnf],
            "total": 1,
            "instances": 1,
            "listed": 1,
            "cut": True,
            "q": "vfw",
            "status": "",
            "statuses": ["ERROR"],
            "otherGroups": [{"name": "lone", "policy": "affinity", "level": "host"}],
        },
        viewer=who,
        notice=("error", "x"),
    )
    assert "apart: anti-affinity per rack (≤ 1)" in html and "not pre-emptible" in html
    assert "lone: affinity per host" in html and "FENCED" in html
    last = {"slot": 0, "from": "a", "to": "b", "epoch": 4, "reason": "lost",
            "detected": 10.0, "fenced": 10.1, "promoted": 10.2, "serving": 10.3,
            "switchoverSeconds": 0.3}  # fmt: skip
    group = {
        "name": "kv",
        "policy": "active-standby",
        "mode": "slots",
        "health": "SWITCHING_OVER",
        "epoch": 4,
        "activeRequired": 1,
        "active": [],
        "alarms": ["SERVICE_GROUP_SWITCHOVER"],
        "members": [{"member": "a", "role": "absent", "healthy": False}],
        "timeline": timeline(last, 20.0),
    }
    html = r.body(
        BY_SLUG["groups"],
        {"groups": [group], "total": 1, "health": "", "healths": ("OK",)},
        viewer=who,
        notice=None,
    )
    assert "0.300 s" in html and "+300 ms" in html and "SERVICE_GROUP_SWITCHOVER" in html
    alarm = {
        "id": "a1",
        "etag": '"a1-2"',
        "object": "cmp-1/PSU1",
        "severity": "CLEARED",
        "peak": "MAJOR",
        "faultType": "PSU",
        "probableCause": "p",
        "eventType": "EQUIPMENT_ALARM",
        "raised": "r",
        "changed": "",
        "cleared": "c",
        "ackState": "ACKNOWLEDGED",
        "details": "",
        "place": "",
    }
    html = r.body(
        BY_SLUG["alarms"],
        {
            "alarms": [alarm],
            "cleared": [alarm],
            "counts": [("MAJOR", 1)],
            "active": 1,
            "cut": True,
            "filters": {"severity": "", "ack": "", "q": "", "cleared": True},
            "severities": ("MAJOR",),
        },
        viewer=who,
        notice=None,
    )
    assert "Recently cleared" in html and "topology?host=cmp-1" in html


async def test_the_sdn_page_appears_once_an_sdn_runs(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vimha.api.ui import sdn

    await login(api, READER)
    assert (await api.client.get("/ui/sdn")).status_code == 404  # no SDN in this cloud
    assert 'href="/ui/sdn"' not in (await api.client.get("/ui/alarms")).text
    switch = {
        "dpid": "00000000000000a1",
        "host": "cmp-1",
        "master": "sdn-1",
        "epoch": 7,
        "connected": ["sdn-1", "sdn-2"],
        "flows": 12,
        "portsDown": ["tap-vfw-0"],
        "tunnelsDown": ["vx-cmp-2"],
        "flowErrors": [],
        "ports": {},
        "alarms": ["SDN_PORT_DOWN"],
    }
    instance = {
        "host": "ctl-1",
        "model": "distributed",
        "serving": True,
        "switches": {"00000000000000a1": {"role": "master", "epoch": 7}},
    }
    monkeypatch.setattr(api.runtime.sdn, "view", lambda: [dict(switch)])
    monkeypatch.setattr(api.runtime.sdn, "instances", lambda: {"sdn-1": instance})
    r = await api.client.get("/ui/sdn")
    assert r.status_code == 200 and 'href="/ui/sdn"' in r.text
    assert 'data-master="sdn-1"' in r.text and "SDN_PORT_DOWN" in r.text
    assert "1 with a fault" in r.text and 'data-sdn-instance="sdn-1"' in r.text
    before = sdn.marker(api.runtime)
    switch.update(master="sdn-2", epoch=8)  # a new master: the page's topic moves
    assert sdn.marker(api.runtime) != before
