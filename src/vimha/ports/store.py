"""The state store: alarms, history, subscriptions, notifications and their deliveries.

Contract for every driver:
- Writes happen inside `unit_of_work()`: all or nothing. Two controllers' units of work on the
  same active alarm serialise (row locks or a single writer); a lost race on a new alarm's
  de-duplication key raises `Temporary` and the caller retries the whole unit.
- A notification is stored (`UnitOfWork.enqueue`) in the same unit of work as the alarm
  change that caused it: nothing is sent that was not stored first (at-least-once).
- Library errors are translated at the driver boundary into `StoreUnavailable` (retry) or
  `Permanent` subclasses; no driver exception leaks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from vimha.domain.alarms import Alarm, AlarmChange
from vimha.domain.delivery import DeliveryStatus
from vimha.domain.retention import PurgePlan
from vimha.domain.subscriptions import NotificationType, Subscription
from vimha.ports.compute import ComputeReads, ComputeUnitOfWork
from vimha.ports.insight import InsightReads, InsightUnitOfWork
from vimha.ports.maintenance import MaintenanceReads, MaintenanceUnitOfWork
from vimha.ports.openstack import OpenStackReads, OpenStackUnitOfWork


@dataclass(frozen=True, slots=True)
class StoreCharacteristics:
    """What a backend guarantees, checked at start-up (tooz's characteristics)."""

    distributed: bool
    durable: bool


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    seq: int
    alarm_id: str
    kind: str
    at: datetime
    perceived_severity: str
    ack_state: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """One notification to one subscriber, as the dispatcher sends it."""

    seq: int
    id: str
    subscription_id: str
    notification_type: NotificationType
    payload: dict[str, Any]
    created_at: datetime
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class Attempt:
    at: datetime
    duration_ms: float
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """The outcome of one attempt, to be written back (batched by the dispatcher)."""

    delivery_seq: int
    attempt: Attempt
    status: DeliveryStatus
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    seq: int
    id: str
    subscription_id: str
    notification_type: str
    status: DeliveryStatus
    created_at: datetime
    delivered_at: datetime | None
    attempt_count: int = 0
    attempts: tuple[Attempt, ...] = field(default=())
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    alarms: int
    history: int
    deliveries: int
    notifications: int


@dataclass(frozen=True, slots=True)
class FenceRecord:
    """One fencing attempt: result CONFIRMED (power-off read back) or FAILED."""

    host: str
    failure_kind: str
    started_at: datetime
    finished_at: datetime
    result: str
    detail: str
    seq: int = 0


class UnitOfWork(Protocol):
    @property
    def compute(self) -> ComputeUnitOfWork:
        """The compute model's writes, in this same transaction."""
        ...

    @property
    def openstack(self) -> OpenStackUnitOfWork:
        """The OpenStack faces' writes (Identity's tokens), in this same transaction."""
        ...

    @property
    def insight(self) -> InsightUnitOfWork:
        """Incidents, their reported steps, the observers' cursors (issue 20)."""
        ...

    @property
    def maintenance(self) -> MaintenanceUnitOfWork:
        """Migrations and maintenance sessions (issue 19), in this same transaction."""
        ...

    def active_alarms(self, keys: Sequence[str]) -> dict[str, Alarm]:
        """Active alarms by de-duplication key, locked for this unit of work."""
        ...

    def alarm_for_update(self, alarm_id: str) -> Alarm:
        """Raises NotFound."""
        ...

    def save(self, change: AlarmChange, now: datetime) -> None:
        """Insert or update the alarm and append a history event (not for REPEATED)."""
        ...

    def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        """Write delivery outcomes back, in the given order."""
        ...

    def enqueue(
        self,
        notification_type: NotificationType,
        payload: dict[str, Any],
        subscription_ids: Sequence[str],
        now: datetime,
        object_id: str,
    ) -> list[DeliveryJob]:
        """Store one notification and one pending delivery per subscription."""
        ...

    def subscriptions_token(self) -> str | None:
        """Changes with every subscription added or deleted, through any controller."""
        ...

    def adopt_deliveries(
        self, owners: Sequence[str | None], to: str, limit: int
    ) -> list[DeliveryJob]:
        """Give up to `limit` pending deliveries of `owners` (None: of no owner) to `to`;
        returns them in order. Each is adopted by one caller only."""
        ...


class Store(Protocol):
    characteristics: StoreCharacteristics

    @property
    def compute(self) -> ComputeReads:
        """The compute model (issue 14)."""
        ...

    @property
    def openstack(self) -> OpenStackReads:
        """The OpenStack faces' state: Identity's tokens (issue 16)."""
        ...

    @property
    def insight(self) -> InsightReads:
        """The instances' state journal, incidents (issue 20)."""
        ...

    @property
    def maintenance(self) -> MaintenanceReads:
        """Migrations and maintenance sessions (issue 19)."""
        ...

    def check_schema(self) -> None:
        """Raise SchemaMismatch if the schema is missing, older or newer than this code's."""
        ...

    def unit_of_work(self) -> AbstractContextManager[UnitOfWork]: ...

    def get_alarm(self, alarm_id: str) -> Alarm:
        """Raises NotFound."""
        ...

    def iter_alarms(self, after_seq: int, batch: int) -> Iterator[tuple[int, Alarm]]:
        """Alarms in creation order after `after_seq`, fetched `batch` at a time."""
        ...

    def alarms_of_object(self, object_id: str, limit: int = 1000) -> list[Alarm]:
        """Alarms about one managed object, newest first."""
        ...

    def active_alarms_of_host(self, host: str) -> list[Alarm]:
        """Active (not cleared) alarms on the host or any of its parts (`host/...`)."""
        ...

    def latest_alarms(self, active: bool, limit: int) -> list[Alarm]:
        """Active (or cleared) alarms, newest first, at most `limit` (the dashboard)."""
        ...

    def active_alarm_counts(self) -> dict[str, int]:
        """Active alarms per perceived severity (the dashboard's badge)."""
        ...

    def alarms_marker(self) -> int:
        """A number that grows with every change of any alarm (raised, updated,
        acknowledged, cleared), from any controller; cheap enough to read every second."""
        ...

    def alarm_history(self, alarm_id: str) -> list[HistoryEvent]: ...

    def add_subscription(self, sub: Subscription) -> Subscription:
        """Store `sub`, or return the existing one with the same callback and filter."""
        ...

    def get_subscription(self, sub_id: str) -> Subscription: ...

    def list_subscriptions(self) -> list[Subscription]: ...

    def delete_subscription(self, sub_id: str) -> None:
        """Delete it and its pending deliveries. Raises NotFound."""
        ...

    owner: str | None  # the controller whose deliveries enqueue() creates

    def pending_deliveries(
        self,
        limit: int,
        subscription_id: str | None = None,
        after_seq: int = 0,
        owner: str | None = None,
    ) -> list[DeliveryJob]:
        """Pending deliveries with seq > after_seq (of one subscription, of one owner if
        given), by seq."""
        ...

    def pending_owners(self) -> set[str | None]:
        """The controllers that hold pending deliveries (None: deliveries of no owner)."""
        ...

    def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        """Write outcomes back, in order. Every attempt stays queryable (get_delivery)."""
        ...

    def iter_deliveries(self, after_seq: int, batch: int) -> Iterator[DeliveryRecord]: ...

    def get_delivery(self, delivery_id: str) -> DeliveryRecord: ...

    def add_fence_record(self, record: FenceRecord) -> FenceRecord:
        """Stored; returned with its sequence number."""
        ...

    def fence_records(self, host: str | None = None, limit: int = 100) -> list[FenceRecord]:
        """Newest first."""
        ...

    def add_host(self, name: str, spec: dict[str, Any], now: datetime) -> None:
        """Store a new host's declaration; Conflict if the name is taken."""
        ...

    def replace_host(self, name: str, spec: dict[str, Any], now: datetime) -> None:
        """NotFound if there is no such host."""
        ...

    def delete_host(self, name: str) -> None:
        """NotFound if there is no such host."""
        ...

    def list_hosts(self) -> dict[str, dict[str, Any]]:
        """Every stored declaration by name."""
        ...

    def add_service(self, host: str, name: str, spec: dict[str, Any], now: datetime) -> None:
        """Store a new service declaration; Conflict if the host has one of that name."""
        ...

    def replace_service(self, host: str, name: str, spec: dict[str, Any], now: datetime) -> None:
        """NotFound if there is no such service."""
        ...

    def delete_service(self, host: str, name: str) -> None:
        """NotFound if there is no such service."""
        ...

    def list_services(self, host: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
        """(host, name, spec) of the stored declarations, by host and name."""
        ...

    def get_setting(self, key: str) -> Any | None: ...

    def put_setting(self, key: str, value: Any) -> None: ...

    def purge(self, plan: PurgePlan) -> PurgeCounts: ...

    def checkpoint(self, truncate: bool = False) -> None:
        """Periodic housekeeping off the request path (SQLite: WAL checkpoint); may no-op.
        `truncate` may wait for writers; without it, it never blocks them."""
        ...

    def wal_bytes(self) -> int:
        """Size of a write-ahead log that checkpoints shrink (0 if none)."""
        ...

    def close(self) -> None: ...
