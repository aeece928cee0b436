"""The `rabbitmq` handler (issue 5, ARCH-5): a member of a RabbitMQ cluster, run by its agent
as the `rabbitmq` OS user (it dies with the agent). Every member serves AMQP; queues that
must survive a member's loss are quorum queues (Raft, on every member). How a member starts
is `domain/rabbitmq.py`'s plan; each member publishes, under
/vimha/<vim>/groups/<group>/rabbitmq/<node> (no lease):

    {"nodename": "<group>-<node>@<bind>", "running": bool, "data": bool}

- The cluster heals partitions by `pause_minority`: a member cut off from the majority stops
  serving (its AMQP listener closes) and resumes on its own when the network heals; the
  agent leaves it alone (`recovering`) and the group is alarmed (`partitioned`).
- monitor: the AMQP port answers (every monitor interval), and the member's view of the
  cluster from `rabbitmq-diagnostics cluster_status` (every `status_interval`, in the
  background): running members, partitions, resource alarms.
- A member that joins after losing its data is first forgotten by the cluster, then joins,
  then its quorum queues grow back onto it (`rabbitmq-queues grow`). It never joins while
  the cluster remembers it (still running, or a forget that failed): under its old name it
  would answer for quorum-queue members whose logs it lost (`domain/rabbitmq.earlier_life`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import subprocess
import time
from pathlib import Path

from vimha.agent.claims import Claim
from vimha.agent.handlers import (
    HandlerFailed,
    Health,
    kill_member,
    os_user,
    own,
    process_failure,
    run_tool,
    spawn_member,
)
from vimha.domain.rabbitmq import (
    Act,
    ClusterStatus,
    Member,
    earlier_life,
    parse_status,
    plan,
)
from vimha.drivers.coord_mirror import Mirror, load_json
from vimha.groupspec import RabbitmqHandlerConfig, groups_prefix
from vimha.ports.coordination import Coordination

log = logging.getLogger("vimha.agent.rabbitmq")


class RabbitmqHandler:
    def __init__(
        self,
        group: str,
        node: str,
        cfg: RabbitmqHandlerConfig,
        run_dir: Path,
        coord: Coordination,
        vim: str,
        declared: tuple[str, ...],
        mirror: Mirror | None = None,
    ) -> None:
        self.group = group
        self.node = node
        self.cfg = cfg
        self.coord = coord
        self.declared = declared
        self.prefix = f"{groups_prefix(vim)}{group}/"
        self.mirror = mirror or Mirror(coord, (self.prefix,))
        self.claim = Claim(coord, self.mirror, self.prefix + "formed", node)
        self.data = Path(cfg.data_dir) if cfg.data_dir else run_dir / f"rabbitmq-{group}"
        self.log = run_dir / f"{group}.log"  # what the server says on its console
        self.home = self.data.parent / f"rabbitmq-{group}-run"
        self.nodename = f"{group}-{node}@{cfg.bind}"
        self.user = os_user(cfg.os_user)
        self.bin = Path(cfg.bin_dir)
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.status: ClusterStatus | None = None
        # the member's last word on its cluster: cut off from the majority (a partition seen,
        # fewer than a majority running, or its broker paused itself); kept through status
        # calls that fail otherwise (a timeout under load), changed by the next answer only
        self.cut_off = False
        self.status_at = 0.0  # when the broker last answered (or said it is paused)
        self.amqp_down_since: float | None = None
        self.ask = asyncio.Event()  # the AMQP port went quiet: ask the broker at once
        self.said: dict[str, object] = {}
        self.joining: asyncio.Task[None] | None = None
        self.join_failed = ""
        self.status_task: asyncio.Task[None] | None = None
        self.last_plan = ""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    # --- environment -----------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),  # .erlang.cookie
            "LANG": "C.UTF-8",
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_USE_LONGNAME": "true",
            "RABBITMQ_DIST_PORT": str(self.cfg.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.home / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.data),
            "RABBITMQ_LOG_BASE": str(self.home / "log"),
            "RABBITMQ_PID_FILE": str(self.home / "rabbitmq.pid"),
            # the script then execs the Erlang VM: the member's pid is the broker's own
            # (a fault, and the death signal, reach the broker, not a shell waiting on it)
            "RUNNING_UNDER_SYSTEMD": "true",
        }

    def _write_files(self, listen: bool = True) -> None:
        own(self.home, self.user)
        own(self.data, self.user)
        cookie = self.home / ".erlang.cookie"
        cookie.unlink(missing_ok=True)
        cookie.write_text(self.cfg.cookie)
        cookie.chmod(0o400)
        listener = f"listeners.tcp.1 = {self.cfg.bind}:{self.cfg.port}" if listen else ""
        (self.home / "rabbitmq.conf").write_text(
            f"{listener or 'listeners.tcp = none'}\n"
            "loopback_users = none\n"
            "cluster_partition_handling = pause_minority\n"
            "log.console = false\n"
            "log.file.level = warning\n"
            "log.connection.level = error\n"
        )
        tick = max(1, round(self.cfg.tick_time))
        poll = max(50, round(self.cfg.detector_interval * 1000))
        (self.home / "advanced.config").write_text(
            f"[{{kernel, [{{net_ticktime, {tick}}}]}}, {{aten, [{{poll_interval, {poll}}}]}}].\n"
        )
        (self.home / "enabled_plugins").write_text("[].\n")
        if self.user is not None:
            for path in self.home.iterdir():
                os.chown(path, *_ids(self.user))

    def _has_data(self) -> bool:
        mine = self.data / self.nodename
        return mine.is_dir() and any(mine.iterdir())

    async def _tool(self, tool: str, *args: str, node: str = "", limit: float = 60) -> str:
        argv = [str(self.bin / tool), "-n", node or self.nodename, *args]
        return await run_tool(argv, self.user, limit, self._env())

    # --- what the members say --------------------------------------------------------------

    def _members(self) -> dict[str, Member]:
        out = {}
        for name in self.declared:
            doc = load_json(self.mirror.keys.get(f"{self.prefix}rabbitmq/{name}"))
            if doc:
                out[name] = Member(
                    name,
                    f"{self.prefix}members/{name}" in self.mirror.keys,
                    bool(doc.get("running")),
                    bool(doc.get("data")),
                    str(doc.get("nodename", "")),
                )
        return out

    async def _say(self, running: bool) -> None:
        doc = {"nodename": self.nodename, "running": running, "data": self._has_data()}
        if doc != self.said:
            await self.coord.put(f"{self.prefix}rabbitmq/{self.node}", json.dumps(doc))
            self.said = doc

    # --- the handler -----------------------------------------------------------------------

    async def start(self) -> None:
        has_data = self._has_data()
        decided = plan(self.node, self.declared, self._members(), has_data, self.claim.holder())
        # a member that joins first runs on its own, a cluster of one: no client may reach it
        # then (what it confirmed would go when it joins), so it opens its AMQP port only
        # once it is in the cluster
        self._write_files(listen=decided.act is not Act.JOIN)
        await self._say(False)
        if decided.reason != self.last_plan:
            log.warning("%s: %s", self.group, decided.reason)
            self.last_plan = decided.reason
        if decided.act is Act.WAIT:
            raise HandlerFailed(decided.reason)
        if decided.act is Act.FORM and not await self.claim.take():
            raise HandlerFailed("another member claimed the formation: join it instead")
        self.status, self.join_failed, self.cut_off = None, "", False
        self.status_at, self.amqp_down_since = 0.0, None
        self.started_at = time.monotonic()
        self.process = spawn_member(
            [str(self.bin / "rabbitmq-server")], self.user, self._env(), log=self.log
        )
        if decided.act is Act.JOIN:
            self.joining = asyncio.create_task(self._join(decided.peer))
        if self.status_task is None or self.status_task.done():
            self.status_task = asyncio.create_task(self._watch_status())

    async def _join(self, peer: str) -> None:
        """Once the broker runs on its own: forgotten by the cluster (it may remember an
        earlier life of this node), joined, its quorum queues grown back onto it."""
        try:
            await self._started()
            await self._tool("rabbitmqctl", "stop_app")
            try:
                known = await self._cluster_status(peer)
            except ValueError as exc:
                raise HandlerFailed(f"{peer}'s cluster status: {exc}") from exc
            if (why := earlier_life(known, self.nodename)) is not None:
                raise HandlerFailed(why)
            if self.nodename in known.members:  # a failed forget fails the join: tried again
                await self._tool("rabbitmqctl", "forget_cluster_node", self.nodename, node=peer)
                log.warning("%s: %s forgot this node's earlier life", self.group, peer)
            await self._tool("rabbitmqctl", "join_cluster", peer)
            self._write_files(listen=True)  # its next boots
            listener = f'[{{"{self.cfg.bind}", {self.cfg.port}}}]'
            await self._tool(
                "rabbitmqctl", "eval", f"application:set_env(rabbit, tcp_listeners, {listener})."
            )
            await self._tool("rabbitmqctl", "start_app")
            await self._tool("rabbitmq-queues", "grow", self.nodename, "all")
            log.warning("%s: joined the cluster of %s", self.group, peer)
        except HandlerFailed as exc:
            self.join_failed = str(exc)
            log.error("%s: could not join %s: %s", self.group, peer, exc)

    async def _started(self) -> None:
        """Once the broker has started. `await_startup` fails at once while the Erlang node
        is not up yet, and each call is a whole Erlang VM (about a second of CPU): the node's
        distribution port is watched first (a TCP connect), then it is asked, again after a
        pause should it still fail, until `start_timeout`."""
        deadline = time.monotonic() + self.cfg.start_timeout
        while True:
            if process_failure(self.process, "rabbitmq-server") is not None:
                raise HandlerFailed("rabbitmq-server exited while starting")
            if time.monotonic() > deadline:
                raise HandlerFailed(f"not started within {self.cfg.start_timeout:g} s")
            if not await _answers(self.cfg.bind, self.cfg.dist_port, self.cfg.timeout):
                await asyncio.sleep(0.2)
                continue
            try:
                limit = max(deadline - time.monotonic(), 1)
                await self._tool("rabbitmqctl", "await_startup", limit=limit)
                return
            except HandlerFailed as exc:
                log.info("%s: not started yet: %s", self.group, str(exc)[:120])
            await asyncio.sleep(2)

    @property
    def _status_limit(self) -> float:
        return max(10.0, self.cfg.status_interval * 2)

    async def _cluster_status(self, node: str = "", limit: float = 60) -> ClusterStatus:
        """`node`'s view of the cluster (default: this member's); ValueError when the tool
        answers something else than its JSON."""
        out = await self._tool(
            "rabbitmq-diagnostics", "-q", "cluster_status", "--formatter", "json",
            node=node, limit=limit,
        )  # fmt: skip
        return parse_status(out[out.find("{") :])

    async def _watch_status(self) -> None:
        majority = len(self.declared) // 2 + 1
        while self.process is not None:
            self.ask.clear()
            asked = time.monotonic()
            try:
                status = self.status = await self._cluster_status(limit=self._status_limit)
                self.cut_off = bool(status.partitions) or len(status.running) < majority
                self.status_at = asked
            except HandlerFailed as exc:
                # the Erlang node answers but the broker is stopped: paused (pause_minority);
                # another failure (a timeout under load) changes nothing of what was known
                self.status = None
                if "'rabbit' app to be running" in str(exc):
                    self.cut_off, self.status_at = True, asked
            except ValueError:
                self.status = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.status_interval):
                    await self.ask.wait()

    async def stop(self) -> None:
        for task in (self.joining, self.status_task):
            if task is not None:
                task.cancel()
        self.joining = self.status_task = None
        proc, self.process = self.process, None
        await kill_member(proc)

    async def _amqp_answers(self) -> bool:
        return await _answers(self.cfg.bind, self.cfg.port, self.cfg.timeout)

    async def monitor(self) -> Health:
        if (failed := process_failure(self.process, "rabbitmq-server")) is not None:
            return failed
        if self.join_failed:
            return Health(False, f"could not join: {self.join_failed[:100]}")
        now = time.monotonic()
        young = now - self.started_at < self.cfg.start_timeout
        status = self.status
        partitioned = self.cut_off
        if self.joining is not None and not self.joining.done():
            return Health(False, "joining the cluster", recovering=young)
        if not await self._amqp_answers():
            if partitioned:
                return Health(
                    False, "paused: cut off from the majority", recovering=True, partitioned=True
                )
            if self.amqp_down_since is None:
                self.amqp_down_since = now
                self.ask.set()
            asking = now - self.amqp_down_since < self._status_limit
            if self.status_at < self.amqp_down_since and asking:
                # a broker that paused itself closes its AMQP port before its status says
                # so: not restarted before the broker has been asked
                return Health(False, "AMQP port went quiet: asking the broker", recovering=True)
            return Health(False, "AMQP port does not answer", recovering=young)
        self.amqp_down_since = None
        await self._say(True)
        await self.claim.drop()
        if status is None:
            return Health(True, "serving")
        detail = f"serving, {len(status.running)} of {len(self.declared)} members running"
        if status.alarms:
            detail += f"; resource alarms: {', '.join(status.alarms)[:80]}"
        return Health(True, detail, partitioned=partitioned)

    async def promote(self, epoch: int) -> None:
        return None  # every member serves

    async def demote(self, active: str | None) -> None:
        return None


async def _answers(host: str, port: int, within: float) -> bool:
    """Something accepts TCP connections there."""
    try:
        async with asyncio.timeout(within):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _ids(user: str) -> tuple[int, int]:
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid
