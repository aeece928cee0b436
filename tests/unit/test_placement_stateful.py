"""Placement as a state machine, driven by hypothesis: VNFs with groups at random levels and
policies, instances created and deleted, hosts failing and coming back. After every step:
no host is over capacity, no hard rule is broken, every SAL reserve is kept."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vimha.domain.affinity import GroupPolicy, Membership, PlacementGroup, domain_of
from vimha.domain.compute import Flavor, HostResources, Sal
from vimha.domain.placement import Candidate, PlacementRequest, place
from vimha.domain.sal import HostLoad, SalClass, reserve_guard, reserve_violation

H = ("site", "zone", "rack", "host")
HOSTS = {
    f"h{n}": {"site": "s1", "zone": f"z{n // 4}", "rack": f"r{n // 2}", "host": f"h{n}"}
    for n in range(8)
}
FLAVORS = [Flavor("s", "s", 1, 512, 1), Flavor("m", "m", 2, 1024, 1)]
SAL_CLASSES = {
    Sal.LEVEL_1: SalClass(Sal.LEVEL_1, frozenset({"REDUNDANT_PSU"}), "rack"),
    Sal.LEVEL_2: SalClass(Sal.LEVEL_2, reserve="host"),
    Sal.LEVEL_3: SalClass(Sal.LEVEL_3),
}
TRAITS = {
    h: frozenset({"REDUNDANT_PSU"}) if n % 2 == 0 else frozenset() for n, h in enumerate(HOSTS)
}


class Placement(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.used: dict[str, tuple[int, int]] = dict.fromkeys(HOSTS, (0, 0))
        self.up = set(HOSTS)
        self.groups: dict[str, PlacementGroup] = {}
        self.instances: dict[str, tuple[str, str | None, Flavor, Sal]] = {}  # host, group
        self.serial = 0

    def resources(self, h: str) -> HostResources:
        cpu, ram = self.used[h]
        return HostResources(h, 4, 4096, 100, cpu, ram, cpu_ratio=1.0, traits=TRAITS[h])

    def membership(self, gid: str) -> Membership:
        hosts = {i: h for i, (h, g, _, _) in self.instances.items() if g == gid}
        return Membership(self.groups[gid], hosts)

    def loads(self, sal: Sal) -> list[HostLoad]:
        cls = SAL_CLASSES[sal]
        out = []
        for h in HOSTS:
            r = self.resources(h)
            if h not in self.up or not cls.traits <= r.traits:
                continue
            mine = [f for (host, _, f, s) in self.instances.values() if host == h and s is sal]
            out.append(
                HostLoad(
                    h,
                    HOSTS[h],
                    r.free_vcpus,
                    r.free_ram_mib,
                    sum(f.vcpus for f in mine),
                    sum(f.ram_mib for f in mine),
                )
            )
        return out

    @rule(
        policy=st.sampled_from(list(GroupPolicy)),
        level=st.sampled_from(H),
        limit=st.one_of(st.none(), st.integers(1, 3)),
    )
    def new_group(self, policy: GroupPolicy, level: str, limit: int | None) -> None:
        gid = f"g{len(self.groups)}"
        self.groups[gid] = PlacementGroup(gid, gid, policy, level, limit)

    @rule(data=st.data(), flavor=st.sampled_from(FLAVORS), sal=st.sampled_from(list(Sal)))
    def create(self, data: st.DataObject, flavor: Flavor, sal: Sal) -> None:
        gid = data.draw(st.sampled_from([None, *self.groups]))
        cls = SAL_CLASSES[sal]
        memberships = (self.membership(gid),) if gid else ()
        candidates = [
            Candidate(self.resources(h), "UP" if h in self.up else "DOWN", HOSTS[h]) for h in HOSTS
        ]
        guard = reserve_guard(SAL_CLASSES, {s: self.loads(s) for s in Sal}, H)
        req = PlacementRequest(
            flavor,
            traits=cls.traits,
            sal=sal.value,
            memberships=memberships,
            hierarchy=H,
            reserve=lambda h: guard.check(h, flavor, sal),  # every class's reserve
        )
        decision = place(req, candidates, HOSTS)
        if decision.host is None:
            return
        self.serial += 1
        self.instances[f"i{self.serial}"] = (decision.host, gid, flavor, sal)
        cpu, ram = self.used[decision.host]
        self.used[decision.host] = (cpu + flavor.vcpus, ram + flavor.ram_mib)

    @precondition(lambda self: bool(self.instances))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        iid = data.draw(st.sampled_from(sorted(self.instances)))
        host, _, flavor, _ = self.instances.pop(iid)
        cpu, ram = self.used[host]
        self.used[host] = (cpu - flavor.vcpus, ram - flavor.ram_mib)

    @rule(host=st.sampled_from(sorted(HOSTS)))
    def fail(self, host: str) -> None:
        self.up.discard(host)

    @rule(host=st.sampled_from(sorted(HOSTS)))
    def recover(self, host: str) -> None:
        self.up.add(host)

    @invariant()
    def no_host_over_capacity(self) -> None:
        for h in HOSTS:
            r = self.resources(h)
            assert r.free_vcpus >= 0 and r.free_ram_mib >= 0, r

    @invariant()
    def no_hard_rule_broken(self) -> None:
        for gid, g in self.groups.items():
            if not g.policy.hard:
                continue
            domains = Counter(
                domain_of(HOSTS[h], g.level, H)
                for h, grp, _, _ in self.instances.values()
                if grp == gid
            )
            if g.limit is not None:
                assert max(domains.values(), default=0) <= g.limit, (g, domains)
            if g.policy is GroupPolicy.AFFINITY:
                assert len(domains) <= 1, (g, domains)

    @invariant()
    def sal_reserves_kept(self) -> None:
        nothing = replace(FLAVORS[0], vcpus=0, ram_mib=0)
        for sal, cls in SAL_CLASSES.items():
            if cls.reserve == "none" or self.up != set(HOSTS):
                continue  # a failed host's capacity is gone: the reserve is being used
            assert reserve_violation(cls, self.loads(sal), nothing, H) is None


TestPlacement = Placement.TestCase
TestPlacement.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
