"""Placement groups (issue 15, VNF-2): Nova's server groups at any level of aggregation.

A group has a policy (`affinity`, `anti-affinity`, `soft-affinity`, `soft-anti-affinity`),
the level at which it applies (any level of the topology hierarchy: site, zone, rack, host,
or one an operator declares, a power domain say; default host) and `max_per_domain` (Nova's
`max_server_per_host`, for any level). A hard rule is never broken; a soft one is weighed.

A host's domain at a level is the path of its location down to that level
(`s1/z1/r2` for the rack level): two racks named alike in two zones are two domains.
ETSI's scopes map onto levels: NFVI_NODE = host, ZONE = zone, ZONE_GROUP = site group,
NFVI_POP = site.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from vimha.domain.errors import InvalidInput

ETSI_SCOPES = {"NFVI_NODE": "host", "ZONE": "zone", "NFVI_POP": "site"}


class GroupPolicy(StrEnum):
    AFFINITY = "affinity"
    ANTI_AFFINITY = "anti-affinity"
    SOFT_AFFINITY = "soft-affinity"
    SOFT_ANTI_AFFINITY = "soft-anti-affinity"

    @property
    def hard(self) -> bool:
        return self in (GroupPolicy.AFFINITY, GroupPolicy.ANTI_AFFINITY)

    @property
    def apart(self) -> bool:
        return self in (GroupPolicy.ANTI_AFFINITY, GroupPolicy.SOFT_ANTI_AFFINITY)


@dataclass(frozen=True, slots=True)
class PlacementGroup:
    id: str
    name: str
    policy: GroupPolicy
    level: str = "host"
    max_per_domain: int | None = None  # anti-affinity: 1 when not given
    vnf_id: str | None = None
    generation: int = 0  # bumped with each member placed, moved or removed

    @property
    def limit(self) -> int | None:
        """Members one domain may hold (None: any number)."""
        if self.max_per_domain is not None:
            return self.max_per_domain
        return 1 if self.policy.apart else None

    def describe(self) -> str:
        limit = f", at most {self.limit} per {self.level}" if self.limit is not None else ""
        return f"{self.policy.value} group {self.name} at level {self.level}{limit}"


def check_group(
    policy: GroupPolicy,
    level: str,
    max_per_domain: int | None,
    hierarchy: Sequence[str],
    known_levels: set[str] | None = None,
) -> None:
    """A group's rule, refused with the reason (InvalidInput) before anything is stored."""
    if level not in hierarchy:
        raise InvalidInput(
            f"placement group level {level!r}: not a level of the topology ({', '.join(hierarchy)})"
        )
    if known_levels is not None and level not in known_levels:
        raise InvalidInput(f"placement group level {level!r}: no host declares it")
    if max_per_domain is not None and max_per_domain < 1:
        raise InvalidInput("placement group maxPerDomain: must be at least 1")


def domain_of(location: Mapping[str, str], level: str, hierarchy: Sequence[str]) -> str | None:
    """The path of `location` down to `level`; None if the location does not say it."""
    if level == "host":
        path = [location[lv] for lv in hierarchy if lv in location]
        return "/".join(path) if location.get("host") else None
    if level not in location:
        return None
    out = []
    for lv in hierarchy:
        if lv in location:
            out.append(location[lv])
        if lv == level:
            break
    return "/".join(out)


@dataclass(frozen=True, slots=True)
class Membership:
    """A group as placement sees it: its rule and where its other members are now."""

    group: PlacementGroup
    member_hosts: Mapping[str, str] = field(default_factory=dict)  # instance -> host

    def counts(
        self,
        locations: Mapping[str, Mapping[str, str]],
        hierarchy: Sequence[str],
        exclude: str | None = None,
    ) -> Counter[str]:
        out: Counter[str] = Counter()
        for instance, host in self.member_hosts.items():
            if instance == exclude or host not in locations:
                continue
            domain = domain_of(locations[host], self.group.level, hierarchy)
            if domain is not None:
                out[domain] += 1
        return out


def violation(
    m: Membership,
    host: str,
    locations: Mapping[str, Mapping[str, str]],
    hierarchy: Sequence[str],
    instance: str | None = None,
    counts: Counter[str] | None = None,
) -> str | None:
    """Why placing a member on `host` breaks the group's rule (hard or soft), or None.
    `counts`: the members per domain (`m.counts(...)`), when the caller has it already."""
    g = m.group
    domain = domain_of(locations.get(host, {}), g.level, hierarchy)
    if domain is None:
        return f"{g.describe()}: the host declares no {g.level}"
    if counts is None:
        counts = m.counts(locations, hierarchy, exclude=instance)
    if g.limit is not None and counts[domain] + 1 > g.limit:
        return f"{g.describe()}: {domain} already holds {counts[domain]}"
    if not g.policy.apart:
        elsewhere = sorted(d for d in counts if d != domain)
        if elsewhere:
            return f"{g.describe()}: its members are in {elsewhere[0]}"
    return None


def soft_score(
    memberships: Sequence[Membership],
    host: str,
    locations: Mapping[str, Mapping[str, str]],
    hierarchy: Sequence[str],
    counts: Sequence[Counter[str]] | None = None,
) -> float:
    """The soft rules' weight of a host: more members of a soft-affinity group in its
    domain is better, fewer of a soft-anti-affinity group is better. `counts`: each
    membership's members per domain, when the caller has them already."""
    score = 0.0
    for n, m in enumerate(memberships):
        if m.group.policy.hard:
            continue
        domain = domain_of(locations.get(host, {}), m.group.level, hierarchy)
        per = counts[n] if counts is not None else m.counts(locations, hierarchy)
        held = per[domain] if domain is not None else 0
        score += held if m.group.policy is GroupPolicy.SOFT_AFFINITY else -held
    return score


def fits_one_domain(
    group: PlacementGroup,
    members: int,
    capacity_per_domain: Mapping[str, int],
) -> str | None:
    """An affinity group whose members cannot fit one domain: why, or None.
    `capacity_per_domain`: how many members each domain could hold at most."""
    if group.policy is not GroupPolicy.AFFINITY:
        return None
    if group.limit is not None and members > group.limit:
        return f"{group.describe()}: {members} members exceed its limit of {group.limit}"
    best = max(capacity_per_domain.values(), default=0)
    if members > best:
        return (
            f"{group.describe()}: {members} members cannot fit one {group.level} "
            f"(the largest holds {best})"
        )
    return None
