"""Notification bodies (SOL 003 clause 7.5.2) built from what the store keeps.

The store keeps one payload per notification; each subscriber's body adds its own id,
subscriptionId and subscription link at send time, so the body is the same on every retry.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from vimha.domain.alarms import AlarmChange, ChangeKind, Location
from vimha.domain.classification import Classification
from vimha.domain.clock import iso
from vimha.domain.subscriptions import NotificationType, Subject


def for_change(
    change: AlarmChange, base_url: str
) -> tuple[NotificationType, dict[str, Any], Subject]:
    """The notification an alarm change causes (only for changes that notify)."""
    alarm = change.alarm
    if change.kind is ChangeKind.CLEARED:
        assert alarm.alarm_cleared_time is not None
        payload: dict[str, Any] = {
            "alarmId": alarm.id,
            "alarmClearedTime": iso(alarm.alarm_cleared_time),
            "_links": {"alarm": {"href": f"{base_url}/vimfm/v1/alarms/{alarm.id}"}},
        }
        kind = NotificationType.ALARM_CLEARED
    else:
        payload = {"alarm": alarm.to_sol(base_url)}
        kind = NotificationType.ALARM
    return kind, payload, Subject(kind, alarm=alarm)


def alarm_list_rebuilt(base_url: str) -> tuple[NotificationType, dict[str, Any], Subject]:
    kind = NotificationType.ALARM_LIST_REBUILT
    payload = {"_links": {"alarms": {"href": f"{base_url}/vimfm/v1/alarms"}}}
    return kind, payload, Subject(kind)


def host_health_change(
    host: str,
    previous: Classification | None,
    current: Classification,
    location: Location,
    base_url: str,
) -> tuple[NotificationType, dict[str, Any], Subject]:
    """A host's health changed (vimha's own notification, sent to FM subscribers); the
    previous status and the failure kind are left out when there is none."""
    kind = NotificationType.HOST_HEALTH_CHANGE
    payload: dict[str, Any] = {"hostId": host, "healthStatus": current.health.value}
    if previous is not None:
        payload["previousHealthStatus"] = previous.health.value
    if current.kind is not None:
        payload["failureKind"] = current.kind.value
    payload["reason"] = current.reason
    payload["location"] = location.as_dict()
    payload["_links"] = {"host": {"href": f"{base_url}/vim/v1/hosts/{host}"}}
    return kind, payload, Subject(kind, object_id=host, location=location)


def body(
    delivery_id: str,
    subscription_id: str,
    notification_type: NotificationType,
    payload: dict[str, Any],
    created_at: datetime,
    base_url: str,
) -> dict[str, Any]:
    links = {"subscription": {"href": f"{base_url}/vimfm/v1/subscriptions/{subscription_id}"}}
    links.update(payload.get("_links", {}))
    out: dict[str, Any] = {
        "id": delivery_id,
        "notificationType": notification_type.value,
        "subscriptionId": subscription_id,
        "timeStamp": iso(created_at),
    }
    out.update((k, v) for k, v in payload.items() if k != "_links")
    out["_links"] = links
    return out


def payload_json(payload: dict[str, Any], created_at: datetime) -> tuple[str, str, str]:
    """Serialise a stored notification once: (its time stamp, its attributes without
    `_links`, its `_links` members), the last two as JSON object *contents* (no braces), to
    be spliced into each subscriber's body."""
    attrs = {k: v for k, v in payload.items() if k != "_links"}
    links = payload.get("_links", {})
    return (
        json.dumps(iso(created_at)),
        json.dumps(attrs, separators=(",", ":"))[1:-1],
        json.dumps(links, separators=(",", ":"))[1:-1],
    )


def body_bytes(
    delivery_id: str,
    subscription_id: str,
    notification_type: NotificationType,
    serialised: tuple[str, str, str],
    base_url: str,
) -> bytes:
    """The same document as `body`, assembled from `payload_json`'s pieces. Ids are UUIDs
    and types are enum values, so they need no JSON escaping."""
    stamp, attrs, links = serialised
    sub_link = json.dumps(f"{base_url}/vimfm/v1/subscriptions/{subscription_id}")
    link_items = f'"subscription":{{"href":{sub_link}}}' + (f",{links}" if links else "")
    return (
        f'{{"id":"{delivery_id}","notificationType":"{notification_type.value}",'
        f'"subscriptionId":"{subscription_id}","timeStamp":{stamp}'
        f'{"," + attrs if attrs else ""},"_links":{{{link_items}}}}}'
    ).encode()
