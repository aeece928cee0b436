"""Outgoing calls to subscribers' callback URIs.

Contract: `post` returns normally only when the consumer answered 2xx; any other answer or a
transport error raises DeliveryFailed with a short reason. `test` sends the SOL 013 GET probe
and returns normally only on 204. Neither blocks the event loop; each honours its timeout.
"""

from __future__ import annotations

from typing import Protocol

from vimha.domain.subscriptions import Authentication


class Notifier(Protocol):
    async def post(self, uri: str, body: bytes, auth: Authentication | None) -> None:
        """POST `body` (a JSON document) to `uri`."""
        ...

    async def test(self, uri: str, auth: Authentication | None) -> None: ...

    async def aclose(self) -> None: ...
