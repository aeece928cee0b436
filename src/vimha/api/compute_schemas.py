"""Request bodies of the native compute API (/vim/v1): validated at the edge, then turned
into the domain's requests. A wrong field answers 400 ProblemDetails naming it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vimha.domain.compute import (
    ConfigDrive,
    GroupRule,
    Migration,
    MigrationPolicy,
    NetworkRequest,
    Sal,
    Vdu,
    VnfRequest,
    WatchdogAction,
    WatchdogSpec,
)
from vimha.domain.errors import InvalidInput

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FlavorIn(_In):
    name: str = Field(min_length=1, max_length=255)
    vcpus: int = Field(ge=1, le=1024)
    ramMib: int = Field(ge=1, le=1 << 30)
    diskGib: int = Field(0, ge=0, le=1 << 30)
    extraSpecs: dict[str, str] = Field(default_factory=dict)
    id: str | None = Field(None, min_length=1, max_length=64)


class ImageIn(_In):
    name: str = Field(min_length=1, max_length=255)
    diskFormat: str = Field("raw", min_length=1, max_length=32)
    containerFormat: str = Field("bare", min_length=1, max_length=32)
    properties: dict[str, str] = Field(default_factory=dict)
    minDiskGib: int = Field(0, ge=0, le=1 << 30)
    minRamMib: int = Field(0, ge=0, le=1 << 30)
    visibility: Literal["public", "private", "shared", "community"] = "public"
    id: str | None = Field(None, min_length=1, max_length=64)


class PoolIn(_In):
    start: str
    end: str


class NetworkIn(_In):
    name: str = Field(min_length=1, max_length=255, pattern=NAME)
    cidr: str
    gateway: str | None = None
    allocationPool: PoolIn | None = None


class PortIn(_In):
    network: str = Field(min_length=1, description="Network id or name")
    macAddress: str | None = None
    ipAddress: str | None = None
    name: str = ""
    tags: list[str] = Field(default_factory=list)


class VduNetworkIn(_In):
    """One port (`network`), a redundant pair on two networks (`redundant`) that the guest
    bonds, or an existing port (`port`)."""

    network: str | None = None
    redundant: list[str] | None = Field(None, min_length=2, max_length=2)
    port: str | None = None
    tags: list[str] = Field(default_factory=list)
    bond: str | None = Field(None, pattern=NAME, max_length=15)
    fixedIp: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> VduNetworkIn:
        given = [k for k in ("network", "redundant", "port") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of network, redundant, port")
        if self.redundant is not None and len(set(self.redundant)) != 2:
            raise ValueError("redundant: two different networks")
        return self


class FileIn(_In):
    path: str = Field(min_length=1, max_length=255)
    content: str = Field(max_length=65536)


class ConfigDriveIn(_In):
    userData: str | None = Field(None, max_length=65536)
    metadata: dict[str, str] = Field(default_factory=dict)
    files: list[FileIn] = Field(default_factory=list, max_length=16)
    publicKeys: dict[str, str] = Field(default_factory=dict)


class WatchdogIn(_In):
    timeout: float = Field(10, ge=1, le=3600)
    action: WatchdogAction = WatchdogAction.RESET
    tags: list[str] = Field(default_factory=list)


class MigrationIn(_In):
    policy: Migration = Migration.LIVE
    maxInterruptionMs: int | None = Field(None, ge=0, le=3_600_000)


class GroupRuleIn(_In):
    """A placement rule of a VDU: a group of its instances is made for it."""

    policy: Literal["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"]
    level: str = Field("host", min_length=1, max_length=64)
    maxPerDomain: int | None = Field(None, ge=1, le=1000)


class RecoveryIn(_In):
    """What to do when an instance fails: restart in place (then replace when the budget is
    spent), replace at once, or notify only (the VNFM recovers)."""

    onFailure: Literal["restart", "replace", "notify"] = "restart"
    maxRestarts: int = Field(3, ge=0, le=100)
    window: float = Field(300, gt=0, le=86400)
    backoff: float = Field(1.0, ge=0, le=600)
    maxBackoff: float = Field(30.0, ge=0, le=3600)


class HealthCheckIn(_In):
    """How the agent finds a hung guest: probes on its first port."""

    kind: Literal["http", "tcp"] = "http"
    port: int = Field(8080, ge=1, le=65535)
    path: str = Field("/", max_length=255)
    interval: float = Field(1.0, ge=0.1, le=300)
    timeout: float = Field(0.5, gt=0, le=60)
    failures: int = Field(3, ge=1, le=100)

    @model_validator(mode="after")
    def _timing(self) -> HealthCheckIn:
        if self.timeout >= self.interval * self.failures:
            raise ValueError("timeout must be shorter than interval x failures")
        return self


class VduIn(_In):
    name: str = Field(min_length=1, max_length=64, pattern=NAME)
    count: int = Field(1, ge=0, le=1000)
    minCount: int = Field(0, ge=0, le=1000)
    maxCount: int | None = Field(None, ge=1, le=1000)
    flavor: str = Field(min_length=1)
    image: str = Field(min_length=1)
    networks: list[VduNetworkIn] = Field(default_factory=list, max_length=16)
    configDrive: ConfigDriveIn = Field(default_factory=ConfigDriveIn)
    watchdog: WatchdogIn | None = None
    migration: MigrationIn = Field(default_factory=MigrationIn)
    metadata: dict[str, str] = Field(default_factory=dict)
    hints: dict[str, Any] = Field(default_factory=dict)
    keyName: str | None = None
    placement: list[GroupRuleIn] = Field(default_factory=list, max_length=8)
    groups: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="Existing placement groups (id or name) it joins",
    )
    recovery: RecoveryIn = Field(default_factory=RecoveryIn)
    healthCheck: HealthCheckIn | None = None

    @model_validator(mode="after")
    def _counts(self) -> VduIn:
        if self.maxCount is not None and not self.minCount <= self.count <= self.maxCount:
            raise ValueError("count must lie between minCount and maxCount")
        if self.count < self.minCount:
            raise ValueError("count must be at least minCount")
        if self.count > 1 and any(n.fixedIp or n.port for n in self.networks):
            raise ValueError("fixedIp and port are for a VDU of one instance")
        return self


class BudgetIn(_In):
    """How many of the VNF's instances may be migrating or down at once, and how many must
    keep serving, whatever the voluntary action (migration, maintenance, scale-in, repair);
    failures count against it (VNF-8)."""

    maxUnavailable: int | None = Field(None, ge=0, le=1000)
    minAvailable: int | None = Field(None, ge=0, le=1000)


class VnfIn(_In):
    name: str = Field(min_length=1, max_length=64, pattern=NAME)
    sal: Sal = Sal.LEVEL_3
    priority: int = Field(0, ge=0, le=1000, description="Higher is more important")
    clientToken: str | None = Field(None, min_length=1, max_length=255)
    preemptible: bool = Field(
        True, description="Its instances may be stopped for a higher-priority VNF's"
    )
    vdus: list[VduIn] = Field(min_length=1, max_length=32)
    disruptionBudget: BudgetIn | None = None

    @model_validator(mode="after")
    def _budget(self) -> VnfIn:
        b = self.disruptionBudget
        count = sum(v.count for v in self.vdus)
        if b is not None and b.minAvailable is not None and b.minAvailable > count:
            raise ValueError(
                f"disruptionBudget.minAvailable {b.minAvailable} exceeds the VNF's {count} "
                "instances: no voluntary action could ever be taken"
            )
        return self

    @field_validator("vdus")
    @classmethod
    def _unique(cls, vdus: list[VduIn]) -> list[VduIn]:
        if len({v.name for v in vdus}) != len(vdus):
            raise ValueError("VDU names must be unique")
        return vdus

    def to_domain(self) -> VnfRequest:
        vdus = []
        for i, v in enumerate(self.vdus):
            try:
                vdus.append(_vdu(v))
            except InvalidInput as exc:
                raise InvalidInput(f"vdus.{i}.{exc.detail}") from None
        return VnfRequest(
            self.name,
            tuple(vdus),
            self.sal,
            self.priority,
            self.clientToken,
            self.model_dump(mode="json"),
            self.preemptible,
        )


def _vdu(v: VduIn) -> Vdu:
    networks = []
    bonds = 0
    for n in v.networks:
        if n.redundant is not None:
            bond = n.bond or f"bond{bonds}"
            bonds += 1
            networks.append(NetworkRequest(tuple(n.redundant), tuple(n.tags), bond, None, None))
        elif n.port is not None:
            networks.append(NetworkRequest((), tuple(n.tags), None, None, n.port))
        else:
            assert n.network is not None
            networks.append(NetworkRequest((n.network,), tuple(n.tags), None, n.fixedIp, None))
    cd = v.configDrive
    return Vdu(
        name=v.name,
        count=v.count,
        flavor=v.flavor,
        image=v.image,
        networks=tuple(networks),
        config_drive=ConfigDrive(
            cd.userData,
            dict(cd.metadata),
            tuple((f.path, f.content) for f in cd.files),
            dict(cd.publicKeys),
        ),
        watchdog=None
        if v.watchdog is None
        else WatchdogSpec(v.watchdog.timeout, v.watchdog.action, tuple(v.watchdog.tags)),
        migration=MigrationPolicy(v.migration.policy, v.migration.maxInterruptionMs),
        min_count=v.minCount,
        max_count=v.maxCount,
        metadata=dict(v.metadata),
        hints=dict(v.hints),
        key_name=v.keyName,
        placement=tuple(GroupRule(r.policy, r.level, r.maxPerDomain) for r in v.placement),
        groups=tuple(v.groups),
        recovery=v.recovery.model_dump(),
        health_check=v.healthCheck.model_dump() if v.healthCheck else None,
    )


class RebootIn(_In):
    type: Literal["SOFT", "HARD"] = "SOFT"


class ObservedGuestIn(_In):
    id: str
    incarnation: int = Field(ge=1, le=1 << 40)
    state: Literal["RUNNING", "PAUSED", "SHUTOFF", "CRASHED", "GONE"]
    rebooted: int = Field(0, ge=0, le=1 << 40)
    detail: str = ""


class GuestEventIn(_In):
    id: str
    incarnation: int = Field(ge=1, le=1 << 40)
    kind: str
    detail: str = ""
    at: str | None = None


class MigrationPhaseIn(_In):
    """A phase of a migration, as the source's or the destination's agent reports it."""

    id: str
    instance: str = ""
    phase: Literal["prepared", "running", "migrated", "started", "measured", "failed"]
    detail: str = Field("", max_length=2000)
    target: dict[str, str] | None = None
    downtimeMs: float | None = Field(None, ge=0)
    interruptionMs: float | None = Field(None, ge=0)
    stopped: bool = False


class ObservedIn(_In):
    guests: list[ObservedGuestIn] = Field(default_factory=list)
    events: list[GuestEventIn] = Field(default_factory=list)
    resources: dict[str, Any] | None = None
    console: str | None = None
    migrations: list[MigrationPhaseIn] = Field(default_factory=list)


class MigrateIn(_In):
    """Migrate an instance by its policy: live where it allows it, else cold (if it
    allows that); `kind` asks for one (refused if the policy does not allow it)."""

    host: str | None = Field(None, description="The destination (default: placement decides)")
    kind: Literal["live", "cold"] | None = None


class PlacementGroupIn(_In):
    name: str = Field(min_length=1, max_length=255)
    policy: Literal["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"]
    level: str = Field("host", min_length=1, max_length=64)
    maxPerDomain: int | None = Field(None, ge=1, le=1000)


class ExplainIn(_In):
    """A hypothetical request: which hosts each filter keeps, how each is weighed."""

    flavor: str = Field(min_length=1)
    image: str | None = None
    sal: Sal = Sal.LEVEL_3
    priority: int = Field(0, ge=0, le=1000)
    groups: list[str] = Field(default_factory=list, max_length=8)
    hints: dict[str, Any] = Field(default_factory=dict)


class ScaleIn(_In):
    type: Literal["SCALE_OUT", "SCALE_IN"]
    vdu: str = Field(min_length=1)
    steps: int = Field(1, ge=1, le=100)
