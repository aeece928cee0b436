"""The OpenStack faces over the engine, in process: Nova's field names for vimha's
instances (status, task state, host, addresses with MACs, fault, host_status), actions,
a server no host can take, server groups, images, ports, hypervisors and services."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.component.openstack_support import Cloud, V, boot, catalog_items, open_cloud, show


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    async for c in open_cloud(tmp_path / "vimha.db"):
        yield c


# -- servers ------------------------------------------------------------------------------
async def test_a_server_as_nova_shows_it_and_its_actions(cloud: Cloud) -> None:
    _, _, nets = await catalog_items(cloud)
    net_a, net_b = nets.split(",")
    server = await boot(
        cloud, "web", [{"uuid": net_a, "tag": "data"}, {"uuid": net_b}], metadata={"role": "fw"}
    )
    s = await show(cloud, server)
    assert (s["status"], s["OS-EXT-STS:task_state"], s["OS-EXT-STS:vm_state"]) == (
        "BUILD",
        "spawning",
        "building",
    )
    cloud.boot_all()
    s = await show(cloud, server)
    assert (s["status"], s["OS-EXT-STS:task_state"], s["OS-EXT-STS:power_state"]) == (
        "ACTIVE",
        None,
        1,
    )
    host = s["OS-EXT-SRV-ATTR:host"]
    assert host in ("cmp-1", "cmp-2") and s["OS-EXT-SRV-ATTR:hypervisor_hostname"] == host
    assert s["host_status"] == "UP" and s["OS-EXT-AZ:availability_zone"] in ("z1", "z2")
    assert s["metadata"] == {"role": "fw"} and "fault" not in s
    native = (await cloud.call("GET", f"/vim/v1/instances/{server}")).json()
    macs = {p["network"]: (p["mac"], p["ip"]) for p in native["ports"]}
    for network, (mac, ip) in macs.items():
        (address,) = s["addresses"][network]
        assert address["OS-EXT-IPS-MAC:mac_addr"] == mac and address["addr"] == ip
        assert address["OS-EXT-IPS:type"] == "fixed" and address["version"] == 4
    interfaces = (
        await cloud.call("GET", f"/compute/v2.1/servers/{server}/os-interface", headers=V)
    ).json()
    assert {i["mac_addr"] for i in interfaces["interfaceAttachments"]} == {
        m for m, _ in macs.values()
    }
    # reboot: REBOOT with its task state; a second one conflicts (409 conflictingRequest)
    r = await cloud.call(
        "POST", f"/compute/v2.1/servers/{server}/action", json={"reboot": {"type": "SOFT"}}
    )
    assert r.status_code == 202
    s = await show(cloud, server)
    assert (s["status"], s["OS-EXT-STS:task_state"]) == ("REBOOT", "rebooting")
    r = await cloud.call("POST", f"/compute/v2.1/servers/{server}/action", json={"os-start": None})
    assert r.status_code == 409
    assert "cannot start" in r.json()["conflictingRequest"]["message"]
    r = await cloud.call(
        "POST", f"/compute/v2.1/servers/{server}/action", json={"reboot": {"type": "HARD"}}
    )
    assert (await show(cloud, server))["status"] == "HARD_REBOOT"
    actions = (
        await cloud.call("GET", f"/compute/v2.1/servers/{server}/os-instance-actions")
    ).json()
    assert [a["action"] for a in actions["instanceActions"]] == ["reboot", "reboot", "create"]
    request_id = actions["instanceActions"][-1]["request_id"]
    r = await cloud.call("GET", f"/compute/v2.1/servers/{server}/os-instance-actions/{request_id}")
    assert r.json()["instanceAction"]["events"][0]["result"] == "Success"
    # rename, then list with filters
    r = await cloud.call(
        "PUT", f"/compute/v2.1/servers/{server}", json={"server": {"name": "web-1"}}
    )
    assert r.status_code == 200 and r.json()["server"]["name"] == "web-1"
    r = await cloud.call(
        "GET", "/compute/v2.1/servers/detail?name=^web&status=HARD_REBOOT", headers=V
    )
    assert [x["id"] for x in r.json()["servers"]] == [server]
    r = await cloud.call("GET", f"/compute/v2.1/servers?host={host}&name=None")
    assert [x["id"] for x in r.json()["servers"]] == [server]
    assert (await cloud.call("DELETE", f"/compute/v2.1/servers/{server}")).status_code == 204


async def test_a_server_no_host_can_take_goes_to_error_with_novas_fault(cloud: Cloud) -> None:
    await catalog_items(cloud)
    r = await cloud.call(
        "POST",
        "/compute/v2.1/flavors",
        json={"flavor": {"name": "huge", "vcpus": 64, "ram": 1 << 20, "disk": 1}},
    )
    assert r.status_code == 200, r.text
    server = await boot(cloud, "too-big", "none", flavor="huge")
    s = await show(cloud, server)
    assert s["status"] == "ERROR" and s["OS-EXT-STS:vm_state"] == "error"
    assert s["fault"]["code"] == 500
    assert s["fault"]["message"].startswith("No valid host was found. ")
    assert "Capacity removed 2" in s["fault"]["message"]
    assert s["OS-EXT-SRV-ATTR:host"] is None and s["host_status"] == "" and s["addresses"] == {}
    actions = (
        await cloud.call("GET", f"/compute/v2.1/servers/{server}/os-instance-actions")
    ).json()
    (created,) = actions["instanceActions"]
    assert created["action"] == "create" and "No valid host" in created["message"]
    # nothing can be asked of it but a delete
    r = await cloud.call(
        "POST", f"/compute/v2.1/servers/{server}/action", json={"reboot": {"type": "HARD"}}
    )
    assert r.status_code == 409 and "no host" in r.json()["conflictingRequest"]["message"]
    assert (await cloud.call("DELETE", f"/compute/v2.1/servers/{server}")).status_code == 204
    assert (await cloud.call("GET", f"/compute/v2.1/servers/{server}")).status_code == 404


async def test_anti_affinity_group_keeps_members_apart(cloud: Cloud) -> None:
    _, _, nets = await catalog_items(cloud)
    net = nets.split(",")[0]
    r = await cloud.call(
        "POST",
        "/compute/v2.1/os-server-groups",
        json={
            "server_group": {
                "name": "apart",
                "policy": "anti-affinity",
                "rules": {"max_server_per_host": 1},
            }
        },
        headers=V,
    )
    assert r.status_code == 200, r.text
    group = r.json()["server_group"]
    assert (group["policy"], group["rules"], group["members"]) == (
        "anti-affinity",
        {"max_server_per_host": 1},
        [],
    )
    # two in one request, then a third: the third has no valid host
    image = (await cloud.call("GET", "/image/v2/images?name=guest")).json()["images"][0]["id"]
    doc = {
        "server": {
            "name": "m",
            "imageRef": image,
            "flavorRef": "m1.tiny",
            "networks": [{"uuid": net}],
            "min_count": 2,
            "max_count": 2,
        },
        "os:scheduler_hints": {"group": group["id"]},
    }
    assert (
        await cloud.call("POST", "/compute/v2.1/servers", json=doc, headers=V)
    ).status_code == 202
    third = await boot(cloud, "m-3", [{"uuid": net}], hints={"group": group["id"]})
    r = await cloud.call("GET", "/compute/v2.1/servers/detail?name=^m-", headers=V)
    by_name = {s["name"]: s for s in r.json()["servers"]}
    assert set(by_name) == {"m-1", "m-2", "m-3"}
    assert {by_name["m-1"]["OS-EXT-SRV-ATTR:host"], by_name["m-2"]["OS-EXT-SRV-ATTR:host"]} == {
        "cmp-1",
        "cmp-2",
    }
    assert by_name["m-3"]["status"] == "ERROR"
    assert by_name["m-3"]["fault"]["message"].startswith("No valid host was found. ")
    assert "GroupRules removed 2" in by_name["m-3"]["fault"]["message"]
    assert (await show(cloud, third))["server_groups"] == [group["id"]]
    members = (
        await cloud.call("GET", f"/compute/v2.1/os-server-groups/{group['id']}", headers=V)
    ).json()
    assert len(members["server_group"]["members"]) == 3
    # a deleted member frees its host for the next one
    await cloud.call("DELETE", f"/compute/v2.1/servers/{third}")
    await cloud.call("DELETE", f"/compute/v2.1/servers/{by_name['m-1']['id']}")
    cloud.boot_all()
    fourth = await boot(cloud, "m-4", [{"uuid": net}], hints={"group": group["id"]})
    assert (await show(cloud, fourth))["OS-EXT-SRV-ATTR:host"] == by_name["m-1"][
        "OS-EXT-SRV-ATTR:host"
    ]


@pytest.mark.parametrize(
    ("group", "rules"),
    [
        ({"policy": "soft-anti-affinity"}, {}),
        ({"policy": "affinity"}, {}),
        (
            {"policy": "anti-affinity", "rules": {"max_server_per_host": "2"}},
            {"max_server_per_host": 2},
        ),
        (
            {"policy": "anti-affinity", "rules": {"max_server_per_host": 1, "vimha:level": "rack"}},
            {"max_server_per_host": 1, "vimha:level": "rack"},
        ),
    ],
)
async def test_server_groups_are_placement_groups(
    cloud: Cloud, group: dict[str, Any], rules: dict[str, Any]
) -> None:
    r = await cloud.call(
        "POST",
        "/compute/v2.1/os-server-groups",
        json={"server_group": {"name": "g", **group}},
        headers=V,
    )
    assert r.status_code == 200, r.text
    made = r.json()["server_group"]
    assert (made["policy"], made["rules"]) == (group["policy"], rules)
    native = (await cloud.call("GET", f"/vim/v1/placement-groups/{made['id']}")).json()
    assert native["policy"] == group["policy"]
    assert native["level"] == rules.get("vimha:level", "host")
    old = await cloud.call(
        "GET",
        f"/compute/v2.1/os-server-groups/{made['id']}",
        headers={"OpenStack-API-Version": "compute 2.63"},
    )
    assert old.json()["server_group"]["policies"] == [group["policy"]]


@pytest.mark.parametrize(
    ("group", "why"),
    [
        ({"policy": "spread"}, "is not one of"),
        ({"policy": "affinity", "rules": {"max_server_per_host": 1}}, "only with an anti-affinity"),
        ({"policy": "anti-affinity", "rules": {"max_server_per_host": 0}}, "at least 1"),
        ({"policy": "anti-affinity", "rules": {"vimha:level": "power"}}, "power"),
        ({"policy": "anti-affinity", "rules": {"colour": "red"}}, "colour unknown"),
    ],
)
async def test_group_rules_that_cannot_hold_are_refused(
    cloud: Cloud, group: dict[str, Any], why: str
) -> None:
    r = await cloud.call(
        "POST",
        "/compute/v2.1/os-server-groups",
        json={"server_group": {"name": "g", **group}},
        headers=V,
    )
    assert r.status_code == 400 and why in r.json()["badRequest"]["message"], r.text


# -- image, network, key pairs, hosts -----------------------------------------------------
async def test_a_port_with_a_fixed_mac_and_ip_keeps_them_on_its_server(cloud: Cloud) -> None:
    _, _, nets = await catalog_items(cloud)
    net = nets.split(",")[1]
    r = await cloud.call(
        "POST",
        "/network/v2.0/ports",
        json={
            "port": {
                "network_id": net,
                "mac_address": "fa:16:3e:00:00:42",
                "fixed_ips": [{"ip_address": "10.65.0.42"}],
                "name": "mgmt",
            }
        },
    )
    assert r.status_code == 201, r.text
    port = r.json()["port"]
    assert port["device_id"] == "" and port["status"] == "DOWN"
    key = "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + bytes(36)).decode()
    r = await cloud.call(
        "POST",
        "/compute/v2.1/os-keypairs",
        json={"keypair": {"name": "k", "public_key": key}},
        headers=V,
    )
    assert r.status_code == 201, r.text
    server = await boot(cloud, "p", [{"port": port["id"]}], key_name="k")
    cloud.boot_all()
    s = await show(cloud, server)
    (address,) = s["addresses"]["vnf-b"]
    assert (address["addr"], address["OS-EXT-IPS-MAC:mac_addr"]) == (
        "10.65.0.42",
        "fa:16:3e:00:00:42",
    )
    assert s["key_name"] == "k"
    r = await cloud.call(
        "GET", f"/network/v2.0/ports?device_id={server}&fields=mac_address&fields=status"
    )
    assert r.json()["ports"] == [{"mac_address": "fa:16:3e:00:00:42", "status": "ACTIVE"}]
    r = await cloud.call("GET", "/network/v2.0/ports?fixed_ips=ip_address=10.65.0.42")
    assert [p["id"] for p in r.json()["ports"]] == [port["id"]]
    subnets = (await cloud.call("GET", f"/network/v2.0/subnets?network_id={net}")).json()["subnets"]
    assert subnets[0]["cidr"] == "10.65.0.0/24" and subnets[0]["enable_dhcp"] is False


async def test_images_through_glance(cloud: Cloud) -> None:
    r = await cloud.call(
        "POST",
        "/image/v2/images",
        json={"name": "img", "disk_format": "qcow2", "container_format": "bare", "hw_vendor": "x"},
    )
    image = r.json()
    assert (image["status"], image["size"], image["hw_vendor"]) == ("queued", None, "x")
    r = await cloud.call(
        "PUT",
        f"/image/v2/images/{image['id']}/file",
        content=b"x" * 1000,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 204
    shown = (await cloud.call("GET", f"/image/v2/images/{image['id']}")).json()
    assert (shown["status"], shown["size"], shown["os_hash_algo"]) == ("active", 1000, "sha256")
    r = await cloud.call("GET", f"/image/v2/images/{image['id']}/file")
    assert r.content == b"x" * 1000
    r = await cloud.call(
        "PATCH",
        f"/image/v2/images/{image['id']}",
        json=[
            {"op": "replace", "path": "/name", "value": "img2"},
            {"op": "remove", "path": "/hw_vendor"},
        ],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )
    assert r.status_code == 200 and r.json()["name"] == "img2" and "hw_vendor" not in r.json()
    r = await cloud.call("GET", f"/image/v2/images?id=in:{image['id']},other")
    assert [i["name"] for i in r.json()["images"]] == ["img2"]
    r = await cloud.call("POST", "/image/v2/images", json={"name": "p", "protected": True})
    assert r.status_code == 400 and "protected" in r.json()["message"]


async def test_hypervisors_services_zones_limits(cloud: Cloud) -> None:
    await catalog_items(cloud)
    r = await cloud.call("GET", "/compute/v2.1/os-hypervisors/detail", headers=V)
    hv = {h["hypervisor_hostname"]: h for h in r.json()["hypervisors"]}
    assert (
        set(hv) == {"cmp-1", "cmp-2"} and hv["cmp-1"]["vcpus"] == 2 and hv["cmp-1"]["state"] == "up"
    )
    # a server on cmp-2, then cmp-2 falls silent: its host_status, service, zone follow
    server = await boot(cloud, "on-2", "none", host="cmp-2")
    cloud.boot_all()
    assert (await show(cloud, server))["host_status"] == "UP"
    cloud.silence("cmp-2")
    for _ in range(200):
        if await cloud.health("cmp-2") != "UP":
            break
        await asyncio.sleep(0.05)
    assert (await show(cloud, server))["host_status"] in ("DOWN", "UNKNOWN")
    r = await cloud.call("GET", "/compute/v2.1/os-services?binary=nova-compute", headers=V)
    states = {s["host"]: (s["state"], s["zone"], s["forced_down"]) for s in r.json()["services"]}
    assert states == {"cmp-1": ("up", "z1", False), "cmp-2": ("down", "z2", False)}
    r = await cloud.call(
        "GET", "/compute/v2.1/os-hypervisors", headers={"OpenStack-API-Version": "compute 2.1"}
    )
    assert sorted(h["id"] for h in r.json()["hypervisors"]) == [1, 2]
    r = await cloud.call("GET", "/compute/v2.1/os-availability-zone")
    assert {
        z["zoneName"]: z["zoneState"]["available"] for z in r.json()["availabilityZoneInfo"]
    } == {"z1": True, "z2": False}
    limits = (await cloud.call("GET", "/compute/v2.1/limits", headers=V)).json()["limits"][
        "absolute"
    ]
    assert limits["maxTotalInstances"] == -1 and limits["totalInstancesUsed"] == 1
