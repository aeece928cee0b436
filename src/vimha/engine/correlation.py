"""The correlation loop (issue 20): observe the alarms, decide with the rules
(`domain/correlation.py`), act through the fault service. Run by the singleton holder.

A pass reads the active alarms and those of the rules' horizon, decides, and applies every
action in one unit of work: links (isRootCause, correlatedAlarmIds) with their history entry
and AlarmNotification, suspicions raised or cleared as alarms. A pass runs when the alarm
history moved (every `interval`) and at least every `full_every` (windows slide). The rules
come from the YAML file of `correlation.rules_file` (or the shipped ones), read again when
the file changes or on request; a file that does not validate leaves the rules in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from vimha.config import DEFAULT_RULES, Config, load_rules
from vimha.domain import notifications
from vimha.domain.alarms import apply_correlation
from vimha.domain.clock import Clock
from vimha.domain.correlation import Action, ClearSuspect, Link, RaiseSuspect, correlate
from vimha.domain.correlation_rules import Rules
from vimha.domain.errors import InvalidInput, NotFound, Temporary
from vimha.engine import metrics
from vimha.engine.faults import FaultService
from vimha.ports.store import DeliveryJob, Store, UnitOfWork

log = logging.getLogger("vimha.correlation")
RULES_CHECK_EVERY = 2.0


class RulesSource:
    """The rules in force, and where they come from."""

    def __init__(self, path: str | None, hierarchy: tuple[str, ...]) -> None:
        self.path = path
        self.hierarchy = hierarchy
        self._lock = threading.Lock()
        self.rules = load_rules(path, hierarchy)  # validated at config load already
        self._mtime = self._stat()
        self.error: str | None = None

    @property
    def where(self) -> str:
        return str(self.path or DEFAULT_RULES)

    def _stat(self) -> float | None:
        try:
            return Path(self.where).stat().st_mtime
        except OSError:
            return None

    def reload(self) -> Rules:
        """Read the file again; InvalidInput (the rules in force stay) if it does not
        validate."""
        with self._lock:
            self._mtime = self._stat()
            try:
                rules = load_rules(self.path, self.hierarchy)
            except InvalidInput as exc:
                self.error = exc.detail
                log.error("correlation rules not reloaded: %s", exc.detail)
                raise
            self.rules, self.error = rules, None
            log.warning(
                "correlation rules loaded from %s: %d forward, %d backward",
                self.where,
                len(rules.forward),
                len(rules.backward),
            )
            return rules

    def check(self) -> None:
        """Reload if the file changed since it was read."""
        if self._stat() != self._mtime:
            with contextlib.suppress(InvalidInput):
                self.reload()


@dataclass(slots=True)
class Pass:
    actions: list[Action]
    jobs: list[DeliveryJob]


class Correlator:
    def __init__(
        self,
        config: Config,
        store: Store,
        faults: FaultService,
        clock: Clock,
        rules: RulesSource,
        holds: Callable[[], bool],
    ) -> None:
        self.store = store
        self.faults = faults
        self.clock = clock
        self.rules = rules
        self.holds = holds
        self.interval = config.correlation.interval
        self.full_every = config.correlation.full_every
        self.base_url = config.api.base_url
        self._mark = -1
        self._last_full = float("-inf")

    def step(self, force: bool = False) -> list[Action]:
        """One pass if something may have changed (blocking: run in a thread)."""
        mark = self.store.insight.alarm_mark()
        due = self.clock.monotonic() - self._last_full >= self.full_every
        if not (force or due or mark != self._mark):
            return []
        self._mark = mark
        self._last_full = self.clock.monotonic()
        rules = self.rules.rules
        now = self.clock.now()
        snapshot = self.store.insight.alarms_since(now - rules.horizon)
        actions = correlate(snapshot, rules, now)
        if not actions:
            return []
        result = self.faults.writer.call(
            lambda uow: self._apply(uow, actions), lambda p: self.faults.on_enqueued(p.jobs)
        )
        for action in result.actions:
            log.info("%s", action.reason)
            kind = "link" if isinstance(action, Link) else type(action).__name__.lower()
            metrics.CORRELATIONS.labels(action.rule, kind).inc()
        self._mark = self.store.insight.alarm_mark()  # our own changes are no news
        return result.actions

    def _apply(self, uow: UnitOfWork, actions: Sequence[Action]) -> Pass:
        now = self.clock.now()
        done: list[Action] = []
        jobs: list[DeliveryJob] = []
        for action in actions:
            if isinstance(action, Link):
                if self._link(uow, action, now, jobs):
                    done.append(action)
            elif isinstance(action, RaiseSuspect | ClearSuspect):
                changes, more = self.faults.ingest_in(uow, [action.event])
                jobs += more
                if not changes:
                    continue
                done.append(action)
                if isinstance(action, RaiseSuspect):
                    # the evidence tied to it at once, in the same transaction
                    root = changes[0].alarm
                    after = max(self.clock.now(), root.alarm_raised_time)
                    for evidence in action.event.correlated_alarm_ids:
                        why = (
                            f"evidence of {root.fault_type} on {root.managed_object_id} "
                            f"(rule {action.rule})"
                        )
                        self._link(
                            uow, Link(evidence, (root.id,), True, action.rule, why), after, jobs
                        )
        return Pass(done, jobs)

    def _link(self, uow: UnitOfWork, action: Link, now: datetime, jobs: list[DeliveryJob]) -> bool:
        try:
            alarm = uow.alarm_for_update(action.alarm_id)
        except NotFound as exc:  # purged meanwhile: nothing to tie
            log.debug("correlation of %s skipped: %s", action.alarm_id, exc)
            return False
        change = apply_correlation(alarm, action.add, action.dependent, now, action.reason)
        if change is None:
            return False
        uow.save(change, now)
        if change.alarm.active:  # a cleared alarm's consumers had its last notification
            kind, payload, subject = notifications.for_change(change, self.base_url)
            jobs += self.faults.notify_in(
                uow, kind, payload, subject, change.alarm.managed_object_id
            )
        return True

    async def run(self, stop: asyncio.Event) -> None:
        next_check = 0.0
        while not stop.is_set():
            if self.holds():
                try:
                    await asyncio.to_thread(self.step)
                except Temporary as exc:
                    log.warning("correlation pass failed, retried: %s", exc)
                except Exception:  # a bad pass must not stop the loop
                    log.exception("correlation pass failed")
            else:
                self._mark = -1  # a new holder looks at everything once
            if self.clock.monotonic() >= next_check:
                next_check = self.clock.monotonic() + RULES_CHECK_EVERY
                await asyncio.to_thread(self.rules.check)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
