"""One contract, two coordination drivers: a real 3-member etcd cluster on loopback, and the
single-host driver of the embedded default."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.support.etcd import EtcdCluster
from vimha.domain.errors import InvalidInput
from vimha.drivers.clock import SystemClock
from vimha.drivers.coordination import open_coordination
from vimha.ports.coordination import Change, Coordination, CoordinationUnavailable, LeaseLost


def unique(name: str) -> str:
    return f"/test/{name}/{free_port()}"


async def test_create_is_exclusive_and_replace_is_compare_and_swap(coord: Coordination) -> None:
    key = unique("leader")
    results = await asyncio.gather(*(coord.create(key, f"c{i}") for i in range(5)))
    assert sorted(results) == [False] * 4 + [True]
    entry = await coord.get(key)
    assert entry is not None and entry.value in {f"c{i}" for i in range(5)}
    assert await coord.replace(key, "new", entry.revision)
    assert not await coord.replace(key, "stale", entry.revision)  # changed since
    now = await coord.get(key)
    assert now is not None and now.value == "new" and now.revision > entry.revision
    assert not await coord.delete(key, entry.revision)
    assert await coord.delete(key, now.revision)
    assert await coord.get(key) is None and not await coord.delete(key)


async def test_a_revoked_lease_takes_its_keys(coord: Coordination) -> None:
    key = unique("held")
    lease = await coord.grant(5)
    assert await coord.create(key, "me", lease)
    assert (await coord.get(key)) is not None
    await coord.revoke(lease)
    assert await coord.get(key) is None
    with pytest.raises(LeaseLost):
        await coord.keepalive(lease)


async def test_an_expired_lease_takes_its_keys_unless_kept_alive(coord: Coordination) -> None:
    kept, lapsed = unique("kept"), unique("lapsed")
    lease_kept = await coord.grant(1)
    lease_lapsed = await coord.grant(1)
    await coord.create(kept, "x", lease_kept)
    await coord.create(lapsed, "x", lease_lapsed)
    for _ in range(8):
        await asyncio.sleep(0.4)
        assert await coord.keepalive(lease_kept) >= 1
    assert await coord.get(kept) is not None
    assert await coord.get(lapsed) is None
    with pytest.raises(LeaseLost):
        await coord.keepalive(lease_lapsed)


async def test_increment_is_strictly_increasing_across_callers(coord: Coordination) -> None:
    key = unique("epoch")
    values = await asyncio.gather(*(coord.increment(key) for _ in range(10)))
    assert sorted(values) == list(range(1, 11))


async def test_watch_sees_every_change_in_order(coord: Coordination) -> None:
    prefix = unique("watched")
    await coord.create(prefix + "-marker", "m")  # the revision to watch from
    marker = await coord.get(prefix + "-marker")
    assert marker is not None
    seen: list[Change] = []

    async def follow() -> None:
        async for change in coord.watch(prefix + "/", marker.revision):
            seen.append(change)
            if len(seen) == 3:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.2)
    await coord.create(prefix + "/a", "1")
    a = await coord.get(prefix + "/a")
    assert a is not None
    await coord.replace(prefix + "/a", "2", a.revision)
    await coord.delete(prefix + "/a")
    await asyncio.wait_for(task, 10)
    assert [(c.kind, c.key, c.value) for c in seen] == [
        ("PUT", prefix + "/a", "1"),
        ("PUT", prefix + "/a", "2"),
        ("DELETE", prefix + "/a", ""),
    ]
    assert seen[0].revision < seen[1].revision < seen[2].revision


async def test_etcd_survives_the_loss_of_a_member(etcd: EtcdCluster) -> None:
    coord = open_coordination(etcd.url, SystemClock())
    try:
        key = unique("survivor")
        assert await coord.create(key, "v")
        etcd.kill_member(0)  # SIGKILL the member the client talks to first
        try:
            assert (await coord.get(key)) is not None
            assert await coord.increment(unique("after")) == 1
        finally:
            etcd.start_member(0)
    finally:
        await coord.close()
    assert coord.characteristics.distributed


def test_urls_choose_the_driver() -> None:
    assert not open_coordination("local://", SystemClock()).characteristics.distributed
    assert open_coordination("etcd://a:1,b:2", SystemClock()).characteristics.distributed
    for bad in ("zookeeper://x:1", "etcd://", "etcd://nohostport"):
        with pytest.raises(InvalidInput):
            open_coordination(bad, SystemClock())


async def test_list_and_put(coord: Coordination) -> None:
    prefix = unique("listed") + "/"
    first = await coord.put(prefix + "b", "2")
    await coord.put(prefix + "a", "1")
    second = await coord.put(prefix + "a", "one")
    assert second > first
    revision, entries = await coord.list(prefix)
    assert revision >= second
    assert [(e.key, e.value) for e in entries] == [(prefix + "a", "one"), (prefix + "b", "2")]
    assert (await coord.list(prefix + "none/"))[1] == []


async def test_two_processes_share_a_coordination_file(tmp_path: Path) -> None:
    """The single-host file driver: a lease granted by one process holds a key another sees."""
    url = f"local://{tmp_path}/coord.db"
    script = (
        "import asyncio,sys\n"
        "from vimha.drivers.coordination import open_coordination\n"
        "from vimha.drivers.clock import SystemClock\n"
        "async def main():\n"
        f"    c = open_coordination({url!r}, SystemClock())\n"
        "    lease = await c.grant(0.5)\n"
        "    assert await c.create('/leader', 'other', lease)\n"
        "    print('held', flush=True)\n"
        "    await asyncio.sleep(30)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    coord = open_coordination(url, SystemClock())
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"held"
        entry = await coord.get("/leader")
        assert entry is not None and entry.value == "other"
        assert not await coord.create("/leader", "me")
        proc.kill()  # its lease is no longer renewed (it never was): it lapses
        await proc.wait()
        await asyncio.sleep(0.7)
        assert await coord.get("/leader") is None
        assert await coord.create("/leader", "me")
        assert not coord.characteristics.distributed
    finally:
        await coord.close()


async def test_a_file_watcher_behind_the_kept_changes_is_told_to_list_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a watcher missed is gone once the changes are trimmed: it must list again (as
    after etcd's "compacted"), not go on with a view that lacks them."""
    from vimha.drivers import coord_file

    monkeypatch.setattr(coord_file, "KEEP_CHANGES", 10)
    coord = coord_file.FileCoordination(tmp_path / "c.db")
    try:
        await coord.put("/k/gone", "v")
        for i in range(1000):  # revision 1000 trims all but the last 10
            await coord.put("/k/n", str(i))
        changes = coord.watch("/k/", 0)
        with pytest.raises(CoordinationUnavailable, match="compacted"):
            await anext(changes)
        recent = coord.watch("/k/", 995)
        assert (await anext(recent)).revision == 996
    finally:
        await coord.close()


async def test_an_etcd_watcher_behind_a_compaction_is_told_to_list_again(
    etcd: EtcdCluster,
) -> None:
    """etcd cancels a watch from a compacted revision and then says nothing more on its
    stream: a watcher must not wait on it forever with a stale view."""
    import httpx

    coord = open_coordination(etcd.url, SystemClock())
    key = unique("compacted")
    try:
        first = await coord.put(key, "1")
        last = await coord.put(key, "2")
        endpoint = "http://" + etcd.url.removeprefix("etcd://").split(",")[0]
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{endpoint}/v3/kv/compaction", json={"revision": last})
            r.raise_for_status()
        with pytest.raises(CoordinationUnavailable, match="compact"):
            async with asyncio.timeout(5):
                await anext(coord.watch(key, first - 1))
    finally:
        await coord.close()
