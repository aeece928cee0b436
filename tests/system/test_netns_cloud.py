"""`vimha up --netns` (root): every node in its own network namespace, linked to one bridge
per plane. Faults are real: a link set down inside a node's namespace, a rack partitioned by
an nftables drop rule. Checks the classification, the alarms and the notifications that a
real HTTP subscriber receives, and that `vimha down` leaves no namespace, link or rule.

And the VNF instances' ports (issue 14, `--netns` without an SDN): each guest in a network
namespace of its own, one veth per port on its node's bridge for the network, the nodes'
bridges of a network joined; a guest on another node reaches it over HTTP, and after its
node is powered off, the recovered instance answers at the same IP and MAC on its new host."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require_system
from tests.support.consumer import ConsumerProcess
from tests.system.test_embedded_cloud import Cloud, running_cloud, until
from vimha.cloud import netns
from vimha.domain.addressing import tap_name

R1 = ("ctl-1", "ctl-2", "cmp-1", "cmp-2", "sto-1")
R2 = ("ctl-3", "cmp-3", "cmp-4")


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    require_system(netns.available() is None, f"netns mode: {netns.available()}")
    with running_cloud(tmp_path, "--netns", "--sdn", "off") as c:
        yield c
    tag = f"vh{c.url.rsplit(':', 1)[1]}"  # nothing left behind
    assert tag not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert tag not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def alarms(cloud: Cloud) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cloud.get("/vimfm/v1/alarms")
    return found


def subscribe(cloud: Cloud, consumer: ConsumerProcess) -> None:
    r = httpx.post(
        cloud.url + "/vimfm/v1/subscriptions",
        json={"callbackUri": consumer.url},
        headers={"Authorization": f"Bearer {cloud.token}"},
    )
    assert r.status_code == 201, r.text


def test_real_link_down_degrades_without_failover(cloud: Cloud, consumer: ConsumerProcess) -> None:
    subscribe(cloud, consumer)
    out = cloud.chaos("plane-down", "cmp-2", "storage")
    assert "namespace vh" in out
    host = until(lambda: (h := cloud.hosts()["cmp-2"])["healthStatus"] == "DEGRADED" and h)
    assert host["failureKind"] == "LINK_FAULT"
    assert host["planes"]["mgmt"]["status"] == "UP"
    alarms = cloud.get("/vimfm/v1/alarms")
    [alarm] = [a for a in alarms if a["managedObjectId"].startswith("cmp-2")]
    assert alarm["managedObjectId"] == "cmp-2/storage"
    assert alarm["eventType"] == "COMMUNICATIONS_ALARM" and alarm["perceivedSeverity"] == "MAJOR"
    assert "link storage up" in cloud.chaos("heal", "cmp-2")
    until(lambda: cloud.hosts()["cmp-2"]["healthStatus"] == "UP")
    until(lambda: cloud.cleared("cmp-2/storage") == 1)
    got = consumer.wait_for(
        lambda n: any(x.get("healthStatus") == "UP" and x.get("hostId") == "cmp-2" for x in n)
    )
    health = [x["healthStatus"] for x in got if x.get("hostId") == "cmp-2"]
    assert health == ["DEGRADED", "UP"]  # never DOWN: one plane is not a node failure

    # Both links down: the agent is alive but isolated, its BMC says power on: the node is
    # fenced before anything of it could be recovered elsewhere.
    cloud.chaos("plane-down", "cmp-2", "mgmt")
    cloud.chaos("plane-down", "cmp-2", "storage")
    host = until(lambda: (h := cloud.hosts()["cmp-2"])["healthStatus"] == "FENCED" and h)
    assert host["failureKind"] == "COMPUTE_NODE_FAILURE"
    until(lambda: cloud.hosts()["cmp-2"]["bmc"]["powerState"] == "Off")  # the next BMC poll
    out = cloud.chaos("heal", "cmp-2")
    assert "link mgmt up" in out and "powered on" in out
    until(lambda: cloud.hosts()["cmp-2"]["healthStatus"] == "UP", 60)
    cloud.no_alarms()


def test_partitioned_rack_is_fenced_or_alarmed(cloud: Cloud, consumer: ConsumerProcess) -> None:
    subscribe(cloud, consumer)
    # Rack r2 cut off the controllers, its BMCs still reachable (out-of-band network):
    # its hosts may be running, isolated: each is fenced through its BMC.
    assert "nftables" in cloud.chaos("partition", "r2")
    until(lambda: all(cloud.hosts()[h]["healthStatus"] == "FENCED" for h in R2), 30)
    for name in R2:
        host = cloud.hosts()[name]
        assert host["failureKind"] == "COMPUTE_NODE_FAILURE", host
        until(lambda name=name: cloud.hosts()[name]["bmc"]["powerState"] == "Off")
    assert all(cloud.hosts()[h]["healthStatus"] == "UP" for h in R1)
    out = cloud.chaos("heal")
    assert "partition healed" in out and "cmp-3: powered on" in out
    until(lambda: all(h["healthStatus"] == "UP" for h in cloud.hosts().values()), 60)

    # Rack r1 cut off with its BMCs (the top-of-rack switch carries both): the rack is the
    # suspect, and with no BMC to confirm a power-off nothing may be recovered.
    cloud.chaos("partition", "r1", "--with-bmc")
    until(lambda: all(cloud.hosts()[h]["fencing"]["state"] == "FAILED" for h in R1), 30)
    for name in R1:
        host = cloud.hosts()[name]
        assert host["healthStatus"] == "DOWN" and host["failureKind"] == "RACK_FAILURE"
        assert host["fencing"]["recoverable"] is False
    # the alarms are committed a moment after the fencing state is shown
    wanted = {(h, "RACK_FAILURE") for h in R1} | {(h, "FENCING_FAILED") for h in R1}
    until(lambda: wanted <= {(a["managedObjectId"], a["faultType"]) for a in alarms(cloud)}, 10)
    got = consumer.wait_for(
        lambda n: sum(x.get("failureKind") == "RACK_FAILURE" for x in n) >= len(R1)
    )
    rack = [x for x in got if x.get("failureKind") == "RACK_FAILURE"]
    assert {x["location"]["rack"] for x in rack} == {"r1"}
    cloud.chaos("heal")
    until(lambda: all(h["healthStatus"] == "UP" for h in cloud.hosts().values()), 60)
    cloud.no_alarms()


def guest_netns(cloud: Cloud, host: str, instance_id: str) -> str:
    """The network namespace of an instance's guest (its driver's record of its pid)."""
    state = cloud.data / "nodes" / host / "guests" / instance_id / "state.json"
    pid = json.loads(state.read_text())["pid"]
    assert pid, f"{instance_id} has no guest on {host}"
    return f"/proc/{pid}/ns/net"


def inside(ns: str, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net={ns}", *argv], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def answer(source: str, ip: str) -> dict[str, Any] | None:
    """A guest's answer on `ip`, asked from inside the network namespace `source`."""
    code = (
        "import sys, urllib.request as u\n"
        "sys.stdout.write(u.urlopen(sys.argv[1], timeout=0.5).read().decode())"
    )
    try:
        out = inside(source, sys.executable, "-S", "-c", code, f"http://{ip}:8080/")
        return dict(json.loads(out.stdout)) if out.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        return None


