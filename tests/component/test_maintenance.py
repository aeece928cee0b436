"""Maintenance sessions (issue 19) with the engine, a real store, real heartbeats and the
session loop on the singleton holder; the two agents played by a small fake (it runs what
it is told, carries out cold migrations, reports): a dry run and refusals, a session that
empties a host within the VNF's budget and brings it back, an instance whose migration is
forbidden evicted on its VNFM's word, an abort mid-way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.component.compute_cloud import HOSTS, Cloud
from tests.component.test_recovery import vnf


class Agents:
    """Both hosts' agents, played: what each should run runs; migrations go through."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.exported: set[str] = set()
        self.worst: dict[str, int] = {}  # VNF name -> fewest ACTIVE instances seen
        self.tracking = False  # once every instance runs

    async def once(self, host: str) -> None:
        desired = await self.cloud.desired(host)
        guests, phases = [], []
        for doc in desired["instances"]:
            m = doc.get("migration")
            if doc["power"] == "deleted":
                continue
            state = {"running": "RUNNING", "stopped": "SHUTOFF", "paused": "PAUSED"}[doc["power"]]
            if m and m["role"] == "source":
                if m["state"] == "READY" and m["id"] not in self.exported:
                    self.exported.add(m["id"])
                    await self.cloud.ok(
                        "PUT",
                        f"/vim/v1/hosts/{host}/migrations/{m['id']}/state",
                        content=b"disk",
                        headers={"Content-Type": "application/octet-stream"},
                    )
                if m["id"] in self.exported:
                    state = "SHUTOFF"
            guests.append(
                {"id": doc["id"], "incarnation": doc["incarnation"], "state": state,
                 "rebooted": doc["reboot"]["seq"]}
            )  # fmt: skip
        for doc in desired.get("incoming", ()):
            m = doc["migration"]
            if m["state"] == "PREPARING":
                phases.append({"id": m["id"], "instance": doc["id"], "phase": "prepared"})
            elif m["state"] == "TRANSFERRED":
                guests.append({"id": doc["id"], "incarnation": doc["incarnation"],
                               "state": "RUNNING"})  # fmt: skip
                phases.append({"id": m["id"], "instance": doc["id"], "phase": "started"})
        await self.cloud.report(host, guests, migrations=phases)

    async def run(self) -> None:
        while True:
            for host in HOSTS:
                with contextlib.suppress(AssertionError):
                    await self.once(host)
            if self.tracking:
                await self.watch()
            await asyncio.sleep(0.05)

    async def watch(self) -> None:
        counts: dict[str, int] = {}
        for inst in await self.cloud.ok("GET", "/vim/v1/instances"):
            name = inst["name"].rsplit("-", 2)[0]
            serving = inst["status"] == "ACTIVE" and inst["taskState"] is None
            counts[name] = counts.get(name, 0) + (1 if serving else 0)
        for name, n in counts.items():
            self.worst[name] = min(self.worst.get(name, n), n)


@pytest.fixture
async def agents(cloud: Cloud) -> AsyncIterator[Agents]:
    played = Agents(cloud)
    task = asyncio.create_task(played.run())
    try:
        yield played
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def session(cloud: Cloud, sid: str) -> dict[str, Any]:
    return dict(await cloud.ok("GET", f"/vim/v1/maintenance/{sid}"))


