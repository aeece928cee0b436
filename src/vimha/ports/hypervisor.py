"""The hypervisor port: what a node's agent needs to run VNF instances (issue 14).

Drivers are chosen by URL in the agent config (`hypervisor.url`): `process://` (the embedded
default: a guest is a program started by the agent) or `libvirt:///system`,
`libvirt+test:///default` (libvirt's test driver, contract tests only).

Contract for every driver:
- A guest is named by its instance id; one incarnation of it runs at a time on a node.
  `spawn` builds a fresh disk from the image, lays out the config drive and starts the guest;
  it is idempotent for the same (instance id, incarnation): a second call returns the status
  of the running guest. A spawn of a higher incarnation replaces what is left of a lower one.
- The incarnation number reaches the guest out of band (environment, kernel command line),
  never through the config drive: the config drive content is the same for every
  incarnation, so the guest's initial-state digest is too (VNF-13).
- `list_guests` returns every guest the driver runs on this node, including those started
  by an earlier agent process (adoption): the driver keeps what it needs on disk or in the
  hypervisor, never only in memory.
- `events` yields what happens to guests without being asked: a guest that died or crashed,
  a watchdog that expired (the driver or hypervisor has already taken the action), a reset,
  an I/O error. A guest stopped through the port yields STOPPED, not DIED.
- Power operations on a guest that does not exist raise NotFound; transport or hypervisor
  errors become HypervisorUnavailable (retry); no library exception leaks.
- Migration (issue 19): the destination's driver `prepare_incoming` (idempotent) and says
  what the source needs (`target`); live: the source's `migrate_live` moves the running
  guest there (on failure it still runs here), its events of leaving are not DIED nor
  STOPPED; cold: the source's `export_guest` stops the guest and writes what must move with
  it, the destination's `import_guest` lays it out from that and starts it. A driver that
  cannot migrate live says why in `capabilities.live_note` and raises Conflict.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable

from vimha.domain.errors import Temporary


class HypervisorUnavailable(Temporary):
    """The hypervisor (libvirtd, the cgroup tree, ...) did not answer or failed for now."""


class WatchdogAction(StrEnum):
    RESET = "reset"
    POWEROFF = "poweroff"
    PAUSE = "pause"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class GuestPort:
    """One virtual NIC: its network, the MAC and IP fixed at the instance's creation."""

    network: str
    mac: str
    ip: str
    prefix: int  # of the subnet, e.g. 24
    gateway: str | None = None
    tags: tuple[str, ...] = ()
    bridge: str | None = None  # the node's bridge for the network (netns, libvirt); None: loopback


@dataclass(frozen=True, slots=True)
class GuestWatchdog:
    timeout: float  # seconds without a pet before the action
    action: WatchdogAction


@dataclass(frozen=True, slots=True)
class GuestSpec:
    """Everything a driver needs to run one incarnation of an instance."""

    instance_id: str
    name: str
    incarnation: int
    vcpus: int
    ram_mib: int
    disk_gib: int
    image_id: str
    image_path: str  # the image's file on this node (the agent's cache of the image store)
    image_format: str  # "tar" (process driver), "kernel+initrd" bundle or "qcow2" (libvirt)
    ports: tuple[GuestPort, ...]
    config_drive: Mapping[str, bytes]  # path inside the drive ("openstack/latest/...") -> data
    watchdog: GuestWatchdog | None = None
    vnf: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


class GuestState(StrEnum):
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    SHUTOFF = "SHUTOFF"  # stopped, through the port or by a watchdog's poweroff
    CRASHED = "CRASHED"  # ended on its own (exit, panic, killed)


@dataclass(frozen=True, slots=True)
class GuestStatus:
    instance_id: str
    incarnation: int
    state: GuestState
    detail: str = ""
    ref: str = ""  # the driver's handle: a pid, a domain UUID


