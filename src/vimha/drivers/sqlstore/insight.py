"""Insight's part of the SQL store (ports/insight.py, issue 20): the instances' state
journal, incidents, the steps reported for them, and the observers' cursors (in
`settings`). Registered with the other tables; changes here need an Alembic migration
(0009)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

from vimha.domain.alarms import Alarm
from vimha.domain.compute import Instance
from vimha.domain.errors import NotFound
from vimha.domain.incidents import (
    Affected,
    AlarmSeen,
    FenceSeen,
    Incident,
    Report,
    Stage,
    StateSeen,
    incident_of,
)
from vimha.drivers.sqlstore.alarms import alarm_of
from vimha.drivers.sqlstore.compute_rows import Times, utc, utc_or_none
from vimha.drivers.sqlstore.tables import (
    SeqType,
    alarm_history,
    alarms,
    fence_records,
    metadata,
    settings,
)
from vimha.ports.compute import ClaimConflict

instance_states = Table(
    "instance_states",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("instance_id", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("task_state", String(32)),
    Column("power", String(16), nullable=False),
    Column("host", String(255)),
    Column("incarnation", Integer, nullable=False),
    Column("name", String(255), nullable=False),
    Column("vnf_id", String(64)),
    Column("vdu", String(255)),
    Column("sal", String(16)),
    Index("ix_instance_states_instance", "instance_id", "seq"),
    Index("ix_instance_states_at", "at"),
    Index("ix_instance_states_host", "host", "at"),
)

incident_reports = Table(
    "incident_reports",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("subject_type", String(16), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("detail", Text, nullable=False),
    Column("instance_id", String(64)),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

incidents = Table(
    "incidents",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("state", String(16), nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("recovered_at", DateTime(timezone=True)),
    Column("closed_at", DateTime(timezone=True)),
    Column("root_alarm_id", String(64)),
    Column("version", Integer, nullable=False),
    Column("doc", JSON, nullable=False),
    Index("ix_incidents_state", "state", "seq"),
    Index("ix_incidents_root", "root_alarm_id", unique=True),  # one incident per root
)

CURSOR = "insight.cursor."
JOURNALED = ("status", "task_state", "power", "host", "incarnation")


# -- the journal, written by the compute writes ----------------------------------------------
def journal(conn: Connection, t: Times, old: Instance | None, new: Instance) -> None:
    """Journal `new` if its status, task state, power, host or incarnation differ from
    `old`'s (always for a new instance)."""
    if old is not None and _journaled(old) == _journaled(new):
        return
    conn.execute(
        insert(instance_states).values(
            instance_id=new.id,
            at=t.w(new.updated_at),
            status=new.status.value,
            task_state=new.task_state.value if new.task_state else None,
            power=new.power.value,
            host=new.host,
            incarnation=new.incarnation,
            name=new.name,
            vnf_id=new.spec.vnf_id,
            vdu=new.spec.vdu,
            sal=new.spec.sal.value,
        )
    )


def _journaled(i: Instance) -> tuple[object, ...]:
    return (i.status, i.task_state, i.power, i.host, i.incarnation)


def _state(r: Any) -> StateSeen:
    return StateSeen(
        r["seq"],
        r["instance_id"],
        utc(r["at"]),
        r["status"],
        r["host"],
        r["incarnation"],
        r["name"],
        r["vnf_id"],
        r["vdu"],
        r["sal"],
        r["power"],
    )


def _incident(r: Any) -> Incident:
    return incident_of(
        r["id"],
        r["kind"],
        r["subject"],
        r["state"],
        utc(r["opened_at"]),
        r["root_alarm_id"],
        utc_or_none(r["recovered_at"]),
        utc_or_none(r["closed_at"]),
        r["version"],
        r["doc"],
    )


