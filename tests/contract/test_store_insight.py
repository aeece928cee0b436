"""Insight's part of the Store port (issue 20), against SQLite and a real PostgreSQL: the
instances' state journal written by the compute writes, incidents saved from their version,
reported steps, cursors, and the reads the loops and the metrics use."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from vimha.domain.alarms import (
    EventType,
    FaultEvent,
    Location,
    Severity,
    apply_correlation,
    apply_event,
)
from vimha.domain.compute import Flavor, Instance, InstanceSpec, InstanceStatus, Power
from vimha.domain.errors import NotFound
from vimha.domain.incidents import Affected, Entry, Incident, Kind, Stage, State
from vimha.drivers.sqlstore import SqlStore
from vimha.ports.compute import ClaimConflict
from vimha.ports.store import FenceRecord

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TINY = Flavor("f-1", "tiny", 1, 512, 1)


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def store(url: str) -> Iterator[SqlStore]:
    s = SqlStore(url)
    s.upgrade()
    try:
        yield s
    finally:
        s.close()


def instance(i: str, host: str = "h1") -> Instance:
    spec = InstanceSpec("img", TINY, (), vnf_id="v-1", vdu="fw")
    return Instance(i, f"v-fw-{i}", spec, InstanceStatus.BUILDING, T0, T0, host=host)


def test_every_change_of_state_is_journaled_once(store: SqlStore) -> None:
    a, b = instance("i-1"), instance("i-2", "h2")
    with store.unit_of_work() as uow:
        uow.compute.add_instance(a)
        uow.compute.add_instance(b)
    steps = [
        (a, a.evolve(t(1), status=InstanceStatus.ACTIVE)),
    ]
    a1 = steps[0][1]
    a2 = a1.evolve(t(2), notes=("only a note",))  # not journaled
    a3 = a2.evolve(t(3), status=InstanceStatus.ERROR)
    a4 = a3.evolve(t(4), status=InstanceStatus.ACTIVE, host="h2", incarnation=2)
    a5 = a4.evolve(t(100), power=Power.STOPPED, status=InstanceStatus.SHUTOFF)
    for old, new in [(a, a1), (a1, a2), (a2, a3), (a3, a4), (a4, a5)]:
        with store.unit_of_work() as uow:
            uow.compute.update_instance(old, new)
    rows = store.insight.journal_after(0, 100)
    assert [(r.instance_id, r.status, r.host, r.incarnation) for r in rows] == [
        ("i-1", "BUILDING", "h1", 1),
        ("i-2", "BUILDING", "h2", 1),
        ("i-1", "ACTIVE", "h1", 1),
        ("i-1", "ERROR", "h1", 1),
        ("i-1", "ACTIVE", "h2", 2),
        ("i-1", "SHUTOFF", "h2", 2),
    ]
    assert rows[-1].power == "stopped" and rows[-1].at == t(100)
    assert rows[0].vnf_id == "v-1" and rows[0].vdu == "fw" and rows[0].sal == "LEVEL_3"
    assert [r.seq for r in store.insight.journal_after(rows[3].seq, 100)] == [
        rows[4].seq,
        rows[5].seq,
    ]
    since = store.insight.journal_since(t(3.5))
    assert [(r.instance_id, r.status) for r in since] == [
        ("i-2", "BUILDING"),  # its last row before: its state when the period began
        ("i-1", "ERROR"),
        ("i-1", "ACTIVE"),
        ("i-1", "SHUTOFF"),
    ]
    assert [r.instance_id for r in store.insight.journal_since(t(3.5), ["i-2"])] == ["i-2"]
    assert [a.instance_id for a in store.insight.residents("h1", t(3.5))] == ["i-1"]
    assert sorted(a.instance_id for a in store.insight.residents("h2", t(5))) == ["i-1", "i-2"]
    with store.unit_of_work() as uow:
        assert uow.insight.purge_journal(t(50)) == 3  # i-1's first three; each last kept
    assert [r.status for r in store.insight.journal_since(t(0))] == [
        "BUILDING",
        "ACTIVE",
        "SHUTOFF",
    ]


def incident(iid: str = "inc-1", root: str | None = "a-1") -> Incident:
    return Incident(
        iid,
        Kind.HOST,
        "cmp-3",
        "HOST_HW_FAILURE on cmp-3",
        State.OPEN,
        t(0),
        root,
        ("a-1",),
        (Affected("i-1", "cmp-3", 1, "vm"),),
        (Entry(t(0), Stage.DETECTED, "cmp-3", "all planes lost"),),
    )


def test_incidents_are_saved_from_their_version(store: SqlStore) -> None:
    with store.unit_of_work() as uow:
        first = uow.insight.save_incident(incident())
        uow.insight.save_incident(incident("inc-2", "a-2"))
    assert first.version == 1
    got = store.insight.incident("inc-1")
    assert got == first
    later = replace(
        got.with_entry(Entry(t(1), Stage.FENCED, "cmp-3", "ForceOff")),
        state=State.RECOVERED,
        recovered_at=t(3),
    )
    with store.unit_of_work() as uow:
        saved = uow.insight.save_incident(later)
    with pytest.raises(ClaimConflict), store.unit_of_work() as uow:
        uow.insight.save_incident(later)
    assert store.insight.incident("inc-1") == saved and saved.version == 2
    assert [i.id for i in store.insight.incidents()] == ["inc-2", "inc-1"]
    assert [i.id for i in store.insight.incidents(["RECOVERED"])] == ["inc-1"]
    assert [i.id for i in store.insight.incidents(kind="INSTANCE")] == []
    assert [i.id for i in store.insight.incidents_of_roots(["a-2", "zz"])] == ["inc-2"]
    with pytest.raises(NotFound):
        store.insight.incident("nope")


def test_reports_and_cursors(store: SqlStore) -> None:
    assert store.insight.cursor("x") == 0
    with store.unit_of_work() as uow:
        uow.insight.report("host", "cmp-3", Stage.PLACED, t(1), "on cmp-1", "i-1", t(1.1))
        uow.insight.set_cursor("x", 7)
        uow.insight.set_cursor("x", 8)
    (r,) = store.insight.reports_after(0, 10)
    assert (r.subject_type, r.subject, r.stage, r.at, r.instance_id) == (
        "host",
        "cmp-3",
        Stage.PLACED,
        t(1),
        "i-1",
    )
    assert r.recorded_at == t(1.1) and store.insight.reports_after(r.seq, 10) == []
    assert store.insight.cursor("x") == 8


def test_alarm_reads_for_the_loops(store: SqlStore) -> None:
    loc = Location((("rack", "r1"), ("host", "cmp-1")))

    def ev(obj: str, sev: Severity = Severity.MAJOR) -> FaultEvent:
        return FaultEvent(obj, "X", "p", sev, EventType.EQUIPMENT_ALARM, T0, location=loc)

    assert store.insight.alarm_mark() == 0
    ids = {}
    for n, (obj, when) in enumerate([("old", -7200.0), ("new", -10.0), ("live", -9000.0)]):
        change = apply_event(None, ev(obj), t(when), f"a-{n}", "vim")
        assert change is not None
        ids[obj] = change.alarm
        with store.unit_of_work() as uow:
            uow.save(change, t(when))
    for obj in ("old", "new"):
        when = t(-5) if obj == "new" else t(-7000)
        cleared = apply_event(ids[obj], ev(obj, Severity.CLEARED), when, "x", "vim")
        assert cleared is not None
        with store.unit_of_work() as uow:
            uow.save(cleared, when)
    tied = apply_correlation(ids["live"], ("a-1",), True, t(-1), "tied")
    assert tied is not None
    with store.unit_of_work() as uow:
        uow.save(tied, t(-1))
    got = store.insight.alarms_since(t(-60))
    assert sorted(a.managed_object_id for a in got) == ["live", "new"]
    changes = store.insight.alarm_changes(0, 100)
    assert [(c.kind, c.alarm.managed_object_id) for c in changes] == [
        ("RAISED", "old"),
        ("RAISED", "new"),
        ("RAISED", "live"),
        ("CLEARED", "old"),
        ("CLEARED", "new"),
        ("UPDATED", "live"),
    ]
    assert changes[0].alarm.active is False  # the alarm as it is now
    assert changes[-1].alarm.correlated_alarm_ids == ("a-1",) and changes[-1].at == t(-1)
    assert store.insight.alarm_mark() == changes[-1].seq
    assert [c.seq for c in store.insight.alarm_changes(changes[3].seq, 2)] == [
        changes[4].seq,
        changes[5].seq,
    ]


def test_fences_since(store: SqlStore) -> None:
    for n in range(3):
        store.add_fence_record(
            FenceRecord("cmp-3", "HOST_HW_FAILURE", t(n), t(n + 0.5), "CONFIRMED", f"try {n}")
        )
    store.add_fence_record(FenceRecord("cmp-4", "X", t(0), t(9), "FAILED", "no"))
    got = store.insight.fences("cmp-3", t(1))
    assert [(f.detail, f.confirmed, f.at) for f in got] == [
        ("try 1", True, t(1.5)),
        ("try 2", True, t(2.5)),
    ]
    assert store.insight.fences("cmp-4", t(0))[0].confirmed is False
