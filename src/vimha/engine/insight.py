"""Insight (issue 20) assembled for the runtime: the correlation rules and their loop, the
incidents and their loop, the HA metrics, and the housekeeping of the state journal. The
loops act only on the controller holding the singleton role."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from vimha.config import Config
from vimha.domain.clock import Clock
from vimha.domain.errors import Temporary
from vimha.engine.availability import Availability
from vimha.engine.correlation import Correlator, RulesSource
from vimha.engine.faults import FaultService
from vimha.engine.health import HealthMonitor
from vimha.engine.incidents import IncidentService
from vimha.ports.store import Store

log = logging.getLogger("vimha.insight")
PURGE_EVERY = 3600.0


class Insight:
    def __init__(
        self,
        config: Config,
        store: Store,
        faults: FaultService,
        clock: Clock,
        health: HealthMonitor | None,
        holds: Callable[[], bool],
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.health = health
        self.holds = holds
        self.rules = RulesSource(config.correlation.rules_file, config.topology.hierarchy)
        self.correlator = Correlator(config, store, faults, clock, self.rules, holds)
        self.incidents = IncidentService(
            config, store, faults.writer, clock, lambda: self.rules.rules, self.last_heard
        )
        self.availability = Availability(
            store, clock, config.incidents.all_targets(), self.watched_hosts
        )

    def watched_hosts(self) -> list[str]:
        return list(self.health.hosts) if self.health is not None else []

    def last_heard(self, host: str) -> datetime | None:
        """When a heartbeat of the host was last heard on any plane (wall time), if ever:
        the failure's time as far as the controller knows it."""
        health = self.health
        if health is None:
            return None
        heard = [
            st.last_heard
            for p in health.planes.get(host, ())
            if (st := health.states.get((host, p))) is not None and st.last_heard is not None
        ]
        if not heard:
            return None
        ago = self.clock.monotonic() - max(heard)
        return self.clock.now() - timedelta(seconds=ago)

    def tasks(self, stop: asyncio.Event) -> dict[str, Coroutine[Any, Any, None]]:
        """The root tasks to supervise, by name."""
        out: dict[str, Coroutine[Any, Any, None]] = {"journal-purge": self._purge(stop)}
        if self.config.correlation.enabled:
            out["correlation"] = self.correlator.run(stop)
        if self.config.incidents.enabled:
            out["incidents"] = self.incidents.run(stop, self.holds)
        return out

    async def _purge(self, stop: asyncio.Event) -> None:
        """The holder deletes journal rows older than `metrics.journal_retention`."""
        keep = timedelta(seconds=self.config.metrics.journal_retention)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PURGE_EVERY)
            if stop.is_set() or not self.holds():
                continue
            before = self.clock.now() - keep
            try:
                n = await asyncio.to_thread(
                    self.incidents.writer.call,
                    lambda uow, before=before: uow.insight.purge_journal(before),
                )
            except Temporary as exc:
                log.warning("journal purge failed, retried later: %s", exc)
                continue
            if n:
                log.info("state journal: %d row(s) older than %s purged", n, before)
