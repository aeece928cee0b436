"""Root cause across layers (issue 20: VNF-6, FAULT-5's `isRootCause` and
`correlatedAlarmIds`): declarative correlation rules and the pure decision that applies them
to a snapshot of alarms. No I/O: `engine/correlation.py` reads the snapshot and acts.

Elements are places of the aggregation hierarchy: an alarm's element at level L is its
location cut after L (a host, a rack, a power domain, ...); an alarm lies in an element's
scope when its location starts with the element's levels.

- Forward rules (Vitrage's deduction from a known root cause): an alarm of a `roots` fault
  type makes the alarms of what depended on its element (raised from `before` ahead of it
  until it cleared) correlated to it: the dependents get `isRootCause` false and the root's
  id, the root gets theirs. A dependent is tied to the deepest element that explains it (its
  host's alarm rather than its rack's).
- Backward rules (VNF-6): `count` alarms of `evidence` types in one element within `window`
  (optionally over `min_distinct` distinct values of a level, after `min_recovered`
  recoveries), none of them explained by a known root and, if `unexplained`, no other alarm
  on the element: raise the rule's alarm on the element, a root cause with the evidence
  correlated. It clears after `clear_after` without new evidence. Every backward rule is
  also a forward rule: later evidence in its element is tied to its alarm.

Correlations only grow (an alarm once tied to a root stays tied): passes are idempotent and
two controllers deciding at once never undo each other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from vimha.domain.alarms import (
    Alarm,
    FaultEvent,
    Location,
    Severity,
)
from vimha.domain.correlation_rules import BackwardRule, ForwardRule, Rules, span_text

ElementKey = tuple[tuple[str, str], ...]  # a location cut at a level: an element


# -- actions -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Link:
    """Tie an alarm to others: `dependent` makes it no root cause any more."""

    alarm_id: str
    add: tuple[str, ...]
    dependent: bool
    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class RaiseSuspect:
    event: FaultEvent
    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class ClearSuspect:
    event: FaultEvent
    rule: str
    reason: str


Action = Link | RaiseSuspect | ClearSuspect


# -- elements ------------------------------------------------------------------------------
def element(location: Location, level: str) -> ElementKey | None:
    """The location cut after `level`; None when the location has no such level."""
    for i, (name, _) in enumerate(location.levels):
        if name == level:
            return location.levels[: i + 1]
    return None


def element_object(key: ElementKey) -> str:
    """The managed object id of an element: a host by its name, any other by its path."""
    level, value = key[-1]
    return value if level == "host" else "/".join(v for _, v in key)


def _level_value(location: Location, level: str) -> str | None:
    return next((v for name, v in location.levels if name == level), None)


# -- the decision --------------------------------------------------------------------------
class Snapshot:
    """The alarms, indexed: by id, by element of each level the rules use, by key."""

    def __init__(self, alarms: Sequence[Alarm], levels: Iterable[str]) -> None:
        self.alarms = alarms
        self.by_id = {a.id: a for a in alarms}
        self.scope: dict[str, dict[ElementKey, list[Alarm]]] = {}
        for level in set(levels):
            index: dict[ElementKey, list[Alarm]] = defaultdict(list)
            for a in alarms:
                key = element(a.location, level)
                if key is not None:
                    index[key].append(a)
            self.scope[level] = index
        self.by_key: dict[str, list[Alarm]] = defaultdict(list)
        for a in alarms:
            self.by_key[a.dedup_key].append(a)

    def within(self, level: str, key: ElementKey) -> list[Alarm]:
        """The alarms in the element's scope."""
        return self.scope[level].get(key, [])


def correlate(alarms: Sequence[Alarm], rules: Rules, now: datetime) -> list[Action]:
    """Every change the rules ask of this snapshot (active alarms and those raised, changed
    or cleared within `rules.horizon`), each with its reason."""
    levels = [r.level for r in rules.all_forward] + [r.level for r in rules.backward]
    snap = Snapshot(alarms, levels)
    actions: list[Action] = list(_forward(snap, rules))
    actions += _backward(snap, rules, now)
    return actions


