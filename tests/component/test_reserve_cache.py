"""The scheduler's kept reserve pools (engine/reserve_cache.py): after any sequence of
hosts moving (claims, releases, hosts down and back, traits gained, hosts gone), the guard
it gives is the one built on every host again (`domain.sal.reserve_guard`)."""

from __future__ import annotations

import random

import pytest

from vimha.domain.compute import HostResources, Sal
from vimha.domain.placement import Candidate
from vimha.domain.sal import SalClass, reserve_guard
from vimha.engine.reserve_cache import ReserveCache, load_of

H = ("site", "zone", "rack", "host")
CLASSES = {
    Sal.LEVEL_1: SalClass(Sal.LEVEL_1, frozenset({"BOTH_PLANES"}), "rack"),
    Sal.LEVEL_2: SalClass(Sal.LEVEL_2, reserve="host", reserved_hosts=frozenset({"h3"})),
    Sal.LEVEL_3: SalClass(Sal.LEVEL_3),
}


def candidate(rng: random.Random, n: int) -> Candidate:
    used = rng.randrange(0, 16)
    res = HostResources(
        f"h{n}",
        16,
        16384,
        100,
        used,
        used * 512,
        cpu_ratio=rng.choice((1.0, 1.5)),
        traits=frozenset({"BOTH_PLANES"}) if rng.random() < 0.8 else frozenset(),
    )
    where = {"site": "s", "zone": f"z{n % 2}", "rack": f"r{n % 5}", "host": f"h{n}"}
    return Candidate(res, rng.choice(("UP", "UP", "UP", "DOWN")), where)


def usage(rng: random.Random) -> dict[str, tuple[int, int]]:
    return {s.value: (rng.randrange(8), rng.randrange(4096)) for s in Sal if rng.random() < 0.5}


@pytest.mark.parametrize("seed", range(20))
def test_the_kept_pools_give_the_guard_of_all_the_hosts(seed: int) -> None:
    rng = random.Random(seed)
    cache = ReserveCache(CLASSES, H)
    cands = {f"h{n}": candidate(rng, n) for n in range(30)}
    use = {name: usage(rng) for name in cands}
    for _step in range(25):
        for _ in range(rng.randrange(0, 6)):
            n = rng.randrange(34)  # some new hosts too
            cands[f"h{n}"] = candidate(rng, n)
            use[f"h{n}"] = usage(rng)
        if rng.random() < 0.2 and cands:
            gone = rng.choice(sorted(cands))
            del cands[gone], use[gone]
        loads = {
            sal: [
                load
                for c in cands.values()
                if (load := load_of(cls, c, use.get(c.name, {}))) is not None
            ]
            for sal, cls in CLASSES.items()
        }
        assert cache.guard(dict(cands), dict(use)) == reserve_guard(CLASSES, loads, H)
