"""The `keepalived` handler (issue 4, ARCH-7): a virtual IP for the load-balancer pair, held
by keepalived with VRRP v3 and sub-second adverts. Each member of an all-active group runs
one keepalived (VRRP only), started and supervised by its agent, dying with it; VRRP elects
the holder and moves the address with gratuitous ARP when the holder's node goes. The group's
alarms tell a lost peer (SERVICE_GROUP_REDUNDANCY_LOST). The member reports whether it holds
the VIP now."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path

from vimha.agent.handlers import HandlerFailed, Health, process_failure, spawn_member
from vimha.groupspec import KeepalivedHandlerConfig


def render(node: str, cfg: KeepalivedHandlerConfig) -> str:
    return f"""global_defs {{
    router_id {node}
    vrrp_version 3
    vrrp_garp_master_delay 0
    vrrp_garp_master_repeat 2
    script_user root
    enable_script_security
}}
vrrp_instance vimha_{cfg.router_id} {{
    state BACKUP
    interface {cfg.interface}
    virtual_router_id {cfg.router_id}
    priority {cfg.priority}
    advert_int {cfg.advert_interval:g}
    virtual_ipaddress {{
        {cfg.vip}
    }}
}}
"""


class KeepalivedHandler:
    def __init__(self, group: str, node: str, cfg: KeepalivedHandlerConfig, run_dir: Path) -> None:
        self.group = group
        self.node = node
        self.cfg = cfg
        self.run_dir = run_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        conf = self.run_dir / f"keepalived-{self.group}.conf"
        conf.write_text(render(self.node, self.cfg))
        argv = [
            self.cfg.binary, "--dont-fork", "--vrrp", "--log-console", "--use-file", str(conf),
            "--pid", str(self.run_dir / f"keepalived-{self.group}.pid"),
            "--vrrp_pid", str(self.run_dir / f"keepalived-{self.group}-vrrp.pid"),
        ]  # fmt: skip
        try:
            self.process = spawn_member(argv)
        except OSError as exc:
            raise HandlerFailed(f"{self.cfg.binary}: {exc.strerror}") from exc

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
        return Health(True, "VIP holder (MASTER)" if await self.holds_vip() else "BACKUP")

    async def promote(self, epoch: int) -> None:
        return None

    async def demote(self, active: str | None) -> None:
        return None
