"""Virtual IPs (issue 4, ARCH-7).

The `keepalived` handler: a virtual IP for the load-balancer pair, held by keepalived with
VRRP v3 and sub-second adverts. Each member of an all-active group runs one keepalived (VRRP
only), started and supervised by its agent, dying with it; VRRP elects the holder and moves
the address with gratuitous ARP when the holder's node goes. The group's alarms tell a lost
peer (SERVICE_GROUP_REDUNDANCY_LOST). The member reports whether it holds the VIP now.

The `vip` handler (at the end) is vimha's own: the address belongs to the holder of an
active-standby slot, with the same safety as any active (release or fencing first)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
from pathlib import Path

from vimha.agent.handlers import HandlerFailed, Health, process_failure, spawn_member
from vimha.drivers.coord_mirror import Mirror, load_json
from vimha.groupspec import KeepalivedHandlerConfig, VipHandlerConfig, groups_prefix


def render(node: str, cfg: KeepalivedHandlerConfig, track_file: Path | None = None) -> str:
    tracked = (
        f"""vrrp_track_file vimha_track {{
    file "{track_file}"
    weight 0
}}
"""
        if track_file is not None
        else ""
    )
    watch = "\n    track_file {\n        vimha_track weight 0\n    }" if track_file else ""
    return f"""global_defs {{
    router_id {node}
    vrrp_version 3
    vrrp_garp_master_delay 0
    vrrp_garp_master_repeat 2
    script_user root
    enable_script_security
}}
{tracked}vrrp_instance vimha_{cfg.router_id} {{
    state BACKUP
    interface {cfg.interface}
    virtual_router_id {cfg.router_id}
    priority {cfg.priority}
    advert_int {cfg.advert_interval:g}{"" if cfg.preempt else chr(10) + "    nopreempt"}
    virtual_ipaddress {{
        {cfg.vip}
    }}{watch}
}}
"""


class KeepalivedHandler:
    """With `track`, keepalived watches a file (inotify) that the agent keeps at 0 while its
    member of the tracked group is healthy and at 1 otherwise: weight 0 makes a non-zero
    value a FAULT, in which keepalived gives the address up and a peer takes it."""

    def __init__(
        self,
        group: str,
        node: str,
        cfg: KeepalivedHandlerConfig,
        run_dir: Path,
        vim: str = "vimha",
        mirror: Mirror | None = None,
    ) -> None:
        self.group = group
        self.node = node
        self.cfg = cfg
        self.run_dir = run_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.mirror = mirror
        self.tracked_key = (
            f"{groups_prefix(vim)}{cfg.track}/members/{node}" if cfg.track is not None else None
        )
        self.track_file = run_dir / f"keepalived-{group}.track" if cfg.track else None
        self.tracked_ok: bool | None = None  # what the file says now

    def _tracked_healthy(self) -> bool:
        if self.mirror is None or self.tracked_key is None:
            return False
        return bool(load_json(self.mirror.keys.get(self.tracked_key)).get("healthy"))

    def _write_track(self) -> str:
        """The tracked member's health into the file when it changed; what it says."""
        if self.track_file is None:
            return ""
        ok = self._tracked_healthy()
        if ok != self.tracked_ok:
            temp = self.track_file.with_suffix(".new")
            temp.write_text("0\n" if ok else "1\n")
            temp.replace(self.track_file)  # one inotify event, never a half-written value
            self.tracked_ok = ok
        return f"; {self.cfg.track} here {'healthy' if ok else 'not healthy: FAULT'}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        conf = self.run_dir / f"keepalived-{self.group}.conf"
        conf.write_text(render(self.node, self.cfg, self.track_file))
        self.tracked_ok = None
        self._write_track()  # before keepalived reads it
        argv = [
            self.cfg.binary, "--dont-fork", "--vrrp", "--log-console", "--use-file", str(conf),
            "--pid", str(self.run_dir / f"keepalived-{self.group}.pid"),
            "--vrrp_pid", str(self.run_dir / f"keepalived-{self.group}-vrrp.pid"),
        ]  # fmt: skip
        # adverts as timely as heartbeats; its state changes in the log
        log = self.run_dir / f"{self.group}.log"
        self.process = spawn_member(argv, keep_priority=True, log=log)

    async def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()  # keepalived removes its VIP on the way out
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), 2)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.to_thread(proc.wait)
        await self._drop_vip()  # a killed keepalived leaves it behind

    async def _drop_vip(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            "ip", "addr", "del", self.cfg.vip, "dev", self.cfg.interface,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await proc.wait()

    async def holds_vip(self) -> bool:
        proc = await asyncio.create_subprocess_exec(
            "ip", "-o", "addr", "show", "dev", self.cfg.interface,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = await proc.communicate()
        return (
            f" {self.cfg.vip} " in out.decode() or f" {self.cfg.vip.split('/')[0]}/" in out.decode()
        )

    async def monitor(self) -> Health:
        if (failed := process_failure(self.process, "keepalived")) is not None:
            return failed
        tracked = self._write_track()
        role = "VIP holder (MASTER)" if await self.holds_vip() else "BACKUP"
        return Health(True, role + tracked)

    async def promote(self, epoch: int) -> None:
        return None

    async def demote(self, active: str | None) -> None:
        return None


def garp_frame(mac: bytes, address: str) -> bytes:
    """A gratuitous ARP request (sender and target = the VIP), broadcast: switches and
    neighbours learn at once that the VIP moved to this MAC."""
    ip = socket.inet_aton(address)
    ethernet = b"\xff" * 6 + mac + struct.pack("!H", 0x0806)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\x00" * 6 + ip
    return ethernet + arp


class VipHandler:
    """The `vip` handler: see VipHandlerConfig."""

    def __init__(self, group: str, cfg: VipHandlerConfig) -> None:
        self.group = group
        self.cfg = cfg
        self.address = cfg.vip.split("/")[0]

    @property
    def pid(self) -> int | None:
        return None

    async def _ip(self, *args: str) -> int:
        proc = await asyncio.create_subprocess_exec(
            "ip", *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return await proc.wait()

    async def start(self) -> None:
        await self._ip("addr", "del", self.cfg.vip, "dev", self.cfg.interface)  # standby

    async def stop(self) -> None:
        await self._ip("addr", "del", self.cfg.vip, "dev", self.cfg.interface)

    async def monitor(self) -> Health:
        state = Path(f"/sys/class/net/{self.cfg.interface}/operstate")
        try:
            operstate = state.read_text().strip()  # noqa: ASYNC240 - sysfs: no disk I/O
        except OSError:
            return Health(False, f"no interface {self.cfg.interface}")
        if operstate not in ("up", "unknown"):
            return Health(False, f"{self.cfg.interface} is {operstate}")
        return Health(True, f"{self.cfg.interface} up")

    async def promote(self, epoch: int) -> None:
        code = await self._ip("addr", "replace", self.cfg.vip, "dev", self.cfg.interface)
        if code != 0:
            raise HandlerFailed(f"could not add {self.cfg.vip} to {self.cfg.interface}")
        try:
            await asyncio.to_thread(self._announce)
        except OSError as exc:
            raise HandlerFailed(f"gratuitous ARP on {self.cfg.interface}: {exc}") from exc

    def _announce(self) -> None:
        mac_text = Path(f"/sys/class/net/{self.cfg.interface}/address").read_text().strip()
        frame = garp_frame(bytes.fromhex(mac_text.replace(":", "")), self.address)
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((self.cfg.interface, 0))
            for _ in range(self.cfg.garps):
                s.send(frame)

    async def demote(self, active: str | None) -> None:
        await self._ip("addr", "del", self.cfg.vip, "dev", self.cfg.interface)
