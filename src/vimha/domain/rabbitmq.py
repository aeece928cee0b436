"""How a member of a RabbitMQ cluster (issue 5, ARCH-5: the `rabbitmq` handler) starts, and
what its cluster status says. Pure functions; `agent/rabbitmq_handler.py` acts.

A member with data knows its cluster and rejoins it by itself when started (RabbitMQ waits
for the peers it last saw). A member without data (new, or its disk replaced) is started on
its own and joins the cluster of a running member. Only when no member runs and none has data
is a new cluster formed, by the first live member in the declared order, after claiming the
formation (so that two members never form two clusters).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Member:
    """What a member publishes; `live`: its agent holds a lease (what it says is current)."""

    name: str
    live: bool
    running: bool  # its broker runs in the cluster
    has_data: bool  # its node has a database (it was in a cluster)
    nodename: str = ""  # the Erlang node name, e.g. rabbit-a@10.0.0.1


class Act(StrEnum):
    START = "START"  # start; it rejoins the cluster its data knows
    JOIN = "JOIN"  # start on its own, then join a running member's cluster
    FORM = "FORM"  # start a new cluster
    WAIT = "WAIT"


@dataclass(frozen=True, slots=True)
class Plan:
    act: Act
    reason: str
    peer: str = ""  # JOIN: the node name of the member to join


def plan(
    me: str,
    declared: Sequence[str],
    members: Mapping[str, Member],
    has_data: bool,
    claim: str | None,
) -> Plan:
    if has_data:
        return Plan(Act.START, "has data: start, it rejoins its cluster by itself")
    live = [members[n] for n in declared if n in members and members[n].live and n != me]
    running = [m for m in live if m.running and m.nodename]
    if running:
        return Plan(
            Act.JOIN, f"no data: join the cluster of {running[0].name}", running[0].nodename
        )
    if claim is not None and claim != me:
        return Plan(Act.WAIT, f"{claim} forms the cluster: join it once it runs")
    with_data = [m.name for m in live if m.has_data]
    if with_data:
        return Plan(
            Act.WAIT,
            f"no member runs; {', '.join(with_data)} has the cluster's data and starts first",
        )
    first = next((n for n in declared if n == me or n in {m.name for m in live}), me)
    if first == me:
        return Plan(Act.FORM, "no cluster yet: form it")
    return Plan(Act.WAIT, f"no cluster yet: {first} forms it")


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    running: tuple[str, ...]  # node names
    members: tuple[str, ...]  # node names of the cluster (disk nodes)
    partitions: tuple[str, ...]  # nodes that see a partition
    alarms: tuple[str, ...]  # resource alarms (memory, disk)


def parse_status(text: str) -> ClusterStatus:
    """`rabbitmq-diagnostics cluster_status --formatter json`, as a ClusterStatus; ValueError
    when it is not that. What the tool prints after the object (a warning on a loaded node:
    seen as "Extra data" in CI, which stopped members from joining) is not its answer."""
    doc, _ = json.JSONDecoder().raw_decode(text.lstrip())
    if not isinstance(doc, dict):
        raise ValueError("cluster_status: not a JSON object")
    partitions = doc.get("partitions") or {}
    return ClusterStatus(
        tuple(sorted(doc.get("running_nodes") or ())),
        tuple(sorted(doc.get("disk_nodes") or ())),
        tuple(sorted(n for n, seen in partitions.items() if seen)),
        tuple(str(a) for a in doc.get("alarms") or ()),
    )


def earlier_life(status: ClusterStatus, nodename: str) -> str | None:
    """Why a node about to join with empty data must not yet (None: it may, once forgotten
    if the cluster remembers it). A cluster that still counts the node's earlier life as
    running has not seen it go: joining now would let the fresh node answer for a member
    of the quorum queues whose log it lost (a fresh vote can elect a follower that lacks
    confirmed messages)."""
    if nodename in status.running:
        return f"the cluster still counts {nodename}'s earlier life as running"
    return None
