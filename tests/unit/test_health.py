"""decide_health: alarms raised and cleared, and health changes, for each transition."""

from __future__ import annotations

from datetime import UTC, datetime

from vimha.domain.alarms import Location, Severity
from vimha.domain.classification import Classification, FailureKind, HealthStatus
from vimha.domain.health import decide_health

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LOC = {"cmp-1": Location((("rack", "r1"), ("host", "cmp-1")))}
UP = Classification(HealthStatus.UP, None, "cmp-1: every plane up")
DEGRADED = Classification(HealthStatus.DEGRADED, FailureKind.LINK_FAULT, "link", ("storage",))
DOWN_SW = Classification(
    HealthStatus.DOWN, FailureKind.COMPUTE_NODE_FAILURE, "sw", ("mgmt", "storage")
)
DOWN_HW = Classification(HealthStatus.DOWN, FailureKind.HOST_HW_FAILURE, "hw", ("mgmt", "storage"))


def summary(prev: Classification | None, cur: Classification) -> list[tuple[str, str, str]]:
    actions = decide_health({"cmp-1": prev} if prev else {}, {"cmp-1": cur}, LOC, NOW)
    return [(e.managed_object_id, e.fault_type, e.perceived_severity.value) for e in actions.events]


def test_first_sight_up_raises_nothing_but_reports_health() -> None:
    actions = decide_health({}, {"cmp-1": UP}, LOC, NOW)
    assert actions.events == () and [c.current.health for c in actions.changes] == [HealthStatus.UP]


def test_unchanged_is_silent() -> None:
    actions = decide_health({"cmp-1": DOWN_SW}, {"cmp-1": DOWN_SW}, LOC, NOW)
    assert actions.events == () and actions.changes == ()


def test_transitions() -> None:
    assert summary(UP, DEGRADED) == [("cmp-1/storage", "NETWORK_PLANE_DOWN", "MAJOR")]
    assert summary(DEGRADED, UP) == [("cmp-1/storage", "NETWORK_PLANE_DOWN", "CLEARED")]
    assert summary(UP, DOWN_SW) == [("cmp-1", "COMPUTE_NODE_FAILURE", "CRITICAL")]
    assert summary(DEGRADED, DOWN_SW) == [
        ("cmp-1", "COMPUTE_NODE_FAILURE", "CRITICAL"),
        ("cmp-1/storage", "NETWORK_PLANE_DOWN", "CLEARED"),
    ]
    assert summary(DOWN_SW, DOWN_HW) == [
        ("cmp-1", "COMPUTE_NODE_FAILURE", "CLEARED"),
        ("cmp-1", "HOST_HW_FAILURE", "CRITICAL"),
    ]
    assert summary(DOWN_HW, UP) == [("cmp-1", "HOST_HW_FAILURE", "CLEARED")]


def test_alarm_fields_carry_reason_and_location() -> None:
    actions = decide_health({"cmp-1": UP}, {"cmp-1": DOWN_SW}, LOC, NOW)
    [event] = actions.events
    assert event.fault_details == ("sw",)
    assert event.location.path == "r1/cmp-1"
    assert event.perceived_severity is Severity.CRITICAL
    [change] = actions.changes
    assert change.previous is UP and change.current is DOWN_SW and change.reason == "sw"
