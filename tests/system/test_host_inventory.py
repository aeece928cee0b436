"""Hosts declared through the API (ARCH-10): watched at once by a running controller, kept in
its database across a restart, changed with a merge patch, and removed with what was raised
for them cleared. Hosts of the config file are read-only here."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port
from tests.system.conftest import TOKEN, ControllerProcess
from tests.system.test_host_health import KEYS, Agent, listening, reporting_agent, wait
from vimha.cloud.procs import find_processes

READER = "reader-token-0123456789"
NEW = {
    "name": "cmp-2",
    "roles": ["compute"],
    "location": {"site": "s1", "rack": "r2"},
    "key": KEYS["cmp-2"],
    "capacities": {"vcpus": 32, "ram_mib": 131072, "disk_gib": 800},
}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[ControllerProcess, Agent]]:
    ports = (free_port(), free_port())
    ctl = ControllerProcess(
        tmp_path,
        heartbeat=listening(ports),
        fencing={"delay": 0.2},
        auth={
            "tokens": [
                {"name": "admin", "token": TOKEN, "role": "admin"},
                {"name": "ro", "token": READER, "role": "reader"},
            ]
        },
        hosts=[{"name": "cmp-1", "key": KEYS["cmp-1"], "location": {"rack": "r1"}}],
    )
    ctl.migrate()
    ctl.start()
    agent = Agent(tmp_path, "cmp-2", ports)
    try:
        yield ctl, agent
    finally:
        agent.stop()
        ctl.stop()


def alarms(ctl: ControllerProcess, obj: str) -> list[dict[str, Any]]:
    with ctl.client() as c:
        found: list[dict[str, Any]] = c.get(
            "/vimfm/v1/alarms", params={"filter": f"(eq,managedObjectId,{obj})"}
        ).json()
    return found


def test_declare_watch_change_persist_delete(setup: tuple[ControllerProcess, Agent]) -> None:
    ctl, agent = setup
    with ctl.client() as c:
        r = c.post("/vim/v1/hosts", json=NEW)
        assert r.status_code == 201, r.text
        assert r.headers["Location"].endswith("/vim/v1/hosts/cmp-2")
        body = r.json()
        assert body["source"] == "api" and body["healthStatus"] == "UNKNOWN"
        assert body["capacities"] == {"vcpus": 32, "ramMiB": 131072, "diskGiB": 800}
        assert "key" not in body and KEYS["cmp-2"] not in r.text
    agent.start()
    hosts = wait(ctl, lambda h: h["cmp-2"]["healthStatus"] == "UP")
    assert hosts["cmp-1"]["source"] == "config"
    assert hosts["cmp-2"]["location"]["path"] == "s1/r2/cmp-2"

    with ctl.client() as c:
        r = c.patch("/vim/v1/hosts/cmp-2", json={"location": {"rack": "r3"}, "capacities": None})
        assert r.status_code == 200, r.text
        assert r.json()["location"]["path"] == "s1/r3/cmp-2" and r.json()["capacities"] is None
    assert wait(ctl, lambda h: True)["cmp-2"]["healthStatus"] == "UP"  # kept watching

    # Kept in the database: the restarted controller watches it again.
    ctl.stop()
    ctl.start()
    hosts = wait(ctl, lambda h: h.get("cmp-2", {}).get("healthStatus") == "UP")
    assert hosts["cmp-2"]["location"]["rack"] == "r3"

    # Its failure raises alarms; deleting it clears them.
    agent.kill()
    wait(ctl, lambda h: h["cmp-2"]["fencing"]["state"] == "FAILED")  # no BMC
    assert {a["faultType"] for a in alarms(ctl, "cmp-2")} == {"HOST_UNREACHABLE", "FENCING_FAILED"}
    with ctl.client() as c:  # what its agent raised on its parts goes too
        r = c.post(
            "/vim/v1/events",
            json={
                "managedObjectId": "cmp-2/ovs",
                "faultType": "SERVICE_FAILED",
                "probableCause": "service failed its health check",
                "perceivedSeverity": "MAJOR",
                "eventType": "PROCESSING_ERROR_ALARM",
            },
        )
        assert r.status_code < 300, r.text
    assert [a["faultType"] for a in alarms(ctl, "cmp-2/ovs")] == ["SERVICE_FAILED"]
    with ctl.client() as c:
        assert c.delete("/vim/v1/hosts/cmp-2").status_code == 204
        assert c.get("/vim/v1/hosts/cmp-2").status_code == 404
        assert [h["id"] for h in c.get("/vim/v1/hosts").json()] == ["cmp-1"]
    assert alarms(ctl, "cmp-2") == [] and alarms(ctl, "cmp-2/ovs") == []
    ctl.stop()
    ctl.start()
    with ctl.client() as c:
        assert c.get("/vim/v1/hosts/cmp-2").status_code == 404  # gone for good


def test_bad_declarations_are_refused(setup: tuple[ControllerProcess, Agent]) -> None:
    ctl, _ = setup
    with ctl.client() as c:
        for body, words in (
            ({**NEW, "key": "short"}, "key"),
            ({**NEW, "planes": ["wifi"]}, "not listened on"),
            ({**NEW, "location": {"galaxy": "x"}}, "unknown level"),
            ({**NEW, "name": "a/b"}, "name"),
            ({**NEW, "capacities": {"vcpus": 0, "ram_mib": 1}}, "vcpus"),
            ({**NEW, "colour": "blue"}, "colour"),
            ([NEW], "object"),
        ):
            r = c.post("/vim/v1/hosts", json=body)
            assert r.status_code == 400, (body, r.text)
            assert words in r.json()["detail"], r.json()
        r = c.post("/vim/v1/hosts", content=b"{", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "not JSON" in r.json()["detail"]
        r = c.post("/vim/v1/hosts", json={**NEW, "name": "cmp-1"})
        assert r.status_code == 409
        assert c.post("/vim/v1/hosts", json=NEW).status_code == 201
        assert c.post("/vim/v1/hosts", json=NEW).status_code == 409
        r = c.patch("/vim/v1/hosts/cmp-1", json={"roles": ["storage"]})
        assert r.status_code == 409 and "config file" in r.json()["detail"]
        assert c.delete("/vim/v1/hosts/cmp-1").status_code == 409
        assert c.delete("/vim/v1/hosts/nope").status_code == 404
        r = c.patch("/vim/v1/hosts/cmp-2", json={"name": "cmp-3"})
        assert r.status_code == 400 and "name cannot change" in r.json()["detail"]
        r = c.patch("/vim/v1/hosts/cmp-2", json={"roles": ["wizard"]})
        assert r.status_code == 400
        assert c.get("/vim/v1/hosts/cmp-2").json()["roles"] == ["compute"]  # unchanged
    with ctl.client() as c:
        r = c.delete("/vim/v1/hosts/cmp-2", headers={"Authorization": f"Bearer {READER}"})
        assert r.status_code == 403  # changing the inventory takes the admin role


def test_services_declared_through_the_api_are_supervised(
    setup: tuple[ControllerProcess, Agent], tmp_path: Path
) -> None:
    ctl, _ = setup
    marker = f"vimha-test-svc-{tmp_path.name}"
    with ctl.client() as c:
        assert c.post("/vim/v1/hosts", json=NEW).status_code == 201
    (tmp_path / "svc").mkdir()
    agent = reporting_agent(tmp_path / "svc", "cmp-2", ctl_ports(ctl), ctl, sync_interval=0.3)
    agent.start()
    try:
        wait(ctl, lambda h: h["cmp-2"]["healthStatus"] == "UP")
        body = {
            "hostId": "cmp-2",
            "name": "ovs",
            "kind": "compute",
            "command": [sys.executable, "-c", "import time; time.sleep(3600)", marker],
            "interval": 0.1,
        }
        with ctl.client() as c:
            r = c.post("/vim/v1/services", json=body)
            assert r.status_code == 201, r.text
            assert r.json()["status"] in ("DECLARED", "STARTING", "RUNNING")
            assert c.post("/vim/v1/services", json=body).status_code == 409
            r = c.post("/vim/v1/services", json={**body, "hostId": "nope", "name": "x"})
            assert r.status_code == 404
            r = c.post("/vim/v1/services", json={**body, "check": "tcp"})
            assert r.status_code == 400 and "target" in r.json()["detail"]
        running = until(lambda: service(ctl, "ovs").get("status") == "RUNNING")
        assert running and service(ctl, "ovs")["source"] == "api"
        first = until(lambda: find_processes(marker))
        with ctl.client() as c:
            r = c.patch("/vim/v1/services/cmp-2/ovs", json={"kind": "network"})
            assert r.status_code == 200, r.text
        # A changed declaration restarts the service under the new one.
        until(lambda: (p := find_processes(marker)) and p != first)
        until(lambda: service(ctl, "ovs").get("kind") == "network")
        with ctl.client() as c:
            assert c.delete("/vim/v1/services/cmp-2/ovs").status_code == 204
            assert c.delete("/vim/v1/services/cmp-2/ovs").status_code == 404
        until(lambda: not find_processes(marker))
        until(lambda: service(ctl, "ovs") == {})
    finally:
        agent.stop()


def ctl_ports(ctl: ControllerProcess) -> tuple[int, int]:
    listen = yaml.safe_load(ctl.config.read_text())["heartbeat"]["listen"]
    return int(listen["mgmt"].rsplit(":", 1)[1]), int(listen["storage"].rsplit(":", 1)[1])


def service(ctl: ControllerProcess, name: str) -> dict[str, Any]:
    with ctl.client() as c:
        for s in c.get("/vim/v1/services", params={"hostId": "cmp-2"}).json():
            if s["name"] == name:
                found: dict[str, Any] = s
                return found
    return {}


def until(pred: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := pred()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)
    return result
