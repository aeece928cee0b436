"""State of the OpenStack faces (issue 16): the tokens the Identity face issues. (Nova's
server groups are placement groups: `ports/compute.py`.)

Contract for every driver:
- Only a token's hash is stored, with its expiry; a token issued through one controller is
  found by every other one (the same database).
- `token` never returns an expired or revoked token; expired ones are purged when tokens are
  added, so the table holds only live tokens and those about to be purged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from vimha.domain.identity import IssuedToken


class OpenStackReads(Protocol):
    def token(self, token_hash: str, now: datetime) -> IssuedToken | None:
        """The live token with this hash, or None (unknown, expired or revoked)."""
        ...


class OpenStackUnitOfWork(Protocol):
    def add_token(self, token_hash: str, token: IssuedToken, now: datetime) -> None:
        """Store a token (and purge the expired ones)."""
        ...

    def revoke_token(self, token_hash: str) -> bool:
        """Forget a token; False if it was not there."""
        ...
