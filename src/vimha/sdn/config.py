"""An SDN controller instance's configuration (`vimha sdn run --config FILE`), validated once at
load. The agent's `sdn` handler writes it for the members of an SDN service group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vimha.domain.errors import InvalidInput
from vimha.domain.sdn import Model


class SdnConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="This instance")
    host: str = Field(min_length=1, description="The node it runs on")
    vim: str = Field("vimha", description="The controllers' vim_connection_id")
    group: str = Field("sdn", description="Its service group: the epochs' counter is the group's")
    model: Model = Model.CENTRALISED
    coordination_url: str = Field(min_length=1)
    listen: str = Field("0.0.0.0:6653", description="host:port where switches connect")
    control_socket: str = Field(min_length=1, description="UNIX socket of the agent's handler")
    echo_interval: float = Field(0.1, gt=0, description="OpenFlow echo requests to each switch (s)")
    echo_misses: int = Field(
        3, ge=1, description="Unanswered echoes before a switch's connection counts as lost"
    )
    cut_off_grace: float = Field(
        0.5,
        ge=0,
        description="A switch that a peer instance is connected to and this one is not, for "
        "this long, makes this one cut off from it (s)",
    )
    lease_ttl: float = Field(1.0, gt=0, description="Distributed model: masterships' lease (s)")
    lease_renew: float = Field(0.2, gt=0)
    resync: float = Field(2.0, gt=0, description="A switch that refused flows is read again (s)")
    log_level: str = "info"

    @model_validator(mode="after")
    def _valid(self) -> SdnConfig:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"listen: expected host:port, got {self.listen!r}")
        if self.lease_renew * 2 >= self.lease_ttl:
            raise ValueError("lease_renew must be under half of lease_ttl")
        return self

    @property
    def listen_address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host, int(port)


def load_sdn_config(path: Path) -> SdnConfig:
    try:
        data: Any = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InvalidInput(f"sdn config {path}: file not found") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"sdn config {path}: not valid YAML: {exc}") from None
    try:
        return SdnConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"sdn config {path}: {problems}") from None
