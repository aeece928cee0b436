"""Pydantic schemas at the edge: request bodies and documented responses (SOL 003 names)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from vimha.domain.alarms import AckState, EventType, FaultyResourceType, Severity
from vimha.domain.subscriptions import AuthType, NotificationType


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Link(BaseModel):
    href: str


class ProblemDetails(BaseModel):
    type: str | None = None
    title: str | None = None
    status: int
    detail: str
    instance: str | None = None


class ApiVersion(BaseModel):
    version: str
    isDeprecated: bool | None = None
    retirementDate: str | None = None


class ApiVersionInformation(BaseModel):
    uriPrefix: str
    apiVersions: list[ApiVersion]


class FaultyResource(BaseModel):
    vimConnectionId: str
    resourceId: str
    vimLevelResourceType: str


class FaultyResourceInfo(BaseModel):
    faultyResource: FaultyResource
    faultyResourceType: FaultyResourceType


class AlarmLinks(BaseModel):
    self: Link
    objectInstance: Link


class Alarm(BaseModel):
    """SOL 003 Alarm, plus `location` (failure location in the topology, FAULT-5)."""

    id: str
    managedObjectId: str
    rootCauseFaultyResource: FaultyResourceInfo
    alarmRaisedTime: str
    alarmChangedTime: str | None = None
    alarmClearedTime: str | None = None
    alarmAcknowledgedTime: str | None = None
    ackState: AckState
    perceivedSeverity: Severity
    eventTime: str
    eventType: EventType
    faultType: str
    probableCause: str
    isRootCause: bool
    correlatedAlarmIds: list[str]
    faultDetails: list[str]
    location: dict[str, str]
    links: AlarmLinks = Field(alias="_links")


class AlarmInList(BaseModel):
    """An Alarm in a list: attribute selectors may omit any attribute but `id`."""

    model_config = ConfigDict(extra="allow")
    id: str


class AlarmModifications(_In):
    ackState: AckState


class HistoryEventOut(BaseModel):
    seq: int
    kind: str
    at: str
    perceivedSeverity: str
    ackState: str
    reason: str


class BasicParams(_In):
    userName: str = Field(min_length=1)
    password: str


class OauthParams(_In):
    clientId: str = Field(min_length=1)
    clientPassword: str
    tokenEndpoint: AnyHttpUrl


class SubscriptionAuthentication(_In):
    authType: list[AuthType] = Field(min_length=1, max_length=1)
    paramsBasic: BasicParams | None = None
    paramsOauth2ClientCredentials: OauthParams | None = None


class FmNotificationsFilter(_In):
    notificationTypes: list[NotificationType] | None = None
    faultyResourceTypes: list[FaultyResourceType] | None = None
    perceivedSeverities: list[Severity] | None = None
    eventTypes: list[EventType] | None = None
    probableCauses: list[str] | None = None
    managedObjectIds: list[str] | None = None
    locationPrefix: str | None = None


class FmSubscriptionRequest(_In):
    filter: FmNotificationsFilter | None = None
    callbackUri: AnyHttpUrl
    authentication: SubscriptionAuthentication | None = None


class SubscriptionLinks(BaseModel):
    self: Link


class FmSubscription(BaseModel):
    id: str
    filter: dict[str, Any] | None = None
    callbackUri: str
    links: SubscriptionLinks = Field(alias="_links")


class NativeEvent(_In):
    """A fault event in vimha's native format; perceivedSeverity CLEARED clears the alarm."""

    managedObjectId: str = Field(min_length=1)
    faultType: str = Field(min_length=1)
    probableCause: str = Field(min_length=1)
    perceivedSeverity: Severity
    eventType: EventType
    eventTime: str | None = None
    faultyResourceType: FaultyResourceType = FaultyResourceType.COMPUTE
    vimLevelResourceType: str = Field("host", min_length=1)
    resourceId: str | None = None
    faultDetails: list[str] = Field(default_factory=list)
    location: dict[str, str] | None = None
    isRootCause: bool = True
    correlatedAlarmIds: list[str] = Field(default_factory=list)


class EventResult(BaseModel):
    alarmId: str
    change: str
    reason: str


class EventsAccepted(BaseModel):
    accepted: int
    changes: list[EventResult]


class DoctorDetails(BaseModel):
    model_config = ConfigDict(extra="allow")
    hostname: str
    status: str
    monitor: str | None = None
    monitor_event_id: str | None = None


class DoctorEvent(BaseModel):
    model_config = ConfigDict(extra="allow")
    time: str | None = None
    type: str
    details: DoctorDetails


class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["firing", "resolved"] | None = None
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str | None = None
    endsAt: str | None = None


class AlertmanagerWebhook(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: str | None = None
    status: Literal["firing", "resolved"] | None = None
    alerts: list[AlertmanagerAlert] = Field(min_length=1)


class RetentionPolicyBody(_In):
    clearedAlarms: dict[str, str] | None = Field(
        None, description="Severity -> duration such as '7d', '12h'"
    )
    notifications: str | None = None


class RetentionPolicyOut(BaseModel):
    clearedAlarms: dict[str, str]
    notifications: str


class AttemptOut(BaseModel):
    at: str
    durationMs: float
    ok: bool
    detail: str


class NotificationRecord(BaseModel):
    """A stored notification to one subscriber and its delivery attempts (FAULT-7)."""

    model_config = ConfigDict(extra="allow")
    id: str


class PurgeResult(BaseModel):
    alarms: int
    history: int
    deliveries: int
    notifications: int


class Status(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: str
    version: str


class ManagedObject(BaseModel):
    """A managed object as its alarms show it."""

    id: str
    location: dict[str, str]
    vimLevelResourceTypes: list[str]
    activeAlarmIds: list[str]
    highestActiveSeverity: Severity
    lastEventTime: str
    links: dict[str, Link] = Field(alias="_links")
