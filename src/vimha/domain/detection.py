"""Failure detection from heartbeats, per host and network plane (ARCH-8), with flap damping.

Two detectors:
- `fixed` (default): a plane is DOWN once no heartbeat came for `interval * misses` seconds.
- `phi` (phi-accrual, Hayashibara et al.; as in Akka and Cassandra): the plane learns the
  mean and spread of its heartbeats' inter-arrival times (exponentially weighted) and is
  DOWN once phi = -log10(P(a heartbeat still comes later than now)) exceeds `phi_threshold`.
  Jittery links get more slack, steady ones are judged fast. Until `phi_min_samples`
  intervals are learnt, the fixed timeout applies.
A plane is UP again only after `up_after` consecutive heartbeats, each within the timeout of
the previous one (hysteresis: a flapping link does not toggle the host's state at every
heartbeat). Times are monotonic seconds from the caller's clock; nothing here reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

from vimha.domain.errors import InvalidInput


class PlaneStatus(StrEnum):
    UNKNOWN = "UNKNOWN"
    UP = "UP"
    DOWN = "DOWN"


@dataclass(frozen=True, slots=True)
class DetectionPolicy:
    interval: float = 0.1
    misses: int = 3
    up_after: int = 3
    detector: Literal["fixed", "phi"] = "fixed"
    phi_threshold: float = 8.0
    phi_min_std: float | None = None  # default: interval / 4
    phi_min_samples: int = 10
    phi_weight: float = 0.05  # of the newest interval in the running mean and variance

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise InvalidInput("detection: interval must be positive")
        if self.misses < 1 or self.up_after < 1:
            raise InvalidInput("detection: misses and up_after must be at least 1")
        if self.phi_threshold <= 0 or not 0 < self.phi_weight <= 1:
            raise InvalidInput("detection: phi_threshold > 0 and 0 < phi_weight <= 1 required")
        if self.phi_min_std is not None and self.phi_min_std <= 0:
            raise InvalidInput("detection: phi_min_std must be positive")

    @property
    def min_std(self) -> float:
        return self.phi_min_std if self.phi_min_std is not None else self.interval / 4

    @property
    def timeout(self) -> float:
        """Silence after which a plane is DOWN."""
        return self.interval * self.misses


@dataclass(frozen=True, slots=True)
class PlaneState:
    status: PlaneStatus = PlaneStatus.UNKNOWN
    last_heard: float | None = None
    streak: int = 0
    changed_at: float = 0.0
    samples: int = 0  # inter-arrival times learnt (phi)
    mean: float = 0.0
    var: float = 0.0

    def heard(self, at: float, policy: DetectionPolicy) -> PlaneState:
        """A heartbeat arrived at `at`."""
        continuous = self.last_heard is not None and not self.silent(at, policy)
        streak = self.streak + 1 if continuous else 1
        status = self.status
        if status is not PlaneStatus.UP and streak >= policy.up_after:
            status = PlaneStatus.UP
        changed = self.changed_at if status is self.status else at
        samples, mean, var = self.samples, self.mean, self.var
        if policy.detector == "phi" and continuous and self.last_heard is not None:
            gap = at - self.last_heard  # learnt only from a live link, never from an outage
            if samples == 0:
                mean, var = gap, 0.0
            else:
                w = policy.phi_weight
                diff = gap - mean
                mean += w * diff
                var = (1 - w) * (var + w * diff * diff)
            samples += 1
        return PlaneState(status, at, streak, changed, samples, mean, var)

    def phi(self, now: float, policy: DetectionPolicy) -> float:
        """Suspicion that the plane is down: -log10 of the chance that a heartbeat is only
        late (logistic approximation of the normal distribution's tail)."""
        if self.last_heard is None:
            return math.inf
        std = max(math.sqrt(self.var), policy.min_std)
        y = (now - self.last_heard - self.mean) / std
        exponent = -y * (1.5976 + 0.070566 * y * y)
        e = math.exp(exponent) if exponent < 700 else math.inf
        if y > 0:
            return -math.log10(e / (1 + e)) if e > 0 else math.inf
        return -math.log10(1 - 1 / (1 + e)) if math.isfinite(e) else 0.0

    def silent(self, now: float, policy: DetectionPolicy) -> bool:
        if self.last_heard is None:
            return True
        if policy.detector == "phi" and self.samples >= policy.phi_min_samples:
            return self.phi(now, policy) > policy.phi_threshold
        return now - self.last_heard > policy.timeout

    def tick(self, now: float, policy: DetectionPolicy) -> PlaneState:
        """Time passed without (necessarily) a heartbeat."""
        if not self.silent(now, policy):
            return self
        if self.status is PlaneStatus.UP or (
            self.status is PlaneStatus.UNKNOWN and self.last_heard is not None
        ):
            return replace(self, status=PlaneStatus.DOWN, streak=0, changed_at=now)
        return replace(self, streak=0) if self.streak else self


def fell_silent_together(
    down: list[PlaneState], up: list[PlaneState], policy: DetectionPolicy
) -> bool:
    """Whether the planes now DOWN may just be the first of a host's planes to time out, all
    silent since the same moment: no plane still UP was heard more than 1.5 heartbeat
    intervals after the DOWN ones' last heartbeat. An agent killed between its heartbeat on
    one plane and on the other leaves one plane a round older: judged at once, the host was
    DEGRADED (a link fault) for that round before DOWN. A lost link leaves the other plane
    beating: by the time the lost one times out, that plane is well ahead."""
    last_down = max((s.last_heard for s in down if s.last_heard is not None), default=None)
    last_up = max((s.last_heard for s in up if s.last_heard is not None), default=None)
    if last_down is None or last_up is None:
        return False
    return last_up - last_down <= 1.5 * policy.interval
