"""Migration (issue 19) with the engine, a real store and real heartbeats; the two agents
played by the tests through the agents' API: a cold migration phase by phase (the state
uploaded by the source, fetched by the destination), a live one whose measured interruption
broke its bound (alarmed), a failure that leaves the instance on its source, the policy and
the disruption budget refusing with the reason."""

from __future__ import annotations

from typing import Any

from tests.component.compute_cloud import Cloud
from tests.component.test_recovery import running, vnf


def resources(live: bool) -> dict[str, Any]:
    return {
        "vcpus": 2,
        "ramMib": 4096,
        "diskGib": 50,
        "traits": ["T"],
        "hypervisor": "process",
        "migration": {"live": live, "note": "" if live else "criu check failed"},
    }


async def phase(cloud: Cloud, host: str, mid: str, iid: str, what: str, **more: Any) -> Any:
    item = {"id": mid, "instance": iid, "phase": what, **more}
    return await cloud.report(host, [], migrations=[item])


async def used(cloud: Cloud) -> dict[str, int]:
    """vCPUs claimed on each compute host."""
    hosts = await cloud.ok("GET", "/vim/v1/hosts")
    return {h["id"]: h["compute"]["usedVcpus"] for h in hosts if h.get("compute")}


async def migration(cloud: Cloud, mid: str) -> dict[str, Any]:
    return dict(await cloud.ok("GET", f"/vim/v1/migrations/{mid}"))


