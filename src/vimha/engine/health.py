"""The host health loop (issue 3): heartbeats in -> plane states -> classification ->
alarms and HostHealthChangeNotifications. Observe, decide (domain), act (fault service).

Until the BMC drivers exist, every host is observed with an unreachable BMC, so a host whose
planes are all silent classifies as HOST_UNREACHABLE (or RACK_FAILURE with rack peers).
A host never heard stays UNKNOWN (no alarm) for a grace period after start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from vimha.config import Config
from vimha.domain.alarms import Location
from vimha.domain.classification import (
    BmcView,
    Classification,
    HealthStatus,
    HostSnapshot,
    classify_all,
)
from vimha.domain.clock import Clock, iso
from vimha.domain.detection import PlaneState, PlaneStatus
from vimha.domain.events import location_from
from vimha.domain.health import decide_health
from vimha.domain.heartbeat import Heartbeat
from vimha.domain.subscriptions import NotificationType, Subject
from vimha.drivers.heartbeat_udp import HeartbeatListener
from vimha.engine.faults import FaultService

log = logging.getLogger("vimha.health")
GRACE_TIMEOUTS = 5


class HealthMonitor:
    def __init__(self, config: Config, faults: FaultService, clock: Clock) -> None:
        self.config = config
        self.faults = faults
        self.clock = clock
        self.policy = config.heartbeat.policy()
        listened = tuple(config.heartbeat.listen)
        self.hosts = {h.name: h for h in config.hosts}
        self.planes = {h.name: (h.planes or listened) for h in config.hosts}
        self.keys = {h.name: h.key.encode() for h in config.hosts}
        self.locations: dict[str, Location] = {
            h.name: location_from(
                h.location, config.topology.hierarchy, f"hosts.{h.name}", host=h.name
            )
            for h in config.hosts
        }
        self.states: dict[tuple[str, str], PlaneState] = {
            (h, p): PlaneState() for h, planes in self.planes.items() for p in planes
        }
        self.current: dict[str, Classification] = {}
        self.started = clock.monotonic()
        self.last_step = self.started
        self.stalls = 0
        self.listeners: list[HeartbeatListener] = []

    def on_heartbeat(self, hb: Heartbeat, at: float) -> None:
        key = (hb.node, hb.plane)
        state = self.states.get(key)
        if state is not None:
            self.states[key] = state.heard(at, self.policy)

    async def run(self, stop: asyncio.Event) -> None:
        for plane, address in self.config.heartbeat.listen.items():
            host, _, port = address.rpartition(":")
            listener = HeartbeatListener(
                self.keys, self.on_heartbeat, self.config.heartbeat.max_age
            )
            bound = await listener.start(host, int(port))
            log.info("hearing heartbeats of plane %s on %s:%d", plane, *bound)
            self.listeners.append(listener)
        try:
            while not stop.is_set():
                await self.step()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.policy.interval / 2)
        finally:
            for listener in self.listeners:
                listener.close()

    async def step(self) -> None:
        now = self.clock.monotonic()
        stalled = now - self.last_step > self.policy.timeout / 2
        self.last_step = now
        if stalled:
            # Our own loop was starved (CPU saturation, a pause): the heartbeats that arrived
            # meanwhile are still queued in the sockets. Judge silence only after reading them,
            # or a busy controller would take its own stall for dead hosts.
            self.stalls += 1
            return
        for key, state in self.states.items():
            self.states[key] = state.tick(now, self.policy)
        grace = max(self.config.heartbeat.startup_grace, GRACE_TIMEOUTS * self.policy.timeout)
        in_grace = now - self.started < grace
        snapshots, unknown = [], {}
        for host, planes in self.planes.items():
            statuses = [self.states[(host, p)].status for p in planes]
            if all(s is PlaneStatus.UNKNOWN for s in statuses) and in_grace:
                unknown[host] = Classification(
                    HealthStatus.UNKNOWN, None, f"{host}: no heartbeat yet"
                )
                continue
            rack = dict(self.locations[host].levels).get("rack", "")
            snapshots.append(
                HostSnapshot(
                    host,
                    rack,
                    {p: s is PlaneStatus.UP for p, s in zip(planes, statuses, strict=True)},
                    BmcView(reachable=False),
                )
            )
        new = {**unknown, **classify_all(snapshots)}
        actions = decide_health(self.current, new, self.locations, self.clock.now())
        self.current = new
        if actions.events:
            await self.faults.ingest_async(actions.events)
        for change in actions.changes:
            log.info("host %s: %s", change.host, change.reason)
            if change.previous is None and change.current.health in (
                HealthStatus.UP,
                HealthStatus.UNKNOWN,
            ):
                continue  # first sight of a healthy or unknown host is not news
            await asyncio.to_thread(self._publish, change.host, change.previous, change.current)

    def _publish(self, host: str, previous: Classification | None, current: Classification) -> None:
        location = self.locations[host]
        payload = {
            "hostId": host,
            "healthStatus": current.health.value,
            "previousHealthStatus": previous.health.value if previous else None,
            "failureKind": current.kind.value if current.kind else None,
            "reason": current.reason,
            "location": location.as_dict(),
            "_links": {"host": {"href": f"{self.config.api.base_url}/vim/v1/hosts/{host}"}},
        }
        subject = Subject(NotificationType.HOST_HEALTH_CHANGE, object_id=host, location=location)
        self.faults.publish(NotificationType.HOST_HEALTH_CHANGE, payload, subject, host)

    def view(self, host: str) -> dict[str, Any] | None:
        cfg = self.hosts.get(host)
        if cfg is None:
            return None
        now = self.clock.monotonic()
        cls = self.current.get(host)
        planes = {}
        for p in self.planes[host]:
            st = self.states[(host, p)]
            planes[p] = {
                "status": st.status.value,
                "lastHeardMsAgo": None
                if st.last_heard is None
                else round((now - st.last_heard) * 1000),
            }
        return {
            "id": host,
            "roles": list(cfg.roles),
            "location": self.locations[host].as_dict(),
            "healthStatus": cls.health.value if cls else HealthStatus.UNKNOWN.value,
            "failureKind": cls.kind.value if cls and cls.kind else None,
            "reason": cls.reason if cls else "not evaluated yet",
            "planes": planes,
            "observedAt": iso(self.clock.now()),
            "_links": {"self": {"href": f"{self.config.api.base_url}/vim/v1/hosts/{host}"}},
        }
