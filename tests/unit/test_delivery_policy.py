from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vimha.domain.delivery import (
    DeliveryStatus,
    RetryPolicy,
    after_attempt,
    backoff,
    orphaned,
)
from vimha.domain.errors import InvalidInput

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RetryPolicy(initial=0.1, maximum=2.0, give_up_after=60.0, jitter=0.5)


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [(1, 0.0, 0.05), (1, 1.0, 0.1), (2, 0.0, 0.1), (3, 0.5, 0.3), (10, 0.0, 1.0), (10, 1.0, 2.0)],
)
def test_backoff_doubles_with_bounded_jitter(attempt: int, rand: float, expected: float) -> None:
    assert backoff(attempt, POLICY, rand) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("ok", "age", "status"),
    [
        (True, 0, DeliveryStatus.DELIVERED),
        (False, 10, DeliveryStatus.PENDING),
        (False, 60, DeliveryStatus.EXPIRED),
        (True, 100, DeliveryStatus.DELIVERED),
    ],
)
def test_after_attempt(ok: bool, age: float, status: DeliveryStatus) -> None:
    outcome = after_attempt(
        ok, "consumer answered 500", 3, T0, T0 + timedelta(seconds=age), POLICY, 0.5
    )
    assert outcome.status is status
    assert (outcome.retry_in is not None) is (status is DeliveryStatus.PENDING)
    assert outcome.reason


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": 0}, {"initial": 3.0, "maximum": 2.0}, {"give_up_after": 1.0}, {"jitter": 2.0}],
)
def test_invalid_policies(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInput):
        RetryPolicy(**kwargs)


def test_deliveries_of_gone_controllers_are_orphaned() -> None:
    assert orphaned({"a", "b"}, {"a", "b"}, "a") is None
    assert orphaned({"a"}, set(), "a") is None  # our own, even while not announced
    t = orphaned({None, "a", "b", "c"}, {"a", "c"}, "a")
    assert t is not None
    assert t.owners == (None, "b") or t.owners == ("b", None)
    assert "b" in t.reason and "(no owner)" in t.reason
