"""One contract suite for the Store port, run against every driver on its real backend:
SQLite (file, WAL) and PostgreSQL (a real server started by the fixture)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from vimha.domain.alarms import (
    AckState,
    AlarmChange,
    ChangeKind,
    EventType,
    FaultEvent,
    Location,
    Severity,
    apply_ack,
    apply_event,
)
from vimha.domain.delivery import DeliveryStatus
from vimha.domain.errors import Conflict, NotFound, SchemaMismatch, Temporary
from vimha.domain.retention import RetentionPolicy, plan_purge
from vimha.domain.subscriptions import (
    Authentication,
    AuthType,
    NotificationType,
    Subscription,
    SubscriptionFilter,
)
from vimha.drivers.sqlstore import SqlStore
from vimha.ports.store import Attempt, AttemptRecord, FenceRecord

T0 = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
LOC = Location((("site", "s1"), ("rack", "r1"), ("host", "cmp-1")))


@pytest.fixture
def store(url: str) -> Iterator[SqlStore]:
    s = SqlStore(url)
    s.upgrade()
    try:
        yield s
    finally:
        s.close()


def event(
    obj: str = "cmp-1", severity: Severity = Severity.MAJOR, cause: str = "power"
) -> FaultEvent:
    return FaultEvent(
        obj,
        "HOST_DOWN",
        cause,
        severity,
        EventType.EQUIPMENT_ALARM,
        T0,
        location=LOC,
        fault_details=("psu 1",),
    )


def raise_alarm(store: SqlStore, ev: FaultEvent) -> AlarmChange:
    with store.unit_of_work() as uow:
        existing = uow.active_alarms([ev.dedup_key]).get(ev.dedup_key)
        change = apply_event(existing, ev, T0, str(uuid.uuid4()), "vim")
        assert change is not None
        uow.save(change, T0)
    return change


def subscription(uri: str = "http://127.0.0.1:1/cb", **flt: object) -> Subscription:
    return Subscription(
        str(uuid.uuid4()),
        uri,
        SubscriptionFilter(**flt),  # type: ignore[arg-type]
        Authentication(AuthType.BASIC, "u", "p"),
        T0,
    )


def test_schema_check(url: str) -> None:
    store = SqlStore(url)
    try:
        with pytest.raises(SchemaMismatch, match="vimha db upgrade"):
            store.check_schema()
        before, after = store.upgrade()
        assert before is None and after
        store.check_schema()
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(SchemaMismatch, match="newer"):
            store.check_schema()
    finally:
        store.close()


def test_alarm_round_trip_keeps_every_field(store: SqlStore) -> None:
    change = raise_alarm(store, event())
    got = store.get_alarm(change.alarm.id)
    assert got == change.alarm
    assert got.alarm_raised_time.tzinfo is not None
    assert got.location.path == "s1/r1/cmp-1"


def test_update_clear_and_history(store: SqlStore) -> None:
    first = raise_alarm(store, event())
    raise_alarm(store, event(severity=Severity.MAJOR))  # repeated: no history
    raise_alarm(store, event(severity=Severity.CRITICAL))
    cleared = raise_alarm(store, event(severity=Severity.CLEARED))
    assert cleared.kind is ChangeKind.CLEARED and cleared.alarm.id == first.alarm.id
    history = store.alarm_history(first.alarm.id)
    assert [h.kind for h in history] == ["RAISED", "UPDATED", "CLEARED"]
    assert history[-1].reason == cleared.reason
    again = raise_alarm(store, event())
    assert again.kind is ChangeKind.RAISED and again.alarm.id != first.alarm.id
    with pytest.raises(NotFound):
        store.alarm_history("nope")


def test_the_dashboards_reads_latest_alarms_counts_and_marker(store: SqlStore) -> None:
    assert store.alarms_marker() == 0 and store.active_alarm_counts() == {}
    first = raise_alarm(store, event("cmp-1"))
    marker = store.alarms_marker()
    assert marker > 0
    second = raise_alarm(store, event("cmp-2", Severity.CRITICAL))
    third = raise_alarm(store, event("cmp-3"))
    assert store.alarms_marker() > marker
    assert [a.id for a in store.latest_alarms(True, 2)] == [third.alarm.id, second.alarm.id]
    assert store.active_alarm_counts() == {"MAJOR": 2, "CRITICAL": 1}
    marker = store.alarms_marker()
    with store.unit_of_work() as uow:
        alarm = uow.alarm_for_update(first.alarm.id)
        uow.save(apply_ack(alarm, AckState.ACKNOWLEDGED, T0), T0)
    assert store.alarms_marker() > marker  # an acknowledgement moves it too
    raise_alarm(store, event("cmp-1", Severity.CLEARED))
    assert [a.id for a in store.latest_alarms(False, 10)] == [first.alarm.id]
    assert store.active_alarm_counts() == {"MAJOR": 1, "CRITICAL": 1}


def test_iter_alarms_in_order_across_batches(store: SqlStore) -> None:
    ids = [raise_alarm(store, event(obj=f"h{i}")).alarm.id for i in range(7)]
    got = [a.id for _, a in store.iter_alarms(0, 3)]
    assert got == ids
    seqs = [s for s, _ in store.iter_alarms(0, 3)]
    assert [a.id for _, a in store.iter_alarms(seqs[3], 3)] == ids[4:]


def test_a_second_active_alarm_with_the_same_key_is_refused(store: SqlStore) -> None:
    change = raise_alarm(store, event())
    twin = replace(change.alarm, id=str(uuid.uuid4()))
    with pytest.raises(Temporary), store.unit_of_work() as uow:
        uow.save(AlarmChange(ChangeKind.RAISED, twin, "race"), T0)


def test_unit_of_work_is_all_or_nothing(store: SqlStore) -> None:
    sub = store.add_subscription(subscription())
    with pytest.raises(RuntimeError), store.unit_of_work() as uow:
        change = apply_event(None, event(), T0, "a-1", "vim")
        assert change is not None
        uow.save(change, T0)
        uow.enqueue(NotificationType.ALARM, {"alarm": {}}, [sub.id], T0, "cmp-1")
        raise RuntimeError("crash in the middle")
    with pytest.raises(NotFound):
        store.get_alarm("a-1")
    assert store.pending_deliveries(10) == []


def test_concurrent_acks_one_wins(store: SqlStore) -> None:
    alarm = raise_alarm(store, event()).alarm
    results: list[str] = []
    barrier = threading.Barrier(4)

    def ack() -> None:
        barrier.wait()
        try:
            with store.unit_of_work() as uow:
                current = uow.alarm_for_update(alarm.id)
                change = apply_ack(current, AckState.ACKNOWLEDGED, T0)
                uow.save(change, T0)
            results.append("ok")
        except (Conflict, Temporary):
            results.append("conflict")

    threads = [threading.Thread(target=ack) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 3 + ["ok"]
    assert [h.kind for h in store.alarm_history(alarm.id)] == ["RAISED", "ACKNOWLEDGED"]


def test_subscriptions_dedup_list_delete(store: SqlStore) -> None:
    a = store.add_subscription(subscription(perceived_severities=("MAJOR", "CRITICAL")))
    same = store.add_subscription(subscription(perceived_severities=("CRITICAL", "MAJOR")))
    assert same.id == a.id
    b = store.add_subscription(subscription(uri="http://127.0.0.1:2/cb"))
    assert {s.id for s in store.list_subscriptions()} == {a.id, b.id}
    got = store.get_subscription(a.id)
    assert got.authentication == Authentication(AuthType.BASIC, "u", "p")
    assert got.filter.perceived_severities == ("MAJOR", "CRITICAL")
    store.delete_subscription(a.id)
    with pytest.raises(NotFound):
        store.get_subscription(a.id)
    with pytest.raises(NotFound):
        store.delete_subscription(a.id)


def test_deliveries_in_order_with_attempts(store: SqlStore) -> None:
    s1 = store.add_subscription(subscription())
    s2 = store.add_subscription(subscription(uri="http://127.0.0.1:2/cb"))
    with store.unit_of_work() as uow:
        jobs = []
        for i in range(3):
            jobs += uow.enqueue(
                NotificationType.ALARM,
                {"alarm": {"n": i}},
                [s1.id, s2.id],
                T0 + timedelta(seconds=i),
                f"h{i}",
            )
    pending = store.pending_deliveries(100)
    assert [j.seq for j in pending] == sorted(j.seq for j in jobs)
    assert [j.payload["alarm"]["n"] for j in store.pending_deliveries(10, s1.id)] == [0, 1, 2]
    first = pending[0]
    after = store.pending_deliveries(10, first.subscription_id, first.seq)
    assert first.seq not in [j.seq for j in after] and len(after) == 2
    fail = Attempt(T0, 3.5, False, "consumer answered 500")
    ok = Attempt(T0 + timedelta(seconds=1), 1.25, True, "delivered")
    store.record_attempts([AttemptRecord(first.seq, fail, DeliveryStatus.PENDING, T0)])
    assert store.pending_deliveries(1)[0].attempts == 1
    store.record_attempts([AttemptRecord(first.seq, ok, DeliveryStatus.DELIVERED, None)])
    record = store.get_delivery(first.id)
    assert record.status is DeliveryStatus.DELIVERED
    assert record.attempts == (fail, ok)
    assert record.delivered_at == ok.at
    assert first.seq not in [j.seq for j in store.pending_deliveries(100)]
    listed = list(store.iter_deliveries(0, 2))
    assert len(listed) == 6
    assert {d.id: d.attempt_count for d in listed}[first.id] == 2
    with pytest.raises(NotFound):
        store.get_delivery("nope")


def test_deliveries_belong_to_a_controller_and_are_adopted_once(store: SqlStore) -> None:
    """Each controller delivers what it stored; the pending deliveries of a controller that
    is gone (or of no owner) are adopted by exactly one caller, in order, with their
    attempts."""
    sub = store.add_subscription(subscription())
    jobs = {}
    for owner in (None, "ctl-a", "ctl-b"):
        store.owner = owner
        with store.unit_of_work() as uow:
            jobs[owner] = [
                j
                for i in range(3)
                for j in uow.enqueue(NotificationType.ALARM, {"n": i}, [sub.id], T0, "h")
            ]
    store.owner = None
    assert store.pending_owners() == {None, "ctl-a", "ctl-b"}
    assert [j.seq for j in store.pending_deliveries(10, owner="ctl-a")] == [
        j.seq for j in jobs["ctl-a"]
    ]
    fail = Attempt(T0, 1.0, False, "consumer answered 500")
    store.record_attempts([AttemptRecord(jobs["ctl-a"][0].seq, fail, DeliveryStatus.PENDING, T0)])

    results: list[list[int]] = []

    def adopt() -> None:
        with store.unit_of_work() as uow:
            results.append([j.seq for j in uow.adopt_deliveries(["ctl-a", None], "ctl-b", 100)])

    threads = [threading.Thread(target=adopt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    adopted = sorted(s for r in results for s in r)
    assert adopted == sorted(j.seq for j in jobs[None] + jobs["ctl-a"])  # each once
    assert store.pending_owners() == {"ctl-b"}
    mine = store.pending_deliveries(100, owner="ctl-b")
    assert [j.seq for j in mine] == sorted(j.seq for js in jobs.values() for j in js)
    assert {j.seq: j.attempts for j in mine}[jobs["ctl-a"][0].seq] == 1
    with store.unit_of_work() as uow:
        assert uow.adopt_deliveries(["ctl-a"], "ctl-b", 100) == []


def test_deleting_a_subscription_drops_its_pending_deliveries(store: SqlStore) -> None:
    s1 = store.add_subscription(subscription())
    with store.unit_of_work() as uow:
        uow.enqueue(NotificationType.ALARM, {}, [s1.id], T0, "h")
    store.delete_subscription(s1.id)
    assert store.pending_deliveries(10) == []


def test_settings(store: SqlStore) -> None:
    assert store.get_setting("k") is None
    store.put_setting("k", {"a": [1, 2]})
    store.put_setting("k", {"a": [3]})
    assert store.get_setting("k") == {"a": [3]}


def test_fence_records_newest_first_per_host(store: SqlStore) -> None:
    t0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    first = store.add_fence_record(
        FenceRecord("cmp-1", "HOST_UNREACHABLE", t0, t0 + timedelta(seconds=3), "FAILED", "no BMC")
    )
    second = store.add_fence_record(
        FenceRecord("cmp-1", "HOST_UNREACHABLE", t0, t0 + timedelta(seconds=9), "CONFIRMED", "off")
    )
    store.add_fence_record(FenceRecord("cmp-2", "COMPUTE_NODE_FAILURE", t0, t0, "CONFIRMED", ""))
    assert 0 < first.seq < second.seq
    records = store.fence_records("cmp-1")
    assert [r.result for r in records] == ["CONFIRMED", "FAILED"]
    assert records[0].finished_at == t0 + timedelta(seconds=9)
    assert records[0].started_at.tzinfo is not None
    assert len(store.fence_records()) == 3
    assert store.fence_records("cmp-3") == []


def test_hosts_declared_through_the_api(store: SqlStore) -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    spec = {"name": "cmp-9", "roles": ["compute"], "capacities": {"vcpus": 8, "ram_mib": 4096}}
    store.add_host("cmp-9", spec, now)
    with pytest.raises(Conflict):
        store.add_host("cmp-9", spec, now)
    store.add_host("cmp-10", {"name": "cmp-10"}, now)
    assert store.list_hosts() == {"cmp-10": {"name": "cmp-10"}, "cmp-9": spec}
    store.replace_host("cmp-9", {**spec, "roles": ["compute", "storage"]}, now)
    assert store.list_hosts()["cmp-9"]["roles"] == ["compute", "storage"]
    store.delete_host("cmp-9")
    assert list(store.list_hosts()) == ["cmp-10"]
    with pytest.raises(NotFound):
        store.delete_host("cmp-9")
    with pytest.raises(NotFound):
        store.replace_host("cmp-9", spec, now)


def test_services_declared_through_the_api(store: SqlStore) -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    spec = {"name": "ovs", "command": ["ovs-vswitchd"], "kind": "compute"}
    store.add_service("cmp-1", "ovs", spec, now)
    store.add_service("cmp-2", "ovs", spec, now)  # same name, another host
    with pytest.raises(Conflict):
        store.add_service("cmp-1", "ovs", spec, now)
    assert [(h, n) for h, n, _ in store.list_services()] == [("cmp-1", "ovs"), ("cmp-2", "ovs")]
    store.replace_service("cmp-1", "ovs", {**spec, "kind": "network"}, now)
    assert store.list_services("cmp-1")[0][2]["kind"] == "network"
    store.delete_service("cmp-1", "ovs")
    assert [(h, n) for h, n, _ in store.list_services()] == [("cmp-2", "ovs")]
    with pytest.raises(NotFound):
        store.delete_service("cmp-1", "ovs")
    with pytest.raises(NotFound):
        store.replace_service("cmp-1", "ovs", spec, now)


def test_purge_follows_policy_and_never_loses_live_data(store: SqlStore) -> None:
    warning = raise_alarm(store, event(obj="w", severity=Severity.WARNING)).alarm
    critical = raise_alarm(store, event(obj="c", severity=Severity.CRITICAL)).alarm
    active = raise_alarm(store, event(obj="a", severity=Severity.WARNING)).alarm
    for obj, sev in (("w", Severity.WARNING), ("c", Severity.CRITICAL)):
        raise_alarm(store, event(obj=obj, severity=sev))
        with store.unit_of_work() as uow:
            ev = event(obj=obj, severity=Severity.CLEARED)
            current = uow.active_alarms([ev.dedup_key])[ev.dedup_key]
            change = apply_event(current, ev, T0, "unused", "vim")
            assert change is not None
            uow.save(change, T0)
    sub = store.add_subscription(subscription())
    with store.unit_of_work() as uow:
        done, pending = uow.enqueue(NotificationType.ALARM, {}, [sub.id, sub.id], T0, "w")
    store.record_attempts(
        [AttemptRecord(done.seq, Attempt(T0, 1, True, "ok"), DeliveryStatus.DELIVERED, None)]
    )
    policy = RetentionPolicy.from_dict(
        {"clearedAlarms": {"WARNING": "7d", "CRITICAL": "400d"}, "notifications": "1d"}
    )
    counts = store.purge(plan_purge(policy, T0 + timedelta(days=10)))
    assert counts.alarms == 1 and counts.history == 2 and counts.deliveries == 1
    with pytest.raises(NotFound):
        store.get_alarm(warning.id)
    assert store.get_alarm(critical.id).alarm_cleared_time is not None
    assert store.get_alarm(active.id).active
    assert [j.id for j in store.pending_deliveries(10)] == [pending.id]
    assert counts.notifications == 0  # still referenced by the pending delivery


def test_active_alarm_lookup_uses_the_partial_index(tmp_path: Path) -> None:
    """A regression guard: with a predicate the planner cannot match to the partial index,
    every ingest walked all active alarms and throughput decayed as alarms accumulated."""
    from vimha.drivers.sqlstore.store import _ACTIVE_BY_KEYS

    store = SqlStore(f"sqlite:///{tmp_path / 'plan.db'}")
    store.upgrade()
    try:
        compiled = _ACTIVE_BY_KEYS.compile(dialect=store.engine.dialect)
        sql = str(compiled).replace("(__[POSTCOMPILE_keys])", "('a', 'b')")
        with store.engine.connect() as conn:
            plan = " ".join(str(r) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
        assert "ix_alarms_active_dedup" in plan, plan
    finally:
        store.close()
