"""A minimal Redis client (RESP2) on asyncio streams: enough for the redis handler, its
tests and the switch-over benchmark, without a client library to install."""

from __future__ import annotations

import asyncio
from typing import Any


class RedisError(Exception):
    """The server answered with an error, or could not be reached in time."""


def encode(*args: str | int | bytes) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


async def read_reply(reader: asyncio.StreamReader) -> Any:
    line = (await reader.readline()).rstrip(b"\r\n")
    if not line:
        raise RedisError("connection closed")
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = await reader.readexactly(size + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [await read_reply(reader) for _ in range(count)]
    raise RedisError(f"unexpected reply {line[:40]!r}")


class Redis:
    """One connection, reopened after a failure."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def call(self, *args: str | int | bytes) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                if self.streams is None:
                    self.streams = await asyncio.open_connection(self.host, self.port)
                reader, writer = self.streams
                writer.write(encode(*args))
                await writer.drain()
                return await read_reply(reader)
        except RedisError as exc:
            if "connection closed" in str(exc):
                self.close()
            raise
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            self.close()
            raise RedisError(f"{self.host}:{self.port}: {type(exc).__name__} {exc}") from exc

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


def info_fields(text: str) -> dict[str, str]:
    return dict(
        line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#")
    )
