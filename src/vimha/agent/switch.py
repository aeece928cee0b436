"""A compute node's virtual switch (issue 18, FAULT-3): Open vSwitch run by the node's agent.

Its two daemons, ovsdb-server and ovs-vswitchd, are services of the agent (`switch_services`):
supervised by the watchdog like any other, so one that dies or hangs is restarted and
alarmed (SERVICE_FAILED on `<node>/ovs-vswitchd`, cleared once it runs). `SwitchKeeper`
keeps the switch configured, whatever restarted:

- the VNF bridge: userspace datapath, `fail_mode=secure` (flows stay while no controller
  answers; none are learned), OpenFlow 1.3 only, its datapath id, a connection to every SDN
  controller instance (reconnecting within `max_backoff`);
- the underlay bridge holding the data plane interface, and the node's tunnel address on it
  (an ovs-vswitchd restart recreates the bridge's interface without it);
- one VXLAN tunnel port per peer compute node (the hosts registered under /sdn/hosts/), with
  BFD, the key set per flow by the controller;
- the node's VNF ports: the devices of the port intents bound to this host, attached once
  they exist, taken off while they do not, attached again when they are made again (an
  instance's port is made at each start of its guest: the userspace datapath keeps reading
  the device it opened, so a port whose device was made again is deleted, then added, in
  two transactions). The devices are looked at every 50 ms (their interface indexes, one
  netlink dump): a guest's port is on the switch within that of its guest's start. An
  instance's port (`tap_name`) no longer bound here is taken off;
- its registration, /vimha/<vim>/sdn/hosts/<node>: datapath id and tunnel address, from
  which the controllers compute every switch's flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import socket
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from vimha.domain.addressing import is_tap_name
from vimha.domain.errors import Temporary
from vimha.domain.sdn import tunnel_port_name
from vimha.drivers.coord_mirror import Mirror, load_json
from vimha.drivers.ovs import OvsCtl, OvsPaths, ovsdb_command, vswitchd_command
from vimha.ports.coordination import Coordination, PermissionDenied
from vimha.sdnkeys import port_from, sdn_prefix, under
from vimha.servicespec import RestartConfig, ServiceConfig

log = logging.getLogger("vimha.agent.switch")


class SwitchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    bridge: str = Field("br-vnf", description="The VNF networks' bridge")
    underlay_bridge: str = Field("br-phy", description="Holds the data plane interface")
    underlay: str = Field(min_length=1, description="The data plane interface")
    tunnel_address: str = Field(min_length=9, description="This node's tunnel address/prefix")
    datapath_id: str = Field(pattern=r"^[0-9a-f]{16}$", description="16 hex digits")
    controllers: tuple[str, ...] = Field(
        min_length=1, description="Every SDN controller instance, as tcp:host:port"
    )
    run_dir: str | None = Field(None, description="Default: <agent run_dir>/ovs")
    bfd_interval: int = Field(100, ge=10, description="BFD on the tunnels (ms)")
    max_backoff: int = Field(1000, ge=100, description="Reconnection to a controller (ms)")
    inactivity_probe: int = Field(1000, ge=100, description="Echo to a silent controller (ms)")
    interval: float = Field(
        0.5, gt=0, description="Between checks of the tunnel address (s); of the rest: x10"
    )

    @property
    def tunnel_ip(self) -> str:
        return self.tunnel_address.split("/")[0]


def switch_services(cfg: SwitchConfig, home: Path) -> list[ServiceConfig]:
    """The switch's daemons as supervised services of the agent."""
    paths = OvsPaths(home)
    restart = RestartConfig(max_restarts=10, window=60, start_grace=2.0)
    return [
        ServiceConfig(name="ovsdb-server", command=ovsdb_command(paths), kind="network",
                      interval=0.2, restart=restart),
        ServiceConfig(name="ovs-vswitchd", command=vswitchd_command(paths), kind="network",
                      interval=0.2, restart=restart),
    ]  # fmt: skip


