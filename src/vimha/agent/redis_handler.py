"""The `redis` handler: a Redis server that is a replica until promoted (`REPLICAOF NO ONE`,
the epoch written to `vimha:epoch`), reached through `drivers/redis_client.py`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vimha.agent.handlers import (
    UNREACHABLE,
    HandlerFailed,
    Health,
    kill_member,
    process_failure,
    spawn_member,
)
from vimha.drivers.redis_client import Redis, RedisError
from vimha.groupspec import RedisHandlerConfig


class RedisHandler:
    def __init__(self, group: str, cfg: RedisHandlerConfig, run_dir: Path) -> None:
        self.group = group
        self.cfg = cfg
        self.data = Path(cfg.data_dir) if cfg.data_dir else run_dir / f"redis-{group}"
        self.process: subprocess.Popen[bytes] | None = None
        self.client = Redis(cfg.bind, cfg.port, cfg.timeout)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        host, port = UNREACHABLE
        argv = [
            self.cfg.server,
            "--port", str(self.cfg.port), "--bind", self.cfg.bind,
            "--dir", str(self.data), "--daemonize", "no", "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec",
            "--replicaof", host, str(port), "--replica-read-only", "yes",
            "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
            "--repl-ping-replica-period", "1", "--repl-timeout", "5",
            "--protected-mode", "no", "--logfile", str(self.data / "redis.log"),
        ]  # fmt: skip
        self.process = spawn_member(argv)

    async def stop(self) -> None:
        proc, self.process = self.process, None
        await self.client.aclose()
        await kill_member(proc)

    async def monitor(self) -> Health:
        if (failed := process_failure(self.process, "redis-server")) is not None:
            return failed
        try:
            info = await self.client.info("replication")  # an answer: the server is alive
        except RedisError as exc:
            return Health(False, f"redis: {exc}")
        role = info.get("role", "?")
        if role == "slave" and info.get("master_link_status") != "up":
            # a replica that has no active to follow (yet) is a fit standby, and says so
            detail = "replica, link to active down"
        else:
            detail = "active" if role == "master" else "replica in sync"
        return Health(True, detail, int(info.get("master_repl_offset", "0")))

    async def promote(self, epoch: int) -> None:
        try:
            await self.client.call("REPLICAOF", "NO", "ONE")
            await self.client.call("SET", "vimha:epoch", epoch)
        except RedisError as exc:
            raise HandlerFailed(f"promote: {exc}") from exc

    async def demote(self, active: str | None) -> None:
        host, port = UNREACHABLE
        if active:
            host, _, p = active.rpartition(":")
            port = int(p)
        try:
            await self.client.call("REPLICAOF", host, port)
        except RedisError as exc:
            raise HandlerFailed(f"demote: {exc}") from exc
