"""Guest specs for the hypervisor tests: an OpenStack config drive for a set of ports, and the
initial-state digest the demo guest must report for it (computed here from the spec, as the
guest computes it from what it sees)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from pathlib import Path

from vimha.domain import configdrive
from vimha.domain.compute import ConfigDrive, Flavor, InstanceSpec, PortSpec
from vimha.ports.hypervisor import GuestPort, GuestSpec, GuestWatchdog, WatchdogAction


def config_drive(
    instance_id: str, name: str, vnf: str, ports: tuple[GuestPort, ...]
) -> dict[str, bytes]:
    """The config drive vimha lays out (domain/configdrive.py) for an instance of `vnf` with
    these ports: the guest reports each port's network name from its meta_data.json."""
    spec = InstanceSpec(
        "demo-guest",
        Flavor("f", "tiny", 1, 256, 1),
        tuple(
            PortSpec(
                f"p{i}", f"net-{p.network}", p.network, p.mac, p.ip, p.prefix, p.gateway, p.tags
            )
            for i, p in enumerate(ports)
        ),
        ConfigDrive(user_data="#!/bin/sh\necho hello from user data\n"),
        vnf_id=vnf,
        vdu="vdu",
    )
    return configdrive.layout(instance_id, name, spec)


def expected_digest(drive: Mapping[str, bytes], ports: tuple[GuestPort, ...]) -> str:
    return configdrive.digest(drive, [(p.mac, p.ip) for p in ports])


def spec(
    instance_id: str,
    image: Path,
    ports: tuple[GuestPort, ...] = (),
    incarnation: int = 1,
    watchdog: GuestWatchdog | None = GuestWatchdog(5.0, WatchdogAction.RESET),
    image_format: str = "kernel+initrd",
    name: str = "",
    vnf: str = "vfw",
    ram_mib: int = 256,
) -> GuestSpec:
    name = name or f"vm-{instance_id[:8]}"
    return GuestSpec(
        instance_id=instance_id,
        name=name,
        incarnation=incarnation,
        vcpus=1,
        ram_mib=ram_mib,
        disk_gib=1,
        image_id="demo-guest",
        image_path=str(image),
        image_format=image_format,
        ports=ports,
        config_drive=config_drive(instance_id, name, vnf, ports),
        watchdog=watchdog,
        vnf=vnf,
    )


def fake_bundle(dest: Path) -> Path:
    """A kernel+initrd bundle that boots nothing (libvirt's test driver never reads it)."""
    with tarfile.open(dest, "w") as tar:
        for member, data in (("vmlinuz", b"kernel"), ("initrd.img", b"initrd")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest
