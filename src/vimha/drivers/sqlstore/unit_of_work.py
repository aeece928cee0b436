"""The unit of work: one transaction in which an alarm change, its history and the
notifications it causes are stored together (the outbox), and delivery outcomes written back."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy import update as sql_update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from vimha.domain.alarms import Alarm, AlarmChange, ChangeKind
from vimha.domain.delivery import DeliveryStatus
from vimha.domain.errors import NotFound
from vimha.domain.subscriptions import NotificationType
from vimha.drivers.sqlstore.alarms import (
    ACTIVE_BY_KEYS,
    ALARM_BY_ID,
    INSERT_ALARM,
    INSERT_HISTORY,
    UPDATE_ALARM,
    alarm_of,
)
from vimha.drivers.sqlstore.base import SqlBase
from vimha.drivers.sqlstore.compute_uow import ComputeUow
from vimha.drivers.sqlstore.insight import InsightUow
from vimha.drivers.sqlstore.maintenance import MaintenanceUow
from vimha.drivers.sqlstore.openstack import OpenStackUow
from vimha.drivers.sqlstore.outbox import (
    DELIVERIES_OF,
    INSERT_DELIVERY,
    INSERT_NOTIFICATION,
    PENDING,
    RECORD_ATTEMPT,
    SUBSCRIPTIONS_TOKEN,
    job_of,
)
from vimha.drivers.sqlstore.tables import deliveries, delivery_attempts, settings
from vimha.ports.store import AttemptRecord, DeliveryJob


class SqlUnitOfWork:
    """The UnitOfWork port on one connection inside a transaction (`SqlStore.unit_of_work`)."""

    def __init__(self, store: SqlBase, conn: Connection) -> None:
        self._store = store
        self._conn = conn
        self._lock_rows = not store.sqlite  # SQLite: the write lock already serialises
        self.compute = ComputeUow(conn, store.sqlite)
        self.openstack = OpenStackUow(conn, store.sqlite)
        self.insight = InsightUow(conn, store.sqlite)
        self.maintenance = MaintenanceUow(conn, store.sqlite)

    def subscriptions_token(self) -> str | None:
        token = self._conn.execute(
            select(settings.c.value).where(settings.c.key == SUBSCRIPTIONS_TOKEN)
        ).scalar()
        return None if token is None else str(token)

    def active_alarms(self, keys: Sequence[str]) -> dict[str, Alarm]:
        if not keys:
            return {}
        stmt = ACTIVE_BY_KEYS.with_for_update() if self._lock_rows else ACTIVE_BY_KEYS
        rows = self._conn.execute(stmt, {"keys": sorted(set(keys))}).mappings().all()
        return {r["dedup_key"]: alarm_of(r) for r in rows}

    def alarm_for_update(self, alarm_id: str) -> Alarm:
        stmt = ALARM_BY_ID.with_for_update() if self._lock_rows else ALARM_BY_ID
        row = self._conn.execute(stmt, {"b_id": alarm_id}).mappings().first()
        if row is None:
            raise NotFound(f"alarm {alarm_id} not found")
        return alarm_of(row)

    def save(self, change: AlarmChange, now: datetime) -> None:
        a = change.alarm
        w = self._store._w
        values = {
            "dedup_key": a.dedup_key,
            "active": a.active,
            "managed_object_id": a.managed_object_id,
            "vim_connection_id": a.vim_connection_id,
            "resource_id": a.resource_id,
            "vim_level_resource_type": a.vim_level_resource_type,
            "faulty_resource_type": a.faulty_resource_type.value,
            "raised_time": w(a.alarm_raised_time),
            "changed_time": w(a.alarm_changed_time),
            "cleared_time": w(a.alarm_cleared_time),
            "acknowledged_time": w(a.alarm_acknowledged_time),
            "ack_state": a.ack_state.value,
            "perceived_severity": a.perceived_severity.value,
            "peak_severity": a.peak_severity.value,
            "event_time": w(a.event_time),
            "event_type": a.event_type.value,
            "fault_type": a.fault_type,
            "probable_cause": a.probable_cause,
            "is_root_cause": a.is_root_cause,
            "correlated_alarm_ids": list(a.correlated_alarm_ids),
            "fault_details": list(a.fault_details),
            "location": [list(level) for level in a.location.levels],
            "version": a.version,
        }
        if change.kind is ChangeKind.RAISED:
            self._conn.execute(INSERT_ALARM, {"id": a.id, **values})
        else:
            self._conn.execute(UPDATE_ALARM, {"b_id": a.id, **values})
        if change.kind is not ChangeKind.REPEATED:
            self._conn.execute(
                INSERT_HISTORY,
                {
                    "alarm_id": a.id,
                    "kind": change.kind.value,
                    "at": w(now),
                    "perceived_severity": a.perceived_severity.value,
                    "ack_state": a.ack_state.value,
                    "reason": change.reason,
                },
            )

    def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        if not records:
            return
        w = self._store._w
        self._conn.execute(
            RECORD_ATTEMPT,
            [
                {
                    "b_seq": r.delivery_seq,
                    "b_status": r.status.value,
                    "b_next": w(r.next_attempt_at),
                    "b_delivered": w(r.attempt.at) if r.attempt.ok else None,
                    "b_ms": r.attempt.duration_ms,
                }
                for r in records
            ],
        )
        # A successful attempt is described by its delivery row (delivered_at and
        # last_duration_ms); only failed attempts need rows of their own. Most deliveries
        # succeed at once, so this halves what the write-back writes.
        failed = [r for r in records if not r.attempt.ok]
        if not failed:
            return
        # A delivery deleted meanwhile (subscription removed) has no row to attach to.
        live = set(
            self._conn.execute(
                select(deliveries.c.seq).where(
                    deliveries.c.seq.in_([r.delivery_seq for r in failed])
                )
            ).scalars()
        )
        rows = [
            {
                "delivery_seq": r.delivery_seq,
                "at": w(r.attempt.at),
                "duration_ms": r.attempt.duration_ms,
                "ok": False,
                "detail": r.attempt.detail[:2000],
            }
            for r in failed
            if r.delivery_seq in live
        ]
        if rows:
            self._conn.execute(insert(delivery_attempts), rows)

    def enqueue(
        self,
        notification_type: NotificationType,
        payload: dict[str, Any],
        subscription_ids: Sequence[str],
        now: datetime,
        object_id: str,
    ) -> list[DeliveryJob]:
        if not subscription_ids:
            return []
        created = self._store._w(now)
        seq = self._conn.execute(
            INSERT_NOTIFICATION,
            {
                "notification_type": notification_type.value,
                "object_id": object_id,
                "payload": payload,
                "created_at": created,
            },
        ).scalar_one()
        ids = {str(uuid.uuid4()): sid for sid in subscription_ids}
        # executemany without RETURNING (a C loop in the driver), then read the keys back.
        self._conn.execute(
            INSERT_DELIVERY,
            [
                {
                    "id": did,
                    "subscription_id": sid,
                    "notification_seq": seq,
                    "status": DeliveryStatus.PENDING.value,
                    "attempts": 0,
                    "created_at": created,
                    "owner": self._store.owner,
                }
                for did, sid in ids.items()
            ],
        )
        rows = self._conn.execute(DELIVERIES_OF, {"b_seq": seq}).all()
        return [
            DeliveryJob(dseq, did, ids[did], notification_type, payload, now, 0)
            for dseq, did in rows
        ]

    def adopt_deliveries(
        self, owners: Sequence[str | None], to: str, limit: int
    ) -> list[DeliveryJob]:
        named = [o for o in owners if o is not None]
        whose: ColumnElement[bool] = deliveries.c.owner.in_(named)
        if None in owners:
            whose = or_(whose, deliveries.c.owner.is_(None))
        mine = (
            select(deliveries.c.seq)
            .where(deliveries.c.status == DeliveryStatus.PENDING.value, whose)
            .order_by(deliveries.c.seq)
            .limit(limit)
        )
        if not self._store.sqlite:  # SQLite has one writer; PostgreSQL rows are locked
            mine = mine.with_for_update(skip_locked=True)
        seqs = [r[0] for r in self._conn.execute(mine)]
        if not seqs:
            return []
        self._conn.execute(
            sql_update(deliveries).where(deliveries.c.seq.in_(seqs)).values(owner=to)
        )
        rows = self._conn.execute(PENDING.where(deliveries.c.seq.in_(seqs))).mappings().all()
        return [job_of(r) for r in rows]