def _forward(snap: Snapshot, rules: Rules) -> list[Link]:
    alarms, by_id = snap.alarms, snap.by_id
    roots: list[tuple[ForwardRule, Alarm, ElementKey]] = []
    for rule in rules.all_forward:
        for a in alarms:
            if a.fault_type in rule.roots:
                key = element(a.location, rule.level)
                if key is not None:
                    roots.append((rule, a, key))
    tied: dict[str, list[tuple[ForwardRule, Alarm]]] = defaultdict(list)
    depth: dict[str, int] = {}
    for rule, root, key in roots:
        start = root.alarm_raised_time - rule.before
        if rule.derived:
            start = max(start, _last_clear(snap.by_key[root.dedup_key], root))
        end = root.alarm_cleared_time
        for d in snap.within(rule.level, key):
            if d.id == root.id:
                continue
            if rule.dependents is not None and d.fault_type not in rule.dependents:
                continue
            if d.fault_type in rule.roots and element(d.location, rule.level) == key:
                continue  # a peer: another root of the same element
            if d.alarm_raised_time < start or (end is not None and d.alarm_raised_time > end):
                continue
            if len(key) > depth.get(d.id, -1):
                depth[d.id] = len(key)
                tied[d.id] = []
            if len(key) == depth[d.id]:
                tied[d.id].append((rule, root))
    out: list[Link] = []
    grows: dict[str, list[tuple[str, ForwardRule]]] = defaultdict(list)
    for dep_id in sorted(tied, key=lambda i: (by_id[i].alarm_raised_time, i)):
        d = by_id[dep_id]
        new = [r for _, r in tied[dep_id] if r.id not in d.correlated_alarm_ids]
        for rule, root in tied[dep_id]:
            if dep_id not in root.correlated_alarm_ids:
                grows[root.id].append((dep_id, rule))
        if new or d.is_root_cause:
            rule, root = tied[dep_id][0]
            out.append(
                Link(
                    dep_id,
                    tuple(r.id for r in new),
                    True,
                    rule.name,
                    f"{d.fault_type} on {d.managed_object_id} caused by {root.fault_type} "
                    f"on {root.managed_object_id} (rule {rule.name})",
                )
            )
    for root_id, deps in grows.items():
        root = by_id[root_id]
        ids = tuple(dict.fromkeys(dep for dep, _ in deps))
        out.append(
            Link(
                root_id,
                ids,
                False,
                deps[0][1].name,
                f"{root.fault_type} on {root.managed_object_id} explains {len(ids)} more "
                f"alarm(s) of what depended on it (rule {deps[0][1].name})",
            )
        )
    return out


def _last_clear(alarms: Iterable[Alarm], root: Alarm) -> datetime:
    """When the previous alarm with the root's key cleared (evidence from before then was
    judged already): the earliest time otherwise."""
    cleared = [
        a.alarm_cleared_time
        for a in alarms
        if a.dedup_key == root.dedup_key
        and a.id != root.id
        and a.alarm_cleared_time is not None
        and a.alarm_cleared_time <= root.alarm_raised_time
    ]
    return max(cleared, default=datetime.min.replace(tzinfo=root.alarm_raised_time.tzinfo))


def _explained(a: Alarm, by_id: Mapping[str, Alarm], derived: frozenset[str]) -> bool:
    """Tied to a root that is not a suspicion (an unknown id counts as a known root)."""
    if a.is_root_cause:
        return False
    return any(
        other is None or other.fault_type not in derived
        for other in (by_id.get(i) for i in a.correlated_alarm_ids)
    )


def _backward(snap: Snapshot, rules: Rules, now: datetime) -> list[RaiseSuspect | ClearSuspect]:
    alarms, by_id = snap.alarms, snap.by_id
    derived = rules.derived_types
    out: list[RaiseSuspect | ClearSuspect] = []
    for rule in rules.backward:
        evidence: dict[ElementKey, list[Alarm]] = defaultdict(list)
        for a in alarms:
            if a.fault_type in rule.evidence:
                key = element(a.location, rule.level)
                if key is not None:
                    evidence[key].append(a)
        suspects = {
            element(a.location, rule.level): a
            for a in sorted(alarms, key=lambda x: x.alarm_raised_time)
            if a.fault_type == rule.raises.fault_type
        }
        for key in sorted(set(evidence) | {k for k in suspects if k is not None}):
            suspect = suspects.get(key)
            found = evidence.get(key, [])
            if suspect is not None and suspect.active:
                cleared = _maybe_clear(rule, key, suspect, found, now)
                if cleared is not None:
                    out.append(cleared)
                continue
            since = now - rule.window
            if suspect is not None and suspect.alarm_cleared_time is not None:
                since = max(since, suspect.alarm_cleared_time)
            scope = snap.within(rule.level, key)
            raised = _maybe_raise(rule, key, found, scope, by_id, derived, since, now)
            if raised is not None:
                out.append(raised)
    return out


