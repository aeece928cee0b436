"""The agent's watch of its desired instances (a long poll on the controller): an answer
that brings no new generation is not asked again at once (it spun, thousands of requests a
second, when the wait was cut short)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import httpx

from vimha.agent.instances import InstanceManager
from vimha.ports.hypervisor import Hypervisor


async def test_answers_without_news_are_not_asked_again_at_once(tmp_path: Path) -> None:
    asked = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal asked
        asked += 1
        if asked > 1000:  # spinning (it never yields to the test's loop): end it, and fail
            raise RuntimeError("asked without a pause")
        return httpx.Response(200, json={"generation": 3, "instances": []})

    manager = InstanceManager("cmp-1", "http://ctl", "t", cast(Hypervisor, object()), tmp_path)
    stop = asyncio.Event()
    transport = httpx.MockTransport(answer)
    async with httpx.AsyncClient(base_url="http://ctl", transport=transport) as client:
        watch = asyncio.create_task(manager._watch(client, stop))
        await asyncio.sleep(1.0)
        stop.set()
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
    assert manager.generation == 3 and manager.ready.is_set()
    assert asked <= 12, asked
