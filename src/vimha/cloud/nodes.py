"""The embedded cloud's nodes: 3 control, 4 compute (2 zones, 2 racks), 1 storage, each with an
agent on two loopback planes and one demo service; and the launcher that keeps the agents
alive (the role systemd plays on a real node)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from vimha.cloud.parent import ENV

log = logging.getLogger("vimha.cloud")
RESTART_DELAY = 2.0

# name, roles, zone, rack, service
LAYOUT = (
    ("ctl-1", ("control",), "z1", "r1", "api"),
    ("ctl-2", ("control",), "z1", "r1", "api"),
    ("ctl-3", ("control",), "z2", "r2", "api"),
    ("cmp-1", ("compute",), "z1", "r1", "nova-compute"),
    ("cmp-2", ("compute",), "z1", "r1", "nova-compute"),
    ("cmp-3", ("compute",), "z2", "r2", "nova-compute"),
    ("cmp-4", ("compute",), "z2", "r2", "nova-compute"),
    ("sto-1", ("storage",), "z1", "r1", "storage-daemon"),
)
PLANES = ("mgmt", "storage")


@dataclass(frozen=True, slots=True)
class NodePlan:
    name: str
    roles: tuple[str, ...]
    location: dict[str, str]
    key: str
    addresses: dict[str, str]  # plane -> this node's address
    service: str
    service_port: int


def plan(data_dir: Path, port: int) -> list[NodePlan]:
    """The nodes, with keys kept in the data dir (0600) so restarts keep them."""
    keys_file = data_dir / "node-keys.json"
    keys: dict[str, str] = json.loads(keys_file.read_text()) if keys_file.exists() else {}
    nodes = []
    for i, (name, roles, zone, rack, service) in enumerate(LAYOUT, start=1):
        keys.setdefault(name, secrets.token_hex(16))
        nodes.append(
            NodePlan(
                name,
                roles,
                {"site": "s1", "zone": zone, "rack": rack},
                keys[name],
                {plane: f"127.{j + 1}.{i // 256}.{i % 256}" for j, plane in enumerate(PLANES)},
                service,
                port + 100 + i,
            )
        )
    fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(keys, fh)
    return nodes


def listen_addresses(port: int) -> dict[str, str]:
    return {plane: f"127.0.0.1:{port + 1 + j}" for j, plane in enumerate(PLANES)}


def write_agent_config(data_dir: Path, node: NodePlan, port: int, token: str) -> Path:
    home = data_dir / "nodes" / node.name
    (home / "control").mkdir(parents=True, exist_ok=True)
    listen = listen_addresses(port)
    config = {
        "node": node.name,
        "key": node.key,
        "interval": 0.1,
        "log_level": "warning",
        "controller_url": f"http://127.0.0.1:{port}",
        "token": token,
        "control_dir": str(home / "control"),
        "planes": [
            {"name": p, "local": node.addresses[p], "controller": listen[p]} for p in PLANES
        ],
        "services": [
            {
                "name": node.service,
                "check": "http",
                "target": f"http://127.0.0.1:{node.service_port}/",
                "command": [
                    sys.executable,
                    "-m",
                    "vimha.cloud.demo_service",
                    "--port",
                    str(node.service_port),
                    "--node",
                    node.name,
                    "--service",
                    node.service,
                ],
                "interval": 0.2,
                "timeout": 0.5,
                "restart": {"max_restarts": 5, "window": 60, "start_grace": 5},
            }
        ],
    }
    path = home / "agent.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(config, fh)
    return path


def write_state(data_dir: Path, nodes: list[NodePlan]) -> None:
    """What `vimha chaos` needs to find the nodes."""
    state = {
        n.name: {
            **asdict(n),
            "key": None,
            "control": str(data_dir / "nodes" / n.name / "control"),
            "config": str(data_dir / "nodes" / n.name / "agent.yaml"),
        }
        for n in nodes
    }
    (data_dir / "cloud.json").write_text(json.dumps(state, indent=2))


class Launcher:
    """Starts one agent per node and restarts any that dies, after RESTART_DELAY."""

    def __init__(self, configs: dict[str, Path], log_dir: Path) -> None:
        self.configs = configs
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = {}

    def _start(self, node: str) -> None:
        logfile = open(self.log_dir / f"{node}.log", "ab")  # noqa: SIM115 - owned by the child
        # Its own session: a terminal's Ctrl-C reaches only `vimha up`, which stops the
        # controller first and the agents after, so shutting down raises no alarm.
        self.procs[node] = subprocess.Popen(
            [sys.executable, "-m", "vimha", "agent", "--config", str(self.configs[node])],
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, ENV: "1"},
        )
        logfile.close()

    async def run(self, stop: asyncio.Event) -> None:
        for node in self.configs:
            self._start(node)
        log.info("started %d node agents", len(self.configs))
        dead_since: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            for node, proc in self.procs.items():
                if proc.poll() is None:
                    continue
                since = dead_since.setdefault(node, loop.time())
                if loop.time() - since >= RESTART_DELAY:
                    log.warning("agent of %s exited (%s); restarting it", node, proc.returncode)
                    self.restarts[node] = self.restarts.get(node, 0) + 1
                    del dead_since[node]
                    self._start(node)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def host_inventory(nodes: list[NodePlan]) -> list[dict[str, Any]]:
    return [
        {"name": n.name, "roles": list(n.roles), "location": n.location, "key": n.key}
        for n in nodes
    ]
