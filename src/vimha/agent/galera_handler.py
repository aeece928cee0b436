"""The `mariadb` handler in `cluster` mode (issue 5, ARCH-5): a member of a MariaDB Galera
cluster, run by its agent (it dies with it). Every member is a writable active while it is
in the primary component and synced; `domain/galera.py` decides how a stopped member starts.

Each member publishes, under /vimha/<vim>/groups/<group>/galera/<node> (no lease: what its
data says outlives the agent; whether it is current comes from the member's leased key):

    {"state": "primary" | "non-primary" | "stopped" | "down", "seqno": N, "safe": bool,
     "history": "<state UUID>", "size": N, "left": "<gcomm UUID>", "gcomm": "host:port"}

(`size`: the members its primary component counts; `left`: not running, the group
communication identity of its last run, which the others evict at once.)

- start: the member's position is read from its data (`grastate.dat`, or `--wsrep-recover`
  after a crash, then handed to the server as its start position: without it a bootstrap
  would begin a new history from 0) and published; then it joins the members in the primary
  component (Galera transfers what it lacks: IST from their write-set cache, else a full SST
  by rsync), bootstraps a new cluster when the plan says so (after claiming
  the bootstrap in the coordination backend, so that two members never both do), or waits
  (HandlerFailed with the reason: the agent tries again).
- monitor: healthy while in the primary component and synced. Joining (a state transfer),
  donating, or cut off in a non-primary component, it is unhealthy but left alone
  (`recovering`): it catches up or merges back on its own, and a restart would only start
  the transfer again; except a donor left desynced, or a joiner that never answers, with no
  transfer running (Galera leaves them so when a partition cut their transfer): restarted.
  When no member is in a primary component and this one is the one the plan picks, it
  turns its component into the primary (`pc.bootstrap`).
- the others: a member whose agent says its server is gone (exited, or frozen and about to
  be killed) is evicted from the primary component at once (`evs.evict`) instead of after
  `suspect_timeout` of silence, during which no member can commit: a kill -9 or SIGSTOP
  stalls writes for a fraction of a second. A cut-off member says nothing: the timeout
  applies. A restarted member joins only once the component has let its previous run go;
  each member clears its evict list as soon as its component no longer counts that run (a
  list still naming it slowed the view change of the rejoin).
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
from vimha.agent.handlers import (
    HandlerFailed,
    Health,
    failure,
    process_failure,
    run_tool,
    spawn_member,
)
from vimha.agent.mariadb_handler import MariadbHandler
from vimha.domain.galera import Act, Member, State, parse_grastate, plan, recovered_position
from vimha.drivers.coord_mirror import Mirror, load_json
from vimha.groupspec import MariadbHandlerConfig
from vimha.ports.coordination import Coordination

log = logging.getLogger("vimha.agent.galera")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NON_PRIMARY_GRACE = 3.0  # a member cut off is given this long to merge back by itself (s)
# a donor with no state transfer script running is stuck after this long (s): Galera leaves
# a donor desynced for good when its group partitioned during the transfer ("sst sent
# called when not SST donor"); only a restart (then IST) brings it back
DONOR_STUCK_AFTER = 5.0
# the same for a joiner: a server still not answering this long after its start, or after
# its last transfer script ended, with none running, will never answer (seen in CI: JOINER
# -> OPEN -> PRIMARY after a partition, never synced)
JOINER_STUCK_AFTER = 45.0
STATUS = (
    "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_cluster_status', "
    "'wsrep_local_state_comment', 'wsrep_last_committed', 'wsrep_cluster_size', "
    "'wsrep_local_state_uuid', 'wsrep_gcomm_uuid', 'wsrep_evs_evict_list')"
)


def answered(exc: pymysql.MySQLError) -> bool:
    """The server itself refused (an SQL error); not a client-side failure to reach it
    (pymysql's and the client library's own errors are numbered from 2000)."""
    code = exc.args[0] if exc.args else None
    return isinstance(code, int) and 0 < code < 2000


def transferring(pid: int) -> bool:
    """Whether a state transfer script (`wsrep_sst_*`) of the server `pid` runs: the server
    runs in a session of its own, which its scripts share."""
    if pid <= 0:
        return False
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or proc.name == str(pid):
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        comm, _, rest = stat.partition(" (")[2].rpartition(") ")
        fields = rest.split()
        if len(fields) > 3 and fields[3] == str(pid) and comm.startswith("wsrep_sst"):
            return True
    return False


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
        self.start_position: str | None = None  # "uuid:seqno" recovered after a crash
        self.gcomm_uuid = ""  # the group communication identity of the server's run
        self.evicted: set[str] = set()  # runs of other members this one evicted
        self.evict_list_clear = False  # cleared since the component was last full
        self.waiting_since = 0.0  # for the primary component to let its previous run go
        self.said: dict[str, Any] = {}
        self.started_at = 0.0
        self.cut_off_since = 0.0
        self.donor_idle_since = 0.0  # donor/desynced with no transfer script running
        self.transfer_seen_at = 0.0  # a transfer script of the server last seen running
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
                str(doc.get("history", "")),
                int(doc.get("size", 0)),
            )
        return out

    async def _say(
        self, state: State, seqno: int, history: str = "", safe: bool = False, size: int = 0
    ) -> None:
        running = state in (State.PRIMARY, State.NON_PRIMARY)
        doc = {
            "state": state.value,
            "seqno": seqno,
            "safe": safe,
            "history": history if history.strip("0-") else "",  # all zeros: no data yet
            "size": size,
            "left": "" if running else self.gcomm_uuid,
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
                # a view change agrees sooner when a lost join message is sent again soon;
                # given up on (every member alone, non-primary) only after inactive_timeout
                f"evs.join_retrans_period=PT{min(1.0, suspect / 5):g}S",
                f"evs.install_timeout=PT{2 * suspect:g}S",
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
        self.start_position = None
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
            self.start_position = f"{uuid}:{seqno}"  # the server reads only grastate.dat
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
        uuid, seqno, safe = await self._position()
        await self._say(State.STOPPED, seqno, uuid, safe)
        now = time.monotonic()
        impatient = bool(self.waiting_since) and now - self.waiting_since > self._patience()
        decided = plan(self.node, self.declared, self._members(), self.claim.holder(), impatient)
        self.waiting_since = (self.waiting_since or now) if decided.evicting else 0.0
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
        if self.start_position:
            argv.append(f"--wsrep-start-position={self.start_position}")
        if decided.act is Act.BOOTSTRAP:
            if not await self.claim.take():
                raise HandlerFailed("another member claimed the bootstrap: join it instead")
            self._mark_safe()
            argv.append("--wsrep-new-cluster")
        self.recovered = None  # the data changes from here on
        self.evict_list_clear = False  # a new run: what it learns on joining is cleared too
        self.started_at = time.monotonic()
        self.process = spawn_member(argv, self.user, log=self.log)

    async def monitor(self) -> Health:
        if (failed := process_failure(self.process, "mariadbd")) is not None:
            if self.recovered is None:  # until start() reads where its data stands
                await self._say(State.DOWN, -1)
                return failed
            # not running (a start that waits for the others' positions, or exited): retried
            # after the restart backoff, not after the start grace of a server that runs
            return Health(False, failed.detail, self.recovered[1], definite=True)
        young = time.monotonic() - self.started_at < self.galera.start_timeout
        try:
            rows = await self._query(STATUS, within=self.cfg.timeout)
        except (pymysql.MySQLError, OSError, TimeoutError) as exc:
            # starting, or receiving a full state transfer: it does not answer yet
            if (stuck := self._stuck_joiner()) is not None:
                return Health(False, stuck, -1, definite=True)
            return Health(False, f"mariadb: {failure(exc)[:100]}", -1, recovering=young)
        status = {str(r["Variable_name"]).lower(): str(r["Value"]) for r in rows}
        seqno = int(status.get("wsrep_last_committed", "-1") or -1)
        local = status.get("wsrep_local_state_comment", "?")
        self.gcomm_uuid = status.get("wsrep_gcomm_uuid", "")
        if status.get("wsrep_cluster_status") == "Primary":
            self.cut_off_since = 0.0
            size = int(status.get("wsrep_cluster_size", "0") or 0)
            await self._say(State.PRIMARY, -1, size=size)
            await self.claim.drop()
            await self._evict_departed()
            await self._forget_evicted(size, status.get("wsrep_evs_evict_list", ""))
            if local == "Synced":
                self.donor_idle_since = 0.0
                return Health(True, f"synced, cluster of {size}", seqno)
            if (stuck := await self._stuck_donor(local)) is not None:
                return Health(False, stuck, seqno, definite=True)
            return Health(False, f"{local.lower()} (state transfer)", seqno, recovering=young)
        history = status.get("wsrep_local_state_uuid", "")
        size = int(status.get("wsrep_cluster_size", "0") or 0)  # of its component
        await self._say(State.NON_PRIMARY, seqno, history, size=size)
        await self._bootstrap_if_picked()
        return Health(
            False, "non-primary component (quorum lost)", seqno, recovering=True, partitioned=True
        )

    def _stuck_joiner(self) -> str | None:
        """Why this starting server is stuck (then it is restarted), None while it may
        still answer: no answer JOINER_STUCK_AFTER seconds after its start or after its last
        state transfer script ended, and none running."""
        pid = self.process.pid if self.process is not None else 0
        now = time.monotonic()
        if transferring(pid):
            self.transfer_seen_at = now
            return None
        quiet = now - max(self.started_at, self.transfer_seen_at)
        if not self.started_at or quiet < JOINER_STUCK_AFTER:
            return None
        return (
            f"no answer {quiet:.0f} s after its start or its last state transfer, none"
            " running (stuck since a partition cut its transfer): restarting"
        )

    async def _stuck_donor(self, local: str) -> str | None:
        """Why this donor is stuck (then it is restarted), None while it is not: desynced
        as a donor for DONOR_STUCK_AFTER seconds with no state transfer script of its own
        running and no operator's `wsrep_desync` asking for it."""
        pid = self.process.pid if self.process is not None else 0
        if not local.startswith("Donor") or transferring(pid):
            self.donor_idle_since = 0.0
            return None
        now = time.monotonic()
        self.donor_idle_since = self.donor_idle_since or now
        if now - self.donor_idle_since < DONOR_STUCK_AFTER:
            return None
        try:
            rows = await self._query("SELECT @@wsrep_desync AS d", within=self.cfg.timeout)
        except (pymysql.MySQLError, OSError, TimeoutError):
            return None
        if rows and str(rows[0].get("d", "0")) not in {"0", "OFF"}:
            return None  # an operator desynced it (a backup): not stuck
        return (
            f"donor/desynced for {now - self.donor_idle_since:.0f} s with no state transfer"
            " running (stuck since a partition cut its transfer): restarting"
        )

    def _patience(self) -> float:
        """How long a restarted member waits for the others to let its previous run go: past
        the time they take to notice its silence (evs.inactive_timeout) with room to spare."""
        return 4 * self.galera.suspect_timeout

    async def _evict_departed(self) -> None:
        """Evict at once the last run of each member whose agent says its server is gone.
        One member does it, the first running one by name (Galera passes the eviction on to
        the others in its view change); two evicting at once failed to agree on a view and
        both fell to non-primary for 2 s."""
        members = self._members()
        running = sorted(n for n, m in members.items() if m.live and m.state is State.PRIMARY)
        if running and running[0] != self.node:
            return
        for name in self.declared:
            doc = load_json(self.mirror.keys.get(f"{self.prefix}galera/{name}"))
            left = str(doc.get("left", ""))
            if name == self.node or left in self.evicted or not UUID.fullmatch(left):
                continue
            self.evicted.add(left)
            log.warning("%s: %s's server is gone (its agent says so): evicted", self.group, name)
            evict = f"SET GLOBAL wsrep_provider_options='evs.evict={left}'"
            try:
                await self._query(evict, within=2)
            except (pymysql.MySQLError, OSError, TimeoutError) as exc:
                log.error("%s: could not evict %s (%s): left to time out", self.group, name, exc)

    async def _forget_evicted(self, size: int, evict_list: str) -> None:
        """An evicted run is forgotten once the component counts fewer members than
        declared (its view without the run is installed): while the list still named it,
        the view change that let the member's next run in took 1-1.4 s of stalled writes
        (4 rounds of 20 over 2 s in `bench/switchover.py --stateful --groups galera`; 0 of
        20 since, the rejoin's stall 0.4-0.5 s). Each member clears only its own list; a
        cluster of 5 that evicts a second member while one is away may see that eviction
        cancelled on this member, and the run then goes by its suspect timeout. Once every
        declared member is back, the list is cleared too (what a new run learns on
        joining)."""
        full = size >= len(self.declared)
        stale = bool(evict_list.strip()) and not full
        if stale or (full and not self.evict_list_clear):
            try:
                await self._query("SET GLOBAL wsrep_provider_options='evs.evict='", within=2)
            except (pymysql.MySQLError, OSError, TimeoutError) as exc:
                log.error("%s: could not clear the evict list (%s)", self.group, exc)
                return
        self.evict_list_clear = full

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
        except pymysql.MySQLError as exc:
            if answered(exc):  # e.g. a view change in progress: tried again at the next look
                log.error("%s: pc.bootstrap refused (%s): trying again", self.group, exc)
                return
            await self._restart_to_bootstrap(exc)
        except (OSError, TimeoutError) as exc:
            await self._restart_to_bootstrap(exc)
        self.cut_off_since = now

    async def _restart_to_bootstrap(self, exc: BaseException) -> None:
        """The server does not answer: stopped, then started again (holding the claim), it
        bootstraps a new cluster from its data."""
        log.error("%s: pc.bootstrap failed (%s): restarting to bootstrap", self.group, exc)
        await self.stop()

    async def promote(self, epoch: int) -> None:
        return None  # every member of the primary component is an active

    async def demote(self, active: str | None) -> None:
        return None
