"""FAULT-8 with real processes: an agent's silence is classified with what the host's BMC
(a simulated Redfish BMC, read through sushy) says at that moment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.system.conftest import ControllerProcess
from tests.system.test_host_health import KEYS, Agent, wait
from vimha.cloud.procs import spawn_module


@pytest.fixture
def bmc_port() -> Iterator[int]:
    port = free_port()
    proc = spawn_module("vimha.cloud.bmc_sim", port, "--user", "admin", "--password", "pw")
    try:
        yield port
    finally:
        proc.kill()
        proc.wait(10)


@pytest.fixture
def setup(tmp_path: Path, bmc_port: int) -> Iterator[tuple[ControllerProcess, Agent, str]]:
    ports = (free_port(), free_port())
    bmc = f"http://127.0.0.1:{bmc_port}"
    ctl = ControllerProcess(
        tmp_path,
        heartbeat={
            "interval": 0.05,
            "misses": 4,
            "up_after": 2,
            "listen": {"mgmt": f"127.0.0.1:{ports[0]}", "storage": f"127.0.0.1:{ports[1]}"},
        },
        hosts=[
            {
                "name": "cmp-1",
                "key": KEYS["cmp-1"],
                "location": {"rack": "r1"},
                "bmc": {"url": bmc, "user": "admin", "password": "pw", "interval": 0.5},
            }
        ],
    )
    ctl.migrate()
    ctl.start()
    agent = Agent(tmp_path, "cmp-1", ports)
    try:
        yield ctl, agent, bmc
    finally:
        agent.stop()
        ctl.stop()


def cycle(ctl: ControllerProcess, agent: Agent) -> dict[str, object]:
    agent.start()
    wait(ctl, lambda h: h["cmp-1"]["healthStatus"] == "UP")
    agent.kill()
    return wait(ctl, lambda h: h["cmp-1"]["healthStatus"] == "DOWN")["cmp-1"]


def test_software_failure_vs_hardware_failure(setup: tuple[ControllerProcess, Agent, str]) -> None:
    ctl, agent, bmc = setup
    host = cycle(ctl, agent)  # BMC answers, power on, hardware healthy
    assert host["failureKind"] == "COMPUTE_NODE_FAILURE", host

    httpx.post(f"{bmc}/sim/psu-fail").raise_for_status()
    host = cycle(ctl, agent)
    assert host["failureKind"] == "HOST_HW_FAILURE" and "PSU1" in str(host["reason"]), host
    httpx.post(f"{bmc}/sim/heal").raise_for_status()

    agent.start()
    wait(ctl, lambda h: h["cmp-1"]["healthStatus"] == "UP")
    httpx.post(
        f"{bmc}/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
        json={"ResetType": "ForceOff"},
        auth=("admin", "pw"),
    ).raise_for_status()
    agent.kill()  # the simulated host lost power: its processes stop
    host = wait(ctl, lambda h: h["cmp-1"]["healthStatus"] == "DOWN")["cmp-1"]
    assert host["failureKind"] == "HOST_HW_FAILURE" and "power off" in str(host["reason"])
    with ctl.client() as c:
        kinds = [
            a["faultType"]
            for a in c.get(
                "/vimfm/v1/alarms",
                params={"filter": "(eq,managedObjectId,cmp-1);(neq,perceivedSeverity,NONE)"},
            ).json()
        ]
    # A host down while its BMC's news changes is re-classified (the PSU failed, then was
    # healed, while the agent was dead); a reachable BMC never leaves the cause unknown.
    assert "COMPUTE_NODE_FAILURE" in kinds and "HOST_HW_FAILURE" in kinds
    assert "HOST_UNREACHABLE" not in kinds
