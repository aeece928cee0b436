"""Benchmark: the controller's footprint at steady state while it watches many hosts.

    python bench/controller_footprint.py [--hosts 1000] [--seconds 60]

A load process signs and sends the heartbeats of `hosts` hosts on two planes every 100 ms
(the default interval: 20,000 datagrams/s for 1,000 hosts), as their agents would; the
controller (with its dispatcher process) verifies, tracks and classifies them. After a warm-up
until every host is UP, the controller's CPU and RSS are measured over `seconds`, and any
health change counted (there should be none). Prints JSON, then a one-line summary.
Standing target: 1,000 hosts under 500 MiB and half a core.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import httpx

from _harness import Controller, free_port, proc_stats

KEY = "footprint-key-0123456789"


def sender(hosts: int, ports: tuple[int, int], interval: float) -> None:
    """The load: every host's heartbeat on both planes, every `interval`."""
    from vimha.domain.heartbeat import Heartbeat, encode

    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in ports]
    boot = os.urandom(16)
    key = KEY.encode()
    names = [f"h{i:05d}" for i in range(hosts)]
    seq = 0
    next_round = time.monotonic()
    slices = 10  # agents are not in step: each round is spread over the interval
    while True:
        seq += 1
        for part in range(slices):
            now_ms = int(time.time() * 1000)
            for name in names[part::slices]:
                for sock, plane, port in zip(socks, ("mgmt", "storage"), ports, strict=True):
                    data = encode(Heartbeat(name, plane, boot, seq, now_ms), key)
                    sock.sendto(data, ("127.0.0.1", port))
            next_round += interval / slices
            time.sleep(max(0.0, next_round - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sender", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ports", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sender:
        a, b = (int(p) for p in args.ports.split(","))
        sender(args.hosts, (a, b), 0.1)
        return
    ports = (free_port(), free_port())
    hosts_cfg = [
        {"name": f"h{i:05d}", "key": KEY, "location": {"site": "s1", "rack": f"r{i // 40}"}}
        for i in range(args.hosts)
    ]
    with Controller(
        heartbeat={
            "listen": {"mgmt": f"127.0.0.1:{ports[0]}", "storage": f"127.0.0.1:{ports[1]}"},
            "startup_grace": 30,
        },
        hosts=hosts_cfg,
    ) as ctl:
        load = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--sender",
                "--hosts",
                str(args.hosts),
                "--ports",
                f"{ports[0]},{ports[1]}",
            ]
        )
        try:
            with httpx.Client(base_url=ctl.url, headers=ctl.headers, timeout=30) as client:

                def health() -> dict[str, str]:
                    return {h["id"]: h["healthStatus"] for h in client.get("/vim/v1/hosts").json()}

                deadline = time.monotonic() + 120
                while set(health().values()) != {"UP"}:
                    if time.monotonic() > deadline:
                        raise RuntimeError("hosts did not all come UP")
                    time.sleep(1)
                time.sleep(5)  # settle
                assert ctl.proc is not None
                cpu0, _ = proc_stats(ctl.proc.pid)
                load_cpu0, _ = proc_stats(load.pid)
                t0 = time.monotonic()
                time.sleep(args.seconds)
                cpu1, rss = proc_stats(ctl.proc.pid)
                load_cpu1, _ = proc_stats(load.pid)
                elapsed = time.monotonic() - t0
                final = health()
                changes = client.get("/vim/v1/status").json()
        finally:
            load.kill()
            load.wait()
    not_up = sorted(h for h, s in final.items() if s != "UP")
    result: dict[str, Any] = {
        "benchmark": "controller_footprint",
        "hosts": args.hosts,
        "planes": 2,
        "heartbeat_interval_ms": 100,
        "datagrams_per_s": args.hosts * 2 * 10,
        "seconds": round(elapsed, 1),
        "controller_cpu_cores": round((cpu1 - cpu0) / elapsed, 3),
        "controller_rss_mib": round(rss, 1),
        "load_generator_cpu_cores": round((load_cpu1 - load_cpu0) / elapsed, 3),
        "hosts_not_up_at_end": not_up[:20],
        "controller_status": changes.get("status"),
    }
    print(json.dumps(result, indent=2))
    ok = result["controller_cpu_cores"] < 0.5 and rss < 500 and not not_up
    print(
        f"controller footprint: {args.hosts} hosts x 2 planes at 100 ms: "
        f"{result['controller_cpu_cores']} cores, {result['controller_rss_mib']} MiB, "
        f"{len(not_up)} hosts not UP; target 0.5 core / 500 MiB {'MET' if ok else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()
