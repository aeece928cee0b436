"""The fault-management API against SOL 003/013 conventions."""

from __future__ import annotations

import json

from tests.component.conftest import OPERATOR, READER, Api

PROBLEM = "application/problem+json"


async def test_api_versions_need_no_token_and_carry_version(api: Api) -> None:
    for path in ("/vimfm/api_versions", "/vimfm/v1/api_versions"):
        r = await api.client.get(path)
        assert r.status_code == 200
        assert r.json()["apiVersions"][0]["version"] == "1.0.0"
        assert r.headers["version"] == "1.0.0"


async def test_tokens_and_roles(api: Api) -> None:
    r = await api.client.get("/vimfm/v1/alarms")
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM
    assert "www-authenticate" in r.headers
    r = await api.client.get("/vimfm/v1/alarms", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = await api.client.get("/vimfm/v1/alarms", headers={"X-Auth-Token": READER})
    assert r.status_code == 200
    r = await api.client.post("/vim/v1/events", json={}, headers={"X-Auth-Token": READER})
    assert r.status_code == 403 and "needs operator" in r.json()["detail"]
    r = await api.client.patch("/vim/v1/retention-policy", json={}, headers=api.headers(OPERATOR))
    assert r.status_code == 403


async def test_unsupported_version_is_refused(api: Api) -> None:
    r = await api.client.get("/vimfm/v1/alarms", headers=api.headers(Version="2.0.0"))
    assert r.status_code == 406 and r.headers["content-type"] == PROBLEM
    r = await api.client.get("/vimfm/v1/alarms", headers=api.headers(Version="1.0.0"))
    assert r.status_code == 200


async def test_raise_dedup_update_clear(api: Api) -> None:
    a = await api.raise_alarm("cmp-1")
    assert await api.raise_alarm("cmp-1") == a  # repeated
    assert await api.raise_alarm("cmp-1", "CRITICAL") == a  # updated
    r = await api.client.get(f"/vimfm/v1/alarms/{a}", headers=api.headers())
    assert r.json()["perceivedSeverity"] == "CRITICAL"
    assert r.json()["alarmChangedTime"] is not None
    assert await api.raise_alarm("cmp-1", "CLEARED") == a
    listed = (await api.client.get("/vimfm/v1/alarms", headers=api.headers())).json()
    assert listed == []  # cleared alarms are not listed by default
    r = await api.client.get(
        "/vimfm/v1/alarms",
        params={"filter": "(eq,perceivedSeverity,CLEARED)"},
        headers=api.headers(),
    )
    assert [x["id"] for x in r.json()] == [a]
    history = (await api.client.get(f"/vimfm/v1/alarms/{a}/history", headers=api.headers())).json()
    assert [h["kind"] for h in history] == ["RAISED", "UPDATED", "CLEARED"]


async def test_filters_paging_and_selectors(api: Api) -> None:
    ids = [
        await api.raise_alarm(
            f"h{i}", "CRITICAL" if i % 2 else "MINOR", location={"site": "s1", "rack": f"r{i % 2}"}
        )
        for i in range(8)
    ]
    got: list[str] = []
    r = await api.client.get("/vimfm/v1/alarms", headers=api.headers())
    pages = 1
    while True:
        got += [a["id"] for a in r.json()]
        link = r.headers.get("link")
        if not link:
            break
        url = link.split(";")[0].strip("<>")
        r = await api.client.get(url, headers=api.headers())
        pages += 1
    assert got == ids and pages == 3
    r = await api.client.get(
        "/vimfm/v1/alarms",
        headers=api.headers(),
        params={"filter": "(eq,perceivedSeverity,CRITICAL);(eq,location/rack,r1)"},
    )
    assert len(r.json()) == 3 and 'rel="next"' in r.headers["link"]
    assert "filter=" in r.headers["link"]
    r = await api.client.get(
        "/vimfm/v1/alarms",
        headers=api.headers(),
        params={"exclude_fields": "faultDetails,location/rack"},
    )
    first = r.json()[0]
    assert "faultDetails" not in first and "rack" not in first["location"]
    assert "site" in first["location"]


async def test_bad_queries_answer_problem_details(api: Api) -> None:
    cases = [
        ({"filter": "(eq,nothing,1)"}, "nothing"),
        ({"filter": "(zz,perceivedSeverity,1)"}, "unknown operator"),
        ({"nextpage_opaque_marker": "garbage!"}, "nextpage_opaque_marker"),
        ({"all_fields": "", "fields": "a"}, "all_fields"),
    ]
    for params, complaint in cases:
        r = await api.client.get("/vimfm/v1/alarms", params=params, headers=api.headers())
        assert r.status_code == 400, params
        assert r.headers["content-type"] == PROBLEM
        body = r.json()
        assert complaint in body["detail"]
        assert {"status", "detail", "title", "type"} <= set(body)


async def test_not_found_and_method_not_allowed(api: Api) -> None:
    r = await api.client.get("/vimfm/v1/alarms/nope", headers=api.headers())
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    r = await api.client.delete("/vimfm/v1/alarms", headers=api.headers())
    assert r.status_code == 405 and r.headers["content-type"] == PROBLEM
    r = await api.client.get("/nowhere", headers=api.headers())
    assert r.status_code == 404


async def test_acknowledge_with_etag(api: Api) -> None:
    a = await api.raise_alarm("cmp-9")
    r = await api.client.get(f"/vimfm/v1/alarms/{a}", headers=api.headers())
    etag = r.headers["etag"]
    patch = json.dumps({"ackState": "ACKNOWLEDGED"})
    merge = {"Content-Type": "application/merge-patch+json"}
    r = await api.client.patch(
        f"/vimfm/v1/alarms/{a}",
        content=patch,
        headers=api.headers(**merge, **{"If-Match": '"stale-1"'}),
    )
    assert r.status_code == 412
    r = await api.client.patch(
        f"/vimfm/v1/alarms/{a}",
        content=patch,
        headers=api.headers(**{"Content-Type": "application/json"}),
    )
    assert r.status_code == 415
    r = await api.client.patch(
        f"/vimfm/v1/alarms/{a}", content='{"ackState": "MAYBE"}', headers=api.headers(**merge)
    )
    assert r.status_code == 400
    r = await api.client.patch(
        f"/vimfm/v1/alarms/{a}",
        content=patch,
        headers=api.headers(OPERATOR, **merge, **{"If-Match": etag}),
    )
    assert r.status_code == 200 and r.json() == {"ackState": "ACKNOWLEDGED"}
    assert r.headers["etag"] != etag
    r = await api.client.patch(f"/vimfm/v1/alarms/{a}", content=patch, headers=api.headers(**merge))
    assert r.status_code == 409
    alarm = (await api.client.get(f"/vimfm/v1/alarms/{a}", headers=api.headers())).json()
    assert alarm["ackState"] == "ACKNOWLEDGED" and alarm["alarmAcknowledgedTime"]
    r = await api.client.patch("/vimfm/v1/alarms/nope", content=patch, headers=api.headers(**merge))
    assert r.status_code == 404


async def test_malformed_batch_stores_nothing(api: Api) -> None:
    good = {
        "managedObjectId": "x1",
        "faultType": "F",
        "probableCause": "c",
        "perceivedSeverity": "MAJOR",
        "eventType": "QOS_ALARM",
    }
    bad_location = {**good, "managedObjectId": "x2", "location": {"galaxy": "milky way"}}
    bad_enum = {**good, "managedObjectId": "x3", "eventType": "NOPE"}
    for batch in ([good, bad_location], [good, bad_enum], [good, "text"]):
        r = await api.client.post("/vim/v1/events", json=batch, headers=api.headers())
        assert r.status_code == 400, r.text
        assert r.headers["content-type"] == PROBLEM
    r = await api.client.post(
        "/vim/v1/events",
        content=b"{not json",
        headers=api.headers(**{"Content-Type": "application/json"}),
    )
    assert r.status_code == 400
    r = await api.client.post("/vim/v1/events", json=[], headers=api.headers())
    assert r.status_code == 400
    r = await api.client.get("/vimfm/v1/alarms", headers=api.headers())
    assert r.json() == []


async def test_doctor_and_alertmanager_ingestion(api: Api) -> None:
    doctor = [
        {
            "time": "2026-01-01T00:00:00Z",
            "type": "compute.host.down",
            "details": {
                "hostname": "cmp-4",
                "status": "down",
                "monitor": "sample",
                "monitor_event_id": "42",
            },
        }
    ]
    r = await api.client.put("/events", json=doctor, headers=api.headers())
    assert r.status_code == 200 and r.json()["changes"][0]["change"] == "RAISED"
    am = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "DiskFull", "host": "sto-1", "severity": "warning"},
                "annotations": {"summary": "disk 95% full"},
                "startsAt": "2026-01-01T00:00:00Z",
            }
        ],
    }
    r = await api.client.post("/vim/v1/events/alertmanager", json=am, headers=api.headers())
    assert r.status_code == 200
    alarms = (await api.client.get("/vimfm/v1/alarms", headers=api.headers())).json()
    by_object = {a["managedObjectId"]: a for a in alarms}
    assert by_object["cmp-4"]["perceivedSeverity"] == "CRITICAL"
    assert by_object["sto-1"]["probableCause"] == "disk 95% full"
    r = await api.client.put(
        "/events",
        json=[{"type": "compute.host.gone", "details": {"hostname": "x", "status": "down"}}],
        headers=api.headers(),
    )
    assert r.status_code == 400 and "compute.host.gone" in r.json()["detail"]
    resolved = {
        **am,
        "alerts": [
            {
                **am["alerts"][0],
                "status": "resolved",  # type: ignore[dict-item]
                "endsAt": "2026-01-01T01:00:00Z",
            }
        ],
    }
    r = await api.client.post("/vim/v1/events/alertmanager", json=resolved, headers=api.headers())
    assert r.json()["changes"][0]["change"] == "CLEARED"


