"""HA metrics of VNFs (issue 20, VNF-4; ETSI NFV-REL 001's availability figures). Pure:
`engine/availability.py` reads the instances' state journal and the alarms, this computes.

An instance is in service from the first time it is ACTIVE until it is deleted, except while
its desired power is not `running` (stopped or paused by request: planned, not an outage).
While in service it is out (an outage) when:
- its status is not ACTIVE (crashed, in error, rebuilding, being recovered, ...),
- its host is down (a host failure alarm on the host it was on is active),
- a health check or its host's silence says it does not serve (INSTANCE_HUNG,
  INSTANCE_STATE_UNKNOWN alarms active).
Overlapping reasons make one outage, whose cause is the earliest one (with the root cause it
is correlated to). A failure is an outage, or an instance failure alarm outside any outage
(a watchdog reset in place). Availability over a window = 1 - outage / time in service;
nines = -log10(1 - availability); MTTR = mean duration of the outages that ended;
MTBF = time up / failures.

A VNF's service is out while some VDU has instances in service and none of them up.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from vimha.domain.alarms import Alarm
from vimha.domain.clock import iso
from vimha.domain.incidents import HOST_FAULTS, INSTANCE_FAULTS, StateSeen

WINDOWS: tuple[tuple[str, timedelta], ...] = (
    ("1h", timedelta(hours=1)),
    ("1d", timedelta(days=1)),
    ("30d", timedelta(days=30)),
)
# Alarms that mean "not serving" while active, whatever the instance's status says.
OUTAGE_ALARMS = frozenset({"INSTANCE_HUNG", "INSTANCE_STATE_UNKNOWN"})
CAUSE_SLACK = timedelta(seconds=5)  # an alarm this close to an outage's start explains it


@dataclass(frozen=True, slots=True)
class Span:
    start: datetime
    end: datetime | None  # None: still going on

    def until(self, now: datetime) -> datetime:
        return self.end if self.end is not None else now


@dataclass(frozen=True, slots=True)
class Outage:
    start: datetime
    end: datetime | None
    cause: str
    source: str  # state, host, health-check
    alarm_id: str | None = None

    def seconds(self, now: datetime) -> float:
        return ((self.end or now) - self.start).total_seconds()

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "start": iso(self.start),
            "end": iso(self.end) if self.end else None,
            "durationSeconds": round(self.seconds(now), 3),
            "cause": self.cause,
            "source": self.source,
            "alarmId": self.alarm_id,
        }


@dataclass(frozen=True, slots=True)
class Record:
    """What is known of one subject (instance, VNF service, host) over the whole period."""

    in_service: tuple[Span, ...]
    outages: tuple[Outage, ...]
    failures_outside: tuple[datetime, ...] = ()  # failures without an outage


@dataclass(frozen=True, slots=True)
class Figures:
    window: str
    start: datetime
    end: datetime
    observed: float
    outage: float
    failures: int
    mttr: float | None
    mtbf: float | None

    @property
    def availability(self) -> float | None:
        if self.observed <= 0:
            return None
        return max(0.0, 1.0 - self.outage / self.observed)

    @property
    def nines(self) -> float | None:
        a = self.availability
        if a is None or a >= 1.0:
            return None
        return -math.log10(1.0 - a)

    def to_dict(self) -> dict[str, Any]:
        a = self.availability
        n = self.nines
        return {
            "window": self.window,
            "from": iso(self.start),
            "to": iso(self.end),
            "observedSeconds": round(self.observed, 3),
            "outageSeconds": round(self.outage, 3),
            "availability": None if a is None else round(a, 9),
            "nines": None if n is None else round(n, 3),
            "failures": self.failures,
            "mttrSeconds": None if self.mttr is None else round(self.mttr, 3),
            "mtbfSeconds": None if self.mtbf is None else round(self.mtbf, 3),
        }


# -- spans ---------------------------------------------------------------------------------
def union(spans: Iterable[Span], now: datetime) -> list[Span]:
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: s.start):
        if out and s.start <= out[-1].until(now):
            last = out[-1]
            end = None if last.end is None or s.end is None else max(last.end, s.end)
            out[-1] = Span(last.start, end)
        else:
            out.append(s)
    return out


def intersect(a: Sequence[Span], b: Sequence[Span], now: datetime) -> list[Span]:
    out = []
    for x in a:
        for y in b:
            start = max(x.start, y.start)
            end = min(x.until(now), y.until(now))
            if end > start:
                open_ = x.end is None and y.end is None
                out.append(Span(start, None if open_ else end))
    return union(out, now)


def total(spans: Iterable[Span], start: datetime, end: datetime) -> float:
    seconds = 0.0
    for s in spans:
        lo, hi = max(s.start, start), min(s.until(end), end)
        if hi > lo:
            seconds += (hi - lo).total_seconds()
    return seconds


# -- causes --------------------------------------------------------------------------------
def describe(alarm: Alarm, by_id: Mapping[str, Alarm]) -> str:
    """An alarm as an outage's cause, with the root cause it is tied to."""
    text = f"{alarm.fault_type} on {alarm.managed_object_id}"
    if alarm.is_root_cause:
        return text
    roots = [by_id[i] for i in alarm.correlated_alarm_ids if i in by_id]
    roots = [r for r in roots if r.is_root_cause] or roots
    if roots:
        r = roots[0]
        return f"{text} <- {r.fault_type} on {r.managed_object_id}"
    return text


