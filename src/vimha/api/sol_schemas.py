"""The data types of the fault-management API as ETSI NFV-SOL 003 (clauses 4.4 and 7.5) and
SOL 013 define them, for the published OpenAPI document: the resources, the request bodies
and the notifications sent to subscribers (documented as callbacks of POST /subscriptions).

An attribute that SOL 003 makes optional is not required here, and it is absent when it has
no value, never null (SOL 013 clause 4.4): every model below publishes its optional
attributes without a `null` alternative, and the API leaves them out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from vimha.domain.alarms import AckState, EventType, FaultyResourceType, Severity
from vimha.domain.classification import FailureKind, HealthStatus
from vimha.domain.subscriptions import AuthType, NotificationType

DateTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
_NULL = {"type": "null"}


def _absent_not_null(schema: dict[str, Any]) -> None:
    """An attribute that is not required loses its `null` alternative (and null default)."""
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        if name in required:
            continue
        alternatives = prop.get("anyOf")
        if alternatives and _NULL in alternatives:
            rest = [a for a in alternatives if a != _NULL]
            del prop["anyOf"]
            if len(rest) == 1:
                prop.update(rest[0])
            else:
                prop["anyOf"] = rest
        if "default" in prop and prop["default"] is None:
            del prop["default"]


class _Sol(BaseModel):
    model_config = ConfigDict(json_schema_extra=_absent_not_null)


class _SolIn(_Sol):
    model_config = ConfigDict(extra="forbid")


class Link(_Sol):
    href: str


class ProblemDetails(_Sol):
    type: str | None = None
    title: str | None = None
    status: int
    detail: str
    instance: str | None = None


class ApiVersion(_Sol):
    version: str
    isDeprecated: bool | None = None
    retirementDate: DateTime | None = None


class ApiVersionInformation(_Sol):
    uriPrefix: str
    apiVersions: list[ApiVersion]


class ResourceHandle(_Sol):
    """SOL 003 clause 4.4.1.7: the faulty resource as the VIM knows it."""

    vimConnectionId: str | None = None
    resourceProviderId: str | None = None
    resourceId: str
    vimLevelResourceType: str | None = None


class FaultyResourceInfo(_Sol):
    faultyResource: ResourceHandle
    faultyResourceType: FaultyResourceType


class AlarmLinks(_Sol):
    self: Link
    objectInstance: Link | None = None


class Alarm(_Sol):
    """SOL 003 Alarm, plus `location` (failure location in the topology, FAULT-5)."""

    id: str
    managedObjectId: str
    rootCauseFaultyResource: FaultyResourceInfo | None = None
    alarmRaisedTime: DateTime
    alarmChangedTime: DateTime | None = None
    alarmClearedTime: DateTime | None = None
    alarmAcknowledgedTime: DateTime | None = None
    ackState: AckState
    perceivedSeverity: Severity
    eventTime: DateTime
    eventType: EventType
    faultType: str | None = None
    probableCause: str
    isRootCause: bool
    correlatedAlarmIds: list[str] | None = None
    faultDetails: list[str] | None = None
    location: dict[str, str] | None = Field(
        None, description="vimha: the failure location, level -> value (FAULT-5)"
    )
    links: AlarmLinks = Field(alias="_links")


class AlarmModifications(_SolIn):
    ackState: AckState


class BasicParams(_SolIn):
    userName: str = Field(min_length=1)
    password: str


class OauthParams(_SolIn):
    clientId: str = Field(min_length=1)
    clientPassword: str
    tokenEndpoint: AnyHttpUrl


class SubscriptionAuthentication(_SolIn):
    authType: list[AuthType] = Field(min_length=1, max_length=1)
    paramsBasic: BasicParams | None = None
    paramsOauth2ClientCredentials: OauthParams | None = None


class FmNotificationsFilter(_SolIn):
    notificationTypes: list[NotificationType] | None = None
    faultyResourceTypes: list[FaultyResourceType] | None = None
    perceivedSeverities: list[Severity] | None = None
    eventTypes: list[EventType] | None = None
    probableCauses: list[str] | None = None
    managedObjectIds: list[str] | None = Field(
        None, description="vimha: only alarms about these managed objects"
    )
    locationPrefix: str | None = Field(
        None, description="vimha: only alarms whose location starts with this path"
    )


class FmSubscriptionRequest(_SolIn):
    filter: FmNotificationsFilter | None = None
    callbackUri: AnyHttpUrl
    authentication: SubscriptionAuthentication | None = None


class SubscriptionLinks(_Sol):
    self: Link


class FmSubscription(_Sol):
    id: str
    filter: FmNotificationsFilter | None = None
    callbackUri: str
    links: SubscriptionLinks = Field(alias="_links")


# -- notifications (POST to the subscriber's callbackUri) ------------------------------
class AlarmNotificationLinks(_Sol):
    subscription: Link


class AlarmNotification(_Sol):
    id: str
    notificationType: Literal["AlarmNotification"]
    subscriptionId: str
    timeStamp: DateTime
    alarm: Alarm
    links: AlarmNotificationLinks = Field(alias="_links")


class AlarmClearedNotificationLinks(_Sol):
    subscription: Link
    alarm: Link


class AlarmClearedNotification(_Sol):
    id: str
    notificationType: Literal["AlarmClearedNotification"]
    subscriptionId: str
    timeStamp: DateTime
    alarmId: str
    alarmClearedTime: DateTime
    links: AlarmClearedNotificationLinks = Field(alias="_links")


class AlarmListRebuiltNotificationLinks(_Sol):
    subscription: Link
    alarms: Link


class AlarmListRebuiltNotification(_Sol):
    id: str
    notificationType: Literal["AlarmListRebuiltNotification"]
    subscriptionId: str
    timeStamp: DateTime
    links: AlarmListRebuiltNotificationLinks = Field(alias="_links")


class HostHealthChangeNotificationLinks(_Sol):
    subscription: Link
    host: Link


class HostHealthChangeNotification(_Sol):
    """vimha's own notification of a host's health, sent to FM subscribers (FAULT-8)."""

    id: str
    notificationType: Literal["HostHealthChangeNotification"]
    subscriptionId: str
    timeStamp: DateTime
    hostId: str
    healthStatus: HealthStatus
    previousHealthStatus: HealthStatus | None = None
    failureKind: FailureKind | None = None
    reason: str | None = None
    location: dict[str, str] | None = None
    links: HostHealthChangeNotificationLinks = Field(alias="_links")
