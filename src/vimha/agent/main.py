"""`vimha agent --config FILE`: sends signed heartbeats on each network plane.

node: cmp-1
key: "the host's key, as in the controller's hosts list"
interval: 0.1
planes:
  - {name: mgmt, local: 127.0.0.2, controller: "127.0.0.1:8471"}
  - {name: storage, local: 127.0.0.3, controller: "127.0.0.1:8472"}
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vimha.agent.catalog import Supervisors, sync_declared
from vimha.agent.console_relay import ConsoleRelay
from vimha.agent.groups import GroupMember, group_mirror
from vimha.agent.hardware import HardwareConfig, watch_hardware
from vimha.agent.instances import InstanceManager
from vimha.agent.registry import too_long_sockets
from vimha.agent.sdnotify import Notifier
from vimha.agent.services import Reporter
from vimha.agent.status import StatusBoard
from vimha.agent.switch import SwitchConfig, SwitchKeeper, switch_services
from vimha.cloud.parent import watch_parent
from vimha.domain.errors import InvalidInput
from vimha.drivers.clock import SystemClock
from vimha.drivers.coord_etcd import check_url as check_etcd_url
from vimha.drivers.coordination import open_coordination
from vimha.drivers.heartbeat_udp import HeartbeatSender, PlaneRoute
from vimha.drivers.hypervisors import check_url, open_hypervisor
from vimha.drivers.tls import client_tls
from vimha.groupspec import GroupConfig
from vimha.servicespec import ServiceConfig

log = logging.getLogger("vimha.agent")
PR_SET_CHILD_SUBREAPER = 36


class PlaneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    local: str = Field(min_length=1, description="This node's address on the plane")
    controller: str | tuple[str, ...] = Field(
        description="host:port where the controller hears this plane, or a list of them: "
        "one per controller (every controller hears every plane)"
    )

    @field_validator("controller")
    @classmethod
    def _address(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        for each in (value,) if isinstance(value, str) else value:
            host, _, port = each.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port, got {each!r}")
        if not isinstance(value, str) and not value:
            raise ValueError("at least one controller")
        return value

    @property
    def controllers(self) -> tuple[str, ...]:
        return (self.controller,) if isinstance(self.controller, str) else self.controller


class HypervisorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field("process://", description="process:// or libvirt:///system")
    instances_dir: str | None = Field(None, description="Guests' folders (default: run dir)")
    bridges: dict[str, str] = Field(
        default_factory=dict,
        description="VNF network name (or '*': any other) -> this node's bridge for it. A "
        "port with a bridge is a real interface: the process driver gives its guest a "
        "network namespace with a veth pair per port (root); without, a loopback address",
    )
    report_every: float = Field(5.0, gt=0, description="Seconds between full reports")
    console_listen: str | None = Field(
        None, description="host:port of the console relay (port 0: any), on the mgmt plane"
    )
    cgroups: bool = Field(True, description="Bound guests' CPU and memory with cgroups")
    migration_uri: str | None = Field(
        None,
        description="How the other nodes' libvirtd reach this node's for a live migration "
        "(default: the hypervisor URL's own URI)",
    )
    migration_address: str | None = Field(
        None, description="The address QEMU receives a live migration's memory on"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            return check_url(value)
        except InvalidInput as exc:
            raise ValueError(exc.detail) from None


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    node: str = Field(min_length=1)
    key: str = Field(min_length=16)
    interval: float = Field(0.1, gt=0)
    stall_limit: float = Field(
        2.0,
        gt=0,
        description="The heartbeats (sent from a thread of their own) stop once the agent's "
        "loop has not run for this long (s): a hung agent must look failed, a busy one not",
    )
    planes: tuple[PlaneConfig, ...] = Field(min_length=1)
    log_level: str = "info"
    priority: int = Field(
        -10,
        ge=-20,
        le=19,
        description="Scheduling niceness to take when allowed (root): a starved agent would "
        "stop heartbeating and look dead.",
    )
    controller_url: str | None = Field(
        None, description="The controller API, for the services' alarms"
    )
    token: str | None = Field(None, description="An operator token of the controller API")
    services: tuple[ServiceConfig, ...] = ()
    hardware: HardwareConfig = Field(
        default_factory=HardwareConfig, description="Local sensors: hwmon and EDAC"
    )
    sync_interval: float = Field(
        5.0,
        ge=0,
        description="Seconds between fetches of the services declared for this node through "
        "the controller's API (0: only the services of this file)",
    )
    coordination_url: str | None = Field(
        None,
        description="The coordination backend the service groups' roles are held in: "
        "etcd://host:port,... or, for the processes of one host, local:///path/coord.db",
    )
    vim: str = Field("vimha", description="The controllers' vim_connection_id")
    groups: tuple[GroupConfig, ...] = Field((), description="Service groups this node is in")
    run_dir: str | None = Field(None, description="Where members keep their data")
    hypervisor: HypervisorConfig | None = Field(
        None, description="Run VNF instances on this node (compute nodes)"
    )
    switch: SwitchConfig | None = Field(
        None, description="This node's Open vSwitch (a compute node's VNF networks)"
    )
    control_dir: str | None = Field(
        None,
        description="Fault injection without root: while <control_dir>/drop-<plane> exists, "
        "the agent sends nothing on that plane (in network-namespace mode the link itself "
        "goes down instead).",
    )


def run_dir_of(config: AgentConfig) -> Path:
    """Where the node's members keep their data: `run_dir`, else a folder of the temp dir."""
    if config.run_dir:
        return Path(config.run_dir)
    return Path(tempfile.gettempdir()) / f"vimha-{config.node}"


