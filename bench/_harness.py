"""Shared pieces of the benchmarks: a controller process with SQLite in a temp dir, the
consumer process, process CPU/RSS/PSS sampling from /proc."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from vimha.cloud.consumer import spawn

TOKEN = "bench-admin-token-0123456789"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return cpu, rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def descendants(pid: int) -> list[int]:
    out = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                out += [int(child), *descendants(int(child))]
    except OSError:
        pass
    return out


def own_stats(pid: int) -> tuple[float, float]:
    """(cpu seconds used so far, RSS in MiB) of the process alone, without its children."""
    return _one(pid)


def pss_mib(pid: int) -> float:
    """The process's proportional set size in MiB: its RSS with each shared page divided
    among the processes that map it (what N copies of one program really cost together)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def proc_stats(pid: int) -> tuple[float, float]:
    """(cpu seconds used so far, RSS in MiB) of a process and all its descendants."""
    cpu = rss = 0.0
    for p in [pid, *descendants(pid)]:
        try:
            c, r = _one(p)
        except OSError:
            continue
        cpu += c
        rss += r
    return cpu, rss


class Controller:
    def __init__(self, **overrides: Any) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="vimha-bench-"))
        self.port = free_port()
        cfg: dict[str, Any] = {
            "api": {"port": self.port},
            "store": {"url": f"sqlite:///{self.base / 'vimha.db'}"},
            "auth": {"tokens": [{"name": "bench", "token": TOKEN, "role": "admin"}]},
            "log_level": "warning",
        }
        cfg.update(overrides)
        self.config = self.base / "c.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {TOKEN}"}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Controller:
        vimha = [sys.executable, "-m", "vimha"]
        subprocess.run(
            [*vimha, "db", "upgrade", "--config", str(self.config)], check=True, capture_output=True
        )
        self.proc = subprocess.Popen(
            [*vimha, "controller", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/vimfm/api_versions", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("controller did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.base, ignore_errors=True)


class Consumer:
    def __init__(self, out: Path) -> None:
        self.port = free_port()
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Consumer:
        self.proc = spawn(self.port, str(self.out))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def cloud_port() -> int:
    """A free block of ports for an embedded cloud (`vimha up --port`)."""
    from vimha.cloud.nodes import check_ports
    from vimha.domain.errors import Permanent

    for _ in range(200):
        port = random.randrange(20000, 32000)
        try:
            check_ports(port)
        except Permanent:
            continue
        return port
    raise RuntimeError("no free port block")


def vimha(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`vimha ARGS` in this Python, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "vimha", *args], capture_output=True, text=True, timeout=timeout
    )
