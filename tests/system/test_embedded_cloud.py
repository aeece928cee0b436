"""`vimha up` starts a controller and 8 nodes; `vimha chaos` injects real faults; the cloud
detects, alarms and recovers; `vimha down` leaves no process behind."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import cloud_port
from tests.support.consumer import ConsumerProcess
from tests.support.procs import keep_logs
from tests.system.conftest import vimha
from vimha.cloud import chaos


class Cloud:
    def __init__(self, data: Path, port: int) -> None:
        self.data = data
        self.url = f"http://127.0.0.1:{port}"
        self.token = (data / "admin-token").read_text().strip()

    def get(self, path: str, **params: str) -> Any:
        r = httpx.get(
            self.url + path,
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        r.raise_for_status()
        return r.json()

    def hosts(self) -> dict[str, dict[str, Any]]:
        return {h["id"]: h for h in self.get("/vim/v1/hosts")}

    def keep_logs(self) -> Path:
        """A copy of every log of the cloud (agents, controllers, servers), which goes with
        the cloud: for a failure that is rare (a test's message names it)."""
        return keep_logs(self.data, "vimha-cloud-logs-")

    def unsettled(self) -> str:
        """The groups that are not OK, with their members, and where the logs were kept."""
        try:
            groups = self.get("/vim/v1/service-groups")
        except httpx.HTTPError as exc:
            return f"groups unknown: {exc}; logs in {self.keep_logs()}"
        bad = {
            g["name"]: [
                (m["member"], m["role"], m["healthy"], str(m.get("detail"))[:80])
                for m in g["members"]
            ]
            for g in groups
            if g["health"] != "OK"
        }
        return f"groups not OK: {bad}; logs in {self.keep_logs()}"

    def groups_ok(self, timeout: float) -> None:
        """Every service group OK within `timeout`; else fails saying which were not."""
        deadline = time.monotonic() + timeout
        while not all(g["health"] == "OK" for g in self.get("/vim/v1/service-groups")):
            assert time.monotonic() < deadline, self.unsettled()
            time.sleep(0.2)

    def no_alarms(self, timeout: float = 30) -> None:
        """Every alarm cleared within `timeout`; else fails listing those left."""
        deadline = time.monotonic() + timeout
        while left := self.get("/vimfm/v1/alarms"):
            if time.monotonic() > deadline:
                what = [(a["managedObjectId"], a["faultType"], a["probableCause"]) for a in left]
                raise AssertionError(f"alarms left: {what}; logs in {self.keep_logs()}")
            time.sleep(0.2)

    def chaos(self, *args: str) -> str:
        r = vimha("chaos", *args, "--data-dir", str(self.data))
        assert r.returncode == 0, r.stderr
        return r.stdout

    def cli(self, *args: str) -> str:
        r = vimha(*args, "--url", self.url, "--token", self.token)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def cleared(self, obj: str) -> int:
        return len(
            self.get(
                "/vimfm/v1/alarms",
                filter=(f"(eq,managedObjectId,{obj});(eq,perceivedSeverity,CLEARED)"),
            )
        )


def until(pred: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := pred()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)
    return result


@contextmanager
def running_cloud(tmp_path: Path, *flags: str) -> Iterator[Cloud]:
    """`vimha up --detach` with these flags, once every host is UP; `vimha down` after."""
    data, port = tmp_path / "cloud", cloud_port()
    try:  # `vimha down` even when it did not answer in time: it may still be starting
        r = vimha(
            "up",
            "--detach",
            *flags,
            "--data-dir",
            str(data),
            "--port",
            str(port),
            env={"VIMHA_ADMIN_TOKEN": ""},
            timeout=150,
        )
        assert r.returncode == 0, r.stderr
        c = Cloud(data, port)
        until(lambda: all(h["healthStatus"] == "UP" for h in c.hosts().values()), 60)
        yield c
    finally:
        vimha("down", "--data-dir", str(data))


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    with running_cloud(tmp_path) as c:
        yield c


def test_chaos_in_the_embedded_cloud(cloud: Cloud, tmp_path: Path) -> None:
    hosts = cloud.hosts()
    assert sorted(hosts) == sorted(
        ["ctl-1", "ctl-2", "ctl-3", "cmp-1", "cmp-2", "cmp-3", "cmp-4", "sto-1"]
    )
    assert hosts["cmp-3"]["location"]["path"] == "s1/z2/r2/cmp-3"

    assert "SIGKILL" in cloud.chaos("kill-service", "cmp-1")
    until(lambda: cloud.cleared("cmp-1/nova-compute") == 1)  # raised, restarted, cleared

    assert "SIGSTOP" in cloud.chaos("hang-service", "sto-1")
    until(lambda: cloud.cleared("sto-1/storage-daemon") == 1)

    cloud.chaos("plane-down", "cmp-2", "storage")
    until(lambda: cloud.hosts()["cmp-2"]["healthStatus"] == "DEGRADED")
    assert cloud.hosts()["cmp-2"]["failureKind"] == "LINK_FAULT"
    cloud.chaos("heal", "cmp-2")
    until(lambda: cloud.hosts()["cmp-2"]["healthStatus"] == "UP")
    assert cloud.cleared("cmp-2/storage") == 1

    others = {k: v["healthStatus"] for k, v in cloud.hosts().items()}
    assert set(others.values()) == {"UP"}
    until(lambda: len(cloud.get("/vim/v1/services")) == 8)
    services = {(s["hostId"], s["name"]): s for s in cloud.get("/vim/v1/services")}
    assert services[("cmp-1", "nova-compute")]["kind"] == "compute"
    assert services[("cmp-1", "nova-compute")]["totalRestarts"] >= 1
    assert services[("ctl-1", "api")]["kind"] == "control"
    glance = cloud.cli("status")
    assert "hosts UP" in glance and "8:" in glance
    chaos_errors(cloud, tmp_path)  # on the same cloud: one start less in the suite


def test_failed_nodes_are_fenced_through_their_bmc(cloud: Cloud, consumer: ConsumerProcess) -> None:
    r = httpx.post(
        cloud.url + "/vimfm/v1/subscriptions",
        json={
            "callbackUri": consumer.url,
            "filter": {"notificationTypes": ["HostHealthChangeNotification"]},
        },
        headers={"Authorization": f"Bearer {cloud.token}"},
    )
    assert r.status_code == 201, r.text
    cmp3 = chaos.node(chaos.load_state(cloud.data), "cmp-3")
    assert chaos.service_pids(cmp3)

    # A dead agent: node state unknown, so it is powered off through its BMC, which stops
    # everything on it; the launcher does not restart an agent on a powered-off node.
    cloud.chaos("kill-agent", "cmp-3")
    host = until(lambda: (h := cloud.hosts()["cmp-3"])["healthStatus"] == "FENCED" and h)
    assert host["failureKind"] == "COMPUTE_NODE_FAILURE" and host["fencing"]["recoverable"]
    assert host["bmc"]["powerState"] == "Off"
    [record] = cloud.get("/vim/v1/hosts/cmp-3/fencing")
    assert record["result"] == "CONFIRMED" and record["failureKind"] == "COMPUTE_NODE_FAILURE"
    until(lambda: not chaos.service_pids(cmp3))  # the power cut stopped its service too
    time.sleep(3)  # longer than the launcher's restart delay
    assert cloud.hosts()["cmp-3"]["healthStatus"] == "FENCED"

    got = consumer.wait_for(lambda n: any(x.get("healthStatus") == "FENCED" for x in n))
    seen = [(x["hostId"], x["healthStatus"]) for x in got]
    assert seen[:2] == [("cmp-3", "DOWN"), ("cmp-3", "FENCED")], seen

    # Powered off through its BMC by an operator: host hardware failure, fenced at once.
    assert "confirmed" in cloud.chaos("power-off", "cmp-4")
    host = until(lambda: (h := cloud.hosts()["cmp-4"])["healthStatus"] == "FENCED" and h)
    assert host["failureKind"] == "HOST_HW_FAILURE"

    # A failed PSU on a running host: an EQUIPMENT alarm at the component, the host stays UP.
    cloud.chaos("psu-fail", "cmp-1")
    until(lambda: cloud.get("/vimfm/v1/alarms", filter="(eq,managedObjectId,cmp-1/PSU1)"))
    assert cloud.hosts()["cmp-1"]["healthStatus"] == "UP"

    out = cloud.chaos("heal")
    assert "cmp-3: powered on" in out and "cmp-4: powered on" in out
    until(lambda: all(h["healthStatus"] == "UP" for h in cloud.hosts().values()), 60)
    for obj in ("cmp-3", "cmp-4", "cmp-1/PSU1", "cmp-1/SEL"):
        until(lambda obj=obj: cloud.cleared(obj) >= 1)
    cloud.no_alarms()
    assert cloud.hosts()["cmp-3"]["fencing"]["state"] == "NONE"


def chaos_errors(cloud: Cloud, tmp_path: Path) -> None:
    """Bad chaos requests and a second `vimha up` on a taken port: sentences, exit codes."""
    r = vimha("chaos", "kill-agent", "nope", "--data-dir", str(cloud.data))
    assert r.returncode == 2 and "unknown node" in r.stderr and "cmp-1" in r.stderr
    r = vimha("chaos", "plane-down", "cmp-1", "wifi", "--data-dir", str(cloud.data))
    assert r.returncode == 2 and "unknown plane" in r.stderr
    r = vimha("chaos", "kill-agent", "cmp-1", "--data-dir", str(tmp_path / "none"))
    assert r.returncode == 1 and "vimha up" in r.stderr
    assert "Traceback" not in r.stderr
    port = cloud.url.rsplit(":", 1)[1]
    r = vimha("up", "--data-dir", str(tmp_path / "other"), "--port", port)
    assert r.returncode == 1 and f"port {port}, needed by the embedded cloud" in r.stderr
    assert "Traceback" not in r.stderr


def test_down_leaves_no_process(tmp_path: Path) -> None:
    data, port = tmp_path / "c2", cloud_port()
    assert vimha("up", "--detach", "--data-dir", str(data), "--port", str(port)).returncode == 0
    state = chaos.load_state(data)
    until(lambda: all(chaos.agent_pids(n) for n in state.values()), 60)
    assert vimha("down", "--data-dir", str(data)).returncode == 0
    until(lambda: not any(chaos.agent_pids(n) or chaos.service_pids(n) for n in state.values()), 20)
