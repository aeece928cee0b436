"""The compute model (issue 14): images, flavors, networks, VNFs and their instances.

An instance keeps its whole spec from the moment it is created (`InstanceSpec`): image,
flavor values, ports with their MAC and IP, config drive content, watchdog, migration policy,
the VNF and VDU it belongs to. Later incarnations (a restart elsewhere, a rebuild) are built
from that spec alone, so a replacement starts in the same initial state (VNF-13).

Pure data and (de)serialisation: no I/O. The state machine is in `domain/instance_states.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from vimha.domain.clock import iso, parse_iso
from vimha.domain.errors import InvalidInput


class Sal(StrEnum):
    """Service availability level of a VNF (VNF-3): LEVEL_1 is the most demanding."""

    LEVEL_1 = "LEVEL_1"
    LEVEL_2 = "LEVEL_2"
    LEVEL_3 = "LEVEL_3"


class InstanceStatus(StrEnum):
    BUILDING = "BUILDING"
    ACTIVE = "ACTIVE"
    SHUTOFF = "SHUTOFF"
    PAUSED = "PAUSED"
    ERROR = "ERROR"
    REBUILDING = "REBUILDING"
    MIGRATING = "MIGRATING"
    UNKNOWN = "UNKNOWN"  # its host is down and not (yet) fenced: it may still run
    DELETED = "DELETED"


class TaskState(StrEnum):
    SCHEDULING = "scheduling"
    SPAWNING = "spawning"
    REBOOTING = "rebooting"
    REBOOTING_HARD = "rebooting_hard"
    POWERING_OFF = "powering-off"
    POWERING_ON = "powering-on"
    PAUSING = "pausing"
    UNPAUSING = "unpausing"
    DELETING = "deleting"
    REBUILDING = "rebuilding"
    MIGRATING = "migrating"
    RECOVERING = "recovering"


class Power(StrEnum):
    """What the controller wants the guest to be doing (the agent makes it so)."""

    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    DELETED = "deleted"


class WatchdogAction(StrEnum):
    RESET = "reset"
    POWEROFF = "poweroff"
    PAUSE = "pause"
    NONE = "none"


class Migration(StrEnum):
    FORBIDDEN = "forbidden"
    LIVE = "live"
    COLD = "cold"


@dataclass(frozen=True, slots=True)
class Flavor:
    id: str
    name: str
    vcpus: int
    ram_mib: int
    disk_gib: int
    extra_specs: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "vcpus": self.vcpus,
            "ramMib": self.ram_mib,
            "diskGib": self.disk_gib,
            "extraSpecs": dict(self.extra_specs),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Flavor:
        return cls(d["id"], d["name"], d["vcpus"], d["ramMib"], d["diskGib"], dict(d["extraSpecs"]))


@dataclass(frozen=True, slots=True)
class Image:
    id: str
    name: str
    status: str  # queued (no data yet), active
    digest: str | None  # sha256 of the data, once uploaded: the image store's address
    size: int
    disk_format: str
    container_format: str
    properties: Mapping[str, str]
    created_at: datetime
    updated_at: datetime
    min_disk_gib: int = 0
    min_ram_mib: int = 0
    visibility: str = "public"


@dataclass(frozen=True, slots=True)
class Network:
    """A VNF network with one subnet and its address pool (Neutron's network + subnet)."""

    id: str
    name: str
    subnet_id: str
    cidr: str
    gateway: str | None
    pool_start: str
    pool_end: str
    created_at: datetime
    mtu: int = 1500


@dataclass(frozen=True, slots=True)
class Port:
    """A port of a network: a MAC and an IP fixed at creation; bound to at most one
    instance. `bond` names the logical interface of a redundant pair (VNF-1)."""

    id: str
    network_id: str
    mac: str
    ip: str
    instance_id: str | None = None
    name: str = ""
    tags: tuple[str, ...] = ()
    bond: str | None = None


@dataclass(frozen=True, slots=True)
class PortSpec:
    """A port as an instance's spec holds it (its network named too, for the guest)."""

    port_id: str
    network_id: str
    network: str
    mac: str
    ip: str
    prefix: int
    gateway: str | None
    tags: tuple[str, ...] = ()
    bond: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "portId": self.port_id,
            "networkId": self.network_id,
            "network": self.network,
            "mac": self.mac,
            "ip": self.ip,
            "prefix": self.prefix,
            "gateway": self.gateway,
            "tags": list(self.tags),
            "bond": self.bond,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PortSpec:
        return cls(
            d["portId"],
            d["networkId"],
            d["network"],
            d["mac"],
            d["ip"],
            d["prefix"],
            d.get("gateway"),
            tuple(d.get("tags", ())),
            d.get("bond"),
        )


@dataclass(frozen=True, slots=True)
class WatchdogSpec:
    timeout: float
    action: WatchdogAction
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.timeout <= 3600:
            raise InvalidInput("watchdog.timeout: between 1 and 3600 seconds")


@dataclass(frozen=True, slots=True)
class MigrationPolicy:
    policy: Migration = Migration.LIVE
    max_interruption_ms: int | None = None  # for live: the tolerated interruption

    def __post_init__(self) -> None:
        if self.max_interruption_ms is not None and self.max_interruption_ms < 0:
            raise InvalidInput("migration.maxInterruptionMs: must not be negative")
        if self.policy is not Migration.LIVE and self.max_interruption_ms is not None:
            raise InvalidInput("migration.maxInterruptionMs: only for a live policy")


@dataclass(frozen=True, slots=True)
class ConfigDrive:
    """What the guest finds on its config drive besides what vimha derives (ports, ids)."""

    user_data: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    files: tuple[tuple[str, str], ...] = ()  # (path in the guest, content)
    public_keys: Mapping[str, str] = field(default_factory=dict)  # key name -> public key


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """Everything an incarnation is built from; fixed at creation (the ports included)."""

    image_id: str
    flavor: Flavor
    ports: tuple[PortSpec, ...]
    config_drive: ConfigDrive = field(default_factory=ConfigDrive)
    watchdog: WatchdogSpec | None = None
    migration: MigrationPolicy = field(default_factory=MigrationPolicy)
    vnf_id: str | None = None
    vdu: str | None = None
    sal: Sal = Sal.LEVEL_3
    priority: int = 0
    groups: tuple[str, ...] = ()  # placement groups (issue 15)
    metadata: Mapping[str, str] = field(default_factory=dict)
    persistent_volume: bool = False  # a replacement keeps the disk (never, by default)
    hints: Mapping[str, Any] = field(default_factory=dict)  # scheduler hints as given
    preemptible: bool = True  # may be stopped for a higher-priority VNF's instance
    recovery: Mapping[str, Any] = field(default_factory=dict)  # RecoveryPolicy.to_dict()
    health_check: Mapping[str, Any] | None = None  # HealthCheck.to_dict()

    def to_dict(self) -> dict[str, Any]:
        cd = self.config_drive
        return {
            "imageId": self.image_id,
            "flavor": self.flavor.to_dict(),
            "ports": [p.to_dict() for p in self.ports],
            "configDrive": {
                "userData": cd.user_data,
                "metadata": dict(cd.metadata),
                "files": [{"path": p, "content": c} for p, c in cd.files],
                "publicKeys": dict(cd.public_keys),
            },
            "watchdog": None
            if self.watchdog is None
            else {
                "timeout": self.watchdog.timeout,
                "action": self.watchdog.action.value,
                "tags": list(self.watchdog.tags),
            },
            "migration": {
                "policy": self.migration.policy.value,
                "maxInterruptionMs": self.migration.max_interruption_ms,
            },
            "vnfId": self.vnf_id,
            "vdu": self.vdu,
            "sal": self.sal.value,
            "priority": self.priority,
            "groups": list(self.groups),
            "metadata": dict(self.metadata),
            "persistentVolume": self.persistent_volume,
            "hints": dict(self.hints),
            "preemptible": self.preemptible,
            "recovery": dict(self.recovery),
            "healthCheck": None if self.health_check is None else dict(self.health_check),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InstanceSpec:
        cd = d.get("configDrive") or {}
        wd = d.get("watchdog")
        mig = d.get("migration") or {}
        return cls(
            image_id=d["imageId"],
            flavor=Flavor.from_dict(d["flavor"]),
            ports=tuple(PortSpec.from_dict(p) for p in d.get("ports", ())),
            config_drive=ConfigDrive(
                cd.get("userData"),
                dict(cd.get("metadata") or {}),
                tuple((f["path"], f["content"]) for f in cd.get("files") or ()),
                dict(cd.get("publicKeys") or {}),
            ),
            watchdog=None
            if wd is None
            else WatchdogSpec(
                float(wd["timeout"]), WatchdogAction(wd["action"]), tuple(wd["tags"])
            ),
            migration=MigrationPolicy(
                Migration(mig.get("policy", "live")), mig.get("maxInterruptionMs")
            ),
            vnf_id=d.get("vnfId"),
            vdu=d.get("vdu"),
            sal=Sal(d.get("sal", "LEVEL_3")),
            priority=int(d.get("priority", 0)),
            groups=tuple(d.get("groups", ())),
            metadata=dict(d.get("metadata") or {}),
            persistent_volume=bool(d.get("persistentVolume", False)),
            hints=dict(d.get("hints") or {}),
            preemptible=bool(d.get("preemptible", True)),
            recovery=dict(d.get("recovery") or {}),
            health_check=d.get("healthCheck"),
        )


@dataclass(frozen=True, slots=True)
class Fault:
    """Why an instance is in ERROR (or what its last failure was), as Nova's `fault`."""

    code: int
    message: str
    at: datetime
    details: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "created": iso(self.at),
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fault:
        return cls(int(d["code"]), d["message"], parse_iso(d["created"]), d.get("details", ""))


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    name: str
    spec: InstanceSpec
    status: InstanceStatus
    created_at: datetime
    updated_at: datetime
    task_state: TaskState | None = None
    power: Power = Power.RUNNING  # desired
    host: str | None = None
    incarnation: int = 1
    fault: Fault | None = None
    launched_at: datetime | None = None
    reboot_seq: int = 0  # reboots asked for; the agent says which it did
    reboot_hard: bool = False
    version: int = 1  # bumped at every change: the ETag
    project: str = "admin"
    key_name: str | None = None
    index: int = 0  # within its VDU
    notes: tuple[str, ...] = ()  # placement: soft rules not kept, pre-emption

    @property
    def etag(self) -> str:
        return f'"{self.id}-{self.version}"'

    @property
    def vnf_id(self) -> str | None:
        return self.spec.vnf_id

    def evolve(self, now: datetime, **changes: Any) -> Instance:
        """A new version of this instance (the store compares versions)."""
        return replace(self, updated_at=now, version=self.version + 1, **changes)


@dataclass(frozen=True, slots=True)
class NetworkRequest:
    """A port to create for each instance: on one network, or a redundant pair on two
    networks that the guest bonds (`bond`: the logical interface's name). Networks are
    named by id or name until the engine resolves them."""

    networks: tuple[str, ...]  # one, or two for a redundant pair
    tags: tuple[str, ...] = ()
    bond: str | None = None
    fixed_ip: str | None = None  # only for a single-instance request
    port_id: str | None = None  # an existing, unbound port (then `networks` is empty)


@dataclass(frozen=True, slots=True)
class Vdu:
    """One VDU of a VNF descriptor: what each of its instances is made from (flavor and
    image by id or name)."""

    name: str
    count: int
    flavor: str
    image: str
    networks: tuple[NetworkRequest, ...]
    config_drive: ConfigDrive = field(default_factory=ConfigDrive)
    watchdog: WatchdogSpec | None = None
    migration: MigrationPolicy = field(default_factory=MigrationPolicy)
    min_count: int = 0
    max_count: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    hints: Mapping[str, Any] = field(default_factory=dict)
    key_name: str | None = None
    placement: tuple[GroupRule, ...] = ()  # groups made for this VDU
    groups: tuple[str, ...] = ()  # existing placement groups (id or name) it joins
    recovery: Mapping[str, Any] = field(default_factory=dict)  # RecoveryPolicy.to_dict()
    health_check: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class GroupRule:
    """A placement rule a VDU declares: a group of its instances is made for it."""

    policy: str  # affinity, anti-affinity, soft-affinity, soft-anti-affinity
    level: str = "host"
    max_per_domain: int | None = None


@dataclass(frozen=True, slots=True)
class VnfRequest:
    name: str
    vdus: tuple[Vdu, ...]
    sal: Sal = Sal.LEVEL_3
    priority: int = 0
    client_token: str | None = None
    descriptor: Mapping[str, Any] = field(default_factory=dict)  # as given, kept
    preemptible: bool = True


@dataclass(frozen=True, slots=True)
class Vnf:
    id: str
    name: str
    sal: Sal
    priority: int
    descriptor: Mapping[str, Any]  # as given (validated), kept for scale and rebuild
    created_at: datetime
    client_token: str | None = None
    status: str = "INSTANTIATED"
    preemptible: bool = True  # its instances may be stopped for a higher-priority VNF's


@dataclass(frozen=True, slots=True)
class HostResources:
    """A compute host as the scheduler sees it (a resource provider with a generation).

    Capacity is the declared one where the operator declared it, else what the agent
    reports; usage is the sum of the claims on it. `generation` is bumped by every claim,
    release and change of what the host should run: a claim is a compare-and-swap on it."""

    host: str
    vcpus: int
    ram_mib: int
    disk_gib: int
    used_vcpus: int = 0
    used_ram_mib: int = 0
    used_disk_gib: int = 0
    cpu_ratio: float = 4.0
    ram_ratio: float = 1.0
    disk_ratio: float = 1.0
    traits: frozenset[str] = frozenset()
    generation: int = 0
    hypervisor: str = "process"

    @property
    def free_vcpus(self) -> float:
        return self.vcpus * self.cpu_ratio - self.used_vcpus

    @property
    def free_ram_mib(self) -> float:
        return self.ram_mib * self.ram_ratio - self.used_ram_mib

    @property
    def free_disk_gib(self) -> float:
        return self.disk_gib * self.disk_ratio - self.used_disk_gib

    def fits(self, flavor: Flavor) -> str | None:
        """Why the flavor does not fit the free capacity, or None."""
        if (
            flavor.vcpus <= self.vcpus * self.cpu_ratio - self.used_vcpus
            and flavor.ram_mib <= self.ram_mib * self.ram_ratio - self.used_ram_mib
            and flavor.disk_gib <= self.disk_gib * self.disk_ratio - self.used_disk_gib
        ):
            return None  # the common case, without building the reasons (issue 15)
        for what, need, free in (
            ("vCPUs", flavor.vcpus, self.free_vcpus),
            ("RAM MiB", flavor.ram_mib, self.free_ram_mib),
            ("disk GiB", flavor.disk_gib, self.free_disk_gib),
        ):
            if need > free:
                return f"{what}: needs {need}, {free:g} free"
        return None

    def could_ever_fit(self, flavor: Flavor) -> bool:
        """Would the flavor fit the host empty?"""
        return (
            flavor.vcpus <= self.vcpus * self.cpu_ratio
            and flavor.ram_mib <= self.ram_mib * self.ram_ratio
            and flavor.disk_gib <= self.disk_gib * self.disk_ratio
        )

    def claimed(self, flavor: Flavor, sign: int = 1) -> HostResources:
        return replace(
            self,
            used_vcpus=self.used_vcpus + sign * flavor.vcpus,
            used_ram_mib=self.used_ram_mib + sign * flavor.ram_mib,
            used_disk_gib=self.used_disk_gib + sign * flavor.disk_gib,
            generation=self.generation + 1,
        )


@dataclass(frozen=True, slots=True)
class InstanceAction:
    """One request on an instance and its result (Nova's instance action)."""

    instance_id: str
    action: str
    request_id: str
    user: str
    started_at: datetime
    finished_at: datetime | None = None
    result: str = "in-progress"  # in-progress, success, error
    message: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class VnfOperation:
    """An LCM operation on a VNF (scale), as SOL 003's operation occurrence."""

    id: str
    vnf_id: str
    operation: str  # SCALE
    state: str  # PROCESSING, COMPLETED, FAILED
    params: Mapping[str, Any]
    started_at: datetime
    result: Mapping[str, Any] = field(default_factory=dict)
    finished_at: datetime | None = None
