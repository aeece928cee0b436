"""The SDN controller's pure decisions (domain/sdn.py): intents, flows, reconciliation,
per-switch mastership and the controllers' alarms. Table-driven, no mocks."""

from __future__ import annotations

import pytest

from vimha.domain.errors import Conflict, InvalidInput
from vimha.domain.sdn import (
    COOKIE_PREFIX,
    FROM_TUNNEL,
    Act,
    Instance,
    Mastership,
    Network,
    Port,
    SwitchPorts,
    SwitchState,
    decide_masterships,
    decide_sdn_alarms,
    new_network,
    new_port,
    plan_flows,
    reconcile,
    tunnel_port_name,
)

NET_A = Network("na", "vnf-a", 100)
NET_B = Network("nb", "vnf-b", 101)
TUNNELS = {"h1": "10.102.1.1", "h2": "10.102.1.2"}
PORTS = (
    Port("p1", "na", "h1", "02:00:00:00:00:01", "192.168.0.1", "vp1"),
    Port("p2", "na", "h2", "02:00:00:00:00:02", "192.168.0.2", "vp2"),
    Port("q1", "nb", "h1", "02:00:00:00:01:01", "192.168.1.1", "vq1"),
)
H1_PORTS = SwitchPorts({"vp1": 1, "vq1": 2, tunnel_port_name("10.102.1.2"): 9})


def test_tunnel_ports_are_named_after_the_remote_address() -> None:
    assert tunnel_port_name("10.102.1.2") == "vx0a660102"


