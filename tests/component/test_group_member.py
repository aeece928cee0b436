"""A member of a service group (agent/groups.py) against the in-memory coordination driver
and a fake handler: the decisions of domain/groups.py carried out, including after the
coordination backend failed in the middle of a promotion."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from vimha.agent.groups import GroupMember
from vimha.agent.handlers import HandlerFailed, Health
from vimha.drivers.clock import SystemClock
from vimha.drivers.coord_local import LocalCoordination
from vimha.groupspec import GroupConfig
from vimha.ports.coordination import CoordinationUnavailable, PermissionDenied


class FakeHandler:
    def __init__(self) -> None:
        self.promoted: list[int] = []
        self.healthy = True
        self.stops = 0
        self.script: list[Health] = []

    @property
    def pid(self) -> int | None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stops += 1

    async def monitor(self) -> Health:
        if self.script:  # the next answers, in turn
            return self.script.pop(0)
        return Health(self.healthy, "fake")

    async def promote(self, epoch: int) -> None:
        self.promoted.append(epoch)

    async def demote(self, active: str | None) -> None:
        return None


class FlakyCoordination(LocalCoordination):
    """Fails the first write of a slot's holder record, as an unreachable backend would."""

    def __init__(self) -> None:
        super().__init__(SystemClock())
        self.failed = False

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        if key.endswith("/holder/0") and not self.failed:
            self.failed = True
            raise CoordinationUnavailable("injected")
        return await super().put(key, value, lease)


class DeniedCoordination(LocalCoordination):
    """An etcd user whose role may not write the group's keys (issue 22): every write is
    refused, as etcd's RBAC would."""

    def __init__(self) -> None:
        super().__init__(SystemClock())
        self.writes = 0

    def _denied(self, key: str) -> PermissionDenied:
        self.writes += 1
        return PermissionDenied(f"etcd kv/put {key}: permission denied to etcd user u")

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        raise self._denied(key)

    async def create(self, key: str, value: str, lease: int = 0) -> bool:
        raise self._denied(key)

    async def increment(self, key: str) -> int:
        raise self._denied(key)


def config(**over: Any) -> GroupConfig:
    return GroupConfig.model_validate(
        {
            "name": "g",
            "policy": "active-standby",
            "members": ["a", "b"],
            "address": "127.0.0.1:1",
            "handler": {"type": "process", "command": ["true"]},
            **over,
        }
    )


async def test_a_promotion_interrupted_by_the_backend_is_finished_at_the_next_step(
    tmp_path: Path,
) -> None:
    coord = FlakyCoordination()
    handler = FakeHandler()
    member = GroupMember("a", "vim", config(), coord, tmp_path, handler=handler)
    stop = asyncio.Event()
    task = asyncio.create_task(member.run(stop))
    try:
        for _ in range(100):
            if member.role == "active":
                break
            await asyncio.sleep(0.05)
        assert coord.failed, "the failure was not injected"
        assert member.role == "active" and handler.promoted == [1]
        holder = await coord.get("/vimha/vim/groups/g/holder/0")
        assert holder is not None and '"epoch": 1' in holder.value
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_an_unhealthy_holder_resigns_and_says_so(tmp_path: Path) -> None:
    coord = LocalCoordination(SystemClock())
    handler = FakeHandler()
    member = GroupMember("a", "vim", config(), coord, tmp_path, handler=handler)
    stop = asyncio.Event()
    task = asyncio.create_task(member.run(stop))
    try:
        for _ in range(100):
            if member.role == "active":
                break
            await asyncio.sleep(0.05)
        handler.healthy = False
        for _ in range(100):
            if await coord.get("/vimha/vim/groups/g/slots/0") is None:
                break
            await asyncio.sleep(0.05)
        released = await coord.get("/vimha/vim/groups/g/released/0")
        assert released is not None and "local monitor failed" in released.value
        assert handler.stops >= 1  # stopped before the release was written
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def active_member(tmp_path: Path, handler: FakeHandler, **over: Any) -> tuple[Any, Any, Any]:
    coord = LocalCoordination(SystemClock())
    member = GroupMember("a", "vim", config(**over), coord, tmp_path, handler=handler)
    stop = asyncio.Event()
    task = asyncio.create_task(member.run(stop))
    for _ in range(100):
        if member.role == "active":
            break
        await asyncio.sleep(0.05)
    assert member.role == "active"
    return coord, stop, task


