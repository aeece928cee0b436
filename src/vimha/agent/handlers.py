"""Resource handlers: how an agent starts, stops, monitors, promotes and demotes its member of
a service group (issue 4). The interface is small, for operators to add their own:

- `start()`: run the member as a standby (it must not accept writes until promoted);
- `stop()`: stop it hard (SIGKILL: also the local fence of a hung member);
- `monitor()`: healthy or not, why, and its replication position (-1 when it has none);
- `promote(epoch)`: become the active; `epoch` is the fencing token of this holding;
- `demote(active)`: become a standby that follows `active` (host:port), or serves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from vimha.agent.services import (
    SupervisedProcess,
    die_with_agent,
    kill_group,
    ordinary_priority,
    process_state,
)
from vimha.drivers.coord_mirror import Mirror, load_json
from vimha.drivers.resp import Redis, RedisError, info_fields
from vimha.groupspec import (
    GroupConfig,
    HaproxyHandlerConfig,
    KeepalivedHandlerConfig,
    MariadbHandlerConfig,
    PostgresHandlerConfig,
    ProcessHandlerConfig,
    RabbitmqHandlerConfig,
    RedisHandlerConfig,
    VipHandlerConfig,
)
from vimha.osuser import reach_hint
from vimha.ports.coordination import Coordination
from vimha.servicespec import ServiceConfig

UNREACHABLE = ("127.0.0.1", 9)  # a standby with no active yet replicates from nowhere


class HandlerFailed(Exception):
    """A start, promote or demote did not succeed."""


@dataclass(frozen=True, slots=True)
class Health:
    healthy: bool
    detail: str
    position: int = -1
    recovering: bool = False  # unhealthy, but recovering on its own: not to be restarted
    partitioned: bool = False  # cut off from part of its cluster (a network partition)
    # the process itself is gone or stopped: no need to check again (a failed check may be
    # one slow answer under load, and counts only when repeated: `monitor_failures`)
    definite: bool = False


def failure(exc: BaseException) -> str:
    """An exception in a health detail: its message, or its kind when it has none (a
    timeout says nothing)."""
    said = str(exc).strip()
    if said:
        return said
    return "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__


def process_failure(proc: subprocess.Popen[bytes] | None, name: str) -> Health | None:
    """Why a member's process is not running (exited, zombie, stopped), None if it runs."""
    if proc is None:
        return Health(False, f"{name} not started", definite=True)
    if proc.poll() is not None:
        return Health(False, f"{name} exited ({proc.returncode})", definite=True)
    state = process_state(proc.pid)
    if state in ("T", "t"):
        return Health(False, f"{name} stopped (SIGSTOP)", definite=True)
    if state in ("Z", "X", None):  # it died since the poll just above: how
        proc.wait()
        return Health(False, f"{name} exited ({proc.returncode})", definite=True)
    return None


async def other_active(coord: Coordination, prefix: str, node: str) -> str | None:
    """The address of the group's active (slot 0) when another member holds it."""
    doc = load_json(await coord.get(prefix + "slots/0"))
    if doc and doc.get("member") != node and doc.get("address"):
        return str(doc["address"])
    return None


class Handler(Protocol):
    @property
    def pid(self) -> int | None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def monitor(self) -> Health: ...

    async def promote(self, epoch: int) -> None: ...

    async def demote(self, active: str | None) -> None: ...


class ProcessHandler:
    def __init__(self, group: str, cfg: ProcessHandlerConfig) -> None:
        self.group = group
        self.cfg = cfg
        self.proc = SupervisedProcess(
            ServiceConfig(
                name=group,
                command=cfg.command,
                check=cfg.check,
                target=cfg.target,
                check_command=cfg.check_command,
                timeout=cfg.timeout,
            ),
            die_with_agent=True,
        )

    @property
    def pid(self) -> int | None:
        return self.proc.proc.pid if self.proc.proc else None

    async def start(self) -> None:
        self.proc.start()

    async def stop(self) -> None:
        await asyncio.to_thread(self.proc.kill)

    async def monitor(self) -> Health:
        if (failed := process_failure(self.proc.proc, self.group)) is not None:
            return failed
        ok, detail = await self.proc.check()
        return Health(ok, detail)

    async def promote(self, epoch: int) -> None:
        await self._run(self.cfg.promote, "active", epoch, "")

    async def demote(self, active: str | None) -> None:
        await self._run(self.cfg.demote, "standby", 0, active or "")

    async def _run(self, argv: tuple[str, ...], role: str, epoch: int, active: str) -> None:
        if not argv:
            return
        env = {
            **os.environ,
            "VIMHA_GROUP": self.group,
            "VIMHA_ROLE": role,
            "VIMHA_EPOCH": str(epoch),
            "VIMHA_ACTIVE": active,
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env
            )
            async with asyncio.timeout(5):
                code = await proc.wait()
        except (OSError, TimeoutError) as exc:
            raise HandlerFailed(f"{role} command {argv[0]}: {exc}") from exc
        if code != 0:
            raise HandlerFailed(f"{role} command {argv[0]} exited {code}")


def os_user(wanted: str) -> str | None:
    """The OS user a member's server runs as: `wanted` when the agent is root, else the
    agent's own (None: no change)."""
    return wanted if os.geteuid() == 0 else None


def as_user(user: str | None, dies_with_agent: bool, keep_priority: bool = False) -> None:
    """In a child before exec: the ordinary scheduling priority (unless `keep_priority`: the
    balancers' own processes keep the agent's), become `user` (credentials first: a change
    of them clears the death signal), then die with the agent if asked."""
    if not keep_priority:
        ordinary_priority()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    if dies_with_agent:
        die_with_agent()


