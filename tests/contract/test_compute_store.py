"""The compute part of the Store port, against SQLite and a real PostgreSQL: the catalog,
instances with versions, addresses unique per network, and claims that never over-commit a
host, even from 4 processes claiming at once."""

from __future__ import annotations

import multiprocessing
import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from vimha.domain.compute import (
    Flavor,
    HostResources,
    Image,
    Instance,
    InstanceAction,
    InstanceSpec,
    InstanceStatus,
    Network,
    Port,
    Sal,
    Vnf,
)
from vimha.domain.errors import Conflict, NotFound, Temporary
from vimha.drivers.sqlstore import SqlStore
from vimha.ports.compute import ClaimConflict

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TINY = Flavor("f-1", "tiny", 1, 512, 1)


@pytest.fixture
def store(url: str) -> Iterator[SqlStore]:
    s = SqlStore(url)
    s.upgrade()
    try:
        yield s
    finally:
        s.close()


def add_host(store: SqlStore, name: str, vcpus: int = 4, ram: int = 2048) -> None:
    with store.unit_of_work() as uow:
        uow.compute.upsert_host(
            HostResources(name, vcpus, ram, 100, cpu_ratio=1.0), {"console": "x:1"}, T0
        )


def instance(i: str, host: str | None = "h1") -> Instance:
    spec = InstanceSpec("img", TINY, (), vnf_id="v-1", vdu="vdu")
    return Instance(i, f"vnf-vdu-{i}", spec, InstanceStatus.BUILDING, T0, T0, host=host)


def test_catalog_round_trip(store: SqlStore) -> None:
    with store.unit_of_work() as uow:
        uow.compute.add_flavor(replace(TINY, extra_specs={"hw:watchdog_action": "reset"}), T0)
        uow.compute.add_image(
            Image(
                "im-1",
                "guest",
                "queued",
                None,
                0,
                "raw",
                "bare",
                {"hypervisor_type": "process"},
                T0,
                T0,
            )
        )
        uow.compute.add_network(
            Network("n-1", "vnf-a", "s-1", "10.0.0.0/24", "10.0.0.1", "10.0.0.2", "10.0.0.254", T0)
        )
    assert store.compute.flavor("tiny").extra_specs == {"hw:watchdog_action": "reset"}
    assert store.compute.flavor("f-1").name == "tiny"
    assert store.compute.image("guest").properties == {"hypervisor_type": "process"}
    assert store.compute.network("s-1").name == "vnf-a"
    with pytest.raises(Conflict, match="already exists"), store.unit_of_work() as uow:
        uow.compute.add_flavor(replace(TINY, id="f-2"), T0)
    with pytest.raises(NotFound):
        store.compute.flavor("nope")


def test_image_data_is_content_addressed(store: SqlStore) -> None:
    data = [b"a" * 1000, b"b" * 10]
    assert store.compute.save_image_data("d1", iter(data)) == 2
    assert store.compute.save_image_data("d1", iter([b"other"])) == 2  # present: kept
    assert b"".join(store.compute.image_data("d1")) == b"".join(data)
    with pytest.raises(NotFound):
        list(store.compute.image_data("d2"))


def test_an_address_is_taken_once_per_network(store: SqlStore) -> None:
    with store.unit_of_work() as uow:
        uow.compute.add_network(
            Network("n-1", "vnf-a", "s-1", "10.0.0.0/24", None, "10.0.0.1", "10.0.0.254", T0)
        )
        uow.compute.add_port(Port("p-1", "n-1", "fa:16:3e:00:00:01", "10.0.0.1"), True, T0)
    with pytest.raises(Temporary), store.unit_of_work() as uow:
        uow.compute.add_port(Port("p-2", "n-1", "fa:16:3e:00:00:02", "10.0.0.1"), True, T0)
    with store.unit_of_work() as uow:
        assert uow.compute.used_ips("n-1") == {"10.0.0.1"}
        uow.compute.bind_port("p-1", "i-1")
    with pytest.raises(Conflict, match="in use by instance i-1"), store.unit_of_work() as uow:
        uow.compute.bind_port("p-1", "i-2")
    with store.unit_of_work() as uow:
        assert [p.id for p in uow.compute.release_ports("i-1")] == ["p-1"]
    assert store.compute.ports() == []  # it was made for the instance: deleted with it


