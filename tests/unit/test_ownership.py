"""Which controller judges which host: rendezvous hashing over the live controllers."""

from __future__ import annotations

from collections import Counter

import pytest

from vimha.domain.ownership import handover, my_share, owner, split_active

HOSTS = [f"cmp-{n}" for n in range(3000)]
THREE = frozenset({"ctl-1", "ctl-2", "ctl-3"})


def test_every_host_has_one_owner_and_the_shares_are_even() -> None:
    shares = [my_share(HOSTS, THREE, me, split=True).hosts for me in sorted(THREE)]
    assert frozenset().union(*shares) == frozenset(HOSTS)
    assert sum(len(s) for s in shares) == len(HOSTS)  # disjoint
    assert all(900 <= len(s) <= 1100 for s in shares), [len(s) for s in shares]


def test_owners_do_not_depend_on_the_order_the_controllers_are_seen_in() -> None:
    assert all(
        owner(h, ["ctl-1", "ctl-2", "ctl-3"]) == owner(h, ["ctl-3", "ctl-1", "ctl-2"])
        for h in HOSTS[:200]
    )


def test_a_controller_that_leaves_hands_over_only_its_own_hosts_spread_over_the_others() -> None:
    before = {h: owner(h, THREE) for h in HOSTS}
    after = {h: owner(h, THREE - {"ctl-2"}) for h in HOSTS}
    moved = [h for h in HOSTS if before[h] != after[h]]
    assert {before[h] for h in moved} == {"ctl-2"}
    assert set(Counter(after[h] for h in moved)) == {"ctl-1", "ctl-3"}
    mine_before = my_share(HOSTS, THREE, "ctl-1", split=True).hosts
    mine_after = my_share(HOSTS, THREE - {"ctl-2"}, "ctl-1", split=True).hosts
    change = handover(mine_before, mine_after)
    assert not change.lost and change.gained == {h for h in moved if after[h] == "ctl-1"}


@pytest.mark.parametrize(
    ("live", "split", "judged", "says"),
    [
        (THREE, False, 3000, "not split"),
        (frozenset({"ctl-2", "ctl-3"}), True, 3000, "does not see itself"),
        (frozenset(), True, 3000, "does not see itself"),
        (frozenset({"ctl-1"}), True, 3000, "split over the live controllers ctl-1"),
    ],
)
def test_without_a_split_or_unseen_a_controller_judges_every_host(
    live: frozenset[str], split: bool, judged: int, says: str
) -> None:
    share = my_share(HOSTS, live, "ctl-1", split)
    assert len(share.hosts) == judged and says in share.reason


@pytest.mark.parametrize(
    ("mode", "hosts", "controllers", "active"),
    [
        ("off", 5000, 3, False),
        ("on", 10, 3, True),
        ("on", 5000, 1, False),
        ("auto", 200, 3, False),
        ("auto", 201, 3, True),
        ("auto", 5000, 1, False),
    ],
)
def test_when_the_judging_is_split(mode: str, hosts: int, controllers: int, active: bool) -> None:
    assert split_active(mode, hosts, 200, controllers) is active  # type: ignore[arg-type]
