"""The `postgresql` handler (issue 4, ARCH-3/ARCH-4): a PostgreSQL primary and hot standbys
with streaming replication, every member run by its agent (it dies with it).

- A member always starts as a standby (standby.signal: read-only, safe). A member with no
  data clones the active with pg_basebackup; when there is no active and the group was never
  initialised, the one member that creates the group's `initialize` key runs initdb.
- Its position is its WAL LSN (replayed, or written on the primary), so the freshest standby
  is the one promoted (`domain/groups.py`), and `max_lag` is in bytes of WAL.
- promote: pg_promote(), then the epoch is written in table `vimha_epoch` for clients to see.
- demote: a standby follows the new active (primary_conninfo, reloaded). A former primary
  is never put back in place: its history may have diverged, so it is stopped and cloned
  afresh from the new active when it starts again.
- A standby that has not streamed for `stream_grace` from an active that answers as the
  primary cannot follow it (a standby whose history forked off after the new active's: it
  received WAL the new active never had): it is unhealthy (no redundancy, no candidate;
  commits that wait for a standby would wait for ever) and cloned afresh at its restart.
As root, the server runs as the `postgres` OS user (PostgreSQL refuses root): its data dir
and every folder above it must be reachable by that user.
- Authentication: without `password_file`, loopback is trusted (one host, the embedded
  clouds). With it, pg_hba.conf is written at every start: the `trusted` networks without a
  password, the `networks` (the other members, the clients) with scram-sha-256, local
  sockets with it too (the `postgres` OS user by peer); the `postgres` role's password is
  set by initdb, and the agent, pg_basebackup and the standbys' streaming use it (a passfile,
  0600, in the run dir).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import glob
import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from vimha.agent.following import Following
from vimha.agent.handlers import (
    HandlerFailed,
    Health,
    failure,
    other_active,
    own,
    process_failure,
    run_tool,
    spawn_member,
)
from vimha.groupspec import PostgresHandlerConfig, groups_prefix
from vimha.ports.coordination import Coordination

log = logging.getLogger("vimha.agent.pg")

WAS_PRIMARY = "vimha.was_primary"
STARTING = 30.0  # a server started this recently that does not answer yet is starting (s)
# what a client is told by a server that is starting: no socket yet, or not consistent yet
STARTING_UP = (
    "Connection refused",
    "No such file or directory",
    "the database system is starting up",
    "the database system is not yet accepting connections",
)


def pg_bin(configured: str | None) -> Path:
    if configured:
        return Path(configured)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("postgres")
    if which:
        return Path(which).resolve().parent
    raise HandlerFailed("PostgreSQL server binaries not found (apt: postgresql)")


def sockets_dir(group: str, run_dir: Path) -> Path:
    return run_dir / f"pg-{group}-sockets"


def socket_file(group: str, cfg: PostgresHandlerConfig, run_dir: Path) -> Path:
    """The server's UNIX socket (PostgreSQL names it after the port)."""
    return sockets_dir(group, run_dir) / f".s.PGSQL.{cfg.port}"


def lsn(text: str | None) -> int:
    if not text:
        return -1
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


