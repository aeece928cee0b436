"""Instances through the API on the embedded cloud (issue 14).

1. Creation rate: VNFs of one instance created through the API by `--clients` concurrent
   clients; instances created per second (the API answers once each is placed and claimed)
   and the time until every one answers on its port.
2. 50 instances on one node: one VNF of `--count` instances forced onto cmp-1; time from the
   request to the last one answering HTTP on its port (target <= 5 s), with the stages on
   the way (the API's answer, the agent forking the first and the last guest, read from
   the guests' start times in /proc, the first and the last answer).
3. Memory on that node: the agent process alone (the requirement: under 60 MiB, instances
   not counted) apart from its guests (the process driver's guests are the agent's
   children): each guest's RSS (average, p50), their RSS summed and their PSS summed (RSS
   counts the interpreter's shared pages once per guest; PSS shares them out), and the
   agent's whole process tree for comparison.

Answers are probed with plain HTTP/1.0 GETs (http.client, one connection each, every 50 ms
per address): a probe costs a fraction of a millisecond of CPU, so the bench does not take
the CPU the guests boot on (an httpx.get per probe built a client with a TLS context each
time: ~50 ms of CPU, more than the guest's boot).

Prints JSON, then a one-line summary. Usage: .venv/bin/python bench/instances.py
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import cloud_port, own_stats, percentile, proc_stats, pss_mib, vimha
from vimha.cloud import chaos
from vimha.cloud.procs import guest_processes

PROBE_EVERY = 0.05
IDLE = 3.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def answers(ip: str) -> bool:
    """GET / on the guest's port answered 200."""
    conn = http.client.HTTPConnection(ip, 8080, timeout=0.5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def wait_answering(ips: list[str], started: float, within: float = 60) -> dict[str, float]:
    """Each address -> seconds from `started` (time.monotonic) until it first answered;
    every address probed from the start (one thread each)."""
    first: dict[str, float] = {}
    lock = threading.Lock()

    def poll(ip: str) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if answers(ip):
                with lock:
                    first[ip] = time.monotonic() - started
                return
            time.sleep(PROBE_EVERY)

    with ThreadPoolExecutor(max(1, len(ips))) as pool:
        list(pool.map(poll, ips))
    return first


def boot_clock() -> float:
    """Seconds since boot: the clock of the start times in /proc/<pid>/stat."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def started_at(pid: int) -> float | None:
    """When the process started (fork), in seconds since boot (10 ms steps)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[19]) / CLK_TCK


