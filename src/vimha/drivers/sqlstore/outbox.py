"""Subscriptions, the notifications stored for them and their deliveries (the outbox): the
reads and writes outside a unit of work, the statements a unit of work uses, and the row
mapping."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy import update as sql_update
from sqlalchemy.engine import Connection

from vimha.domain.delivery import DeliveryStatus
from vimha.domain.errors import NotFound
from vimha.domain.subscriptions import (
    Authentication,
    AuthType,
    NotificationType,
    Subscription,
    SubscriptionFilter,
)
from vimha.drivers.sqlstore.base import SqlBase, utc, utc_or_none
from vimha.drivers.sqlstore.tables import (
    deliveries,
    delivery_attempts,
    notifications,
    settings,
    subscriptions,
)
from vimha.ports.store import Attempt, DeliveryJob, DeliveryRecord

INSERT_NOTIFICATION = insert(notifications).returning(notifications.c.seq)
INSERT_DELIVERY = insert(deliveries)
RECORD_ATTEMPT = (
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
PENDING = (
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


def job_of(r: Any) -> DeliveryJob:
    return DeliveryJob(
        r["seq"],
        r["id"],
        r["subscription_id"],
        NotificationType(r["notification_type"]),
        r["payload"],
        utc(r["created_at"]),
        r["attempts"],
    )


DELIVERIES_OF = (
    select(deliveries.c.seq, deliveries.c.id)
    .where(deliveries.c.notification_seq == bindparam("b_seq"))
    .order_by(deliveries.c.seq)
)


def subscriptions_changed(conn: Connection) -> None:
    """A new token with every change of the subscriptions, in the same transaction: any
    controller's next unit of work sees it and reloads its cache before matching."""
    conn.execute(delete(settings).where(settings.c.key == SUBSCRIPTIONS_TOKEN))
    conn.execute(insert(settings).values(key=SUBSCRIPTIONS_TOKEN, value=uuid.uuid4().hex))


class Outbox(SqlBase):
    """Subscriptions, and the deliveries read outside a unit of work."""

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
                return subscription_of(row)
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
            subscriptions_changed(conn)
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
        return subscription_of(row)

    def list_subscriptions(self) -> list[Subscription]:
        with self._read() as conn:
            rows = (
                conn.execute(
                    select(subscriptions).order_by(subscriptions.c.created_at, subscriptions.c.id)
                )
                .mappings()
                .all()
            )
        return [subscription_of(r) for r in rows]

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
            subscriptions_changed(conn)

    # -- deliveries ---------------------------------------------------------------------
    def pending_deliveries(
        self,
        limit: int,
        subscription_id: str | None = None,
        after_seq: int = 0,
        owner: str | None = None,
    ) -> list[DeliveryJob]:
        stmt = PENDING.where(deliveries.c.seq > after_seq).limit(limit)
        if subscription_id is not None:
            stmt = stmt.where(deliveries.c.subscription_id == subscription_id)
        if owner is not None:
            stmt = stmt.where(deliveries.c.owner == owner)
        with self._read() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [job_of(r) for r in rows]

    def pending_owners(self) -> set[str | None]:
        stmt = (
            select(deliveries.c.owner)
            .where(deliveries.c.status == DeliveryStatus.PENDING.value)
            .distinct()
        )
        with self._read() as conn:
            return {r[0] for r in conn.execute(stmt)}

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
                yield delivery_of(row, ())
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
        attempts = [Attempt(utc(t["at"]), t["duration_ms"], t["ok"], t["detail"]) for t in tries]
        if row["delivered_at"] is not None:
            attempts.append(
                Attempt(utc(row["delivered_at"]), row["last_duration_ms"] or 0.0, True, "delivered")
            )
        return delivery_of(row, tuple(attempts))


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


def subscription_of(row: Any) -> Subscription:
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
        created_at=utc(row["created_at"]),
    )


def delivery_of(row: Any, attempts: tuple[Attempt, ...]) -> DeliveryRecord:
    return DeliveryRecord(
        seq=row["seq"],
        id=row["id"],
        subscription_id=row["subscription_id"],
        notification_type=row["notification_type"],
        status=DeliveryStatus(row["status"]),
        created_at=utc(row["created_at"]),
        delivered_at=utc_or_none(row["delivered_at"]),
        attempt_count=row["attempts"],
        attempts=attempts,
        payload=row["payload"],
    )
