"""The demo guest's builder, on made-up inputs: module dependencies, the cpio archive, the
domain XML's metadata read back."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vimha.cloud.guest_image import Cpio, GuestImageError, module_closure
from vimha.drivers.libvirt_xml import DomainFiles, DomainMeta, domain_xml, parse_meta
from vimha.ports.hypervisor import GuestPort, GuestSpec, GuestWatchdog, WatchdogAction


def fake_module(root: Path, rel: str, depends: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF...\0license=GPL\0depends=" + depends.encode() + b"\0vermagic=x\0")


def test_modules_come_after_what_they_depend_on(tmp_path: Path) -> None:
    fake_module(tmp_path, "drivers/virtio/virtio.ko", "")
    fake_module(tmp_path, "drivers/virtio/virtio_ring.ko", "virtio")
    fake_module(tmp_path, "drivers/virtio/virtio_pci.ko", "virtio_ring,virtio")
    fake_module(tmp_path, "drivers/misc/pvpanic/pvpanic.ko", "")
    fake_module(tmp_path, "drivers/misc/pvpanic/pvpanic-mmio.ko", "pvpanic")
    order = [p.name for p in module_closure(tmp_path, ["virtio_pci", "pvpanic_mmio", "virtio"])]
    assert order == [
        "virtio.ko",
        "virtio_ring.ko",
        "virtio_pci.ko",
        "pvpanic.ko",
        "pvpanic-mmio.ko",
    ]


def test_a_missing_module_is_named(tmp_path: Path) -> None:
    fake_module(tmp_path, "a.ko", "b")
    with pytest.raises(GuestImageError, match="kernel module b"):
        module_closure(tmp_path, ["a"])


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox lists cpio archives")
def test_the_cpio_archive_is_newc(tmp_path: Path) -> None:
    cpio = Cpio()
    cpio.directory("bin")
    cpio.file("bin/hello", b"#!/bin/sh\necho hi\n", executable=True)
    cpio.symlink("bin/sh", "busybox")
    cpio.chardev("console", 5, 1)
    data = cpio.finish()
    assert len(data) % 4 == 0
    listed = subprocess.run(
        ["busybox", "cpio", "-t", "-v"], input=data, capture_output=True, check=True
    ).stdout.decode()
    lines = listed.splitlines()
    assert [line.split()[-1] for line in lines if "->" not in line] == [
        "bin",
        "bin/hello",
        "console",
    ]
    assert any(line.startswith("lrwxrwxrwx") and "bin/sh -> busybox" in line for line in lines)
    assert any(line.startswith("-rwxr-xr-x") and "bin/hello" in line for line in lines)
    assert Cpio().finish() != data


def test_the_domain_metadata_reads_back() -> None:
    spec = GuestSpec(
        instance_id="i-1",
        name="vm <1>",
        incarnation=9,
        vcpus=2,
        ram_mib=512,
        disk_gib=1,
        image_id="img-1",
        image_path="/images/img-1",
        image_format="kernel+initrd",
        ports=(GuestPort("vnf-a", "52:54:00:00:00:01", "10.0.0.2", 24),),
        config_drive={},
        watchdog=GuestWatchdog(0.5, WatchdogAction.PAUSE),
    )
    files = DomainFiles(Path("/s/c.iso"), Path("/s/console.log"), Path("/s/k"), Path("/s/i"))
    xml = domain_xml(spec, "vimha-n1-i-1", "n1", files, cmdline="console=ttyS0")
    assert parse_meta(xml) == DomainMeta("i-1", 9, "n1", "img-1")
    assert "vimha.watchdog=1" in xml and "vimha.incarnation=9" in xml
    assert parse_meta("<domain><name>other</name></domain>") is None
    assert parse_meta("not xml") is None
