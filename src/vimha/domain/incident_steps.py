"""Incidents built from what happened (issue 20). Pure: `engine/incidents.py` observes and
stores what `advance` returns.

An incident opens on a root-cause alarm of a host failure, an instance failure or a
suspicion raised by a correlation rule. It then gathers, in time order: the alarms tied to
its root (`correlatedAlarmIds`), the host's fencing, and for every instance it affected
(those on the host when it failed, or the failed instance) its placement, boot and return
to service, seen in the instances' state journal or reported by recovery
(`IncidentService.record`). An incident whose root becomes tied to another root is merged
into that one's incident.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from vimha.domain.alarms import Alarm
from vimha.domain.incidents import (
    INFERRED,
    REPORTED,
    Affected,
    AlarmSeen,
    Change,
    Entry,
    FenceSeen,
    Incident,
    Kind,
    Observations,
    Policy,
    Report,
    Stage,
    State,
    StateSeen,
    final_spans,
    serving,
)

SETTLE_AFTER_CLOSE = timedelta(seconds=5)
DETECTION_LAG = timedelta(seconds=30)  # an event time earlier than this is not trusted


def hosts_to_look_up(
    obs_alarms: Iterable[AlarmSeen],
    reports: Iterable[Report],
    policy: Policy,
    open_incidents: Iterable[Incident],
) -> set[str]:
    """Hosts whose residents and fencing a step needs (incidents that may open, or are open
    without their fencing yet)."""
    hosts = {
        s.alarm.managed_object_id
        for s in obs_alarms
        if (k := policy.kind_of(s.alarm)) is not None and k[0] is Kind.HOST
    }
    hosts |= {r.subject for r in reports if r.subject_type == "host"}
    hosts |= {
        i.subject
        for i in open_incidents
        if i.kind is Kind.HOST and i.state is State.OPEN and i.first(Stage.FENCED) is None
    }
    return hosts


# -- the decision --------------------------------------------------------------------------
def advance(
    incidents: Sequence[Incident],
    obs: Observations,
    policy: Policy,
    new_id: Iterable[str],
) -> list[Change]:
    """Apply what was observed, in time order, to the incidents (those not closed, and any
    whose root is among the alarms seen); returns the changed and new ones."""
    ids = iter(new_id)
    book = {i.id: i for i in incidents}
    reasons: dict[str, list[str]] = {}
    before = {i.id: i for i in incidents}

    def put(inc: Incident, reason: str) -> None:
        book[inc.id] = inc
        reasons.setdefault(inc.id, []).append(reason)

    # At equal times the journal first: an instance ACTIVE again and its alarm cleared are
    # one unit of work, the instance's change first.
    events: list[tuple[datetime, int, object]] = []
    events += [(s.at, 0, s) for s in obs.states]
    events += [(s.at, 1, s) for s in obs.alarms]
    events += [(r.at, 2, r) for r in obs.reports]
    events.sort(key=lambda e: (e[0], e[1]))
    for _, _, ev in events:
        if isinstance(ev, AlarmSeen):
            _on_alarm(book, ev, obs, policy, ids, put)
        elif isinstance(ev, StateSeen):
            _on_state(book, ev, policy, put)
        elif isinstance(ev, Report):
            _on_report(book, ev, obs, ids, put)
    # Alarms are seen as they are now: one tied to a root whose incident opened later in
    # this batch joins it here.
    for alarm in {s.alarm.id: s.alarm for s in obs.alarms}.values():
        _tie(book, alarm, policy, put)
    for inc in list(book.values()):
        if inc.kind is Kind.HOST and inc.state is State.OPEN and inc.first(Stage.FENCED) is None:
            fenced = _fenced(inc, obs.fences.get(inc.subject, ()))
            if fenced is not None:
                put(inc.with_entry(fenced), f"{inc.subject} fenced")
    changes = []
    for inc_id, why in reasons.items():
        inc = book[inc_id]
        settled, reason = _settle(inc)
        if reason:
            why.append(reason)
        old = before.get(inc_id)
        recovered = settled.recovered_at is not None and (old is None or old.recovered_at is None)
        if old is None or settled != old:
            final = tuple(s for s in final_spans(settled) if s not in final_spans(old))
            changes.append(Change(settled, "; ".join(why), recovered, final))
    return changes


def _open(
    kind: Kind,
    subject: str,
    alarm: Alarm,
    obs: Observations,
    ids: Iterable[str],
) -> Incident:
    inc_id = next(iter(ids))
    at = detected_at(alarm)
    detail = alarm.fault_details[0] if alarm.fault_details else alarm.fault_type
    affected: tuple[Affected, ...] = ()
    if kind is Kind.HOST:
        affected = tuple(obs.residents.get(subject, ()))
    elif kind is Kind.INSTANCE:
        host = next((v for k, v in alarm.location.levels if k == "host"), None)
        affected = (Affected(subject, host, name=obs.names.get(subject, "")),)
    title = f"{alarm.fault_type} on {alarm.managed_object_id}"
    if kind is Kind.INSTANCE:
        title = f"{alarm.fault_type} on {obs.names.get(subject, subject)}"
        if host:
            title += f" ({host})"
    inc = Incident(
        inc_id,
        kind,
        subject,
        title,
        State.OPEN,
        at,
        alarm.id,
        (alarm.id,),
        affected,
    )
    inc = inc.with_entry(Entry(at, Stage.DETECTED, subject, detail))
    heard = obs.last_heard.get(subject) if kind is Kind.HOST else None
    if heard is not None and heard <= at:
        inc = inc.with_entry(
            Entry(heard, Stage.FAILED, subject, "last heartbeat heard", "estimated")
        )
    return inc


def detected_at(alarm: Alarm) -> datetime:
    """When the fault was detected: its event time (the detector's decision; the alarm is
    raised when the store takes it, which may lag), unless that is not plausible."""
    raised = alarm.alarm_raised_time
    if raised - DETECTION_LAG <= alarm.event_time <= raised:
        return alarm.event_time
    return raised


def _live(book: Mapping[str, Incident]) -> list[Incident]:
    return [i for i in book.values() if i.state not in (State.CLOSED, State.MERGED)]


def _on_alarm(
    book: dict[str, Incident],
    seen: AlarmSeen,
    obs: Observations,
    policy: Policy,
    ids: Iterable[str],
    put: Any,
) -> None:
    alarm = seen.alarm
    if _tie(book, alarm, policy, put):
        return
    holder = next(
        (i for i in book.values() if alarm.id in i.alarm_ids and i.state is not State.MERGED),
        None,
    )
    if holder is not None:
        if seen.kind in ("RAISED", "CLEARED"):
            entry = _alarm_entry(alarm, seen.kind, seen.at)
            updated = holder.with_entry(entry)
            if holder.root_alarm_id == alarm.id and seen.kind == "CLEARED":
                updated = _root_cleared(updated, seen.at)
            if updated != holder:
                put(updated, entry.detail)
        return
    opens = policy.kind_of(alarm)
    if seen.kind == "RAISED" and alarm.is_root_cause and alarm.active and opens is not None:
        inc = _open(opens[0], opens[1], alarm, obs, ids)
        put(inc, f"opened on {inc.title}")


def _tie(book: dict[str, Incident], alarm: Alarm, policy: Policy, put: Any) -> bool:
    """An alarm correlated to the root of an incident joins it (its own incident, if it
    had one, is merged into that one). True if it joined just now."""
    if alarm.is_root_cause:
        return False
    roots = [
        i
        for i in book.values()
        if i.root_alarm_id in alarm.correlated_alarm_ids
        and i.root_alarm_id != alarm.id
        and i.state is not State.MERGED
    ]
    if not roots:
        return False
    target = max(roots, key=lambda i: i.opened_at)
    own = next((i for i in book.values() if i.root_alarm_id == alarm.id), None)
    if own is not None and own.state is not State.MERGED and own.id != target.id:
        put(_merge(own, target, book), f"merged {own.id} ({own.title})")
        put(replace(own, state=State.MERGED, merged_into=target.id), f"merged into {target.id}")
        target = book[target.id]
    if alarm.id in target.alarm_ids:
        return False
    target = replace(target, alarm_ids=(*target.alarm_ids, alarm.id))
    target = _alarm_entries(target, alarm)
    target = _join_instance(target, alarm, policy)
    put(target, f"{alarm.fault_type} on {alarm.managed_object_id} tied to it")
    return True


def _alarm_entry(alarm: Alarm, kind: str, at: datetime) -> Entry:
    return Entry(
        at,
        Stage.ALARM,
        alarm.id,
        f"{alarm.fault_type} on {alarm.managed_object_id} {kind.lower()}",
    )


def _alarm_entries(inc: Incident, alarm: Alarm) -> Incident:
    inc = inc.with_entry(_alarm_entry(alarm, "RAISED", alarm.alarm_raised_time))
    if alarm.alarm_cleared_time is not None:
        inc = inc.with_entry(_alarm_entry(alarm, "CLEARED", alarm.alarm_cleared_time))
    return inc


def _join_instance(inc: Incident, alarm: Alarm, policy: Policy) -> Incident:
    if alarm.fault_type not in policy.instance_faults or inc.affects(alarm.resource_id):
        return inc
    host = next((v for k, v in alarm.location.levels if k == "host"), None)
    return replace(inc, affected=(*inc.affected, Affected(alarm.resource_id, host)))


def _merge(own: Incident, target: Incident, book: Mapping[str, Incident]) -> Incident:
    into = book[target.id]
    affected = list(into.affected)
    for a in own.affected:
        if into.affects(a.instance_id) is None:
            affected.append(a)
    merged = replace(
        into,
        alarm_ids=tuple(dict.fromkeys((*into.alarm_ids, *own.alarm_ids))),
        affected=tuple(affected),
    )
    for e in own.entries:
        merged = merged.with_entry(e)
    return merged


def _root_cleared(inc: Incident, at: datetime) -> Incident:
    if inc.state in (State.CLOSED, State.MERGED):
        return inc
    inc, _ = _settle(inc)
    return replace(inc, state=State.CLOSED, closed_at=at)


def _on_state(book: dict[str, Incident], row: StateSeen, policy: Policy, put: Any) -> None:
    for inc in list(book.values()):
        if row.at < inc.opened_at or not _takes_rows(inc, row.at):
            continue
        was = inc.affects(row.instance_id)
        if was is None:
            continue
        name = row.name or was.name or row.instance_id
        updated = inc
        if was.incarnation is None and row.status != "ACTIVE":
            # where the failed instance was (an instance alarm does not say): the baseline
            # against which a new host or incarnation is a placement
            was = replace(was, host=was.host or row.host, incarnation=row.incarnation)
            updated = replace(
                inc,
                affected=tuple(
                    was if a.instance_id == was.instance_id else a for a in inc.affected
                ),
            )
        if row.status == "DELETED":
            updated = inc.with_entry(Entry(row.at, Stage.NOTE, row.instance_id, f"{name} deleted"))
        else:
            moved = (was.host is not None and row.host not in (None, was.host)) or (
                was.incarnation is not None and row.incarnation > was.incarnation
            )
            last = _last(inc, Stage.PLACED, row.instance_id)
            again = last is None or last.detail != _placed_detail(name, row)
            if moved and again and row.host is not None:
                updated = updated.with_entry(
                    Entry(row.at, Stage.PLACED, row.instance_id, _placed_detail(name, row))
                )
            if row.status == "ACTIVE":
                updated = updated.with_entry(
                    Entry(row.at, Stage.BOOTED, row.instance_id, f"{name} ACTIVE on {row.host}")
                )
                if policy.serving_from == "active":
                    updated = updated.with_entry(
                        Entry(
                            row.at,
                            Stage.SERVING,
                            row.instance_id,
                            f"{name} ACTIVE (no health check reported)",
                            INFERRED,
                        )
                    )
        if updated != inc:
            put(updated, f"{name}: {row.status} on {row.host}")


def _takes_rows(inc: Incident, at: datetime) -> bool:
    """OPEN, or closed a moment ago without its instances seen serving again (the row
    that shows them serving may come just after the clear of the root alarm)."""
    if inc.state is State.OPEN:
        return True
    return (
        inc.state is State.CLOSED
        and inc.recovered_at is None
        and inc.closed_at is not None
        and at <= inc.closed_at + SETTLE_AFTER_CLOSE
    )


def _placed_detail(name: str, row: StateSeen) -> str:
    return f"{name} on {row.host}, incarnation {row.incarnation}"


def _last(inc: Incident, stage: Stage, obj: str) -> Entry | None:
    found = [e for e in inc.entries if e.stage is stage and e.object == obj]
    return found[-1] if found else None


def _on_report(
    book: dict[str, Incident],
    report: Report,
    obs: Observations,
    ids: Iterable[str],
    put: Any,
) -> None:
    live = [i for i in _live(book) if i.opened_at <= report.at + timedelta(seconds=60)]
    if report.subject_type == "host":
        found = [i for i in live if i.kind is Kind.HOST and i.subject == report.subject]
    else:
        found = [i for i in live if i.affects(report.subject) is not None]
        found.sort(key=lambda i: (i.state is not State.OPEN, -i.opened_at.timestamp()))
    obj = report.instance_id or report.subject
    entry = Entry(report.at, report.stage, obj, report.detail or report.stage.value, REPORTED)
    if found:
        inc = max(found, key=lambda i: i.opened_at) if report.subject_type == "host" else found[0]
        if report.instance_id and inc.affects(report.instance_id) is None:
            inc = replace(inc, affected=(*inc.affected, Affected(report.instance_id)))
        put(inc.with_entry(entry), f"reported: {report.stage.value} {obj}")
        return
    if report.stage is not Stage.DETECTED:
        return  # nothing to attach it to: a report of a step needs its failure first
    kind = Kind.HOST if report.subject_type == "host" else Kind.INSTANCE
    affected = (
        tuple(obs.residents.get(report.subject, ()))
        if kind is Kind.HOST
        else (Affected(report.subject),)
    )
    inc = Incident(
        next(iter(ids)),
        kind,
        report.subject,
        f"{report.detail or 'failure'} ({report.subject})",
        State.OPEN,
        report.at,
        None,
        (),
        affected,
        (entry,),
    )
    put(inc, f"opened on a report: {inc.title}")


def _fenced(inc: Incident, fences: Sequence[FenceSeen]) -> Entry | None:
    start = inc.first(Stage.FAILED) or inc.first(Stage.DETECTED)
    since = (start.at if start else inc.opened_at) - timedelta(seconds=5)
    for f in sorted(fences, key=lambda f: f.at):
        if f.at >= since and f.confirmed:
            return Entry(f.at, Stage.FENCED, inc.subject, f.detail)
    return None


def _settle(inc: Incident) -> tuple[Incident, str]:
    """OPEN -> RECOVERED once every affected instance serves again (or is gone); an
    incident closed meanwhile only learns when that was."""
    if (
        inc.state is State.MERGED
        or inc.kind is Kind.ELEMENT  # a suspicion: open while its alarm is
        or inc.recovered_at is not None
        or not inc.affected
    ):
        return inc, ""
    times = []
    for a in inc.affected:
        served = serving(inc, a.instance_id)
        if served is None:
            gone = _last(inc, Stage.NOTE, a.instance_id)
            if gone is None or not gone.detail.endswith("deleted"):
                return inc, ""
            times.append(gone.at)
        else:
            times.append(served.at)
    at = max(times)
    state = State.RECOVERED if inc.state is State.OPEN else inc.state
    return replace(inc, state=state, recovered_at=at), "every instance serves again"
