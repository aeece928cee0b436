"""Network-namespace mode of the embedded cloud (`vimha up --netns`, root): each node gets its
own network namespace with one veth link per plane into one bridge per plane, so a plane
fault is a real link going down and a partition is a real nftables drop rule.

Names carry a tag made from the cloud's port, so that two clouds do not collide:
namespace `<tag>-<node>`, bridges `<tag>m`/`<tag>s`, root-side veths `<tag><i><plane>`.
Plane j uses 10.(100+j).<octet>.0/24: node i is .i, the controller (root namespace) .254.

The VNF networks (`create_vnf_networks`, when no SDN switches them): each compute node has a
Linux bridge per network, `br-<network>` in its namespace, where the process driver puts the
host side of its guests' ports; the nodes' bridges of a network are joined by one bridge of
the cloud's, `<tag>v<j>`, through a veth pair per node (`<tag><i>v<j>` here, `up-<network>`
in the node), so that guests on different nodes share their network's layer 2.
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
from pathlib import Path

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


def vnf_bridge(network: str) -> str:
    """A compute node's bridge for a VNF network (inside the node's namespace)."""
    return f"br-{network}"[:15]


def _vnf_links(net: Netns, index: int, j: int, network: str) -> tuple[str, str]:
    """A node's link into the cloud's bridge of network j: (root side, node side)."""
    return f"{net.tag}{index}v{j}", f"up-{network}"[:15]


def create_vnf_networks(
    net: Netns, computes: Sequence[tuple[int, str]], networks: Sequence[str]
) -> None:
    """The VNF networks' bridges: in each compute node (`computes`: (index, name), its
    namespace made by `create`) and the cloud's one per network joining them."""
    destroy_vnf_networks(net, computes, networks)
    for j, network in enumerate(networks):
        joint = f"{net.tag}v{j}"
        _run("ip", "link", "add", joint, "type", "bridge")
        # a hub: a guest recovered on another node is reached there at once, with no
        # forwarding entry of the cloud's bridge left pointing at its old node
        _run("ip", "link", "set", joint, "type", "bridge", "ageing_time", "0")
        _run("ip", "link", "set", joint, "up")
        for index, node in computes:
            ns = net.namespace(node)
            outer, inner = _vnf_links(net, index, j, network)
            _run("ip", "-n", ns, "link", "add", vnf_bridge(network), "type", "bridge")
            _run("ip", "-n", ns, "link", "set", vnf_bridge(network), "up")
            _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
            _run("ip", "link", "set", outer, "master", joint)
            _run("ip", "link", "set", outer, "up")
            _run("ip", "-n", ns, "link", "set", inner, "master", vnf_bridge(network))
            _run("ip", "-n", ns, "link", "set", inner, "up")


def destroy_vnf_networks(
    net: Netns, computes: Sequence[tuple[int, str]], networks: Sequence[str]
) -> None:
    """Remove what `create_vnf_networks` made (the nodes' bridges go with their namespaces,
    or here when the namespaces stay); what is not there is skipped."""
    for j, network in enumerate(networks):
        for index, node in computes:
            _run("ip", "link", "del", _vnf_links(net, index, j, network)[0], check=False)
            if Path(f"/run/netns/{net.namespace(node)}").exists():
                _run("ip", "-n", net.namespace(node), "link", "del", vnf_bridge(network),
                     check=False)  # fmt: skip
        _run("ip", "link", "del", f"{net.tag}v{j}", check=False)


def namespace_pids(net: Netns, node: str) -> list[int]:
    """The processes running in a node's namespace."""
    out = _run("ip", "netns", "pids", net.namespace(node), check=False).stdout.split()
    return [int(p) for p in out if p.isdigit()]


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