async def test_retention_policy_at_run_time(api: Api) -> None:
    r = await api.client.get("/vim/v1/retention-policy", headers=api.headers(READER))
    assert r.json()["clearedAlarms"]["CRITICAL"] == "400d"
    r = await api.client.patch(
        "/vim/v1/retention-policy",
        headers=api.headers(),
        json={"clearedAlarms": {"WARNING": "1s"}, "notifications": "2h"},
    )
    assert r.status_code == 200
    assert r.json()["clearedAlarms"]["WARNING"] == "1s" and r.json()["notifications"] == "2h"
    r = await api.client.get("/vim/v1/retention-policy", headers=api.headers())
    assert r.json()["clearedAlarms"]["WARNING"] == "1s"
    r = await api.client.patch(
        "/vim/v1/retention-policy",
        headers=api.headers(),
        json={"clearedAlarms": {"WARNING": "soon"}},
    )
    assert r.status_code == 400
    a = await api.raise_alarm("old", "WARNING")
    await api.raise_alarm("old", "CLEARED")
    import asyncio

    await asyncio.sleep(1.1)
    r = await api.client.post("/vim/v1/retention-policy/apply", headers=api.headers())
    assert r.json()["alarms"] == 1
    r = await api.client.get(f"/vimfm/v1/alarms/{a}", headers=api.headers())
    assert r.status_code == 404


