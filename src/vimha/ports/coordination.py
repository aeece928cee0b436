"""Coordination between controllers (issue 4): keys with revisions, compare-and-swap, leases
that expire with their keys, counters for fencing epochs, and watches. Drivers are chosen by
URL: `etcd://host:port,host:port` (a real etcd v3 cluster), `local://` (this process only)
or `local:///path/coord.db` (the processes of one host, e.g. the embedded cloud).

Contract for every driver:
- `create` succeeds for exactly one of concurrent callers; `replace` and `delete` with an
  expected revision succeed only if the key was not changed since (compare-and-swap).
- A key written with a lease disappears when the lease is revoked or expires; `keepalive`
  on a lease that is gone raises LeaseLost (the holder must stop acting at once).
- `increment` returns strictly increasing values, across all callers.
- `watch` yields every change under a prefix after the revision given, in order.
- Transport errors become CoordinationUnavailable (retry); no library exception leaks.
- A call outside what this process's credential allows (etcd RBAC: a write to another
  service group's keys) raises PermissionDenied, naming the key: never retried, since the
  same call is refused again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from vimha.domain.errors import Permanent, Temporary


class CoordinationUnavailable(Temporary):
    """No member of the coordination backend answered."""


class LeaseLost(Permanent):
    """The lease expired or was revoked: whatever it held is gone."""


class PermissionDenied(Permanent):
    """The backend refused the call to this process's credential (etcd RBAC): a key outside
    its permissions, or no credential where one is required. `detail` names the key and
    the user; retrying the same call is refused again."""


@dataclass(frozen=True, slots=True)
class Characteristics:
    distributed: bool  # safe for controllers on several hosts


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: str
    revision: int  # of its last change
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # PUT or DELETE
    key: str
    value: str
    revision: int


class Coordination(Protocol):
    characteristics: Characteristics

    async def grant(self, ttl: float) -> int: ...

    async def keepalive(self, lease: int) -> float:
        """Renew; returns the time to live granted. LeaseLost if it is gone."""
        ...

    async def revoke(self, lease: int) -> None: ...

    async def create(self, key: str, value: str, lease: int = 0) -> bool:
        """Write the key only if it does not exist."""
        ...

    async def get(self, key: str) -> Entry | None: ...

    async def list(self, prefix: str) -> tuple[int, list[Entry]]:
        """Every key under the prefix, with the store's revision to watch from."""
        ...

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        """Write unconditionally; returns the revision of the write."""
        ...

    async def replace(self, key: str, value: str, revision: int, lease: int = 0) -> bool:
        """Write the key only if its last change is `revision`."""
        ...

    async def delete(self, key: str, revision: int | None = None) -> bool: ...

    async def increment(self, key: str) -> int: ...

    def watch(self, prefix: str, after: int) -> AsyncIterator[Change]: ...

    async def close(self) -> None: ...
