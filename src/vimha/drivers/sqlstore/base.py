"""The store's foundation: the engine for a URL, the write lock, error translation, the
connections every part of `SqlStore` reads and writes through, and time as stored.

SQLite is the embedded default: WAL journal, one writer at a time (a process lock plus
busy_timeout across processes), declared not distributed. PostgreSQL (psycopg 3) is for
several controllers. Every SQLAlchemy error is translated in `translate`, the one place.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from vimha.domain.errors import InvalidInput, StoreUnavailable, Temporary
from vimha.drivers.sqlstore import schema
from vimha.ports.store import StoreCharacteristics


def make_engine(url: str) -> Engine:
    """An engine for a store URL: sqlite:///path, sqlite:// (memory), postgresql[+psycopg]://."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidInput(f"store URL {url!r} is not a database URL") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            engine = create_engine(
                "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            engine = create_engine(
                parsed, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8
            )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        return engine
    if backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(
            parsed, pool_size=8, pool_pre_ping=True, connect_args={"options": "-c timezone=UTC"}
        )
    raise InvalidInput(
        f"store URL {url!r}: unsupported backend {backend!r} (use sqlite:/// or postgresql://)"
    )


class WriteLock:
    """A re-entrant thread lock plus, for a file database, an exclusive flock on a side file
    (held only while the outermost holder is inside)."""

    def __init__(self, path: str | None) -> None:
        self._thread = threading.RLock()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600) if path else None
        self._depth = 0

    def __enter__(self) -> None:
        self._thread.acquire()
        self._depth += 1
        if self._depth == 1 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread.release()


@contextmanager
def translate() -> Iterator[None]:
    try:
        yield
    except IntegrityError as exc:
        raise Temporary(f"concurrent change, retry: {exc.orig}", retry_after=0.01) from exc
    except DBAPIError as exc:
        raise StoreUnavailable(f"database error: {exc.orig}") from exc
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"database error: {exc}") from exc


class SqlBase:
    """What every part of the store shares: the engine, the write lock and the conversions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sqlite = self.engine.dialect.name == "sqlite"
        self.characteristics = StoreCharacteristics(distributed=not self.sqlite, durable=True)
        self.owner: str | None = None  # the controller whose deliveries enqueue() creates
        # SQLite has one writer. Writers queue on a thread lock, then on a kernel file lock
        # shared by every process of this database: SQLite's own busy handler would poll with
        # sleeps of up to 100 ms instead.
        self._write_lock: AbstractContextManager[Any] | None = None
        if self.sqlite:
            path = self.engine.url.database
            self._write_lock = WriteLock(f"{path}.writelock" if path else None)

    # -- schema -------------------------------------------------------------------------
    def check_schema(self) -> None:
        with translate():
            schema.check(self.engine)

    def upgrade(self) -> tuple[str | None, str]:
        with translate():
            return schema.upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()
        if isinstance(self._write_lock, WriteLock):
            self._write_lock.close()

    # -- connections and time ------------------------------------------------------------
    def _w(self, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if self.sqlite else value

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        lock: AbstractContextManager[Any] = self._write_lock or nullcontext()
        with lock, translate(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with translate(), self.engine.connect() as conn:
            yield conn


def utc(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite keeps them naive)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)
