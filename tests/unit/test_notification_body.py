from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from vimha.domain import notifications
from vimha.domain.alarms import ChangeKind, EventType, FaultEvent, Location, Severity, apply_event
from vimha.domain.subscriptions import NotificationType

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _change(severity: Severity):  # type: ignore[no-untyped-def]
    ev = FaultEvent(
        "cmp-1",
        "F",
        'cause "quoted"',
        Severity.MAJOR,
        EventType.QOS_ALARM,
        T0,
        location=Location((("site", "s1"),)),
        fault_details=("ünïcode",),
    )
    raised = apply_event(None, ev, T0, "a1", "vim")
    assert raised is not None
    if severity is Severity.MAJOR:
        return raised
    from dataclasses import replace

    return apply_event(raised.alarm, replace(ev, perceived_severity=severity), T0, "x", "vim")


@pytest.mark.parametrize("severity", [Severity.MAJOR, Severity.CLEARED])
def test_spliced_body_equals_the_plain_body(severity: Severity) -> None:
    change = _change(severity)
    assert change.kind in (ChangeKind.RAISED, ChangeKind.CLEARED)
    kind, payload, _ = notifications.for_change(change, "http://vim")
    plain = notifications.body("d1", "s1", kind, payload, T0, "http://vim")
    spliced = notifications.body_bytes(
        "d1", "s1", kind, notifications.payload_json(payload, T0), "http://vim"
    )
    assert json.loads(spliced) == plain


def test_rebuilt_body() -> None:
    kind, payload, _ = notifications.alarm_list_rebuilt("http://vim")
    assert kind is NotificationType.ALARM_LIST_REBUILT
    spliced = json.loads(
        notifications.body_bytes(
            "d", "s", kind, notifications.payload_json(payload, T0), "http://vim"
        )
    )
    assert spliced == notifications.body("d", "s", kind, payload, T0, "http://vim")
    assert spliced["_links"]["alarms"]["href"] == "http://vim/vimfm/v1/alarms"
