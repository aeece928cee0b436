"""Migrations and maintenance sessions in the Store port (ports/maintenance.py), on SQLite and
on a real PostgreSQL: one active migration per instance, versions compared, inputs kept in
order, hosts taken out, and a member being migrated holding its destination in its groups."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer
from vimha.domain.affinity import GroupPolicy, PlacementGroup
from vimha.domain.compute import Flavor, HostResources, Instance, InstanceSpec, InstanceStatus
from vimha.domain.errors import Conflict, NotFound
from vimha.domain.maintenance import Action, HostMode, Input, InputKind, Phase, Session
from vimha.domain.migration import Kind, MigrationRecord, State
from vimha.drivers.sqlstore import SqlStore
from vimha.ports.compute import ClaimConflict

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TINY = Flavor("f-1", "tiny", 1, 512, 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.new_database()
    s = SqlStore(url)
    s.upgrade()
    try:
        yield s
    finally:
        s.close()


def record(mid: str, iid: str = "i-1", state: State = State.PREPARING) -> MigrationRecord:
    return MigrationRecord(
        mid, iid, "vfw-fw-0", "v-1", Kind.COLD, "h1", "h2", state, "policy cold", "ops",
        T0, T0, hypervisor="process", session_id="s-1",
    )  # fmt: skip


def test_one_active_migration_per_instance(store: SqlStore) -> None:
    with store.unit_of_work() as uow:
        uow.maintenance.add_migration(record("m-1"))
    with pytest.raises(Conflict, match="being migrated already"), store.unit_of_work() as uow:
        uow.maintenance.add_migration(record("m-2"))
    with store.unit_of_work() as uow:
        old = uow.maintenance.migration_for_update("m-1")
        done = old.evolve(T0 + timedelta(seconds=1), state=State.COMPLETED, interruption_ms=412.0)
        uow.maintenance.update_migration(old, done)
    with pytest.raises(ClaimConflict), store.unit_of_work() as uow:
        uow.maintenance.update_migration(old, done)  # from a version that moved
    with store.unit_of_work() as uow:
        assert uow.maintenance.active_migration("i-1") is None
        later = T0 + timedelta(seconds=2)
        uow.maintenance.add_migration(
            replace(record("m-2", state=State.READY), created_at=later, updated_at=later)
        )
    assert store.maintenance.migration("m-1") == done
    assert [m.id for m in store.maintenance.migrations(instance_id="i-1")] == ["m-2", "m-1"]
    assert [m.id for m in store.maintenance.migrations(active=True)] == ["m-2"]
    assert len(store.maintenance.migrations(session_id="s-1")) == 2
    with pytest.raises(NotFound):
        store.maintenance.migration("m-9")


def session() -> Session:
    return Session("s-1", ("h1", "h2"), T0, Phase.MAINTENANCE, "ops", T0, T0, vnfs=("v-1",))


def test_a_session_is_saved_from_its_version_and_inputs_kept_in_order(store: SqlStore) -> None:
    with store.unit_of_work() as uow:
        uow.maintenance.add_session(session())
    s = store.maintenance.session("s-1")
    assert s == session()
    with store.unit_of_work() as uow:
        saved = uow.maintenance.save_session(s.version, replace(s, state=Phase.SCALE_IN))
    assert saved.version == 1 and store.maintenance.session("s-1") == saved
    with pytest.raises(ClaimConflict), store.unit_of_work() as uow:
        uow.maintenance.save_session(s.version, replace(s, state=Phase.ABORTED))
    with store.unit_of_work() as uow:
        acts = {"i-1": Action.EVICTION}
        uow.maintenance.add_input(
            Input(0, "s-1", InputKind.ANSWER, T0, "vnfm", "v-1", None, "ACK_MAINTENANCE", acts)
        )
        uow.maintenance.add_input(Input(0, "s-1", InputKind.ABORT, T0, "ops"))
    inputs = store.maintenance.inputs("s-1")
    assert [i.kind for i in inputs] == [InputKind.ANSWER, InputKind.ABORT]
    assert inputs[0].instance_actions == {"i-1": Action.EVICTION}
    assert inputs[0].seq < inputs[1].seq
    assert [x.id for x in store.maintenance.sessions(active=True)] == ["s-1"]
    with store.unit_of_work() as uow:
        uow.maintenance.save_session(1, replace(saved, state=Phase.MAINTENANCE_COMPLETE))
    assert store.maintenance.sessions(active=True) == []
    with pytest.raises(NotFound):
        store.maintenance.session("s-9")


def test_hosts_taken_out_and_migration_state_dropped(store: SqlStore) -> None:
    with store.unit_of_work() as uow:
        uow.maintenance.set_host_mode("h1", HostMode.DRAINING, "s-1", T0)
        uow.maintenance.set_host_mode("h2", HostMode.MAINTENANCE, "s-1", T0)
        uow.maintenance.set_host_mode("h1", HostMode.MAINTENANCE, "s-1", T0)
    assert store.maintenance.host_modes() == {
        "h1": (HostMode.MAINTENANCE, "s-1"),
        "h2": (HostMode.MAINTENANCE, "s-1"),
    }
    with store.unit_of_work() as uow:
        uow.maintenance.set_host_mode("h2", None, "s-1", T0)
    assert list(store.maintenance.host_modes()) == ["h1"]
    store.compute.save_image_data("blob", iter([b"disk"]))
    with store.unit_of_work() as uow:
        uow.maintenance.drop_blobs(["blob"])
    with pytest.raises(NotFound):
        list(store.compute.image_data("blob"))


def test_a_member_being_migrated_holds_both_hosts_in_its_groups(store: SqlStore) -> None:
    group = PlacementGroup("g-1", "apart", GroupPolicy.ANTI_AFFINITY, "host", None, None)
    spec = InstanceSpec("img", TINY, (), groups=("g-1",))
    with store.unit_of_work() as uow:
        uow.compute.upsert_host(HostResources("h1", 4, 2048, 100), None, T0)
        uow.compute.add_group(group, T0)
        uow.compute.add_instance(
            Instance("i-1", "a", spec, InstanceStatus.ACTIVE, T0, T0, host="h1")
        )
        uow.compute.join_group("g-1", "i-1", 0)
        uow.maintenance.add_migration(record("m-1"))
    with store.unit_of_work() as uow:
        _, members = uow.compute.memberships(["g-1"])["g-1"]
    assert members == {"i-1": "h1", "m-1": "h2"}
    assert store.compute.members("g-1") == {"i-1": "h1"}  # the API shows members only
