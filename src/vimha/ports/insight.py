"""What the store keeps for insight (issue 20): the instances' state journal (for HA
metrics), the incidents and the steps recovery reports for them, and the observers' cursors.

Contract for every driver:
- Every change of an instance's status, desired power, host, incarnation or task state is
  journaled by the compute part of the unit of work (`add_instance`, `update_instance`) in
  the same transaction, with the instance's `updated_at`: no change is ever missed, whoever
  makes it (API, agents' reports, recovery).
- Rows of each stream (journal, reports, alarm history) carry increasing sequence numbers
  in commit order within one writer; readers take them after a cursor and only act on rows
  older than a settle delay (rows of concurrent writers may commit out of order).
- An incident is saved only from the version it was read at (`save_incident` raises
  ClaimConflict otherwise): two observers never overwrite each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from vimha.domain.alarms import Alarm
from vimha.domain.compute import Instance
from vimha.domain.incidents import (
    Affected,
    AlarmSeen,
    FenceSeen,
    Incident,
    Report,
    Stage,
    StateSeen,
)


class InsightReads(Protocol):
    def alarms_since(self, since: datetime, limit: int = 50_000) -> list[Alarm]:
        """Active alarms, and those raised or cleared at or after `since` (oldest first)."""
        ...

    def alarm_mark(self) -> int:
        """The newest alarm history sequence number (moves at every alarm change)."""
        ...

    def alarm_changes(self, after_seq: int, limit: int) -> list[AlarmSeen]:
        """Alarm history events after `after_seq` (RAISED, UPDATED, CLEARED), with the
        alarm as it is now, by sequence."""
        ...

    def journal_after(self, after_seq: int, limit: int) -> list[StateSeen]:
        """Journal rows after `after_seq`, by sequence."""
        ...

    def journal_since(
        self, since: datetime, instance_ids: Sequence[str] | None = None
    ) -> list[StateSeen]:
        """Journal rows at or after `since`, and each instance's last row before it (its
        state when the period began); of some instances only, if given."""
        ...

    def residents(self, host: str, at: datetime) -> list[Affected]:
        """The instances on `host` at `at` (their last journal row then), not deleted."""
        ...

    def reports_after(self, after_seq: int, limit: int) -> list[Report]: ...

    def fences(self, host: str, since: datetime) -> list[FenceSeen]:
        """The host's fencing attempts that finished at or after `since`."""
        ...

    def incidents(
        self, states: Sequence[str] | None = None, limit: int = 1000, kind: str | None = None
    ) -> list[Incident]:
        """Newest first; of some states or one kind, if given."""
        ...

    def incident(self, incident_id: str) -> Incident:
        """NotFound."""
        ...

    def incidents_of_roots(self, alarm_ids: Sequence[str]) -> list[Incident]:
        """The incidents opened on these alarms (any state)."""
        ...

    def cursor(self, name: str) -> int:
        """An observer's position in a stream (0 at first)."""
        ...


class InsightUnitOfWork(Protocol):
    def journal(self, old: Instance | None, new: Instance) -> None:
        """Journal the instance's state if it changed (called by the compute writes)."""
        ...

    def report(
        self,
        subject_type: str,
        subject: str,
        stage: Stage,
        at: datetime,
        detail: str,
        instance_id: str | None,
        now: datetime,
    ) -> None:
        """A step of an incident, reported by recovery (or any engine)."""
        ...

    def save_incident(self, incident: Incident) -> Incident:
        """Insert (version 0) or update from its version; returns it with the new version.
        ClaimConflict if it changed meanwhile."""
        ...

    def set_cursor(self, name: str, value: int) -> None: ...

    def purge_journal(self, before: datetime) -> int:
        """Delete journal rows older than `before`, except each instance's last one before
        it (its state when the kept period begins)."""
        ...
