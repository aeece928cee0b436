"""The hosts the health loop watches: declared in the config file or through the API, and
what is cleared when one is removed from the inventory."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import ValidationError

from vimha.config import HostConfig
from vimha.domain.alarms import FaultEvent, Severity, dedup_key
from vimha.domain.classification import Classification, HardwareHealth, HealthStatus
from vimha.domain.detection import PlaneState
from vimha.domain.errors import InvalidInput
from vimha.domain.events import location_from
from vimha.domain.hardware import decide_bmc_log, decide_hardware
from vimha.domain.health import decide_health
from vimha.drivers.redfish import RedfishBmc
from vimha.engine.health_state import HealthState

log = logging.getLogger("vimha.health")


class HostInventory(HealthState):
    """Declares, reloads and forgets the hosts watched."""

    def declare(self, h: HostConfig, source: str) -> None:
        """Add a host to what is watched, or change it (a new key, planes, BMC...)."""
        name = h.name
        self.hosts[name] = h
        self.source[name] = source
        planes = h.planes or tuple(self.config.heartbeat.listen)
        for gone in set(self.planes.get(name, ())) - set(planes):
            self.states.pop((name, gone), None)
        self.planes[name] = planes
        for plane in planes:
            self.states.setdefault((name, plane), PlaneState())
        self.keys[name] = h.key.encode()
        self.locations[name] = location_from(
            h.location, self.config.topology.hierarchy, f"hosts.{name}", host=name
        )
        if h.bmc is not None:
            self.bmcs[name] = RedfishBmc(h.bmc.url, h.bmc.user, h.bmc.password, h.bmc.timeout)
        else:
            self.bmcs.pop(name, None)
            self.bmc_views.pop(name, None)

    async def forget(self, name: str, clear: bool = True) -> None:
        """Stop watching a host; what was raised for it is cleared: by vimha's detectors,
        and by its agent (its services, its sensors) or any monitor, on `host/...`."""
        if name not in self.hosts:
            return
        if not clear:
            self._drop(name)
            return
        now = self.clock.now()
        gone = Classification(HealthStatus.UP, None, f"{name} removed from the inventory")
        events = list(
            decide_health(
                {name: self.current[name]} if name in self.current else {},
                {name: gone},
                self.locations,
                now,
            ).events
        )
        if self.hardware.get(name):
            events += decide_hardware(name, self.hardware[name], [], self.locations[name], now)[0]
        watch = self.log_watch.get(name)
        if watch is not None and watch.raised is not None:
            ok = HardwareHealth.OK
            events += decide_bmc_log(name, watch, [], ok, self.locations[name], now)[0]
        events += self.fencer.forget(name)
        events += await self._others_raised(name, {e.dedup_key for e in events}, now)
        self._drop(name)
        if events:
            await self.faults.ingest_async(events)
        self.locations.pop(name, None)

    async def _others_raised(self, name: str, covered: set[str], now: Any) -> list[FaultEvent]:
        """Clearing events for the active alarms on the host or its parts that vimha's own
        decisions above do not cover (raised by its agent or another monitor)."""
        out = []
        for alarm in await asyncio.to_thread(self.faults.store.active_alarms_of_host, name):
            key = dedup_key(alarm.managed_object_id, alarm.fault_type, alarm.probable_cause)
            if key in covered:
                continue
            out.append(
                FaultEvent(
                    managed_object_id=alarm.managed_object_id,
                    fault_type=alarm.fault_type,
                    probable_cause=alarm.probable_cause,
                    perceived_severity=Severity.CLEARED,
                    event_type=alarm.event_type,
                    event_time=now,
                    fault_details=(f"{name} removed from the inventory",),
                )
            )
        return out

    def _drop(self, name: str) -> None:
        for table in (self.hosts, self.source, self.planes, self.keys, self.bmcs, self.current):
            table.pop(name, None)
        for key in [k for k in self.states if k[0] == name]:
            del self.states[key]
        for table2 in (self.bmc_views, self.all_lost_since, self.hardware, self.log_watch):
            table2.pop(name, None)
        self.seen_up.discard(name)
        self.services.forget(name)

    async def load_declared(self) -> None:
        """The hosts declared through the API, from the store: new and changed ones watched,
        removed ones forgotten (another controller changed the inventory)."""
        stored = await asyncio.to_thread(self.faults.store.list_hosts)
        for name in [h for h, source in self.source.items() if source == "api"]:
            if name not in stored:
                await self.forget(name, clear=False)  # its alarms: cleared by the one deleting
        for name, spec in stored.items():
            try:
                host = HostConfig.model_validate(spec)
            except (ValidationError, InvalidInput) as exc:
                log.error("stored host %s is not valid any more, not watched: %s", name, exc)
                continue
            if self.hosts.get(name) != host:
                self.declare(host, "api")
