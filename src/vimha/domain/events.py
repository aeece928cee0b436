"""Fault events from outside monitors, mapped to FaultEvent by declarative, validated tables.

Three formats: vimha's native JSON, the OPNFV Doctor inspector format (so a Doctor monitor can
point at vimha unchanged) and the Prometheus Alertmanager webhook. A batch is mapped whole or
refused whole: any malformed item raises InvalidInput naming it, before anything is stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from vimha.domain.alarms import EventType, FaultEvent, FaultyResourceType, Location, Severity
from vimha.domain.clock import parse_iso
from vimha.domain.errors import InvalidInput

DEFAULT_HIERARCHY = ("site", "zone", "rack", "host")


@dataclass(frozen=True, slots=True)
class DoctorMapping:
    fault_type: str
    probable_cause: str
    event_type: EventType
    severity: Severity
    faulty_resource_type: FaultyResourceType
    vim_level_resource_type: str


# Doctor event type -> alarm. Status "down" raises with `severity`; status "up" clears.
DOCTOR_TYPES: Mapping[str, DoctorMapping] = {
    "compute.host.down": DoctorMapping(
        "HOST_DOWN",
        "compute host reported down by Doctor monitor",
        EventType.EQUIPMENT_ALARM,
        Severity.CRITICAL,
        FaultyResourceType.COMPUTE,
        "host",
    ),
}
DOCTOR_RAISE_STATUSES = frozenset({"down", "error", "fault"})
DOCTOR_CLEAR_STATUSES = frozenset({"up", "ok", "enabled"})

# Alertmanager severity label -> perceived severity (case-insensitive).
ALERTMANAGER_SEVERITY: Mapping[str, Severity] = {
    "critical": Severity.CRITICAL,
    "page": Severity.CRITICAL,
    "major": Severity.MAJOR,
    "error": Severity.MAJOR,
    "minor": Severity.MINOR,
    "warning": Severity.WARNING,
    "info": Severity.WARNING,
    "none": Severity.INDETERMINATE,
}
# Labels that name the managed object, first present wins.
ALERTMANAGER_OBJECT_LABELS = ("vimha_object", "host", "hostname", "node", "instance")
ALERTMANAGER_DEFAULT_EVENT_TYPE = EventType.QOS_ALARM


def _validate_tables() -> None:
    for name, mapping in DOCTOR_TYPES.items():
        if mapping.severity is Severity.CLEARED or not mapping.fault_type:
            raise InvalidInput(f"DOCTOR_TYPES[{name!r}] must raise a non-CLEARED alarm")
    if DOCTOR_RAISE_STATUSES & DOCTOR_CLEAR_STATUSES:
        raise InvalidInput("Doctor raise and clear statuses overlap")
    if any(k != k.lower() for k in ALERTMANAGER_SEVERITY):
        raise InvalidInput("ALERTMANAGER_SEVERITY keys must be lower case")


_validate_tables()


def _str(item: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = item.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where}.{key}: a non-empty string is required")
    return value


def _enum(enum: type[Any], value: object, where: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        raise InvalidInput(f"{where}: {value!r} is not one of {allowed}") from None


def _time(value: object, where: str, now: datetime) -> datetime:
    if value is None:
        return now
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: an RFC 3339 time is required")
    try:
        return parse_iso(value)
    except ValueError:
        raise InvalidInput(f"{where}: {value!r} is not an RFC 3339 time") from None


def location_from(
    data: object, hierarchy: Sequence[str], where: str, host: str | None = None
) -> Location:
    """A Location from {"site": .., "zone": .., ...}; keys must be hierarchy levels."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{where}: an object of {', '.join(hierarchy)} is required")
    unknown = [k for k in data if k not in hierarchy and k != "path"]
    if unknown:
        raise InvalidInput(f"{where}: unknown level(s) {unknown}; levels are {list(hierarchy)}")
    values = dict(data)
    if host and "host" in hierarchy and not values.get("host"):
        values["host"] = host
    levels = []
    for level in hierarchy:
        value = values.get(level)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or "/" in value:
            raise InvalidInput(f"{where}.{level}: a string without '/' is required")
        levels.append((level, value))
    return Location(tuple(levels))


