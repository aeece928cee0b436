"""The load balancer as a member of a service group (issue 4, ARCH-7): HAProxy run by the
agent (it dies with it), one frontend per group, and the backends kept in step with what the
groups' members publish in the coordination backend, through the runtime API (no reload):
every change of health or role is applied within a watch event (`domain/balancing.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from vimha.agent.handlers import Health, process_failure, spawn_member
from vimha.domain.balancing import commands, desired_servers, one_ready
from vimha.domain.groups import Policy
from vimha.drivers.coord_mirror import Mirror, load_json
from vimha.drivers.haproxy import Frontend, HaproxyAdmin, HaproxyUnavailable, render
from vimha.groupspec import HaproxyHandlerConfig, groups_prefix
from vimha.ports.coordination import Coordination

log = logging.getLogger("vimha.agent.balancer")


ALIAS_PREFIX = "vimha-"


# HAProxy refuses a longer admin socket path (it binds `<path>.<pid>.tmp` first, within the
# 108 bytes of sun_path): "socket path ... too long (max 97)", and exits at once
MAX_SOCKET_PATH = 97


def socket_path(wanted: Path) -> Path:
    """A UNIX socket's path must fit: a deep run dir gets a short alias under the temp dir."""
    if len(str(wanted)) <= MAX_SOCKET_PATH:
        return wanted
    digest = hashlib.sha1(str(wanted).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"{ALIAS_PREFIX}{digest}.sock"


def sweep_dead_aliases(older_than: float = 60.0) -> int:
    """Remove the admin-socket aliases nobody listens on any more (an HAProxy killed with
    its agent leaves its socket behind, and the run dir it stood for may be gone): those
    that refuse a connection and are older than `older_than` seconds. How many went."""
    gone = 0
    for path in Path(tempfile.gettempdir()).glob(f"{ALIAS_PREFIX}*.sock"):
        try:
            if time.time() - path.lstat().st_mtime < older_than or not path.is_socket():
                continue
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(0.2)
                probe.connect(str(path))
        except ConnectionRefusedError:
            path.unlink(missing_ok=True)
            gone += 1
        except OSError:
            continue
    return gone


class HaproxyHandler:
    def __init__(
        self,
        group: str,
        cfg: HaproxyHandlerConfig,
        run_dir: Path,
        coord: Coordination,
        vim: str,
        mirror: Mirror | None = None,
    ) -> None:
        self.group = group
        self.cfg = cfg
        self.run_dir = run_dir
        self.prefix = groups_prefix(vim)
        self.mirror = mirror or Mirror(coord, (self.prefix,))
        self.changed = self.mirror.subscribe()
        self.common = f"/vimha/{vim}/"
        self.frontends = [
            Frontend(
                group=f.group,
                bind=f.bind,
                mode=f.mode,
                check=f.check,
                path=f.path,
                inter_ms=round(f.inter * 1000),
                fall=f.fall,
                rise=f.rise,
                server_timeout_ms=round(f.server_timeout * 1000),
                name=f.name or "",
                one=f.balance == "one",
            )
            for f in cfg.frontends
        ]
        self.socket = socket_path(run_dir / f"haproxy-{group}.sock")
        self.admin = HaproxyAdmin(self.socket)
        self.process: subprocess.Popen[bytes] | None = None
        self.sync_task: asyncio.Task[None] | None = None
        self.watch_task: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()
        self.synced = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / f"haproxy-{self.group}.cfg"
        config.write_text(
            render(
                self.frontends,
                self.socket,
                round(self.cfg.connect_timeout * 1000),
                round(self.cfg.check_timeout * 1000),
            )
        )
        self.socket.unlink(missing_ok=True)
        if self.socket.parent != self.run_dir:
            sweep_dead_aliases()
        # the clients' path: as timely as the agent's own heartbeats
        self.process = spawn_member(
            [self.cfg.binary, "-f", str(config), "-db"],
            keep_priority=True,
            log=self.run_dir / f"{self.group}.log",  # its warnings and alerts
        )
        self.stopping = asyncio.Event()
        if self.watch_task is None and not self.mirror.running:
            self.mirror.running = True
            self.watch_task = asyncio.create_task(self.mirror.run(asyncio.Event(), self.common))
        self.sync_task = asyncio.create_task(self._sync_loop(self.stopping))

    async def stop(self) -> None:
        self.stopping.set()
        if self.sync_task is not None:
            self.sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sync_task
            self.sync_task = None
        proc, self.process = self.process, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.to_thread(proc.wait)
            self.socket.unlink(missing_ok=True)

    async def monitor(self) -> Health:
        if (failed := process_failure(self.process, "haproxy")) is not None:
            return failed
        try:
            await self.admin.run("show info")
        except HaproxyUnavailable as exc:
            return Health(False, str(exc))
        return Health(True, "serving" if self.synced.is_set() else "starting")

    async def promote(self, epoch: int) -> None:
        return None

    async def demote(self, active: str | None) -> None:
        return None

    async def sync(self) -> None:
        """Every frontend's backend brought to what its group's members say now."""
        for f in self.frontends:
            spec = load_json(self.mirror.keys.get(f"{self.prefix}{f.group}/spec"))
            if not spec:
                continue
            policy = Policy.ALL_ACTIVE if spec.get("mode") == "cluster" else Policy(spec["policy"])
            base = f"{self.prefix}{f.group}/members/"
            members = [load_json(e) for k, e in self.mirror.keys.items() if k.startswith(base)]
            want = desired_servers(policy, members)
            have = await self.admin.servers(f.backend)
            if f.one:
                want = one_ready(want, have)
            # sessions of a server taken out are cut where a client must not stay on it: a
            # demoted active, the former single writer, a member out of its cluster
            single = policy is Policy.ACTIVE_STANDBY or f.one or spec.get("mode") == "cluster"
            for command in commands(f.backend, have, want, f.server_options(), single):
                answer = (await self.admin.run(command)).strip()
                log.info("%s: %s%s", f.label, command, f" ({answer})" if answer else "")
        self.synced.set()

    async def _sync_loop(self, stopping: asyncio.Event) -> None:
        await self.mirror.ready.wait()
        while not stopping.is_set():
            self.changed.clear()
            try:
                await self.sync()
            except HaproxyUnavailable as exc:
                log.debug("backends not synced yet: %s", exc)
                await asyncio.sleep(0.05)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.changed.wait()
