"""Several controllers: each announces itself under a lease, and the holder of the singleton
role adopts the pending notifications of a controller that is gone (killed mid-work, host
down), so nothing it had to deliver is lost (decisions in `domain/delivery.py: orphaned`).

A controller delivers what it stored itself (lowest latency: no hand-over), resumes its own
backlog when restarted under the same name, and the others' only through adoption.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from vimha.domain.clock import Clock
from vimha.domain.delivery import alarm_list_rebuilt, orphaned
from vimha.domain.election import LeasePolicy
from vimha.domain.errors import Temporary, VimhaError
from vimha.engine.writer import StoreWriter
from vimha.ports.coordination import Coordination, LeaseLost
from vimha.ports.store import DeliveryJob, Store, UnitOfWork

log = logging.getLogger("vimha.takeover")
ADOPT_BATCH = 5000


class Adopter(Protocol):
    def adopt(self, jobs: Sequence[DeliveryJob]) -> None: ...


class Presence:
    """This controller's key under `prefix`, kept alive by a lease (re-created when lost)."""

    def __init__(
        self, coord: Coordination, prefix: str, member: str, policy: LeasePolicy, clock: Clock
    ) -> None:
        self.coord = coord
        self.prefix = prefix
        self.member = member
        self.policy = policy
        self.clock = clock
        self.registered = asyncio.Event()
        self.peers: dict[str, dict[str, object]] = {}  # as last seen, for status
        self._lease = 0

    async def run(self, stop: asyncio.Event, info: dict[str, object]) -> None:
        key = self.prefix + self.member
        value = json.dumps(info)
        try:
            while not stop.is_set():
                try:
                    if not self._lease:
                        self._lease = await self.coord.grant(self.policy.ttl)
                        await self.coord.put(key, value, self._lease)
                        self.registered.set()
                    else:
                        await self.coord.keepalive(self._lease)
                except LeaseLost:
                    log.warning("presence lease of %s lost: announcing again", self.member)
                    self._lease = 0
                except Temporary as exc:
                    log.warning("presence of %s not renewed: %s", self.member, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.policy.renew)
        finally:
            if self._lease:  # leaving: the others adopt at once, not after the TTL
                with contextlib.suppress(Temporary, LeaseLost):
                    await self.coord.revoke(self._lease)

    async def live(self) -> dict[str, dict[str, object]]:
        _, entries = await self.coord.list(self.prefix)
        out: dict[str, dict[str, object]] = {}
        for e in entries:
            try:
                out[e.key.removeprefix(self.prefix)] = json.loads(e.value)
            except ValueError:
                out[e.key.removeprefix(self.prefix)] = {}
        self.peers = out
        return out


async def adopt_orphans(
    presence: Presence,
    store: Store,
    writer: StoreWriter,
    dispatcher: Adopter,
    holding: Callable[[], bool],
    stop: asyncio.Event,
    interval: float = 1.0,
) -> None:
    """Every `interval`, see which controllers are alive; on the singleton holder, adopt
    the deliveries of those that are gone."""
    me = presence.member
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set() or not presence.registered.is_set():
            continue
        try:
            live = set(await presence.live())
            if not holding():
                continue
            owners = await asyncio.to_thread(store.pending_owners)
            takeover = orphaned(owners, live, me)
            if takeover is None:
                continue
            adopt = _adopter(takeover.owners, me)
            while True:
                jobs = await writer.acall(adopt)
                if jobs:
                    log.warning("adopted %d notifications: %s", len(jobs), takeover.reason)
                    dispatcher.adopt(jobs)
                if len(jobs) < ADOPT_BATCH:
                    break
        except VimhaError as exc:
            log.warning("could not look for orphaned notifications: %s", exc)


async def announce_rebuilt(
    presence: Presence,
    key: str,
    holding: Callable[[], bool],
    announce: Callable[[], Sequence[DeliveryJob]],
    stop: asyncio.Event,
    interval: float = 1.0,
) -> None:
    """On the singleton holder: AlarmListRebuiltNotification once per start of the
    controllers' cluster (`domain/delivery.py: alarm_list_rebuilt` decides), and the running
    controllers' incarnations kept under `key` (no lease: it outlives them all) for the next
    holder to judge by. Announced before recorded: a record that could not be written is
    written at the next tick, without a second announcement."""
    coord = presence.coord
    known: frozenset[str] | None = None
    read = announced = False  # in this holding
    while not stop.is_set():
        if not holding():
            read = announced = False
        elif presence.registered.is_set():
            try:
                live = frozenset(
                    str(info["incarnation"])
                    for info in (await presence.live()).values()
                    if "incarnation" in info
                )
                if not read:
                    entry = await coord.get(key)
                    known = frozenset(json.loads(entry.value)) if entry else None
                    read = True
                decision = alarm_list_rebuilt(known, live)
                if decision.announce and not announced:
                    jobs = await asyncio.to_thread(announce)
                    announced = True
                    log.info(
                        "AlarmListRebuiltNotification to %d subscribers: %s",
                        len(jobs),
                        decision.reason,
                    )
                if decision.record != known:
                    await coord.put(key, json.dumps(sorted(decision.record)))
                    known = decision.record
            except (VimhaError, ValueError) as exc:
                log.warning("alarm list announcement not decided yet: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def _adopter(owners: Sequence[str | None], me: str) -> Callable[[UnitOfWork], list[DeliveryJob]]:
    def adopt(uow: UnitOfWork) -> list[DeliveryJob]:
        return uow.adopt_deliveries(owners, me, ADOPT_BATCH)

    return adopt


async def readopt_own(
    store: Store,
    owner: str,
    dispatcher: Adopter,
    wanted: asyncio.Event,
    stop: asyncio.Event,
    settle: float = 0.5,
) -> None:
    """When `wanted` is set (a unit of work failed with the database gone: its commit may
    have landed all the same, then be retried and found done), hand the dispatcher every
    pending delivery of this controller again: one of such a commit reached no dispatcher,
    and nobody else sends it (the retry finds its alarm already raised and notifies nothing).
    The dispatcher skips what it holds; what it delivered but had not written back yet, in
    the `settle` it is given once the store answers, may go twice (at-least-once)."""
    while not stop.is_set():
        waiting = asyncio.ensure_future(wanted.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        stopping.cancel()
        if stop.is_set():
            return
        wanted.clear()
        try:
            await asyncio.to_thread(store.pending_deliveries, 1, None, 0, owner)  # back?
            await asyncio.sleep(settle)  # outcomes of the outage written back first
            jobs = await asyncio.to_thread(store.pending_deliveries, ADOPT_BATCH, None, 0, owner)
        except VimhaError as exc:
            log.info("own pending notifications not looked at yet: %s", exc)
            wanted.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settle)
            continue
        if jobs:
            dispatcher.adopt(jobs)
            log.info("own pending notifications handed to the dispatcher again: %d", len(jobs))
