"""The port binding (engine/port_binding.py) in a controller with a real store, real
heartbeats and its coordination backend; agents played by the tests, the compute nodes'
switches registered as their keepers do. Nothing is bound where no SDN runs; once one does,
an instance's ports are intents on its host within a fraction of a second of its creation,
move with it when its host fails and recovery places it elsewhere, are put back when
deleted through the SDN's API, and go with the instance; intents of the SDN's API are not
touched."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tests.component.compute_cloud import Cloud
from tests.component.test_recovery import running
from vimha.domain.addressing import tap_name

PREFIX = "/vimha/vimha/sdn/"


async def register(cloud: Cloud, host: str) -> None:
    """What a compute node's switch keeper writes (agent/switch.py)."""
    doc = {"host": host, "dpid": f"{int(host[-1]):016x}", "tunnelIp": f"10.1.0.{host[-1]}"}
    await cloud.runtime.coordination.put(f"{PREFIX}hosts/{host}", json.dumps(doc))


async def sdn_ports(cloud: Cloud) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in await cloud.ok("GET", "/vim/v1/sdn/ports")}


async def bound_within(
    cloud: Cloud, check: Any, within: float, since: float | None = None
) -> float:
    """Seconds from `since` (now by default) until `check(ports)` holds; fails after
    `within`."""
    started = time.monotonic() if since is None else since
    while not check(await sdn_ports(cloud)):
        assert time.monotonic() - started < within, f"not bound within {within}s"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def test_instances_ports_are_the_sdns_intents_and_move_with_them(cloud: Cloud) -> None:
    assert cloud.runtime.config.vim_connection_id == "vimha"
    vnf = {"name": "vfw", "vdus": [{"name": "fw", "count": 2, "flavor": "tiny",
                                    "image": "guest", "networks": [{"network": "vnf-a"}],
                                    "hints": {"host": "cmp-1"}}]}  # fmt: skip
    created = await cloud.ok("POST", "/vim/v1/vnfs", json=vnf)
    ids = [i["id"] for i in created["instances"]]
    await asyncio.sleep(0.5)
    assert await sdn_ports(cloud) == {}, "no SDN here (no switch registered): nothing bound"

    await register(cloud, "cmp-1")
    await register(cloud, "cmp-2")
    theirs = await cloud.ok("POST", "/vim/v1/sdn/networks", json={"name": "other"})
    mine = {"networkId": "other", "host": "cmp-2", "mac": "02:00:00:00:00:09", "ip": "10.7.0.9"}
    api_port = await cloud.ok("POST", "/vim/v1/sdn/ports", json=mine)
    instances = [await cloud.instance(i) for i in ids]
    ports = {p["portId"]: (i, p) for i in instances for p in i["ports"]}
    await bound_within(cloud, lambda found: set(ports) <= set(found), 5)
    found = await sdn_ports(cloud)
    for port_id, (inst, p) in ports.items():
        assert found[port_id] == {
            "id": port_id, "networkId": p["networkId"], "host": "cmp-1", "mac": p["mac"],
            "ip": p["ip"], "device": tap_name(p["mac"]), "instanceId": inst["id"],
        }  # fmt: skip
    nets = {n["name"]: n for n in await cloud.ok("GET", "/vim/v1/sdn/networks")}
    assert nets["vnf-a"]["id"] == instances[0]["ports"][0]["networkId"]
    assert nets["other"] == theirs

    # a new instance: bound within a fraction of a second of its creation's commit
    other = {**vnf, "name": "vlb"}
    other["vdus"] = [{**vnf["vdus"][0], "count": 1, "hints": {"host": "cmp-2"}}]
    vlb = await cloud.ok("POST", "/vim/v1/vnfs", json=other)
    summary = vlb["instances"][0]
    answered = time.monotonic()
    # the VNF's view sums its instances up; their ports are in the instance's own view
    lb_port = (await cloud.instance(summary["id"]))["ports"][0]["portId"]
    took = await bound_within(cloud, lambda found: lb_port in found, 2, since=answered)
    assert took < 1.0, f"bound {took:.3f}s after the creation answered"  # 10-300 ms here
    assert (await sdn_ports(cloud))[lb_port]["host"] == "cmp-2"
    # deleted: its port kept while its guest may still answer, unbound once the agent has
    # destroyed it (and cmp-2 has room for cmp-1's two below)
    await cloud.ok("DELETE", f"/vim/v1/vnfs/{vlb['id']}")
    await asyncio.sleep(0.2)
    assert lb_port in await sdn_ports(cloud)
    await running(cloud, "cmp-2")
    await bound_within(cloud, lambda found: lb_port not in found, 2)

    # deleted through the SDN's API: put back (the compute model says it is placed)
    some = next(iter(ports))
    await cloud.ok("DELETE", f"/vim/v1/sdn/ports/{some}")
    await bound_within(cloud, lambda found: some in found, 5)

    # cmp-1 fails; confirmed off, its instances are placed on cmp-2: their ports follow
    await running(cloud, "cmp-1")
    cloud.silence("cmp-1")
    await cloud.until(lambda: _all(cloud, ids, "UNKNOWN"), within=20)
    await cloud.ok("POST", "/vim/v1/hosts/cmp-1/confirm-down")
    moved_at = {}
    deadline = time.monotonic() + 10
    while len(moved_at) < len(ids):
        assert time.monotonic() < deadline, "not moved"
        for i in ids:
            if i not in moved_at and (await cloud.instance(i))["host"] == "cmp-2":
                moved_at[i] = time.monotonic()
        await asyncio.sleep(0.005)
    took = await bound_within(
        cloud, lambda found: all(found[p]["host"] == "cmp-2" for p in ports), 2
    )
    assert took < 1.0, f"ports moved {took:.3f}s after their instances"
    found = await sdn_ports(cloud)
    assert all(found[p]["device"] == tap_name(found[p]["mac"]) for p in ports)

    # the VNF deleted: its ports unbound; the API's port kept
    await cloud.ok("DELETE", f"/vim/v1/vnfs/{created['id']}")
    await running(cloud, "cmp-2")
    await bound_within(cloud, lambda found: not set(ports) & set(found), 10)
    assert api_port["id"] in await sdn_ports(cloud)
    assert cloud.runtime.port_binding.bound_in, "placement-to-bound times are measured"


async def _all(cloud: Cloud, ids: list[str], status: str) -> bool:
    return all([(await cloud.instance(i))["status"] == status for i in ids])
