"""Migration and host maintenance on the embedded cloud (issue 19).

1. One instance migrated `--migrations` times (`POST /vim/v1/instances/{id}/migrate`, by
   its policy: on the process driver a stop-copy-start, counted cold unless CRIU is usable)
   while a prober asks its address over HTTP every 5 ms (a fresh connection each time): the
   interruption it saw (the longest time without an answer around the migration, ms),
   p50/max, next to the one the source's agent measured and recorded, and the time from the
   request to the migration COMPLETED.
2. A whole-host maintenance, `--host-rounds` times: a VNF of `--instances` instances forced
   onto one compute host (which holds some of the demo VNFs' too), then a maintenance
   session over that host alone (`POST /vim/v1/maintenance`, no VNFM to wait for, no time
   in maintenance): the time to empty the host, the session's time to MAINTENANCE_COMPLETE
   (the host back in service), the time until every instance of the VNF answers elsewhere,
   and the recorded interruptions of the session's migrations.

Targets (issue 19): a live migration interrupts the guest <= 300 ms; a cold one of the
process driver's guest <= 1 s. Prints JSON, then a one-line summary.
Usage: .venv/bin/python bench/migration.py [--migrations 10] [--instances 10] [--host-rounds 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import cloud_port, percentile, vimha

PROBE_EVERY = 0.005
HOSTS = ("cmp-2", "cmp-3")  # the hosts maintained, in turn


def stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def answers(ip: str, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((ip, 8080), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/1.0 200")
    except OSError:
        return False


class Prober:
    """Asks one address every 5 ms from a thread; keeps the times of the answers."""

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.answers: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)

    def _run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            if answers(self.ip):
                self.answers.append(time.monotonic())
            self.stop.wait(max(0.0, PROBE_EVERY - (time.monotonic() - started)))

    def answer_after(self, t: float, within: float) -> float | None:
        """The first answer at or after `t`, waiting up to `within` seconds for one."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = [a for a in self.answers[-400:] if a >= t]
            if found:
                return found[0]
            time.sleep(0.005)
        return None

    def gap(self, start: float, end: float) -> float:
        """The longest time without an answer between `start` and `end`, in ms."""
        points = [start, *(a for a in self.answers if start <= a <= end), end]
        return max(b - a for a, b in itertools.pairwise(points)) * 1000.0


