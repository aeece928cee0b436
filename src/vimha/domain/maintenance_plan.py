"""Maintenance sessions (issue 19, VNF-11): the plan, and why a session is refused. Pure.

`plan` plays the session on a snapshot before anything moves: host after host (each alone
out of service, as the session will do it), every instance on it is placed elsewhere by the
same filters as the scheduler's (its groups' hard rules with every member where the plan
has put it so far, capacity, the SAL's traits and reserve), its default action chosen from
its migration policy, and each affected VNF's disruption budget asked whether one of its
instances may leave at all. What cannot be done is a refusal, with its reason: a hard rule
that no host can keep while a host is out (four members of a host-level anti-affinity group
on four hosts), a VNF whose budget allows none of its instances to stop serving, a host
that is not a compute host. The same plan is the dry run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from vimha.domain.affinity import Membership
from vimha.domain.budget import Disruption, admits, serving
from vimha.domain.compute import Instance, InstanceStatus
from vimha.domain.maintenance import Action, InstancePlan, Plan
from vimha.domain.maintenance_flow import VnfInfo
from vimha.domain.migration import Choice
from vimha.domain.placement import Candidate, PlacementRequest, place

ALL = (Action.MIGRATE, Action.OWN_ACTION, Action.EVICTION)
NOT_MIGRATED = (Action.OWN_ACTION, Action.EVICTION)


def instance_plan(inst: Instance, host: str, choice: Choice, target: str | None) -> InstancePlan:
    """An instance's default action (MIGRATE where its policy allows a migration, else
    EVICTION) and the actions its VNFM may answer."""
    return InstancePlan(
        inst.id,
        inst.name,
        inst.spec.vnf_id,
        host,
        inst.spec.migration.policy.value,
        Action.MIGRATE if choice.allowed else Action.EVICTION,
        ALL if choice.allowed else NOT_MIGRATED,
        choice.kind.value if choice.kind is not None else None,
        target,
        choice.reason,
    )


def plan(
    hosts: Sequence[str],
    instances: Sequence[Instance],
    candidates: Mapping[str, Candidate],
    locations: Mapping[str, Mapping[str, str]],
    memberships: Mapping[str, Membership],
    requests: Mapping[str, PlacementRequest],
    choices: Mapping[str, Choice],
    vnfs: Mapping[str, VnfInfo],
    out_of_service: frozenset[str] = frozenset(),
) -> Plan:
    """The session over `hosts` (in order) played on the snapshot. `requests`: each
    instance's placement request as the scheduler would make it for a re-placement (its
    groups are filled in here); `out_of_service`: hosts other sessions have taken out."""
    refusals: list[str] = []
    if len(set(hosts)) != len(hosts):
        refusals.append("hosts: a host is named twice")
    cands = dict(candidates)
    members = {gid: dict(m.member_hosts) for gid, m in memberships.items()}
    where = {i.id: i.host for i in instances}
    live = [i for i in instances if i.status is not InstanceStatus.DELETED]
    out: list[tuple[str, tuple[InstancePlan, ...]]] = []
    for h in hosts:
        if h not in cands:
            refusals.append(f"{h} is not a compute host")
            continue
        if h in out_of_service:
            refusals.append(f"{h} is already in another maintenance session")
            continue
        on = sorted(
            (i for i in live if where.get(i.id) == h), key=lambda i: (-i.spec.priority, i.name)
        )
        refusals += _budgets(h, on, live, vnfs)
        items: list[InstancePlan] = []
        for inst in on:
            choice = choices.get(inst.id) or Choice(None, "no migration decision")
            base = requests.get(inst.id)
            if base is None:
                items.append(instance_plan(inst, h, choice, None))
                continue
            req = replace(
                base,
                exclude=base.exclude | {h} | out_of_service,
                memberships=tuple(
                    Membership(memberships[g].group, members[g])
                    for g in inst.spec.groups
                    if g in memberships
                ),
                instance=inst.id,
            )
            decision = place(req, list(cands.values()), locations)
            if decision.host is None:
                refusals.append(
                    f"{inst.name} on {h}: no valid host while {h} is in maintenance "
                    f"({decision.reason})"
                )
                items.append(instance_plan(inst, h, choice, None))
                continue
            target = decision.host
            flavor = inst.spec.flavor
            cands[h] = replace(cands[h], resources=cands[h].resources.claimed(flavor, -1))
            moved = cands[target].resources.claimed(flavor)
            cands[target] = replace(cands[target], resources=moved)
            for g in inst.spec.groups:
                if g in members:
                    members[g][inst.id] = target
            where[inst.id] = target
            items.append(instance_plan(inst, h, choice, target))
        out.append((h, tuple(items)))
    return Plan(tuple(out), tuple(refusals))


def _budgets(
    host: str, on: Sequence[Instance], live: Sequence[Instance], vnfs: Mapping[str, VnfInfo]
) -> list[str]:
    """A VNF with instances on `host` whose budget lets none of them stop serving, even
    with all of them serving (a failure now only makes the session wait)."""
    out = []
    for vnf_id in sorted({i.spec.vnf_id for i in on if i.spec.vnf_id is not None}):
        info = vnfs.get(vnf_id, VnfInfo(vnf_id))
        if not info.budget.declared:
            continue
        members = [_serving(i) for i in live if i.spec.vnf_id == vnf_id]
        here = {i.id for i in on}
        target = next(i for i in members if i.id in here)
        verdict = admits(info.budget, info.name, members, target, Disruption.DISRUPT)
        if not verdict.ok:
            out.append(f"{host}: {verdict.reason}, so {target.name} could never leave {host}")
    return out


def _serving(i: Instance) -> Instance:
    return i if serving(i) else replace(i, status=InstanceStatus.ACTIVE, task_state=None)


__all__ = ["instance_plan", "plan"]
