"""Placement of an instance on a compute host: filters, then weighers, on a snapshot (pure).

`place(request, candidates)` returns a decision with, for each filter, how many candidates
it removed and why: with no valid host, that is the reason the request fails ("No valid
host": which rule, how many candidates each filter removed). The claim that follows
re-checks capacity in the store against the host's generation (ports/compute.py), so two
schedulers deciding on the same snapshot never over-commit a host.

Filters (in order): the host is a compute host that is UP (not down, fenced or in
maintenance); it runs the image's hypervisor type; the hints (`host`, `different_host`,
`same_host`); it has the traits of the request's service availability level (SAL); it keeps
every hard rule of the instance's placement groups (affinity, anti-affinity, at their
level, with their maximum per domain); it has the free capacity (vCPUs, RAM, disk, with
allocation ratios); placing there keeps every SAL's failover reserve (domain/sal.py).
Weighers: the soft rules (soft-affinity: more members in the domain; soft-anti-affinity:
fewer), ten times stronger than the spread (most free RAM, relative, then vCPUs); then name.
A soft rule that the chosen host does not keep is named in the decision (`soft`).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from vimha.domain.affinity import Membership, domain_of, soft_score, violation
from vimha.domain.compute import Flavor, HostResources

DEFAULT_HIERARCHY = ("site", "zone", "rack", "host")
TIE = 0.001  # weights this close to the best count as the best (a drawn host keeps the spread)


@dataclass(frozen=True, slots=True)
class Candidate:
    resources: HostResources
    health: str  # HealthStatus value: only UP hosts get new instances
    location: Mapping[str, str] = field(default_factory=dict)  # level -> value

    @property
    def name(self) -> str:
        return self.resources.host


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    flavor: Flavor
    hypervisor: str | None = None  # the image's hypervisor_type, if it names one
    host: str | None = None  # forced (an operator's hint)
    different_host: frozenset[str] = frozenset()  # hosts of these instances are excluded
    same_host: frozenset[str] = frozenset()  # must be one of these hosts
    exclude: frozenset[str] = frozenset()  # hosts not to use (a failed one, a retry)
    traits: frozenset[str] = frozenset()  # required (the SAL class's)
    sal: str = ""
    memberships: tuple[Membership, ...] = ()  # the groups it joins, with their members
    hierarchy: tuple[str, ...] = DEFAULT_HIERARCHY
    instance: str | None = None  # its id when it is already a member (a re-placement)
    reserve: Callable[[str], str | None] | None = None  # why a host would eat a SAL reserve


@dataclass(frozen=True, slots=True)
class FilterStep:
    name: str
    before: int
    after: int
    why: Mapping[str, str]  # host -> why it was removed

    @property
    def removed(self) -> int:
        return self.before - self.after


@dataclass(frozen=True, slots=True)
class Decision:
    host: str | None
    generation: int
    reason: str
    steps: tuple[FilterStep, ...] = ()
    scores: Mapping[str, float] = field(default_factory=dict)
    soft: tuple[str, ...] = ()  # soft rules the chosen host does not keep

    def explain(self) -> dict[str, object]:
        return {
            "host": self.host,
            "reason": self.reason,
            "filters": [
                {"name": s.name, "before": s.before, "after": s.after, "removed": dict(s.why)}
                for s in self.steps
            ],
            "weights": dict(self.scores),
            "softViolations": list(self.soft),
        }


@dataclass(frozen=True, slots=True)
class Rule:
    """A hard rule as one decision checks it on every host: the domains it may not go to
    (full), and the one it must go to (an affinity group with members), if any."""

    blocked: frozenset[str]
    only: str | None = None
    nowhere: bool = False  # an affinity group already split (kept nowhere)


@dataclass(frozen=True, slots=True)
class Seen:
    """What a decision computes once for all hosts: where every host is, each of the
    request's groups' members per domain and its rule, each host's domains (cached)."""

    where: Mapping[str, Mapping[str, str]]
    hierarchy: tuple[str, ...]
    counts: tuple[Counter[str], ...]
    rules: tuple[Rule | None, ...]
    domains: dict[tuple[str, str], str | None] = field(default_factory=dict)

    def domain(self, host: str, level: str) -> str | None:
        key = (host, level)
        if key not in self.domains:
            self.domains[key] = domain_of(self.where.get(host, {}), level, self.hierarchy)
        return self.domains[key]


