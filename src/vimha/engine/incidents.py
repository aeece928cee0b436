"""The incidents loop (issue 20): observe what happened (alarm history, the instances' state
journal, fencing, the steps recovery reported), decide (`domain/incident_steps.py: advance`),
store the incidents. Run by the singleton holder; a new holder resumes from the cursors
kept in the store with the incidents they produced.

Recovery (issue 17) reports its steps with `record` (own unit of work) or `record_in` (in
its own unit of work, so that a step and its report commit together):

    incidents.record_in(uow, Subject.host("cmp-3"), Stage.PLACED, at,
                        "vfw-fw-0 on cmp-1", instance_id=iid)

What is inferred needs no report: detection (the root alarm), fencing (the fence records),
placement and boot (the journal: a new host or incarnation, then ACTIVE), serving (ACTIVE,
unless `incidents.serving_from: reported`).

Only rows older than `settle` are taken: writers commit out of order, and a row must never
be judged before the rows it follows in time are visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from vimha.config import Config
from vimha.domain.alarms import Alarm
from vimha.domain.clock import Clock
from vimha.domain.correlation_rules import Rules
from vimha.domain.errors import NotFound, Temporary
from vimha.domain.incident_steps import advance, detected_at, hosts_to_look_up
from vimha.domain.incidents import (
    AlarmSeen,
    Change,
    Incident,
    Kind,
    Observations,
    Policy,
    Report,
    Stage,
    State,
    StateSeen,
    budgets,
    view,
)
from vimha.engine import metrics
from vimha.engine.writer import StoreWriter
from vimha.ports.store import Store, UnitOfWork

log = logging.getLogger("vimha.incidents")
BATCH = 2000
ALARMS, JOURNAL, REPORTS = "incidents.alarms", "incidents.journal", "incidents.reports"
LIVE = (State.OPEN.value, State.RECOVERED.value)


@dataclass(frozen=True, slots=True)
class Subject:
    """What failed, as recovery names it when it reports a step."""

    type: str  # host, instance
    id: str

    @classmethod
    def host(cls, name: str) -> Subject:
        return cls("host", name)

    @classmethod
    def instance(cls, instance_id: str) -> Subject:
        return cls("instance", instance_id)


@dataclass(slots=True)
class Seen:
    """What one step read, and the cursors it reaches once it is stored."""

    alarms: list[AlarmSeen]
    states: list[StateSeen]
    reports: list[Report]
    cursors: dict[str, int]


class IncidentService:
    def __init__(
        self,
        config: Config,
        store: Store,
        writer: StoreWriter,
        clock: Clock,
        rules: Callable[[], Rules],
        last_heard: Callable[[str], datetime | None] = lambda host: None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.clock = clock
        self.rules = rules
        self.last_heard = last_heard
        self.cfg = config.incidents
        self.targets = config.incidents.all_targets()
        self.base_url = config.api.base_url

    # -- what recovery calls ------------------------------------------------------------
    def record(
        self,
        subject: Subject,
        stage: Stage,
        at: datetime | None = None,
        detail: str = "",
        instance_id: str | None = None,
    ) -> None:
        """Report a step of the incident of `subject` (its own unit of work)."""
        self.writer.call(lambda uow: self.record_in(uow, subject, stage, at, detail, instance_id))

    def record_in(
        self,
        uow: UnitOfWork,
        subject: Subject,
        stage: Stage,
        at: datetime | None = None,
        detail: str = "",
        instance_id: str | None = None,
    ) -> None:
        """The same, in the caller's unit of work."""
        now = self.clock.now()
        uow.insight.report(subject.type, subject.id, stage, at or now, detail, instance_id, now)

    # -- reads for the API --------------------------------------------------------------
    def list_incidents(
        self, states: Sequence[str] | None = None, kind: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        found = self.store.insight.incidents(states, limit, kind)
        return [self.summary(i) for i in found if i.state is not State.MERGED or states]

    def show(self, incident_id: str) -> dict[str, Any]:
        return view(self.store.insight.incident(incident_id), self.targets, self.base_url)

    def summary(self, inc: Incident) -> dict[str, Any]:
        doc = view(inc, self.targets, self.base_url)
        doc.pop("timeline")
        doc["entries"] = len(inc.entries)
        return doc

    # -- the loop -----------------------------------------------------------------------
    def policy(self) -> Policy:
        return Policy(
            element_faults=self.rules().derived_types,
            targets=self.targets,
            serving_from=self.cfg.serving_from,
        )

    def observe(self) -> Seen:
        """Rows after the cursors, older than the settle delay (blocking)."""
        insight = self.store.insight
        cutoff = self.clock.now() - timedelta(seconds=self.cfg.settle)
        cursors = {name: insight.cursor(name) for name in (ALARMS, JOURNAL, REPORTS)}
        alarms = list(_settled(insight.alarm_changes(cursors[ALARMS], BATCH), cutoff))
        states = list(_settled(insight.journal_after(cursors[JOURNAL], BATCH), cutoff))
        reports = list(
            _settled(insight.reports_after(cursors[REPORTS], BATCH), cutoff, "recorded_at")
        )
        new = dict(cursors)
        if alarms:
            new[ALARMS] = alarms[-1].seq
        if states:
            new[JOURNAL] = states[-1].seq
        if reports:
            new[REPORTS] = reports[-1].seq
        return Seen(alarms, states, reports, new)

    def decide(self, seen: Seen, last_heard: dict[str, datetime]) -> list[Change]:
        """Load the incidents concerned, decide, store (blocking)."""
        insight = self.store.insight
        policy = self.policy()
        live = insight.incidents(LIVE, 10_000)
        roots = {s.alarm.id for s in seen.alarms}
        roots |= {i for s in seen.alarms for i in s.alarm.correlated_alarm_ids}
        book = {i.id: i for i in live}
        for inc in insight.incidents_of_roots(sorted(roots)):
            book.setdefault(inc.id, inc)
        hosts = hosts_to_look_up(seen.alarms, seen.reports, policy, book.values())
        residents = {}
        fences = {}
        for host in hosts:
            at = min(
                (
                    detected_at(s.alarm)
                    for s in seen.alarms
                    if s.alarm.managed_object_id == host and s.kind == "RAISED"
                ),
                default=self.clock.now(),
            )
            residents[host] = insight.residents(host, at)
            fences[host] = insight.fences(host, at - timedelta(minutes=10))
        names = {}
        for iid in {s.alarm.resource_id for s in seen.alarms if _of_instance(s.alarm)}:
            with contextlib.suppress(NotFound):
                names[iid] = self.store.compute.instance(iid).name
        obs = Observations(
            seen.alarms, seen.states, seen.reports, residents, fences, last_heard, names
        )
        changes = advance(list(book.values()), obs, policy, _ids())
        self.writer.call(lambda uow: self._save(uow, changes, seen.cursors))
        return changes

    def _save(self, uow: UnitOfWork, changes: Sequence[Change], cursors: dict[str, int]) -> None:
        for change in changes:
            uow.insight.save_incident(change.incident)
        for name, value in cursors.items():
            uow.insight.set_cursor(name, value)

    async def step(self) -> list[Change]:
        seen = await asyncio.to_thread(self.observe)
        if not (seen.alarms or seen.states or seen.reports):
            changes = await asyncio.to_thread(self._fences_only)
        else:
            heard = self._heard(seen)
            changes = await asyncio.to_thread(self.decide, seen, heard)
        for change in changes:
            self._observed(change)
        return changes

    def _fences_only(self) -> list[Change]:
        """Nothing new in the streams: only open host incidents waiting for their fencing."""
        waiting = [
            i
            for i in self.store.insight.incidents([State.OPEN.value], 1000, Kind.HOST.value)
            if i.first(Stage.FENCED) is None
        ]
        if not waiting:
            return []
        seen = Seen([], [], [], {})
        return self.decide(seen, {})

    def _heard(self, seen: Seen) -> dict[str, datetime]:
        out = {}
        for s in seen.alarms:
            host = s.alarm.managed_object_id
            if s.kind == "RAISED" and s.alarm.vim_level_resource_type == "host":
                heard = self.last_heard(host)
                if heard is not None:
                    out[host] = heard
        return out

    def _observed(self, change: Change) -> None:
        inc = change.incident
        log.info("incident %s (%s): %s", inc.id, inc.title, change.reason)
        if inc.version == 0:
            metrics.INCIDENTS.labels(inc.kind.value).inc()
        for b in budgets(inc, self.targets):
            if b.span in change.final and b.seconds is not None:
                metrics.INCIDENT_STAGE.labels(b.span, inc.kind.value).observe(b.seconds)

    async def run(self, stop: asyncio.Event, holds: Callable[[], bool]) -> None:
        while not stop.is_set():
            if holds():
                try:
                    await self.step()
                except Temporary as exc:
                    log.warning("incidents step failed, retried: %s", exc)
                except Exception:  # a bad step must not stop the loop
                    log.exception("incidents step failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.interval)


def _of_instance(alarm: Alarm) -> bool:
    return alarm.vim_level_resource_type == "instance"


def _settled(rows: Sequence[Any], cutoff: datetime, attr: str = "at") -> Iterator[Any]:
    """Rows by sequence up to the first one younger than the cutoff."""
    for row in rows:
        if getattr(row, attr) >= cutoff:
            return
        yield row


def _ids() -> Iterator[str]:
    while True:
        yield str(uuid.uuid4())
