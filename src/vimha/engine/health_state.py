"""What the host health loop knows, shared by its parts (`engine/health.py` assembles them):
the inventory being watched, plane states, BMC views, classifications, the fencer."""

from __future__ import annotations

import abc
import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from vimha.config import Config, HostConfig
from vimha.domain.alarms import FaultEvent, Location
from vimha.domain.classification import BmcView, Classification, HardwareHealth
from vimha.domain.clock import Clock
from vimha.domain.detection import PlaneState
from vimha.domain.hardware import LogWatch
from vimha.drivers.heartbeat_udp import HeartbeatListener
from vimha.drivers.redfish import RedfishBmc
from vimha.engine.faults import FaultService
from vimha.engine.fencing import Fencer
from vimha.engine.judging import Judging
from vimha.engine.services import ServiceRegistry

Publish = tuple[str, Classification | None, Classification]
# BMC reads run on threads of their own: slow BMCs (a Redfish read is several requests, every
# `bmc.interval` for every host) must not hold the default executor's few threads, which the
# store's calls and the fencer's power-off need (a profile of a starting embedded cloud found
# the default threads busy reading its eight BMCs)
BMC_READERS = 8


async def _nothing(host: str) -> None:
    return None


async def _nothing_since(host: str, since: float | None) -> None:
    return None


class HealthState(abc.ABC):
    """The health loop's state; the parts that act on it subclass it."""

    def __init__(
        self,
        config: Config,
        faults: FaultService,
        clock: Clock,
        services: ServiceRegistry | None = None,
    ) -> None:
        self.config = config
        self.services = services or ServiceRegistry(clock)
        self.faults = faults
        self.clock = clock
        self.policy = config.heartbeat.policy()
        # The inventory: the config file's hosts, and those declared through the API. These
        # dicts are shared (listeners, fencer) and only changed in place, on the loop thread.
        self.hosts: dict[str, HostConfig] = {}
        self.source: dict[str, str] = {}
        self.planes: dict[str, tuple[str, ...]] = {}
        self.keys: dict[str, bytes] = {}
        self.locations: dict[str, Location] = {}
        self.states: dict[tuple[str, str], PlaneState] = {}
        self.bmcs: dict[str, RedfishBmc] = {}
        self.bmc_io = ThreadPoolExecutor(BMC_READERS, thread_name_prefix="bmc-read")
        self.current: dict[str, Classification] = {}
        self.started = clock.monotonic()
        self.last_step = self.started
        self.stalls = 0
        self.listeners: list[HeartbeatListener] = []
        self.bmc_views: dict[str, tuple[float, BmcView]] = {}
        self.all_lost_since: dict[str, float] = {}
        self.seen_up: set[str] = set()  # hosts UP at least once since the controller started
        self.hardware: dict[str, dict[str, HardwareHealth]] = {}  # host -> alarmed components
        self.log_watch: dict[str, LogWatch] = {}  # host -> what was seen of its BMC's log
        self.log_due: dict[str, float] = {}
        self.fencer = Fencer(
            config.fencing.policy(),
            faults.store,
            self.bmcs,
            self.locations,
            clock,
            on_result=self._read_bmc,
        )
        # Told when a host is fenced and when it is UP again (the service groups' roles).
        self.on_fenced: Callable[[str, float | None], Awaitable[None]] = _nothing_since
        self.on_back: Callable[[str], Awaitable[None]] = _nothing
        self.failed_at: dict[str, float] = {}  # when each failed host was found failed
        # The judging split across the controllers (issue 22): None, this one judges every
        # host; else only its share, and the others' judgments are theirs.
        self.judging: Judging | None = None
        self.on_remote_fenced: Callable[[str], None] = lambda host: None
        # Hosts a maintenance session has taken out (issue 19): host -> draining or
        # maintenance. Those in maintenance are MAINTENANCE, never a failure.
        self.maintenance: dict[str, str] = {}
        # (alarm events, host health changes to publish) per step, not yet in the store
        self._outbox: deque[tuple[list[FaultEvent], list[Publish]]] = deque()
        self._outbox_ready = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None

    def mine(self) -> frozenset[str] | None:
        """The hosts this controller judges now; None: every host (no split)."""
        return self.judging.mine(self.planes) if self.judging is not None else None

    @abc.abstractmethod
    async def _read_bmc(self, host: str, attempts: int = 3) -> BmcView:
        """Read the host's BMC now (`engine/bmc_watch.py`); the fencer reads it after acting."""