def _rule(m: Membership, counts: Counter[str]) -> Rule | None:
    g = m.group
    if not g.policy.hard:
        return None
    limit = g.limit
    blocked = frozenset(d for d, n in counts.items() if limit is not None and n + 1 > limit)
    if g.policy.apart or not counts:
        return Rule(blocked)
    if len(counts) > 1:
        return Rule(blocked, nowhere=True)
    return Rule(blocked, next(iter(counts)))


Filter = Callable[[PlacementRequest, Candidate, Seen], str | None]


def _up(req: PlacementRequest, c: Candidate, seen: Seen) -> str | None:
    return None if c.health == "UP" else f"host is {c.health}"


# An image's `hypervisor_type` as Glance has it (`qemu`, `kvm`) names what vimha's libvirt
# driver runs.
HYPERVISOR_ALIASES = {"qemu": "libvirt", "kvm": "libvirt"}


def hypervisor_family(name: str) -> str:
    name = name.lower()
    return HYPERVISOR_ALIASES.get(name, name)


def _hypervisor(req: PlacementRequest, c: Candidate, seen: Seen) -> str | None:
    if req.hypervisor and hypervisor_family(req.hypervisor) != hypervisor_family(
        c.resources.hypervisor
    ):
        return f"runs {c.resources.hypervisor}, the image needs {req.hypervisor}"
    return None


def _hints(req: PlacementRequest, c: Candidate, seen: Seen) -> str | None:
    if req.host is not None and c.name != req.host:
        return f"not the requested host {req.host}"
    if c.name in req.exclude:
        return "excluded"
    if c.name in req.different_host:
        return "runs an instance it must be apart from (different_host)"
    if req.same_host and c.name not in req.same_host:
        return "does not run the instances it must be with (same_host)"
    return None


def _capacity(req: PlacementRequest, c: Candidate, seen: Seen) -> str | None:
    return c.resources.fits(req.flavor)


def _sal(req: PlacementRequest, c: Candidate, seen: Seen) -> str | None:
    missing = req.traits - c.resources.traits
    if missing:
        return f"lacks {', '.join(sorted(missing))} ({req.sal or 'required'})"
    return None


def _reserve(req: PlacementRequest, c: Candidate, seen: Seen) -> str | None:
    return req.reserve(c.resources.host) if req.reserve is not None else None


def _groups(req: PlacementRequest, c: Candidate, seen: Seen) -> str | None:
    host = c.resources.host
    for m, rule, counts in zip(req.memberships, seen.rules, seen.counts, strict=True):
        if rule is None:
            continue
        d = seen.domain(host, m.group.level)
        if d is None or rule.nowhere or d in rule.blocked or (rule.only not in (None, d)):
            return violation(m, host, seen.where, req.hierarchy, req.instance, counts)
    return None


def _no_hints(req: PlacementRequest, seen: Seen) -> bool:
    return req.host is None and not (req.exclude or req.different_host or req.same_host)


# Filters that can remove no host for this request are not run (1,000 hosts, issue 15):
# their step is kept, with nothing removed.
IDLE: Mapping[str, Callable[[PlacementRequest, Seen], bool]] = {
    "Hypervisor": lambda req, seen: not req.hypervisor,
    "Hints": _no_hints,
    "ServiceAvailabilityLevel": lambda req, seen: not req.traits,
    "GroupRules": lambda req, seen: all(r is None for r in seen.rules),
    "SalReserve": lambda req, seen: req.reserve is None,
}

