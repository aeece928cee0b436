"""Console access (VNF-12). Pure.

A console URL carries a one-time token; the controllers keep only its SHA-256, with an
expiry, in the database, so the URL works on every controller and only once. The
controller that serves the websocket opens the instance's console at its host's agent,
proving itself with the host's key: an HMAC of the instance id, the time and a nonce; the
agent refuses a stale or replayed proof."""

from __future__ import annotations

import hashlib
import hmac
import secrets

MAX_SKEW = 30.0


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign(key: bytes, instance_id: str, at: float, nonce: str) -> str:
    return hmac.new(key, f"{instance_id}|{at:.3f}|{nonce}".encode(), hashlib.sha256).hexdigest()


def check(
    key: bytes, instance_id: str, at: float, nonce: str, mac: str, now: float, seen: set[str]
) -> str | None:
    """Why the proof is refused, or None (the nonce is then remembered in `seen`)."""
    if abs(now - at) > MAX_SKEW:
        return "stale proof"
    if nonce in seen:
        return "replayed proof"
    if not hmac.compare_digest(sign(key, instance_id, at, nonce), mac):
        return "bad proof"
    seen.add(nonce)
    return None
