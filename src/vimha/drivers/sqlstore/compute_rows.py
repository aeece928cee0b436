"""Row mapping of the compute tables, shared by the reads and the unit of work."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from vimha.domain.affinity import GroupPolicy, PlacementGroup
from vimha.domain.compute import (
    Fault,
    Flavor,
    HostResources,
    Image,
    Instance,
    InstanceAction,
    InstanceSpec,
    InstanceStatus,
    Network,
    Port,
    Power,
    Sal,
    TaskState,
    Vnf,
    VnfOperation,
)
from vimha.drivers.sqlstore.compute_tables import group_members, instances


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


class Times:
    """Datetimes as the backend keeps them (SQLite: naive UTC)."""

    def __init__(self, sqlite: bool) -> None:
        self.sqlite = sqlite

    def w(self, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if self.sqlite else value


def members_of(conn: Connection, group_ids: list[str]) -> dict[str, dict[str, str | None]]:
    m, i = group_members.c, instances.c
    rows = conn.execute(
        select(m.group_id, m.instance_id, i.host)
        .select_from(group_members.join(instances, instances.c.id == m.instance_id))
        .where(and_(m.group_id.in_(group_ids), i.status != InstanceStatus.DELETED.value))
    ).all()
    out: dict[str, dict[str, str | None]] = {}
    for gid, iid, host in rows:
        out.setdefault(gid, {})[iid] = host
    return out


def sal_usage_of(
    conn: Connection, hosts: Sequence[str] | None = None
) -> dict[str, dict[str, tuple[int, int]]]:
    """host -> SAL -> (vCPUs, RAM MiB) of its instances (summed here: the SAL and the
    flavor are inside the spec); of `hosts` only, if given."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    i = instances.c
    on = i.host.is_not(None) if hosts is None else i.host.in_(hosts)
    rows = conn.execute(
        select(i.host, i.spec).where(and_(on, i.status != InstanceStatus.DELETED.value))
    ).all()
    for host, spec in rows:
        sal = spec.get("sal", "LEVEL_3")
        flavor = spec["flavor"]
        cpu, ram = out.setdefault(host, {}).get(sal, (0, 0))
        out[host][sal] = (cpu + flavor["vcpus"], ram + flavor["ramMib"])
    return out


# -- row mapping --------------------------------------------------------------------------
def group_of(r: Any) -> PlacementGroup:
    return PlacementGroup(
        r["id"],
        r["name"],
        GroupPolicy(r["policy"]),
        r["level"],
        r["max_per_domain"],
        r["vnf_id"],
        int(r["generation"]),
    )


def operation_of(r: Any) -> VnfOperation:
    return VnfOperation(
        r["id"],
        r["vnf_id"],
        r["operation"],
        r["state"],
        dict(r["params"]),
        utc(r["started_at"]),
        dict(r["result"]),
        utc_or_none(r["finished_at"]),
    )


def flavor_of(r: Any) -> Flavor:
    return Flavor(
        r["id"], r["name"], r["vcpus"], r["ram_mib"], r["disk_gib"], dict(r["extra_specs"])
    )


def image_of(r: Any) -> Image:
    return Image(
        id=r["id"],
        name=r["name"],
        status=r["status"],
        digest=r["digest"],
        size=int(r["size"]),
        disk_format=r["disk_format"],
        container_format=r["container_format"],
        properties=dict(r["properties"]),
        created_at=utc(r["created_at"]),
        updated_at=utc(r["updated_at"]),
        min_disk_gib=r["min_disk_gib"],
        min_ram_mib=r["min_ram_mib"],
        visibility=r["visibility"],
    )


def network_of(r: Any) -> Network:
    return Network(
        r["id"],
        r["name"],
        r["subnet_id"],
        r["cidr"],
        r["gateway"],
        r["pool_start"],
        r["pool_end"],
        utc(r["created_at"]),
        r["mtu"],
    )


def port_of(r: Any) -> Port:
    return Port(
        r["id"],
        r["network_id"],
        r["mac"],
        r["ip"],
        r["instance_id"],
        r["name"],
        tuple(r["tags"]),
        r["bond"],
    )


def vnf_of(r: Any) -> Vnf:
    return Vnf(
        r["id"],
        r["name"],
        Sal(r["sal"]),
        r["priority"],
        dict(r["descriptor"]),
        utc(r["created_at"]),
        r["client_token"],
        r["status"],
        bool(r["preemptible"]),
    )


def instance_of(r: Any) -> Instance:
    return Instance(
        id=r["id"],
        name=r["name"],
        spec=InstanceSpec.from_dict(r["spec"]),
        status=InstanceStatus(r["status"]),
        created_at=utc(r["created_at"]),
        updated_at=utc(r["updated_at"]),
        task_state=TaskState(r["task_state"]) if r["task_state"] else None,
        power=Power(r["power"]),
        host=r["host"],
        incarnation=r["incarnation"],
        fault=Fault.from_dict(r["fault"]) if r["fault"] else None,
        launched_at=utc_or_none(r["launched_at"]),
        reboot_seq=r["reboot_seq"],
        reboot_hard=bool(r["reboot_hard"]),
        version=r["version"],
        project=r["project"],
        key_name=r["key_name"],
        index=r["idx"],
        notes=tuple(r["notes"] or ()),
    )


def host_of(r: Any) -> HostResources:
    return HostResources(
        host=r["host"],
        vcpus=r["vcpus"],
        ram_mib=r["ram_mib"],
        disk_gib=r["disk_gib"],
        used_vcpus=r["used_vcpus"],
        used_ram_mib=r["used_ram_mib"],
        used_disk_gib=r["used_disk_gib"],
        cpu_ratio=r["cpu_ratio"],
        ram_ratio=r["ram_ratio"],
        disk_ratio=r["disk_ratio"],
        traits=frozenset(r["traits"]),
        generation=int(r["generation"]),
        hypervisor=r["hypervisor"],
    )


def action_of(r: Any) -> InstanceAction:
    return InstanceAction(
        instance_id=r["instance_id"],
        action=r["action"],
        request_id=r["request_id"],
        user=r["user"],
        started_at=utc(r["started_at"]),
        finished_at=utc_or_none(r["finished_at"]),
        result=r["result"],
        message=r["message"],
        seq=r["seq"],
    )
