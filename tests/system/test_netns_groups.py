"""The load-balancer pair behind a virtual IP held by keepalived (VRRP v3, 100 ms adverts),
in `vimha up --netns` (root): clients reach every group through the VIP; when the VIP's
holder is powered off through its BMC, VRRP moves the address to the other balancer, the
clients go on, and the lost peer is alarmed."""

from __future__ import annotations

import shutil
import time
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
    with running_cloud(tmp_path, "--netns") as c:
        until(lambda: all(g["health"] == "OK" for g in c.get("/vim/v1/service-groups")), 60)
        yield c


def group(cloud: Cloud, name: str) -> dict[str, Any]:
    found: dict[str, Any] = cloud.get(f"/vim/v1/service-groups/{name}")
    return found


def holder(cloud: Cloud) -> str | None:
    held = [m["member"] for m in group(cloud, "vip")["members"] if "holder" in str(m.get("detail"))]
    return held[0] if len(held) == 1 else None


def test_the_balancers_vip_moves_when_its_holder_dies(cloud: Cloud) -> None:
    port = int(cloud.url.rsplit(":", 1)[1])
    net = netns.Netns.for_port(port, ("mgmt", "storage"))
    url = f"http://{vip(net)}:{frontend_port(port, 'api')}/"
    first = until(lambda: holder(cloud))
    with httpx.Client(timeout=2) as client:
        assert client.get(url).status_code == 200
        cloud.chaos("power-off", first)
        deadline = time.monotonic() + 30
        while True:  # VRRP moves the address within a few adverts
            try:
                if client.get(url).status_code == 200 and holder(cloud) not in (None, first):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, group(cloud, "vip")
            time.sleep(0.1)
    until(lambda: "SERVICE_GROUP_REDUNDANCY_LOST" in group(cloud, "lb")["alarms"], 30)
    cloud.chaos("heal", first)
    until(lambda: cloud.hosts()[first]["healthStatus"] == "UP", 60)
    until(lambda: group(cloud, "vip")["health"] == "OK" and not group(cloud, "lb")["alarms"], 60)
    assert holder(cloud) not in (None, first)  # back as backup: its clients are not cut again