class PostgresHandler:
    def __init__(
        self,
        group: str,
        node: str,
        cfg: PostgresHandlerConfig,
        run_dir: Path,
        coord: Coordination,
        vim: str,
    ) -> None:
        self.group = group
        self.node = node
        self.cfg = cfg
        self.data = Path(cfg.data_dir) if cfg.data_dir else run_dir / f"pg-{group}"
        self.sockets = sockets_dir(group, run_dir)
        self.log = run_dir / f"{group}.log"  # what the server says
        self.coord = coord
        self.prefix = f"{groups_prefix(vim)}{group}/"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0  # time.monotonic() of the server's start
        self.conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self.root = os.geteuid() == 0
        self.user = cfg.os_user if self.root else pwd.getpwuid(os.geteuid()).pw_name
        self.passfile = run_dir / f"pg-{group}.pass"
        self.password: str | None = None  # read at each start (`password_file`)
        self.following = Following(
            cfg.stream_grace, functools.partial(answers_as_primary, password=self._password)
        )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    # --- processes, as the postgres user ---------------------------------------------------

    async def _tool(self, *argv: str, limit: float = 120) -> None:
        env = {**os.environ, "PGPASSFILE": str(self.passfile)} if self.password else None
        await run_tool(list(argv), self.user if self.root else None, limit, env)

    def _password(self) -> str | None:
        return self.password

    def _secrets(self) -> None:
        """The password (`password_file`), and the passfile the tools and the standbys'
        streaming read it from (0600, owned by the server's OS user)."""
        if self.cfg.password_file is None:
            return
        try:
            password = Path(self.cfg.password_file).read_text().strip()
        except OSError as exc:
            raise HandlerFailed(f"password_file {self.cfg.password_file}: {exc.strerror}") from exc
        if not password:
            raise HandlerFailed(f"password_file {self.cfg.password_file} is empty")
        self.password = password
        escaped = password.replace("\\", "\\\\").replace(":", "\\:")
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"*:*:*:postgres:{escaped}\n")
        if self.root:
            shutil.chown(self.passfile, self.user, self.user)

    def _write_hba(self) -> None:
        """pg_hba.conf from the configuration, at every start (with `password_file`)."""
        lines = [
            "# written by the vimha agent at every start of the member: edits are lost",
            "local all postgres peer" if self.root else "local all all trust",
            "local all all scram-sha-256",
        ]
        for net in self.cfg.trusted:
            lines += [f"host all all {net} trust", f"host replication all {net} trust"]
        for net in self.cfg.networks:
            lines += [
                f"host all all {net} scram-sha-256",
                f"host replication all {net} scram-sha-256",
            ]
        hba = self.data / "pg_hba.conf"
        hba.write_text("\n".join(lines) + "\n")
        if self.root:
            shutil.chown(hba, self.user, self.user)

    def _own(self, path: Path) -> None:
        own(path, self.user if self.root else None)

    # --- the handler -----------------------------------------------------------------------

    async def start(self) -> None:
        bins = pg_bin(self.cfg.bin_dir)
        self._own(self.sockets)
        self._own(self.data.parent)
        self._secrets()
        active = await other_active(self.coord, self.prefix, self.node)
        has_data = (self.data / "PG_VERSION").exists()
        if has_data and (self.data / WAS_PRIMARY).exists() and active:
            # a former primary: its WAL may hold writes the new active never had
            shutil.rmtree(self.data)
            has_data = False
        self.following.follows(None)
        if has_data and self.following.replace and active:
            await self._clone_afresh(active)  # raises, the data kept, if it cannot be done
            self.following.follows(active)
        self.following.replace = False
        if not has_data:
            if active:
                await self._clone(self.data, active)
                self.following.follows(active)
            elif await self.coord.create(self.prefix + "initialize", self.node):
                self._own(self.data)
                nosync = [] if self.cfg.fsync else ["--no-sync"]
                pwfile = self.data.parent / f".pg-{self.group}.pw"
                if self.password:  # the postgres role's password, set by initdb
                    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "w") as f:
                        f.write(self.password + "\n")
                    if self.root:
                        shutil.chown(pwfile, self.user, self.user)
                    nosync.append(f"--pwfile={pwfile}")
                try:
                    await self._tool(
                        str(bins / "initdb"), "-D", str(self.data), "-U", "postgres",
                        "-A", "trust", *nosync,
                    )  # fmt: skip
                except HandlerFailed:
                    shutil.rmtree(self.data, ignore_errors=True)
                    await self.coord.delete(self.prefix + "initialize")  # another may try
                    raise
                finally:
                    pwfile.unlink(missing_ok=True)
                with (self.data / "pg_hba.conf").open("a") as hba:
                    hba.write("host replication all 127.0.0.0/8 trust\n")
                    hba.write("host all all 127.0.0.0/8 trust\n")
            else:
                return  # nothing to clone yet: unhealthy until an active exists
        if self.password:
            self._write_hba()
        (self.data / "standby.signal").touch()
        (self.data / WAS_PRIMARY).unlink(missing_ok=True)
        if self.root:
            shutil.chown(self.data / "standby.signal", self.user, self.user)
        options = [
            "-c", f"listen_addresses={self.cfg.bind}", "-c", f"port={self.cfg.port}",
            "-c", f"unix_socket_directories={self.sockets}", "-c", "hot_standby=on",
            "-c", "wal_level=replica", "-c", "max_wal_senders=10",
            "-c", f"fsync={'on' if self.cfg.fsync else 'off'}",
            "-c", f"synchronous_commit={self.cfg.synchronous_commit}",
            "-c", f"cluster_name={self.group}-{self.node}",
        ]  # fmt: skip
        if self.cfg.synchronous:
            # once primary, a commit waits for one standby: an acknowledged write survives
            # the primary's loss (the freshest standby, which has it, is promoted)
            options += ["-c", "synchronous_standby_names=ANY 1 (*)"]
        argv = [str(bins / "postgres"), "-D", str(self.data), *options]
        self.process = spawn_member(argv, self.user if self.root else None, log=self.log)
        self.started_at = time.monotonic()

    async def _clone(self, target: Path, active: str) -> None:
        host, _, port = active.rpartition(":")
        self._own(target)
        await self._tool(
            str(pg_bin(self.cfg.bin_dir) / "pg_basebackup"), "-D", str(target), "-h", host,
            "-p", port, "-U", "postgres", "-X", "stream", "-c", "fast", "-R",
        )  # fmt: skip

    async def _clone_afresh(self, active: str) -> None:
        """A standby that could not follow the active (its history diverged, see monitor):
        its data replaced by a clone of the active, made beside it first (the old data stays
        if the clone fails)."""
        fresh = self.data.with_name(self.data.name + ".clone")
        shutil.rmtree(fresh, ignore_errors=True)
        try:
            await self._clone(fresh, active)
        except HandlerFailed:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        shutil.rmtree(self.data)
        fresh.rename(self.data)
        log.warning(
            "%s: standby data cloned afresh from %s: it could not follow it", self.group, active
        )

    async def stop(self) -> None:
        await self._close()
        proc, self.process = self.process, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the postmaster and its backends
        await asyncio.to_thread(proc.wait)

    async def _close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _query(self, sql: str, within: float | None = None) -> tuple[object, ...]:
        if self.conn is None or self.conn.closed:
            self.conn = await psycopg.AsyncConnection.connect(
                host=self.cfg.bind, port=self.cfg.port, user="postgres", dbname="postgres",
                autocommit=True, connect_timeout=max(1, round(self.cfg.timeout)),
                password=self.password,
            )  # fmt: skip
            # the handler's own writes (the epoch) do not wait for a standby
            await self.conn.execute("SET synchronous_commit = local")
        async with asyncio.timeout(within or self.cfg.timeout):
            cur = await self.conn.execute(sql)
            row = await cur.fetchone() if cur.description is not None else None
        return row or ()

    async def monitor(self) -> Health:
        if self.process is None:
            # nothing runs: its start is tried again after the restart backoff (it clones
            # once an active runs), not after the start grace of a server that runs; the
            # active's first commits wait for a standby (ANY 1), `vimha up --ha`'s
            # controllers for their schema: 25 s at every start before
            return Health(
                False, "no data yet: waiting for an active to clone", definite=True, empty=True
            )
        if (failed := process_failure(self.process, "postgres")) is not None:
            return failed
        try:
            standby, replayed, received, written, streaming = await self._query(
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
                "pg_last_wal_receive_lsn()::text, "
                "CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END, "
                "EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')"
            )
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await self._close()
            # a server still starting (its socket not open yet, or replaying WAL up to a
            # consistent state) is left to start: restarted for that on a busy host, it only
            # began again, and a standby could turn over like that for good
            young = time.monotonic() - self.started_at < STARTING
            starting = young and any(s in str(exc) for s in STARTING_UP)
            return Health(False, f"postgres: {failure(exc)[:120]}", recovering=starting)
        if standby:
            # what it received (flushed) counts, not what it replayed: a commit is acknowledged
            # once a standby flushed it, and a promotion replays everything received first
            position = max(
                lsn(str(replayed) if replayed else None), lsn(str(received) if received else None)
            )
            if (cannot := await self.following.judge(bool(streaming))) is not None:
                return Health(False, f"standby: {cannot}", position)
            upstream = self.following.upstream
            if streaming or upstream is None:
                return Health(True, f"standby of {upstream}" if upstream else "standby", position)
            return Health(True, f"standby, not streaming from {upstream}", position)
        self.following.follows(None)
        return Health(True, "primary", lsn(str(written)))

    async def promote(self, epoch: int) -> None:
        try:
            (done,) = await self._query("SELECT pg_promote(true, 10)", within=11)
            if not done:
                raise HandlerFailed("pg_promote did not finish")
            (self.data / WAS_PRIMARY).write_text(json.dumps({"epoch": epoch}))
            await self._query(
                "CREATE TABLE IF NOT EXISTS vimha_epoch (epoch bigint NOT NULL) ", within=5
            )
            await self._query(
                f"WITH gone AS (DELETE FROM vimha_epoch) INSERT INTO vimha_epoch "
                f"VALUES ({int(epoch)}) RETURNING epoch",
                within=5,
            )
            for name in self.cfg.databases:  # the group's databases, made once
                (present,) = await self._query(
                    f"SELECT count(*) FROM pg_database WHERE datname = '{name}'", within=5
                )
                if not present:
                    await self._query(f'CREATE DATABASE "{name}"', within=30)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise HandlerFailed(f"promote: {type(exc).__name__} {exc}") from exc

    async def demote(self, active: str | None) -> None:
        if (self.data / WAS_PRIMARY).exists():
            await self.stop()  # cloned afresh when it starts again
            return
        if active is None:
            return
        host, _, port = active.rpartition(":")
        conninfo = f"host={host} port={port} user=postgres application_name={self.node}"
        if self.password:
            conninfo += f" passfile={self.passfile}"
        try:
            await self._query(f"ALTER SYSTEM SET primary_conninfo = '{conninfo}'")
            await self._query("SELECT pg_reload_conf()")
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise HandlerFailed(f"demote: {exc}") from exc
        self.following.follows(active)


async def answers_as_primary(
    address: str, within: float = 1.0, password: Callable[[], str | None] = lambda: None
) -> bool:
    """Whether the server at `address` (host:port) answers, as a primary, within `within`."""
    host, _, port = address.rpartition(":")
    try:
        async with asyncio.timeout(within):
            conn = await psycopg.AsyncConnection.connect(
                host=host, port=int(port), user="postgres", dbname="postgres", autocommit=True,
                connect_timeout=max(1, round(within)), password=password(),
            )  # fmt: skip
            async with conn:
                cur = await conn.execute("SELECT pg_is_in_recovery()")
                row = await cur.fetchone()
    except (psycopg.Error, OSError, TimeoutError, ValueError):
        return False
    return row is not None and row[0] is False
