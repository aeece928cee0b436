"""Maintenance sessions (VNF-11), pure: the plan and its refusals, and the rounds of a session
played against a small world the test keeps (the engine's part: migrations complete,
stopped instances are rebuilt elsewhere), the budget checked after every round."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from vimha.domain.affinity import GroupPolicy, Membership, PlacementGroup
from vimha.domain.budget import DisruptionBudget, serving
from vimha.domain.compute import (
    Flavor,
    HostResources,
    Instance,
    InstanceSpec,
    InstanceStatus,
    Migration,
    MigrationPolicy,
    Power,
    TaskState,
)
from vimha.domain.maintenance import (
    Action,
    HostPhase,
    Input,
    InputKind,
    InstancePlan,
    Phase,
    Session,
)
from vimha.domain.maintenance_flow import ActKind, HostInfo, VnfInfo, World, advance, failed
from vimha.domain.maintenance_plan import instance_plan, plan
from vimha.domain.migration import Choice, Kind, MigrationRecord, State
from vimha.domain.placement import Candidate, PlacementRequest

T0 = datetime(2026, 12, 1, tzinfo=UTC)
TINY = Flavor("f", "tiny", 1, 128, 1)
HOSTS = ("cmp-1", "cmp-2", "cmp-3", "cmp-4")
GROUP = PlacementGroup("g", "vfw-fw-anti", GroupPolicy.ANTI_AFFINITY, "host", None, "v")


def inst(n: int, host: str, policy: Migration = Migration.COLD, vnf: str = "v") -> Instance:
    spec = InstanceSpec(
        "img", TINY, (), vnf_id=vnf, migration=MigrationPolicy(policy), groups=("g",)
    )
    return Instance(f"i{n}", f"vfw-fw-{n}", spec, InstanceStatus.ACTIVE, T0, T0, host=host)


def candidates(room: int = 4) -> dict[str, Candidate]:
    return {
        h: Candidate(HostResources(h, room, 128 * room, 10 * room), "UP", {"host": h})
        for h in HOSTS
    }


def test_the_plan_places_each_instance_under_its_rules() -> None:
    three = [inst(0, "cmp-1"), inst(1, "cmp-2"), inst(2, "cmp-3")]
    members = {"g": Membership(GROUP, {i.id: i.host or "" for i in three})}
    choices = {i.id: Choice(Kind.COLD, "policy cold") for i in three}
    requests = {i.id: PlacementRequest(TINY) for i in three}
    vnfs = {"v": VnfInfo("vfw", DisruptionBudget(1, 2))}
    locations = {h: {"host": h} for h in HOSTS}
    p = plan(HOSTS, three, candidates(), locations, members, requests, choices, vnfs)
    assert p.feasible, p.refusals
    first = {i.name: (i.host, i.target) for i in p.hosts[0][1]}
    assert first == {"vfw-fw-0": ("cmp-1", "cmp-4")}  # the only host without a member
    last = {i.name: (i.host, i.target) for i in p.hosts[3][1]}
    assert last == {"vfw-fw-0": ("cmp-4", "cmp-3")}  # it moves again: cmp-3, emptied before
    for _, items in p.hosts:
        for item in items:
            assert item.default is Action.MIGRATE and item.kind == "cold"
    # four members on four hosts: while one host is out, its member has nowhere to go
    four = [*three, inst(3, "cmp-4")]
    members = {"g": Membership(GROUP, {i.id: i.host or "" for i in four})}
    choices = {i.id: Choice(Kind.COLD, "policy cold") for i in four}
    requests = {i.id: PlacementRequest(TINY) for i in four}
    refused = plan(HOSTS[:1], four, candidates(), locations, members, requests, choices, vnfs)
    assert not refused.feasible
    assert "vfw-fw-0 on cmp-1: no valid host while cmp-1 is in maintenance" in refused.refusals[0]
    assert "GroupRules removed" in refused.refusals[0]


def test_a_budget_that_lets_nothing_leave_refuses_the_session() -> None:
    three = [inst(0, "cmp-1"), inst(1, "cmp-2"), inst(2, "cmp-3")]
    vnfs = {"v": VnfInfo("vfw", DisruptionBudget(min_available=3))}
    p = plan(("cmp-1",), three, candidates(), {}, {}, {}, {}, vnfs)
    assert p.refusals == (
        "cmp-1: VNF vfw's disruption budget keeps at least 3 serving: 3 serve now, 2 would "
        "while vfw-fw-0 is disrupted, so vfw-fw-0 could never leave cmp-1",
    )
    assert not plan(("cmp-9",), three, candidates(), {}, {}, {}, {}, vnfs).feasible


# -- a session played round after round ----------------------------------------------------
@dataclass
class Cloud:
    """The test's world: what the engine would do with each act, at once."""

    instances: dict[str, Instance]
    budget: DisruptionBudget
    now: datetime = T0
    migrations: dict[str, list[MigrationRecord]] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)
    told: list[tuple[str, str, str | None]] = field(default_factory=list)
    inputs: list[Input] = field(default_factory=list)
    alarms: set[str] = field(default_factory=set)
    worst: tuple[int, int] = (3, 0)  # (fewest serving, most unavailable) seen

    def world(self, s: Session) -> World:
        plans: dict[str, InstancePlan] = {}
        for i in self.instances.values():
            allowed = i.spec.migration.policy is not Migration.FORBIDDEN
            choice = Choice(Kind.COLD if allowed else None, "policy")
            plans[i.id] = instance_plan(i, i.host or "", choice, None)
        return World(
            self.now,
            dict(self.instances),
            {"v": VnfInfo("vfw", self.budget)},
            {h: HostInfo("UP", True) for h in HOSTS},
            list(self.inputs),
            {k: tuple(v) for k, v in self.migrations.items()},
            plans,
        )

    def free_host(self, but: str) -> str:
        used = {i.host for i in self.instances.values()}
        return next(h for h in HOSTS if h not in used and h != but and not self.flags.get(h))

    def apply(self, s: Session) -> Session:
        out = advance(s, self.world(s))
        s = out.session
        for act in out.acts:
            assert act.reason
            iid = act.instance_id or ""
            if act.kind is ActKind.TELL:
                self.told.append((act.state, act.vnf_id or "", act.host))
            elif act.kind is ActKind.ALARM:
                self.alarms.add(act.vnf_id or "")
            elif act.kind is ActKind.CLEAR:
                self.alarms.discard(act.vnf_id or "")
            elif act.kind is ActKind.FLAG:
                self.flags[act.host or ""] = act.state
            elif act.kind is ActKind.MIGRATE:
                i = self.instances[iid]
                rec = MigrationRecord(
                    f"m{len(self.migrations)}", iid, i.name, "v", Kind.COLD, i.host or "",
                    self.free_host(i.host or ""), State.PREPARING, "", "m", self.now, self.now,
                    session_id=s.id,
                )  # fmt: skip
                self.migrations.setdefault(iid, []).append(rec)
                self.instances[iid] = replace(
                    i, status=InstanceStatus.MIGRATING, task_state=TaskState.MIGRATING
                )
            elif act.kind is ActKind.STOP:
                self.instances[iid] = replace(
                    self.instances[iid], status=InstanceStatus.SHUTOFF, power=Power.STOPPED
                )
            elif act.kind is ActKind.REBUILD:
                i = self.instances[iid]
                self.instances[iid] = replace(
                    i, host=self.free_host(i.host or ""), status=InstanceStatus.REBUILDING,
                    task_state=TaskState.RECOVERING, incarnation=i.incarnation + 1,
                )  # fmt: skip
            elif act.kind is ActKind.START:
                self.instances[iid] = replace(self.instances[iid], status=InstanceStatus.ACTIVE)
        self.check()
        return s

    def settle(self) -> None:
        """What the agents do between two rounds: migrations and rebuilds finish."""
        for iid, recs in self.migrations.items():
            if recs[-1].active:
                recs[-1] = replace(recs[-1], state=State.COMPLETED, finished_at=self.now)
                self.instances[iid] = replace(
                    self.instances[iid], host=recs[-1].dest, status=InstanceStatus.ACTIVE,
                    task_state=None,
                )  # fmt: skip
        for iid, i in self.instances.items():
            if i.status is InstanceStatus.REBUILDING:
                self.instances[iid] = replace(i, status=InstanceStatus.ACTIVE, task_state=None)
        self.check()

    def check(self) -> None:
        up = sum(1 for i in self.instances.values() if serving(i))
        down = len(self.instances) - up
        self.worst = (min(self.worst[0], up), max(self.worst[1], down))

    def answer(self, s: Session, state: str, actions: dict[str, Action] | None = None) -> None:
        n = len(self.inputs)
        self.inputs.append(
            Input(n, s.id, InputKind.ANSWER, self.now, "vnfm", "v", None, state, actions or {})
        )


