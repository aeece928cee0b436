"""The SQLAlchemy store: SQLite (embedded default, WAL) and PostgreSQL."""

from vimha.drivers.sqlstore.store import SqlStore

__all__ = ["SqlStore"]
