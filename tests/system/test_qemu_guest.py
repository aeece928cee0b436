"""The demo guest booted for real under QEMU through libvirtd and the libvirt driver (software
emulation): it reads its config drive, answers on each port's address with the right JSON and
initial-state digest, pets its watchdog; when it stops petting QEMU resets it and the driver
says WATCHDOG, and it comes back; a panic is a CRASHED event. One boot is shared by the
tests, in order (each leaves the guest running, but the last).

The guest's two ports are on two bridges this module creates (vh-lv-a<N>, vh-lv-b<N>, with
addresses of their own: nothing leaves them)."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import pytest_asyncio

from tests.contract.hypervisor_suite import Recorder
from tests.support.guests import expected_digest, spec
from vimha.cloud.libvirtd import Libvirtd
from vimha.ports.hypervisor import (
    GuestEventKind,
    GuestPort,
    GuestSpec,
    GuestState,
    GuestWatchdog,
    WatchdogAction,
)

if TYPE_CHECKING:
    from vimha.drivers.hv_libvirt import LibvirtHypervisor

pytestmark = [
    pytest.mark.system,
    pytest.mark.needs_root,
    pytest.mark.asyncio(loop_scope="module"),
]

WATCHDOG_TIMEOUT = 5.0
BOOT_TIMEOUT = 300.0  # ~11 s on an idle 2-core machine; minutes when others load it (niced)
INCARNATION = 3


@dataclass
class Booted:
    hv: LibvirtHypervisor  # imported when used: the binding may be missing (skip, not error)
    spec: GuestSpec
    events: Recorder
    booted_in: float


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


@pytest.fixture(scope="module")
def bridges() -> Iterator[tuple[GuestPort, GuestPort]]:
    """Two bridges with an address each for the host, and a port of the guest on each."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("root and iproute2 needed for the guest's bridges")
    n = random.randrange(100, 250)
    made = []
    try:
        ports = []
        for letter, second in (("a", 213), ("b", 214)):
            name = f"vh-lv-{letter}{n}"
            _ip("link", "add", name, "type", "bridge")
            made.append(name)
            _ip("addr", "add", f"10.{second}.{n}.1/24", "dev", name)
            _ip("link", "set", name, "up")
            mac = f"52:54:00:d5:{n:02x}:{ord(letter):02x}"
            ports.append(GuestPort(f"vnf-{letter}", mac, f"10.{second}.{n}.10", 24, bridge=name))
        yield ports[0], ports[1]
    finally:
        for name in made:
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


async def get(url: str, timeout: float) -> httpx.Response:
    """GET until it answers (the guest boots, or comes back)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                return await client.get(url)
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


async def post(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5.0) as client:
        return await client.post(url)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def guest(
    libvirtd: Libvirtd, guest_image: Path, bridges: tuple[GuestPort, GuestPort]
) -> AsyncIterator[Booted]:
    from vimha.drivers.hv_libvirt import LibvirtHypervisor

    state = Path(tempfile.mkdtemp(prefix="vh-lv-state-"))
    hv = LibvirtHypervisor("libvirt:///system", state, scope=f"vh-lv-{os.getpid()}")
    events = Recorder(hv)
    await events.start()
    s = spec(
        str(uuid.uuid4()),
        guest_image,
        bridges,
        incarnation=INCARNATION,
        watchdog=GuestWatchdog(WATCHDOG_TIMEOUT, WatchdogAction.RESET),
        name="qemu-guest-1",
        vnf="vfw",
    )
    started = time.monotonic()
    try:
        await hv.spawn(s)
        await get(f"http://{s.ports[0].ip}:8080/", BOOT_TIMEOUT)
        yield Booted(hv, s, events, time.monotonic() - started)
    finally:
        await events.stop()
        await hv.destroy(s.instance_id)
        await hv.close()
        shutil.rmtree(state, ignore_errors=True)


async def test_the_guest_answers_on_each_port_with_its_config_drive_and_digest(
    guest: Booted,
) -> None:
    s = guest.spec
    digest = expected_digest(s.config_drive, s.ports)
    for port in s.ports:
        body = (await get(f"http://{port.ip}:8080/", 30)).json()
        assert body == {
            "instance": s.instance_id,
            "name": "qemu-guest-1",
            "vnf": "vfw",
            "port": port.network,
            "incarnation": INCARNATION,
            "digest": digest,
        }
    print(f"boot to HTTP: {guest.booted_in:.1f} s")


async def test_the_console_log_shows_the_boot(guest: Booted) -> None:
    console = await guest.hv.console(guest.spec.instance_id)
    try:
        assert b"vimha-guest ready" in console.history
        assert b"config drive /dev/vda mounted" in console.history
    finally:
        await console.close()
    answer = await post(f"http://{guest.spec.ports[0].ip}:8080/chaos/no-such-thing")
    assert answer.status_code == 404


async def test_the_guest_pets_its_watchdog(guest: Booted) -> None:
    await asyncio.sleep(WATCHDOG_TIMEOUT + 2)
    assert GuestEventKind.WATCHDOG not in guest.events.kinds(guest.spec.instance_id)
    assert (await get(f"http://{guest.spec.ports[1].ip}:8080/", 10)).status_code == 200


async def test_a_guest_that_stops_petting_is_reset_by_its_watchdog_and_comes_back(
    guest: Booted,
) -> None:
    s = guest.spec
    console = await guest.hv.console(s.instance_id)
    try:
        answer = await post(f"http://{s.ports[0].ip}:8080/chaos/stop-watchdog")
        assert answer.status_code == 202
        stopped = time.monotonic()
        event = await guest.events.wait_for(s.instance_id, GuestEventKind.WATCHDOG, 30)
        latency = time.monotonic() - stopped
        live = b""
        async with asyncio.timeout(10):
            while b"watchdog no longer petted" not in live:
                live += await console.read()
    finally:
        await console.close()
    assert (event.incarnation, event.detail) == (INCARNATION, "reset")
    assert latency <= WATCHDOG_TIMEOUT + 1.0, f"reset {latency:.1f} s after petting stopped"
    print(f"watchdog reset seen {latency:.2f} s after petting stopped")
    came_back = time.monotonic()
    body = (await get(f"http://{s.ports[0].ip}:8080/", BOOT_TIMEOUT)).json()
    print(f"back on HTTP {time.monotonic() - came_back:.1f} s after the reset")
    assert body["incarnation"] == INCARNATION
    assert body["digest"] == expected_digest(s.config_drive, s.ports)
    assert guest.events.kinds(s.instance_id).count(GuestEventKind.WATCHDOG) == 1


async def test_a_guest_that_panics_is_crashed(guest: Booted) -> None:
    s = guest.spec
    answer = await post(f"http://{s.ports[0].ip}:8080/chaos/crash")
    assert answer.status_code == 202
    event = await guest.events.wait_for(s.instance_id, GuestEventKind.CRASHED, 30)
    assert event.incarnation == INCARNATION
    statuses = {g.instance_id: g for g in await guest.hv.list_guests()}
    assert statuses[s.instance_id].state == GuestState.CRASHED
    assert GuestEventKind.DIED not in guest.events.kinds(s.instance_id)