@pytest.mark.parametrize(
    ("name", "vni", "error"),
    [
        ("vnf-a", None, Conflict),  # name taken
        ("new", 100, Conflict),  # vni taken
        ("bad name!", None, InvalidInput),
        ("new", 0, InvalidInput),
        ("new", 1 << 24, InvalidInput),
    ],
)
def test_network_refused(name: str, vni: int | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        new_network("x", name, vni, [NET_A])


def test_network_takes_the_lowest_free_vni() -> None:
    assert new_network("x", "c", None, [NET_A, NET_B]).vni == 102


@pytest.mark.parametrize(
    ("mac", "ip", "host", "device", "error"),
    [
        ("02:00:00:00:00:01", "192.168.0.9", "h3", None, Conflict),  # MAC on the network
        ("02:00:00:00:00:09", "192.168.0.1", "h3", None, Conflict),  # IP on the network
        ("02:00:00:00:00:09", "192.168.0.9", "h1", "vp1", Conflict),  # device on the host
        ("03:00:00:00:00:09", "192.168.0.9", "h3", None, InvalidInput),  # multicast MAC
        ("02:00:00:00:00", "192.168.0.9", "h3", None, InvalidInput),
        ("02:00:00:00:00:09", "192.168.0", "h3", None, InvalidInput),
        ("02:00:00:00:00:09", "192.168.0.9", "h3", "a-name-too-long-for-linux", InvalidInput),
    ],
)
def test_port_refused(
    mac: str, ip: str, host: str, device: str | None, error: type[Exception]
) -> None:
    with pytest.raises(error):
        new_port("x", NET_A, host, mac, ip, device, PORTS)


def test_port_gets_a_device_name_from_its_id() -> None:
    port = new_port("abcdef12-3456", NET_A, "h3", "02:AA:00:00:00:09", "192.168.0.9", None, PORTS)
    assert port.device == "vpabcdef123456" and port.mac == "02:aa:00:00:00:09"


def test_flows_forward_known_macs_locally_and_through_the_tunnel() -> None:
    flows = plan_flows("h1", H1_PORTS, TUNNELS, [NET_A, NET_B], PORTS)
    by = {(f.table, f.match): f for f in flows}
    local = by[(1, (("metadata", (100, 0xFFFFFFFF)), ("eth_dst", "02:00:00:00:00:01")))]
    assert local.actions == (("output", 1),)
    remote = by[(1, (("metadata", (100, FROM_TUNNEL | 0xFFFFFFFF)),
                     ("eth_dst", "02:00:00:00:00:02")))]  # fmt: skip
    assert remote.actions == (("set_field", "tunnel_id", 100), ("output", 9))
    # network b has no remote port: no tunnel flow for it, and its broadcast stays local
    b_flood = [f for f in flows if f.match and f.match[0] == ("metadata", (101, 0x1FFFFFFFF))]
    assert [f.actions for f in b_flood] == [(("output", 2),)]
    assert all(f.cookie & (0xFF << 56) == COOKIE_PREFIX for f in flows)


def test_broadcast_from_a_tunnel_goes_to_local_ports_only() -> None:
    flows = plan_flows("h1", H1_PORTS, TUNNELS, [NET_A], PORTS)
    from_tunnel = [f for f in flows if f.match[:1] == (("metadata", (100 | FROM_TUNNEL,
                                                                   0x1FFFFFFFF)),)]  # fmt: skip
    assert [f.actions for f in from_tunnel] == [(("output", 1),)]


def test_a_port_not_yet_on_the_switch_gets_no_flow() -> None:
    flows = plan_flows("h1", SwitchPorts({}), TUNNELS, [NET_A, NET_B], PORTS)
    assert len(flows) == 2  # the two drop flows


def test_the_same_intents_give_the_same_flows_on_any_instance() -> None:
    one = plan_flows("h1", H1_PORTS, TUNNELS, [NET_B, NET_A], tuple(reversed(PORTS)))
    two = plan_flows("h1", H1_PORTS, TUNNELS, [NET_A, NET_B], PORTS)
    assert {f.cookie for f in one} == {f.cookie for f in two}


def test_reconcile_adds_what_lacks_deletes_what_is_not_wanted_keeps_the_rest() -> None:
    desired = plan_flows("h1", H1_PORTS, TUNNELS, [NET_A], PORTS)
    cookies = [f.cookie for f in desired]
    stale = COOKIE_PREFIX | 12345
    foreign = 0x42  # not vimha's: never touched
    diff = reconcile(desired, [*cookies[1:], stale, foreign])
    assert [f.cookie for f in diff.add] == [cookies[0]]
    assert diff.delete == (stale,)
    assert diff.reason == f"1 to add, 1 to delete, {len(cookies) - 1} kept"
    assert reconcile(desired, cookies).add == () and reconcile(desired, cookies).delete == ()


def _i(name: str, *dpids: int, serving: bool = True) -> Instance:
    return Instance(name, frozenset(dpids), serving)


@pytest.mark.parametrize(
    ("me", "instances", "masters", "want"),
    [
        # nobody masters switch 1: the preferred candidate takes it
        ("a", [_i("a", 1), _i("b", 1)], {}, None),
        # its master is gone (no longer publishes itself): taken over
        ("b", [_i("b", 1, 2)], {1: Mastership("a", 3), 2: Mastership("b", 4)}, [(Act.TAKE, 1)]),
        # lost the connection: released
        ("a", [_i("a"), _i("b", 1)], {1: Mastership("a", 3)}, [(Act.RELEASE, 1)]),
        # not serving: released
        ("a", [_i("a", 1, serving=False)], {1: Mastership("a", 3)}, [(Act.RELEASE, 1)]),
        # held by a live peer: nothing to do
        ("a", [_i("a", 1), _i("b", 1)], {1: Mastership("b", 3)}, []),
        # not connected to it: never taken
        ("a", [_i("a"), _i("b", 1)], {}, []),
    ],
)
def test_mastership(
    me: str,
    instances: list[Instance],
    masters: dict[int, Mastership],
    want: list[tuple[Act, int]] | None,
) -> None:
    actions = decide_masterships(me, instances, masters, {1, 2} & {d for i in instances
                                                                 for d in i.connected})  # fmt: skip
    got = [(a.act, a.dpid) for a in actions]
    if want is None:  # exactly one of the candidates takes it
        other = decide_masterships("b", instances, masters, {1})
        assert sorted([*got, *[(a.act, a.dpid) for a in other]]) == [(Act.TAKE, 1)]
    else:
        assert got == want
    assert all(a.reason for a in actions)


def test_free_switches_are_spread_over_the_instances() -> None:
    instances = [_i(n, 1, 2, 3, 4, 5, 6) for n in ("a", "b", "c")]
    masters: dict[int, Mastership] = {}
    for _ in range(6):  # each instance acts on what the others took before
        for name in ("a", "b", "c"):
            for action in decide_masterships(name, instances, masters, range(1, 7)):
                if action.act is Act.TAKE and action.dpid not in masters:
                    masters[action.dpid] = Mastership(name, 1)
    counts = sorted(sum(m.holder == n for m in masters.values()) for n in ("a", "b", "c"))
    assert len(masters) == 6 and counts == [2, 2, 2]


def test_an_overloaded_instance_hands_one_switch_over() -> None:
    instances = [_i("a", 1, 2, 3), _i("b", 1, 2, 3)]
    masters = {d: Mastership("a", d) for d in (1, 2, 3)}
    actions = decide_masterships("a", instances, masters, {1, 2, 3})
    assert [a.act for a in actions] == [Act.RELEASE]
    assert decide_masterships("b", instances, masters, {1, 2, 3}) == []


def _s(dpid: int, *connected: str, master: str | None = "a", **kw: object) -> SwitchState:
    return SwitchState(dpid, f"h{dpid}", frozenset(connected), master, 1 if master else None,
                       **kw)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize(
    ("switch", "faults"),
    [
        (_s(1, "a"), []),
        (_s(1, master=None), ["SDN_SWITCH_LOST"]),
        (_s(1, "a", "b", master=None), ["SDN_NO_MASTER"]),
        (_s(1, "a", ports_down=frozenset({"vp1"})), ["SDN_PORT_DOWN"]),
        (_s(1, "a", tunnels_down=frozenset({"vx0a660102"})), ["SDN_TUNNEL_DOWN"]),
        (_s(1, "a", flow_errors=("OFPET_FLOW_MOD_FAILED: OFPFMFC_TABLE_FULL",)),
         ["SDN_FLOW_FAILED"]),
    ],
)  # fmt: skip
def test_alarms_raised(switch: SwitchState, faults: list[str]) -> None:
    alarms, raised = decide_sdn_alarms([switch], frozenset())
    assert [a.fault for a in alarms] == faults
    assert raised == {("h1/ovs", f) for f in faults}


def test_alarms_cleared_with_the_cause_they_were_raised_with() -> None:
    [raise_], raised = decide_sdn_alarms([_s(1, master=None)], frozenset())
    [clear], after = decide_sdn_alarms([_s(1, "a")], raised)
    assert clear.severity == "CLEARED" and after == frozenset()
    assert (clear.object, clear.fault, clear.cause) == (raise_.object, raise_.fault, raise_.cause)


def test_a_master_change_is_raised_and_cleared_at_once() -> None:
    alarms, raised = decide_sdn_alarms([_s(1, "b", master="b")], frozenset(), {1: ("a", "b", 7)})
    assert [(a.fault, a.severity) for a in alarms] == [
        ("SDN_MASTER_CHANGED", "WARNING"), ("SDN_MASTER_CHANGED", "CLEARED"),
    ]  # fmt: skip
    assert "a -> b (epoch 7)" in alarms[0].reason and raised == frozenset()
