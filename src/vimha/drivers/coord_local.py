"""Coordination for one host (`local://`): the same contract as etcd, kept in this process's
memory, with leases on an injected clock. Declared not distributed: a deployment of several
controllers must name a distributed backend."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

from vimha.domain.clock import Clock
from vimha.ports.coordination import Change, Characteristics, Entry, LeaseLost


class LocalCoordination:
    characteristics = Characteristics(distributed=False)

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.revision = 0
        self.keys: dict[str, Entry] = {}
        self.leases: dict[int, tuple[float, float]] = {}  # id -> (ttl, expires at)
        self.ids = itertools.count(1)
        self.log: list[Change] = []
        # set, then replaced, at every change: watchers wait on the one current when they
        # last looked (no lock: a Condition's lock could be left held by a watcher cancelled
        # while it re-acquired it, Python 3.11, and every writer then hung)
        self.changed = asyncio.Event()

    def _expire(self) -> None:
        now = self.clock.monotonic()
        for lease, (_, until) in list(self.leases.items()):
            if until <= now:
                self._drop_lease(lease)

    def _drop_lease(self, lease: int) -> None:
        self.leases.pop(lease, None)
        for key, entry in list(self.keys.items()):
            if entry.lease == lease:
                self._record("DELETE", key, "")

    def _record(self, kind: str, key: str, value: str, lease: int = 0) -> None:
        self.revision += 1
        if kind == "DELETE":
            self.keys.pop(key, None)
        else:
            self.keys[key] = Entry(key, value, self.revision, lease)
        self.log.append(Change(kind, key, value, self.revision))
        del self.log[:-10000]

    async def _notify(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    async def grant(self, ttl: float) -> int:
        lease = next(self.ids)
        self.leases[lease] = (ttl, self.clock.monotonic() + ttl)
        return lease

    async def keepalive(self, lease: int) -> float:
        self._expire()
        if lease not in self.leases:
            await self._notify()
            raise LeaseLost(f"lease {lease} expired")
        ttl, _ = self.leases[lease]
        self.leases[lease] = (ttl, self.clock.monotonic() + ttl)
        return ttl

    async def revoke(self, lease: int) -> None:
        self._drop_lease(lease)
        await self._notify()

    def _usable(self, lease: int) -> None:
        if lease and lease not in self.leases:
            raise LeaseLost(f"lease {lease} expired")

    async def create(self, key: str, value: str, lease: int = 0) -> bool:
        self._expire()
        self._usable(lease)
        if key in self.keys:
            return False
        self._record("PUT", key, value, lease)
        await self._notify()
        return True

    async def get(self, key: str) -> Entry | None:
        self._expire()
        return self.keys.get(key)

    async def list(self, prefix: str) -> tuple[int, list[Entry]]:
        self._expire()
        entries = [e for k, e in sorted(self.keys.items()) if k.startswith(prefix)]
        return self.revision, entries

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        self._expire()
        self._usable(lease)
        self._record("PUT", key, value, lease)
        await self._notify()
        return self.revision

    async def replace(self, key: str, value: str, revision: int, lease: int = 0) -> bool:
        self._expire()
        self._usable(lease)
        entry = self.keys.get(key)
        if entry is None or entry.revision != revision:
            return False
        self._record("PUT", key, value, lease)
        await self._notify()
        return True

    async def delete(self, key: str, revision: int | None = None) -> bool:
        self._expire()
        entry = self.keys.get(key)
        if entry is None or (revision is not None and entry.revision != revision):
            return False
        self._record("DELETE", key, "")
        await self._notify()
        return True

    async def increment(self, key: str) -> int:
        entry = await self.get(key)
        value = int(entry.value) + 1 if entry else 1
        self._record("PUT", key, str(value))
        await self._notify()
        return value

    async def watch(self, prefix: str, after: int) -> AsyncIterator[Change]:
        seen = after
        while True:
            changed = self.changed
            self._expire()
            for change in [c for c in self.log if c.revision > seen]:
                seen = change.revision
                if change.key.startswith(prefix):
                    yield change
            with contextlib.suppress(TimeoutError):  # leases expire too: look again
                await asyncio.wait_for(changed.wait(), 0.1)

    async def close(self) -> None:
        return None
