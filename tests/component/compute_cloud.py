"""An in-process controller with a real store, two compute hosts heard through real
heartbeats, and their agents played by the tests through the agents' API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.component.conftest import ADMIN, OPERATOR, READER
from tests.conftest import free_port
from vimha.api.app import create_app
from vimha.config import load
from vimha.controller import build_auth, open_store
from vimha.drivers.clock import SystemClock
from vimha.drivers.heartbeat_udp import HeartbeatSender, PlaneRoute
from vimha.drivers.http_notifier import HttpNotifier
from vimha.engine.runtime import Runtime

KEY = "compute-host-key-0123456789"
HOSTS = ("cmp-1", "cmp-2")


@dataclass
class Cloud:
    client: httpx.AsyncClient
    runtime: Runtime
    beating: dict[str, asyncio.Event] = field(default_factory=dict)  # host -> its sender's stop

    def silence(self, host: str) -> None:
        """The host's heartbeats stop (as its node failing would)."""
        self.beating[host].set()

    async def until(self, check: Any, within: float = 15.0) -> Any:
        deadline = asyncio.get_running_loop().time() + within
        while not (result := await check()):
            assert asyncio.get_running_loop().time() < deadline, "condition not reached"
            await asyncio.sleep(0.05)
        return result

    async def instance(self, iid: str) -> dict[str, Any]:
        return dict(await self.ok("GET", f"/vim/v1/instances/{iid}"))

    async def call(self, method: str, path: str, token: str = ADMIN, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kw)

    async def ok(self, method: str, path: str, **kw: Any) -> Any:
        r = await self.call(method, path, **kw)
        assert r.status_code < 300, r.text
        return r.json() if r.content else None

    async def report(self, host: str, guests: list[dict[str, Any]], **extra: Any) -> Any:
        body = {
            "guests": guests,
            "resources": {
                "vcpus": 2,
                "ramMib": 4096,
                "diskGib": 50,
                "traits": ["T"],
                "hypervisor": "process",
            },
            "console": f"127.0.0.1:{1000 + HOSTS.index(host)}",
            **extra,
        }
        return await self.ok("PUT", f"/vim/v1/hosts/{host}/instances/observed", json=body)

    async def desired(self, host: str) -> dict[str, Any]:
        return dict(await self.ok("GET", f"/vim/v1/hosts/{host}/instances/desired"))

    async def run_all(self, host: str, state: str = "RUNNING", rebooted: int | None = None) -> None:
        """The agent of `host` runs what it should, in `state`, having done the reboots asked
        (or up to `rebooted`)."""
        wanted = (await self.desired(host))["instances"]
        await self.report(
            host,
            [
                {
                    "id": i["id"],
                    "incarnation": i["incarnation"],
                    "state": state,
                    "rebooted": i["reboot"]["seq"] if rebooted is None else rebooted,
                }
                for i in wanted
                if i["power"] != "deleted"
            ],
        )


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    port = free_port()
    config = load(
        None,
        {
            "store": {"url": f"sqlite:///{tmp_path / 'api.db'}"},
            "api": {"public_url": "http://vim.example"},
            "delivery": {"process": False},
            "heartbeat": {"listen": {"mgmt": f"127.0.0.1:{port}"}, "startup_grace": 1},
            "compute": {"cpu_allocation_ratio": 1.0},
            "fencing": {"delay": 0.2},
            "hosts": [
                {"name": h, "key": KEY, "location": {"zone": "z1", "rack": f"r{n}"}}
                for n, h in enumerate(HOSTS)
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
    store = open_store(config, migrate=True)
    runtime = Runtime(config, store, HttpNotifier(2, 2), SystemClock())
    app = create_app(runtime, build_auth(config))
    await runtime.start()
    stops = {h: asyncio.Event() for h in HOSTS}
    senders = [
        asyncio.create_task(
            HeartbeatSender(
                h, KEY.encode(), [PlaneRoute("mgmt", "127.0.0.1", ("127.0.0.1", port))], 0.05
            ).run(stops[h])
        )
        for h in HOSTS
    ]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://vim.example") as client:
        c = Cloud(client, runtime, stops)
        for _ in range(100):
            hosts = await c.ok("GET", "/vim/v1/hosts")
            if all(h["healthStatus"] == "UP" for h in hosts):
                break
            await asyncio.sleep(0.05)
        for h in HOSTS:
            await c.report(h, [])
        await c.ok("POST", "/vim/v1/flavors", json={"name": "tiny", "vcpus": 1, "ramMib": 256})
        await c.ok("POST", "/vim/v1/flavors", json={"name": "huge", "vcpus": 64, "ramMib": 256})
        image = await c.ok(
            "POST",
            "/vim/v1/images",
            json={"name": "guest", "properties": {"hypervisor_type": "process"}},
        )
        await c.ok(
            "PUT",
            f"/vim/v1/images/{image['id']}/file",
            content=b"tar bytes",
            headers={"Content-Type": "application/octet-stream"},
        )
        await c.ok("POST", "/vim/v1/networks", json={"name": "vnf-a", "cidr": "10.9.0.0/24"})
        await c.ok(
            "POST", "/vim/v1/networks", json={"name": "tiny-net", "cidr": "10.8.0.0/30"}
        )  # 2 addresses
        yield c
    for stop in stops.values():
        stop.set()
    for task in senders:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await runtime.stop()
    store.close()
