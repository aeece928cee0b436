"""Benchmark: faults in the cluster groups of issue 5, with a client going through the load
balancer (HAProxy run by a vimha agent) without pause: a MariaDB Galera cluster of three
(`--engine galera`: INSERTs through the write frontend, which sends to one member at a time)
or a RabbitMQ cluster of three (`--engine rabbitmq`: publishes to a quorum queue with
publisher confirms). Three real agents, each in a network namespace of its own (root).

    python bench/cluster_switchover.py --engine galera|rabbitmq [--rounds 9]

Each round faults the member the client's traffic goes to (Galera: the write frontend's
member; RabbitMQ: the member the balancer put the publisher's connection on), in turn with
kill -9, SIGSTOP, and its link down (a partition; the link comes back after the round).
Measured: fault -> writes acknowledged again (the end of the longest stall of
acknowledgements after the fault), failed client operations, and, at the end, acknowledged
writes missing from the cluster (every member, for Galera; the queue, for RabbitMQ).
Prints JSON, then a one-line summary. Targets (issue 5): p99 <= 2 s for Galera, <= 3 s for
RabbitMQ; nothing acknowledged lost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' harness

from tests.support.agent_group import AgentGroup, until
from tests.support.cluster_clients import (
    MysqlWriter,
    RabbitPublisher,
    SteadyClient,
    busy_member,
    drained,
    mysql_query,
    stored_ids,
)

from _harness import free_port, percentile
from vimha.agent.balancer import socket_path
from vimha.cloud.netns import Netns

NODES = ("c-1", "c-2", "c-3")
TARGET_MS = {"galera": 2000, "rabbitmq": 3000}
TICK = 2.0  # RabbitMQ's net_ticktime (--tick-time)
SUSPECT = 1.0  # Galera's evs.suspect_timeout (--suspect-timeout)
DETECTOR = 0.2  # RabbitMQ's quorum queue failure detector poll (--detector-interval)
FAULTS = ("kill", "stop", "link-down")


def group(engine: str, base: Path) -> AgentGroup:
    def handler(port: int) -> dict[str, Any]:
        if engine == "galera":
            galera = {"port": free_port(), "ist_port": free_port(), "sst_port": free_port(),
                      "suspect_timeout": SUSPECT}  # fmt: skip
            return {"type": "mariadb", "port": port, "fsync": False, "galera": galera}
        return {
            "type": "rabbitmq",
            "port": port,
            "cookie": "vimhabenchcookie0123456789",
            "tick_time": TICK,
            "detector_interval": DETECTOR,
        }

    frontends = (
        [
            {"group": "g", "name": "write", "balance": "one", "inter": 0.2},
            {"group": "g", "name": "read", "inter": 0.2},
        ]
        if engine == "galera"
        else [{"group": "g", "name": "write", "inter": 0.2}]
    )
    return AgentGroup(
        base,
        NODES,
        handler,
        name="g",
        policy={"policy": "n-plus-m", "mode": "cluster"},
        frontends=frontends,
        net=Netns.for_port(free_port(), ("mgmt",)),
    )


def target(engine: str, g: AgentGroup) -> str:
    """The member the client's traffic goes to now."""
    if engine == "galera":
        return str(mysql_query(g.lb["write"], "SELECT @@wsrep_node_name")[0][0])
    return busy_member(socket_path(g.base / "lb" / "run" / "haproxy-lb.sock"), "be_write")


def healthy(g: AgentGroup) -> bool:
    return g.healthy() == list(NODES)


