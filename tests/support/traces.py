"""Fault traces replayed through the pure decisions only: the alarm life cycle
(`apply_event`), the correlation rules (`correlate`) and the correlations they ask for
(`apply_correlation`), as the fault service and the correlation loop would, without a store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count

from vimha.domain.alarms import (
    Alarm,
    EventType,
    FaultEvent,
    FaultyResourceType,
    Location,
    Severity,
    apply_correlation,
    apply_event,
)
from vimha.domain.correlation import Action, ClearSuspect, Link, RaiseSuspect, correlate
from vimha.domain.correlation_rules import Rules

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RACKS = {"cmp-1": "r1", "cmp-2": "r1", "cmp-3": "r2", "cmp-4": "r2"}
POWER = {"cmp-1": "pd-a", "cmp-2": "pd-b", "cmp-3": "pd-a", "cmp-4": "pd-b"}


def host_location(host: str, power: bool = False) -> Location:
    levels = [("site", "s1"), ("zone", "z1")]
    if power:
        levels.append(("power", POWER[host]))
    levels += [("rack", RACKS[host]), ("host", host)]
    return Location(tuple(levels))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def host_failure(
    host: str,
    t: float,
    kind: str = "HOST_HW_FAILURE",
    power: bool = False,
    severity: Severity = Severity.CRITICAL,
) -> FaultEvent:
    return FaultEvent(
        host,
        kind,
        f"{kind.lower()} probable cause",
        severity,
        EventType.EQUIPMENT_ALARM,
        at(t),
        vim_level_resource_type="host",
        resource_id=host,
        location=host_location(host, power),
        source="detector",
    )


def instance_failure(
    host: str,
    instance: str,
    t: float,
    kind: str = "INSTANCE_CRASHED",
    vnf: str = "vnf-1",
    severity: Severity = Severity.MAJOR,
    power: bool = False,
) -> FaultEvent:
    return FaultEvent(
        vnf,
        kind,
        f"instance {instance}",
        severity,
        EventType.PROCESSING_ERROR_ALARM,
        at(t),
        vim_level_resource_type="instance",
        resource_id=instance,
        location=Location((*host_location(host, power).levels, ("instance", instance))),
        source="agent",
    )


def link_down(host: str, plane: str, t: float, severity: Severity = Severity.MAJOR) -> FaultEvent:
    return FaultEvent(
        f"{host}/{plane}",
        "NETWORK_PLANE_DOWN",
        "no heartbeat on this network plane",
        severity,
        EventType.COMMUNICATIONS_ALARM,
        at(t),
        faulty_resource_type=FaultyResourceType.NETWORK,
        vim_level_resource_type="link",
        resource_id=f"{host}/{plane}",
        location=host_location(host),
        source="detector",
    )


def component_failure(host: str, component: str, t: float) -> FaultEvent:
    return FaultEvent(
        f"{host}/{component}",
        "POWER_SUPPLY_FAILURE",
        "power supply failure",
        Severity.MAJOR,
        EventType.EQUIPMENT_ALARM,
        at(t),
        vim_level_resource_type="psu",
        resource_id=f"{host}/{component}",
        location=Location((*host_location(host).levels, ("component", component))),
        source="bmc",
    )


def cleared(event: FaultEvent, t: float) -> FaultEvent:
    from dataclasses import replace

    return replace(event, perceived_severity=Severity.CLEARED, event_time=at(t))


@dataclass
class Trace:
    """Alarms as a fault service keeps them, correlated as the loop would."""

    rules: Rules
    alarms: dict[str, Alarm] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)
    ids: count[int] = field(default_factory=count)

    def event(self, ev: FaultEvent, t: float | None = None) -> Alarm | None:
        now = at(t) if t is not None else ev.event_time
        active = next(
            (a for a in self.alarms.values() if a.active and a.dedup_key == ev.dedup_key), None
        )
        change = apply_event(active, ev, now, f"a{next(self.ids)}", "vim")
        if change is None:
            return None
        self.alarms[change.alarm.id] = change.alarm
        return change.alarm

    def correlate(self, t: float) -> list[Action]:
        """One pass of the rules at time `t`, its actions applied."""
        now = at(t)
        horizon = now - self.rules.horizon
        snapshot = [
            a
            for a in self.alarms.values()
            if a.active
            or a.alarm_raised_time >= horizon
            or (a.alarm_cleared_time is not None and a.alarm_cleared_time >= horizon)
        ]
        actions = correlate(snapshot, self.rules, now)
        for action in actions:
            if isinstance(action, Link):
                change = apply_correlation(
                    self.alarms[action.alarm_id], action.add, action.dependent, now, action.reason
                )
                if change is not None:
                    self.alarms[action.alarm_id] = change.alarm
            elif isinstance(action, RaiseSuspect | ClearSuspect):
                self.event(action.event, t)
        self.actions += actions
        return actions

    def settle(self, t: float) -> None:
        """Passes until nothing changes (at most a few: raising, then tying)."""
        for _ in range(5):
            if not self.correlate(t):
                return
        raise AssertionError("correlation does not settle")

    def of_type(self, fault_type: str) -> list[Alarm]:
        return [a for a in self.alarms.values() if a.fault_type == fault_type]

    def one(self, fault_type: str) -> Alarm:
        (alarm,) = self.of_type(fault_type)
        return alarm
