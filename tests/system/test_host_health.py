"""Host health from real agent processes over UDP on two planes: an agent killed with SIGKILL
makes its host DOWN with an alarm and a HostHealthChangeNotification; its return clears both.
These hosts have no BMC: a silent one is HOST_UNREACHABLE, and it cannot be fenced, which
raises FENCING_FAILED (no recovery without fencing)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port
from tests.support.consumer import ConsumerProcess
from tests.system.conftest import TOKEN, ControllerProcess, vimha
from vimha.cloud.procs import AgentProcess

KEYS = {"cmp-1": "key-of-cmp-1-0123456789", "cmp-2": "key-of-cmp-2-0123456789"}
ADDRS = {"cmp-1": ("127.0.0.2", "127.0.0.3"), "cmp-2": ("127.0.0.4", "127.0.0.5")}


class Agent(AgentProcess):
    """One of this module's two nodes, heartbeating every 50 ms."""

    def __init__(self, base: Path, node: str, ports: tuple[int, int]) -> None:
        super().__init__(base, node, KEYS[node], ADDRS[node], ports, interval=0.05)


def listening(ports: tuple[int, int], **extra: Any) -> dict[str, Any]:
    """The controller's heartbeat settings of these tests: 50 ms, two loopback planes."""
    listen = {"mgmt": f"127.0.0.1:{ports[0]}", "storage": f"127.0.0.1:{ports[1]}"}
    return {"interval": 0.05, "listen": listen, **extra}


def reporting_agent(
    base: Path, node: str, ports: tuple[int, int], ctl: ControllerProcess, **extra: Any
) -> AgentProcess:
    """An agent of this module's nodes that reports services and hardware to `ctl`."""
    return AgentProcess(
        base,
        node,
        KEYS[node],
        ADDRS[node],
        ports,
        interval=0.05,
        controller_url=ctl.url,
        token=TOKEN,
        **extra,
    )


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[tuple[ControllerProcess, dict[str, Agent]]]:
    ports = (free_port(), free_port())
    ctl = ControllerProcess(
        tmp_path,
        heartbeat=listening(ports, misses=4, up_after=2),
        fencing={"delay": 0.2},
        hosts=[
            {"name": "cmp-1", "key": KEYS["cmp-1"], "location": {"site": "s1", "rack": "r1"}},
            {"name": "cmp-2", "key": KEYS["cmp-2"], "location": {"site": "s1", "rack": "r2"}},
        ],
    )
    ctl.migrate()
    ctl.start()
    agents = {n: Agent(tmp_path, n, ports) for n in KEYS}
    try:
        yield ctl, agents
    finally:
        for agent in agents.values():
            agent.stop()
        ctl.stop()


