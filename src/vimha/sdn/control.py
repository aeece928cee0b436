"""The instance's control socket (a UNIX socket, one JSON object per line each way): what the
agent's `sdn` handler and `vimha chaos` ask of a running instance.

    {"op": "status"}                          -> the instance's status
    {"op": "role", "role": "master", "epoch": N}  (centralised model) -> status, once the
    {"op": "role", "role": "slave"}               switches answered (0.5 s at most)
    {"op": "reassert"}                        -> what the switches answered a stale master
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from vimha.sdn.instance import SdnInstance

log = logging.getLogger("vimha.sdn.control")


async def _answer(instance: SdnInstance, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "status":
        return instance.status()
    if op == "role" and request.get("role") in ("master", "slave"):
        return await instance.set_role(str(request["role"]), int(request.get("epoch") or 0))
    if op == "reassert":
        return {"answers": await instance.reassert()}
    return {"error": f"unknown request {request!r}"}


async def serve_control(instance: SdnInstance, path: Path, stop: asyncio.Event) -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    reply = await _answer(instance, request if isinstance(request, dict) else {})
                except (ValueError, TypeError) as exc:
                    reply = {"error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    _fresh(path)
    server = await asyncio.start_unix_server(client, str(path))
    os.chmod(path, 0o600)
    try:
        await stop.wait()
    finally:
        server.close()
        _fresh(path)


def _fresh(path: Path) -> None:
    """No socket file left over (from an earlier run, or ours at the end)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def ask(path: Path, request: dict[str, Any], limit: float = 2.0) -> dict[str, Any]:
    """One request to an instance's control socket (OSError or TimeoutError on failure)."""
    async with asyncio.timeout(limit):
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
    if not line:
        raise ConnectionResetError("the instance closed its control socket")
    reply: dict[str, Any] = json.loads(line)
    return reply
