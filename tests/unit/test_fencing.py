"""decide_fencing(): when a failed host is fenced, when not, and what an attempt leaves."""

from __future__ import annotations

import pytest

from vimha.domain.classification import Classification, FailureKind, HealthStatus
from vimha.domain.errors import InvalidInput
from vimha.domain.fencing import (
    FenceAction,
    FencePhase,
    FencePolicy,
    FenceState,
    after_attempt,
    decide_fencing,
)

POLICY = FencePolicy(delay=1.0, retry=10.0)
UP = Classification(HealthStatus.UP, None, "cmp-1: every plane up")
DEGRADED = Classification(HealthStatus.DEGRADED, FailureKind.LINK_FAULT, "link")
NODE = Classification(HealthStatus.DOWN, FailureKind.COMPUTE_NODE_FAILURE, "all planes lost")
SERVICE = Classification(HealthStatus.DOWN, FailureKind.COMPUTE_SERVICE_FAILURE, "nova")


def test_healthy_host_is_left_alone() -> None:
    for cls in (UP, DEGRADED, SERVICE):
        d = decide_fencing("cmp-1", cls, FenceState(), POLICY, True, 100.0)
        assert d.action is None and d.state.phase is FencePhase.NONE


def test_failed_host_is_fenced_after_the_delay() -> None:
    d = decide_fencing("cmp-1", NODE, FenceState(), POLICY, True, 100.0)
    assert d.action is None and d.state.phase is FencePhase.PENDING
    d = decide_fencing("cmp-1", NODE, d.state, POLICY, True, 100.5)
    assert d.action is None
    d = decide_fencing("cmp-1", NODE, d.state, POLICY, True, 101.0)
    assert d.action is FenceAction.FENCE
    assert d.state.phase is FencePhase.IN_PROGRESS and d.state.attempts == 1
    assert d.state.kind is FailureKind.COMPUTE_NODE_FAILURE
    assert "ForceOff" in d.reason and "all planes lost" in d.reason
    # While the attempt runs, nothing else is decided.
    again = decide_fencing("cmp-1", UP, d.state, POLICY, True, 102.0)
    assert again.action is None and again.state is d.state


def test_a_host_its_bmc_reports_off_or_broken_is_fenced_without_the_delay() -> None:
    """The delay damps silence; a hardware failure the BMC reports is no blip."""
    hw = Classification(HealthStatus.DOWN, FailureKind.HOST_HW_FAILURE, "power off")
    d = decide_fencing("cmp-1", hw, FenceState(), POLICY, True, 100.0)
    assert d.action is FenceAction.FENCE


def test_zero_delay_fences_at_once() -> None:
    d = decide_fencing("cmp-1", NODE, FenceState(), FencePolicy(delay=0), True, 5.0)
    assert d.action is FenceAction.FENCE


@pytest.mark.parametrize(
    "kind",
    [
        FailureKind.COMPUTE_NODE_FAILURE,
        FailureKind.HOST_HW_FAILURE,
        FailureKind.HOST_UNREACHABLE,
        FailureKind.RACK_FAILURE,
    ],
)
def test_every_unknown_state_is_fenced(kind: FailureKind) -> None:
    cls = Classification(HealthStatus.DOWN, kind, "lost")
    d = decide_fencing("h", cls, FenceState(), FencePolicy(delay=0), True, 0.0)
    assert d.action is FenceAction.FENCE


def test_a_host_that_answers_again_is_no_longer_pending_or_fenced() -> None:
    pending = FenceState(FencePhase.PENDING, FailureKind.COMPUTE_NODE_FAILURE, 100.0)
    d = decide_fencing("cmp-1", UP, pending, POLICY, True, 100.5)
    assert d.state.phase is FencePhase.NONE and "answers again" in d.reason
    fenced = FenceState(FencePhase.CONFIRMED, FailureKind.COMPUTE_NODE_FAILURE, 100.0)
    d = decide_fencing("cmp-1", DEGRADED, fenced, POLICY, True, 200.0)
    assert d.state.phase is FencePhase.NONE


def test_unknown_after_a_restart_keeps_the_fencing() -> None:
    fenced = FenceState(FencePhase.CONFIRMED, FailureKind.COMPUTE_NODE_FAILURE, 100.0)
    unknown = Classification(HealthStatus.UNKNOWN, None, "cmp-1: no heartbeat yet")
    assert decide_fencing("cmp-1", unknown, fenced, POLICY, True, 101.0).state is fenced


def test_confirmed_fencing_is_kept_while_the_host_is_fenced() -> None:
    fenced = FenceState(FencePhase.CONFIRMED, FailureKind.COMPUTE_NODE_FAILURE, 100.0)
    cls = Classification(HealthStatus.FENCED, FailureKind.COMPUTE_NODE_FAILURE, "fenced")
    d = decide_fencing("cmp-1", cls, fenced, POLICY, True, 500.0)
    assert d.action is None and d.state.fenced and d.state.recoverable


def test_no_bmc_means_no_fencing_and_no_recovery() -> None:
    d = decide_fencing("cmp-1", NODE, FenceState(), FencePolicy(delay=0), False, 0.0)
    assert d.action is FenceAction.GIVE_UP
    assert d.state.phase is FencePhase.FAILED and not d.state.recoverable
    assert "no BMC" in d.reason and "not be recovered" in d.reason
    # Given up once: not again at every step.
    again = decide_fencing("cmp-1", NODE, d.state, FencePolicy(delay=0), False, 50.0)
    assert again.action is None


def test_failed_attempt_is_retried_after_the_retry_interval() -> None:
    running = FenceState(FencePhase.IN_PROGRESS, FailureKind.HOST_UNREACHABLE, 0.0, 1)
    failed = after_attempt(running, False, "BMC unreachable", 3.0)
    assert failed.phase is FencePhase.FAILED and failed.detail == "BMC unreachable"
    assert decide_fencing("h", NODE, failed, POLICY, True, 12.0).action is None
    d = decide_fencing("h", NODE, failed, POLICY, True, 13.0)
    assert d.action is FenceAction.FENCE and d.state.attempts == 2
    assert d.state.kind is FailureKind.COMPUTE_NODE_FAILURE  # the failure as it is now


def test_confirmed_attempt() -> None:
    running = FenceState(FencePhase.IN_PROGRESS, FailureKind.COMPUTE_NODE_FAILURE, 0.0, 1)
    done = after_attempt(running, True, "power off confirmed", 0.4)
    assert done.fenced and done.since == 0.4


def test_disabled_policy_never_fences() -> None:
    d = decide_fencing("h", NODE, FenceState(), FencePolicy(enabled=False, delay=0), True, 9.0)
    assert d.action is None and d.state.phase is FencePhase.NONE


def test_policy_is_validated() -> None:
    with pytest.raises(InvalidInput):
        FencePolicy(delay=-1)
    with pytest.raises(InvalidInput):
        FencePolicy(retry=0)
