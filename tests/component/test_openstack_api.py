"""The OpenStack faces over the engine, in process: Identity's tokens (on every
controller, on every API), version discovery, microversion negotiation, error bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.component.conftest import ADMIN, OPERATOR, READER
from tests.component.openstack_support import (
    BASE,
    PROJECT,
    Cloud,
    V,
    boot,
    catalog_items,
    open_cloud,
    password_auth,
    show,
)


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    async for c in open_cloud(tmp_path / "vimha.db"):
        yield c


# -- identity -----------------------------------------------------------------------------
async def test_password_token_catalog_and_every_api_accepts_the_token(cloud: Cloud) -> None:
    r = await cloud.client.post(
        "/identity/v3/auth/tokens", json=password_auth("admin", ADMIN, PROJECT)
    )
    assert r.status_code == 201, r.text
    token = r.headers["X-Subject-Token"]
    body = r.json()["token"]
    assert body["project"]["name"] == "admin" and body["user"]["name"] == "admin"
    assert {role["name"] for role in body["roles"]} == {"admin", "member", "reader"}
    assert body["expires_at"].endswith("Z")
    urls = {
        s["type"]: {e["interface"]: e["url"] for e in s["endpoints"] if e["region"] == "RegionOne"}
        for s in body["catalog"]
    }
    assert urls["compute"]["public"] == f"{BASE}/compute/v2.1"
    assert urls["identity"]["public"] == f"{BASE}/identity"
    assert set(urls) == {"identity", "compute", "image", "network"}
    # the token works on the native APIs too, as X-Auth-Token or Bearer
    assert (await cloud.call("GET", "/compute/v2.1/servers", token)).status_code == 200
    r = await cloud.client.get("/vim/v1/flavors", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    r = await cloud.client.get(
        "/vimfm/v1/alarms", headers={"Authorization": f"Bearer {token}", "Version": "1.0.0"}
    )
    assert r.status_code == 200
    # the ingest fast path (the event loop: the store is read in a thread) too
    event = {
        "managedObjectId": "cmp-9",
        "faultType": "HOST_DOWN",
        "probableCause": "power",
        "perceivedSeverity": "MAJOR",
        "eventType": "EQUIPMENT_ALARM",
    }
    cloud.runtime.identity.recheck = timedelta(0)  # not from the cache: from the store
    r = await cloud.client.post("/vim/v1/events", json=event, headers={"X-Auth-Token": token})
    assert r.status_code == 200, r.text
    # validate, then revoke
    r = await cloud.call(
        "GET", "/identity/v3/auth/tokens", token, headers={"X-Subject-Token": token}
    )
    assert r.status_code == 200 and r.json()["token"]["audit_ids"] == body["audit_ids"]
    r = await cloud.call(
        "DELETE", "/identity/v3/auth/tokens", ADMIN, headers={"X-Subject-Token": token}
    )
    assert r.status_code == 204
    r = await cloud.call("GET", "/compute/v2.1/servers", token)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == f'Keystone uri="{BASE}/identity"'
    assert r.json()["error"]["code"] == 401


async def test_users_are_the_configured_tokens_with_their_roles(cloud: Cloud) -> None:
    r = await cloud.client.post("/identity/v3/auth/tokens", json=password_auth("ro", READER))
    assert r.status_code == 201
    reader = r.headers["X-Subject-Token"]
    assert [x["name"] for x in r.json()["token"]["roles"]] == ["reader"]
    assert (await cloud.call("GET", "/compute/v2.1/flavors", reader)).status_code == 200
    r = await cloud.call("POST", "/compute/v2.1/os-server-groups", reader, json={})
    assert r.status_code == 403 and "forbidden" in r.json()
    # a password is the user's own token; a wrong one, or another user's, is refused
    for user, password in (("admin", "wrong-0123456789"), ("admin", OPERATOR), ("ghost", ADMIN)):
        r = await cloud.client.post("/identity/v3/auth/tokens", json=password_auth(user, password))
        assert r.status_code == 401, (user, r.text)
        assert r.json()["error"]["title"] == "Unauthorized"
    # the token method trades a token (configured or issued) for a new one, no longer-lived
    r = await cloud.client.post(
        "/identity/v3/auth/tokens",
        json={"auth": {"identity": {"methods": ["token"], "token": {"id": reader}}}},
    )
    assert r.status_code == 201
    assert r.json()["token"]["methods"] == ["token", "password"]
    r2 = await cloud.client.post(
        "/identity/v3/auth/tokens", json=password_auth("ops", OPERATOR, {"project": {"id": "demo"}})
    )
    assert r2.status_code == 401 and "project demo" in r2.json()["error"]["message"]


async def test_a_token_is_valid_on_every_controller(cloud: Cloud, tmp_path: Path) -> None:
    """Two controllers on one database: a token issued by one is accepted by the other;
    revoked through the other, refused by the first (within its recheck interval)."""
    r = await cloud.client.post("/identity/v3/auth/tokens", json=password_auth("ops", OPERATOR))
    token = r.headers["X-Subject-Token"]
    cloud.runtime.identity.recheck = timedelta(0)
    async for other in open_cloud(tmp_path / "vimha.db"):
        assert (await other.call("GET", "/compute/v2.1/flavors", token)).status_code == 200
        r = await other.call(
            "DELETE", "/identity/v3/auth/tokens", ADMIN, headers={"X-Subject-Token": token}
        )
        assert r.status_code == 204
    assert (await cloud.call("GET", "/compute/v2.1/flavors", token)).status_code == 401


async def test_version_discovery(cloud: Cloud) -> None:
    r = await cloud.client.get("/identity")
    assert r.status_code == 300 and r.json()["versions"]["values"][0]["id"].startswith("v3")
    r = await cloud.client.get("/compute")
    (v21,) = r.json()["versions"]
    assert (v21["id"], v21["min_version"], v21["version"]) == ("v2.1", "2.1", "2.79")
    r = await cloud.client.get("/image")
    assert (
        r.status_code == 300 and r.json()["versions"][0]["links"][0]["href"] == f"{BASE}/image/v2/"
    )
    r = await cloud.client.get("/network")
    assert r.json()["versions"][0]["id"] == "v2.0"


# -- microversions ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "served"),
    [
        ({}, "2.1"),
        ({"OpenStack-API-Version": "compute 2.47"}, "2.47"),
        ({"OpenStack-API-Version": "compute latest"}, "2.79"),
        ({"X-OpenStack-Nova-API-Version": "2.16"}, "2.16"),
        ({"OpenStack-API-Version": "image 2.5, compute 2.64"}, "2.64"),
        ({"OpenStack-API-Version": "compute 2.60", "X-OpenStack-Nova-API-Version": "2.2"}, "2.60"),
    ],
)
async def test_microversion_negotiation(cloud: Cloud, headers: dict[str, str], served: str) -> None:
    r = await cloud.call("GET", "/compute/v2.1/flavors", headers=headers)
    assert r.status_code == 200
    assert r.headers["OpenStack-API-Version"] == f"compute {served}"
    assert r.headers["X-OpenStack-Nova-API-Version"] == served
    assert "OpenStack-API-Version" in r.headers["Vary"]


@pytest.mark.parametrize(
    ("asked", "status", "key"),
    [
        ("compute 2.80", 406, "computeFault"),
        ("compute 3.0", 406, "computeFault"),
        ("compute x", 400, "badRequest"),
    ],
)
async def test_a_version_out_of_range_is_refused(
    cloud: Cloud, asked: str, status: int, key: str
) -> None:
    r = await cloud.call("GET", "/compute/v2.1/servers", headers={"OpenStack-API-Version": asked})
    assert r.status_code == status
    assert r.json()[key]["code"] == status
    if status == 406:
        assert "Minimum is 2.1 and maximum is 2.79" in r.json()[key]["message"]


async def test_fields_follow_the_microversion(cloud: Cloud) -> None:
    _, _, nets = await catalog_items(cloud)
    server = await boot(cloud, "s", [{"uuid": nets.split(",")[0]}])
    old = await show(cloud, server, "2.1")
    assert "host_status" not in old and "locked" not in old and "server_groups" not in old
    assert set(old["flavor"]) == {"id", "links"}
    assert "OS-EXT-SRV-ATTR:hostname" not in old
    new = await show(cloud, server)
    assert new["flavor"]["original_name"] == "m1.tiny" and new["host_status"] == "UP"
    assert new["server_groups"] == [] and new["locked"] is False
    r = await cloud.call(
        "GET", "/compute/v2.1/flavors/m1.tiny", headers={"OpenStack-API-Version": "compute 2.61"}
    )
    assert r.json()["flavor"]["extra_specs"] == {}
    r = await cloud.call(
        "GET", "/compute/v2.1/flavors/m1.tiny", headers={"OpenStack-API-Version": "compute 2.60"}
    )
    assert "extra_specs" not in r.json()["flavor"]


# -- errors -------------------------------------------------------------------------------
async def test_error_bodies_as_each_openstack_api_answers_them(cloud: Cloud) -> None:
    r = await cloud.call("GET", "/compute/v2.1/servers/nope")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert r.json() == {
        "itemNotFound": {"code": 404, "message": "Instance nope could not be found."}
    }
    r = await cloud.call("POST", "/compute/v2.1/servers", json={"server": {"name": "x"}}, headers=V)
    assert r.status_code == 400 and "badRequest" in r.json()
    r = await cloud.call(
        "POST",
        "/compute/v2.1/servers",
        json={
            "server": {
                "name": "x",
                "flavorRef": "1",
                "imageRef": "2",
                "networks": "none",
                "bogus": 1,
            }
        },
    )
    assert "bogus" in r.json()["badRequest"]["message"]
    r = await cloud.call("GET", "/compute/v2.1/no-such-thing")
    assert r.status_code == 404 and "itemNotFound" in r.json()
    r = await cloud.call("GET", "/network/v2.0/ports/nope")
    assert r.json() == {
        "NeutronError": {
            "type": "PortNotFound",
            "message": "Port nope could not be found.",
            "detail": "",
        }
    }
    r = await cloud.call("GET", "/network/v2.0/networks?colour=blue")
    assert r.status_code == 400 and r.json()["NeutronError"]["type"] == "HTTPBadRequest"
    r = await cloud.call("GET", "/image/v2/images/nope")
    assert r.json() == {
        "message": "No image found with ID nope",
        "code": "404 Not Found",
        "title": "Not Found",
    }
    r = await cloud.client.get("/compute/v2.1/servers")
    assert r.status_code == 401 and r.json()["error"]["message"].startswith("no token")
    r = await cloud.call("PUT", "/compute/v2.1/os-services/x", json={"forced_down": True})
    assert r.status_code == 404 and "2.53" in r.json()["itemNotFound"]["message"]
    # the native API still answers ProblemDetails
    r = await cloud.call("GET", "/vim/v1/instances/nope")
    assert r.headers["content-type"] == "application/problem+json"


async def test_actions_not_in_vimha_answer_501_never_success(cloud: Cloud) -> None:
    _, _, nets = await catalog_items(cloud)
    server = await boot(cloud, "s", [{"uuid": nets.split(",")[0]}])
    for action in (
        {"resize": {"flavorRef": "2"}},
        {"shelve": None},
        {"createImage": {"name": "snap"}},
    ):
        r = await cloud.call("POST", f"/compute/v2.1/servers/{server}/action", json=action)
        assert r.status_code == 501, (action, r.text)
        assert r.json()["notImplemented"]["message"]
    # migrations go through the engine (issue 19): a server still building is refused
    for action in ({"migrate": None}, {"os-migrateLive": {"host": None}}):
        r = await cloud.call("POST", f"/compute/v2.1/servers/{server}/action", json=action)
        assert r.status_code == 409, (action, r.text)
        assert "cannot migrate instance s while it is spawning" in r.text
    r = await cloud.call("POST", f"/compute/v2.1/servers/{server}/action", json={"fly": None})
    assert (
        r.status_code == 400 and r.json()["badRequest"]["message"] == "There is no such action: fly"
    )
