"""FAULT-8's last row with real processes: the agent is alive, but its compute service failed
beyond its restart budget: the host is DOWN with COMPUTE_SERVICE_FAILURE (and is not fenced:
it answers). The services' state is visible through the API and `vimha services` (ARCH-10)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.system.conftest import TOKEN, ControllerProcess, vimha
from tests.system.test_host_health import KEYS, listening, reporting_agent, wait
from vimha.cloud.procs import AgentProcess, find_processes


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[ControllerProcess, AgentProcess, Path]]:
    flag = tmp_path / "healthy"
    flag.touch()
    ports = (free_port(), free_port())
    ctl = ControllerProcess(
        tmp_path,
        heartbeat=listening(ports),
        hosts=[{"name": "cmp-1", "key": KEYS["cmp-1"], "location": {"rack": "r1"}}],
    )
    ctl.migrate()
    ctl.start()
    check = f"import os, sys; sys.exit(0 if os.path.exists({str(flag)!r}) else 1)"
    marker = f"vimha-test-svc-{tmp_path.name}"  # the service outlives a given-up agent
    agent = reporting_agent(
        tmp_path,
        "cmp-1",
        ports,
        ctl,
        services=[
            {
                "name": "nova-compute",
                "kind": "compute",
                "command": [sys.executable, "-c", "import time; time.sleep(3600)", marker],
                "check": "command",
                "check_command": [sys.executable, "-c", check],
                "interval": 0.2,
                "timeout": 5,
                "restart": {"max_restarts": 1, "window": 60, "start_grace": 0.5},
            }
        ],
    )
    agent.start()
    try:
        yield ctl, agent, flag
    finally:
        agent.stop()
        ctl.stop()
        for pid in find_processes(marker):  # a service is the node's: it outlives its agent
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def services(ctl: ControllerProcess) -> dict[str, dict[str, Any]]:
    with ctl.client() as c:
        return {s["name"]: s for s in c.get("/vim/v1/services", params={"hostId": "cmp-1"}).json()}


def until(pred: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := pred()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)
    return result


def active(ctl: ControllerProcess, obj: str) -> set[str]:
    with ctl.client() as c:
        found = c.get("/vimfm/v1/alarms", params={"filter": f"(eq,managedObjectId,{obj})"})
    return {a["faultType"] for a in found.json()}


def test_compute_service_failed_beyond_restart(
    node: tuple[ControllerProcess, AgentProcess, Path],
) -> None:
    ctl, agent, flag = node
    wait(ctl, lambda h: h["cmp-1"]["healthStatus"] == "UP")
    svc = until(
        lambda: (
            services(ctl).get("nova-compute", {}).get("status") == "RUNNING"
            and services(ctl)["nova-compute"]
        )
    )
    assert svc["kind"] == "compute" and svc["check"] == "command" and svc["lastCheckOk"]
    shown = vimha("services", "--url", ctl.url, "--token", TOKEN)
    assert shown.returncode == 0 and "nova-compute" in shown.stdout and "RUNNING" in shown.stdout

    flag.unlink()  # the check now fails: restarted once, then given up
    host = wait(ctl, lambda h: h["cmp-1"]["healthStatus"] == "DOWN")["cmp-1"]
    assert host["failureKind"] == "COMPUTE_SERVICE_FAILURE"
    assert "nova-compute" in host["reason"]
    assert host["fencing"]["state"] == "NONE"  # it answers: nothing to fence
    svc = services(ctl)["nova-compute"]
    assert svc["status"] == "GAVE_UP" and svc["totalRestarts"] == 1
    assert "exited 1" in svc["lastFailure"]
    assert active(ctl, "cmp-1") == {"COMPUTE_SERVICE_FAILURE"}
    assert "SERVICE_GAVE_UP" in active(ctl, "cmp-1/nova-compute")
    listed = json.loads(
        vimha("services", "--json", "--host", "cmp-1", "--url", ctl.url, "--token", TOKEN).stdout
    )
    assert [(s["name"], s["status"]) for s in listed] == [("nova-compute", "GAVE_UP")]
    glance = vimha("status", "--url", ctl.url, "--token", TOKEN)
    assert glance.returncode == 0 and "hosts DOWN" in glance.stdout and "cmp-1" in glance.stdout

    # Repaired and the agent restarted (as after an operator's fix): the host is UP again.
    flag.touch()
    agent.kill()
    agent.start()
    wait(ctl, lambda h: h["cmp-1"]["healthStatus"] == "UP" and h["cmp-1"]["failureKind"] is None)
    until(lambda: services(ctl)["nova-compute"]["status"] == "RUNNING")
    until(lambda: not active(ctl, "cmp-1") and not active(ctl, "cmp-1/nova-compute"))


def test_unknown_host_and_bad_reports_are_refused(
    node: tuple[ControllerProcess, AgentProcess, Path],
) -> None:
    ctl, _, _ = node
    good = {
        "name": "x",
        "kind": "compute",
        "check": "process",
        "status": "RUNNING",
        "lastCheckOk": True,
        "restarts": 0,
        "totalRestarts": 0,
        "lastCheckAt": "2026-11-25T00:00:00Z",
    }
    with ctl.client() as c:
        r = c.put("/vim/v1/hosts/nope/services", json={"services": [good]})
        assert r.status_code == 404 and "not declared" in r.json()["detail"]
        r = c.put("/vim/v1/hosts/cmp-1/services", json={"services": [good, good]})
        assert r.status_code == 400 and "unique" in r.text
        r = c.put("/vim/v1/hosts/cmp-1/services", json={"services": [{**good, "status": "?"}]})
        assert r.status_code == 400
        assert c.get("/vim/v1/services/cmp-1/nope").status_code == 404
