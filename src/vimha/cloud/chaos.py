"""`vimha chaos`: real faults in the embedded cloud. Processes are found by their command
lines under /proc; power and sensor faults go through each node's simulated BMC (power over
Redfish with sushy, the production path); plane faults use the agents' drop rule (loopback
mode: no root, no real link to cut)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx

from vimha.cloud import netns
from vimha.cloud.netns import Netns
from vimha.cloud.nodes import PLANES
from vimha.cloud.procs import find_processes
from vimha.domain.errors import InvalidInput, Permanent
from vimha.drivers.redfish import BmcUnreachable, RedfishBmc


def load_state(data_dir: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((data_dir / "cloud.json").read_text())
    except (OSError, ValueError):
        raise Permanent(f"no embedded cloud in {data_dir}: start one with `vimha up`") from None
    return state


def node(state: dict[str, Any], name: str) -> dict[str, Any]:
    if name not in state:
        raise InvalidInput(f"unknown node {name!r}; nodes: {', '.join(state)}")
    found: dict[str, Any] = state[name]
    return found


def _signal(pids: list[int], sig: signal.Signals, what: str) -> str:
    if not pids:
        raise Permanent(f"no running {what} found")
    for pid in pids:
        os.kill(pid, sig)
    return f"{sig.name} -> {what} (pid {', '.join(map(str, pids))})"


def agent_pids(n: dict[str, Any]) -> list[int]:
    return find_processes("vimha", "agent", "--config", n["config"])


def service_pids(n: dict[str, Any]) -> list[int]:
    """The node's demo service: its port too, as another cloud on the machine has a node of
    the same name."""
    return find_processes(
        "vimha.cloud.demo_service", f"--port {n['service_port']} --node {n['name']} "
    )


def member_pids(n: dict[str, Any]) -> list[int]:
    """The node's members of service groups that are not demo services (Redis)."""
    return [p for p in find_processes("redis-server") if _parent_is_agent(p, n)]


def _parent_is_agent(pid: int, n: dict[str, Any]) -> bool:
    try:
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return False
    return ppid in agent_pids(n)


def kill_agent(data_dir: Path, name: str) -> str:
    n = node(load_state(data_dir), name)
    return _signal(agent_pids(n), signal.SIGKILL, f"agent of {name}")


def kill_service(data_dir: Path, name: str) -> str:
    n = node(load_state(data_dir), name)
    return _signal(service_pids(n), signal.SIGKILL, f"{n['service']} on {name}")


def hang_service(data_dir: Path, name: str) -> str:
    n = node(load_state(data_dir), name)
    return _signal(service_pids(n), signal.SIGSTOP, f"{n['service']} on {name}")


async def read_members(data_dir: Path, group: str) -> list[dict[str, Any]]:
    """What the members of a demo group publish, read from the cloud's coordination file."""
    from vimha.cloud.nodes import EMBEDDED_VIM, coordination_url
    from vimha.drivers.clock import SystemClock
    from vimha.drivers.coord_mirror import load_json
    from vimha.drivers.coordination import open_coordination
    from vimha.groupspec import groups_prefix

    coord = open_coordination(coordination_url(data_dir), SystemClock())
    try:
        _, entries = await coord.list(f"{groups_prefix(EMBEDDED_VIM)}{group}/members/")
    finally:
        await coord.close()
    return [load_json(e) for e in entries]


def group_members(data_dir: Path, group: str) -> list[dict[str, Any]]:
    load_state(data_dir)  # a clear error when there is no cloud here
    return asyncio.run(read_members(data_dir, group))


HOW = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}


def kill_active(data_dir: Path, group: str, how: str = "kill", member: str | None = None) -> str:
    """SIGKILL (or SIGSTOP) the active member of a group (the first, or `member`); `agent-stop`
    freezes its agent instead (the member keeps running: only fencing makes the switch-over
    safe), `power-off` powers its node off through the BMC."""
    members = group_members(data_dir, group)
    if not members:
        raise InvalidInput(
            f"no service group {group!r} in this cloud "
            "(groups: api, kv, workers; with --stateful: sql, galera, mq)"
        )
    active = [m for m in members if m.get("role") == "active" and m.get("pid")]
    if member is not None:
        if member not in {m.get("member") for m in members}:
            names = ", ".join(sorted(str(m.get("member")) for m in members))
            raise InvalidInput(f"--member {member!r}: not a member of {group} ({names})")
        active = [m for m in active if m.get("member") == member]
    if not active:
        raise Permanent(f"group {group} has no active member {member or ''} now".replace("  ", " "))
    target = sorted(active, key=lambda m: (m.get("slot") is None, m.get("slot") or 0))[0]
    where = f"{group}'s active member on {target['host']}"
    if how in HOW:
        return _signal([int(target["pid"])], HOW[how], where)
    if how == "agent-stop":
        return _signal([int(target["agentPid"])], signal.SIGSTOP, f"the agent of {where}")
    if how == "power-off":
        return power_off(data_dir, str(target["host"]))
    raise InvalidInput(f"--how {how!r}: use kill, stop, agent-stop or power-off")