def instance_of(pid: int) -> str | None:
    """The instance a process guest runs (its VIMHA_INSTANCE)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"VIMHA_INSTANCE="):
            return item.split(b"=", 1)[1].decode()
    return None


def descriptor(name: str, count: int, host: str | None = None) -> dict[str, Any]:
    vdu: dict[str, Any] = {
        "name": "x",
        "count": count,
        "flavor": "m1.tiny",
        "image": "demo-guest",
        "networks": [{"network": "vnf-b"}],
    }
    if host:
        vdu["hints"] = {"host": host}
    return {"name": name, "vdus": [vdu]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=50, help="instances on one node")
    parser.add_argument("--creates", type=int, default=40, help="one-instance VNFs to create")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="vimha-bench-inst-"))
    port = cloud_port()
    up = vimha("up", "--detach", "--data-dir", str(data), "--port", str(port))
    if up.returncode != 0:
        vimha("down", "--data-dir", str(data))  # a cloud slow to answer is still running
        sys.exit(up.stderr)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {(data / 'admin-token').read_text().strip()}"}
    client = httpx.Client(base_url=url, headers=headers, timeout=60)
    try:
        deadline = time.monotonic() + 120
        while (
            len([i for i in client.get("/vim/v1/instances").json() if i["status"] == "ACTIVE"]) != 5
        ):
            if time.monotonic() > deadline:
                sys.exit("the demo VNFs did not become ACTIVE")
            time.sleep(0.2)

        # 1. Creation rate through the API.
        latencies: list[float] = []
        created_ips: list[str] = []
        lock = threading.Lock()

        def create(n: int) -> None:
            t0 = time.monotonic()
            r = client.post("/vim/v1/vnfs", json=descriptor(f"rate-{n}", 1))
            r.raise_for_status()
            inst = r.json()["instances"][0]
            ip = client.get(f"/vim/v1/instances/{inst['id']}").json()["ports"][0]["ip"]
            with lock:
                latencies.append(time.monotonic() - t0)
                created_ips.append(ip)

        t0 = time.monotonic()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(create, range(args.creates)))
        create_wall = time.monotonic() - t0
        serving = wait_answering(created_ips, t0)

        # 2. N instances on one node (after a few quiet seconds: the baseline CPU).
        cmp1 = chaos.node(chaos.load_state(data), "cmp-1")
        agent_pid = chaos.agent_pids(cmp1)[0]
        controller_pid = int((data / "vimha.pid").read_text())
        idle0 = own_stats(controller_pid)[0], own_stats(agent_pid)[0], time.monotonic()
        time.sleep(IDLE)  # the CPU they take doing nothing in particular, for comparison
        agent_cpu0, agent_rss_before = own_stats(agent_pid)
        controller_cpu0, _ = own_stats(controller_pid)
        idle_s = time.monotonic() - idle0[2]
        bench_cpu0 = time.process_time()
        t1, b1 = time.monotonic(), boot_clock()
        r = client.post("/vim/v1/vnfs", json=descriptor("dense", args.count, "cmp-1"))
        r.raise_for_status()
        placed = time.monotonic() - t1
        ids = [i["id"] for i in r.json()["instances"]]
        ips = [
            p["ip"]
            for i in client.get("/vim/v1/instances").json()
            if i["id"] in ids
            for p in i["ports"]
        ]
        first = wait_answering(ips, t1)
        window = time.monotonic() - t1
        agent_cpu1, _ = own_stats(agent_pid)
        controller_cpu1, _ = own_stats(controller_pid)
        bench_cpu = time.process_time() - bench_cpu0
        guests = guest_processes("cmp-1", data)
        dense = set(ids)
        forked = [
            at - b1 for p in guests if instance_of(p) in dense and (at := started_at(p)) is not None
        ]
        dense_cpu = sum(own_stats(p)[0] for p in guests if instance_of(p) in dense)
        rss = [own_stats(p)[1] for p in guests]
        pss = [pss_mib(p) for p in guests]
        _, agent_rss = own_stats(agent_pid)
        _, agent_tree_rss = proc_stats(agent_pid)
        result = {
            "creation": {
                "instances": args.creates,
                "clients": args.clients,
                "per_second": round(args.creates / create_wall, 1),
                "api_latency_p50_ms": round(percentile(latencies, 50) * 1000, 1),
                "api_latency_p99_ms": round(percentile(latencies, 99) * 1000, 1),
                "all_answering_s": round(max(serving.values(), default=float("nan")), 2),
                "answering": len(serving),
            },
            "one_node": {
                "instances": args.count,
                "api_s": round(placed, 3),
                "all_answering_s": round(max(first.values(), default=float("nan")), 2),
                "first_answering_s": round(min(first.values(), default=float("nan")), 2),
                "answering": len(first),
                "first_forked_s": round(min(forked, default=float("nan")), 2),
                "last_forked_s": round(max(forked, default=float("nan")), 2),
                "forked": len(forked),
                # CPU seconds spent while waiting for them all (the machine's cores x the
                # window bound it): who took the CPU the guests boot on
                "cpu_s": {
                    "window": round(window, 2),
                    "controller": round(controller_cpu1 - controller_cpu0, 2),
                    "agent": round(agent_cpu1 - agent_cpu0, 2),
                    "guests": round(dense_cpu, 2),
                    "bench": round(bench_cpu, 2),
                    "cores": os.cpu_count(),
                    "controller_idle_per_s": round((controller_cpu0 - idle0[0]) / idle_s, 3),
                    "agent_idle_per_s": round((agent_cpu0 - idle0[1]) / idle_s, 3),
                },
            },
            "memory": {
                "agent_rss_mib": round(agent_rss, 1),
                "agent_rss_mib_before": round(agent_rss_before, 1),
                "guests_on_node": len(guests),
                "guest_rss_mib_avg": round(sum(rss) / len(rss), 1) if rss else float("nan"),
                "guest_rss_mib_p50": round(percentile(rss, 50), 1),
                "guest_rss_mib_total": round(sum(rss), 1),
                "guest_pss_mib_total": round(sum(pss), 1),
                "agent_tree_rss_mib": round(agent_tree_rss, 1),
            },
        }
    finally:
        client.close()
        vimha("down", "--data-dir", str(data))
    print(json.dumps(result, indent=2))
    c, o, m = result["creation"], result["one_node"], result["memory"]
    print(
        f"instances: {c['per_second']}/s created through the API ({c['clients']} clients, "
        f"p99 {c['api_latency_p99_ms']} ms), all {c['answering']} answering after "
        f"{c['all_answering_s']} s; {o['answering']}/{o['instances']} on one node answering "
        f"{o['all_answering_s']} s after the request (target <= 5 s; forked "
        f"{o['first_forked_s']}-{o['last_forked_s']} s); agent {m['agent_rss_mib']} MiB "
        f"without its guests (target < 60 MiB), {m['guests_on_node']} guests "
        f"{m['guest_rss_mib_avg']} MiB RSS each on average, {m['guest_pss_mib_total']} MiB "
        f"PSS in all"
    )


if __name__ == "__main__":
    main()
