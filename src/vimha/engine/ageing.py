"""Ageing (FAULT-7): the retention policy, changeable at run time, enforced periodically."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from vimha.domain.clock import Clock
from vimha.domain.retention import RetentionPolicy, plan_purge
from vimha.engine import metrics
from vimha.ports.store import PurgeCounts, Store

log = logging.getLogger("vimha.ageing")
SETTING = "retention_policy"


class RetentionService:
    def __init__(self, store: Store, clock: Clock, default: RetentionPolicy) -> None:
        self.store = store
        self.clock = clock
        self.default = default

    def current(self) -> RetentionPolicy:
        stored = self.store.get_setting(SETTING)
        return RetentionPolicy.from_dict(stored, self.default) if stored else self.default

    def update(self, data: dict[str, Any]) -> RetentionPolicy:
        """Merge `data` over the current policy and store it; raises InvalidInput."""
        policy = RetentionPolicy.from_dict(data, self.current())
        self.store.put_setting(SETTING, policy.to_dict())
        log.info("retention policy changed: %s", policy.to_dict())
        return policy

    def run_once(self) -> PurgeCounts:
        plan = plan_purge(self.current(), self.clock.now())
        counts = self.store.purge(plan)
        for kind in ("alarms", "history", "deliveries", "notifications"):
            metrics.PURGED.labels(kind).inc(getattr(counts, kind))
        if any((counts.alarms, counts.history, counts.deliveries, counts.notifications)):
            log.info("%s: removed %s", plan.reason, counts)
        return counts


async def ageing_loop(
    service: RetentionService,
    interval: float,
    stop: asyncio.Event,
    mine: Callable[[], bool] = lambda: True,
) -> None:
    """Every `interval`, on the controller whose turn it is (`mine`)."""
    while not stop.is_set():
        try:
            if mine():
                await asyncio.to_thread(service.run_once)
        except Exception:  # a failed run is retried at the next interval
            log.exception("ageing run failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
