"""Migrations and maintenance sessions in the state store (issue 19).

Contract for every driver:
- Migrations are written in the store's unit of work (`uow.maintenance`), in the same
  transaction as the instance they move and its claims; a migration is updated only from
  the version it was read at (`update_migration` raises ClaimConflict otherwise). At most
  one migration of an instance is active (not COMPLETED, FAILED or CANCELLED): `add_migration`
  raises Conflict otherwise.
- A session is one document, written only by the controller holding the singleton role,
  with a version compared and bumped (`save_session` raises ClaimConflict when it moved).
  What the API receives for a session (answers, abort, a host done) is appended as inputs,
  numbered in order; they are never changed.
- A host's maintenance mode (draining, maintenance) is one row per host; every controller
  reads it (placement and health).
- Each is found by every controller (the same database).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from vimha.domain.maintenance import HostMode, Input, Session
from vimha.domain.migration import MigrationRecord


class MaintenanceReads(Protocol):
    def migration(self, migration_id: str) -> MigrationRecord:
        """NotFound."""
        ...

    def migrations(
        self,
        instance_id: str | None = None,
        active: bool | None = None,
        session_id: str | None = None,
        limit: int = 200,
    ) -> list[MigrationRecord]:
        """Newest first."""
        ...

    def sessions(self, active: bool | None = None) -> list[Session]:
        """Newest first."""
        ...

    def session(self, session_id: str) -> Session:
        """NotFound."""
        ...

    def inputs(self, session_id: str) -> list[Input]:
        """In the order received."""
        ...

    def host_modes(self) -> dict[str, tuple[HostMode, str]]:
        """host -> (mode, session id) for the hosts a session has taken out."""
        ...


class MaintenanceUnitOfWork(Protocol):
    def add_migration(self, record: MigrationRecord) -> None:
        """Conflict if the instance has an active migration already."""
        ...

    def migration_for_update(self, migration_id: str) -> MigrationRecord:
        """NotFound."""
        ...

    def active_migration(self, instance_id: str) -> MigrationRecord | None:
        """The instance's active migration, locked for this unit of work."""
        ...

    def update_migration(self, old: MigrationRecord, new: MigrationRecord) -> None:
        """Only if the stored one is still `old` (its updated_at); ClaimConflict otherwise."""
        ...

    def add_session(self, session: Session) -> None: ...

    def save_session(self, old_version: int, session: Session) -> Session:
        """Store `session` with version old_version + 1 if the stored version is still
        `old_version`; returns it as stored. ClaimConflict otherwise."""
        ...

    def add_input(self, item: Input) -> int:
        """Append an input; returns its number."""
        ...

    def set_host_mode(
        self, host: str, mode: HostMode | None, session_id: str, now: datetime
    ) -> None:
        """Take a host out (draining, maintenance) for a session, or back (None)."""
        ...

    def drop_blobs(self, digests: Sequence[str]) -> None:
        """Remove migration state kept in the image store (not an image's data)."""
        ...
