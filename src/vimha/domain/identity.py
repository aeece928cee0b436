"""Tokens of the OpenStack Identity face (issue 16). Pure.

Identity v3 issues a token to a user who proves itself with a password (the user's vimha
token: user `admin`'s password is the admin token) or with a token it holds. The controllers
keep only the token's SHA-256, with its expiry, in the database: a token issued by one
controller is valid on every other one, and every vimha API accepts it as it accepts the
configured tokens. A token carries the vimha role of its user (reader < operator < admin),
shown to OpenStack clients as Keystone roles.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

DOMAIN_ID = "default"
DOMAIN_NAME = "Default"
# The one project of a vimha cloud: every instance belongs to it today.
PROJECT = "admin"
KEYSTONE_ROLES: dict[str, tuple[str, ...]] = {
    "reader": ("reader",),
    "operator": ("member", "reader"),
    "admin": ("admin", "member", "reader"),
}


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """What a token stands for: its user and vimha role, its scope, its life."""

    user: str
    role: str
    project: str | None  # None: unscoped
    methods: tuple[str, ...]
    audit_id: str
    issued_at: datetime
    expires_at: datetime

    def valid_at(self, now: datetime) -> bool:
        return self.issued_at <= now + timedelta(seconds=5) and now < self.expires_at


def new_token() -> str:
    return secrets.token_urlsafe(32)


def new_audit_id() -> str:
    return secrets.token_urlsafe(16)[:22]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def expiry(now: datetime, ttl: float, parent: IssuedToken | None = None) -> datetime:
    """A token's expiry: `ttl` from now, never later than the token it was traded for
    (Keystone's rule for the `token` method)."""
    end = now + timedelta(seconds=ttl)
    return min(end, parent.expires_at) if parent is not None else end


def in_default_domain(ref: object) -> bool:
    """A domain reference ({"id": ...} or {"name": ...}, or none) naming Default."""
    if ref is None:
        return True
    if not isinstance(ref, dict):
        return False
    if "id" in ref:
        return bool(ref["id"] == DOMAIN_ID)
    if "name" in ref:
        return bool(ref["name"] == DOMAIN_NAME)
    return False
