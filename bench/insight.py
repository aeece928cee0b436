"""Insight's decisions at scale (issue 20): what the singleton holder spends per pass.

1. A correlation pass (`domain.correlation.correlate` with the shipped rules) over a snapshot
   of N alarms on 1,000 hosts in 50 racks: host failures with their instances' alarms,
   crashes scattered and on a few hosts (latent hardware), link faults; p50/p99 of a pass
   that changes nothing (the steady state) and of the first one.
2. HA metrics of 500 instances over 30 days (`domain.metrics`: a journal of 20 changes per
   instance, host failures): the time the API spends computing `GET /vim/v1/metrics`.

Prints JSON, then a one-line summary. Usage: .venv/bin/python bench/insight.py [--alarms 5000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from tests.support.traces import (  # noqa: E402
    Trace,
    at,
    cleared,
    host_failure,
    instance_failure,
    link_down,
)

from _harness import percentile  # noqa: E402
from vimha.config import load_rules  # noqa: E402
from vimha.domain import metrics as m  # noqa: E402
from vimha.domain.alarms import Location  # noqa: E402
from vimha.domain.correlation import correlate  # noqa: E402
from vimha.domain.incidents import StateSeen  # noqa: E402

HOSTS = [f"h{n:04d}" for n in range(1000)]


def located(ev, host: str):  # type: ignore[no-untyped-def]
    """The traces' events moved onto a host of the big inventory (50 racks)."""
    from dataclasses import replace

    rack = f"r{int(host[1:]) % 50:02d}"
    levels = (("site", "s1"), ("zone", f"z{int(rack[1:]) % 5}"), ("rack", rack), ("host", host))
    extra = tuple(lv for lv in ev.location.levels if lv[0] in ("instance", "component"))
    obj = ev.managed_object_id
    if ev.vim_level_resource_type == "host":
        obj = host
    elif ev.vim_level_resource_type == "link":
        obj = f"{host}/{obj.split('/', 1)[1]}"
    return replace(
        ev, managed_object_id=obj, resource_id=ev.resource_id, location=Location(levels + extra)
    )


def correlation(n_alarms: int, rounds: int) -> dict[str, object]:
    rng = random.Random(20)
    trace = Trace(load_rules(None, ("site", "zone", "rack", "host")))
    t = 0.0
    while len(trace.alarms) < n_alarms:
        t += 0.5
        roll = rng.random()
        host = rng.choice(HOSTS)
        if roll < 0.05:  # a host failure and its instances
            trace.event(located(host_failure("cmp-1", t), host))
            for i in range(8):
                trace.event(
                    located(
                        instance_failure(
                            "cmp-1", f"{host}-i{i}", t + 0.3, "INSTANCE_STATE_UNKNOWN"
                        ),
                        host,
                    )
                )
        elif roll < 0.15:  # a host with latent hardware
            for i in range(3):
                trace.event(located(instance_failure("cmp-1", f"{host}-i{i}", t + i), host))
        elif roll < 0.6:  # a crash, recovered
            ev = located(instance_failure("cmp-1", f"{host}-i{rng.randrange(8)}", t), host)
            trace.event(ev)
            trace.event(cleared(ev, t + 1), t + 1)
        else:
            ev = located(link_down("cmp-1", rng.choice(["mgmt", "storage"]), t), host)
            trace.event(ev)
            trace.event(cleared(ev, t + 2), t + 2)
    snapshot = list(trace.alarms.values())
    rules = trace.rules
    now = at(t + 10)
    started = time.perf_counter()
    first = correlate(snapshot, rules, now)
    first_ms = (time.perf_counter() - started) * 1000
    trace.settle(t + 10)
    snapshot = list(trace.alarms.values())
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        assert correlate(snapshot, rules, now) == []
        times.append((time.perf_counter() - started) * 1000)
    return {
        "alarms": len(snapshot),
        "first_pass_ms": round(first_ms, 1),
        "first_pass_actions": len(first),
        "steady_pass_ms_p50": round(percentile(times, 50), 1),
        "steady_pass_ms_p99": round(percentile(times, 99), 1),
        "suspicions": sum(1 for a in snapshot if a.fault_type.startswith("SUSPECTED")),
    }


def metrics_cost(instances: int) -> dict[str, object]:
    rng = random.Random(4)
    now = at(30 * 86400)
    records = []
    rows_total = 0
    started = time.perf_counter()
    for n in range(instances):
        t = 0.0
        rows = [StateSeen(0, f"i{n}", at(0), "ACTIVE", "h1", 1, f"vm{n}", "v", "vdu", "LEVEL_1")]
        for _ in range(10):
            t += rng.uniform(3600, 200000)
            rows.append(StateSeen(0, f"i{n}", at(t), "ERROR", "h1", 1))
            rows.append(StateSeen(0, f"i{n}", at(t + rng.uniform(0.5, 30)), "ACTIVE", "h1", 1))
        rows_total += len(rows)
        record = m.instance_record(rows, [], {}, {}, now)
        records.append(record)
        for name, span in m.WINDOWS:
            m.figures(record, name, span, now)
    per_instance_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    vdus = {f"vdu{k}": records[k::10] for k in range(10)}
    service = m.service_record(vdus, now)
    m.figures(service, "30d", timedelta(days=30), now)
    service_ms = (time.perf_counter() - started) * 1000
    return {
        "instances": instances,
        "journal_rows": rows_total,
        "instances_figures_ms": round(per_instance_ms, 1),
        "vnf_service_ms": round(service_ms, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alarms", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--instances", type=int, default=500)
    args = ap.parse_args()
    result = {
        "correlation": correlation(args.alarms, args.rounds),
        "metrics": metrics_cost(args.instances),
    }
    print(json.dumps(result, indent=2))
    c, mm = result["correlation"], result["metrics"]
    print(
        f"correlation: {c['alarms']} alarms, pass p50 {c['steady_pass_ms_p50']} ms "  # type: ignore[index]
        f"p99 {c['steady_pass_ms_p99']} ms; metrics: {mm['instances']} instances x 30 d "  # type: ignore[index]
        f"in {mm['instances_figures_ms']} ms"  # type: ignore[index]
    )


if __name__ == "__main__":
    main()
