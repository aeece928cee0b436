"""SOL 003 clause 7.4.4-7.4.5: subscriptions to alarm notifications (FAULT-6)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from vimha.api import auth
from vimha.api.deps import FILTER, MARKER, runtime, selector
from vimha.api.problems import ApiProblem
from vimha.api.sol import decode_marker, page
from vimha.api.sol_schemas import (
    AlarmClearedNotification,
    AlarmListRebuiltNotification,
    AlarmNotification,
    FmSubscription,
    FmSubscriptionRequest,
    HostHealthChangeNotification,
    SubscriptionAuthentication,
)
from vimha.domain.errors import DeliveryFailed
from vimha.domain.filters import known_paths, parse_filter
from vimha.domain.selectors import Selector
from vimha.domain.subscriptions import Authentication, AuthType, Subscription, SubscriptionFilter
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/vimfm/v1", tags=["subscriptions"])

SUB_PATHS = known_paths(
    [
        "id",
        "callbackUri",
        "filter/notificationTypes",
        "filter/faultyResourceTypes",
        "filter/perceivedSeverities",
        "filter/eventTypes",
        "filter/probableCauses",
        "filter/managedObjectIds",
        "filter/locationPrefix",
    ]
)


def render(sub: Subscription, base_url: str) -> dict[str, Any]:
    """SOL 003 FmSubscription; `filter` only when the subscription has one."""
    doc: dict[str, Any] = {"id": sub.id}
    flt = {k: v for k, v in sub.filter.to_dict().items() if v}
    if flt:
        doc["filter"] = flt
    doc["callbackUri"] = sub.callback_uri
    doc["_links"] = {"self": {"href": f"{base_url}/vimfm/v1/subscriptions/{sub.id}"}}
    return doc


# What vimha POSTs to a subscriber's callbackUri, published as callbacks of POST /subscriptions
# (SOL 003 clause 7.4.6); the subscriber answers 204.
notifications = APIRouter()
CALLBACK = "{$request.body#/callbackUri}"


@notifications.post(CALLBACK, status_code=204, name="AlarmNotification")
def alarm_notification(body: AlarmNotification) -> None:
    """An alarm was raised or changed (severity, acknowledgement)."""


@notifications.post(CALLBACK, status_code=204, name="AlarmClearedNotification")
def alarm_cleared_notification(body: AlarmClearedNotification) -> None:
    """An alarm was cleared."""


@notifications.post(CALLBACK, status_code=204, name="AlarmListRebuiltNotification")
def alarm_list_rebuilt_notification(body: AlarmListRebuiltNotification) -> None:
    """The alarm list was rebuilt (the controllers started): read it again."""


@notifications.post(CALLBACK, status_code=204, name="HostHealthChangeNotification")
def host_health_change_notification(body: HostHealthChangeNotification) -> None:
    """A host's health changed (vimha's own notification type)."""


def _authentication(body: SubscriptionAuthentication | None) -> Authentication | None:
    if body is None:
        return None
    kind = body.authType[0]
    if kind is AuthType.BASIC:
        if body.paramsBasic is None:
            raise ApiProblem(400, "authentication: BASIC needs paramsBasic")
        return Authentication(kind, body.paramsBasic.userName, body.paramsBasic.password)
    params = body.paramsOauth2ClientCredentials
    if params is None:
        raise ApiProblem(
            400, "authentication: OAUTH2_CLIENT_CREDENTIALS needs paramsOauth2ClientCredentials"
        )
    return Authentication(
        kind,
        client_id=params.clientId,
        client_password=params.clientPassword,
        token_endpoint=str(params.tokenEndpoint),
    )


@router.post(
    "/subscriptions",
    status_code=201,
    response_model=FmSubscription,
    callbacks=notifications.routes,
    responses={
        303: {"description": "An identical subscription exists (see Location)"},
        422: {"description": "The callback URI did not answer the test GET with 204"},
    },
)
async def subscribe(
    body: FmSubscriptionRequest,
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.operator,
) -> Response:
    """Subscribe a consumer. The callback is first tested with GET (expects 204)."""
    f = body.filter
    flt = SubscriptionFilter(
        notification_types=tuple(f.notificationTypes or ()) if f else (),
        faulty_resource_types=tuple(t.value for t in (f.faultyResourceTypes or ())) if f else (),
        perceived_severities=tuple(s.value for s in (f.perceivedSeverities or ())) if f else (),
        event_types=tuple(e.value for e in (f.eventTypes or ())) if f else (),
        probable_causes=tuple(f.probableCauses or ()) if f else (),
        managed_object_ids=tuple(f.managedObjectIds or ()) if f else (),
        location_prefix=(f.locationPrefix or "").strip("/") if f else "",
    )
    authentication = _authentication(body.authentication)
    uri = str(body.callbackUri)
    try:
        await rt.notifier.test(uri, authentication)
    except DeliveryFailed as exc:
        raise ApiProblem(422, f"callbackUri {uri} failed the test: {exc.detail}") from None
    sub = Subscription(str(uuid.uuid4()), uri, flt, authentication, rt.clock.now())
    stored = await run_in_threadpool(rt.store.add_subscription, sub)
    base = rt.config.api.base_url
    location = f"{base}/vimfm/v1/subscriptions/{stored.id}"
    if stored.id != sub.id:
        return Response(status_code=303, headers={"Location": location})
    rt.subscriptions.put(stored)
    await rt.announce("subscriptions")
    return JSONResponse(render(stored, base), status_code=201, headers={"Location": location})


@router.get("/subscriptions", response_model=list[FmSubscription])
def list_subscriptions(
    request: Request,
    filter: str | None = FILTER,
    nextpage_opaque_marker: str | None = MARKER,
    select: Selector = Depends(selector),
    rt: Runtime = Depends(runtime),
    _: auth.Principal = auth.reader,
) -> JSONResponse:
    flt = parse_filter(filter, SUB_PATHS)
    after = decode_marker(nextpage_opaque_marker)
    base = rt.config.api.base_url
    subs = rt.store.list_subscriptions()
    items = ((i, render(s, base)) for i, s in enumerate(subs, start=1) if i > after)
    return page(items, flt, select, frozenset(), rt.config.api.page_size, request)


@router.get("/subscriptions/{subscriptionId}", response_model=FmSubscription)
def get_subscription(
    subscriptionId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> JSONResponse:
    return JSONResponse(render(rt.store.get_subscription(subscriptionId), rt.config.api.base_url))


@router.delete("/subscriptions/{subscriptionId}", status_code=204, response_class=Response)
async def unsubscribe(
    subscriptionId: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> Response:
    """Delete the subscription and drop its undelivered notifications."""
    await run_in_threadpool(rt.store.delete_subscription, subscriptionId)
    rt.subscriptions.drop(subscriptionId)
    await rt.announce("subscriptions")
    return Response(status_code=204)
