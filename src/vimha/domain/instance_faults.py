"""Alarms on instances and the notification of an instance's change (issue 14). Pure.

An instance's failure is alarmed on its VNF (`managedObjectId` = the VNF, the instance as the
faulty resource, COMPUTE): the VNFM subscribed to its VNF hears of it. One alarm per instance
and kind of failure (the probable cause names the instance); all of them are cleared when the
instance is ACTIVE again or deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from vimha.domain import configdrive
from vimha.domain.alarms import EventType, FaultEvent, FaultyResourceType, Location, Severity
from vimha.domain.clock import iso
from vimha.domain.compute import Instance


class InstanceFault(StrEnum):
    CRASHED = "INSTANCE_CRASHED"
    WATCHDOG = "INSTANCE_WATCHDOG_EXPIRED"
    HUNG = "INSTANCE_HUNG"
    IO_ERROR = "INSTANCE_IO_ERROR"
    STOPPED = "INSTANCE_STOPPED_UNEXPECTEDLY"
    UNKNOWN = "INSTANCE_STATE_UNKNOWN"
    PREEMPTED = "INSTANCE_PREEMPTED"
    UNPLACED = "INSTANCE_NOT_PLACED"
    RESERVE_USED = "SAL_RESERVE_USED"
    MIGRATION_EXCEEDED = "INSTANCE_MIGRATION_INTERRUPTION_EXCEEDED"  # broke its bound
    MIGRATION_FAILED = "INSTANCE_MIGRATION_FAILED"


SEVERITY = {
    InstanceFault.CRASHED: Severity.MAJOR,
    InstanceFault.WATCHDOG: Severity.MAJOR,
    InstanceFault.HUNG: Severity.MAJOR,
    InstanceFault.IO_ERROR: Severity.MAJOR,
    InstanceFault.STOPPED: Severity.MAJOR,
    InstanceFault.UNKNOWN: Severity.CRITICAL,
    InstanceFault.PREEMPTED: Severity.WARNING,
    InstanceFault.UNPLACED: Severity.CRITICAL,
    InstanceFault.RESERVE_USED: Severity.MINOR,
    InstanceFault.MIGRATION_EXCEEDED: Severity.MAJOR,
    InstanceFault.MIGRATION_FAILED: Severity.WARNING,
}
UNMANAGED_GUEST = "UNMANAGED_INSTANCE"
MIGRATION_KINDS = frozenset({InstanceFault.MIGRATION_EXCEEDED, InstanceFault.MIGRATION_FAILED})


def cause(instance_id: str) -> str:
    return f"instance {instance_id}"


def object_of(instance: Instance) -> str:
    return instance.spec.vnf_id or instance.id


def location_of(instance: Instance, host: Location) -> Location:
    return Location((*host.levels, ("instance", instance.id))) if host.levels else host


def raised(
    instance: Instance, kind: InstanceFault, detail: str, now: datetime, host: Location
) -> FaultEvent:
    return FaultEvent(
        managed_object_id=object_of(instance),
        fault_type=kind.value,
        probable_cause=cause(instance.id),
        perceived_severity=SEVERITY[kind],
        event_type=EventType.PROCESSING_ERROR_ALARM,
        event_time=now,
        faulty_resource_type=FaultyResourceType.COMPUTE,
        vim_level_resource_type="instance",
        resource_id=instance.id,
        fault_details=(f"{instance.name} on {instance.host}: {detail}",),
        location=location_of(instance, host),
        source="agent",
    )


# What a guest running again (started anew: its watchdog's reset, a hang's restart) ends,
# while its instance stayed ACTIVE throughout.
ENDED_BY_A_START = frozenset({InstanceFault.WATCHDOG, InstanceFault.HUNG})


def cleared_after_start(instance: Instance, now: datetime, host: Location) -> list[FaultEvent]:
    """Clearing events for the alarms a start of the guest ends (see ENDED_BY_A_START)."""
    return cleared(instance, now, "running again", host, kinds=ENDED_BY_A_START)


def cleared(
    instance: Instance,
    now: datetime,
    why: str,
    host: Location,
    deleted: bool = False,
    kinds: frozenset[InstanceFault] | None = None,
) -> list[FaultEvent]:
    """Clearing events for every kind of instance alarm (those not raised change nothing),
    or only `kinds`. A migration's alarms tell of an event, not a state: cleared only with
    the instance."""
    return [
        FaultEvent(
            managed_object_id=object_of(instance),
            fault_type=kind.value,
            probable_cause=cause(instance.id),
            perceived_severity=Severity.CLEARED,
            event_type=EventType.PROCESSING_ERROR_ALARM,
            event_time=now,
            faulty_resource_type=FaultyResourceType.COMPUTE,
            vim_level_resource_type="instance",
            resource_id=instance.id,
            fault_details=(f"{instance.name}: {why}",),
            location=location_of(instance, host),
            source="agent",
        )
        for kind in (kinds if kinds is not None else InstanceFault)
        if deleted or kind not in MIGRATION_KINDS
    ]


def unmanaged(host: str, guest_id: str, now: datetime, location: Location) -> FaultEvent:
    """A guest its agent runs that no controller knows: reported, never killed silently."""
    return FaultEvent(
        managed_object_id=host,
        fault_type=UNMANAGED_GUEST,
        probable_cause=f"guest {guest_id}",
        perceived_severity=Severity.WARNING,
        event_type=EventType.PROCESSING_ERROR_ALARM,
        event_time=now,
        faulty_resource_type=FaultyResourceType.COMPUTE,
        vim_level_resource_type="host",
        resource_id=f"{host}/{guest_id}",
        fault_details=(f"{host} runs guest {guest_id}, unknown to vimha: left running",),
        location=location,
        source="agent",
    )


def view(instance: Instance, base_url: str) -> dict[str, Any]:
    """The instance as the native API and its notifications show it."""
    spec = instance.spec
    out: dict[str, Any] = {
        "id": instance.id,
        "name": instance.name,
        "vnfId": spec.vnf_id,
        "vdu": spec.vdu,
        "index": instance.index,
        "status": instance.status.value,
        "taskState": instance.task_state.value if instance.task_state else None,
        "powerState": instance.power.value,
        "host": instance.host,
        "incarnation": instance.incarnation,
        "flavor": spec.flavor.to_dict(),
        "imageId": spec.image_id,
        "sal": spec.sal.value,
        "priority": spec.priority,
        "ports": [p.to_dict() for p in spec.ports],
        "watchdog": None
        if spec.watchdog is None
        else {
            "timeout": spec.watchdog.timeout,
            "action": spec.watchdog.action.value,
            "tags": list(spec.watchdog.tags),
        },
        "migration": {
            "policy": spec.migration.policy.value,
            "maxInterruptionMs": spec.migration.max_interruption_ms,
        },
        "groups": list(spec.groups),
        "placementNotes": list(instance.notes),
        "metadata": dict(spec.metadata),
        "initialStateDigest": configdrive.expected_digest(
            instance.id, instance.name, spec, instance.index
        ),
        "createdAt": iso(instance.created_at),
        "updatedAt": iso(instance.updated_at),
        "version": instance.version,
        "_links": {"self": {"href": f"{base_url}/vim/v1/instances/{instance.id}"}},
    }
    if instance.launched_at is not None:
        out["launchedAt"] = iso(instance.launched_at)
    if instance.fault is not None:
        out["fault"] = instance.fault.to_dict()
    return out


def change_payload(
    instance: Instance, reason: str, action: str | None, base_url: str
) -> Mapping[str, Any]:
    payload: dict[str, Any] = {
        "instance": view(instance, base_url),
        "reason": reason,
        "_links": {"instance": {"href": f"{base_url}/vim/v1/instances/{instance.id}"}},
    }
    if action:
        payload["action"] = action
    return payload
