"""Maintenance sessions (issue 19, VNF-11): one round of a session. Pure.

`advance(session, world)` looks at the session and a fresh snapshot of the world (the
instances, VNFs and their budgets, hosts, this session's migrations, the inputs received)
and returns the session as it is now with the acts to carry out, each with its reason:
tell a VNFM, raise or clear the maintenance alarm of a VNF, flag a host (draining,
maintenance, back), migrate an instance, stop it (eviction), rebuild it elsewhere, start it
again in place (an eviction cut short by an abort). The engine carries them out and
reports those that could not be done (`failed`); the next round sees what happened in the
world itself (an instance that left the host, a migration that ended), so a round cut
short by a crash is simply done again, and nothing is done twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from vimha.domain.budget import Disruption, DisruptionBudget, admits
from vimha.domain.clock import iso
from vimha.domain.compute import Instance, InstanceStatus, TaskState
from vimha.domain.maintenance import (
    Acting,
    Action,
    HostMode,
    HostPhase,
    Input,
    InputKind,
    InstancePlan,
    Phase,
    Plan,
    Session,
)
from vimha.domain.migration import MigrationRecord
from vimha.domain.migration import State as MigState

RETRY = timedelta(seconds=3)  # before a migration or eviction that failed to start is tried again
MAX_TRIES = 3  # migrations of one instance that failed before it is evicted instead


@dataclass(frozen=True, slots=True)
class VnfInfo:
    name: str
    budget: DisruptionBudget = field(default_factory=DisruptionBudget)


@dataclass(frozen=True, slots=True)
class HostInfo:
    health: str
    answers: bool  # heard on some plane now


@dataclass(frozen=True, slots=True)
class World:
    now: datetime
    instances: Mapping[str, Instance]  # every instance not deleted
    vnfs: Mapping[str, VnfInfo]
    hosts: Mapping[str, HostInfo]
    inputs: Sequence[Input] = ()
    migrations: Mapping[str, Sequence[MigrationRecord]] = field(default_factory=dict)
    plans: Mapping[str, InstancePlan] = field(default_factory=dict)  # current host's instances
    plan: Plan | None = None  # a fresh plan of the whole session (at PREPARE_MAINTENANCE)


class ActKind(StrEnum):
    TELL = "tell"  # a VnfMaintenanceNotification to the VNF's subscribers
    ALARM = "alarm"  # raise the VNF's maintenance alarm
    CLEAR = "clear"  # clear it
    FLAG = "flag"  # set a host's mode (`state`: draining, maintenance; "": back in service)
    MIGRATE = "migrate"
    STOP = "stop"  # eviction, first step
    REBUILD = "rebuild"  # eviction, second step: a new incarnation elsewhere
    START = "start"  # an evicted instance started again in place (abort)


@dataclass(frozen=True, slots=True)
class Act:
    kind: ActKind
    reason: str
    vnf_id: str | None = None
    host: str | None = None
    instance_id: str | None = None
    state: str = ""
    instances: tuple[InstancePlan, ...] = ()
    deadline: datetime | None = None


@dataclass(frozen=True, slots=True)
class Advance:
    session: Session
    acts: tuple[Act, ...]


def advance(session: Session, world: World) -> Advance:
    if session.final:
        return Advance(session, ())
    acts: list[Act] = []
    s = session
    for item in world.inputs:
        if item.kind is InputKind.ABORT:
            return _end(s, world, Phase.ABORTED, f"aborted by {item.who} during {s.state.value}")
    nack = _nack(s, world)
    if nack is not None:
        return _end(s, world, Phase.ABORTED, nack)
    if s.state is Phase.MAINTENANCE:
        s = _maintenance(s, world, acts)
    elif s.state is Phase.SCALE_IN:
        s = _gate(s, world, acts, Phase.PREPARE_MAINTENANCE, "may scale in now")
    elif s.state is Phase.PREPARE_MAINTENANCE:
        if s.since is None and world.plan is not None and not world.plan.feasible:
            why = "; ".join(world.plan.refusals)
            return _end(s, world, Phase.FAILED, f"refused before anything moved: {why}")
        s = _gate(s, world, acts, Phase.PLANNED_MAINTENANCE, "these instances will move")
    elif s.state is Phase.PLANNED_MAINTENANCE:
        s, done = _planned(s, world, acts)
        if done:
            out = _end(s, world, Phase.MAINTENANCE_COMPLETE, "every host maintained")
            return Advance(out.session, (*acts, *out.acts))
    return Advance(replace(s, updated_at=world.now), tuple(acts))


def failed(session: Session, instance_id: str, reason: str, now: datetime) -> Session:
    """An act on an instance could not be carried out (no valid host, the budget, a
    conflict): tried again after a while; the reason is shown."""
    acting = session.acting.get(instance_id)
    if acting is None:
        return session
    again = replace(acting, tries=acting.tries + 1, retry_at=now + RETRY, note=reason)
    return replace(session, acting={**session.acting, instance_id: again}).log(
        now, f"{instance_id}: {reason} (tried again)"
    )


# -- states ------------------------------------------------------------------------------
def _maintenance(s: Session, world: World, acts: list[Act]) -> Session:
    now = world.now
    for vnf_id in s.vnfs:
        key = _key(Phase.MAINTENANCE, None, vnf_id)
        if key in s.told:
            continue
        items = tuple(i for _, plans in s.plan.hosts for i in plans if i.vnf_id == vnf_id)
        why = (
            f"hosts {', '.join(s.hosts)} go into maintenance from {iso(s.start_at)} "
            f"(session {s.id})"
        )
        acts.append(Act(ActKind.TELL, why, vnf_id, state=Phase.MAINTENANCE.value,
                        instances=items, deadline=s.start_at))  # fmt: skip
        acts.append(Act(ActKind.ALARM, why, vnf_id))
        s = replace(s, told=s.told | {key})
    if now < s.start_at:
        return replace(s, waiting=f"starts at {iso(s.start_at)}")
    nxt = Phase.SCALE_IN if s.scale_in else Phase.PREPARE_MAINTENANCE
    return _enter(s, nxt, now, f"start time reached: {nxt.value}")


def _gate(s: Session, world: World, acts: list[Act], nxt: Phase, what: str) -> Session:
    """A step in which every VNFM is told and answers (or its deadline passes)."""
    now = world.now
    if s.since is None:
        s = replace(s, since=now, deadline=now + timedelta(seconds=s.answer_window))
        plans = world.plan.hosts if world.plan is not None else s.plan.hosts
        if world.plan is not None:
            s = replace(s, plan=world.plan)
        for vnf_id in s.vnfs:
            items = tuple(i for _, ps in plans for i in ps if i.vnf_id == vnf_id)
            acts.append(Act(ActKind.TELL, f"{s.state.value}: {what}", vnf_id,
                            state=s.state.value, instances=items, deadline=s.deadline))  # fmt: skip
            s = replace(s, told=s.told | {_key(s.state, None, vnf_id)})
    waiting = [v for v in s.vnfs if not _acked(world, s, v)]
    assert s.deadline is not None
    if waiting and now < s.deadline:
        names = ", ".join(_vnf_name(world, v) for v in waiting)
        return replace(s, waiting=f"answers of {names} until {iso(s.deadline)}")
    why = "every VNFM answered" if not waiting else "the deadline passed"
    s = _enter(s, nxt, now, f"{s.state.value} over ({why}): {nxt.value}")
    if nxt is Phase.PLANNED_MAINTENANCE:
        first = s.hosts[0]
        s = replace(s, current=first, host_states={h: HostPhase.PENDING for h in s.hosts})
    return s


def _planned(s: Session, world: World, acts: list[Act]) -> tuple[Session, bool]:
    now = world.now
    h = s.current
    assert h is not None
    phase = s.host_states.get(h, HostPhase.PENDING)
    if phase is HostPhase.PENDING:
        acts.append(Act(ActKind.FLAG, f"{h} is emptied: no new instance on it", host=h,
                        state=HostMode.DRAINING.value))  # fmt: skip
        s = replace(
            s,
            host_states={**s.host_states, h: HostPhase.NOTIFIED},
            since=now,
            deadline=now + timedelta(seconds=s.answer_window),
            acting={},
        ).log(now, f"{h}: PLANNED_MAINTENANCE, its instances' VNFMs told")
        phase = HostPhase.NOTIFIED
    if phase is HostPhase.NOTIFIED:
        on_host = _on(world, h)
        s = _tell_host(s, world, acts, h, on_host)
        if not on_host:
            acts.append(Act(ActKind.FLAG, f"{h} is empty: in maintenance", host=h,
                            state=HostMode.MAINTENANCE.value))  # fmt: skip
            s = replace(s, host_states={**s.host_states, h: HostPhase.IN_MAINTENANCE},
                        since=now, acting={}, waiting="")  # fmt: skip
            return s.log(now, f"{h} is empty: MAINTENANCE"), False
        return _empty(s, world, acts, h, on_host), False
    if phase is HostPhase.IN_MAINTENANCE:
        assert s.since is not None
        told_done = any(
            i.kind is InputKind.HOST_DONE and i.host == h and i.at >= s.since for i in world.inputs
        )
        over = s.host_window is not None and now - s.since >= timedelta(seconds=s.host_window)
        if not (told_done or over):
            until = (
                f"until {iso(s.since + timedelta(seconds=s.host_window))}"
                if s.host_window is not None
                else f"until an operator says it is done (vimha maintenance done {s.id} {h})"
            )
            return replace(s, waiting=f"{h} in maintenance {until}"), False
        info = world.hosts.get(h)
        if info is None or not info.answers:
            return replace(s, waiting=f"{h}'s maintenance is over: waiting for it to answer"), False
        acts.append(Act(ActKind.FLAG, f"{h} back in service", host=h, state=""))
        s = replace(s, host_states={**s.host_states, h: HostPhase.DONE}).log(now, f"{h} done")
        nxt = next((x for x in s.hosts if s.host_states.get(x) is HostPhase.PENDING), None)
        if nxt is None:
            return replace(s, current=None, waiting=""), True
        return replace(s, current=nxt, since=now, waiting=""), False
    return s, False


def _tell_host(
    s: Session, world: World, acts: list[Act], h: str, on_host: list[Instance]
) -> Session:
    by_vnf: dict[str, list[InstancePlan]] = {}
    for inst in on_host:
        if inst.spec.vnf_id is not None:
            by_vnf.setdefault(inst.spec.vnf_id, []).append(_plan_of(world, inst, h))
    for vnf_id, items in by_vnf.items():
        key = _key(Phase.PLANNED_MAINTENANCE, h, vnf_id)
        if key in s.told:
            continue
        why = f"{h} goes into maintenance: {len(items)} instance(s) of it must leave"
        acts.append(Act(ActKind.TELL, why, vnf_id, h, state=Phase.PLANNED_MAINTENANCE.value,
                        instances=tuple(items), deadline=s.deadline))  # fmt: skip
        s = replace(s, told=s.told | {key})
    return s


def _empty(s: Session, world: World, acts: list[Act], h: str, on_host: list[Instance]) -> Session:
    """Act on each instance still on `h`, within its VNF's budget."""
    now = world.now
    assert s.deadline is not None
    pending: dict[str, int] = {}
    waits: list[str] = []
    acting = dict(s.acting)
    for inst in sorted(on_host, key=lambda i: (-i.spec.priority, i.name)):
        plan = _plan_of(world, inst, h)
        migs = world.migrations.get(inst.id, ())
        if migs and migs[-1].active:
            waits.append(f"{inst.name} migrating to {migs[-1].dest}")
            continue
        cur = acting.get(inst.id)
        if cur is not None and cur.retry_at is not None and now < cur.retry_at:
            waits.append(f"{inst.name}: {cur.note}")
            continue
        if cur is None or cur.action is Action.OWN_ACTION:
            answer = _answer(world, s, inst)
            if cur is None and answer is None and inst.spec.vnf_id and now < s.deadline:
                waits.append(f"{inst.name}: its VNFM's answer until {iso(s.deadline)}")
                continue
            if cur is not None:  # the VNFM takes it off the host itself, within a window
                if now - cur.at < timedelta(seconds=s.answer_window):
                    waits.append(f"{inst.name}: its VNFM moves it (own action)")
                    continue
                answer = plan.default  # its window is over: the default applies
            action = answer or plan.default
            note = ""
            if action is Action.MIGRATE and Action.MIGRATE not in plan.allowed:
                note = f"MIGRATE not possible ({plan.reason}): evicted instead"
                action = Action.EVICTION
            if action is Action.OWN_ACTION:
                acting[inst.id] = Acting(Action.OWN_ACTION, now, "own")
                waits.append(f"{inst.name}: its VNFM moves it (own action)")
                continue
            cur = Acting(action, now, "", cur.tries if cur else 0, note=note)
        if cur.action is Action.MIGRATE:
            tries = cur.tries + sum(1 for m in migs if m.state is not MigState.COMPLETED)
            if tries >= MAX_TRIES:
                cur = replace(cur, action=Action.EVICTION, step="",
                              note=f"{tries} migrations failed: evicted instead")  # fmt: skip
            elif _busy(inst):
                waits.append(f"{inst.name} is {_what(inst)}")
                continue
            elif migs and migs[-1].finished_at and now - migs[-1].finished_at < RETRY:
                waits.append(f"{inst.name}: migration failed ({migs[-1].detail}); tried again")
                acting[inst.id] = cur
                continue
            else:
                ok, why = _admit(world, inst, pending)
                if not ok:
                    waits.append(why)
                    if cur.tries:
                        acting[inst.id] = cur
                    continue
                acts.append(Act(ActKind.MIGRATE, f"{h} is emptied: {inst.name} migrated "
                                f"({plan.kind or 'by its policy'})", inst.spec.vnf_id, h,
                                inst.id))  # fmt: skip
                acting[inst.id] = replace(cur, step="migrate", at=now, retry_at=None)
                continue
        # Eviction: stopped on the host, then rebuilt elsewhere from its spec.
        if cur.step == "":
            if _busy(inst) and inst.task_state is not TaskState.POWERING_OFF:
                waits.append(f"{inst.name} is {_what(inst)}")
                continue
            ok, why = _admit(world, inst, pending)
            if not ok:
                waits.append(why)
                if cur.tries:
                    acting[inst.id] = cur
                continue
            runs = inst.status in (InstanceStatus.ACTIVE, InstanceStatus.PAUSED)
            if runs:
                acts.append(Act(ActKind.STOP, f"{h} is emptied: {inst.name} stopped, then "
                                "rebuilt elsewhere" + (f" ({cur.note})" if cur.note else ""),
                                inst.spec.vnf_id, h, inst.id))  # fmt: skip
                acting[inst.id] = replace(cur, action=Action.EVICTION, step="stop", at=now)
                continue
            # Not running (stopped by its user, or failed): rebuilt as it is.
            cur = replace(cur, action=Action.EVICTION, step="stopped", at=now)
        if cur.step in ("stop", "stopped"):
            if inst.task_state is not None or inst.status not in (
                InstanceStatus.SHUTOFF,
                InstanceStatus.ERROR,
            ):
                acting[inst.id] = cur
                waits.append(f"{inst.name} stopping")
                continue
            keep = cur.step == "stopped" and inst.status is InstanceStatus.SHUTOFF
            acts.append(Act(ActKind.REBUILD, f"{h} is emptied: {inst.name} rebuilt elsewhere",
                            inst.spec.vnf_id, h, inst.id,
                            state="keep-stopped" if keep else ""))  # fmt: skip
            step = "rebuild-keep" if keep else "rebuild"
            acting[inst.id] = replace(cur, step=step, at=now, retry_at=None)
            continue
        keep = cur.step == "rebuild-keep"
        acting[inst.id] = replace(cur, at=now, retry_at=None)
        acts.append(Act(ActKind.REBUILD, f"{h} is emptied: {inst.name} rebuilt elsewhere "
                        "(tried again)", inst.spec.vnf_id, h, inst.id,
                        state="keep-stopped" if keep else ""))  # fmt: skip
    waiting = f"{h}: {len(on_host)} instance(s) left" + (f"; {'; '.join(waits)}" if waits else "")
    return replace(s, acting=acting, waiting=waiting)


