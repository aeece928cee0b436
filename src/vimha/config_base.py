"""What every section of the settings tree shares (vimha.config, vimha.config_vnf)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from vimha.domain.errors import InvalidInput
from vimha.domain.retention import parse_duration


def _seconds(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("must be positive")
        return float(value)
    try:
        return parse_duration(value).total_seconds()
    except InvalidInput as exc:
        raise ValueError(exc.detail) from None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
