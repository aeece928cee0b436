"""SqlStore: the Store port on SQLAlchemy Core, for SQLite and PostgreSQL.

Assembled from the parts of the store, one module each: `base` (engine, write lock, error
translation: every SQLAlchemy error is translated there, the one place), `alarms` (alarms and
their history), `outbox` (subscriptions, notifications, deliveries), `unit_of_work` (the
transaction that writes them together), `inventory` (fence records, hosts, services,
settings) and `housekeeping` (purge, checkpoints, counts); `compute` (the compute model, issue 14);
`openstack` (the tokens of the OpenStack Identity face, issue 16); `insight` (the instances'
state journal, incidents, issue 20); `maintenance` (migrations, maintenance sessions, hosts
taken out, issue 19).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from vimha.drivers.sqlstore.alarms import ACTIVE_BY_KEYS as _ACTIVE_BY_KEYS
from vimha.drivers.sqlstore.alarms import AlarmReads
from vimha.drivers.sqlstore.compute import SqlCompute
from vimha.drivers.sqlstore.housekeeping import Housekeeping
from vimha.drivers.sqlstore.insight import SqlInsight
from vimha.drivers.sqlstore.inventory import Inventory
from vimha.drivers.sqlstore.maintenance import SqlMaintenance
from vimha.drivers.sqlstore.openstack import SqlOpenStack
from vimha.drivers.sqlstore.outbox import Outbox
from vimha.drivers.sqlstore.unit_of_work import SqlUnitOfWork
from vimha.ports.store import AttemptRecord

__all__ = ["_ACTIVE_BY_KEYS", "SqlStore"]  # the first for the contract test's query plan


class SqlStore(AlarmReads, Outbox, Inventory, Housekeeping):
    """The Store port (`ports/store.py`) on SQLAlchemy Core."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.compute = SqlCompute(self._read, self._write, self.sqlite)
        self.openstack = SqlOpenStack(self._read, self.sqlite)
        self.insight = SqlInsight(self._read, self.sqlite)
        self.maintenance = SqlMaintenance(self._read, self.sqlite)

    @contextmanager
    def unit_of_work(self) -> Iterator[SqlUnitOfWork]:
        with self._write() as conn:
            yield SqlUnitOfWork(self, conn)

    def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        with self.unit_of_work() as uow:
            uow.record_attempts(records)
