"""The judging of hosts split across controllers (issue 22, Scale): two health loops on one
store and one coordination backend each judge their share of the hosts and see the other's
judgments; when one controller dies (its lease ends), the other takes its hosts over and
judges them (a host that failed with it is found failed)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.support.fakes import FakeClock
from vimha.config import load
from vimha.domain.heartbeat import Heartbeat
from vimha.drivers.coord_local import LocalCoordination
from vimha.drivers.sqlstore import SqlStore
from vimha.engine.faults import FaultService, SubscriptionCache
from vimha.engine.health import HealthMonitor
from vimha.engine.judging import Judging

HOSTS = [f"cmp-{n}" for n in range(30)]
PREFIX = "/vimha/vim/controllers/"


class Controller:
    def __init__(self, name: str, tmp_path: Path, clock: FakeClock, coord: LocalCoordination):
        config = load(
            None,
            {
                "vim_connection_id": "vim",
                "auth": {"token_file": str(tmp_path / "t")},
                "heartbeat": {
                    "interval": 0.1,
                    "misses": 3,
                    "up_after": 2,
                    "listen": {"mgmt": "127.0.0.1:1", "storage": "127.0.0.1:2"},
                },
                "judging": {"split": "on"},
                "hosts": [{"name": h, "key": "k" * 16, "location": {"rack": "r1"}} for h in HOSTS],
            },
        )
        self.name = name
        self.store = SqlStore(f"sqlite:///{tmp_path / 's.db'}")
        faults = FaultService(
            self.store, clock, SubscriptionCache(self.store), "vim", "http://x", lambda j: None
        )
        self.health = HealthMonitor(config, faults, clock)
        # three controllers configured (coordination.controllers), two started here
        self.judging = Judging(coord, "vim", name, "on", 200, 3)
        self.health.split_by(self.judging)
        self.lease = 0

    def close(self) -> None:
        self.health.faults.writer.stop()
        self.store.close()


async def test_each_host_is_judged_by_one_controller_and_taken_over_when_it_dies(
    tmp_path: Path,
) -> None:
    SqlStore(f"sqlite:///{tmp_path / 's.db'}").upgrade()
    clock = FakeClock()
    coord = LocalCoordination(clock)
    a, b = (Controller(n, tmp_path, clock, coord) for n in ("ctl-a", "ctl-b"))
    stop = asyncio.Event()
    for c in (a, b):
        c.lease = await coord.grant(3.0)
        await coord.put(PREFIX + c.name, "{}", c.lease)
    tasks = [asyncio.create_task(c.judging.run(stop)) for c in (a, b)]
    boot = os.urandom(16)
    seq = 0

    async def tick(beating: list[str], alive: list[Controller]) -> None:
        nonlocal seq
        seq += 1
        clock.advance(0.05)
        for c in alive:
            await coord.keepalive(c.lease)
            for host in beating:
                for plane in ("mgmt", "storage"):
                    c.health.on_heartbeat(Heartbeat(host, plane, boot, seq, 0), clock.monotonic())
        for c in alive:
            await c.health.step()
        await asyncio.sleep(0.005)  # the watches of the coordination backend

    for _ in range(40):
        await tick(HOSTS, [a, b])
    mine_a, mine_b = a.health.mine(), b.health.mine()
    assert mine_a and mine_b and not mine_a & mine_b and mine_a | mine_b == frozenset(HOSTS)
    # each judged its own hosts and sees the other's judgments of theirs
    for c in (a, b):
        assert {h: c.health.current[h].health.value for h in HOSTS} == dict.fromkeys(HOSTS, "UP")

    victim = sorted(mine_a)[0]
    others = [h for h in HOSTS if h != victim]
    tasks[0].cancel()  # ctl-a is killed
    # ctl-a is killed (no step, no renewal) as the victim falls silent: until ctl-a's lease
    # ends, nobody judges the victim; then ctl-b takes it over and finds it failed
    for _ in range(20):  # 1 s < the 3 s lease
        await tick(others, [b])
    assert b.health.current[victim].health.value == "UP"
    assert victim not in (b.health.mine() or ())
    for _ in range(200):
        await tick(others, [b])
        if b.health.current[victim].health.value == "DOWN":
            break
    assert b.health.mine() == frozenset(HOSTS)
    assert b.health.current[victim].health.value == "DOWN"
    await asyncio.sleep(0.2)
    alarms = [(a.managed_object_id, a.fault_type) for _, a in b.store.iter_alarms(0, 10)]
    assert alarms == [(victim, "HOST_UNREACHABLE")]
    # ctl-b shared its judgment: a controller started now sees the victim DOWN
    await asyncio.sleep(0.2)
    shared = b.judging.remote(victim)
    assert shared is not None and shared[0].health.value == "DOWN" and shared[1] is not None
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in (a, b):
        c.close()
