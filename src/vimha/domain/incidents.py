"""Incidents (issue 20): a failure and every action it caused, as one timeline with the
budget each stage used against its target (the OPNFV Doctor profiler's stages). The model,
what a step observes, the budgets and the API's view; the decision that builds incidents
from observations is `domain/incident_steps.py`. Pure.

States: OPEN -> RECOVERED (every affected instance serves again) -> CLOSED (its root alarm
cleared); an incident with no instance closes when its root clears; one whose root became
tied to another root is MERGED into that one's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from vimha.domain.alarms import Alarm
from vimha.domain.clock import iso, parse_iso


class Stage(StrEnum):
    FAILED = "failed"  # when the failure happened, as far as known (last heartbeat heard)
    DETECTED = "detected"
    FENCED = "fenced"
    PLACED = "placed"
    BOOTED = "booted"
    SERVING = "serving"
    ALARM = "alarm"  # an alarm of the incident raised or cleared
    NOTE = "note"  # anything else the timeline should show


class State(StrEnum):
    OPEN = "OPEN"
    RECOVERED = "RECOVERED"
    CLOSED = "CLOSED"
    MERGED = "MERGED"


class Kind(StrEnum):
    HOST = "HOST"
    INSTANCE = "INSTANCE"
    ELEMENT = "ELEMENT"  # a suspicion on a host, rack, power domain (correlation rules)


# The spans whose durations are budgeted, in timeline order.
SPANS = ("detect", "fence", "place", "boot", "serve", "total")
DEFAULT_TARGETS: Mapping[str, float] = {
    "detect": 0.5,
    "fence": 2.0,
    "place": 0.5,
    "boot": 2.0,
    "serve": 1.0,
    "total": 5.0,
}
HOST_FAULTS = frozenset(
    {
        "COMPUTE_NODE_FAILURE",
        "HOST_HW_FAILURE",
        "HOST_UNREACHABLE",
        "RACK_FAILURE",
        "COMPUTE_SERVICE_FAILURE",
    }
)
INSTANCE_FAULTS = frozenset(
    {
        "INSTANCE_CRASHED",
        "INSTANCE_WATCHDOG_EXPIRED",
        "INSTANCE_HUNG",
        "INSTANCE_IO_ERROR",
        "INSTANCE_STOPPED_UNEXPECTEDLY",
        "INSTANCE_STATE_UNKNOWN",
    }
)
REPORTED = "reported"
INFERRED = "inferred"


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    stage: Stage
    object: str  # the host, instance or alarm it is about
    detail: str
    source: str = "observed"  # observed, reported (by recovery), inferred, estimated

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "stage": self.stage.value,
            "object": self.object,
            "detail": self.detail,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Entry:
        return cls(parse_iso(d["at"]), Stage(d["stage"]), d["object"], d["detail"], d["source"])


@dataclass(frozen=True, slots=True)
class Affected:
    """An instance the failure took down, where it was then."""

    instance_id: str
    host: str | None = None
    incarnation: int | None = None
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "instanceId": self.instance_id,
            "host": self.host,
            "incarnation": self.incarnation,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Affected:
        return cls(d["instanceId"], d.get("host"), d.get("incarnation"), d.get("name", ""))


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    kind: Kind
    subject: str  # the host, instance or element that failed
    title: str
    state: State
    opened_at: datetime
    root_alarm_id: str | None
    alarm_ids: tuple[str, ...] = ()
    affected: tuple[Affected, ...] = ()
    entries: tuple[Entry, ...] = ()
    recovered_at: datetime | None = None
    closed_at: datetime | None = None
    merged_into: str | None = None
    version: int = 0  # 0: not stored yet

    def with_entry(self, entry: Entry) -> Incident:
        if any(
            e.stage is entry.stage and e.object == entry.object and e.at == entry.at
            for e in self.entries
        ):
            return self
        entries = tuple(sorted((*self.entries, entry), key=lambda e: e.at))
        return replace(self, entries=entries)

    def affects(self, instance_id: str) -> Affected | None:
        return next((a for a in self.affected if a.instance_id == instance_id), None)

    def first(self, stage: Stage, obj: str | None = None) -> Entry | None:
        return next(
            (e for e in self.entries if e.stage is stage and (obj is None or e.object == obj)),
            None,
        )

    def to_doc(self) -> dict[str, Any]:
        """What the store keeps besides the indexed columns."""
        return {
            "title": self.title,
            "alarmIds": list(self.alarm_ids),
            "affected": [a.to_dict() for a in self.affected],
            "entries": [e.to_dict() for e in self.entries],
            "mergedInto": self.merged_into,
        }


def incident_of(
    id: str,
    kind: str,
    subject: str,
    state: str,
    opened_at: datetime,
    root_alarm_id: str | None,
    recovered_at: datetime | None,
    closed_at: datetime | None,
    version: int,
    doc: Mapping[str, Any],
) -> Incident:
    return Incident(
        id,
        Kind(kind),
        subject,
        doc.get("title", ""),
        State(state),
        opened_at,
        root_alarm_id,
        tuple(doc.get("alarmIds", ())),
        tuple(Affected.from_dict(a) for a in doc.get("affected", ())),
        tuple(Entry.from_dict(e) for e in doc.get("entries", ())),
        recovered_at,
        closed_at,
        doc.get("mergedInto"),
        version,
    )


# -- what a step observes ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AlarmSeen:
    """An alarm's change (history: RAISED, UPDATED, CLEARED), with the alarm as it is now."""

    seq: int
    kind: str
    at: datetime
    alarm: Alarm