def to_native(event: FaultEvent) -> dict[str, Any]:
    """The native-event form of an event (what an agent posts to /vim/v1/events)."""
    return {
        "managedObjectId": event.managed_object_id,
        "faultType": event.fault_type,
        "probableCause": event.probable_cause,
        "perceivedSeverity": event.perceived_severity.value,
        "eventType": event.event_type.value,
        "eventTime": event.event_time.isoformat(),
        "faultyResourceType": event.faulty_resource_type.value,
        "vimLevelResourceType": event.vim_level_resource_type,
        "resourceId": event.resource_id or event.managed_object_id,
        "faultDetails": list(event.fault_details),
        "location": {k: v for k, v in event.location.levels if k != "component"},
        "isRootCause": event.is_root_cause,
        "correlatedAlarmIds": list(event.correlated_alarm_ids),
    }


def placed(event: FaultEvent, inventory: Mapping[str, Location]) -> FaultEvent:
    """An event located by its host alone (an agent knows its name, not its rack) gets the
    host's declared place in the hierarchy, so location filters see it where it is."""
    levels = dict(event.location.levels)
    known = inventory.get(levels.get("host", ""))
    if known is None or len(levels) != 1:
        return event
    return replace(event, location=known)


NATIVE_KEYS = frozenset(
    {
        "managedObjectId",
        "faultType",
        "probableCause",
        "perceivedSeverity",
        "eventType",
        "eventTime",
        "faultyResourceType",
        "vimLevelResourceType",
        "resourceId",
        "faultDetails",
        "location",
        "isRootCause",
        "correlatedAlarmIds",
    }
)


def native_events(
    items: Sequence[Mapping[str, Any]], now: datetime, hierarchy: Sequence[str]
) -> list[FaultEvent]:
    """Map native events (see docs/events.md); all or nothing."""
    out = []
    for i, item in enumerate(items):
        where = f"events[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(f"{where}: an object is required")
        unknown = sorted(set(item) - NATIVE_KEYS)
        if unknown:
            raise InvalidInput(f"{where}: unknown attribute(s) {unknown}")
        severity = _enum(Severity, item.get("perceivedSeverity"), f"{where}.perceivedSeverity")
        if not isinstance(item.get("isRootCause", True), bool):
            raise InvalidInput(f"{where}.isRootCause: true or false is required")
        if item.get("resourceId") is not None and not isinstance(item["resourceId"], str):
            raise InvalidInput(f"{where}.resourceId: a string is required")
        details = item.get("faultDetails") or []
        if not isinstance(details, list) or not all(isinstance(d, str) for d in details):
            raise InvalidInput(f"{where}.faultDetails: a list of strings is required")
        correlated = item.get("correlatedAlarmIds") or []
        if not isinstance(correlated, list) or not all(isinstance(d, str) for d in correlated):
            raise InvalidInput(f"{where}.correlatedAlarmIds: a list of strings is required")
        obj = _str(item, "managedObjectId", where)
        out.append(
            FaultEvent(
                managed_object_id=obj,
                fault_type=_str(item, "faultType", where),
                probable_cause=_str(item, "probableCause", where),
                perceived_severity=severity,
                event_type=_enum(EventType, item.get("eventType"), f"{where}.eventType"),
                event_time=_time(item.get("eventTime"), f"{where}.eventTime", now),
                faulty_resource_type=_enum(
                    FaultyResourceType,
                    item.get("faultyResourceType", "COMPUTE"),
                    f"{where}.faultyResourceType",
                ),
                vim_level_resource_type=_str(item, "vimLevelResourceType", where, "host"),
                resource_id=str(item.get("resourceId") or obj),
                fault_details=tuple(details),
                location=location_from(item.get("location"), hierarchy, f"{where}.location"),
                is_root_cause=bool(item.get("isRootCause", True)),
                correlated_alarm_ids=tuple(correlated),
                source="native",
            )
        )
    return out


