"""The compute catalog (issue 14): flavors, images (the image store), networks, ports, key
pairs. Synchronous: the API calls it from worker threads; writes go through the store writer.

The image store is content-addressed: an upload is hashed (SHA-256) while it is spooled to a
temporary file, then kept in the database in 1 MiB chunks under its digest, so every
controller can serve it and the database's replication keeps a copy on its standbys. Two
images with the same content share their chunks.
"""

from __future__ import annotations

import base64
import hashlib
import random
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import IO

from vimha.domain import addressing
from vimha.domain.clock import Clock
from vimha.domain.compute import Flavor, Image, Network, Port, WatchdogAction
from vimha.domain.errors import Conflict, InvalidInput, NotFound
from vimha.engine.writer import StoreWriter
from vimha.ports.store import Store, UnitOfWork

CHUNK = 1 << 20
IMAGE_STATES = ("queued", "saving", "active")
WATCHDOG_SPEC = "hw:watchdog_action"  # Nova's flavor extra spec, understood too


def check_flavor_specs(extra_specs: Mapping[str, str]) -> None:
    action = extra_specs.get(WATCHDOG_SPEC)
    if action is not None and action not in {a.value for a in WatchdogAction}:
        raise InvalidInput(
            f"extra_specs.{WATCHDOG_SPEC}: {action!r} is not one of "
            f"{', '.join(a.value for a in WatchdogAction)}"
        )


