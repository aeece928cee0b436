"""The node's services as the agent observes them, sent to the controller (ARCH-10): the
whole list in one PUT /vim/v1/hosts/{node}/services, at once on a change and every
`refresh` seconds otherwise, so a restarted controller knows them again within `refresh`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx

from vimha.drivers.tls import client_tls

log = logging.getLogger("vimha.agent.status")
RETRY = 0.5  # seconds, while the controller does not answer


def why(r: httpx.Response) -> str:
    """A controller's answer in a line: a ProblemDetails' detail, else the status line (a
    load balancer's 503 page says no more)."""
    with contextlib.suppress(ValueError, AttributeError):
        detail = r.json().get("detail")
        if detail:
            return f"{r.status_code}: {str(detail)[:200]}"
    return f"{r.status_code} {r.reason_phrase}"


class StatusBoard:
    def __init__(self, url: str | None, token: str | None, node: str, refresh: float = 5.0):
        self.url = url.rstrip("/") if url else None
        self.token = token
        self.node = node
        self.refresh = refresh
        self.services: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Event()
        self.last_said = ""  # why the controller is away, said once until it is back

    def _say(self, what: str) -> None:
        """Why the controller did not take the status: said once, not at every retry."""
        if what != self.last_said:
            log.warning("%s", what)
            self.last_said = what

    def update(self, name: str, status: dict[str, Any]) -> None:
        """Record a service's latest status; a change is sent at once."""
        old = self.services.get(name)
        self.services[name] = status
        significant = ("status", "restarts", "lastCheckOk")
        if old is None or any(old.get(k) != status.get(k) for k in significant):
            self.changed.set()

    def remove(self, name: str) -> None:
        if self.services.pop(name, None) is not None:
            self.changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        if self.url is None:
            return
        headers = {"Authorization": f"Bearer {self.token}"}
        path = f"/vim/v1/hosts/{self.node}/services"
        async with httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=5, verify=client_tls()
        ) as client:
            wait = self.refresh
            while not stop.is_set():
                # a change, or the agent stopping (its services' last status, once)
                either = [asyncio.ensure_future(e.wait()) for e in (self.changed, stop)]
                await asyncio.wait(either, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                for waiter in either:
                    waiter.cancel()
                self.changed.clear()
                body = {"services": list(self.services.values())}
                wait = RETRY  # until the controller has taken it
                try:
                    r = await client.put(path, json=body)
                except httpx.HTTPError as exc:
                    self._say(f"controller unreachable ({exc}); status sent again soon")
                    continue
                if r.status_code >= 500:  # a controller starting, or its database away
                    self._say(f"controller unavailable ({why(r)}); status sent again soon")
                    continue
                wait = self.refresh
                if r.status_code >= 400:
                    log.error("controller refused the service status: %s", why(r))
                elif self.last_said:
                    log.warning("service status taken by the controller again")
                self.last_said = ""
