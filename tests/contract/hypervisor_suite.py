"""The hypervisor port's contract (ports/hypervisor.py) as checks shared by every driver.

A driver's test module imports these tests (`from tests.contract.hypervisor_suite import *`)
and defines the fixtures they take:
- `hypervisor`: a driver on a node of its own (nothing else listed there);
- `reopen`: an async callable giving another driver object on the same node (an agent that
  restarted);
- `make_spec`: `make_spec(instance_id, incarnation=1) -> GuestSpec`;
- `kill_outside`: an async callable that makes a guest end without the port (kill -9, virsh
  destroy).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from vimha.domain.errors import NotFound
from vimha.ports.hypervisor import (
    GuestEvent,
    GuestEventKind,
    GuestSpec,
    GuestState,
    Hypervisor,
)

MakeSpec = Callable[..., GuestSpec]
Reopen = Callable[[], Awaitable[Hypervisor]]
KillOutside = Callable[[str], Awaitable[None]]


def new_id() -> str:
    return str(uuid.uuid4())


class Recorder:
    """Every event a driver yields, from the moment it is started."""

    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv
        self.events: list[GuestEvent] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async for event in self.hv.events():
            self.events.append(event)
            self._changed.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.1)  # subscribed before the test acts

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_for(
        self, instance_id: str, kind: GuestEventKind, timeout: float = 10.0
    ) -> GuestEvent:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if event.instance_id == instance_id and event.kind == kind:
                        return event
                self._changed.clear()
                await self._changed.wait()

    def kinds(self, instance_id: str) -> list[GuestEventKind]:
        return [e.kind for e in self.events if e.instance_id == instance_id]


@contextlib.asynccontextmanager
async def recording(hv: Hypervisor) -> AsyncIterator[Recorder]:
    recorder = Recorder(hv)
    await recorder.start()
    try:
        yield recorder
    finally:
        await recorder.stop()


async def states(hv: Hypervisor) -> dict[str, tuple[int, GuestState]]:
    return {g.instance_id: (g.incarnation, g.state) for g in await hv.list_guests()}


async def wait_state(
    hv: Hypervisor, instance_id: str, state: GuestState, timeout: float = 10.0
) -> None:
    async with asyncio.timeout(timeout):
        while (await states(hv)).get(instance_id, (0, None))[1] != state:
            await asyncio.sleep(0.1)


async def test_spawn_runs_the_guest_and_lists_it(
    hypervisor: Hypervisor, make_spec: MakeSpec
) -> None:
    iid = new_id()
    status = await hypervisor.spawn(make_spec(iid, incarnation=3))
    assert (status.instance_id, status.incarnation, status.state) == (iid, 3, GuestState.RUNNING)
    assert status.ref
    assert await states(hypervisor) == {iid: (3, GuestState.RUNNING)}


async def test_spawn_is_idempotent_per_incarnation(
    hypervisor: Hypervisor, make_spec: MakeSpec
) -> None:
    iid = new_id()
    first = await hypervisor.spawn(make_spec(iid))
    again = await hypervisor.spawn(make_spec(iid))
    assert again.state == GuestState.RUNNING
    assert again.ref == first.ref
    assert len(await hypervisor.list_guests()) == 1


async def test_a_higher_incarnation_replaces_the_lower(
    hypervisor: Hypervisor, make_spec: MakeSpec
) -> None:
    iid = new_id()
    await hypervisor.spawn(make_spec(iid, incarnation=1))
    await hypervisor.power_off(iid, graceful=False)
    status = await hypervisor.spawn(make_spec(iid, incarnation=2))
    assert (status.incarnation, status.state) == (2, GuestState.RUNNING)
    assert await states(hypervisor) == {iid: (2, GuestState.RUNNING)}


async def test_power_off_and_on(hypervisor: Hypervisor, make_spec: MakeSpec) -> None:
    iid = new_id()
    await hypervisor.spawn(make_spec(iid))
    async with recording(hypervisor) as rec:
        await hypervisor.power_off(iid, graceful=False)
        await wait_state(hypervisor, iid, GuestState.SHUTOFF)
        stopped = await rec.wait_for(iid, GuestEventKind.STOPPED)
        assert stopped.incarnation == 1
        await hypervisor.power_off(iid)  # already off: nothing to do
        await hypervisor.power_on(iid)
        await wait_state(hypervisor, iid, GuestState.RUNNING)
        await rec.wait_for(iid, GuestEventKind.STARTED)
        await hypervisor.power_on(iid)  # already on
        assert GuestEventKind.DIED not in rec.kinds(iid)
    assert (await states(hypervisor))[iid] == (1, GuestState.RUNNING)


async def test_pause_and_unpause(hypervisor: Hypervisor, make_spec: MakeSpec) -> None:
    iid = new_id()
    await hypervisor.spawn(make_spec(iid))
    async with recording(hypervisor) as rec:
        await hypervisor.pause(iid)
        await hypervisor.pause(iid)
        assert (await states(hypervisor))[iid][1] == GuestState.PAUSED
        await rec.wait_for(iid, GuestEventKind.PAUSED)
        await hypervisor.unpause(iid)
        await hypervisor.unpause(iid)
        assert (await states(hypervisor))[iid][1] == GuestState.RUNNING
        await rec.wait_for(iid, GuestEventKind.RESUMED)


async def test_destroy_removes_the_guest_and_is_idempotent(
    hypervisor: Hypervisor, make_spec: MakeSpec
) -> None:
    iid = new_id()
    await hypervisor.spawn(make_spec(iid))
    await hypervisor.destroy(iid)
    assert await states(hypervisor) == {}
    await hypervisor.destroy(iid)
    await hypervisor.destroy(new_id())


@pytest.mark.parametrize(
    "operation",
    ["power_off", "power_on", "reboot", "pause", "unpause"],
)
async def test_operations_on_an_unknown_guest_raise_not_found(
    hypervisor: Hypervisor, operation: str
) -> None:
    with pytest.raises(NotFound):
        await getattr(hypervisor, operation)(new_id())


async def test_a_restarted_agent_adopts_its_guests(
    hypervisor: Hypervisor, make_spec: MakeSpec, reopen: Reopen
) -> None:
    iid = new_id()
    await hypervisor.spawn(make_spec(iid, incarnation=4))
    other = await reopen()
    try:
        assert await states(other) == {iid: (4, GuestState.RUNNING)}
        again = await other.spawn(make_spec(iid, incarnation=4))  # no duplicate
        assert again.state == GuestState.RUNNING
        assert len(await other.list_guests()) == 1
        await other.power_off(iid, graceful=False)
        assert (await states(hypervisor))[iid][1] == GuestState.SHUTOFF
    finally:
        await other.close()


async def test_a_guest_killed_outside_the_port_died(
    hypervisor: Hypervisor, make_spec: MakeSpec, kill_outside: KillOutside
) -> None:
    iid = new_id()
    await hypervisor.spawn(make_spec(iid, incarnation=2))
    async with recording(hypervisor) as rec:
        await kill_outside(iid)
        died = await rec.wait_for(iid, GuestEventKind.DIED)
        assert died.incarnation == 2
        assert GuestEventKind.STOPPED not in rec.kinds(iid)
    assert (await states(hypervisor))[iid][1] in (GuestState.SHUTOFF, GuestState.CRASHED)


async def test_resources_and_capabilities(hypervisor: Hypervisor) -> None:
    res = await hypervisor.resources()
    assert res.vcpus >= 1 and res.ram_mib >= 256 and res.disk_gib >= 1
    caps = hypervisor.capabilities
    assert caps.watchdog_actions
    assert caps.image_formats
