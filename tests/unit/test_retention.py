from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vimha.domain.alarms import Severity
from vimha.domain.errors import InvalidInput
from vimha.domain.retention import RetentionPolicy, parse_duration, plan_purge

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"), [("7d", 604800), ("12h", 43200), ("30m", 1800), ("45s", 45), (90, 90)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["7 weeks", "-1d", "0s", "", "d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_duration(text)


def test_policy_round_trip_and_partial_update() -> None:
    base = RetentionPolicy()
    changed = RetentionPolicy.from_dict({"clearedAlarms": {"WARNING": "1d"}}, base)
    assert changed.cleared_alarms[Severity.WARNING] == timedelta(days=1)
    assert changed.cleared_alarms[Severity.CRITICAL] == base.cleared_alarms[Severity.CRITICAL]
    assert RetentionPolicy.from_dict(changed.to_dict()) == changed


@pytest.mark.parametrize(
    "data",
    [
        {"clearedAlarms": {"CLEARED": "1d"}},
        {"clearedAlarms": {"HIGH": "1d"}},
        {"clearedAlarms": []},
        {"other": 1},
        {"notifications": "soon"},
    ],
)
def test_policy_rejects_bad_input(data: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        RetentionPolicy.from_dict(data)


def test_purge_plan_cutoffs_follow_the_policy() -> None:
    policy = RetentionPolicy.from_dict(
        {"clearedAlarms": {"WARNING": "7d", "CRITICAL": "400d"}, "notifications": "2d"}
    )
    plan = plan_purge(policy, NOW)
    assert plan.alarms[Severity.WARNING] == NOW - timedelta(days=7)
    assert plan.alarms[Severity.CRITICAL] == NOW - timedelta(days=400)
    assert plan.notifications == NOW - timedelta(days=2)
    assert Severity.CLEARED not in plan.alarms
    assert "cleared WARNING > 7d" in plan.reason
