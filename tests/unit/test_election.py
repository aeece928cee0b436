"""Role held through a lease: campaign, renew, and step down before the lease can expire."""

from __future__ import annotations

import pytest

from vimha.domain.election import Holding, LeasePolicy, Role, Step, decide
from vimha.domain.errors import InvalidInput

POLICY = LeasePolicy(ttl=3.0, renew=0.5, demote_after=2.0)


def test_a_follower_campaigns() -> None:
    assert decide(Holding(), 10.0, POLICY).step is Step.CAMPAIGN


def test_a_holder_renews_while_its_renewals_succeed() -> None:
    holding = Holding(Role.HOLDER, lease=7, epoch=3, renewed_at=10.0)
    d = decide(holding, 11.9, POLICY)
    assert d.step is Step.RENEW and "epoch 3" in d.reason


def test_a_holder_that_cannot_renew_steps_down_before_its_lease_can_expire() -> None:
    holding = Holding(Role.HOLDER, lease=7, epoch=3, renewed_at=10.0)
    d = decide(holding, 12.0, POLICY)
    assert d.step is Step.DEMOTE and "before it can expire" in d.reason


@pytest.mark.parametrize(
    ("ttl", "renew", "demote_after"), [(3, 2, 2), (3, 0.5, 3), (3, 0, 1), (1, 0.5, 2)]
)
def test_policy_must_demote_before_expiry(ttl: float, renew: float, demote_after: float) -> None:
    with pytest.raises(InvalidInput, match="step down"):
        LeasePolicy(ttl=ttl, renew=renew, demote_after=demote_after)
