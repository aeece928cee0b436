"""Priority (issue 15, VNF-14): when no host has room, an instance of a higher-priority VNF
may pre-empt instances of lower-priority ones, where the policy allows it. Pure.

The plan takes, among the hosts that pass every filter but capacity, the one that needs the
least to be stopped: victims strictly below the request's priority (and pre-emptible),
lowest priority first, then the smallest, until the flavor fits; hosts compared by the
highest victim priority they need, then the number of victims, then name. Pre-empted
instances are stopped with a clear state and reason, never deleted, and started again when
capacity returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vimha.domain.compute import Flavor, HostResources


@dataclass(frozen=True, slots=True)
class Victim:
    instance_id: str
    name: str
    priority: int
    vcpus: int
    ram_mib: int
    disk_gib: int


@dataclass(frozen=True, slots=True)
class PreemptionPlan:
    host: str
    victims: tuple[Victim, ...]
    reason: str


def plan_preemption(
    priority: int,
    flavor: Flavor,
    hosts: Sequence[HostResources],
    victims: Mapping[str, Sequence[Victim]],
) -> PreemptionPlan | None:
    """The cheapest pre-emption that makes room for `flavor`, or None."""
    best: tuple[tuple[int, int, str], PreemptionPlan] | None = None
    for h in hosts:
        if not h.could_ever_fit(flavor):
            continue
        free_cpu, free_ram, free_disk = h.free_vcpus, h.free_ram_mib, h.free_disk_gib
        chosen: list[Victim] = []
        eligible = sorted(
            (v for v in victims.get(h.host, ()) if v.priority < priority),
            key=lambda v: (v.priority, v.vcpus + v.ram_mib / 1024, v.name),
        )
        for v in eligible:
            if (
                free_cpu >= flavor.vcpus
                and free_ram >= flavor.ram_mib
                and (free_disk >= flavor.disk_gib)
            ):
                break
            chosen.append(v)
            free_cpu += v.vcpus
            free_ram += v.ram_mib
            free_disk += v.disk_gib
        if (
            not (
                free_cpu >= flavor.vcpus
                and free_ram >= flavor.ram_mib
                and free_disk >= flavor.disk_gib
            )
            or not chosen
        ):
            continue
        cost = (max(v.priority for v in chosen), len(chosen), h.host)
        names = ", ".join(f"{v.name} (priority {v.priority})" for v in chosen)
        plan = PreemptionPlan(
            h.host, tuple(chosen), f"pre-empts {names} on {h.host} for priority {priority}"
        )
        if best is None or cost < best[0]:
            best = (cost, plan)
    return None if best is None else best[1]


def choose_scale_in(
    members: Sequence[tuple[str, int, str | None]],
    steps: int,
    domain: Mapping[str, str],
) -> list[str]:
    """Instances to remove from a VDU: from the most crowded domain first (so the spread
    the group rules ask for is kept), the highest index first.

    `members`: (instance id, index, host); `domain`: host -> its domain at the level of
    the VDU's group (host itself when it has none)."""
    left = list(members)
    out: list[str] = []
    for _ in range(min(steps, len(left))):
        counts: dict[str, int] = {}
        for _, _, host in left:
            d = domain.get(host or "", host or "")
            counts[d] = counts.get(d, 0) + 1
        victim = max(
            left,
            key=lambda m: (counts[domain.get(m[2] or "", m[2] or "")], m[1]),
        )
        out.append(victim[0])
        left.remove(victim)
    return out