def test_instances_update_only_from_the_version_read(store: SqlStore) -> None:
    first = instance("i-1")
    with store.unit_of_work() as uow:
        uow.compute.add_instance(first)
        uow.compute.add_action(InstanceAction("i-1", "create", "r-1", "admin", T0))
    later = first.evolve(T0 + timedelta(seconds=1), status=InstanceStatus.ACTIVE)
    with store.unit_of_work() as uow:
        uow.compute.update_instance(first, later)
        uow.compute.finish_action("i-1", None, "success", "guest running", T0)
    with pytest.raises(ClaimConflict), store.unit_of_work() as uow:
        uow.compute.update_instance(first, later)
    got = store.compute.instance("i-1")
    assert got.status is InstanceStatus.ACTIVE and got.version == 2
    marked = store.compute.marker()
    with store.unit_of_work() as uow:  # the dashboard's marker moves with every change
        uow.compute.update_instance(got, got.evolve(T0 + timedelta(seconds=2), incarnation=2))
    assert store.compute.marker() != marked
    assert got.spec == first.spec
    assert [(a.action, a.result) for a in store.compute.actions("i-1")] == [("create", "success")]
    assert [i.id for i in store.compute.instances(host="h1")] == ["i-1"]


def test_a_client_token_creates_one_vnf(store: SqlStore) -> None:
    vnf = Vnf("v-1", "vfw", Sal.LEVEL_1, 100, {}, T0, "token-1")
    with store.unit_of_work() as uow:
        uow.compute.add_vnf(vnf)
    used = "clientToken token-1 was used already, by VNF vfw"
    with pytest.raises(Conflict, match=used), store.unit_of_work() as uow:
        uow.compute.add_vnf(replace(vnf, id="v-2"))


def test_a_claim_is_a_compare_and_swap_on_the_generation(store: SqlStore) -> None:
    add_host(store, "h1", vcpus=2)
    gen = store.compute.hosts()["h1"].generation
    with store.unit_of_work() as uow:
        assert uow.compute.claim("h1", gen, "i-1", TINY, T0) == gen + 1
    with pytest.raises(ClaimConflict), store.unit_of_work() as uow:
        uow.compute.claim("h1", gen, "i-2", TINY, T0)
    with store.unit_of_work() as uow:
        uow.compute.claim("h1", gen + 1, "i-2", TINY, T0)
    with pytest.raises(Conflict, match="no room"), store.unit_of_work() as uow:
        uow.compute.claim("h1", gen + 2, "i-3", TINY, T0)
    h = store.compute.hosts()["h1"]
    assert (h.used_vcpus, h.used_ram_mib) == (2, 1024)
    with store.unit_of_work() as uow:
        assert uow.compute.release("i-1") == ("h1", gen + 3)
        assert uow.compute.release("i-1") is None
    assert store.compute.hosts()["h1"].used_vcpus == 1


def test_console_tokens_are_used_once_and_expire(store: SqlStore) -> None:
    with store.unit_of_work() as uow:
        uow.compute.add_console_token("h-1", "i-1", T0, T0 + timedelta(seconds=60))
        uow.compute.add_console_token("h-2", "i-1", T0, T0 + timedelta(seconds=1))
    with store.unit_of_work() as uow:
        assert uow.compute.take_console_token("h-1", T0) == "i-1"
    for used_or_expired in ("h-1", "h-2", "forged"):
        with pytest.raises(NotFound), store.unit_of_work() as uow:
            uow.compute.take_console_token(used_or_expired, T0 + timedelta(seconds=5))


def _claimer(url: str, worker: int, count: int) -> int:
    """Claim `count` instances on random hosts with room, deciding on a snapshot each time
    (as schedulers do); a conflict decides again. Returns how many it placed."""
    store = SqlStore(url)
    rng = random.Random(worker)
    placed = 0
    try:
        for n in range(count):
            while True:
                hosts = [h for h in store.compute.hosts().values() if h.fits(TINY) is None]
                if not hosts:
                    return placed
                h = rng.choice(hosts)
                try:
                    with store.unit_of_work() as uow:
                        uow.compute.claim(h.host, h.generation, f"w{worker}-{n}", TINY, T0)
                except (ClaimConflict, Conflict, Temporary):
                    continue
                placed += 1
                break
    finally:
        store.close()
    return placed


def test_four_processes_claiming_at_once_never_over_commit(store: SqlStore, url: str) -> None:
    for name in ("h1", "h2", "h3"):
        add_host(store, name, vcpus=10, ram=100_000)  # room for 30 tiny instances in all
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        placed = pool.starmap(_claimer, [(url, w, 12) for w in range(4)])
    hosts = store.compute.hosts()
    assert sum(placed) == 30  # 48 asked, 30 fit
    for h in hosts.values():
        assert h.used_vcpus == 10, h
