"""The native compute API with the engine and a real store, hosts heard through real
heartbeats, and agents played by the test through the agents' API (what a host should run,
what its guests do): creation with claims, the watch, requests, reports, alarms, and every
refusal leaving nothing behind."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.component.compute_cloud import HOSTS, Cloud
from tests.component.conftest import OPERATOR, READER


def vnf(name: str = "vfw", count: int = 3, **vdu: Any) -> dict[str, Any]:
    return {
        "name": name,
        "sal": "LEVEL_1",
        "priority": 10,
        "vdus": [
            {
                "name": "fw",
                "count": count,
                "flavor": "tiny",
                "image": "guest",
                "networks": [{"network": "vnf-a", "tags": ["data"]}],
                **vdu,
            }
        ],
    }


async def test_a_vnf_is_placed_claimed_and_run_by_its_agents(cloud: Cloud) -> None:
    created = await cloud.ok("POST", "/vim/v1/vnfs", json=vnf(count=3))
    hosts = sorted(i["host"] for i in created["instances"])
    assert hosts == ["cmp-1", "cmp-1", "cmp-2"] or hosts == ["cmp-1", "cmp-2", "cmp-2"]
    assert {i["status"] for i in created["instances"]} == {"BUILDING"}
    for h in HOSTS:
        wanted = (await cloud.desired(h))["instances"]
        assert all(w["configDrive"]["openstack/latest/meta_data.json"] for w in wanted)
        await cloud.run_all(h)
    listed = await cloud.ok("GET", "/vim/v1/instances")
    assert {i["status"] for i in listed} == {"ACTIVE"}
    assert len({p["ip"] for i in listed for p in i["ports"]}) == 3
    used = {h["id"]: h["compute"]["usedVcpus"] for h in await cloud.ok("GET", "/vim/v1/hosts")}
    assert sum(used.values()) == 3
    first = listed[0]["id"]
    actions = await cloud.ok("GET", f"/vim/v1/instances/{first}/actions")
    assert [(a["action"], a["result"], a["message"]) for a in actions] == [
        ("create", "success", "guest running")
    ]


async def test_the_watch_answers_as_soon_as_the_host_has_something_new(cloud: Cloud) -> None:
    known = (await cloud.desired("cmp-1"))["generation"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    watch = asyncio.create_task(
        cloud.ok(
            "GET", "/vim/v1/hosts/cmp-1/instances/desired", params={"generation": known, "wait": 20}
        )
    )
    await asyncio.sleep(0.3)
    assert not watch.done()
    await cloud.ok("POST", "/vim/v1/vnfs", json=vnf(count=1, hints={"host": "cmp-1"}))
    answer = await asyncio.wait_for(watch, 5)
    assert answer["generation"] > known and len(answer["instances"]) == 1
    assert loop.time() - started < 3


async def test_a_controller_shutting_down_sends_its_agents_elsewhere(cloud: Cloud) -> None:
    """Once the shutdown begins, a waiting agent is answered at once and the next asks get
    503 with Retry-After (answered at once with nothing new, an agent would ask again at
    once, holding its connection busy until the drain's bound cancels it mid-request)."""
    known = (await cloud.desired("cmp-1"))["generation"]
    path = "/vim/v1/hosts/cmp-1/instances/desired"
    watch = asyncio.create_task(cloud.call("GET", path, params={"generation": known, "wait": 20}))
    await asyncio.sleep(0.3)
    cloud.runtime.host_watch.close()
    assert (await asyncio.wait_for(watch, 5)).status_code == 200
    r = await cloud.call("GET", path, params={"generation": known, "wait": 20})
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert "shutting down" in r.json()["detail"]
    # nor is a report taken: cut mid-way by the drain's bound, it was a traceback
    body = {"guests": [], "resources": {"vcpus": 2, "ramMib": 4096, "diskGib": 50}}
    r = await cloud.call("PUT", "/vim/v1/hosts/cmp-1/instances/observed", json=body)
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"


async def test_requests_go_through_the_agent(cloud: Cloud) -> None:
    created = await cloud.ok("POST", "/vim/v1/vnfs", json=vnf(count=1, hints={"host": "cmp-1"}))
    iid = created["instances"][0]["id"]
    await cloud.run_all("cmp-1")
    r = await cloud.call(
        "POST",
        f"/vim/v1/instances/{iid}/reboot",
        json={"type": "SOFT"},
        headers={"If-Match": '"stale"'},
    )
    assert r.status_code == 412
    rebooting = await cloud.ok("POST", f"/vim/v1/instances/{iid}/reboot", json={"type": "SOFT"})
    assert rebooting["taskState"] == "rebooting"
    r = await cloud.call("POST", f"/vim/v1/instances/{iid}/stop")
    assert r.status_code == 409 and "while it is rebooting" in r.json()["detail"]
    doc = (await cloud.desired("cmp-1"))["instances"][0]
    assert doc["reboot"] == {"seq": 1, "hard": False}
    await cloud.run_all("cmp-1", rebooted=1)
    assert (await cloud.ok("GET", f"/vim/v1/instances/{iid}"))["taskState"] is None
    await cloud.ok("POST", f"/vim/v1/instances/{iid}/stop")
    await cloud.run_all("cmp-1", state="SHUTOFF", rebooted=1)
    assert (await cloud.ok("GET", f"/vim/v1/instances/{iid}"))["status"] == "SHUTOFF"
    r = await cloud.call("POST", f"/vim/v1/instances/{iid}/stop", token=READER)
    assert r.status_code == 403
    deleting = await cloud.ok("DELETE", f"/vim/v1/instances/{iid}")
    assert deleting["taskState"] == "deleting"
    assert (await cloud.desired("cmp-1"))["instances"][0]["power"] == "deleted"
    await cloud.report("cmp-1", [])  # the agent destroyed it
    gone = await cloud.ok("GET", f"/vim/v1/instances/{iid}")
    assert gone["status"] == "DELETED"
    assert await cloud.ok("GET", "/vim/v1/ports", params={"instance": iid}) == []
    host = await cloud.ok("GET", "/vim/v1/hosts/cmp-1")
    assert host["compute"]["usedVcpus"] == 0


async def test_a_crash_raises_an_alarm_on_the_vnf_cleared_when_active_again(cloud: Cloud) -> None:
    created = await cloud.ok("POST", "/vim/v1/vnfs", json=vnf(count=1, hints={"host": "cmp-2"}))
    iid, vnf_id = created["instances"][0]["id"], created["id"]
    await cloud.run_all("cmp-2")
    await cloud.report(
        "cmp-2",
        [{"id": iid, "incarnation": 1, "state": "CRASHED", "detail": "killed by SIGSEGV"}],
        events=[{"id": iid, "incarnation": 1, "kind": "CRASHED", "detail": "killed by SIGSEGV"}],
    )
    got = await cloud.ok("GET", f"/vim/v1/instances/{iid}")
    assert got["status"] == "ERROR" and "SIGSEGV" in got["fault"]["message"]
    alarms = await cloud.ok("GET", "/vimfm/v1/alarms")
    (alarm,) = [a for a in alarms if a["faultType"] == "INSTANCE_CRASHED"]
    assert alarm["managedObjectId"] == vnf_id
    assert alarm["rootCauseFaultyResource"]["faultyResource"]["resourceId"] == iid
    assert alarm["rootCauseFaultyResource"]["faultyResourceType"] == "COMPUTE"
    assert got["taskState"] == "rebooting_hard"  # its recovery policy restarts it at once
    await cloud.run_all("cmp-2")
    assert not [
        a for a in await cloud.ok("GET", "/vimfm/v1/alarms") if a["faultType"] == "INSTANCE_CRASHED"
    ]


async def test_guests_the_controller_does_not_want_there(cloud: Cloud) -> None:
    verdict = await cloud.report("cmp-1", [{"id": "stray", "incarnation": 1, "state": "RUNNING"}])
    assert verdict["unknown"] == ["stray"] and verdict["destroy"] == []
    alarms = await cloud.ok("GET", "/vimfm/v1/alarms")
    assert any(
        a["faultType"] == "UNMANAGED_INSTANCE" and a["managedObjectId"] == "cmp-1" for a in alarms
    )
    created = await cloud.ok("POST", "/vim/v1/vnfs", json=vnf(count=1, hints={"host": "cmp-2"}))
    iid = created["instances"][0]["id"]
    verdict = await cloud.report("cmp-1", [{"id": iid, "incarnation": 1, "state": "RUNNING"}])
    assert verdict["destroy"] == [iid]  # it belongs on cmp-2


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"name": "x", "vdus": []}, 400, "vdus"),
        (vnf(flavor="nope"), 400, "vdus.0.flavor: flavor nope not found"),
        (vnf(image="nope"), 400, "vdus.0.image: image nope not found"),
        (vnf(networks=[{"network": "nope"}]), 400, "vdus.0.networks.0: network nope not found"),
        (vnf(networks=[{"network": "vnf-a", "redundant": ["a", "b"]}]), 400, "exactly one of"),
        (vnf(watchdog={"timeout": 0}), 400, "timeout"),
        (vnf(flavor="huge", count=1), 409, "No valid host was found: 2 candidate(s); Capacity"),
        (vnf(count=5), 409, "No valid host"),
        (vnf(count=3, networks=[{"network": "tiny-net"}]), 409, "network tiny-net: no free"),
    ],
)
async def test_refusals_name_the_cause_and_leave_nothing(
    cloud: Cloud, body: dict[str, Any], status: int, detail: str
) -> None:
    r = await cloud.call("POST", "/vim/v1/vnfs", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert detail in r.json()["detail"]
    assert await cloud.ok("GET", "/vim/v1/vnfs") == []
    assert await cloud.ok("GET", "/vim/v1/instances") == []
    assert await cloud.ok("GET", "/vim/v1/ports") == []
    hosts = await cloud.ok("GET", "/vim/v1/hosts")
    assert all(h["compute"]["usedVcpus"] == 0 for h in hosts)


async def test_a_client_token_creates_once(cloud: Cloud) -> None:
    body = {**vnf(count=1), "clientToken": "t-1"}
    first = await cloud.ok("POST", "/vim/v1/vnfs", json=body)
    r = await cloud.call("POST", "/vim/v1/vnfs", json=body)
    assert r.status_code == 409 and first["id"] in r.json()["detail"]
    assert len(await cloud.ok("GET", "/vim/v1/instances")) == 1


async def test_consoles_need_an_operator_and_a_live_instance(cloud: Cloud) -> None:
    created = await cloud.ok("POST", "/vim/v1/vnfs", json=vnf(count=1))
    iid = created["instances"][0]["id"]
    r = await cloud.call("POST", f"/vim/v1/instances/{iid}/console", token=READER)
    assert r.status_code == 403
    grant = await cloud.ok("POST", f"/vim/v1/instances/{iid}/console", token=OPERATOR)
    assert grant["url"].startswith("ws://vim.example/vim/v1/console?token=")
    assert grant["type"] == "serial"


# -- placement (issue 15) ------------------------------------------------------------------
def spread(policy: str, level: str, count: int, **more: Any) -> dict[str, Any]:
    return vnf(count=count, placement=[{"policy": policy, "level": level, **more}])


async def test_anti_affinity_at_rack_level_is_never_broken(cloud: Cloud) -> None:
    created = await cloud.ok("POST", "/vim/v1/vnfs", json=spread("anti-affinity", "rack", 2))
    assert sorted(i["host"] for i in created["instances"]) == ["cmp-1", "cmp-2"]
    r = await cloud.call("POST", "/vim/v1/vnfs", json=spread("anti-affinity", "rack", 3))
    assert r.status_code == 409
    assert "GroupRules removed 2" in r.json()["detail"]
    groups = await cloud.ok("GET", "/vim/v1/placement-groups")
    assert [(g["name"], g["level"], g["maxPerDomain"]) for g in groups] == [
        ("vfw-fw-anti-affinity", "rack", 1)
    ]
    shown = await cloud.ok("GET", f"/vim/v1/placement-groups/{groups[0]['id']}")
    assert sorted(m["domain"] for m in shown["members"]) == ["z1/r0", "z1/r1"]


async def test_rules_that_cannot_hold_are_refused_at_creation(cloud: Cloud) -> None:
    r = await cloud.call("POST", "/vim/v1/vnfs", json=spread("anti-affinity", "power", 1))
    assert r.status_code == 400 and "not a level of the topology" in r.json()["detail"]
    r = await cloud.call("POST", "/vim/v1/vnfs", json=spread("anti-affinity", "site", 1))
    assert r.status_code == 400 and "no host declares it" in r.json()["detail"]
    r = await cloud.call("POST", "/vim/v1/vnfs", json=spread("affinity", "host", 3))
    assert r.status_code == 400 and "cannot fit one host" in r.json()["detail"]
    r = await cloud.call(
        "POST", "/vim/v1/vnfs", json=spread("anti-affinity", "host", 1, maxPerDomain=0)
    )
    assert r.status_code == 400 and "maxPerDomain" in r.json()["detail"]
    assert await cloud.ok("GET", "/vim/v1/placement-groups") == []


async def test_soft_anti_affinity_places_anyway_and_says_so(cloud: Cloud) -> None:
    created = await cloud.ok("POST", "/vim/v1/vnfs", json=spread("soft-anti-affinity", "host", 3))
    notes = [
        n
        for i in created["instances"]
        for n in (await cloud.ok("GET", f"/vim/v1/instances/{i['id']}"))["placementNotes"]
    ]
    assert len(notes) == 1 and "soft-anti-affinity" in notes[0]


async def test_scale_out_and_in_within_the_counts_and_rules(cloud: Cloud) -> None:
    body = vnf(
        count=1, minCount=1, maxCount=2, placement=[{"policy": "anti-affinity", "level": "host"}]
    )
    created = await cloud.ok("POST", "/vim/v1/vnfs", json=body)
    vnf_id = created["id"]
    out = await cloud.ok(
        "POST", f"/vim/v1/vnfs/{vnf_id}/scale", json={"type": "SCALE_OUT", "vdu": "fw", "steps": 1}
    )
    assert out["operationState"] == "COMPLETED" and out["result"]["count"] == 2
    hosts = sorted(
        i["host"] for i in (await cloud.ok("GET", f"/vim/v1/vnfs/{vnf_id}"))["instances"]
    )
    assert hosts == ["cmp-1", "cmp-2"]
    too_far = await cloud.ok(
        "POST", f"/vim/v1/vnfs/{vnf_id}/scale", json={"type": "SCALE_OUT", "vdu": "fw", "steps": 1}
    )
    assert too_far["operationState"] == "FAILED" and "maxCount 2" in too_far["result"]["error"]
    back = await cloud.ok(
        "POST", f"/vim/v1/vnfs/{vnf_id}/scale", json={"type": "SCALE_IN", "vdu": "fw", "steps": 1}
    )
    assert back["operationState"] == "COMPLETED" and len(back["result"]["removed"]) == 1
    below = await cloud.ok(
        "POST", f"/vim/v1/vnfs/{vnf_id}/scale", json={"type": "SCALE_IN", "vdu": "fw", "steps": 1}
    )
    assert below["operationState"] == "FAILED" and "minCount 1" in below["result"]["error"]
    ops = await cloud.ok("GET", f"/vim/v1/vnfs/{vnf_id}/operations")
    assert [o["operationState"] for o in ops] == ["COMPLETED", "FAILED", "COMPLETED", "FAILED"]
    r = await cloud.call(
        "POST", f"/vim/v1/vnfs/{vnf_id}/scale", json={"type": "SCALE_OUT", "vdu": "nope"}
    )
    assert r.status_code == 400 and "no VDU 'nope'" in r.json()["detail"]


async def test_placement_explained(cloud: Cloud) -> None:
    out = await cloud.ok(
        "POST",
        "/vim/v1/placement/explain",
        json={"flavor": "tiny", "image": "guest", "hints": {"host": "cmp-2"}},
    )
    assert out["host"] == "cmp-2"
    hints = next(f for f in out["filters"] if f["name"] == "Hints")
    assert hints["removed"] == {"cmp-1": "not the requested host cmp-2"}
    out = await cloud.ok("POST", "/vim/v1/placement/explain", json={"flavor": "huge"})
    assert out["host"] is None and "Capacity removed 2" in out["reason"]


async def test_a_higher_priority_vnf_preempts_a_lower_one(cloud: Cloud) -> None:
    low = await cloud.ok("POST", "/vim/v1/vnfs", json={**vnf("low", count=4), "priority": 1})
    assert len(low["instances"]) == 4  # the cloud is full (2 x 2 vCPUs)
    keep = await cloud.call("POST", "/vim/v1/vnfs", json={**vnf("same", count=1), "priority": 1})
    assert keep.status_code == 409  # equal priority pre-empts nothing
    high = await cloud.ok("POST", "/vim/v1/vnfs", json={**vnf("high", count=1), "priority": 90})
    assert len(high["instances"]) == 1
    stopped = [i for i in await cloud.ok("GET", "/vim/v1/instances") if i["status"] == "SHUTOFF"]
    assert len(stopped) == 1 and "pre-empted by high-fw-0" in stopped[0]["fault"]["message"]
    alarms = await cloud.ok("GET", "/vimfm/v1/alarms")
    assert [a["faultType"] for a in alarms] == ["INSTANCE_PREEMPTED"]
