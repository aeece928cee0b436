"""Linux bonds (ARCH-8): the state of each bond's member links from /proc/net/bonding/<bond>.
A member whose MII status is not "up" is a lost link of a plane that still works through its
other members; the agent alarms on it. No bonding module (as on this project's CI machine):
no file, nothing read."""

from __future__ import annotations

from pathlib import Path

from vimha.domain.classification import HardwareHealth
from vimha.domain.hardware import Component


def parse_bond(bond: str, text: str) -> list[Component]:
    out: list[Component] = []
    slave: str | None = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "Slave Interface":
            slave = value
        elif key == "MII Status" and slave is not None:
            health = HardwareHealth.OK if value == "up" else HardwareHealth.CRITICAL
            out.append(Component("link", f"{bond}/{slave}", health, None, "bonding"))
            slave = None
    return out


def read_bonds(proc: Path) -> list[Component]:
    out: list[Component] = []
    for path in sorted((proc / "net" / "bonding").glob("*")):
        try:
            out += parse_bond(path.name, path.read_text())
        except OSError:
            continue
    return out