def _end(s: Session, world: World, to: Phase, reason: str) -> Advance:
    """The session ends: hosts back in service, evictions cut short started again in place,
    VNFMs told, alarms cleared. What moved stays where it is."""
    now = world.now
    acts: list[Act] = []
    for h, phase in s.host_states.items():
        if phase in (HostPhase.NOTIFIED, HostPhase.IN_MAINTENANCE):
            acts.append(Act(ActKind.FLAG, f"{h} back in service ({to.value})", host=h))
    for iid, acting in s.acting.items():
        inst = world.instances.get(iid)
        if (
            acting.action is Action.EVICTION
            and acting.step == "stop"
            and inst is not None
            and inst.host == s.current
        ):
            acts.append(Act(ActKind.START, f"eviction cut short ({to.value}): started again",
                            inst.spec.vnf_id, inst.host, iid))  # fmt: skip
    for vnf_id in s.vnfs:
        acts.append(Act(ActKind.TELL, reason, vnf_id, state=to.value))
        acts.append(Act(ActKind.CLEAR, reason, vnf_id))
    states = {
        h: (HostPhase.SKIPPED if p is HostPhase.PENDING else p) for h, p in s.host_states.items()
    }
    if to is not Phase.MAINTENANCE_COMPLETE:
        states = {
            h: (HostPhase.SKIPPED if p is not HostPhase.DONE else p) for h, p in states.items()
        } or {h: HostPhase.SKIPPED for h in s.hosts}
    out = replace(s, state=to, reason=reason, waiting="", host_states=states, since=now)
    return Advance(out.log(now, f"{to.value}: {reason}"), tuple(acts))