async def test_a_cold_migration_phase_by_phase(cloud: Cloud) -> None:
    created = await cloud.ok(
        "POST", "/vim/v1/vnfs", json=vnf(hints={"host": "cmp-1"}, migration={"policy": "cold"})
    )
    iid = created["instances"][0]["id"]
    await running(cloud, "cmp-1")
    r = await cloud.call("POST", f"/vim/v1/instances/{iid}/migrate", json={})
    assert r.status_code == 202, r.text
    rec = r.json()
    mid = rec["id"]
    assert (rec["kind"], rec["source"], rec["dest"], rec["state"]) == (
        "cold", "cmp-1", "cmp-2", "PREPARING",
    )  # fmt: skip
    assert rec["reason"].startswith("policy cold")
    inst = await cloud.instance(iid)
    assert (inst["status"], inst["taskState"], inst["host"]) == ("MIGRATING", "migrating", "cmp-1")
    incoming = (await cloud.desired("cmp-2"))["incoming"]
    assert [d["migration"]["role"] for d in incoming] == ["dest"]
    # the source's report while migrating changes nothing (its migration decides)
    await running(cloud, "cmp-1")
    assert (await cloud.instance(iid))["status"] == "MIGRATING"
    await phase(cloud, "cmp-2", mid, iid, "prepared", target={"node": "cmp-2"})
    assert (await migration(cloud, mid))["state"] == "READY"
    (doc,) = (await cloud.desired("cmp-1"))["instances"]
    assert doc["migration"]["role"] == "source" and doc["migration"]["state"] == "READY"
    up = await cloud.ok(
        "PUT",
        f"/vim/v1/hosts/cmp-1/migrations/{mid}/state",
        content=b"the guest's disk",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert up["state"] == "TRANSFERRED"
    r = await cloud.call("GET", f"/vim/v1/hosts/cmp-2/migrations/{mid}/state")
    assert r.content == b"the guest's disk"
    r = await cloud.call("GET", f"/vim/v1/hosts/cmp-1/migrations/{mid}/state")
    assert r.status_code == 404  # the source does not fetch it
    # the destination runs it before it is its own: not a stray
    verdict = await cloud.report(
        "cmp-2",
        [{"id": iid, "incarnation": 1, "state": "RUNNING"}],
        migrations=[{"id": mid, "instance": iid, "phase": "started"}],
    )
    assert verdict["destroy"] == []
    done = await migration(cloud, mid)
    assert done["state"] == "COMPLETED" and done["finishedAt"]
    inst = await cloud.instance(iid)
    assert (inst["status"], inst["taskState"], inst["host"], inst["incarnation"]) == (
        "ACTIVE", None, "cmp-2", 1,
    )  # fmt: skip
    left = await cloud.report("cmp-1", [{"id": iid, "incarnation": 1, "state": "SHUTOFF"}])
    assert left["destroy"] == [iid]  # what is left on the source goes
    await phase(cloud, "cmp-1", mid, iid, "measured", interruptionMs=412.5)
    assert (await migration(cloud, mid))["interruptionMs"] == 412.5
    actions = {a["action"]: a for a in await cloud.ok("GET", f"/vim/v1/instances/{iid}/actions")}
    assert actions["migrate"]["result"] == "success"
    assert "interrupted 412 ms" in actions["migrate-measured"]["message"]
    assert await used(cloud) == {"cmp-1": 0, "cmp-2": 1}


async def test_identical_guests_migrated_at_once_keep_their_own_state(cloud: Cloud) -> None:
    """Two guests of one image export the same bytes: the first migration to end drops its
    state, never the one the other destination has yet to fetch."""
    created = await cloud.ok(
        "POST",
        "/vim/v1/vnfs",
        json=vnf(count=2, hints={"host": "cmp-1"}, migration={"policy": "cold"}),
    )
    ids = [i["id"] for i in created["instances"]]
    await running(cloud, "cmp-1")
    recs = [await cloud.ok("POST", f"/vim/v1/instances/{i}/migrate", json={}) for i in ids]
    for rec, iid in zip(recs, ids, strict=True):
        await phase(cloud, rec["dest"], rec["id"], iid, "prepared", target={})
        up = await cloud.ok(
            "PUT",
            f"/vim/v1/hosts/cmp-1/migrations/{rec['id']}/state",
            content=b"the same disk",
            headers={"Content-Type": "application/octet-stream"},
        )
        assert up["state"] == "TRANSFERRED"
    first, second = recs
    r = await cloud.call("GET", f"/vim/v1/hosts/{first['dest']}/migrations/{first['id']}/state")
    assert r.content == b"the same disk"
    await cloud.report(
        first["dest"],
        [{"id": ids[0], "incarnation": 1, "state": "RUNNING"}],
        migrations=[{"id": first["id"], "instance": ids[0], "phase": "started"}],
    )
    assert (await migration(cloud, first["id"]))["state"] == "COMPLETED"
    r = await cloud.call("GET", f"/vim/v1/hosts/{second['dest']}/migrations/{second['id']}/state")
    assert (r.status_code, r.content) == (200, b"the same disk")
    done = [await migration(cloud, m["id"]) for m in recs]
    assert done[0]["stateDigest"] == done[1]["stateDigest"]  # the same bytes, kept twice


async def test_a_live_migration_that_broke_its_bound_is_alarmed(cloud: Cloud) -> None:
    created = await cloud.ok(
        "POST",
        "/vim/v1/vnfs",
        json=vnf(hints={"host": "cmp-1"}, migration={"policy": "live", "maxInterruptionMs": 300}),
    )
    iid = created["instances"][0]["id"]
    await running(cloud, "cmp-1")
    guest = {"id": iid, "incarnation": 1, "state": "RUNNING"}
    await cloud.report("cmp-1", [guest], resources=resources(live=True))
    await cloud.report("cmp-2", [], resources=resources(live=True))
    rec = await cloud.ok("POST", f"/vim/v1/instances/{iid}/migrate", json={"kind": "live"})
    assert rec["kind"] == "live" and rec["boundMs"] == 300
    mid = rec["id"]
    await phase(cloud, "cmp-2", mid, iid, "prepared", target={"uri": "qemu+tcp://cmp-2/system"})
    (doc,) = (await cloud.desired("cmp-1"))["instances"]
    assert doc["migration"]["target"] == {"uri": "qemu+tcp://cmp-2/system"}
    assert doc["migration"]["maxDowntimeMs"] == 300
    await phase(cloud, "cmp-1", mid, iid, "running")
    await phase(cloud, "cmp-1", mid, iid, "migrated", downtimeMs=120)
    assert (await cloud.instance(iid))["host"] == "cmp-2"
    await phase(cloud, "cmp-1", mid, iid, "measured", interruptionMs=450.0)
    alarms = await cloud.ok("GET", "/vimfm/v1/alarms")
    (alarm,) = [a for a in alarms if a["faultType"] == "INSTANCE_MIGRATION_INTERRUPTION_EXCEEDED"]
    assert "interrupted it 450 ms, more than its 300 ms" in alarm["faultDetails"][0]
    assert (await migration(cloud, mid))["downtimeMs"] == 120


async def test_a_failed_migration_leaves_it_on_its_source(cloud: Cloud) -> None:
    created = await cloud.ok(
        "POST", "/vim/v1/vnfs", json=vnf(hints={"host": "cmp-1"}, migration={"policy": "cold"})
    )
    iid = created["instances"][0]["id"]
    await running(cloud, "cmp-1")
    rec = await cloud.ok("POST", f"/vim/v1/instances/{iid}/migrate")
    await phase(cloud, "cmp-2", rec["id"], iid, "failed", detail="disk full")
    failed = await migration(cloud, rec["id"])
    assert failed["state"] == "FAILED" and "cmp-2: disk full" in failed["detail"]
    inst = await cloud.instance(iid)
    assert (inst["status"], inst["host"]) == ("ACTIVE", "cmp-1")
    assert (await cloud.desired("cmp-2"))["incoming"] == []
    alarms = [a["faultType"] for a in await cloud.ok("GET", "/vimfm/v1/alarms")]
    assert "INSTANCE_MIGRATION_FAILED" in alarms
    assert await used(cloud) == {"cmp-1": 1, "cmp-2": 0}  # the destination's claim given back
    # a cold one that had stopped the guest: started again on its source
    rec = await cloud.ok("POST", f"/vim/v1/instances/{iid}/migrate")
    await phase(cloud, "cmp-2", rec["id"], iid, "prepared", target={})
    await phase(cloud, "cmp-1", rec["id"], iid, "failed", detail="upload failed", stopped=True)
    inst = await cloud.instance(iid)
    assert (inst["status"], inst["taskState"], inst["powerState"]) == (
        "SHUTOFF", "powering-on", "running",
    )  # fmt: skip
    await running(cloud, "cmp-1")
    assert (await cloud.instance(iid))["status"] == "ACTIVE"


async def test_the_policy_refuses_with_the_reason(cloud: Cloud) -> None:
    forbidden = await cloud.ok(
        "POST", "/vim/v1/vnfs", json=vnf("vdb", migration={"policy": "forbidden"})
    )
    fid = forbidden["instances"][0]["id"]
    await running(cloud, forbidden["instances"][0]["host"])
    r = await cloud.call("POST", f"/vim/v1/instances/{fid}/migrate")
    assert r.status_code == 409 and "forbidden: it is never migrated" in r.json()["detail"]
    bounded = {"policy": "live", "maxInterruptionMs": 300}
    live = await cloud.ok("POST", "/vim/v1/vnfs", json=vnf("vfw", migration=bounded))
    lid = live["instances"][0]["id"]
    await running(cloud, live["instances"][0]["host"])
    r = await cloud.call("POST", f"/vim/v1/instances/{lid}/migrate")
    assert r.status_code == 409
    assert "800 ms, more than its 300 ms: not migrated" in r.json()["detail"]


async def test_the_disruption_budget_refuses_with_the_reason(cloud: Cloud) -> None:
    desc = vnf("vlb", count=2, migration={"policy": "cold"})
    desc["disruptionBudget"] = {"maxUnavailable": 1, "minAvailable": 1}
    two = await cloud.ok("POST", "/vim/v1/vnfs", json=desc)
    for host in {i["host"] for i in two["instances"]}:
        await running(cloud, host)
    first, second = (i["id"] for i in two["instances"])
    r = await cloud.call("POST", f"/vim/v1/instances/{first}/migrate")
    assert r.status_code == 202, r.text
    r = await cloud.call("POST", f"/vim/v1/instances/{second}/migrate")
    assert r.status_code == 409
    assert "at most 1 unavailable at once: 1 already are (vlb-fw-0 migrating)" in r.json()["detail"]
    bad = vnf("vx", count=2)
    bad["disruptionBudget"] = {"minAvailable": 3}
    r = await cloud.call("POST", "/vim/v1/vnfs", json=bad)
    assert r.status_code == 400 and "minAvailable 3 exceeds the VNF's 2" in r.text


async def test_scale_in_and_repair_go_through_the_budget(cloud: Cloud) -> None:
    desc = vnf("vlb", count=2)
    desc["vdus"][0]["minCount"] = 0
    desc["disruptionBudget"] = {"minAvailable": 2}
    created = await cloud.ok("POST", "/vim/v1/vnfs", json=desc)
    for host in {i["host"] for i in created["instances"]}:
        await running(cloud, host)
    op = await cloud.ok(
        "POST",
        f"/vim/v1/vnfs/{created['id']}/scale",
        json={"type": "SCALE_IN", "vdu": "fw", "steps": 1},
    )
    assert op["operationState"] == "FAILED", op
    assert "scale-in refused" in op["result"]["error"]
    assert "keeps at least 2 serving" in op["result"]["error"]
    iid = created["instances"][0]["id"]
    r = await cloud.call("POST", f"/vim/v1/instances/{iid}/repair")
    assert r.status_code == 409 and "keeps at least 2 serving" in r.json()["detail"]
