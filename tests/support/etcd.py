"""A real 3-member etcd cluster on loopback for the coordination tests (the same members as
`vimha up --ha` runs), and a single member of a test's own (its flags chosen, restartable)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.support.ports import free_port
from vimha.cloud.etcd import EtcdCluster, find_etcd, healthy

__all__ = ["EtcdCluster", "EtcdMember", "find_etcd"]


class EtcdMember:
    """One etcd member on free ports, its data kept across a restart."""

    def __init__(self, base: Path, *flags: str) -> None:
        self.base = base
        self.flags = flags
        self.client, self.peer = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.client}"

    def start(self) -> None:
        argv = ["etcd", "--name", "m1", "--data-dir", str(self.base / "data"),
                "--listen-client-urls", f"http://127.0.0.1:{self.client}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.client}",
                "--listen-peer-urls", f"http://127.0.0.1:{self.peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer}",
                "--initial-cluster", f"m1=http://127.0.0.1:{self.peer}", *self.flags]  # fmt: skip
        with open(self.base / "etcd.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not healthy([f"127.0.0.1:{self.client}"], 0.5):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"etcd did not start: {self.base}/etcd.log")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