def switch_dir(config: AgentConfig) -> Path:
    """Where the node's Open vSwitch keeps its database, sockets and logs."""
    if config.switch is not None and config.switch.run_dir:
        return Path(config.switch.run_dir)
    return run_dir_of(config) / "ovs"


def _check_reporting(config: AgentConfig) -> None:
    if config.services and not (config.controller_url and config.token):
        raise InvalidInput(
            "agent config: services need controller_url and token to report their alarms"
        )
    if config.stall_limit <= config.interval:
        raise InvalidInput(
            f"agent config: stall_limit ({config.stall_limit:g}s) must be longer than the "
            f"heartbeat interval ({config.interval:g}s)"
        )
    names = [s.name for s in config.services]
    if len(set(names)) != len(names):
        raise InvalidInput("agent config: service names must be unique")
    groups = [g.name for g in config.groups]
    if len(set(groups)) != len(groups):
        raise InvalidInput("agent config: group names must be unique")
    for group in config.groups:
        if config.node not in group.members:
            raise InvalidInput(f"agent config: group {group.name}: {config.node} is not a member")
        if (why := too_long_sockets(group, run_dir_of(config))) is not None:
            raise InvalidInput(f"agent config: group {group.name}: {why}")
        track = getattr(group.handler, "track", None)
        if track is not None and (track not in groups or track == group.name):
            raise InvalidInput(
                f"agent config: group {group.name}: handler.track: {track} is not another "
                "group of this node"
            )
    if config.hypervisor is not None and not (config.controller_url and config.token):
        raise InvalidInput("agent config: hypervisor needs controller_url and token")
    if config.switch is not None and not config.coordination_url:
        raise InvalidInput("agent config: switch needs coordination_url (it registers there)")
    if config.switch is not None and not (config.controller_url and config.token):
        raise InvalidInput("agent config: switch needs controller_url and token (its alarms)")
    if config.groups and not config.coordination_url:
        raise InvalidInput(
            "agent config: groups need coordination_url (etcd://... or local:///...)"
        )
    if config.coordination_url == "local://":
        raise InvalidInput(
            "agent config: coordination_url local:// is one process's memory; use "
            "local:///path/coord.db (the processes of one host) or etcd://..."
        )
    if config.coordination_url and config.coordination_url.startswith("etcd://"):
        try:  # its members, TLS files and credential (password file readable), at load
            check_etcd_url(config.coordination_url)
        except InvalidInput as exc:
            raise InvalidInput(f"agent config: {exc.detail}") from None


def load_agent_config(path: Path) -> AgentConfig:
    try:
        data: Any = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InvalidInput(f"agent config {path}: file not found") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"agent config {path}: not valid YAML: {exc}") from None
    try:
        config = AgentConfig.model_validate(data or {})
        _check_reporting(config)
        return config
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"agent config {path}: {problems}") from None


