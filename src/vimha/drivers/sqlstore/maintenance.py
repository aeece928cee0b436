"""Migrations and maintenance sessions in the SQL store (ports/maintenance.py, issue 19).
Registered with the other tables; changes here need an Alembic migration (0010).

A migration and a session are kept as their document (the domain's `to_dict`) beside the
columns they are looked up by; an input is appended and never changed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    String,
    Table,
    and_,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

from vimha.domain.clock import iso, parse_iso
from vimha.domain.errors import Conflict, NotFound
from vimha.domain.maintenance import Action, HostMode, Input, InputKind, Session
from vimha.domain.migration import MigrationRecord
from vimha.drivers.sqlstore.compute_rows import Times, utc
from vimha.drivers.sqlstore.compute_tables import image_chunks, images
from vimha.drivers.sqlstore.tables import SeqType, metadata
from vimha.ports.compute import ClaimConflict

TS = DateTime(timezone=True)

migrations = Table(
    "migrations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("instance_id", String(64), nullable=False),
    Column("session_id", String(64)),
    Column("state", String(16), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("doc", JSON, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Index("ix_migrations_instance", "instance_id", "created_at"),
    Index(
        "ix_migrations_active_instance",
        "instance_id",
        unique=True,
        sqlite_where=text("active"),
        postgresql_where=text("active"),
    ),
    Index("ix_migrations_session", "session_id"),
)

maintenance_sessions = Table(
    "maintenance_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("state", String(32), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("doc", JSON, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

maintenance_inputs = Table(
    "maintenance_inputs",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("session_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("doc", JSON, nullable=False),
    Column("at", TS, nullable=False),
    Index("ix_maintenance_inputs_session", "session_id", "seq"),
)

host_maintenance = Table(
    "host_maintenance",
    metadata,
    Column("host", String(255), primary_key=True),
    Column("mode", String(16), nullable=False),
    Column("session_id", String(64), nullable=False),
    Column("since", TS, nullable=False),
)


class SqlMaintenance:
    """Reads, each on its own connection."""

    def __init__(self, read: Callable[[], AbstractContextManager[Connection]], sqlite: bool):
        self._read = read
        self.t = Times(sqlite)

    def migration(self, migration_id: str) -> MigrationRecord:
        with self._read() as conn:
            row = conn.execute(select(migrations.c.doc).where(migrations.c.id == migration_id))
            doc = row.scalar_one_or_none()
        if doc is None:
            raise NotFound(f"migration {migration_id} not found")
        return MigrationRecord.from_dict(doc)

    def migrations(
        self,
        instance_id: str | None = None,
        active: bool | None = None,
        session_id: str | None = None,
        limit: int = 200,
    ) -> list[MigrationRecord]:
        c = migrations.c
        stmt = select(c.doc).order_by(c.created_at.desc(), c.id).limit(limit)
        if instance_id is not None:
            stmt = stmt.where(c.instance_id == instance_id)
        if active is not None:
            stmt = stmt.where(c.active.is_(active))
        if session_id is not None:
            stmt = stmt.where(c.session_id == session_id)
        with self._read() as conn:
            docs = conn.execute(stmt).scalars().all()
        return [MigrationRecord.from_dict(d) for d in docs]

    def sessions(self, active: bool | None = None) -> list[Session]:
        c = maintenance_sessions.c
        stmt = select(c.doc, c.version).order_by(c.created_at.desc(), c.id)
        if active is not None:
            stmt = stmt.where(c.active.is_(active))
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return [_session(doc, version) for doc, version in rows]

    def session(self, session_id: str) -> Session:
        c = maintenance_sessions.c
        with self._read() as conn:
            row = conn.execute(select(c.doc, c.version).where(c.id == session_id)).first()
        if row is None:
            raise NotFound(f"maintenance session {session_id} not found")
        return _session(row[0], row[1])

    def inputs(self, session_id: str) -> list[Input]:
        c = maintenance_inputs.c
        stmt = select(c.seq, c.doc).where(c.session_id == session_id).order_by(c.seq)
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return [_input(seq, session_id, doc) for seq, doc in rows]

    def host_modes(self) -> dict[str, tuple[HostMode, str]]:
        c = host_maintenance.c
        with self._read() as conn:
            rows = conn.execute(select(c.host, c.mode, c.session_id)).all()
        return {host: (HostMode(mode), sid) for host, mode, sid in rows}


class MaintenanceUow:
    """Writes, in the store's unit of work."""

    def __init__(self, conn: Connection, sqlite: bool) -> None:
        self._conn = conn
        self.t = Times(sqlite)
        self._lock_rows = not sqlite  # SQLite: the write lock already serialises

    def _migration_values(self, r: MigrationRecord) -> dict[str, Any]:
        return {
            "instance_id": r.instance_id,
            "session_id": r.session_id,
            "state": r.state.value,
            "active": r.active,
            "doc": r.to_dict(),
            "created_at": self.t.w(r.created_at),
            # as the document has it (milliseconds): what `update_migration` compares
            "updated_at": self.t.w(parse_iso(iso(r.updated_at))),
        }

    def add_migration(self, record: MigrationRecord) -> None:
        if self.active_migration(record.instance_id) is not None:
            raise Conflict(f"instance {record.instance_name} is being migrated already")
        self._conn.execute(
            insert(migrations).values(id=record.id, **self._migration_values(record))
        )

    def migration_for_update(self, migration_id: str) -> MigrationRecord:
        stmt = select(migrations.c.doc).where(migrations.c.id == migration_id)
        doc = self._conn.execute(
            stmt.with_for_update() if self._lock_rows else stmt
        ).scalar_one_or_none()
        if doc is None:
            raise NotFound(f"migration {migration_id} not found")
        return MigrationRecord.from_dict(doc)

    def active_migration(self, instance_id: str) -> MigrationRecord | None:
        c = migrations.c
        stmt = select(c.doc).where(and_(c.instance_id == instance_id, c.active.is_(True)))
        doc = self._conn.execute(
            stmt.with_for_update() if self._lock_rows else stmt
        ).scalar_one_or_none()
        return None if doc is None else MigrationRecord.from_dict(doc)

    def update_migration(self, old: MigrationRecord, new: MigrationRecord) -> None:
        c = migrations.c
        done = self._conn.execute(
            update(migrations)
            .where(and_(c.id == old.id, c.updated_at == self.t.w(parse_iso(iso(old.updated_at)))))
            .values(**self._migration_values(new))
        ).rowcount
        if not done:
            raise ClaimConflict(f"migration {old.id} changed meanwhile")

    def add_session(self, session: Session) -> None:
        self._conn.execute(
            insert(maintenance_sessions).values(
                id=session.id,
                state=session.state.value,
                active=not session.final,
                version=session.version,
                doc=session.to_dict(),
                created_at=self.t.w(session.created_at),
                updated_at=self.t.w(session.updated_at),
            )
        )

    def save_session(self, old_version: int, session: Session) -> Session:
        c = maintenance_sessions.c
        stored = replace(session, version=old_version + 1)
        done = self._conn.execute(
            update(maintenance_sessions)
            .where(and_(c.id == session.id, c.version == old_version))
            .values(
                state=stored.state.value,
                active=not stored.final,
                version=stored.version,
                doc=stored.to_dict(),
                updated_at=self.t.w(stored.updated_at),
            )
        ).rowcount
        if not done:
            raise ClaimConflict(f"maintenance session {session.id} changed meanwhile")
        return stored

    def add_input(self, item: Input) -> int:
        result = self._conn.execute(
            insert(maintenance_inputs).values(
                session_id=item.session_id,
                kind=item.kind.value,
                doc=item.to_dict(),
                at=self.t.w(item.at),
            )
        )
        key = result.inserted_primary_key
        return int(key[0]) if key else 0

    def set_host_mode(
        self, host: str, mode: HostMode | None, session_id: str, now: datetime
    ) -> None:
        c = host_maintenance.c
        self._conn.execute(delete(host_maintenance).where(c.host == host))
        if mode is not None:
            self._conn.execute(
                insert(host_maintenance).values(
                    host=host, mode=mode.value, session_id=session_id, since=self.t.w(now)
                )
            )

    def drop_blobs(self, digests: Sequence[str]) -> None:
        for digest in digests:
            used = self._conn.execute(
                select(images.c.id).where(images.c.digest == digest).limit(1)
            ).first()
            if used is None:
                self._conn.execute(delete(image_chunks).where(image_chunks.c.digest == digest))


def _session(doc: dict[str, Any], version: int) -> Session:
    return replace(Session.from_dict(doc), version=int(version))


def _input(seq: int, session_id: str, d: dict[str, Any]) -> Input:
    return Input(
        int(seq),
        session_id,
        InputKind(d["kind"]),
        utc(parse_iso(d["at"])),
        d.get("by", ""),
        d.get("vnfId"),
        d.get("host"),
        d.get("state"),
        {k: Action(v) for k, v in (d.get("instanceActions") or {}).items()},
    )
