"""The fault-management service: events in, alarms and stored notifications out.

Synchronous (the API calls it from worker threads); each call is one unit of work in the
store, so an alarm change and the notifications it causes are stored together or not at all.
After the commit, the new deliveries are handed to the dispatcher (`on_enqueued`), by the
store writer's thread in commit order: the dispatcher takes a subscriber's jobs in sequence
order and skips one older than what it already holds (the callers, woken in any order after
a group commit, once handed a later job first and an event's notification was never sent).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from vimha.domain import notifications
from vimha.domain.alarms import AckState, Alarm, AlarmChange, FaultEvent, apply_ack, apply_event
from vimha.domain.clock import Clock
from vimha.domain.errors import PreconditionFailed
from vimha.domain.subscriptions import NotificationType, Subject, Subscription, matches
from vimha.engine.writer import StoreWriter
from vimha.ports.store import DeliveryJob, Store, UnitOfWork

log = logging.getLogger("vimha.faults")
T = TypeVar("T")


class SubscriptionCache:
    """The subscriptions in memory, for matching each notification without a query."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._subs: dict[str, Subscription] = {}
        self.token: str | None = None  # of the subscriptions last loaded
        # Called with ("put", Subscription), ("drop", id) or ("reload", None) on changes.
        self.listeners: list[Callable[[str, Any], None]] = []

    def refresh(self, token: str | None) -> None:
        """Reload if the subscriptions changed (through any controller) since we last did:
        called inside each unit of work that matches, so that a subscription created
        through another controller is matched by the very next event."""
        if token != self.token:
            self.reload()
            self.token = token

    def reload(self) -> None:
        subs = {s.id: s for s in self._store.list_subscriptions()}
        with self._lock:
            self._subs = subs
        for listener in self.listeners:
            listener("reload", None)

    def put(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = {**self._subs, sub.id: sub}
        for listener in self.listeners:
            listener("put", sub)

    def drop(self, sub_id: str) -> None:
        with self._lock:
            self._subs = {k: v for k, v in self._subs.items() if k != sub_id}
        for listener in self.listeners:
            listener("drop", sub_id)

    def get(self, sub_id: str) -> Subscription | None:
        return self._subs.get(sub_id)

    def matching(self, subject: Subject) -> list[str]:
        return [s.id for s in self._subs.values() if matches(s.filter, subject)]

    def all(self) -> list[Subscription]:
        return list(self._subs.values())


class FaultService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        subscriptions: SubscriptionCache,
        vim_connection_id: str,
        base_url: str,
        on_enqueued: Callable[[list[DeliveryJob]], None],
        writer: StoreWriter | None = None,
    ) -> None:
        self.store = store
        self.writer = writer or StoreWriter(store, subscriptions.reload)
        self.clock = clock
        self.subscriptions = subscriptions
        self.vim_connection_id = vim_connection_id
        self.base_url = base_url
        self.on_enqueued = on_enqueued

    def ingest(self, events: Sequence[FaultEvent]) -> list[AlarmChange]:
        """Apply a batch of events atomically; returns the changes (REPEATED included)."""
        changes, _ = self.writer.call(lambda uow: self._ingest(uow, events), self._hand_over)
        return self._after_ingest(changes)

    async def ingest_async(self, events: Sequence[FaultEvent]) -> list[AlarmChange]:
        """The same, awaiting the commit without blocking the event loop."""
        changes, _ = await self.writer.acall(lambda uow: self._ingest(uow, events), self._hand_over)
        return self._after_ingest(changes)

    def ingest_in(
        self, uow: UnitOfWork, events: Sequence[FaultEvent]
    ) -> tuple[list[AlarmChange], list[DeliveryJob]]:
        """Apply events inside the caller's unit of work: the alarms commit with its other
        changes (an instance's state and the alarm on its failure, together). The caller
        hands the jobs on once committed."""
        return self._ingest(uow, events)

    def notify_in(
        self,
        uow: UnitOfWork,
        kind: NotificationType,
        payload: dict[str, Any],
        subject: Subject,
        object_id: str,
    ) -> list[DeliveryJob]:
        """Store a notification inside the caller's unit of work."""
        self.subscriptions.refresh(uow.subscriptions_token())
        return self._enqueue(uow, kind, payload, subject, object_id)

    def _hand_over(self, result: tuple[list[AlarmChange], list[DeliveryJob]]) -> None:
        self.on_enqueued(result[1])

    def _after_ingest(self, changes: list[AlarmChange]) -> list[AlarmChange]:
        if log.isEnabledFor(logging.INFO):
            for change in changes:
                log.info("alarm %s: %s", change.alarm.id, change.reason)
        return changes

    def _ingest(
        self, uow: UnitOfWork, events: Sequence[FaultEvent]
    ) -> tuple[list[AlarmChange], list[DeliveryJob]]:
        now = self.clock.now()
        self.subscriptions.refresh(uow.subscriptions_token())
        active = uow.active_alarms([e.dedup_key for e in events])
        changes: list[AlarmChange] = []
        jobs: list[DeliveryJob] = []
        for event in events:
            change = apply_event(
                active.get(event.dedup_key), event, now, str(uuid.uuid4()), self.vim_connection_id
            )
            if change is None:
                continue
            uow.save(change, now)
            if change.alarm.active:
                active[event.dedup_key] = change.alarm
            else:
                active.pop(event.dedup_key, None)
            changes.append(change)
            if change.notifies:
                kind, payload, subject = notifications.for_change(change, self.base_url)
                jobs += self._enqueue(uow, kind, payload, subject, change.alarm.managed_object_id)
        return changes, jobs

    def acknowledge(self, alarm_id: str, ack_state: AckState, if_match: str | None) -> Alarm:
        """Raises NotFound, Conflict (already in that state), PreconditionFailed (ETag)."""

        def work(uow: UnitOfWork) -> tuple[AlarmChange, list[DeliveryJob]]:
            alarm = uow.alarm_for_update(alarm_id)
            if if_match is not None and if_match.strip() not in (alarm.etag, "*"):
                raise PreconditionFailed(
                    f"If-Match {if_match} does not match the alarm's ETag {alarm.etag}"
                )
            change = apply_ack(alarm, ack_state, self.clock.now())
            uow.save(change, self.clock.now())
            return change, []

        change, _ = self._retry(work)
        log.info("alarm %s: %s", alarm_id, change.reason)
        return change.alarm

    def publish(
        self, kind: NotificationType, payload: dict[str, Any], subject: Subject, object_id: str
    ) -> list[DeliveryJob]:
        """Store and dispatch a notification that is not about an alarm change."""

        def work(uow: UnitOfWork) -> list[DeliveryJob]:
            self.subscriptions.refresh(uow.subscriptions_token())
            return self._enqueue(uow, kind, payload, subject, object_id)

        return self.writer.call(work, self.on_enqueued)

    def announce_alarm_list_rebuilt(self) -> list[DeliveryJob]:
        kind, payload, subject = notifications.alarm_list_rebuilt(self.base_url)
        return self.publish(kind, payload, subject, "")

    def _enqueue(
        self,
        uow: UnitOfWork,
        kind: NotificationType,
        payload: dict[str, Any],
        subject: Subject,
        object_id: str,
    ) -> list[DeliveryJob]:
        targets = self.subscriptions.matching(subject)
        return uow.enqueue(kind, payload, targets, self.clock.now(), object_id)

    def _retry(self, work: Callable[[UnitOfWork], T]) -> T:
        return self.writer.call(work)