def wait(
    ctl: ControllerProcess, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with ctl.client() as c:
        while True:
            hosts = {h["id"]: h for h in c.get("/vim/v1/hosts").json()}
            if predicate(hosts):
                return hosts
            assert time.monotonic() < deadline, hosts
            time.sleep(0.05)


def test_killed_agent_makes_its_host_down_and_back(
    cloud: tuple[ControllerProcess, dict[str, Agent]], consumer: ConsumerProcess
) -> None:
    ctl, agents = cloud
    with ctl.client() as c:
        r = c.post(
            "/vimfm/v1/subscriptions",
            json={"callbackUri": consumer.url, "filter": {"managedObjectIds": ["cmp-1", "cmp-2"]}},
        )
        assert r.status_code == 201
    for agent in agents.values():
        agent.start()
    wait(ctl, lambda h: all(x["healthStatus"] == "UP" for x in h.values()))
    time.sleep(0.5)
    seen = len(consumer.received())

    def after(kind: str, **fields: str) -> Callable[[list[dict[str, Any]]], bool]:
        def check(received: list[dict[str, Any]]) -> bool:
            return any(
                x["notificationType"] == kind and all(x.get(k) == v for k, v in fields.items())
                for x in received[seen:]
            )

        return check

    agents["cmp-1"].kill()
    hosts = wait(ctl, lambda h: h["cmp-1"]["healthStatus"] == "DOWN")
    shown = vimha("hosts", "--url", ctl.url, "--token", TOKEN)
    assert shown.returncode == 0 and "HOST_UNREACHABLE" in shown.stdout
    listed = json.loads(vimha("hosts", "--json", "--url", ctl.url, "--token", TOKEN).stdout)
    assert {h["id"]: h["healthStatus"] for h in listed} == {"cmp-1": "DOWN", "cmp-2": "UP"}
    assert hosts["cmp-1"]["failureKind"] == "HOST_UNREACHABLE"
    assert hosts["cmp-2"]["healthStatus"] == "UP"
    hosts = wait(ctl, lambda h: h["cmp-1"]["fencing"]["state"] == "FAILED")
    assert hosts["cmp-1"]["healthStatus"] == "DOWN"  # not FENCED: nothing confirmed it
    assert hosts["cmp-1"]["fencing"]["recoverable"] is False
    assert "no BMC" in hosts["cmp-1"]["fencing"]["detail"]
    with ctl.client() as c:
        alarms = c.get("/vimfm/v1/alarms", params={"filter": "(eq,managedObjectId,cmp-1)"}).json()
        records = c.get("/vim/v1/hosts/cmp-1/fencing").json()
    by_type = {a["faultType"]: a for a in alarms}
    assert sorted(by_type) == ["FENCING_FAILED", "HOST_UNREACHABLE"]
    alarm = by_type["HOST_UNREACHABLE"]
    assert alarm["perceivedSeverity"] == "CRITICAL"
    assert alarm["location"]["rack"] == "r1"
    assert by_type["FENCING_FAILED"]["perceivedSeverity"] == "CRITICAL"
    assert any("not be recovered" in d for d in by_type["FENCING_FAILED"]["faultDetails"])
    assert [(r["result"], r["failureKind"]) for r in records] == [("FAILED", "HOST_UNREACHABLE")]
    got = consumer.wait_for(after("HostHealthChangeNotification", healthStatus="DOWN"))[seen:]
    change = next(x for x in got if x["notificationType"] == "HostHealthChangeNotification")
    assert change["hostId"] == "cmp-1" and change["previousHealthStatus"] == "UP"
    assert change["failureKind"] == "HOST_UNREACHABLE" and change["location"]["rack"] == "r1"
    agents["cmp-1"].start()
    hosts = wait(ctl, lambda h: h["cmp-1"]["healthStatus"] == "UP")
    assert hosts["cmp-1"]["fencing"]["state"] == "NONE"
    with ctl.client() as c:
        assert (
            c.get("/vimfm/v1/alarms", params={"filter": "(eq,managedObjectId,cmp-1)"}).json() == []
        )
    got = consumer.wait_for(after("AlarmClearedNotification"))[seen:]
    got = consumer.wait_for(after("HostHealthChangeNotification", healthStatus="UP"))[seen:]
    about_cmp2 = [
        x
        for x in got
        if x.get("hostId") == "cmp-2" or x.get("alarm", {}).get("managedObjectId") == "cmp-2"
    ]
    assert about_cmp2 == []  # cmp-2 never changed


def test_one_plane_down_degrades_without_failover_and_heals(
    cloud: tuple[ControllerProcess, dict[str, Agent]], consumer: ConsumerProcess
) -> None:
    """ARCH-8 in loopback mode: the agent's drop rule silences its storage plane."""
    ctl, agents = cloud
    with ctl.client() as c:
        assert (
            c.post("/vimfm/v1/subscriptions", json={"callbackUri": consumer.url}).status_code == 201
        )
    for agent in agents.values():
        agent.start()
    wait(ctl, lambda h: all(x["healthStatus"] == "UP" for x in h.values()))
    drop = agents["cmp-1"].control / "drop-storage"
    drop.touch()
    hosts = wait(ctl, lambda h: h["cmp-1"]["healthStatus"] == "DEGRADED")
    assert hosts["cmp-1"]["failureKind"] == "LINK_FAULT"
    assert hosts["cmp-1"]["planes"]["storage"]["status"] == "DOWN"
    assert hosts["cmp-1"]["planes"]["mgmt"]["status"] == "UP"
    time.sleep(1.0)  # stays DEGRADED: one plane is never a node failure
    hosts = wait(ctl, lambda h: True)
    assert hosts["cmp-1"]["healthStatus"] == "DEGRADED"
    with ctl.client() as c:
        active = c.get("/vimfm/v1/alarms").json()
    assert [(a["managedObjectId"], a["faultType"], a["perceivedSeverity"]) for a in active] == [
        ("cmp-1/storage", "NETWORK_PLANE_DOWN", "MAJOR")
    ]
    drop.unlink()
    wait(ctl, lambda h: h["cmp-1"]["healthStatus"] == "UP")
    got = consumer.wait_for(
        lambda n: any(x["notificationType"] == "AlarmClearedNotification" for x in n)
    )
    kinds = [x["notificationType"] for x in got]
    assert "AlarmNotification" in kinds and "AlarmClearedNotification" in kinds
    assert not any(
        x.get("alarm", {}).get("faultType") in ("HOST_UNREACHABLE", "COMPUTE_NODE_FAILURE")
        for x in got
    )


def test_agent_config_errors_are_sentences(tmp_path: Path) -> None:
    bad = tmp_path / "agent.yaml"
    bad.write_text(yaml.safe_dump({"node": "x", "key": "short", "planes": []}))
    r = vimha("agent", "--config", str(bad))
    assert r.returncode == 2 and "key" in r.stderr and "Traceback" not in r.stderr
    r = vimha("agent", "--config", str(tmp_path / "none.yaml"))
    assert r.returncode == 2 and "not found" in r.stderr


def test_a_run_dir_too_deep_for_a_servers_socket_is_refused_at_load(tmp_path: Path) -> None:
    """A UNIX socket's path holds 107 bytes: PostgreSQL and MariaDB refuse to start on a
    longer one, member after member, the group never up. Said once, at load."""
    deep = "/var/lib/" + "/".join(["vimha-cloud-members"] * 4)
    config: dict[str, Any] = {
        "node": "ctl-1",
        "key": "k" * 16,
        "planes": [{"name": "mgmt", "local": "127.0.0.1", "controller": "127.0.0.1:9"}],
        "coordination_url": f"local:///{tmp_path}/coord.db",
        "run_dir": deep,
        "groups": [
            {
                "name": "db",
                "policy": "active-standby",
                "members": ["ctl-1"],
                "address": "127.0.0.1:5432",
                "handler": {"type": "postgresql", "port": 5432},
            }
        ],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    r = vimha("agent", "--config", str(path))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "group db" in r.stderr and ".s.PGSQL.5432" in r.stderr and "run_dir" in r.stderr
    config["groups"][0]["handler"] = {"type": "mariadb", "port": 3306}
    path.write_text(yaml.safe_dump(config))
    r = vimha("agent", "--config", str(path))
    assert r.returncode == 2 and "mysqld.sock" in r.stderr and "data_dir" in r.stderr, r.stderr
    r = vimha("check-config", "--agent", str(path))  # which says it too
    assert r.returncode != 0 and "mysqld.sock" in r.stdout + r.stderr, r.stdout + r.stderr
    config["run_dir"] = str(tmp_path / "run")  # short enough: the same config loads
    path.write_text(yaml.safe_dump(config))
    r = vimha("check-config", "--agent", str(path))
    assert "socket" not in r.stdout + r.stderr, r.stdout + r.stderr
