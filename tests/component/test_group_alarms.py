"""The controllers' group alarms (engine/groups.py) with a real SQLite store: a switch-over
fast enough to begin and end between two judgements (a standby takes a slot within tens of
milliseconds) is in the alarm history all the same, raised and cleared."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.support.fakes import FakeClock
from vimha.drivers.clock import SystemClock
from vimha.drivers.coord_local import LocalCoordination
from vimha.drivers.sqlstore import SqlStore
from vimha.engine.faults import FaultService, SubscriptionCache
from vimha.engine.groups import GroupWatcher

GROUP = "/vimha/vim/groups/kv/"


def member(name: str, slot: int | None, epoch: int | None) -> str:
    doc: dict[str, Any] = {"member": name, "host": name, "healthy": True, "slot": slot}
    doc |= {"epoch": epoch, "role": "active" if slot is not None else "standby", "t": 1.0}
    return json.dumps(doc)


def holding(name: str, epoch: int) -> str:
    return json.dumps({"member": name, "host": name, "epoch": epoch, "t": 1.0})


async def until_seen(watcher: GroupWatcher, key: str, present: bool) -> None:
    async with asyncio.timeout(5):
        while (key in watcher.mirror.keys) != present:
            await asyncio.sleep(0.01)


async def test_a_switch_over_between_two_judgements_is_raised_and_cleared(
    tmp_path: Path,
) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 's.db'}")
    store.upgrade()
    faults = FaultService(
        store, FakeClock(), SubscriptionCache(store), "vim", "http://x", lambda jobs: None
    )
    coord = LocalCoordination(SystemClock())
    spec = {"name": "kv", "policy": "active-standby", "members": ["a", "b"]}
    await coord.put(GROUP + "spec", json.dumps(spec))
    await coord.put(GROUP + "members/a", member("a", 0, 1))
    await coord.put(GROUP + "members/b", member("b", None, None))
    await coord.put(GROUP + "slots/0", holding("a", 1))
    watcher = GroupWatcher(coord, "vim", faults, FakeClock(), lambda: True)
    stop = asyncio.Event()
    mirror = asyncio.create_task(watcher.mirror.run(stop, "/vimha/vim/"))
    try:
        await watcher.mirror.ready.wait()
        await until_seen(watcher, GROUP + "slots/0", True)
        await watcher._judge()  # complete: formed, nothing to say
        assert list(store.iter_alarms(0, 10)) == []

        # a released, b took the slot: all of it before the next judgement
        await coord.put(GROUP + "released/0", json.dumps({"epoch": 1, "t": 2.0, "reason": "x"}))
        await coord.put(GROUP + "members/a", member("a", None, None))
        await coord.put(GROUP + "slots/0", holding("b", 2))
        await coord.put(GROUP + "members/b", member("b", 0, 2))
        async with asyncio.timeout(5):
            while '"b"' not in watcher.mirror.keys[GROUP + "slots/0"].value:
                await asyncio.sleep(0.01)
        await watcher._judge()
        alarms = [alarm for _, alarm in store.iter_alarms(0, 10)]
        assert [(a.fault_type, a.perceived_severity.value) for a in alarms] == [
            ("SERVICE_GROUP_SWITCHOVER", "CLEARED")
        ]
        assert "a -> b" in alarms[0].fault_details[0]
        await watcher._judge()  # said once
        assert len(list(store.iter_alarms(0, 10))) == 1
    finally:
        stop.set()
        mirror.cancel()  # its watch waits for the next change
        await asyncio.gather(mirror, return_exceptions=True)
        faults.writer.stop()
        store.close()
