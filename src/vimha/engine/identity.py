"""Tokens of the OpenStack Identity face (issue 16): issued, validated, revoked.

A token is random; only its SHA-256 is stored, with its expiry, through the store writer, so
a token issued by one controller is valid on every controller. A validated token is trusted
for `recheck` seconds without reading the store again (Keystone's middleware caches for
minutes): a token revoked through another controller is refused here within that time.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from vimha.domain import identity
from vimha.domain.clock import Clock
from vimha.domain.identity import IssuedToken
from vimha.engine.writer import StoreWriter
from vimha.ports.store import Store

log = logging.getLogger("vimha.identity")
CACHE_LIMIT = 10_000


class IdentityService:
    def __init__(
        self, store: Store, writer: StoreWriter, clock: Clock, ttl: float, recheck: float = 5.0
    ) -> None:
        self.store = store
        self.writer = writer
        self.clock = clock
        self.ttl = ttl
        self.recheck = timedelta(seconds=recheck)
        self._cache: dict[str, tuple[IssuedToken, datetime]] = {}

    def _new(
        self,
        user: str,
        role: str,
        project: str | None,
        methods: tuple[str, ...],
        parent: IssuedToken | None,
    ) -> tuple[str, str, IssuedToken, datetime]:
        now = self.clock.now()
        token = identity.new_token()
        issued = IssuedToken(
            user,
            role,
            project,
            methods,
            parent.audit_id if parent is not None else identity.new_audit_id(),
            now,
            identity.expiry(now, self.ttl, parent),
        )
        return token, identity.token_hash(token), issued, now

    async def issue(
        self,
        user: str,
        role: str,
        project: str | None,
        methods: tuple[str, ...],
        parent: IssuedToken | None = None,
    ) -> tuple[str, IssuedToken]:
        """A new token for `user` (its vimha `role`), scoped to `project` or unscoped; one
        traded for another token (`parent`) expires no later than it."""
        token, digest, issued, now = self._new(user, role, project, methods, parent)
        await self.writer.acall(lambda uow: uow.openstack.add_token(digest, issued, now))
        self._cache[digest] = (issued, now)
        log.info(
            "token issued to %s (%s), expires %s",
            user,
            project or "unscoped",
            issued.expires_at.isoformat(),
        )
        return token, issued

    def validate(self, token: str) -> IssuedToken | None:
        """The live token, or None (unknown, expired, revoked). Reads the store at most
        once per `recheck` for a given token (synchronous: call it from a thread)."""
        digest = identity.token_hash(token)
        now = self.clock.now()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[1] < self.recheck:
            return cached[0] if cached[0].valid_at(now) else None
        found = self.store.openstack.token(digest, now)
        if found is None:
            self._cache.pop(digest, None)
            return None
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[digest] = (found, now)
        return found

    def cached(self, token: str) -> IssuedToken | bool | None:
        """What the cache alone says: the token, None (known invalid), or False (ask the
        store). Lets the event loop skip a thread for a token it validated recently."""
        digest = identity.token_hash(token)
        now = self.clock.now()
        cached = self._cache.get(digest)
        if cached is None or now - cached[1] >= self.recheck:
            return False
        return cached[0] if cached[0].valid_at(now) else None

    async def revoke(self, token: str) -> bool:
        digest = identity.token_hash(token)
        self._cache.pop(digest, None)
        return await self.writer.acall(lambda uow: uow.openstack.revoke_token(digest))