@dataclass(frozen=True, slots=True)
class StateSeen:
    """A row of the instances' state journal: what an instance became, when."""

    seq: int
    instance_id: str
    at: datetime
    status: str
    host: str | None
    incarnation: int
    name: str = ""
    vnf_id: str | None = None
    vdu: str | None = None
    sal: str | None = None
    power: str = "running"


@dataclass(frozen=True, slots=True)
class FenceSeen:
    host: str
    started_at: datetime
    at: datetime
    confirmed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Report:
    """A step recorded by recovery (or any engine) for the incident of a subject."""

    seq: int
    subject_type: str  # host, instance
    subject: str
    stage: Stage
    at: datetime
    detail: str = ""
    instance_id: str | None = None
    recorded_at: datetime | None = None  # when it was stored


@dataclass(frozen=True, slots=True)
class Policy:
    host_faults: frozenset[str] = HOST_FAULTS
    instance_faults: frozenset[str] = INSTANCE_FAULTS
    element_faults: frozenset[str] = frozenset()  # what the correlation rules raise
    targets: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    serving_from: str = "active"  # active: an instance ACTIVE again serves; reported: wait

    def kind_of(self, alarm: Alarm) -> tuple[Kind, str] | None:
        """The incident an alarm opens, and its subject (None: it opens none)."""
        if alarm.fault_type in self.element_faults:
            return Kind.ELEMENT, alarm.managed_object_id
        if alarm.fault_type in self.host_faults and alarm.vim_level_resource_type == "host":
            return Kind.HOST, alarm.managed_object_id
        if alarm.fault_type in self.instance_faults:
            return Kind.INSTANCE, alarm.resource_id
        return None


@dataclass(frozen=True, slots=True)
class Observations:
    alarms: Sequence[AlarmSeen] = ()
    states: Sequence[StateSeen] = ()
    reports: Sequence[Report] = ()
    residents: Mapping[str, Sequence[Affected]] = field(default_factory=dict)  # per host
    fences: Mapping[str, Sequence[FenceSeen]] = field(default_factory=dict)  # per host
    last_heard: Mapping[str, datetime] = field(default_factory=dict)  # per host
    names: Mapping[str, str] = field(default_factory=dict)  # instance id -> its name


@dataclass(frozen=True, slots=True)
class Change:
    incident: Incident
    reason: str
    recovered: bool = False  # its instances serve again since this step
    final: tuple[str, ...] = ()  # spans whose time became final in this step


def serving(inc: Incident, instance_id: str) -> Entry | None:
    found = [e for e in inc.entries if e.stage is Stage.SERVING and e.object == instance_id]
    reported = [e for e in found if e.source == REPORTED]
    chosen = reported or found
    return chosen[0] if chosen else None


