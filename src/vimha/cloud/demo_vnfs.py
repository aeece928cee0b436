"""The embedded cloud's demo VNFs (issue 14): a flavor, the demo guest's image, two VNF
networks and two VNFs, created through the API once the compute hosts are up.

- `vfw`: SAL LEVEL_1, priority 100, 2 instances apart (anti-affinity per host), each with a
  redundant pair of ports on vnf-a and vnf-b (bonded in the guest) and a watchdog (reset
  after 5 s); a crashed instance is restarted in place, replaced after 3 restarts;
- `vlb`: SAL LEVEL_2, priority 50, 3 instances on vnf-a, spread where possible, a health
  check (HTTP, 3 failures in a row make it hung).

Idempotent: a restarted `vimha up` keeps what its data folder holds (client tokens)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from vimha.cloud import demo_guest
from vimha.drivers.tls import client_tls

log = logging.getLogger("vimha.cloud.demo")
COMPUTE = ("cmp-1", "cmp-2", "cmp-3", "cmp-4")
IMAGE = "demo-guest"
FLAVOR = "m1.tiny"


def loopback_networks(port: int) -> dict[str, str]:
    """The loopback subnets of the cloud whose API is on `port`: two /16s of 127.64-127.127,
    chosen by the port, so that clouds running side by side (tests, benches) never give
    their guests the same address (a guest that cannot bind its address exits)."""
    second = 64 + 2 * (port % 32)
    return {"vnf-a": f"127.{second}.0.0/16", "vnf-b": f"127.{second + 1}.0.0/16"}


# In netns mode each guest has a network namespace of its own and each VNF network its own
# layer 2 (a cloud's bridges, or its switches): two clouds side by side never meet there.
NETNS_NETWORKS = {"vnf-a": "10.64.0.0/16", "vnf-b": "10.65.0.0/16"}


@dataclass(frozen=True)
class Catalog:
    """What the demo VNFs run on: the image (its data and properties), the flavor's RAM and
    the networks' subnets (cidr, gateway or None)."""

    networks: dict[str, tuple[str, str | None]]
    image: Callable[[], bytes]
    properties: dict[str, str]
    ram_mib: int = 128


def catalog(port: int, netns: bool = False, qemu_image: Path | None = None) -> Catalog:
    """Process guests on two /16s of 127/8 chosen by the API's `port`; in a netns cloud
    (`netns`), on 10.64.0.0/16 and 10.65.0.0/16, each guest in a network namespace of its
    own with a veth port on its node's bridge for the network (cloud/netns.py
    `create_vnf_networks`, or the node's switch: cloud/sdn.py); or QEMU guests (libvirt: the
    bundle `qemu_image`, networks on the host's bridges, see cloud/qemu_mode.py)."""
    if qemu_image is not None:
        from vimha.cloud import qemu_mode

        nets: dict[str, tuple[str, str | None]] = {
            n: (c, qemu_mode.gateway(c)) for n, c in qemu_mode.NETWORKS.items()
        }
        props = {"hypervisor_type": "qemu", "vimha_format": "kernel+initrd"}
        return Catalog(nets, qemu_image.read_bytes, props, qemu_mode.RAM_MIB)
    cidrs = NETNS_NETWORKS if netns else loopback_networks(port)
    props = {"hypervisor_type": "process", "vimha_format": "tar"}
    return Catalog({n: (c, None) for n, c in cidrs.items()}, process_image, props)


