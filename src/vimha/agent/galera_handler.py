"""The `mariadb` handler in `cluster` mode (issue 5, ARCH-5): a member of a MariaDB Galera
cluster, run by its agent (it dies with it). Every member is a writable active while it is
in the primary component and synced; `domain/galera.py` decides how a stopped member starts.

Each member publishes, under /vimha/<vim>/groups/<group>/galera/<node> (no lease: what its
data says outlives the agent; whether it is current comes from the member's leased key):

    {"state": "primary" | "non-primary" | "stopped" | "down", "seqno": N, "safe": bool,
     "gcomm": "host:port"}

- start: the member's position is read from its data (`grastate.dat`, or `--wsrep-recover`
  after a crash) and published; then it joins the members in the primary component (Galera
  transfers what it lacks: IST from their write-set cache, else a full SST by rsync or
  mariabackup), bootstraps a new cluster when the plan says so (after claiming the bootstrap
  in the coordination backend, so that two members never both do), or waits (HandlerFailed
  with the reason: the agent tries again).
- monitor: healthy while in the primary component and synced. Joining (a state transfer),
  donating, or cut off in a non-primary component, it is unhealthy but left alone
  (`recovering`): it catches up or merges back on its own, and a restart would only start
  the transfer again. When no member is in a primary component and this one is the one the
  plan picks, it turns its component into the primary (`pc.bootstrap`).
- stop: SIGKILL of the server and what it started (a state transfer's rsync).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pymysql

from vimha.agent.claims import Claim
from vimha.agent.handlers import HandlerFailed, Health, process_failure, run_tool, spawn_member
from vimha.agent.mariadb_handler import MariadbHandler
from vimha.domain.galera import Act, Member, State, parse_grastate, plan, recovered_position
from vimha.drivers.coord_mirror import Mirror, load_json
from vimha.groupspec import MariadbHandlerConfig
from vimha.ports.coordination import Coordination

log = logging.getLogger("vimha.agent.galera")
NON_PRIMARY_GRACE = 3.0  # a member cut off is given this long to merge back by itself (s)
STATUS = (
    "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_cluster_status', "
    "'wsrep_local_state_comment', 'wsrep_last_committed', 'wsrep_cluster_size')"
)


class GaleraHandler(MariadbHandler):
    def __init__(
        self,
        group: str,
        node: str,
        cfg: MariadbHandlerConfig,
        run_dir: Path,
        coord: Coordination,
        vim: str,
        declared: tuple[str, ...],
        mirror: Mirror | None = None,
    ) -> None:
        super().__init__(group, node, cfg, run_dir, coord, vim)
        self.declared = declared
        self.mirror = mirror or Mirror(coord, (self.prefix,))
        self.claim = Claim(coord, self.mirror, self.prefix + "bootstrap", node)
        self.galera = cfg.galera
        self.gcomm = f"{cfg.bind}:{cfg.galera.port}"
        self.recovered: tuple[str, int, bool] | None = None  # of the data while stopped
        self.said: dict[str, Any] = {}
        self.started_at = 0.0
        self.cut_off_since = 0.0
        self.last_plan = ""

    # --- what the members say --------------------------------------------------------------

    def _members(self) -> dict[str, Member]:
        keys = self.mirror.keys
        out = {}
        for name in self.declared:
            doc = load_json(keys.get(f"{self.prefix}galera/{name}"))
            if not doc:
                continue
            out[name] = Member(
                name,
                f"{self.prefix}members/{name}" in keys,
                State(doc.get("state", "stopped")),
                int(doc.get("seqno", -1)),
                bool(doc.get("safe")),
            )
        return out

    async def _say(self, state: State, seqno: int, safe: bool = False) -> None:
        doc = {
            "state": state.value,
            "seqno": seqno,
            "safe": safe,
            "gcomm": self.gcomm,
        }
        if doc == self.said:
            return
        await self.coord.put(f"{self.prefix}galera/{self.node}", json.dumps(doc))
        self.said = doc

    # --- the data --------------------------------------------------------------------------

    def _wsrep_argv(self, peers: list[str]) -> list[str]:
        g = self.galera
        suspect = g.suspect_timeout
        options = ";".join(
            [
                f"gmcast.listen_addr=tcp://{self.cfg.bind}:{g.port}",
                f"ist.recv_addr={self.cfg.bind}:{g.ist_port}",
                f"evs.suspect_timeout=PT{suspect:g}S",
                f"evs.inactive_timeout=PT{2 * suspect:g}S",
                f"evs.keepalive_period=PT{min(1.0, suspect / 5):g}S",
                f"evs.inactive_check_period=PT{min(1.0, suspect / 3):g}S",
                f"gmcast.peer_timeout=PT{max(3.0, suspect):g}S",
                "pc.wait_prim_timeout=PT10S",
            ]
        )
        return [
            "--wsrep-on=ON", f"--wsrep-provider={g.provider}",
            f"--wsrep-cluster-name={self.group}",
            f"--wsrep-cluster-address=gcomm://{','.join(peers)}",
            f"--wsrep-node-name={self.node}", f"--wsrep-node-address={self.gcomm}",
            f"--wsrep-provider-options={options}",
            f"--wsrep-sst-receive-address={self.cfg.bind}:{g.sst_port}",
            f"--wsrep-sst-method={g.sst_method}", f"--wsrep-sst-auth={self.cfg.user}:",
            "--innodb-autoinc-lock-mode=2",
        ]  # fmt: skip

    async def _position(self) -> tuple[str, int, bool]:
        """(uuid, seqno, safe_to_bootstrap) of the stopped member's data."""
        if self.recovered is not None:
            return self.recovered
        state = self.data / "grastate.dat"
        uuid, seqno, safe = parse_grastate(state.read_text() if state.exists() else "")
        if seqno < 0 and uuid.strip("0-"):
            # it crashed (or was killed): the position is in InnoDB, recovered offline
            out = self.home / "recover.log"
            out.unlink(missing_ok=True)
            argv = self._argv() + self._wsrep_argv([]) + ["--wsrep-recover", f"--log-error={out}"]
            await run_tool(argv, self.user)
            found = recovered_position(out.read_text() if out.exists() else "")
            if found is None:
                raise HandlerFailed(f"--wsrep-recover found no position (see {out})")
            uuid, seqno = found
        self.recovered = (uuid, seqno, safe)
        return self.recovered

    def _mark_safe(self) -> None:
        """The bootstrapping member's data is declared safe to bootstrap from (it is the most
        advanced of all): Galera refuses otherwise."""
        state = self.data / "grastate.dat"
        if state.exists():
            text = re.sub(r"safe_to_bootstrap:\s*0", "safe_to_bootstrap: 1", state.read_text())
            state.write_text(text)

    # --- the handler -----------------------------------------------------------------------

    async def start(self) -> None:
        await self._prepare()
        _, seqno, safe = await self._position()
        await self._say(State.STOPPED, seqno, safe)
        decided = plan(self.node, self.declared, self._members(), self.claim.holder())
        if decided.reason != self.last_plan:
            log.warning("%s: %s", self.group, decided.reason)
            self.last_plan = decided.reason
        if decided.act is Act.WAIT:
            raise HandlerFailed(decided.reason)
        peers = [
            str(doc["gcomm"])
            for n in self.declared
            if n != self.node
            and (doc := load_json(self.mirror.keys.get(f"{self.prefix}galera/{n}"))).get("gcomm")
        ]
        argv = self._argv() + self._wsrep_argv(peers)
        if decided.act is Act.BOOTSTRAP:
            if not await self.claim.take():
                raise HandlerFailed("another member claimed the bootstrap: join it instead")
            self._mark_safe()
            argv.append("--wsrep-new-cluster")
        self.recovered = None  # the data changes from here on
        self.started_at = time.monotonic()
        self.process = spawn_member(argv, self.user)

    async def monitor(self) -> Health:
        if (failed := process_failure(self.process, "mariadbd")) is not None:
            if self.recovered is None:  # until start() reads where its data stands
                await self._say(State.DOWN, -1)
                return failed
            return Health(False, failed.detail, self.recovered[1])
        young = time.monotonic() - self.started_at < self.galera.start_timeout
        try:
            rows = await self._query(STATUS, within=self.cfg.timeout)
        except (pymysql.MySQLError, OSError, TimeoutError) as exc:
            # starting, or receiving a full state transfer: it does not answer yet
            return Health(False, f"mariadb: {str(exc).strip()[:100]}", -1, recovering=young)
        status = {str(r["Variable_name"]).lower(): str(r["Value"]) for r in rows}
        seqno = int(status.get("wsrep_last_committed", "-1") or -1)
        local = status.get("wsrep_local_state_comment", "?")
        if status.get("wsrep_cluster_status") == "Primary":
            self.cut_off_since = 0.0
            await self._say(State.PRIMARY, -1)
            await self.claim.drop()
            if local == "Synced":
                size = status.get("wsrep_cluster_size", "?")
                return Health(True, f"synced, cluster of {size}", seqno)
            return Health(False, f"{local.lower()} (state transfer)", seqno, recovering=young)
        await self._say(State.NON_PRIMARY, seqno)
        await self._bootstrap_if_picked()
        return Health(
            False, "non-primary component (quorum lost)", seqno, recovering=True, partitioned=True
        )

    async def _bootstrap_if_picked(self) -> None:
        now = time.monotonic()
        self.cut_off_since = self.cut_off_since or now
        if now - self.cut_off_since < NON_PRIMARY_GRACE:
            return
        decided = plan(self.node, self.declared, self._members(), self.claim.holder())
        if decided.act is not Act.BOOTSTRAP or not await self.claim.take():
            return
        log.warning("%s: %s (pc.bootstrap)", self.group, decided.reason)
        try:
            await self._query("SET GLOBAL wsrep_provider_options='pc.bootstrap=YES'", within=5)
        except (pymysql.MySQLError, OSError, TimeoutError) as exc:
            # stopped instead: started again, it bootstraps a new cluster from its data
            log.error("%s: pc.bootstrap failed (%s): restarting to bootstrap", self.group, exc)
            await self.stop()
        self.cut_off_since = now

    async def promote(self, epoch: int) -> None:
        return None  # every member of the primary component is an active

    async def demote(self, active: str | None) -> None:
        return None
