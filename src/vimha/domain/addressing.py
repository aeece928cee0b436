"""Addresses of VNF networks (issue 14): subnets, pools, IPs and MACs. Pure.

A port's MAC and IP are fixed when it is created and kept by every incarnation of its
instance. IPs come from the subnet's pool, lowest free first; MACs are random in OpenStack's
fa:16:3e prefix (locally administered), uniqueness is the store's (a unique index)."""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Collection

from vimha.domain.errors import Conflict, InvalidInput

MAC_PREFIX = "fa:16:3e"
TAP = re.compile(r"^vm[0-9a-f]{12}$")


def check_subnet(
    cidr: str, gateway: str | None, pool_start: str | None, pool_end: str | None
) -> tuple[str, str | None, str, str]:
    """The subnet normalised: (cidr, gateway, pool start, pool end); InvalidInput naming the
    field that is wrong. The default pool is every host address but the gateway's."""
    try:
        net = ipaddress.IPv4Network(cidr, strict=False)
    except ValueError as exc:
        raise InvalidInput(f"cidr: {exc}") from None
    if net.prefixlen > 30:
        raise InvalidInput(f"cidr: {cidr} has no room for a pool (prefix /30 at most)")
    hosts_first, hosts_last = net.network_address + 1, net.broadcast_address - 1
    gw = _inside(gateway, net, "gateway") if gateway else None
    start = _inside(pool_start, net, "allocationPool.start") if pool_start else hosts_first
    end = _inside(pool_end, net, "allocationPool.end") if pool_end else hosts_last
    if gw is not None and not pool_start and start == gw:
        start = gw + 1
    if start > end:
        raise InvalidInput("allocationPool: start is after end")
    if start < hosts_first or end > hosts_last:
        raise InvalidInput("allocationPool: must hold host addresses only")
    return str(net), (str(gw) if gw is not None else None), str(start), str(end)


def _inside(value: str, net: ipaddress.IPv4Network, field: str) -> ipaddress.IPv4Address:
    try:
        ip = ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise InvalidInput(f"{field}: {exc}") from None
    if ip not in net:
        raise InvalidInput(f"{field}: {value} is not in {net}")
    return ip


def prefix_of(cidr: str) -> int:
    return ipaddress.IPv4Network(cidr, strict=False).prefixlen


def pool_size(pool_start: str, pool_end: str) -> int:
    return int(ipaddress.IPv4Address(pool_end)) - int(ipaddress.IPv4Address(pool_start)) + 1


def next_free(
    network: str, pool_start: str, pool_end: str, used: Collection[str], count: int = 1
) -> list[str]:
    """The `count` lowest free addresses of the pool; Conflict if it has fewer."""
    taken = {int(ipaddress.IPv4Address(ip)) for ip in used}
    out: list[str] = []
    first, last = int(ipaddress.IPv4Address(pool_start)), int(ipaddress.IPv4Address(pool_end))
    n = first
    while len(out) < count and n <= last:
        if n not in taken:
            out.append(str(ipaddress.IPv4Address(n)))
        n += 1
    if len(out) < count:
        free = len(out)
        raise Conflict(f"network {network}: no free address ({free} free, {count} needed)")
    return out


def check_fixed_ip(network: str, cidr: str, ip: str, used: Collection[str]) -> str:
    """A requested fixed IP: in the subnet and free; InvalidInput or Conflict otherwise."""
    net = ipaddress.IPv4Network(cidr, strict=False)
    addr = _inside(ip, net, "fixed_ip")
    if addr in (net.network_address, net.broadcast_address):
        raise InvalidInput(f"fixed_ip: {ip} is not a host address of {net}")
    if str(addr) in used:
        raise Conflict(f"network {network}: {ip} is already in use")
    return str(addr)


def random_mac(rng: random.Random) -> str:
    return MAC_PREFIX + "".join(f":{rng.randrange(256):02x}" for _ in range(3))


def check_mac(mac: str) -> str:
    parts = mac.lower().split(":")
    if len(parts) != 6 or any(len(p) != 2 for p in parts):
        raise InvalidInput(f"mac_address: {mac!r} is not a MAC address")
    try:
        first = int(parts[0], 16)
        for p in parts[1:]:
            int(p, 16)
    except ValueError:
        raise InvalidInput(f"mac_address: {mac!r} is not a MAC address") from None
    if first & 1:
        raise InvalidInput(f"mac_address: {mac} is a multicast address")
    return ":".join(parts)


def tap_name(mac: str) -> str:
    """The host side of a guest's port: "vm" and the MAC's 12 hex digits (14 characters,
    under Linux's 15). The same on every host and for every incarnation, so that a switch
    finds a port by its MAC alone, and an instance moved elsewhere keeps its device name."""
    return "vm" + check_mac(mac).replace(":", "")


def is_tap_name(name: str) -> bool:
    """Whether an interface name is one `tap_name` makes (a guest's port, not a tunnel's)."""
    return TAP.match(name) is not None
