"""The agent's local hardware watch (FAULT-1, ARCH-8): hwmon and EDAC from sysfs, bond
members from /proc/net/bonding, read every `interval`, judged by the same decide_hardware()
as the BMC readings, reported as native events. The first reading also clears what a
previous run of the agent may have raised."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from vimha.agent.services import Reporter
from vimha.domain.alarms import Location
from vimha.domain.classification import HardwareHealth
from vimha.domain.events import to_native
from vimha.domain.hardware import Component, component_key, decide_hardware
from vimha.drivers.bonding import read_bonds
from vimha.drivers.sysfs_hw import read_local

log = logging.getLogger("vimha.agent.hardware")


class HardwareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    sysfs: str = Field("/sys", description="Where sysfs is mounted (hwmon, EDAC)")
    procfs: str = Field("/proc", description="Where procfs is mounted (net/bonding)")
    interval: float = Field(5.0, gt=0, description="Seconds between readings")
    ce_threshold: int = Field(
        100, ge=1, description="Correctable memory errors (EDAC ce_count) that make a WARNING"
    )


async def watch_hardware(
    node: str, cfg: HardwareConfig, reporter: Reporter, stop: asyncio.Event
) -> None:
    root = Path(cfg.sysfs)
    location = Location((("host", node),))
    alarmed: dict[str, HardwareHealth] | None = None
    while not stop.is_set():
        components = await asyncio.to_thread(_read, root, Path(cfg.procfs), cfg.ce_threshold)
        if alarmed is None:  # first reading: clear whatever an earlier run raised
            alarmed = {component_key(c): HardwareHealth.CRITICAL for c in components}
        events, alarmed = decide_hardware(node, alarmed, components, location, _now())
        for event in events:
            log.info("%s: %s", event.managed_object_id, event.fault_details[0])
            reporter.report(to_native(event))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), cfg.interval)


def _read(sysfs: Path, procfs: Path, ce_threshold: int) -> list[Component]:
    return read_local(sysfs, ce_threshold) + read_bonds(procfs)


def _now() -> datetime:
    return datetime.now(UTC)
