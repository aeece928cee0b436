"""Notification delivery decisions: at-least-once, in order per subscription, with
exponential backoff and jitter. The engine asks; these functions answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from vimha.domain.errors import InvalidInput


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff doubles from `initial` up to `maximum`; a notification older than `give_up_after`
    that still fails is marked EXPIRED so that later ones for the same subscriber can flow."""

    initial: float = 0.2
    maximum: float = 30.0
    give_up_after: float = 86400.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise InvalidInput("delivery: need 0 < initial_backoff <= max_backoff")
        if self.give_up_after < self.maximum:
            raise InvalidInput("delivery: give_up_after must be at least max_backoff")
        if not 0 <= self.jitter <= 1:
            raise InvalidInput("delivery: jitter must be within [0, 1]")


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    status: DeliveryStatus
    retry_in: float | None
    reason: str


def backoff(attempt: int, policy: RetryPolicy, rand: float) -> float:
    """Delay before retry number `attempt` (1-based), with `rand` in [0, 1) for jitter.

    Equal jitter: a random share `jitter` of the exponential delay is replaced by noise, so
    that many failed subscribers do not retry in lockstep.
    """
    base = min(policy.maximum, policy.initial * 2 ** max(0, attempt - 1))
    return float(base * (1 - policy.jitter) + base * policy.jitter * rand)


def after_attempt(
    ok: bool,
    detail: str,
    attempts: int,
    created_at: datetime,
    now: datetime,
    policy: RetryPolicy,
    rand: float,
) -> AttemptOutcome:
    """What to do after attempt number `attempts` of one notification."""
    if ok:
        return AttemptOutcome(DeliveryStatus.DELIVERED, None, f"delivered on attempt {attempts}")
    if now - created_at >= timedelta(seconds=policy.give_up_after):
        return AttemptOutcome(
            DeliveryStatus.EXPIRED,
            None,
            f"gave up after {attempts} attempts over {policy.give_up_after:.0f}s: {detail}",
        )
    delay = backoff(attempts, policy, rand)
    return AttemptOutcome(
        DeliveryStatus.PENDING,
        delay,
        f"attempt {attempts} failed ({detail}); retry in {delay:.2f}s",
    )


@dataclass(frozen=True, slots=True)
class Takeover:
    owners: tuple[str | None, ...]  # whose pending deliveries to adopt
    reason: str


def orphaned(pending_owners: set[str | None], live: set[str], me: str) -> Takeover | None:
    """Pending deliveries whose controller is gone (its presence key lapsed with its lease,
    or no owner was recorded) are adopted by the singleton holder `me`; None if none are."""
    gone = sorted((o for o in pending_owners if o != me and o not in live), key=str)
    if not gone:
        return None
    names = ", ".join("(no owner)" if o is None else o for o in gone)
    return Takeover(tuple(gone), f"pending deliveries of {names}: not among live controllers")


@dataclass(frozen=True, slots=True)
class ClusterStart:
    announce: bool  # send AlarmListRebuiltNotification
    record: frozenset[str]  # the controllers of the running cluster, to remember
    reason: str


def alarm_list_rebuilt(known: frozenset[str] | None, live: frozenset[str]) -> ClusterStart:
    """Whether the singleton holder announces that the alarm list was rebuilt: once per start
    of the controllers' cluster, not per controller. `known` are the incarnations (a
    controller's name changes nothing: a restart is a new incarnation) of the controllers the
    holders saw running, `live` those running now: the cluster started again when none of the
    known ones is alive (or none was ever recorded); a new holder that finds one of them alive
    took the role over in a running cluster."""
    if known is None:
        return ClusterStart(True, live, "no start of the controllers recorded")
    still = sorted(known & live)
    if still:
        return ClusterStart(False, live, f"{still[0]} has run since the cluster started")
    return ClusterStart(
        True, live, f"none of the controllers that ran ({len(known)}) is alive: a new start"
    )
