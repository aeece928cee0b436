"""Network-namespace mode of the embedded cloud (`vimha up --netns`, root): each node gets its
own network namespace with one veth link per plane into one bridge per plane, so a plane
fault is a real link going down and a partition is a real nftables drop rule.

Names carry a tag made from the cloud's port, so that two clouds do not collide:
namespace `<tag>-<node>`, bridges `<tag>m`/`<tag>s`, root-side veths `<tag><i><plane>`.
Plane j uses 10.(100+j).<octet>.0/24: node i is .i, the controller (root namespace) .254.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from vimha.domain.errors import Permanent


@dataclass(frozen=True, slots=True)
class Netns:
    tag: str
    octet: int
    planes: tuple[str, ...]

    @classmethod
    def for_port(cls, port: int, planes: Sequence[str]) -> Netns:
        return cls(f"vh{port}", port % 250 + 1, tuple(planes))

    def namespace(self, node: str) -> str:
        return f"{self.tag}-{node}"

    def bridge(self, plane: str) -> str:
        return f"{self.tag}{plane[0]}"

    def veth(self, index: int, plane: str) -> str:
        return f"{self.tag}{index}{plane[0]}"

    def node_address(self, plane: str, index: int) -> str:
        return f"10.{100 + self.planes.index(plane)}.{self.octet}.{index}"

    def controller_address(self, plane: str) -> str:
        return self.node_address(plane, 254)

    @property
    def table(self) -> str:
        return f"vimha_{self.tag}"


def available() -> str | None:
    """None when this machine can run the netns mode, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt: {'iproute2' if tool == 'ip' else 'nftables'})"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise Permanent(f"`{' '.join(argv)}` failed: {result.stderr.strip()[:300]}")
    return result


def create(net: Netns, nodes: Sequence[str]) -> None:
    """Bridges, one namespace per node, one veth per plane; leftovers of an earlier run of
    the same cloud are removed first."""
    destroy(net, nodes)
    for plane in net.planes:
        br = net.bridge(plane)
        _run("ip", "link", "add", br, "type", "bridge")
        _run("ip", "addr", "add", f"{net.controller_address(plane)}/24", "dev", br)
        _run("ip", "link", "set", br, "up")
    for index, node in enumerate(nodes, start=1):
        ns = net.namespace(node)
        _run("ip", "netns", "add", ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        for plane in net.planes:
            outer = net.veth(index, plane)
            _run("ip", "link", "add", outer, "type", "veth", "peer", "name", plane, "netns", ns)
            _run("ip", "link", "set", outer, "master", net.bridge(plane))
            _run("ip", "link", "set", outer, "up")
            address = f"{net.node_address(plane, index)}/24"
            _run("ip", "-n", ns, "addr", "add", address, "dev", plane)
            _run("ip", "-n", ns, "link", "set", plane, "up")


def destroy(net: Netns, nodes: Sequence[str]) -> None:
    """Remove what `create` made; what is not there is skipped."""
    _run("nft", "delete", "table", "inet", net.table, check=False)
    for index, node in enumerate(nodes, start=1):
        # what still runs inside (a daemon a member left behind: Erlang's epmd) goes first
        ns = net.namespace(node)
        deadline = time.monotonic() + 3
        while pids := _run("ip", "netns", "pids", ns, check=False).stdout.split():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)  # gone once they exited: then the namespace goes with its links
        # a namespace's links go with it only once the kernel has cleaned it up, later (and
        # never while a process still runs in it): each pair is removed now, from its end here
        for plane in net.planes:
            _run("ip", "link", "del", net.veth(index, plane), check=False)
        _run("ip", "netns", "del", ns, check=False)
    for plane in net.planes:
        _run("ip", "link", "del", net.bridge(plane), check=False)


def exec_prefix(net: Netns, node: str) -> list[str]:
    return ["ip", "netns", "exec", net.namespace(node)]


def set_link(net: Netns, node: str, plane: str, up: bool) -> None:
    """Take a node's link on a plane down (or up): inside the node's namespace."""
    _run("ip", "-n", net.namespace(node), "link", "set", plane, "up" if up else "down")


def links_down(net: Netns, node: str) -> list[str]:
    out = []
    for plane in net.planes:
        result = _run("ip", "-n", net.namespace(node), "-o", "link", "show", plane, check=False)
        if result.returncode == 0 and "state DOWN" in result.stdout:
            out.append(plane)
    return out


def partition(net: Netns, addresses: Sequence[str]) -> None:
    """Drop everything these node addresses send to the controllers (root namespace)."""
    _run("nft", "add", "table", "inet", net.table)
    chain = "{ type filter hook input priority 0 ; policy accept ; }"
    _run("nft", "add", "chain", "inet", net.table, "input", chain)
    for address in addresses:
        _run("nft", "add", "rule", "inet", net.table, "input", "ip", "saddr", address, "drop")


def heal_partition(net: Netns) -> bool:
    """End a partition; True if there was one."""
    return _run("nft", "delete", "table", "inet", net.table, check=False).returncode == 0
