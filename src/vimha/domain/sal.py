"""Service availability levels (issue 15, VNF-3): each SAL bound to host traits and to a
reserve of failover capacity.

A SAL class names the traits its hosts must have (LEVEL_1, say, only on hosts with
redundant power supplies and both network planes) and the scope of its reserve: `host`
(enough free capacity on its other hosts to re-place the SAL's instances of its most loaded
host), a wider level (`rack`: of its most loaded rack), or `none`. A request that would eat
the reserve is refused, or placed with an alarm (`on_reserve: alarm`).

The reserve is checked on aggregates (vCPUs and RAM), not by packing instance by instance:
it is what an operator sizes a cloud with. With `slack(D) = free(all) - free(D) - demand(D)`
for each domain D of a class's scope (its hosts only), a request of `f` on host h of domain
X keeps that class's reserve iff
- it is of that SAL: every slack >= f (X's demand grows, the others' room shrinks);
- it is of another SAL: every slack of a domain other than X >= f (X's slack is unchanged:
  its free room and the room elsewhere shrink alike).
Every request goes through every class's guard, whatever its own SAL: an instance of a
lower level must not eat LEVEL_1's reserve either. `ReserveGuard` precomputes the two
smallest slacks of each class, so each host is checked in constant time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from vimha.domain.affinity import domain_of
from vimha.domain.compute import Flavor, Sal
from vimha.domain.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class SalClass:
    sal: Sal
    traits: frozenset[str] = frozenset()
    reserve: str = "none"  # a level of the hierarchy (host, rack, ...) or "none"
    on_reserve: Literal["refuse", "alarm"] = "refuse"
    reserved_hosts: frozenset[str] = field(default_factory=frozenset)  # recovery only (17)


DEFAULT_CLASSES: dict[Sal, SalClass] = {s: SalClass(s) for s in Sal}


def check_classes(classes: Mapping[Sal, SalClass], hierarchy: Sequence[str]) -> None:
    for cls in classes.values():
        if cls.reserve != "none" and cls.reserve not in hierarchy:
            raise InvalidInput(
                f"placement.sal.{cls.sal.value}.reserve: {cls.reserve!r} is not a level "
                f"({', '.join(hierarchy)}) nor none"
            )


def missing_traits(cls: SalClass, traits: Iterable[str]) -> frozenset[str]:
    return cls.traits - frozenset(traits)


@dataclass(frozen=True, slots=True)
class HostLoad:
    """One host of a SAL class: its free capacity and what its instances of that SAL use."""

    host: str
    location: Mapping[str, str]
    free_vcpus: float
    free_ram_mib: float
    sal_vcpus: int  # used by the SAL's instances on it
    sal_ram_mib: int


def reserve_violation(
    cls: SalClass,
    hosts: Sequence[HostLoad],
    flavor: Flavor,
    hierarchy: Sequence[str],
) -> str | None:
    """Why placing `flavor` would eat the SAL's failover reserve, or None."""
    if cls.reserve == "none" or len(hosts) < 2:
        return None
    free_cpu = sum(h.free_vcpus for h in hosts)
    free_ram = sum(h.free_ram_mib for h in hosts)
    domains: dict[str, list[HostLoad]] = {}
    for h in hosts:
        d = domain_of(h.location, cls.reserve, hierarchy) or h.host
        domains.setdefault(d, []).append(h)
    worst: tuple[float, str, str] | None = None
    for name, members in domains.items():
        for what, need, free_all, free_d, demand in (
            (
                "vCPUs",
                flavor.vcpus,
                free_cpu,
                sum(m.free_vcpus for m in members),
                sum(m.sal_vcpus for m in members),
            ),
            (
                "RAM MiB",
                flavor.ram_mib,
                free_ram,
                sum(m.free_ram_mib for m in members),
                sum(m.sal_ram_mib for m in members),
            ),
        ):
            slack = free_all - free_d - demand
            if slack < need and (worst is None or slack - need < worst[0]):
                worst = (
                    slack - need,
                    name,
                    f"{what}: {demand:g} in use there, "
                    f"{free_all - free_d:g} free elsewhere, {need} asked",
                )
    if worst is None:
        return None
    return (
        f"{cls.sal.value} failover reserve ({cls.reserve}): the instances of {worst[1]} "
        f"could no longer be re-placed ({worst[2]})"
    )


@dataclass(frozen=True, slots=True)
class _Pool:
    cls: SalClass
    domain: Mapping[str, str]  # host -> its domain at the class's reserve level
    low: tuple[tuple[float, str], ...]  # the two smallest vCPU slacks, with their domain
    low_ram: tuple[tuple[float, str], ...]


