"""The Redis client (`drivers/redis_client.py`, redis-py underneath) against a real
redis-server: replies, errors translated into RedisError, a server that does not answer cut
off within the timeout, and a restarted server reached again."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, require_system
from vimha.drivers.redis_client import Redis, RedisError


class Server:
    def __init__(self, base: Path) -> None:
        self.base, self.port = base, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(self.base)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True
            ).stdout.strip()
            != b"PONG"
        ):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    require_system(shutil.which("redis-server") is not None, "redis-server (apt: redis-server)")
    s = Server(tmp_path)
    s.start()
    yield s
    s.stop()


async def test_replies_errors_timeouts_and_reconnection(server: Server) -> None:
    r = Redis("127.0.0.1", server.port, 0.5)
    try:
        assert await r.call("SET", "k", 1) is True
        assert await r.call("MGET", "k", "none") == ["1", None]
        assert int(await r.call("WAIT", 0, 10)) == 0
        info = await r.info("replication")
        assert info["role"] == "master" and int(info["master_repl_offset"]) >= 0
        with pytest.raises(RedisError, match="unknown command"):
            await r.call("NO-SUCH-COMMAND")
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)  # hung: no answer
        started = time.monotonic()
        with pytest.raises(RedisError, match="Timeout"):
            await r.call("PING")
        assert time.monotonic() - started < 1.5, "cut off within the timeout, never retried"
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()
        with pytest.raises(RedisError):
            await r.call("PING")
        server.start()
        assert await r.call("PING") is True  # the same client, a new connection
    finally:
        await r.aclose()
    unreachable = Redis("127.0.0.1", free_port(), 0.5)
    with pytest.raises(RedisError, match="onnect"):
        await unreachable.call("PING")
    await unreachable.aclose()
