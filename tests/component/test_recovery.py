"""Recovery (issue 17) with the engine, a real store and real heartbeats; agents played by
the tests: an instance's failure recovered by its VDU's policy (restart in place with
backoff, replacement elsewhere, notify only), a hang, a repair, a failed host that cannot be
fenced (UNKNOWN until an operator confirms it is off, then recovered in priority order)."""

from __future__ import annotations

from typing import Any

from tests.component.compute_cloud import HOSTS, Cloud


def vnf(name: str = "vfw", count: int = 1, priority: int = 10, **vdu: Any) -> dict[str, Any]:
    return {
        "name": name,
        "priority": priority,
        "vdus": [
            {
                "name": "fw",
                "count": count,
                "flavor": "tiny",
                "image": "guest",
                "networks": [{"network": "vnf-a"}],
                **vdu,
            }
        ],
    }


async def running(cloud: Cloud, host: str, **states: str) -> None:
    """The agent of `host` runs what it should (RUNNING unless `states` says otherwise for an
    instance id), having done every reboot it was asked."""
    wanted = (await cloud.desired(host))["instances"]
    await cloud.report(
        host,
        [
            {
                "id": i["id"],
                "incarnation": i["incarnation"],
                "state": states.get(i["id"], "RUNNING"),
                "rebooted": i["reboot"]["seq"],
            }
            for i in wanted
            if i["power"] != "deleted"
        ],
    )


async def crash(cloud: Cloud, host: str, iid: str, incarnation: int = 1) -> Any:
    return await cloud.report(
        host,
        [
            {
                "id": iid,
                "incarnation": incarnation,
                "state": "CRASHED",
                "detail": "killed by SIGSEGV",
            }
        ],
        events=[
            {
                "id": iid,
                "incarnation": incarnation,
                "kind": "CRASHED",
                "detail": "killed by SIGSEGV",
            }
        ],
    )


async def test_a_crash_is_restarted_in_place_then_with_backoff(cloud: Cloud) -> None:
    created = await cloud.ok(
        "POST",
        "/vim/v1/vnfs",
        json=vnf(hints={"host": "cmp-1"}, recovery={"maxRestarts": 3, "backoff": 0.5}),
    )
    iid = created["instances"][0]["id"]
    await running(cloud, "cmp-1")
    await crash(cloud, "cmp-1", iid)
    now = await cloud.instance(iid)
    assert (now["status"], now["taskState"]) == ("ERROR", "rebooting_hard")  # at once
    assert (await cloud.desired("cmp-1"))["instances"][0]["reboot"] == {"seq": 1, "hard": True}
    await running(cloud, "cmp-1")
    assert (await cloud.instance(iid))["status"] == "ACTIVE"
    await crash(cloud, "cmp-1", iid)  # again: after a backoff
    waiting = await cloud.instance(iid)
    assert waiting["taskState"] is None and any(
        n.startswith("restart-due:") for n in waiting["placementNotes"]
    )
    restarted = await cloud.until(lambda: _task(cloud, iid, "rebooting_hard"), within=5)
    assert restarted
    actions = [a["action"] for a in await cloud.ok("GET", f"/vim/v1/instances/{iid}/actions")]
    assert actions.count("recover-restart") == 2


async def _task(cloud: Cloud, iid: str, task: str) -> bool:
    return (await cloud.instance(iid))["taskState"] == task


async def test_beyond_its_restarts_it_is_replaced_elsewhere_in_the_same_state(cloud: Cloud) -> None:
    created = await cloud.ok(
        "POST", "/vim/v1/vnfs", json=vnf(hints={"host": "cmp-1"}, recovery={"maxRestarts": 0})
    )
    iid = created["instances"][0]["id"]
    await running(cloud, "cmp-1")
    before = await cloud.instance(iid)
    await crash(cloud, "cmp-1", iid)
    moved = await cloud.instance(iid)
    assert (moved["host"], moved["incarnation"], moved["status"]) == ("cmp-2", 2, "REBUILDING")
    assert moved["ports"] == before["ports"]  # same MACs and IPs
    assert moved["initialStateDigest"] == before["initialStateDigest"]
    (doc,) = (await cloud.desired("cmp-2"))["instances"]
    assert doc["incarnation"] == 2
    verdict = await crash(cloud, "cmp-1", iid)  # the dead incarnation 1 is still there
    assert verdict["destroy"] == [iid]
    await running(cloud, "cmp-2")
    assert (await cloud.instance(iid))["status"] == "ACTIVE"
    alarms = [a["faultType"] for a in await cloud.ok("GET", "/vimfm/v1/alarms")]
    assert "INSTANCE_CRASHED" not in alarms  # cleared once it serves again


async def test_notify_only_leaves_it_to_the_vnfm(cloud: Cloud) -> None:
    created = await cloud.ok("POST", "/vim/v1/vnfs", json=vnf(recovery={"onFailure": "notify"}))
    iid, host = created["instances"][0]["id"], created["instances"][0]["host"]
    await running(cloud, host)
    await crash(cloud, host, iid)
    now = await cloud.instance(iid)
    assert (now["status"], now["taskState"], now["incarnation"]) == ("ERROR", None, 1)


