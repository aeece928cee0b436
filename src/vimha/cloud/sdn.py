"""The embedded cloud's SDN (issue 18), in network-namespace mode: an Open vSwitch per compute
node run by its agent, the SDN controller as a service group of the control nodes (`sdn`:
the centralised pair ctl-1/ctl-2, active-standby; or the distributed model, all-active on
ctl-1..3), a data plane between the compute nodes for their VXLAN tunnels, two demo VNF
networks and a stand-in VNF endpoint per port: a network namespace with one interface (the
port's MAC and IP) whose peer is a port of its node's switch. The demo VNFs' instances are
there too: each guest in a network namespace of its own, its ports veths on its node's
switch (the agent's `bridges`), bound as port intents by the controller
(engine/port_binding.py), on the same SDN networks as the stand-ins (by name).

Data plane: bridge `<tag>d`, node i's link `<tag><i>d` (`data` inside its namespace),
tunnel addresses 10.102.<octet>.<i>/24. Endpoints: namespace `<tag>-<port>`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vimha.cloud.demo_groups import CONTROL
from vimha.cloud.netns import Netns, _run
from vimha.cloud.nodes import EMBEDDED_VIM, NodePlan, coordination_url
from vimha.drivers.guest_netns import tx_checksum_off

MODELS = ("centralised", "distributed", "off")
OF_OFFSET = 360  # the OpenFlow port of the instances: the cloud's port + this
DATA = "data"
# (network, vni, subnet prefix) and (port, network, node, host part)
NETWORKS = (("vnf-a", 100, "192.168.100"), ("vnf-b", 101, "192.168.101"))
PORTS = (
    ("a1", "vnf-a", "cmp-1", 11), ("a2", "vnf-a", "cmp-2", 12),
    ("a3", "vnf-a", "cmp-3", 13), ("a4", "vnf-a", "cmp-4", 14),
    ("b1", "vnf-b", "cmp-1", 21), ("b3", "vnf-b", "cmp-3", 23),
)  # fmt: skip


def available() -> str | None:
    """None when Open vSwitch is installed, else what is missing."""
    for tool in ("ovs-vswitchd", "ovsdb-server", "ovs-vsctl"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt: openvswitch-switch)"
    return None


def of_port(port: int) -> int:
    return port + OF_OFFSET


def members(model: str) -> tuple[str, ...]:
    return CONTROL if model == "distributed" else CONTROL[:2]


def tunnel_address(net: Netns, index: int) -> str:
    return f"10.102.{net.octet}.{index}"


def endpoint_namespace(net: Netns, port: str) -> str:
    return f"{net.tag}-{port}"


def endpoints() -> list[dict[str, Any]]:
    """The demo ports, as port intents (fixed ids: a restarted cloud finds the same ones)."""
    out = []
    for name, network, node, host in PORTS:
        prefix = dict((n, p) for n, _, p in NETWORKS)[network]
        out.append(
            {
                "id": name,
                "networkId": network,
                "host": node,
                "mac": f"02:76:68:00:{int(network[-1], 16):02x}:{host:02x}",
                "ip": f"{prefix}.{host}",
                "device": f"vnf-{name}",
            }
        )
    return out


class SdnPlan:
    def __init__(self, model: str, port: int, net: Netns, data_dir: Path) -> None:
        self.model = model
        self.port = port
        self.net = net
        self.data_dir = data_dir

    def controllers(self) -> list[str]:
        return [
            f"tcp:{self.net.node_address('mgmt', i)}:{of_port(self.port)}"
            for i, node in enumerate(CONTROL, start=1)
            if node in members(self.model)
        ]

    def patch_agent(self, config: dict[str, Any], node: NodePlan) -> None:
        index = int(node.addresses["mgmt"].rsplit(".", 1)[1])
        home = self.data_dir / "nodes" / node.name
        if node.name in members(self.model):
            mgmt = node.addresses["mgmt"]
            config.setdefault("groups", []).append(
                {
                    "name": "sdn",
                    "policy": "all-active" if self.model == "distributed" else "active-standby",
                    "members": list(members(self.model)),
                    "address": f"{mgmt}:{of_port(self.port)}",
                    "monitor_interval": 0.03,
                    # an instance slow to answer on a loaded machine is not failed at once
                    # (one that exited or is stopped is)
                    "monitor_grace": 1.0,
                    "handler": {
                        "type": "sdn",
                        "listen": f"{mgmt}:{of_port(self.port)}",
                        "coordination_url": coordination_url(self.data_dir),
                    },
                }
            )
        if "compute" in node.roles:
            config["switch"] = {
                "underlay": DATA,
                "tunnel_address": f"{tunnel_address(self.net, index)}/24",
                "datapath_id": f"{index:016x}",
                "controllers": self.controllers(),
            }
            # the instances' ports are real interfaces on the node's switch: each guest in a
            # network namespace of its own, its veths attached by the switch keeper
            if "hypervisor" in config:
                config["hypervisor"]["bridges"] = {"*": "br-vnf"}
        config.setdefault("coordination_url", coordination_url(self.data_dir))
        config.setdefault("run_dir", str(home / "run"))
        config.setdefault("vim", EMBEDDED_VIM)


def create(net: Netns, nodes: Sequence[NodePlan]) -> None:
    """The data plane between the compute nodes, and the stand-in endpoints."""
    destroy(net, nodes)
    bridge = f"{net.tag}d"
    _run("ip", "link", "add", bridge, "type", "bridge")
    _run("ip", "link", "set", bridge, "up")
    index = {n.name: int(n.addresses["mgmt"].rsplit(".", 1)[1]) for n in nodes}
    for n in nodes:
        if "compute" not in n.roles:
            continue
        outer = f"{net.tag}{index[n.name]}d"
        ns = net.namespace(n.name)
        _run("ip", "link", "add", outer, "type", "veth", "peer", "name", DATA, "netns", ns)
        _run("ip", "link", "set", outer, "master", bridge)
        _run("ip", "link", "set", outer, "up")
        _run("ip", "-n", ns, "link", "set", DATA, "up")
    for port in endpoints():
        ep = endpoint_namespace(net, port["id"])
        _run("ip", "netns", "add", ep)
        _run("ip", "-n", ep, "link", "set", "lo", "up")
        node_ns = net.namespace(port["host"])
        _run("ip", "link", "add", port["device"], "netns", node_ns, "type", "veth",
             "peer", "name", "eth0", "netns", ep)  # fmt: skip
        _run("ip", "-n", ep, "link", "set", "eth0", "address", port["mac"])
        _run("ip", "-n", ep, "addr", "add", f"{port['ip']}/24", "dev", "eth0")
        _run("ip", "-n", ep, "link", "set", "eth0", "up")
        _run("ip", "-n", node_ns, "link", "set", port["device"], "up")
        # on the userspace datapath: its TCP checksums made here (drivers/guest_netns.py)
        tx_checksum_off(f"/run/netns/{ep}", ["eth0"])


def destroy(net: Netns, nodes: Sequence[NodePlan]) -> None:
    for port in endpoints():
        _run("ip", "netns", "del", endpoint_namespace(net, port["id"]), check=False)
    for n in nodes:
        index = int(n.addresses["mgmt"].rsplit(".", 1)[1])
        _run("ip", "link", "del", f"{net.tag}{index}d", check=False)
    _run("ip", "link", "del", f"{net.tag}d", check=False)


async def seed(url: str) -> None:
    """The demo networks and ports, as the API would store them."""
    from vimha.drivers.clock import SystemClock
    from vimha.drivers.coordination import open_coordination
    from vimha.sdnkeys import sdn_prefix

    coord = open_coordination(url, SystemClock())
    prefix = sdn_prefix(EMBEDDED_VIM)
    try:
        for name, vni, _ in NETWORKS:
            doc = {"id": name, "name": name, "vni": vni}
            await coord.put(f"{prefix}networks/{name}", json.dumps(doc))
        for port in endpoints():
            await coord.put(f"{prefix}ports/{port['id']}", json.dumps(port))
    finally:
        await coord.close()


def prepare(model: str, port: int, net: Netns, data_dir: Path, nodes: Sequence[NodePlan]) -> None:
    create(net, nodes)
    asyncio.run(seed(coordination_url(data_dir)))