class SwitchKeeper:
    def __init__(
        self, node: str, cfg: SwitchConfig, home: Path, coord: Coordination, vim: str
    ) -> None:
        self.node = node
        self.cfg = cfg
        self.ctl = OvsCtl(OvsPaths(home))
        self.coord = coord
        self.prefix = sdn_prefix(vim)
        self.mirror = Mirror(coord, (f"{self.prefix}hosts/", f"{self.prefix}ports/"))
        self.applied = ""
        self.said = ""
        self.registered = False
        self.seen: dict[str, int | None] = {}  # devices bound here: index when configured

    def _peers(self) -> dict[str, str]:
        out = {}
        for host, entry in under(self.mirror.keys, f"{self.prefix}hosts/").items():
            ip = load_json(entry).get("tunnelIp")
            if host != self.node and ip:
                out[host] = str(ip)
        return out

    def _devices(self) -> set[str]:
        found = set()
        for entry in under(self.mirror.keys, f"{self.prefix}ports/").values():
            port = port_from(load_json(entry))
            if port is not None and port.host == self.node:
                found.add(port.device)
        return found

    def _bridge_args(self) -> list[str]:
        c = self.cfg
        args = [
            "--may-exist", "add-br", c.bridge, "--", "set", "bridge", c.bridge,
            "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13",
            f"other-config:datapath-id={c.datapath_id}", f"other-config:dp-desc={self.node}",
            "--", "--may-exist", "add-br", c.underlay_bridge, "--", "set", "bridge",
            c.underlay_bridge, "datapath_type=netdev", "fail_mode=standalone",
            "--", "--may-exist", "add-port", c.underlay_bridge, c.underlay,
        ]  # fmt: skip
        return args

    def _controller_args(self) -> list[str]:
        """The controllers, made afresh: only when they changed (the switch reconnects)."""
        c = self.cfg
        args, ids = [], []
        for i, target in enumerate(c.controllers):
            args += ["--", f"--id=@c{i}", "create", "controller", f'target="{target}"',
                     f"max_backoff={c.max_backoff}",
                     f"inactivity_probe={c.inactivity_probe}"]  # fmt: skip
            ids.append(f"@c{i}")
        return [*args, "--", "set", "bridge", c.bridge, f"controller={','.join(ids)}"]

    async def _configure(self, full: bool) -> None:
        """The tunnel address every time (cheap); the rest when `full`: the intents or peers
        changed, or every tenth round (ovs-vsctl is a process to start)."""
        c = self.cfg
        if full:
            peers = self._peers()
            index = _indexes()
            devices = {d: index.get(d) for d in sorted(self._devices())}
            wanted = json.dumps([self._bridge_args(), sorted(peers.items()),
                                 sorted(devices.items())])  # fmt: skip
            digest = hashlib.sha256(wanted.encode()).hexdigest()[:16]
            current = ""
            with contextlib.suppress(Temporary):
                current = await self.ctl.vsctl("get", "bridge", c.bridge, "external_ids:vimha")
            if current.strip().strip('"') != digest:
                await self._apply(peers, devices, digest)
            self.seen = devices
        # ovs-vswitchd recreates the underlay bridge's interface without its address
        if self.ctl.link_exists(c.underlay_bridge) and not self.ctl.has_address(
            c.underlay_bridge, c.tunnel_ip
        ):
            with contextlib.suppress(Temporary):
                await self.ctl.ip("addr", "flush", "dev", c.underlay)
            await self.ctl.ip("addr", "replace", c.tunnel_address, "dev", c.underlay_bridge)
            await self.ctl.ip("link", "set", c.underlay_bridge, "up")
            await self.ctl.ip("link", "set", c.underlay, "up")
            log.warning("tunnel address %s on %s", c.tunnel_address, c.underlay_bridge)

    async def _apply(self, peers: dict[str, str], devices: dict[str, int | None],
                     digest: str) -> None:  # fmt: skip
        """Make the switch so. `devices`: the VNF ports bound here, with their interface
        index (None: not there)."""
        c = self.cfg
        exists = await self._has_bridge()
        ports = set(await self.ctl.list_ports(c.bridge)) if exists else set()
        attached = await self._attached() if exists else {}
        again = [d for d, i in devices.items()
                 if i is not None and d in ports and attached.get(d) != i]  # fmt: skip
        if again:  # made again since they were attached: let go of the old device first
            await self.ctl.vsctl(*(a for d in again for a in ("--", "del-port", c.bridge, d)))
            ports -= set(again)
        args = self._bridge_args()
        targets = (await self.ctl.vsctl("get-controller", c.bridge)).split() if exists else []
        if sorted(targets) != sorted(c.controllers):
            args += self._controller_args()
        tunnels = {tunnel_port_name(ip): ip for ip in peers.values()}
        for name in sorted(p for p in ports if p.startswith("vx") and p not in tunnels):
            args += ["--", "del-port", c.bridge, name]
        for name in sorted(p for p in ports if is_tap_name(p) and p not in devices):
            args += ["--", "del-port", c.bridge, name]  # its instance is gone or moved
        for name, ip in sorted(tunnels.items()):
            if name in ports:
                continue
            args += ["--", "add-port", c.bridge, name, "--", "set", "interface", name,
                     "type=vxlan", f"options:remote_ip={ip}", f"options:local_ip={c.tunnel_ip}",
                     "options:key=flow", "bfd:enable=true", f"bfd:min_tx={c.bfd_interval}",
                     f"bfd:min_rx={c.bfd_interval}"]  # fmt: skip
        present = 0
        for device, number in devices.items():
            if number is None:
                if device in ports:  # its guest ended: attached again when it is back
                    args += ["--", "del-port", c.bridge, device]
                continue
            present += 1
            if device not in ports:
                args += ["--", "--may-exist", "add-port", c.bridge, device, "--", "set",
                         "interface", device, f"external_ids:vimha-ifindex={number}"]  # fmt: skip
        args += ["--", "set", "bridge", c.bridge, f"external_ids:vimha={digest}"]
        await self.ctl.vsctl(*args)
        log.info("switch %s configured: %d tunnels, %d VNF ports (%d made again)", c.bridge,
                 len(tunnels), present, len(again))  # fmt: skip

    async def _attached(self) -> dict[str, int]:
        """The interface index each port's device had when it was attached."""
        out = json.loads(await self.ctl.vsctl("--format=json", "--columns=name,external_ids",
                                              "list", "interface"))  # fmt: skip
        found = {}
        for name, ids in out.get("data", []):
            marks = dict(ids[1]) if isinstance(ids, list) and len(ids) == 2 else {}
            if str(marks.get("vimha-ifindex", "")).isdigit():
                found[str(name)] = int(marks["vimha-ifindex"])
        return found

    async def _has_bridge(self) -> bool:
        try:
            await self.ctl.vsctl("br-exists", self.cfg.bridge)
        except Temporary:
            return False
        return True

    async def _register(self) -> None:
        key = f"{self.prefix}hosts/{self.node}"
        doc = {"host": self.node, "dpid": self.cfg.datapath_id, "tunnelIp": self.cfg.tunnel_ip,
               "bridge": self.cfg.bridge}  # fmt: skip
        if load_json(self.mirror.keys.get(key)) != doc:
            await self.coord.put(key, json.dumps(doc))

    async def run(self, stop: asyncio.Event) -> None:
        task = asyncio.create_task(self.mirror.run(stop, self.prefix))
        try:
            await self.mirror.ready.wait()
            rounds = 0
            while not stop.is_set():
                full = rounds % 10 == 0 or self.mirror.changed.is_set() or self.said != ""
                rounds += 1
                try:
                    await self._register()
                    await self._configure(full)
                    self.said = ""
                except Temporary as exc:
                    if str(exc) != self.said:
                        log.warning("switch not configured yet: %s", exc.detail)
                        self.said = str(exc)
                except PermissionDenied as exc:  # refused again at every round: not retried
                    log.error("switch registration stopped: %s", exc.detail)
                    return
                self.mirror.changed.clear()
                await self._pause()
        finally:
            task.cancel()

    async def _pause(self, tick: float = 0.05) -> None:
        """Until the intents change or `interval` passed; sooner (a full round) when a
        device bound here came, went or was made again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.interval
        while (left := deadline - loop.time()) > 0:
            step = min(left, tick) if self.seen else left
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.mirror.changed.wait(), step)
                return
            index = _indexes()
            if any(index.get(d) != i for d, i in self.seen.items()):
                self.mirror.changed.set()
                return


def _indexes() -> dict[str, int]:
    """This namespace's interfaces, by name: their indexes (a device made again has a new
    one)."""
    return {name: number for number, name in socket.if_nameindex()}
