"""Subscriptions and notifications over real HTTP to real consumer processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.component.conftest import Api
from tests.conftest import free_port
from tests.support.consumer import ConsumerProcess


async def test_subscribe_dedup_notify_delete(api: Api, consumer: ConsumerProcess) -> None:
    body = {
        "callbackUri": consumer.url,
        "filter": {
            "perceivedSeverities": ["CRITICAL"],
            "notificationTypes": ["AlarmNotification", "AlarmClearedNotification"],
        },
    }
    r = await api.client.post("/vimfm/v1/subscriptions", json=body, headers=api.headers())
    assert r.status_code == 201, r.text
    sub = r.json()
    assert r.headers["location"].endswith(f"/vimfm/v1/subscriptions/{sub['id']}")
    assert sub["filter"]["perceivedSeverities"] == ["CRITICAL"]
    r = await api.client.post("/vimfm/v1/subscriptions", json=body, headers=api.headers())
    assert r.status_code == 303 and r.headers["location"].endswith(sub["id"])
    await api.raise_alarm("cmp-1", "MINOR", faultType="F1")  # filtered out
    a = await api.raise_alarm("cmp-2", "CRITICAL")
    await api.raise_alarm("cmp-2", "CLEARED")
    got = await consumer.until(lambda n: len(n) >= 2)
    assert [n["notificationType"] for n in got] == ["AlarmNotification", "AlarmClearedNotification"]
    assert got[0]["alarm"]["id"] == a and got[1]["alarmId"] == a
    assert got[0]["subscriptionId"] == sub["id"]
    r = await api.client.get(
        "/vim/v1/notifications",
        headers=api.headers(),
        params={"filter": f"(eq,subscriptionId,{sub['id']})"},
    )
    records = r.json()
    assert len(records) == 2 and "attempts" not in records[0]
    for _ in range(100):  # outcomes are written back in batches
        path = f"/vim/v1/notifications/{records[0]['id']}"
        one = (await api.client.get(path, headers=api.headers())).json()
        if one["status"] == "DELIVERED":
            break
        await asyncio.sleep(0.05)
    assert one["status"] == "DELIVERED" and one["attempts"][0]["ok"] is True
    r = await api.client.get(
        "/vimfm/v1/subscriptions",
        headers=api.headers(),
        params={"filter": f"(eq,callbackUri,{consumer.url})"},
    )
    assert [s["id"] for s in r.json()] == [sub["id"]]
    r = await api.client.delete(f"/vimfm/v1/subscriptions/{sub['id']}", headers=api.headers())
    assert r.status_code == 204
    r = await api.client.get(f"/vimfm/v1/subscriptions/{sub['id']}", headers=api.headers())
    assert r.status_code == 404


async def test_unreachable_callback_is_refused(api: Api) -> None:
    body = {"callbackUri": f"http://127.0.0.1:{free_port()}/cb"}
    r = await api.client.post("/vimfm/v1/subscriptions", json=body, headers=api.headers())
    assert r.status_code == 422
    assert "failed the test" in r.json()["detail"]
    r = await api.client.get("/vimfm/v1/subscriptions", headers=api.headers())
    assert r.json() == []
    r = await api.client.post(
        "/vimfm/v1/subscriptions", json={"callbackUri": "not a url"}, headers=api.headers()
    )
    assert r.status_code == 400


async def test_basic_auth_towards_the_consumer(api: Api, tmp_path: Path) -> None:
    proc = ConsumerProcess(tmp_path / "b.jsonl", free_port(), "--user", "nfvo", "--password", "s3")
    proc.start()
    try:
        body = {"callbackUri": proc.url}
        r = await api.client.post("/vimfm/v1/subscriptions", json=body, headers=api.headers())
        assert r.status_code == 422  # the consumer wants credentials
        body["authentication"] = {
            "authType": ["BASIC"],  # type: ignore[assignment]
            "paramsBasic": {"userName": "nfvo", "password": "s3"},
        }
        r = await api.client.post("/vimfm/v1/subscriptions", json=body, headers=api.headers())
        assert r.status_code == 201
        assert "password" not in r.text
        await api.raise_alarm("cmp-1")
        assert (await proc.until(lambda n: len(n) >= 1))[0][
            "notificationType"
        ] == "AlarmNotification"
    finally:
        proc.stop()


async def test_oauth2_client_credentials_towards_the_consumer(api: Api, tmp_path: Path) -> None:
    port = free_port()
    proc = ConsumerProcess(
        tmp_path / "o.jsonl", port, "--oauth-client", "vim", "--oauth-secret", "x"
    )
    proc.start()
    try:
        body = {
            "callbackUri": proc.url,
            "authentication": {
                "authType": ["OAUTH2_CLIENT_CREDENTIALS"],
                "paramsOauth2ClientCredentials": {
                    "clientId": "vim",
                    "clientPassword": "x",
                    "tokenEndpoint": f"http://127.0.0.1:{port}/token",
                },
            },
        }
        r = await api.client.post("/vimfm/v1/subscriptions", json=body, headers=api.headers())
        assert r.status_code == 201, r.text
        await api.raise_alarm("cmp-1")
        await api.raise_alarm("cmp-2")
        assert len(await proc.until(lambda n: len(n) >= 2)) == 2
        body["authentication"]["paramsOauth2ClientCredentials"]["clientPassword"] = "wrong"  # type: ignore[index]
        body["callbackUri"] = proc.url + "/other"
        r = await api.client.post("/vimfm/v1/subscriptions", json=body, headers=api.headers())
        assert r.status_code == 422 and "token endpoint" in r.json()["detail"]
    finally:
        proc.stop()


async def test_bad_authentication_bodies(api: Api, consumer: ConsumerProcess) -> None:
    for auth in (
        {"authType": ["BASIC"]},
        {"authType": ["OAUTH2_CLIENT_CREDENTIALS"]},
        {"authType": ["TLS_CERT"]},
        {"authType": []},
    ):
        r = await api.client.post(
            "/vimfm/v1/subscriptions",
            headers=api.headers(),
            json={"callbackUri": consumer.url, "authentication": auth},
        )
        assert r.status_code == 400, auth
