"""`vimha up --libvirt`: the demo VNFs run as QEMU guests through libvirtd (software
emulation): they boot, answer on their ports (the bridges of vnf-a and vnf-b on the host)
with their initial-state digest; a compute node powered off -> its guests are booted again on
other hosts, same addresses, same digest; `vimha down` leaves no domain, no QEMU and no
bridge behind."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import cloud_port
from tests.system.conftest import vimha
from tests.system.test_embedded_cloud import Cloud, running_cloud, until
from vimha.cloud import qemu_mode
from vimha.cloud.procs import guest_processes

pytestmark = [pytest.mark.system, pytest.mark.needs_root]
BOOT = 420.0  # five guests booting at once on 2 loaded cores, niced


def answer(ip: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(f"http://{ip}:8080/", timeout=2)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def serving(cloud: Cloud) -> dict[str, dict[str, Any]]:
    """The instances that are ACTIVE and answer on their first port, by id."""
    out = {}
    for inst in cloud.get("/vim/v1/instances"):
        if inst["status"] == "ACTIVE" and inst["ports"]:
            seen = answer(inst["ports"][0]["ip"])
            if seen is not None and seen.get("incarnation") == inst["incarnation"]:
                out[inst["id"]] = {**inst, "seen": seen}
    return out


def test_a_data_dir_qemu_cannot_reach_is_refused() -> None:
    opened = Path(tempfile.mkdtemp(prefix="vh-lv-"))
    try:
        opened.chmod(0o755)
        assert qemu_mode.closed_to_qemu(opened / "cloud") is None
        closed = opened / "closed"
        closed.mkdir(mode=0o700)
        assert qemu_mode.closed_to_qemu(closed / "cloud") == closed
        r = vimha(
            "up", "--libvirt", "--data-dir", str(closed / "cloud"), "--port", str(cloud_port())
        )
        assert r.returncode != 0 and "cannot reach the guests' files" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    finally:
        shutil.rmtree(opened, ignore_errors=True)


def test_the_demo_vnfs_as_qemu_guests_are_recovered_when_their_host_dies(
    guest_image: Path,
) -> None:
    if (why := qemu_mode.available()) is not None:
        pytest.skip(why)
    base = Path(tempfile.mkdtemp(prefix="vh-lvcloud-"))  # QEMU (libvirt-qemu) must get in
    base.chmod(0o755)
    try:
        moved = run(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert moved >= 1  # the victim host ran at least one of vfw's guests


def run(base: Path) -> int:
    """The cloud up, a vfw host powered off, its guests back elsewhere; `vimha down` leaves
    nothing. Returns how many guests were moved."""
    with running_cloud(base, "--libvirt") as cloud:
        up = until(lambda: len(s := serving(cloud)) == 5 and s, BOOT)
        for inst in up.values():
            assert inst["seen"]["instance"] == inst["id"]
            assert inst["seen"]["digest"] == inst["initialStateDigest"]
            assert inst["ports"][0]["ip"].startswith(("10.96.", "10.97."))
        domains = subprocess.run(
            ["virsh", "-c", "qemu:///system", "list", "--name"], capture_output=True, text=True
        ).stdout
        assert sum(1 for i in up if i in domains) == 5, domains

        victim = next(i["host"] for i in up.values() if i["name"].startswith("vfw-"))
        moved = {i: v for i, v in up.items() if v["host"] == victim}
        started = time.monotonic()
        assert "powered off" in cloud.chaos("power-off", victim)

        def back() -> bool:
            now = serving(cloud)
            return all(
                i in now
                and now[i]["host"] != victim
                and now[i]["incarnation"] == v["incarnation"] + 1
                and now[i]["seen"]["digest"] == v["seen"]["digest"]
                and now[i]["ports"][0]["ip"] == v["ports"][0]["ip"]
                for i, v in moved.items()
            )

        until(back, BOOT)
        print(f"\n{len(moved)} QEMU guests of {victim} back in {time.monotonic() - started:.1f} s")
        hosts = {v["host"] for v in serving(cloud).values() if v["name"].startswith("vfw-")}
        assert len(hosts) == 2  # still apart
        cloud.chaos("power-on", victim)
        data = cloud.data
        bridges = qemu_mode.QemuPlan(int(cloud.url.rsplit(":", 1)[1]), data).bridges()
    r = vimha("down", "--data-dir", str(data))
    assert r.returncode == 0
    for node in ("cmp-1", "cmp-2", "cmp-3", "cmp-4"):
        assert guest_processes(node, data) == []
    left = subprocess.run(
        ["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
        capture_output=True,
        text=True,
    ).stdout
    assert not [line for line in left.split() if str(data) in line or "vimha-cmp-" in line]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not [b for b in bridges.values() if f" {b}:" in links]
    return len(moved)
