"""The `mariadb` handler in active-standby mode (issue 5, ARCH-3/ARCH-4): a MariaDB primary
and replicas with GTID replication, every member run by its agent (it dies with it).

- A member always starts read-only (`read_only=ON`, no replication yet); `demote(active)`
  points it at the active (`MASTER_USE_GTID=current_pos`) and starts the replica threads.
- Every member keeps a binary log of everything it applied (`log_slave_updates`), so any of
  them can be the next primary and a wiped member can replay the whole history from it.
- Commits are semi-synchronous (AFTER_SYNC): a client's commit is acknowledged only once a
  replica has it, so the freshest replica, which is the one promoted, has every
  acknowledged write.
- Its position is the sequence number of the last GTID (domain 0) it received (applied or
  not), so the replica with every acknowledged commit is the one promoted
  (`domain/groups.py`) and `max_lag` is in transactions.
- promote: the replica applies everything it received (never discarded: if it cannot within
  `CATCH_UP`, the promotion fails and the member resigns), stops replicating, turns the
  durable settings on and read_only off; the epoch is written in `vimha.epoch` for clients.
- Replicas apply without flushing at each transaction (their primary and relay log have
  it): a member replaying the whole history catches up many times faster.
- A former primary is never put back in place while another member is active: its binlog
  may hold a transaction nobody acknowledged (written, not yet sent, when it died). A
  demoted primary is stopped; when it starts and another member is active, its data is
  wiped and re-initialised and it replays the history from the active. A killed primary
  that restarts before anyone took its place keeps its data: it has every acknowledged
  write and may well be the freshest, promoted again.
- A replication error (an old active's port now serving another history, say) only lasts
  until a replica is pointed at the new active. A replica that has received nothing for
  `stream_grace` from the active it follows, while that active answers as the primary,
  cannot follow it (it received transactions the active never had: its history diverged):
  it is unhealthy (semi-synchronous commits would wait for it for ever) and, at its restart,
  wiped and re-initialised like a former primary (`agent/following.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pymysql

from vimha.agent.following import Following
from vimha.agent.handlers import (
    HandlerFailed,
    Health,
    failure,
    kill_member,
    os_user,
    other_active,
    own,
    process_failure,
    run_tool,
    spawn_member,
)
from vimha.groupspec import MariadbHandlerConfig, groups_prefix
from vimha.ports.coordination import Coordination

WAS_PRIMARY = "vimha.was_primary"
CATCH_UP = 60.0  # how long a promoted replica may take to apply what it received (s)
BACKLOG = 100  # received, not yet applied: a replica this far behind says so
NOT_IN_BINLOG = 1236  # ER_MASTER_FATAL_ERROR_READING_BINLOG: asked for what the active lacks
ASK_AGAIN = 0.3  # a replica refused so asks again this often (s)
NOT_OPEN = {(2002,), (2003,)}  # the client found no server at the socket or port
STARTING = 30.0  # a server started this recently that does not answer yet is starting (s)


def data_dir(group: str, cfg: MariadbHandlerConfig, run_dir: Path) -> Path:
    return Path(cfg.data_dir) if cfg.data_dir else run_dir / f"mariadb-{group}"


def server_home(group: str, cfg: MariadbHandlerConfig, run_dir: Path) -> Path:
    """The server's own files beside its data: socket, pid file, error log, temp dir."""
    return data_dir(group, cfg, run_dir).parent / f"mariadb-{group}-run"


def gtid_position(text: str | None) -> int:
    """The sequence number of domain 0's last GTID in a `domain-server-seq,...` list."""
    for gtid in (text or "").split(","):
        parts = gtid.strip().split("-")
        if len(parts) == 3 and parts[0] == "0":
            return int(parts[2])
    return 0


