"""One validated, typed settings tree, loaded once and passed into constructors.

Every option is documented in docs/configuration.md. Timing invariants are checked here, at
load, so that a bad combination fails at start-up with a sentence, not at 3 a.m.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from vimha.config_base import _Model, _seconds
from vimha.config_vnf import (
    CapacityConfig,
    ComputeConfig,
    CorrelationConfig,
    IncidentsConfig,
    MetricsConfig,
    MigrationConfig,
    PlacementConfig,
)
from vimha.domain.alarms import Location
from vimha.domain.compute import Sal
from vimha.domain.correlation_rules import Rules, parse_rules
from vimha.domain.delivery import RetryPolicy
from vimha.domain.detection import DetectionPolicy
from vimha.domain.election import LeasePolicy
from vimha.domain.errors import InvalidInput
from vimha.domain.events import DEFAULT_HIERARCHY, location_from
from vimha.domain.fencing import FencePolicy
from vimha.domain.retention import RetentionPolicy
from vimha.domain.sal import DEFAULT_CLASSES, SalClass

Role = Literal["admin", "operator", "reader", "agent"]


class TlsConfig(_Model):
    cert_file: str = Field(description="PEM certificate chain the API serves")
    key_file: str = Field(description="PEM private key of the certificate (0600)")

    @model_validator(mode="after")
    def _readable(self) -> TlsConfig:
        for what in (self.cert_file, self.key_file):
            if not os.access(what, os.R_OK):
                raise ValueError(f"{what}: not readable")
        return self


class ApiConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8470, ge=0, le=65535)
    also_listen: tuple[str, ...] = Field(
        (), description="More addresses to serve the API on (same port), e.g. a bridge's"
    )
    public_url: str | None = Field(
        None, description="Base URL that links in responses and notifications point at."
    )
    page_size: int = Field(100, ge=1, le=10000)
    tls: TlsConfig | None = Field(
        None, description="Serve the API over HTTPS with this certificate (links then say https)"
    )

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return (self.public_url or f"{scheme}://{self.host}:{self.port}").rstrip("/")


class StoreConfig(_Model):
    url: str = "sqlite:///.vimha/vimha.db"


class TokenConfig(_Model):
    name: str
    token: str = Field(min_length=16)
    role: Role
    host: str | None = Field(
        None,
        description="role agent: the one host this token speaks for (its services' status, "
        "events about it and its parts, its declared services); nothing else",
    )

    @model_validator(mode="after")
    def _scoped(self) -> TokenConfig:
        if (self.role == "agent") != (self.host is not None):
            raise ValueError(f"token {self.name}: role agent, and only it, is bound to a host")
        return self


class AuthConfig(_Model):
    tokens: tuple[TokenConfig, ...] = ()
    token_file: str | None = Field(
        None, description="File holding an admin token (created with 0600 if missing)."
    )
    identity_token_ttl: float = Field(
        3600.0,
        ge=60,
        le=7 * 86400,
        description="Seconds a token issued by the OpenStack Identity face is valid",
    )
    region: str = Field(
        "RegionOne", min_length=1, max_length=255, description="Region of the service catalog"
    )

    @field_validator("identity_token_ttl", mode="before")
    @classmethod
    def _ttl(cls, value: Any) -> float:
        return _seconds(value)

    @field_validator("tokens")
    @classmethod
    def _unique(cls, tokens: tuple[TokenConfig, ...]) -> tuple[TokenConfig, ...]:
        if len({t.token for t in tokens}) != len(tokens):
            raise ValueError("two tokens are identical")
        return tokens


class TopologyConfig(_Model):
    hierarchy: tuple[str, ...] = DEFAULT_HIERARCHY

    @field_validator("hierarchy")
    @classmethod
    def _levels(cls, levels: tuple[str, ...]) -> tuple[str, ...]:
        if not levels or len(set(levels)) != len(levels) or any("/" in x for x in levels):
            raise ValueError("hierarchy: distinct level names without '/', outermost first")
        return levels


class DeliveryConfig(_Model):
    initial_backoff: float = 0.2
    max_backoff: float = 30.0
    give_up_after: float = 86400.0
    jitter: float = Field(0.5, ge=0, le=1)
    timeout: float = 5.0
    callback_test_timeout: float = 5.0
    flush_interval: float = 0.05
    lane_memory: int = Field(10000, ge=10, description="Jobs held in memory per subscriber.")
    process: bool = Field(
        True, description="Deliver from a child process (its own core) instead of in-process."
    )

    @field_validator(
        "initial_backoff",
        "max_backoff",
        "give_up_after",
        "timeout",
        "callback_test_timeout",
        "flush_interval",
        mode="before",
    )
    @classmethod
    def _dur(cls, value: Any) -> float:
        return _seconds(value)

    @model_validator(mode="after")
    def _timing(self) -> DeliveryConfig:
        self.retry_policy()  # raises on a bad backoff combination
        if self.timeout >= self.give_up_after:
            raise ValueError("delivery.timeout must be shorter than delivery.give_up_after")
        if self.flush_interval >= self.timeout:
            raise ValueError("delivery.flush_interval must be shorter than delivery.timeout")
        return self

    def retry_policy(self) -> RetryPolicy:
        try:
            return RetryPolicy(
                self.initial_backoff, self.max_backoff, self.give_up_after, self.jitter
            )
        except InvalidInput as exc:
            raise ValueError(exc.detail) from None


class AgeingConfig(_Model):
    interval: float = 3600.0
    retention: dict[str, Any] = Field(default_factory=dict)

    @field_validator("interval", mode="before")
    @classmethod
    def _dur(cls, value: Any) -> float:
        return _seconds(value)

    @field_validator("retention")
    @classmethod
    def _policy(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            RetentionPolicy.from_dict(value)
        except InvalidInput as exc:
            raise ValueError(exc.detail) from None
        return value

    def policy(self) -> RetentionPolicy:
        return RetentionPolicy.from_dict(self.retention)


class HeartbeatConfig(_Model):
    interval: float = 0.1
    misses: int = Field(3, ge=1)
    up_after: int = Field(3, ge=1)
    max_age: float = Field(30.0, description="Heartbeats older than this (s) are refused.")
    detector: Literal["fixed", "phi"] = Field(
        "fixed",
        description="fixed: DOWN after interval * misses of silence; phi: phi-accrual, "
        "learns each link's heartbeat timing",
    )
    phi_threshold: float = Field(8.0, gt=0, description="phi above which a plane is DOWN")
    phi_min_std: float | None = Field(
        None, gt=0, description="Floor of the learnt spread (s); default interval / 4"
    )
    startup_grace: float = Field(
        5.0,
        ge=0,
        description="A host not heard since the controller started is UNKNOWN "
        "(no alarm) this long, then DOWN.",
    )
    listen: dict[str, str] = Field(
        default_factory=dict, description="Network plane -> host:port the controller hears on."
    )

    @field_validator("interval", "max_age", mode="before")
    @classmethod
    def _dur(cls, value: Any) -> float:
        return _seconds(value)

    @field_validator("listen")
    @classmethod
    def _addresses(cls, value: dict[str, str]) -> dict[str, str]:
        for plane, address in value.items():
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"listen.{plane}: expected host:port, got {address!r}")
        return value

    def policy(self) -> DetectionPolicy:
        return DetectionPolicy(
            self.interval,
            self.misses,
            self.up_after,
            self.detector,
            self.phi_threshold,
            self.phi_min_std,
        )


class FencingConfig(_Model):
    enabled: bool = Field(True, description="Fence failed hosts through their BMC (ForceOff)")
    delay: float = Field(
        1.0, ge=0, description="Seconds a host stays failed (every plane lost) before fencing"
    )
    retry: float = Field(10.0, gt=0, description="Seconds between attempts after a failed one")
    confirm_within: float = Field(
        10.0, gt=0, description="Seconds to read back the power-off before calling it failed"
    )

    @field_validator("delay", "retry", "confirm_within", mode="before")
    @classmethod
    def _dur(cls, value: Any) -> float:
        return _seconds(value)

    def policy(self) -> FencePolicy:
        return FencePolicy(self.enabled, self.delay, self.retry, self.confirm_within)


class CoordinationConfig(_Model):
    url: str = Field(
        "local://",
        description="etcd://host:port,host:port (several controllers) or local:// (one host)",
    )
    ttl: float = Field(3.0, description="Lease of a role held by this controller (s)")
    renew: float = Field(0.5, description="How often the lease is renewed (s)")
    demote_after: float = Field(
        2.0, description="Without a successful renewal for this long, give the role up (s)"
    )
    controllers: int = Field(
        1,
        ge=1,
        description="How many controllers run against this store: more than one needs a "
        "distributed backend (etcd://)",
    )

    @field_validator("ttl", "renew", "demote_after", mode="before")
    @classmethod
    def _dur(cls, value: Any) -> float:
        return _seconds(value)

    @model_validator(mode="after")
    def _valid(self) -> CoordinationConfig:
        scheme = self.url.split("://", 1)[0]
        if scheme not in ("etcd", "local") or "://" not in self.url:
            raise ValueError(f"url {self.url!r}: use etcd://host:port,... or local://")
        if self.controllers > 1 and scheme != "etcd":
            raise ValueError(
                f"url {self.url!r} is one host's (not distributed): {self.controllers} "
                "controllers need etcd://host:port,..."
            )
        try:
            self.policy()
        except InvalidInput as exc:
            raise ValueError(exc.detail) from None
        return self

    def policy(self) -> LeasePolicy:
        return LeasePolicy(self.ttl, self.renew, self.demote_after)


class JudgingConfig(_Model):
    split: Literal["off", "on", "auto"] = Field(
        "auto",
        description="Split the judging of hosts (heartbeat planes, BMC, fencing, alarms) "
        "across the live controllers, each host judged by one (domain/ownership.py): on, "
        "off, or auto (past `auto_above` hosts). Needs coordination.controllers > 1.",
    )
    auto_above: int = Field(
        200, ge=0, description="With split auto: split once more hosts than this are declared"
    )


class BmcConfig(_Model):
    url: str = Field(min_length=1, description="Redfish base URL, e.g. https://10.0.0.5")
    user: str = ""
    password: str = ""
    interval: float = Field(2.0, gt=0, description="How often the controller reads it")
    timeout: float = Field(1.0, gt=0)
    log_interval: float = Field(
        10.0, gt=0, description="How often its event log (SEL) is read for new events"
    )


class HostConfig(_Model):
    name: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.-]+$")
    roles: tuple[Literal["control", "compute", "storage", "network"], ...] = ("compute",)
    location: dict[str, str] = Field(default_factory=dict)
    key: str = Field(min_length=16, description="Shared secret signing the node's heartbeats")
    planes: tuple[str, ...] = Field(
        (), description="Planes this host heartbeats on (default: every listened plane)"
    )
    bmc: BmcConfig | None = None
    capacities: CapacityConfig | None = Field(None, description="For compute nodes")
    traits: tuple[str, ...] = Field(
        (), description="Traits offered to placement, e.g. REDUNDANT_PSU (beside the agent's)"
    )


class Config(_Model):
    vim_connection_id: str = "vimha"
    controller_name: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="This controller's name among several; default <hostname>:<api port>. "
        "Keep it stable across restarts: the controller resumes its own pending deliveries.",
    )
    data_dir: str = ".vimha"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    api: ApiConfig = ApiConfig()
    store: StoreConfig = StoreConfig()
    auth: AuthConfig = AuthConfig()
    topology: TopologyConfig = TopologyConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    ageing: AgeingConfig = AgeingConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    fencing: FencingConfig = FencingConfig()
    coordination: CoordinationConfig = CoordinationConfig()
    judging: JudgingConfig = JudgingConfig()
    compute: ComputeConfig = ComputeConfig()
    placement: PlacementConfig = PlacementConfig()
    correlation: CorrelationConfig = CorrelationConfig()
    incidents: IncidentsConfig = IncidentsConfig()
    metrics: MetricsConfig = MetricsConfig()
    migration: MigrationConfig = MigrationConfig()
    hosts: tuple[HostConfig, ...] = ()

    def controller_id(self) -> str:
        return self.controller_name or f"{socket.gethostname()}:{self.api.port}"

    def locations(self) -> dict[str, Location]:
        """Each declared host's place in the aggregation hierarchy."""
        hierarchy = self.topology.hierarchy
        return {
            h.name: location_from(h.location, hierarchy, f"hosts.{h.name}", host=h.name)
            for h in self.hosts
        }

    @model_validator(mode="after")
    def _inventory(self) -> Config:
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            raise ValueError("hosts: names must be unique")
        if self.hosts and not self.heartbeat.listen:
            raise ValueError("hosts are declared but heartbeat.listen names no plane")
        for host in self.hosts:
            problem = self.host_problem(host)
            if problem:
                raise ValueError(f"hosts.{host.name}.{problem}")
        return self

    def host_problem(self, host: HostConfig) -> str | None:
        """Why a host declaration does not fit this configuration, or None."""
        unknown = set(host.planes) - set(self.heartbeat.listen)
        if unknown:
            return f"planes: {sorted(unknown)} not listened on"
        levels = set(host.location) - set(self.topology.hierarchy)
        if levels:
            return f"location: unknown level(s) {sorted(levels)}"
        if "/" in "".join(host.location.values()):
            return "location: values may not contain '/'"
        return None

    @model_validator(mode="after")
    def _placement_levels(self) -> Config:
        for level, cls in self.placement.sal.items():
            if cls.reserve != "none" and cls.reserve not in self.topology.hierarchy:
                raise ValueError(
                    f"placement.sal.{level}.reserve: {cls.reserve!r} is not a level of the "
                    f"topology ({', '.join(self.topology.hierarchy)}) nor none"
                )
        return self

    def sal_classes(self) -> dict[Sal, SalClass]:
        out = dict(DEFAULT_CLASSES)
        for level, cls in self.placement.sal.items():
            out[Sal(level)] = SalClass(
                Sal(level),
                frozenset(cls.traits),
                cls.reserve,
                cls.on_reserve,
                frozenset(cls.reserved_hosts),
            )
        return out

    @model_validator(mode="after")
    def _rules(self) -> Config:
        try:
            load_rules(self.correlation.rules_file, self.topology.hierarchy)
        except InvalidInput as exc:
            raise ValueError(exc.detail) from None
        return self

    @model_validator(mode="after")
    def _auth_present(self) -> Config:
        if not self.auth.tokens and not self.auth.token_file:
            raise ValueError("auth: configure tokens or a token_file; the API is never open")
        return self


