"""The health loop with a fake clock and a real SQLite store: a stall of the controller's own
loop is not taken for dead hosts; real silence is."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.support.fakes import FakeClock
from vimha.config import load
from vimha.domain.errors import StoreUnavailable
from vimha.domain.heartbeat import Heartbeat
from vimha.drivers.sqlstore import SqlStore
from vimha.engine.faults import FaultService, SubscriptionCache
from vimha.engine.health import HealthMonitor


def monitor(tmp_path: Path) -> tuple[HealthMonitor, FakeClock, SqlStore]:
    config = load(
        None,
        {
            "auth": {"token_file": str(tmp_path / "t")},
            "heartbeat": {
                "interval": 0.1,
                "misses": 3,
                "up_after": 2,
                "listen": {"mgmt": "127.0.0.1:1", "storage": "127.0.0.1:2"},
            },
            "hosts": [{"name": "cmp-1", "key": "k" * 16, "location": {"rack": "r1"}}],
        },
    )
    store = SqlStore(f"sqlite:///{tmp_path / 's.db'}")
    store.upgrade()
    clock = FakeClock()
    faults = FaultService(
        store, clock, SubscriptionCache(store), "vim", "http://x", lambda jobs: None
    )
    return HealthMonitor(config, faults, clock), clock, store


def beat(m: HealthMonitor, clock: FakeClock, seq: int) -> None:
    for plane in ("mgmt", "storage"):
        m.on_heartbeat(Heartbeat("cmp-1", plane, os.urandom(16), seq, 0), clock.monotonic())


async def test_own_stall_is_not_a_dead_host(tmp_path: Path) -> None:
    m, clock, store = monitor(tmp_path)
    for seq in range(3):
        clock.advance(0.05)
        beat(m, clock, seq)
        await m.step()
    assert m.current["cmp-1"].health.value == "UP"
    clock.advance(2.0)  # the controller's loop was starved for 2 s
    await m.step()
    assert m.current["cmp-1"].health.value == "UP" and m.stalls == 1
    beat(m, clock, 10)  # the heartbeats queued meanwhile are read
    clock.advance(0.05)
    await m.step()
    assert m.current["cmp-1"].health.value == "UP"
    for _ in range(8):  # now real silence: 0.4 s > 0.3 s
        clock.advance(0.05)
        await m.step()
    assert m.current["cmp-1"].health.value == "DOWN"
    assert [a.fault_type for _, a in store.iter_alarms(0, 10)] == ["HOST_UNREACHABLE"]
    m.faults.writer.stop()
    store.close()


async def test_a_host_starting_up_is_unknown_until_grace_ends(tmp_path: Path) -> None:
    m, clock, store = monitor(tmp_path)
    beat(m, clock, 1)  # heard once, then silent (its agent is busy starting its services)
    for _ in range(20):
        clock.advance(0.05)
        await m.step()
    assert m.current["cmp-1"].health.value == "UNKNOWN"
    assert list(store.iter_alarms(0, 10)) == []
    clock.advance(5.0)  # past the grace period: still silent, now a failure
    await m.step()
    clock.advance(0.05)
    await m.step()
    assert m.current["cmp-1"].health.value == "DOWN"
    m.faults.writer.stop()
    store.close()


async def test_alarms_wait_in_order_for_a_store_that_does_not_answer(tmp_path: Path) -> None:
    """The controllers' database switching over: the health loop goes on judging (and would
    fence) while the host's alarm waits; it lands once the store answers, nothing lost."""
    m, clock, store = monitor(tmp_path)
    real = m.faults.ingest_async
    down = asyncio.Event()
    calls = 0

    async def flaky(events: object) -> object:
        nonlocal calls
        calls += 1
        if not down.is_set():
            raise StoreUnavailable("database error: connection refused")
        return await real(events)  # type: ignore[arg-type]

    m.faults.ingest_async = flaky  # type: ignore[method-assign]
    m._drainer = asyncio.create_task(m._drain_forever())
    for seq in range(3):
        clock.advance(0.05)
        beat(m, clock, seq)
        await m.step()
    for _ in range(8):  # silence: DOWN, judged without waiting for the store
        clock.advance(0.05)
        await m.step()
    assert m.current["cmp-1"].health.value == "DOWN"
    await asyncio.sleep(0.1)
    assert calls >= 1 and list(store.iter_alarms(0, 10)) == []  # refused, kept
    down.set()  # the store answers again
    for _ in range(40):
        await asyncio.sleep(0.05)
        if list(store.iter_alarms(0, 10)):
            break
    assert [a.fault_type for _, a in store.iter_alarms(0, 10)] == ["HOST_UNREACHABLE"]
    m._drainer.cancel()
    m.faults.writer.stop()
    store.close()
