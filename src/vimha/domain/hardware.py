"""Hardware health (FAULT-1): what a host's BMC reports about its components becomes
ENVIRONMENTAL or EQUIPMENT alarms, one per failing component, located at the component.

`decide_hardware(host, previous, reading, location, now)` is pure: it compares the
components' health with what was last alarmed and returns the events (raise, change of
severity, clear) and the new alarmed state. Readings taken while the host is powered off
say nothing about its components and are not judged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from vimha.domain.alarms import EventType, FaultEvent, FaultyResourceType, Location, Severity
from vimha.domain.classification import HardwareHealth


@dataclass(frozen=True, slots=True)
class Component:
    kind: str  # temperature, fan, psu, memory, system
    name: str
    health: HardwareHealth | None
    reading: float | None = None
    source: str = "bmc"  # bmc, hwmon, edac


@dataclass(frozen=True, slots=True)
class ComponentAlarm:
    fault_type: str
    probable_cause: str
    event_type: EventType
    critical: Severity = Severity.CRITICAL  # the severity of a CRITICAL component


COMPONENT_ALARMS: Mapping[str, ComponentAlarm] = {
    "temperature": ComponentAlarm(
        "TEMPERATURE_ABNORMAL", "temperature threshold crossed", EventType.ENVIRONMENTAL_ALARM
    ),
    "fan": ComponentAlarm("FAN_FAILURE", "cooling fan failure", EventType.ENVIRONMENTAL_ALARM),
    "psu": ComponentAlarm(
        "POWER_SUPPLY_FAILURE", "power supply failure", EventType.EQUIPMENT_ALARM
    ),
    "memory": ComponentAlarm(
        "MEMORY_ERRORS", "memory errors (ECC) reported", EventType.EQUIPMENT_ALARM
    ),
    # A bond member down: the plane still works through the others (ARCH-8), like a lost plane.
    "link": ComponentAlarm(
        "BOND_MEMBER_DOWN",
        "bond member link down",
        EventType.COMMUNICATIONS_ALARM,
        Severity.MAJOR,
    ),
    "system": ComponentAlarm(
        "HARDWARE_HEALTH", "BMC reports degraded hardware health", EventType.EQUIPMENT_ALARM
    ),
}
SEVERITY = {HardwareHealth.WARNING: Severity.MINOR, HardwareHealth.CRITICAL: Severity.CRITICAL}


def component_key(c: Component) -> str:
    return f"{c.kind}:{c.name}"


def system_component(
    rollup: HardwareHealth | None, components: Sequence[Component]
) -> Component | None:
    """The system's health rollup as a component, when it is bad and no component says why."""
    if rollup in (None, HardwareHealth.OK):
        return None
    if any(c.health == rollup for c in components):
        return None
    return Component("system", "system", rollup)


def _spec(c: Component) -> ComponentAlarm:
    return COMPONENT_ALARMS.get(c.kind, COMPONENT_ALARMS["system"])


def _event(
    host: str,
    c: Component,
    severity: Severity,
    location: Location,
    now: datetime,
) -> FaultEvent:
    spec = _spec(c)
    if severity is Severity.CRITICAL:
        severity = spec.critical
    reading = "" if c.reading is None else f", reading {c.reading:g}"
    health = c.health.value if c.health else "OK"
    detail = f"{c.name} ({c.kind}) health {health}{reading}, reported by {c.source}"
    network = FaultyResourceType.NETWORK if c.kind == "link" else FaultyResourceType.COMPUTE
    return component_event(
        host, c.name, c.kind, spec, severity, (detail,), location, now, c.source, network
    )


