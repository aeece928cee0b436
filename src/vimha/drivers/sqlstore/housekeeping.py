"""Housekeeping: purging what the retention policy lets go, SQLite's WAL checkpoints, and
row counts for status and metrics."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from sqlalchemy import and_, delete, exists, func, select

from vimha.domain.delivery import DeliveryStatus
from vimha.domain.retention import PurgePlan
from vimha.drivers.sqlstore.base import SqlBase, translate
from vimha.drivers.sqlstore.tables import (
    alarm_history,
    alarms,
    deliveries,
    delivery_attempts,
    notifications,
    subscriptions,
)
from vimha.ports.store import PurgeCounts


class Housekeeping(SqlBase):
    """Purge, checkpoints and counts."""

    # -- ageing -------------------------------------------------------------------------
    def purge(self, plan: PurgePlan) -> PurgeCounts:
        n_alarms = n_history = n_deliveries = n_notifications = 0
        with self._write() as conn:
            for severity, cutoff in plan.alarms.items():
                old = and_(
                    alarms.c.active.is_(False),
                    alarms.c.peak_severity == severity.value,
                    alarms.c.cleared_time < self._w(cutoff),
                )
                n_history += conn.execute(
                    delete(alarm_history).where(
                        alarm_history.c.alarm_id.in_(select(alarms.c.id).where(old))
                    )
                ).rowcount
                n_alarms += conn.execute(delete(alarms).where(old)).rowcount
            done = and_(
                deliveries.c.status != DeliveryStatus.PENDING.value,
                deliveries.c.created_at < self._w(plan.notifications),
            )
            conn.execute(
                delete(delivery_attempts).where(
                    delivery_attempts.c.delivery_seq.in_(select(deliveries.c.seq).where(done))
                )
            )
            n_deliveries = conn.execute(delete(deliveries).where(done)).rowcount
            orphan = and_(
                notifications.c.created_at < self._w(plan.notifications),
                ~exists().where(deliveries.c.notification_seq == notifications.c.seq),
            )
            n_notifications = conn.execute(delete(notifications).where(orphan)).rowcount
        return PurgeCounts(n_alarms, n_history, n_deliveries, n_notifications)

    def checkpoint(self, truncate: bool = False) -> None:
        """SQLite housekeeping; automatic checkpoints are off (they would run on the commit
        path). PASSIVE never blocks writers: run often from a background thread, it usually
        completes between writes, and the WAL then rewinds. TRUNCATE waits for writers and
        readers and shrinks the WAL: for when PASSIVE cannot keep up (sustained saturation).
        """
        if not self.sqlite:
            return
        if truncate:
            lock: AbstractContextManager[Any] = self._write_lock or nullcontext()
            with lock, translate(), self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            with translate(), self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def wal_bytes(self) -> int:
        """Size of the SQLite WAL file (0 for other backends)."""
        path = self.engine.url.database if self.sqlite else None
        try:
            return os.path.getsize(f"{path}-wal") if path else 0
        except OSError:
            return 0

    def counts(self) -> dict[str, int]:
        """Row counts, for status and metrics."""
        with self._read() as conn:
            return {
                "activeAlarms": conn.execute(
                    select(func.count()).where(alarms.c.active.is_(True))
                ).scalar_one(),
                "alarms": conn.execute(select(func.count()).select_from(alarms)).scalar_one(),
                "pendingNotifications": conn.execute(
                    select(func.count()).where(deliveries.c.status == DeliveryStatus.PENDING.value)
                ).scalar_one(),
                "subscriptions": conn.execute(
                    select(func.count()).select_from(subscriptions)
                ).scalar_one(),
            }