class GuestEventKind(StrEnum):
    STARTED = "STARTED"
    STOPPED = "STOPPED"  # through the port
    DIED = "DIED"  # exited or was killed, not through the port
    CRASHED = "CRASHED"  # the guest itself crashed (panic, non-zero exit)
    WATCHDOG = "WATCHDOG"  # its watchdog expired; `detail` says the action taken
    REBOOTED = "REBOOTED"
    PAUSED = "PAUSED"
    RESUMED = "RESUMED"
    IO_ERROR = "IO_ERROR"
    HUNG = "HUNG"  # not the hypervisor's: the agent's health check found it not answering


@dataclass(frozen=True, slots=True)
class GuestEvent:
    instance_id: str
    incarnation: int
    kind: GuestEventKind
    at: datetime
    detail: str = ""


@dataclass(frozen=True, slots=True)
class NodeResources:
    """What the node really has for instances, as the driver sees it."""

    vcpus: int
    ram_mib: int
    disk_gib: int
    traits: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Capabilities:
    live_migration: bool
    watchdog_actions: frozenset[WatchdogAction]
    image_formats: frozenset[str]
    live_note: str = ""  # why live migration is not available (or how it is done)


@dataclass(frozen=True, slots=True)
class LiveResult:
    """A live migration that completed: the guest runs on the destination."""

    downtime_ms: float | None = None  # as the hypervisor measured it, if it does
    detail: str = ""


class Console(Protocol):
    """An attached serial console: what it printed before (the console log's tail), then a
    live stream both ways."""

    history: bytes

    async def read(self) -> bytes:
        """The next output; b"" once the console is gone."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class Hypervisor(Protocol):
    name: str
    capabilities: Capabilities

    async def resources(self) -> NodeResources: ...

    async def spawn(self, spec: GuestSpec) -> GuestStatus:
        """Fresh disk from the image, config drive, start. Idempotent per incarnation."""
        ...

    async def power_off(self, instance_id: str, graceful: bool = True) -> None: ...

    async def power_on(self, instance_id: str) -> None:
        """Start a SHUTOFF or CRASHED guest again on the disk it has (a restart in place)."""
        ...

    async def reboot(self, instance_id: str, hard: bool = False) -> None: ...

    async def pause(self, instance_id: str) -> None: ...

    async def unpause(self, instance_id: str) -> None: ...

    async def destroy(self, instance_id: str) -> None:
        """Stop the guest if it runs and remove its disk and config drive. Idempotent."""
        ...

    async def list_guests(self) -> list[GuestStatus]: ...

    def events(self) -> AsyncIterator[GuestEvent]: ...

    async def console(self, instance_id: str) -> Console: ...

    async def prepare_incoming(self, spec: GuestSpec, live: bool) -> dict[str, str]:
        """Get ready to receive the guest of `spec` by a migration (the destination's side);
        returns what the source needs to reach it (live: the hypervisor's URI, the domain's
        definition here). Idempotent."""
        ...

    async def cancel_incoming(self, instance_id: str) -> None:
        """Undo `prepare_incoming` (a migration that failed). Never touches a guest that
        runs here."""
        ...

    async def migrate_live(
        self,
        instance_id: str,
        target: dict[str, str],
        max_downtime_ms: int | None,
        limit: float,
    ) -> LiveResult:
        """Move the running guest to the destination `target` describes, pausing it at most
        `max_downtime_ms` at the switch-over; once this returns it runs there and no longer
        here. On any failure (HypervisorUnavailable, Conflict, TimeoutError when it did not
        complete within `limit` s: the job is aborted) it still runs here."""
        ...

    async def export_guest(self, instance_id: str, out: Path) -> None:
        """Stop the guest (if it runs) and write to `out` what must move with it (its disk,
        as a tar). Idempotent; the guest stays here, stopped, until destroyed."""
        ...

    async def import_guest(self, spec: GuestSpec, state: Path) -> GuestStatus:
        """Lay out the guest of `spec` from `state` (what `export_guest` wrote) instead of a
        fresh disk, and start it: a cold migration's destination."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class GuestNetworks(Protocol):
    """A driver whose guests may have network namespaces of their own (the process driver
    with bridged ports): the agent reaches such a guest (its health checks) from inside."""

    def guest_netns(self, instance_id: str) -> str | None:
        """A path to setns(2) into for a running guest's network, or None: the guest's
        addresses are reachable from the agent's own namespace."""
        ...