FILTERS: tuple[tuple[str, Filter], ...] = (
    ("HostUp", _up),
    ("Hypervisor", _hypervisor),
    ("Hints", _hints),
    ("ServiceAvailabilityLevel", _sal),
    ("GroupRules", _groups),
    ("Capacity", _capacity),
    ("SalReserve", _reserve),
)


def _weight(c: Candidate) -> float:
    r = c.resources
    ram_total = r.ram_mib * r.ram_ratio or 1
    cpu_total = r.vcpus * r.cpu_ratio or 1
    return (ram_total - r.used_ram_mib) / ram_total + 0.5 * (cpu_total - r.used_vcpus) / cpu_total


def place(
    req: PlacementRequest,
    candidates: Sequence[Candidate],
    locations: Mapping[str, Mapping[str, str]] | None = None,
    pick: int = 1,
    rng: random.Random | None = None,
    tie: float = TIE,
    domains: dict[tuple[str, str], str | None] | None = None,
) -> Decision:
    """`locations`: every host's place (members may be on hosts that are not candidates,
    a host down, say); by default the candidates'. With `pick` > 1, the host is drawn by
    `rng` among the `pick` best (Nova's host subset): schedulers deciding at once on the
    same snapshot then seldom race for the same host. Only hosts weighed (nearly) as well as
    the best are drawn from: the spread is kept. `domains`: each (host, level)'s domain as
    far as found, filled as found: a caller deciding again and again on the same
    `locations` keeps it (and drops it when they change)."""
    where: Mapping[str, Mapping[str, str]] = (
        locations if locations is not None else {c.name: c.location for c in candidates}
    )
    counted = tuple(m.counts(where, req.hierarchy, exclude=req.instance) for m in req.memberships)
    seen = Seen(
        where,
        req.hierarchy,
        counted,
        tuple(_rule(m, n) for m, n in zip(req.memberships, counted, strict=True)),
        domains if domains is not None else {},
    )
    survivors = list(candidates)
    steps: list[FilterStep] = []
    for name, check in FILTERS:
        idle = IDLE.get(name)
        if idle is not None and idle(req, seen):
            steps.append(FilterStep(name, len(survivors), len(survivors), {}))
            continue
        why: dict[str, str] = {}
        kept = []
        for c in survivors:
            problem = check(req, c, seen)
            if problem is None:
                kept.append(c)
            else:
                why[c.name] = problem
        steps.append(FilterStep(name, len(survivors), len(kept), why))
        survivors = kept
        if not survivors:
            counts = ", ".join(f"{s.name} removed {s.removed}" for s in steps if s.removed)
            return Decision(
                None,
                0,
                f"No valid host was found: {len(candidates)} candidate(s); {counts or 'none'}",
                tuple(steps),
            )
    soft = [
        (m, n) for m, n in zip(req.memberships, counted, strict=True) if not m.group.policy.hard
    ]
    soft_m = [m for m, _ in soft]
    soft_n = [n for _, n in soft]
    if soft:
        scores = {
            c.name: _weight(c) + 10 * soft_score(soft_m, c.name, where, req.hierarchy, soft_n)
            for c in survivors
        }
    else:
        scores = {c.name: _weight(c) for c in survivors}
    # Only the first `pick` of the ranking are ever looked at: the same as sorting them all.
    ranked = heapq.nsmallest(max(pick, 1), survivors, key=lambda c: (-scores[c.name], c.name))
    best = ranked[0]
    if pick > 1 and rng is not None:
        ties = [c for c in ranked[:pick] if scores[c.name] >= scores[best.name] - tie]
        best = rng.choice(ties)
    unkept = tuple(
        broken
        for m, n in soft
        if (broken := violation(m, best.name, where, req.hierarchy, req.instance, n)) is not None
    )
    return Decision(
        best.name,
        best.resources.generation,
        f"{best.name}: best of {len(survivors)} valid host(s)",
        tuple(steps),
        scores,
        unkept,
    )
