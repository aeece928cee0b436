"""Consoles (VNF-12): a console URL with a one-time token, valid on every controller.

`POST /vim/v1/instances/{id}/console` stores the token's hash with an expiry in the
database and answers a websocket URL built from the address the client used (so it works
through the balancers). Any controller serves the websocket: it uses the token up (one
transaction: a second use finds nothing), opens the instance's serial console at its host's
agent (proving itself with the host's key) and relays both ways. A token used, expired or
forged is refused at the handshake (HTTP 403), all three alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.domain import console
from vimha.domain.clock import iso
from vimha.domain.compute import InstanceStatus
from vimha.domain.errors import Conflict, NotFound
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/vim/v1", tags=["consoles"])
log = logging.getLogger("vimha.api.console")


@router.post("/instances/{instanceId}/console", status_code=201)
async def create_console(
    instanceId: str,
    request: Request,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.operator,
) -> dict[str, Any]:
    """A serial console URL for the instance, valid once, for `compute.console_token_ttl`."""
    instance = await run_in_threadpool(rt.store.compute.instance, instanceId)
    if instance.status is InstanceStatus.DELETED or instance.host is None:
        raise Conflict(f"instance {instance.name} has no console ({instance.status.value})")
    token = console.new_token()
    now = rt.clock.now()
    expires = now + timedelta(seconds=rt.config.compute.console_token_ttl)
    await rt.compute.arun(
        lambda uow, done: uow.compute.add_console_token(
            console.token_hash(token), instanceId, now, expires
        )
    )
    base = str(request.base_url).rstrip("/")
    ws = "wss" + base[5:] if base.startswith("https") else "ws" + base[4:]
    return {
        "type": "serial",
        "protocol": "websocket",
        "instanceId": instanceId,
        "url": f"{ws}/vim/v1/console?token={token}",
        "expiresAt": iso(expires),
    }


async def _attach(
    rt: Runtime, instance_id: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Open the instance's console at its host's agent; NotFound or Conflict says why not."""
    instance = await run_in_threadpool(rt.store.compute.instance, instance_id)
    host = instance.host
    reported = await run_in_threadpool(rt.store.compute.reported, host or "") if host else None
    endpoint = str((reported or {}).get("console") or "")
    key = rt.health.keys.get(host or "") if rt.health is not None else None
    if not host or not endpoint or key is None:
        raise Conflict(f"instance {instance.name}: its host offers no console relay")
    address, _, port = endpoint.rpartition(":")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(address, int(port)), 5)
    at, nonce = time.time(), secrets.token_hex(8)
    hello = {
        "instance": instance_id,
        "at": at,
        "nonce": nonce,
        "mac": console.sign(key, instance_id, at, nonce),
    }
    writer.write(json.dumps(hello).encode() + b"\n")
    answer = await asyncio.wait_for(reader.readline(), 5)
    if not answer.startswith(b"OK"):
        writer.close()
        raise Conflict(f"the console relay of {host} refused: {answer.decode().strip()}")
    return reader, writer, b""


@router.websocket("/console")
async def console_socket(websocket: WebSocket, token: str = "") -> None:
    rt: Runtime = websocket.app.state.runtime
    try:
        instance_id = await rt.compute.arun(
            lambda uow, done: uow.compute.take_console_token(
                console.token_hash(token), rt.clock.now()
            )
        )
        reader, writer, _ = await _attach(rt, instance_id)
    except (NotFound, Conflict, OSError, TimeoutError) as exc:
        reason = getattr(exc, "detail", None) or str(exc) or "console unavailable"
        log.warning("console refused: %s", reason)
        await websocket.close(code=1008, reason=reason[:120])
        return
    await websocket.accept()

    async def to_client() -> None:
        while data := await reader.read(65536):
            await websocket.send_bytes(data)

    async def from_client() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            writer.write(data)
            await writer.drain()

    tasks = [asyncio.create_task(to_client()), asyncio.create_task(from_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close()