# -- helpers -----------------------------------------------------------------------------
def _enter(s: Session, nxt: Phase, now: datetime, reason: str) -> Session:
    return replace(s, state=nxt, since=None, deadline=None, waiting="").log(now, reason)


def _key(state: Phase, host: str | None, vnf_id: str) -> str:
    return f"{state.value}:{host or ''}:{vnf_id}"


def _on(world: World, host: str) -> list[Instance]:
    return [
        i
        for i in world.instances.values()
        if i.host == host and i.status is not InstanceStatus.DELETED
    ]


def _plan_of(world: World, inst: Instance, host: str) -> InstancePlan:
    plan = world.plans.get(inst.id)
    if plan is not None:
        return plan
    return InstancePlan(
        inst.id, inst.name, inst.spec.vnf_id, host, inst.spec.migration.policy.value,
        Action.EVICTION, (Action.OWN_ACTION, Action.EVICTION), reason="no plan: evicted",
    )  # fmt: skip


def _answers(world: World, s: Session, vnf_id: str) -> list[Input]:
    return [
        i
        for i in world.inputs
        if i.kind is InputKind.ANSWER and i.vnf_id == vnf_id and i.session_id == s.id
    ]


def _acked(world: World, s: Session, vnf_id: str) -> bool:
    wanted = f"ACK_{s.state.value}"
    return any(a.state == wanted for a in _answers(world, s, vnf_id))


