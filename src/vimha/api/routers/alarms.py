"""SOL 003 clause 7.4.2-7.4.3: alarms, plus each alarm's history (FAULT-7)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from vimha.api import auth
from vimha.api.deps import FILTER, MARKER, runtime, selector
from vimha.api.problems import ApiProblem
from vimha.api.schemas import HistoryEventOut, ManagedObject
from vimha.api.sol import decode_marker, mapped, page
from vimha.api.sol_schemas import Alarm, AlarmModifications
from vimha.domain.alarms import object_view
from vimha.domain.clock import iso
from vimha.domain.errors import NotFound
from vimha.domain.filters import Filter, SimpleFilter, known_paths, parse_filter
from vimha.domain.selectors import Selector
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/vimfm/v1", tags=["alarms"])

ALARM_PATHS = known_paths(
    [
        "id",
        "managedObjectId",
        "rootCauseFaultyResource/faultyResource/vimConnectionId",
        "rootCauseFaultyResource/faultyResource/resourceId",
        "rootCauseFaultyResource/faultyResource/vimLevelResourceType",
        "rootCauseFaultyResource/faultyResourceType",
        "alarmRaisedTime",
        "alarmChangedTime",
        "alarmClearedTime",
        "alarmAcknowledgedTime",
        "ackState",
        "perceivedSeverity",
        "eventTime",
        "eventType",
        "faultType",
        "probableCause",
        "isRootCause",
        "correlatedAlarmIds",
        "faultDetails",
        "location/*",
    ]
)
DEFAULT_EXCLUDED: frozenset[str] = frozenset()
ACTIVE_ONLY = SimpleFilter("neq", ("perceivedSeverity",), ("CLEARED",))
MERGE_PATCH = "application/merge-patch+json"


@router.get("/alarms", response_model=list[Alarm])
def list_alarms(
    request: Request,
    filter: str | None = FILTER,
    nextpage_opaque_marker: str | None = MARKER,
    select: Selector = Depends(selector),
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> JSONResponse:
    """Alarms, oldest first. Cleared alarms are listed only when the filter names
    `perceivedSeverity` or `alarmClearedTime`, e.g. `(eq,perceivedSeverity,CLEARED)`."""
    flt = parse_filter(filter, ALARM_PATHS)
    if not (flt.mentions("perceivedSeverity") or flt.mentions("alarmClearedTime")):
        flt = Filter((*flt.terms, ACTIVE_ONLY))
    after = decode_marker(nextpage_opaque_marker)
    base = rt.config.api.base_url
    items = mapped(rt.store.iter_alarms(after, 500), lambda a: a.to_sol(base))
    return page(items, flt, select, DEFAULT_EXCLUDED, rt.config.api.page_size, request)


@router.get("/alarms/{alarmId}", response_model=Alarm, response_model_by_alias=True)
def get_alarm(
    alarmId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> JSONResponse:
    alarm = rt.store.get_alarm(alarmId)
    return JSONResponse(alarm.to_sol(rt.config.api.base_url), headers={"ETag": alarm.etag})


@router.patch(
    "/alarms/{alarmId}",
    response_model=AlarmModifications,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {MERGE_PATCH: {"schema": AlarmModifications.model_json_schema()}},
        }
    },
)
async def modify_alarm(
    alarmId: str,
    request: Request,
    if_match: str | None = Header(None),
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.operator,
) -> JSONResponse:
    """Acknowledge or un-acknowledge (JSON merge patch); 409 if already in that state."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != MERGE_PATCH:
        raise ApiProblem(415, f"content type must be {MERGE_PATCH}, not {ctype or 'missing'}")
    try:
        mods = AlarmModifications.model_validate(json.loads(await request.body()))
    except (ValueError, ValidationError) as exc:
        raise ApiProblem(400, f'body must be {{"ackState": ...}}: {exc}'.splitlines()[0]) from None
    alarm = await run_in_threadpool(rt.faults.acknowledge, alarmId, mods.ackState, if_match)
    return JSONResponse({"ackState": alarm.ack_state.value}, headers={"ETag": alarm.etag})


@router.get("/alarms/{alarmId}/history", response_model=list[HistoryEventOut])
def alarm_history(
    alarmId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> list[dict[str, object]]:
    """Every change of the alarm: raised, updated, acknowledged, cleared, with the reason."""
    return [
        {
            "seq": h.seq,
            "kind": h.kind,
            "at": iso(h.at),
            "perceivedSeverity": h.perceived_severity,
            "ackState": h.ack_state,
            "reason": h.reason,
        }
        for h in rt.store.alarm_history(alarmId)
    ]


objects_router = APIRouter(prefix="/vim/v1", tags=["alarms"])


@objects_router.get("/objects/{objectId}", response_model=ManagedObject)
def get_object(
    objectId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> JSONResponse:
    """A managed object (host, service, instance, link ...) as its alarms show it: the
    target of each alarm's `_links.objectInstance`."""
    view = object_view(objectId, rt.store.alarms_of_object(objectId))
    if view is None:
        raise NotFound(f"no alarm has named object {objectId}")
    base = rt.config.api.base_url
    query = urlencode({"filter": f"(eq,managedObjectId,{_quote(objectId)})"})
    return JSONResponse(
        {
            "id": view.id,
            "location": view.location.as_dict(),
            "vimLevelResourceTypes": list(view.resource_types),
            "activeAlarmIds": list(view.active_alarm_ids),
            "highestActiveSeverity": view.highest_active_severity.value,
            "lastEventTime": iso(view.last_event_time),
            "_links": {
                "self": {"href": f"{base}/vim/v1/objects/{objectId}"},
                "alarms": {"href": f"{base}/vimfm/v1/alarms?{query}"},
            },
        }
    )


def _quote(value: str) -> str:
    """A SOL 013 filter value, quoted when it holds a special character."""
    if any(ch in value for ch in ",)('"):
        return "'" + value.replace("'", "''") + "'"
    return value