async def run_instances(config: AgentConfig, stop: asyncio.Event) -> None:
    """The node's VNF instances: the agent is their child subreaper (PID 1 here reaps
    orphans only after ~2 s; a guest's own children must not linger as zombies)."""
    hv_cfg = config.hypervisor
    assert hv_cfg is not None and config.controller_url and config.token
    become_subreaper()
    base = Path(hv_cfg.instances_dir) if hv_cfg.instances_dir else run_dir_of(config) / "guests"
    hypervisor = open_hypervisor(
        hv_cfg.url,
        config.node,
        base,
        hv_cfg.cgroups,
        hv_cfg.migration_uri,
        hv_cfg.migration_address,
    )
    relay = None
    if hv_cfg.console_listen:
        relay = ConsoleRelay(hypervisor, config.key.encode())
        await relay.start(hv_cfg.console_listen)
    manager = InstanceManager(
        config.node,
        config.controller_url,
        config.token,
        hypervisor,
        run_dir_of(config) / "instances",
        hv_cfg.report_every,
        hv_cfg.bridges,
        relay.endpoint if relay else None,
        client_tls(),
    )
    try:
        await manager.run(stop)
    finally:
        if relay is not None:
            await relay.close()


def become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.warning("could not become a child subreaper: errno %d", ctypes.get_errno())
    except OSError as exc:
        log.warning("could not become a child subreaper: %s", exc)


def take_priority(niceness: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except OSError as exc:  # not root: run at normal priority, and say so
        log.warning("could not set scheduling priority %d: %s", niceness, exc)


async def run_agent(config: AgentConfig) -> int:
    take_priority(config.priority)
    routes = []
    for plane in config.planes:
        for controller in plane.controllers:  # the same heartbeat to every controller
            host, _, port = controller.rpartition(":")
            routes.append(PlaneRoute(plane.name, plane.local, (host, int(port))))
    control = Path(config.control_dir) if config.control_dir else None

    def dropped(plane: str) -> bool:
        return control is not None and (control / f"drop-{plane}").exists()

    systemd = Notifier()
    sender = HeartbeatSender(
        config.node,
        config.key.encode(),
        routes,
        config.interval,
        dropped=dropped,
        on_round=systemd.watchdog,
        stall_limit=config.stall_limit,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watch_parent(lambda: loop.call_soon_threadsafe(stop.set))
    log.info(
        "agent %s heartbeating on %s every %.3fs; supervising %s",
        config.node,
        ", ".join(p.name for p in config.planes),
        config.interval,
        ", ".join(s.name for s in config.services) or "no service",
    )
    reporter = Reporter(config.controller_url, config.token)
    report_task = asyncio.create_task(reporter.run())
    board = StatusBoard(config.controller_url, config.token, config.node)
    supervisors = Supervisors(config.node, reporter, board)
    local = {svc.name: svc for svc in config.services}
    if config.switch is not None:
        switch_home = switch_dir(config)
        local.update((s.name, s) for s in switch_services(config.switch, switch_home))
    supervisors.apply(local)
    watchdogs = []
    if config.controller_url and config.token:
        watchdogs.append(asyncio.create_task(board.run(stop)))
        if config.sync_interval > 0:
            sync = sync_declared(
                config.node,
                config.controller_url,
                config.token,
                local,
                supervisors,
                stop,
                config.sync_interval,
            )
            watchdogs.append(asyncio.create_task(sync))
    if config.hardware.enabled and config.controller_url:
        watchdogs.append(
            asyncio.create_task(watch_hardware(config.node, config.hardware, reporter, stop))
        )
    coord = None
    watching: asyncio.Task[None] | None = None
    if config.switch is not None and config.coordination_url:
        coord = open_coordination(config.coordination_url, SystemClock())
        keeper = SwitchKeeper(config.node, config.switch, switch_dir(config), coord, config.vim)
        watchdogs.append(asyncio.create_task(keeper.run(stop)))
    if config.groups and config.coordination_url:
        coord = coord or open_coordination(config.coordination_url, SystemClock())
        run_dir = run_dir_of(config)
        mirror = group_mirror(coord, config.vim)  # one watch for all the node's groups
        mirror.running = True
        watching = asyncio.create_task(mirror.run(stop, f"/vimha/{config.vim}/"))
        for group in config.groups:
            member = GroupMember(config.node, config.vim, group, coord, run_dir, mirror=mirror)
            watchdogs.append(asyncio.create_task(member.run(stop)))
    if config.hypervisor is not None and config.controller_url and config.token:
        watchdogs.append(asyncio.create_task(run_instances(config, stop)))
    systemd.ready()
    await sender.run(stop)
    systemd.stopping()
    await supervisors.close()
    for result in await asyncio.gather(*watchdogs, return_exceptions=True):
        if isinstance(result, BaseException):
            log.error("a watchdog failed: %r", result)
    report_task.cancel()
    if watching is not None:
        watching.cancel()
    if coord is not None:
        await coord.close()
    log.info("agent %s stopped", config.node)
    return 0
