"""The settings of what runs the VNFs (compute, migration, placement) and of insight
(correlation, incidents, metrics): sections of vimha.config's tree, documented in
docs/configuration.md."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from vimha.config_base import _Model, _seconds
from vimha.domain.incidents import DEFAULT_TARGETS


class CapacityConfig(_Model):
    vcpus: int = Field(ge=1, description="Virtual CPUs offered to instances")
    ram_mib: int = Field(ge=1, description="RAM offered to instances, MiB")
    disk_gib: int = Field(0, ge=0, description="Local disk offered to instances, GiB")


class ComputeConfig(_Model):
    cpu_allocation_ratio: float = Field(4.0, gt=0, description="vCPUs offered per host CPU")
    ram_allocation_ratio: float = Field(1.0, gt=0, description="RAM offered per host MiB")
    disk_allocation_ratio: float = Field(1.0, gt=0, description="Disk offered per host GiB")
    console_token_ttl: float = Field(
        60.0, gt=0, le=3600, description="Seconds a console URL's one-time token is valid"
    )
    watch_timeout: float = Field(
        25.0,
        gt=0,
        le=300,
        description="Longest wait (s) of an agent's watch of what its host should run; it "
        "returns at once on a change",
    )

    @field_validator("console_token_ttl", "watch_timeout", mode="before")
    @classmethod
    def _dur(cls, value: Any) -> float:
        return _seconds(value)


class MigrationConfig(_Model):
    timeout: float = Field(
        180.0,
        gt=0,
        le=3600,
        description="Seconds a migration may take from its start to the guest running on the "
        "destination; beyond, it fails (a live one is aborted by the source's agent at 2/3 of "
        "it, the guest still running on the source)",
    )
    nominal_ms: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {
            "process": {"cold": 800.0},
            "libvirt": {"live": 250.0, "cold": 30000.0},
        },
        description="Interruption (ms) expected of a migration per hypervisor and kind, until "
        "3 of that kind were measured (then the 90th percentile of the last 20)",
    )
    answer_window: float = Field(
        30.0,
        ge=0,
        le=86400,
        description="Default seconds a VNFM has to answer each step of a maintenance session",
    )

    @field_validator("timeout", "answer_window", mode="before")
    @classmethod
    def _dur(cls, value: Any) -> float:
        return _seconds(value)

    @field_validator("nominal_ms")
    @classmethod
    def _kinds(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for hv, kinds in value.items():
            unknown = set(kinds) - {"live", "cold"}
            if unknown:
                raise ValueError(f"{hv}: kinds are live and cold, not {sorted(unknown)}")
            if any(ms < 0 for ms in kinds.values()):
                raise ValueError(f"{hv}: milliseconds must not be negative")
        return value


class SalClassConfig(_Model):
    traits: tuple[str, ...] = Field((), description="Traits every host of this SAL must have")
    reserve: str = Field(
        "none",
        description="Failover reserve kept free: enough to re-place the SAL's instances of "
        "its most loaded domain at this level (host, rack, ...), or none",
    )
    on_reserve: Literal["refuse", "alarm"] = Field(
        "refuse",
        description="A request that would eat the reserve: refused, or placed with an alarm",
    )
    reserved_hosts: tuple[str, ...] = Field(
        (), description="Hosts kept for this SAL's recovery only (used before spare capacity)"
    )


class PlacementConfig(_Model):
    sal: dict[Literal["LEVEL_1", "LEVEL_2", "LEVEL_3"], SalClassConfig] = Field(
        default_factory=dict, description="Per service availability level: traits, reserve"
    )
    preemption: bool = Field(
        True,
        description="A higher-priority VNF's instance may stop lower-priority pre-emptible "
        "ones when no host has room",
    )


class CorrelationConfig(_Model):
    enabled: bool = Field(True, description="Correlate alarms (run by the singleton holder)")
    rules_file: str | None = Field(
        None,
        description="YAML correlation rules; none: the rules shipped with vimha "
        "(src/vimha/correlation.yaml). Read again when the file changes",
    )
    interval: float = Field(
        0.5, gt=0, le=60, description="Seconds between passes when alarms changed"
    )
    full_every: float = Field(
        5.0, gt=0, le=3600, description="A pass at least this often (windows slide)"
    )

    @field_validator("interval", "full_every", mode="before")
    @classmethod
    def _dur(cls, value: Any) -> float:
        return _seconds(value)


Span = Literal["detect", "fence", "place", "boot", "serve", "total"]


class IncidentsConfig(_Model):
    enabled: bool = Field(True, description="Keep incidents (run by the singleton holder)")
    interval: float = Field(0.5, gt=0, le=60, description="Seconds between observations")
    settle: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Rows younger than this wait for the next step (writers commit out of "
        "order): longer than any unit of work",
    )
    serving_from: Literal["active", "reported"] = Field(
        "active",
        description="An affected instance serves again once ACTIVE (active), or once "
        "recovery reports it serving (reported: its health check answered)",
    )
    targets: dict[Span, float] = Field(
        default_factory=dict,
        description="Seconds each stage may take (detect, fence, place, boot, serve, total); "
        "the others keep their defaults",
    )

    @field_validator("interval", "settle", mode="before")
    @classmethod
    def _dur(cls, value: Any) -> float:
        return _seconds(value)

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _seconds(v) for k, v in value.items()}
        return value

    def all_targets(self) -> dict[str, float]:
        out = dict(DEFAULT_TARGETS)
        for span, seconds in self.targets.items():
            out[span] = seconds
        return out


class MetricsConfig(_Model):
    journal_retention: float = Field(
        35 * 86400.0,
        gt=0,
        description="How long the instances' state journal is kept (the longest metrics "
        "window is 30 days); each instance's last row is always kept",
    )

    @field_validator("journal_retention", mode="before")
    @classmethod
    def _dur(cls, value: Any) -> float:
        return _seconds(value)
