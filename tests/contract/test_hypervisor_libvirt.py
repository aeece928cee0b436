"""The hypervisor contract against the libvirt driver on libvirt's test driver
(`libvirt+test:///default`: in-process, no daemon), plus what only this driver promises: the
domain it defines (kernel command line, NICs, watchdog, config drive) and node scopes."""

from __future__ import annotations

import asyncio
import io
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

pytest.importorskip("libvirt", reason="libvirt-python (pip, with libvirt-dev)")
import libvirt
import pycdlib

from tests.contract.hypervisor_suite import *  # noqa: F403
from tests.contract.hypervisor_suite import MakeSpec, new_id, states
from tests.support.guests import fake_bundle, spec
from vimha.domain.errors import Conflict, InvalidInput
from vimha.drivers.hv_libvirt import LibvirtHypervisor, libvirt_uri
from vimha.ports.hypervisor import (
    GuestPort,
    GuestSpec,
    GuestState,
    GuestWatchdog,
    Hypervisor,
    WatchdogAction,
)

URL = "libvirt+test:///default"
PORTS = (
    GuestPort("vnf-a", "52:54:00:AA:00:01", "10.31.0.5", 24, bridge="vh-lv-br-a", tags=("ctl",)),
    GuestPort("vnf-b", "52:54:00:aa:00:02", "10.31.1.5", 24),
)


@pytest.fixture
def scope() -> str:
    return f"vh-lv-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return fake_bundle(tmp_path / "bundle.tar")


@pytest.fixture
def make_spec(bundle: Path) -> MakeSpec:
    def make(instance_id: str, incarnation: int = 1, **kw: object) -> GuestSpec:
        return spec(instance_id, bundle, PORTS, incarnation=incarnation, **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def hypervisor(tmp_path: Path, scope: str) -> AsyncIterator[LibvirtHypervisor]:
    hv = LibvirtHypervisor(URL, tmp_path / "state", scope=scope, shutdown_grace=1.0)
    try:
        yield hv
    finally:
        for guest in await hv.list_guests():
            await hv.destroy(guest.instance_id)
        await hv.close()


@pytest.fixture
def reopen(tmp_path: Path, scope: str) -> Callable[[], Awaitable[Hypervisor]]:
    async def make() -> Hypervisor:
        return LibvirtHypervisor(URL, tmp_path / "state", scope=scope)

    return make


@pytest.fixture
def kill_outside(scope: str) -> Callable[[str], Awaitable[None]]:
    async def kill(instance_id: str) -> None:
        def run() -> None:
            conn = libvirt.open("test:///default")
            try:
                conn.lookupByName(f"vimha-{scope}-{instance_id}").destroy()
            finally:
                conn.close()

        await asyncio.to_thread(run)

    return kill


def domain(hv: LibvirtHypervisor, instance_id: str) -> ET.Element:
    conn = libvirt.open("test:///default")
    try:
        return ET.fromstring(conn.lookupByName(hv.prefix + instance_id).XMLDesc(0))
    finally:
        conn.close()


def test_urls_map_to_libvirt_uris() -> None:
    assert libvirt_uri("libvirt:///system") == "qemu:///system"
    assert libvirt_uri("libvirt+test:///default") == "test:///default"
    assert libvirt_uri("libvirt+qemu:///system?socket=/x") == "qemu:///system?socket=/x"
    with pytest.raises(InvalidInput):
        libvirt_uri("process://")


async def test_the_domain_has_the_flavor_nics_watchdog_and_incarnation(
    hypervisor: LibvirtHypervisor, make_spec: MakeSpec
) -> None:
    iid = new_id()
    s = make_spec(iid, incarnation=7, watchdog=GuestWatchdog(4.2, WatchdogAction.POWEROFF))
    await hypervisor.spawn(s)
    dom = domain(hypervisor, iid)
    assert dom.findtext("name") == f"vimha-{hypervisor.scope}-{iid}"
    assert dom.find("memory") is not None and dom.findtext("vcpu") == "1"
    cmdline = dom.findtext("os/cmdline") or ""
    assert "vimha.incarnation=7" in cmdline.split() and "vimha.watchdog=5" in cmdline.split()
    nics = dom.findall("devices/interface")
    assert [(n.get("type"), n.find("mac").get("address")) for n in nics] == [  # type: ignore[union-attr]
        ("bridge", "52:54:00:aa:00:01"),
        ("user", "52:54:00:aa:00:02"),
    ]
    assert nics[0].find("source").get("bridge") == "vh-lv-br-a"  # type: ignore[union-attr]
    assert all(n.find("model").get("type") == "virtio" for n in nics)  # type: ignore[union-attr]
    watchdog = dom.find("devices/watchdog")
    assert watchdog is not None
    assert (watchdog.get("model"), watchdog.get("action")) == ("i6300esb", "poweroff")
    assert dom.findtext("on_crash") == "destroy"
    folder = hypervisor.state_dir / f"vimha-{hypervisor.scope}-{iid}"
    assert dom.findtext("os/kernel") == str(folder / "vmlinuz")
    log = dom.find("devices/serial/log")
    assert log is not None and log.get("file") == str(folder / "console.log")


async def test_the_config_drive_is_iso9660_labelled_config_2(
    hypervisor: LibvirtHypervisor, make_spec: MakeSpec
) -> None:
    iid = new_id()
    s = make_spec(iid)
    await hypervisor.spawn(s)
    iso_path = hypervisor.state_dir / f"vimha-{hypervisor.scope}-{iid}" / "config-2.iso"
    dom = domain(hypervisor, iid)
    sources = [d.find("source").get("file") for d in dom.findall("devices/disk")]  # type: ignore[union-attr]
    assert str(iso_path) in sources
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "config-2"
        for path, data in s.config_drive.items():
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path="/" + path)
            assert out.getvalue() == data
    finally:
        iso.close()


