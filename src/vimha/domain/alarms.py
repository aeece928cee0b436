"""The alarm model (ETSI NFV-SOL 003 clause 7 names) and its life cycle.

An alarm is keyed for de-duplication by (managed object, fault type, probable cause): the same
fault on the same object raised twice updates one alarm; a clear closes it; a later raise opens
a new one. `apply_event` is the pure decision; the store persists what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from vimha.domain.clock import iso
from vimha.domain.errors import Conflict


class Severity(StrEnum):
    CRITICAL = "CRITICAL"
    MAJOR = "MAJOR"
    MINOR = "MINOR"
    WARNING = "WARNING"
    INDETERMINATE = "INDETERMINATE"
    CLEARED = "CLEARED"


SEVERITY_RANK: dict[Severity, int] = {
    Severity.CLEARED: 0,
    Severity.INDETERMINATE: 1,
    Severity.WARNING: 2,
    Severity.MINOR: 3,
    Severity.MAJOR: 4,
    Severity.CRITICAL: 5,
}


class EventType(StrEnum):
    COMMUNICATIONS_ALARM = "COMMUNICATIONS_ALARM"
    PROCESSING_ERROR_ALARM = "PROCESSING_ERROR_ALARM"
    ENVIRONMENTAL_ALARM = "ENVIRONMENTAL_ALARM"
    QOS_ALARM = "QOS_ALARM"
    EQUIPMENT_ALARM = "EQUIPMENT_ALARM"


class FaultyResourceType(StrEnum):
    COMPUTE = "COMPUTE"
    STORAGE = "STORAGE"
    NETWORK = "NETWORK"


class AckState(StrEnum):
    ACKNOWLEDGED = "ACKNOWLEDGED"
    UNACKNOWLEDGED = "UNACKNOWLEDGED"


@dataclass(frozen=True, slots=True)
class Location:
    """Place of a resource in the aggregation hierarchy, outermost level first.

    `levels` pairs a level name with its value, e.g. (("site", "s1"), ("zone", "z1")).
    """

    levels: tuple[tuple[str, str], ...] = ()

    @property
    def path(self) -> str:
        return "/".join(value for _, value in self.levels)

    def as_dict(self) -> dict[str, str]:
        out = dict(self.levels)
        out["path"] = self.path
        return out

    def within(self, prefix: str) -> bool:
        """True if this location lies under `prefix` ("s1/z1" matches "s1/z1/r2/h3")."""
        prefix = prefix.strip("/")
        if not prefix:
            return True
        return self.path == prefix or self.path.startswith(prefix + "/")


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """A fault observed by a monitor: raise/update (any severity) or clear (CLEARED)."""

    managed_object_id: str
    fault_type: str
    probable_cause: str
    perceived_severity: Severity
    event_type: EventType
    event_time: datetime
    faulty_resource_type: FaultyResourceType = FaultyResourceType.COMPUTE
    vim_level_resource_type: str = "host"
    resource_id: str = ""
    fault_details: tuple[str, ...] = ()
    location: Location = field(default_factory=Location)
    is_root_cause: bool = True
    correlated_alarm_ids: tuple[str, ...] = ()
    source: str = "native"

    @property
    def dedup_key(self) -> str:
        return dedup_key(self.managed_object_id, self.fault_type, self.probable_cause)


def dedup_key(managed_object_id: str, fault_type: str, probable_cause: str) -> str:
    return f"{managed_object_id}\x1f{fault_type}\x1f{probable_cause}"


@dataclass(frozen=True, slots=True)
class Alarm:
    id: str
    managed_object_id: str
    vim_connection_id: str
    resource_id: str
    vim_level_resource_type: str
    faulty_resource_type: FaultyResourceType
    alarm_raised_time: datetime
    alarm_changed_time: datetime | None
    alarm_cleared_time: datetime | None
    alarm_acknowledged_time: datetime | None
    ack_state: AckState
    perceived_severity: Severity
    peak_severity: Severity
    event_time: datetime
    event_type: EventType
    fault_type: str
    probable_cause: str
    is_root_cause: bool
    correlated_alarm_ids: tuple[str, ...]
    fault_details: tuple[str, ...]
    location: Location
    version: int = 1

    @property
    def active(self) -> bool:
        return self.alarm_cleared_time is None

    @property
    def dedup_key(self) -> str:
        return dedup_key(self.managed_object_id, self.fault_type, self.probable_cause)

    @property
    def etag(self) -> str:
        return f'"{self.id}-{self.version}"'

    def details_with_location(self) -> list[str]:
        """faultDetails, ending with the failure location (FAULT-5) when one is known."""
        details = list(self.fault_details)
        if self.location.levels:
            details.append(f"location={self.location.path}")
        return details

    def to_sol(self, base_url: str) -> dict[str, object]:
        """The SOL 003 Alarm representation (plus the `location` extension). Optional
        attributes without a value are left out, never null (SOL 013 clause 4.4)."""
        doc: dict[str, object] = {
            "id": self.id,
            "managedObjectId": self.managed_object_id,
            "rootCauseFaultyResource": {
                "faultyResource": {
                    "vimConnectionId": self.vim_connection_id,
                    "resourceId": self.resource_id,
                    "vimLevelResourceType": self.vim_level_resource_type,
                },
                "faultyResourceType": self.faulty_resource_type.value,
            },
            "alarmRaisedTime": iso(self.alarm_raised_time),
        }
        for name, ts in (
            ("alarmChangedTime", self.alarm_changed_time),
            ("alarmClearedTime", self.alarm_cleared_time),
            ("alarmAcknowledgedTime", self.alarm_acknowledged_time),
        ):
            if ts is not None:
                doc[name] = iso(ts)
        doc.update(
            {
                "ackState": self.ack_state.value,
                "perceivedSeverity": self.perceived_severity.value,
                "eventTime": iso(self.event_time),
                "eventType": self.event_type.value,
                "faultType": self.fault_type,
                "probableCause": self.probable_cause,
                "isRootCause": self.is_root_cause,
                "correlatedAlarmIds": list(self.correlated_alarm_ids),
                "faultDetails": self.details_with_location(),
                "location": self.location.as_dict(),
                "_links": {
                    "self": {"href": f"{base_url}/vimfm/v1/alarms/{self.id}"},
                    "objectInstance": {
                        "href": f"{base_url}/vim/v1/objects/{self.managed_object_id}"
                    },
                },
            }
        )
        return doc


class ChangeKind(StrEnum):
    RAISED = "RAISED"
    UPDATED = "UPDATED"
    REPEATED = "REPEATED"
    CLEARED = "CLEARED"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    UNACKNOWLEDGED = "UNACKNOWLEDGED"


NOTIFYING_CHANGES = frozenset({ChangeKind.RAISED, ChangeKind.UPDATED, ChangeKind.CLEARED})


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """What happened to one alarm, with the sentence that explains why."""

    kind: ChangeKind
    alarm: Alarm
    reason: str

    @property
    def notifies(self) -> bool:
        return self.kind in NOTIFYING_CHANGES


def apply_event(
    existing: Alarm | None, event: FaultEvent, now: datetime, new_id: str, vim_connection_id: str
) -> AlarmChange | None:
    """Decide what an event does to the active alarm with the same dedup key (or to none).

    Returns None when the event changes nothing (a clear for an alarm that is not active).
    """
    obj = event.managed_object_id
    if event.perceived_severity is Severity.CLEARED:
        if existing is None:
            return None
        cleared = replace(
            existing,
            perceived_severity=Severity.CLEARED,
            alarm_cleared_time=now,
            alarm_changed_time=now,
            event_time=event.event_time,
            version=existing.version + 1,
        )
        return AlarmChange(ChangeKind.CLEARED, cleared, f"{event.fault_type} on {obj} cleared")
    if existing is None:
        alarm = Alarm(
            id=new_id,
            managed_object_id=obj,
            vim_connection_id=vim_connection_id,
            resource_id=event.resource_id or obj,
            vim_level_resource_type=event.vim_level_resource_type,
            faulty_resource_type=event.faulty_resource_type,
            alarm_raised_time=now,
            alarm_changed_time=None,
            alarm_cleared_time=None,
            alarm_acknowledged_time=None,
            ack_state=AckState.UNACKNOWLEDGED,
            perceived_severity=event.perceived_severity,
            peak_severity=event.perceived_severity,
            event_time=event.event_time,
            event_type=event.event_type,
            fault_type=event.fault_type,
            probable_cause=event.probable_cause,
            is_root_cause=event.is_root_cause,
            correlated_alarm_ids=event.correlated_alarm_ids,
            fault_details=event.fault_details,
            location=event.location,
        )
        return AlarmChange(
            ChangeKind.RAISED, alarm, f"{event.perceived_severity} {event.fault_type} on {obj}"
        )
    # An event that states no correlation (the default: a root cause, nothing correlated)
    # keeps the one the alarm has: the correlation rules set it, its source repeating the
    # fault must not undo it (`domain/correlation.py`).
    if states_correlation(event):
        is_root, correlated = event.is_root_cause, event.correlated_alarm_ids
    else:
        is_root, correlated = existing.is_root_cause, existing.correlated_alarm_ids
    changed = (
        existing.perceived_severity is not event.perceived_severity
        or existing.fault_details != event.fault_details
        or existing.event_type is not event.event_type
        or existing.correlated_alarm_ids != correlated
        or existing.is_root_cause != is_root
    )
    if not changed:
        repeated = replace(existing, event_time=max(existing.event_time, event.event_time))
        return AlarmChange(ChangeKind.REPEATED, repeated, f"{event.fault_type} on {obj} repeated")
    peak = max(existing.peak_severity, event.perceived_severity, key=SEVERITY_RANK.__getitem__)
    updated = replace(
        existing,
        perceived_severity=event.perceived_severity,
        peak_severity=peak,
        fault_details=event.fault_details,
        event_type=event.event_type,
        event_time=event.event_time,
        correlated_alarm_ids=correlated,
        is_root_cause=is_root,
        alarm_changed_time=now,
        version=existing.version + 1,
    )
    reason = (
        f"{event.fault_type} on {obj} changed "
        f"{existing.perceived_severity} -> {event.perceived_severity}"
    )
    return AlarmChange(ChangeKind.UPDATED, updated, reason)


def states_correlation(event: FaultEvent) -> bool:
    """Does the event say anything of correlation (not a root cause, or related alarms)?"""
    return not event.is_root_cause or bool(event.correlated_alarm_ids)


def apply_correlation(
    alarm: Alarm, add: tuple[str, ...], dependent: bool, now: datetime, reason: str
) -> AlarmChange | None:
    """Tie an alarm (active or cleared) to others: `add` joins its correlatedAlarmIds,
    `dependent` makes it no root cause. Correlations only grow; None if nothing changes."""
    ids = tuple(dict.fromkeys((*alarm.correlated_alarm_ids, *add)))
    is_root = alarm.is_root_cause and not dependent
    if ids == alarm.correlated_alarm_ids and is_root == alarm.is_root_cause:
        return None
    updated = replace(
        alarm,
        correlated_alarm_ids=ids,
        is_root_cause=is_root,
        alarm_changed_time=now,
        version=alarm.version + 1,
    )
    return AlarmChange(ChangeKind.UPDATED, updated, reason)


def apply_ack(alarm: Alarm, ack_state: AckState, now: datetime) -> AlarmChange:
    """Acknowledge or un-acknowledge; raises Conflict if the alarm is already in that state."""
    if alarm.ack_state is ack_state:
        raise Conflict(f"alarm {alarm.id} is already {ack_state.value}")
    acked = ack_state is AckState.ACKNOWLEDGED
    new = replace(
        alarm,
        ack_state=ack_state,
        alarm_acknowledged_time=now if acked else None,
        version=alarm.version + 1,
    )
    kind = ChangeKind.ACKNOWLEDGED if acked else ChangeKind.UNACKNOWLEDGED
    return AlarmChange(kind, new, f"alarm {alarm.id} {ack_state.value.lower()}")


@dataclass(frozen=True, slots=True)
class ObjectView:
    """A managed object as its alarms show it (hosts and services get their own resources
    with the node agents; this view stays for any object an outside monitor names)."""

    id: str
    location: Location
    resource_types: tuple[str, ...]
    active_alarm_ids: tuple[str, ...]
    highest_active_severity: Severity
    last_event_time: datetime


def object_view(object_id: str, alarms: list[Alarm]) -> ObjectView | None:
    """Summarise an object's alarms (newest first); None if no alarm ever named it."""
    if not alarms:
        return None
    active = [a for a in alarms if a.active]
    highest = max(
        (a.perceived_severity for a in active),
        key=SEVERITY_RANK.__getitem__,
        default=Severity.CLEARED,
    )
    located = next((a.location for a in alarms if a.location.levels), Location())
    return ObjectView(
        id=object_id,
        location=located,
        resource_types=tuple(sorted({a.vim_level_resource_type for a in alarms})),
        active_alarm_ids=tuple(a.id for a in active),
        highest_active_severity=highest,
        last_event_time=max(a.event_time for a in alarms),
    )
