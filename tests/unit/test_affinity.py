"""Placement groups at any level: hard rules never broken, soft ones weighed; SAL traits
and reserve; pre-emption plans; scale-in choice."""

from __future__ import annotations

import pytest

from vimha.domain.affinity import (
    GroupPolicy,
    Membership,
    PlacementGroup,
    check_group,
    domain_of,
    fits_one_domain,
    violation,
)
from vimha.domain.compute import Flavor, HostResources, Sal
from vimha.domain.errors import InvalidInput
from vimha.domain.placement import Candidate, PlacementRequest, place
from vimha.domain.preemption import Victim, choose_scale_in, plan_preemption
from vimha.domain.sal import HostLoad, SalClass, reserve_violation

H = ("site", "zone", "power", "rack", "host")
LOC = {
    "h1": {"site": "s1", "zone": "z1", "power": "p1", "rack": "r1", "host": "h1"},
    "h2": {"site": "s1", "zone": "z1", "power": "p1", "rack": "r1", "host": "h2"},
    "h3": {"site": "s1", "zone": "z1", "power": "p2", "rack": "r2", "host": "h3"},
    "h4": {"site": "s1", "zone": "z2", "power": "p3", "rack": "r1", "host": "h4"},
}
TINY = Flavor("f", "tiny", 1, 256, 1)


def group(policy: GroupPolicy, level: str = "host", limit: int | None = None) -> PlacementGroup:
    return PlacementGroup("g", "g", policy, level, limit)


def candidates(traits: dict[str, set[str]] | None = None) -> list[Candidate]:
    return [
        Candidate(
            HostResources(h, 8, 8192, 100, traits=frozenset((traits or {}).get(h, ()))),
            "UP",
            LOC[h],
        )
        for h in LOC
    ]


def test_domains_are_paths_so_racks_named_alike_in_two_zones_differ() -> None:
    assert domain_of(LOC["h1"], "rack", H) == "s1/z1/p1/r1"
    assert domain_of(LOC["h4"], "rack", H) == "s1/z2/p3/r1"
    assert domain_of(LOC["h1"], "power", H) == "s1/z1/p1"
    assert domain_of({"host": "x"}, "rack", H) is None


@pytest.mark.parametrize(
    ("policy", "level", "limit", "members", "host", "broken"),
    [
        (GroupPolicy.ANTI_AFFINITY, "host", None, {"a": "h1"}, "h1", True),
        (GroupPolicy.ANTI_AFFINITY, "host", None, {"a": "h1"}, "h2", False),
        (GroupPolicy.ANTI_AFFINITY, "rack", None, {"a": "h1"}, "h2", True),
        (GroupPolicy.ANTI_AFFINITY, "rack", None, {"a": "h1"}, "h4", False),  # other zone
        (GroupPolicy.ANTI_AFFINITY, "power", 2, {"a": "h1"}, "h2", False),
        (GroupPolicy.ANTI_AFFINITY, "power", 2, {"a": "h1", "b": "h2"}, "h1", True),
        (GroupPolicy.AFFINITY, "rack", None, {"a": "h1"}, "h2", False),
        (GroupPolicy.AFFINITY, "rack", None, {"a": "h1"}, "h3", True),
        (GroupPolicy.AFFINITY, "host", 2, {"a": "h1", "b": "h1"}, "h1", True),
        (GroupPolicy.AFFINITY, "zone", None, {}, "h4", False),
    ],
)
def test_rules_at_any_level(
    policy: GroupPolicy,
    level: str,
    limit: int | None,
    members: dict[str, str],
    host: str,
    broken: bool,
) -> None:
    why = violation(Membership(group(policy, level, limit), members), host, LOC, H)
    assert (why is not None) is broken, why


def test_a_member_placed_again_is_not_counted_against_itself() -> None:
    m = Membership(group(GroupPolicy.ANTI_AFFINITY), {"a": "h1", "b": "h2"})
    assert violation(m, "h2", LOC, H) is not None
    assert violation(m, "h3", LOC, H, instance="b") is None
    assert violation(m, "h1", LOC, H, instance="b") is not None


def test_hard_rules_filter_and_say_why_no_host_is_valid() -> None:
    m = Membership(group(GroupPolicy.ANTI_AFFINITY, "zone"), {"a": "h1", "b": "h4"})
    d = place(PlacementRequest(TINY, memberships=(m,), hierarchy=H), candidates())
    assert d.host is None
    assert "GroupRules removed 4" in d.reason
    assert "anti-affinity group g at level zone, at most 1 per zone" in d.steps[4].why["h2"]


