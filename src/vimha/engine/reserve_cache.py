"""Each SAL class's reserve pool, kept between a scheduler's decisions (issue 15): the
guard of a snapshot is built from the pools, and the pools are given only the hosts whose
candidate or SAL usage is not the one they were last given (the snapshot's entries are
kept, unchanged, by the host cache while their generation does not move). The guard is
the one `domain.sal.reserve_guard` makes on every host: only the hosts are not all
summed again."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from vimha.domain.compute import Sal
from vimha.domain.placement import Candidate
from vimha.domain.sal import HostLoad, ReserveGuard, ReservePool, SalClass, guard_of, with_hosts

Usage = Mapping[str, Mapping[str, tuple[int, int]]]


def load_of(cls: SalClass, c: Candidate, usage: Mapping[str, tuple[int, int]]) -> HostLoad | None:
    """The host's load in the class's pool, None if it is not one of its hosts (down,
    lacking its traits, or reserved for its recovery)."""
    if c.health != "UP" or not cls.traits <= c.resources.traits or c.name in cls.reserved_hosts:
        return None
    r = c.resources
    return HostLoad(
        c.name, c.location, r.free_vcpus, r.free_ram_mib, *usage.get(cls.sal.value, (0, 0))
    )


class ReserveCache:
    def __init__(self, classes: Mapping[Sal, SalClass], hierarchy: Sequence[str]) -> None:
        self.hierarchy = hierarchy
        self._lock = threading.Lock()
        self._pools = {s: ReservePool(c) for s, c in classes.items() if c.reserve != "none"}
        self._given: dict[str, tuple[Candidate, object]] = {}  # what the pools hold

    def guard(self, candidates: Mapping[str, Candidate], usage: Usage) -> ReserveGuard:
        nothing: Mapping[str, tuple[int, int]] = {}
        with self._lock:
            given = self._given
            moved = [
                name
                for name, c in candidates.items()
                if (g := given.get(name)) is None or g[0] is not c or g[1] is not usage.get(name)
            ]
            gone = [name for name in given if name not in candidates]
            for sal, pool in self._pools.items():
                changed: dict[str, HostLoad | None] = dict.fromkeys(gone)
                for name in moved:
                    changed[name] = load_of(pool.cls, candidates[name], usage.get(name, nothing))
                self._pools[sal] = with_hosts(pool, changed, self.hierarchy)
            for name in gone:
                del given[name]
            for name in moved:
                given[name] = (candidates[name], usage.get(name))
            return guard_of(self._pools.values())
