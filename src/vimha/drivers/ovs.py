"""Open vSwitch on a node (issue 18): the commands of its two daemons, run as the agent's
services, and its configuration through ovs-vsctl. Several switches may run on one machine
(the embedded cloud's compute nodes): each has its own run, database and log folder, and
every command names its database socket (OVS_RUNDIR for what derives from it).

Userspace datapath (`datapath_type=netdev`): no kernel module. VXLAN is OVS's own userspace
tunnelling: a tunnel's packets leave through the underlay bridge, which holds the node's data
plane interface and its tunnel address; each peer has its own tunnel port with BFD, so a
tunnel that stops carrying traffic turns not-live (an OpenFlow port status), and its key is
set per flow (one tunnel port carries every VNF network).

Failures of ovs-vsctl become OvsUnavailable (Temporary): the database is not up yet, or the
switch is restarting.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vimha.domain.errors import Temporary

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
SIOCGIFADDR = 0x8915


class OvsUnavailable(Temporary):
    """ovs-vsctl failed: the switch's database or daemon is not answering."""


@dataclass(frozen=True, slots=True)
class OvsPaths:
    home: Path

    @property
    def db(self) -> Path:
        return self.home / "conf.db"

    @property
    def socket(self) -> Path:
        return self.home / "db.sock"

    def env(self) -> dict[str, str]:
        home = str(self.home)
        return {"OVS_RUNDIR": home, "OVS_DBDIR": home, "OVS_LOGDIR": home, "OVS_SYSCONFDIR": home}


def _exec(paths: OvsPaths, daemon: str, argv: list[str]) -> tuple[str, ...]:
    """A daemon's command: an earlier run's daemon still holding its pid file (an agent that
    was killed: services outlive it) is killed first, then the daemon replaces the shell, so
    that the watchdog's pid is the daemon's."""
    pidfile = paths.home / f"{daemon}.pid"
    env = " ".join(f"{k}={v}" for k, v in paths.env().items())
    script = (
        f'p=$(cat {pidfile} 2>/dev/null) && grep -qa {daemon} /proc/"$p"/cmdline 2>/dev/null '
        f'&& kill -9 "$p" && sleep 0.1; '
        f"exec env {env} " + " ".join(argv)
    )
    return ("sh", "-c", script)


def ovsdb_command(paths: OvsPaths) -> tuple[str, ...]:
    home = paths.home
    create = f"[ -e {paths.db} ] || ovsdb-tool create {paths.db} {SCHEMA} || exit 1; "
    cmd = _exec(
        paths,
        "ovsdb-server",
        ["ovsdb-server", str(paths.db), f"--remote=punix:{paths.socket}",
         f"--pidfile={home}/ovsdb-server.pid", f"--unixctl={home}/ovsdb-server.ctl",
         f"--log-file={home}/ovsdb-server.log", "-vconsole:off"],
    )  # fmt: skip
    return (cmd[0], cmd[1], f"mkdir -p {home}; " + create + cmd[2])


def vswitchd_command(paths: OvsPaths) -> tuple[str, ...]:
    home = paths.home
    return _exec(
        paths,
        "ovs-vswitchd",
        ["ovs-vswitchd", f"unix:{paths.socket}", f"--pidfile={home}/ovs-vswitchd.pid",
         f"--unixctl={home}/ovs-vswitchd.ctl", f"--log-file={home}/ovs-vswitchd.log",
         "-vconsole:off"],
    )  # fmt: skip


class OvsCtl:
    """ovs-vsctl and ip, for one switch."""

    def __init__(self, paths: OvsPaths, limit: float = 5.0) -> None:
        self.paths = paths
        self.limit = limit

    async def _run(self, argv: list[str]) -> str:
        env = {**os.environ, **self.paths.env()}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=env,
            )  # fmt: skip
            async with asyncio.timeout(self.limit + 1):
                out, err = await proc.communicate()
        except (OSError, TimeoutError) as exc:
            raise OvsUnavailable(f"{argv[0]}: {exc}") from exc
        if proc.returncode != 0:
            said = err.decode(errors="replace").strip()[-300:]
            raise OvsUnavailable(f"{argv[0]} exited {proc.returncode}: {said}")
        return out.decode(errors="replace")

    async def vsctl(self, *args: str) -> str:
        db = f"--db=unix:{self.paths.socket}"
        return await self._run(["ovs-vsctl", db, f"--timeout={self.limit:g}", *args])

    async def ip(self, *args: str) -> str:
        return await self._run(["ip", *args])

    async def list_ports(self, bridge: str) -> list[str]:
        return (await self.vsctl("list-ports", bridge)).split()

    @staticmethod
    def has_address(device: str, address: str) -> bool:
        """Whether `device` has `address` as its IPv4 address (in this process: no fork, it is
        asked twice a second)."""
        request = struct.pack("256s", device.encode()[:15])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                answer = fcntl.ioctl(s.fileno(), SIOCGIFADDR, request)
            except OSError:  # no such device, or no address
                return False
        return socket.inet_ntoa(answer[20:24]) == address

    @staticmethod
    def link_exists(device: str) -> bool:
        return Path(f"/sys/class/net/{device}").exists()
