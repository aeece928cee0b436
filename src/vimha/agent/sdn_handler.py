"""The `sdn` handler (issue 18): a member of an SDN service group is an SDN controller instance
(`vimha sdn run`), started by the agent with a config it writes, watched through the
instance's control socket.

- Centralised model (an active-standby group): `promote(epoch)` makes the instance MASTER of
  every switch with that generation id, `demote` SLAVE. An active cut off from switches that
  a peer still reaches is unhealthy: it resigns, and the standby takes over with a new epoch.
- Distributed model (an all-active group): the instances elect each switch's master among
  themselves; a cut-off instance stays healthy (it gives up those switches), flagged
  `partitioned`.

The instance's death is noticed at once (a pidfd in the agent's loop wakes the group's
members), and its masterships are freed at once: stopping a member revokes its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from vimha.agent.handlers import (
    HandlerFailed,
    Health,
    failure,
    kill_member,
    process_failure,
    spawn_member,
)
from vimha.domain.errors import Temporary
from vimha.domain.sdn import Model
from vimha.drivers.coord_mirror import Mirror, load_json
from vimha.groupspec import SdnHandlerConfig
from vimha.ports.coordination import Coordination
from vimha.sdn.control import ask
from vimha.sdnkeys import sdn_prefix


class SdnHandler:
    def __init__(
        self,
        group: str,
        node: str,
        cfg: SdnHandlerConfig,
        run_dir: Path,
        coord: Coordination,
        vim: str,
        model: Model,
        mirror: Mirror | None = None,
    ) -> None:
        self.group = group
        self.node = node
        self.cfg = cfg
        self.coord = coord
        self.vim = vim
        self.model = model
        self.mirror = mirror
        self.home = run_dir / f"sdn-{group}"
        self.socket = self.home / "control.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self.pidfd: int | None = None
        self.started_at = 0.0
        self.answered = False  # since its start

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _config(self) -> Path:
        doc = {
            "name": self.node,
            "host": self.node,
            "vim": self.vim,
            "group": self.group,
            "model": self.model.value,
            "coordination_url": self.cfg.coordination_url,
            "listen": self.cfg.listen,
            "control_socket": str(self.socket),
            "echo_interval": self.cfg.echo_interval,
            "echo_misses": self.cfg.echo_misses,
            "cut_off_grace": self.cfg.cut_off_grace,
            "lease_ttl": self.cfg.lease_ttl,
            "lease_renew": self.cfg.lease_ttl / 5,
            "log_level": "info",
        }
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / "sdn.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    async def start(self) -> None:
        argv = [sys.executable, "-m", "vimha", "sdn", "run", "--config", str(self._config())]
        # the agent's priority: a role request must not wait behind the node's busy servers
        self.process = spawn_member(argv, log=self.home / "sdn.log", keep_priority=True)
        self.started_at, self.answered = time.monotonic(), False
        self._watch_exit()

    def _watch_exit(self) -> None:
        """Wake the agent's members the moment the instance exits (no polling delay)."""
        if self.process is None or self.mirror is None:
            return
        try:
            fd = os.pidfd_open(self.process.pid)
        except OSError:
            return
        loop = asyncio.get_running_loop()
        mirror = self.mirror

        def exited() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            if self.pidfd == fd:
                self.pidfd = None
            mirror.notify()

        self.pidfd = fd
        loop.add_reader(fd, exited)

    async def stop(self) -> None:
        proc, self.process = self.process, None
        if self.pidfd is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self.pidfd)
                os.close(self.pidfd)
            self.pidfd = None
        await kill_member(proc)
        if proc is not None and self.model is Model.DISTRIBUTED:
            await self._free(proc.pid)  # its switches are taken over now, not in a lease

    async def _free(self, pid: int) -> None:
        """The stopped instance's masterships (keys on its lease) go with it, now."""
        key = f"{sdn_prefix(self.vim)}instances/{self.node}"
        with contextlib.suppress(Temporary):
            doc = load_json(await self.coord.get(key))
            if doc.get("pid") == pid and doc.get("lease"):
                await self.coord.revoke(int(doc["lease"]))

    async def monitor(self) -> Health:
        if (failed := process_failure(self.process, "sdn instance")) is not None:
            return failed
        try:
            status = await ask(self.socket, {"op": "status"}, self.cfg.timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            if not self.answered and time.monotonic() - self.started_at < self.cfg.start_timeout:
                return Health(False, "sdn instance starting", recovering=True)
            return Health(False, f"sdn instance: {failure(exc)}")
        self.answered = True
        switches = status.get("switches", {})
        cut = status.get("cutOff") or []
        masters = sum(1 for s in switches.values() if s.get("role") == "master")
        detail = f"{len(switches)} switches, master of {masters}"
        if cut:
            detail += f"; cut off from {', '.join(cut)}"
            if self.model is Model.CENTRALISED and status.get("central", [""])[0] == "master":
                return Health(False, detail, partitioned=True)  # the standby takes over
        return Health(True, detail, partitioned=bool(cut))

    async def _role(self, role: str, epoch: int) -> None:
        try:
            reply = await ask(self.socket, {"op": "role", "role": role, "epoch": epoch}, 2.0)
        except (OSError, TimeoutError, ValueError) as exc:
            raise HandlerFailed(f"sdn instance: {role}: {failure(exc)}") from exc
        if "error" in reply:
            raise HandlerFailed(f"sdn instance: {reply['error']}")

    async def promote(self, epoch: int) -> None:
        await self._role("master", epoch)

    async def demote(self, active: str | None) -> None:
        if self.model is Model.CENTRALISED:
            await self._role("slave", 0)
