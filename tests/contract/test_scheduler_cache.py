"""VNF-10 with the scheduler's kept snapshot (issue 15, engine/host_cache.py): a scheduler
decides on hosts it read in an earlier unit of work, refreshed only where their generation
moved. A stale snapshot may only cost a retry, never a broken rule nor an over-commit: two
schedulers whose snapshots were taken before the other's claim committed race for the last
slot (of an anti-affinity domain, of a host); exactly one wins, the other is refused or
retries on data read again. What a unit of work wrote itself and then rolled back is never
kept. Against a real PostgreSQL (the races) and SQLite (the rollback)."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.support.postgres import PostgresServer
from vimha.domain.affinity import GroupPolicy, PlacementGroup
from vimha.domain.alarms import Location
from vimha.domain.compute import (
    Flavor,
    HostResources,
    Image,
    Instance,
    InstanceSpec,
    InstanceStatus,
    Sal,
)
from vimha.domain.sal import SalClass
from vimha.drivers.sqlstore import SqlStore
from vimha.engine.scheduler import HostView, NoValidHost, Placed, Scheduler
from vimha.ports.compute import ClaimConflict

T0 = datetime(2026, 12, 1, tzinfo=UTC)
TINY = Flavor("f", "tiny", 1, 256, 1)
BIG = Flavor("b", "big", 3, 256, 1)
HIERARCHY = ("site", "zone", "rack", "host")
IMAGE = Image("img", "img", "active", "d", 1, "raw", "bare", {}, T0, T0)
RACKS = {"h0": "r0", "h1": "r0", "h2": "r1", "h3": "r1"}


def views() -> dict[str, HostView]:
    return {
        h: HostView("UP", Location((("site", "s"), ("zone", "z"), ("rack", r), ("host", h))))
        for h, r in RACKS.items()
    }


def scheduler() -> Scheduler:
    return Scheduler(views, HIERARCHY, {s: SalClass(s) for s in Sal}, tie=1.0)


def store_at(url: str, vcpus: int) -> SqlStore:
    store = SqlStore(url)
    store.upgrade()
    with store.unit_of_work() as uow:
        for name in RACKS:
            uow.compute.upsert_host(HostResources(name, vcpus, 4096, 100, cpu_ratio=1.0), None, T0)
    return store


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    return postgres.new_database()


def place_one(
    store: SqlStore,
    sched: Scheduler,
    spec: InstanceSpec,
    snapped: threading.Event | None = None,
    go: threading.Event | None = None,
) -> Placed:
    """One unit of work: snapshot, then (once `go` is set) decide, claim, add the instance."""
    instance_id = str(uuid.uuid4())
    with store.unit_of_work() as uow:
        snap = sched.snapshot(uow)
        if snapped is not None and go is not None:
            snapped.set()
            assert go.wait(30)
        done = sched.place(uow, snap, instance_id, spec, IMAGE, {}, T0)
        uow.compute.add_instance(
            Instance(
                instance_id, instance_id[:8], spec, InstanceStatus.BUILDING, T0, T0, host=done.host
            )
        )
    return done


@pytest.fixture
def two(pg_url: str) -> Iterator[tuple[SqlStore, SqlStore]]:
    first, second = store_at(pg_url, 4), SqlStore(pg_url)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def race(
    stores: tuple[SqlStore, SqlStore], scheds: tuple[Scheduler, Scheduler], spec: InstanceSpec
) -> tuple[Placed, list[object]]:
    """B takes its snapshot, then A places and commits, then B decides on its snapshot
    (stale: A's claim is not in it) and retries on a conflict, as a writer does."""
    snapped, go = threading.Event(), threading.Event()
    outcomes: list[object] = []

    def b() -> None:
        try:
            outcomes.append(place_one(stores[1], scheds[1], spec, snapped, go))
        except (ClaimConflict, NoValidHost) as e:
            outcomes.append(e)
            if isinstance(e, ClaimConflict):  # decide again, on a snapshot read again
                try:
                    outcomes.append(place_one(stores[1], scheds[1], spec))
                except NoValidHost as again:
                    outcomes.append(again)

    thread = threading.Thread(target=b)
    thread.start()
    assert snapped.wait(30)
    won = place_one(stores[0], scheds[0], spec)
    go.set()
    thread.join(60)
    assert not thread.is_alive()
    return won, outcomes


def test_stale_snapshots_racing_for_the_last_slot_of_an_anti_affinity_domain(
    two: tuple[SqlStore, SqlStore],
) -> None:
    first = two[0]
    group = PlacementGroup("g", "g", GroupPolicy.ANTI_AFFINITY, "rack", 1)
    with first.unit_of_work() as uow:
        uow.compute.add_group(group, T0)
    scheds = (scheduler(), scheduler())
    spec = InstanceSpec("img", TINY, (), groups=("g",))
    # Both caches warm; then rack r1 takes its one member: r0 is the last free domain.
    for s, st in zip(scheds, two, strict=True):
        with st.unit_of_work() as uow:
            s.snapshot(uow)
    assert place_one(first, scheds[0], spec).host is not None
    won, outcomes = race(two, scheds, spec)
    refused = [o for o in outcomes if isinstance(o, NoValidHost)]
    assert len(refused) == 1 and "GroupRules" in str(refused[0]), outcomes
    assert not [o for o in outcomes if isinstance(o, Placed)], outcomes
    members = first.compute.members("g")
    assert len(members) == 2
    per_rack = Counter(RACKS[h or ""] for h in members.values())
    assert max(per_rack.values()) == 1, per_rack
    assert won.host in members.values()


def test_a_stale_snapshot_claiming_a_full_host_conflicts_then_decides_again(
    two: tuple[SqlStore, SqlStore],
) -> None:
    """Every host but h0 is full; h0 has room for one BIG: B's snapshot shows it free,
    its claim finds the generation moved (a conflict), its next snapshot the host full."""
    first = two[0]
    scheds = (scheduler(), scheduler())
    with first.unit_of_work() as uow:
        for h in ("h1", "h2", "h3"):
            gen = uow.compute.generation(h)
            uow.compute.claim(h, gen, f"filler-{h}", Flavor("x", "x", 4, 256, 1), T0)
    for s, st in zip(scheds, two, strict=True):
        with st.unit_of_work() as uow:
            assert s.snapshot(uow).candidates["h0"].resources.used_vcpus == 0
    spec = InstanceSpec("img", BIG, ())
    won, outcomes = race(two, scheds, spec)
    assert won.host == "h0"
    assert isinstance(outcomes[0], ClaimConflict), outcomes
    assert isinstance(outcomes[1], NoValidHost) and "Capacity" in str(outcomes[1]), outcomes
    hosts = first.compute.hosts()
    assert all(h.used_vcpus <= 4 for h in hosts.values()), hosts


def test_what_a_rolled_back_unit_of_work_saw_of_its_own_claim_is_not_kept(url: str) -> None:
    """A unit of work claims h0 (generation 1 -> 2), takes a snapshot (its own claim in
    it), then rolls back; another claims h0 with another flavor (1 -> 2 as well): the next
    snapshot must show that claim, not the rolled-back one of the same generation."""
    store = store_at(url, 8)
    try:
        sched = scheduler()
        with store.unit_of_work() as uow:
            sched.snapshot(uow)
        with pytest.raises(RuntimeError), store.unit_of_work() as uow:
            uow.compute.claim("h0", 1, "gone", BIG, T0)
            assert sched.snapshot(uow).candidates["h0"].resources.used_vcpus == 3
            raise RuntimeError("rolled back")
        with store.unit_of_work() as uow:
            assert uow.compute.claim("h0", 1, "kept", TINY, T0) == 2
        with store.unit_of_work() as uow:
            seen = sched.snapshot(uow).candidates["h0"].resources
        assert (seen.used_vcpus, seen.generation) == (1, 2)
    finally:
        store.close()


def test_the_kept_snapshot_reads_only_the_hosts_that_moved(url: str) -> None:
    store = store_at(url, 8)
    try:
        sched = scheduler()
        with store.unit_of_work() as uow:
            assert uow.compute.host_changes({}, False).hosts.keys() == RACKS.keys()
            before = sched.snapshot(uow)
        place_one(store, scheduler(), InstanceSpec("img", TINY, (), hints={"host": "h3"}))
        known = {n: c.resources.generation for n, c in before.candidates.items()}
        with store.unit_of_work() as uow:
            changes = uow.compute.host_changes(known, True)
            assert changes.hosts.keys() == {"h3"} and changes.unsettled == frozenset()
            assert changes.usage == {"h3": {"LEVEL_3": (1, 256)}}
            assert sched.snapshot(uow).candidates["h3"].resources.used_vcpus == 1
    finally:
        store.close()
