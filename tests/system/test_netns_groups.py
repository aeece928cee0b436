"""The load-balancer pair behind a virtual IP held by keepalived (VRRP v3, 100 ms adverts),
in `vimha up --netns` (root): clients reach every group through the VIP; when the holder's
HAProxy hangs, keepalived (tracking the node's balancer) gives the address up; when the
holder is powered off through its BMC, VRRP moves the address to the other balancer; the
clients go on, and the lost peer is alarmed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require_system
from tests.system.test_embedded_cloud import Cloud, running_cloud, until
from vimha.cloud import netns
from vimha.cloud.demo_groups import frontend_port, vip


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    require_system(netns.available() is None, f"netns mode: {netns.available()}")
    for tool in ("keepalived", "haproxy"):
        require_system(shutil.which(tool) is not None, f"{tool} (apt: {tool})")
    with running_cloud(tmp_path, "--netns", "--sdn", "off") as c:
        c.groups_ok(60)
        yield c


def group(cloud: Cloud, name: str) -> dict[str, Any]:
    found: dict[str, Any] = cloud.get(f"/vim/v1/service-groups/{name}")
    return found


def holder(cloud: Cloud) -> str | None:
    held = [m["member"] for m in group(cloud, "vip")["members"] if "holder" in str(m.get("detail"))]
    return held[0] if len(held) == 1 else None


def vip_serves(cloud: Cloud, client: httpx.Client, url: str, away_from: str) -> bool:
    """The VIP serves, from a holder other than `away_from`."""
    try:
        answered = client.get(url).status_code == 200
    except httpx.HTTPError:
        return False
    return answered and holder(cloud) not in (None, away_from)


def test_the_balancers_vip_follows_a_serving_balancer_and_moves_when_its_holder_dies(
    cloud: Cloud,
) -> None:
    port = int(cloud.url.rsplit(":", 1)[1])
    net = netns.Netns.for_port(port, ("mgmt", "storage"))
    url = f"http://{vip(net)}:{frontend_port(port, 'api')}/"
    first = until(lambda: holder(cloud))
    with httpx.Client(timeout=2) as client:
        assert client.get(url).status_code == 200
        # the holder's HAProxy hangs: keepalived itself is fine, but the address must go
        # where a balancer serves (keepalived tracks the node's `lb` member)
        cloud.chaos("kill-active", "lb", "--how", "stop", "--member", first)
        until(lambda: vip_serves(cloud, client, url, first), 30)
        second = holder(cloud)
        assert second is not None
        # the hung HAProxy is restarted; the address stays where it is (no preemption)
        until(lambda: group(cloud, "lb")["health"] == "OK" and not group(cloud, "lb")["alarms"])
        assert holder(cloud) == second
        cloud.chaos("power-off", second)
        until(lambda: vip_serves(cloud, client, url, second), 30)  # VRRP: within a few adverts
    until(lambda: "SERVICE_GROUP_REDUNDANCY_LOST" in group(cloud, "lb")["alarms"], 30)
    cloud.chaos("heal", second)
    until(lambda: cloud.hosts()[second]["healthStatus"] == "UP", 60)
    until(lambda: group(cloud, "vip")["health"] == "OK" and not group(cloud, "lb")["alarms"], 60)
    assert holder(cloud) not in (None, second)  # back as backup: its clients are not cut again
