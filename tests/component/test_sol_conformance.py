"""SOL 003 / SOL 013 conformance of the fault-management API.

The OpenAPI document vimha publishes is checked against SOL 003's data types (mandatory
attributes required, optional ones absent rather than null); every response of the FM API,
on real alarms and subscriptions, is checked against that document with schemathesis'
response checks; the notifications a real consumer receives are checked against the schemas
the document publishes for them; unknown query parameters are refused (SOL 013 clause 6.4).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import jsonschema_rs
import schemathesis
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.component.conftest import Api
from tests.support.consumer import ConsumerProcess
from vimha.domain import notifications
from vimha.domain.alarms import Location
from vimha.domain.classification import Classification, FailureKind, HealthStatus

PROBLEM = "application/problem+json"
CHECKS = [response_schema_conformance, content_type_conformance, status_code_conformance]

# SOL 003 (clause 7.5 and 4.4) and SOL 013 (ProblemDetails, ApiVersionInformation): the
# mandatory attributes of each data type the FM API uses; every other attribute is optional.
SOL003_REQUIRED = {
    "Alarm": {
        "id",
        "managedObjectId",
        "alarmRaisedTime",
        "ackState",
        "perceivedSeverity",
        "eventTime",
        "eventType",
        "probableCause",
        "isRootCause",
        "_links",
    },
    "AlarmLinks": {"self"},
    "FaultyResourceInfo": {"faultyResource", "faultyResourceType"},
    "ResourceHandle": {"resourceId"},
    "Link": {"href"},
    "AlarmModifications": {"ackState"},
    "FmSubscription": {"id", "callbackUri", "_links"},
    "FmSubscriptionRequest": {"callbackUri"},
    "FmNotificationsFilter": set(),
    "AlarmNotification": {
        "id",
        "notificationType",
        "subscriptionId",
        "timeStamp",
        "alarm",
        "_links",
    },
    "AlarmClearedNotification": {
        "id",
        "notificationType",
        "subscriptionId",
        "timeStamp",
        "alarmId",
        "alarmClearedTime",
        "_links",
    },
    "AlarmListRebuiltNotification": {
        "id",
        "notificationType",
        "subscriptionId",
        "timeStamp",
        "_links",
    },
    "HostHealthChangeNotification": {
        "id",
        "notificationType",
        "subscriptionId",
        "timeStamp",
        "hostId",
        "healthStatus",
        "_links",
    },
    "ProblemDetails": {"status", "detail"},
    "ApiVersionInformation": {"uriPrefix", "apiVersions"},
    "ApiVersion": {"version"},
}
DATE_TIMES = {
    "Alarm": ("alarmRaisedTime", "alarmChangedTime", "alarmClearedTime", "alarmAcknowledgedTime"),
    "AlarmClearedNotification": ("timeStamp", "alarmClearedTime"),
    "AlarmNotification": ("timeStamp",),
}


def _nullable(node: Any, where: str) -> list[str]:
    """Where a schema admits null."""
    found: list[str] = []
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "null" or (isinstance(kind, list) and "null" in kind):
            found.append(where)
        if node.get("nullable") is True:
            found.append(where)
        for key, value in node.items():
            found += _nullable(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _nullable(value, f"{where}/{i}")
    return found


def _nulls(doc: Any, where: str = "") -> list[str]:
    """Where a JSON document carries null."""
    if doc is None:
        return [where or "/"]
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in _nulls(v, f"{where}/{k}")]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in _nulls(v, f"{where}/{i}")]
    return []


def _component(doc: dict[str, Any], name: str) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for(
        {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    )


def test_the_published_document_says_what_sol_003_says(api: Api) -> None:
    doc = api.app.openapi()
    schemas = doc["components"]["schemas"]
    for name, required in SOL003_REQUIRED.items():
        assert name in schemas, f"{name} is not published"
        assert set(schemas[name].get("required", ())) == required, name
        assert _nullable(schemas[name], name) == [], "optional attributes are absent, not null"
    for name, attributes in DATE_TIMES.items():
        for attribute in attributes:
            assert schemas[name]["properties"][attribute].get("format") == "date-time"
    alarms = doc["paths"]["/vimfm/v1/alarms"]["get"]["responses"]["200"]
    items = alarms["content"]["application/json"]["schema"]["items"]
    assert items == {"$ref": "#/components/schemas/Alarm"}, "GET /alarms answers Alarms"
    callbacks = doc["paths"]["/vimfm/v1/subscriptions"]["post"]["callbacks"]
    published = {
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        for cb in callbacks.values()
        for item in cb.values()
        for op in item.values()
    }
    assert published == {
        "AlarmNotification",
        "AlarmClearedNotification",
        "AlarmListRebuiltNotification",
        "HostHealthChangeNotification",
    }


async def test_every_fm_response_matches_the_published_document(
    api: Api, consumer: ConsumerProcess
) -> None:
    doc = api.app.openapi()
    schema = schemathesis.openapi.from_dict(doc)

    def check(path: str, method: str, r: httpx.Response, **params: Any) -> Any:
        case = schema[path][method].Case(**params)
        case.validate_response(r, checks=CHECKS)
        body = r.json() if r.content else None
        assert _nulls(body) == [], f"{method} {path}: null attributes {_nulls(body)}"
        return body

    h = api.headers()
    for path in ("/vimfm/api_versions", "/vimfm/v1/api_versions"):
        check(path, "GET", await api.client.get(path))
    sub = {"callbackUri": consumer.url}
    r = await api.client.post("/vimfm/v1/subscriptions", json=sub, headers=h)
    created = check("/vimfm/v1/subscriptions", "POST", r)
    assert "filter" not in created, "a subscription without a filter has none"
    r = await api.client.post("/vimfm/v1/subscriptions", json=sub, headers=h)
    assert r.status_code == 303
    filtered = {"callbackUri": consumer.url, "filter": {"perceivedSeverities": ["CRITICAL"]}}
    r = await api.client.post("/vimfm/v1/subscriptions", json=filtered, headers=h)
    check("/vimfm/v1/subscriptions", "POST", r)
    check(
        "/vimfm/v1/subscriptions", "GET", await api.client.get("/vimfm/v1/subscriptions", headers=h)
    )
    path = "/vimfm/v1/subscriptions/{subscriptionId}"
    r = await api.client.get(f"/vimfm/v1/subscriptions/{created['id']}", headers=h)
    check(path, "GET", r, path_parameters={"subscriptionId": created["id"]})

    raised = await api.raise_alarm("cmp-1", "MAJOR", faultType="F1")  # raised only
    changed = await api.raise_alarm("cmp-2", "MINOR", faultType="F2")
    await api.raise_alarm("cmp-2", "CRITICAL", faultType="F2")
    r = await api.client.get(f"/vimfm/v1/alarms/{raised}", headers=h)
    alarm = check("/vimfm/v1/alarms/{alarmId}", "GET", r, path_parameters={"alarmId": raised})
    assert not {"alarmChangedTime", "alarmClearedTime", "alarmAcknowledgedTime"} & set(alarm)
    r = await api.client.patch(
        f"/vimfm/v1/alarms/{changed}",
        content=b'{"ackState": "ACKNOWLEDGED"}',
        headers={**h, "Content-Type": "application/merge-patch+json"},
    )
    check("/vimfm/v1/alarms/{alarmId}", "PATCH", r, path_parameters={"alarmId": changed})
    await api.raise_alarm("cmp-2", "CLEARED", faultType="F2")
    r = await api.client.get(f"/vimfm/v1/alarms/{changed}", headers=h)
    alarm = check("/vimfm/v1/alarms/{alarmId}", "GET", r, path_parameters={"alarmId": changed})
    assert {"alarmChangedTime", "alarmClearedTime", "alarmAcknowledgedTime"} <= set(alarm)
    check("/vimfm/v1/alarms", "GET", await api.client.get("/vimfm/v1/alarms", headers=h))
    query = {"filter": "(eq,perceivedSeverity,CLEARED)"}
    r = await api.client.get("/vimfm/v1/alarms", params=query, headers=h)
    assert [a["id"] for a in check("/vimfm/v1/alarms", "GET", r, query=query)] == [changed]
    r = await api.client.get("/vimfm/v1/alarms/nope", headers=h)
    check("/vimfm/v1/alarms/{alarmId}", "GET", r, path_parameters={"alarmId": "nope"})
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM

    # Two raised, one updated (an acknowledgement notifies nothing), one cleared.
    mine = created["id"]
    got = await consumer.until(lambda n: sum(x["subscriptionId"] == mine for x in n) >= 4)
    kinds = [n["notificationType"] for n in got if n["subscriptionId"] == mine]
    assert kinds == ["AlarmNotification"] * 3 + ["AlarmClearedNotification"]
    for note in got:
        errors = [str(e) for e in _component(doc, note["notificationType"]).iter_errors(note)]
        assert errors == [], (note, errors)
        assert _nulls(note) == [], note


def test_notifications_built_without_a_request_match_the_published_document(api: Api) -> None:
    doc = api.app.openapi()
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    location = Location((("zone", "z1"), ("rack", "r1"), ("host", "cmp-1")))
    base = "http://vim.example"
    first_sight = notifications.host_health_change(
        "cmp-1", None, Classification(HealthStatus.UP, None, "heard"), location, base
    )
    down = notifications.host_health_change(
        "cmp-1",
        Classification(HealthStatus.UP, None, "heard"),
        Classification(HealthStatus.DOWN, FailureKind.HOST_UNREACHABLE, "silent"),
        location,
        base,
    )
    rebuilt = notifications.alarm_list_rebuilt(base)
    for kind, payload, _ in (first_sight, down, rebuilt):
        pieces = notifications.payload_json(payload, now)
        note = json.loads(notifications.body_bytes("d-1", "s-1", kind, pieces, base))
        errors = [str(e) for e in _component(doc, kind.value).iter_errors(note)]
        assert errors == [] and _nulls(note) == [], (note, errors)
        assert note == notifications.body("d-1", "s-1", kind, payload, now, base)
    assert "previousHealthStatus" not in first_sight[1] and "failureKind" not in first_sight[1]


async def test_unknown_query_parameters_are_refused(api: Api) -> None:
    """SOL 013 clause 6.4: 400 for incorrect query parameters, with ProblemDetails."""
    h = api.headers()
    r = await api.client.get("/vimfm/v1/alarms", params={"badFilter": "1"}, headers=h)
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
    assert r.json()["status"] == 400 and "badFilter" in r.json()["detail"]
    a = await api.raise_alarm("cmp-1")
    for path in (
        "/vimfm/api_versions",
        "/vimfm/v1/api_versions",
        f"/vimfm/v1/alarms/{a}",
        "/vimfm/v1/subscriptions",
        "/vim/v1/notifications",
    ):
        r = await api.client.get(path, params={"nonsense": "x"}, headers=h)
        assert r.status_code == 400 and "nonsense" in r.json()["detail"], path
    for params in (
        {"filter": "(eq,managedObjectId,cmp-1)"},
        {"exclude_fields": "faultDetails"},
        {"nextpage_opaque_marker": ""},
    ):
        r = await api.client.get("/vimfm/v1/alarms", params=params, headers=h)
        assert r.status_code == 200, (params, r.text)
