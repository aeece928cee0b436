"""The sushy-based Redfish driver against the simulated BMC, run as a real process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import free_port
from vimha.cloud.procs import spawn_module
from vimha.domain.classification import HardwareHealth
from vimha.drivers.redfish import BmcUnreachable, RedfishBmc


@pytest.fixture
def bmc_url() -> Iterator[str]:
    port = free_port()
    proc = spawn_module("vimha.cloud.bmc_sim", port, "--user", "admin", "--password", "pw")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(10)


def test_reads_power_health_and_components(bmc_url: str) -> None:
    reading = RedfishBmc(bmc_url, "admin", "pw").read()
    assert reading.power_on is True and reading.health is HardwareHealth.OK
    kinds = {(c.kind, c.name) for c in reading.components}
    assert kinds == {("temperature", "CPU1 Temp"), ("fan", "Fan1"), ("psu", "PSU1")}
    assert reading.failing() == ()


@pytest.mark.parametrize(("fault", "component"), [("psu-fail", "PSU1"), ("overheat", "CPU1 Temp")])
def test_hardware_faults_show_as_critical_with_the_component(
    bmc_url: str, fault: str, component: str
) -> None:
    httpx.post(f"{bmc_url}/sim/{fault}").raise_for_status()
    view = RedfishBmc(bmc_url, "admin", "pw").read().view()
    assert view.health is HardwareHealth.CRITICAL and component in view.detail
    httpx.post(f"{bmc_url}/sim/heal").raise_for_status()
    assert RedfishBmc(bmc_url, "admin", "pw").read().health is HardwareHealth.OK


def test_fencing_is_confirmed_by_reading_back(bmc_url: str) -> None:
    bmc = RedfishBmc(bmc_url, "admin", "pw")
    assert bmc.force_off(confirm_within=5) is True
    assert bmc.read().power_on is False
    bmc.power_on()
    assert bmc.read().power_on is True


def test_reads_the_event_log(bmc_url: str) -> None:
    bmc = RedfishBmc(bmc_url, "admin", "pw")
    assert bmc.read_log() == []
    httpx.post(f"{bmc_url}/sim/psu-fail").raise_for_status()
    assert bmc.force_off(confirm_within=5)
    entries = bmc.read_log()
    assert [e.id for e in entries] == [1, 2]
    assert entries[0].severity is HardwareHealth.CRITICAL and "PSU1" in entries[0].message
    assert entries[0].sensor == "Power Supply" and entries[0].created.startswith("20")
    assert entries[1].severity is HardwareHealth.OK and "power off" in entries[1].message


def test_errors_become_bmc_unreachable(bmc_url: str) -> None:
    with pytest.raises(BmcUnreachable, match="AccessError"):
        RedfishBmc(bmc_url, "admin", "wrong").read()
    with pytest.raises(BmcUnreachable):
        RedfishBmc(f"http://127.0.0.1:{free_port()}", "a", "b", timeout=1).read()
    dead = RedfishBmc(f"http://127.0.0.1:{free_port()}", "a", "b", timeout=0.5)
    with pytest.raises(BmcUnreachable):  # no fencing without a BMC: nothing gets recovered
        dead.force_off(confirm_within=0.5)


@pytest.fixture
def sushy_tools_url() -> Iterator[str]:
    """sushy-tools' Redfish emulator with its fake driver: a second, independent BMC, so
    the driver is not shaped only by our own simulator."""
    import shutil

    from tests.conftest import require_system

    emulator = shutil.which("sushy-emulator") or str(
        __import__("pathlib").Path(sys.executable).parent / "sushy-emulator"
    )
    require_system(__import__("os").path.exists(emulator), "sushy-tools (pip: sushy-tools)")
    port = free_port()
    proc = subprocess.Popen(
        [emulator, "--fake", "-i", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/redfish/v1/Systems").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "sushy-emulator did not start"
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(10)


def test_driver_against_sushy_tools_emulator(sushy_tools_url: str) -> None:
    bmc = RedfishBmc(sushy_tools_url, "", "")
    reading = bmc.read()
    assert reading.power_on in (True, False) and reading.health is HardwareHealth.OK
    assert bmc.system_path.startswith("/redfish/v1/Systems/")
    bmc.power_on()
    deadline = time.monotonic() + 20  # the fake driver applies power changes in 1-11 s
    while bmc.read().power_on is not True:
        assert time.monotonic() < deadline, "never powered on"
        time.sleep(0.2)
    assert bmc.force_off(confirm_within=20) is True
    assert bmc.read().power_on is False
    assert isinstance(bmc.read_log(), list)  # its log services, if any, parse
