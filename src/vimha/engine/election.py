"""A member campaigning for a role held through a lease in the coordination backend
(decisions in `domain/election.py`). `on_change(holding)` is told at once when the member
becomes the holder (with its new epoch) and when it steps down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from vimha.domain.clock import Clock
from vimha.domain.election import Holding, LeasePolicy, Role, Step, decide
from vimha.domain.errors import Temporary
from vimha.ports.coordination import Coordination, LeaseLost

log = logging.getLogger("vimha.election")


class Elector:
    def __init__(
        self,
        coord: Coordination,
        key: str,
        member: str,
        policy: LeasePolicy,
        clock: Clock,
        on_change: Callable[[Holding], None] = lambda h: None,
    ) -> None:
        self.coord = coord
        self.key = key
        self.member = member
        self.policy = policy
        self.clock = clock
        self.on_change = on_change
        self.holding = Holding()

    def _set(self, holding: Holding) -> None:
        changed = holding.role is not self.holding.role
        self.holding = holding
        if changed:
            self.on_change(holding)

    async def step(self) -> None:
        now = self.clock.monotonic()
        decision = decide(self.holding, now, self.policy)
        if decision.step is Step.CAMPAIGN:
            await self._campaign(now)
        elif decision.step is Step.RENEW:
            try:
                await self.coord.keepalive(self.holding.lease)
                self.holding = Holding(Role.HOLDER, self.holding.lease, self.holding.epoch, now)
            except LeaseLost:
                log.warning("%s: lease lost: stepping down", self.member)
                self._set(Holding())
            except Temporary as exc:  # keep trying until demote_after
                log.warning("%s: lease not renewed (%s)", self.member, exc)
        elif decision.step is Step.DEMOTE:
            log.warning("%s: %s", self.member, decision.reason)
            lease = self.holding.lease
            self._set(Holding())
            with contextlib.suppress(Temporary, LeaseLost):
                await self.coord.revoke(lease)

    async def _campaign(self, now: float) -> None:
        try:
            lease = await self.coord.grant(self.policy.ttl)
            if not await self.coord.create(self.key, self.member, lease):
                await self.coord.revoke(lease)
                return
            epoch = await self.coord.increment(self.key + "/epoch")
        except (Temporary, LeaseLost) as exc:
            log.debug("%s: campaign failed: %s", self.member, exc)
            return
        log.warning("%s: now the holder of %s (epoch %d)", self.member, self.key, epoch)
        self._set(Holding(Role.HOLDER, lease, epoch, now))

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await self.step()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.policy.renew)
        finally:
            if self.holding.role is Role.HOLDER:  # resign: a successor need not wait the TTL
                lease = self.holding.lease
                self._set(Holding())
                with contextlib.suppress(Temporary, LeaseLost):
                    await self.coord.revoke(lease)
