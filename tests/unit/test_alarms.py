"""Alarm life cycle: raise, dedup, update, repeat, clear, ack."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from vimha.domain.alarms import (
    AckState,
    ChangeKind,
    EventType,
    FaultEvent,
    Location,
    Severity,
    apply_ack,
    apply_event,
)
from vimha.domain.errors import Conflict

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LOC = Location((("site", "s1"), ("zone", "z1"), ("rack", "r1"), ("host", "cmp-1")))


def ev(severity: Severity = Severity.MAJOR, **kw: object) -> FaultEvent:
    base = FaultEvent(
        "cmp-1", "HOST_DOWN", "power", severity, EventType.EQUIPMENT_ALARM, T0, location=LOC
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def raised(severity: Severity = Severity.MAJOR):  # type: ignore[no-untyped-def]
    change = apply_event(None, ev(severity), T0, "a1", "vim")
    assert change is not None
    return change.alarm


def test_raise_creates_an_alarm_with_every_fault5_field() -> None:
    change = apply_event(None, ev(), T0, "a1", "vim")
    assert change is not None and change.kind is ChangeKind.RAISED and change.notifies
    sol = change.alarm.to_sol("http://x")
    assert sol["alarmRaisedTime"] == "2026-01-01T00:00:00.000Z"  # failure time
    assert sol["location"]["path"] == "s1/z1/r1/cmp-1"  # failure location
    assert sol["faultDetails"][-1] == "location=s1/z1/r1/cmp-1"
    assert sol["faultType"] == "HOST_DOWN"  # failure type
    assert sol["perceivedSeverity"] == "MAJOR"  # failure level
    assert sol["rootCauseFaultyResource"]["faultyResource"]["vimConnectionId"] == "vim"
    assert change.reason == "MAJOR HOST_DOWN on cmp-1"


@pytest.mark.parametrize(
    ("event", "kind", "severity"),
    [
        (ev(Severity.MAJOR), ChangeKind.REPEATED, Severity.MAJOR),
        (ev(Severity.CRITICAL), ChangeKind.UPDATED, Severity.CRITICAL),
        (ev(Severity.MAJOR, fault_details=("more",)), ChangeKind.UPDATED, Severity.MAJOR),
        (ev(Severity.CLEARED), ChangeKind.CLEARED, Severity.CLEARED),
    ],
)
def test_same_fault_on_same_object_updates_one_alarm(
    event: FaultEvent, kind: ChangeKind, severity: Severity
) -> None:
    existing = raised()
    change = apply_event(existing, event, T0 + timedelta(seconds=1), "a2", "vim")
    assert change is not None
    assert change.kind is kind
    assert change.alarm.id == "a1"
    assert change.alarm.perceived_severity is severity
    assert change.notifies is (kind is not ChangeKind.REPEATED)


def test_clear_sets_cleared_time_and_keeps_peak_severity() -> None:
    existing = raised(Severity.CRITICAL)
    downgraded = apply_event(existing, ev(Severity.MINOR), T0, "x", "vim")
    assert downgraded is not None and downgraded.alarm.peak_severity is Severity.CRITICAL
    cleared = apply_event(downgraded.alarm, ev(Severity.CLEARED), T0 + timedelta(1), "x", "vim")
    assert cleared is not None
    assert cleared.alarm.alarm_cleared_time == T0 + timedelta(1)
    assert not cleared.alarm.active
    assert cleared.alarm.peak_severity is Severity.CRITICAL
    assert cleared.alarm.version == existing.version + 2


def test_clear_without_active_alarm_changes_nothing() -> None:
    assert apply_event(None, ev(Severity.CLEARED), T0, "a1", "vim") is None


def test_dedup_key_separates_objects_and_causes() -> None:
    assert ev().dedup_key != replace(ev(), managed_object_id="cmp-2").dedup_key
    assert ev().dedup_key != replace(ev(), probable_cause="fan").dedup_key
    assert ev().dedup_key == replace(ev(), perceived_severity=Severity.MINOR).dedup_key


def test_ack_and_conflict() -> None:
    alarm = raised()
    acked = apply_ack(alarm, AckState.ACKNOWLEDGED, T0)
    assert acked.alarm.ack_state is AckState.ACKNOWLEDGED
    assert acked.alarm.alarm_acknowledged_time == T0
    assert acked.alarm.etag != alarm.etag
    with pytest.raises(Conflict):
        apply_ack(acked.alarm, AckState.ACKNOWLEDGED, T0)
    unacked = apply_ack(acked.alarm, AckState.UNACKNOWLEDGED, T0)
    assert unacked.alarm.alarm_acknowledged_time is None


def test_location_prefix() -> None:
    assert LOC.within("s1/z1")
    assert LOC.within("/s1/z1/")
    assert LOC.within("")
    assert not LOC.within("s1/z")
    assert not LOC.within("s2")


def test_object_view_summarises_alarms() -> None:
    from vimha.domain.alarms import object_view

    assert object_view("cmp-1", []) is None
    major = raised(Severity.MAJOR)
    other = apply_event(None, replace(ev(Severity.CRITICAL), fault_type="FAN"), T0, "a2", "vim")
    assert other is not None
    cleared = apply_event(
        other.alarm, replace(ev(Severity.CLEARED), fault_type="FAN"), T0, "x", "vim"
    )
    assert cleared is not None
    view = object_view("cmp-1", [cleared.alarm, major])
    assert view is not None
    assert view.active_alarm_ids == ("a1",)
    assert view.highest_active_severity is Severity.MAJOR
    assert view.location == LOC
    only_cleared = object_view("cmp-1", [cleared.alarm])
    assert only_cleared is not None
    assert only_cleared.highest_active_severity is Severity.CLEARED
