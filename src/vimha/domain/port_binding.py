"""Binding the compute model's ports to the SDN's intents (issues 14, 17, 18). Pure.

The SDN programs what its intents say (domain/sdn.py); the instances' ports are the compute
model's (domain/compute.py). The binding keeps the first equal to the second:

- one SDN network per compute network that has a placed port, of the same name (an SDN
  network of that name, made through the SDN's own API, is used as it is; a new one takes
  the compute network's id and the lowest free VNI);
- one SDN port per port of an instance placed on a host: the same id, MAC and IP, the
  instance's host, the device `tap_name(mac)` (what the hypervisor names the host side of
  the guest's port), and the instance's id, which marks the intent as the binding's own;
- an instance moved to another host (recovery, a rebuild elsewhere) moves its ports: the
  same intents, rewritten with the new host, so every switch forwards its MAC to the new
  host at once; the old host's device is no longer the intent's;
- the binding's own intents whose instance is gone (deleted, or no longer placed) are
  deleted. Intents made through the SDN's API (no instance) are never touched.

`decide_bindings` returns the actions in the order to apply them: networks, then deletions
(an address freed by a deleted instance may be taken by a new one), then ports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from vimha.domain.addressing import tap_name
from vimha.domain.compute import Instance, InstanceStatus
from vimha.domain.errors import Conflict, InvalidInput
from vimha.domain.sdn import Network, Port, new_network, new_port


@dataclass(frozen=True, slots=True)
class PlacedPort:
    """A port of an instance placed on a host, as the compute model has it."""

    port_id: str
    network_id: str  # the compute network's
    network: str  # its name
    mac: str
    ip: str
    instance_id: str
    host: str


def placed_ports(instances: Iterable[Instance]) -> list[PlacedPort]:
    """The ports of every instance that has a host and is not deleted (running, stopped,
    failed or being rebuilt there: its host is where its guest is, or is about to be)."""
    out = []
    for i in instances:
        if i.host is None or i.status is InstanceStatus.DELETED:
            continue
        for p in i.spec.ports:
            out.append(PlacedPort(p.port_id, p.network_id, p.network, p.mac, p.ip, i.id, i.host))
    return sorted(out, key=lambda p: p.port_id)


class Act(StrEnum):
    NETWORK = "network"  # create the SDN network
    UNBIND = "unbind"  # delete the SDN port
    BIND = "bind"  # create or rewrite the SDN port
    SKIP = "skip"  # a port that cannot be bound now (said once)


@dataclass(frozen=True, slots=True)
class BindingAction:
    act: Act
    reason: str
    network: Network | None = None
    port: Port | None = None
    port_id: str = ""


def decide_bindings(
    placed: Iterable[PlacedPort], networks: Iterable[Network], ports: Iterable[Port]
) -> list[BindingAction]:
    """What to change so that the SDN's intents are the placed ports (see the module)."""
    wanted = sorted(placed, key=lambda p: p.port_id)
    nets = list(networks)
    by_name = {n.name: n for n in nets}
    out: list[BindingAction] = []
    skipped: set[str] = set()
    for name, net_id in sorted({(p.network, p.network_id) for p in wanted}):
        if name in by_name or name in skipped:
            continue
        try:
            made = new_network(net_id, name, None, nets)
        except (InvalidInput, Conflict) as exc:
            skipped.add(name)
            out.append(BindingAction(Act.SKIP, f"network {name} not made in the SDN: {exc.detail}"))
            continue
        nets.append(made)
        by_name[name] = made
        out.append(BindingAction(Act.NETWORK, f"network {name}: VXLAN {made.vni}", network=made))
    current = {p.id: p for p in ports}
    ids = {p.port_id for p in wanted}
    for port in sorted(current.values(), key=lambda p: p.id):
        if port.instance is not None and port.id not in ids:
            del current[port.id]
            out.append(BindingAction(
                Act.UNBIND,
                f"port {port.ip} of instance {port.instance} unbound from {port.host}: "
                "the instance is deleted or no longer placed",
                port_id=port.id,
            ))  # fmt: skip
    for p in wanted:
        net = by_name.get(p.network)
        if net is None:
            continue  # its network was skipped, and said so
        have = current.pop(p.port_id, None)
        try:
            port = new_port(p.port_id, net, p.host, p.mac, p.ip, tap_name(p.mac),
                            current.values(), p.instance_id)  # fmt: skip
        except (InvalidInput, Conflict) as exc:
            if have is not None:
                current[have.id] = have
            out.append(BindingAction(
                Act.SKIP, f"port {p.ip} of instance {p.instance_id} not bound: {exc.detail}",
                port_id=p.port_id,
            ))  # fmt: skip
            continue
        current[port.id] = port
        if have == port:
            continue
        if have is None:
            why = f"port {p.ip} of instance {p.instance_id} on {net.name} bound on {p.host}"
        elif have.host != port.host:
            why = f"port {p.ip} of instance {p.instance_id} moved from {have.host} to {p.host}"
        else:
            why = f"port {p.ip} of instance {p.instance_id} rewritten as the compute model has it"
        out.append(BindingAction(Act.BIND, f"{why} ({port.device})", port=port))
    return out
