"""Watchdog decisions: restart with backoff, alarm raised and cleared, give up."""

from __future__ import annotations

import pytest

from vimha.domain.errors import InvalidInput
from vimha.domain.supervision import (
    RestartPolicy,
    ServiceState,
    ServiceStatus,
    decide,
)

P = RestartPolicy(
    max_restarts=2, window=10.0, backoff_initial=0.1, backoff_max=1.0, start_grace=1.0, settle=0.2
)


def kinds(actions: list) -> list[str]:  # type: ignore[type-arg]
    return [a.kind.value for a in actions]


def test_healthy_start_then_failure_restart_and_recovery() -> None:
    s = ServiceState("nova-compute", started_at=0.0)
    s, a = decide(s, True, "ok", 0.5, P)
    assert s.status is ServiceStatus.RUNNING and a == []
    s, a = decide(s, False, "process gone", 2.0, P)
    assert s.status is ServiceStatus.RESTARTING and kinds(a) == ["RAISE_RESTART_ALARM"]
    assert "process gone" in a[0].reason
    s, a = decide(s, False, "process gone", 2.05, P)
    assert a == []  # backoff not over
    s, a = decide(s, False, "process gone", 2.1, P)
    assert kinds(a) == ["RESTART"] and s.status is ServiceStatus.STARTING
    s, a = decide(s, False, "not yet listening", 2.5, P)
    assert a == []  # start grace
    s, a = decide(s, True, "ok", 2.8, P)
    assert kinds(a) == ["CLEAR_RESTART_ALARM"] and s.status is ServiceStatus.RUNNING


def test_backoff_doubles_then_gives_up() -> None:
    s = ServiceState("ovs", status=ServiceStatus.RUNNING)
    s, a = decide(s, False, "hung", 1.0, P)
    assert s.next_restart_at == pytest.approx(1.1)
    s, _ = decide(s, False, "hung", 1.1, P)  # restart 1
    s, a = decide(s, False, "hung", 2.2, P)  # failed again after grace
    assert s.next_restart_at == pytest.approx(2.4)  # 0.1 * 2
    s, _ = decide(s, False, "hung", 2.45, P)  # restart 2
    s, a = decide(s, False, "hung", 3.6, P)
    assert kinds(a) == ["RAISE_GAVE_UP_ALARM"] and s.status is ServiceStatus.GAVE_UP
    assert "gave up" in a[0].reason
    s, a = decide(s, True, "ok", 4.0, P)
    assert a == [] and s.status is ServiceStatus.GAVE_UP


def test_old_restarts_leave_the_window() -> None:
    s = ServiceState("ovs", status=ServiceStatus.RUNNING, restarts=(0.0, 1.0))
    s, a = decide(s, False, "dead", 20.0, P)
    assert kinds(a) == ["RAISE_RESTART_ALARM"]  # the two old restarts are out of the window


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": 0},
        {"backoff_initial": 0},
        {"backoff_initial": 2, "backoff_max": 1},
        {"max_restarts": -1},
    ],
)
def test_invalid_policies(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInput):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]


def test_a_check_passing_right_after_start_does_not_clear_yet() -> None:
    s = ServiceState("crashy", status=ServiceStatus.STARTING, started_at=5.0, alarm_raised=True)
    s, a = decide(s, True, "ok", 5.05, P)
    assert a == [] and s.status is ServiceStatus.STARTING  # within the settle period
    s, a = decide(s, True, "ok", 5.3, P)
    assert kinds(a) == ["CLEAR_RESTART_ALARM"]
