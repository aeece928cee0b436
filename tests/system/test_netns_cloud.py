"""`vimha up --netns` (root): every node in its own network namespace, linked to one bridge
per plane. Faults are real: a link set down inside a node's namespace, a rack partitioned by
an nftables drop rule. Checks the classification, the alarms and the notifications that a
real HTTP subscriber receives, and that `vimha down` leaves no namespace, link or rule."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require_system
from tests.support.consumer import ConsumerProcess
from tests.system.test_embedded_cloud import Cloud, running_cloud, until
from vimha.cloud import netns

R1 = ("ctl-1", "ctl-2", "cmp-1", "cmp-2", "sto-1")
R2 = ("ctl-3", "cmp-3", "cmp-4")


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    require_system(netns.available() is None, f"netns mode: {netns.available()}")
    with running_cloud(tmp_path, "--netns") as c:
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
    [alarm] = cloud.get("/vimfm/v1/alarms")
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
    until(lambda: cloud.get("/vimfm/v1/alarms") == [])


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
    until(lambda: cloud.get("/vimfm/v1/alarms") == [])
