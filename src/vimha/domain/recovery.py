"""Recovery of VNF instances (issue 17: VNF-1 runtime side, VNF-5, VNF-13, VNF-14). Pure.

- A failed instance (crashed, died, hung, stopped by its watchdog) follows its VDU's policy:
  restart in place up to `max_restarts` times within `window`, the first at once, the next
  after a doubling backoff; beyond that, replaced on another host; or `notify` only (its
  VNFM recovers it).
- A replacement is a new incarnation built from the stored spec (fresh disk, the same config
  drive, the same MACs and IPs, the same groups): the same initial state (VNF-13).
- A failed host's instances are recovered only once the host is known off (its fencing
  confirmed, or an operator's word that it is off); a host down but not fenced leaves them
  UNKNOWN, alarmed. They are re-placed in priority order: VNF priority first, then SAL
  (LEVEL_1 first), then name (VNF-14).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from vimha.domain.compute import Instance, InstanceStatus, Sal
from vimha.domain.errors import InvalidInput


class OnFailure(StrEnum):
    RESTART = "restart"  # in place, then replace when the budget is spent
    REPLACE = "replace"  # on another host at once
    NOTIFY = "notify"  # alarm only: the VNFM recovers


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """How the agent probes a guest for a hang (per VDU): TCP connect or HTTP GET on the
    instance's first port."""

    kind: str = "http"  # http or tcp
    port: int = 8080
    path: str = "/"
    interval: float = 1.0
    timeout: float = 0.5
    failures: int = 3  # consecutive failed probes that make it hung

    def __post_init__(self) -> None:
        if self.kind not in ("http", "tcp"):
            raise InvalidInput("healthCheck.kind: http or tcp")
        if not 0 < self.timeout < self.interval * self.failures:
            raise InvalidInput("healthCheck: 0 < timeout < interval x failures")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "port": self.port,
            "path": self.path,
            "interval": self.interval,
            "timeout": self.timeout,
            "failures": self.failures,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HealthCheck:
        return cls(
            d.get("kind", "http"),
            int(d.get("port", 8080)),
            d.get("path", "/"),
            float(d.get("interval", 1.0)),
            float(d.get("timeout", 0.5)),
            int(d.get("failures", 3)),
        )


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    on_failure: OnFailure = OnFailure.RESTART
    max_restarts: int = 3
    window: float = 300.0  # seconds the restarts are counted over
    backoff: float = 1.0  # before the second restart; doubled for each further one
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.window <= 0 or self.backoff < 0:
            raise InvalidInput("recovery: maxRestarts >= 0, window > 0, backoff >= 0")

    def to_dict(self) -> dict[str, Any]:
        return {
            "onFailure": self.on_failure.value,
            "maxRestarts": self.max_restarts,
            "window": self.window,
            "backoff": self.backoff,
            "maxBackoff": self.max_backoff,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecoveryPolicy:
        return cls(
            OnFailure(d.get("onFailure", "restart")),
            int(d.get("maxRestarts", 3)),
            float(d.get("window", 300.0)),
            float(d.get("backoff", 1.0)),
            float(d.get("maxBackoff", 30.0)),
        )


class Step(StrEnum):
    RESTART = "restart"
    REPLACE = "replace"
    WAIT = "wait"  # a restart is due later (backoff)
    NOTHING = "nothing"


@dataclass(frozen=True, slots=True)
class Remedy:
    step: Step
    reason: str
    due: datetime | None = None  # for WAIT


def remedy(policy: RecoveryPolicy, restarts: Sequence[datetime], now: datetime) -> Remedy:
    """What to do about a failed instance, given the restarts already done (their times)."""
    if policy.on_failure is OnFailure.NOTIFY:
        return Remedy(Step.NOTHING, "recovery policy notify: the VNFM recovers it")
    if policy.on_failure is OnFailure.REPLACE:
        return Remedy(Step.REPLACE, "recovery policy replace: a new incarnation elsewhere")
    recent = sorted(t for t in restarts if now - t <= timedelta(seconds=policy.window))
    if len(recent) >= policy.max_restarts:
        return Remedy(
            Step.REPLACE,
            f"{len(recent)} restarts within {policy.window:g}s (at most "
            f"{policy.max_restarts}): replaced on another host",
        )
    if not recent:
        return Remedy(Step.RESTART, "restarted in place at once (first failure)")
    delay = min(policy.backoff * 2 ** (len(recent) - 1), policy.max_backoff)
    due = recent[-1] + timedelta(seconds=delay)
    n = len(recent) + 1
    if now >= due:
        return Remedy(Step.RESTART, f"restart {n} of {policy.max_restarts} in place")
    return Remedy(Step.WAIT, f"restart {n} of {policy.max_restarts} due after {delay:g}s", due)


SAL_RANK = {Sal.LEVEL_1: 0, Sal.LEVEL_2: 1, Sal.LEVEL_3: 2}


def recovery_order(instances: Iterable[Instance]) -> list[Instance]:
    """Highest VNF priority first, then the most demanding SAL, then name."""
    return sorted(instances, key=lambda i: (-i.spec.priority, SAL_RANK[i.spec.sal], i.name))


# Statuses of an instance whose host failed that are worth recovering (a deleted one not).
RECOVERABLE = frozenset(set(InstanceStatus) - {InstanceStatus.DELETED})


@dataclass(frozen=True, slots=True)
class HostFailure:
    """A host as recovery sees it: whether it is known off (fenced, or confirmed by an
    operator), and since when it failed."""

    host: str
    health: str
    known_off: bool
    detail: str = ""
    instances: tuple[Instance, ...] = field(default=())


def host_plan(failure: HostFailure) -> tuple[list[Instance], list[Instance]]:
    """(to re-place now, to mark UNKNOWN): re-placed only once the host is known off."""
    live = [i for i in failure.instances if i.status in RECOVERABLE]
    if failure.known_off:
        return recovery_order(live), []
    return [], [i for i in live if i.status is not InstanceStatus.UNKNOWN]
