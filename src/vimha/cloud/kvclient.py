"""A client of the embedded cloud's `kv` group (Redis) that writes at a steady rate and keeps
the proof: every write counts as acknowledged only once Redis confirmed it on a standby too
(WAIT 1), the way a client that must not lose data writes to an asynchronously replicated
pair. Used by the system tests and `bench/switchover.py`.

It reaches the active through `address()` (the load balancer, or the group's published
active), and samples every member's role at each write, to prove there never were two.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from vimha.drivers.redis_client import Redis, RedisError


@dataclass
class WriteLog:
    acknowledged: list[str] = field(default_factory=list)
    failed: int = 0
    writes: int = 0
    max_masters: int = 0
    outages: list[tuple[float, float]] = field(default_factory=list)  # (first failure, next ok)


async def masters(addresses: list[str], wait: float = 0.2) -> int:
    """How many of the members answer as a writable master right now."""

    async def role(address: str) -> bool:
        host, _, port = address.rpartition(":")
        r = Redis(host, int(port), wait)
        try:
            return (await r.info("replication")).get("role") == "master"
        except RedisError:
            return False
        finally:
            await r.aclose()

    return sum(await asyncio.gather(*(role(a) for a in addresses)))


async def write_steadily(
    address: Callable[[], Awaitable[str | None]],
    members: list[str],
    stop: asyncio.Event,
    log: WriteLog,
    every: float = 0.02,
    prefix: str = "k",
) -> None:
    client: Redis | None = None
    current = None
    failing_since: float | None = None
    i = 0
    while not stop.is_set():
        i += 1
        key = f"{prefix}{i}"
        log.writes += 1
        try:
            target = await address()
            if target is None:
                raise RedisError("no active")
            if target != current or client is None:
                if client is not None:
                    await client.aclose()
                host, _, port = target.rpartition(":")
                client, current = Redis(host, int(port), 0.5), target
            await client.call("SET", key, i)
            if int(await client.call("WAIT", 1, 500)) < 1:
                raise RedisError("not replicated")
            log.acknowledged.append(key)
            if failing_since is not None:
                log.outages.append((failing_since, time.monotonic()))
                failing_since = None
        except RedisError:
            log.failed += 1
            if failing_since is None:
                failing_since = time.monotonic()
            if client is not None:
                await client.aclose()
                client = None
        log.max_masters = max(log.max_masters, await masters(members))
        await asyncio.sleep(every)
    if client is not None:
        await client.aclose()


async def missing(address: str, keys: list[str]) -> list[str]:
    """The acknowledged keys the active does not have."""
    host, _, port = address.rpartition(":")
    r = Redis(host, int(port), 5)
    try:
        lost = []
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            values = await r.call("MGET", *chunk)
            lost += [k for k, v in zip(chunk, values, strict=True) if v is None]
        return lost
    finally:
        await r.aclose()
