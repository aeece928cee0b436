"""The compute model's ports bound to the SDN's intents (domain/port_binding.py): networks
made or reused by name, ports bound where their instance is placed, moved with it, unbound
when it is gone; intents made through the SDN's API left alone; conflicts said, not
forced."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from vimha.domain.addressing import is_tap_name, tap_name
from vimha.domain.compute import Flavor, Instance, InstanceSpec, InstanceStatus, PortSpec
from vimha.domain.errors import InvalidInput
from vimha.domain.port_binding import (
    Act,
    BindingAction,
    PlacedPort,
    decide_bindings,
    placed_ports,
)
from vimha.domain.sdn import Network, Port

NOW = datetime(2024, 1, 1, tzinfo=UTC)
MAC1, MAC2 = "fa:16:3e:00:00:01", "fa:16:3e:00:00:02"
NET_A = Network("n-a", "vnf-a", 100)


def placed(n: int, host: str = "cmp-1", network: str = "vnf-a") -> PlacedPort:
    return PlacedPort(f"p{n}", f"id-{network}", network, f"fa:16:3e:00:00:0{n}",
                      f"10.64.0.{n}", f"i{n}", host)  # fmt: skip


def bound(n: int, host: str = "cmp-1", net: Network = NET_A) -> Port:
    mac = f"fa:16:3e:00:00:0{n}"
    return Port(f"p{n}", net.id, host, mac, f"10.64.0.{n}", tap_name(mac), f"i{n}")


def acts(actions: list[BindingAction]) -> list[tuple[Act, str]]:
    return [(a.act, a.port.id if a.port else a.network.name if a.network else a.port_id)
            for a in actions]  # fmt: skip


def test_tap_names_come_from_the_mac_and_fit_an_interface_name() -> None:
    assert tap_name("FA:16:3E:0a:0b:0c") == "vmfa163e0a0b0c"
    assert len(tap_name(MAC1)) <= 15 and is_tap_name(tap_name(MAC1))
    assert not is_tap_name("vx0a660101") and not is_tap_name("vnf-a1")
    with pytest.raises(InvalidInput, match="not a MAC address"):
        tap_name("fa:16:3e:00:00")


def test_placed_ports_are_those_of_instances_with_a_host() -> None:
    port = PortSpec("p1", "n-a", "vnf-a", MAC1, "10.64.0.1", 16, None)
    spec = InstanceSpec("img", Flavor("f", "tiny", 1, 128, 1), (port,))
    on = Instance("i1", "vnf-vdu-0", spec, InstanceStatus.ACTIVE, NOW, NOW, host="cmp-2")
    assert placed_ports([on]) == [PlacedPort("p1", "n-a", "vnf-a", MAC1, "10.64.0.1", "i1",
                                             "cmp-2")]  # fmt: skip
    unplaced = replace(on, id="i2", host=None)
    deleted = replace(on, id="i3", status=InstanceStatus.DELETED)
    failed = replace(on, id="i4", status=InstanceStatus.ERROR)
    assert [p.instance_id for p in placed_ports([unplaced, deleted, failed])] == ["i4"]


@pytest.mark.parametrize(
    ("ports", "networks", "have", "want"),
    [
        # a new instance: its network made (the compute network's id), its port bound
        ([placed(1)], [], [], [(Act.NETWORK, "vnf-a"), (Act.BIND, "p1")]),
        # the SDN already has a network of that name (made through its API): used as it is
        ([placed(1)], [NET_A], [], [(Act.BIND, "p1")]),
        # nothing changed: nothing to do
        ([placed(1)], [NET_A], [bound(1)], []),
        # the instance moved (recovery): the same intent, rewritten with its new host
        ([placed(1, "cmp-3")], [NET_A], [bound(1, "cmp-1")], [(Act.BIND, "p1")]),
        # the instance is gone: its port unbound; a port made through the API is kept
        ([], [NET_A], [bound(1), replace(bound(2), id="api", instance=None)],
         [(Act.UNBIND, "p1")]),
        # a deleted instance's address taken by a new one: unbound first, then bound
        ([replace(placed(2), ip="10.64.0.1")], [NET_A], [bound(1)],
         [(Act.UNBIND, "p1"), (Act.BIND, "p2")]),
    ],
)  # fmt: skip
def test_decisions(
    ports: list[PlacedPort],
    networks: list[Network],
    have: list[Port],
    want: list[tuple[Act, str]],
) -> None:
    assert acts(decide_bindings(ports, networks, have)) == want


def test_a_new_network_takes_the_lowest_free_vni_and_the_compute_id() -> None:
    [net, _] = decide_bindings([placed(1, network="vnf-b")], [NET_A], [])
    assert net.network == Network("id-vnf-b", "vnf-b", 101)
    assert net.reason == "network vnf-b: VXLAN 101"


def test_a_bound_port_is_the_compute_port() -> None:
    [_, bind] = decide_bindings([placed(1)], [], [])
    assert bind.port == Port("p1", "id-vnf-a", "cmp-1", MAC1, "10.64.0.1", "vmfa163e000001", "i1")
    assert bind.reason == "port 10.64.0.1 of instance i1 on vnf-a bound on cmp-1 (vmfa163e000001)"
    [move] = decide_bindings([placed(1, "cmp-4")], [NET_A], [bound(1)])
    assert move.reason.startswith("port 10.64.0.1 of instance i1 moved from cmp-1 to cmp-4")
    assert move.port is not None and move.port.host == "cmp-4"


def test_a_conflict_with_an_intent_of_the_api_is_said_and_not_forced() -> None:
    theirs = replace(bound(2), id="api", ip="10.64.0.1", instance=None)
    [skip] = decide_bindings([placed(1)], [NET_A], [theirs])
    assert skip.act is Act.SKIP and skip.port_id == "p1"
    assert "ip 10.64.0.1 is already on network vnf-a (port api)" in skip.reason
    bad = [replace(placed(1), network="no spaces allowed")]
    [skip] = decide_bindings(bad, [], [])
    assert skip.act is Act.SKIP and skip.reason.startswith("network no spaces allowed not made")


def test_two_instances_on_two_hosts_and_one_moving() -> None:
    ports = [placed(1, "cmp-1"), placed(2, "cmp-2"), placed(3, "cmp-2", "vnf-b")]
    first = decide_bindings(ports, [], [])
    assert acts(first) == [(Act.NETWORK, "vnf-a"), (Act.NETWORK, "vnf-b"), (Act.BIND, "p1"),
                           (Act.BIND, "p2"), (Act.BIND, "p3")]  # fmt: skip
    nets = [a.network for a in first if a.network]
    have = [a.port for a in first if a.port]
    assert decide_bindings(ports, nets, have) == []
    moved = [ports[0], replace(ports[1], host="cmp-3"), replace(ports[2], host="cmp-3")]
    assert acts(decide_bindings(moved, nets, have)) == [(Act.BIND, "p2"), (Act.BIND, "p3")]
