"""Holding a role through a lease (issue 4: at most one active). Pure decisions; the engine
(`engine/election.py`) talks to the coordination backend.

A member holds the role while its lease lives. It renews every `renew` seconds and, if it
has not renewed successfully for `demote_after`, it steps down on its own, before the
backend can let the lease expire (`ttl`) and hand the role to another member: at no moment
do two members act as holders. Every new holding carries an epoch (a fencing token) that
only grows, for the service and its clients to refuse an older holder.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from vimha.domain.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class LeasePolicy:
    ttl: float = 3.0
    renew: float = 0.5
    demote_after: float = 2.0  # without a successful renewal: step down

    def __post_init__(self) -> None:
        if not 0 < self.renew < self.demote_after < self.ttl:
            raise InvalidInput(
                "lease policy: need 0 < renew < demote_after < ttl (a holder must step down "
                "before its lease can expire)"
            )


class Role(StrEnum):
    FOLLOWER = "FOLLOWER"
    HOLDER = "HOLDER"


@dataclass(frozen=True, slots=True)
class Holding:
    role: Role = Role.FOLLOWER
    lease: int = 0
    epoch: int = 0
    renewed_at: float = 0.0


class Step(StrEnum):
    CAMPAIGN = "CAMPAIGN"  # try to take the role
    RENEW = "RENEW"
    DEMOTE = "DEMOTE"  # stop acting now, then give the role up
    WAIT = "WAIT"


@dataclass(frozen=True, slots=True)
class Decision:
    step: Step
    reason: str


def decide(holding: Holding, now: float, policy: LeasePolicy) -> Decision:
    if holding.role is Role.FOLLOWER:
        return Decision(Step.CAMPAIGN, "not the holder: campaign (taken only if free)")
    silent = now - holding.renewed_at
    if silent >= policy.demote_after:
        return Decision(
            Step.DEMOTE,
            f"lease not renewed for {silent:.2f}s (>= {policy.demote_after:g}s): step down "
            f"before it can expire ({policy.ttl:g}s)",
        )
    return Decision(Step.RENEW, f"holder (epoch {holding.epoch}): renew the lease")
