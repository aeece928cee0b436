"""The compute part of the SQL store's unit of work (`uow.compute`): writes in the caller's
transaction, claims and versions compared and swapped (ports/compute.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, and_, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from vimha.domain.affinity import PlacementGroup
from vimha.domain.compute import (
    Flavor,
    HostResources,
    Image,
    Instance,
    InstanceAction,
    InstanceStatus,
    Network,
    Port,
    Vnf,
    VnfOperation,
)
from vimha.domain.errors import Conflict, NotFound
from vimha.drivers.sqlstore.compute_rows import (
    Times,
    group_of,
    host_of,
    instance_of,
    members_of,
    port_of,
    sal_usage_of,
    utc,
)
from vimha.drivers.sqlstore.compute_tables import (
    allocations,
    compute_hosts,
    console_tokens,
    flavors,
    group_members,
    image_chunks,
    images,
    instance_actions,
    instances,
    keypairs,
    networks,
    placement_groups,
    ports,
    vnf_operations,
    vnfs,
)
from vimha.drivers.sqlstore.host_changes import host_changes
from vimha.drivers.sqlstore.insight import journal
from vimha.drivers.sqlstore.maintenance import migrations
from vimha.ports.compute import ClaimConflict, HostChanges


class ComputeUow:
    """Compute writes inside one unit of work (the caller's transaction)."""

    def __init__(self, conn: Connection, sqlite: bool) -> None:
        self._conn = conn
        self._lock_rows = not sqlite  # SQLite: the write lock already serialises
        self.t = Times(sqlite)
        self.touched: set[str] = set()  # hosts whose row or instances this one wrote

    def _one(self, stmt: Any) -> RowMapping | None:
        return self._conn.execute(stmt).mappings().first()

    # -- catalog ------------------------------------------------------------------------
    def add_flavor(self, flavor: Flavor, now: datetime) -> None:
        if self._one(select(flavors.c.id).where(flavors.c.name == flavor.name)) is not None:
            raise Conflict(f"flavor {flavor.name} already exists")
        if self._one(select(flavors.c.id).where(flavors.c.id == flavor.id)) is not None:
            raise Conflict(f"flavor id {flavor.id} is taken")
        self._conn.execute(
            insert(flavors).values(
                id=flavor.id,
                name=flavor.name,
                vcpus=flavor.vcpus,
                ram_mib=flavor.ram_mib,
                disk_gib=flavor.disk_gib,
                extra_specs=dict(flavor.extra_specs),
                created_at=self.t.w(now),
            )
        )

    def delete_flavor(self, flavor_id: str) -> None:
        if not self._conn.execute(delete(flavors).where(flavors.c.id == flavor_id)).rowcount:
            raise NotFound(f"flavor {flavor_id} not found")

    def _image_values(self, image: Image) -> dict[str, Any]:
        return {
            "name": image.name,
            "status": image.status,
            "digest": image.digest,
            "size": image.size,
            "disk_format": image.disk_format,
            "container_format": image.container_format,
            "properties": dict(image.properties),
            "visibility": image.visibility,
            "min_disk_gib": image.min_disk_gib,
            "min_ram_mib": image.min_ram_mib,
            "created_at": self.t.w(image.created_at),
            "updated_at": self.t.w(image.updated_at),
        }

    def add_image(self, image: Image) -> None:
        if self._one(select(images.c.id).where(images.c.id == image.id)) is not None:
            raise Conflict(f"image id {image.id} is taken")
        self._conn.execute(insert(images).values(id=image.id, **self._image_values(image)))

    def update_image(self, image: Image) -> None:
        done = self._conn.execute(
            update(images).where(images.c.id == image.id).values(**self._image_values(image))
        ).rowcount
        if not done:
            raise NotFound(f"image {image.id} not found")

    def delete_image(self, image_id: str) -> None:
        row = self._one(select(images.c.digest).where(images.c.id == image_id))
        if row is None:
            raise NotFound(f"image {image_id} not found")
        self._conn.execute(delete(images).where(images.c.id == image_id))
        digest = row["digest"]
        if digest and self._one(select(images.c.id).where(images.c.digest == digest)) is None:
            self._conn.execute(delete(image_chunks).where(image_chunks.c.digest == digest))

    def add_network(self, network: Network) -> None:
        if self._one(select(networks.c.id).where(networks.c.name == network.name)) is not None:
            raise Conflict(f"network {network.name} already exists")
        self._conn.execute(
            insert(networks).values(
                id=network.id,
                name=network.name,
                subnet_id=network.subnet_id,
                cidr=network.cidr,
                gateway=network.gateway,
                pool_start=network.pool_start,
                pool_end=network.pool_end,
                mtu=network.mtu,
                created_at=self.t.w(network.created_at),
            )
        )

    def delete_network(self, network_id: str) -> None:
        used = self._conn.execute(
            select(func.count()).select_from(ports).where(ports.c.network_id == network_id)
        ).scalar_one()
        if used:
            raise Conflict(f"network {network_id} has {used} port(s): delete them first")
        if not self._conn.execute(delete(networks).where(networks.c.id == network_id)).rowcount:
            raise NotFound(f"network {network_id} not found")

    def used_ips(self, network_id: str) -> set[str]:
        rows = self._conn.execute(select(ports.c.ip).where(ports.c.network_id == network_id))
        return {r[0] for r in rows}

    def add_port(self, port: Port, owned: bool, now: datetime) -> None:
        self._conn.execute(
            insert(ports).values(
                id=port.id,
                network_id=port.network_id,
                mac=port.mac,
                ip=port.ip,
                instance_id=port.instance_id,
                name=port.name,
                tags=list(port.tags),
                bond=port.bond,
                owned=owned,
                created_at=self.t.w(now),
            )
        )

    def bind_port(self, port_id: str, instance_id: str | None) -> Port:
        stmt = select(ports).where(ports.c.id == port_id)
        row = self._one(stmt.with_for_update() if self._lock_rows else stmt)
        if row is None:
            raise NotFound(f"port {port_id} not found")
        if instance_id is not None and row["instance_id"] not in (None, instance_id):
            raise Conflict(f"port {port_id} is in use by instance {row['instance_id']}")
        self._conn.execute(
            update(ports).where(ports.c.id == port_id).values(instance_id=instance_id)
        )
        return port_of({**row, "instance_id": instance_id})

    def release_ports(self, instance_id: str) -> list[Port]:
        rows = self._conn.execute(select(ports).where(ports.c.instance_id == instance_id))
        out = [port_of(r) for r in rows.mappings().all()]
        self._conn.execute(
            delete(ports).where(and_(ports.c.instance_id == instance_id, ports.c.owned))
        )
        self._conn.execute(
            update(ports).where(ports.c.instance_id == instance_id).values(instance_id=None)
        )
        return out

    def delete_port(self, port_id: str) -> None:
        row = self._one(select(ports.c.instance_id).where(ports.c.id == port_id))
        if row is None:
            raise NotFound(f"port {port_id} not found")
        if row["instance_id"] is not None:
            raise Conflict(f"port {port_id} is in use by instance {row['instance_id']}")
        self._conn.execute(delete(ports).where(ports.c.id == port_id))

    def add_keypair(self, name: str, public_key: str, fingerprint: str, now: datetime) -> None:
        if self._one(select(keypairs.c.name).where(keypairs.c.name == name)) is not None:
            raise Conflict(f"key pair {name} already exists")
        self._conn.execute(
            insert(keypairs).values(
                name=name, public_key=public_key, fingerprint=fingerprint, created_at=self.t.w(now)
            )
        )

    def delete_keypair(self, name: str) -> None:
        if not self._conn.execute(delete(keypairs).where(keypairs.c.name == name)).rowcount:
            raise NotFound(f"key pair {name} not found")

    # -- placement groups and VNF operations --------------------------------------------
    def add_group(self, group: PlacementGroup, now: datetime) -> None:
        g = placement_groups.c
        same = select(g.id).where(
            and_(
                g.name == group.name,
                g.vnf_id.is_(None) if group.vnf_id is None else g.vnf_id == group.vnf_id,
            )
        )
        if self._one(same) is not None:
            raise Conflict(f"placement group {group.name} already exists")
        self._conn.execute(
            insert(placement_groups).values(
                id=group.id,
                name=group.name,
                policy=group.policy.value,
                level=group.level,
                max_per_domain=group.max_per_domain,
                vnf_id=group.vnf_id,
                generation=group.generation,
                created_at=self.t.w(now),
            )
        )

    def delete_group(self, group_id: str) -> None:
        held = members_of(self._conn, [group_id]).get(group_id, {})
        if held:
            raise Conflict(f"placement group {group_id} has {len(held)} member(s)")
        self._conn.execute(delete(group_members).where(group_members.c.group_id == group_id))
        done = self._conn.execute(delete(placement_groups).where(placement_groups.c.id == group_id))
        if not done.rowcount:
            raise NotFound(f"placement group {group_id} not found")

    def memberships(
        self, group_ids: Iterable[str]
    ) -> dict[str, tuple[PlacementGroup, dict[str, str | None]]]:
        ids = sorted(set(group_ids))
        if not ids:
            return {}
        stmt = select(placement_groups).where(placement_groups.c.id.in_(ids))
        rows = self._conn.execute(stmt.with_for_update() if self._lock_rows else stmt)
        found = {r["id"]: group_of(r) for r in rows.mappings().all()}
        missing = set(ids) - set(found)
        if missing:
            raise NotFound(f"placement group {sorted(missing)[0]} not found")
        held = members_of(self._conn, ids)
        # A member being migrated holds its destination too, under its migration's id: a
        # hard rule is kept with it on either host (never broken when it lands).
        m = migrations.c
        moving = self._conn.execute(
            select(m.id, m.instance_id, m.doc).where(m.active.is_(True))
        ).all()
        for mig_id, iid, doc in moving:
            for hosts in held.values():
                if iid in hosts:
                    hosts[mig_id] = doc["dest"]
        return {gid: (g, held.get(gid, {})) for gid, g in found.items()}

    def sal_usage(self) -> dict[str, dict[str, tuple[int, int]]]:
        return sal_usage_of(self._conn)

    def join_group(self, group_id: str, instance_id: str, generation: int) -> int:
        g = placement_groups.c
        done = self._conn.execute(
            update(placement_groups)
            .where(and_(g.id == group_id, g.generation == generation))
            .values(generation=generation + 1)
        ).rowcount
        if not done:
            raise ClaimConflict(f"placement group {group_id} changed meanwhile")
        self._conn.execute(insert(group_members).values(group_id=group_id, instance_id=instance_id))
        return generation + 1

    def moved_in_groups(self, instance_id: str) -> None:
        g = placement_groups.c
        ids = select(group_members.c.group_id).where(group_members.c.instance_id == instance_id)
        self._conn.execute(
            update(placement_groups).where(g.id.in_(ids)).values(generation=g.generation + 1)
        )

    def leave_groups(self, instance_id: str) -> None:
        self.moved_in_groups(instance_id)
        self._conn.execute(delete(group_members).where(group_members.c.instance_id == instance_id))

    def add_operation(self, op: VnfOperation) -> None:
        self._conn.execute(insert(vnf_operations).values(id=op.id, **self._op_values(op)))

    def update_operation(self, op: VnfOperation) -> None:
        self._conn.execute(
            update(vnf_operations).where(vnf_operations.c.id == op.id).values(**self._op_values(op))
        )

    def _op_values(self, op: VnfOperation) -> dict[str, Any]:
        return {
            "vnf_id": op.vnf_id,
            "operation": op.operation,
            "state": op.state,
            "params": dict(op.params),
            "result": dict(op.result),
            "started_at": self.t.w(op.started_at),
            "finished_at": self.t.w(op.finished_at),
        }

    # -- VNFs and instances -------------------------------------------------------------
    def add_vnf(self, vnf: Vnf) -> None:
        if vnf.client_token is not None:
            row = self._one(
                select(vnfs.c.id, vnfs.c.name).where(vnfs.c.client_token == vnf.client_token)
            )
            if row is not None:
                raise Conflict(
                    f"clientToken {vnf.client_token} was used already, by VNF {row['name']} "
                    f"({row['id']})"
                )
        self._conn.execute(
            insert(vnfs).values(
                id=vnf.id,
                name=vnf.name,
                sal=vnf.sal.value,
                priority=vnf.priority,
                descriptor=dict(vnf.descriptor),
                client_token=vnf.client_token,
                status=vnf.status,
                preemptible=vnf.preemptible,
                created_at=self.t.w(vnf.created_at),
            )
        )

    def delete_vnf(self, vnf_id: str) -> None:
        if not self._conn.execute(delete(vnfs).where(vnfs.c.id == vnf_id)).rowcount:
            raise NotFound(f"VNF {vnf_id} not found")

    def _instance_values(self, i: Instance) -> dict[str, Any]:
        return {
            "name": i.name,
            "vnf_id": i.spec.vnf_id,
            "vdu": i.spec.vdu,
            "idx": i.index,
            "status": i.status.value,
            "task_state": i.task_state.value if i.task_state else None,
            "power": i.power.value,
            "host": i.host,
            "incarnation": i.incarnation,
            "spec": i.spec.to_dict(),
            "fault": i.fault.to_dict() if i.fault else None,
            "launched_at": self.t.w(i.launched_at),
            "reboot_seq": i.reboot_seq,
            "reboot_hard": i.reboot_hard,
            "version": i.version,
            "project": i.project,
            "key_name": i.key_name,
            "notes": list(i.notes),
            "created_at": self.t.w(i.created_at),
            "updated_at": self.t.w(i.updated_at),
        }

    def add_instance(self, instance: Instance) -> None:
        if instance.host:
            self.touched.add(instance.host)
        self._conn.execute(
            insert(instances).values(id=instance.id, **self._instance_values(instance))
        )
        journal(self._conn, self.t, None, instance)

    def instance_for_update(self, instance_id: str) -> Instance:
        stmt = select(instances).where(instances.c.id == instance_id)
        row = self._one(stmt.with_for_update() if self._lock_rows else stmt)
        if row is None:
            raise NotFound(f"instance {instance_id} not found")
        return instance_of(row)

    def update_instance(self, old: Instance, new: Instance) -> None:
        self.touched.update(h for h in (old.host, new.host) if h)
        done = self._conn.execute(
            update(instances)
            .where(and_(instances.c.id == old.id, instances.c.version == old.version))
            .values(**self._instance_values(new))
        ).rowcount
        if not done:
            raise ClaimConflict(f"instance {old.id} changed meanwhile")
        journal(self._conn, self.t, old, new)

    def instances_of(self, host: str) -> list[Instance]:
        stmt = select(instances).where(
            and_(instances.c.host == host, instances.c.status != InstanceStatus.DELETED.value)
        )
        rows = self._conn.execute(stmt.with_for_update() if self._lock_rows else stmt)
        return [instance_of(r) for r in rows.mappings().all()]

    def vnf_instances(self, vnf_id: str) -> list[Instance]:
        stmt = select(instances).where(
            and_(instances.c.vnf_id == vnf_id, instances.c.status != InstanceStatus.DELETED.value)
        )
        rows = self._conn.execute(stmt.with_for_update() if self._lock_rows else stmt)
        return [instance_of(r) for r in rows.mappings().all()]

    # -- hosts and claims ---------------------------------------------------------------
    def hosts(self) -> dict[str, HostResources]:
        rows = self._conn.execute(select(compute_hosts)).mappings().all()
        return {r["host"]: host_of(r) for r in rows}

    def host_changes(self, known: Mapping[str, int], usage: bool) -> HostChanges:
        return host_changes(self._conn, known, usage, self.touched)

    def upsert_host(
        self, host: HostResources, reported: dict[str, object] | None, now: datetime
    ) -> int:
        values: dict[str, Any] = {
            "vcpus": host.vcpus,
            "ram_mib": host.ram_mib,
            "disk_gib": host.disk_gib,
            "cpu_ratio": host.cpu_ratio,
            "ram_ratio": host.ram_ratio,
            "disk_ratio": host.disk_ratio,
            "traits": sorted(host.traits),
            "hypervisor": host.hypervisor,
            "updated_at": self.t.w(now),
        }
        if reported is not None:
            values["reported"] = reported
        self.touched.add(host.host)
        row = self._one(select(compute_hosts.c.generation).where(compute_hosts.c.host == host.host))
        if row is None:
            self._conn.execute(
                insert(compute_hosts).values(
                    host=host.host,
                    used_vcpus=0,
                    used_ram_mib=0,
                    used_disk_gib=0,
                    generation=1,
                    **values,
                )
            )
            return 1
        gen = int(row["generation"]) + 1
        self._conn.execute(
            update(compute_hosts)
            .where(compute_hosts.c.host == host.host)
            .values(generation=gen, **values)
        )
        return gen

    def claim(
        self, host: str, generation: int, instance_id: str, flavor: Flavor, now: datetime
    ) -> int:
        h = compute_hosts.c
        self.touched.add(host)
        done = self._conn.execute(
            update(compute_hosts)
            .where(
                and_(
                    h.host == host,
                    h.generation == generation,
                    h.used_vcpus + flavor.vcpus <= h.vcpus * h.cpu_ratio,
                    h.used_ram_mib + flavor.ram_mib <= h.ram_mib * h.ram_ratio,
                    h.used_disk_gib + flavor.disk_gib <= h.disk_gib * h.disk_ratio,
                )
            )
            .values(
                generation=h.generation + 1,
                used_vcpus=h.used_vcpus + flavor.vcpus,
                used_ram_mib=h.used_ram_mib + flavor.ram_mib,
                used_disk_gib=h.used_disk_gib + flavor.disk_gib,
            )
        ).rowcount
        if not done:
            row = self._one(select(compute_hosts.c.generation).where(h.host == host))
            if row is None:
                raise NotFound(f"compute host {host} not found")
            if int(row["generation"]) != generation:
                raise ClaimConflict(f"host {host} changed meanwhile (generation {generation})")
            raise Conflict(f"host {host} has no room left for flavor {flavor.name}")
        self._conn.execute(
            insert(allocations).values(
                instance_id=instance_id,
                host=host,
                vcpus=flavor.vcpus,
                ram_mib=flavor.ram_mib,
                disk_gib=flavor.disk_gib,
                created_at=self.t.w(now),
            )
        )
        return generation + 1

    def release(self, instance_id: str) -> tuple[str, int] | None:
        row = self._one(select(allocations).where(allocations.c.instance_id == instance_id))
        if row is None:
            return None
        h = compute_hosts.c
        self.touched.add(row["host"])
        self._conn.execute(
            update(compute_hosts)
            .where(h.host == row["host"])
            .values(
                generation=h.generation + 1,
                used_vcpus=h.used_vcpus - row["vcpus"],
                used_ram_mib=h.used_ram_mib - row["ram_mib"],
                used_disk_gib=h.used_disk_gib - row["disk_gib"],
            )
        )
        self._conn.execute(delete(allocations).where(allocations.c.instance_id == instance_id))
        return row["host"], self.generation(row["host"])

    def generation(self, host: str) -> int:
        row = self._one(select(compute_hosts.c.generation).where(compute_hosts.c.host == host))
        if row is None:
            raise NotFound(f"compute host {host} not found")
        return int(row["generation"])

    def bump(self, host: str) -> int:
        h = compute_hosts.c
        self.touched.add(host)
        self._conn.execute(
            update(compute_hosts).where(h.host == host).values(generation=h.generation + 1)
        )
        return self.generation(host)

    # -- actions, console tokens --------------------------------------------------------
    def add_action(self, action: InstanceAction) -> int:
        result = self._conn.execute(
            insert(instance_actions).values(
                instance_id=action.instance_id,
                action=action.action,
                request_id=action.request_id,
                user=action.user,
                started_at=self.t.w(action.started_at),
                finished_at=self.t.w(action.finished_at),
                result=action.result,
                message=action.message,
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def finish_action(
        self, instance_id: str, action: str | None, result: str, message: str, now: datetime
    ) -> None:
        a = instance_actions.c
        cond = and_(a.instance_id == instance_id, a.finished_at.is_(None))
        if action is not None:
            cond = and_(cond, a.action == action)
        row = self._one(select(a.seq).where(cond).order_by(a.seq.desc()).limit(1))
        if row is None:
            return
        self._conn.execute(
            update(instance_actions)
            .where(a.seq == row["seq"])
            .values(finished_at=self.t.w(now), result=result, message=message)
        )

    def add_console_token(
        self, token_hash: str, instance_id: str, now: datetime, expires_at: datetime
    ) -> None:
        self._conn.execute(
            delete(console_tokens).where(console_tokens.c.expires_at < self.t.w(now))
        )
        self._conn.execute(
            insert(console_tokens).values(
                token_hash=token_hash,
                instance_id=instance_id,
                created_at=self.t.w(now),
                expires_at=self.t.w(expires_at),
            )
        )

    def take_console_token(self, token_hash: str, now: datetime) -> str:
        c = console_tokens.c
        row = self._one(select(console_tokens).where(c.token_hash == token_hash))
        self._conn.execute(delete(console_tokens).where(c.token_hash == token_hash))
        if row is None or utc(row["expires_at"]) <= now:
            raise NotFound("console token unknown, used or expired")
        return str(row["instance_id"])
