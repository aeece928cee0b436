"""Coordination shared by the processes of one host (`local:///path/coord.db`): the same
contract as etcd, kept in one SQLite file that the controller and the agents of the embedded
cloud all open. Leases run on CLOCK_MONOTONIC, which every process of a Linux host shares.
Watches poll the change log. Declared not distributed: several hosts need etcd.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from vimha.ports.coordination import (
    Change,
    Characteristics,
    CoordinationUnavailable,
    Entry,
    LeaseLost,
)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT, revision INTEGER, lease INTEGER);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY AUTOINCREMENT, ttl REAL, until REAL);
CREATE TABLE IF NOT EXISTS changes (revision INTEGER PRIMARY KEY, kind TEXT, key TEXT, value TEXT);
"""
KEEP_CHANGES = 10000
FULL_READ = 0.25  # s between watch reads when the WAL did not change


class FileCoordination:
    characteristics = Characteristics(distributed=False)

    def __init__(self, path: Path, poll: float = 0.02) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.poll = poll
        self.lock = threading.Lock()
        # Its own thread: the transactions run one at a time anyway (one connection), and
        # one waiting for another process's lock must not hold a thread of the shared pool
        # (an agent's tools and waits run there), nor wait behind them: the leases'
        # renewals go through here.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="coord-file")
        self.db = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
        with self.lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)

    # --- one transaction each, in a worker thread -------------------------------------------

    async def _tx(self, work: Callable[[sqlite3.Connection], T], write: bool = True) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, work, write)

    def _run(self, work: Callable[[sqlite3.Connection], T], write: bool) -> T:
        with self.lock:
            try:
                # a read takes no write lock unless a lease has lapsed and must be expired
                plain = not write and not self._lapsed(self.db)
                self.db.execute("BEGIN" if plain else "BEGIN IMMEDIATE")
                try:
                    if not plain:
                        self._expire(self.db)
                    result = work(self.db)
                except BaseException:
                    self.db.execute("ROLLBACK")
                    raise
                self.db.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise CoordinationUnavailable(f"coordination file {self.path}: {exc}") from exc

    @staticmethod
    def _revision(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT coalesce(max(revision), 0) FROM changes").fetchone()[0])

    def _record(self, db: sqlite3.Connection, kind: str, key: str, value: str, lease: int) -> int:
        revision = self._revision(db) + 1
        db.execute("INSERT INTO changes VALUES (?, ?, ?, ?)", (revision, kind, key, value))
        if kind == "DELETE":
            db.execute("DELETE FROM kv WHERE key = ?", (key,))
        else:
            db.execute("REPLACE INTO kv VALUES (?, ?, ?, ?)", (key, value, revision, lease))
        if revision % 1000 == 0:
            db.execute("DELETE FROM changes WHERE revision <= ?", (revision - KEEP_CHANGES,))
        return revision

    def _drop_lease(self, db: sqlite3.Connection, lease: int) -> None:
        db.execute("DELETE FROM leases WHERE id = ?", (lease,))
        for (key,) in db.execute("SELECT key FROM kv WHERE lease = ?", (lease,)).fetchall():
            self._record(db, "DELETE", key, "", 0)

    @staticmethod
    def _lapsed(db: sqlite3.Connection) -> bool:
        row = db.execute("SELECT 1 FROM leases WHERE until <= ? LIMIT 1", (time.monotonic(),))
        return row.fetchone() is not None

    def _expire(self, db: sqlite3.Connection) -> None:
        now = time.monotonic()
        for (lease,) in db.execute("SELECT id FROM leases WHERE until <= ?", (now,)).fetchall():
            self._drop_lease(db, lease)

    @staticmethod
    def _usable(db: sqlite3.Connection, lease: int) -> None:
        if lease and db.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone() is None:
            raise LeaseLost(f"lease {lease} expired")

    @staticmethod
    def _entry(db: sqlite3.Connection, key: str) -> Entry | None:
        row = db.execute("SELECT key, value, revision, lease FROM kv WHERE key = ?", (key,))
        found = row.fetchone()
        return Entry(found[0], found[1], int(found[2]), int(found[3])) if found else None

    # --- the contract -----------------------------------------------------------------------

    async def grant(self, ttl: float) -> int:
        def work(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO leases (ttl, until) VALUES (?, ?)", (ttl, time.monotonic() + ttl)
            )
            return int(cur.lastrowid or 0)

        return await self._tx(work)

    async def keepalive(self, lease: int) -> float:
        def work(db: sqlite3.Connection) -> float:
            row = db.execute("SELECT ttl FROM leases WHERE id = ?", (lease,)).fetchone()
            if row is None:
                raise LeaseLost(f"lease {lease} expired")
            db.execute(
                "UPDATE leases SET until = ? WHERE id = ?", (time.monotonic() + row[0], lease)
            )
            return float(row[0])

        return await self._tx(work)

    async def revoke(self, lease: int) -> None:
        await self._tx(lambda db: self._drop_lease(db, lease))

    async def create(self, key: str, value: str, lease: int = 0) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            self._usable(db, lease)
            if self._entry(db, key) is not None:
                return False
            self._record(db, "PUT", key, value, lease)
            return True

        return await self._tx(work)

    async def get(self, key: str) -> Entry | None:
        return await self._tx(lambda db: self._entry(db, key), write=False)

    async def list(self, prefix: str) -> tuple[int, list[Entry]]:
        def work(db: sqlite3.Connection) -> tuple[int, list[Entry]]:
            rows = db.execute(
                "SELECT key, value, revision, lease FROM kv WHERE substr(key, 1, ?) = ? "
                "ORDER BY key",
                (len(prefix), prefix),
            ).fetchall()
            entries = [Entry(k, v, int(r), int(le)) for k, v, r, le in rows]
            return self._revision(db), entries

        return await self._tx(work, write=False)

    async def replace(self, key: str, value: str, revision: int, lease: int = 0) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            self._usable(db, lease)
            entry = self._entry(db, key)
            if entry is None or entry.revision != revision:
                return False
            self._record(db, "PUT", key, value, lease)
            return True

        return await self._tx(work)

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        def work(db: sqlite3.Connection) -> int:
            self._usable(db, lease)
            return self._record(db, "PUT", key, value, lease)

        return await self._tx(work)

    async def delete(self, key: str, revision: int | None = None) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            entry = self._entry(db, key)
            if entry is None or (revision is not None and entry.revision != revision):
                return False
            self._record(db, "DELETE", key, "", 0)
            return True

        return await self._tx(work)

    async def increment(self, key: str) -> int:
        def work(db: sqlite3.Connection) -> int:
            entry = self._entry(db, key)
            value = int(entry.value) + 1 if entry else 1
            self._record(db, "PUT", key, str(value), 0)
            return value

        return await self._tx(work)

    async def watch(self, prefix: str, after: int) -> AsyncIterator[Change]:
        seen = after

        def work(db: sqlite3.Connection) -> list[Change]:
            first = db.execute("SELECT min(revision) FROM changes").fetchone()[0]
            if first is not None and seen < first - 1:
                # fell behind the kept changes (a watcher frozen for a long while): what it
                # missed is gone; the caller lists again, as after etcd's "compacted"
                raise CoordinationUnavailable(f"changes after revision {seen} compacted")
            rows = db.execute(
                "SELECT revision, kind, key, value FROM changes WHERE revision > ? "
                "ORDER BY revision",
                (seen,),
            ).fetchall()
            return [Change(kind, key, value, int(rev)) for rev, kind, key, value in rows]

        last_stamp: tuple[int, int] | None = None
        last_read = 0.0
        while True:
            # Every write goes through the WAL file: while it has not changed there is nothing
            # new to read (a stat, no thread, no lock); a read every FULL_READ all the same
            # lets lapsed leases be expired.
            stamp = self._wal_stamp()
            now = time.monotonic()
            if stamp != last_stamp or stamp is None or now - last_read >= FULL_READ:
                last_stamp, last_read = stamp, now
                for change in await self._tx(work, write=False):
                    seen = change.revision
                    if change.key.startswith(prefix):
                        yield change
            await asyncio.sleep(self.poll)

    def _wal_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(f"{self.path}-wal")
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    async def close(self) -> None:
        with self.lock:
            self.db.close()
        self._executor.shutdown(wait=False)