def session(**kw: object) -> Session:
    base = Session("s1", HOSTS, T0 + timedelta(seconds=10), Phase.MAINTENANCE, "op", T0, T0,
                   answer_window=5.0, host_window=2.0, vnfs=("v",))  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


def notified(cloud: Cloud, s: Session) -> Session:
    """Rounds until the first host's VNFMs are told (PREPARE acknowledged)."""
    for _ in range(10):
        if s.state is Phase.PREPARE_MAINTENANCE and s.since is not None:
            cloud.answer(s, "ACK_PREPARE_MAINTENANCE")
        s = cloud.apply(s)
        if s.current and s.host_states.get(s.current) is HostPhase.NOTIFIED:
            return s
    raise AssertionError(s.waiting)


def run(cloud: Cloud, s: Session, rounds: int = 200, step: float = 0.5) -> Session:
    for _ in range(rounds):
        if s.final:
            break
        s = cloud.apply(s)
        cloud.now += timedelta(seconds=step)
        cloud.settle()
    return s


def test_a_rolling_maintenance_keeps_two_of_three_serving() -> None:
    cloud = Cloud(
        {i.id: i for i in (inst(0, "cmp-1"), inst(1, "cmp-2"), inst(2, "cmp-3"))},
        DisruptionBudget(max_unavailable=1, min_available=2),
    )
    s = cloud.apply(session())
    assert s.state is Phase.MAINTENANCE and s.waiting.startswith("starts at")
    assert ("MAINTENANCE", "v", None) in cloud.told and cloud.alarms == {"v"}
    s = run(cloud, s)
    assert s.state is Phase.MAINTENANCE_COMPLETE, (s.waiting, s.history)
    assert cloud.worst == (2, 1)  # never below two serving, never two unavailable
    assert all(p is HostPhase.DONE for p in s.host_states.values())
    assert cloud.flags == dict.fromkeys(HOSTS, "")  # every host back in service
    assert not cloud.alarms
    assert [t[0] for t in cloud.told].count("PLANNED_MAINTENANCE") == 4  # one per host
    assert ("MAINTENANCE_COMPLETE", "v", None) in cloud.told
    assert len(cloud.instances) == 3
    assert all(i.status is InstanceStatus.ACTIVE for i in cloud.instances.values())