async def resigned(coord: LocalCoordination) -> str:
    """Why the holder resigned (its release), once it did; '' if it did not within 2 s."""
    for _ in range(40):
        if (released := await coord.get("/vimha/vim/groups/g/released/0")) is not None:
            return released.value
        await asyncio.sleep(0.05)
    return ""


async def test_one_slow_check_is_not_a_failure_two_in_a_row_are(tmp_path: Path) -> None:
    handler = FakeHandler()
    coord, stop, task = await active_member(tmp_path, handler)
    try:
        stops = handler.stops
        handler.script = [Health(False, "timed out")]  # then healthy again
        assert await resigned(coord) == ""
        assert handler.stops == stops
        handler.script = [Health(False, "timed out"), Health(False, "timed out")]
        assert "local monitor failed" in await resigned(coord)
        assert handler.stops > stops
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_failed_checks_count_only_once_they_lasted_the_grace(tmp_path: Path) -> None:
    """A database slow to answer under load for less than `monitor_grace` keeps its slot;
    one that does not answer for longer resigns; a process gone counts at once."""
    handler = FakeHandler()
    coord, stop, task = await active_member(
        tmp_path, handler, monitor_interval=0.05, monitor_grace=0.6
    )
    try:
        handler.script = [Health(False, "no answer in time")] * 4  # ~0.2 s, then answers
        assert await resigned(coord) == ""
        handler.healthy = False  # no answer from now on
        assert "local monitor failed" in await resigned(coord)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    handler = FakeHandler()
    coord, stop, task = await active_member(
        tmp_path / "b", handler, monitor_interval=0.05, monitor_grace=10
    )
    try:
        handler.script = [Health(False, "exited (-9)", definite=True)]
        assert "local monitor failed" in await resigned(coord)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_process_gone_counts_at_once(tmp_path: Path) -> None:
    handler = FakeHandler()
    coord, stop, task = await active_member(tmp_path, handler)
    try:
        handler.script = [Health(False, "exited (-9)", definite=True)]
        assert "local monitor failed" in await resigned(coord)  # after this one answer
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


class LateStandby(FakeHandler):
    """A standby with a replication position: `before` until the active released its slot,
    `after` since (it had received more than it had said); its first check after the release
    takes `late` seconds (a busy node)."""

    def __init__(self, coord: LocalCoordination, before: int, after: int, late: float = 0) -> None:
        super().__init__()
        self.coord = coord
        self.before, self.after, self.late = before, after, late

    async def monitor(self) -> Health:
        if await self.coord.get("/vimha/vim/groups/g/released/0") is None:
            return Health(True, "standby", position=self.before)
        if self.late:
            late, self.late = self.late, 0.0
            await asyncio.sleep(late)
        return Health(True, "standby", position=self.after)


async def test_the_slot_goes_to_the_freshest_even_when_its_position_is_published_late(
    tmp_path: Path,
) -> None:
    """b received the most but its first check after the release is slow (3 monitor rounds):
    c, whose position beats what b had published, waits for b's fresh one."""
    holder = FakeHandler()
    coord, stop, task = await active_member(tmp_path, holder)
    cfg = config(members=["a", "b", "c"], monitor_interval=0.1)
    b, c = LateStandby(coord, 10, 20, late=0.3), LateStandby(coord, 15, 15)
    members = {
        n: GroupMember(n, "vim", cfg, coord, tmp_path / n, handler=h)
        for n, h in (("b", b), ("c", c))
    }
    tasks = [asyncio.create_task(m.run(stop)) for m in members.values()]
    try:
        for _ in range(100):  # both standbys published their positions
            docs = [await coord.get(f"/vimha/vim/groups/g/members/{n}") for n in members]
            if all(d is not None and '"position": 1' in d.value for d in docs):
                break
            await asyncio.sleep(0.05)
        holder.healthy = False
        assert "local monitor failed" in await resigned(coord)
        for _ in range(100):
            if any(m.role == "active" for m in members.values()):
                break
            await asyncio.sleep(0.05)
        assert members["b"].role == "active" and members["c"].role != "active"
        assert b.promoted and not c.promoted
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(task, *tasks), 10)


