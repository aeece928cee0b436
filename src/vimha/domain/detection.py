"""Failure detection from heartbeats, per host and network plane (ARCH-8), with flap damping.

A plane is DOWN once no heartbeat came for `interval * misses` seconds; it is UP again only
after `up_after` consecutive heartbeats, each within `interval * misses` of the previous one
(hysteresis: a flapping link does not toggle the host's state at every heartbeat). Times are
monotonic seconds from the caller's clock; nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

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

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise InvalidInput("detection: interval must be positive")
        if self.misses < 1 or self.up_after < 1:
            raise InvalidInput("detection: misses and up_after must be at least 1")

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

    def heard(self, at: float, policy: DetectionPolicy) -> PlaneState:
        """A heartbeat arrived at `at`."""
        continuous = self.last_heard is not None and at - self.last_heard <= policy.timeout
        streak = self.streak + 1 if continuous else 1
        status = self.status
        if status is not PlaneStatus.UP and streak >= policy.up_after:
            status = PlaneStatus.UP
        changed = self.changed_at if status is self.status else at
        return PlaneState(status, at, streak, changed)

    def tick(self, now: float, policy: DetectionPolicy) -> PlaneState:
        """Time passed without (necessarily) a heartbeat."""
        silent = self.last_heard is None or now - self.last_heard > policy.timeout
        if not silent:
            return self
        if self.status is PlaneStatus.UP or (
            self.status is PlaneStatus.UNKNOWN and self.last_heard is not None
        ):
            return replace(self, status=PlaneStatus.DOWN, streak=0, changed_at=now)
        return replace(self, streak=0) if self.streak else self
