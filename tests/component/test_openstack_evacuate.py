"""Nova's rebuild and evacuate, and a compute service forced down (issue 16), in process:
evacuate is refused while the host serves and for non-admins; once the host is down it is
the caller's word that it is off, and the server is rebuilt on the other host at once;
forcing a service down fences its host (here: refused, no BMC); a rebuild is from the
server's own spec."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.component.conftest import OPERATOR
from tests.component.openstack_support import Cloud, V, boot, catalog_items, open_cloud, show


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    async for c in open_cloud(tmp_path / "vimha.db"):
        yield c


def action(server: str) -> str:
    return f"/compute/v2.1/servers/{server}/action"


async def test_evacuate_rebuilds_a_down_hosts_server_elsewhere(cloud: Cloud) -> None:
    await catalog_items(cloud)
    server = await boot(cloud, "ev-1", "none", host="cmp-2")
    cloud.boot_all()
    assert (await show(cloud, server))["OS-EXT-SRV-ATTR:host"] == "cmp-2"
    r = await cloud.call("POST", action(server), json={"evacuate": {}}, headers=V)
    assert r.status_code == 409
    assert r.json()["conflictingRequest"]["message"] == "Compute service of cmp-2 is still in use."
    r = await cloud.call("POST", action(server), json={"evacuate": {}}, token=OPERATOR)
    assert r.status_code == 403
    r = await cloud.call("POST", action(server), json={"evacuate": {"host": "cmp-1"}})
    assert r.status_code == 400 and "no target host" in r.json()["badRequest"]["message"]

    cloud.silence("cmp-2")  # no BMC here: judged down, never fenced, its server not moved
    for _ in range(200):
        if await cloud.health("cmp-2") != "UP":
            break
        await asyncio.sleep(0.05)
    assert (await show(cloud, server))["OS-EXT-SRV-ATTR:host"] == "cmp-2"
    r = await cloud.call("POST", action(server), json={"evacuate": {}}, headers=V)
    assert r.status_code == 200 and not r.content
    s = await show(cloud, server)
    assert s["OS-EXT-SRV-ATTR:host"] == "cmp-1" and s["OS-EXT-STS:task_state"] == "rebuilding"
    native = (await cloud.call("GET", f"/vim/v1/instances/{server}")).json()
    assert native["incarnation"] == 2
    cloud.boot_all()
    assert (await show(cloud, server))["status"] == "ACTIVE"
    actions = await cloud.call("GET", f"/compute/v2.1/servers/{server}/os-instance-actions")
    assert "evacuate" in [a["action"] for a in actions.json()["instanceActions"]]
    # asked again (a VNFM that learnt of the failure late): done already, nothing rebuilt
    r = await cloud.call("POST", action(server), json={"evacuate": {}}, headers=V)
    assert r.status_code == 200
    assert (await cloud.call("GET", f"/vim/v1/instances/{server}")).json()["incarnation"] == 2
    # the caller's word is recorded as the host's confirmed fencing
    fences = (await cloud.call("GET", "/vim/v1/hosts/cmp-2")).json()
    assert fences["healthStatus"] in ("DOWN", "FENCED", "UNKNOWN")


async def test_forcing_a_service_down_without_a_bmc_is_refused_and_disable_is_maintenance(
    cloud: Cloud,
) -> None:
    await catalog_items(cloud)
    r = await cloud.call("GET", "/compute/v2.1/os-services", headers=V)
    ids = {s["host"]: s["id"] for s in r.json()["services"]}
    url = f"/compute/v2.1/os-services/{ids['cmp-1']}"
    r = await cloud.call("PUT", url, json={"forced_down": True}, headers=V)
    assert r.status_code == 409 and "has no BMC" in r.json()["conflictingRequest"]["message"]
    r = await cloud.call("PUT", url, json={"forced_down": "yes"}, headers=V)
    assert r.status_code == 400
    r = await cloud.call("PUT", url, json={"forced_down": False}, headers=V)
    assert r.status_code == 200 and r.json()["service"]["forced_down"] is False
    assert r.json()["service"]["state"] == "up"
    r = await cloud.call("PUT", url, json={"status": "disabled"}, headers=V)
    assert r.status_code == 501 and "maintenance" in r.json()["notImplemented"]["message"]
    r = await cloud.call("PUT", url, json={"forced_down": True}, headers=V, token=OPERATOR)
    assert r.status_code == 403
    old = {"OpenStack-API-Version": "compute 2.11"}
    r = await cloud.call(
        "PUT",
        "/compute/v2.1/os-services/force-down",
        json={"host": "cmp-9", "binary": "nova-compute", "forced_down": True},
        headers=old,
    )
    assert r.status_code == 404


async def test_rebuild_is_from_the_servers_own_spec(cloud: Cloud) -> None:
    _, image, _ = await catalog_items(cloud)
    server = await boot(cloud, "rb-1", "none")
    cloud.boot_all()
    r = await cloud.call("POST", action(server), json={"rebuild": {"imageRef": "other"}})
    assert r.status_code == 400 and "must be the instance's image" in r.text
    r = await cloud.call(
        "POST", action(server), json={"rebuild": {"imageRef": image, "user_data": "eA=="}}
    )
    assert r.status_code == 400 and "not changeable: user_data" in r.text
    r = await cloud.call("POST", action(server), json={"rebuild": {"imageRef": image}}, headers=V)
    assert r.status_code == 202, r.text
    assert r.json()["server"]["OS-EXT-STS:task_state"] == "rebuilding"
    r = await cloud.call("POST", action(server), json={"rebuild": {"imageRef": image}})
    assert r.status_code == 409 and "cannot rebuild" in r.text
    cloud.boot_all()
    assert (await show(cloud, server))["status"] == "ACTIVE"
