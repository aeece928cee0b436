"""The OpenStack faces' part of the SQL store (ports/openstack.py): the tokens the Identity
face issues, only their hash, with the user, role, scope and expiry. Registered with the
other tables; changes here need an Alembic migration (0008)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, String, Table, delete, insert, select
from sqlalchemy.engine import Connection

from vimha.domain.identity import IssuedToken
from vimha.drivers.sqlstore.compute_rows import Times, utc
from vimha.drivers.sqlstore.tables import metadata

identity_tokens = Table(
    "identity_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("project", String(255)),
    Column("methods", JSON, nullable=False),
    Column("audit_id", String(32), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_identity_tokens_expires", "expires_at"),
)


class SqlOpenStack:
    """Reads, each on its own connection."""

    def __init__(self, read: Callable[[], AbstractContextManager[Connection]], sqlite: bool):
        self._read = read
        self.t = Times(sqlite)

    def token(self, token_hash: str, now: datetime) -> IssuedToken | None:
        c = identity_tokens.c
        with self._read() as conn:
            row = (
                conn.execute(select(identity_tokens).where(c.token_hash == token_hash))
                .mappings()
                .first()
            )
        if row is None:
            return None
        token = _token(row)
        return token if token.valid_at(now) else None


class OpenStackUow:
    """Writes, in the store's unit of work."""

    def __init__(self, conn: Connection, sqlite: bool) -> None:
        self._conn = conn
        self.t = Times(sqlite)

    def add_token(self, token_hash: str, token: IssuedToken, now: datetime) -> None:
        c = identity_tokens.c
        self._conn.execute(delete(identity_tokens).where(c.expires_at < self.t.w(now)))
        self._conn.execute(
            insert(identity_tokens).values(
                token_hash=token_hash,
                user=token.user,
                role=token.role,
                project=token.project,
                methods=list(token.methods),
                audit_id=token.audit_id,
                issued_at=self.t.w(token.issued_at),
                expires_at=self.t.w(token.expires_at),
            )
        )

    def revoke_token(self, token_hash: str) -> bool:
        result = self._conn.execute(
            delete(identity_tokens).where(identity_tokens.c.token_hash == token_hash)
        )
        return bool(result.rowcount)


def _token(r: Any) -> IssuedToken:
    return IssuedToken(
        r["user"],
        r["role"],
        r["project"],
        tuple(r["methods"]),
        r["audit_id"],
        utc(r["issued_at"]),
        utc(r["expires_at"]),
    )
