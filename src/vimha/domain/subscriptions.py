"""Subscriptions (SOL 003 FmSubscription) and which notifications each one receives.

The filter follows FmNotificationsFilter; the VNF instance filter of SOL 003 is replaced by
the VIM's own managed objects (`managedObjectIds`) and a topology prefix (`locationPrefix`).
An empty list means "any".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from vimha.domain.alarms import Alarm, Location


class NotificationType(StrEnum):
    ALARM = "AlarmNotification"
    ALARM_CLEARED = "AlarmClearedNotification"
    ALARM_LIST_REBUILT = "AlarmListRebuiltNotification"
    HOST_HEALTH_CHANGE = "HostHealthChangeNotification"
    INSTANCE_CHANGE = "InstanceChangeNotification"  # vimha: an instance's state or action
    VNF_LCM_OPERATION = "VnfLcmOperationOccurrenceNotification"  # SOL 003: scale, ...
    VNF_MAINTENANCE = "VnfMaintenanceNotification"  # vimha (Fenix-style): a session's step


class AuthType(StrEnum):
    BASIC = "BASIC"
    OAUTH2_CLIENT_CREDENTIALS = "OAUTH2_CLIENT_CREDENTIALS"


@dataclass(frozen=True, slots=True)
class SubscriptionFilter:
    notification_types: tuple[NotificationType, ...] = ()
    faulty_resource_types: tuple[str, ...] = ()
    perceived_severities: tuple[str, ...] = ()
    event_types: tuple[str, ...] = ()
    probable_causes: tuple[str, ...] = ()
    managed_object_ids: tuple[str, ...] = ()
    location_prefix: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The SOL 003 FmNotificationsFilter form (vimha's extensions included)."""
        return {
            "notificationTypes": [t.value for t in self.notification_types],
            "faultyResourceTypes": list(self.faulty_resource_types),
            "perceivedSeverities": list(self.perceived_severities),
            "eventTypes": list(self.event_types),
            "probableCauses": list(self.probable_causes),
            "managedObjectIds": list(self.managed_object_ids),
            "locationPrefix": self.location_prefix,
        }

    @classmethod
    def from_dict(cls, f: dict[str, Any]) -> SubscriptionFilter:
        return cls(
            notification_types=tuple(NotificationType(t) for t in f.get("notificationTypes", ())),
            faulty_resource_types=tuple(f.get("faultyResourceTypes", ())),
            perceived_severities=tuple(f.get("perceivedSeverities", ())),
            event_types=tuple(f.get("eventTypes", ())),
            probable_causes=tuple(f.get("probableCauses", ())),
            managed_object_ids=tuple(f.get("managedObjectIds", ())),
            location_prefix=str(f.get("locationPrefix", "")),
        )

    def canonical(self) -> tuple[object, ...]:
        """Order-insensitive form, to find duplicate subscriptions."""
        return (
            tuple(sorted(self.notification_types)),
            tuple(sorted(self.faulty_resource_types)),
            tuple(sorted(self.perceived_severities)),
            tuple(sorted(self.event_types)),
            tuple(sorted(self.probable_causes)),
            tuple(sorted(self.managed_object_ids)),
            self.location_prefix.strip("/"),
        )


@dataclass(frozen=True, slots=True)
class Authentication:
    """How vimha authenticates itself when calling the consumer back."""

    auth_type: AuthType
    user_name: str = ""
    password: str = field(default="", repr=False)
    client_id: str = ""
    client_password: str = field(default="", repr=False)
    token_endpoint: str = ""


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    callback_uri: str
    filter: SubscriptionFilter
    authentication: Authentication | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Subject:
    """What a notification is about, for filter matching."""

    notification_type: NotificationType
    alarm: Alarm | None = None
    object_id: str = ""
    location: Location = field(default_factory=Location)


def matches(flt: SubscriptionFilter, subject: Subject) -> bool:
    """Does a subscription with filter `flt` receive a notification about `subject`?"""
    if flt.notification_types and subject.notification_type not in flt.notification_types:
        return False
    if subject.notification_type is NotificationType.ALARM_LIST_REBUILT:
        return True
    alarm = subject.alarm
    object_id = alarm.managed_object_id if alarm else subject.object_id
    location = alarm.location if alarm else subject.location
    if flt.managed_object_ids and object_id not in flt.managed_object_ids:
        return False
    if flt.location_prefix and not location.within(flt.location_prefix):
        return False
    if alarm is None:
        return True
    # For a cleared alarm, severity filters apply to the severity it had while active.
    severity = alarm.peak_severity.value if not alarm.active else alarm.perceived_severity.value
    checks = (
        (flt.faulty_resource_types, alarm.faulty_resource_type.value),
        (flt.perceived_severities, severity),
        (flt.event_types, alarm.event_type.value),
        (flt.probable_causes, alarm.probable_cause),
    )
    return all(not wanted or value in wanted for wanted, value in checks)
