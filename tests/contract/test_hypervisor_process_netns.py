"""The process driver's netns mode (issue 14, `--netns`), against real namespaces, veths and a
Linux bridge (root): a guest whose ports have a bridge runs in a network namespace of its
own with one interface per port (its MAC, its IP/prefix, lo up, the gateway's route), the
host side named after the MAC and on the bridge; two guests on the bridge reach each other;
the agent reaches a guest from inside its namespace; a later driver adopts it by its pid; a
watchdog reset, a stop and a start make it again identically; a crash, a stop and a destroy
leave no interface behind; ports that cannot be made are a clear error, nothing left."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_system
from tests.contract.test_hypervisor_process import next_event
from vimha.cloud.demo_vnfs import process_image
from vimha.domain import configdrive
from vimha.domain.addressing import tap_name
from vimha.domain.compute import Flavor, InstanceSpec, PortSpec
from vimha.drivers import guest_netns
from vimha.drivers.hv_process import ProcessHypervisor
from vimha.ports.hypervisor import (
    GuestEventKind,
    GuestPort,
    GuestSpec,
    GuestState,
    GuestWatchdog,
    HypervisorUnavailable,
    WatchdogAction,
)

pytestmark = pytest.mark.needs_root
SUBNET = f"10.{random.randrange(200, 250)}.{random.randrange(256)}"


@pytest.fixture(scope="module")
def bridge() -> Iterator[str]:
    require_system(guest_netns.available() is None, f"guest namespaces: {guest_netns.available()}")
    name = f"vht{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "demo.tar.gz"
    path.write_bytes(process_image())
    return path


@pytest.fixture
async def hv(tmp_path: Path, bridge: str) -> AsyncIterator[ProcessHypervisor]:
    driver = ProcessHypervisor(tmp_path / "guests", node=f"netns-{os.getpid()}")
    await driver.list_guests()
    try:
        yield driver
    finally:
        for guest in list(driver.guests):
            await driver.destroy(guest)
        await driver.close()


def random_mac() -> str:
    return "fa:16:3e" + "".join(f":{random.randrange(256):02x}" for _ in range(3))


def spec(image: Path, bridge: str, host: int, wd: GuestWatchdog | None = None) -> GuestSpec:
    """A guest with two ports on the bridge: its own address on each of two subnets."""
    macs = (random_mac(), random_mac())
    ports = (
        PortSpec("p0", "n-a", "vnf-a", macs[0], f"{SUBNET}.{host}", 24, f"{SUBNET}.1"),
        PortSpec("p1", "n-b", "vnf-b", macs[1], f"192.168.77.{host}", 24, "192.168.77.1"),
    )
    ispec = InstanceSpec("img-1", Flavor("f", "tiny", 1, 128, 1), ports, vnf_id="vnf-1")
    iid = f"i-{host}"
    return GuestSpec(
        instance_id=iid, name=f"vnf-vdu-{host}", incarnation=1, vcpus=1, ram_mib=128,
        disk_gib=1, image_id="img-1", image_path=str(image), image_format="tar",
        ports=tuple(GuestPort(p.network, p.mac, p.ip, 24, p.gateway, (), bridge)
                    for p in ports),
        config_drive=configdrive.layout(iid, f"vnf-vdu-{host}", ispec), watchdog=wd,
        vnf="vnf-1",
    )  # fmt: skip


def inside(netns: str, *argv: str) -> Any:
    """`ip -j ...` inside the namespace, as JSON."""
    out = subprocess.run(["nsenter", f"--net={netns}", "ip", "-j", *argv],
                         capture_output=True, text=True, check=True, timeout=10)  # fmt: skip
    return json.loads(out.stdout)


def links(netns: str) -> dict[str, dict[str, Any]]:
    found = inside(netns, "addr", "show")
    return {link["ifname"]: link for link in found}


def our_addresses() -> str:
    return subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout


def exists(device: str) -> bool:
    return Path(f"/sys/class/net/{device}").exists()


async def until(pred: Any, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not pred():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def answer(ip: str, netns: str | None, within: float = 5.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            status, body = await guest_netns.http_request("GET", ip, 8080, netns=netns,
                                                          within=0.5)  # fmt: skip
            assert status == 200
            return dict(json.loads(body))
        except (OSError, TimeoutError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


def check_ports(guest: GuestSpec, netns: str, bridge: str) -> None:
    found = links(netns)
    assert found["lo"]["operstate"] == "UNKNOWN" and "UP" in found["lo"]["flags"]
    for i, port in enumerate(guest.ports):
        eth = found[f"eth{i}"]
        assert eth["address"] == port.mac and "UP" in eth["flags"]
        assert [(a["local"], a["prefixlen"]) for a in eth["addr_info"]
                if a["family"] == "inet"] == [(port.ip, 24)]  # fmt: skip
        tap = tap_name(port.mac)
        master = Path(f"/sys/class/net/{tap}/master").resolve().name
        assert master == bridge, f"{tap} is on {master}"
    routes = inside(netns, "route", "show", "default")
    assert [(r["gateway"], r["dev"]) for r in routes] == [(f"{SUBNET}.1", "eth0")]


async def test_a_guest_has_its_ports_in_a_namespace_of_its_own(
    hv: ProcessHypervisor, image: Path, bridge: str
) -> None:
    guest = spec(image, bridge, 11)
    status = await hv.spawn(guest)
    netns = hv.guest_netns(guest.instance_id)
    assert netns == f"/proc/{status.ref}/ns/net"
    assert os.readlink(netns) != os.readlink("/proc/self/ns/net")
    check_ports(guest, netns, bridge)
    body = await answer(guest.ports[0].ip, netns)
    assert body["instance"] == "i-11" and body["port"] == "vnf-a"
    assert (await answer(guest.ports[1].ip, netns))["port"] == "vnf-b"
    assert f" {guest.ports[0].ip}/" not in our_addresses(), "the guest's, not ours"


TX_CSUM = """
import fcntl, socket, struct, sys, ctypes
value = ctypes.create_string_buffer(struct.pack("=II", 0x16, 0), 8)  # ETHTOOL_GTXCSUM
ifreq = struct.pack("=16sQ", sys.argv[1].encode(), ctypes.addressof(value)).ljust(40, b"\\0")
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    fcntl.ioctl(s.fileno(), 0x8946, ifreq)  # SIOCETHTOOL
print(struct.unpack("=II", value.raw)[1])
"""


def tx_checksumming(netns: str, device: str) -> bool:
    """Whether the device leaves its transmit checksums to the hardware (ethtool's `tx`)."""
    out = subprocess.run(["nsenter", f"--net={netns}", "python3", "-S", "-c", TX_CSUM, device],
                         capture_output=True, text=True, check=True, timeout=10)  # fmt: skip
    return out.stdout.strip() != "0"


async def test_a_port_on_a_switch_makes_its_own_checksums(
    hv: ProcessHypervisor, image: Path, bridge: str
) -> None:
    """On Open vSwitch's userspace datapath a partial checksum would stay unfinished: a port
    whose bridge is not a Linux bridge has the guest side's transmit checksumming off."""
    guest = spec(image, bridge, 71)
    switched = replace(guest, ports=(replace(guest.ports[0], bridge="br-vnf-absent"),
                                     guest.ports[1]))  # fmt: skip
    await hv.spawn(switched)
    netns = hv.guest_netns(guest.instance_id)
    assert netns is not None
    assert not tx_checksumming(netns, "eth0"), "the switch's port: checksums made by the guest"
    assert tx_checksumming(netns, "eth1"), "on a Linux bridge: left to the device"


async def test_two_guests_on_the_bridge_reach_each_other(
    hv: ProcessHypervisor, image: Path, bridge: str
) -> None:
    one, two = spec(image, bridge, 21), spec(image, bridge, 22)
    await hv.spawn(one)
    await hv.spawn(two)
    body = await answer(two.ports[0].ip, hv.guest_netns(one.instance_id))
    assert body["instance"] == "i-22"
    body = await answer(one.ports[1].ip, hv.guest_netns(two.instance_id))
    assert body["instance"] == "i-21" and body["port"] == "vnf-b"


async def test_a_later_agent_adopts_the_guest_and_its_namespace(
    tmp_path: Path, image: Path, bridge: str
) -> None:
    first = ProcessHypervisor(tmp_path / "guests", node=f"adopt-{os.getpid()}")
    guest = spec(image, bridge, 31)
    started = await first.spawn(guest)
    netns = first.guest_netns(guest.instance_id)
    assert netns is not None
    before = os.readlink(netns)
    await first.close()  # the agent is gone; the guest and its namespace are not
    later = ProcessHypervisor(tmp_path / "guests", node=f"adopt-{os.getpid()}")
    try:
        (adopted,) = await later.list_guests()
        assert adopted.ref == started.ref and adopted.state is GuestState.RUNNING
        assert later.guest_netns(guest.instance_id) == netns and os.readlink(netns) == before
        assert (await answer(guest.ports[0].ip, netns))["instance"] == "i-31"
    finally:
        await later.destroy(guest.instance_id)
        await later.close()
    assert not any(exists(tap_name(p.mac)) for p in guest.ports)


async def test_a_reset_stop_and_start_make_the_same_ports_again(
    hv: ProcessHypervisor, image: Path, bridge: str
) -> None:
    guest = spec(image, bridge, 41, GuestWatchdog(1.0, WatchdogAction.RESET))
    first = await hv.spawn(guest)
    netns = hv.guest_netns(guest.instance_id)
    assert netns is not None
    digest = (await answer(guest.ports[0].ip, netns))["digest"]
    await guest_netns.http_request("POST", guest.ports[0].ip, 8080, "/chaos/stop-watchdog",
                                   netns)  # fmt: skip
    assert (await next_event(hv, GuestEventKind.WATCHDOG, 4)).endswith("reset")
    assert "watchdog reset" in await next_event(hv, GuestEventKind.STARTED, 4)  # then started
    again = hv.guest_netns(guest.instance_id)
    assert again is not None and again != netns
    assert (await hv.list_guests())[0].ref != first.ref
    check_ports(guest, again, bridge)
    assert (await answer(guest.ports[0].ip, again))["digest"] == digest
    await hv.power_off(guest.instance_id)
    assert hv.guest_netns(guest.instance_id) is None
    await until(lambda: not any(exists(tap_name(p.mac)) for p in guest.ports))
    await hv.power_on(guest.instance_id)
    netns = hv.guest_netns(guest.instance_id)
    assert netns is not None
    check_ports(guest, netns, bridge)
    assert (await answer(guest.ports[1].ip, netns))["digest"] == digest


async def test_a_crash_and_a_destroy_leave_no_interface(
    hv: ProcessHypervisor, image: Path, bridge: str
) -> None:
    guest = spec(image, bridge, 51)
    status = await hv.spawn(guest)
    taps = [tap_name(p.mac) for p in guest.ports]
    assert all(exists(t) for t in taps)
    os.kill(int(status.ref), 11)
    assert await next_event(hv, GuestEventKind.CRASHED, 3) == "killed by SIGSEGV"
    await until(lambda: not any(exists(t) for t in taps))  # gone with its namespace
    await hv.power_on(guest.instance_id)  # a restart in place: made again
    assert all(exists(t) for t in taps)
    netns = hv.guest_netns(guest.instance_id)
    assert netns is not None
    held = os.open(netns, os.O_RDONLY)  # something still holds the namespace (a probe)
    try:
        await hv.destroy(guest.instance_id)
        assert not any(exists(t) for t in taps), "a destroy removes the pairs at once"
    finally:
        os.close(held)
    assert await hv.list_guests() == []


async def test_ports_that_cannot_be_made_are_a_clear_error(
    hv: ProcessHypervisor, image: Path, bridge: str
) -> None:
    guest = spec(image, bridge, 61)
    bad = replace(guest, ports=(replace(guest.ports[0], prefix=40),))
    with pytest.raises(HypervisorUnavailable, match="ports not configured") as caught:
        await hv.spawn(bad)
    assert "vnf-vdu-61: ports not made" in caught.value.detail
    assert await hv.list_guests() == []
    assert not exists(tap_name(guest.ports[0].mac))
    assert not (hv.base / guest.instance_id).exists()
    status = await hv.spawn(guest)  # the same guest, with good ports: spawned
    assert status.state is GuestState.RUNNING