async def test_a_member_still_starting_is_not_failed_for_slow_answers(tmp_path: Path) -> None:
    """Issue 22: on a loaded box, `vimha up --stateful` switched `sql` over during start-up
    with no fault ("mariadb: no answer in time" for 2.1 s, past `monitor_grace`). Within
    `start_grace` of its start a member's slow answers do not count; a process gone still
    counts at once, and slow answers count again once the member has started."""
    handler = FakeHandler()
    coord, stop, task = await active_member(
        tmp_path, handler, monitor_interval=0.05, monitor_grace=0.2, start_grace=1.5
    )
    try:
        handler.script = [Health(False, "mariadb: no answer in time")] * 16  # ~0.8 s
        assert await resigned(coord) == "", "a member still starting was taken for failed"
        await asyncio.sleep(1.0)  # started by now
        handler.script = [Health(False, "mariadb: no answer in time")] * 16
        assert "local monitor failed" in await resigned(coord)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    handler = FakeHandler()
    coord, stop, task = await active_member(tmp_path / "b", handler, start_grace=60)
    try:
        handler.script = [Health(False, "exited (-9)", definite=True)]
        assert "local monitor failed" in await resigned(coord)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_member_refused_its_groups_keys_stops_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A permission denied is refused again at every step: the member stops (its server
    too) at the first, not retried ten times a second."""
    coord = DeniedCoordination()
    handler = FakeHandler()
    member = GroupMember("a", "vim", config(), coord, tmp_path, handler=handler)
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(member.run(asyncio.Event()), 10)  # returns by itself
    assert coord.writes <= 2  # its spec, then its first step
    assert handler.stops >= 1
    assert member.role != "active" and handler.promoted == []
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("permission denied to etcd user u" in m and "member stops" in m for m in said)


class WaitingHandler(FakeHandler):
    """A member whose start waits for something else (an active to clone from): nothing
    runs, and each start is refused with the same reason until `ready`."""

    def __init__(self) -> None:
        super().__init__()
        self.starts = 0
        self.ready = False

    async def start(self) -> None:
        self.starts += 1
        if not self.ready:
            raise HandlerFailed("waiting for an active to clone")

    async def monitor(self) -> Health:
        if self.ready:
            return Health(True, "standby")
        return Health(False, "no data yet", definite=True)


async def test_a_start_that_waits_is_tried_again_and_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Tried again after the restart backoff (nothing runs: a definite failure), and the
    same reason is logged once, not at every try."""
    monkeypatch.setattr("vimha.agent.groups.START_GRACE", 0.05)
    handler = WaitingHandler()
    coord = LocalCoordination(SystemClock())
    cfg = config(monitor_interval=0.02, restart_backoff=0.05)
    member = GroupMember("a", "vim", cfg, coord, tmp_path, handler=handler)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="vimha.agent.groups"):
        task = asyncio.create_task(member.run(stop))
        try:
            for _ in range(100):
                if handler.starts >= 5:
                    break
                await asyncio.sleep(0.02)
            assert handler.starts >= 5, "a waiting start is tried again after the backoff"
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    said = [r.getMessage() for r in caplog.records]
    assert sum("could not start the member" in m for m in said) == 1, said
    assert sum("restarting" in m for m in said) <= 1, said
