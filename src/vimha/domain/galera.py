"""How a member of a MariaDB Galera cluster (issue 5, ARCH-5: `mariadb` handler in `cluster`
mode) starts: join the cluster, bootstrap a new one, or wait. Pure functions of what every
member publishes; `agent/galera_handler.py` acts.

Galera commits a transaction on every member of the primary component before the client
hears of it, so after all members stopped (a power cut, say) the member with the highest
committed sequence number has every committed transaction, and only it may bootstrap the
new cluster: one started from any other would lose what the others committed after it left.
Hence:

- a member that sees another member in the primary component (or joining it, or claiming
  the bootstrap) joins: Galera brings it up to date by IST, or by a full SST; but not while
  that component still counts more members than run (its own previous run, killed a moment
  ago, not evicted yet): a node that rejoins at the address of a member the others have not
  let go of yet keeps them from agreeing on a view, and all fall to non-primary (seen: 10-16
  s without writes). It waits until they have (bounded: `impatient`);
- a member that left the cluster last and cleanly (`safe_to_bootstrap`) has everything: it
  may bootstrap at once;
- otherwise a bootstrap waits until every declared member has reported its position (its
  agent is alive and says where its data stands): the highest sequence number, then the
  first name, bootstraps; the others join it. A member that cannot report (its node is
  gone) blocks the bootstrap: the operator removes it from the declaration when it is lost
  for good, rather than vimha guessing and losing transactions.
- positions are compared only within one history (the cluster's state UUID): members whose
  data belong to different histories (a cluster bootstrapped apart from the others) are not
  comparable, and a bootstrap from either could discard what the other committed; none
  bootstraps, the operator decides which history to keep (docs/operations.md).

A running member cut off from the majority stays up in a non-primary component (it refuses
queries) and merges back on its own when the network heals; when every member is such a
minority (all partitioned from each other, or the others stopped), the same rule picks the
one that turns its component into the primary (`pc.bootstrap`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    PRIMARY = "primary"  # running, in the primary component (synced or joining it)
    NON_PRIMARY = "non-primary"  # running, cut off from the majority: serves nothing
    STOPPED = "stopped"  # not running; its position was read from its data
    DOWN = "down"  # not running, its position not read yet: not known


@dataclass(frozen=True, slots=True)
class Member:
    """What a member publishes; `live`: its agent holds a lease (what it says is current)."""

    name: str
    live: bool
    state: State
    seqno: int = -1  # last committed transaction; -1 when it has no data yet
    safe: bool = False  # left the cluster last and cleanly: has every transaction
    history: str = ""  # the state UUID its seqno counts in; "" when it has no data yet
    size: int = 0  # running: how many members its component (primary or not) counts


class Act(StrEnum):
    JOIN = "JOIN"
    BOOTSTRAP = "BOOTSTRAP"
    WAIT = "WAIT"


@dataclass(frozen=True, slots=True)
class Plan:
    act: Act
    reason: str
    evicting: bool = False  # it waits for the primary component to let its previous run go


def plan(
    me: str,
    declared: Sequence[str],
    members: Mapping[str, Member],
    claim: str | None,
    impatient: bool = False,
) -> Plan:
    """What member `me` does now. `claim`: the member that claimed the bootstrap of a new
    cluster and is not yet in it (None when nobody did). `impatient`: it has waited long
    enough for the primary component to let its previous run go; it joins all the same."""
    others = [members[n] for n in declared if n != me and n in members and members[n].live]
    running = [m for m in others if m.state is State.PRIMARY]
    if running:
        counted = max(m.size for m in running)
        if counted > len(running) and not impatient:
            return Plan(
                Act.WAIT,
                f"the primary component counts {counted} members but {len(running)} run: "
                "waiting for it to let go of this member's previous run",
                evicting=True,
            )
        return Plan(Act.JOIN, f"{running[0].name} is in the primary component: join it")
    if claim is not None and claim != me:
        return Plan(Act.JOIN, f"{claim} bootstraps the cluster: join it")
    known = {
        n: m
        for n in declared
        if (m := members.get(n)) is not None and m.live and m.state is not State.DOWN
    }
    safe = sorted(n for n, m in known.items() if m.safe and m.state is State.STOPPED)
    if safe:
        if safe[0] == me:
            return Plan(Act.BOOTSTRAP, "left the cluster last and cleanly: bootstrap it")
        return Plan(Act.WAIT, f"{safe[0]} left the cluster last and cleanly: it bootstraps")
    missing = [n for n in declared if n not in known]
    if missing:
        return Plan(
            Act.WAIT,
            f"no primary component; waiting for {', '.join(missing)} to report its position "
            "(a bootstrap without it could lose committed transactions)",
        )
    histories = {m.history for m in known.values() if m.history and m.seqno >= 0}
    if len(histories) > 1:
        held = ", ".join(f"{n}: {m.history}:{m.seqno}" for n, m in sorted(known.items()))
        return Plan(
            Act.WAIT,
            f"no primary component; the members' data belong to different histories ({held}): "
            "a bootstrap from either could lose what the other committed; the operator "
            "decides which to keep",
        )
    # the most advanced; of equals, one in the largest running component (a member cut off
    # alone would make a primary component that no client reaches), then by name
    first = sorted(known.values(), key=lambda m: (-m.seqno, -m.size, m.name))[0]
    if first.name == me:
        return Plan(
            Act.BOOTSTRAP,
            f"no primary component; highest position of all members ({first.seqno}): bootstrap",
        )
    return Plan(
        Act.WAIT, f"no primary component; {first.name} has the highest position: it bootstraps"
    )


def parse_grastate(text: str) -> tuple[str, int, bool]:
    """(uuid, seqno, safe_to_bootstrap) from a grastate.dat."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        seqno = int(fields.get("seqno", "-1"))
    except ValueError:
        seqno = -1
    return fields.get("uuid", ""), seqno, fields.get("safe_to_bootstrap", "0") == "1"


def recovered_position(log: str) -> tuple[str, int] | None:
    """(uuid, seqno) from what `mariadbd --wsrep-recover` logs, None when it said nothing."""
    found = None
    for line in log.splitlines():
        _, sep, rest = line.partition("WSREP: Recovered position:")
        if sep:
            uuid, _, seqno = rest.strip().rpartition(":")
            try:
                found = (uuid, int(seqno))
            except ValueError:
                continue
    return found
