"""FAULT-8 with real processes: an agent's silence is classified with what the host's BMC
(a simulated Redfish BMC, read through sushy) says at that moment; and a silent host is
fenced through that BMC, with no fencing (and no recovery) while the BMC cannot confirm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.system.conftest import ControllerProcess
from tests.system.test_embedded_cloud import until
from tests.system.test_host_health import KEYS, Agent, listening, wait
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


def controller(
    tmp_path: Path, bmc: str, fencing: dict[str, Any]
) -> tuple[ControllerProcess, Agent]:
    ports = (free_port(), free_port())
    ctl = ControllerProcess(
        tmp_path,
        heartbeat=listening(ports, misses=4, up_after=2),
        hosts=[
            {
                "name": "cmp-1",
                "key": KEYS["cmp-1"],
                "location": {"rack": "r1"},
                "bmc": {"url": bmc, "user": "admin", "password": "pw", "interval": 0.5},
            }
        ],
        fencing=fencing,
    )
    ctl.migrate()
    ctl.start()
    return ctl, Agent(tmp_path, "cmp-1", ports)


@pytest.fixture
def setup(tmp_path: Path, bmc_port: int) -> Iterator[tuple[ControllerProcess, Agent, str]]:
    bmc = f"http://127.0.0.1:{bmc_port}"
    # Classification alone: fencing would power the simulated host off between cycles.
    ctl, agent = controller(tmp_path, bmc, {"enabled": False})
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


def test_fencing_waits_for_a_confirmed_power_off(tmp_path: Path) -> None:
    port = free_port()
    bmc = f"http://127.0.0.1:{port}"
    bmc_proc = spawn_module("vimha.cloud.bmc_sim", port, "--user", "admin", "--password", "pw")
    ctl, agent = controller(tmp_path, bmc, {"delay": 0.2, "retry": 1.0, "confirm_within": 2})
    try:
        agent.start()
        wait(ctl, lambda h: h["cmp-1"]["healthStatus"] == "UP")
        bmc_proc.kill()  # the BMC is gone, then the host goes silent: state unknown
        bmc_proc.wait(10)
        agent.kill()
        host = wait(ctl, lambda h: h["cmp-1"]["fencing"]["state"] == "FAILED")["cmp-1"]
        assert host["healthStatus"] == "DOWN" and host["failureKind"] == "HOST_UNREACHABLE"
        assert host["fencing"]["recoverable"] is False
        assert "ForceOff failed" in host["fencing"]["detail"]
        with ctl.client() as c:  # the alarm follows the fencing record by a moment

            def raised() -> set[str]:
                filt = {"filter": "(eq,managedObjectId,cmp-1)"}
                return {a["faultType"] for a in c.get("/vimfm/v1/alarms", params=filt).json()}

            until(lambda: raised() == {"HOST_UNREACHABLE", "FENCING_FAILED"}, 10)

        bmc_proc = spawn_module("vimha.cloud.bmc_sim", port, "--user", "admin", "--password", "pw")
        host = wait(ctl, lambda h: h["cmp-1"]["healthStatus"] == "FENCED")["cmp-1"]
        assert host["fencing"]["state"] == "CONFIRMED" and host["fencing"]["recoverable"]
        assert host["fencing"]["attempts"] >= 2
        # the BMC reading shown beside it is the latest poll's (`readMsAgo`): Off by the next
        wait(ctl, lambda h: h["cmp-1"]["bmc"]["powerState"] == "Off")
        with ctl.client() as c:
            records = c.get("/vim/v1/hosts/cmp-1/fencing").json()
            alarms = c.get(
                "/vimfm/v1/alarms",
                params={"filter": "(eq,managedObjectId,cmp-1);(neq,perceivedSeverity,NONE)"},
            ).json()
        assert records[0]["result"] == "CONFIRMED" and records[-1]["result"] == "FAILED"
        assert "power off confirmed" in records[0]["detail"]
        state = {a["faultType"]: a["perceivedSeverity"] for a in alarms}
        assert state["FENCING_FAILED"] == "CLEARED"
        # The failure stays raised until the host is back. With its BMC answering again, the
        # host may have been re-classified (BMC reachable, power on) before it was fenced.
        assert host["failureKind"] in ("HOST_UNREACHABLE", "COMPUTE_NODE_FAILURE")
        assert state[host["failureKind"]] == "CRITICAL"
        r = httpx.get(f"{bmc}/redfish/v1/Systems/1", auth=("admin", "pw"))
        assert r.json()["PowerState"] == "Off"

        # The controller restarts: the host is still fenced (read back from the store).
        ctl.stop()
        ctl.start()
        host = wait(ctl, lambda h: h["cmp-1"]["healthStatus"] == "FENCED")["cmp-1"]
        assert host["fencing"]["state"] == "CONFIRMED"

        # Powered on and answering again: no longer fenced, alarms cleared.
        agent.start()
        host = wait(ctl, lambda h: h["cmp-1"]["healthStatus"] == "UP")["cmp-1"]
        assert host["fencing"]["state"] == "NONE"
        with ctl.client() as c:
            assert (
                c.get("/vimfm/v1/alarms", params={"filter": "(eq,managedObjectId,cmp-1)"}).json()
                == []
            )
    finally:
        agent.stop()
        ctl.stop()
        bmc_proc.kill()
        bmc_proc.wait(10)
