"""Notification dispatch: at-least-once, in order per subscriber, isolated per subscriber.

Each subscriber has a lane: a queue and one task that sends one notification at a time,
retrying the head of the queue with backoff until it is delivered or expires, so order is
kept and a slow or dead consumer delays nobody else. Outcomes are written back in batches
(`flush_interval`); a crash before a write-back means a resend, never a loss. A lane holds
at most `lane_memory` jobs; beyond that it spills and re-reads from the store when drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from vimha.domain import notifications
from vimha.domain.clock import Clock
from vimha.domain.delivery import DeliveryStatus, RetryPolicy, after_attempt
from vimha.domain.errors import DeliveryFailed, VimhaError
from vimha.engine import metrics
from vimha.engine.faults import SubscriptionCache
from vimha.ports.notifier import Notifier
from vimha.ports.store import Attempt, AttemptRecord, DeliveryJob, Store

log = logging.getLogger("vimha.dispatch")
_OK = metrics.DELIVERIES.labels("ok")
_FAILED = metrics.DELIVERIES.labels("failed")
FLUSH_BATCH = 1000


@dataclass(slots=True)
class Lane:
    subscription_id: str
    queue: deque[DeliveryJob] = field(default_factory=deque)
    last_seq: int = 0
    spilled: bool = False
    attempts: dict[int, int] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


class Dispatcher:
    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        subscriptions: SubscriptionCache,
        clock: Clock,
        policy: RetryPolicy,
        base_url: str,
        flush_interval: float = 0.05,
        lane_memory: int = 10000,
        rand: Callable[[], float] = random.random,
        record: Callable[[list[AttemptRecord]], Awaitable[None]] | None = None,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.subscriptions = subscriptions
        self.clock = clock
        self.policy = policy
        self.base_url = base_url
        self.flush_interval = flush_interval
        self.lane_memory = lane_memory
        self.rand = rand
        self.owner = owner  # deliver only this controller's jobs (None: every pending job)
        self._record = record or self._record_in_thread
        self.lanes: dict[str, Lane] = {}
        self._records: list[AttemptRecord] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_now = asyncio.Event()
        self._stopping = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        # Until the backlog is loaded from the store, submissions wait here: accepting a newer
        # job first would make the lane skip the older, stored ones.
        self._held: list[DeliveryJob] | None = []
        self.ready = asyncio.Event()
        self._json_cache: dict[int, tuple[dict[str, Any], tuple[str, str, str]]] = {}

    # -- intake -------------------------------------------------------------------------
    def submit(self, jobs: Sequence[DeliveryJob]) -> None:
        """Hand over stored jobs; safe to call from any thread."""
        if not jobs:
            return
        loop = self._loop
        if loop is None:
            return  # not running: the jobs are in the store and are loaded at start
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._accept(jobs)
        else:
            loop.call_soon_threadsafe(self._accept, list(jobs))

    def adopt(self, jobs: Sequence[DeliveryJob]) -> None:
        """Take over stored jobs of a controller that is gone (any thread): they are older
        than some of ours, so each goes to its place by seq in its lane."""
        if jobs and self._loop is not None:
            self._loop.call_soon_threadsafe(self._adopt, list(jobs))

    def _adopt(self, jobs: list[DeliveryJob]) -> None:
        if self._held is not None:
            self._held.extend(jobs)  # sorted with the backlog when it is loaded
            return
        by_lane: dict[str, list[DeliveryJob]] = {}
        for job in jobs:
            by_lane.setdefault(job.subscription_id, []).append(job)
        for sub_id, mine in by_lane.items():
            lane = self.lanes.get(sub_id)
            if lane is None:
                lane = self.lanes[sub_id] = Lane(sub_id)
            running = lane.task is not None and not lane.task.done()
            head = [lane.queue.popleft()] if running and lane.queue else []  # in flight
            known = {j.seq for j in lane.queue} | {j.seq for j in head}
            merged = sorted(
                [*lane.queue, *(j for j in mine if j.seq not in known)], key=lambda j: j.seq
            )
            lane.queue = deque(head + merged)
            lane.last_seq = max(lane.last_seq, *(j.seq for j in mine))
            for job in mine:
                if job.attempts:
                    lane.attempts[job.seq] = job.attempts
            if not running:
                lane.task = asyncio.get_running_loop().create_task(self._run_lane(lane))
        metrics.PENDING.set(sum(len(x.queue) for x in self.lanes.values()))

    def _accept(self, jobs: Sequence[DeliveryJob]) -> None:
        if self._held is not None:
            self._held.extend(jobs)
            return
        for job in jobs:
            lane = self.lanes.get(job.subscription_id)
            if lane is None:
                lane = self.lanes[job.subscription_id] = Lane(job.subscription_id)
            if job.seq <= lane.last_seq:
                continue  # already held (loaded at start and submitted again)
            if lane.spilled or len(lane.queue) >= self.lane_memory:
                lane.spilled = True
                continue
            lane.queue.append(job)
            lane.last_seq = job.seq
            if job.attempts:
                lane.attempts[job.seq] = job.attempts
            if lane.task is None or lane.task.done():
                lane.task = asyncio.get_running_loop().create_task(self._run_lane(lane))
        metrics.PENDING.set(sum(len(x.queue) for x in self.lanes.values()))

    # -- lifecycle ----------------------------------------------------------------------
    async def run(self) -> None:
        """Load what the store holds pending, then keep writing outcomes back until stop()."""
        self._loop = asyncio.get_running_loop()
        after = 0
        backlog: list[DeliveryJob] = []
        while True:
            jobs = await asyncio.to_thread(
                self.store.pending_deliveries, 5000, None, after, self.owner
            )
            backlog += jobs
            if len(jobs) < 5000:
                break
            after = jobs[-1].seq
        held, self._held = self._held or [], None
        self._accept(sorted({j.seq: j for j in backlog + held}.values(), key=lambda j: j.seq))
        self.ready.set()
        log.info(
            "dispatcher started with %d pending notifications",
            sum(len(x.queue) for x in self.lanes.values()),
        )
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), self.flush_interval)
            self._flush_now.clear()
            await self.flush()

    async def stop(self) -> None:
        self._stopping.set()
        tasks = [lane.task for lane in self.lanes.values() if lane.task and not lane.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.flush()

    async def flush(self) -> None:
        """Write outcomes back. Serialised: a later batch never lands before an earlier one."""
        async with self._flush_lock:
            if not self._records:
                return
            batch, self._records = self._records, []
            try:
                await self._record(batch)
            except VimhaError as exc:
                log.warning(
                    "could not record %d delivery outcomes, will retry: %s", len(batch), exc
                )
                self._records = batch + self._records

    async def _record_in_thread(self, batch: list[AttemptRecord]) -> None:
        await asyncio.to_thread(self.store.record_attempts, batch)

    def idle(self) -> bool:
        return not self._records and all(not lane.queue for lane in self.lanes.values())

    # -- one subscriber -----------------------------------------------------------------
    async def _run_lane(self, lane: Lane) -> None:
        while True:
            if not lane.queue:
                if not lane.spilled:
                    return
                await self._refill(lane)
                if not lane.queue:
                    return
            job = lane.queue[0]
            sub = self.subscriptions.get(job.subscription_id)
            if sub is None:
                log.info("subscription %s is gone; dropping its lane", job.subscription_id)
                lane.queue.clear()
                lane.spilled = False
                return
            body = notifications.body_bytes(
                job.id,
                job.subscription_id,
                job.notification_type,
                self._serialised(job),
                self.base_url,
            )
            started = self.clock.monotonic()
            try:
                await self.notifier.post(sub.callback_uri, body, sub.authentication)
                ok, detail = True, "delivered"
            except DeliveryFailed as exc:
                ok, detail = False, exc.detail
            now = self.clock.now()
            elapsed_ms = (self.clock.monotonic() - started) * 1000
            attempts = lane.attempts.pop(job.seq, job.attempts) + 1
            outcome = after_attempt(
                ok, detail, attempts, job.created_at, now, self.policy, self.rand()
            )
            next_at = now + timedelta(seconds=outcome.retry_in) if outcome.retry_in else None
            attempt = Attempt(now, elapsed_ms, ok, detail)
            self._records.append(AttemptRecord(job.seq, attempt, outcome.status, next_at))
            if len(self._records) >= FLUSH_BATCH:
                self._flush_now.set()
            (_OK if ok else _FAILED).inc()
            if ok:
                metrics.DELIVERY_LATENCY.observe((now - job.created_at).total_seconds())
            if outcome.status is DeliveryStatus.PENDING:
                lane.attempts[job.seq] = attempts
                log.info("notification %s to %s: %s", job.id, sub.callback_uri, outcome.reason)
                assert outcome.retry_in is not None
                await asyncio.sleep(outcome.retry_in)
                continue
            if outcome.status is DeliveryStatus.EXPIRED:
                log.warning("notification %s to %s: %s", job.id, sub.callback_uri, outcome.reason)
            lane.queue.popleft()

    def _serialised(self, job: DeliveryJob) -> tuple[str, str, str]:
        """The payload serialised once for all its subscribers (jobs share the dict)."""
        key = id(job.payload)
        hit = self._json_cache.get(key)
        if hit is not None and hit[0] is job.payload:
            return hit[1]
        value = notifications.payload_json(job.payload, job.created_at)
        if len(self._json_cache) >= 4096:
            self._json_cache.clear()
        self._json_cache[key] = (job.payload, value)
        return value

    async def _refill(self, lane: Lane) -> None:
        jobs = await asyncio.to_thread(
            self.store.pending_deliveries,
            self.lane_memory,
            lane.subscription_id,
            lane.last_seq,
            self.owner,
        )
        lane.spilled = len(jobs) >= self.lane_memory
        for job in jobs:
            lane.queue.append(job)
            lane.last_seq = job.seq
            if job.attempts:
                lane.attempts[job.seq] = job.attempts
