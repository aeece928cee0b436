"""What an instance's spec is built from beyond its request (issue 14): its ports, with
addresses allocated in the creating transaction, and the watchdog a flavor's extra spec asks
for (Nova's `hw:watchdog_action`)."""

from __future__ import annotations

import random
import uuid
from typing import TYPE_CHECKING, Any

from vimha.domain import addressing
from vimha.domain.compute import (
    Flavor,
    Network,
    Port,
    PortSpec,
    WatchdogAction,
    WatchdogSpec,
)
from vimha.engine.catalog import WATCHDOG_SPEC
from vimha.ports.store import Store, UnitOfWork

if TYPE_CHECKING:
    from vimha.engine.compute import InstancePlan


def allocate_ports(
    uow: UnitOfWork,
    store: Store,
    rng: random.Random,
    instance_id: str,
    plan: InstancePlan,
    used: dict[str, set[str]],
    now: Any,
) -> tuple[PortSpec, ...]:
    """The ports of a new instance: those given bound to it, the others made with their
    addresses (a fixed IP checked, else the next free one of the pool) and a random MAC."""
    out: list[PortSpec] = []
    for req, nets in plan.networks:
        if req.port_id is not None:
            port = uow.compute.bind_port(req.port_id, instance_id)
            network = store.compute.network(port.network_id)
            out.append(port_spec(port, network))
            continue
        for network in nets:
            taken = used.setdefault(network.id, uow.compute.used_ips(network.id))
            if req.fixed_ip is not None:
                ip = addressing.check_fixed_ip(network.name, network.cidr, req.fixed_ip, taken)
            else:
                ip = addressing.next_free(
                    network.name, network.pool_start, network.pool_end, taken
                )[0]
            taken.add(ip)
            port = Port(
                str(uuid.uuid4()),
                network.id,
                addressing.random_mac(rng),
                ip,
                instance_id,
                f"{plan.name}-{network.name}",
                req.tags,
                req.bond,
            )
            uow.compute.add_port(port, owned=True, now=now)
            out.append(port_spec(port, network))
    return tuple(out)


def port_spec(port: Port, network: Network) -> PortSpec:
    return PortSpec(
        port.id,
        network.id,
        network.name,
        port.mac,
        port.ip,
        addressing.prefix_of(network.cidr),
        network.gateway,
        port.tags,
        port.bond,
    )


def flavor_watchdog(flavor: Flavor, default_timeout: float) -> WatchdogSpec | None:
    """Nova's `hw:watchdog_action` extra spec (timeout: `vimha:watchdog_timeout`)."""
    action = flavor.extra_specs.get(WATCHDOG_SPEC)
    if action is None or action == WatchdogAction.NONE.value:
        return None if action is None else WatchdogSpec(default_timeout, WatchdogAction.NONE)
    timeout = float(flavor.extra_specs.get("vimha:watchdog_timeout", default_timeout))
    return WatchdogSpec(timeout, WatchdogAction(action))
