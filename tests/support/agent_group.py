"""One service group run by three real agent processes on this machine, sharing a single-host
coordination file: the harness of the stateful handlers' system tests (PostgreSQL, MariaDB)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import free_port
from tests.support.procs import stop_all
from vimha.drivers.clock import SystemClock
from vimha.drivers.coord_mirror import load_json
from vimha.drivers.coordination import open_coordination


def until(pred: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := pred()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)
    return result


class AgentGroup:
    """Group `name` (active-standby) on nodes `nodes`; `handler(port)` is each member's
    handler declaration, on a port of its own."""

    def __init__(
        self,
        base: Path,
        nodes: tuple[str, ...],
        handler: Callable[[int], dict[str, Any]],
        name: str = "db",
    ) -> None:
        self.base = base
        self.nodes = nodes
        self.url = f"local://{base / 'coord.db'}"
        self.prefix = f"/vimha/vimha/groups/{name}/"
        self.ports = {n: free_port() for n in nodes}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        udp = free_port()
        for node in nodes:
            home = base / node
            home.mkdir(parents=True)
            config = {
                "node": node,
                "key": "k" * 16,
                "planes": [
                    {"name": "mgmt", "local": "127.0.0.1", "controller": f"127.0.0.1:{udp}"}
                ],
                "coordination_url": self.url,
                "run_dir": str(home / "run"),
                "log_level": "warning",
                "groups": [
                    {
                        "name": name,
                        "policy": "active-standby",
                        "members": list(nodes),
                        "address": f"127.0.0.1:{self.ports[node]}",
                        "handler": handler(self.ports[node]),
                    }
                ],
            }
            (home / "agent.yaml").write_text(yaml.safe_dump(config))

    def start(self, node: str) -> None:
        with (self.base / f"{node}.log").open("ab") as log:
            self.procs[node] = subprocess.Popen(
                [sys.executable, "-m", "vimha", "agent", "--config",
                 str(self.base / node / "agent.yaml")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def start_all(self, timeout: float = 120) -> None:
        for node in self.nodes:
            self.start(node)
        until(lambda: sum(m.get("healthy", False) for m in self.members().values()) == 3, timeout)

    def stop(self) -> None:
        stop_all(self.procs.values(), 20)

    def members(self) -> dict[str, dict[str, Any]]:
        async def read() -> dict[str, dict[str, Any]]:
            coord = open_coordination(self.url, SystemClock())
            try:
                _, entries = await coord.list(self.prefix + "members/")
                return {e.key.rsplit("/", 1)[1]: load_json(e) for e in entries}
            finally:
                await coord.close()

        return asyncio.run(read())

    def active(self) -> dict[str, Any] | None:
        found = [
            m for m in self.members().values() if m.get("role") == "active" and m.get("healthy")
        ]
        return found[0] if found else None

    def settled(self) -> bool:
        members = self.members().values()
        roles = sorted(str(m.get("role")) for m in members)
        return all(m.get("healthy") for m in members) and roles == ["active", "standby", "standby"]