def test_a_forbidden_instance_waits_for_its_vnfm_then_is_stopped_and_rebuilt() -> None:
    forbidden = inst(0, "cmp-1", Migration.FORBIDDEN)
    cloud = Cloud({forbidden.id: forbidden}, DisruptionBudget())
    s = session(hosts=("cmp-1",), start_at=T0)
    s = cloud.apply(s)  # MAINTENANCE -> PREPARE
    s = cloud.apply(s)  # PREPARE: told
    cloud.answer(s, "ACK_PREPARE_MAINTENANCE")
    s = cloud.apply(s)
    assert s.state is Phase.PLANNED_MAINTENANCE
    s = cloud.apply(s)  # cmp-1 NOTIFIED: waits for the answer
    assert "its VNFM's answer" in s.waiting
    assert cloud.instances["i0"].host == "cmp-1"
    told = [t for t in cloud.told if t[0] == "PLANNED_MAINTENANCE"]
    assert told == [("PLANNED_MAINTENANCE", "v", "cmp-1")]
    cloud.answer(s, "ACK_PLANNED_MAINTENANCE", {"i0": Action.MIGRATE})  # not allowed
    s = cloud.apply(s)
    assert cloud.instances["i0"].status is InstanceStatus.SHUTOFF  # stopped, not migrated
    assert not cloud.migrations
    s = cloud.apply(s)
    assert cloud.instances["i0"].host != "cmp-1" and cloud.instances["i0"].incarnation == 2
    s = run(cloud, s)
    assert s.state is Phase.MAINTENANCE_COMPLETE


