"""The source agent's side of a cold migration (issue 19, agent/migrations.py) against a
guest that answers slowly, as on a loaded node: the interruption is still measured, from
an answer before the migration started to the first one after it (the probe waits for
the guest's first answer before it starts, not a fixed few intervals)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import httpx

from vimha.agent.migrations import MigrationRunner
from vimha.ports.hypervisor import GuestSpec, Hypervisor

DELAY = 0.2  # the guest's answer time: far more than 5 probe intervals of 10 ms
STOPPED = 0.3  # how long the guest is stopped


class SlowGuest:
    """An HTTP guest on 127.0.0.1 answering every request after DELAY while it runs; a
    stopped guest answers nothing (the connection is closed), as a migrated guest that
    comes back on its address."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.up = True

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        await asyncio.sleep(DELAY)
        if self.up:
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    async def serve(self) -> None:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self.server is not None
        await asyncio.sleep(DELAY * 2)  # the requests under way answered
        self.server.close()
        await self.server.wait_closed()


class ExportingHypervisor:
    """The part of the hypervisor port a cold migration's source uses."""

    def __init__(self, guest: SlowGuest) -> None:
        self.guest = guest

    async def export_guest(self, instance_id: str, out: Path) -> None:
        self.guest.up = False
        await asyncio.sleep(STOPPED)  # its disk written
        await asyncio.to_thread(out.write_bytes, b"the guest's disk")


async def test_a_slow_guests_interruption_is_measured(tmp_path: Path) -> None:
    guest = SlowGuest()
    await guest.serve()

    async def controller(request: httpx.Request) -> httpx.Response:
        assert request.method == "PUT" and request.url.path.endswith("/migrations/m-1/state")
        guest.up = True  # the destination started it: it answers on its address again
        return httpx.Response(200)

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url="http://controller", transport=httpx.MockTransport(controller)
        )

    async def spec_of(doc: dict[str, Any]) -> GuestSpec:
        raise AssertionError("the source needs no spec")

    stopped: list[str] = []
    runner = MigrationRunner(
        "cmp-1",
        cast(Hypervisor, ExportingHypervisor(guest)),
        tmp_path,
        client,
        spec_of,
        asyncio.Event(),
        stopped.append,
    )
    doc = {
        "id": "i-1",
        "name": "slow-0",
        "ports": [{"ip": "127.0.0.1"}],
        "healthCheck": {"kind": "http", "port": guest.port},
        "migration": {"id": "m-1", "kind": "cold", "role": "source", "state": "READY"},
    }
    try:
        runner.step({"i-1": doc}, {})
        await asyncio.wait_for(runner.tasks["m-1"], 20)
    finally:
        await guest.close()
    phases = {x["phase"]: x for x in runner.take()}
    assert list(phases) == ["running", "measured"] and stopped == ["i-1"]
    measured = phases["measured"]
    assert measured["interruptionMs"] is not None, measured["detail"]
    assert STOPPED * 1000 - 50 <= measured["interruptionMs"] < 5000
