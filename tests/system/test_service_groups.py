"""Service groups in the embedded cloud (issue 4): `api` (all-active), `kv` (active-standby,
a real Redis) and `workers` (n-plus-m, 2+1) on the three control nodes. Faults are real:
SIGKILL and SIGSTOP of the active member, its agent frozen (only fencing lets the standby
in), its node powered off. Each checks that there never were two writable actives, that no
acknowledged write was lost, the new epoch, and the group's alarms raised and cleared."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import require_system
from tests.system.test_embedded_cloud import Cloud, running_cloud, until
from vimha.cloud.demo_groups import frontend_port
from vimha.cloud.kvclient import WriteLog, missing, write_steadily


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    require_system(shutil.which("redis-server") is not None, "redis-server (apt: redis-server)")
    require_system(shutil.which("haproxy") is not None, "haproxy (apt: haproxy)")
    with running_cloud(tmp_path_factory.mktemp("groups")) as c:
        c.groups_ok(60)
        yield c


def group(cloud: Cloud, name: str) -> dict[str, Any]:
    found: dict[str, Any] = cloud.get(f"/vim/v1/service-groups/{name}")
    return found


def healthy_again(cloud: Cloud, name: str) -> bool:
    g = group(cloud, name)
    return g["health"] == "OK" and not g["alarms"]


def alarm_history(cloud: Cloud, fault: str, obj: str) -> list[str]:
    alarms = cloud.get(
        "/vimfm/v1/alarms", filter=f"(eq,managedObjectId,{obj});(eq,perceivedSeverity,CLEARED)"
    )
    return [a["perceivedSeverity"] for a in alarms if a["faultType"] == fault]


def test_each_policy_has_its_actives(cloud: Cloud) -> None:
    groups = {g["name"]: g for g in cloud.get("/vim/v1/service-groups")}
    assert sorted(groups) == ["api", "kv", "lb", "workers"]
    assert [m["role"] for m in groups["lb"]["members"]] == ["active"] * 2  # the HAProxy pair
    assert len(groups["api"]["active"]) == 3
    assert [m["role"] for m in groups["api"]["members"]] == ["active"] * 3
    assert len(groups["kv"]["active"]) == 1 and groups["kv"]["active"][0]["epoch"] >= 1
    assert sorted(m["role"] for m in groups["kv"]["members"]) == ["active", "standby", "standby"]
    assert len(groups["workers"]["active"]) == 2
    r = httpx.get(
        cloud.url + "/vim/v1/service-groups/nope",
        headers={"Authorization": f"Bearer {cloud.token}"},
    )
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    assert r.headers["content-type"].startswith("application/problem+json")
    out = cloud.cli("groups")
    assert "active-standby" in out and "n-plus-m" in out and "all-active" in out


async def _switch_over(cloud: Cloud, how: str) -> tuple[WriteLog, dict[str, Any], dict[str, Any]]:
    """Write steadily to kv's active, fail it `how`, and write on until a new active serves."""
    before = group(cloud, "kv")
    members = [m["address"] for m in before["members"]]
    # through the load balancers (HAProxy on ctl-1 and ctl-2; no VIP in loopback mode: the
    # client moves to the other balancer when writes fail)
    port = int(cloud.url.rsplit(":", 1)[1])
    balancers = [f"127.1.0.{i}:{frontend_port(port, 'kv')}" for i in (1, 2)]
    log, stop = WriteLog(), asyncio.Event()

    async def active() -> str | None:
        return balancers[(log.failed // 3) % 2]

    writer = asyncio.create_task(write_steadily(active, members, stop, log))
    try:
        await asyncio.sleep(1.0)
        assert log.acknowledged, "nothing written before the fault"
        said = await asyncio.to_thread(cloud.chaos, "kill-active", "kv", "--how", how)
        assert before["active"][0]["member"] in said
        deadline = asyncio.get_running_loop().time() + 40
        while True:
            now = await asyncio.to_thread(group, cloud, "kv")
            if now["active"] and now["active"][0]["epoch"] > before["active"][0]["epoch"]:
                break
            assert asyncio.get_running_loop().time() < deadline, f"no new active: {now}"
            await asyncio.sleep(0.2)
        written = len(log.acknowledged)
        while len(log.acknowledged) < written + 20:  # the new active takes writes
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await writer
    after = group(cloud, "kv")
    lost = await missing(after["active"][0]["address"], log.acknowledged)
    assert lost == [], f"{len(lost)} acknowledged writes lost, first {lost[:5]}"
    assert log.max_masters <= 1, "two writable actives at once"
    return log, before, after


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_kv_active_member_failure_switches_over_without_losing_writes(
    cloud: Cloud, how: str
) -> None:
    _, before, after = asyncio.run(_switch_over(cloud, how))
    old = before["active"][0]["member"]
    assert after["active"][0]["member"] != old
    last = after["lastSwitchover"]
    assert last["from"] == old and last["to"] == after["active"][0]["member"]
    assert "local monitor failed" in last["reason"]
    assert last["detected"] <= last["promoted"] <= last["serving"]
    # the old active comes back as a standby of the new one (a SIGSTOPped one is killed
    # and started again by its agent)
    until(lambda: healthy_again(cloud, "kv"), 60)
    roles = {m["member"]: m["role"] for m in group(cloud, "kv")["members"]}
    assert roles[old] == "standby"
    # raised and cleared, however fast it was (the controller judges a burst once)
    until(lambda: "CLEARED" in alarm_history(cloud, "SERVICE_GROUP_SWITCHOVER", "group/kv"), 10)


def test_a_frozen_agent_is_fenced_before_its_standby_takes_over(cloud: Cloud) -> None:
    """SIGSTOP of the active's agent: its lease lapses, but the member may still serve; the
    standby takes over only once the controller fenced the node (BMC power-off)."""
    _, before, after = asyncio.run(_switch_over(cloud, "agent-stop"))
    old = before["active"][0]["member"]
    last = after["lastSwitchover"]
    assert last["from"] == old and last["fenced"] is not None
    assert last["fenced"] <= last["promoted"], "promoted before the old active was fenced"
    fencing = cloud.get(f"/vim/v1/hosts/{old}/fencing")
    assert fencing and fencing[0]["result"] == "CONFIRMED"
    cloud.chaos("heal", old)
    until(lambda: cloud.hosts()[old]["healthStatus"] == "UP", 60)
    until(lambda: healthy_again(cloud, "kv"), 60)
    cloud.groups_ok(60)  # its other members (api, workers, the balancer) back for the next test


def test_all_active_members_keep_serving_while_one_is_down(cloud: Cloud) -> None:
    before = {m["member"]: m["pid"] for m in group(cloud, "api")["members"]}
    cleared = len(alarm_history(cloud, "SERVICE_GROUP_REDUNDANCY_LOST", "group/api"))
    port = int(cloud.url.rsplit(":", 1)[1])
    through_lb = f"http://127.1.0.2:{frontend_port(port, 'api')}/"
    with httpx.Client(timeout=5) as client:
        assert client.get(through_lb).status_code == 200
        said = cloud.chaos("kill-active", "api")
        answers = [client.get(through_lb).status_code for _ in range(100)]
    assert answers == [200] * 100, "a request failed while one member was down"
    killed = next(m for m in before if f"on {m} " in said)
    for _ in range(10):  # the others serve throughout
        serving = [m["member"] for m in group(cloud, "api")["active"]]
        assert len(serving) >= 2 and set(before) - {killed} <= set(serving)
    # restarted by its agent; the lost redundancy was alarmed and cleared
    until(
        lambda: (
            {m["member"]: m["pid"] for m in group(cloud, "api")["members"]}[killed]
            != before[killed]
        )
    )
    until(lambda: healthy_again(cloud, "api"), 30)
    until(lambda: len(alarm_history(cloud, "SERVICE_GROUP_REDUNDANCY_LOST", "group/api")) > cleared)


def test_n_plus_m_standby_replaces_a_failed_active(cloud: Cloud) -> None:
    before = group(cloud, "workers")
    standby = next(m["member"] for m in before["members"] if m["role"] == "standby")
    cloud.chaos("kill-active", "workers")
    until(lambda: standby in [a["member"] for a in group(cloud, "workers")["active"]], 20)
    until(lambda: healthy_again(cloud, "workers"), 30)
    after = group(cloud, "workers")
    assert len(after["active"]) == 2
    assert max(a["epoch"] for a in after["active"]) > max(a["epoch"] for a in before["active"])


def test_a_node_powered_off_hands_its_roles_over(cloud: Cloud) -> None:
    before = group(cloud, "kv")
    old = before["active"][0]["member"]
    cloud.chaos("power-off", old)
    until(lambda: (a := group(cloud, "kv")["active"]) and a[0]["member"] != old, 40)
    # the timeline is noted as the controller sees the slot change hands: a moment after
    # the new active shows in the members' own records
    last = until(lambda: (s := group(cloud, "kv")["lastSwitchover"])["from"] == old and s, 10)
    assert last["fenced"] is not None
    cloud.chaos("heal", old)
    until(lambda: cloud.hosts()[old]["healthStatus"] == "UP", 60)
    until(lambda: healthy_again(cloud, "kv"), 60)
    cloud.groups_ok(60)  # its other members (api, workers, the balancer) back for the next test
