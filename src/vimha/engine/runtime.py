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

from vimha.config import Config
from vimha.domain.alarms import Location
from vimha.domain.clock import Clock
from vimha.domain.election import Role
from vimha.domain.errors import StoreUnavailable, Temporary
from vimha.drivers.coord_mirror import Mirror
from vimha.drivers.coordination import open_coordination
from vimha.engine.ageing import RetentionService, ageing_loop
from vimha.engine.dispatch import Dispatcher
from vimha.engine.dispatch_process import DispatcherProcess
from vimha.engine.election import Elector
from vimha.engine.faults import FaultService, SubscriptionCache
from vimha.engine.groups import GroupWatcher
from vimha.engine.health import HealthMonitor
from vimha.engine.services import ServiceRegistry
from vimha.engine.takeover import Presence, adopt_orphans, readopt_own
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
        if self.health is not None:
            self.health.on_fenced = self.groups.host_fenced
            self.health.on_back = self.groups.host_back
        self._counters = {
            what: f"/vimha/{config.vim_connection_id}/changes/{what}"
            for what in ("inventory", "subscriptions")
        }
        self._seen: dict[str, int] = {}
        self.started_at = clock.now()
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
        info = {"api": self.config.api.base_url, "pid": os.getpid()}
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
        self._spawn("changes", self._follow_changes())
        if self.health is not None:
            self._spawn("health", self.health.run(self._stop))
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
        # The alarm list is whatever the store holds; tell consumers to re-read it.
        jobs = await asyncio.to_thread(self.faults.announce_alarm_list_rebuilt)
        log.info("controller started; AlarmListRebuiltNotification to %d subscribers", len(jobs))

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
