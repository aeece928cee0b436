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
from vimha.drivers.coord_mirror import load_json
from vimha.groupspec import (
    ProcessHandlerConfig,
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
    # the member holds no data at all (a standby never cloned): it cannot be fresher than
    # anyone, so a free slot does not wait for it
    empty: bool = False


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
        ok, detail = await self.proc.check(running=True)
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
    if proc.poll() is None:  # one already gone is reaped here, without a thread's round trip
        await asyncio.to_thread(proc.wait)
