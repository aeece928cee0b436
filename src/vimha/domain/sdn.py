"""The SDN controller's model and decisions (issue 18, SDN-1..4): network and port intents,
the flows that realise them on one switch, per-switch mastership, and the alarms of the
controllers' view. Pure: no I/O, no clock.

Intents (the northbound, stored once): a `Network` is a VXLAN segment (its `vni`); a `Port`
is an endpoint of a network on a host, its MAC and IP known at creation, attached to the
host's switch as the interface `device`. Nothing is learned by flooding: every flow follows
from the intents, the hosts' tunnel endpoints and the switch's port numbers, so a new master
computes exactly the flows its predecessor installed.

Flows (OpenFlow 1.3, one switch): table 0 classifies (a local port or a tunnel with the
network's key -> metadata = vni, bit 32 set when it came from a tunnel), table 1 forwards (a
known MAC to its local port, or into the tunnel of its host; broadcast and multicast to the
network's local ports and, when local, to its remote hosts: split horizon). Each flow's cookie
is a digest of the flow itself under vimha's prefix, so a master reconciles a switch by
cookies: what it lacks is added, what is no longer wanted is deleted, the rest left alone
(counters and durations intact).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from vimha.domain.errors import Conflict, InvalidInput

COOKIE_PREFIX = 0x76 << 56  # 'v': the flows vimha owns
COOKIE_MASK = 0xFF << 56
FROM_TUNNEL = 1 << 32
VNI_MASK = 0xFFFFFFFF
ORIGIN_MASK = FROM_TUNNEL | VNI_MASK
MULTICAST = ("01:00:00:00:00:00", "01:00:00:00:00:00")
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEVICE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # a Linux interface name
MAX_VNI = (1 << 24) - 1


# --- intents -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Network:
    id: str
    name: str
    vni: int

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "vni": self.vni}


@dataclass(frozen=True, slots=True)
class Port:
    id: str
    network: str  # the network's id
    host: str
    mac: str
    ip: str
    device: str  # the interface on the host's switch
    instance: str | None = None  # the VNF instance whose port it is (bound by vimha)

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "networkId": self.network,
            "host": self.host,
            "mac": self.mac,
            "ip": self.ip,
            "device": self.device,
            "instanceId": self.instance,
        }


def new_network(id: str, name: str, vni: int | None, existing: Iterable[Network]) -> Network:
    """A network to create: its name and VNI unique (the lowest free VNI from 100 when none
    is asked for). InvalidInput or Conflict otherwise."""
    if not NAME.match(name):
        raise InvalidInput("name: 1-64 letters, digits, '_', '.', '-'")
    nets = list(existing)
    if any(n.name == name for n in nets):
        raise Conflict(f"a network named {name} exists")
    used = {n.vni for n in nets}
    if vni is None:
        vni = next(v for v in range(100, MAX_VNI + 1) if v not in used)
    if not 1 <= vni <= MAX_VNI:
        raise InvalidInput(f"vni: 1..{MAX_VNI}")
    if vni in used:
        raise Conflict(f"vni {vni} is taken")
    return Network(id, name, vni)


def new_port(
    id: str,
    network: Network,
    host: str,
    mac: str,
    ip: str,
    device: str | None,
    existing: Iterable[Port],
    instance: str | None = None,
) -> Port:
    """A port to create on `network`: a unicast MAC and an IP unique in the network, a device
    name unique on its host (default: 'vp' + the id's first 13 characters). `instance`: the
    VNF instance it belongs to (the compute model's port binding, domain/port_binding.py)."""
    mac = mac.lower()
    if not MAC.match(mac) or int(mac[:2], 16) & 1:
        raise InvalidInput(f"mac: {mac!r} is not a unicast MAC address (aa:bb:cc:dd:ee:ff)")
    try:
        ipaddress.IPv4Address(ip)
    except ValueError:
        raise InvalidInput(f"ip: {ip!r} is not an IPv4 address") from None
    if not NAME.match(host):
        raise InvalidInput("host: 1-64 letters, digits, '_', '.', '-'")
    device = device or f"vp{id.replace('-', '')[:13]}"
    if not DEVICE.match(device):
        raise InvalidInput("device: an interface name of 1-15 letters, digits, '_', '.', '-'")
    for p in existing:
        if p.network == network.id and p.mac == mac:
            raise Conflict(f"mac {mac} is already on network {network.name} (port {p.id})")
        if p.network == network.id and p.ip == ip:
            raise Conflict(f"ip {ip} is already on network {network.name} (port {p.id})")
        if p.host == host and p.device == device:
            raise Conflict(f"device {device} is already used on {host} (port {p.id})")
    return Port(id, network.id, host, mac, ip, device, instance)


# --- flows ---------------------------------------------------------------------------------

Value = int | str | tuple[int, int] | tuple[str, str]


@dataclass(frozen=True, slots=True)
class Flow:
    """One flow entry: match fields by their OpenFlow 1.3 OXM names (os-ken's), actions
    ("output", port) and ("set_field", name, value), then optional metadata written and a
    table to go to."""

    table: int
    priority: int
    match: tuple[tuple[str, Value], ...]
    actions: tuple[tuple[str | int, ...], ...] = ()
    metadata: tuple[int, int] | None = None
    goto: int | None = None
    reason: str = field(default="", compare=False)

    @property
    def cookie(self) -> int:
        canonical = json.dumps(
            [self.table, self.priority, sorted(self.match), self.actions, self.metadata,
             self.goto],
            sort_keys=True,
        )  # fmt: skip
        digest = int.from_bytes(hashlib.blake2b(canonical.encode(), digest_size=7).digest())
        return COOKIE_PREFIX | digest


@dataclass(frozen=True, slots=True)
class SwitchPorts:
    """What a switch has: its interfaces' port numbers (by name) and which are live."""

    numbers: Mapping[str, int]
    live: frozenset[str] = frozenset()


def tunnel_port_name(remote_ip: str) -> str:
    """The tunnel port towards a host: `vx` + its tunnel address in hex (as Neutron's)."""
    return "vx" + ipaddress.IPv4Address(remote_ip).packed.hex()


def plan_flows(
    host: str,
    ports: SwitchPorts,
    tunnel_ips: Mapping[str, str],
    networks: Iterable[Network],
    intents: Iterable[Port],
) -> tuple[Flow, ...]:
    """Every flow the switch of `host` must hold. A port whose device is not on the switch
    yet, or a remote host without a tunnel port here, is left out until it is."""
    flows: list[Flow] = [
        Flow(0, 0, (), reason="table 0: anything unclassified is dropped"),
        Flow(1, 0, (), reason="table 1: anything not addressed to a known port is dropped"),
    ]
    by_network: dict[str, list[Port]] = {}
    for p in intents:
        by_network.setdefault(p.network, []).append(p)
    for net in sorted(networks, key=lambda n: n.vni):
        members = sorted(by_network.get(net.id, []), key=lambda p: p.id)
        local = [(p, ports.numbers[p.device]) for p in members
                 if p.host == host and p.device in ports.numbers]  # fmt: skip
        remote_hosts: dict[str, int] = {}
        for p in members:
            if p.host == host or p.host not in tunnel_ips:
                continue
            number = ports.numbers.get(tunnel_port_name(tunnel_ips[p.host]))
            if number is not None:
                remote_hosts[p.host] = number
        if not local:
            continue  # nothing of this network here: no traffic to carry
        vni = net.vni
        for p, number in local:
            flows.append(
                Flow(0, 100, (("in_port", number), ("eth_src", p.mac)),
                     metadata=(vni, ORIGIN_MASK), goto=1,
                     reason=f"{p.id} ({p.device}) is on network {net.name}")
            )  # fmt: skip
            flows.append(
                Flow(1, 100, (("metadata", (vni, VNI_MASK)), ("eth_dst", p.mac)),
                     (("output", number),), reason=f"to {p.mac}: local port {p.device}")
            )  # fmt: skip
        if remote_hosts:
            flows.append(
                Flow(0, 90, (("tunnel_id", vni),), metadata=(vni | FROM_TUNNEL, ORIGIN_MASK),
                     goto=1, reason=f"network {net.name} from the tunnels (key {vni})")
            )  # fmt: skip
        for p in members:
            if p.host in remote_hosts:
                flows.append(
                    Flow(1, 100, (("metadata", (vni, ORIGIN_MASK)), ("eth_dst", p.mac)),
                         (("set_field", "tunnel_id", vni), ("output", remote_hosts[p.host])),
                         reason=f"to {p.mac}: on {p.host}, through its tunnel")
                )  # fmt: skip
        local_out = tuple(("output", n) for _, n in local)
        tunnels_out = tuple(("output", n) for _, n in sorted(remote_hosts.items()))
        flood = (*local_out, *((("set_field", "tunnel_id", vni), *tunnels_out)
                               if tunnels_out else ()))  # fmt: skip
        flows.append(
            Flow(1, 50, (("metadata", (vni, ORIGIN_MASK)), ("eth_dst", MULTICAST)), flood,
                 reason=f"broadcast on {net.name} from here: its local ports and remote hosts")
        )  # fmt: skip
        if remote_hosts:
            flows.append(
                Flow(1, 50, (("metadata", (vni | FROM_TUNNEL, ORIGIN_MASK)),
                             ("eth_dst", MULTICAST)), local_out,
                     reason=f"broadcast on {net.name} from a tunnel: the local ports only")
            )  # fmt: skip
    return tuple(flows)


@dataclass(frozen=True, slots=True)
class FlowDiff:
    add: tuple[Flow, ...]
    delete: tuple[int, ...]  # cookies
    reason: str


def reconcile(desired: Iterable[Flow], present: Iterable[int]) -> FlowDiff:
    """What to send so that the switch holds exactly `desired` (of vimha's flows)."""
    want = {f.cookie: f for f in desired}
    have = {c for c in present if c & COOKIE_MASK == COOKIE_PREFIX}
    add = tuple(f for c, f in sorted(want.items()) if c not in have)
    delete = tuple(sorted(have - set(want)))
    kept = len(want) - len(add)
    return FlowDiff(add, delete, f"{len(add)} to add, {len(delete)} to delete, {kept} kept")


# --- mastership ----------------------------------------------------------------------------


class Model(StrEnum):
    CENTRALISED = "centralised"  # an active-standby pair: the active masters every switch
    DISTRIBUTED = "distributed"  # all-active: each switch's master elected, balanced


class Role(StrEnum):
    MASTER = "master"
    SLAVE = "slave"


@dataclass(frozen=True, slots=True)
class Instance:
    """An SDN controller instance as it publishes itself (on its lease)."""

    name: str
    connected: frozenset[int]  # the datapath ids it has a live connection to
    serving: bool = True  # its member is healthy and it may take switches


@dataclass(frozen=True, slots=True)
class Mastership:
    holder: str
    epoch: int


class Act(StrEnum):
    TAKE = "TAKE"
    RELEASE = "RELEASE"


@dataclass(frozen=True, slots=True)
class MastershipAction:
    act: Act
    dpid: int
    reason: str


def _rank(dpid: int, name: str) -> bytes:
    """Rendezvous hashing: every instance ranks the candidates of a switch alike."""
    return hashlib.blake2b(f"{dpid:016x}/{name}".encode(), digest_size=8).digest()


def preferred(dpid: int, candidates: Iterable[Instance], load: Mapping[str, int]) -> str | None:
    """Which candidate should master the switch: the least loaded, ties broken by rank."""
    ranked = sorted(candidates, key=lambda i: (load.get(i.name, 0), _rank(dpid, i.name)))
    return ranked[0].name if ranked else None


def decide_masterships(
    me: str,
    instances: Iterable[Instance],
    masters: Mapping[int, Mastership],
    switches: Iterable[int],
) -> list[MastershipAction]:
    """Distributed model, one instance's step: which switches it takes (free, connected to
    it, and it is the preferred candidate) and which it releases (no longer connected, or
    one too many for a balanced share while a less loaded candidate is connected).

    `switches`: every switch that some instance is connected to. A switch whose master no
    longer publishes itself (its lease lapsed: dead or cut off) counts as free: the switch
    itself refuses the old master afterwards (its generation id is stale)."""
    alive = {i.name: i for i in instances}
    mine = alive.get(me)
    if mine is None:
        return []
    serving = [i for i in alive.values() if i.serving]
    load: dict[str, int] = {i.name: 0 for i in serving}
    for m in masters.values():
        if m.holder in load:
            load[m.holder] += 1
    out: list[MastershipAction] = []
    for dpid in sorted(set(switches)):
        held = masters.get(dpid)
        if held is not None and held.holder == me:
            if dpid not in mine.connected or not mine.serving:
                why = "not connected to it any more" if mine.serving else "not serving"
                out.append(MastershipAction(Act.RELEASE, dpid, f"{dpid:016x}: {why}"))
            continue
        if held is not None and held.holder in alive:
            continue
        candidates = [i for i in serving if dpid in i.connected]
        choice = preferred(dpid, candidates, load)
        if choice == me:
            was = f"its master {held.holder} is gone" if held else "it has no master"
            out.append(MastershipAction(Act.TAKE, dpid, f"{dpid:016x}: {was}; {me} preferred"))
            load[me] = load.get(me, 0) + 1
    if not out and mine.serving and serving:
        out.extend(_rebalance(me, serving, masters, load))
    return out


def _rebalance(
    me: str, serving: list[Instance], masters: Mapping[int, Mastership], load: dict[str, int]
) -> list[MastershipAction]:
    """One switch handed over at a time, by the most loaded instance to a less loaded one
    connected to it, while the difference is more than one."""
    lightest, heaviest = min(load.values()), max(load.values())
    if load.get(me, 0) - lightest <= 1 or load.get(me, 0) < heaviest:
        return []
    if me != min(n for n, count in load.items() if count == heaviest):
        return []  # one of the most loaded hands over at a time
    light = {i.name for i in serving if load[i.name] == lightest}
    for dpid in sorted(d for d, m in masters.items() if m.holder == me):
        if any(dpid in i.connected for i in serving if i.name in light):
            return [
                MastershipAction(
                    Act.RELEASE, dpid,
                    f"{dpid:016x}: handed over to balance ({me} masters {load[me]}, "
                    f"another {lightest})",
                )
            ]  # fmt: skip
    return []


# --- the controllers' view: alarms ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SwitchState:
    """One switch as the controllers see it, from what the instances publish."""

    dpid: int
    host: str
    connected: frozenset[str]  # instances with a live connection
    master: str | None
    epoch: int | None
    ports_down: frozenset[str] = frozenset()  # VNF ports (devices) missing or not live
    tunnels_down: frozenset[str] = frozenset()  # tunnel ports not live (BFD)
    flow_errors: tuple[str, ...] = ()  # flows the switch refused, said once each


CAUSES = {
    "SDN_SWITCH_LOST": "switch connected to no SDN controller",
    "SDN_NO_MASTER": "switch has no master controller",
    "SDN_PORT_DOWN": "VNF port down",
    "SDN_TUNNEL_DOWN": "VXLAN tunnel down",
    "SDN_FLOW_FAILED": "flow could not be programmed",
    "SDN_MASTER_CHANGED": "SDN master changed",
}  # one probable cause per fault: raise and clear share the alarm's identity


@dataclass(frozen=True, slots=True)
class SdnAlarm:
    """An alarm to raise or clear: (object, fault type) is its identity."""

    object: str
    fault: str
    severity: str  # CRITICAL, MAJOR, MINOR, WARNING or CLEARED
    cause: str
    reason: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.object, self.fault)


def switch_object(host: str) -> str:
    return f"{host}/ovs"


def decide_sdn_alarms(
    switches: Iterable[SwitchState],
    raised: frozenset[tuple[str, str]],
    changed_masters: Mapping[int, tuple[str | None, str, int]] | None = None,
) -> tuple[list[SdnAlarm], frozenset[tuple[str, str]]]:
    """What to raise and clear now: a switch connected to no instance (SDN_SWITCH_LOST,
    CRITICAL: nothing can change its flows), one without a master (SDN_NO_MASTER, MAJOR),
    VNF ports down (SDN_PORT_DOWN), tunnels down (SDN_TUNNEL_DOWN), flows refused
    (SDN_FLOW_FAILED, raised and kept until the switch holds every flow again); a master
    changed is raised and cleared at once (SDN_MASTER_CHANGED, a notification of record).
    Returns the alarms and what stays raised."""
    want: dict[tuple[str, str], SdnAlarm] = {}
    out: list[SdnAlarm] = []
    for s in switches:
        obj = switch_object(s.host)
        if not s.connected:
            want[(obj, "SDN_SWITCH_LOST")] = SdnAlarm(
                obj, "SDN_SWITCH_LOST", "CRITICAL", CAUSES["SDN_SWITCH_LOST"],
                f"switch {s.dpid:016x} of {s.host} is connected to no controller instance",
            )  # fmt: skip
        elif s.master is None:
            want[(obj, "SDN_NO_MASTER")] = SdnAlarm(
                obj, "SDN_NO_MASTER", "MAJOR", CAUSES["SDN_NO_MASTER"],
                f"switch {s.dpid:016x} of {s.host} has no master "
                f"(connected to {', '.join(sorted(s.connected))})",
            )  # fmt: skip
        if s.ports_down:
            want[(obj, "SDN_PORT_DOWN")] = SdnAlarm(
                obj, "SDN_PORT_DOWN", "MAJOR", CAUSES["SDN_PORT_DOWN"],
                f"ports down on {s.host}: {', '.join(sorted(s.ports_down))}",
            )  # fmt: skip
        if s.tunnels_down:
            want[(obj, "SDN_TUNNEL_DOWN")] = SdnAlarm(
                obj, "SDN_TUNNEL_DOWN", "MAJOR", CAUSES["SDN_TUNNEL_DOWN"],
                f"tunnels down on {s.host}: {', '.join(sorted(s.tunnels_down))}",
            )  # fmt: skip
        if s.flow_errors:
            want[(obj, "SDN_FLOW_FAILED")] = SdnAlarm(
                obj, "SDN_FLOW_FAILED", "MAJOR", CAUSES["SDN_FLOW_FAILED"],
                f"{s.host}: {'; '.join(s.flow_errors[:3])}",
            )  # fmt: skip
    for _, alarm in sorted(want.items()):
        out.append(alarm)  # raised again: an update when the detail changed, else a repeat
    for key in sorted(raised - set(want)):
        obj, fault = key
        out.append(SdnAlarm(obj, fault, "CLEARED", CAUSES[fault], f"{obj}: {fault} is over"))
    hosts = {s.dpid: s.host for s in switches}
    for dpid, (before, after, epoch) in sorted((changed_masters or {}).items()):
        obj = switch_object(hosts.get(dpid, f"{dpid:016x}"))
        why = f"master of {dpid:016x}: {before or 'none'} -> {after} (epoch {epoch})"
        cause = CAUSES["SDN_MASTER_CHANGED"]
        out.append(SdnAlarm(obj, "SDN_MASTER_CHANGED", "WARNING", cause, why))
        out.append(SdnAlarm(obj, "SDN_MASTER_CHANGED", "CLEARED", cause, why))
    return out, frozenset(want)
