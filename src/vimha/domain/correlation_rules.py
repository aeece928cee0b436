"""Correlation rules (issue 20): what they are and how a YAML document becomes them,
validated (InvalidInput names the rule and the field). Pure; `domain/correlation.py`
applies them, `config.load_rules` reads the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from vimha.domain.alarms import EventType, FaultyResourceType, Severity
from vimha.domain.errors import InvalidInput
from vimha.domain.retention import parse_duration

# Levels an alarm's location may carry below the hierarchy (`instance`, `component`): a
# backward rule may count distinct values of them.
EXTRA_LEVELS = ("instance", "component")


@dataclass(frozen=True, slots=True)
class ForwardRule:
    name: str
    roots: frozenset[str]
    level: str
    dependents: frozenset[str] | None = None  # None: any alarm in the element's scope
    before: timedelta = timedelta(seconds=5)
    derived: bool = False  # the alarm of a backward rule


@dataclass(frozen=True, slots=True)
class RaisedAlarm:
    """What a backward rule raises on the element."""

    fault_type: str
    probable_cause: str
    severity: Severity = Severity.MAJOR
    event_type: EventType = EventType.EQUIPMENT_ALARM
    resource: FaultyResourceType = FaultyResourceType.COMPUTE


@dataclass(frozen=True, slots=True)
class BackwardRule:
    name: str
    evidence: frozenset[str]
    level: str
    count: int
    window: timedelta
    raises: RaisedAlarm
    distinct: str | None = None
    min_distinct: int = 1
    min_recovered: int = 0
    unexplained: bool = True
    clear_after: timedelta | None = timedelta(hours=1)

    def as_forward(self) -> ForwardRule:
        return ForwardRule(
            self.name,
            frozenset({self.raises.fault_type}),
            self.level,
            self.evidence,
            self.window,
            derived=True,
        )


@dataclass(frozen=True, slots=True)
class Rules:
    forward: tuple[ForwardRule, ...] = ()
    backward: tuple[BackwardRule, ...] = ()
    skipped: tuple[str, ...] = ()  # optional rules whose level the topology lacks

    @property
    def all_forward(self) -> tuple[ForwardRule, ...]:
        return self.forward + tuple(b.as_forward() for b in self.backward)

    @property
    def derived_types(self) -> frozenset[str]:
        return frozenset(b.raises.fault_type for b in self.backward)

    @property
    def horizon(self) -> timedelta:
        """How far back a snapshot must reach for every rule's window (a suspicion's last
        evidence is its own change time: evidence is tied to it as it comes)."""
        spans = [r.before for r in self.forward]
        spans += [b.window for b in self.backward]
        return max(spans, default=timedelta(hours=1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "forward": [_forward_doc(r) for r in self.forward],
            "backward": [_backward_doc(r) for r in self.backward],
            "skipped": list(self.skipped),
        }


def span_text(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# -- rules from YAML documents -------------------------------------------------------------
FORWARD_KEYS = frozenset({"name", "roots", "level", "dependents", "before", "optional"})
BACKWARD_KEYS = frozenset(
    {
        "name",
        "evidence",
        "level",
        "count",
        "window",
        "distinct",
        "min_distinct",
        "min_recovered",
        "unexplained",
        "clear_after",
        "raise",
        "optional",
    }
)
RAISE_KEYS = frozenset({"fault_type", "probable_cause", "severity", "event_type", "resource"})


def parse_rules(doc: object, hierarchy: Sequence[str]) -> Rules:
    """Rules from a parsed YAML document ({forward: [...], backward: [...]}), checked
    against the topology's levels. InvalidInput names the bad field. A rule marked
    `optional: true` whose level the topology lacks is skipped (named in `skipped`)."""
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise InvalidInput("rules: a mapping with forward and backward lists is required")
    unknown = sorted(set(doc) - {"forward", "backward"})
    if unknown:
        raise InvalidInput(f"rules: unknown key(s) {unknown}")
    levels = tuple(hierarchy)
    forward: list[ForwardRule] = []
    backward: list[BackwardRule] = []
    skipped: list[str] = []
    names: set[str] = set()
    for i, item in enumerate(_list(doc.get("forward"), "forward")):
        where = f"forward[{i}]"
        item = _mapping(item, where, FORWARD_KEYS)
        name = _name(item, where, names)
        level = _str_of(item.get("level"), f"{where}.level")
        if level not in levels:
            if item.get("optional") is True:
                skipped.append(name)
                continue
            raise InvalidInput(f"{where}.level: {level!r} is not a level of the topology {levels}")
        deps = item.get("dependents", "any")
        forward.append(
            ForwardRule(
                name,
                _types(item.get("roots"), f"{where}.roots"),
                level,
                None if deps == "any" else _types(deps, f"{where}.dependents"),
                _duration(item.get("before", "5s"), f"{where}.before"),
            )
        )
    for i, item in enumerate(_list(doc.get("backward"), "backward")):
        where = f"backward[{i}]"
        item = _mapping(item, where, BACKWARD_KEYS)
        name = _name(item, where, names)
        level = _str_of(item.get("level"), f"{where}.level")
        if level not in levels:
            if item.get("optional") is True:
                skipped.append(name)
                continue
            raise InvalidInput(f"{where}.level: {level!r} is not a level of the topology {levels}")
        distinct = item.get("distinct")
        if distinct is not None:
            distinct = _str_of(distinct, f"{where}.distinct")
            below = levels[levels.index(level) + 1 :] + EXTRA_LEVELS
            if distinct not in below:
                raise InvalidInput(
                    f"{where}.distinct: {distinct!r} is not a level below {level} {below}"
                )
        clear_after = item.get("clear_after", "1h")
        backward.append(
            BackwardRule(
                name,
                _types(item.get("evidence"), f"{where}.evidence"),
                level,
                _int(item.get("count"), f"{where}.count", 1),
                _duration(item.get("window"), f"{where}.window"),
                _raised(item.get("raise"), f"{where}.raise"),
                distinct,
                _int(item.get("min_distinct", 1), f"{where}.min_distinct", 1),
                _int(item.get("min_recovered", 0), f"{where}.min_recovered", 0),
                _bool(item.get("unexplained", True), f"{where}.unexplained"),
                None if clear_after is None else _duration(clear_after, f"{where}.clear_after"),
            )
        )
        rule = backward[-1]
        if rule.min_distinct > rule.count:
            raise InvalidInput(f"{where}.min_distinct: cannot exceed count ({rule.count})")
        if rule.min_distinct > 1 and rule.distinct is None:
            raise InvalidInput(f"{where}.min_distinct: needs `distinct` (the level counted)")
        if rule.min_recovered > rule.count:
            raise InvalidInput(f"{where}.min_recovered: cannot exceed count ({rule.count})")
        if rule.raises.fault_type in rule.evidence:
            raise InvalidInput(f"{where}.raise.fault_type: must not be one of its evidence")
    raised_types = [b.raises.fault_type for b in backward]
    if len(set(raised_types)) != len(raised_types):
        raise InvalidInput("backward: each rule must raise its own fault_type")
    return Rules(tuple(forward), tuple(backward), tuple(skipped))


def _list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"{where}: a list of rules is required")
    return value


def _mapping(value: object, where: str, keys: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{where}: a mapping is required")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise InvalidInput(f"{where}: unknown key(s) {unknown}")
    return value


def _name(item: Mapping[str, Any], where: str, names: set[str]) -> str:
    name = _str_of(item.get("name"), f"{where}.name")
    if name in names:
        raise InvalidInput(f"{where}.name: {name!r} is used by another rule")
    names.add(name)
    return name


def _str_of(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where}: a non-empty string is required")
    return value.strip()


def _types(value: object, where: str) -> frozenset[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"{where}: a non-empty list of fault types is required")
    return frozenset(_str_of(v, f"{where}[{i}]") for i, v in enumerate(value))


def _int(value: object, where: str, least: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise InvalidInput(f"{where}: an integer >= {least} is required")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}: true or false is required")
    return value


def _duration(value: object, where: str) -> timedelta:
    if value is None:
        raise InvalidInput(f"{where}: a duration is required, e.g. '10m', '30s'")
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise InvalidInput(f"{where}: a duration is required, e.g. '10m', '30s'")
    try:
        return parse_duration(value)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc.detail}") from None


def _raised(value: object, where: str) -> RaisedAlarm:
    item = _mapping(value, where, RAISE_KEYS)
    try:
        severity = Severity(item.get("severity", "MAJOR"))
        event_type = EventType(item.get("event_type", "EQUIPMENT_ALARM"))
        resource = FaultyResourceType(item.get("resource", "COMPUTE"))
    except ValueError as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    if severity is Severity.CLEARED:
        raise InvalidInput(f"{where}.severity: a rule cannot raise CLEARED")
    return RaisedAlarm(
        _str_of(item.get("fault_type"), f"{where}.fault_type"),
        _str_of(item.get("probable_cause"), f"{where}.probable_cause"),
        severity,
        event_type,
        resource,
    )


def _forward_doc(r: ForwardRule) -> dict[str, Any]:
    return {
        "name": r.name,
        "roots": sorted(r.roots),
        "level": r.level,
        "dependents": "any" if r.dependents is None else sorted(r.dependents),
        "before": span_text(r.before),
    }


def _backward_doc(r: BackwardRule) -> dict[str, Any]:
    return {
        "name": r.name,
        "evidence": sorted(r.evidence),
        "level": r.level,
        "count": r.count,
        "window": span_text(r.window),
        "distinct": r.distinct,
        "min_distinct": r.min_distinct,
        "min_recovered": r.min_recovered,
        "unexplained": r.unexplained,
        "clear_after": None if r.clear_after is None else span_text(r.clear_after),
        "raise": {
            "fault_type": r.raises.fault_type,
            "probable_cause": r.raises.probable_cause,
            "severity": r.raises.severity.value,
            "event_type": r.raises.event_type.value,
            "resource": r.raises.resource.value,
        },
    }