class Cloud:
    def __init__(self) -> None:
        self.data = Path(tempfile.mkdtemp(prefix="vimha-bench-mig-"))
        self.port = cloud_port()
        up = vimha("up", "--detach", "--data-dir", str(self.data), "--port", str(self.port))
        if up.returncode != 0:
            vimha("down", "--data-dir", str(self.data))
            sys.exit(up.stderr)
        token = (self.data / "admin-token").read_text().strip()
        self.api = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            timeout=60,
            headers={"Authorization": f"Bearer {token}"},
        )
        self.wait(lambda: len([i for i in self.instances() if self.settled(i)]) >= 5, 180)

    def instances(self, vnf_id: str | None = None) -> list[dict[str, Any]]:
        found = self.api.get("/vim/v1/instances").json()
        return [i for i in found if vnf_id is None or i["vnfId"] == vnf_id]

    @staticmethod
    def settled(inst: dict[str, Any]) -> bool:
        return bool(inst["status"] == "ACTIVE" and not inst["taskState"])

    @staticmethod
    def wait(pred: Any, within: float, what: str = "the demo VNFs ACTIVE") -> Any:
        deadline = time.monotonic() + within
        while not (result := pred()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not within {within:g} s")
            time.sleep(0.05)
        return result

    def vnf(self, name: str, count: int, host: str | None = None) -> str:
        vdu: dict[str, Any] = {
            "name": "x",
            "count": count,
            "flavor": "m1.tiny",
            "image": "demo-guest",
            "networks": [{"network": "vnf-b"}],
            "migration": {"policy": "cold"},
        }
        if host is not None:
            vdu["hints"] = {"host": host}
        r = self.api.post("/vim/v1/vnfs", json={"name": name, "vdus": [vdu]})
        r.raise_for_status()
        vnf_id = str(r.json()["id"])
        self.wait(lambda: self.serving(vnf_id), 120, f"{name}: every instance serving")
        return vnf_id

    def serving(self, vnf_id: str) -> bool:
        """Every instance of the VNF ACTIVE, settled and answering on its address."""
        mine = self.instances(vnf_id)
        return all(self.settled(i) and answers(i["ports"][0]["ip"]) for i in mine)

    def ended(self, mid: str) -> dict[str, Any] | None:
        """The migration once it failed, or completed with its interruption recorded."""
        m: dict[str, Any] = self.api.get(f"/vim/v1/migrations/{mid}").json()
        if m["state"] == "FAILED" or (
            m["state"] == "COMPLETED" and m["interruptionMs"] is not None
        ):
            return m
        return None

    def over(self, sid: str) -> dict[str, Any] | None:
        s: dict[str, Any] = self.api.get(f"/vim/v1/maintenance/{sid}").json()
        return s if s["state"] in ("MAINTENANCE_COMPLETE", "ABORTED", "FAILED") else None

    def close(self) -> None:
        self.api.close()
        vimha("down", "--data-dir", str(self.data))
        shutil.rmtree(self.data, ignore_errors=True)


def migrations(cloud: Cloud, rounds: int) -> dict[str, Any]:
    """One instance migrated again and again, probed from outside."""
    vnf_id = cloud.vnf("bench-mig", 1)
    inst = cloud.instances(vnf_id)[0]
    iid, ip = inst["id"], inst["ports"][0]["ip"]
    seen: list[float] = []
    recorded: list[float] = []
    took: list[float] = []
    kinds: set[str] = set()
    with Prober(ip) as prober:
        for _ in range(rounds):
            cloud.wait(lambda: prober.answer_after(time.monotonic() - 0.05, 1), 10, "answers")
            t0 = time.monotonic()
            r = cloud.api.post(f"/vim/v1/instances/{iid}/migrate", json={})
            r.raise_for_status()
            mid = r.json()["id"]
            rec = cloud.wait(lambda mid=mid: cloud.ended(mid), 120, f"migration {mid}")
            if rec["state"] != "COMPLETED":
                raise RuntimeError(f"migration {mid} failed: {rec['detail']}")
            took.append(stamp(rec["finishedAt"]) - stamp(rec["createdAt"]))
            back = prober.answer_after(time.monotonic(), 30)  # the outage is behind
            if back is None:
                raise RuntimeError(f"{ip} does not answer after migration {mid}")
            time.sleep(0.1)  # a few answers after
            seen.append(prober.gap(t0, back))
            recorded.append(float(rec["interruptionMs"]))
            kinds.add(rec["kind"])
            cloud.wait(lambda: cloud.settled(cloud.api.get(f"/vim/v1/instances/{iid}").json()), 30)
    cloud.api.delete(f"/vim/v1/vnfs/{vnf_id}")
    return {
        "migrations": rounds,
        "kinds": sorted(kinds),
        "probe_every_ms": PROBE_EVERY * 1000,
        "interruption_p50_ms": round(percentile(seen, 50), 1),
        "interruption_max_ms": round(max(seen), 1),
        "recorded_p50_ms": round(percentile(recorded, 50), 1),
        "recorded_max_ms": round(max(recorded), 1),
        "migration_p50_s": round(percentile(took, 50), 3),
        "migration_max_s": round(max(took), 3),
    }


def host_maintenance(cloud: Cloud, count: int, rounds: int) -> dict[str, Any]:
    """A host holding `count` instances of one VNF (and some demo ones) emptied by a
    maintenance session and brought back."""
    empty: list[float] = []
    whole: list[float] = []
    serving: list[float] = []
    interruptions: list[float] = []
    moved: list[int] = []
    for r in range(rounds):
        host = HOSTS[r % len(HOSTS)]
        vnf_id = cloud.vnf(f"bench-host-{r}", count, host)
        t0 = time.monotonic()
        resp = cloud.api.post(
            "/vim/v1/maintenance", json={"hosts": [host], "answerWindow": 0, "hostWindow": 0}
        )
        resp.raise_for_status()
        sid = resp.json()["id"]
        s = cloud.wait(lambda sid=sid: cloud.over(sid), 300, f"maintenance of {host}")
        if s["state"] != "MAINTENANCE_COMPLETE":
            raise RuntimeError(f"maintenance of {host}: {s['state']}: {s['reason']}")
        mine = cloud.instances(vnf_id)
        cloud.wait(lambda v=vnf_id: cloud.serving(v), 60, f"{host}'s instances serving elsewhere")
        served = time.monotonic() - t0
        if any(i["host"] == host for i in mine):
            raise RuntimeError(f"{host} not emptied: {[i['name'] for i in mine]}")
        steps = {h["reason"]: stamp(h["at"]) for h in s["history"]}
        began = next(t for why, t in steps.items() if why.startswith(f"{host}: PLANNED"))
        emptied = next(t for why, t in steps.items() if why == f"{host} is empty: MAINTENANCE")
        complete = next(t for why, t in steps.items() if why.startswith("MAINTENANCE_COMPLETE"))
        empty.append(emptied - began)
        whole.append(complete - stamp(s["createdAt"]))
        serving.append(served)
        migs = cloud.api.get("/vim/v1/migrations", params={"sessionId": sid}).json()
        moved.append(len(migs))
        interruptions += [m["interruptionMs"] for m in migs if m["interruptionMs"] is not None]
        cloud.api.delete(f"/vim/v1/vnfs/{vnf_id}")
    return {
        "instances": count,
        "rounds": rounds,
        "migrations_per_round": moved,
        "emptied_p50_s": round(percentile(empty, 50), 2),
        "emptied_max_s": round(max(empty), 2),
        "session_p50_s": round(percentile(whole, 50), 2),
        "session_max_s": round(max(whole), 2),
        "all_serving_p50_s": round(percentile(serving, 50), 2),
        "interruption_p50_ms": round(percentile(interruptions, 50), 1),
        "interruption_max_ms": round(max(interruptions), 1) if interruptions else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--migrations", type=int, default=10, help="migrations of one instance")
    parser.add_argument("--instances", type=int, default=10, help="instances on the host")
    parser.add_argument("--host-rounds", type=int, default=2, help="host maintenances")
    args = parser.parse_args()
    cloud = Cloud()
    try:
        result: dict[str, Any] = {
            "migration": migrations(cloud, args.migrations),
            "host_maintenance": host_maintenance(cloud, args.instances, args.host_rounds),
        }
    finally:
        cloud.close()
    print(json.dumps(result, indent=2))
    m, h = result["migration"], result["host_maintenance"]
    print(
        f"migration ({'/'.join(m['kinds'])}, process driver): interruption seen by an HTTP "
        f"probe p50 {m['interruption_p50_ms']} ms, max {m['interruption_max_ms']} ms over "
        f"{m['migrations']} (recorded by the agent p50 {m['recorded_p50_ms']} ms; target "
        f"cold <= 1000 ms, live <= 300 ms); host maintenance with {h['instances']} instances: "
        f"emptied in p50 {h['emptied_p50_s']} s, back in service after p50 "
        f"{h['session_p50_s']} s (max {h['session_max_s']} s)"
    )


if __name__ == "__main__":
    main()
