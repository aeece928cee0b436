"""Service groups (issue 4: ARCH-2, ARCH-4, ARCH-5, ARCH-6): who is active, decided by each
member from what it sees in the coordination backend; and the group's alarms, decided by the
controllers from the same view. Pure functions; the agent (`agent/groups.py`) and the
controller (`engine/groups.py`) act.

Roles are slots: an `active-standby` group has one, an `n-plus-m` group N; a member holds a
slot through its lease. A slot is taken only when it is safe: its last holder released it
(it demoted itself first) or its host was fenced; never merely because a lease lapsed, since
a frozen holder may still be serving. Among the healthy standbys the freshest (replication
position, then name) takes a free slot (ARCH-3); one further behind than `max_lag` takes it
only if the policy says so. Every live member's position is asked first (Patroni's rule):
while a standby that is fresher but unable to serve is alive, the others wait for it up to
`fresher_wait`, then take the slot passing it over, and say what may be lost. `all-active`
groups have no slots: every healthy member serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from vimha.domain.alarms import EventType, FaultEvent, Location, Severity
from vimha.domain.errors import InvalidInput


class Policy(StrEnum):
    ACTIVE_STANDBY = "active-standby"
    N_PLUS_M = "n-plus-m"
    ALL_ACTIVE = "all-active"


class OnStale(StrEnum):
    WAIT = "wait"  # keep the group without an active rather than lose data
    PROMOTE = "promote"  # availability first: the freshest member takes over all the same


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    policy: Policy
    members: int
    active: int = 1  # N active slots (n-plus-m); 1 for active-standby; all for all-active
    max_lag: int | None = None  # replication positions a standby may be behind
    on_stale: OnStale = OnStale.WAIT
    quorum: bool = False  # a cluster of N-way actives that serves only with a majority
    # how long a free slot waits for a live standby that is fresher but unable to serve
    fresher_wait: float = 10.0

    def __post_init__(self) -> None:
        if self.members < 1:
            raise InvalidInput("service group: at least one member")
        if self.policy is Policy.ACTIVE_STANDBY and self.active != 1:
            raise InvalidInput("an active-standby group has exactly one active")
        if self.policy is Policy.N_PLUS_M and not 1 <= self.active < self.members:
            raise InvalidInput("an n-plus-m group needs 1 <= N active < members (M >= 1)")

    @property
    def slots(self) -> int:
        return 0 if self.policy is Policy.ALL_ACTIVE else self.active


@dataclass(frozen=True, slots=True)
class Peer:
    """Another live member, as it publishes itself."""

    member: str
    host: str
    healthy: bool
    position: int = -1  # replication progress; -1 when the handler has none
    slot: int | None = None
    partitioned: bool = False  # it finds itself cut off from part of its cluster
    seen: frozenset[str] = frozenset()  # vacancies it saw before measuring its position
    empty: bool = False  # it holds no data at all (a standby never cloned)


@dataclass(frozen=True, slots=True)
class Vacancy:
    """A free slot and what is known of its last holder."""

    slot: int
    last_member: str | None = None
    last_host: str | None = None
    released: bool = False  # the last holder demoted itself and said so
    fenced: bool = False  # the last holder's host was fenced since it took the slot
    position: int = -1  # the last holder's position when it released
    epoch: int = 0  # of the last holding: a slot vacated twice is two vacancies

    @property
    def key(self) -> str | None:
        """The vacancy's identity once it is safe to take (None before): positions measured
        after a member saw it are final, the last holder no longer writes. It changes when
        the last holder is also fenced."""
        if _safe(self) is not None:
            return None
        how = ("r" if self.released else "") + ("f" if self.fenced else "")
        return f"{self.slot}:{self.epoch}:{how}"


@dataclass(frozen=True, slots=True)
class MemberView:
    me: str
    healthy: bool
    position: int
    holding: int | None  # the slot I hold
    peers: tuple[Peer, ...]
    vacancies: tuple[Vacancy, ...]
    seen: frozenset[str] = frozenset()  # vacancies I saw before measuring my position
    vacant_for: float = 0.0  # how long I have seen a free slot safe to take (s)


class Act(StrEnum):
    SERVE = "SERVE"  # all-active: serve
    HOLD = "HOLD"  # keep my slot, keep serving
    TAKE = "TAKE"  # take a free slot, then promote
    RESIGN = "RESIGN"  # demote, then release my slot
    FOLLOW = "FOLLOW"  # standby, following the active
    WAIT = "WAIT"  # neither active nor a candidate now


@dataclass(frozen=True, slots=True)
class Decision:
    act: Act
    reason: str
    slot: int | None = None
    # live standbys fresher than me, unable to serve, passed over (member, position)
    passed_over: tuple[tuple[str, int], ...] = ()


def _safe(v: Vacancy) -> str | None:
    """Why the slot may not be taken yet, or None when it may."""
    if v.last_member is None or v.released or v.fenced:
        return None
    return (
        f"slot {v.slot}: its last holder {v.last_member} on {v.last_host} neither released it "
        "nor was fenced: wait (it may still be serving)"
    )


def decide_member(view: MemberView, policy: GroupPolicy) -> Decision:
    if policy.policy is Policy.ALL_ACTIVE:
        if view.healthy:
            return Decision(Act.SERVE, "all-active: healthy, serve")
        return Decision(Act.WAIT, "all-active: unhealthy, out of service until it recovers")
    if view.holding is not None:
        if not view.healthy:
            return Decision(
                Act.RESIGN, "local monitor failed: demote, then release the slot", view.holding
            )
        return Decision(Act.HOLD, f"active in slot {view.holding}", view.holding)
    if not view.healthy:
        return Decision(Act.WAIT, "unhealthy: not a candidate for a free slot")
    free, blocked = [], []
    for vacancy in sorted(view.vacancies, key=lambda v: v.slot):
        why = _safe(vacancy)
        if why is None:
            free.append(vacancy)
        else:
            blocked.append(why)
    if not free:
        if blocked:
            return Decision(Act.WAIT, blocked[0])
        return Decision(Act.FOLLOW, "standby: every slot is held")
    candidates = [(view.position, view.me)] + [
        (p.position, p.member) for p in view.peers if p.healthy and p.slot is None
    ]
    ranked = sorted(candidates, key=lambda c: (-c[0], c[1]))
    rank = ranked.index((view.position, view.me))
    if rank >= len(free):
        ahead = ", ".join(m for _, m in ranked[: len(free)])
        return Decision(Act.FOLLOW, f"standby: {ahead} fresher or first in order, takes it")
    vacancy = free[rank]
    fresher = _fresher_unfit(view, vacancy)
    if fresher and view.vacant_for < policy.fresher_wait:
        return Decision(
            Act.WAIT,
            f"slot {vacancy.slot}: {_how_fresh(view, vacancy, *fresher[0])} but unable to "
            f"serve: wait for it (up to {policy.fresher_wait:g}s)",
        )
    passed = ""
    if fresher:
        member, position = fresher[0]
        passed = (
            f"; {member} passed over, unable to serve for {policy.fresher_wait:g}s: what it "
            f"alone acknowledged may be lost ({_how_fresh(view, vacancy, member, position)})"
        )
    behind = vacancy.position - view.position if vacancy.position >= 0 else 0
    if policy.max_lag is not None and behind > policy.max_lag:
        if policy.on_stale is OnStale.WAIT:
            return Decision(
                Act.WAIT,
                f"slot {vacancy.slot}: freshest candidate is {behind} behind the last active "
                f"(max_lag {policy.max_lag}): wait rather than lose data",
            )
        return Decision(
            Act.TAKE,
            f"slot {vacancy.slot}: {behind} behind the last active, promoted all the same "
            f"(on_stale: promote){passed}",
            vacancy.slot,
            fresher,
        )
    return Decision(
        Act.TAKE, f"slot {vacancy.slot} free and safe: take it{passed}", vacancy.slot, fresher
    )


def _fresher_unfit(view: MemberView, vacancy: Vacancy) -> tuple[tuple[str, int], ...]:
    """The live standbys unable to serve that are, or may be, ahead of me: those whose
    position is ahead, freshest first, then those whose position was measured before they
    saw the slot free (a standby that froze right after acknowledging the last commits
    published a position from before them: it may hold what no other member has). The
    slot's last holder is not among them: what it had beyond every standby was never
    acknowledged (a commit waits for a standby), and a former active comes back as a
    standby anyway. Nor are the members that hold no data at all (standbys waiting for a
    first active to clone from): they held up every first start of a PostgreSQL group for
    `fresher_wait`."""
    if view.position < 0:
        return ()
    unfit = [
        p
        for p in view.peers
        if not p.healthy and p.slot is None and p.member != vacancy.last_member
    ]
    ahead = sorted(
        ((p.position, p.member) for p in unfit if p.position > view.position),
        key=lambda a: (-a[0], a[1]),
    )
    unknown = sorted(
        (p.member, p.position)
        for p in unfit
        if p.position <= view.position
        and not p.empty
        and vacancy.key is not None
        and vacancy.key not in p.seen
    )
    return tuple((m, pos) for pos, m in ahead) + tuple(unknown)


def _how_fresh(view: MemberView, vacancy: Vacancy, member: str, position: int) -> str:
    if position > view.position:
        return f"{member} is fresher ({position - view.position} ahead)"
    return (
        f"{member} may be fresher (its position not measured since slot {vacancy.slot} was freed)"
    )


def unmeasured(view: MemberView, slot: int) -> tuple[str, ...]:
    """The candidates for a free slot (me and the healthy standbys, when positions rank
    them) whose position was measured before they saw the slot safe to take: the slot
    goes to the freshest only once none is left (a late publication would otherwise lose a
    ranking it should win, and the acknowledged writes only it has)."""
    vacancy = next((v for v in view.vacancies if v.slot == slot), None)
    if vacancy is None or vacancy.key is None or view.position < 0:
        return ()
    late = [view.me] if vacancy.key not in view.seen else []
    late += [
        p.member
        for p in view.peers
        if p.healthy and p.slot is None and p.position >= 0 and vacancy.key not in p.seen
    ]
    return tuple(late)


# --- the group as the controllers see it -------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    name: str
    policy: GroupPolicy
    healthy: int  # live members whose monitor passes
    active: int  # slots held by a healthy member (all-active: healthy members)
    vacancies: int  # slots without a holder
    partitioned: tuple[str, ...] = ()  # members cut off from part of their cluster
    # a slot was taken passing over a fresher member unable to serve: what may be lost
    at_risk: str | None = None


@dataclass(frozen=True, slots=True)
class GroupAlarm:
    fault_type: str
    probable_cause: str


SWITCHOVER = GroupAlarm("SERVICE_GROUP_SWITCHOVER", "active member lost: switch-over")
DOWN = GroupAlarm("SERVICE_GROUP_DOWN", "no member of the group serves")
REDUNDANCY = GroupAlarm("SERVICE_GROUP_REDUNDANCY_LOST", "fewer healthy members than declared")
PARTITION = GroupAlarm("SERVICE_GROUP_PARTITIONED", "network partition between the members")
AT_RISK = GroupAlarm(
    "SERVICE_GROUP_DATA_AT_RISK", "fresher member passed over: acknowledged writes may be lost"
)
GROUP_ALARMS = (SWITCHOVER, DOWN, REDUNDANCY, PARTITION, AT_RISK)


def group_conditions(g: GroupSnapshot) -> dict[GroupAlarm, tuple[Severity, str]]:
    """The alarms the group deserves now, with severity and reason."""
    out: dict[GroupAlarm, tuple[Severity, str]] = {}
    needed = g.policy.slots or 1
    standbys = g.healthy - g.active
    if g.policy.quorum and g.healthy <= g.policy.members // 2:
        out[DOWN] = (
            Severity.CRITICAL,
            f"{g.name}: quorum lost ({g.healthy} of {g.policy.members} members healthy)",
        )
    elif g.active == 0 and not (g.vacancies and standbys):
        out[DOWN] = (Severity.CRITICAL, f"{g.name}: no active member, no standby fit to serve")
    elif g.vacancies and standbys:
        out[SWITCHOVER] = (
            Severity.CRITICAL if g.active == 0 else Severity.MAJOR,
            f"{g.name}: {g.vacancies} of {needed} active slots free: switch-over in progress",
        )
    if g.partitioned:
        out[PARTITION] = (
            Severity.MAJOR,
            f"{g.name}: {', '.join(g.partitioned)} cut off from the rest of the cluster",
        )
    if g.at_risk:
        out[AT_RISK] = (Severity.CRITICAL, f"{g.name}: {g.at_risk}")
    if g.healthy < g.policy.members:
        out[REDUNDANCY] = (
            Severity.MAJOR if g.active else Severity.CRITICAL,
            f"{g.name}: {g.healthy} of {g.policy.members} members healthy",
        )
    return out


def decide_group_alarms(
    g: GroupSnapshot,
    raised: frozenset[GroupAlarm],
    location: Location,
    now: datetime,
    switched: str | None = None,
) -> tuple[list[FaultEvent], frozenset[GroupAlarm]]:
    """Raise what the group deserves and is not raised, clear what it no longer deserves.
    `switched`: a slot changed holder since the last judgement (what happened). A switch-over
    that began and ended between two judgements (a standby can take a slot within tens of
    milliseconds) left no vacancy to see: it is raised and cleared at once, so that every
    switch-over is in the alarm history."""
    wanted = group_conditions(g)
    events = [
        _event(g.name, alarm, severity, reason, location, now)
        for alarm, (severity, reason) in wanted.items()
        if alarm not in raised
    ]
    if switched and SWITCHOVER not in raised and SWITCHOVER not in wanted:
        reason = f"{g.name}: {switched}"
        events += [
            _event(g.name, SWITCHOVER, Severity.MAJOR, reason, location, now),
            _event(g.name, SWITCHOVER, Severity.CLEARED, f"{reason}: completed", location, now),
        ]
    events += [
        _event(g.name, alarm, Severity.CLEARED, f"{g.name}: recovered", location, now)
        for alarm in sorted(raised - wanted.keys(), key=lambda a: a.fault_type)
    ]
    return events, frozenset(wanted)


def _event(
    group: str,
    alarm: GroupAlarm,
    severity: Severity,
    reason: str,
    location: Location,
    now: datetime,
) -> FaultEvent:
    return FaultEvent(
        managed_object_id=f"group/{group}",
        fault_type=alarm.fault_type,
        probable_cause=alarm.probable_cause,
        perceived_severity=severity,
        event_type=EventType.PROCESSING_ERROR_ALARM,
        event_time=now,
        vim_level_resource_type="service-group",
        resource_id=f"group/{group}",
        fault_details=(reason,),
        location=location,
    )


def passed_over(doc: dict[str, object]) -> str | None:
    """What a slot's holding says it may have lost (it took the slot passing over fresher
    members unable to serve), or None."""
    over = doc.get("passedOver")
    if not isinstance(over, list) or not over:
        return None
    mine = doc.get("position")
    said = ", ".join(
        f"{o.get('member')} at position {o.get('position')}" for o in over if isinstance(o, dict)
    )
    return (
        f"slot taken by {doc.get('member')} (epoch {doc.get('epoch')}) at position {mine}, "
        f"passing over {said}, unable to serve: writes that only they acknowledged may be lost"
    )


def snapshot(name: str, policy: GroupPolicy, peers: Sequence[Peer]) -> GroupSnapshot:
    healthy = [p for p in peers if p.healthy]
    cut = tuple(sorted(p.member for p in peers if p.partitioned))
    if policy.policy is Policy.ALL_ACTIVE:
        return GroupSnapshot(name, policy, len(healthy), len(healthy), 0, cut)
    held = {p.slot for p in peers if p.slot is not None}
    active = sum(1 for p in healthy if p.slot is not None)
    return GroupSnapshot(name, policy, len(healthy), active, policy.slots - len(held), cut)