async def test_no_watchdog_no_device(hypervisor: LibvirtHypervisor, make_spec: MakeSpec) -> None:
    iid = new_id()
    await hypervisor.spawn(make_spec(iid, watchdog=None))
    dom = domain(hypervisor, iid)
    assert dom.find("devices/watchdog") is None
    assert "vimha.watchdog" not in (dom.findtext("os/cmdline") or "")


async def test_a_lower_incarnation_does_not_replace_a_higher(
    hypervisor: LibvirtHypervisor, make_spec: MakeSpec
) -> None:
    iid = new_id()
    await hypervisor.spawn(make_spec(iid, incarnation=5))
    with pytest.raises(Conflict):
        await hypervisor.spawn(make_spec(iid, incarnation=4))
    assert await states(hypervisor) == {iid: (5, GuestState.RUNNING)}


async def test_nodes_sharing_libvirtd_see_only_their_guests(
    hypervisor: LibvirtHypervisor, make_spec: MakeSpec, tmp_path: Path
) -> None:
    mine, theirs = new_id(), new_id()
    neighbour = LibvirtHypervisor(URL, tmp_path / "other", scope=hypervisor.scope + "-b")
    try:
        await hypervisor.spawn(make_spec(mine))
        await neighbour.spawn(make_spec(theirs))
        assert set(await states(hypervisor)) == {mine}
        assert set(await states(neighbour)) == {theirs}
    finally:
        await neighbour.destroy(theirs)
        await neighbour.close()


async def test_an_unknown_image_format_is_refused(
    hypervisor: LibvirtHypervisor, make_spec: MakeSpec
) -> None:
    with pytest.raises(InvalidInput):
        await hypervisor.spawn(make_spec(new_id(), image_format="tar"))


async def test_a_bundle_without_a_kernel_is_refused(
    hypervisor: LibvirtHypervisor, make_spec: MakeSpec, tmp_path: Path
) -> None:
    iid = new_id()
    bad = tmp_path / "empty.tar"
    bad.write_bytes(b"")
    s = make_spec(iid)
    with pytest.raises(InvalidInput):
        await hypervisor.spawn(GuestSpec(**{**_fields(s), "image_path": str(bad)}))
    assert await states(hypervisor) == {}


def _fields(s: GuestSpec) -> dict[str, object]:
    return {f: getattr(s, f) for f in s.__slots__}  # type: ignore[attr-defined]
