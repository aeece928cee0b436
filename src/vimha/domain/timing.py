"""Timing invariants across the stack (issue 4, `vimha check-config`): each layer's timers
must nest, or a switch-over is slower than promised, or unsafe. Pure: the CLI gathers the
figures from the controller's and the agents' configs.

- heartbeat interval x misses (the controllers' node-failure detection) < every group's
  lease TTL: a dead node is found, fenced and its roles freed before its lease would lapse;
- a lease's renew < demote_after < ttl (the holder demotes before its lease can lapse), and
  on etcd ttl >= 1.5 x the election timeout (etcd raises a shorter TTL to that minimum);
- local detection (monitor interval) + the standby's settle round + the LB's reaction
  within the switch-over budget;
- HAProxy's check inter x fall within the budget (a dead server it alone can see);
- HAProxy's connect timeout x (retries + 1) below the clients' timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Level(StrEnum):
    ERROR = "ERROR"  # unsafe or breaks a promise: refuse
    WARNING = "WARNING"  # works, slower than it could


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    where: str
    message: str


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    where: str
    ttl: float
    renew: float
    demote_after: float
    monitor_interval: float = 0.1


@dataclass(frozen=True, slots=True)
class FrontendTiming:
    where: str
    inter: float
    fall: int
    connect_timeout: float
    retries: int = 3


@dataclass(frozen=True, slots=True)
class Stack:
    heartbeat_interval: float
    heartbeat_misses: int
    fencing_delay: float
    leases: tuple[LeaseTiming, ...] = ()
    frontends: tuple[FrontendTiming, ...] = ()
    etcd_election_timeout: float | None = None  # None: not on etcd
    switchover_budget: float = 1.0
    client_timeout: float = 5.0


def check(stack: Stack) -> list[Finding]:
    out: list[Finding] = []
    detect = stack.heartbeat_interval * stack.heartbeat_misses
    for lease in stack.leases:
        if not 0 < lease.renew < lease.demote_after < lease.ttl:
            out.append(
                Finding(
                    Level.ERROR,
                    lease.where,
                    f"need renew ({lease.renew:g}s) < demote_after ({lease.demote_after:g}s) < "
                    f"ttl ({lease.ttl:g}s): a holder must step down before its lease can lapse",
                )
            )
        if detect >= lease.ttl:
            out.append(
                Finding(
                    Level.ERROR,
                    lease.where,
                    f"heartbeat interval x misses ({detect:g}s) >= lease ttl ({lease.ttl:g}s): "
                    "a dead node's lease lapses before the controllers even notice it",
                )
            )
        if stack.etcd_election_timeout is not None:
            floor = 1.5 * stack.etcd_election_timeout
            if lease.ttl < floor:
                out.append(
                    Finding(
                        Level.WARNING,
                        lease.where,
                        f"lease ttl {lease.ttl:g}s < 1.5 x etcd election timeout ({floor:g}s): "
                        f"etcd raises it to {floor:g}s; lower --election-timeout or raise ttl",
                    )
                )
        # detection (one monitor round), the standby's settle round (1.5), and a fixed 0.2 s
        # for resigning, promoting and the LB's runtime API
        local = 2.5 * lease.monitor_interval + 0.2
        if local > stack.switchover_budget:
            out.append(
                Finding(
                    Level.ERROR,
                    lease.where,
                    f"monitor interval {lease.monitor_interval:g}s: detection, settle round and "
                    f"promotion ({local:.2f}s) exceed the switch-over budget "
                    f"({stack.switchover_budget:g}s)",
                )
            )
    for f in stack.frontends:
        seen = f.inter * f.fall
        if seen > stack.switchover_budget:
            out.append(
                Finding(
                    Level.WARNING,
                    f.where,
                    f"HAProxy check inter x fall ({seen:g}s) > switch-over budget "
                    f"({stack.switchover_budget:g}s): a server that only HAProxy sees dead keeps "
                    "taking requests longer than the budget",
                )
            )
        worst = f.connect_timeout * (f.retries + 1)
        if worst >= stack.client_timeout:
            out.append(
                Finding(
                    Level.ERROR,
                    f.where,
                    f"connect timeout x (retries + 1) ({worst:g}s) >= client timeout "
                    f"({stack.client_timeout:g}s): clients give up before HAProxy retried "
                    "on another server",
                )
            )
    if stack.fencing_delay + detect > 5.0:
        out.append(
            Finding(
                Level.WARNING,
                "fencing",
                f"detection ({detect:g}s) + fencing delay ({stack.fencing_delay:g}s) > 5s: a "
                "node failure's switch-over misses the 5 s requirement",
            )
        )
    return out
