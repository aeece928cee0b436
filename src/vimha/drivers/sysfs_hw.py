"""Local hardware sensors from Linux sysfs (FAULT-1): hwmon temperatures and fans, and EDAC
memory-controller error counters. Absent on virtual machines and containers: then nothing is
read and nothing is raised. `root` is "/sys" in production.

- hwmon: temp<N>_input (millidegrees C) against temp<N>_crit (CRITICAL) and temp<N>_max
  (WARNING); fan<N>_input (RPM) against fan<N>_min (below: WARNING; stopped: CRITICAL).
- EDAC: per memory controller, any uncorrectable error (ue_count) is CRITICAL; correctable
  errors (ce_count) at or above `ce_threshold` are a WARNING.
"""

from __future__ import annotations

from pathlib import Path

from vimha.domain.classification import HardwareHealth
from vimha.domain.hardware import Component


def _int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _text(path: Path, default: str) -> str:
    try:
        return path.read_text().strip() or default
    except OSError:
        return default


def _above(value: int, crit: int | None, high: int | None) -> HardwareHealth:
    if crit is not None and crit > 0 and value >= crit:
        return HardwareHealth.CRITICAL
    if high is not None and high > 0 and value >= high:
        return HardwareHealth.WARNING
    return HardwareHealth.OK


def read_hwmon(root: Path) -> list[Component]:
    out: list[Component] = []
    for chip in sorted((root / "class" / "hwmon").glob("hwmon*")):
        chip_name = _text(chip / "name", chip.name)
        for sensor in sorted(chip.glob("temp*_input")):
            base = sensor.name.removesuffix("_input")
            value = _int(sensor)
            if value is None:
                continue
            label = _text(chip / f"{base}_label", base)
            health = _above(value, _int(chip / f"{base}_crit"), _int(chip / f"{base}_max"))
            out.append(
                Component("temperature", f"{chip_name} {label}", health, value / 1000, "hwmon")
            )
        for sensor in sorted(chip.glob("fan*_input")):
            base = sensor.name.removesuffix("_input")
            rpm = _int(sensor)
            if rpm is None:
                continue
            low = _int(chip / f"{base}_min")
            health = HardwareHealth.OK
            if low is not None and low > 0 and rpm < low:
                health = HardwareHealth.CRITICAL if rpm == 0 else HardwareHealth.WARNING
            label = _text(chip / f"{base}_label", base)
            out.append(Component("fan", f"{chip_name} {label}", health, rpm, "hwmon"))
    return out


def read_edac(root: Path, ce_threshold: int) -> list[Component]:
    out: list[Component] = []
    for mc in sorted((root / "devices" / "system" / "edac" / "mc").glob("mc[0-9]*")):
        ue, ce = _int(mc / "ue_count") or 0, _int(mc / "ce_count") or 0
        health = HardwareHealth.OK
        if ue > 0:
            health = HardwareHealth.CRITICAL
        elif ce >= ce_threshold:
            health = HardwareHealth.WARNING
        out.append(Component("memory", f"memory {mc.name}", health, ue or ce, "edac"))
    return out


def read_local(root: Path, ce_threshold: int = 100) -> list[Component]:
    return read_hwmon(root) + read_edac(root, ce_threshold)
