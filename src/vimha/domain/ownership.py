"""Which controller judges which host (issue 22, Scale).

Past one controller's capacity the hosts are split across the controllers alive in the
coordination backend: each host is judged (its planes classified, its BMC read, fenced,
alarmed) by one owner, chosen by rendezvous hashing (highest random weight: Thaler and
Ravishankar, 1998). Every controller computes the same owners from the same set of live
controllers, with no message between them; when a controller leaves, only its hosts move,
each to the controller that ranks next for it, and the others keep theirs.

A controller that does not see itself among the live ones (its lease lost, the backend out of
reach) judges every host, as without a split: judging twice raises an alarm twice (the store
keeps one) and fences twice (a BMC powers off an off host), where judging none would miss a
failure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

SplitMode = Literal["off", "on", "auto"]


def weight(controller: str, host: str) -> int:
    """The host's weight at the controller: a stable hash, the same on every controller."""
    digest = hashlib.blake2b(f"{controller}\0{host}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(host: str, controllers: Iterable[str]) -> str | None:
    """The controller that judges `host` among `controllers` (None if there is none)."""
    best: tuple[int, str] | None = None
    for ctl in controllers:
        key = (weight(ctl, host), ctl)
        if best is None or key > best:
            best = key
    return best[1] if best is not None else None


def split_active(mode: SplitMode, hosts: int, auto_above: int, controllers: int) -> bool:
    """Whether the judging is split: `on`, or `auto` with more hosts than one controller
    judges (`auto_above`), and in either case more than one controller configured."""
    if controllers < 2 or mode == "off":
        return False
    return mode == "on" or hosts > auto_above


@dataclass(frozen=True, slots=True)
class Share:
    """The hosts a controller judges, and why (the log line when it changes)."""

    hosts: frozenset[str]
    reason: str


def my_share(hosts: Iterable[str], live: frozenset[str], me: str, split: bool) -> Share:
    """The hosts `me` judges, given the controllers seen alive in coordination."""
    every = frozenset(hosts)
    if not split:
        return Share(every, f"{me} judges every host ({len(every)}): the judging is not split")
    if me not in live:
        return Share(
            every,
            f"{me} does not see itself among the live controllers ({', '.join(sorted(live))}"
            f"): judging every host ({len(every)}) until it does",
        )
    mine = frozenset(h for h in every if owner(h, live) == me)
    return Share(
        mine,
        f"{me} judges {len(mine)} of {len(every)} hosts, split over the live controllers "
        f"{', '.join(sorted(live))}",
    )


@dataclass(frozen=True, slots=True)
class Handover:
    """What changed between two shares: hosts taken over, hosts handed to another."""

    gained: frozenset[str]
    lost: frozenset[str]


def handover(before: frozenset[str], after: frozenset[str]) -> Handover:
    return Handover(after - before, before - after)