def load(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Load and validate a YAML config; `overrides` is merged on top (nested dicts)."""
    data: dict[str, Any] = {}
    where = str(path) if path else "defaults"
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise InvalidInput(f"config {where}: file not found") from None
        except yaml.YAMLError as exc:
            raise InvalidInput(f"config {where}: not valid YAML: {exc}") from None
        if raw is not None and not isinstance(raw, dict):
            raise InvalidInput(f"config {where}: the top level must be a mapping")
        data = raw or {}
    if overrides:
        data = _merge(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidInput(f"config {where}: {problems}") from None


DEFAULT_RULES = Path(__file__).parent / "correlation.yaml"


def load_rules(path: str | None, hierarchy: tuple[str, ...]) -> Rules:
    """The correlation rules of a YAML file (None: the shipped ones), checked against the
    topology. InvalidInput names the file and the bad field."""
    where = Path(path) if path else DEFAULT_RULES
    try:
        doc = yaml.safe_load(where.read_text())
    except FileNotFoundError:
        raise InvalidInput(f"correlation.rules_file {where}: file not found") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"correlation.rules_file {where}: not valid YAML: {exc}") from None
    try:
        return parse_rules(doc, hierarchy)
    except InvalidInput as exc:
        raise InvalidInput(f"correlation.rules_file {where}: {exc.detail}") from None


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
