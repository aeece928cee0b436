"""Alarms and their history: the reads, the statements a unit of work writes them with, and
the row mapping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy import update as sql_update

from vimha.domain.alarms import (
    AckState,
    Alarm,
    EventType,
    FaultyResourceType,
    Location,
    Severity,
)
from vimha.domain.errors import NotFound
from vimha.drivers.sqlstore.base import SqlBase, utc, utc_or_none
from vimha.drivers.sqlstore.tables import alarm_history, alarms
from vimha.ports.store import HistoryEvent

# Constant statements, parameters passed at execution: compiled once, cached by SQLAlchemy.
# Written as the partial index's own predicate (`active`), so that the planner uses it; with
# `active IS 1` SQLite walks every active alarm instead.
ACTIVE_BY_KEYS = select(alarms).where(
    text("alarms.active"), alarms.c.dedup_key.in_(bindparam("keys", expanding=True))
)
ALARM_BY_ID = select(alarms).where(alarms.c.id == bindparam("b_id"))
INSERT_ALARM = insert(alarms)
UPDATE_ALARM = sql_update(alarms).where(alarms.c.id == bindparam("b_id"))
INSERT_HISTORY = insert(alarm_history)


class AlarmReads(SqlBase):
    """Reading alarms and their history (they are written in a unit of work)."""

    def get_alarm(self, alarm_id: str) -> Alarm:
        with self._read() as conn:
            row = conn.execute(select(alarms).where(alarms.c.id == alarm_id)).mappings().first()
        if row is None:
            raise NotFound(f"alarm {alarm_id} not found")
        return alarm_of(row)

    def iter_alarms(self, after_seq: int, batch: int) -> Iterator[tuple[int, Alarm]]:
        while True:
            with self._read() as conn:
                rows = (
                    conn.execute(
                        select(alarms)
                        .where(alarms.c.seq > after_seq)
                        .order_by(alarms.c.seq)
                        .limit(batch)
                    )
                    .mappings()
                    .all()
                )
            for row in rows:
                yield row["seq"], alarm_of(row)
            if len(rows) < batch:
                return
            after_seq = rows[-1]["seq"]

    def alarms_of_object(self, object_id: str, limit: int = 1000) -> list[Alarm]:
        """Alarms about one managed object, newest first."""
        with self._read() as conn:
            rows = (
                conn.execute(
                    select(alarms)
                    .where(alarms.c.managed_object_id == object_id)
                    .order_by(alarms.c.seq.desc())
                    .limit(limit)
                )
                .mappings()
                .all()
            )
        return [alarm_of(r) for r in rows]

    def active_alarms_of_host(self, host: str) -> list[Alarm]:
        parts = host.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
        with self._read() as conn:
            rows = (
                conn.execute(
                    select(alarms)
                    .where(
                        (alarms.c.managed_object_id == host)
                        | alarms.c.managed_object_id.like(parts, escape="\\")
                    )
                    .where(alarms.c.perceived_severity != Severity.CLEARED.value)
                    .order_by(alarms.c.seq)
                )
                .mappings()
                .all()
            )
        return [alarm_of(r) for r in rows]

    def latest_alarms(self, active: bool, limit: int) -> list[Alarm]:
        """Active (or cleared) alarms, newest first, at most `limit`."""
        where = text("alarms.active") if active else alarms.c.active.is_(False)
        with self._read() as conn:
            rows = (
                conn.execute(select(alarms).where(where).order_by(alarms.c.seq.desc()).limit(limit))
                .mappings()
                .all()
            )
        return [alarm_of(r) for r in rows]

    def active_alarm_counts(self) -> dict[str, int]:
        """How many active alarms of each perceived severity."""
        sev = alarms.c.perceived_severity
        with self._read() as conn:
            rows = conn.execute(
                select(sev, func.count()).where(text("alarms.active")).group_by(sev)
            ).all()
        return {str(s): int(n) for s, n in rows}

    def alarms_marker(self) -> int:
        """Moves with every change of any alarm (each change writes a history event)."""
        with self._read() as conn:
            return int(conn.execute(select(func.max(alarm_history.c.seq))).scalar() or 0)

    def alarm_history(self, alarm_id: str) -> list[HistoryEvent]:
        self.get_alarm(alarm_id)
        with self._read() as conn:
            rows = (
                conn.execute(
                    select(alarm_history)
                    .where(alarm_history.c.alarm_id == alarm_id)
                    .order_by(alarm_history.c.seq)
                )
                .mappings()
                .all()
            )
        return [
            HistoryEvent(
                r["seq"],
                r["alarm_id"],
                r["kind"],
                utc(r["at"]),
                r["perceived_severity"],
                r["ack_state"],
                r["reason"],
            )
            for r in rows
        ]


def alarm_of(row: Any) -> Alarm:
    return Alarm(
        id=row["id"],
        managed_object_id=row["managed_object_id"],
        vim_connection_id=row["vim_connection_id"],
        resource_id=row["resource_id"],
        vim_level_resource_type=row["vim_level_resource_type"],
        faulty_resource_type=FaultyResourceType(row["faulty_resource_type"]),
        alarm_raised_time=utc(row["raised_time"]),
        alarm_changed_time=utc_or_none(row["changed_time"]),
        alarm_cleared_time=utc_or_none(row["cleared_time"]),
        alarm_acknowledged_time=utc_or_none(row["acknowledged_time"]),
        ack_state=AckState(row["ack_state"]),
        perceived_severity=Severity(row["perceived_severity"]),
        peak_severity=Severity(row["peak_severity"]),
        event_time=utc(row["event_time"]),
        event_type=EventType(row["event_type"]),
        fault_type=row["fault_type"],
        probable_cause=row["probable_cause"],
        is_root_cause=bool(row["is_root_cause"]),
        correlated_alarm_ids=tuple(row["correlated_alarm_ids"]),
        fault_details=tuple(row["fault_details"]),
        location=Location(tuple((str(k), str(v)) for k, v in row["location"])),
        version=row["version"],
    )