def _nack(s: Session, world: World) -> str | None:
    wanted = f"NACK_{s.state.value}"
    for vnf_id in s.vnfs:
        for a in _answers(world, s, vnf_id):
            if a.state == wanted:
                return f"the VNFM of {_vnf_name(world, vnf_id)} refused ({wanted}, {a.who})"
    return None


def _answer(world: World, s: Session, inst: Instance) -> Action | None:
    """The latest action the instance's VNFM answered for it in this session."""
    if inst.spec.vnf_id is None:
        return None
    found = None
    for a in _answers(world, s, inst.spec.vnf_id):
        if inst.id in a.instance_actions:
            found = a.instance_actions[inst.id]
    return found


def _admit(world: World, inst: Instance, pending: dict[str, int]) -> tuple[bool, str]:
    vnf_id = inst.spec.vnf_id
    if vnf_id is None:
        return True, "no VNF: no budget"
    info = world.vnfs.get(vnf_id, VnfInfo(vnf_id))
    members = [i for i in world.instances.values() if i.spec.vnf_id == vnf_id]
    verdict = admits(
        info.budget, info.name, members, inst, Disruption.DISRUPT, pending.get(vnf_id, 0)
    )
    if verdict.ok:
        pending[vnf_id] = pending.get(vnf_id, 0) + 1
    return verdict.ok, verdict.reason


def _busy(inst: Instance) -> bool:
    return inst.task_state is not None or inst.status in (
        InstanceStatus.BUILDING,
        InstanceStatus.REBUILDING,
        InstanceStatus.MIGRATING,
    )


def _what(inst: Instance) -> str:
    return inst.task_state.value if inst.task_state is not None else inst.status.value


def _vnf_name(world: World, vnf_id: str) -> str:
    info = world.vnfs.get(vnf_id)
    return info.name if info is not None else vnf_id


__all__ = ["Act", "ActKind", "Advance", "HostInfo", "VnfInfo", "World", "advance", "failed"]
