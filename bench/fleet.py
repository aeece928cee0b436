"""Benchmark: a fleet of simulated hosts against the HA control plane (issue 22, Scale).

    python bench/fleet.py [--hosts 100,1000] [--instances-per-host 20] [--seconds 30]
                          [--failures 5] [--creates 20] [--sim-procs 2] [--port N] [--keep]

Per fleet size: `vimha up --ha` (3 etcd members, 3 controllers on PostgreSQL, the HAProxy
pair; `bench/_fleet_cloud.py`) with the fleet's hosts in the controllers' config inventory,
and the fleet simulated in `--sim-procs` processes (`bench/_fleet_nodes.py`: signed UDP
heartbeats on two planes to every controller, a Redfish BMC each, the agents' desired/observed
reports, guests that start at once). Then:
1. `--instances-per-host` instances forced onto each fleet host (one VNF per host through
   the API), all reported ACTIVE by the simulated agents;
2. steady state: each controller's CPU and RSS (with its dispatcher) over `--seconds`;
3. the store's size (PostgreSQL database, rows; etcd's database);
4. API latency through the balancers: `GET /vim/v1/hosts` and `GET /vim/v1/instances`
   (first page), p50/p99; placement: `--creates` one-instance VNFs (the scheduler chooses);
5. `--failures` times: a host stops (heartbeats and reports, as a crash; its BMC answers):
   detection (stop -> host alarm raised), fencing (-> CONFIRMED, and how many controllers
   fenced it), recovery (-> every one of its instances ACTIVE on another host).
Targets at 1,000 hosts and 20,000 instances: detection p99 <= 0.5 s, each controller < 1 core
at steady state, recovery of a host's 20 instances <= 5 s. Prints JSON, then a one-line
summary per size. The machine's load average is recorded with every figure.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import percentile, proc_stats
from vimha.cloud.ha import DB_FRONTEND, ETCD_OFFSET, ha_ports
from vimha.cloud.nodes import check_ports
from vimha.cloud.procs import find_processes
from vimha.domain.errors import Permanent
from vimha.domain.ownership import owner

HERE = Path(__file__).resolve().parent
BMC_OFFSET = 450  # the fleet's BMCs: 127.3.x.y:PORT+450
HOST_KINDS = ("COMPUTE_NODE_FAILURE", "HOST_HW_FAILURE", "HOST_UNREACHABLE", "RACK_FAILURE")
CONTROLLERS = ("ctl-1", "ctl-2", "ctl-3")


def load() -> float:
    return os.getloadavg()[0]


def cloud_port(base: int | None) -> int:
    """`base` if given and free, else a free block between 20000 and 30000 (other clouds,
    CI and benches run on the same machine: their ports must not be ours)."""
    if base is not None:
        check_ports(base, [*ha_ports(base), base + BMC_OFFSET])
        return base
    for _ in range(200):
        port = random.randrange(20000, 30000)
        try:
            check_ports(port, [*ha_ports(port), port + BMC_OFFSET])
        except Permanent:
            continue
        return port
    raise RuntimeError("no free port block")


def until(what: str, pred: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if result := pred():
                return result
        except (httpx.HTTPError, psycopg.Error, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def name(n: int) -> str:
    return f"f{n:05d}"


def inventory(hosts: int, port: int, args: argparse.Namespace) -> dict[str, Any]:
    password = secrets.token_hex(8)
    entries, tokens, sim = [], [], []
    for n in range(hosts):
        host = name(n)
        key, token = secrets.token_hex(16), secrets.token_hex(16)
        address = f"127.3.{n // 250}.{n % 250 + 1}"
        entries.append(
            {
                "name": host,
                "roles": ["compute"],
                "location": {"site": "s1", "zone": f"z{1 + n // 40 % 2}", "rack": f"fr{n // 40}"},
                "key": key,
                "capacities": {"vcpus": 16, "ram_mib": 65536, "disk_gib": 500},
                "bmc": {
                    "url": f"http://{address}:{port + BMC_OFFSET}",
                    "user": "admin",
                    "password": password,
                    "interval": args.bmc_interval,
                    "timeout": 1.0,
                    "log_interval": args.bmc_log_interval,
                },
            }
        )
        tokens.append({"name": f"agent-{host}", "token": token, "role": "agent", "host": host})
        sim.append({"name": host, "key": key, "token": token, "bmc_address": address})
    controller: dict[str, Any] = {"log_level": "warning"}
    if args.judging:
        controller["judging"] = {"split": args.judging}
    return {
        "hosts": entries,
        "tokens": tokens,
        "controller": controller,
        "sim": sim,
        "bmc_password": password,
    }


class Run:
    """One fleet size: the cloud, the simulated nodes, the measurements."""

    def __init__(self, hosts: int, args: argparse.Namespace) -> None:
        self.hosts = hosts
        self.args = args
        self.base = Path(tempfile.mkdtemp(prefix="vimha-fleet-"))  # the postgres user gets in
        os.chmod(self.base, 0o755)
        self.data = self.base / "cloud"
        self.port = cloud_port(args.port)
        self.inv = inventory(hosts, self.port, args)
        self.cloud: subprocess.Popen[bytes] | None = None
        self.sims: list[tuple[subprocess.Popen[str], int, list[str]]] = []
        self.http: httpx.Client | None = None
        self.result: dict[str, Any] = {"hosts": hosts, "load_at_start": load()}

    # -- setting up -----------------------------------------------------------------------
    def start(self) -> None:
        spec = self.base / "inventory.json"
        spec.write_text(json.dumps(self.inv))
        with open(self.base / "cloud.log", "ab") as log:
            self.cloud = subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "_fleet_cloud.py"),
                    str(self.data),
                    str(self.port),
                    str(spec),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # The fleet first: its BMCs answer and its heartbeats are on their way before the
        # controllers start, as in a region whose hosts run when its control plane starts
        # (declared and silent past the start-up grace, they would be fenced at once).
        self.start_sims()
        token_file = self.data / "admin-token"
        until("admin token", token_file.exists, 120)
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {token_file.read_text().strip()}"},
            timeout=120,
        )
        t0 = time.monotonic()
        until(
            "three controllers",
            lambda: len(self.get("/vim/v1/status")["coordination"]["controllers"]) == 3,
            600,
            2.0,
        )
        self.result["control_plane_start_s"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        until("every host UP", self.all_up, 600, 2.0)
        self.result["fleet_up_s"] = round(time.monotonic() - t0, 1)

    def start_sims(self) -> None:
        procs = max(1, min(self.args.sim_procs, self.hosts // 50))
        c = self.port
        planes = {
            "mgmt": [f"127.1.0.{i}:{c + 1}" for i in (1, 2, 3)],
            "storage": [f"127.2.0.{i}:{c + 2}" for i in (1, 2, 3)],
        }
        for k in range(procs):
            hosts = self.inv["sim"][k::procs]
            spec = {
                "hosts": hosts,
                "bmc_port": c + BMC_OFFSET,
                "bmc_user": "admin",
                "bmc_password": self.inv["bmc_password"],
                "planes": planes,
                "interval": 0.1,
                "api": f"http://127.0.0.1:{c}",
                "report_every": self.args.report_every,
                "watch_wait": 8,  # under the balancer's 10 s server timeout
            }
            path = self.base / f"sim-{k}.json"
            path.write_text(json.dumps(spec))
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "_fleet_nodes.py"), str(path)],
                stdout=subprocess.PIPE,
                stderr=open(self.base / f"sim-{k}.log", "ab"),  # noqa: SIM115 - the child's
                text=True,
            )
            assert proc.stdout is not None
            port = int(proc.stdout.readline())
            self.sims.append((proc, port, [h["name"] for h in hosts]))

    def get(self, path: str, **params: Any) -> Any:
        assert self.http is not None
        r = self.http.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def all_up(self) -> bool:
        health = [h["healthStatus"] for h in self.get("/vim/v1/hosts")]
        return len(health) == self.hosts + 8 and set(health) == {"UP"}

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        dsn = f"host=127.1.0.1 port={self.port + DB_FRONTEND} dbname=vimha user=postgres"
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            return conn.execute(query, params).fetchall()

    def command(self, host: str, op: str) -> dict[str, Any]:
        import socket

        port = next(p for _, p, names in self.sims if host in names)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(json.dumps({"op": op, "host": host}).encode() + b"\n")
            answer: dict[str, Any] = json.loads(s.makefile().readline())
        return answer

    # -- instances ------------------------------------------------------------------------
    def seed(self) -> None:
        assert self.http is not None
        http = self.http
        http.post(
            "/vim/v1/flavors", json={"name": "fleet.tiny", "vcpus": 1, "ramMib": 128, "diskGib": 1}
        ).raise_for_status()
        r = http.post(
            "/vim/v1/images",
            json={
                "name": "fleet-image",
                "diskFormat": "raw",
                "containerFormat": "bare",
                "properties": {"hypervisor_type": "process"},
            },
        )
        r.raise_for_status()
        image = r.json()["id"]
        http.put(
            f"/vim/v1/images/{image}/file",
            content=b"fleet guest: nothing runs",
            headers={"Content-Type": "application/octet-stream"},
        ).raise_for_status()
        per = self.args.instances_per_host
        latencies: list[float] = []
        refused: list[str] = []

        def create(n: int) -> None:
            vdu = {
                "name": "x",
                "count": per,
                "flavor": "fleet.tiny",
                "image": "fleet-image",
                "hints": {"host": name(n)},
            }
            t0 = time.monotonic()
            r = http.post("/vim/v1/vnfs", json={"name": f"vnf-{name(n)}", "vdus": [vdu]})
            if r.status_code >= 400:
                refused.append(f"{name(n)}: {r.status_code} {r.text[:300]}")
                return
            latencies.append(time.monotonic() - t0)

        t0 = time.monotonic()
        if per:
            with ThreadPoolExecutor(self.args.seed_clients) as pool:
                list(pool.map(create, range(self.hosts)))
        wall = time.monotonic() - t0
        expected = per * (self.hosts - len(refused))
        if refused:
            self.result["seeding_refused"] = {"count": len(refused), "first": refused[:3]}
        until("instances ACTIVE", lambda: self.active() >= expected, 900, 2.0)
        self.result["seeding"] = {
            "instances": expected,
            "vnfs": self.hosts - len(refused) if per else 0,
            "created_per_s": round(expected / wall, 1) if per else None,
            "vnf_of_n_latency_p50_ms": round(percentile(latencies, 50) * 1000),
            "vnf_of_n_latency_p99_ms": round(percentile(latencies, 99) * 1000),
            "all_active_s": round(time.monotonic() - t0, 1),
            "load": load(),
        }

    def active(self) -> int:
        return int(self.sql("SELECT count(*) FROM instances WHERE status = 'ACTIVE'")[0][0])

    # -- measurements ---------------------------------------------------------------------
    def controller_pids(self) -> dict[str, int]:
        out = {}
        for ctl in CONTROLLERS:
            marker = f"{self.data}/nodes/{ctl}/controller.yaml"
            pids = [
                p
                for p in find_processes(marker)
                if "controller" in Path(f"/proc/{p}/cmdline").read_text()
            ]
            # the controller itself (its dispatcher child is counted with it)
            pids = [
                p for p in pids if not Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sh\0")
            ]
            if pids:
                out[ctl] = min(pids)
        return out

    def steady(self) -> None:
        time.sleep(self.args.settle)
        pids = self.controller_pids()
        others = {"sims": [p.pid for p, _, _ in self.sims]}
        before = {c: proc_stats(p)[0] for c, p in pids.items()}
        sims0 = sum(proc_stats(p)[0] for p in others["sims"])
        load0 = load()
        t0 = time.monotonic()
        time.sleep(self.args.seconds)
        elapsed = time.monotonic() - t0
        after = {c: proc_stats(p) for c, p in pids.items()}
        sims1 = sum(proc_stats(p)[0] for p in others["sims"])
        self.result["steady"] = {
            "seconds": round(elapsed, 1),
            "controllers": {
                c: {
                    "cpu_cores": round((after[c][0] - before[c]) / elapsed, 3),
                    "rss_mib": round(after[c][1], 1),
                }
                for c in pids
            },
            "simulated_nodes_cpu_cores": round((sims1 - sims0) / elapsed, 3),
            "load": [load0, load()],
        }
        self.result["steady"]["sim_stats"] = [self.stats(port) for _, port, _ in self.sims]
        self.result["steady"]["judging"] = self.judging()

    def stats(self, port: int) -> dict[str, Any]:
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b'{"op": "stats"}\n')
            found: dict[str, Any] = json.loads(s.makefile().readline())
        return found

    def store_size(self) -> None:
        db = self.sql("SELECT pg_database_size('vimha')")[0][0]
        rows = {
            t: int(self.sql(f"SELECT count(*) FROM {t}")[0][0])
            for t in (
                "instances",
                "alarms",
                "alarm_events",
                "notifications",
                "fence_records",
                "instance_states",
            )
        }
        r = httpx.post(
            f"http://127.1.0.1:{self.port + ETCD_OFFSET}/v3/maintenance/status", json={}, timeout=5
        )
        self.result["store"] = {
            "postgresql_mib": round(db / 2**20, 1),
            "rows": rows,
            "etcd_db_mib": round(int(r.json()["dbSize"]) / 2**20, 2),
        }

    def api(self) -> None:
        assert self.http is not None
        out: dict[str, Any] = {"load": load()}
        for label, path in (
            ("hosts", "/vim/v1/hosts"),
            ("instances_first_page", "/vim/v1/instances"),
        ):
            times = []
            for _ in range(self.args.api_samples):
                t0 = time.monotonic()
                self.http.get(path).raise_for_status()
                times.append(time.monotonic() - t0)
            out[label] = {
                "p50_ms": round(percentile(times, 50) * 1000, 1),
                "p99_ms": round(percentile(times, 99) * 1000, 1),
            }
        latencies = []
        for k in range(self.args.creates):
            vdu = {"name": "x", "count": 1, "flavor": "fleet.tiny", "image": "fleet-image"}
            t0 = time.monotonic()
            self.http.post(
                "/vim/v1/vnfs", json={"name": f"placed-{k}", "vdus": [vdu]}
            ).raise_for_status()
            latencies.append(time.monotonic() - t0)
        out["create_instance"] = {
            "n": len(latencies),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        }
        out["load_after"] = load()
        self.result["api"] = out

    def failures(self) -> None:
        rng = random.Random(7)
        victims = rng.sample(range(self.hosts), min(self.args.failures, self.hosts))
        rounds = [self.failure(name(n)) for n in victims]
        det = [r["detection_ms"] for r in rounds]
        rec = [r["recovered_ms"] for r in rounds]
        self.result["failures"] = {
            "rounds": rounds,
            "detection_p50_ms": percentile(det, 50),
            "detection_p99_ms": percentile(det, 99),
            "recovery_p50_ms": percentile(rec, 50),
            "recovery_max_ms": max(rec, default=None),
            "fence_records_per_failure": sorted({r["fence_records"] for r in rounds}),
        }

    def takeover(self) -> None:
        """A controller SIGKILLed as one of the hosts it judges fails: another takes the
        host over once the dead one's lease lapses, and finds it failed."""
        live = sorted(self.get("/vim/v1/status")["coordination"]["controllers"])
        dead = "ctl-2"
        host = next(h for h in map(name, reversed(range(self.hosts))) if owner(h, live) == dead)
        pid = self.controller_pids()[dead]

        def kill() -> None:
            os.kill(pid, signal.SIGKILL)

        self.result["takeover"] = {
            "killed": dead,
            "live_before": live,
            "judged_by_it_before": self.judging().get(dead),
            **self.failure(host, kill),
        }
        until("the killed controller back", lambda: len(self.controller_pids()) == 3, 300, 2.0)

    def judging(self) -> dict[str, Any]:
        """Each controller's share of the hosts, as its own status says."""
        out: dict[str, Any] = {}
        assert self.http is not None
        for i, ctl in enumerate(CONTROLLERS, 1):
            try:
                r = self.http.get(f"http://127.1.0.{i}:{self.port}/vim/v1/status", timeout=10)
                out[ctl] = r.json().get("judging")
            except (httpx.HTTPError, ValueError):
                out[ctl] = None
        return out

    def failure(self, host: str, also: Callable[[], None] | None = None) -> dict[str, Any]:
        """One host stops as a crash does (`also` done at the same moment): detection,
        fencing, recovery of its instances."""
        ids = [
            r[0]
            for r in self.sql(
                "SELECT id FROM instances WHERE host = %s AND status = 'ACTIVE'", host
            )
        ]
        load0 = load()
        if also is not None:
            also()
        stopped = float(self.command(host, "fail")["at"])
        alarm_at = until(
            f"alarm of {host}", functools.partial(self.raised, host, stopped), 60, 0.02
        )
        confirmed_at = until(
            f"fencing of {host}", functools.partial(self.fenced, host, stopped), 60, 0.05
        )
        recovered_at = until(
            f"recovery of {host}", functools.partial(self.moved, host, ids), 120, 0.02
        )
        time.sleep(2.0)  # every controller that would fence has done so by now
        fenced_by = int(
            self.sql(
                "SELECT count(*) FROM fence_records WHERE host = %s "
                "AND finished_at >= to_timestamp(%s)",
                host,
                stopped - 0.5,
            )[0][0]
        )
        self.command(host, "restore")
        until(f"{host} UP again", functools.partial(self.is_up, host), 120)
        return {
            "host": host,
            "instances": len(ids),
            "detection_ms": round((alarm_at - stopped) * 1000),
            "fenced_ms": round((confirmed_at - stopped) * 1000),
            "recovered_ms": round((recovered_at - stopped) * 1000),
            "fence_records": fenced_by,
            "load": load0,
        }

    def raised(self, host: str, since: float) -> float | None:
        """When the host's failure alarm was raised after `since`."""
        rows = self.sql(
            "SELECT extract(epoch FROM raised_time) FROM alarms "
            "WHERE managed_object_id = %s AND fault_type = ANY(%s) "
            "AND raised_time >= to_timestamp(%s) ORDER BY seq LIMIT 1",
            host,
            list(HOST_KINDS),
            since - 0.5,
        )
        return float(rows[0][0]) if rows else None

    def is_up(self, host: str) -> bool:
        return bool(self.get(f"/vim/v1/hosts/{host}")["healthStatus"] == "UP")

    def fenced(self, host: str, since: float) -> float | None:
        """When the host's fencing was first confirmed after `since`."""
        rows = self.sql(
            "SELECT extract(epoch FROM min(finished_at)) FROM fence_records WHERE host = %s "
            "AND result = 'CONFIRMED' AND finished_at >= to_timestamp(%s)",
            host,
            since - 0.5,
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def moved(self, host: str, ids: list[str]) -> float | None:
        """Now, if every one of `ids` is ACTIVE on another host than `host`."""
        n = self.sql(
            "SELECT count(*) FROM instances WHERE id = ANY(%s) AND host <> %s "
            "AND status = 'ACTIVE'",
            ids,
            host,
        )[0][0]
        return time.time() if int(n) == len(ids) else None

    # -- tearing down ---------------------------------------------------------------------
    def stop(self) -> None:
        for proc, _, _ in self.sims:
            proc.terminate()
        for proc, _, _ in self.sims:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.cloud is not None and self.cloud.poll() is None:
            self.cloud.send_signal(signal.SIGTERM)
            try:
                self.cloud.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.cloud.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while find_processes(str(self.data)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in find_processes(str(self.data)):  # whatever outlived its stop
            os.kill(pid, signal.SIGKILL)
        if self.http is not None:
            self.http.close()
        if not self.args.keep:
            shutil.rmtree(self.base, ignore_errors=True)
        else:
            self.result["kept"] = str(self.base)


def summary(r: dict[str, Any]) -> str:
    f = r.get("failures", {})
    ctl = r.get("steady", {}).get("controllers", {})
    cpu = max((c["cpu_cores"] for c in ctl.values()), default=float("nan"))
    rss = max((c["rss_mib"] for c in ctl.values()), default=float("nan"))
    judging = r.get("steady", {}).get("judging", {})
    shares = [j.get("hosts") if j else None for j in judging.values()]
    ok = (
        f.get("detection_p99_ms", 1e9) <= 500
        and cpu < 1.0
        and (f.get("recovery_max_ms") or 1e9) <= 5000
    )
    return (
        f"fleet {r['hosts']} hosts x {r.get('seeding', {}).get('instances', 0)} instances: "
        f"detection p99 {f.get('detection_p99_ms')} ms, "
        f"recovery max {f.get('recovery_max_ms')} ms, "
        f"fence records per failure {f.get('fence_records_per_failure')}, controller max "
        f"{cpu} cores / {rss} MiB; judged per controller {shares}; "
        f"takeover detection {r.get('takeover', {}).get('detection_ms')} ms; "
        f"load {r.get('steady', {}).get('load')}; "
        f"targets (1,000 hosts) {'MET' if ok else 'NOT MET'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="100,1000", help="fleet sizes, comma-separated")
    parser.add_argument("--instances-per-host", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0, help="steady-state window")
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--failures", type=int, default=5)
    parser.add_argument("--creates", type=int, default=20)
    parser.add_argument("--api-samples", type=int, default=20)
    parser.add_argument("--sim-procs", type=int, default=2)
    parser.add_argument("--seed-clients", type=int, default=4)
    parser.add_argument("--report-every", type=float, default=5.0)
    parser.add_argument("--bmc-interval", type=float, default=10.0)
    parser.add_argument("--bmc-log-interval", type=float, default=60.0)
    parser.add_argument(
        "--judging", choices=("on", "off", "auto"), default=None, help="judging.split"
    )
    parser.add_argument(
        "--takeover", action="store_true", help="a controller killed as a host it judges fails"
    )
    parser.add_argument("--port", type=int, default=None, help="the cloud's port base")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    args = parser.parse_args()
    results = []
    for hosts in (int(h) for h in args.hosts.split(",")):
        run = Run(hosts, args)
        try:
            run.start()
            run.seed()
            run.steady()
            run.store_size()
            run.api()
            if args.failures:
                run.failures()
            if args.takeover:
                run.takeover()
        except Exception as exc:
            run.result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            run.stop()
        results.append(run.result)
        print(json.dumps(run.result, indent=2), flush=True)
    for r in results:
        print(summary(r))


if __name__ == "__main__":
    main()