def test_soft_rules_are_weighed_and_a_broken_one_is_named() -> None:
    soft = Membership(group(GroupPolicy.SOFT_ANTI_AFFINITY, "rack"), {"a": "h1"})
    d = place(PlacementRequest(TINY, memberships=(soft,), hierarchy=H), candidates())
    assert d.host in ("h3", "h4") and d.soft == ()
    crowded = Membership(group(GroupPolicy.SOFT_ANTI_AFFINITY, "site"), {"a": "h1"})
    d = place(PlacementRequest(TINY, memberships=(crowded,), hierarchy=H), candidates())
    assert d.host is not None and len(d.soft) == 1 and "soft-anti-affinity" in d.soft[0]
    near = Membership(group(GroupPolicy.SOFT_AFFINITY, "rack"), {"a": "h3"})
    assert (
        place(PlacementRequest(TINY, memberships=(near,), hierarchy=H), candidates()).host == "h3"
    )


def test_sal_traits_filter() -> None:
    traits = {"h3": {"REDUNDANT_PSU", "BOTH_PLANES"}, "h1": {"BOTH_PLANES"}}
    req = PlacementRequest(TINY, traits=frozenset({"REDUNDANT_PSU", "BOTH_PLANES"}), sal="LEVEL_1")
    d = place(req, candidates(traits))
    assert d.host == "h3"
    assert d.steps[3].why["h1"] == "lacks REDUNDANT_PSU (LEVEL_1)"


def test_bad_rules_are_refused() -> None:
    with pytest.raises(InvalidInput, match="not a level of the topology"):
        check_group(GroupPolicy.ANTI_AFFINITY, "chassis", None, H)
    with pytest.raises(InvalidInput, match="no host declares it"):
        check_group(GroupPolicy.ANTI_AFFINITY, "power", None, H, {"site", "rack", "host"})
    with pytest.raises(InvalidInput, match="at least 1"):
        check_group(GroupPolicy.ANTI_AFFINITY, "host", 0, H)
    big = group(GroupPolicy.AFFINITY, "rack")
    assert "cannot fit one rack (the largest holds 3)" in str(
        fits_one_domain(big, 4, {"r1": 3, "r2": 2})
    )
    assert fits_one_domain(big, 3, {"r1": 3}) is None


def load(host: str, free: float, used: int) -> HostLoad:
    return HostLoad(host, LOC[host], free, free * 256, used, used * 256)


def test_the_sal_reserve_keeps_room_to_replace_the_most_loaded_host() -> None:
    cls = SalClass(Sal.LEVEL_1, reserve="host")
    hosts = [load("h1", 2, 4), load("h2", 4, 0), load("h3", 2, 0)]
    assert reserve_violation(cls, hosts, TINY, H) is None  # h1's 4 fit in 6 - 1
    hosts = [load("h1", 2, 6), load("h2", 4, 0), load("h3", 2, 0)]  # 6 in use, 6 free elsewhere
    why = reserve_violation(cls, hosts, TINY, H)
    assert why is not None and "LEVEL_1 failover reserve (host)" in why and "h1" in why
    assert reserve_violation(SalClass(Sal.LEVEL_1), hosts, TINY, H) is None


def test_the_reserve_at_rack_level_counts_a_whole_rack() -> None:
    cls = SalClass(Sal.LEVEL_1, reserve="rack")
    hosts = [load("h1", 1, 2), load("h2", 1, 2), load("h3", 4, 0)]
    why = reserve_violation(cls, hosts, TINY, H)
    assert why is not None and "s1/z1/p1/r1" in why


def test_preemption_takes_the_cheapest_lower_priority_victims() -> None:
    full = [
        HostResources("h1", 2, 1024, 10, used_vcpus=2, used_ram_mib=512, cpu_ratio=1.0),
        HostResources("h2", 2, 1024, 10, used_vcpus=2, used_ram_mib=512, cpu_ratio=1.0),
    ]
    victims = {
        "h1": [Victim("a", "a", 50, 1, 256, 1), Victim("b", "b", 10, 1, 256, 1)],
        "h2": [Victim("c", "c", 80, 2, 512, 1)],
    }
    plan = plan_preemption(100, TINY, full, victims)
    assert plan is not None and plan.host == "h1" and [v.name for v in plan.victims] == ["b"]
    assert plan_preemption(10, TINY, full, victims) is None  # nobody below priority 10
    two = Flavor("f2", "two", 2, 256, 1)
    plan = plan_preemption(60, two, full, victims)
    assert plan is not None and [v.name for v in plan.victims] == ["b", "a"]


def test_scale_in_takes_from_the_most_crowded_domain_highest_index_first() -> None:
    members = [("a", 0, "h1"), ("b", 1, "h1"), ("c", 2, "h3"), ("d", 3, "h2")]
    domains = {"h1": "r1", "h2": "r1", "h3": "r2"}
    assert choose_scale_in(members, 1, domains) == ["d"]
    assert choose_scale_in(members, 3, domains) == ["d", "b", "c"]
