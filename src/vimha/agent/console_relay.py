"""The node's console relay (VNF-12): a controller that serves a console websocket opens
the instance's serial console here, over TCP on the node's management address.

The controller's first line is JSON {"instance", "at", "nonce", "mac"} (domain/console.py:
an HMAC with the node's key); the relay answers "OK" and the console's history, then
relays bytes both ways until either side closes; or "ERR <why>" and closes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from vimha.domain import console
from vimha.domain.errors import VimhaError
from vimha.ports.hypervisor import Console, Hypervisor

log = logging.getLogger("vimha.agent.console")


class ConsoleRelay:
    def __init__(self, hypervisor: Hypervisor, key: bytes) -> None:
        self.hv = hypervisor
        self.key = key
        self.endpoint = ""
        self._server: asyncio.Server | None = None
        self._seen: set[str] = set()

    async def start(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self._server = await asyncio.start_server(self._serve, host, int(port))
        bound = self._server.sockets[0].getsockname()
        self.endpoint = f"{host}:{bound[1]}"
        log.info("console relay on %s", self.endpoint)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            hello = json.loads(line)
            instance_id = str(hello["instance"])
            why = console.check(
                self.key,
                instance_id,
                float(hello["at"]),
                str(hello["nonce"]),
                str(hello["mac"]),
                time.time(),
                self._seen,
            )
            if len(self._seen) > 10000:
                self._seen.clear()  # older proofs are stale by now anyway
            if why is not None:
                raise PermissionError(why)
            attached = await self.hv.console(instance_id)
        except (TimeoutError, ValueError, KeyError, TypeError, PermissionError, VimhaError) as exc:
            detail = exc.detail if isinstance(exc, VimhaError) else str(exc) or "timeout"
            writer.write(f"ERR {detail}\n".encode())
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return
        writer.write(b"OK\n" + attached.history)
        await _pump(reader, writer, attached)


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, attached: Console
) -> None:
    async def out() -> None:
        while data := await attached.read():
            writer.write(data)
            await writer.drain()

    async def inp() -> None:
        while data := await reader.read(4096):
            await attached.write(data)

    tasks = [asyncio.create_task(out()), asyncio.create_task(inp())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await attached.close()
        writer.close()