def _cause_near(
    at: datetime, alarms: Sequence[Alarm], by_id: Mapping[str, Alarm]
) -> tuple[str, str] | None:
    near = [a for a in alarms if abs(a.alarm_raised_time - at) <= CAUSE_SLACK]
    if not near:
        return None
    a = min(near, key=lambda a: abs(a.alarm_raised_time - at))
    return describe(a, by_id), a.id


# -- one instance --------------------------------------------------------------------------
def instance_record(
    rows: Sequence[StateSeen],
    instance_alarms: Sequence[Alarm],
    host_alarms: Mapping[str, Sequence[Alarm]],
    by_id: Mapping[str, Alarm],
    now: datetime,
) -> Record:
    """From an instance's journal rows (oldest first), its alarms and those of its hosts."""
    in_service: list[Span] = []
    pieces: list[Outage] = []
    started = False
    failures = [a for a in instance_alarms if a.fault_type in INSTANCE_FAULTS]
    for i, row in enumerate(rows):
        end = rows[i + 1].at if i + 1 < len(rows) else None
        if row.status == "DELETED":
            break
        if row.status == "ACTIVE":
            started = True
        if not started or row.power != "running":
            continue
        span = Span(row.at, end)
        in_service.append(span)
        if row.status != "ACTIVE":
            found = _cause_near(row.at, failures, by_id)
            cause, alarm_id = found if found else (f"status {row.status}", None)
            pieces.append(Outage(row.at, end, cause, "state", alarm_id))
        for h in host_alarms.get(row.host or "", ()):
            hit = intersect([span], [Span(h.alarm_raised_time, h.alarm_cleared_time)], now)
            pieces += [Outage(s.start, s.end, describe(h, by_id), "host", h.id) for s in hit]
    in_service = union(in_service, now)
    for a in instance_alarms:
        if a.fault_type in OUTAGE_ALARMS:
            span = Span(
                a.alarm_raised_time, _moved_on(rows, a.alarm_raised_time, a.alarm_cleared_time)
            )
            hit = intersect(in_service, [span], now)
            pieces += [
                Outage(s.start, s.end, describe(a, by_id), "health-check", a.id) for s in hit
            ]
    outages = merge(pieces, now)
    outside = tuple(
        a.alarm_raised_time
        for a in failures
        if not any(
            o.start - CAUSE_SLACK <= a.alarm_raised_time <= (o.end or now) + CAUSE_SLACK
            for o in outages
        )
        and any(s.start <= a.alarm_raised_time <= s.until(now) for s in in_service)
    )
    return Record(tuple(in_service), tuple(outages), outside)


def _moved_on(rows: Sequence[StateSeen], since: datetime, end: datetime | None) -> datetime | None:
    """When an alarm of one incarnation stops meaning anything: cleared, or the instance
    ACTIVE again elsewhere or as a new incarnation."""
    then = [r for r in rows if r.at <= since]
    if not then:
        return end
    host, incarnation = then[-1].host, then[-1].incarnation
    for r in rows:
        if r.at > since and r.status == "ACTIVE" and (r.host, r.incarnation) != (host, incarnation):
            return r.at if end is None else min(end, r.at)
    return end


def merge(pieces: Iterable[Outage], now: datetime) -> list[Outage]:
    """Overlapping outages as one, caused by the earliest of them."""
    out: list[Outage] = []
    for p in sorted(pieces, key=lambda p: (p.start, p.source != "host")):
        if out and p.start <= (out[-1].end or now):
            last = out[-1]
            end = None if last.end is None or p.end is None else max(last.end, p.end)
            out[-1] = Outage(last.start, end, last.cause, last.source, last.alarm_id)
        else:
            out.append(p)
    return out