class Catalog:
    def __init__(self, store: Store, writer: StoreWriter, clock: Clock) -> None:
        self.store = store
        self.writer = writer
        self.clock = clock
        self.rng = random.Random()

    # -- flavors ------------------------------------------------------------------------
    def create_flavor(
        self,
        name: str,
        vcpus: int,
        ram_mib: int,
        disk_gib: int,
        extra_specs: Mapping[str, str] | None = None,
        flavor_id: str | None = None,
    ) -> Flavor:
        if vcpus < 1 or ram_mib < 1 or disk_gib < 0:
            raise InvalidInput("flavor: vcpus >= 1, ramMib >= 1, diskGib >= 0")
        check_flavor_specs(extra_specs or {})
        flavor = Flavor(
            flavor_id or str(uuid.uuid4()), name, vcpus, ram_mib, disk_gib, dict(extra_specs or {})
        )
        self.writer.call(lambda uow: uow.compute.add_flavor(flavor, self.clock.now()))
        return flavor

    def set_flavor_specs(self, ref: str, specs: Mapping[str, str]) -> Flavor:
        """Nova's flavor extra specs are set after the flavor exists."""
        flavor = self.store.compute.flavor(ref)
        check_flavor_specs(specs)
        new = replace(flavor, extra_specs={**flavor.extra_specs, **specs})

        def work(uow: UnitOfWork) -> None:
            uow.compute.delete_flavor(flavor.id)
            uow.compute.add_flavor(new, self.clock.now())

        self.writer.call(work)
        return new

    def unset_flavor_spec(self, ref: str, key: str) -> Flavor:
        """Remove one extra spec (Nova's DELETE .../os-extra_specs/{key}); NotFound."""
        flavor = self.store.compute.flavor(ref)
        if key not in flavor.extra_specs:
            raise NotFound(f"flavor {flavor.name} has no extra spec {key}")
        new = replace(flavor, extra_specs={k: v for k, v in flavor.extra_specs.items() if k != key})

        def work(uow: UnitOfWork) -> None:
            uow.compute.delete_flavor(flavor.id)
            uow.compute.add_flavor(new, self.clock.now())

        self.writer.call(work)
        return new

    def delete_flavor(self, ref: str) -> None:
        flavor = self.store.compute.flavor(ref)
        self.writer.call(lambda uow: uow.compute.delete_flavor(flavor.id))

    # -- images -------------------------------------------------------------------------
    def create_image(
        self,
        name: str,
        disk_format: str = "raw",
        container_format: str = "bare",
        properties: Mapping[str, str] | None = None,
        image_id: str | None = None,
        min_disk_gib: int = 0,
        min_ram_mib: int = 0,
        visibility: str = "public",
    ) -> Image:
        now = self.clock.now()
        image = Image(
            image_id or str(uuid.uuid4()),
            name,
            "queued",
            None,
            0,
            disk_format,
            container_format,
            dict(properties or {}),
            now,
            now,
            min_disk_gib,
            min_ram_mib,
            visibility,
        )
        self.writer.call(lambda uow: uow.compute.add_image(image))
        return image

    def upload(self, image_id: str, data: Iterable[bytes]) -> Image:
        """Store the image's content (once: an active image's data is immutable)."""
        image = self.store.compute.image(image_id)
        if image.status == "active":
            raise Conflict(f"image {image_id} already has its data (images are immutable)")
        with tempfile.TemporaryFile() as spool:
            digest, size = _spool(data, spool)
            if size == 0:
                raise InvalidInput("image data: empty")
            spool.seek(0)
            self.store.compute.save_image_data(digest, _chunks(spool))
        done = replace(
            image, status="active", digest=digest, size=size, updated_at=self.clock.now()
        )
        self.writer.call(lambda uow: uow.compute.update_image(done))
        return done

    def import_file(self, name: str, path: str, **fields: object) -> Image:
        image = self.create_image(name, **fields)  # type: ignore[arg-type]
        with open(path, "rb") as fh:
            return self.upload(image.id, iter(lambda: fh.read(CHUNK), b""))

    def data(self, image_id: str) -> tuple[Image, Iterator[bytes]]:
        image = self.store.compute.image(image_id)
        if image.digest is None:
            raise NotFound(f"image {image_id} has no data yet")
        return image, self.store.compute.image_data(image.digest)

    def update_image(
        self,
        image_id: str,
        name: str | None = None,
        properties: Mapping[str, str | None] | None = None,
    ) -> Image:
        image = self.store.compute.image(image_id)
        props = dict(image.properties)
        for key, value in (properties or {}).items():
            if value is None:
                props.pop(key, None)
            else:
                props[key] = value
        new = replace(image, name=name or image.name, properties=props, updated_at=self.clock.now())
        self.writer.call(lambda uow: uow.compute.update_image(new))
        return new

    def delete_image(self, image_id: str) -> None:
        image = self.store.compute.image(image_id)
        self.writer.call(lambda uow: uow.compute.delete_image(image.id))

    # -- networks and ports -------------------------------------------------------------
    def create_network(
        self,
        name: str,
        cidr: str,
        gateway: str | None = None,
        pool_start: str | None = None,
        pool_end: str | None = None,
        network_id: str | None = None,
    ) -> Network:
        cidr, gw, start, end = addressing.check_subnet(cidr, gateway, pool_start, pool_end)
        network = Network(
            network_id or str(uuid.uuid4()),
            name,
            str(uuid.uuid4()),
            cidr,
            gw,
            start,
            end,
            self.clock.now(),
        )
        self.writer.call(lambda uow: uow.compute.add_network(network))
        return network

    def delete_network(self, ref: str) -> None:
        network = self.store.compute.network(ref)
        self.writer.call(lambda uow: uow.compute.delete_network(network.id))

    def create_port(
        self,
        network_ref: str,
        mac: str | None = None,
        ip: str | None = None,
        name: str = "",
        tags: tuple[str, ...] = (),
    ) -> Port:
        """A port of its own (kept when an instance that used it is deleted)."""
        network = self.store.compute.network(network_ref)
        fixed_mac = addressing.check_mac(mac) if mac else None

        def work(uow: UnitOfWork) -> Port:
            used = uow.compute.used_ips(network.id)
            if ip is not None:
                address = addressing.check_fixed_ip(network.name, network.cidr, ip, used)
            else:
                address = addressing.next_free(
                    network.name, network.pool_start, network.pool_end, used
                )[0]
            port = Port(
                str(uuid.uuid4()),
                network.id,
                fixed_mac or addressing.random_mac(self.rng),
                address,
                None,
                name,
                tags,
            )
            uow.compute.add_port(port, owned=False, now=self.clock.now())
            return port

        return self.writer.call(work)

    def delete_port(self, port_id: str) -> None:
        self.writer.call(lambda uow: uow.compute.delete_port(port_id))

    # -- key pairs ----------------------------------------------------------------------
    def add_keypair(self, name: str, public_key: str) -> str:
        """Store a public key; returns its fingerprint (MD5, as Nova shows it)."""
        fingerprint = key_fingerprint(public_key)
        self.writer.call(
            lambda uow: uow.compute.add_keypair(name, public_key, fingerprint, self.clock.now())
        )
        return fingerprint

    def delete_keypair(self, name: str) -> None:
        self.writer.call(lambda uow: uow.compute.delete_keypair(name))


def key_fingerprint(public_key: str) -> str:
    parts = public_key.strip().split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-")):
        raise InvalidInput("public_key: not an OpenSSH public key (ssh-ed25519 AAAA... name)")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise InvalidInput("public_key: its key data is not base64") from None
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _spool(data: Iterable[bytes], spool: IO[bytes]) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    for piece in data:
        sha.update(piece)
        spool.write(piece)
        size += len(piece)
    return sha.hexdigest(), size


def _chunks(fh: IO[bytes]) -> Iterator[bytes]:
    while piece := fh.read(CHUNK):
        yield piece