def _net(n: dict[str, Any]) -> Netns | None:
    net = n.get("net")
    return Netns(net["tag"], net["octet"], tuple(net["planes"])) if net else None


def plane_down(data_dir: Path, name: str, plane: str) -> str:
    n = node(load_state(data_dir), name)
    if plane not in PLANES:
        raise InvalidInput(f"unknown plane {plane!r}; planes: {', '.join(PLANES)}")
    net = _net(n)
    if net is not None:
        netns.set_link(net, name, plane, up=False)
        return f"plane {plane} of {name} is down (its link in namespace {net.namespace(name)})"
    (Path(n["control"]) / f"drop-{plane}").touch()
    return f"plane {plane} of {name} is down (the agent drops its heartbeats)"


def partition(data_dir: Path, rack: str, with_bmc: bool = False) -> str:
    """Cut a rack off the controllers: every plane of its nodes (nftables in netns mode, the
    agents' drop rule on loopback); `with_bmc` also silences their BMCs, as when the rack's
    top-of-rack switch carries the BMC network too."""
    state = load_state(data_dir)
    members = [n for n in state.values() if n["location"].get("rack") == rack]
    if not members:
        racks = sorted({n["location"].get("rack", "") for n in state.values()})
        raise InvalidInput(f"unknown rack {rack!r}; racks: {', '.join(racks)}")
    net = _net(members[0])
    if net is not None:
        netns.partition(net, [a for n in members for a in n["addresses"].values()])
    else:
        for n in members:
            for plane in PLANES:
                (Path(n["control"]) / f"drop-{plane}").touch()
    if with_bmc:
        for n in members:
            _sim(n, "disconnect")
    names = ", ".join(n["name"] for n in members)
    how = "nftables drop" if net is not None else "the agents drop their heartbeats"
    return f"rack {rack} partitioned ({names}; {how}{'; BMCs silent' if with_bmc else ''})"


def _bmc(n: dict[str, Any]) -> RedfishBmc:
    return RedfishBmc(n["bmc_url"], "admin", n["bmc_password"], timeout=3.0)


def _sim(n: dict[str, Any], fault: str) -> None:
    try:
        httpx.post(f"{n['bmc_url']}/sim/{fault}", timeout=3.0).raise_for_status()
    except httpx.HTTPError as exc:
        raise Permanent(f"the BMC of {n['name']} did not answer: {exc}") from exc


def power_off(data_dir: Path, name: str) -> str:
    n = node(load_state(data_dir), name)
    try:
        confirmed = _bmc(n).force_off(confirm_within=5.0)
    except BmcUnreachable as exc:
        raise Permanent(f"the BMC of {name} did not answer: {exc.detail}") from exc
    if not confirmed:
        raise Permanent(f"ForceOff sent to the BMC of {name}, but power is still on")
    return f"{name} powered off through its BMC (Redfish ForceOff, confirmed): its processes stop"


def power_cut(data_dir: Path, name: str) -> str:
    """The node loses its power with no Redfish request (an operator pulls the plug of a
    node whose BMC is silent, before `vimha hosts confirm-down`): its processes stop."""
    _sim(node(load_state(data_dir), name), "power-cut")
    return f"{name} lost its power (no Redfish request): its processes stop"


def power_on(data_dir: Path, name: str) -> str:
    n = node(load_state(data_dir), name)
    try:
        _bmc(n).power_on()
    except BmcUnreachable as exc:
        raise Permanent(f"the BMC of {name} did not answer: {exc.detail}") from exc
    return f"{name} powered on through its BMC: its agent starts"


def psu_fail(data_dir: Path, name: str) -> str:
    _sim(node(load_state(data_dir), name), "psu-fail")
    return f"PSU1 of {name} failed (its BMC reports it Critical)"


def overheat(data_dir: Path, name: str) -> str:
    _sim(node(load_state(data_dir), name), "overheat")
    return f"CPU1 of {name} overheats (95 C, its BMC reports it Critical)"


