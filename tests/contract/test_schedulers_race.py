"""VNF-10: schedulers in several processes against one real PostgreSQL (and SQLite) never
race: every claim re-checks capacity and the hard rules of the instance's groups inside its
transaction, guarded by the host's and the group's generations. Four processes place
members of the same anti-affinity groups at once; afterwards no host is over capacity and
no group has more members in a domain than its rule allows."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from vimha.domain.affinity import GroupPolicy, PlacementGroup, domain_of
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
from vimha.domain.errors import Temporary
from vimha.domain.sal import SalClass
from vimha.drivers.sqlstore import SqlStore
from vimha.engine.scheduler import HostView, NoValidHost, Scheduler

T0 = datetime(2026, 12, 1, tzinfo=UTC)
TINY = Flavor("f", "tiny", 1, 256, 1)
HIERARCHY = ("site", "zone", "rack", "host")
IMAGE = Image("img", "img", "active", "d", 1, "raw", "bare", {}, T0, T0)


def views() -> dict[str, HostView]:
    out = {}
    for r in range(4):
        for h in range(3):
            name = f"r{r}h{h}"
            out[name] = HostView(
                "UP", Location((("site", "s"), ("zone", "z"), ("rack", f"r{r}"), ("host", name)))
            )
    return out


def _scheduler_process(
    url: str, worker: int, count: int, groups: list[str], start: Any, results: Any
) -> None:
    """Place `count` instances, in the groups in turn, as a controller's scheduler does
    (snapshot, decide, claim with compare-and-swap; on a conflict, again). The four
    processes start together (a barrier): their imports would stagger them otherwise."""
    store = SqlStore(url)
    start.wait()
    # Drawn among the 3 best whatever their weights: schedulers deciding at once then pick
    # different hosts of one domain, the race the group rules must survive.
    scheduler = Scheduler(views, HIERARCHY, {s: SalClass(s) for s in Sal}, tie=1.0)
    placed = 0
    try:
        for k in range(count):
            group = groups[(k + worker) % len(groups)]  # each group asked for 16 in all
            instance_id = str(uuid.uuid4())
            spec = InstanceSpec("img", TINY, (), groups=(group,))
            deadline = time.monotonic() + 120  # a conflict means another one placed: retry
            while time.monotonic() < deadline:
                try:
                    with store.unit_of_work() as uow:
                        snap = scheduler.snapshot(uow)
                        done = scheduler.place(uow, snap, instance_id, spec, IMAGE, {}, T0)
                        time.sleep(0.01)  # a slow scheduler: the others decide meanwhile
                        uow.compute.add_instance(
                            Instance(
                                instance_id,
                                instance_id[:8],
                                spec,
                                InstanceStatus.BUILDING,
                                T0,
                                T0,
                                host=done.host,
                            )
                        )
                    placed += 1
                    break
                except NoValidHost:
                    break
                except Temporary:
                    continue
    finally:
        store.close()
        results.put(placed)


def test_four_schedulers_never_break_a_rule_nor_over_commit(url: str) -> None:
    store = SqlStore(url)
    store.upgrade()
    try:
        with store.unit_of_work() as uow:
            for name in views():
                # 4 vCPUs: the most the rules allow on one host (g0 2, g1 1, g2 1), so the
                # rules are the only limit (with 3, g0 and g1 could fill a host g2 needs)
                uow.compute.upsert_host(HostResources(name, 4, 4096, 100, cpu_ratio=1.0), None, T0)
            groups = []
            for n, (level, limit) in enumerate((("rack", 2), ("rack", 1), ("host", 1))):
                g = PlacementGroup(f"g{n}", f"g{n}", GroupPolicy.ANTI_AFFINITY, level, limit)
                uow.compute.add_group(g, T0)
                groups.append(g)
        ctx = multiprocessing.get_context("spawn")
        start, results = ctx.Barrier(4), ctx.Queue()
        procs = [
            ctx.Process(
                target=_scheduler_process, args=(url, w, 12, [g.id for g in groups], start, results)
            )
            for w in range(4)
        ]
        for p in procs:
            p.start()
        placed = [results.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(30)
        assert sum(placed) == 24
        hosts = store.compute.hosts()
        for h in hosts.values():
            assert h.used_vcpus <= 4, h
        location = {n: dict(v.location.levels) for n, v in views().items()}
        for g in groups:
            members = store.compute.members(g.id)
            per_domain = Counter(
                domain_of(location[host], g.level, HIERARCHY) for host in members.values()
            )
            assert max(per_domain.values(), default=0) <= (g.max_per_domain or 1), (g, per_domain)
        # The rules were the limit, not chance: every group is full at its level.
        assert len(store.compute.members("g1")) == 4 and len(store.compute.members("g2")) == 12
    finally:
        store.close()
