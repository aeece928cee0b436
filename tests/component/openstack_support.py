"""A controller's API with two compute hosts heard through real heartbeats, whose agents
the tests play (their reports), for the component tests of the OpenStack faces."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.component.conftest import ADMIN, OPERATOR, READER
from tests.conftest import free_port
from vimha.api.app import create_app
from vimha.config import Config, load
from vimha.controller import build_auth, open_store
from vimha.domain.compute import Power
from vimha.domain.instance_states import Seen
from vimha.drivers.clock import SystemClock
from vimha.drivers.heartbeat_udp import HeartbeatSender, PlaneRoute
from vimha.drivers.http_notifier import HttpNotifier
from vimha.engine.host_reports import GuestReport, HostReport
from vimha.engine.runtime import Runtime

BASE = "http://vim.example"
V = {"OpenStack-API-Version": "compute 2.79"}
KEY = "compute-host-key-0123456789"
HOSTS = {"cmp-1": ("z1", "r1"), "cmp-2": ("z2", "r2")}


def config(db: Path, port: int) -> Config:
    return load(
        None,
        {
            "store": {"url": f"sqlite:///{db}"},
            "api": {"public_url": BASE},
            "delivery": {"process": False},
            "heartbeat": {"listen": {"mgmt": f"127.0.0.1:{port}"}, "startup_grace": 1},
            "hosts": [
                {"name": h, "key": KEY, "location": {"zone": z, "rack": r}}
                for h, (z, r) in HOSTS.items()
            ],
            "auth": {
                "tokens": [
                    {"name": "admin", "token": ADMIN, "role": "admin"},
                    {"name": "ops", "token": OPERATOR, "role": "operator"},
                    {"name": "ro", "token": READER, "role": "reader"},
                ]
            },
        },
    )


@dataclass
class Cloud:
    client: httpx.AsyncClient
    runtime: Runtime
    beating: dict[str, asyncio.Event] = field(default_factory=dict)  # set: heartbeats stop

    def silence(self, host: str) -> None:
        """The host's heartbeats stop (it is then judged DOWN, and not fenced: no BMC)."""
        self.beating[host].set()

    async def health(self, host: str) -> str:
        r = await self.call("GET", f"/vim/v1/hosts/{host}")
        return str(r.json()["healthStatus"])

    def report(self, host: str, running: dict[str, int] | None = None) -> None:
        """What the host's agent would say: its capacity, and these guests running
        (instance id -> incarnation)."""
        guests = tuple(GuestReport(i, n, Seen.RUNNING) for i, n in (running or {}).items())
        resources = {
            "vcpus": 2,
            "ramMib": 1024,
            "diskGib": 10,
            "traits": [],
            "hypervisor": "process",
        }
        self.runtime.host_reports.report(HostReport(host, guests, (), resources))

    def boot_all(self) -> None:
        """Every guest placed on a host runs, but those being deleted, which are gone (as
        if its agent reported it)."""
        for host in HOSTS:
            placed = self.runtime.store.compute.instances(host=host)
            self.report(host, {i.id: i.incarnation for i in placed if i.power is not Power.DELETED})

    async def call(self, method: str, path: str, token: str = ADMIN, **kw: Any) -> httpx.Response:
        headers = {"X-Auth-Token": token, **kw.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kw)


async def open_cloud(db: Path) -> AsyncIterator[Cloud]:
    port = free_port()
    cfg = config(db, port)
    store = open_store(cfg, migrate=True)
    runtime = Runtime(cfg, store, HttpNotifier(2, 2), SystemClock())
    app = create_app(runtime, build_auth(cfg))
    await runtime.start()
    beating = {h: asyncio.Event() for h in HOSTS}
    route = [PlaneRoute("mgmt", "127.0.0.1", ("127.0.0.1", port))]
    senders = [
        asyncio.create_task(HeartbeatSender(h, KEY.encode(), route, 0.05).run(beating[h]))
        for h in HOSTS
    ]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        cloud = Cloud(client, runtime, beating)
        for _ in range(200):
            if all([await cloud.health(h) == "UP" for h in HOSTS]):
                break
            await asyncio.sleep(0.05)
        for host in HOSTS:
            cloud.report(host)
        yield cloud
    for event in beating.values():
        event.set()
    for task in senders:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await runtime.stop()
    store.close()


def password_auth(user: str, password: str, scope: Any = None) -> dict[str, Any]:
    auth: dict[str, Any] = {
        "identity": {
            "methods": ["password"],
            "password": {
                "user": {"name": user, "domain": {"name": "Default"}, "password": password}
            },
        }
    }
    if scope is not None:
        auth["scope"] = scope
    return {"auth": auth}


PROJECT = {"project": {"name": "admin", "domain": {"name": "Default"}}}


async def catalog_items(cloud: Cloud) -> tuple[str, str, str]:
    """A flavor, an image with data, two networks: (flavor, image id, the networks' ids)."""
    r = await cloud.call(
        "POST", "/vim/v1/flavors", json={"name": "m1.tiny", "vcpus": 1, "ramMib": 128}
    )
    assert r.status_code == 201, r.text
    r = await cloud.call(
        "POST",
        "/image/v2/images",
        json={"name": "guest", "disk_format": "raw", "container_format": "bare"},
    )
    image = r.json()["id"]
    r = await cloud.call(
        "PUT",
        f"/image/v2/images/{image}/file",
        content=b"guest image",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 204, r.text
    for name, cidr in (("vnf-a", "10.64.0.0/24"), ("vnf-b", "10.65.0.0/24")):
        r = await cloud.call("POST", "/vim/v1/networks", json={"name": name, "cidr": cidr})
        assert r.status_code == 201, r.text
    nets = (await cloud.call("GET", "/network/v2.0/networks")).json()["networks"]
    return "m1.tiny", image, ",".join(n["id"] for n in nets)


async def boot(cloud: Cloud, name: str, networks: Any, flavor: str = "m1.tiny", **more: Any) -> str:
    image = (await cloud.call("GET", "/image/v2/images?name=guest")).json()["images"][0]["id"]
    server = {"name": name, "imageRef": image, "flavorRef": flavor, "networks": networks}
    hints = more.pop("hints", None)
    doc: dict[str, Any] = {"server": {**server, **more}}
    if hints:
        doc["os:scheduler_hints"] = hints
    r = await cloud.call("POST", "/compute/v2.1/servers", json=doc, headers=V)
    assert r.status_code == 202, r.text
    return str(r.json()["server"]["id"])


async def show(cloud: Cloud, server: str, version: str = "2.79") -> dict[str, Any]:
    headers = {"OpenStack-API-Version": f"compute {version}"}
    r = await cloud.call("GET", f"/compute/v2.1/servers/{server}", headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json()["server"])