def _maybe_raise(
    rule: BackwardRule,
    key: ElementKey,
    found: Sequence[Alarm],
    scope: Sequence[Alarm],
    by_id: Mapping[str, Alarm],
    derived: frozenset[str],
    since: datetime,
    now: datetime,
) -> RaiseSuspect | None:
    counted = sorted(
        (
            a
            for a in found
            if since <= a.alarm_raised_time <= now and not _explained(a, by_id, derived)
        ),
        key=lambda a: (a.alarm_raised_time, a.id),
    )
    if len(counted) < rule.count:
        return None
    level_of = rule.distinct
    distinct = len(
        {(_level_value(a.location, level_of) or a.id) if level_of else a.id for a in counted}
    )
    if distinct < rule.min_distinct:
        return None
    newest = counted[-1].alarm_raised_time
    recovered = sum(
        1 for a in counted if a.alarm_cleared_time is not None and a.alarm_cleared_time <= newest
    )
    if recovered < rule.min_recovered:
        return None
    name = element_object(key)
    if rule.unexplained:
        known = [
            a
            for a in scope
            if a.active
            and a.fault_type not in rule.evidence
            and a.fault_type not in derived
            and a.vim_level_resource_type != "instance"
        ]
        if known:
            return None
    level = key[-1][0]
    what = f"{len(counted)} {'/'.join(sorted({a.fault_type for a in counted}))}"
    if rule.distinct:
        what += f" of {distinct} {rule.distinct}(s)"
    window = span_text(rule.window)
    reason = f"{what} in {level} {name} within {window}"
    if rule.min_recovered:
        reason += f", {recovered} after recoveries"
    if rule.unexplained:
        reason += f", no alarm on {name}"
    reason += f": {rule.raises.probable_cause} (rule {rule.name})"
    event = FaultEvent(
        managed_object_id=name,
        fault_type=rule.raises.fault_type,
        probable_cause=rule.raises.probable_cause,
        perceived_severity=rule.raises.severity,
        event_type=rule.raises.event_type,
        event_time=now,
        faulty_resource_type=rule.raises.resource,
        vim_level_resource_type=level,
        resource_id=name,
        fault_details=(reason,),
        location=Location(key),
        correlated_alarm_ids=tuple(a.id for a in counted),
        source="correlation",
    )
    return RaiseSuspect(event, rule.name, reason)


def _maybe_clear(
    rule: BackwardRule,
    key: ElementKey,
    suspect: Alarm,
    found: Sequence[Alarm],
    now: datetime,
) -> ClearSuspect | None:
    if rule.clear_after is None:
        return None
    # New evidence is tied to the suspicion as it comes, which changes it: its last change
    # is when the last evidence came (older evidence may be beyond the snapshot).
    newest = max(
        (a.alarm_raised_time for a in found if a.alarm_raised_time >= suspect.alarm_raised_time),
        default=suspect.alarm_raised_time,
    )
    newest = max(newest, suspect.alarm_changed_time or newest)
    if now - newest < rule.clear_after:
        return None
    name = element_object(key)
    reason = (
        f"no {'/'.join(sorted(rule.evidence))} in {key[-1][0]} {name} for "
        f"{span_text(rule.clear_after)} (rule {rule.name})"
    )
    event = FaultEvent(
        managed_object_id=suspect.managed_object_id,
        fault_type=suspect.fault_type,
        probable_cause=suspect.probable_cause,
        perceived_severity=Severity.CLEARED,
        event_type=suspect.event_type,
        event_time=now,
        faulty_resource_type=suspect.faulty_resource_type,
        vim_level_resource_type=suspect.vim_level_resource_type,
        resource_id=suspect.resource_id,
        fault_details=(reason,),
        location=suspect.location,
        source="correlation",
    )
    return ClearSuspect(event, rule.name, reason)
