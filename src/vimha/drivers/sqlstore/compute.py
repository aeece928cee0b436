"""The compute part of the SQL store (ports/compute.py): reads, each on its own
connection, and the image store's bulk writes. Writes inside a unit of work are in
`compute_uow.py` (`uow.compute`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime

from sqlalchemy import and_, func, insert, select
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
    action_of,
    flavor_of,
    group_of,
    host_of,
    image_of,
    instance_of,
    members_of,
    network_of,
    operation_of,
    port_of,
    sal_usage_of,
    utc,
    vnf_of,
)
from vimha.drivers.sqlstore.compute_tables import (
    compute_hosts,
    flavors,
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

CHUNK = 1 << 20


class SqlCompute:
    """Reads (each on its own connection) and the image store's bulk writes."""

    def __init__(
        self,
        read: Callable[[], AbstractContextManager[Connection]],
        write: Callable[[], AbstractContextManager[Connection]],
        sqlite: bool,
    ) -> None:
        self._read = read
        self._write = write
        self.t = Times(sqlite)

    # -- catalog ------------------------------------------------------------------------
    def flavors(self) -> list[Flavor]:
        with self._read() as conn:
            rows = conn.execute(select(flavors).order_by(flavors.c.name)).mappings().all()
        return [flavor_of(r) for r in rows]

    def flavor(self, ref: str) -> Flavor:
        with self._read() as conn:
            row = (
                conn.execute(select(flavors).where((flavors.c.id == ref) | (flavors.c.name == ref)))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"flavor {ref} not found")
        return flavor_of(row)

    def images(self) -> list[Image]:
        with self._read() as conn:
            rows = conn.execute(select(images).order_by(images.c.created_at)).mappings().all()
        return [image_of(r) for r in rows]

    def image(self, ref: str) -> Image:
        with self._read() as conn:
            row = conn.execute(select(images).where(images.c.id == ref)).mappings().first()
            if row is None:
                named = conn.execute(select(images).where(images.c.name == ref)).mappings().all()
                if len(named) > 1:
                    raise Conflict(f"{len(named)} images are named {ref}: use an id")
                row = named[0] if named else None
        if row is None:
            raise NotFound(f"image {ref} not found")
        return image_of(row)

    def image_data(self, digest: str) -> Iterator[bytes]:
        with self._read() as conn:
            count = conn.execute(
                select(func.count())
                .select_from(image_chunks)
                .where(image_chunks.c.digest == digest)
            ).scalar_one()
        if not count:
            raise NotFound(f"no image data with digest {digest}")
        for idx in range(count):  # one chunk in memory at a time
            with self._read() as conn:
                data = conn.execute(
                    select(image_chunks.c.data).where(
                        and_(image_chunks.c.digest == digest, image_chunks.c.idx == idx)
                    )
                ).scalar_one()
            yield bytes(data)

    def save_image_data(self, digest: str, chunks: Iterable[bytes]) -> int:
        with self._write() as conn:
            present = conn.execute(
                select(func.count())
                .select_from(image_chunks)
                .where(image_chunks.c.digest == digest)
            ).scalar_one()
            if present:
                return int(present)
            n = 0
            for n, data in enumerate(chunks, start=1):
                conn.execute(insert(image_chunks).values(digest=digest, idx=n - 1, data=data))
            return n

    def networks(self) -> list[Network]:
        with self._read() as conn:
            rows = conn.execute(select(networks).order_by(networks.c.name)).mappings().all()
        return [network_of(r) for r in rows]

    def network(self, ref: str) -> Network:
        with self._read() as conn:
            row = (
                conn.execute(
                    select(networks).where(
                        (networks.c.id == ref)
                        | (networks.c.name == ref)
                        | (networks.c.subnet_id == ref)
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"network {ref} not found")
        return network_of(row)

    def ports(self, network_id: str | None = None, instance_id: str | None = None) -> list[Port]:
        stmt = select(ports).order_by(ports.c.created_at, ports.c.id)
        if network_id is not None:
            stmt = stmt.where(ports.c.network_id == network_id)
        if instance_id is not None:
            stmt = stmt.where(ports.c.instance_id == instance_id)
        with self._read() as conn:
            return [port_of(r) for r in conn.execute(stmt).mappings().all()]

    def port(self, port_id: str) -> Port:
        with self._read() as conn:
            row = conn.execute(select(ports).where(ports.c.id == port_id)).mappings().first()
        if row is None:
            raise NotFound(f"port {port_id} not found")
        return port_of(row)

    def keypairs(self) -> list[tuple[str, str, str, datetime]]:
        with self._read() as conn:
            rows = conn.execute(select(keypairs).order_by(keypairs.c.name)).mappings().all()
        return [(r["name"], r["public_key"], r["fingerprint"], utc(r["created_at"])) for r in rows]

    # -- VNFs and instances -------------------------------------------------------------
    def vnfs(self) -> list[Vnf]:
        with self._read() as conn:
            rows = conn.execute(select(vnfs).order_by(vnfs.c.created_at)).mappings().all()
        return [vnf_of(r) for r in rows]

    def vnf(self, ref: str) -> Vnf:
        with self._read() as conn:
            row = conn.execute(select(vnfs).where(vnfs.c.id == ref)).mappings().first()
            if row is None:
                row = conn.execute(select(vnfs).where(vnfs.c.name == ref)).mappings().first()
        if row is None:
            raise NotFound(f"VNF {ref} not found")
        return vnf_of(row)

    def instances(
        self, host: str | None = None, vnf_id: str | None = None, deleted: bool = False
    ) -> list[Instance]:
        stmt = select(instances).order_by(instances.c.created_at, instances.c.idx)
        if host is not None:
            stmt = stmt.where(instances.c.host == host)
        if vnf_id is not None:
            stmt = stmt.where(instances.c.vnf_id == vnf_id)
        if not deleted:
            stmt = stmt.where(instances.c.status != InstanceStatus.DELETED.value)
        with self._read() as conn:
            return [instance_of(r) for r in conn.execute(stmt).mappings().all()]

    def instance(self, instance_id: str) -> Instance:
        with self._read() as conn:
            row = (
                conn.execute(select(instances).where(instances.c.id == instance_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"instance {instance_id} not found")
        return instance_of(row)

    def actions(self, instance_id: str) -> list[InstanceAction]:
        with self._read() as conn:
            rows = (
                conn.execute(
                    select(instance_actions)
                    .where(instance_actions.c.instance_id == instance_id)
                    .order_by(instance_actions.c.seq)
                )
                .mappings()
                .all()
            )
        return [action_of(r) for r in rows]

    def hosts(self) -> dict[str, HostResources]:
        with self._read() as conn:
            rows = conn.execute(select(compute_hosts)).mappings().all()
        return {r["host"]: host_of(r) for r in rows}

    def reported(self, host: str) -> dict[str, object] | None:
        with self._read() as conn:
            value = conn.execute(
                select(compute_hosts.c.reported).where(compute_hosts.c.host == host)
            ).scalar()
        return None if value is None else dict(value)

    def groups(self, vnf_id: str | None = None) -> list[PlacementGroup]:
        stmt = select(placement_groups).order_by(placement_groups.c.created_at)
        if vnf_id is not None:
            stmt = stmt.where(placement_groups.c.vnf_id == vnf_id)
        with self._read() as conn:
            return [group_of(r) for r in conn.execute(stmt).mappings().all()]

    def group(self, ref: str) -> PlacementGroup:
        g = placement_groups.c
        with self._read() as conn:
            row = conn.execute(select(placement_groups).where(g.id == ref)).mappings().first()
            if row is None:
                named = conn.execute(select(placement_groups).where(g.name == ref)).mappings()
                rows = named.all()
                if len(rows) > 1:
                    raise Conflict(f"{len(rows)} placement groups are named {ref}: use an id")
                row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"placement group {ref} not found")
        return group_of(row)

    def members(self, group_id: str) -> dict[str, str | None]:
        with self._read() as conn:
            return members_of(conn, [group_id]).get(group_id, {})

    def sal_usage(self) -> dict[str, dict[str, tuple[int, int]]]:
        with self._read() as conn:
            return sal_usage_of(conn)

    def operations(self, vnf_id: str) -> list[VnfOperation]:
        o = vnf_operations.c
        with self._read() as conn:
            rows = conn.execute(
                select(vnf_operations).where(o.vnf_id == vnf_id).order_by(o.started_at)
            ).mappings()
            return [operation_of(r) for r in rows.all()]

    def operation(self, op_id: str) -> VnfOperation:
        with self._read() as conn:
            row = (
                conn.execute(select(vnf_operations).where(vnf_operations.c.id == op_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"VNF operation {op_id} not found")
        return operation_of(row)

    def marker(self) -> str:
        """Moves when a VNF or an instance is created, changed or deleted."""
        i, v = instances.c, vnfs.c
        with self._read() as conn:
            n_i, last_i = conn.execute(select(func.count(), func.max(i.updated_at))).one()
            n_v, last_v = conn.execute(select(func.count(), func.max(v.created_at))).one()
        return f"{n_i}:{last_i}:{n_v}:{last_v}"

    def generations(self) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute(select(compute_hosts.c.host, compute_hosts.c.generation)).all()
        return {h: int(g) for h, g in rows}
