"""Maintenance sessions (issue 19, VNF-11), after OpenStack Fenix: an operator asks for a
session over some hosts (or a dry run: its plan), follows it, aborts it, says a host's
maintenance is done; each affected VNF's VNFM reads what concerns it and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.domain.clock import iso
from vimha.domain.maintenance import Action
from vimha.engine.maintenance import SessionRequest
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/vim/v1", tags=["migration and maintenance"])


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hosts: list[str] = Field(min_length=1, max_length=1000, description="In the order maintained")
    startAt: datetime | None = Field(None, description="When it starts (default: now)")
    dryRun: bool = Field(False, description="Only the plan: nothing is stored or moved")
    scaleIn: bool = Field(False, description="A SCALE_IN step: VNFMs may scale in first")
    answerWindow: float | None = Field(
        None, ge=0, le=86400, description="Seconds VNFMs have to answer each step"
    )
    hostWindow: float | None = Field(
        None,
        ge=0,
        le=7 * 86400,
        description="Seconds each host stays in maintenance once empty (default: until an "
        "operator says it is done)",
    )


class AnswerIn(BaseModel):
    """A VNFM's answer (Fenix's): the session state acknowledged or refused, and per
    instance what to do with it."""

    model_config = ConfigDict(extra="forbid")
    state: str | None = Field(
        None, description="ACK_<STATE> or NACK_<STATE> (a NACK aborts the session)"
    )
    instanceActions: dict[str, Literal["MIGRATE", "OWN_ACTION", "EVICTION"]] = Field(
        default_factory=dict,
        description="MIGRATE: vimha migrates it by its policy; OWN_ACTION: the VNFM takes "
        "it off the host itself; EVICTION: it may be stopped, then rebuilt elsewhere",
    )


@router.post(
    "/maintenance",
    status_code=201,
    responses={200: {"description": "dryRun: the plan, with its refusals; nothing stored"}},
)
async def create_session(
    body: SessionIn, rt: Runtime = Depends(runtime), who: auth.Principal = auth.admin
) -> JSONResponse:
    """A session over `hosts`, host by host. Refused (409) with every reason before
    anything moves when it would leave a VNF below its disruption budget or a hard rule
    unplaceable; `dryRun` answers the plan (200) and stores nothing."""
    ask = SessionRequest(
        tuple(body.hosts),
        body.startAt,
        body.answerWindow,
        body.hostWindow,
        body.scaleIn,
        body.dryRun,
    )
    session, plan = await run_in_threadpool(rt.maintenance.create, ask, who.name)
    if session is None:
        return JSONResponse({"dryRun": True, "plan": plan.to_dict()}, status_code=200)
    view = await run_in_threadpool(rt.maintenance.view, session)
    base = rt.config.api.base_url
    return JSONResponse(
        view, status_code=201, headers={"Location": f"{base}/vim/v1/maintenance/{session.id}"}
    )


@router.get("/maintenance")
def list_sessions(
    active: bool | None = Query(None),
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> list[dict[str, Any]]:
    return [rt.maintenance.view(s) for s in rt.store.maintenance.sessions(active)]


@router.get("/maintenance/{sessionId}")
def get_session(
    sessionId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    return rt.maintenance.view(rt.store.maintenance.session(sessionId))


@router.post("/maintenance/{sessionId}/abort", status_code=202)
async def abort_session(
    sessionId: str, rt: Runtime = Depends(runtime), who: auth.Principal = auth.admin
) -> dict[str, Any]:
    """Stops at the step it is in: what moved stays where it is, hosts go back into
    service, an eviction cut short starts the instance again in place."""
    item = await run_in_threadpool(rt.maintenance.abort, sessionId, who.name)
    return {"sessionId": sessionId, "abortedBy": who.name, "at": iso(item.at)}


@router.post("/maintenance/{sessionId}/hosts/{hostId}/done", status_code=202)
async def host_done(
    sessionId: str, hostId: str, rt: Runtime = Depends(runtime), who: auth.Principal = auth.admin
) -> dict[str, Any]:
    """The host's maintenance is finished: once it answers again it goes back into
    service and the session moves on."""
    item = await run_in_threadpool(rt.maintenance.host_done, sessionId, hostId, who.name)
    return {"sessionId": sessionId, "host": hostId, "by": who.name, "at": iso(item.at)}


@router.get("/maintenance/{sessionId}/vnfs/{vnfId}")
def vnf_view(
    sessionId: str, vnfId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    """What concerns a VNF now: its instances on the host being emptied (or on every host
    of the session before), the state, the deadline, its answers so far."""
    return rt.maintenance.vnf_view(sessionId, vnfId)


@router.put("/maintenance/{sessionId}/vnfs/{vnfId}", status_code=202)
async def answer(
    sessionId: str,
    vnfId: str,
    body: AnswerIn,
    rt: Runtime = Depends(runtime),
    who: auth.Principal = auth.operator,
) -> dict[str, Any]:
    """The VNFM's answer, taken at the session's next round (within half a second)."""
    actions = {k: Action(v) for k, v in body.instanceActions.items()}
    item = await run_in_threadpool(
        rt.maintenance.answer, sessionId, vnfId, body.state, actions, who.name
    )
    return item.to_dict()