# -- a VNF's service -----------------------------------------------------------------------
def service_record(vdus: Mapping[str, Sequence[Record]], now: datetime) -> Record:
    """Out while some VDU has instances in service and none of them up."""
    in_service: list[Span] = []
    down: list[Outage] = []
    for records in vdus.values():
        served = union((s for r in records for s in r.in_service), now)
        in_service += served
        up = union(
            (
                s
                for r in records
                for s in difference(
                    list(r.in_service), [Span(o.start, o.end) for o in r.outages], now
                )
            ),
            now,
        )
        outages = sorted((o for r in records for o in r.outages), key=lambda o: o.start)
        for gap in difference(served, up, now):
            first = next(
                (o for o in outages if o.start <= gap.start < (o.end or now)),
                Outage(gap.start, gap.end, "no instance up", "state"),
            )
            down.append(Outage(gap.start, gap.end, first.cause, first.source, first.alarm_id))
    return Record(tuple(union(in_service, now)), tuple(merge(down, now)))


def difference(a: Sequence[Span], b: Sequence[Span], now: datetime) -> list[Span]:
    """The parts of `a` outside every span of `b`."""
    out: list[Span] = []
    cuts = union(b, now)
    for x in union(a, now):
        start = x.start
        for y in cuts:
            if y.until(now) <= start or y.start >= x.until(now):
                continue
            if y.start > start:
                out.append(Span(start, y.start))
            start = max(start, y.until(now))
            if y.end is None:
                start = x.until(now)
        if start < x.until(now):
            out.append(Span(start, x.end))
    return out


# -- a host --------------------------------------------------------------------------------
def host_record(
    alarms: Sequence[Alarm], since: datetime, by_id: Mapping[str, Alarm], now: datetime
) -> Record:
    """A host's outages: its host failure alarms (always in service over the period)."""
    pieces = [
        Outage(a.alarm_raised_time, a.alarm_cleared_time, describe(a, by_id), "host", a.id)
        for a in alarms
        if a.fault_type in HOST_FAULTS
    ]
    return Record((Span(since, None),), tuple(merge(pieces, now)))


# -- figures -------------------------------------------------------------------------------
def figures(record: Record, window: str, span: timedelta, now: datetime) -> Figures:
    start = now - span
    served = [s for s in record.in_service if s.until(now) > start]
    observed = total(served, start, now)
    outage_spans = [Span(o.start, o.end) for o in record.outages]
    outage = total(intersect(served, outage_spans, now), start, now)
    starting = [o for o in record.outages if start <= o.start <= now]
    failures = len(starting) + sum(1 for t in record.failures_outside if start <= t <= now)
    ended = [o.seconds(now) for o in starting if o.end is not None]
    mttr = sum(ended) / len(ended) if ended else None
    mtbf = (observed - outage) / failures if failures else None
    return Figures(window, start, now, observed, outage, failures, mttr, mtbf)


def combine(records: Iterable[Record]) -> Record:
    """Several subjects as one population (a SAL's instances): their time and outages add."""
    spans: list[Span] = []
    outages: list[Outage] = []
    outside: list[datetime] = []
    for r in records:
        spans += r.in_service
        outages += r.outages
        outside += r.failures_outside
    return Record(tuple(spans), tuple(outages), tuple(outside))


def population_figures(
    records: Sequence[Record], window: str, span: timedelta, now: datetime
) -> Figures:
    """Figures of a population: time in service and outages summed over its members."""
    parts = [figures(r, window, span, now) for r in records]
    observed = sum(p.observed for p in parts)
    outage = sum(p.outage for p in parts)
    failures = sum(p.failures for p in parts)
    start = now - span
    ended = [
        o.seconds(now)
        for r in records
        for o in r.outages
        if start <= o.start <= now and o.end is not None
    ]
    mttr = sum(ended) / len(ended) if ended else None
    mtbf = (observed - outage) / failures if failures else None
    return Figures(window, start, now, observed, outage, failures, mttr, mtbf)


def by_instance(rows: Iterable[StateSeen]) -> dict[str, list[StateSeen]]:
    out: dict[str, list[StateSeen]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: (r.at, r.seq)):
        out[r.instance_id].append(r)
    return out
