"""etcd members for `vimha up --ha` and the tests: sub-second election timing, since etcd
clamps a lease's TTL to about 1.5 x the election timeout and vimha's leases are 1-3 s."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx

from vimha.drivers.tls import client_tls

HEARTBEAT_MS = 50
ELECTION_MS = 500


def find_etcd() -> str | None:
    return shutil.which("etcd")


def member_argv(
    name: str, data_dir: Path, host: str, client: int, peer: int, cluster: str, peer_host: str
) -> list[str]:
    """One member; `cluster` is the initial cluster (name=http://host:peer,...). A member
    whose data dir exists rejoins with its data (the initial flags are then ignored)."""
    return [
        "etcd",
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", f"http://{host}:{client}",
        "--advertise-client-urls", f"http://{host}:{client}",
        "--listen-peer-urls", f"http://{peer_host}:{peer}",
        "--initial-advertise-peer-urls", f"http://{peer_host}:{peer}",
        "--initial-cluster", cluster,
        "--initial-cluster-state", "new",
        "--heartbeat-interval", str(HEARTBEAT_MS),
        "--election-timeout", str(ELECTION_MS),
    ]  # fmt: skip


def healthy(endpoints: list[str], timeout: float = 1.0) -> bool:
    """Every member (host:port) answers /health with health true."""
    try:
        with httpx.Client(timeout=timeout, verify=client_tls()) as http:
            return all(
                http.get(f"http://{e}/health").json().get("health") == "true" for e in endpoints
            )
    except (httpx.HTTPError, ValueError):
        return False


class EtcdCluster:
    """A cluster on loopback, started and stopped as a whole (tests)."""

    def __init__(self, base: Path, ports: list[tuple[int, int]], host: str = "127.0.0.1") -> None:
        self.base = base
        self.host = host  # where clients reach it (peers stay on loopback)
        self.ports = ports  # (client, peer) per member
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.cluster = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, (_, p) in enumerate(ports))

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(f"{self.host}:{c}" for c, _ in self.ports)

    def start_member(self, i: int) -> None:
        client, peer = self.ports[i]
        argv = member_argv(
            f"m{i}", self.base / f"m{i}", self.host, client, peer, self.cluster, "127.0.0.1"
        )
        with open(self.base / f"m{i}.log", "ab") as log:
            self.procs[i] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def start(self) -> None:
        for i in range(len(self.ports)):
            self.start_member(i)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if healthy([f"{self.host}:{c}" for c, _ in self.ports]):
                return
            time.sleep(0.2)
        raise RuntimeError(f"etcd cluster did not become healthy; logs in {self.base}")

    def kill_member(self, i: int) -> None:
        self.procs[i].kill()
        self.procs[i].wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
        for proc in self.procs.values():
            proc.wait(10)
