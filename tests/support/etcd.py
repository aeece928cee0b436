"""A real 3-member etcd cluster on loopback for the coordination contract tests, with
sub-second election timing (etcd clamps a lease's TTL to about 1.5 x the election timeout)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx


def find_etcd() -> str | None:
    return shutil.which("etcd")


class EtcdCluster:
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
        log = open(self.base / f"m{i}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[i] = subprocess.Popen(
            [
                "etcd",
                "--name", f"m{i}",
                "--data-dir", str(self.base / f"m{i}"),
                "--listen-client-urls", f"http://{self.host}:{client}",
                "--advertise-client-urls", f"http://{self.host}:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", self.cluster,
                "--initial-cluster-state", "new",
                "--heartbeat-interval", "50",
                "--election-timeout", "500",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def start(self) -> None:
        for i in range(len(self.ports)):
            self.start_member(i)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                ok = all(
                    httpx.get(f"http://{self.host}:{c}/health", timeout=1).json().get("health")
                    == "true"
                    for c, _ in self.ports
                )
                if ok:
                    return
            except (httpx.HTTPError, ValueError):
                pass
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
