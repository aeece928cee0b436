"""The hosts a scheduler decides on, kept between its units of work (issue 15, VNF-10).

Reading every host row (and every instance's spec, for the SAL usage) in each unit of work
made placement cost grow with the cloud. The cache keeps the hosts' resources and SAL usage
as last read and, in each unit of work, reads only the hosts whose generation moved
(`ComputeUnitOfWork.host_changes`): the snapshot it gives is the one a full read would give
at that moment. Every claim still compares and swaps the host's generation and re-checks
its capacity, and the group rules are checked on the groups locked in the claim's
transaction: a stale snapshot can only cause a retry, never a broken rule.

What it keeps is only ever committed: the hosts a unit of work wrote itself (released,
claimed, an instance moved) are given to that snapshot as it sees them, and dropped from
the cache (read again next time). A host's generation moves with its claims and releases,
so with its SAL usage; an instance write that changed a host's usage without a claim or a
release there would not show until the host moves again: every `full_every` reads the
cache reads everything again, which bounds that.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from vimha.domain.compute import HostResources
from vimha.ports.store import UnitOfWork

Usage = dict[str, dict[str, tuple[int, int]]]  # host -> SAL -> (vCPUs, RAM MiB)


@dataclass(frozen=True, slots=True)
class HostsSeen:
    """One unit of work's copy: its own to update as it claims (the inner usage maps are
    shared: replace them, never change them in place)."""

    hosts: dict[str, HostResources]
    usage: Usage | None  # None: no SAL class keeps a reserve, not read


class HostCache:
    def __init__(self, usage: bool, full_every: int = 1000) -> None:
        """`usage`: keep the SAL usage too (a SAL class keeps a reserve)."""
        self.usage = usage
        self.full_every = full_every
        self._lock = threading.Lock()  # units of work may run in several threads
        self._hosts: dict[str, HostResources] = {}
        self._usage: Usage = {}
        self._known: dict[str, int] = {}
        self._reads = 0

    def read(self, uow: UnitOfWork) -> HostsSeen:
        with self._lock:
            self._reads += 1
            whole = self._reads % self.full_every == 1 or not self._known
            known = {} if whole else dict(self._known)
        changes = uow.compute.host_changes(known, self.usage)
        with self._lock:
            if whole:
                self._hosts, self._usage, self._known = {}, {}, {}
            for name in changes.gone:
                self._forget(name)
            for name, res in changes.hosts.items():
                if name in changes.unsettled:
                    self._forget(name)
                else:
                    self._hosts[name] = res
                    self._known[name] = res.generation
                    self._usage[name] = changes.usage.get(name, {})
            hosts = dict(self._hosts)
            usage = dict(self._usage)
        for name in changes.unsettled:
            hosts[name] = changes.hosts[name]
            usage[name] = changes.usage.get(name, {})
        return HostsSeen(hosts, usage if self.usage else None)

    def _forget(self, name: str) -> None:
        self._hosts.pop(name, None)
        self._usage.pop(name, None)
        self._known.pop(name, None)
