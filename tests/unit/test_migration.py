"""Migration decisions (VNF-7) and disruption budgets (VNF-8): which kind a policy allows
between two hosts, the interruption a probe saw, the budget's verdicts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from vimha.domain.budget import Disruption, DisruptionBudget, admits, check_budget
from vimha.domain.compute import (
    Flavor,
    Instance,
    InstanceSpec,
    InstanceStatus,
    Migration,
    MigrationPolicy,
    TaskState,
)
from vimha.domain.errors import InvalidInput
from vimha.domain.migration import (
    HypervisorAbility,
    Kind,
    MigrationRecord,
    State,
    advance,
    choose,
    estimate,
    longest_gap,
    verdict,
)

NOW = datetime(2026, 12, 1, tzinfo=UTC)
LIBVIRT = HypervisorAbility("libvirt", live=True)
PROCESS = HypervisorAbility("process", live=False, why_not_live="criu check failed")
EST = {
    ("libvirt", Kind.LIVE): 120.0,
    ("libvirt", Kind.COLD): 20000.0,
    ("process", Kind.COLD): 600.0,
}


@pytest.mark.parametrize(
    ("policy", "bound", "hv", "kind", "why"),
    [
        (Migration.FORBIDDEN, None, LIBVIRT, None, "forbidden"),
        (Migration.LIVE, 300, LIBVIRT, Kind.LIVE, "within 300 ms"),
        (Migration.LIVE, None, LIBVIRT, Kind.LIVE, "no bound"),
        (Migration.LIVE, 100, LIBVIRT, None, "expected to interrupt it 120 ms"),
        (Migration.LIVE, 300, PROCESS, None, "600 ms, more than its 300 ms"),
        (Migration.LIVE, 1000, PROCESS, Kind.COLD, "within its 1000 ms"),
        (Migration.LIVE, None, PROCESS, Kind.COLD, "cold is acceptable"),
        (Migration.COLD, None, PROCESS, Kind.COLD, "policy cold"),
        (Migration.COLD, None, LIBVIRT, Kind.COLD, "policy cold"),
    ],
)
def test_the_policy_chooses_the_kind(
    policy: Migration, bound: int | None, hv: HypervisorAbility, kind: Kind | None, why: str
) -> None:
    choice = choose(MigrationPolicy(policy, bound), hv, hv, EST)
    assert choice.kind is kind
    assert why in choice.reason


def test_a_kind_asked_for_must_be_allowed() -> None:
    live = MigrationPolicy(Migration.LIVE, 300)
    assert choose(live, LIBVIRT, LIBVIRT, EST, Kind.COLD).kind is None  # 20 s > 300 ms
    assert choose(live, PROCESS, PROCESS, EST, Kind.LIVE).kind is None
    assert "not started live" in choose(live, PROCESS, PROCESS, EST, Kind.LIVE).reason
    assert choose(MigrationPolicy(Migration.COLD), LIBVIRT, LIBVIRT, EST, Kind.LIVE).kind is None
    mixed = choose(live, LIBVIRT, PROCESS, EST)
    assert mixed.kind is None and "hypervisors differ" in mixed.reason


def record(ms: float | None, kind: Kind = Kind.LIVE, age: int = 0, **kw: object) -> MigrationRecord:
    at = NOW - timedelta(seconds=age)
    base = MigrationRecord(
        "m", "i", "vfw-fw-0", "v", kind, "cmp-1", "cmp-2", State.COMPLETED, "", "op", at, at,
        bound_ms=300, hypervisor="libvirt", interruption_ms=ms,
    )  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


def test_estimates_come_from_what_was_measured_once_there_are_enough() -> None:
    nominal = {("libvirt", Kind.LIVE): 200.0}
    assert estimate([record(50), record(60)], nominal)[("libvirt", Kind.LIVE)] == 200.0
    history = [record(float(ms), age=i) for i, ms in enumerate([50, 60, 70, 80, 400])]
    assert estimate(history, nominal)[("libvirt", Kind.LIVE)] == 400.0  # p90 of five
    failed = [record(999.0, state=State.FAILED, age=i) for i in range(5)]
    assert estimate(failed, nominal)[("libvirt", Kind.LIVE)] == 200.0


def test_the_longest_gap_between_answers() -> None:
    answers = [0.00, 0.01, 0.02, 0.25, 0.26]
    assert longest_gap(answers, 0.0, 0.26) == pytest.approx(230.0)
    assert longest_gap([], 1.0, 2.0) == pytest.approx(1000.0)
    assert longest_gap([0.5], 0.0, 1.0) == pytest.approx(500.0)


def test_a_broken_bound_is_alarmed() -> None:
    assert verdict(record(120.0)) is None
    why = verdict(record(450.0))
    assert why is not None and "450 ms, more than its 300 ms" in why
    assert verdict(record(None)) is None


def test_phases_move_the_record_once_and_in_order() -> None:
    rec = record(None, state=State.PREPARING, kind=Kind.COLD)
    ready = advance(rec, "prepared", NOW)
    assert ready is not None and ready.state is State.READY
    assert advance(ready, "prepared", NOW) is None  # a repeat
    assert advance(ready, "migrated", NOW) is None  # a live phase for a cold migration
    moved = advance(ready, "exported", NOW)
    assert moved is not None and moved.state is State.TRANSFERRED
    done = advance(moved, "started", NOW)
    assert done is not None and done.state is State.COMPLETED and done.finished_at == NOW
    assert MigrationRecord.from_dict(done.to_dict()) == done


# -- disruption budgets ------------------------------------------------------------------
def inst(n: int, status: InstanceStatus = InstanceStatus.ACTIVE, task: TaskState | None = None):  # type: ignore[no-untyped-def]
    spec = InstanceSpec("img", Flavor("f", "tiny", 1, 128, 1), (), vnf_id="v")
    return Instance(f"i{n}", f"vfw-fw-{n}", spec, status, NOW, NOW, task_state=task, host="h")


def test_at_least_two_of_three_serving() -> None:
    budget = DisruptionBudget(max_unavailable=1, min_available=2)
    three = [inst(0), inst(1), inst(2)]
    assert admits(budget, "vfw", three, three[0]).ok
    moving = [inst(0, InstanceStatus.MIGRATING, TaskState.MIGRATING), inst(1), inst(2)]
    refused = admits(budget, "vfw", moving, moving[1])
    assert not refused.ok and "at most 1 unavailable" in refused.reason
    assert "vfw-fw-0 migrating" in refused.reason
    assert not admits(budget, "vfw", three, three[0], pending=1).ok  # one decided this round


def test_involuntary_failures_count_against_the_budget() -> None:
    budget = DisruptionBudget(min_available=2)
    failed = [inst(0, InstanceStatus.ERROR), inst(1), inst(2)]
    refused = admits(budget, "vfw", failed, failed[1])
    assert not refused.ok and "at least 2 serving: 2 serve now, 1 would" in refused.reason
    # the failed one itself may be acted on: it serves nobody already
    assert admits(budget, "vfw", failed, failed[0]).ok


def test_scale_in_keeps_the_minimum_serving() -> None:
    budget = DisruptionBudget(max_unavailable=0, min_available=2)
    three = [inst(0), inst(1), inst(2)]
    assert admits(budget, "vfw", three, three[2], Disruption.REMOVE).ok
    two = three[:2]
    assert not admits(budget, "vfw", two, two[1], Disruption.REMOVE).ok
    assert not admits(budget, "vfw", three, three[0]).ok  # maxUnavailable 0: never disrupted


def test_a_budget_that_can_never_hold_is_refused() -> None:
    with pytest.raises(InvalidInput, match="minAvailable: 4 exceeds the VNF's 3"):
        check_budget(DisruptionBudget(min_available=4), 3)
    with pytest.raises(InvalidInput):
        DisruptionBudget(max_unavailable=-1)
    assert DisruptionBudget.from_descriptor(
        {"disruptionBudget": {"maxUnavailable": 1, "minAvailable": 2}}
    ) == DisruptionBudget(1, 2)
    assert not DisruptionBudget.from_descriptor({}).declared
