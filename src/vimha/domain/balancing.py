"""What a load balancer in front of a service group must send traffic to (issue 4, ARCH-7):
the servers of the group's backend and whether each is ready, from what the members publish;
and the runtime-API commands that take a backend from what it is to what it must be, with no
reload. Pure functions; `agent/balancer.py` applies them to HAProxy.

- all-active: every healthy member is ready;
- n-plus-m: the healthy members that hold an active slot are ready, standbys are not;
- active-standby: only the holder of the slot (the fencing epoch's owner) is ready.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vimha.domain.groups import Policy


@dataclass(frozen=True, slots=True)
class Server:
    address: str  # host:port
    ready: bool
    why: str = ""


def desired_servers(policy: Policy, members: Sequence[Mapping[str, Any]]) -> dict[str, Server]:
    """Member name -> the server it must be, for every member that published an address."""
    out = {}
    for m in members:
        name, address = str(m.get("member", "")), m.get("address")
        if not name or not address:
            continue
        healthy = bool(m.get("healthy"))
        if policy is Policy.ALL_ACTIVE:
            ready, why = healthy, "healthy" if healthy else "unhealthy"
        else:
            active = m.get("slot") is not None and m.get("role") == "active"
            ready = healthy and active
            why = "active" if ready else "standby" if healthy else "unhealthy"
        out[name] = Server(str(address), ready, why)
    return out


@dataclass(frozen=True, slots=True)
class Current:
    address: str
    ready: bool


def one_ready(desired: Mapping[str, Server], current: Mapping[str, Current]) -> dict[str, Server]:
    """A frontend that sends everything to one member (the writes of a multi-writer cluster,
    free of certification conflicts): of the members fit to serve, the one serving now stays
    while it is fit; else the first by name takes over. The others wait, not ready."""
    fit = sorted(name for name, server in desired.items() if server.ready)
    serving = [name for name in fit if name in current and current[name].ready]
    chosen = serving[0] if serving else fit[0] if fit else None
    return {
        name: server
        if name == chosen
        else Server(server.address, False, "fit, not the writer" if server.ready else server.why)
        for name, server in desired.items()
    }


def commands(
    backend: str,
    current: Mapping[str, Current],
    desired: Mapping[str, Server],
    server_options: str = "",
    shutdown: bool = True,
) -> list[str]:
    """Runtime-API commands, in an order that never leaves two actives ready: servers are
    taken out first, then added or put back. `shutdown`: also cut the sessions of a server
    taken out (active-standby: no client may go on talking to a demoted active); otherwise
    requests in flight finish, or time out and are retried on another server."""
    out, later = [], []
    for name, cur in sorted(current.items()):
        want = desired.get(name)
        if (want is None or not want.ready) and cur.ready:
            out.append(f"set server {backend}/{name} state maint")
            if shutdown:
                out.append(f"shutdown sessions server {backend}/{name}")
    for name, want in sorted(desired.items()):
        now = current.get(name)
        host, _, port = want.address.rpartition(":")
        if now is None:
            later.append(f"add server {backend}/{name} {want.address} {server_options}".rstrip())
            later.append(f"enable health {backend}/{name}")
            if want.ready:
                later += _ready(backend, name)
            continue
        if now.address != want.address:
            later.append(f"set server {backend}/{name} addr {host} port {port}")
        if want.ready and not now.ready:
            later += _ready(backend, name)
    return out + later


def _ready(backend: str, name: str) -> list[str]:
    """In service at once: vimha saw it healthy and active; HAProxy's own check, which a
    standby fails, would otherwise hold it back for one more interval."""
    return [f"set server {backend}/{name} state ready", f"set server {backend}/{name} health up"]