def component_event(
    host: str,
    component: str,
    resource_type: str,
    spec: ComponentAlarm,
    severity: Severity,
    details: tuple[str, ...],
    location: Location,
    now: datetime,
    source: str,
    faulty: FaultyResourceType = FaultyResourceType.COMPUTE,
) -> FaultEvent:
    """An alarm event on `<host>/<component>`, the component the last level of its location."""
    return FaultEvent(
        managed_object_id=f"{host}/{component}",
        fault_type=spec.fault_type,
        probable_cause=spec.probable_cause,
        perceived_severity=severity,
        event_type=spec.event_type,
        event_time=now,
        faulty_resource_type=faulty,
        vim_level_resource_type=resource_type,
        resource_id=f"{host}/{component}",
        fault_details=details,
        location=Location((*location.levels, ("component", component))),
        source=source,
    )


def decide_hardware(
    host: str,
    previous: Mapping[str, HardwareHealth],
    components: Sequence[Component],
    location: Location,
    now: datetime,
) -> tuple[list[FaultEvent], dict[str, HardwareHealth]]:
    """Events for every component whose health changed since `previous` (key -> health of
    what is alarmed), and the new alarmed state. A component gone from the reading clears."""
    events: list[FaultEvent] = []
    alarmed: dict[str, HardwareHealth] = {}
    seen = set()
    for c in components:
        key = component_key(c)
        seen.add(key)
        bad = c.health in SEVERITY
        if bad:
            assert c.health is not None
            alarmed[key] = c.health
            if previous.get(key) is not c.health:
                events.append(_event(host, c, SEVERITY[c.health], location, now))
        elif key in previous:
            events.append(_event(host, c, Severity.CLEARED, location, now))
    for key in sorted(set(previous) - seen):
        kind, _, name = key.partition(":")
        gone = Component(kind, name, None)
        events.append(_event(host, gone, Severity.CLEARED, location, now))
    return events, alarmed


# -- the BMC's event log (SEL) ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LogEntry:
    id: int
    created: str
    severity: HardwareHealth | None
    message: str
    sensor: str = ""


LOG_ALARM = ComponentAlarm(
    "BMC_LOG_EVENT", "the BMC logged a hardware event", EventType.EQUIPMENT_ALARM
)


@dataclass(frozen=True, slots=True)
class LogWatch:
    """What was seen of one host's event log: the newest entry id, and whether the log
    alarm is raised (at which severity)."""

    last_id: int | None = None
    raised: Severity | None = None


def decide_bmc_log(
    host: str,
    watch: LogWatch,
    entries: Sequence[LogEntry],
    rollup: HardwareHealth | None,
    location: Location,
    now: datetime,
) -> tuple[list[FaultEvent], LogWatch]:
    """New Warning/Critical entries raise (or raise the severity of) BMC_LOG_EVENT on
    `<host>/SEL` with their messages; it clears once the BMC reports the system healthy
    again. The first reading only sets the baseline: history is not news."""
    newest = max((e.id for e in entries), default=watch.last_id or 0)
    if watch.last_id is None:
        return [], LogWatch(newest, watch.raised)
    seen = watch.last_id if newest >= watch.last_id else 0  # a cleared log numbers anew
    fresh = [e for e in entries if e.id > seen and e.severity in SEVERITY]
    if fresh:
        worst = max((SEVERITY[e.severity] for e in fresh if e.severity), key=_rank)
        severity = worst if watch.raised is None else max(worst, watch.raised, key=_rank)
        details = tuple(
            f"{e.created} {e.severity.value if e.severity else ''}: {e.message}" for e in fresh[-5:]
        )
        return [_log_event(host, severity, details, location, now)], LogWatch(newest, severity)
    if watch.raised is not None and rollup is HardwareHealth.OK:
        done = ("the BMC reports the system healthy again",)
        return [_log_event(host, Severity.CLEARED, done, location, now)], LogWatch(newest, None)
    return [], LogWatch(newest, watch.raised)


def _rank(severity: Severity) -> int:
    return {Severity.MINOR: 1, Severity.MAJOR: 2, Severity.CRITICAL: 3}.get(severity, 0)


def _log_event(
    host: str, severity: Severity, details: tuple[str, ...], location: Location, now: datetime
) -> FaultEvent:
    return component_event(
        host, "SEL", "bmc-log", LOG_ALARM, severity, details, location, now, "bmc"
    )
