"""The `vip` handler (issue 4) with real links (root): two agents in two network namespaces
on one bridge hold a virtual IP as an active-standby group. The holder's link is cut: its
monitor fails, it drops the address and releases the slot; the standby adds it and announces
it with gratuitous ARP, so the root namespace's neighbour entry moves to the new holder's
MAC without asking."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port, require_system
from tests.support.procs import stop_all
from tests.system.test_embedded_cloud import until
from vimha.cloud import netns
from vimha.cloud.netns import Netns

NODES = ("v1", "v2")


class Pair:
    def __init__(self, base: Path) -> None:
        self.net = Netns.for_port(free_port(), ("mgmt",))
        self.vip = self.net.node_address("mgmt", 240)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.base = base
        netns.create(self.net, list(NODES))
        for index, node in enumerate(NODES, start=1):
            config: dict[str, Any] = {
                "node": node,
                "key": "k" * 16,
                "planes": [
                    {
                        "name": "mgmt",
                        "local": self.net.node_address("mgmt", index),
                        "controller": f"{self.net.controller_address('mgmt')}:9",
                    }
                ],
                "coordination_url": f"local://{base / 'coord.db'}",
                "run_dir": str(base / node),
                "groups": [
                    {
                        "name": "addr",
                        "policy": "active-standby",
                        "members": list(NODES),
                        "address": f"{self.vip}:0",
                        "handler": {"type": "vip", "interface": "mgmt", "vip": f"{self.vip}/24"},
                    }
                ],
            }
            path = base / f"{node}.yaml"
            path.write_text(yaml.safe_dump(config))
            log = (base / f"{node}.log").open("ab")
            argv = [*netns.exec_prefix(self.net, node), sys.executable, "-m", "vimha", "agent"]
            self.procs.append(
                subprocess.Popen(
                    [*argv, "--config", str(path)], stdout=log, stderr=subprocess.STDOUT
                )
            )

    def holders(self) -> list[str]:
        out = []
        for node in NODES:
            addrs = subprocess.run(
                ["ip", "-n", self.net.namespace(node), "-o", "addr", "show", "dev", "mgmt"],
                capture_output=True,
                text=True,
            ).stdout
            if f" {self.vip}/" in addrs:
                out.append(node)
        return out

    def mac(self, node: str) -> str:
        return subprocess.run(
            ["ip", "netns", "exec", self.net.namespace(node), "cat", "/sys/class/net/mgmt/address"],
            capture_output=True,
            text=True,
        ).stdout.strip()

    def neighbour(self) -> str:
        """The MAC the root namespace has for the VIP (learnt from ARP only)."""
        out = subprocess.run(["ip", "neigh", "show", self.vip], capture_output=True, text=True)
        fields = out.stdout.split()
        return fields[fields.index("lladdr") + 1] if "lladdr" in fields else ""

    def close(self) -> None:
        stop_all(self.procs)
        netns.destroy(self.net, list(NODES))


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    require_system(netns.available() is None, f"netns: {netns.available()}")
    p = Pair(tmp_path)
    try:
        yield p
    finally:
        p.close()


def test_the_vip_follows_the_active_and_is_announced(pair: Pair) -> None:
    [first] = until(lambda: pair.holders() if len(pair.holders()) == 1 else None)
    with contextlib.suppress(OSError):  # a connection attempt: the root namespace ARPs
        socket.create_connection((pair.vip, 9), timeout=1).close()
    assert until(pair.neighbour) == pair.mac(first)
    other = next(n for n in NODES if n != first)
    netns.set_link(pair.net, first, "mgmt", up=False)
    until(lambda: pair.holders() == [other])  # never both: the holder drops it first
    # the gratuitous ARP moved the root namespace's entry, without an ARP request from it
    until(lambda: pair.neighbour() == pair.mac(other))
    netns.set_link(pair.net, first, "mgmt", up=True)
    time.sleep(1.0)
    assert pair.holders() == [other]  # the old holder came back as a standby
