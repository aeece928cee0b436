"""The controller's engine, without the API: store, services, dispatcher and loops.

Root tasks are supervised: if one dies, `failed` is set and the process exits non-zero
(crash-only; the supervisor restarts it and nothing is lost, since all state is stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

from vimha.config import Config
from vimha.domain.alarms import Location
from vimha.domain.classification import FailureKind
from vimha.domain.clock import Clock
from vimha.domain.compute import HostResources
from vimha.domain.detection import PlaneStatus
from vimha.domain.election import Role
from vimha.domain.errors import Conflict, NotFound, StoreUnavailable, Temporary
from vimha.domain.maintenance import HostMode
from vimha.domain.maintenance_flow import HostInfo
from vimha.drivers.coord_mirror import Mirror
from vimha.drivers.coordination import open_coordination
from vimha.engine.ageing import RetentionService, ageing_loop
from vimha.engine.catalog import Catalog
from vimha.engine.compute import ComputeService, HostView
from vimha.engine.dispatch import Dispatcher
from vimha.engine.dispatch_process import DispatcherProcess
from vimha.engine.election import Elector
from vimha.engine.faults import FaultService, SubscriptionCache
from vimha.engine.groups import GroupWatcher
from vimha.engine.health import HealthMonitor
from vimha.engine.host_reports import HostReports
from vimha.engine.host_watch import HostWatch
from vimha.engine.identity import IdentityService
from vimha.engine.insight import Insight
from vimha.engine.judging import Judging
from vimha.engine.maintenance import Maintenance
from vimha.engine.migration import Migrations
from vimha.engine.port_binding import PortBinding
from vimha.engine.recovery import HostState, Recovery
from vimha.engine.scaling import Scaling
from vimha.engine.scheduler import Scheduler
from vimha.engine.sdn import SdnWatcher
from vimha.engine.servers import ServerService
from vimha.engine.services import ServiceRegistry
from vimha.engine.takeover import Presence, adopt_orphans, announce_rebuilt, readopt_own
from vimha.engine.writer import StoreWriter
from vimha.ports.notifier import Notifier
from vimha.ports.store import AttemptRecord, Store

log = logging.getLogger("vimha.runtime")


class Runtime:
    @property
    def inventory(self) -> dict[str, Location]:
        """Each watched host's place in the hierarchy, for events that name only the host."""
        return self.health.locations if self.health is not None else {}

    def __init__(self, config: Config, store: Store, notifier: Notifier, clock: Clock) -> None:
        self.config = config
        self.store = store
        self.me = config.controller_id()
        store.owner = self.me  # the deliveries this controller stores are its own to send
        self.notifier = notifier
        self.clock = clock
        # Each declared host's place in the hierarchy, for events that name only the host.
        base_url = config.api.base_url
        self.subscriptions = SubscriptionCache(store)
        # The one writer of this process: ingest, acknowledgements and delivery outcomes.
        self.writer = StoreWriter(store, self._store_retried)
        # set when a unit of work may have committed unbeknown (`readopt_own`)
        self.readopt = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dispatcher: Dispatcher | DispatcherProcess
        if config.delivery.process:
            self.dispatcher = DispatcherProcess(config, self.subscriptions, self.writer)
        else:
            self.dispatcher = Dispatcher(
                store,
                notifier,
                self.subscriptions,
                clock,
                config.delivery.retry_policy(),
                base_url,
                config.delivery.flush_interval,
                config.delivery.lane_memory,
                record=self._record_outcomes,
                owner=self.me,
            )
        self.faults = FaultService(
            store,
            clock,
            self.subscriptions,
            config.vim_connection_id,
            base_url,
            self.dispatcher.submit,
            self.writer,
        )
        self.retention = RetentionService(store, clock, config.ageing.policy())
        self.services = ServiceRegistry(clock)
        # Hosts may be declared in the config file or later through the API: watched as soon
        # as heartbeats are listened for.
        watching = bool(config.hosts or config.heartbeat.listen)
        self.health = HealthMonitor(config, self.faults, clock, self.services) if watching else None
        # Work that must run once among several controllers (today: ageing) is done by the
        # holder of a role kept through a lease in the coordination backend.
        self.coordination = open_coordination(config.coordination.url, clock)
        self.elector = Elector(
            self.coordination,
            f"/vimha/{config.vim_connection_id}/singleton",
            f"{socket.gethostname()}:{config.api.port}:{os.getpid()}",
            config.coordination.policy(),
            clock,
            on_change=lambda h: log.warning("singleton work: %s (epoch %d)", h.role, h.epoch),
        )
        self.presence = Presence(
            self.coordination,
            f"/vimha/{config.vim_connection_id}/controllers/",
            self.me,
            config.coordination.policy(),
            clock,
        )
        self.groups = GroupWatcher(
            self.coordination, config.vim_connection_id, self.faults, clock, self.holds_singleton
        )
        self.sdn = SdnWatcher(
            self.coordination, config.vim_connection_id, self.faults, clock, self.holds_singleton
        )
        self.judging: Judging | None = None
        if self.health is not None:
            self.health.on_fenced = self._host_fenced
            self.health.on_back = self.groups.host_back
            self.health.on_remote_fenced = lambda host: self.recovery.wake.set()
            j = config.judging
            judging = Judging(
                self.coordination,
                config.vim_connection_id,
                self.me,
                j.split,
                j.auto_above,
                config.coordination.controllers,
            )
            if judging.enabled:  # several controllers, a split not turned off
                self.judging = judging
                self.health.split_by(judging)
        # The compute model (issue 14): catalog, instances, what each host should run.
        self.catalog = Catalog(store, self.writer, clock)
        self.host_watch = HostWatch(self.coordination, config.vim_connection_id)
        self.scheduler = Scheduler(
            self.host_views,
            config.topology.hierarchy,
            config.sal_classes(),
            config.placement.preemption,
        )
        self.compute = ComputeService(
            store,
            self.writer,
            self.faults,
            clock,
            self.host_watch,
            self.host_views,
            base_url,
            self.scheduler,
        )
        self.scaling = Scaling(self.compute)
        # Where an SDN runs, the instances' ports are its port intents (issues 14, 18).
        self.port_binding = PortBinding(
            store, self.sdn, self.host_watch, clock, self.holds_singleton
        )
        self.recovery = Recovery(self.compute, self.recovery_hosts, self.holds_singleton)
        # The OpenStack faces (issue 16): Nova's semantics over the same compute service,
        # and the tokens Identity issues.
        self.servers = ServerService(self.compute)
        self.identity = IdentityService(store, self.writer, clock, config.auth.identity_token_ttl)
        c = config.compute
        self.host_reports = HostReports(
            self.compute,
            self.declared_resources,
            (c.cpu_allocation_ratio, c.ram_allocation_ratio, c.disk_allocation_ratio),
            self.health_of,
        )
        # Insight (issue 20): correlation rules, incidents, HA metrics.
        self.insight = Insight(config, store, self.faults, clock, self.health, self.holds_singleton)
        self.recovery.incidents = self.insight.incidents
        # Migration and maintenance (issue 19).
        self.migrations = Migrations(self.compute, config.migration, self.holds_singleton)
        self.compute.abandon = self.migrations.abandon
        self.host_reports.migrations = self.migrations
        self.host_reports.migration_timeout = config.migration.timeout
        self.maintenance = Maintenance(
            self.migrations,
            self.recovery,
            config.migration,
            self.holds_singleton,
            self.maintenance_hosts,
            self._host_modes,
        )
        self._counters = {
            what: f"/vimha/{config.vim_connection_id}/changes/{what}"
            for what in ("inventory", "subscriptions")
        }
        self._seen: dict[str, int] = {}
        self.started_at = clock.now()
        self.incarnation = uuid.uuid4().hex  # this start of this controller
        self.failed = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def _store_retried(self) -> None:
        """The writer retries a unit of work (its thread): look again at our own pending
        deliveries once the store answers, and at the subscriptions."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.readopt.set)
        self.subscriptions.reload()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.subscriptions.reload)
        self._spawn("dispatcher", self.dispatcher.run())
        self._spawn("election", self.elector.run(self._stop))
        info = {
            "api": self.config.api.base_url,
            "pid": os.getpid(),
            "incarnation": self.incarnation,
        }
        self._spawn("presence", self.presence.run(self._stop, info))
        self._spawn(
            "takeover",
            adopt_orphans(
                self.presence,
                self.store,
                self.writer,
                self.dispatcher,
                self.holds_singleton,
                self._stop,
            ),
        )
        self._spawn(
            "readopt",
            readopt_own(self.store, self.me, self.dispatcher, self.readopt, self._stop),
        )
        self._spawn(
            "ageing",
            ageing_loop(
                self.retention, self.config.ageing.interval, self._stop, self.holds_singleton
            ),
        )
        self._spawn("checkpoint", self._checkpoints())
        self._spawn("groups", self.groups.run(self._stop))
        self._spawn("sdn", self.sdn.run(self._stop))
        self._spawn("changes", self._follow_changes())
        self.host_reports.recovery = self.recovery
        self._spawn("recovery", self.recovery.run(self._stop))
        self._spawn("migrations", self.migrations.run(self._stop, self.health_of))
        self._spawn("maintenance", self.maintenance.run(self._stop))
        self.host_watch.bind(self._loop)
        self.host_watch.seed(await asyncio.to_thread(self.store.compute.generations))
        self._spawn("host-watch", self.host_watch.run(self._stop))
        self._spawn("port-binding", self.port_binding.run(self._stop))
        if self.health is not None:
            self._spawn("health", self.health.run(self._stop))
            if self.judging is not None:
                self._spawn("judging", self.judging.run(self._stop))
        for name, task in self.insight.tasks(self._stop).items():
            self._spawn(name, task)
        # Announced before serving, so that no other controller takes this one's new
        # deliveries for orphans; a coordination backend that does not answer delays us
        # by one lease at most.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.presence.registered.wait(), self.config.coordination.ttl)
        ready = asyncio.ensure_future(self.dispatcher.ready.wait())
        failed = asyncio.ensure_future(self.failed.wait())
        await asyncio.wait({ready, failed}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        failed.cancel()
        if self.failed.is_set():
            raise StoreUnavailable("the dispatcher could not load pending notifications")
        # The alarm list is whatever the store holds: once per start of the controllers'
        # cluster, the singleton holder tells consumers to re-read it.
        self._spawn(
            "rebuilt",
            announce_rebuilt(
                self.presence,
                f"/vimha/{self.config.vim_connection_id}/cluster",
                self.holds_singleton,
                self.faults.announce_alarm_list_rebuilt,
                self._stop,
            ),
        )
        log.info("controller %s started", self.me)

    async def stop(self, grace: float = 5.0) -> None:
        self._stop.set()
        try:
            await asyncio.wait_for(self.dispatcher.stop(), grace)
        except TimeoutError:
            log.warning("dispatcher did not stop within %.1fs", grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.notifier.aclose()
        await self.coordination.close()
        await asyncio.to_thread(self.writer.stop)

    async def announce(self, what: str) -> None:
        """Tell the other controllers that `what` ("inventory": hosts and services,
        "subscriptions") was changed through this one."""
        key = self._counters[what]
        with contextlib.suppress(Temporary):
            self._seen[key] = await self.coordination.increment(key)

    async def _follow_changes(self) -> None:
        """What is declared through another controller's API is reloaded here too."""
        prefix = f"/vimha/{self.config.vim_connection_id}/changes/"
        mirror = Mirror(self.coordination, (prefix,))
        task = asyncio.create_task(mirror.run(self._stop, prefix))
        try:
            await mirror.ready.wait()
            while not self._stop.is_set():
                for what, key in self._counters.items():
                    entry = mirror.keys.get(key)
                    seen = int(entry.value) if entry else 0
                    if seen > self._seen.get(key, 0):
                        self._seen[key] = seen
                        await self._reload(what)
                mirror.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(mirror.changed.wait(), 5.0)
        finally:
            task.cancel()

    async def _reload(self, what: str) -> None:
        if what == "subscriptions":
            await asyncio.to_thread(self.subscriptions.reload)
        elif self.health is not None:
            await self.health.load_declared()

    async def _host_fenced(self, host: str, since: float | None) -> None:
        """A host's fencing is confirmed: its service groups' roles are freed, and its
        instances recovered (at once: the recovery loop is woken)."""
        self.recovery.wake.set()
        await self.groups.host_fenced(host, since)

    def recovery_hosts(self) -> dict[str, HostState]:
        """Each host as recovery sees it: known off once fenced here, or confirmed off (by
        fencing or by an operator) in the store since it failed."""
        health = self.health
        if health is None:
            return {}
        now = self.clock.now().timestamp()
        out = {}
        for name in health.hosts:
            cls = health.current.get(name)
            status = cls.health.value if cls else "UNKNOWN"
            failed = health.failed_at.get(name)
            known_off = status == "FENCED"
            if not known_off and failed is not None and status not in ("UP", "DEGRADED"):
                last = self.store.fence_records(name, limit=1)
                known_off = (
                    bool(last)
                    and last[0].result == "CONFIRMED"
                    and (last[0].finished_at.timestamp() >= failed)
                )
            out[name] = HostState(status, known_off, now - failed if failed else 0.0)
        return out

    def confirm_down(self, host: str, user: str) -> None:
        """`vimha hosts confirm-down`: the operator says the host is off; recovery goes on."""
        health = self.health
        if health is None or host not in health.hosts:
            raise NotFound(f"host {host} is not declared")
        cls = health.current.get(host)
        if cls is None or cls.health.value in ("UP", "DEGRADED"):
            raise Conflict(
                f"host {host} is {cls.health.value if cls else 'not judged yet'}: "
                "only a failed host can be confirmed off"
            )
        kind = cls.kind or FailureKind.HOST_UNREACHABLE
        health.failed_at.setdefault(host, self.clock.now().timestamp())
        health.fencer.confirm(host, kind, f"confirmed off by {user} (manual fencing)")
        self.recovery.wake.set()

    def health_of(self, host: str) -> str:
        """A host's health status as the health loop judges it now."""
        health = self.health
        cls = health.current.get(host) if health is not None else None
        return cls.health.value if cls is not None else "UNKNOWN"

    def host_views(self) -> dict[str, HostView]:
        """Each watched host's health and place, for placement: a host a maintenance
        session has taken out (draining or in maintenance) is MAINTENANCE here."""
        health = self.health
        if health is None:
            return {}
        modes = self.maintenance.modes
        out = {}
        for name in health.hosts:
            cls = health.current.get(name)
            status = cls.health.value if cls else "UNKNOWN"
            if name in modes and status in ("UP", "DEGRADED"):
                status = "MAINTENANCE"
            out[name] = HostView(status, health.locations.get(name, Location()))
        return out

    def maintenance_hosts(self) -> dict[str, HostInfo]:
        """Each host's health and whether it is heard, for maintenance sessions."""
        health = self.health
        if health is None:
            return {}
        out = {}
        for name, planes in health.planes.items():
            heard = any(
                (st := health.states.get((name, p))) is not None and st.status is PlaneStatus.UP
                for p in planes
            )
            out[name] = HostInfo(self.health_of(name), heard)
        return out

    def _host_modes(self, modes: dict[str, HostMode]) -> None:
        """The hosts sessions have taken out changed: the health loop shows them."""
        if self.health is not None:
            self.health.maintenance = {h: m.value for h, m in modes.items()}

    def declared_resources(self, host: str) -> HostResources | None:
        """The capacity and traits the operator declared for a host (config or API), with
        the traits vimha knows of it: BOTH_PLANES (it heartbeats on two planes or more),
        BMC (it can be fenced). Capacity None: none declared (the agent's is used)."""
        health = self.health
        cfg = health.hosts.get(host) if health is not None else None
        if cfg is None or health is None:
            return None
        traits = set(cfg.traits)
        if len(health.planes.get(host, ())) >= 2:
            traits.add("BOTH_PLANES")
        if cfg.bmc is not None:
            traits.add("BMC")
        c = self.config.compute
        cap = cfg.capacities
        return HostResources(
            host,
            cap.vcpus if cap else 0,
            cap.ram_mib if cap else 0,
            cap.disk_gib if cap else 0,
            cpu_ratio=c.cpu_allocation_ratio,
            ram_ratio=c.ram_allocation_ratio,
            disk_ratio=c.disk_allocation_ratio,
            traits=frozenset(traits),
        )

    def holds_singleton(self) -> bool:
        return self.elector.holding.role is Role.HOLDER

    async def _record_outcomes(self, batch: list[AttemptRecord]) -> None:
        await self.writer.acall(lambda uow: uow.record_attempts(batch))

    async def _checkpoints(self, every: float = 0.2) -> None:
        """Frequent non-blocking checkpoints keep the WAL short (see SqlStore.checkpoint)."""
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.store.checkpoint)
            except Exception:  # retried at the next tick; the WAL only grows meanwhile
                log.exception("store checkpoint failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), every)

    def _spawn(self, name: str, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        task.add_done_callback(self._watch)
        self._tasks.append(task)

    def _watch(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stop.is_set():
            return
        exc = task.exception()
        log.error("root task %s ended unexpectedly: %r", task.get_name(), exc)
        self.failed.set()
