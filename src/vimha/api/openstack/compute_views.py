"""vimha's compute model in Nova's words (Compute v2.1 up to microversion 2.79). Pure
translation: no store access; the routers hand in what a view shows.

Statuses: BUILDING -> BUILD, ACTIVE -> ACTIVE (REBOOT / HARD_REBOOT while rebooting), SHUTOFF,
PAUSED, ERROR, REBUILDING -> REBUILD, MIGRATING, UNKNOWN (its host is down and not fenced),
DELETED. `host_status` (2.16) from vimha's host health: UP and DEGRADED -> UP, DOWN and
FENCED -> DOWN, MAINTENANCE, UNKNOWN; "" for a server that has no host.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from vimha.api.openstack.common import iso_micro, iso_z
from vimha.api.openstack.microversions import Version
from vimha.domain.compute import (
    Flavor,
    Instance,
    InstanceAction,
    InstanceStatus,
    TaskState,
)

S = InstanceStatus
STATUS = {
    S.BUILDING: "BUILD",
    S.ACTIVE: "ACTIVE",
    S.SHUTOFF: "SHUTOFF",
    S.PAUSED: "PAUSED",
    S.ERROR: "ERROR",
    S.REBUILDING: "REBUILD",
    S.MIGRATING: "MIGRATING",
    S.UNKNOWN: "UNKNOWN",
    S.DELETED: "DELETED",
}
VM_STATE = {
    S.BUILDING: "building",
    S.ACTIVE: "active",
    S.SHUTOFF: "stopped",
    S.PAUSED: "paused",
    S.ERROR: "error",
    S.REBUILDING: "active",
    S.MIGRATING: "active",
    S.UNKNOWN: "active",
    S.DELETED: "deleted",
}
# Nova's power states: 0 NOSTATE, 1 RUNNING, 3 PAUSED, 4 SHUTDOWN.
POWER_STATE = {S.ACTIVE: 1, S.MIGRATING: 1, S.PAUSED: 3, S.SHUTOFF: 4, S.DELETED: 4}
BY_TASK = {
    TaskState.REBOOTING: "REBOOT",
    TaskState.REBOOTING_HARD: "HARD_REBOOT",
    TaskState.REBUILDING: "REBUILD",
    TaskState.RECOVERING: "REBUILD",
    TaskState.MIGRATING: "MIGRATING",
}
HOST_STATUS = {
    "UP": "UP",
    "DEGRADED": "UP",
    "DOWN": "DOWN",
    "FENCED": "DOWN",
    "MAINTENANCE": "MAINTENANCE",
    "UNKNOWN": "UNKNOWN",
}
# Nova's statuses a list may be filtered by -> vimha's.
STATUS_FILTER = {v: k for k, v in STATUS.items()} | {"REBOOT": S.ACTIVE, "HARD_REBOOT": S.ACTIVE}
# vimha's actions in Nova's words (os-instance-actions).
ACTIONS = {"reboot-hard": "reboot"}


def nova_task(task: TaskState | None) -> str | None:
    """Nova's task state: vimha's names are Nova's, but a recovery's (a rebuild elsewhere,
    as Nova's evacuate)."""
    if task is None:
        return None
    return "rebuilding" if task is TaskState.RECOVERING else task.value


def status(i: Instance) -> str:
    if i.status is S.ACTIVE and i.task_state in BY_TASK:
        return BY_TASK[i.task_state]
    return STATUS[i.status]


def host_status(health: str | None) -> str:
    return "" if health is None else HOST_STATUS.get(health, "UNKNOWN")


def host_id(project: str, host: str | None) -> str:
    """Nova's hostId: the host, hashed with the project (hides the host's name)."""
    if not host:
        return ""
    return hashlib.sha224((project + host).encode()).hexdigest()


def links(root: str, kind: str, ident: str) -> list[dict[str, str]]:
    return [
        {"rel": "self", "href": f"{root}/compute/v2.1/{kind}/{ident}"},
        {"rel": "bookmark", "href": f"{root}/compute/{kind}/{ident}"},
    ]


def flavor_view(f: Flavor, root: str, v: Version, detail: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"id": f.id, "name": f.name, "links": links(root, "flavors", f.id)}
    if v >= (2, 55):
        out["description"] = None
    if not detail:
        return out
    out |= {
        "ram": f.ram_mib,
        "disk": f.disk_gib,
        "vcpus": f.vcpus,
        "OS-FLV-EXT-DATA:ephemeral": 0,
        "OS-FLV-DISABLED:disabled": False,
        "swap": 0 if v >= (2, 75) else "",
        "rxtx_factor": 1.0,
        "os-flavor-access:is_public": True,
    }
    if v >= (2, 61):
        out["extra_specs"] = dict(f.extra_specs)
    return out


def _embedded_flavor(f: Flavor, root: str, v: Version) -> dict[str, Any]:
    if v < (2, 47):
        return {"id": f.id, "links": links(root, "flavors", f.id)[1:]}
    return {
        "vcpus": f.vcpus,
        "ram": f.ram_mib,
        "disk": f.disk_gib,
        "ephemeral": 0,
        "swap": 0,
        "original_name": f.name,
        "extra_specs": dict(f.extra_specs),
    }


def addresses(i: Instance) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for p in i.spec.ports:
        out.setdefault(p.network, []).append(
            {
                "version": 4,
                "addr": p.ip,
                "OS-EXT-IPS:type": "fixed",
                "OS-EXT-IPS-MAC:mac_addr": p.mac,
            }
        )
    return out


def summary(i: Instance, root: str) -> dict[str, Any]:
    return {"id": i.id, "name": i.name, "links": links(root, "servers", i.id)}


def server_view(
    i: Instance,
    root: str,
    v: Version,
    health: str | None,
    zone: str,
    created: InstanceAction | None,
    show: bool = True,
) -> dict[str, Any]:
    """A server as Nova shows it at microversion `v` (`show`: GET /servers/{id}, which
    holds `server_groups` from 2.71; a list's detail does not)."""
    spec = i.spec
    out: dict[str, Any] = {
        "id": i.id,
        "name": i.name,
        "status": status(i),
        "tenant_id": i.project,
        "user_id": created.user if created is not None else "",
        "metadata": dict(spec.metadata),
        "hostId": host_id(i.project, i.host),
        "image": {"id": spec.image_id, "links": links(root, "images", spec.image_id)[1:]},
        "flavor": _embedded_flavor(spec.flavor, root, v),
        "created": iso_z(i.created_at),
        "updated": iso_z(i.updated_at),
        "addresses": addresses(i),
        "accessIPv4": "",
        "accessIPv6": "",
        "links": links(root, "servers", i.id),
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": zone,
        "config_drive": "True",
        "key_name": i.key_name,
        "OS-SRV-USG:launched_at": iso_micro(i.launched_at),
        "OS-SRV-USG:terminated_at": iso_micro(i.updated_at) if i.status is S.DELETED else None,
        "OS-EXT-SRV-ATTR:host": i.host,
        "OS-EXT-SRV-ATTR:instance_name": f"instance-{i.id[:8]}",
        "OS-EXT-SRV-ATTR:hypervisor_hostname": i.host,
        "OS-EXT-STS:task_state": nova_task(i.task_state),
        "OS-EXT-STS:vm_state": VM_STATE[i.status],
        "OS-EXT-STS:power_state": POWER_STATE.get(i.status, 0),
        "os-extended-volumes:volumes_attached": [],
    }
    if i.status in (S.BUILDING, S.ACTIVE, S.REBUILDING, S.MIGRATING):
        out["progress"] = 0
    if i.fault is not None and i.status in (S.ERROR, S.DELETED):
        out["fault"] = {
            "code": i.fault.code,
            "created": iso_z(i.fault.at),
            "message": i.fault.message,
            "details": i.fault.details,
        }
    if v >= (2, 3):
        user_data = spec.config_drive.user_data
        out |= {
            "OS-EXT-SRV-ATTR:reservation_id": f"r-{created.request_id[4:12]}" if created else "",
            "OS-EXT-SRV-ATTR:launch_index": i.index,
            "OS-EXT-SRV-ATTR:hostname": _hostname(i.name),
            "OS-EXT-SRV-ATTR:kernel_id": "",
            "OS-EXT-SRV-ATTR:ramdisk_id": "",
            "OS-EXT-SRV-ATTR:root_device_name": None,
            "OS-EXT-SRV-ATTR:user_data": base64.b64encode(user_data.encode()).decode()
            if user_data is not None
            else None,
        }
    if v >= (2, 9):
        out["locked"] = False
    if v >= (2, 16):
        out["host_status"] = host_status(health)
    if v >= (2, 19):
        out["description"] = None
    if v >= (2, 26):
        out["tags"] = []
    if v >= (2, 63):
        out["trusted_image_certificates"] = None
    if v >= (2, 71) and show:
        out["server_groups"] = list(spec.groups)
    if v >= (2, 73):
        out["locked_reason"] = None
    return out


def _hostname(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower()).strip("-")
    return cleaned[:63] or "server"


def interface_view(i: Instance, subnets: Mapping[str, str], v: Version) -> list[dict[str, Any]]:
    """os-interface: the server's ports (`subnets`: network id -> subnet id)."""
    out = []
    for p in i.spec.ports:
        entry: dict[str, Any] = {
            "port_state": "ACTIVE" if i.status is S.ACTIVE else "DOWN",
            "fixed_ips": [{"subnet_id": subnets.get(p.network_id, ""), "ip_address": p.ip}],
            "port_id": p.port_id,
            "net_id": p.network_id,
            "mac_addr": p.mac,
        }
        if v >= (2, 70):
            entry["tag"] = p.tags[0] if p.tags else None
        out.append(entry)
    return out


def action_view(a: InstanceAction, project: str, v: Version, events: bool) -> dict[str, Any]:
    """An instance action (os-instance-actions); its one event is the action's result."""
    name = ACTIONS.get(a.action, a.action)
    out: dict[str, Any] = {
        "action": name,
        "instance_uuid": a.instance_id,
        "message": a.message or None,
        "project_id": project,
        "request_id": a.request_id,
        "start_time": iso_micro(a.started_at),
        "user_id": a.user,
    }
    if v >= (2, 58):
        out["updated_at"] = iso_micro(a.finished_at or a.started_at)
    if events:
        result = {"success": "Success", "error": "Error"}.get(a.result)
        event: dict[str, Any] = {
            "event": f"compute_{name.replace('-', '_')}_instance",
            "start_time": iso_micro(a.started_at),
            "finish_time": iso_micro(a.finished_at),
            "result": result,
            "traceback": None,
        }
        if v >= (2, 62):
            event["host"] = None
            event["hostId"] = ""
        out["events"] = [event]
    return out


def sort_actions(actions: Sequence[InstanceAction]) -> list[InstanceAction]:
    """Newest first, as Nova lists them."""
    return sorted(actions, key=lambda a: (a.started_at, a.seq), reverse=True)
