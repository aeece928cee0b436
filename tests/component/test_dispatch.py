"""The dispatcher with a fake notifier and fake clock over a real SQLite store: order per
subscriber, isolation between subscribers, retries, expiry, restart, spill."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.fakes import FakeClock, FakeNotifier
from vimha.domain.alarms import EventType, FaultEvent, Severity
from vimha.domain.delivery import DeliveryStatus, RetryPolicy
from vimha.domain.errors import StoreUnavailable
from vimha.domain.subscriptions import Subscription, SubscriptionFilter
from vimha.drivers.sqlstore import SqlStore
from vimha.engine.dispatch import Dispatcher
from vimha.engine.faults import FaultService, SubscriptionCache
from vimha.engine.takeover import readopt_own
from vimha.engine.writer import StoreWriter

FAST = RetryPolicy(initial=0.01, maximum=0.05, give_up_after=60, jitter=0.5)


@dataclass
class Rig:
    store: SqlStore
    clock: FakeClock
    notifier: FakeNotifier
    subs: SubscriptionCache
    dispatcher: Dispatcher
    faults: FaultService
    task: asyncio.Task[None]

    def subscribe(self, uri: str) -> Subscription:
        sub = Subscription(str(uuid.uuid4()), uri, SubscriptionFilter(), None, self.clock.now())
        self.store.add_subscription(sub)
        self.subs.put(sub)
        return sub

    def raise_alarms(self, n: int, start: int = 0) -> None:
        for i in range(start, start + n):
            self.faults.ingest(
                [
                    FaultEvent(
                        f"h{i}",
                        "F",
                        "c",
                        Severity.MAJOR,
                        EventType.EQUIPMENT_ALARM,
                        self.clock.now(),
                    )
                ]
            )

    async def until(self, predicate: object, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():  # type: ignore[operator]
                await asyncio.sleep(0.005)


def make_rig(path: Path, clock: FakeClock, notifier: FakeNotifier, **kw: object) -> Rig:
    store = SqlStore(f"sqlite:///{path}")
    store.upgrade()
    subs = SubscriptionCache(store)
    subs.reload()
    dispatcher = Dispatcher(
        store,
        notifier,
        subs,
        clock,
        kw.pop("policy", FAST),  # type: ignore[arg-type]
        "http://vim",
        flush_interval=0.01,
        **kw,
    )  # type: ignore[arg-type]
    faults = FaultService(store, clock, subs, "vim", "http://vim", dispatcher.submit)
    task = asyncio.get_running_loop().create_task(dispatcher.run())
    return Rig(store, clock, notifier, subs, dispatcher, faults, task)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = make_rig(tmp_path / "s.db", FakeClock(), FakeNotifier())
    await asyncio.sleep(0.02)
    yield r
    await r.dispatcher.stop()
    r.task.cancel()
    r.store.close()


def objects(bodies: list[dict[str, object]]) -> list[str]:
    """Managed objects of AlarmNotifications in arrival order, first receipt only."""
    seen: set[object] = set()
    out = []
    for b in bodies:
        if b["id"] in seen:
            continue
        seen.add(b["id"])
        if b["notificationType"] == "AlarmNotification":
            out.append(b["alarm"]["managedObjectId"])  # type: ignore[index]
    return out


async def test_order_is_kept_through_retries(rig: Rig) -> None:
    sub = rig.subscribe("http://a/cb")
    rig.notifier.fail["http://a/cb"] = 3
    rig.raise_alarms(20)
    await rig.until(lambda: len(rig.notifier.received["http://a/cb"]) == 20)
    assert objects(rig.notifier.received["http://a/cb"]) == [f"h{i}" for i in range(20)]
    await rig.dispatcher.flush()
    first = next(iter(rig.store.iter_deliveries(0, 1)))
    record = rig.store.get_delivery(first.id)
    assert record.subscription_id == sub.id
    assert [a.ok for a in record.attempts] == [False, False, False, True]
    assert record.status is DeliveryStatus.DELIVERED


async def test_a_dead_consumer_does_not_delay_the_others(rig: Rig) -> None:
    rig.subscribe("http://dead/cb")
    rig.subscribe("http://alive/cb")
    rig.notifier.blocked["http://dead/cb"] = asyncio.Event()  # never answers
    rig.raise_alarms(50)
    await rig.until(lambda: len(rig.notifier.received["http://alive/cb"]) == 50)
    assert rig.notifier.received["http://dead/cb"] == []
    assert len(rig.dispatcher.lanes) == 2


async def test_expired_notification_lets_the_next_flow(rig: Rig) -> None:
    rig.subscribe("http://a/cb")
    rig.raise_alarms(1)
    await rig.until(lambda: len(rig.notifier.received["http://a/cb"]) == 1)
    rig.notifier.fail_objects.add("h1")
    rig.raise_alarms(2, start=1)
    await rig.until(lambda: rig.notifier.calls >= 4)
    assert len(rig.notifier.received["http://a/cb"]) == 1  # h2 waits behind h1
    rig.clock.advance(61)  # beyond give_up_after
    await rig.until(lambda: len(rig.notifier.received["http://a/cb"]) == 2)
    assert objects(rig.notifier.received["http://a/cb"]) == ["h0", "h2"]
    await rig.dispatcher.flush()
    statuses = [d.status for d in rig.store.iter_deliveries(0, 10)]
    assert statuses.count(DeliveryStatus.EXPIRED) == 1


async def test_restart_delivers_what_was_stored(tmp_path: Path) -> None:
    clock, notifier = FakeClock(), FakeNotifier()
    first = make_rig(tmp_path / "s.db", clock, notifier)
    await asyncio.sleep(0.02)
    first.subscribe("http://a/cb")
    notifier.blocked["http://a/cb"] = asyncio.Event()
    first.raise_alarms(10)
    await asyncio.sleep(0.05)
    await first.dispatcher.stop()  # as if the controller died: nothing was delivered
    first.task.cancel()
    first.store.close()
    assert notifier.received["http://a/cb"] == []
    del notifier.blocked["http://a/cb"]
    second = make_rig(tmp_path / "s.db", clock, notifier)
    await second.until(lambda: len(notifier.received["http://a/cb"]) == 10)
    assert objects(notifier.received["http://a/cb"]) == [f"h{i}" for i in range(10)]
    await second.dispatcher.stop()
    second.task.cancel()
    second.store.close()


async def test_spilled_lane_refills_from_the_store_in_order(tmp_path: Path) -> None:
    clock, notifier = FakeClock(), FakeNotifier()
    r = make_rig(tmp_path / "s.db", clock, notifier, lane_memory=10)
    await asyncio.sleep(0.02)
    r.subscribe("http://a/cb")
    gate = notifier.blocked["http://a/cb"] = asyncio.Event()
    r.raise_alarms(45)
    await asyncio.sleep(0.05)
    assert len(r.dispatcher.lanes[next(iter(r.dispatcher.lanes))].queue) == 10
    gate.set()
    await r.until(lambda: len(notifier.received["http://a/cb"]) >= 45)
    assert objects(notifier.received["http://a/cb"]) == [f"h{i}" for i in range(45)]
    await r.dispatcher.stop()
    r.task.cancel()
    r.store.close()


async def test_deleted_subscription_drops_its_lane(rig: Rig) -> None:
    sub = rig.subscribe("http://a/cb")
    gate = rig.notifier.blocked["http://a/cb"] = asyncio.Event()
    rig.raise_alarms(5)
    await asyncio.sleep(0.05)
    rig.store.delete_subscription(sub.id)
    rig.subs.drop(sub.id)
    gate.set()
    await rig.until(lambda: not rig.dispatcher.lanes[sub.id].queue)
    assert len(rig.notifier.received["http://a/cb"]) <= 1
    await rig.dispatcher.flush()  # outcome of the in-flight one: no row to attach to, no error


async def test_notification_body_follows_sol003(rig: Rig) -> None:
    sub = rig.subscribe("http://a/cb")
    rig.raise_alarms(1)
    rig.faults.ingest(
        [
            FaultEvent(
                "h0",
                "F",
                "c",
                Severity.CLEARED,
                EventType.EQUIPMENT_ALARM,
                datetime(2026, 1, 1, tzinfo=UTC),
            )
        ]
    )
    await rig.until(lambda: len(rig.notifier.received["http://a/cb"]) == 2)
    raised, cleared = rig.notifier.received["http://a/cb"]
    assert raised["notificationType"] == "AlarmNotification"
    assert raised["subscriptionId"] == sub.id
    assert raised["_links"]["subscription"]["href"] == f"http://vim/vimfm/v1/subscriptions/{sub.id}"
    assert raised["alarm"]["perceivedSeverity"] == "MAJOR"
    assert cleared["notificationType"] == "AlarmClearedNotification"
    assert cleared["alarmId"] == raised["alarm"]["id"]
    assert cleared["_links"]["alarm"]["href"].endswith(raised["alarm"]["id"])
    assert {"id", "timeStamp", "alarmClearedTime"} <= set(cleared)


async def test_adopted_jobs_of_a_gone_controller_are_delivered_in_order(
    tmp_path: Path,
) -> None:
    """Controller a stored five notifications and died before delivering them; controller b,
    which has one of its own in flight and two queued, adopts a's: they go to their place by
    seq, the one in flight is not sent twice, nothing is lost."""
    clock, notifier = FakeClock(), FakeNotifier()
    a = make_rig(tmp_path / "s.db", clock, notifier, owner="a")
    a.store.owner = "a"
    await asyncio.sleep(0.02)
    a.subscribe("http://c/cb")
    gate = notifier.blocked["http://c/cb"] = asyncio.Event()
    a.raise_alarms(5)
    await asyncio.sleep(0.05)
    await a.dispatcher.stop()  # died: nothing delivered
    a.task.cancel()
    a.store.close()
    notifier.blocked["http://c/cb"] = gate = asyncio.Event()
    b = make_rig(tmp_path / "s.db", clock, notifier, owner="b")
    b.store.owner = "b"
    await b.dispatcher.ready.wait()
    assert not b.dispatcher.lanes  # a's backlog is not b's
    b.raise_alarms(3, start=5)
    await asyncio.sleep(0.05)  # h5 in flight, h6 and h7 queued
    with b.store.unit_of_work() as uow:
        adopted = uow.adopt_deliveries(["a"], "b", 100)
    assert len(adopted) == 5
    b.dispatcher.adopt(adopted)
    b.dispatcher.adopt(adopted)  # twice (a retry): still once each
    await asyncio.sleep(0.02)
    gate.set()
    await b.until(lambda: len(notifier.received["http://c/cb"]) >= 8)
    await asyncio.sleep(0.05)
    got = [x["alarm"]["managedObjectId"] for x in notifier.received["http://c/cb"]]
    assert got == ["h5", "h0", "h1", "h2", "h3", "h4", "h6", "h7"]
    await b.dispatcher.stop()
    b.task.cancel()
    assert b.store.pending_deliveries(100) == []
    b.store.close()


async def test_every_event_of_concurrent_requests_is_notified(rig: Rig) -> None:
    """Requests ingesting at once share group commits; they wake in any order afterwards.
    The jobs reach the dispatcher in commit order all the same (a job handed over after a
    later one was skipped: its notification never sent)."""
    rig.subscribe("http://a/cb")
    threads, each = 8, 40

    def worker(t: int) -> None:
        rig.raise_alarms(each, start=t * 1000)

    await asyncio.gather(*(asyncio.to_thread(worker, t) for t in range(threads)))
    wanted = {f"h{t * 1000 + i}" for t in range(threads) for i in range(each)}
    await rig.until(lambda: set(objects(rig.notifier.received["http://a/cb"])) >= wanted)
    got = objects(rig.notifier.received["http://a/cb"])
    assert len(got) == threads * each
    await rig.dispatcher.flush()
    assert rig.store.pending_deliveries(10_000, None, 0, None) == []  # recorded delivered


class AckLostStore(SqlStore):
    """Commits, then fails as a database gone at that moment does: the commit landed, but
    its caller is told the store is unavailable (once, when `lose` is set)."""

    lose = False

    @contextlib.contextmanager
    def unit_of_work(self) -> Iterator[Any]:
        with super().unit_of_work() as uow:
            yield uow
        if self.lose:
            self.lose = False
            raise StoreUnavailable("server closed the connection unexpectedly")


async def test_a_commit_whose_acknowledgement_was_lost_is_still_notified(
    tmp_path: Path,
) -> None:
    """The writer retries the event; the retry finds the alarm raised (a repetition: no
    notification). The first commit's delivery is in the store, handed to no dispatcher
    until the controller looks again at its own pending ones (`readopt_own`)."""
    store = AckLostStore(f"sqlite:///{tmp_path / 's.db'}")
    store.upgrade()
    store.owner = "me"
    clock, notifier = FakeClock(), FakeNotifier()
    subs = SubscriptionCache(store)
    subs.reload()
    dispatcher = Dispatcher(store, notifier, subs, clock, FAST, "http://vim", 0.01, owner="me")
    loop = asyncio.get_running_loop()
    wanted, stop = asyncio.Event(), asyncio.Event()
    writer = StoreWriter(store, lambda: loop.call_soon_threadsafe(wanted.set))
    faults = FaultService(store, clock, subs, "vim", "http://vim", dispatcher.submit, writer)
    tasks = [
        loop.create_task(dispatcher.run()),
        loop.create_task(readopt_own(store, "me", dispatcher, wanted, stop, settle=0.05)),
    ]
    rig = Rig(store, clock, notifier, subs, dispatcher, faults, tasks[0])
    try:
        rig.subscribe("http://a/cb")
        await asyncio.to_thread(rig.raise_alarms, 1, 0)
        # The first delivery's outcome recorded before the loss is armed: the dispatcher's
        # write-back would otherwise be the unit of work that loses its acknowledgement.
        await rig.until(lambda: len(objects(notifier.received["http://a/cb"])) == 1)
        await rig.dispatcher.flush()
        store.lose = True
        changes = await asyncio.to_thread(
            faults.ingest,
            [FaultEvent("h1", "F", "c", Severity.MAJOR, EventType.EQUIPMENT_ALARM, clock.now())],
        )
        assert [c.reason for c in changes] == ["F on h1 repeated"]  # the retry
        await asyncio.to_thread(rig.raise_alarms, 1, 2)
        await rig.until(lambda: len(objects(notifier.received["http://a/cb"])) == 3)
        assert sorted(objects(notifier.received["http://a/cb"])) == ["h0", "h1", "h2"]
    finally:
        stop.set()
        await dispatcher.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.stop()
        store.close()