async def test_a_hung_guest_is_restarted(cloud: Cloud) -> None:
    created = await cloud.ok(
        "POST",
        "/vim/v1/vnfs",
        json=vnf(
            hints={"host": "cmp-2"}, healthCheck={"kind": "tcp", "interval": 0.5, "failures": 2}
        ),
    )
    iid = created["instances"][0]["id"]
    assert (await cloud.desired("cmp-2"))["instances"][0]["healthCheck"]["kind"] == "tcp"
    await running(cloud, "cmp-2")
    await cloud.report(
        "cmp-2",
        [{"id": iid, "incarnation": 1, "state": "RUNNING"}],
        events=[
            {"id": iid, "incarnation": 1, "kind": "HUNG", "detail": "2 health checks failed (tcp)"}
        ],
    )
    now = await cloud.instance(iid)
    assert now["taskState"] == "rebooting_hard"
    alarms = await cloud.ok("GET", "/vimfm/v1/alarms")
    assert [a["faultType"] for a in alarms] == ["INSTANCE_HUNG"]


async def test_repair_replaces_from_the_spec(cloud: Cloud) -> None:
    created = await cloud.ok("POST", "/vim/v1/vnfs", json=vnf())
    iid = created["instances"][0]["id"]
    await running(cloud, created["instances"][0]["host"])
    repaired = await cloud.ok("POST", f"/vim/v1/instances/{iid}/repair")
    assert repaired["incarnation"] == 2 and repaired["taskState"] == "recovering"
    r = await cloud.call("POST", f"/vim/v1/instances/{iid}/repair")
    assert r.status_code == 409 and "while it is recovering" in r.json()["detail"]


async def test_a_host_that_cannot_be_fenced_waits_for_the_operator(cloud: Cloud) -> None:
    low = await cloud.ok(
        "POST", "/vim/v1/vnfs", json=vnf("low", priority=1, hints={"host": "cmp-1"})
    )
    high = await cloud.ok(
        "POST", "/vim/v1/vnfs", json=vnf("high", priority=90, hints={"host": "cmp-1"})
    )
    await running(cloud, "cmp-1")
    ids = [low["instances"][0]["id"], high["instances"][0]["id"]]
    cloud.silence("cmp-1")  # no BMC here: it cannot be fenced
    await cloud.until(lambda: _statuses(cloud, ids, "UNKNOWN"), within=20)
    alarms = await cloud.ok("GET", "/vimfm/v1/alarms")
    assert sum(a["faultType"] == "INSTANCE_STATE_UNKNOWN" for a in alarms) == 2
    assert {(await cloud.instance(i))["host"] for i in ids} == {"cmp-1"}  # not recovered
    # A report that still comes from cmp-1 (late, or round a partition) changes nothing:
    # believed, it made them ACTIVE until the next round marked them UNKNOWN again (a flap).
    await running(cloud, "cmp-1")
    assert await _statuses(cloud, ids, "UNKNOWN")
    alarms = await cloud.ok("GET", "/vimfm/v1/alarms")
    assert sum(a["faultType"] == "INSTANCE_STATE_UNKNOWN" for a in alarms) == 2
    done = await cloud.ok("POST", "/vim/v1/hosts/cmp-1/confirm-down")
    assert sorted(done["recovering"]) == sorted(ids)
    await cloud.until(lambda: _on(cloud, ids, "cmp-2"), within=10)
    order = []
    for i in ids:
        actions = await cloud.ok("GET", f"/vim/v1/instances/{i}/actions")
        order += [(a["startedAt"], i) for a in actions if a["action"] == "recover"]
    order.sort()
    assert [i for _, i in order] == [ids[1], ids[0]]  # the higher priority first
    await running(cloud, "cmp-2")
    assert {(await cloud.instance(i))["status"] for i in ids} == {"ACTIVE"}


async def _statuses(cloud: Cloud, ids: list[str], status: str) -> bool:
    return [(await cloud.instance(i))["status"] for i in ids] == [status] * len(ids)


async def _on(cloud: Cloud, ids: list[str], host: str) -> bool:
    return [(await cloud.instance(i))["host"] for i in ids] == [host] * len(ids)


async def test_confirming_a_healthy_host_down_is_refused(cloud: Cloud) -> None:
    r = await cloud.call("POST", f"/vim/v1/hosts/{HOSTS[0]}/confirm-down")
    assert r.status_code == 409 and "only a failed host" in r.json()["detail"]


async def test_a_watchdog_reset_is_alarmed_until_the_guest_runs_again(cloud: Cloud) -> None:
    created = await cloud.ok("POST", "/vim/v1/vnfs", json=vnf(hints={"host": "cmp-1"}))
    iid = created["instances"][0]["id"]
    await running(cloud, "cmp-1")
    guest = {"id": iid, "incarnation": 1, "state": "RUNNING", "rebooted": 0}

    def event(kind: str) -> dict[str, Any]:
        return {"id": iid, "incarnation": 1, "kind": kind, "detail": "i6300esb reset"}

    async def watchdog_alarms() -> list[Any]:
        return list(
            await cloud.ok(
                "GET",
                "/vimfm/v1/alarms",
                params={"filter": "(eq,faultType,INSTANCE_WATCHDOG_EXPIRED)"},
            )
        )

    await cloud.report("cmp-1", [guest], events=[event("WATCHDOG")])
    (alarm,) = await watchdog_alarms()
    assert alarm["perceivedSeverity"] != "CLEARED"
    assert (await cloud.instance(iid))["status"] == "ACTIVE"
    await cloud.report("cmp-1", [guest], events=[event("STARTED")])
    assert await cloud.until(lambda: _no_active(cloud, "INSTANCE_WATCHDOG_EXPIRED"), within=5)


async def _no_active(cloud: Cloud, fault: str) -> bool:
    found = await cloud.ok("GET", "/vimfm/v1/alarms", params={"filter": f"(eq,faultType,{fault})"})
    return all(a["perceivedSeverity"] == "CLEARED" for a in found)
