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


async def test_a_slot_taken_passing_over_a_fresher_member_is_alarmed_until_the_group_is_whole(
    tmp_path: Path,
) -> None:
    """Issue 22: a standby that took a slot passing over a fresher one unable to serve says
    so in its holding; the controllers raise what may be lost, and clear it once every member
    is healthy again."""
    store = SqlStore(f"sqlite:///{tmp_path / 's.db'}")
    store.upgrade()
    faults = FaultService(
        store, FakeClock(), SubscriptionCache(store), "vim", "http://x", lambda jobs: None
    )
    coord = LocalCoordination(SystemClock())
    spec = {"name": "kv", "policy": "active-standby", "members": ["a", "b", "c"]}
    await coord.put(GROUP + "spec", json.dumps(spec))
    for name, slot, epoch in (("a", 0, 1), ("b", None, None), ("c", None, None)):
        await coord.put(GROUP + f"members/{name}", member(name, slot, epoch))
    await coord.put(GROUP + "slots/0", holding("a", 1))
    watcher = GroupWatcher(coord, "vim", faults, FakeClock(), lambda: True)
    stop = asyncio.Event()
    mirror = asyncio.create_task(watcher.mirror.run(stop, "/vimha/vim/"))

    def raised() -> dict[str, str]:
        return {
            a.fault_type: a.perceived_severity.value
            for _, a in store.iter_alarms(0, 50)
            if a.fault_type == "SERVICE_GROUP_DATA_AT_RISK"
        }

    try:
        await watcher.mirror.ready.wait()
        await until_seen(watcher, GROUP + "slots/0", True)
        await watcher._judge()
        await coord.put(GROUP + "released/0", json.dumps({"epoch": 1, "t": 2.0, "reason": "x"}))
        await coord.put(GROUP + "members/a", member("a", None, None))
        unfit = json.loads(member("c", None, None)) | {"healthy": False, "position": 200}
        await coord.put(GROUP + "members/c", json.dumps(unfit))
        took = json.loads(holding("b", 2)) | {
            "position": 150,
            "passedOver": [{"member": "c", "position": 200}],
        }
        await coord.put(GROUP + "slots/0", json.dumps(took))
        await coord.put(GROUP + "members/b", member("b", 0, 2))
        async with asyncio.timeout(5):
            while '"b"' not in watcher.mirror.keys[GROUP + "slots/0"].value:
                await asyncio.sleep(0.01)
        await watcher._judge()
        assert raised() == {"SERVICE_GROUP_DATA_AT_RISK": "CRITICAL"}
        (alarm,) = [a for _, a in store.iter_alarms(0, 50) if "RISK" in a.fault_type]
        assert "c at position 200" in alarm.fault_details[0]
        assert "position 150" in alarm.fault_details[0] and "lost" in alarm.fault_details[0]
        await coord.put(GROUP + "members/c", member("c", None, None))  # caught up, healthy
        async with asyncio.timeout(5):
            while '"healthy": false' in watcher.mirror.keys[GROUP + "members/c"].value:
                await asyncio.sleep(0.01)
        await watcher._judge()
        assert raised() == {"SERVICE_GROUP_DATA_AT_RISK": "CLEARED"}
    finally:
        stop.set()
        mirror.cancel()
        await asyncio.gather(mirror, return_exceptions=True)