class SqlInsight:
    """Reads, each on its own connection."""

    def __init__(self, read: Callable[[], AbstractContextManager[Connection]], sqlite: bool):
        self._read = read
        self.t = Times(sqlite)

    def alarms_since(self, since: datetime, limit: int = 50_000) -> list[Alarm]:
        c = alarms.c
        w = self.t.w(since)
        stmt = (
            select(alarms)
            .where(or_(text("alarms.active"), c.raised_time >= w, c.cleared_time >= w))
            .order_by(c.seq)
            .limit(limit)
        )
        with self._read() as conn:
            return [alarm_of(r) for r in conn.execute(stmt).mappings().all()]

    def alarm_mark(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.max(alarm_history.c.seq))).scalar() or 0)

    def alarm_changes(self, after_seq: int, limit: int) -> list[AlarmSeen]:
        h = alarm_history.c
        stmt = (
            select(h.seq, h.kind, h.at, alarms)
            .join(alarms, alarms.c.id == h.alarm_id)
            .where(h.seq > after_seq, h.kind.in_(("RAISED", "UPDATED", "CLEARED")))
            .order_by(h.seq)
            .limit(limit)
        )
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        out = []
        for row in rows:
            m = row._mapping
            alarm = alarm_of({col.key: m[col] for col in alarms.c})
            out.append(AlarmSeen(m[h.seq], m[h.kind], utc(m[h.at]), alarm))
        return out

    def journal_after(self, after_seq: int, limit: int) -> list[StateSeen]:
        c = instance_states.c
        stmt = select(instance_states).where(c.seq > after_seq).order_by(c.seq).limit(limit)
        with self._read() as conn:
            return [_state(r) for r in conn.execute(stmt).mappings().all()]

    def journal_since(
        self, since: datetime, instance_ids: Sequence[str] | None = None
    ) -> list[StateSeen]:
        c = instance_states.c
        w = self.t.w(since)
        last = select(func.max(c.seq)).where(c.at < w).group_by(c.instance_id)
        cond = or_(c.at >= w, c.seq.in_(last.scalar_subquery()))
        if instance_ids is not None:
            cond = and_(cond, c.instance_id.in_(list(instance_ids)))
        stmt = select(instance_states).where(cond).order_by(c.seq)
        with self._read() as conn:
            return [_state(r) for r in conn.execute(stmt).mappings().all()]

    def residents(self, host: str, at: datetime) -> list[Affected]:
        c = instance_states.c
        w = self.t.w(at)
        last = (
            select(func.max(c.seq))
            .where(c.at <= w, c.instance_id.in_(select(c.instance_id).where(c.host == host)))
            .group_by(c.instance_id)
        )
        stmt = select(instance_states).where(c.seq.in_(last.scalar_subquery())).order_by(c.seq)
        with self._read() as conn:
            rows = [_state(r) for r in conn.execute(stmt).mappings().all()]
        return [
            Affected(r.instance_id, r.host, r.incarnation, r.name)
            for r in rows
            if r.host == host and r.status != "DELETED"
        ]

    def reports_after(self, after_seq: int, limit: int) -> list[Report]:
        c = incident_reports.c
        stmt = select(incident_reports).where(c.seq > after_seq).order_by(c.seq).limit(limit)
        with self._read() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [
            Report(
                r["seq"],
                r["subject_type"],
                r["subject"],
                Stage(r["stage"]),
                utc(r["at"]),
                r["detail"],
                r["instance_id"],
                utc(r["recorded_at"]),
            )
            for r in rows
        ]

    def fences(self, host: str, since: datetime) -> list[FenceSeen]:
        c = fence_records.c
        stmt = (
            select(fence_records)
            .where(c.host == host, c.finished_at >= self.t.w(since))
            .order_by(c.seq)
        )
        with self._read() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [
            FenceSeen(
                r["host"],
                utc(r["started_at"]),
                utc(r["finished_at"]),
                r["result"] == "CONFIRMED",
                r["detail"],
            )
            for r in rows
        ]

    def incidents(
        self, states: Sequence[str] | None = None, limit: int = 1000, kind: str | None = None
    ) -> list[Incident]:
        c = incidents.c
        stmt = select(incidents).order_by(c.seq.desc()).limit(limit)
        if states is not None:
            stmt = stmt.where(c.state.in_(list(states)))
        if kind is not None:
            stmt = stmt.where(c.kind == kind)
        with self._read() as conn:
            return [_incident(r) for r in conn.execute(stmt).mappings().all()]

    def incident(self, incident_id: str) -> Incident:
        with self._read() as conn:
            row = (
                conn.execute(select(incidents).where(incidents.c.id == incident_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"incident {incident_id} not found")
        return _incident(row)

    def incidents_of_roots(self, alarm_ids: Sequence[str]) -> list[Incident]:
        if not alarm_ids:
            return []
        stmt = select(incidents).where(incidents.c.root_alarm_id.in_(sorted(set(alarm_ids))))
        with self._read() as conn:
            return [_incident(r) for r in conn.execute(stmt).mappings().all()]

    def cursor(self, name: str) -> int:
        with self._read() as conn:
            value = conn.execute(
                select(settings.c.value).where(settings.c.key == CURSOR + name)
            ).scalar()
        return int(value or 0)


class InsightUow:
    """Writes, in the store's unit of work."""

    def __init__(self, conn: Connection, sqlite: bool) -> None:
        self._conn = conn
        self.t = Times(sqlite)

    def journal(self, old: Instance | None, new: Instance) -> None:
        journal(self._conn, self.t, old, new)

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
        self._conn.execute(
            insert(incident_reports).values(
                subject_type=subject_type,
                subject=subject,
                stage=stage.value,
                at=self.t.w(at),
                detail=detail,
                instance_id=instance_id,
                recorded_at=self.t.w(now),
            )
        )

    def save_incident(self, incident: Incident) -> Incident:
        values = {
            "kind": incident.kind.value,
            "subject": incident.subject,
            "state": incident.state.value,
            "opened_at": self.t.w(incident.opened_at),
            "recovered_at": self.t.w(incident.recovered_at),
            "closed_at": self.t.w(incident.closed_at),
            "root_alarm_id": incident.root_alarm_id,
            "version": incident.version + 1,
            "doc": incident.to_doc(),
        }
        if incident.version == 0:
            self._conn.execute(insert(incidents).values(id=incident.id, **values))
        else:
            c = incidents.c
            done = self._conn.execute(
                update(incidents)
                .where(and_(c.id == incident.id, c.version == incident.version))
                .values(**values)
            ).rowcount
            if not done:
                raise ClaimConflict(f"incident {incident.id} changed meanwhile")
        return replace(incident, version=incident.version + 1)

    def set_cursor(self, name: str, value: int) -> None:
        key = CURSOR + name
        self._conn.execute(delete(settings).where(settings.c.key == key))
        self._conn.execute(insert(settings).values(key=key, value=value))

    def purge_journal(self, before: datetime) -> int:
        c = instance_states.c
        w = self.t.w(before)
        # each instance's last row before the cutoff: its state when the kept period begins
        last = select(func.max(c.seq)).where(c.at < w).group_by(c.instance_id)
        result = self._conn.execute(
            delete(instance_states).where(c.at < w, c.seq.not_in(last.scalar_subquery()))
        )
        return int(result.rowcount or 0)