def mac_seen(source: str, ip: str) -> str | None:
    """The MAC that answered for `ip`, in the neighbour table of `source`."""
    found = json.loads(inside(source, "ip", "-j", "neigh", "show", ip).stdout or "[]")
    return next((str(n["lladdr"]) for n in found if "lladdr" in n), None)


def on_bridge(cloud: Cloud, host: str, port: dict[str, Any]) -> bool:
    """Whether the port's host side is on `host`'s bridge for its network."""
    ns = f"vh{cloud.url.rsplit(':', 1)[1]}-{host}"
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", tap_name(port["mac"])],
                         capture_output=True, text=True)  # fmt: skip
    links = json.loads(out.stdout or "[]") if out.returncode == 0 else []
    return [link.get("master") for link in links] == [netns.vnf_bridge(port["network"])]


def test_instances_answer_from_another_nodes_guest_and_at_the_same_address_after_recovery(
    cloud: Cloud,
) -> None:
    insts = until(
        lambda: len(i := cloud.get("/vim/v1/instances")) == 5
        and all(x["status"] == "ACTIVE" for x in i) and i,
        120,
    )  # fmt: skip
    for inst in insts:  # real interfaces: the host sides on their nodes' bridges
        for port in inst["ports"]:
            assert on_bridge(cloud, inst["host"], port), (inst["name"], port)
    victim = next(i["host"] for i in insts if i["name"] == "vfw-fw-1")
    src = next(i for i in insts if i["host"] != victim)
    source = guest_netns(cloud, src["host"], src["id"])
    on_a = {i["id"]: next(p for p in i["ports"] if p["network"] == "vnf-a") for i in insts}
    for inst in insts:
        if inst["host"] == src["host"]:
            continue  # another node's guests: across the nodes' bridges
        ip = on_a[inst["id"]]["ip"]
        assert ip.startswith("10.64.")
        body = until(lambda ip=ip: answer(source, ip), 30)
        assert body["instance"] == inst["id"] and body["port"] == "vnf-a"
        assert body["digest"] == inst["initialStateDigest"]
        assert mac_seen(source, ip) == on_a[inst["id"]]["mac"]

    gone = [i for i in insts if i["host"] == victim]
    assert "confirmed" in cloud.chaos("power-off", victim)
    for inst in gone:
        moved = until(
            lambda i=inst: (n := next(x for x in cloud.get("/vim/v1/instances")
                                      if x["id"] == i["id"]))["host"] != victim
            and n["status"] == "ACTIVE" and n,
            90,
        )  # fmt: skip
        assert moved["incarnation"] == inst["incarnation"] + 1
        assert moved["ports"] == inst["ports"], "the same MACs and IPs"
        port = on_a[inst["id"]]
        inside(source, "ip", "neigh", "flush", "to", port["ip"])  # asked again: who answers
        body = until(
            lambda i=moved, ip=port["ip"]: (b := answer(source, ip))
            and b["incarnation"] == i["incarnation"] and b,
            60,
        )  # fmt: skip
        assert body["instance"] == inst["id"] and body["digest"] == inst["initialStateDigest"]
        assert mac_seen(source, port["ip"]) == port["mac"], "the same MAC"
        assert all(on_bridge(cloud, moved["host"], p) for p in moved["ports"])
    assert "powered on" in cloud.chaos("heal", victim)
    until(lambda: cloud.hosts()[victim]["healthStatus"] == "UP", 90)