async def reaches(cloud: Cloud, sid: str, state: str, within: float = 30.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        s = await session(cloud, sid)
        return s if s["state"] == state else None

    try:
        return dict(await cloud.until(check, within))
    except AssertionError:
        s = await session(cloud, sid)
        raise AssertionError(f"{s['state']}: {s['waiting']}; {s['history'][-3:]}") from None


async def notified(cloud: Cloud, sid: str, host: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        s = await session(cloud, sid)
        return s if s["hostStates"].get(host) == "NOTIFIED" else None

    return dict(await cloud.until(check, 30))


async def test_a_dry_run_and_refusals_before_anything_moves(cloud: Cloud) -> None:
    desc = vnf("vlb", count=2, hints={"host": "cmp-1"}, migration={"policy": "cold"})
    created = await cloud.ok("POST", "/vim/v1/vnfs", json=desc)
    r = await cloud.call("POST", "/vim/v1/maintenance", json={"hosts": ["cmp-1"], "dryRun": True})
    assert r.status_code == 200, r.text
    plan = r.json()["plan"]
    assert plan["feasible"] and plan["refusals"] == []
    (host,) = plan["hosts"]
    assert host["host"] == "cmp-1"
    assert {i["expectedHost"] for i in host["instances"]} == {"cmp-2"}
    assert {i["defaultAction"] for i in host["instances"]} == {"MIGRATE"}
    assert await cloud.ok("GET", "/vim/v1/maintenance") == []  # nothing stored
    assert created["instances"][0]["host"] == "cmp-1"
    # a VNF that must keep its one instance serving, on a host whose peer is full
    strict = vnf("vfw", count=1, hints={"host": "cmp-2"})
    strict["disruptionBudget"] = {"minAvailable": 1}
    await cloud.ok("POST", "/vim/v1/vnfs", json=strict)
    r = await cloud.call("POST", "/vim/v1/maintenance", json={"hosts": ["cmp-2"]})
    assert r.status_code == 409
    detail = r.json()["detail"]
    assert detail.startswith("maintenance refused before anything moved: ")
    assert "disruption budget keeps at least 1 serving" in detail
    assert "vfw-fw-0 on cmp-2: no valid host while cmp-2 is in maintenance" in detail
    assert "Capacity removed 1" in detail
    assert await cloud.ok("GET", "/vim/v1/maintenance") == []
    r = await cloud.call("POST", "/vim/v1/maintenance", json={"hosts": ["cmp-9"]})
    assert r.status_code == 409 and "cmp-9 is not a compute host" in r.json()["detail"]


async def test_a_session_empties_a_host_within_the_budget_and_brings_it_back(
    cloud: Cloud, agents: Agents
) -> None:
    desc = vnf("vlb", count=2, hints={"host": "cmp-1"}, migration={"policy": "cold"})
    desc["disruptionBudget"] = {"maxUnavailable": 1, "minAvailable": 1}
    created = await cloud.ok("POST", "/vim/v1/vnfs", json=desc)
    vnf_id = created["id"]
    await cloud.until(lambda: _all_active(cloud))
    agents.tracking = True
    r = await cloud.call(
        "POST",
        "/vim/v1/maintenance",
        json={"hosts": ["cmp-1"], "answerWindow": 1, "hostWindow": 1},
    )
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["vnfs"] == [vnf_id]

    async def alarmed() -> bool:
        alarms = await cloud.ok("GET", "/vimfm/v1/alarms")
        return any(a["faultType"] == "NFVI_OAM_VIRTUALISED_RESOURCE_STATE_CHANGE" for a in alarms)

    await cloud.until(alarmed)
    await notified(cloud, sid, "cmp-1")
    view = await cloud.ok("GET", f"/vim/v1/maintenance/{sid}/vnfs/{vnf_id}")
    assert view["state"] == "PLANNED_MAINTENANCE" and len(view["instances"]) == 2
    ids = [i["instanceId"] for i in view["instances"]]
    await cloud.ok(
        "PUT",
        f"/vim/v1/maintenance/{sid}/vnfs/{vnf_id}",
        json={"state": "ACK_PLANNED_MAINTENANCE", "instanceActions": dict.fromkeys(ids, "MIGRATE")},
    )

    async def in_maintenance() -> bool:
        host = await cloud.ok("GET", "/vim/v1/hosts/cmp-1")
        return bool(host["healthStatus"] == "MAINTENANCE")

    await cloud.until(in_maintenance, 30)
    done = await reaches(cloud, sid, "MAINTENANCE_COMPLETE")
    assert done["hostStates"] == {"cmp-1": "DONE"}
    assert [m["state"] for m in done["migrations"]] == ["COMPLETED", "COMPLETED"]
    assert agents.worst["vlb"] >= 1  # never below its budget's minimum
    hosts = {i["host"] for i in await cloud.ok("GET", "/vim/v1/instances")}
    assert hosts == {"cmp-2"}
    host = await cloud.ok("GET", "/vim/v1/hosts/cmp-1")
    assert host["maintenance"] is None  # out of the session's hands at once

    async def back_up() -> bool:
        # its health is judged again at the health loop's next round
        host = await cloud.ok("GET", "/vim/v1/hosts/cmp-1")
        return bool(host["healthStatus"] == "UP")

    await cloud.until(back_up, 5)
    alarms = await cloud.ok("GET", "/vimfm/v1/alarms")
    assert not any(a["faultType"] == "NFVI_OAM_VIRTUALISED_RESOURCE_STATE_CHANGE" for a in alarms)
    assert not any(a["faultType"].startswith("HOST") for a in alarms)


async def test_a_forbidden_instance_is_evicted_on_its_vnfms_word_and_abort(
    cloud: Cloud, agents: Agents
) -> None:
    created = await cloud.ok(
        "POST",
        "/vim/v1/vnfs",
        json=vnf("vdb", count=2, hints={"host": "cmp-1"}, migration={"policy": "forbidden"}),
    )
    vnf_id = created["id"]
    first, second = (i["id"] for i in created["instances"])
    await cloud.until(lambda: _all_active(cloud))
    r = await cloud.call(
        "POST", "/vim/v1/maintenance", json={"hosts": ["cmp-1"], "answerWindow": 30}
    )
    sid = r.json()["id"]
    plan = r.json()["plan"]["hosts"][0]["instances"]
    assert {i["defaultAction"] for i in plan} == {"EVICTION"}
    assert {tuple(i["allowedActions"]) for i in plan} == {("OWN_ACTION", "EVICTION")}
    await cloud.ok(
        "PUT", f"/vim/v1/maintenance/{sid}/vnfs/{vnf_id}", json={"state": "ACK_PREPARE_MAINTENANCE"}
    )
    await notified(cloud, sid, "cmp-1")
    reply = f"/vim/v1/maintenance/{sid}/vnfs/{vnf_id}"
    r = await cloud.call("PUT", reply, json={"instanceActions": {first: "MIGRATE"}})
    assert r.status_code == 400 and "answer OWN_ACTION or EVICTION" in r.text
    # the VNFM moves its service off the first (its own switch-over), then lets it go
    await cloud.ok("PUT", reply, json={"instanceActions": {first: "EVICTION"}})

    async def rebuilt() -> bool:
        inst = await cloud.instance(first)
        return bool(inst["host"] == "cmp-2" and inst["status"] == "ACTIVE")

    await cloud.until(rebuilt, 30)
    inst = await cloud.instance(first)
    assert inst["incarnation"] == 2  # stopped, then rebuilt elsewhere: never migrated
    actions = [a["action"] for a in await cloud.ok("GET", f"/vim/v1/instances/{first}/actions")]
    assert "stop" in actions and "evict" in actions and "migrate" not in actions
    assert (await cloud.instance(second))["host"] == "cmp-1"  # waiting for its VNFM
    r = await cloud.call("POST", f"/vim/v1/maintenance/{sid}/abort")
    assert r.status_code == 202
    aborted = await reaches(cloud, sid, "ABORTED")
    assert "aborted by admin" in aborted["reason"]
    assert aborted["hostStates"] == {"cmp-1": "SKIPPED"}
    assert (await cloud.instance(first))["host"] == "cmp-2"  # what moved stays
    second_now = await cloud.instance(second)
    assert (second_now["host"], second_now["status"]) == ("cmp-1", "ACTIVE")
    host = await cloud.ok("GET", "/vim/v1/hosts/cmp-1")
    assert host["maintenance"] is None
    r = await cloud.call("POST", f"/vim/v1/maintenance/{sid}/abort")
    assert r.status_code == 409


async def _all_active(cloud: Cloud) -> bool:
    instances = await cloud.ok("GET", "/vim/v1/instances")
    return bool(instances) and all(i["status"] == "ACTIVE" for i in instances)
