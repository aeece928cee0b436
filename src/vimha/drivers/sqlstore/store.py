"""SqlStore: the Store port on SQLAlchemy Core, for SQLite and PostgreSQL.

SQLite is the embedded default: WAL journal, one writer at a time (a process lock plus
busy_timeout across processes), declared not distributed. PostgreSQL (psycopg 3) is for
several controllers. Every SQLAlchemy error is translated in `_translate`, the one place.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    or_,
    select,
    text,
)
from sqlalchemy import update as sql_update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import ColumnElement

from vimha.domain.alarms import (
    AckState,
    Alarm,
    AlarmChange,
    ChangeKind,
    EventType,
    FaultyResourceType,
    Location,
    Severity,
)
from vimha.domain.delivery import DeliveryStatus
from vimha.domain.errors import Conflict, InvalidInput, NotFound, StoreUnavailable, Temporary
from vimha.domain.retention import PurgePlan
from vimha.domain.subscriptions import (
    Authentication,
    AuthType,
    NotificationType,
    Subscription,
    SubscriptionFilter,
)
from vimha.drivers.sqlstore import schema
from vimha.drivers.sqlstore.tables import (
    alarm_history,
    alarms,
    deliveries,
    delivery_attempts,
    fence_records,
    hosts,
    notifications,
    services,
    settings,
    subscriptions,
)
from vimha.ports.store import (
    Attempt,
    AttemptRecord,
    DeliveryJob,
    DeliveryRecord,
    FenceRecord,
    HistoryEvent,
    PurgeCounts,
    StoreCharacteristics,
)


def make_engine(url: str) -> Engine:
    """An engine for a store URL: sqlite:///path, sqlite:// (memory), postgresql[+psycopg]://."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidInput(f"store URL {url!r} is not a database URL") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            engine = create_engine(
                "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            engine = create_engine(
                parsed, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8
            )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        return engine
    if backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(
            parsed, pool_size=8, pool_pre_ping=True, connect_args={"options": "-c timezone=UTC"}
        )
    raise InvalidInput(
        f"store URL {url!r}: unsupported backend {backend!r} (use sqlite:/// or postgresql://)"
    )


class _WriteLock:
    """A re-entrant thread lock plus, for a file database, an exclusive flock on a side file
    (held only while the outermost holder is inside)."""

    def __init__(self, path: str | None) -> None:
        self._thread = threading.RLock()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600) if path else None
        self._depth = 0

    def __enter__(self) -> None:
        self._thread.acquire()
        self._depth += 1
        if self._depth == 1 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread.release()


@contextmanager
def _translate() -> Iterator[None]:
    try:
        yield
    except IntegrityError as exc:
        raise Temporary(f"concurrent change, retry: {exc.orig}", retry_after=0.01) from exc
    except DBAPIError as exc:
        raise StoreUnavailable(f"database error: {exc.orig}") from exc
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"database error: {exc}") from exc


class SqlStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sqlite = self.engine.dialect.name == "sqlite"
        self.characteristics = StoreCharacteristics(distributed=not self.sqlite, durable=True)
        self.owner: str | None = None  # the controller whose deliveries enqueue() creates
        # SQLite has one writer. Writers queue on a thread lock, then on a kernel file lock
        # shared by every process of this database: SQLite's own busy handler would poll with
        # sleeps of up to 100 ms instead.
        self._write_lock: AbstractContextManager[Any] | None = None
        if self.sqlite:
            path = self.engine.url.database
            self._write_lock = _WriteLock(f"{path}.writelock" if path else None)

    # -- schema -------------------------------------------------------------------------
    def check_schema(self) -> None:
        with _translate():
            schema.check(self.engine)

    def upgrade(self) -> tuple[str | None, str]:
        with _translate():
            return schema.upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()
        if isinstance(self._write_lock, _WriteLock):
            self._write_lock.close()

    # -- helpers ------------------------------------------------------------------------
    def _w(self, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if self.sqlite else value

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        lock: AbstractContextManager[Any] = self._write_lock or nullcontext()
        with lock, _translate(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with _translate(), self.engine.connect() as conn:
            yield conn

    # -- alarms -------------------------------------------------------------------------
    @contextmanager
    def unit_of_work(self) -> Iterator[_UnitOfWork]:
        with self._write() as conn:
            yield _UnitOfWork(self, conn)

    def get_alarm(self, alarm_id: str) -> Alarm:
        with self._read() as conn:
            row = conn.execute(select(alarms).where(alarms.c.id == alarm_id)).mappings().first()
        if row is None:
            raise NotFound(f"alarm {alarm_id} not found")
        return _alarm(row)

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
                yield row["seq"], _alarm(row)
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
        return [_alarm(r) for r in rows]

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
        return [_alarm(r) for r in rows]

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
                _r(r["at"]),
                r["perceived_severity"],
                r["ack_state"],
                r["reason"],
            )
            for r in rows
        ]

    # -- subscriptions ------------------------------------------------------------------
    def add_subscription(self, sub: Subscription) -> Subscription:
        key = _sub_dedup(sub)
        with self._write() as conn:
            row = (
                conn.execute(select(subscriptions).where(subscriptions.c.dedup == key))
                .mappings()
                .first()
            )
            if row is not None:
                return _subscription(row)
            conn.execute(
                insert(subscriptions).values(
                    id=sub.id,
                    callback_uri=sub.callback_uri,
                    dedup=key,
                    filter=sub.filter.to_dict(),
                    authentication=_auth_dict(sub.authentication),
                    created_at=self._w(sub.created_at),
                )
            )
            _subscriptions_changed(conn)
        return sub

    def get_subscription(self, sub_id: str) -> Subscription:
        with self._read() as conn:
            row = (
                conn.execute(select(subscriptions).where(subscriptions.c.id == sub_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"subscription {sub_id} not found")
        return _subscription(row)

    def list_subscriptions(self) -> list[Subscription]:
        with self._read() as conn:
            rows = (
                conn.execute(
                    select(subscriptions).order_by(subscriptions.c.created_at, subscriptions.c.id)
                )
                .mappings()
                .all()
            )
        return [_subscription(r) for r in rows]

    def delete_subscription(self, sub_id: str) -> None:
        with self._write() as conn:
            mine = select(deliveries.c.seq).where(deliveries.c.subscription_id == sub_id)
            conn.execute(
                delete(delivery_attempts).where(delivery_attempts.c.delivery_seq.in_(mine))
            )
            conn.execute(delete(deliveries).where(deliveries.c.subscription_id == sub_id))
            result = conn.execute(delete(subscriptions).where(subscriptions.c.id == sub_id))
            if result.rowcount == 0:
                raise NotFound(f"subscription {sub_id} not found")
            _subscriptions_changed(conn)

    # -- deliveries ---------------------------------------------------------------------
    def pending_deliveries(
        self,
        limit: int,
        subscription_id: str | None = None,
        after_seq: int = 0,
        owner: str | None = None,
    ) -> list[DeliveryJob]:
        stmt = _PENDING.where(deliveries.c.seq > after_seq).limit(limit)
        if subscription_id is not None:
            stmt = stmt.where(deliveries.c.subscription_id == subscription_id)
        if owner is not None:
            stmt = stmt.where(deliveries.c.owner == owner)
        with self._read() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [_job(r) for r in rows]

    def pending_owners(self) -> set[str | None]:
        stmt = (
            select(deliveries.c.owner)
            .where(deliveries.c.status == DeliveryStatus.PENDING.value)
            .distinct()
        )
        with self._read() as conn:
            return {r[0] for r in conn.execute(stmt)}

    def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        with self.unit_of_work() as uow:
            uow.record_attempts(records)

    def iter_deliveries(self, after_seq: int, batch: int) -> Iterator[DeliveryRecord]:
        while True:
            stmt = (
                select(deliveries, notifications.c.notification_type, notifications.c.payload)
                .join(notifications, notifications.c.seq == deliveries.c.notification_seq)
                .where(deliveries.c.seq > after_seq)
                .order_by(deliveries.c.seq)
                .limit(batch)
            )
            with self._read() as conn:
                rows = conn.execute(stmt).mappings().all()
            for row in rows:
                yield _delivery(row, ())
            if len(rows) < batch:
                return
            after_seq = rows[-1]["seq"]

    def get_delivery(self, delivery_id: str) -> DeliveryRecord:
        stmt = (
            select(deliveries, notifications.c.notification_type, notifications.c.payload)
            .join(notifications, notifications.c.seq == deliveries.c.notification_seq)
            .where(deliveries.c.id == delivery_id)
        )
        with self._read() as conn:
            row = conn.execute(stmt).mappings().first()
            if row is None:
                raise NotFound(f"notification {delivery_id} not found")
            tries = (
                conn.execute(
                    select(delivery_attempts)
                    .where(delivery_attempts.c.delivery_seq == row["seq"])
                    .order_by(delivery_attempts.c.seq)
                )
                .mappings()
                .all()
            )
        attempts = [Attempt(_r(t["at"]), t["duration_ms"], t["ok"], t["detail"]) for t in tries]
        if row["delivered_at"] is not None:
            attempts.append(
                Attempt(_r(row["delivered_at"]), row["last_duration_ms"] or 0.0, True, "delivered")
            )
        return _delivery(row, tuple(attempts))

    # -- settings -----------------------------------------------------------------------
    # -- fencing ------------------------------------------------------------------------
    def add_fence_record(self, record: FenceRecord) -> FenceRecord:
        with self._write() as conn:
            seq = conn.execute(
                insert(fence_records)
                .values(
                    host=record.host,
                    failure_kind=record.failure_kind,
                    started_at=self._w(record.started_at),
                    finished_at=self._w(record.finished_at),
                    result=record.result,
                    detail=record.detail,
                )
                .returning(fence_records.c.seq)
            ).scalar_one()
        return dataclasses.replace(record, seq=int(seq))

    def fence_records(self, host: str | None = None, limit: int = 100) -> list[FenceRecord]:
        query = select(fence_records).order_by(fence_records.c.seq.desc()).limit(limit)
        if host is not None:
            query = query.where(fence_records.c.host == host)
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            FenceRecord(
                host=r["host"],
                failure_kind=r["failure_kind"],
                started_at=_r(r["started_at"]),
                finished_at=_r(r["finished_at"]),
                result=r["result"],
                detail=r["detail"],
                seq=r["seq"],
            )
            for r in rows
        ]

    # -- hosts declared through the API -----------------------------------------------------
    def add_host(self, name: str, spec: dict[str, Any], now: datetime) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    insert(hosts).values(
                        name=name, spec=spec, created_at=self._w(now), updated_at=self._w(now)
                    )
                )
        except Temporary:  # the primary key: a host of that name exists
            raise Conflict(f"host {name} already exists") from None

    def replace_host(self, name: str, spec: dict[str, Any], now: datetime) -> None:
        with self._write() as conn:
            done = conn.execute(
                sql_update(hosts)
                .where(hosts.c.name == name)
                .values(spec=spec, updated_at=self._w(now))
            ).rowcount
        if not done:
            raise NotFound(f"host {name} not found")

    def delete_host(self, name: str) -> None:
        with self._write() as conn:
            done = conn.execute(delete(hosts).where(hosts.c.name == name)).rowcount
        if not done:
            raise NotFound(f"host {name} not found")

    def list_hosts(self) -> dict[str, dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(select(hosts.c.name, hosts.c.spec).order_by(hosts.c.name)).all()
        return {name: dict(spec) for name, spec in rows}

    # -- services declared through the API --------------------------------------------------
    def add_service(self, host: str, name: str, spec: dict[str, Any], now: datetime) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    insert(services).values(
                        host=host,
                        name=name,
                        spec=spec,
                        created_at=self._w(now),
                        updated_at=self._w(now),
                    )
                )
        except Temporary:  # the primary key
            raise Conflict(f"service {name} of host {host} already exists") from None

    def replace_service(self, host: str, name: str, spec: dict[str, Any], now: datetime) -> None:
        mine = and_(services.c.host == host, services.c.name == name)
        with self._write() as conn:
            done = conn.execute(
                sql_update(services).where(mine).values(spec=spec, updated_at=self._w(now))
            ).rowcount
        if not done:
            raise NotFound(f"service {name} of host {host} not found")

    def delete_service(self, host: str, name: str) -> None:
        mine = and_(services.c.host == host, services.c.name == name)
        with self._write() as conn:
            done = conn.execute(delete(services).where(mine)).rowcount
        if not done:
            raise NotFound(f"service {name} of host {host} not found")

    def list_services(self, host: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
        query = select(services.c.host, services.c.name, services.c.spec).order_by(
            services.c.host, services.c.name
        )
        if host is not None:
            query = query.where(services.c.host == host)
        with self._read() as conn:
            return [(h, n, dict(spec)) for h, n, spec in conn.execute(query).all()]

    def get_setting(self, key: str) -> Any | None:
        with self._read() as conn:
            return conn.execute(select(settings.c.value).where(settings.c.key == key)).scalar()

    def put_setting(self, key: str, value: Any) -> None:
        with self._write() as conn:
            conn.execute(delete(settings).where(settings.c.key == key))
            conn.execute(insert(settings).values(key=key, value=value))

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
            with lock, _translate(), self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            with _translate(), self.engine.connect() as conn:
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


# Constant statements, parameters passed at execution: compiled once, cached by SQLAlchemy.
# Written as the partial index's own predicate (`active`), so that the planner uses it; with
# `active IS 1` SQLite walks every active alarm instead.
_ACTIVE_BY_KEYS = select(alarms).where(
    text("alarms.active"), alarms.c.dedup_key.in_(bindparam("keys", expanding=True))
)
_ALARM_BY_ID = select(alarms).where(alarms.c.id == bindparam("b_id"))
_INSERT_ALARM = insert(alarms)
_UPDATE_ALARM = sql_update(alarms).where(alarms.c.id == bindparam("b_id"))
_INSERT_HISTORY = insert(alarm_history)
_INSERT_NOTIFICATION = insert(notifications).returning(notifications.c.seq)
_INSERT_DELIVERY = insert(deliveries)
_RECORD_ATTEMPT = (
    sql_update(deliveries)
    .where(deliveries.c.seq == bindparam("b_seq"))
    .values(
        status=bindparam("b_status"),
        attempts=deliveries.c.attempts + 1,
        next_attempt_at=bindparam("b_next"),
        delivered_at=bindparam("b_delivered"),
        last_duration_ms=bindparam("b_ms"),
    )
)
SUBSCRIPTIONS_TOKEN = "subscriptions.changed"
_PENDING = (
    select(
        deliveries.c.seq,
        deliveries.c.id,
        deliveries.c.subscription_id,
        deliveries.c.attempts,
        notifications.c.notification_type,
        notifications.c.payload,
        notifications.c.created_at,
    )
    .join(notifications, notifications.c.seq == deliveries.c.notification_seq)
    .where(deliveries.c.status == DeliveryStatus.PENDING.value)
    .order_by(deliveries.c.seq)
)


def _job(r: Any) -> DeliveryJob:
    return DeliveryJob(
        r["seq"],
        r["id"],
        r["subscription_id"],
        NotificationType(r["notification_type"]),
        r["payload"],
        _r(r["created_at"]),
        r["attempts"],
    )


_DELIVERIES_OF = (
    select(deliveries.c.seq, deliveries.c.id)
    .where(deliveries.c.notification_seq == bindparam("b_seq"))
    .order_by(deliveries.c.seq)
)


def _subscriptions_changed(conn: Connection) -> None:
    """A new token with every change of the subscriptions, in the same transaction: any
    controller's next unit of work sees it and reloads its cache before matching."""
    conn.execute(delete(settings).where(settings.c.key == SUBSCRIPTIONS_TOKEN))
    conn.execute(insert(settings).values(key=SUBSCRIPTIONS_TOKEN, value=uuid.uuid4().hex))


class _UnitOfWork:
    def __init__(self, store: SqlStore, conn: Connection) -> None:
        self._store = store
        self._conn = conn
        self._lock_rows = not store.sqlite  # SQLite: the write lock already serialises

    def subscriptions_token(self) -> str | None:
        token = self._conn.execute(
            select(settings.c.value).where(settings.c.key == SUBSCRIPTIONS_TOKEN)
        ).scalar()
        return None if token is None else str(token)

    def active_alarms(self, keys: Sequence[str]) -> dict[str, Alarm]:
        if not keys:
            return {}
        stmt = _ACTIVE_BY_KEYS.with_for_update() if self._lock_rows else _ACTIVE_BY_KEYS
        rows = self._conn.execute(stmt, {"keys": sorted(set(keys))}).mappings().all()
        return {r["dedup_key"]: _alarm(r) for r in rows}

    def alarm_for_update(self, alarm_id: str) -> Alarm:
        stmt = _ALARM_BY_ID.with_for_update() if self._lock_rows else _ALARM_BY_ID
        row = self._conn.execute(stmt, {"b_id": alarm_id}).mappings().first()
        if row is None:
            raise NotFound(f"alarm {alarm_id} not found")
        return _alarm(row)

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
            self._conn.execute(_INSERT_ALARM, {"id": a.id, **values})
        else:
            self._conn.execute(_UPDATE_ALARM, {"b_id": a.id, **values})
        if change.kind is not ChangeKind.REPEATED:
            self._conn.execute(
                _INSERT_HISTORY,
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
            _RECORD_ATTEMPT,
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
            _INSERT_NOTIFICATION,
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
            _INSERT_DELIVERY,
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
        rows = self._conn.execute(_DELIVERIES_OF, {"b_seq": seq}).all()
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
        rows = self._conn.execute(_PENDING.where(deliveries.c.seq.in_(seqs))).mappings().all()
        return [_job(r) for r in rows]


# -- row mapping --------------------------------------------------------------------------
def _r(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ro(value: datetime | None) -> datetime | None:
    return None if value is None else _r(value)


def _alarm(row: Any) -> Alarm:
    return Alarm(
        id=row["id"],
        managed_object_id=row["managed_object_id"],
        vim_connection_id=row["vim_connection_id"],
        resource_id=row["resource_id"],
        vim_level_resource_type=row["vim_level_resource_type"],
        faulty_resource_type=FaultyResourceType(row["faulty_resource_type"]),
        alarm_raised_time=_r(row["raised_time"]),
        alarm_changed_time=_ro(row["changed_time"]),
        alarm_cleared_time=_ro(row["cleared_time"]),
        alarm_acknowledged_time=_ro(row["acknowledged_time"]),
        ack_state=AckState(row["ack_state"]),
        perceived_severity=Severity(row["perceived_severity"]),
        peak_severity=Severity(row["peak_severity"]),
        event_time=_r(row["event_time"]),
        event_type=EventType(row["event_type"]),
        fault_type=row["fault_type"],
        probable_cause=row["probable_cause"],
        is_root_cause=bool(row["is_root_cause"]),
        correlated_alarm_ids=tuple(row["correlated_alarm_ids"]),
        fault_details=tuple(row["fault_details"]),
        location=Location(tuple((str(k), str(v)) for k, v in row["location"])),
        version=row["version"],
    )


def _auth_dict(a: Authentication | None) -> dict[str, Any] | None:
    if a is None:
        return None
    return {
        "authType": a.auth_type.value,
        "userName": a.user_name,
        "password": a.password,
        "clientId": a.client_id,
        "clientPassword": a.client_password,
        "tokenEndpoint": a.token_endpoint,
    }


def _sub_dedup(sub: Subscription) -> str:

    return json.dumps([sub.callback_uri, list(sub.filter.canonical())], sort_keys=True)


def _subscription(row: Any) -> Subscription:
    f = row["filter"]
    a = row["authentication"]
    return Subscription(
        id=row["id"],
        callback_uri=row["callback_uri"],
        filter=SubscriptionFilter.from_dict(f),
        authentication=None
        if a is None
        else Authentication(
            AuthType(a["authType"]),
            a["userName"],
            a["password"],
            a["clientId"],
            a["clientPassword"],
            a["tokenEndpoint"],
        ),
        created_at=_r(row["created_at"]),
    )


def _delivery(row: Any, attempts: tuple[Attempt, ...]) -> DeliveryRecord:
    return DeliveryRecord(
        seq=row["seq"],
        id=row["id"],
        subscription_id=row["subscription_id"],
        notification_type=row["notification_type"],
        status=DeliveryStatus(row["status"]),
        created_at=_r(row["created_at"]),
        delivered_at=_ro(row["delivered_at"]),
        attempt_count=row["attempts"],
        attempts=attempts,
        payload=row["payload"],
    )
