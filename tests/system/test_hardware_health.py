"""FAULT-1 with real processes: a host's BMC (the simulated Redfish BMC, read through sushy by
the controller) and the node's local sensors (sysfs hwmon and EDAC, read by the agent) turn
failing components into ENVIRONMENTAL and EQUIPMENT alarms located at the component, and
clear them when the component is healthy again."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.contract.test_sysfs_hw import BOND
from tests.system.conftest import ControllerProcess
from tests.system.test_host_health import KEYS, listening, reporting_agent, wait
from vimha.cloud.procs import spawn_module


class Node:
    def __init__(self, ctl: ControllerProcess, bmc: str, sysfs: Path) -> None:
        self.ctl, self.bmc, self.sysfs = ctl, bmc, sysfs

    def alarms(self, obj: str) -> list[dict[str, Any]]:
        with self.ctl.client() as c:
            r = c.get(
                "/vimfm/v1/alarms",
                params={"filter": f"(eq,managedObjectId,{obj});(neq,perceivedSeverity,NONE)"},
            )
            r.raise_for_status()
            found: list[dict[str, Any]] = r.json()
            return found

    def until(self, obj: str, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while True:
            for alarm in self.alarms(obj):
                if pred(alarm):
                    return alarm
            assert time.monotonic() < deadline, self.alarms(obj)
            time.sleep(0.1)


def write(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    sysfs = tmp_path / "sys"
    chip = sysfs / "class" / "hwmon" / "hwmon0"
    write(chip / "name", "coretemp")
    write(chip / "temp1_label", "Core 0")
    write(chip / "temp1_input", 50000)
    write(chip / "temp1_max", 80000)
    write(chip / "temp1_crit", 90000)
    mc = sysfs / "devices" / "system" / "edac" / "mc" / "mc0"
    write(mc / "ue_count", 0)
    write(mc / "ce_count", 0)
    proc = tmp_path / "proc"
    write(proc / "net" / "bonding" / "bond0", BOND.replace("down", "up"))

    bmc_port = free_port()
    bmc_proc = spawn_module("vimha.cloud.bmc_sim", bmc_port, "--user", "admin", "--password", "pw")
    bmc = f"http://127.0.0.1:{bmc_port}"
    ports = (free_port(), free_port())
    ctl = ControllerProcess(
        tmp_path,
        heartbeat=listening(ports),
        hosts=[
            {
                "name": "cmp-1",
                "key": KEYS["cmp-1"],
                "location": {"site": "s1", "rack": "r1"},
                "bmc": {
                    "url": bmc,
                    "user": "admin",
                    "password": "pw",
                    "interval": 0.3,
                    "log_interval": 0.3,
                },
            }
        ],
    )
    ctl.migrate()
    ctl.start()
    agent = reporting_agent(
        tmp_path,
        "cmp-1",
        ports,
        ctl,
        hardware={
            "sysfs": str(sysfs),
            "procfs": str(proc),
            "interval": 0.2,
            "ce_threshold": 10,
        },
    )
    agent.start()
    try:
        wait(ctl, lambda h: h["cmp-1"]["healthStatus"] == "UP")
        yield Node(ctl, bmc, sysfs)
    finally:
        agent.stop()
        ctl.stop()
        bmc_proc.kill()
        bmc_proc.wait(10)


def test_bmc_components_raise_and_clear_alarms(node: Node) -> None:
    time.sleep(1.0)  # the event log's baseline is read
    httpx.post(f"{node.bmc}/sim/psu-fail").raise_for_status()
    psu = node.until("cmp-1/PSU1", lambda a: a["perceivedSeverity"] == "CRITICAL")
    sel = node.until("cmp-1/SEL", lambda a: a["perceivedSeverity"] == "CRITICAL")
    assert sel["faultType"] == "BMC_LOG_EVENT" and sel["eventType"] == "EQUIPMENT_ALARM"
    assert any("PSU1 failed" in d for d in sel["faultDetails"])
    assert psu["faultType"] == "POWER_SUPPLY_FAILURE"
    assert psu["eventType"] == "EQUIPMENT_ALARM"
    assert psu["location"]["path"] == "s1/r1/cmp-1/PSU1"
    assert psu["location"]["component"] == "PSU1"

    httpx.post(f"{node.bmc}/sim/overheat").raise_for_status()
    temp = node.until("cmp-1/CPU1 Temp", lambda a: a["perceivedSeverity"] == "CRITICAL")
    assert temp["eventType"] == "ENVIRONMENTAL_ALARM"
    assert temp["faultType"] == "TEMPERATURE_ABNORMAL"
    assert any("reading 95" in d for d in temp["faultDetails"])

    # The host keeps heartbeating: a sick component is not a host failure.
    assert wait(node.ctl, lambda h: True)["cmp-1"]["healthStatus"] == "UP"

    httpx.post(f"{node.bmc}/sim/heal").raise_for_status()
    node.until("cmp-1/PSU1", lambda a: a["perceivedSeverity"] == "CLEARED")
    node.until("cmp-1/CPU1 Temp", lambda a: a["perceivedSeverity"] == "CLEARED")
    node.until("cmp-1/SEL", lambda a: a["perceivedSeverity"] == "CLEARED")


def test_local_sensors_raise_and_clear_alarms(node: Node) -> None:
    chip = node.sysfs / "class" / "hwmon" / "hwmon0"
    write(chip / "temp1_input", 85000)
    warm = node.until("cmp-1/coretemp Core 0", lambda a: a["perceivedSeverity"] == "MINOR")
    assert warm["eventType"] == "ENVIRONMENTAL_ALARM"
    assert warm["location"]["path"] == "s1/r1/cmp-1"  # the agent's event, placed by inventory
    write(chip / "temp1_input", 95000)
    node.until("cmp-1/coretemp Core 0", lambda a: a["perceivedSeverity"] == "CRITICAL")

    mc = node.sysfs / "devices" / "system" / "edac" / "mc" / "mc0"
    write(mc / "ue_count", 1)
    memory = node.until("cmp-1/memory mc0", lambda a: a["perceivedSeverity"] == "CRITICAL")
    assert memory["faultType"] == "MEMORY_ERRORS" and memory["eventType"] == "EQUIPMENT_ALARM"

    bond = node.sysfs.parent / "proc" / "net" / "bonding" / "bond0"
    write(bond, BOND)  # eth1 down
    member = node.until("cmp-1/bond0/eth1", lambda a: a["perceivedSeverity"] == "MAJOR")
    assert member["eventType"] == "COMMUNICATIONS_ALARM"
    assert member["faultType"] == "BOND_MEMBER_DOWN"

    write(chip / "temp1_input", 50000)
    write(mc / "ue_count", 0)
    write(bond, BOND.replace("down", "up"))
    node.until("cmp-1/coretemp Core 0", lambda a: a["perceivedSeverity"] == "CLEARED")
    node.until("cmp-1/memory mc0", lambda a: a["perceivedSeverity"] == "CLEARED")
    node.until("cmp-1/bond0/eth1", lambda a: a["perceivedSeverity"] == "CLEARED")
