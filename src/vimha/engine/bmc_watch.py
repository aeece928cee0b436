"""The hosts' BMCs as the health loop sees them: read every `bmc.interval` and afresh when a
host loses every plane; their sensors and event logs turned into hardware alarms (FAULT-1)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from vimha.domain.classification import BmcView, HardwareHealth
from vimha.domain.hardware import (
    Component,
    LogWatch,
    decide_bmc_log,
    decide_hardware,
    system_component,
)
from vimha.drivers.redfish import BmcUnreachable
from vimha.engine.health_state import HealthState

log = logging.getLogger("vimha.health")


class BmcWatch(HealthState):
    """Reads the BMCs and judges their hardware."""

    async def _poll_bmcs(self, stop: asyncio.Event) -> None:
        every = min((h.bmc.interval for h in self.config.hosts if h.bmc), default=2.0)
        while not stop.is_set():
            mine = self.mine()  # the BMCs of the hosts others judge are theirs to read
            hosts = [h for h in list(self.bmcs) if mine is None or h in mine]
            await asyncio.gather(*(self._read_bmc(h) for h in hosts))
            now = self.clock.monotonic()
            due = [h for h in hosts if now >= self.log_due.get(h, 0.0)]
            await asyncio.gather(*(self._read_log(h, now) for h in due))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    async def _read_bmc(self, host: str, attempts: int = 3) -> BmcView:
        bmc = self.bmcs[host]
        try:
            loop = asyncio.get_running_loop()
            reading = await loop.run_in_executor(self.bmc_io, functools.partial(bmc.read, attempts))
        except BmcUnreachable as exc:
            log.warning("BMC of %s: %s", host, exc.detail)
            view = BmcView(False, detail=exc.detail)
        else:
            view = reading.view()
            if reading.power_on:  # sensors of a host that is off say nothing
                await self._judge_hardware(host, reading.components, reading.health)
        self.bmc_views[host] = (self.clock.monotonic(), view)
        return view

    async def _read_log(self, host: str, now: float) -> None:
        """FAULT-1: new hardware events in the BMC's log -> BMC_LOG_EVENT on <host>/SEL."""
        cfg = self.hosts.get(host)
        bmc = self.bmcs.get(host)
        if cfg is None or cfg.bmc is None or bmc is None:
            return
        self.log_due[host] = now + cfg.bmc.log_interval
        try:
            loop = asyncio.get_running_loop()
            entries = await loop.run_in_executor(self.bmc_io, bmc.read_log)
        except BmcUnreachable as exc:
            log.debug("event log of %s not read: %s", host, exc.detail)
            return
        rollup = self.bmc_views.get(host, (0.0, BmcView(False)))[1].health
        events, self.log_watch[host] = decide_bmc_log(
            host,
            self.log_watch.get(host, LogWatch()),
            entries,
            rollup,
            self.locations[host],
            self.clock.now(),
        )
        if events:
            await self.faults.ingest_async(events)

    async def _judge_hardware(
        self, host: str, components: tuple[Component, ...], rollup: HardwareHealth | None
    ) -> None:
        """FAULT-1: component health -> ENVIRONMENTAL / EQUIPMENT alarms at the component."""
        system = system_component(rollup, components)
        every = (*components, system) if system else components
        events, self.hardware[host] = decide_hardware(
            host, self.hardware.get(host, {}), every, self.locations[host], self.clock.now()
        )
        if events:
            await self.faults.ingest_async(events)

    def _bmc_view(self, host: str, all_lost: bool, now: float) -> tuple[BmcView, bool]:
        """The host's BMC as last read, and whether it must be read afresh first: when every
        plane was just lost, the classification rests on what the BMC says now."""
        if host not in self.bmcs:
            return BmcView(False, detail="no BMC declared"), False
        if not all_lost:
            self.all_lost_since.pop(host, None)
            return self.bmc_views.get(host, (0.0, BmcView(False)))[1], False
        since = self.all_lost_since.setdefault(host, now)
        read_at, view = self.bmc_views.get(host, (-1.0, BmcView(False)))
        return view, read_at < since
