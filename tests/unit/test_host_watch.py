"""An agent's long poll ends at once when its controller shuts down (it asks another)."""

from __future__ import annotations

import asyncio
import time

from tests.support.fakes import FakeClock
from vimha.drivers.coord_local import LocalCoordination
from vimha.engine.host_watch import HostWatch


def test_close_answers_the_waiting_agents_and_later_ones_at_once() -> None:
    async def scenario() -> tuple[float, float, int]:
        watch = HostWatch(LocalCoordination(FakeClock()), "vim-1")
        watch.bind(asyncio.get_running_loop())
        watch.seed({"cmp-1": 3})
        started = time.monotonic()
        waiting = asyncio.create_task(watch.wait("cmp-1", 3, 30.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        watch.close()
        generation = await asyncio.wait_for(waiting, 1.0)
        first = time.monotonic() - started
        started = time.monotonic()
        await asyncio.wait_for(watch.wait("cmp-1", 3, 30.0), 1.0)
        return first, time.monotonic() - started, generation

    first, later, generation = asyncio.run(scenario())
    assert generation == 3
    assert first < 1.0 and later < 1.0


def test_a_new_generation_wakes_the_agent() -> None:
    async def scenario() -> int:
        watch = HostWatch(LocalCoordination(FakeClock()), "vim-1")
        watch.bind(asyncio.get_running_loop())
        watch.seed({"cmp-1": 3})
        waiting = asyncio.create_task(watch.wait("cmp-1", 3, 30.0))
        await asyncio.sleep(0.05)
        watch.committed({"cmp-1": 4})
        return await asyncio.wait_for(waiting, 1.0)

    assert asyncio.run(scenario()) == 4
