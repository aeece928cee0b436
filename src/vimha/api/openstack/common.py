"""What the OpenStack faces share: the address the client used, request bodies, times."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import Request

from vimha.domain.errors import InvalidInput


def base(request: Request) -> str:
    """The address the client used (through a balancer too: its Host header), so that
    links and the service catalog work on any controller."""
    return str(request.base_url).rstrip("/")


async def body(request: Request) -> dict[str, Any]:
    """The JSON object of the request body; InvalidInput (400) otherwise."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"Malformed request body: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("Malformed request body: a JSON object is expected")
    return doc


def member(doc: dict[str, Any], key: str) -> dict[str, Any]:
    """`doc[key]`, an object (Nova's and Neutron's envelopes); InvalidInput otherwise."""
    value = doc.get(key)
    if not isinstance(value, dict):
        raise InvalidInput(f"Invalid input: '{key}' is a required object")
    return value


def utc(at: datetime) -> datetime:
    return at.astimezone(UTC)


def iso_z(at: datetime | None) -> str | None:
    """Nova's, Glance's and Neutron's timestamps: 2026-12-07T03:35:46Z."""
    return None if at is None else utc(at).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_micro(at: datetime | None, z: bool = False) -> str | None:
    """With microseconds: Nova's launched_at (no zone), Keystone's expires_at (Z)."""
    if at is None:
        return None
    return utc(at).strftime("%Y-%m-%dT%H:%M:%S.%f") + ("Z" if z else "")


def flag(value: object) -> bool:
    """A boolean as OpenStack clients send it (true, "True", "1", ...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", ""):
        return False
    if isinstance(value, int):
        return value != 0
    raise InvalidInput(f"{value!r} is not a boolean")
