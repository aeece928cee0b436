"""In-memory fakes for component tests of the decision and dispatch logic only."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from vimha.domain.errors import DeliveryFailed
from vimha.domain.subscriptions import Authentication


class FakeClock:
    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self._now = start
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds


class FakeNotifier:
    """Records bodies per URI; `fail[uri]` counts failures to answer before succeeding;
    `blocked[uri]` holds requests until the event is set."""

    def __init__(self) -> None:
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.fail: dict[str, int] = defaultdict(int)
        self.fail_objects: set[str] = set()
        self.blocked: dict[str, asyncio.Event] = {}
        self.calls = 0

    async def post(self, uri: str, raw: bytes, auth: Authentication | None) -> None:
        body: dict[str, Any] = json.loads(raw)
        self.calls += 1
        gate = self.blocked.get(uri)
        if gate is not None:
            await gate.wait()
        if body.get("alarm", {}).get("managedObjectId") in self.fail_objects:
            raise DeliveryFailed("consumer answered 503")
        if self.fail[uri] > 0:
            self.fail[uri] -= 1
            raise DeliveryFailed("consumer answered 500")
        self.received[uri].append(body)

    async def test(self, uri: str, auth: Authentication | None) -> None:
        if "unreachable" in uri:
            raise DeliveryFailed("ConnectError")

    async def aclose(self) -> None:
        return None
