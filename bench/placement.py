"""Placement at 1,000 hosts (issue 15): an inventory of 1,000 simulated hosts in 5 zones
and 50 racks, VNFs in anti-affinity groups at rack level and SAL LEVEL_1 with a rack reserve.

1. Decision latency: `domain.placement.place` on a snapshot of 1,000 hosts with the group
   rules and SAL traits (what every scheduler runs per instance), p50/p99.
2. Placements per second through the store, with 1 and 4 scheduler processes on a real
   PostgreSQL (each: snapshot, decide, claim host and group with compare-and-swap, insert
   the instance; on a conflict, again), and the violations found after (must be 0).

Targets: p99 <= 20 ms per decision at 1,000 hosts; >= 300 placements/s with 4 schedulers
on PostgreSQL; 0 violations. Prints JSON, then a one-line summary.
Usage: .venv/bin/python bench/placement.py [--placements 2000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from tests.support.postgres import PostgresServer  # noqa: E402

from _harness import free_port, percentile  # noqa: E402
from vimha.domain.affinity import GroupPolicy, Membership, PlacementGroup, domain_of  # noqa: E402
from vimha.domain.alarms import Location  # noqa: E402
from vimha.domain.compute import (  # noqa: E402
    Flavor,
    HostResources,
    Image,
    Instance,
    InstanceSpec,
    InstanceStatus,
    Sal,
)
from vimha.domain.errors import Temporary  # noqa: E402
from vimha.domain.placement import Candidate, PlacementRequest, place  # noqa: E402
from vimha.domain.sal import SalClass  # noqa: E402
from vimha.drivers.sqlstore import SqlStore  # noqa: E402
from vimha.engine.scheduler import HostView, NoValidHost, Scheduler  # noqa: E402

T0 = datetime(2026, 12, 1, tzinfo=UTC)
H = ("site", "zone", "rack", "host")
FLAVOR = Flavor("f", "small", 2, 2048, 10)
IMAGE = Image("img", "img", "active", "d", 1, "raw", "bare", {}, T0, T0)
HOSTS = 1000
GROUPS = 200  # anti-affinity at rack level, at most 2 per rack: up to 100 members each


def location(n: int) -> dict[str, str]:
    return {"site": "s1", "zone": f"z{n % 5}", "rack": f"r{n % 50}", "host": f"h{n:04d}"}


def views() -> dict[str, HostView]:
    return {f"h{n:04d}": HostView("UP", Location(tuple(location(n).items()))) for n in range(HOSTS)}


def classes() -> dict[Sal, SalClass]:
    return {
        Sal.LEVEL_1: SalClass(Sal.LEVEL_1, frozenset({"BOTH_PLANES"}), "rack"),
        Sal.LEVEL_2: SalClass(Sal.LEVEL_2),
        Sal.LEVEL_3: SalClass(Sal.LEVEL_3),
    }


def decision_latency(rounds: int) -> dict[str, float]:
    rng = random.Random(1)
    cands = []
    for n in range(HOSTS):
        used = rng.randrange(0, 40)
        res = HostResources(
            f"h{n:04d}",
            64,
            262144,
            2000,
            used,
            used * 1024,
            used * 5,
            traits=frozenset({"BOTH_PLANES"}),
            generation=n,
        )
        cands.append(Candidate(res, "UP", location(n)))
    locations = {c.name: c.location for c in cands}
    group = PlacementGroup("g", "g", GroupPolicy.ANTI_AFFINITY, "rack", 2)
    times = []
    for k in range(rounds):
        members = {f"m{j}": f"h{rng.randrange(HOSTS):04d}" for j in range(k % 60)}
        req = PlacementRequest(
            FLAVOR,
            traits=frozenset({"BOTH_PLANES"}),
            sal="LEVEL_1",
            memberships=(Membership(group, members),),
            hierarchy=H,
        )
        t0 = time.perf_counter()
        decision = place(req, cands, locations, 3, rng)
        times.append(time.perf_counter() - t0)
        assert decision.host is not None
    return {
        "rounds": rounds,
        "p50_ms": round(percentile(times, 50) * 1000, 2),
        "p99_ms": round(percentile(times, 99) * 1000, 2),
    }


def _worker(url: str, worker: int, count: int, start: Any, results: Any) -> None:
    store = SqlStore(url)
    scheduler = Scheduler(views, H, classes())
    rng = random.Random(worker)
    placed = conflicts = refused = 0
    start.wait()
    t0 = time.monotonic()
    try:
        for _ in range(count):
            group = f"g{rng.randrange(GROUPS)}"
            instance_id = str(uuid.uuid4())
            spec = InstanceSpec("img", FLAVOR, (), groups=(group,), sal=Sal.LEVEL_1)
            for _attempt in range(20):
                try:
                    with store.unit_of_work() as uow:
                        snap = scheduler.snapshot(uow)
                        done = scheduler.place(uow, snap, instance_id, spec, IMAGE, {}, T0)
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
                    refused += 1
                    break
                except Temporary:
                    conflicts += 1
    finally:
        store.close()
        results.put((placed, conflicts, refused, time.monotonic() - t0))


def throughput(url: str, schedulers: int, total: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(schedulers), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(url, w, total // schedulers, start, results))
        for w in range(schedulers)
    ]
    for p in procs:
        p.start()
    outs = [results.get(timeout=1200) for _ in procs]
    for p in procs:
        p.join(30)
    placed = sum(o[0] for o in outs)
    wall = max(o[3] for o in outs)
    return {
        "schedulers": schedulers,
        "placed": placed,
        "conflicts_retried": sum(o[1] for o in outs),
        "refused": sum(o[2] for o in outs),
        "seconds": round(wall, 2),
        "per_second": round(placed / wall, 1),
    }


def seed(url: str) -> SqlStore:
    store = SqlStore(url)
    store.upgrade()
    with store.unit_of_work() as uow:
        for n in range(HOSTS):
            uow.compute.upsert_host(
                HostResources(f"h{n:04d}", 64, 262144, 2000, traits=frozenset({"BOTH_PLANES"})),
                None,
                T0,
            )
        for g in range(GROUPS):
            uow.compute.add_group(
                PlacementGroup(f"g{g}", f"g{g}", GroupPolicy.ANTI_AFFINITY, "rack", 2), T0
            )
    return store


def violations(store: SqlStore) -> int:
    hosts = store.compute.hosts()
    bad = sum(1 for h in hosts.values() if h.free_vcpus < 0 or h.free_ram_mib < 0)
    for g in range(GROUPS):
        members = store.compute.members(f"g{g}")
        per_rack = Counter(domain_of(location(int(h[1:])), "rack", H) for h in members.values())
        bad += sum(1 for c in per_rack.values() if c > 2)
    return bad


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--placements", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()
    result: dict[str, Any] = {"hosts": HOSTS, "decision": decision_latency(args.rounds)}
    base = Path(tempfile.mkdtemp(prefix="vimha-bench-placement-"))
    server = PostgresServer(base, free_port())
    server.start()
    try:
        runs = []
        for schedulers in (1, 4):
            store = seed(server.new_database())
            runs.append(throughput(str(store.url), schedulers, args.placements))
            runs[-1]["violations"] = violations(store)
            store.close()
        result["postgresql"] = runs
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(result, indent=2))
    d, one, four = result["decision"], runs[0], runs[1]
    print(
        f"placement at {HOSTS} hosts: decision p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms "
        f"(target <= 20); PostgreSQL {one['per_second']}/s with 1 scheduler, "
        f"{four['per_second']}/s with 4 (target >= 300), "
        f"{four['conflicts_retried']} conflicts retried, "
        f"{one['violations'] + four['violations']} violations"
    )


if __name__ == "__main__":
    main()
