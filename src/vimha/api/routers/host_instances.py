"""The agents' side of the compute model (issue 14): each agent watches what its host should
run (a long poll that answers at once when the host's generation moves) and reports what
its guests do (on every change, and every few seconds)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool

from vimha.api import auth
from vimha.api.compute_schemas import ObservedIn
from vimha.api.deps import runtime
from vimha.domain.errors import NotFound, Temporary
from vimha.engine.host_reports import parse_report
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/vim/v1", tags=["agents"])


def _known(rt: Runtime, host: str) -> None:
    if rt.health is None or host not in rt.health.hosts:
        raise NotFound(f"host {host} is not declared")


@router.get("/hosts/{hostId}/instances/desired")
async def desired_instances(
    hostId: str,
    generation: int = Query(
        -1, ge=-1, le=1 << 62, description="The generation the agent has; -1: none"
    ),
    wait: float = Query(0, ge=0, le=300, description="Seconds to wait for a change"),
    rt: Runtime = Depends(runtime),
    who: auth.Principal = auth.host_reader,
) -> dict[str, Any]:
    """What the host should run, with its generation. With `wait`, answers once the
    generation differs from `generation` (at once if it already does), or after `wait`."""
    auth.own_host(who, hostId)
    if rt.host_watch.closing:  # answered at once, its agent would ask again at once
        raise Temporary("this controller is shutting down: ask another one", retry_after=1)
    _known(rt, hostId)
    if wait > 0 and generation >= 0:
        await rt.host_watch.wait(hostId, generation, min(wait, rt.config.compute.watch_timeout))
    return await run_in_threadpool(rt.host_reports.desired, hostId)


@router.put("/hosts/{hostId}/instances/observed")
async def observed_instances(
    hostId: str,
    body: ObservedIn,
    rt: Runtime = Depends(runtime),
    who: auth.Principal = auth.reporter,
) -> dict[str, Any]:
    """Every guest the agent runs, what happened to them, what the node has. The answer
    says which guests to destroy (deleted, moved, older incarnations) and which no
    controller knows (alarmed; left running)."""
    auth.own_host(who, hostId)
    if rt.host_watch.closing:  # a report taken now could be cut by the drain's bound
        raise Temporary("this controller is shutting down: report to another one", retry_after=1)
    _known(rt, hostId)
    report = parse_report(hostId, body.model_dump())
    verdict = await run_in_threadpool(rt.host_reports.report, report)
    return {"destroy": verdict.destroy, "unknown": verdict.unknown, "changed": verdict.changed}