class MariadbHandler:
    def __init__(
        self,
        group: str,
        node: str,
        cfg: MariadbHandlerConfig,
        run_dir: Path,
        coord: Coordination,
        vim: str,
    ) -> None:
        self.group = group
        self.coord = coord
        self.prefix = f"{groups_prefix(vim)}{group}/"
        self.node = node
        self.cfg = cfg
        self.data = data_dir(group, cfg, run_dir)
        self.log = run_dir / f"{group}.log"  # what the server says
        self.home = server_home(group, cfg, run_dir)
        self.user = os_user(cfg.os_user)
        self.process: subprocess.Popen[bytes] | None = None
        self.conn: Any = None
        self.server_id = zlib.crc32(node.encode()) % 4_000_000_000 + 1
        self._epoch_task: asyncio.Task[None] | None = None
        self._asked_at = 0.0  # a refused receiver was last asked to try again
        self.following = Following(cfg.stream_grace, self._answers_as_primary)
        self.started_at = 0.0  # time.monotonic() of the server's start
        # The member's queries run one at a time in a thread of their own: a server that
        # hangs (a STOP SLAVE waiting on a frozen primary) must not take the agent's shared
        # threads, which renew its leases, nor be queried by two threads at once.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"mariadb-{group}")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    # --- the server ------------------------------------------------------------------------

    async def _initialise(self) -> None:
        own(self.data, self.user)
        argv = [
            self.cfg.install_db, f"--datadir={self.data}", "--skip-test-db",
            "--auth-root-authentication-method=normal", f"--tmpdir={self.home / 'tmp'}",
        ]  # fmt: skip
        try:
            await run_tool(argv, self.user)
        except HandlerFailed:
            shutil.rmtree(self.data, ignore_errors=True)
            raise

    async def _prepare(self) -> None:
        """The server's folders (owned by its OS user), its data initialised when empty."""
        own(self.home, self.user)
        own(self.home / "tmp", self.user)  # its own: two servers' temporary files never meet
        own(self.data.parent, self.user)
        if not (self.data / "mysql").exists():
            await self._initialise()
        init = self.home / "init.sql"
        user = f"'{self.cfg.user}'@'%'"
        init.write_text(
            "SET sql_log_bin=0;\n"
            f"CREATE USER IF NOT EXISTS {user};\n"
            f"GRANT ALL ON *.* TO {user} WITH GRANT OPTION;\n"
            # read_only binds the clients too: a replica, or a primary being fenced, takes
            # no client's write (MariaDB >= 10.11: SUPER no longer bypasses read_only)
            f"REVOKE READ_ONLY ADMIN ON *.* FROM {user};\n"
        )

    def _argv(self, durable_now: bool = True) -> list[str]:
        """`durable_now` False: a replica's own writes are not flushed at each transaction
        (what it applies is in its relay log, and its primary has it); the promotion turns
        the durable settings on (with `fsync`)."""
        init = self.home / "init.sql"
        durable = ["--innodb-flush-log-at-trx-commit=1", "--sync-binlog=1"]
        fast = ["--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0"]
        argv = [
            self.cfg.server, "--no-defaults", f"--datadir={self.data}",
            f"--port={self.cfg.port}", f"--bind-address={self.cfg.bind}",
            f"--socket={self.home / 'mysqld.sock'}", f"--pid-file={self.home / 'mysqld.pid'}",
            f"--log-error={self.home / 'error.log'}", f"--init-file={init}",
            f"--server-id={self.server_id}", "--log-bin=binlog", "--binlog-format=ROW",
            "--skip-name-resolve", f"--innodb-buffer-pool-size={self.cfg.buffer_pool}",
            f"--tmpdir={self.home / 'tmp'}",
            *(durable if self.cfg.fsync and durable_now else fast),
        ]  # fmt: skip
        return argv

    async def start(self) -> None:
        stale = (self.data / WAS_PRIMARY).exists() or self.following.replace
        if stale and await other_active(self.coord, self.prefix, self.node):
            shutil.rmtree(self.data)  # replays the history from the active
        self.following.replace = False
        self.following.follows(None)
        await self._prepare()
        argv = [
            *self._argv(durable_now=False), "--log-slave-updates", "--gtid-strict-mode=ON",
            "--read-only=ON",
            "--skip-slave-start", "--slave-net-timeout=2",
        ]  # fmt: skip
        if self.cfg.semi_sync:
            argv += [
                # the master side is turned on at promotion only: a replica's own applier
                # (log_slave_updates) must not wait for acknowledgements of its own
                "--rpl-semi-sync-master-enabled=OFF", "--rpl-semi-sync-slave-enabled=ON",
                "--rpl-semi-sync-master-wait-point=AFTER_SYNC",
                "--rpl-semi-sync-master-timeout=4294967295",  # never fall back to async
                "--rpl-semi-sync-slave-kill-conn-timeout=1",  # a STOP SLAVE waits no longer
            ]  # fmt: skip
        self.started_at = time.monotonic()
        self.process = spawn_member(argv, self.user, log=self.log)

    async def stop(self) -> None:
        self._executor.submit(self._close)
        proc, self.process = self.process, None
        await kill_member(proc)

    # --- queries ---------------------------------------------------------------------------

    def _close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _connect(self, flags: int = 0, read_timeout: float = 10) -> Any:
        # as root through the server's socket: the clients' account may not lift read_only
        return pymysql.connect(
            unix_socket=str(self.home / "mysqld.sock"),
            user="root",
            connect_timeout=max(1, round(self.cfg.timeout * 2)),
            read_timeout=read_timeout,
            write_timeout=read_timeout,
            autocommit=True,
            client_flag=flags,
            cursorclass=pymysql.cursors.DictCursor,
        )

    def _run(self, statements: list[str]) -> list[dict[str, Any]]:
        if self.conn is None:
            self.conn = self._connect()
        rows: list[dict[str, Any]] = []
        with self.conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
                rows = list(cur.fetchall())
        return rows

    async def _query(self, *statements: str, within: float | None = None) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(within or self.cfg.timeout * 4):
                return await loop.run_in_executor(self._executor, self._run, list(statements))
        except (pymysql.MySQLError, OSError, TimeoutError):
            self._executor.submit(self._close)  # after the call in flight, in its thread
            raise

    # --- the handler -----------------------------------------------------------------------

    async def monitor(self) -> Health:
        if (failed := process_failure(self.process, "mariadbd")) is not None:
            return failed
        try:
            (state,) = await self._query(
                "SELECT @@read_only AS ro, @@gtid_current_pos AS pos", within=self.cfg.timeout
            )
            replica = await self._query("SHOW SLAVE STATUS", within=self.cfg.timeout)
        except (pymysql.MySQLError, OSError, TimeoutError) as exc:
            # a server still recovering from a crash has not opened its socket yet: restarted
            # for that, it would only begin its recovery again
            opening = isinstance(exc, pymysql.OperationalError) and exc.args[:1] in NOT_OPEN
            young = time.monotonic() - self.started_at < STARTING
            detail = f"mariadb: {failure(exc)[:120]}"
            return Health(False, detail, recovering=opening and young)
        applied = gtid_position(str(state["pos"]))
        if not state["ro"]:
            self.following.follows(None)
            return Health(True, "primary", applied)
        if not replica:
            return Health(True, "replica, no active yet", applied)
        # what it received counts: promoted, it applies all of it first (a commit was
        # acknowledged once a replica received it)
        received = gtid_position(str(replica[0].get("Gtid_IO_Pos") or ""))
        position = max(applied, received)
        receiving = replica[0].get("Slave_IO_Running") == "Yes"
        if receiving:
            await self.following.judge(receiving)
            if (backlog := position - applied) >= BACKLOG:
                return Health(True, f"replica, {backlog} transactions to apply", position)
            return Health(True, "replica", position)
        error = replica[0].get("Last_IO_Error") or replica[0].get("Last_SQL_Error") or ""
        if int(replica[0].get("Last_IO_Errno") or 0) == NOT_IN_BINLOG:
            await self._ask_again()
        if (cannot := await self.following.judge(receiving)) is not None:
            return Health(False, f"replica: {cannot} ({str(error)[:80]})", position)
        return Health(True, f"replica, link to active down {str(error)[:80]}".strip(), position)

    async def _ask_again(self) -> None:
        """Its receiver asked the active for transactions the active had not written yet: the
        active was still applying what it had received before its promotion (replicas follow
        it as soon as it holds the slot). MariaDB treats that as fatal and stops asking;
        asked again, it gets them once the promotion is done. Without this, the primary's
        semi-synchronous commits waited 4-5 s for its old primary to come back as a replica.
        A replica truly ahead (diverged) keeps failing, as before."""
        now = time.monotonic()
        if now - self._asked_at < ASK_AGAIN:
            return
        self._asked_at = now
        with contextlib.suppress(pymysql.MySQLError, OSError, TimeoutError):
            await self._query("START SLAVE IO_THREAD", within=self.cfg.timeout)

    async def promote(self, epoch: int) -> None:
        try:
            await self._catch_up()
            semi_sync = "ON" if self.cfg.semi_sync else "OFF"
            durable = 1 if self.cfg.fsync else 0
            await self._query(
                "STOP SLAVE",
                "RESET SLAVE ALL",
                f"SET GLOBAL rpl_semi_sync_master_enabled = {semi_sync}",
                f"SET GLOBAL innodb_flush_log_at_trx_commit = {2 - durable}",
                f"SET GLOBAL sync_binlog = {durable}",
                "SET GLOBAL read_only = OFF",
                within=5,
            )
            (self.data / WAS_PRIMARY).write_text(str(epoch))
        except (pymysql.MySQLError, OSError, TimeoutError) as exc:
            raise HandlerFailed(f"promote: {type(exc).__name__} {exc}") from exc
        # Written in the background: with semi-synchronous commits it completes once a
        # replica follows this primary, which happens after the promotion is published.
        self._epoch_task = asyncio.create_task(self._write_epoch(epoch))

    async def _catch_up(self) -> None:
        """Apply everything received (it may have been acknowledged) before writing; never
        discard it: HandlerFailed (this member is not promoted) when it cannot be applied.
        In GTID mode the relay log is dropped when the applier starts with the receiver
        stopped, so an applier stopped without an error is started before the receiver is
        stopped."""
        (status,) = await self._query("SHOW SLAVE STATUS", within=5) or [{}]
        if error := str(status.get("Last_SQL_Error") or ""):
            raise HandlerFailed(f"promote: received what it cannot apply: {error[:100]}")
        if status and status.get("Slave_SQL_Running") != "Yes":
            await self._query("START SLAVE SQL_THREAD", within=5)
        await self._query("STOP SLAVE IO_THREAD", within=5)
        (status,) = await self._query("SHOW SLAVE STATUS", within=5) or [{}]
        received = str(status.get("Gtid_IO_Pos") or "")
        deadline = time.monotonic() + CATCH_UP
        while received and gtid_position(received) > gtid_position(await self._applied()):
            (row,) = await self._query(
                f"SELECT MASTER_GTID_WAIT('{received}', 2) AS done", within=4
            )
            if row["done"] == 0:
                return
            (status,) = await self._query("SHOW SLAVE STATUS", within=5) or [{}]
            if error := str(status.get("Last_SQL_Error") or ""):
                raise HandlerFailed(f"promote: received what it cannot apply: {error[:100]}")
            if time.monotonic() > deadline:
                raise HandlerFailed(f"promote: what it received not applied within {CATCH_UP:g}s")

    async def _applied(self) -> str:
        (row,) = await self._query("SELECT @@gtid_current_pos AS pos", within=5)
        return str(row["pos"])

    async def _write_epoch(self, epoch: int) -> None:
        statements = [
            "CREATE DATABASE IF NOT EXISTS vimha",
            "CREATE TABLE IF NOT EXISTS vimha.epoch (epoch BIGINT NOT NULL)",
            f"DELETE FROM vimha.epoch; INSERT INTO vimha.epoch VALUES ({int(epoch)})",
            *(f"CREATE DATABASE IF NOT EXISTS `{name}`" for name in self.cfg.databases),
        ]
        conn: Any = None
        try:
            # until a replica follows this primary (semi-synchronous): up to a minute
            conn = await asyncio.to_thread(
                self._connect, pymysql.constants.CLIENT.MULTI_STATEMENTS, 60
            )

            def run() -> None:
                with conn.cursor() as cur:
                    for sql in statements:
                        cur.execute(sql)
                        while cur.nextset():
                            pass

            await asyncio.to_thread(run)
        except (pymysql.MySQLError, OSError):
            pass  # a later promotion writes its own
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    async def demote(self, active: str | None) -> None:
        if (self.data / WAS_PRIMARY).exists():
            await self.stop()  # never a replica in place: wiped when it starts again
            return
        if active is None:
            return
        host, _, port = active.rpartition(":")
        try:
            await self._query(
                "STOP SLAVE",
                f"CHANGE MASTER TO MASTER_HOST='{host}', MASTER_PORT={int(port)}, "
                f"MASTER_USER='{self.cfg.user}', MASTER_PASSWORD='', "
                "MASTER_USE_GTID=current_pos, MASTER_CONNECT_RETRY=1, "
                "MASTER_HEARTBEAT_PERIOD=0.5",
                "START SLAVE",
                "SET GLOBAL read_only = ON",
                within=10,
            )
        except (pymysql.MySQLError, OSError, TimeoutError) as exc:
            raise HandlerFailed(f"demote: {type(exc).__name__} {exc}") from exc
        self.following.follows(active)

    async def _answers_as_primary(self, address: str) -> bool:
        """Whether the server at `address` (host:port) answers as a writable primary."""
        host, _, port = address.rpartition(":")

        def ask() -> bool:
            conn = pymysql.connect(
                host=host, port=int(port), user=self.cfg.user, connect_timeout=1,
                read_timeout=1, write_timeout=1,
            )  # fmt: skip
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT @@read_only")
                    row = cur.fetchone()
            finally:
                conn.close()
            return row is not None and int(row[0]) == 0

        try:
            return await asyncio.to_thread(ask)
        except (pymysql.MySQLError, OSError, ValueError):
            return False
