"""The sysfs hardware driver reads the kernel's hwmon and EDAC layout (a copy of it in a temp
dir: this machine, like most VMs, has neither)."""

from __future__ import annotations

from pathlib import Path

from vimha.domain.classification import HardwareHealth
from vimha.drivers.bonding import read_bonds
from vimha.drivers.sysfs_hw import read_edac, read_hwmon, read_local


def put(root: Path, rel: str, value: object) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


def test_hwmon_temperatures_and_fans_against_their_thresholds(tmp_path: Path) -> None:
    put(tmp_path, "class/hwmon/hwmon0/name", "coretemp")
    put(tmp_path, "class/hwmon/hwmon0/temp1_label", "Package id 0")
    put(tmp_path, "class/hwmon/hwmon0/temp1_input", 81000)
    put(tmp_path, "class/hwmon/hwmon0/temp1_max", 80000)
    put(tmp_path, "class/hwmon/hwmon0/temp1_crit", 100000)
    put(tmp_path, "class/hwmon/hwmon0/temp2_input", 40000)  # no thresholds, no label
    put(tmp_path, "class/hwmon/hwmon1/name", "nct6775")
    put(tmp_path, "class/hwmon/hwmon1/fan1_input", 0)
    put(tmp_path, "class/hwmon/hwmon1/fan1_min", 600)
    put(tmp_path, "class/hwmon/hwmon1/fan2_input", 400)
    put(tmp_path, "class/hwmon/hwmon1/fan2_min", 600)
    put(tmp_path, "class/hwmon/hwmon1/fan3_input", "garbage")
    found = {c.name: c for c in read_hwmon(tmp_path)}
    assert set(found) == {
        "coretemp Package id 0",
        "coretemp temp2",
        "nct6775 fan1",
        "nct6775 fan2",
    }
    assert found["coretemp Package id 0"].health is HardwareHealth.WARNING
    assert found["coretemp Package id 0"].reading == 81.0
    assert found["coretemp temp2"].health is HardwareHealth.OK
    assert found["nct6775 fan1"].health is HardwareHealth.CRITICAL
    assert found["nct6775 fan2"].health is HardwareHealth.WARNING
    assert all(c.source == "hwmon" for c in found.values())


def test_edac_counters(tmp_path: Path) -> None:
    put(tmp_path, "devices/system/edac/mc/mc0/ce_count", 3)
    put(tmp_path, "devices/system/edac/mc/mc0/ue_count", 0)
    put(tmp_path, "devices/system/edac/mc/mc1/ce_count", 12)
    put(tmp_path, "devices/system/edac/mc/mc1/ue_count", 0)
    put(tmp_path, "devices/system/edac/mc/mc2/ce_count", 0)
    put(tmp_path, "devices/system/edac/mc/mc2/ue_count", 2)
    health = {c.name: c.health for c in read_edac(tmp_path, ce_threshold=10)}
    assert health == {
        "memory mc0": HardwareHealth.OK,
        "memory mc1": HardwareHealth.WARNING,
        "memory mc2": HardwareHealth.CRITICAL,
    }


def test_nothing_to_read_is_nothing_found(tmp_path: Path) -> None:
    assert read_local(tmp_path) == []
    assert read_local(tmp_path / "missing") == []


BOND = """Ethernet Channel Bonding Driver: v6.1.0

Bonding Mode: fault-tolerance (active-backup)
Primary Slave: None
Currently Active Slave: eth0
MII Status: up
MII Polling Interval (ms): 100

Slave Interface: eth0
MII Status: up
Speed: 10000 Mbps
Link Failure Count: 0

Slave Interface: eth1
MII Status: down
Speed: Unknown
Link Failure Count: 1
"""


def test_bond_members_from_proc_net_bonding(tmp_path: Path) -> None:
    put(tmp_path, "net/bonding/bond0", BOND)
    found = {c.name: c.health for c in read_bonds(tmp_path)}
    assert found == {"bond0/eth0": HardwareHealth.OK, "bond0/eth1": HardwareHealth.CRITICAL}
    assert read_bonds(tmp_path / "none") == []