def own(path: Path, user: str | None) -> None:
    """A folder of a member's server: made, and owned by its OS user (HandlerFailed, saying
    why, when that user cannot reach it)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if user is not None:
        shutil.chown(path, user, user)
        if (why := reach_hint(path, user)) is not None:
            raise HandlerFailed(why)


MEMBER_LOG_LIMIT = 8 * 1024 * 1024  # a member's log is set aside (`.1`) beyond this, at start


def open_member_log(path: Path) -> BinaryIO:
    """Where a member's server writes what it says (stdout and stderr): appended to, the
    previous one kept as `<name>.1` once it grew beyond MEMBER_LOG_LIMIT."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if path.stat().st_size > MEMBER_LOG_LIMIT:
            path.replace(path.with_name(path.name + ".1"))
    return path.open("ab")


def spawn_member(
    argv: list[str],
    user: str | None = None,
    env: dict[str, str] | None = None,
    keep_priority: bool = False,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Started from the event loop's thread: the death signal follows the thread that forked.
    What it says goes to `log` (see open_member_log), else nowhere. HandlerFailed if it
    cannot be started."""
    try:
        out = open_member_log(log) if log is not None else None
    except OSError as exc:
        raise HandlerFailed(f"{argv[0]}: its log {log}: {exc.strerror}") from exc
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if out else subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=lambda: as_user(user, True, keep_priority),
            env=env,
        )
    except OSError as exc:
        raise HandlerFailed(f"{argv[0]}: {exc.strerror}") from exc
    finally:
        if out is not None:
            out.close()


async def run_tool(
    argv: list[str],
    user: str | None = None,
    limit: float = 120,
    env: dict[str, str] | None = None,
) -> str:
    """A member's command-line tool run to completion as its OS user: its output, or
    HandlerFailed with the end of what it said."""

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=limit,
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: as_user(user, False),
            env=env,
        )

    try:
        done = await asyncio.to_thread(run)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HandlerFailed(f"{Path(argv[0]).name}: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-300:]
        raise HandlerFailed(f"{Path(argv[0]).name} exited {done.returncode}: {tail}")
    return done.stdout + done.stderr


async def kill_member(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL (the local fence of a hung member) and reap it."""
    if proc is None:
        return
    kill_group(proc)  # its own session: with what it started
    await asyncio.to_thread(proc.wait)


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
        self.client.close()
        await kill_member(proc)

    async def monitor(self) -> Health:
        if (failed := process_failure(self.process, "redis-server")) is not None:
            return failed
        try:
            await self.client.call("PING")
            info = info_fields(await self.client.call("INFO", "replication"))
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


MAX_UNIX_SOCKET_PATH = 107  # bytes: sun_path holds 108, with the final NUL


def unix_sockets(spec: GroupConfig, run_dir: Path) -> list[Path]:
    """The UNIX sockets a member's server binds (HAProxy's admin socket is aliased when too
    long: not among them)."""
    cfg = spec.handler
    if isinstance(cfg, PostgresHandlerConfig):
        from vimha.agent.pg_handler import socket_file

        return [socket_file(spec.name, cfg, run_dir)]
    if isinstance(cfg, MariadbHandlerConfig):
        from vimha.agent.mariadb_handler import server_home

        return [server_home(spec.name, cfg, run_dir) / "mysqld.sock"]
    return []


def too_long_sockets(spec: GroupConfig, run_dir: Path) -> str | None:
    """Why the member's server could not bind its UNIX socket (a path over 107 bytes: the
    server refuses to start), or None."""
    for path in unix_sockets(spec, run_dir):
        if (size := len(str(path).encode())) > MAX_UNIX_SOCKET_PATH:
            where = "run_dir or handler.data_dir" if spec.handler.type == "mariadb" else "run_dir"
            return (
                f"its server's socket {path} would be {size} bytes, more than a UNIX socket "
                f"path holds ({MAX_UNIX_SOCKET_PATH}): choose a shorter {where}"
            )
    return None


def make_handler(
    spec: GroupConfig,
    node: str,
    run_dir: Path,
    coord: Coordination,
    vim: str,
    mirror: Mirror | None = None,
) -> Handler:
    group, cfg = spec.name, spec.handler
    if isinstance(cfg, MariadbHandlerConfig) and spec.mode == "cluster":
        from vimha.agent.galera_handler import GaleraHandler

        return GaleraHandler(group, node, cfg, run_dir, coord, vim, spec.members, mirror)
    if isinstance(cfg, RedisHandlerConfig):
        return RedisHandler(group, cfg, run_dir)
    if isinstance(cfg, PostgresHandlerConfig):
        from vimha.agent.pg_handler import PostgresHandler

        return PostgresHandler(group, node, cfg, run_dir, coord, vim)
    if isinstance(cfg, MariadbHandlerConfig):
        from vimha.agent.mariadb_handler import MariadbHandler

        return MariadbHandler(group, node, cfg, run_dir, coord, vim)
    if isinstance(cfg, VipHandlerConfig):
        from vimha.agent.vrrp import VipHandler

        return VipHandler(group, cfg)
    if isinstance(cfg, KeepalivedHandlerConfig):
        from vimha.agent.vrrp import KeepalivedHandler

        return KeepalivedHandler(group, node, cfg, run_dir, vim, mirror)
    if isinstance(cfg, HaproxyHandlerConfig):
        from vimha.agent.balancer import HaproxyHandler

        return HaproxyHandler(group, cfg, run_dir, coord, vim, mirror)
    if isinstance(cfg, RabbitmqHandlerConfig):
        from vimha.agent.rabbitmq_handler import RabbitmqHandler

        return RabbitmqHandler(group, node, cfg, run_dir, coord, vim, spec.members, mirror)
    return ProcessHandler(group, cfg)
