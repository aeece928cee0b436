"""Starting the embedded cloud's helper programs as processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml


def find_processes(*needles: str) -> list[int]:
    """Live processes (not zombies) whose command line holds every needle."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X") and all(n in cmd for n in needles):
            pids.append(int(entry.name))
    return pids


def guest_processes(node: str, under: Path | None = None) -> list[int]:
    """The guests (VNF instances) a node's agent started. Process guests carry VIMHA_NODE
    and VIMHA_HOME (their folder); QEMU guests (libvirt) are named `vimha-<node>-...` and
    their files lie in the node's guests' folder. `under`: only those whose folder lies
    under it (one cloud's data folder: another cloud on the machine may have nodes of the
    same names)."""
    marker = f"VIMHA_NODE={node}".encode()
    root = f"{under.resolve()}/".encode() if under is not None else b"/"
    home = b"VIMHA_HOME=" + root
    qemu = f"guest=vimha-{node}-".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
            if qemu in argv:
                if root in argv:
                    pids.append(int(entry.name))
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in env and any(e.startswith(home) for e in env):
            pids.append(int(entry.name))
    return pids


def spawn_module(
    module: str, port: int, *args: str, timeout: float = 15.0
) -> subprocess.Popen[bytes]:
    """`python -m module --port PORT args...`, once it accepts connections on 127.0.0.1."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{module} did not start on port {port}")


class AgentProcess:
    """A `vimha agent` on two loopback planes (mgmt, storage), with a control dir for the
    drop rule, as a process that can be started, killed (SIGKILL) and stopped."""

    def __init__(
        self,
        base: Path,
        node: str,
        key: str,
        addrs: tuple[str, str],
        ports: tuple[int, int],
        interval: float = 0.1,
        log_level: str | None = None,
        **extra: Any,
    ) -> None:
        self.node = node
        self.control = base / f"{node}-control"
        self.control.mkdir()
        self.config = base / f"{node}.yaml"
        self.log = base / f"{node}.log"  # its output, kept (appended at each start)
        config: dict[str, Any] = {
            "node": node,
            "key": key,
            "interval": interval,
            "control_dir": str(self.control),
            "planes": [
                {"name": "mgmt", "local": addrs[0], "controller": f"127.0.0.1:{ports[0]}"},
                {"name": "storage", "local": addrs[1], "controller": f"127.0.0.1:{ports[1]}"},
            ],
        }
        if log_level:
            config["log_level"] = log_level
        config.update(extra)
        self.config.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vimha", "agent", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
