"""AlarmListRebuiltNotification: one per start of the controllers' cluster, sent by the
singleton holder; not one per controller start, nor per change of holder. Two controllers
(two runtimes on one store and one coordination backend shared by the processes of a host),
a real consumer."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

from tests.component.conftest import ADMIN
from tests.support.consumer import ConsumerProcess
from vimha.config import load
from vimha.controller import open_store
from vimha.domain.subscriptions import Subscription, SubscriptionFilter
from vimha.drivers.clock import SystemClock
from vimha.drivers.http_notifier import HttpNotifier
from vimha.engine.runtime import Runtime

REBUILT = "AlarmListRebuiltNotification"


def runtime(tmp_path: Path, name: str) -> Runtime:
    config = load(
        None,
        {
            "controller_name": name,
            "store": {"url": f"sqlite:///{tmp_path / 'vimha.db'}"},
            "coordination": {
                "url": f"local://{tmp_path / 'coord.db'}",
                "ttl": 1.0,
                "renew": 0.1,
                "demote_after": 0.6,
            },
            "delivery": {"process": False, "initial_backoff": 0.05, "timeout": 2},
            "auth": {"tokens": [{"name": "admin", "token": ADMIN, "role": "admin"}]},
        },
    )
    store = open_store(config, migrate=True)
    return Runtime(config, store, HttpNotifier(2, 2), SystemClock())


async def rebuilt(consumer: ConsumerProcess, settle: float = 2.0) -> int:
    """How many the consumer received, once nothing more came for `settle` seconds."""
    await asyncio.sleep(settle)
    return sum(n["notificationType"] == REBUILT for n in consumer.received())


async def holder(*rts: Runtime) -> Runtime:
    for _ in range(100):
        holding = [rt for rt in rts if rt.holds_singleton()]
        if len(holding) == 1:
            return holding[0]
        await asyncio.sleep(0.1)
    raise AssertionError("no single holder")


async def stop(rt: Runtime) -> None:
    await rt.stop()
    rt.store.close()


async def test_one_alarm_list_rebuilt_per_start_of_the_cluster(
    tmp_path: Path, consumer: ConsumerProcess
) -> None:
    first = runtime(tmp_path, "ctl-a")
    first.store.add_subscription(
        Subscription(str(uuid.uuid4()), consumer.url, SubscriptionFilter(), None, datetime.now(UTC))
    )
    a, b = first, runtime(tmp_path, "ctl-b")
    await asyncio.gather(a.start(), b.start())
    try:
        await holder(a, b)
        assert await rebuilt(consumer) == 1, "both controllers started: one cluster start"
        gone = await holder(a, b)
        await stop(gone)  # the holder leaves: the other takes the role over, no new start
        survivor = b if gone is a else a
        await holder(survivor)
        again = runtime(tmp_path, "ctl-a" if gone is a else "ctl-b")
        await again.start()  # a controller joins the running cluster
        assert await rebuilt(consumer) == 1, "a change of holder is no start of the cluster"
        await asyncio.gather(stop(survivor), stop(again))
        a, b = runtime(tmp_path, "ctl-a"), runtime(tmp_path, "ctl-b")
        await asyncio.gather(a.start(), b.start())  # the whole cluster started again
        await holder(a, b)
        assert await rebuilt(consumer) == 2
    finally:
        for rt in (a, b):
            if not rt._stop.is_set():
                await stop(rt)
