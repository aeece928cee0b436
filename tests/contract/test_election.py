"""Electors on each coordination driver (a real 3-member etcd cluster, and local): one holder
at a time, growing epochs, a holder that cannot renew steps down before anyone takes over,
and a resigning holder's successor does not wait for the lease to expire."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import free_port
from vimha.domain.election import Holding, LeasePolicy, Role
from vimha.drivers.clock import SystemClock
from vimha.engine.election import Elector
from vimha.ports.coordination import Coordination, CoordinationUnavailable

# etcd grants whole-second TTLs, at least ~1.5 x its election timeout (500 ms here).
POLICY = LeasePolicy(ttl=1.0, renew=0.1, demote_after=0.6)


class Cut:
    """A coordination backend this member can no longer reach for renewals (a partition)."""

    def __init__(self, inner: Coordination) -> None:
        self.inner = inner
        self.cut = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def keepalive(self, lease: int) -> float:
        if self.cut:
            raise CoordinationUnavailable("partitioned")
        return await self.inner.keepalive(lease)


def elector(coord: object, key: str, name: str, log: list[tuple[float, str, Role, int]]) -> Elector:
    def changed(h: Holding) -> None:
        log.append((time.monotonic(), name, h.role, h.epoch))

    return Elector(coord, key, name, POLICY, SystemClock(), changed)  # type: ignore[arg-type]


def holders_over_time(log: list[tuple[float, str, Role, int]]) -> int:
    """The most members that held the role at the same moment."""
    holding: set[str] = set()
    most = 0
    for _, name, role, _ in sorted(log):
        (holding.add if role is Role.HOLDER else holding.discard)(name)
        most = max(most, len(holding))
    return most


async def test_one_holder_and_a_safe_takeover(coord: Coordination) -> None:
    key = f"/test/role/{free_port()}"
    log: list[tuple[float, str, Role, int]] = []
    cut = Cut(coord)
    a, b = elector(cut, key, "a", log), elector(coord, key, "b", log)
    await a.step()  # a campaigns first and wins
    for _ in range(5):
        await b.step()
        await a.step()
        await asyncio.sleep(0.1)
    assert a.holding.role is Role.HOLDER and b.holding.role is Role.FOLLOWER
    first_epoch = a.holding.epoch

    cut.cut = True  # a can no longer renew
    deadline = time.monotonic() + 10
    while b.holding.role is not Role.HOLDER:
        assert time.monotonic() < deadline, log
        await a.step()
        await b.step()
        await asyncio.sleep(0.05)
    demoted = next(t for t, n, r, _ in log if n == "a" and r is Role.FOLLOWER)
    took_over = next(t for t, n, r, _ in log if n == "b" and r is Role.HOLDER)
    assert demoted < took_over  # a stepped down before its lease could expire
    assert b.holding.epoch > first_epoch  # a newer fencing token
    assert holders_over_time(log) == 1


async def test_a_resigning_holder_hands_over_at_once(coord: Coordination) -> None:
    key = f"/test/resign/{free_port()}"
    log: list[tuple[float, str, Role, int]] = []
    a, b = elector(coord, key, "a", log), elector(coord, key, "b", log)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = asyncio.create_task(a.run(stop_a))
    await asyncio.sleep(0.3)
    task_b = asyncio.create_task(b.run(stop_b))
    await asyncio.sleep(0.3)
    assert a.holding.role is Role.HOLDER and b.holding.role is Role.FOLLOWER
    stop_a.set()
    await task_a  # resigns: revokes its lease
    t0 = time.monotonic()
    while b.holding.role is not Role.HOLDER:
        assert time.monotonic() - t0 < POLICY.ttl, "successor waited for the lease to expire"
        await asyncio.sleep(0.02)
    stop_b.set()
    await task_b
    assert holders_over_time(log) == 1
