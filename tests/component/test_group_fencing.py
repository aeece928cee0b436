"""The controllers' side of a fenced host's roles (engine/groups.py): once its BMC confirmed
it off, the host is marked fenced in the coordination backend and its members' leases are
revoked, so that standbys take its roles. The backend may fail at that very moment (the
fenced host held the etcd leader: an election is under way); it is tried again until done."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from vimha.drivers.clock import SystemClock
from vimha.drivers.coord_local import LocalCoordination
from vimha.engine.groups import GroupWatcher
from vimha.ports.coordination import CoordinationUnavailable

FENCED = "/vimha/vim/fenced/h1"
MEMBER = "/vimha/vim/groups/db/members/h1"


class ElectingCoordination(LocalCoordination):
    """Refuses the first `failures` writes of a fenced mark, as etcd does while electing."""

    def __init__(self, failures: int) -> None:
        super().__init__(SystemClock())
        self.failures = failures

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        if key == FENCED and self.failures > 0:
            self.failures -= 1
            raise CoordinationUnavailable("etcdserver: leader changed")
        return await super().put(key, value, lease)


async def test_a_fenced_host_is_freed_even_when_the_backend_failed_at_first() -> None:
    coord = ElectingCoordination(failures=3)
    lease = await coord.grant(30)
    await coord.put(MEMBER, json.dumps({"member": "h1", "host": "h1", "slot": 0}), lease)
    faults: Any = None  # no group declared: no alarm to raise
    watcher = GroupWatcher(coord, "vim", faults, SystemClock(), lambda: True)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        await watcher.host_fenced("h1", failed_at=1.0)
        assert await coord.get(FENCED) is None  # the first try failed
        async with asyncio.timeout(5):
            while await coord.get(FENCED) is None or await coord.get(MEMBER) is not None:
                await asyncio.sleep(0.05)
        mark = await coord.get(FENCED)
        assert mark is not None and json.loads(mark.value)["failedAt"] == 1.0
        assert not watcher.unfreed
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
