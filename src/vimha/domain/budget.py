"""The disruption budget of a VNF (issue 19, VNF-8), as Kubernetes' PodDisruptionBudget. Pure.

A VNF's descriptor may declare `disruptionBudget: {maxUnavailable: N, minAvailable: M}`:
at most N of its instances migrating or down at once, at least M serving. Every voluntary
action on an instance (a migration, an eviction by a maintenance session, a scale-in, a
repair) asks `admits` first and is refused, with the reason, when it would break either;
involuntary failures count against it: an instance in ERROR, UNKNOWN or rebuilding is
unavailable whatever caused it, so a migration waits while another instance is down.

An instance serves when it is ACTIVE with no task running; anything else not deleted is
unavailable (migrating, rebuilding, recovering, stopped, in ERROR, still being built).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from vimha.domain.compute import Instance, InstanceStatus
from vimha.domain.errors import InvalidInput


class Disruption(StrEnum):
    DISRUPT = "disrupt"  # the instance stops serving for a while (migration, eviction, repair)
    REMOVE = "remove"  # the instance leaves the VNF (scale-in)


@dataclass(frozen=True, slots=True)
class DisruptionBudget:
    max_unavailable: int | None = None
    min_available: int | None = None

    def __post_init__(self) -> None:
        if self.max_unavailable is not None and self.max_unavailable < 0:
            raise InvalidInput("disruptionBudget.maxUnavailable: must not be negative")
        if self.min_available is not None and self.min_available < 0:
            raise InvalidInput("disruptionBudget.minAvailable: must not be negative")

    @property
    def declared(self) -> bool:
        return self.max_unavailable is not None or self.min_available is not None

    def to_dict(self) -> dict[str, Any]:
        return {"maxUnavailable": self.max_unavailable, "minAvailable": self.min_available}

    @classmethod
    def from_descriptor(cls, descriptor: Mapping[str, Any]) -> DisruptionBudget:
        raw = descriptor.get("disruptionBudget") or {}
        return cls(raw.get("maxUnavailable"), raw.get("minAvailable"))

    def describe(self) -> str:
        parts = []
        if self.max_unavailable is not None:
            parts.append(f"at most {self.max_unavailable} unavailable")
        if self.min_available is not None:
            parts.append(f"at least {self.min_available} serving")
        return ", ".join(parts) or "none"


@dataclass(frozen=True, slots=True)
class Admission:
    ok: bool
    reason: str


def serving(instance: Instance) -> bool:
    return instance.status is InstanceStatus.ACTIVE and instance.task_state is None


def counted(instances: Iterable[Instance]) -> list[Instance]:
    return [i for i in instances if i.status is not InstanceStatus.DELETED]


def unavailable(instances: Iterable[Instance]) -> list[Instance]:
    return [i for i in counted(instances) if not serving(i)]


def admits(
    budget: DisruptionBudget,
    vnf_name: str,
    instances: Iterable[Instance],
    target: Instance,
    what: Disruption = Disruption.DISRUPT,
    pending: int = 0,
) -> Admission:
    """May `target` (one of the VNF's `instances`) be disrupted or removed now? `pending`:
    other disruptions of the VNF decided in the same round, not yet visible in the
    instances (each counts as one more unavailable, one fewer serving)."""
    members = counted(instances)
    down = [i for i in members if not serving(i)]
    up = len(members) - len(down) - pending
    target_serves = serving(target)
    if what is Disruption.REMOVE:
        after_up = up - (1 if target_serves else 0)
        if budget.min_available is not None and after_up < budget.min_available:
            return Admission(
                False,
                f"VNF {vnf_name}'s disruption budget keeps at least {budget.min_available} "
                f"serving: {up} serve now, {after_up} would after removing {target.name}",
            )
        return Admission(True, f"VNF {vnf_name}: {after_up} still serving")
    after_down = len(down) + pending + (1 if target_serves else 0)
    if budget.max_unavailable is not None and after_down > budget.max_unavailable:
        names = ", ".join(f"{i.name} {_state(i)}" for i in down) or "none"
        return Admission(
            False,
            f"VNF {vnf_name}'s disruption budget allows at most {budget.max_unavailable} "
            f"unavailable at once: {len(down) + pending} already are ({names}"
            + (f", {pending} more under way" if pending else "")
            + ")",
        )
    after_up = up - (1 if target_serves else 0)
    if budget.min_available is not None and after_up < budget.min_available:
        return Admission(
            False,
            f"VNF {vnf_name}'s disruption budget keeps at least {budget.min_available} "
            f"serving: {up} serve now, {after_up} would while {target.name} is disrupted",
        )
    return Admission(
        True,
        f"VNF {vnf_name} within its disruption budget ({budget.describe()}): "
        f"{after_down} unavailable, {after_up} serving",
    )


def _state(i: Instance) -> str:
    return i.task_state.value if i.task_state is not None else i.status.value


def check_budget(budget: DisruptionBudget, count: int, where: str = "disruptionBudget") -> None:
    """A budget a VNF of `count` instances can never honour is refused at creation."""
    if budget.min_available is not None and budget.min_available > count:
        raise InvalidInput(
            f"{where}.minAvailable: {budget.min_available} exceeds the VNF's {count} instances"
        )


__all__ = [
    "Admission",
    "Disruption",
    "DisruptionBudget",
    "admits",
    "check_budget",
    "counted",
    "serving",
    "unavailable",
]