def doctor_events(
    items: Sequence[Mapping[str, Any]], now: datetime, hierarchy: Sequence[str]
) -> list[FaultEvent]:
    """Map OPNFV Doctor inspector events: [{time, type, details{hostname, status, monitor,
    monitor_event_id}}]."""
    out = []
    for i, item in enumerate(items):
        where = f"events[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(f"{where}: an object is required")
        kind = _str(item, "type", where)
        mapping = DOCTOR_TYPES.get(kind)
        if mapping is None:
            raise InvalidInput(f"{where}.type: {kind!r} is not one of {sorted(DOCTOR_TYPES)}")
        details = item.get("details")
        if not isinstance(details, Mapping):
            raise InvalidInput(f"{where}.details: an object is required")
        host = _str(details, "hostname", f"{where}.details")
        status = _str(details, "status", f"{where}.details").lower()
        if status in DOCTOR_RAISE_STATUSES:
            severity = mapping.severity
        elif status in DOCTOR_CLEAR_STATUSES:
            severity = Severity.CLEARED
        else:
            allowed = sorted(DOCTOR_RAISE_STATUSES | DOCTOR_CLEAR_STATUSES)
            raise InvalidInput(f"{where}.details.status: {status!r} is not one of {allowed}")
        monitor = str(details.get("monitor", "doctor"))
        event_id = str(details.get("monitor_event_id", ""))
        out.append(
            FaultEvent(
                managed_object_id=host,
                fault_type=mapping.fault_type,
                probable_cause=mapping.probable_cause,
                perceived_severity=severity,
                event_type=mapping.event_type,
                event_time=_time(item.get("time"), f"{where}.time", now),
                faulty_resource_type=mapping.faulty_resource_type,
                vim_level_resource_type=mapping.vim_level_resource_type,
                fault_details=(
                    f"monitor={monitor}",
                    f"monitor_event_id={event_id}",
                    f"type={kind}",
                ),
                location=location_from({}, hierarchy, f"{where}", host=host),
                source="doctor",
            )
        )
    return out


def alertmanager_events(
    payload: Mapping[str, Any], now: datetime, hierarchy: Sequence[str]
) -> list[FaultEvent]:
    """Map an Alertmanager webhook (version 4) payload; one event per alert."""
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise InvalidInput("alerts: a non-empty list is required")
    out = []
    for i, alert in enumerate(alerts):
        where = f"alerts[{i}]"
        if not isinstance(alert, Mapping):
            raise InvalidInput(f"{where}: an object is required")
        labels = alert.get("labels")
        if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
            raise InvalidInput(f"{where}.labels: an object of strings is required")
        annotations = alert.get("annotations") or {}
        if not isinstance(annotations, Mapping):
            raise InvalidInput(f"{where}.annotations: an object is required")
        name = _str(labels, "alertname", f"{where}.labels")
        obj = next((labels[k] for k in ALERTMANAGER_OBJECT_LABELS if labels.get(k)), None)
        if obj is None:
            raise InvalidInput(
                f"{where}.labels: one of {list(ALERTMANAGER_OBJECT_LABELS)} must name the object"
            )
        status = alert.get("status", payload.get("status"))
        if status not in ("firing", "resolved"):
            raise InvalidInput(f"{where}.status: 'firing' or 'resolved' is required")
        if status == "resolved":
            severity = Severity.CLEARED
        else:
            label = str(labels.get("severity", "warning")).lower()
            if label not in ALERTMANAGER_SEVERITY:
                allowed = sorted(ALERTMANAGER_SEVERITY)
                raise InvalidInput(f"{where}.labels.severity: {label!r} is not one of {allowed}")
            severity = ALERTMANAGER_SEVERITY[label]
        event_type = ALERTMANAGER_DEFAULT_EVENT_TYPE
        if "event_type" in labels:
            event_type = _enum(EventType, labels["event_type"], f"{where}.labels.event_type")
        cause = str(labels.get("probable_cause") or annotations.get("summary") or name)
        time_key = "endsAt" if status == "resolved" else "startsAt"
        levels = {k: labels[k] for k in hierarchy if k in labels and k != "host"}
        details = [f"{k}={v}" for k, v in sorted(labels.items())]
        if annotations.get("description"):
            details.append(f"description={annotations['description']}")
        out.append(
            FaultEvent(
                managed_object_id=obj,
                fault_type=name,
                probable_cause=cause,
                perceived_severity=severity,
                event_type=event_type,
                event_time=_time(alert.get(time_key), f"{where}.{time_key}", now),
                faulty_resource_type=_enum(
                    FaultyResourceType,
                    labels.get("faulty_resource_type", "COMPUTE"),
                    f"{where}.labels.faulty_resource_type",
                ),
                vim_level_resource_type=str(labels.get("resource_type", "host")),
                fault_details=tuple(details),
                location=location_from(levels, hierarchy, f"{where}.labels", host=obj),
                source="alertmanager",
            )
        )
    return out
