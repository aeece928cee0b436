"""What the SDN system tests and bench/sdn_failover.py share: the switches' flows read with
ovs-ofctl inside a compute node's namespace, pings every 10 ms between stand-in endpoints,
and the masters as the controllers' API shows them."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vimha.cloud import demo_vnfs
from vimha.cloud import sdn as cloud_sdn
from vimha.cloud.netns import Netns
from vimha.cloud.nodes import PLANES
from vimha.domain.sdn import SwitchPorts, plan_flows, tunnel_port_name
from vimha.sdnkeys import network_from, port_from

FLOW = re.compile(r"cookie=(0x[0-9a-f]+), duration=([0-9.]+)s.*n_packets=(\d+)")


def netns_of(port: int) -> Netns:
    return Netns.for_port(port, PLANES)


def endpoint_ip(name: str) -> str:
    return next(str(p["ip"]) for p in cloud_sdn.endpoints() if p["id"] == name)


def flows(data: Path, port: int, node: str) -> dict[str, tuple[float, int]]:
    """The vimha flows of a compute node's switch: cookie -> (duration s, packets)."""
    home = data / "nodes" / node / "run" / "ovs"
    out = subprocess.run(
        ["ip", "netns", "exec", netns_of(port).namespace(node), "ovs-ofctl", "-O",
         "OpenFlow13", "dump-flows", "br-vnf"],
        capture_output=True, text=True, timeout=10, env={**os.environ, "OVS_RUNDIR": str(home)},
    )  # fmt: skip
    found = {}
    for line in out.stdout.splitlines():
        m = FLOW.search(line)
        if m and m.group(1).startswith("0x76"):
            found[m.group(1)] = (float(m.group(2)), int(m.group(3)))
    return found


@dataclass
class Pinger:
    """ping -i 0.01 from an endpoint to another's address, for `seconds`."""

    proc: subprocess.Popen[str]

    @classmethod
    def start(cls, port: int, source: str, target: str, seconds: float) -> Pinger:
        ns = cloud_sdn.endpoint_namespace(netns_of(port), source)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "ping", "-q", "-i", "0.01", "-W", "2", "-c",
             str(round(seconds / 0.01)), endpoint_ip(target)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        return cls(proc)

    def result(self) -> tuple[int, int]:
        """(sent, lost)."""
        out, _ = self.proc.communicate(timeout=60)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m, out
        sent, received = int(m.group(1)), int(m.group(2))
        return sent, sent - received


def reaches(port: int, source: str, target: str) -> bool:
    ns = cloud_sdn.endpoint_namespace(netns_of(port), source)
    return (
        subprocess.run(
            ["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", endpoint_ip(target)],
            capture_output=True, timeout=10,
        ).returncode == 0
    )  # fmt: skip


def masters(get: Callable[[str], Any]) -> dict[str, tuple[str | None, int | None]]:
    """dpid -> (master, epoch), from GET /vim/v1/sdn/switches."""
    return {s["dpid"]: (s["master"], s["epoch"]) for s in get("/vim/v1/sdn/switches")}


def new_masters(
    get: Callable[[str], Any], before: dict[str, tuple[str | None, int | None]], gone: str
) -> dict[str, float]:
    """Per switch whose master was `gone`: when its new master's ROLE_REPLY arrived (wall
    time), once every one of them has a new master with a newer epoch; {} until then."""
    instances = get("/vim/v1/sdn/instances")
    out = {}
    for dpid, (master, epoch) in before.items():
        if master != gone:
            continue
        for name, doc in instances.items():
            sw = doc.get("switches", {}).get(dpid, {})
            if name != gone and sw.get("role") == "master" and sw.get("epoch", -1) > (epoch or 0):
                out[dpid] = float(sw["roleAt"])
        if dpid not in out:
            return {}
    return out


def settled(get: Callable[[str], Any], model: str) -> bool:
    """Every switch mastered, connected to every instance, its flows in place."""
    switches = get("/vim/v1/sdn/switches")
    want = len(cloud_sdn.members(model))
    return bool(switches) and all(
        s["master"] and len(s["connected"]) == want and s["flows"] and not s["tunnelsDown"]
        for s in switches
    )


def flows_final(get: Callable[[str], Any], data: Path, port: int) -> bool:
    """The flows are what they stay: the demo VNFs created, their instances ACTIVE, each
    of their ports bound on the instance's host; on every switch (as its master sees it)
    the device of every port intent of its host and a tunnel port towards every other
    host; and every switch holding exactly the flows the intents imply for those ports.

    A master programs a switch with what it has: a guest whose devices are not attached
    yet (an ACTIVE instance's may follow by a second or more) or a peer's tunnel not yet
    made is left out, and the flows change once they are there, whoever is master."""
    names = {v["name"] for v in get("/vim/v1/vnfs")}
    if not {d["name"] for d in demo_vnfs.demo_descriptors()} <= names:
        return False
    intents = {p.id: p for d in get("/vim/v1/sdn/ports") if (p := port_from(d))}
    for inst in get("/vim/v1/instances"):
        if inst["status"] != "ACTIVE" or any(
            p["portId"] not in intents or intents[p["portId"]].host != inst["host"]
            for p in inst["ports"]
        ):
            return False
    networks = [n for d in get("/vim/v1/sdn/networks") if (n := network_from(d))]
    switches = get("/vim/v1/sdn/switches")
    net = netns_of(port)  # a compute node's datapath id is its index (cloud/sdn.py)
    tunnel_ips = {s["host"]: cloud_sdn.tunnel_address(net, int(s["dpid"], 16))
                  for s in switches}  # fmt: skip
    for s in switches:
        host = s["host"]
        numbers = {name: int(p["number"]) for name, p in s["ports"].items()}
        needed = {p.device for p in intents.values() if p.host == host} | {
            tunnel_port_name(ip) for h, ip in tunnel_ips.items() if h != host
        }
        if not needed <= set(numbers):
            return False
        plan = plan_flows(host, SwitchPorts(numbers), tunnel_ips, networks, intents.values())
        if {f"{f.cookie:#x}" for f in plan} != set(flows(data, port, host)):
            return False
    return True


def wait(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := pred()):
        assert time.monotonic() < deadline, f"not reached within {timeout:g}s: {what}"
        time.sleep(0.05)
    return result


def inject(data: Path, port: int, victim: str, how: str) -> float:
    """Fail the SDN instance on `victim` (kill: SIGKILL, stop: SIGSTOP, link: its mgmt link
    down) in this process, without a CLI's start-up in the way; returns the wall time just
    before the fault."""
    import signal

    from vimha.cloud import chaos
    from vimha.cloud import netns as cloud_netns

    if how == "link":
        t0 = time.time()
        cloud_netns.set_link(netns_of(port), victim, "mgmt", up=False)
        return t0
    [member] = [m for m in chaos.group_members(data, "sdn") if m.get("member") == victim]
    sig = signal.SIGKILL if how == "kill" else signal.SIGSTOP
    t0 = time.time()
    os.kill(int(member["pid"]), sig)
    return t0
