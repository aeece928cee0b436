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

from vimha.config import Config
from vimha.domain import notifications
from vimha.domain.classification import (
    Classification,
    HealthStatus,
    HostSnapshot,
    classify_all,
)
from vimha.domain.clock import Clock
from vimha.domain.detection import PlaneStatus, fell_silent_together
from vimha.domain.errors import Temporary
from vimha.domain.health import decide_health
from vimha.domain.heartbeat import Heartbeat
from vimha.drivers.heartbeat_udp import HeartbeatListener
from vimha.engine.bmc_watch import BmcWatch
from vimha.engine.faults import FaultService
from vimha.engine.health_state import Publish
from vimha.engine.host_inventory import HostInventory
from vimha.engine.host_views import HostViews
from vimha.engine.judging import Judging
from vimha.engine.services import ServiceRegistry

log = logging.getLogger("vimha.health")
# Services whose failure beyond restart is a COMPUTE_SERVICE_FAILURE of their host: the
# hypervisor agent, the virtual switch of a compute node.
COMPUTE_KINDS = frozenset({"compute"})
GRACE_TIMEOUTS = 5


class HealthMonitor(HostInventory, BmcWatch, HostViews):
    """The loop: heartbeats heard, hosts judged each step, alarms and notifications handed
    to the store in order. Its parts: `health_state` (what it knows), `host_inventory`,
    `bmc_watch` and `host_views`."""

    def __init__(
        self,
        config: Config,
        faults: FaultService,
        clock: Clock,
        services: ServiceRegistry | None = None,
    ) -> None:
        super().__init__(config, faults, clock, services)
        self._handovers: set[asyncio.Task[None]] = set()
        self._restoring: set[str] = set()  # hosts taken over, their fencing being read
        for h in config.hosts:
            self.declare(h, "config")

    def split_by(self, judging: Judging) -> None:
        """Judge only this controller's share of the hosts (engine/judging.py)."""
        self.judging = judging
        judging.on_handover = self._handover

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
            self.bmc_io.shutdown(wait=False, cancel_futures=True)

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
        mine = self.mine()
        if mine is not None and self.judging is not None and self.judging.remote_changed.is_set():
            self._take_remote(mine)
        for host, planes in self.planes.items():
            if mine is not None and (host not in mine or host in self._restoring):
                continue  # judged by another controller (engine/judging.py)
            statuses = [self.states[(host, p)].status for p in planes]
            if all(st is PlaneStatus.UP for st in statuses):
                self.seen_up.add(host)
                old = self.current.get(host)
                if (
                    old is not None
                    and old.health is HealthStatus.UP
                    and (not self.services.failed(host, COMPUTE_KINDS))
                    and self.maintenance.get(host) != "maintenance"
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
            planned = self.maintenance.get(host) == "maintenance"
            snapshots.append(
                HostSnapshot(host, rack, up, views[host][0], failed, planned, fenced=fenced)
            )
        judged.update(classify_all(snapshots))
        judged = {h: c for h, c in judged.items() if h in self.hosts}
        actions = decide_health(self.current, judged, self.locations, self.clock.now())
        self.current.update(judged)
        publishes: list[Publish] = []
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
            if self.judging is not None:
                self.judging.publish(change.host, change.current, self.failed_at.get(change.host))
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

    def _take_remote(self, mine: frozenset[str]) -> None:
        """The judgments of the hosts other controllers own, as they shared them."""
        assert self.judging is not None
        self.judging.remote_changed.clear()
        for host in self.hosts:
            if host in mine or (judgment := self.judging.remote(host)) is None:
                continue
            cls, failed_at = judgment
            if cls.health is HealthStatus.UP:
                self.seen_up.add(host)  # taken over later, it is judged without a grace
            previous = self.current.get(host)
            if previous == cls:
                continue
            self.current[host] = cls
            if failed_at is None:
                self.failed_at.pop(host, None)
            else:
                self.failed_at[host] = failed_at
            if cls.health is HealthStatus.FENCED and (
                previous is None or previous.health is not HealthStatus.FENCED
            ):
                self.on_remote_fenced(host)

    def _handover(self, gained: frozenset[str], lost: frozenset[str]) -> None:
        """Hosts taken over: their fencing as the store has it (a host the former owner
        fenced stays FENCED), judged from the next step on."""
        for host in gained:
            self.fencer.states.pop(host, None)
            self.all_lost_since.pop(host, None)
        if gained:
            self._restoring |= gained  # not judged until then: no flap of FENCED
            task = asyncio.get_running_loop().create_task(self._restore(gained))
            self._handovers.add(task)
            task.add_done_callback(self._handovers.discard)

    async def _restore(self, hosts: frozenset[str]) -> None:
        try:
            await asyncio.to_thread(self.fencer.restore, sorted(hosts))
        finally:
            self._restoring -= hosts

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
        kind, payload, subject = notifications.host_health_change(
            host, previous, current, self.locations[host], self.config.api.base_url
        )
        self.faults.publish(kind, payload, subject, host)
