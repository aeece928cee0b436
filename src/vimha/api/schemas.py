"""Pydantic schemas at the edge: vimha's own request bodies and documented responses (the
SOL 003 / SOL 013 data types are in `sol_schemas.py`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vimha.api.sol_schemas import Link
from vimha.domain.alarms import EventType, FaultyResourceType, Severity


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HistoryEventOut(BaseModel):
    seq: int
    kind: str
    at: str
    perceivedSeverity: str
    ackState: str
    reason: str


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
