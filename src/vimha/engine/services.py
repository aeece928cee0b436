"""The services of every host as its agent last reported them (ARCH-10). Kept in memory:
agents send the whole list on every change and every few seconds, so a restarted controller
has it back within that refresh."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vimha.domain.clock import Clock, iso

FAILED_BEYOND_RESTART = "GAVE_UP"


@dataclass(frozen=True, slots=True)
class HostServices:
    received_at: float  # monotonic
    received_iso: str
    services: tuple[dict[str, Any], ...]


class ServiceRegistry:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._hosts: dict[str, HostServices] = {}

    def report(self, host: str, services: Sequence[dict[str, Any]]) -> None:
        entry = HostServices(self.clock.monotonic(), iso(self.clock.now()), tuple(services))
        with self._lock:
            self._hosts[host] = entry

    def forget(self, host: str) -> None:
        with self._lock:
            self._hosts.pop(host, None)

    def failed(self, host: str, kinds: frozenset[str]) -> tuple[str, ...]:
        """Services of these kinds that failed beyond their restart budget."""
        entry = self._hosts.get(host)
        if entry is None:
            return ()
        return tuple(
            sorted(
                s["name"]
                for s in entry.services
                if s.get("kind") in kinds and s.get("status") == FAILED_BEYOND_RESTART
            )
        )

    def of(self, host: str) -> list[dict[str, Any]]:
        entry = self._hosts.get(host)
        if entry is None:
            return []
        age = round((self.clock.monotonic() - entry.received_at) * 1000)
        return [
            {**s, "hostId": host, "reportedAt": entry.received_iso, "reportedMsAgo": age}
            for s in entry.services
        ]

    def hosts(self) -> list[str]:
        return sorted(self._hosts)
