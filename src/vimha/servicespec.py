"""A supervised service's declaration (FAULT-2/3/4): how to start it, how to check it, how to
restart it. Declared in a node's agent config, or through the controller's API (the agent
picks those up); one model for both."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vimha.domain.supervision import RestartPolicy


class RestartConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_restarts: int = Field(5, ge=0)
    window: float = Field(60.0, gt=0)
    backoff_initial: float = Field(0.1, gt=0)
    backoff_max: float = Field(5.0, gt=0)
    start_grace: float = Field(5.0, ge=0)

    def policy(self) -> RestartPolicy:
        return RestartPolicy(
            self.max_restarts, self.window, self.backoff_initial, self.backoff_max, self.start_grace
        )


class ServiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    command: tuple[str, ...] = Field(min_length=1)
    kind: Literal["compute", "storage", "network", "control", "other"] = Field(
        "other",
        description="What the service is to its node: a compute service failed beyond restart "
        "makes a COMPUTE_SERVICE_FAILURE of the host",
    )
    check: Literal["process", "tcp", "http", "command"] = "process"
    target: str | None = Field(None, description="host:port (tcp) or URL (http)")
    check_command: tuple[str, ...] = Field((), description="argv of the check (command)")
    interval: float = Field(0.5, gt=0)
    timeout: float = Field(1.0, gt=0)
    restart: RestartConfig = RestartConfig()

    @model_validator(mode="after")
    def _check_has_what_it_needs(self) -> ServiceConfig:
        if self.check in ("tcp", "http") and not self.target:
            raise ValueError(f"a {self.check} check needs a target")
        if self.check == "command" and not self.check_command:
            raise ValueError("a command check needs check_command")
        return self
