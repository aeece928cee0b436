"""Redis through redis-py's asyncio client (maintained by Redis; TLS, AUTH/ACL, RESP3 and
timeouts as operators know them), with its errors translated here, the one place.

Why redis-py and not our own client: vimha used a hand-written RESP2 client (`drivers/resp.py`)
until issue 22. Measured on this project's 2-core machine, against a local redis-server, 3,000
monitor rounds each (`PING` + `INFO replication`, the Redis handler's check then): 164-282 us
of CPU per round with the hand-written client, 317-512 us with redis-py 8.2: at the default
`monitor_interval` of 0.1 s, about 0.15 to 0.3 % of a core more for an agent that runs a Redis
member. That is small next to what operators gain, and the handler's check is now one
`INFO replication` (an answer proves the server alive; the PING was redundant), which brings
redis-py back to the old client's cost per round. Unlike httpx on the notification hot path
(`drivers/http1.py`, ~65 % of the controller's CPU), nothing here runs thousands of times a
second, so the library wins.

Contract: every call raises `RedisError` (never a redis-py exception) when the server answers
an error or cannot be reached within `timeout`; a failed connection is dropped and opened
again at the next call; a call is never retried (a monitor must see a failure as it is).
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError as LibraryError


class RedisError(Exception):
    """The server answered with an error, or could not be reached in time."""


class Redis:
    """A client of one server (a pool that reopens its connection after a failure)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._client = aioredis.Redis(
            host=host,
            port=port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            decode_responses=True,
            single_connection_client=True,  # one connection, no pool to take it from each time
            lib_name=None,  # no CLIENT SETINFO round trip at each connection
            lib_version=None,
        )

    async def call(self, *args: str | int | bytes) -> Any:
        """One command, its reply as redis-py parses it (INFO: see `info`)."""
        try:
            return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
        except (LibraryError, OSError, TimeoutError) as exc:
            raise RedisError(f"{self.host}:{self.port}: {type(exc).__name__} {exc}") from exc

    async def info(self, section: str) -> dict[str, str]:
        """An INFO section, every value as the server wrote it."""
        return {k: str(v) for k, v in (await self.call("INFO", section)).items()}

    async def aclose(self) -> None:
        with contextlib.suppress(LibraryError, OSError):
            await self._client.aclose()