def one_round(engine: str, g: AgentGroup, client: SteadyClient, fault: str) -> dict[str, Any]:
    client.more(50)
    node = target(engine, g)
    failed = client.failures
    pid = int(g.members()[node]["pid"])
    fault_at = time.monotonic()
    if fault == "link-down":
        g.link(node, up=False)
    else:
        os.kill(pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
    client.more(100, 60)
    resumed, stall = client.resumed_after(fault_at)
    if fault == "link-down":
        g.link(node, up=True)
    until(lambda: healthy(g), 240)
    return {
        "fault": fault,
        "member": node,
        "fault_to_serving_ms": round(resumed * 1000, 1),
        "longest_stall_ms": round(stall * 1000, 1),
        "failed_ops": client.failures - failed,
    }


def lost(engine: str, g: AgentGroup, acked: list[int]) -> int:
    if engine == "rabbitmq":
        return len(set(acked) - drained(g.lb["write"]))
    missing: set[int] = set()
    for node in NODES:
        missing |= set(acked) - stored_ids(f"{g.hosts[node]}:{g.ports[node]}")
    return len(missing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("galera", "rabbitmq"), required=True)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--keep", action="store_true", help="keep the agents' logs and data")
    parser.add_argument("--tick-time", type=float, default=2.0, help="RabbitMQ net_ticktime (s)")
    parser.add_argument(
        "--suspect-timeout", type=float, default=1.0, help="Galera evs.suspect_timeout (s)"
    )
    parser.add_argument(
        "--detector-interval", type=float, default=0.2, help="RabbitMQ aten poll interval (s)"
    )
    parser.add_argument("--faults", default="kill,stop,link-down", help="in turn, comma-separated")
    args = parser.parse_args()
    global TICK, SUSPECT, DETECTOR, FAULTS
    TICK, SUSPECT, DETECTOR = args.tick_time, args.suspect_timeout, args.detector_interval
    FAULTS = tuple(args.faults.split(","))
    if os.geteuid() != 0:
        sys.exit("needs root: each member runs in a network namespace")
    if args.engine == "galera" and not Path("/usr/lib/galera/libgalera_smm.so").exists():
        sys.exit("Galera not found (apt: galera-4 mariadb-server rsync)")
    if args.engine == "rabbitmq" and not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
        sys.exit("RabbitMQ not found (apt: rabbitmq-server)")
    base = Path(tempfile.mkdtemp(prefix="vimha-clbench-"))
    g = group(args.engine, base)
    rounds = []
    try:
        g.create_network()
        g.start_all(240)
        until(lambda: healthy(g), 240)
        kind = MysqlWriter if args.engine == "galera" else RabbitPublisher
        client: SteadyClient = kind(g.lb["write"])
        with client:
            for r in range(args.rounds):
                fault = FAULTS[r % len(FAULTS)]
                rounds.append(one_round(args.engine, g, client, fault))
                print(json.dumps(rounds[-1]), file=sys.stderr)
        missing = lost(args.engine, g, client.acked)
    finally:
        g.stop()
        g.destroy_network()
        if args.keep:
            print(f"kept: {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    times = [r["fault_to_serving_ms"] for r in rounds]
    summary = {
        "benchmark": "cluster_switchover",
        "engine": args.engine,
        "rounds": rounds,
        "fault_to_serving_ms": {
            "p50": round(percentile(times, 50), 1),
            "p99": round(percentile(times, 99), 1),
            "max": round(max(times), 1),
        },
        "acknowledged": len(client.acked),
        "failed_ops": sum(r["failed_ops"] for r in rounds),
        "lost_acknowledged": missing,
    }
    print(json.dumps(summary, indent=2))
    met = summary["fault_to_serving_ms"]["p99"] <= TARGET_MS[args.engine] and missing == 0
    print(
        f"{args.engine} cluster ({len(rounds)} rounds: kill -9, SIGSTOP, link down in turn): "
        f"fault -> writes acknowledged again p50/p99 {summary['fault_to_serving_ms']['p50']}/"
        f"{summary['fault_to_serving_ms']['p99']} ms; {summary['failed_ops']} failed of "
        f"{len(client.acked) + summary['failed_ops']}; lost acknowledged {missing}; target "
        f"p99 <= {TARGET_MS[args.engine]} ms {'MET' if met else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()
