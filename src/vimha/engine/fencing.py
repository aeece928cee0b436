"""Fencing in the health loop: decide (domain.fencing), act through the host's BMC, record
every attempt in the store, and raise or clear FENCING_FAILED.

An attempt runs in a worker thread (Redfish is blocking) while the loop goes on; its result
changes the host's state at the next step. A confirmed fencing survives a controller restart
(it is read back from the store), so a fenced host stays FENCED until it answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from vimha.domain.alarms import FaultEvent, Location
from vimha.domain.classification import Classification, FailureKind
from vimha.domain.clock import Clock
from vimha.domain.errors import Temporary
from vimha.domain.fencing import (
    FenceAction,
    FencePhase,
    FencePolicy,
    FenceState,
    after_attempt,
    decide_fencing,
    fencing_alarm,
)
from vimha.drivers.redfish import BmcUnreachable, RedfishBmc
from vimha.ports.store import FenceRecord, Store

log = logging.getLogger("vimha.fencing")


class Fencer:
    def __init__(
        self,
        policy: FencePolicy,
        store: Store,
        bmcs: Mapping[str, RedfishBmc],
        locations: Mapping[str, Location],
        clock: Clock,
        on_result: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.bmcs = bmcs
        self.locations = locations
        self.clock = clock
        self.on_result = on_result
        self.states: dict[str, FenceState] = {}
        self.alarmed: set[str] = set()
        self.events: list[FaultEvent] = []  # produced by finished attempts, for the next step
        self.tasks: set[asyncio.Task[None]] = set()

    def restore(self, hosts: list[str]) -> None:
        """Hosts whose last fencing was confirmed are still fenced after a restart."""
        now = self.clock.monotonic()
        for host in hosts:
            last = self.store.fence_records(host, limit=1)
            if last and last[0].result == FencePhase.CONFIRMED.value:
                kind = FailureKind(last[0].failure_kind)
                self.states[host] = FenceState(FencePhase.CONFIRMED, kind, now, 0, last[0].detail)

    def confirm(self, host: str, kind: FailureKind, detail: str) -> FenceRecord:
        """An operator's word that the host is off (Pacemaker's manual fencing
        confirmation): the host is FENCED, recorded as such (CONFIRMED)."""
        now = self.clock.now()
        self.states[host] = FenceState(
            FencePhase.CONFIRMED, kind, self.clock.monotonic(), 0, detail
        )
        return self.store.add_fence_record(
            FenceRecord(host, kind.value, now, now, FencePhase.CONFIRMED.value, detail)
        )

    def force(self, host: str, kind: FailureKind, reason: str) -> bool:
        """Fence a host now (a VNFM reported it faulty, and the policy says fence), through
        its BMC; False if it has none or an attempt is already running."""
        state = self.state(host)
        if host not in self.bmcs or state.phase in (FencePhase.IN_PROGRESS, FencePhase.CONFIRMED):
            return False
        pending = FenceState(
            FencePhase.IN_PROGRESS, kind, self.clock.monotonic(), state.attempts + 1, reason
        )
        self.states[host] = pending
        log.warning("fencing %s on request: %s", host, reason)
        task = asyncio.create_task(self._attempt(host, pending, requested=reason))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    def fenced_kind(self, host: str) -> FailureKind | None:
        state = self.states.get(host)
        return state.kind if state is not None and state.fenced else None

    def forget(self, host: str) -> list[FaultEvent]:
        """A host removed from the inventory: its fencing alarm is cleared."""
        state = self.states.pop(host, FenceState())
        return [self._alarm(host, state, raised=False)] if host in self.alarmed else []

    def state(self, host: str) -> FenceState:
        return self.states.get(host, FenceState())

    def step(self, current: Mapping[str, Classification]) -> list[FaultEvent]:
        """Decide for every host; start the attempts that are due. Returns alarm events."""
        now = self.clock.monotonic()
        events, self.events = self.events, []
        for host, cls in current.items():
            old = self.state(host)
            decision = decide_fencing(host, cls, old, self.policy, host in self.bmcs, now)
            self.states[host] = decision.state
            if decision.reason and decision.action is None:
                log.info("%s", decision.reason)
            if decision.action is FenceAction.FENCE:
                log.warning("%s", decision.reason)
                task = asyncio.create_task(self._attempt(host, decision.state))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            elif decision.action is FenceAction.GIVE_UP:
                log.error("%s", decision.reason)
                events += self._record(host, decision.state, decision.state.detail)
            elif decision.state.phase is FencePhase.NONE and host in self.alarmed:
                events.append(self._alarm(host, decision.state, raised=False))
        return events

    async def _attempt(self, host: str, state: FenceState, requested: str = "") -> None:
        """One ForceOff; a fencing on request keeps the request in its state and record
        ("<reason>: <result>"), so every controller can tell why the host was fenced."""
        started = self.clock.now()
        bmc = self.bmcs[host]
        try:
            confirmed = await asyncio.to_thread(bmc.force_off, self.policy.confirm_within)
            detail = (
                "ForceOff sent, power off confirmed by reading back"
                if confirmed
                else f"ForceOff sent, power still not off after {self.policy.confirm_within:g}s"
            )
        except BmcUnreachable as exc:
            confirmed, detail = False, f"ForceOff failed: {exc.detail}"
        except Exception as exc:  # a fencing attempt must always end with a result
            log.exception("fencing %s", host)
            confirmed, detail = False, f"ForceOff failed: {type(exc).__name__}: {exc}"
        if requested:
            detail = f"{requested}: {detail}"
        finished = after_attempt(state, confirmed, detail, self.clock.monotonic())
        self.states[host] = finished
        (log.warning if confirmed else log.error)("fencing %s: %s", host, detail)
        self.events += await asyncio.to_thread(self._record, host, finished, detail, started)
        if self.on_result is not None:
            await self.on_result(host)  # e.g. read the BMC again, for the host's view

    def _record(
        self, host: str, state: FenceState, detail: str, started: datetime | None = None
    ) -> list[FaultEvent]:
        now = self.clock.now()
        try:
            self.store.add_fence_record(
                FenceRecord(
                    host=host,
                    failure_kind=(state.kind.value if state.kind else "UNKNOWN"),
                    started_at=started or now,
                    finished_at=now,
                    result=state.phase.value,
                    detail=detail,
                )
            )
        except Temporary as exc:  # the fencing happened; only its record is missing
            log.error("fencing %s: %s; the record was not stored: %s", host, detail, exc)
        raised = state.phase is FencePhase.FAILED
        if raised == (host in self.alarmed):
            return []
        return [self._alarm(host, state, raised)]

    def _alarm(self, host: str, state: FenceState, raised: bool) -> FaultEvent:
        if raised:
            self.alarmed.add(host)
        else:
            self.alarmed.discard(host)
        return fencing_alarm(
            host, state, self.locations.get(host, Location()), self.clock.now(), raised
        )

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