# -- budgets -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Budget:
    span: str
    seconds: float | None
    target: float | None

    @property
    def over(self) -> bool:
        return self.seconds is not None and self.target is not None and self.seconds > self.target

    def to_dict(self) -> dict[str, Any]:
        used = (
            None
            if self.seconds is None or not self.target
            else round(100 * self.seconds / self.target, 1)
        )
        return {
            "stage": self.span,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "targetSeconds": self.target,
            "usedPercent": used,
            "over": self.over,
        }


def budgets(inc: Incident, targets: Mapping[str, float]) -> list[Budget]:
    """Each span's duration (the slowest instance's, for per-instance spans)."""
    failed = inc.first(Stage.FAILED, inc.subject)
    detected = inc.first(Stage.DETECTED, inc.subject) or inc.first(Stage.DETECTED)
    fenced = inc.first(Stage.FENCED)
    t_detect = detected.at if detected else inc.opened_at
    anchor = fenced or detected
    start = anchor.at if anchor is not None else inc.opened_at
    place: list[float] = []
    boot: list[float] = []
    serve: list[float] = []
    ends: list[datetime] = []
    for a in inc.affected:
        iid = a.instance_id
        booted = _after(inc, Stage.BOOTED, iid, t_detect)
        placed = [
            e
            for e in inc.entries
            if e.stage is Stage.PLACED
            and e.object == iid
            and e.at >= t_detect
            and (booted is None or e.at <= booted.at)
        ]
        last_placed = placed[-1] if placed else None
        if last_placed is not None:
            place.append(_secs(last_placed.at - start))
        if booted is not None:
            boot.append(_secs(booted.at - (last_placed.at if last_placed else start)))
            served = serving(inc, iid)
            if served is not None and served.at >= booted.at:
                serve.append(_secs(served.at - booted.at))
                ends.append(served.at)
    total = None
    if ends and len(ends) == len(inc.affected):
        total = _secs(max(ends) - (failed.at if failed else t_detect))
    spans: dict[str, float | None] = {
        "detect": _secs(t_detect - failed.at) if failed else None,
        "fence": _secs(fenced.at - t_detect) if fenced else None,
        "place": max(place) if place else None,
        "boot": max(boot) if boot else None,
        "serve": max(serve) if serve else None,
        "total": total,
    }
    return [Budget(s, spans[s], targets.get(s)) for s in SPANS]


def _after(inc: Incident, stage: Stage, obj: str, t: datetime) -> Entry | None:
    return next(
        (e for e in inc.entries if e.stage is stage and e.object == obj and e.at >= t), None
    )


def _secs(delta: timedelta) -> float:
    return max(delta.total_seconds(), 0.0)


def view(inc: Incident, targets: Mapping[str, float], base_url: str) -> dict[str, Any]:
    """An incident as the API shows it."""
    t0 = min((e.at for e in inc.entries), default=inc.opened_at)
    out: dict[str, Any] = {
        "id": inc.id,
        "kind": inc.kind.value,
        "subject": inc.subject,
        "title": inc.title,
        "state": inc.state.value,
        "openedAt": iso(inc.opened_at),
        "recoveredAt": iso(inc.recovered_at) if inc.recovered_at else None,
        "closedAt": iso(inc.closed_at) if inc.closed_at else None,
        "rootAlarmId": inc.root_alarm_id,
        "alarmIds": list(inc.alarm_ids),
        "affectedInstances": [a.to_dict() for a in inc.affected],
        "budgets": [b.to_dict() for b in budgets(inc, targets)],
        "timeline": [
            {**e.to_dict(), "offsetSeconds": round((e.at - t0).total_seconds(), 3)}
            for e in inc.entries
        ],
        "_links": {"self": {"href": f"{base_url}/vim/v1/incidents/{inc.id}"}},
    }
    if inc.merged_into:
        out["mergedInto"] = inc.merged_into
    return out


def final_spans(inc: Incident | None) -> tuple[str, ...]:
    """The spans whose time will not change any more: detection and fencing once known,
    the per-instance ones once every instance serves again."""
    if inc is None or inc.kind is Kind.ELEMENT:
        return ()
    known = {b.span for b in budgets(inc, {}) if b.seconds is not None}
    if inc.recovered_at is None:
        known &= {"detect", "fence"}
    return tuple(s for s in SPANS if s in known)
