"""Native, OPNFV Doctor and Alertmanager events -> FaultEvent, all or nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from vimha.domain.alarms import EventType, Severity
from vimha.domain.errors import InvalidInput
from vimha.domain.events import (
    DEFAULT_HIERARCHY,
    alertmanager_events,
    doctor_events,
    native_events,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
H = DEFAULT_HIERARCHY

NATIVE: dict[str, Any] = {
    "managedObjectId": "cmp-1",
    "faultType": "HOST_DOWN",
    "probableCause": "power",
    "perceivedSeverity": "CRITICAL",
    "eventType": "EQUIPMENT_ALARM",
    "eventTime": "2026-01-01T00:00:01Z",
    "location": {"site": "s1", "rack": "r1"},
}


def test_native_event_maps_every_field() -> None:
    [event] = native_events([NATIVE], NOW, H)
    assert event.perceived_severity is Severity.CRITICAL
    assert event.event_time == datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert event.location.path == "s1/r1"
    assert event.resource_id == "cmp-1"


@pytest.mark.parametrize(
    ("patch", "complaint"),
    [
        ({"perceivedSeverity": "HIGH"}, "events\\[1\\].perceivedSeverity"),
        ({"eventType": None}, "eventType"),
        ({"managedObjectId": ""}, "managedObjectId"),
        ({"eventTime": "yesterday"}, "eventTime"),
        ({"location": {"planet": "earth"}}, "unknown level"),
        ({"location": {"site": "a/b"}}, "without '/'"),
        ({"faultDetails": [1]}, "faultDetails"),
    ],
)
def test_native_batch_refused_whole_naming_the_bad_item(
    patch: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(InvalidInput, match=complaint):
        native_events([NATIVE, {**NATIVE, **patch}], NOW, H)


def test_doctor_host_down_and_up() -> None:
    down = {
        "time": "2026-01-01T00:00:00Z",
        "type": "compute.host.down",
        "details": {
            "hostname": "cmp-3",
            "status": "down",
            "monitor": "sample",
            "monitor_event_id": "e1",
        },
    }
    up = {**down, "details": {**down["details"], "status": "up"}}
    raised, cleared = doctor_events([down, up], NOW, H)
    assert raised.managed_object_id == "cmp-3"
    assert raised.perceived_severity is Severity.CRITICAL
    assert raised.event_type is EventType.EQUIPMENT_ALARM
    assert raised.location.path == "cmp-3"
    assert "monitor_event_id=e1" in raised.fault_details
    assert cleared.perceived_severity is Severity.CLEARED
    assert raised.dedup_key == cleared.dedup_key


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "compute.host.exploded", "details": {"hostname": "h", "status": "down"}},
        {"type": "compute.host.down", "details": {"hostname": "h", "status": "sideways"}},
        {"type": "compute.host.down", "details": {"status": "down"}},
        {"type": "compute.host.down"},
    ],
)
def test_doctor_malformed(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        doctor_events([bad], NOW, H)


def _alert(**kw: Any) -> dict[str, Any]:
    alert = {
        "status": "firing",
        "labels": {
            "alertname": "NodeFanFailed",
            "instance": "cmp-2:9100",
            "host": "cmp-2",
            "severity": "critical",
            "rack": "r1",
        },
        "annotations": {"summary": "fan 2 stopped"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
    }
    alert.update(kw)
    return alert


def test_alertmanager_firing_and_resolved() -> None:
    payload = {
        "version": "4",
        "status": "firing",
        "alerts": [_alert(), _alert(status="resolved", endsAt="2026-01-01T00:05:00Z")],
    }
    firing, resolved = alertmanager_events(payload, NOW, H)
    assert firing.managed_object_id == "cmp-2"  # "host" wins over "instance"
    assert firing.perceived_severity is Severity.CRITICAL
    assert firing.probable_cause == "fan 2 stopped"
    assert firing.event_type is EventType.QOS_ALARM
    assert firing.location.path == "r1/cmp-2"
    assert resolved.perceived_severity is Severity.CLEARED
    assert resolved.event_time == datetime(2026, 1, 1, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    "payload",
    [
        {"alerts": []},
        {"alerts": [_alert(labels={"alertname": "X"})]},
        {"alerts": [_alert(labels={"alertname": "X", "host": "h", "severity": "apocalyptic"})]},
        {"alerts": [_alert(status="pending")]},
        {"alerts": [_alert(labels={"alertname": "X", "host": "h", "event_type": "NOPE"})]},
    ],
)
def test_alertmanager_malformed(payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        alertmanager_events(payload, NOW, H)