def heal(data_dir: Path, name: str | None = None) -> str:
    state = load_state(data_dir)
    names = [name] if name else list(state)
    done = []
    # The network first: a BMC answering again for a host still cut off would make it look
    # isolated (and get it fenced).
    if names and (net := _net(node(state, names[0]))) is not None and netns.heal_partition(net):
        done.append("partition healed")
    if name is None:
        done += heal_sdn(data_dir)
    for each in names:
        n = node(state, each)
        for drop in Path(n["control"]).glob("drop-*"):
            drop.unlink()
            done.append(f"{each}: {drop.name[5:]} up")
        net = _net(n)
        if net is not None:
            for plane in netns.links_down(net, each):
                netns.set_link(net, each, plane, up=True)
                done.append(f"{each}: link {plane} up")
        for pid in service_pids(n) + agent_pids(n) + member_pids(n):
            os.kill(pid, signal.SIGCONT)
        _sim(n, "heal")
        bmc = _bmc(n)
        try:
            if bmc.read().power_on is False:
                bmc.power_on()
                done.append(f"{each}: powered on")
        except BmcUnreachable as exc:
            raise Permanent(f"the BMC of {each} did not answer: {exc.detail}") from exc
    return (
        "; ".join(done) or "healed (nothing was down; sensors normal, stopped processes continued)"
    )


def instance_chaos(data_dir: Path, instance: str, what: str) -> str:
    """Ask the instance's demo guest to crash, hang or stop petting its watchdog (through
    its chaos endpoint on its first port)."""
    from vimha.client import Client, resolve

    load_state(data_dir)
    api = Client(*resolve(None, None, str(data_dir)))
    found = api.json("GET", f"/vim/v1/instances/{instance}")
    if not found["ports"]:
        raise Permanent(f"instance {found['name']} has no port to reach its guest on")
    ip = found["ports"][0]["ip"]
    try:
        httpx.post(f"http://{ip}:8080/chaos/{what}", timeout=2)
    except httpx.HTTPError as exc:
        raise Permanent(f"the guest of {found['name']} did not answer on {ip}: {exc}") from None
    return f"{what} -> {found['name']} ({found['id']}) on {found['host']}"


def _sdn_member(data_dir: Path, member: str | None, master: bool) -> dict[str, Any]:
    """A member of the `sdn` group: `member`, else the active (`master`) or another one."""
    members = group_members(data_dir, "sdn")
    if not members:
        raise InvalidInput("no sdn group in this cloud (vimha up --netns, Open vSwitch installed)")
    if member is not None:
        found = [m for m in members if m.get("member") == member]
        if not found:
            names = ", ".join(sorted(str(m.get("member")) for m in members))
            raise InvalidInput(f"--member {member!r}: not a member of sdn ({names})")
        return found[0]
    ranked = sorted(members, key=lambda m: (m.get("role") != "active") == master)
    return ranked[0]


OF_DROP = "vimha_sdn"


def sdn_partition(data_dir: Path, member: str | None = None) -> str:
    """Cut an SDN instance (the active, or `member`) off from its switches: nftables in its
    node's namespace drops its OpenFlow traffic; everything else still flows. `heal` ends it."""
    m = _sdn_member(data_dir, member, master=True)
    n = node(load_state(data_dir), str(m["host"]))
    net = _net(n)
    if net is None:
        raise Permanent("sdn-partition needs the netns mode (vimha up --netns)")
    port = str(m["address"]).rpartition(":")[2]
    ns = net.namespace(n["name"])
    run = ["ip", "netns", "exec", ns, "nft"]
    netns._run(*run, "add", "table", "inet", OF_DROP)
    for hook, field in (("input", "dport"), ("output", "sport")):
        chain = f"{{ type filter hook {hook} priority 0 ; policy accept ; }}"
        netns._run(*run, "add", "chain", "inet", OF_DROP, hook, chain)
        netns._run(*run, "add", "rule", "inet", OF_DROP, hook, "tcp", field, port, "drop")
    return f"the SDN instance on {n['name']} is cut off from its switches (OpenFlow port {port})"


def heal_sdn(data_dir: Path) -> list[str]:
    healed: list[str] = []
    for n in load_state(data_dir).values():
        net = _net(n)
        if net is None:
            return healed
        ns = net.namespace(n["name"])
        if netns._run("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", OF_DROP,
                      check=False).returncode == 0:  # fmt: skip
            healed.append(f"{n['name']}: OpenFlow traffic flows again")
    return healed


def sdn_stale(data_dir: Path, member: str | None = None) -> list[dict[str, Any]]:
    """A former master comes back believing it still is: the instance (a standby, or
    `member`) asks each of its switches for MASTER with the epoch it last held, or one below
    the switch's. Returns what each switch answered (`stale`: refused, OFPRRFC_STALE)."""
    from vimha.sdn.control import ask

    m = _sdn_member(data_dir, member, master=False)
    socket = data_dir / "nodes" / str(m["host"]) / "run" / "sdn-sdn" / "control.sock"
    try:
        reply = asyncio.run(ask(socket, {"op": "reassert"}, 5.0))
    except (OSError, TimeoutError) as exc:
        raise Permanent(f"the SDN instance on {m['host']} did not answer: {exc}") from exc
    answers: list[dict[str, Any]] = reply.get("answers", [])
    return [{**a, "instance": m["host"]} for a in answers]
