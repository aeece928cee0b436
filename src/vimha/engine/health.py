"""The host health loop (issue 3): heartbeats in -> plane states -> classification ->
alarms and HostHealthChangeNotifications. Observe, decide (domain), act (fault service).

A host's BMC (Redfish, if declared) is read every `bmc.interval`, and afresh as soon as the
host loses every plane, so the classification tells node software from host hardware
(FAULT-8). A host without a BMC is observed with an unreachable one: cause unknown.
A host not UP since the controller started stays UNKNOWN (no alarm) for a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from vimha.config import Config, HostConfig
from vimha.domain.alarms import FaultEvent, Location, Severity, dedup_key
from vimha.domain.classification import (
    BmcView,
    Classification,
    HardwareHealth,
    HealthStatus,
    HostSnapshot,
    classify_all,
)
from vimha.domain.clock import Clock, iso
from vimha.domain.detection import PlaneState, PlaneStatus, fell_silent_together
from vimha.domain.errors import InvalidInput, Temporary
from vimha.domain.events import location_from
from vimha.domain.hardware import (
    Component,
    LogWatch,
    decide_bmc_log,
    decide_hardware,
    system_component,
)
from vimha.domain.health import decide_health
from vimha.domain.heartbeat import Heartbeat
from vimha.domain.subscriptions import NotificationType, Subject
from vimha.drivers.heartbeat_udp import HeartbeatListener
from vimha.drivers.redfish import BmcUnreachable, RedfishBmc
from vimha.engine.faults import FaultService
from vimha.engine.fencing import Fencer
from vimha.engine.services import ServiceRegistry

log = logging.getLogger("vimha.health")
_Publish = tuple[str, Classification | None, Classification]
# Services whose failure beyond restart is a COMPUTE_SERVICE_FAILURE of their host: the
# hypervisor agent, the virtual switch of a compute node.
COMPUTE_KINDS = frozenset({"compute"})
GRACE_TIMEOUTS = 5


async def _nothing(host: str) -> None:
    return None


async def _nothing_since(host: str, since: float | None) -> None:
    return None


class HealthMonitor:
    def __init__(
        self,
        config: Config,
        faults: FaultService,
        clock: Clock,
        services: ServiceRegistry | None = None,
    ) -> None:
        self.config = config
        self.services = services or ServiceRegistry(clock)
        self.faults = faults
        self.clock = clock
        self.policy = config.heartbeat.policy()
        # The inventory: the config file's hosts, and those declared through the API. These
        # dicts are shared (listeners, fencer) and only changed in place, on the loop thread.
        self.hosts: dict[str, HostConfig] = {}
        self.source: dict[str, str] = {}
        self.planes: dict[str, tuple[str, ...]] = {}
        self.keys: dict[str, bytes] = {}
        self.locations: dict[str, Location] = {}
        self.states: dict[tuple[str, str], PlaneState] = {}
        self.bmcs: dict[str, RedfishBmc] = {}
        self.current: dict[str, Classification] = {}
        self.started = clock.monotonic()
        self.last_step = self.started
        self.stalls = 0
        self.listeners: list[HeartbeatListener] = []
        self.bmc_views: dict[str, tuple[float, BmcView]] = {}
        self.all_lost_since: dict[str, float] = {}
        self.seen_up: set[str] = set()  # hosts UP at least once since the controller started
        self.hardware: dict[str, dict[str, HardwareHealth]] = {}  # host -> alarmed components
        self.log_watch: dict[str, LogWatch] = {}  # host -> what was seen of its BMC's log
        self.log_due: dict[str, float] = {}
        self.fencer = Fencer(
            config.fencing.policy(),
            faults.store,
            self.bmcs,
            self.locations,
            clock,
            on_result=self._read_bmc,
        )
        # Told when a host is fenced and when it is UP again (the service groups' roles).
        self.on_fenced: Callable[[str, float | None], Awaitable[None]] = _nothing_since
        self.on_back: Callable[[str], Awaitable[None]] = _nothing
        self.failed_at: dict[str, float] = {}  # when each failed host was found failed
        # (alarm events, host health changes to publish) per step, not yet in the store
        self._outbox: deque[tuple[list[FaultEvent], list[_Publish]]] = deque()
        self._outbox_ready = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        for h in config.hosts:
            self.declare(h, "config")

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

    def on_heartbeat(self, hb: Heartbeat, at: float) -> None:
        key = (hb.node, hb.plane)
        state = self.states.get(key)
        if state is not None:
            self.states[key] = state.heard(at, self.policy)

    async def run(self, stop: asyncio.Event) -> None:
        await self.load_declared()
        await asyncio.to_thread(self.fencer.restore, list(self.hosts))
        for plane, address in self.config.heartbeat.listen.items():
            host, _, port = address.rpartition(":")
            listener = HeartbeatListener(
                self.keys, self.on_heartbeat, self.config.heartbeat.max_age
            )
            bound = await listener.start(host, int(port))
            log.info("hearing heartbeats of plane %s on %s:%d", plane, *bound)
            self.listeners.append(listener)
        poller = asyncio.create_task(self._poll_bmcs(stop))
        self._drainer = asyncio.create_task(self._drain_forever())
        try:
            while not stop.is_set():
                await self.step()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.policy.interval / 2)
        finally:
            poller.cancel()
            self._drainer.cancel()  # then one drain of what is left, if the store is up
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
            self._drainer = None
            with contextlib.suppress(TimeoutError, Temporary):
                await asyncio.wait_for(self._drain(), 2.0)
            await self.fencer.close()
            for listener in self.listeners:
                listener.close()

    async def _poll_bmcs(self, stop: asyncio.Event) -> None:
        every = min((h.bmc.interval for h in self.config.hosts if h.bmc), default=2.0)
        while not stop.is_set():
            await asyncio.gather(*(self._read_bmc(h) for h in list(self.bmcs)))
            now = self.clock.monotonic()
            due = [h for h in list(self.bmcs) if now >= self.log_due.get(h, 0.0)]
            await asyncio.gather(*(self._read_log(h, now) for h in due))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    async def _read_bmc(self, host: str, attempts: int = 3) -> BmcView:
        bmc = self.bmcs[host]
        try:
            reading = await asyncio.to_thread(bmc.read, attempts)
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
            entries = await asyncio.to_thread(bmc.read_log)
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
        judged: dict[str, Classification] = {}
        observed: dict[str, dict[str, bool]] = {}
        for host, planes in self.planes.items():
            statuses = [self.states[(host, p)].status for p in planes]
            if all(st is PlaneStatus.UP for st in statuses):
                self.seen_up.add(host)
                old = self.current.get(host)
                if (
                    old is not None
                    and old.health is HealthStatus.UP
                    and (not self.services.failed(host, COMPUTE_KINDS))
                ):
                    continue  # healthy and unchanged: nothing to judge (most hosts, most steps)
            elif any(st is PlaneStatus.UP for st in statuses):
                self.seen_up.add(host)
                states = [self.states[(host, p)] for p in planes]
                silent = [st for st in states if st.status is PlaneStatus.DOWN]
                beating = [st for st in states if st.status is PlaneStatus.UP]
                if fell_silent_together(silent, beating, self.policy):
                    continue  # the other planes time out within the round, or speak again
            elif in_grace and host not in self.seen_up:
                # Starting up (the controller or the node): a plane heard once and then
                # silent while everything starts is no failure yet.
                judged[host] = Classification(
                    HealthStatus.UNKNOWN, None, f"{host}: no heartbeat yet"
                )
                continue
            observed[host] = {
                p: st is PlaneStatus.UP for p, st in zip(planes, statuses, strict=True)
            }
        views = {h: self._bmc_view(h, not any(up.values()), now) for h, up in observed.items()}
        # Every BMC to read afresh is read at once: a rack going down is judged in one read.
        fresh = [h for h, (_, stale) in views.items() if stale]
        if fresh:
            read = await asyncio.gather(*(self._read_bmc(h, attempts=2) for h in fresh))
            views.update({h: (view, False) for h, view in zip(fresh, read, strict=True)})
        snapshots = []
        for host, up in observed.items():
            if host not in self.hosts:
                continue  # removed from the inventory meanwhile
            rack = dict(self.locations[host].levels).get("rack", "")
            fenced = self.fencer.fenced_kind(host)
            failed = self.services.failed(host, COMPUTE_KINDS) if any(up.values()) else ()
            snapshots.append(HostSnapshot(host, rack, up, views[host][0], failed, fenced=fenced))
        judged.update(classify_all(snapshots))
        judged = {h: c for h, c in judged.items() if h in self.hosts}
        actions = decide_health(self.current, judged, self.locations, self.clock.now())
        self.current.update(judged)
        publishes: list[_Publish] = []
        # The service groups first: they go through the coordination backend only, so a
        # fenced host's roles are freed even when the store is what that host took down
        # (the controllers' own database in `vimha up --ha`).
        for change in actions.changes:
            log.info("host %s: %s", change.host, change.reason)
            if change.current.health is HealthStatus.FENCED:
                await self.on_fenced(change.host, self.failed_at.get(change.host))
            elif change.current.health is HealthStatus.UP:
                self.failed_at.pop(change.host, None)
                await self.on_back(change.host)
            elif change.current.kind is not None:
                self.failed_at.setdefault(change.host, self.clock.now().timestamp())
            if change.previous is None and change.current.health in (
                HealthStatus.UP,
                HealthStatus.UNKNOWN,
            ):
                continue  # first sight of a healthy or unknown host is not news
            publishes.append((change.host, change.previous, change.current))
        # Alarms and notifications go to the store in order, without holding up the next
        # step: a store that does not answer (the controllers' database switching over)
        # must not delay detection or fencing.
        self._outbox.append(([*actions.events, *self.fencer.step(judged)], publishes))
        if self._drainer is None:
            await self._drain()  # not running (tests step by hand): at once
        else:
            self._outbox_ready.set()

    async def _drain(self) -> None:
        """Ingest and publish what the steps left, in order; an item leaves the outbox only
        once the store took it (Temporary propagates, the item stays)."""
        while self._outbox:
            events, publishes = self._outbox[0]
            if events:
                await self.faults.ingest_async(events)
                events.clear()
            while publishes:
                await asyncio.to_thread(self._publish, *publishes[0])
                publishes.pop(0)
            self._outbox.popleft()

    async def _drain_forever(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            try:
                await self._drain()
            except Temporary as exc:
                waiting = sum(len(e) + len(p) for e, p in self._outbox)
                log.warning("store unavailable (%s): %d alarm events wait", exc, waiting)
                await asyncio.sleep(0.5)
                self._outbox_ready.set()
            except Exception:  # a bad item must not stop the ones after it
                log.exception("dropping alarm events the store refused")
                self._outbox.popleft()
                self._outbox_ready.set()

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

    def _bmc_json(self, host: str) -> dict[str, Any] | None:
        if host not in self.bmcs:
            return None
        read_at, bmc = self.bmc_views.get(host, (None, BmcView(False, detail="not read yet")))
        return {
            "url": self.bmcs[host].url,
            "reachable": bmc.reachable,
            "powerState": None if bmc.power_on is None else ("On" if bmc.power_on else "Off"),
            "health": bmc.health.value if bmc.health else None,
            "detail": bmc.detail,
            "readMsAgo": None
            if read_at is None
            else round((self.clock.monotonic() - read_at) * 1000),
        }

    def _fencing_json(self, host: str) -> dict[str, Any]:
        state = self.fencer.state(host)
        return {
            "state": state.phase.value,
            "failureKind": state.kind.value if state.kind else None,
            "attempts": state.attempts,
            "detail": state.detail,
            "recoverable": state.recoverable,
        }

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
            "source": self.source[host],
            "roles": list(cfg.roles),
            "capacities": None
            if cfg.capacities is None
            else {
                "vcpus": cfg.capacities.vcpus,
                "ramMiB": cfg.capacities.ram_mib,
                "diskGiB": cfg.capacities.disk_gib,
            },
            "location": self.locations[host].as_dict(),
            "healthStatus": cls.health.value if cls else HealthStatus.UNKNOWN.value,
            "failureKind": cls.kind.value if cls and cls.kind else None,
            "reason": cls.reason if cls else "not evaluated yet",
            "planes": planes,
            "services": self.services.of(host),
            "bmc": self._bmc_json(host),
            "fencing": self._fencing_json(host),
            "observedAt": iso(self.clock.now()),
            "_links": {"self": {"href": f"{self.config.api.base_url}/vim/v1/hosts/{host}"}},
        }
