"""`vimha check-config`: the timing figures of a controller's config and its agents' configs,
checked against each other (`domain/timing.py`)."""

from __future__ import annotations

from pathlib import Path

from vimha.agent.main import load_agent_config
from vimha.config import Config, load
from vimha.domain.timing import Finding, FrontendTiming, LeaseTiming, Stack, check
from vimha.groupspec import HaproxyHandlerConfig


def gather(
    controller: Config,
    agents: list[Path],
    budget: float,
    client_timeout: float,
    etcd_election_timeout: float,
) -> Stack:
    leases, frontends = [], []
    for path in agents:
        agent = load_agent_config(path)
        for g in agent.groups:
            where = f"{path.name}: group {g.name}"
            leases.append(
                LeaseTiming(
                    where, g.lease.ttl, g.lease.renew, g.lease.demote_after, g.monitor_interval
                )
            )
            if isinstance(g.handler, HaproxyHandlerConfig):
                for f in g.handler.frontends:
                    frontends.append(
                        FrontendTiming(
                            f"{where}: frontend {f.group}",
                            f.inter,
                            f.fall,
                            g.handler.connect_timeout,
                        )
                    )
    c = controller.coordination
    leases.append(LeaseTiming("controller: coordination", c.ttl, c.renew, c.demote_after))
    return Stack(
        controller.heartbeat.interval,
        controller.heartbeat.misses,
        controller.fencing.delay,
        tuple(leases),
        tuple(frontends),
        etcd_election_timeout if c.url.startswith("etcd://") else None,
        budget,
        client_timeout,
    )


def check_files(
    controller: Path | None,
    agents: list[Path],
    budget: float = 1.0,
    client_timeout: float = 5.0,
    etcd_election_timeout: float = 1.0,
) -> list[Finding]:
    config = load(controller, {"auth": {"token_file": "unused"}})
    return check(gather(config, agents, budget, client_timeout, etcd_election_timeout))
