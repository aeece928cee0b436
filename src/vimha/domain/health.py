"""Host health changes -> actions: alarms raised and cleared, health notifications (FAULT-9).

`decide_health(previous, current, ...)` is pure: given each host's previous and current
classification it returns the fault events to ingest (raise the new failure's alarm, clear
the old one, one link alarm per lost plane) and the health changes to publish, each with the
classification's reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from vimha.domain.alarms import FaultEvent, Location, Severity
from vimha.domain.classification import FAILURE_ALARMS, Classification, FailureKind


@dataclass(frozen=True, slots=True)
class HealthChange:
    host: str
    previous: Classification | None
    current: Classification

    @property
    def reason(self) -> str:
        return self.current.reason


@dataclass(frozen=True, slots=True)
class HealthActions:
    events: tuple[FaultEvent, ...]
    changes: tuple[HealthChange, ...]


def _event(
    kind: FailureKind,
    obj: str,
    severity: Severity,
    now: datetime,
    location: Location,
    resource_type: str,
    reason: str,
) -> FaultEvent:
    spec = FAILURE_ALARMS[kind]
    return FaultEvent(
        managed_object_id=obj,
        fault_type=spec.fault_type,
        probable_cause=spec.probable_cause,
        perceived_severity=severity,
        event_type=spec.event_type,
        event_time=now,
        faulty_resource_type=spec.resource,
        vim_level_resource_type=resource_type,
        resource_id=obj,
        fault_details=(reason,),
        location=location,
        source="detector",
    )


def link_object(host: str, plane: str) -> str:
    return f"{host}/{plane}"


def decide_health(
    previous: Mapping[str, Classification],
    current: Mapping[str, Classification],
    locations: Mapping[str, Location],
    now: datetime,
) -> HealthActions:
    events: list[FaultEvent] = []
    changes: list[HealthChange] = []
    for host, new in current.items():
        old = previous.get(host)
        loc = locations.get(host, Location())
        if (
            old is not None
            and old.kind is new.kind
            and old.health is new.health
            and old.lost_planes == new.lost_planes
        ):
            continue
        # Host-level failure alarm: clear the old kind, raise the new one.
        old_kind = old.kind if old else None
        if old_kind not in (None, FailureKind.LINK_FAULT) and old_kind is not new.kind:
            assert old_kind is not None
            events.append(_event(old_kind, host, Severity.CLEARED, now, loc, "host", new.reason))
        if new.kind not in (None, FailureKind.LINK_FAULT) and new.kind is not old_kind:
            assert new.kind is not None
            spec = FAILURE_ALARMS[new.kind]
            events.append(_event(new.kind, host, spec.severity, now, loc, "host", new.reason))
        # Link alarms, one per plane, only while the host is otherwise reachable: when every
        # plane is down the host-level alarm says it all.
        old_links = set(old.lost_planes) if old and old.kind is FailureKind.LINK_FAULT else set()
        new_links = set(new.lost_planes) if new.kind is FailureKind.LINK_FAULT else set()
        link_spec = FAILURE_ALARMS[FailureKind.LINK_FAULT]
        for plane in sorted(new_links - old_links):
            events.append(
                _event(
                    FailureKind.LINK_FAULT,
                    link_object(host, plane),
                    link_spec.severity,
                    now,
                    loc,
                    "link",
                    new.reason,
                )
            )
        for plane in sorted(old_links - new_links):
            events.append(
                _event(
                    FailureKind.LINK_FAULT,
                    link_object(host, plane),
                    Severity.CLEARED,
                    now,
                    loc,
                    "link",
                    new.reason,
                )
            )
        if old is None or old.health is not new.health or old.kind is not new.kind:
            changes.append(HealthChange(host, old, new))
    return HealthActions(tuple(events), tuple(changes))
