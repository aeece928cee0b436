"""Benchmark: the control plane's own failover (`vimha up --ha`, issue 4, ARCH-1/ARCH-9).

    python bench/ha_failover.py [--rounds 5]

Each round powers off (through its BMC) the control node that holds the active of `db`, the
controllers' PostgreSQL; that node also runs a controller, an etcd member and, for ctl-1 and
ctl-2, a load balancer. A client sends one event every 50 ms through the balancers
(`POST /vim/v1/events`, a new alarm each) all along. Measured per round: fault -> the db
group's new active serving (its agent's time stamp), fault -> the first event accepted
again, failed requests, and lost writes (events answered 200 whose alarm is not in the
store afterwards). The node is powered on again and the cloud settles between rounds.
Prints JSON, then a one-line summary. Target: the whole control plane back in < 5 s
(ARCH-9); no accepted event lost.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from _harness import percentile
from failure_kinds import Cloud, vimha
from vimha.cloud.ha import ha_ports, missing
from vimha.cloud.nodes import check_ports
from vimha.domain.errors import Permanent


def ha_base_port() -> int:
    for port in range(23000, 31000, 500):
        try:
            check_ports(port, ha_ports(port))
            return port
        except Permanent:
            continue
    raise RuntimeError("no free port block")


class HaCloud(Cloud):
    def db(self) -> dict[str, Any]:
        """The db group; while the API does not answer (the balancers' own 503), empty."""
        try:
            found: dict[str, Any] = self.http.get("/vim/v1/service-groups/db").json()
        except (httpx.HTTPError, ValueError):
            return {"epoch": 0, "members": []}
        return found

    def settled(self) -> bool:
        try:
            groups = self.http.get("/vim/v1/service-groups").json()
            hosts = self.hosts()
        except (httpx.HTTPError, ValueError):
            return False
        return all(g["health"] == "OK" for g in groups) and all(
            h["healthStatus"] == "UP" for h in hosts.values()
        )


class Client:
    """One event every `period` through the balancers; (sent, done, code, object) each."""

    def __init__(self, cloud: HaCloud, prefix: str, period: float = 0.05) -> None:
        self.http = httpx.Client(base_url=cloud.http.base_url, headers=cloud.http.headers)
        self.prefix = prefix
        self.period = period
        self.log: list[tuple[float, float, int, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            obj = f"{self.prefix}-{i:05d}"
            body = {"managedObjectId": obj, "faultType": "PROBE", "probableCause": "bench",
                    "perceivedSeverity": "MINOR", "eventType": "QOS_ALARM"}  # fmt: skip
            sent = time.time()
            try:
                code = self.http.post("/vim/v1/events", json=body, timeout=15).status_code
            except httpx.HTTPError:
                code = 0
            self.log.append((sent, time.time(), code, obj))
            time.sleep(max(0.0, self.period - (time.time() - sent)))


def one_round(cloud: HaCloud, n: int) -> dict[str, Any]:
    cloud.until(cloud.settled, 120)
    before = cloud.db()
    victim = next(m["member"] for m in before["members"] if m["role"] == "active")
    client = Client(cloud, f"r{n}")
    client.thread.start()
    time.sleep(1.0)
    fault = time.time()
    cloud.chaos("power-off", victim)
    cloud.until(
        lambda: (
            (g := cloud.db())["epoch"] > before["epoch"]
            and any(m["role"] == "active" and m["member"] != victim for m in g["members"])
        ),
        60,
    )
    cloud.until(lambda: any(s > fault and c == 200 for s, _, c, _ in client.log), 60)
    time.sleep(2.0)
    client.stop.set()
    client.thread.join(30)
    after = cloud.db()
    switch = after.get("lastSwitchover") or {}
    serving = switch.get("serving") or switch.get("promoted")
    # The outage ends with the success after the longest wait between two successes (a
    # request that slipped in before the old primary died does not end it).
    done = sorted(d for _, d, c, _ in client.log if c == 200)
    gaps = [(b - a, b) for a, b in itertools.pairwise(done) if b > fault]
    back = max(gaps)[1] if gaps else done[-1]
    accepted = [o for _, _, c, o in client.log if c == 200]
    probes = f"(eq,faultType,PROBE);(cont,managedObjectId,r{n}-)"
    alarms = cloud.http.get("/vimfm/v1/alarms", params={"filter": probes}).json()
    stored = {a["managedObjectId"] for a in alarms}
    cloud.chaos("power-on", victim)
    return {
        "victim": victim,
        "db_serving_s": (serving - fault) if serving else None,
        "db_timeline_s": {
            k: round(switch[k] - fault, 3) if switch.get(k) else None
            for k in ("detected", "fenced", "promoted", "serving")
        },
        "writes_back_s": back - fault,
        "requests": len(client.log),
        "failed": sum(c != 200 for _, _, c, _ in client.log),
        "lost": len(set(accepted) - stored),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if need := missing():
        raise SystemExit(f"needs {', '.join(need)}")
    base = Path(tempfile.mkdtemp(prefix="vimha-ha-bench-"))
    os.chmod(base, 0o755)  # the postgres user enters its data dirs below
    data, port = base / "cloud", ha_base_port()
    vimha("up", "--ha", "--detach", "--data-dir", str(data), "--port", str(port))
    cloud = HaCloud(data, port)
    rounds = []
    try:
        for n in range(args.rounds):
            rounds.append(one_round(cloud, n))
            print(json.dumps(rounds[-1]), flush=True)
    finally:
        vimha("down", "--data-dir", str(data))
    back = [r["writes_back_s"] for r in rounds]
    serving = [r["db_serving_s"] for r in rounds if r["db_serving_s"] is not None]
    result = {
        "benchmark": "ha_failover",
        "rounds": rounds,
        "writes_back_s": {"p50": percentile(back, 50), "p99": percentile(back, 99)},
        "db_serving_s": {"p50": percentile(serving, 50), "p99": percentile(serving, 99)}
        if serving
        else None,
        "failed_requests": sum(r["failed"] for r in rounds),
        "requests": sum(r["requests"] for r in rounds),
        "lost_writes": sum(r["lost"] for r in rounds),
    }
    print(json.dumps(result, indent=2))
    print(
        f"ha_failover: db node powered off -> events accepted again p50 "
        f"{result['writes_back_s']['p50']:.2f} s / p99 {result['writes_back_s']['p99']:.2f} s "
        f"(target 5 s); failed {result['failed_requests']} of {result['requests']} requests; "
        f"lost {result['lost_writes']} accepted events"
    )


if __name__ == "__main__":
    main()