@dataclass(frozen=True, slots=True)
class ReserveGuard:
    pools: tuple[_Pool, ...]

    def check(self, host: str, flavor: Flavor, sal: Sal, refusing: bool = True) -> str | None:
        """Why placing `flavor` of `sal` on `host` would eat a class's reserve, or None.
        `refusing`: only the classes that refuse (else only those that alarm)."""
        for pool in self.pools:
            if (pool.cls.on_reserve == "refuse") != refusing or host not in pool.domain:
                continue
            mine = pool.domain[host]
            same = sal is pool.cls.sal
            for what, need, lows in (
                ("vCPUs", flavor.vcpus, pool.low),
                ("RAM MiB", flavor.ram_mib, pool.low_ram),
            ):
                for slack, domain in lows:
                    if (same or domain != mine) and slack < need:
                        return (
                            f"{pool.cls.sal.value} failover reserve ({pool.cls.reserve}): the "
                            f"instances of {domain} could no longer be re-placed ({what}: "
                            f"{slack:g} to spare, {need} asked)"
                        )
        return None


Sums = tuple[float, float, float, float]  # free vCPUs, SAL vCPUs, free RAM, SAL RAM


@dataclass(frozen=True, slots=True)
class ReservePool:
    """One class's hosts summed per domain of its reserve level: what its guard is made
    of. A scheduler keeps it between decisions and gives it only the hosts that moved
    (`with_hosts`): the guard is then that of all the hosts, without going through them
    all again (issue 15)."""

    cls: SalClass
    hosts: Mapping[str, HostLoad] = field(default_factory=dict)
    domain: Mapping[str, str] = field(default_factory=dict)  # host -> its domain
    members: Mapping[str, frozenset[str]] = field(default_factory=dict)  # domain -> hosts
    sums: Mapping[str, Sums] = field(default_factory=dict)  # domain -> its sums


def _sums(hosts: Iterable[HostLoad]) -> Sums:
    cpu = sal_cpu = ram = sal_ram = 0.0
    for h in hosts:
        cpu += h.free_vcpus
        sal_cpu += h.sal_vcpus
        ram += h.free_ram_mib
        sal_ram += h.sal_ram_mib
    return (cpu, sal_cpu, ram, sal_ram)


def with_hosts(
    pool: ReservePool, changed: Mapping[str, HostLoad | None], hierarchy: Sequence[str]
) -> ReservePool:
    """The pool with these hosts' loads (None: no longer one of the class's hosts)."""
    if not changed:
        return pool
    hosts, domain = dict(pool.hosts), dict(pool.domain)
    members = {d: set(m) for d, m in pool.members.items()}
    touched: set[str] = set()
    for name, load in changed.items():
        old = domain.pop(name, None)
        hosts.pop(name, None)
        if old is not None:
            members[old].discard(name)
            touched.add(old)
        if load is not None:
            d = domain_of(load.location, pool.cls.reserve, hierarchy) or name
            hosts[name], domain[name] = load, d
            members.setdefault(d, set()).add(name)
            touched.add(d)
    sums = dict(pool.sums)
    for d in touched:
        if members[d]:
            sums[d] = _sums(hosts[h] for h in members[d])
        else:
            del members[d], sums[d]
    return ReservePool(pool.cls, hosts, domain, {d: frozenset(m) for d, m in members.items()}, sums)


def guard_of(pools: Iterable[ReservePool]) -> ReserveGuard:
    """The guard of the classes that keep a reserve and have two hosts or more."""
    out = []
    for pool in pools:
        if pool.cls.reserve == "none" or len(pool.hosts) < 2:
            continue
        free_cpu = sum(s[0] for s in pool.sums.values())
        free_ram = sum(s[2] for s in pool.sums.values())
        cpu = sorted((free_cpu - a[0] - a[1], d) for d, a in pool.sums.items())[:2]
        ram = sorted((free_ram - a[2] - a[3], d) for d, a in pool.sums.items())[:2]
        out.append(_Pool(pool.cls, pool.domain, tuple(cpu), tuple(ram)))
    return ReserveGuard(tuple(out))


def reserve_guard(
    classes: Mapping[Sal, SalClass],
    loads: Mapping[Sal, Sequence[HostLoad]],
    hierarchy: Sequence[str],
) -> ReserveGuard:
    return guard_of(
        with_hosts(ReservePool(cls), {h.host: h for h in loads.get(sal, ())}, hierarchy)
        for sal, cls in classes.items()
        if cls.reserve != "none"
    )
