"""The scheduler (issue 15): placement decided on a snapshot, then claimed in the same unit
of work with every hard rule checked again (VNF-10: several controllers schedule at once,
none ever places against a rule, not even for a moment).

Inside one unit of work: read the hosts (resources with their generations), the groups the
instance joins (locked, with where their members are now) and each host's SAL usage;
decide (domain/placement.py: filters, weighers, soft rules); check the SAL's failover
reserve (domain/sal.py); claim the host (compare-and-swap on its generation) and join each
group (compare-and-swap on the group's generation). A conflict raises ClaimConflict: the
writer runs the unit of work again, on a fresh snapshot. With no valid host, a higher
priority may pre-empt lower-priority instances (domain/preemption.py), where allowed.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from vimha.domain.affinity import Membership
from vimha.domain.alarms import Location
from vimha.domain.compute import HostResources, Image, InstanceSpec, Sal
from vimha.domain.errors import Conflict, InvalidInput, NotFound
from vimha.domain.placement import TIE, Candidate, Decision, PlacementRequest, place
from vimha.domain.preemption import PreemptionPlan, Victim, plan_preemption
from vimha.domain.sal import ReserveGuard, SalClass
from vimha.engine.host_cache import HostCache
from vimha.engine.reserve_cache import ReserveCache
from vimha.ports.store import UnitOfWork

log = logging.getLogger("vimha.scheduler")
NOWHERE: Mapping[str, str] = {}  # a host the health view does not know


class NoValidHost(Conflict):
    """No host passes the filters: the reason says which removed how many."""


@dataclass(frozen=True, slots=True)
class HostView:
    """What placement needs of a host besides its resources: health and place."""

    health: str
    location: Location


@dataclass(slots=True)
class Snapshot:
    """What one unit of work decides on; updated in place as it claims."""

    candidates: dict[str, Candidate]
    locations: dict[str, Mapping[str, str]]
    groups: dict[str, Membership] = field(default_factory=dict)
    sal_usage: dict[str, dict[str, tuple[int, int]]] | None = None  # loaded when needed


@dataclass(frozen=True, slots=True)
class Placed:
    host: str
    generation: int
    decision: Decision
    notes: tuple[str, ...] = ()
    preempted: PreemptionPlan | None = None


class Scheduler:
    def __init__(
        self,
        hosts: Callable[[], Mapping[str, HostView]],
        hierarchy: tuple[str, ...],
        sal_classes: Mapping[Sal, SalClass],
        preemption: bool = True,
        pick: int = 3,
        rng: random.Random | None = None,
        tie: float = TIE,
    ) -> None:
        """`pick`: the host is drawn among that many best (several schedulers at once
        then seldom claim the same host)."""
        self.hosts = hosts
        self.pick = pick
        self.tie = tie
        self.reserved = frozenset().union(*(c.reserved_hosts for c in sal_classes.values()))
        self.rng = rng or random.Random()
        self.hierarchy = hierarchy
        self.sal_classes = dict(sal_classes)
        self.preemption = preemption
        self.cache = HostCache(any(c.reserve != "none" for c in self.sal_classes.values()))
        self.reserves = ReserveCache(self.sal_classes, hierarchy)
        # Kept between snapshots: a candidate is built again only when its host moved.
        self._candidates: dict[str, Candidate] = {}
        self._places: dict[str, tuple[Location, Mapping[str, str]]] = {}
        self._located: Mapping[str, Mapping[str, str]] = {}
        self._domains: dict[tuple[str, str], str | None] = {}  # placement's, on _located

    def snapshot(self, uow: UnitOfWork) -> Snapshot:
        """The hosts as this unit of work sees them now: read from the cache, with only
        the hosts whose generation moved read again (engine/host_cache.py)."""
        seen = self.cache.read(uow)
        views = self.hosts()
        locations = {name: self._place(name, v.location) for name, v in views.items()}
        known = self._located
        if known.keys() != locations.keys() or any(known[n] is not w for n, w in locations.items()):
            self._domains = {}  # what it holds was found on other locations
        self._located = locations
        candidates = {}
        for name, res in seen.hosts.items():
            view = views.get(name)
            health = view.health if view is not None else "UNKNOWN"
            old = self._candidates.get(name)
            if (
                old is None
                or old.resources is not res
                or old.health != health
                or old.location is not locations.get(name, NOWHERE)
            ):
                old = Candidate(res, health, locations.get(name, NOWHERE))
                self._candidates[name] = old
            candidates[name] = old
        return Snapshot(candidates, locations, sal_usage=seen.usage)

    def _place(self, name: str, location: Location) -> Mapping[str, str]:
        """A host's levels, the same mapping while its location is the same (the
        candidates built on it are kept then)."""
        known = self._places.get(name)
        if known is None or (known[0] is not location and known[0] != location):
            known = (location, dict(location.levels))
            self._places[name] = known
        return known[1]

    def load_groups(self, uow: UnitOfWork, snap: Snapshot, group_ids: Sequence[str]) -> None:
        """The groups (locked for this unit of work) and where their members are now."""
        wanted = [g for g in group_ids if g not in snap.groups]
        for gid, (group, members) in uow.compute.memberships(wanted).items():
            hosts = {i: h for i, h in members.items() if h is not None}
            snap.groups[gid] = Membership(group, hosts)

    def request(
        self,
        snap: Snapshot,
        spec: InstanceSpec,
        hypervisor: str | None,
        hints: Mapping[str, frozenset[str]],
        instance: str | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> PlacementRequest:
        """A re-placement (`instance` given) keeps the groups' rules but not the creation's
        forced host: it goes where the rules allow."""
        cls = self.sal_classes[spec.sal]
        return PlacementRequest(
            flavor=spec.flavor,
            hypervisor=hypervisor,
            host=spec.hints.get("host") if instance is None else None,
            different_host=hints.get("different_host", frozenset()),
            same_host=hints.get("same_host", frozenset()),
            exclude=exclude,
            traits=cls.traits,
            sal=spec.sal.value,
            memberships=tuple(snap.groups[g] for g in spec.groups if g in snap.groups),
            hierarchy=self.hierarchy,
            instance=instance,
        )

    def guard(self, uow: UnitOfWork, snap: Snapshot) -> ReserveGuard:
        """Every SAL class's failover reserve, on the snapshot as it is now."""
        if not self.cache.usage:
            return ReserveGuard(())
        if snap.sal_usage is None:
            snap.sal_usage = uow.compute.sal_usage()
        return self.reserves.guard(snap.candidates, snap.sal_usage)

    def place(
        self,
        uow: UnitOfWork,
        snap: Snapshot,
        instance_id: str,
        spec: InstanceSpec,
        image: Image,
        hints: Mapping[str, frozenset[str]],
        now: datetime,
        priority: int = 0,
        victims: Callable[[Sequence[str]], Mapping[str, Sequence[Victim]]] | None = None,
        exclude: frozenset[str] = frozenset(),
        rejoin: bool = False,
        evict: Callable[[PreemptionPlan], None] | None = None,
        recovery: bool = False,
        consumer: str | None = None,
        host: str | None = None,
    ) -> Placed:
        """Decide, check the reserve, claim the host and join the groups; raises NoValidHost
        (with the reason) or ClaimConflict (decide again). Hosts reserved for a SAL's
        recovery (Masakari's reserved hosts) take no new instance; a recovery of that SAL
        tries them first, then spare capacity. A migration claims its destination under
        its own id (`consumer`: the instance keeps its source's claim until it lands) and
        may name the host (`host`, an operator's choice: still every rule is checked)."""
        self.load_groups(uow, snap, spec.groups)
        guard = self.guard(uow, snap)
        req = self.request(
            snap,
            spec,
            image.properties.get("hypervisor_type"),
            hints,
            instance_id if rejoin else None,
            exclude,
        )
        req = replace(
            req,
            reserve=lambda h: guard.check(h, spec.flavor, spec.sal),
            exclude=exclude | self.reserved,
            host=host if host is not None else req.host,
        )
        own = self.sal_classes[spec.sal].reserved_hosts if recovery else frozenset()
        decision = None
        if own:
            first = replace(req, exclude=exclude | (self.reserved - own), same_host=own - exclude)
            decision = place(first, list(snap.candidates.values()), snap.locations)
        if decision is None or decision.host is None:
            decision = place(
                req,
                list(snap.candidates.values()),
                snap.locations,
                self.pick,
                self.rng,
                self.tie,
                self._domains if snap.locations is self._located else None,
            )
        notes: list[str] = list(decision.soft)
        preempted = None
        if decision.host is None:
            preempted = self._preempt(req, decision, snap, priority, victims)
            if preempted is None or evict is None:
                raise NoValidHost(decision.reason)
            notes.append(preempted.reason)
            evict(preempted)  # the victims stopped, their claims given back
            fresh = uow.compute.hosts()[preempted.host]
            snap.candidates[preempted.host] = replace(
                snap.candidates[preempted.host], resources=fresh
            )
        host = preempted.host if preempted is not None else decision.host
        assert host is not None
        if (why := guard.check(host, spec.flavor, spec.sal, refusing=False)) is not None:
            notes.append(f"placed into the reserve: {why}")
        chosen = snap.candidates[host]
        generation = uow.compute.claim(
            host, chosen.resources.generation, consumer or instance_id, spec.flavor, now
        )
        snap.candidates[host] = replace(
            chosen, resources=replace(chosen.resources.claimed(spec.flavor), generation=generation)
        )
        if snap.sal_usage is not None:  # its maps are shared with the cache: replaced
            usage = snap.sal_usage.get(host, {})
            cpu, ram = usage.get(spec.sal.value, (0, 0))
            snap.sal_usage[host] = {
                **usage,
                spec.sal.value: (cpu + spec.flavor.vcpus, ram + spec.flavor.ram_mib),
            }
        for gid in spec.groups:
            m = snap.groups[gid]
            if rejoin:
                uow.compute.moved_in_groups(instance_id)
                gen = m.group.generation + 1
            else:
                gen = uow.compute.join_group(gid, instance_id, m.group.generation)
            snap.groups[gid] = Membership(
                replace(m.group, generation=gen), {**m.member_hosts, instance_id: host}
            )
        return Placed(host, generation, decision, tuple(notes), preempted)

    def _preempt(
        self,
        req: PlacementRequest,
        decision: Decision,
        snap: Snapshot,
        priority: int,
        victims: Callable[[Sequence[str]], Mapping[str, Sequence[Victim]]] | None,
    ) -> PreemptionPlan | None:
        """Where only capacity is missing, the cheapest set of lower-priority instances to
        stop; None if the policy does not allow it or nothing would make room."""
        if not self.preemption or victims is None or priority <= 0 or not decision.steps:
            return None
        last = decision.steps[-1]
        if last.name != "Capacity" or last.after != 0 or last.before == 0:
            return None  # some other rule left no host: stopping instances would not help
        hosts = [snap.candidates[h].resources for h in last.why]
        return plan_preemption(priority, req.flavor, hosts, victims(list(last.why)))


def resolve_hosts(uow: UnitOfWork, ids: object) -> frozenset[str]:
    """The hosts of the instances a scheduler hint names (different_host, same_host)."""
    if not ids:
        return frozenset()
    refs = [ids] if isinstance(ids, str) else list(ids)  # type: ignore[call-overload]
    out = set()
    for ref in refs:
        try:
            host = uow.compute.instance_for_update(str(ref)).host
        except NotFound:
            raise InvalidInput(f"scheduler hint: instance {ref} not found") from None
        if host:
            out.add(host)
    return frozenset(out)


def usage_of(resources: HostResources) -> str:
    return (
        f"{resources.used_vcpus}/{resources.vcpus * resources.cpu_ratio:g} vCPUs, "
        f"{resources.used_ram_mib}/{resources.ram_mib * resources.ram_ratio:g} MiB"
    )
