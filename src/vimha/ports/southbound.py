"""The SDN controller's southbound (issue 18): OpenFlow 1.3 switches that connect to it.

Contract for every driver:
- `start` listens for switches and calls `on_event` (from any thread: the caller hands the
  event over to its own loop) with what happens: a switch connected (with its ports) or
  gone, a port changed, the answer to a role request, a flow the switch refused, the flows
  it holds (vimha's cookies), a barrier's reply.
- `request_role` sends an OpenFlow role request carrying `generation` as its generation_id:
  the switch refuses a MASTER or SLAVE request older than the newest it has seen
  (OFPRRFC_STALE), which fences an old master. Returns the request's xid, None when the
  switch is not connected.
- `apply` sends flow additions and deletions (by cookie), then a barrier; returns the
  barrier's xid, None when the switch is not connected. Nothing blocks.
- No library exception leaks out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from vimha.domain.sdn import Flow


@dataclass(frozen=True, slots=True)
class PortInfo:
    number: int
    name: str
    live: bool


@dataclass(frozen=True, slots=True)
class SwitchUp:
    dpid: int
    ports: tuple[PortInfo, ...]
    address: str


@dataclass(frozen=True, slots=True)
class SwitchDown:
    dpid: int


@dataclass(frozen=True, slots=True)
class PortChanged:
    dpid: int
    port: PortInfo
    deleted: bool


@dataclass(frozen=True, slots=True)
class RoleAnswer:
    dpid: int
    xid: int
    role: str  # master, slave, equal; or the role refused
    generation: int
    refused: str | None = None  # why the switch refused the request (e.g. "stale")
    at: float = 0.0  # wall time it arrived


@dataclass(frozen=True, slots=True)
class FlowRefused:
    dpid: int
    xid: int
    cookie: int | None
    detail: str  # the switch's error, by name


@dataclass(frozen=True, slots=True)
class FlowsHeld:
    dpid: int
    cookies: frozenset[int]


@dataclass(frozen=True, slots=True)
class BarrierDone:
    dpid: int
    xid: int


SouthEvent = (
    SwitchUp | SwitchDown | PortChanged | RoleAnswer | FlowRefused | FlowsHeld | BarrierDone
)


class Southbound(Protocol):
    def start(self, host: str, port: int, on_event: Callable[[SouthEvent], None]) -> None: ...

    def request_role(self, dpid: int, role: str, generation: int) -> int | None: ...

    def request_flows(self, dpid: int) -> bool:
        """Ask the switch for the flows it holds (answered with FlowsHeld)."""
        ...

    def apply(self, dpid: int, add: Sequence[Flow], delete: Sequence[int]) -> int | None: ...

    def disconnect(self, dpid: int) -> None:
        """Drop the connection to a switch (it connects again by itself)."""
        ...

    def stop(self) -> None: ...