async def test_status_and_metrics(api: Api) -> None:
    await api.raise_alarm("cmp-1")
    r = await api.client.get("/vim/v1/status", headers=api.headers(READER))
    assert r.json()["status"] == "UP" and r.json()["store"]["activeAlarms"] == 1
    judging = r.json()["judging"]  # one controller: it judges every host it knows
    assert judging["split"] is False and judging["hosts"] == judging["of"]
    r = await api.client.get("/metrics", headers=api.headers(READER))
    assert r.status_code == 200 and "vimha_fault_events_total" in r.text


async def test_object_instance_link_leads_to_the_object(api: Api) -> None:
    a = await api.raise_alarm("cmp,7", "CRITICAL", location={"site": "s1", "rack": "r3"})
    alarm = (await api.client.get(f"/vimfm/v1/alarms/{a}", headers=api.headers())).json()
    href = alarm["_links"]["objectInstance"]["href"]
    r = await api.client.get(href, headers=api.headers(READER))
    assert r.status_code == 200
    obj = r.json()
    assert obj["activeAlarmIds"] == [a] and obj["highestActiveSeverity"] == "CRITICAL"
    assert obj["location"]["rack"] == "r3"
    r = await api.client.get(obj["_links"]["alarms"]["href"], headers=api.headers())
    assert [x["id"] for x in r.json()] == [a]
    r = await api.client.get("/vim/v1/objects/never-seen", headers=api.headers())
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
