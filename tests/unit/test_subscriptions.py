from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vimha.domain.alarms import EventType, FaultEvent, Location, Severity, apply_event
from vimha.domain.subscriptions import NotificationType, Subject, SubscriptionFilter, matches

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LOC = Location((("site", "s1"), ("zone", "z1"), ("rack", "r1"), ("host", "cmp-1")))
EVENT = FaultEvent(
    "cmp-1", "HOST_DOWN", "power", Severity.CRITICAL, EventType.EQUIPMENT_ALARM, T0, location=LOC
)
_change = apply_event(None, EVENT, T0, "a1", "vim")
assert _change is not None
ALARM = _change.alarm
_cleared = apply_event(
    ALARM,
    FaultEvent("cmp-1", "HOST_DOWN", "power", Severity.CLEARED, EventType.EQUIPMENT_ALARM, T0),
    T0,
    "x",
    "vim",
)
assert _cleared is not None
CLEARED = _cleared.alarm

RAISE = Subject(NotificationType.ALARM, alarm=ALARM)
CLEAR = Subject(NotificationType.ALARM_CLEARED, alarm=CLEARED)
REBUILT = Subject(NotificationType.ALARM_LIST_REBUILT)
HOST = Subject(NotificationType.HOST_HEALTH_CHANGE, object_id="cmp-1", location=LOC)


@pytest.mark.parametrize(
    ("flt", "subject", "expected"),
    [
        (SubscriptionFilter(), RAISE, True),
        (SubscriptionFilter(), REBUILT, True),
        (SubscriptionFilter(notification_types=(NotificationType.ALARM_CLEARED,)), RAISE, False),
        (SubscriptionFilter(notification_types=(NotificationType.ALARM_CLEARED,)), CLEAR, True),
        (SubscriptionFilter(perceived_severities=("CRITICAL",)), RAISE, True),
        (SubscriptionFilter(perceived_severities=("MINOR",)), RAISE, False),
        # A cleared alarm matches on the severity it had, so CRITICAL subscribers see the clear.
        (SubscriptionFilter(perceived_severities=("CRITICAL",)), CLEAR, True),
        (SubscriptionFilter(event_types=("QOS_ALARM",)), RAISE, False),
        (SubscriptionFilter(faulty_resource_types=("COMPUTE",)), RAISE, True),
        (SubscriptionFilter(probable_causes=("power",)), RAISE, True),
        (SubscriptionFilter(managed_object_ids=("cmp-2",)), RAISE, False),
        (SubscriptionFilter(managed_object_ids=("cmp-1",)), HOST, True),
        (SubscriptionFilter(location_prefix="s1/z1"), RAISE, True),
        (SubscriptionFilter(location_prefix="s1/z2"), HOST, False),
        (SubscriptionFilter(managed_object_ids=("cmp-2",)), REBUILT, True),
    ],
)
def test_matching(flt: SubscriptionFilter, subject: Subject, expected: bool) -> None:
    assert matches(flt, subject) is expected


def test_canonical_filter_ignores_order() -> None:
    a = SubscriptionFilter(perceived_severities=("MAJOR", "CRITICAL"), location_prefix="/s1/")
    b = SubscriptionFilter(perceived_severities=("CRITICAL", "MAJOR"), location_prefix="s1")
    assert a.canonical() == b.canonical()