def test_no_answer_by_the_deadline_applies_the_default() -> None:
    cloud = Cloud({"i0": inst(0, "cmp-1")}, DisruptionBudget())
    s = notified(cloud, session(hosts=("cmp-1",), start_at=T0, answer_window=5.0))
    assert not cloud.migrations
    cloud.now += timedelta(seconds=5)
    s = cloud.apply(s)
    assert cloud.migrations["i0"][-1].active  # MIGRATE, its default


def test_own_action_waits_for_the_vnfm_then_the_default() -> None:
    cloud = Cloud({"i0": inst(0, "cmp-1")}, DisruptionBudget())
    s = notified(cloud, session(hosts=("cmp-1",), start_at=T0, answer_window=5.0))
    cloud.answer(s, "ACK_PLANNED_MAINTENANCE", {"i0": Action.OWN_ACTION})
    s = cloud.apply(s)
    assert "own action" in s.waiting and not cloud.migrations
    cloud.now += timedelta(seconds=6)
    s = cloud.apply(s)
    assert cloud.migrations["i0"][-1].active


def test_abort_mid_way_keeps_what_moved_and_restarts_a_cut_eviction() -> None:
    forbidden = inst(0, "cmp-1", Migration.FORBIDDEN)
    cloud = Cloud({forbidden.id: forbidden}, DisruptionBudget())
    s = notified(cloud, session(hosts=("cmp-1", "cmp-2"), start_at=T0))
    cloud.answer(s, "ACK_PLANNED_MAINTENANCE", {"i0": Action.EVICTION})
    s = cloud.apply(s)
    assert cloud.instances["i0"].status is InstanceStatus.SHUTOFF
    cloud.inputs.append(Input(9, s.id, InputKind.ABORT, cloud.now, "ops"))
    s = cloud.apply(s)
    assert s.state is Phase.ABORTED and "aborted by ops" in s.reason
    assert cloud.instances["i0"].status is InstanceStatus.ACTIVE  # started again in place
    assert cloud.flags["cmp-1"] == "" and not cloud.alarms
    assert s.host_states == {"cmp-1": HostPhase.SKIPPED, "cmp-2": HostPhase.SKIPPED}
    assert advance(s, cloud.world(s)).acts == ()  # final


def test_a_nack_aborts_and_a_failed_start_is_retried() -> None:
    cloud = Cloud({"i0": inst(0, "cmp-1")}, DisruptionBudget())
    s = cloud.apply(session(hosts=("cmp-1",), start_at=T0))
    s = cloud.apply(s)  # PREPARE told
    cloud.answer(s, "NACK_PREPARE_MAINTENANCE")
    s = cloud.apply(s)
    assert s.state is Phase.ABORTED and "refused (NACK_PREPARE_MAINTENANCE" in s.reason
    cloud = Cloud({"i0": inst(0, "cmp-1")}, DisruptionBudget())
    s = notified(cloud, session(hosts=("cmp-1",), start_at=T0, answer_window=0.0))
    assert s.acting["i0"].step == "migrate"
    cloud.migrations.clear()  # the engine could not start it after all
    cloud.instances["i0"] = inst(0, "cmp-1")
    s = failed(s, "i0", "No valid host was found", cloud.now)
    s = cloud.apply(s)
    assert "No valid host" in s.waiting and not cloud.migrations
    cloud.now += timedelta(seconds=4)
    s = cloud.apply(s)
    assert cloud.migrations["i0"][-1].active


def test_a_session_is_stored_and_read_back_whole() -> None:
    cloud = Cloud({"i0": inst(0, "cmp-1")}, DisruptionBudget())
    s = run(cloud, session(hosts=("cmp-1",), start_at=T0), rounds=6)
    assert Session.from_dict(s.to_dict()) == s
