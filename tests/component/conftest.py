from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from vimha.api.app import create_app
from vimha.config import load
from vimha.controller import build_auth, open_store
from vimha.drivers.clock import SystemClock
from vimha.drivers.http_notifier import HttpNotifier
from vimha.engine.runtime import Runtime

ADMIN = "admin-token-0123456789"
OPERATOR = "operator-token-0123456789"
READER = "reader-token-0123456789"
AGENT = "agent-cmp-1-token-0123456789"  # role agent, bound to host cmp-1


@dataclass
class Api:
    client: httpx.AsyncClient
    runtime: Runtime
    app: FastAPI

    def headers(self, token: str = ADMIN, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", **extra}

    async def raise_alarm(self, obj: str, severity: str = "MAJOR", **kw: object) -> str:
        body = {
            "managedObjectId": obj,
            "faultType": kw.pop("faultType", "HOST_DOWN"),
            "probableCause": "power",
            "perceivedSeverity": severity,
            "eventType": "EQUIPMENT_ALARM",
            **kw,
        }
        r = await self.client.post("/vim/v1/events", json=body, headers=self.headers())
        assert r.status_code == 200, r.text
        changes = r.json()["changes"]
        return str(changes[0]["alarmId"]) if changes else ""


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    config = load(
        None,
        {
            "store": {"url": f"sqlite:///{tmp_path / 'api.db'}"},
            "api": {"page_size": 3, "public_url": "http://vim.example"},
            "delivery": {
                "process": False,
                "initial_backoff": 0.05,
                "max_backoff": 0.2,
                "timeout": 2,
                "callback_test_timeout": 2,
            },
            "auth": {
                "tokens": [
                    {"name": "admin", "token": ADMIN, "role": "admin"},
                    {"name": "ops", "token": OPERATOR, "role": "operator"},
                    {"name": "ro", "token": READER, "role": "reader"},
                    {"name": "agent-cmp-1", "token": AGENT, "role": "agent", "host": "cmp-1"},
                ]
            },
        },
    )
    store = open_store(config, migrate=True)
    runtime = Runtime(config, store, HttpNotifier(2, 2), SystemClock())
    app = create_app(runtime, build_auth(config))
    await runtime.start()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://vim.example") as client:
        yield Api(client, runtime, app)
    await runtime.stop()
    store.close()


# The compute cloud of the compute, placement and recovery tests (its own module).
from tests.component.compute_cloud import cloud  # noqa: E402, F401