def process_image() -> bytes:
    """The process driver's demo image: a tar of the guest program and its manifest."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in (
            ("guest.py", Path(demo_guest.__file__).read_bytes()),
            (
                "manifest.json",
                json.dumps({"command": ["{python}", "-S", "-I", "guest.py"]}).encode(),
            ),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def demo_descriptors() -> list[dict[str, Any]]:
    return [
        {
            "name": "vfw",
            "sal": "LEVEL_1",
            "priority": 100,
            "clientToken": "demo-vfw",
            "vdus": [
                {
                    "name": "fw",
                    "count": 2,
                    "minCount": 1,
                    "maxCount": 4,
                    "flavor": FLAVOR,
                    "image": IMAGE,
                    "networks": [{"redundant": ["vnf-a", "vnf-b"], "tags": ["data"]}],
                    "watchdog": {"timeout": 5, "action": "reset", "tags": ["ha"]},
                    "migration": {"policy": "live", "maxInterruptionMs": 300},
                    "configDrive": {"metadata": {"role": "firewall"}},
                    "placement": [{"policy": "anti-affinity", "level": "host"}],
                    "recovery": {"onFailure": "restart", "maxRestarts": 3, "window": 300},
                }
            ],
        },
        {
            "name": "vlb",
            "sal": "LEVEL_2",
            "priority": 50,
            "clientToken": "demo-vlb",
            "vdus": [
                {
                    "name": "lb",
                    "count": 3,
                    "minCount": 2,
                    "maxCount": 6,
                    "flavor": FLAVOR,
                    "image": IMAGE,
                    "networks": [{"network": "vnf-a", "tags": ["frontend"]}],
                    "migration": {"policy": "cold"},
                    "placement": [{"policy": "soft-anti-affinity", "level": "host"}],
                    "healthCheck": {"kind": "http", "interval": 1, "timeout": 0.5, "failures": 3},
                    "configDrive": {
                        "metadata": {"role": "balancer"},
                        "userData": "#!/bin/sh\necho vlb\n",
                    },
                }
            ],
        },
    ]


async def ensure_catalog(client: httpx.AsyncClient, cat: Catalog) -> None:
    """The demo flavor, image and networks, unless they exist."""
    flavors = {f["name"] for f in (await client.get("/vim/v1/flavors")).json()}
    if FLAVOR not in flavors:
        r = await client.post(
            "/vim/v1/flavors",
            json={"name": FLAVOR, "vcpus": 1, "ramMib": cat.ram_mib, "diskGib": 1},
        )
        r.raise_for_status()
    images = {i["name"]: i for i in (await client.get("/vim/v1/images")).json()}
    if IMAGE not in images or images[IMAGE]["status"] != "active":
        if IMAGE in images:
            await client.delete(f"/vim/v1/images/{images[IMAGE]['id']}")
        r = await client.post(
            "/vim/v1/images",
            json={
                "name": IMAGE,
                "diskFormat": "raw",
                "containerFormat": "bare",
                "properties": cat.properties,
            },
        )
        r.raise_for_status()
        image_id = r.json()["id"]
        r = await client.put(
            f"/vim/v1/images/{image_id}/file",
            content=await asyncio.to_thread(cat.image),
            headers={"Content-Type": "application/octet-stream"},
        )
        r.raise_for_status()
    networks = {n["name"] for n in (await client.get("/vim/v1/networks")).json()}
    for name, (cidr, gateway) in cat.networks.items():
        if name not in networks:
            body = {"name": name, "cidr": cidr, **({"gateway": gateway} if gateway else {})}
            (await client.post("/vim/v1/networks", json=body)).raise_for_status()


async def compute_ready(client: httpx.AsyncClient, hosts: tuple[str, ...]) -> bool:
    r = await client.get("/vim/v1/hosts")
    if r.status_code != 200:
        return False
    views = {h["id"]: h for h in r.json()}
    return all(
        views.get(h, {}).get("healthStatus") == "UP" and views[h].get("compute") for h in hosts
    )


async def bootstrap(url: str, token: str, cat: Catalog, within: float = 120.0) -> None:
    """Create the demo catalog and VNFs once the API answers and the compute hosts are UP
    and have reported their resources."""
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=30, verify=client_tls()
    ) as client:
        while True:
            try:
                await ensure_catalog(client, cat)
                if await compute_ready(client, COMPUTE):
                    break
            except httpx.HTTPError as exc:
                log.debug("demo VNFs: API not ready (%s)", exc)
            if time.monotonic() > deadline:
                log.error("demo VNFs not created: the compute hosts are not up")
                return
            await asyncio.sleep(0.5)
        for desc in demo_descriptors():
            r = await client.post("/vim/v1/vnfs", json=desc)
            if r.status_code == 409 and "clientToken" in r.text:
                continue  # created by an earlier run
            if r.status_code != 201:
                log.error("demo VNF %s not created: %s", desc["name"], r.text[:300])
                continue
            log.warning(
                "demo VNF %s created: %d instances", desc["name"], len(r.json()["instances"])
            )
