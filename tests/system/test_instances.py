"""VNF instances for real (issue 14): agents running process guests for controllers.

- Two controllers on one PostgreSQL and a compute agent: a VNF created through one runs
  on the agent's node; its console URL, made by one controller, is served by the other
  (once: used, expired and forged tokens are refused); the agent killed and started again
  adopts its guests (same processes, no duplicate); a guest nobody knows is alarmed, kept.
- The embedded cloud (`vimha up`): the demo VNFs answer with their initial state; a guest
  crashed, hung or no longer petting its watchdog is seen, alarmed and recorded.
- Recovery of a failed host's instances (issue 17): 20 instances of 3 VNFs in anti-affinity
  groups on a host powered off, back elsewhere in their initial state, rules kept, the
  higher priority first; a rack partitioned with its BMCs, nothing recovered (UNKNOWN,
  alarmed) until an operator confirms a host down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import free_port
from tests.support.postgres import PostgresServer
from tests.system.conftest import TOKEN, ControllerProcess, vimha
from tests.system.test_embedded_cloud import Cloud, running_cloud
from vimha.cloud.demo_vnfs import process_image
from vimha.cloud.procs import AgentProcess, guest_processes

KEY = "key-of-cmp-9-0123456789"
NODE = "cmp-9"


def until(pred: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (result := pred()):
        assert time.monotonic() < deadline, f"{what} not reached"
        time.sleep(0.1)
    return result


class Pair:
    """Two controllers on one database, and one compute agent reporting to the first."""

    def __init__(self, base: Path, store_url: str) -> None:
        self.base = base
        self.ports = (free_port(), free_port())
        others = (free_port(), free_port())
        self.controllers = []
        for name, (mgmt, storage) in (("a", self.ports), ("b", others)):
            (base / name).mkdir()
            ctl = ControllerProcess(
                base / name,
                store_url,
                controller_name=f"ctl-{name}",
                heartbeat={
                    "interval": 0.05,
                    "misses": 6,
                    "listen": {"mgmt": f"127.0.0.1:{mgmt}", "storage": f"127.0.0.1:{storage}"},
                },
                hosts=[
                    {
                        "name": NODE,
                        "key": KEY,
                        "location": {"site": "s1", "rack": "r9"},
                        "capacities": {"vcpus": 8, "ram_mib": 8192, "disk_gib": 50},
                    }
                ],
                delivery={"process": False},
            )
            self.controllers.append(ctl)
        self.controllers[0].migrate()
        try:
            for ctl in self.controllers:
                ctl.start()
        except BaseException:
            for ctl in self.controllers:
                ctl.stop()
            raise
        self.agent = AgentProcess(
            base,
            NODE,
            KEY,
            ("127.9.0.1", "127.9.0.2"),
            self.ports,
            interval=0.05,
            controller_url=self.controllers[0].url,
            token=TOKEN,
            run_dir=str(base / "run"),
            hypervisor={"url": "process://", "console_listen": "127.9.0.1:0", "report_every": 1.0},
            planes=[  # heard by both controllers
                {
                    "name": plane,
                    "local": local,
                    "controller": [f"127.0.0.1:{self.ports[n]}", f"127.0.0.1:{others[n]}"],
                }
                for n, (plane, local) in enumerate(
                    (("mgmt", "127.9.0.1"), ("storage", "127.9.0.2"))
                )
            ],
        )

    def api(self, n: int = 0) -> httpx.Client:
        return self.controllers[n].client()

    def stop(self) -> None:
        self.agent.stop()
        for pid in guest_processes(NODE, self.base):
            os.kill(pid, signal.SIGKILL)
        for ctl in self.controllers:
            ctl.stop()


@pytest.fixture
def pair(tmp_path: Path, postgres: PostgresServer) -> Iterator[Pair]:
    p = Pair(tmp_path, postgres.new_database())
    p.agent.start()
    try:
        with p.api() as c:
            until(
                lambda: c.get(f"/vim/v1/hosts/{NODE}").json()["healthStatus"] == "UP", 30, "host UP"
            )
            c.post("/vim/v1/flavors", json={"name": "tiny", "vcpus": 1, "ramMib": 128})
            image = c.post(
                "/vim/v1/images",
                json={
                    "name": "guest",
                    "properties": {"vimha_format": "tar", "hypervisor_type": "process"},
                },
            ).json()
            c.put(
                f"/vim/v1/images/{image['id']}/file",
                content=process_image(),
                headers={"Content-Type": "application/octet-stream"},
            )
            c.post("/vim/v1/networks", json={"name": "vnf-a", "cidr": "127.99.0.0/16"})
            until(
                lambda: c.get(f"/vim/v1/hosts/{NODE}").json().get("compute"),
                20,
                "resources reported",
            )
        yield p
    finally:
        p.stop()


def guest_answer(ip: str) -> dict[str, Any] | None:
    try:
        return dict(httpx.get(f"http://{ip}:8080/", timeout=0.5).json())
    except httpx.HTTPError:
        return None


def test_vnf_on_an_agent_console_on_another_controller_and_adoption(pair: Pair) -> None:
    with pair.api(0) as a, pair.api(1) as b:
        r = a.post(
            "/vim/v1/vnfs",
            json={
                "name": "vx",
                "vdus": [
                    {
                        "name": "x",
                        "count": 2,
                        "flavor": "tiny",
                        "image": "guest",
                        "networks": [{"network": "vnf-a"}],
                    }
                ],
            },
        )
        assert r.status_code == 201, r.text
        ids = [i["id"] for i in r.json()["instances"]]
        until(
            lambda: all(a.get(f"/vim/v1/instances/{i}").json()["status"] == "ACTIVE" for i in ids),
            20,
            "instances ACTIVE",
        )
        views = [b.get(f"/vim/v1/instances/{i}").json() for i in ids]
        for view in views:
            body = until(lambda v=view: guest_answer(v["ports"][0]["ip"]), 10, "guest answers")
            assert body["digest"] == view["initialStateDigest"]
            assert body["instance"] == view["id"] and body["incarnation"] == 1

        # A console URL from controller a, served by controller b (the token is stored).
        grant = a.post(f"/vim/v1/instances/{ids[0]}/console").json()
        url = grant["url"].replace(pair.controllers[0].url[7:], pair.controllers[1].url[7:])
        with connect(url, open_timeout=10) as ws:
            ws.send(b"status\n")
            said = b""
            while b'"digest"' not in said:
                said += ws.recv(timeout=5)  # type: ignore[operator]
            assert b"vimha-guest ready" in said and ids[0].encode() in said
        for refused in (url, url[:-4] + "AAAA"):  # used, forged
            with pytest.raises(InvalidStatus) as exc:
                connect(refused, open_timeout=5)
            assert exc.value.response.status_code == 403

        # The agent killed and started again adopts its guests: same processes, no twin.
        before = sorted(guest_processes(NODE, pair.base))
        assert len(before) == 2
        pair.agent.kill()
        pair.agent.start()
        until(
            lambda: a.get(f"/vim/v1/hosts/{NODE}").json()["healthStatus"] == "UP",
            20,
            "host UP again",
        )
        time.sleep(2.5)  # reports of the new agent
        assert sorted(guest_processes(NODE, pair.base)) == before
        assert {a.get(f"/vim/v1/instances/{i}").json()["status"] for i in ids} == {"ACTIVE"}

        # A crash is seen by the new agent at once (and restarted in place: issue 17).
        os.kill(before[0], signal.SIGSEGV)

        def actions(i: str) -> set[str]:
            return {x["action"] for x in a.get(f"/vim/v1/instances/{i}/actions").json()}

        until(
            # adopted, not its child: "died" (no exit status to tell a crash)
            lambda: any("recover-restart" in actions(i) for i in ids),
            10,
            "crash seen and restarted",
        )


def test_a_guest_nobody_knows_is_alarmed_and_kept(pair: Pair, tmp_path: Path) -> None:
    stray = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        home = tmp_path / "run" / "guests" / "stray-1"
        home.mkdir(parents=True)
        started = Path(f"/proc/{stray.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        spec = {
            "instance_id": "stray-1",
            "name": "stray",
            "incarnation": 1,
            "vcpus": 1,
            "ram_mib": 64,
            "disk_gib": 1,
            "image_id": "x",
            "image_path": "x",
            "image_format": "tar",
            "ports": [],
            "watchdog": None,
        }
        (home / "state.json").write_text(
            json.dumps(
                {
                    "pid": stray.pid,
                    "started": started,
                    "power": "running",
                    "crashed": "",
                    "spec": spec,
                }
            )
        )
        pair.agent.kill()
        pair.agent.start()
        with pair.api() as c:
            alarms = until(
                lambda: [
                    x
                    for x in c.get("/vimfm/v1/alarms").json()
                    if x["faultType"] == "UNMANAGED_INSTANCE"
                ],
                20,
                "alarm",
            )
            assert alarms[0]["managedObjectId"] == NODE
        time.sleep(1.5)
        assert stray.poll() is None  # reported, never killed silently
    finally:
        stray.kill()
        stray.wait()


# -- the embedded cloud --------------------------------------------------------------------
@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with running_cloud(tmp_path_factory.mktemp("instances")) as c:
        until(
            lambda: len([i for i in c.get("/vim/v1/instances") if i["status"] == "ACTIVE"]) == 5,
            60,
            "the demo VNFs ACTIVE",
        )
        yield c


def by_name(cloud: Cloud, name: str) -> dict[str, Any]:
    return next(i for i in cloud.get("/vim/v1/instances") if i["name"] == name)


def test_demo_vnfs_answer_with_their_initial_state(cloud: Cloud) -> None:
    vnfs = {v["name"]: v for v in cloud.get("/vim/v1/vnfs")}
    assert (vnfs["vfw"]["sal"], vnfs["vfw"]["priority"], len(vnfs["vfw"]["instances"])) == (
        "LEVEL_1",
        100,
        2,
    )
    assert (vnfs["vlb"]["sal"], len(vnfs["vlb"]["instances"])) == ("LEVEL_2", 3)
    for inst in cloud.get("/vim/v1/instances"):
        for port in inst["ports"]:
            body = until(lambda p=port: guest_answer(p["ip"]), 10, "guest answers")
            assert body["port"] == port["network"] and body["digest"] == inst["initialStateDigest"]
    fw = by_name(cloud, "vfw-fw-0")
    assert [p["network"] for p in fw["ports"]] == ["vnf-a", "vnf-b"]
    assert fw["ports"][0]["bond"] == fw["ports"][1]["bond"] == "bond0"
    assert fw["watchdog"]["action"] == "reset"
    assert "vfw-fw-0" in cloud.cli("hosts")


def test_a_crashed_guest_is_alarmed_and_restarted_in_place(cloud: Cloud) -> None:
    """vlb's VDUs keep the default recovery policy: a crash is restarted in place at once
    (issue 17), alarmed on its VNF until it serves again."""
    lb = by_name(cloud, "vlb-lb-0")
    assert "crash -> vlb-lb-0" in cloud.chaos("instance-crash", lb["id"])
    actions = until(
        lambda: (
            (got := {a["action"]: a for a in cloud.get(f"/vim/v1/instances/{lb['id']}/actions")})
            and {"crashed", "recover-restart"} <= set(got)
            and got
        ),
        15,
        "crashed, then restarted",
    )
    assert "SIGSEGV" in actions["crashed"]["message"], actions
    body = until(lambda: guest_answer(lb["ports"][0]["ip"]), 15, "answers again")
    assert body["incarnation"] == lb["incarnation"]  # restarted, not replaced
    again = until(lambda: (i := by_name(cloud, "vlb-lb-0"))["status"] == "ACTIVE" and i, 15)
    assert again["host"] == lb["host"]
    until(
        lambda: not cloud.get("/vimfm/v1/alarms", filter="(eq,faultType,INSTANCE_CRASHED)"),
        15,
        "the crash's alarm cleared",
    )


@pytest.mark.parametrize(("what", "name"), [("hang", "vfw-fw-0"), ("stop-watchdog", "vfw-fw-1")])
def test_a_guest_that_stops_petting_is_reset_by_its_watchdog(
    cloud: Cloud, what: str, name: str
) -> None:
    fw = by_name(cloud, name)
    before = fw["ports"][0]["ip"]
    cloud.chaos(f"instance-{what}", fw["id"])
    started = time.monotonic()
    until(
        lambda: [
            a
            for a in cloud.get(f"/vim/v1/instances/{fw['id']}/actions")
            if a["action"] == "watchdog"
        ],
        15,
        "watchdog action",
    )
    assert time.monotonic() - started < 5 + 3
    assert until(lambda: guest_answer(before), 10, "answers again")["incarnation"] == 1
    # raised, and cleared once the guest runs again (listed either way)
    watchdog = "(eq,faultType,INSTANCE_WATCHDOG_EXPIRED)"
    alarms = cloud.get("/vimfm/v1/alarms", filter=watchdog) + cloud.get(
        "/vimfm/v1/alarms", filter=watchdog + ";(eq,perceivedSeverity,CLEARED)"
    )
    assert fw["id"] in {
        a["rootCauseFaultyResource"]["faultyResource"]["resourceId"] for a in alarms
    }
    # ACTIVE again at the agent's next report after the guest answers
    until(lambda: by_name(cloud, name)["status"] == "ACTIVE", 10, "ACTIVE again")


def test_cli_and_bad_input(cloud: Cloud, tmp_path: Path) -> None:
    listed = cloud.cli("instances")
    assert "vfw-fw-0" in listed and "vnf-a=127." in listed
    assert "demo-guest" in cloud.cli("images") and "m1.tiny" in cloud.cli("flavors")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nvdus:\n  - name: a\n    flavor: nope\n    image: demo-guest\n")
    r = vimha("vnf", "create", "-f", str(bad), "--url", cloud.url, "--token", cloud.token)
    assert r.returncode == 2 and "vdus.0.flavor: flavor nope not found" in r.stderr
    assert "Traceback" not in r.stderr
    r = vimha("console", "no-such-instance", "--url", cloud.url, "--token", cloud.token)
    assert r.returncode == 1 and "404" in r.stderr


def test_a_powered_off_hosts_instances_serve_elsewhere_in_the_same_state(cloud: Cloud) -> None:
    fw = by_name(cloud, "vfw-fw-1")
    host, before = fw["host"], fw["initialStateDigest"]
    others = [i for i in cloud.get("/vim/v1/instances") if i["host"] == host]
    started = time.monotonic()
    assert "confirmed" in cloud.chaos("power-off", host)
    for inst in others:
        moved = until(
            lambda i=inst: (
                (n := by_name(cloud, i["name"]))["host"] != host and n["status"] == "ACTIVE" and n
            ),
            30,
            f"{inst['name']} recovered",
        )
        assert moved["incarnation"] == inst["incarnation"] + 1
        assert moved["ports"] == inst["ports"]
        body = until(lambda p=moved["ports"][0]["ip"]: guest_answer(p), 10, "answers")
        assert (
            body["digest"] == inst["initialStateDigest"]
            and body["incarnation"] == (moved["incarnation"])
        )
    took = time.monotonic() - started
    fw_now = by_name(cloud, "vfw-fw-1")
    assert fw_now["initialStateDigest"] == before
    assert fw_now["host"] != by_name(cloud, "vfw-fw-0")["host"]  # anti-affinity kept
    actions = cloud.get(f"/vim/v1/instances/{fw['id']}/actions")
    assert actions[-1]["action"] == "recover" and actions[-1]["result"] == "success"
    assert took < 30
    cloud.chaos("heal", host)
    until(lambda: cloud.hosts()[host]["healthStatus"] == "UP", 60, "host back")

    def instance_alarms() -> list[tuple[str, str]]:
        return [
            (a["faultType"], a["probableCause"])
            for a in cloud.get("/vimfm/v1/alarms")
            if a["faultType"].startswith("INSTANCE_")
        ]

    try:
        until(lambda: not instance_alarms(), 30, "instance alarms cleared")
    except AssertionError:
        left = instance_alarms()
        history = {
            c.split()[-1]: [
                (x["action"], x["message"])
                for x in cloud.get(f"/vim/v1/instances/{c.split()[-1]}/actions")
            ]
            for _, c in left
        }
        raise AssertionError(f"instance alarms left: {left}; their actions: {history}") from None


# -- a failed host's instances, recovered (issue 17) ---------------------------------------
def call(cloud: Cloud, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    r = httpx.request(
        method,
        cloud.url + path,
        json=body,
        headers={"Authorization": f"Bearer {cloud.token}"},
        timeout=60,
    )
    assert r.status_code < 300, r.text
    return r.json() if r.content else None


def vdu(name: str, count: int, host: str, **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "count": count,
        "flavor": "m1.tiny",
        "image": "demo-guest",
        "networks": [{"network": "vnf-b"}],
        "hints": {"host": host},
        **more,
    }


def serving(cloud: Cloud, vnf_ids: set[str], within: float) -> dict[str, dict[str, Any]]:
    """The VNFs' instances once every one is ACTIVE and its guest answers with its initial
    state (by id)."""

    def ready() -> dict[str, dict[str, Any]] | None:
        mine = {i["id"]: i for i in cloud.get("/vim/v1/instances") if i["vnfId"] in vnf_ids}
        if not mine or any(i["status"] != "ACTIVE" for i in mine.values()):
            return None
        for i in mine.values():
            body = guest_answer(i["ports"][0]["ip"])
            if body is None or body["digest"] != i["initialStateDigest"]:
                return None
            if body["incarnation"] != i["incarnation"]:
                return None
        return mine

    found: dict[str, dict[str, Any]] = until(ready, within, "the VNFs' guests serving")
    return found


def recovered(
    cloud: Cloud, before: dict[str, dict[str, Any]], gone: set[str], within: float
) -> dict[str, dict[str, Any]]:
    """`before`'s instances once each is ACTIVE on a host not in `gone`, as a new
    incarnation with the same ports, its guest answering with the same initial state."""

    def done() -> dict[str, dict[str, Any]] | None:
        now = {i["id"]: i for i in cloud.get("/vim/v1/instances") if i["id"] in before}
        for new in now.values():
            if new["host"] in gone or new["status"] != "ACTIVE":
                return None
            body = guest_answer(new["ports"][0]["ip"])
            if body is None or body["incarnation"] != new["incarnation"]:
                return None
        return now

    try:
        now: dict[str, dict[str, Any]] = until(done, within, "recovered")
    except AssertionError:
        left = [
            (i["name"], i["host"], i["status"])
            for i in cloud.get("/vim/v1/instances")
            if i["id"] in before and (i["host"] in gone or i["status"] != "ACTIVE")
        ]
        raise AssertionError(f"not recovered: {left}; logs in {cloud.keep_logs()}") from None
    for iid, old in before.items():
        new = now[iid]
        assert new["incarnation"] == old["incarnation"] + 1, (new["name"], new["incarnation"])
        assert new["ports"] == old["ports"], new["name"]
        assert new["initialStateDigest"] == old["initialStateDigest"], new["name"]
        body = guest_answer(new["ports"][0]["ip"])
        assert body is not None and body["digest"] == old["initialStateDigest"], new["name"]
    return now


def recover_started(cloud: Cloud, iid: str) -> datetime:
    """When recovery re-placed the instance (its last `recover` action)."""
    actions = cloud.get(f"/vim/v1/instances/{iid}/actions")
    return max(datetime.fromisoformat(a["startedAt"]) for a in actions if a["action"] == "recover")


def apart_group(cloud: Cloud, name: str, level: str, limit: int) -> dict[str, Any]:
    body = {"name": name, "policy": "anti-affinity", "level": level, "maxPerDomain": limit}
    group: dict[str, Any] = call(cloud, "POST", "/vim/v1/placement-groups", body)
    return group


def keeps_its_rule(cloud: Cloud, group_id: str) -> Counter[str]:
    """Members per domain of a placement group, each domain within its limit."""
    group = cloud.get(f"/vim/v1/placement-groups/{group_id}")
    per = Counter(str(m["domain"]) for m in group["members"])
    assert max(per.values()) <= group["maxPerDomain"], (group["name"], per)
    return per


def test_a_host_of_20_instances_in_anti_affinity_groups_is_recovered_by_priority(
    cloud: Cloud,
) -> None:
    """cmp-1 runs 20 instances of 3 VNFs (priorities 90, 50, 10), each VNF in a hard
    anti-affinity group that other hosts already fill in part: `hi` at most 8 per host with
    6 on cmp-3, `mid` at most 7 per host, `lo` at most 5 per rack with 5 on cmp-4 (rack r2
    full: lo's instances may only go to cmp-2). Powered off: every instance is a new
    incarnation elsewhere, answering with its initial state; each group's rule holds; the
    higher priority was re-placed first."""
    tag = uuid.uuid4().hex[:6]
    host = "cmp-1"
    hi = apart_group(cloud, f"hi-{tag}", "host", 8)
    lo = apart_group(cloud, f"lo-{tag}", "rack", 5)
    apart = [{"policy": "anti-affinity", "level": "host", "maxPerDomain": 7}]
    descriptors = [
        ("hi", 90, [vdu("a", 8, host, groups=[hi["id"]]), vdu("b", 6, "cmp-3", groups=[hi["id"]])]),
        ("mid", 50, [vdu("a", 7, host, placement=apart)]),
        ("lo", 10, [vdu("a", 5, host, groups=[lo["id"]]), vdu("b", 5, "cmp-4", groups=[lo["id"]])]),
    ]  # fmt: skip
    vnfs = {
        what: call(cloud, "POST", "/vim/v1/vnfs",
                   {"name": f"rec-{what}-{tag}", "priority": priority, "vdus": vdus})["id"]
        for what, priority, vdus in descriptors
    }  # fmt: skip
    try:
        mine = serving(cloud, set(vnfs.values()), 180)
        before = {iid: i for iid, i in mine.items() if i["host"] == host}
        assert len(before) == 20, sorted(i["name"] for i in before.values())
        assert "confirmed" in cloud.chaos("power-off", host)
        now = recovered(cloud, before, {host}, 180)

        assert keeps_its_rule(cloud, hi["id"])["s1/z1/r1/cmp-1"] == 0
        assert set(keeps_its_rule(cloud, lo["id"])) == {"s1/z1/r1", "s1/z2/r2"}
        assert {now[i]["host"] for i in before if now[i]["vnfId"] == vnfs["lo"]} == {"cmp-2"}
        [mid] = [g for g in cloud.get("/vim/v1/placement-groups") if g["vnfId"] == vnfs["mid"]]
        keeps_its_rule(cloud, mid["id"])
        started = {
            what: [recover_started(cloud, i) for i in before if now[i]["vnfId"] == vnf]
            for what, vnf in vnfs.items()
        }
        assert max(started["hi"]) <= min(started["mid"]), started
        assert max(started["mid"]) <= min(started["lo"]), started
    finally:
        for vnf in vnfs.values():
            call(cloud, "DELETE", f"/vim/v1/vnfs/{vnf}")
        cloud.chaos("heal", host)
        until(lambda: cloud.hosts()[host]["healthStatus"] == "UP", 120, "host back")
        # gone before the next test: an instance still being deleted when a later test cuts
        # its host off is not one of the instances that test recovers
        mine = set(vnfs.values())
        until(lambda: not [i for i in cloud.get("/vim/v1/instances") if i["vnfId"] in mine],
              60, "its instances deleted")  # fmt: skip


def holds(pred: Callable[[], Any], seconds: float, what: str) -> None:
    """`pred` stays true for `seconds` (a state that must not change: checked throughout)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert pred(), f"{what} changed"
        time.sleep(0.2)


def in_place(cloud: Cloud, before: dict[str, dict[str, Any]], ids: set[str], status: str) -> bool:
    """Whether the instances `ids` are where they were `before`, the same incarnation, and
    `status` now."""
    now = {i["id"]: i for i in cloud.get("/vim/v1/instances") if i["id"] in ids}
    return all(
        (now[i]["host"], now[i]["incarnation"], now[i]["status"])
        == (before[i]["host"], before[i]["incarnation"], status)
        for i in ids
    )


def unknown_alarmed(cloud: Cloud) -> set[str]:
    """The instances with an INSTANCE_STATE_UNKNOWN alarm raised."""
    found = cloud.get("/vimfm/v1/alarms", filter="(eq,faultType,INSTANCE_STATE_UNKNOWN)")
    return {a["rootCauseFaultyResource"]["faultyResource"]["resourceId"] for a in found}


def test_a_partitioned_rack_without_bmc_is_recovered_once_an_operator_confirms_it_down(
    cloud: Cloud,
) -> None:
    """Rack r2 cut off with its BMCs: nothing can be fenced, so its instances are UNKNOWN and
    alarmed, and nothing is recovered, even as its agents' reports still come (loopback
    mode). The operator pulls cmp-3's plug and confirms it down: its instances are
    recovered in r1; cmp-4's stay UNKNOWN until the rack is healed, then run on."""
    tag = uuid.uuid4().hex[:6]
    body = {"name": f"rack-{tag}", "priority": 20,
            "vdus": [vdu("a", 2, "cmp-3"), vdu("b", 2, "cmp-4")]}  # fmt: skip
    vnf = call(cloud, "POST", "/vim/v1/vnfs", body)["id"]
    rack = {"cmp-3", "cmp-4"}
    try:
        serving(cloud, {vnf}, 120)
        before = {i["id"]: i for i in cloud.get("/vim/v1/instances") if i["host"] in rack}
        on_3 = {i: v for i, v in before.items() if v["host"] == "cmp-3"}
        on_4 = set(before) - set(on_3)
        assert "BMCs silent" in cloud.chaos("partition", "r2", "--with-bmc")

        until(lambda: in_place(cloud, before, set(before), "UNKNOWN"), 60, "UNKNOWN")
        until(lambda: set(before) <= unknown_alarmed(cloud), 30, "alarmed")
        for name in rack:
            h = cloud.hosts()[name]
            assert h["healthStatus"] == "DOWN" and h["failureKind"] == "RACK_FAILURE", h
            assert h["fencing"]["state"] == "FAILED" and h["fencing"]["recoverable"] is False
        # Longer than the agents' report period (5 s): their reports, which still reach the
        # controller in loopback mode, change nothing; nothing is recovered.
        holds(
            lambda: (
                in_place(cloud, before, set(before), "UNKNOWN")
                and set(before) <= unknown_alarmed(cloud)
            ),
            8,
            "UNKNOWN, alarmed, not recovered",
        )

        assert "lost its power" in cloud.chaos("power-cut", "cmp-3")
        out = cloud.cli("hosts", "confirm-down", "cmp-3")
        assert f"confirmed off by admin; recovering {len(on_3)} instance(s)" in out
        now = recovered(cloud, on_3, rack, 120)
        assert {i["host"] for i in now.values()} <= {"cmp-1", "cmp-2"}
        [record, *_] = cloud.get("/vim/v1/hosts/cmp-3/fencing")
        assert record["result"] == "CONFIRMED" and "confirmed off by admin" in record["detail"]
        assert in_place(cloud, before, on_4, "UNKNOWN")  # not confirmed: not recovered
    finally:
        cloud.chaos("heal")
        until(lambda: all(h["healthStatus"] == "UP" for h in cloud.hosts().values()), 120)
    until(lambda: in_place(cloud, before, on_4, "ACTIVE"), 60, "cmp-4's instances running on")
    call(cloud, "DELETE", f"/vim/v1/vnfs/{vnf}")
    cloud.no_alarms(60)
