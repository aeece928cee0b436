"""The controllers' side of the SDN controller (issue 18, SDN-3/4): the logically centralised
northbound and the SDN events on the FAULT path.

- Intents: networks and ports accepted by any controller's API, validated against what is
  stored (`domain/sdn.py`) and stored once, in the coordination backend, where every SDN
  instance watches them; each switch's master programs them. No controller change is seen by
  a VNF: the intents do not move, and a new master computes the same flows. The instances'
  ports are intents too, written by the port binding (engine/port_binding.py).
- The switches' view, from what the SDN instances publish (`GET /vim/v1/sdn/switches`,
  `vimha sdn status`): for each registered switch, the instances connected to it, its master
  and epoch, ports and tunnels down, flows, errors.
- Alarms, decided by `decide_sdn_alarms` on every change and raised by the controller holding
  the singleton role: SDN_SWITCH_LOST, SDN_NO_MASTER, SDN_PORT_DOWN, SDN_TUNNEL_DOWN,
  SDN_FLOW_FAILED, and SDN_MASTER_CHANGED (raised and cleared at once) when a switch's
  master changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from vimha.domain.alarms import EventType, FaultEvent, FaultyResourceType, Location, Severity
from vimha.domain.clock import Clock
from vimha.domain.errors import Conflict, NotFound
from vimha.domain.sdn import (
    Network,
    Port,
    SdnAlarm,
    SwitchState,
    decide_sdn_alarms,
    new_network,
    new_port,
)
from vimha.drivers.coord_mirror import Mirror, load_json
from vimha.engine.faults import FaultService
from vimha.ports.coordination import Coordination
from vimha.sdnkeys import network_from, port_from, sdn_prefix, under

log = logging.getLogger("vimha.sdn")
FORMING = 60.0  # s: until every switch had a master once, at most this long, no alarm


def _event(alarm: SdnAlarm, now: datetime) -> FaultEvent:
    host = alarm.object.split("/")[0]
    return FaultEvent(
        managed_object_id=alarm.object,
        fault_type=alarm.fault,
        probable_cause=alarm.cause or alarm.fault,
        perceived_severity=Severity(alarm.severity),
        event_type=EventType.COMMUNICATIONS_ALARM,
        event_time=now,
        faulty_resource_type=FaultyResourceType.NETWORK,
        vim_level_resource_type="switch",
        fault_details=(alarm.reason,),
        location=Location((("host", host),)),
        source="sdn",
    )


class SdnWatcher:
    def __init__(
        self,
        coord: Coordination,
        vim: str,
        faults: FaultService,
        clock: Clock,
        mine: Callable[[], bool],
    ) -> None:
        self.coord = coord
        self.prefix = sdn_prefix(vim)
        self.mirror = Mirror(coord, (self.prefix,))
        self.faults = faults
        self.clock = clock
        self.mine = mine
        self.raised: frozenset[tuple[str, str]] = frozenset()
        self.masters: dict[int, tuple[str, int]] = {}
        self.first_seen: float | None = None
        self.said: dict[tuple[str, str], tuple[str, ...]] = {}
        self.formed = False  # switches and instances starting one after the other: no fault
        self.updated = asyncio.Event()  # set at every change of what the SDN stores

    # --- intents -----------------------------------------------------------------------------

    def _docs(self, kind: str) -> dict[str, dict[str, Any]]:
        found = under(self.mirror.keys, f"{self.prefix}{kind}/")
        return {k: load_json(e) for k, e in found.items()}

    def networks(self) -> list[Network]:
        nets = (network_from(d) for d in self._docs("networks").values())
        return sorted((n for n in nets if n is not None), key=lambda n: n.vni)

    def ports(self) -> list[Port]:
        ports = (port_from(d) for d in self._docs("ports").values())
        return sorted((p for p in ports if p is not None), key=lambda p: (p.network, p.id))

    def network(self, ref: str) -> Network:
        for n in self.networks():
            if ref in (n.id, n.name):
                return n
        raise NotFound(f"no network {ref}")

    def present(self) -> bool:
        """Whether an SDN runs here: some compute node's switch has registered."""
        return bool(under(self.mirror.keys, f"{self.prefix}hosts/"))

    async def create_network(
        self, name: str, vni: int | None, network_id: str | None = None
    ) -> Network:
        net = new_network(network_id or str(uuid.uuid4()), name, vni, self.networks())
        key = f"{self.prefix}networks/{net.id}"
        if not await self.coord.create(key, json.dumps(net.as_dict())):
            raise Conflict(f"network {net.id} exists")
        log.info("network %s (vni %d) created", net.name, net.vni)
        return net

    async def delete_network(self, ref: str) -> None:
        net = self.network(ref)
        if any(p.network == net.id for p in self.ports()):
            raise Conflict(f"network {net.name} still has ports: delete them first")
        await self.coord.delete(f"{self.prefix}networks/{net.id}")

    async def create_port(
        self, network: str, host: str, mac: str, ip: str, device: str | None,
        port_id: str | None = None,
    ) -> Port:  # fmt: skip
        port = new_port(port_id or str(uuid.uuid4()), self.network(network), host, mac, ip,
                        device, self.ports())  # fmt: skip
        key = f"{self.prefix}ports/{port.id}"
        if not await self.coord.create(key, json.dumps(port.as_dict())):
            raise Conflict(f"port {port.id} exists")
        log.info("port %s (%s %s) on %s created", port.id, port.mac, port.ip, port.host)
        return port

    def port(self, port_id: str) -> Port:
        for p in self.ports():
            if p.id == port_id:
                return p
        raise NotFound(f"no port {port_id}")

    async def delete_port(self, port_id: str) -> None:
        self.port(port_id)
        await self.coord.delete(f"{self.prefix}ports/{port_id}")

    async def bind(self, port: Port) -> None:
        """Write a port intent as it is (created or rewritten: an instance's port moved with
        it). The caller decided it (domain/port_binding.py)."""
        await self.coord.put(f"{self.prefix}ports/{port.id}", json.dumps(port.as_dict()))

    async def unbind(self, port_id: str) -> None:
        await self.coord.delete(f"{self.prefix}ports/{port_id}")

    async def add_network(self, net: Network) -> None:
        """Store a network intent decided elsewhere (the port binding's)."""
        await self.coord.put(f"{self.prefix}networks/{net.id}", json.dumps(net.as_dict()))

    # --- the switches ------------------------------------------------------------------------

    def switches(self) -> list[SwitchState]:
        hosts = self._docs("hosts")
        instances = self._docs("instances")
        published = self._docs("switches")
        ports = self.ports()
        out = []
        for host, doc in sorted(hosts.items()):
            try:
                dpid = int(str(doc["dpid"]), 16)
            except (KeyError, ValueError):
                continue
            key = f"{dpid:016x}"
            connected = frozenset(n for n, i in instances.items() if key in i.get("switches", {}))
            masters = [
                (int(i["switches"][key].get("epoch", -1)), n)
                for n, i in instances.items()
                if i.get("switches", {}).get(key, {}).get("role") == "master"
            ]
            epoch, master = max(masters) if masters else (None, None)
            sw = published.get(key, {})
            have = sw.get("ports", {}) if master is not None else {}
            # an instance's port not on its switch is its guest not running (booting, ended,
            # stopped): the compute side's to say, not a port down
            devices = {p.device for p in ports
                       if p.host == host and (p.instance is None or p.device in have)}  # fmt: skip
            down = frozenset(d for d in devices if have and not have.get(d, {}).get("live"))
            tunnels = frozenset(n for n, p in have.items()
                                if n.startswith("vx") and not p.get("live"))  # fmt: skip
            errors = tuple(sw.get("flowErrors") or ()) if master is not None else ()
            out.append(SwitchState(dpid, host, connected, master, epoch, down, tunnels, errors))
        return out

    def view(self) -> list[dict[str, Any]]:
        published = self._docs("switches")
        out = []
        for s in self.switches():
            sw = published.get(f"{s.dpid:016x}", {})
            out.append(
                {
                    "dpid": f"{s.dpid:016x}",
                    "host": s.host,
                    "master": s.master,
                    "epoch": s.epoch,
                    "connected": sorted(s.connected),
                    "flows": sw.get("flows") if s.master else None,
                    "portsDown": sorted(s.ports_down),
                    "tunnelsDown": sorted(s.tunnels_down),
                    "flowErrors": list(s.flow_errors),
                    "ports": sw.get("ports", {}),
                    "alarms": sorted(f for o, f in self.raised if o == f"{s.host}/ovs"),
                }
            )
        return out

    def instances(self) -> dict[str, dict[str, Any]]:
        return self._docs("instances")

    async def _judge(self) -> None:
        switches = self.switches()
        now = self.clock.monotonic()
        if self.first_seen is None:
            self.first_seen = now
        changed: dict[int, tuple[str | None, str, int]] = {}
        for s in switches:
            if s.master is None or s.epoch is None:
                continue
            before = self.masters.get(s.dpid)
            if before is not None and before[0] != s.master:
                changed[s.dpid] = (before[0], s.master, s.epoch)
            self.masters[s.dpid] = (s.master, s.epoch)
        if not self.formed:
            self.formed = all(s.dpid in self.masters for s in switches) or (
                now - self.first_seen >= FORMING
            )
            if not self.formed:
                return
        alarms, raised = decide_sdn_alarms(switches, self.raised, changed)
        if not self.mine():
            return
        stamp = self.clock.now()
        events = [_event(a, stamp) for a in alarms]
        fresh = [e for e in events if not self._repeat(e)]
        if fresh:
            await self.faults.ingest_async(fresh)
            for e in fresh:
                log.warning("%s %s: %s", e.fault_type, e.perceived_severity.value,
                            e.fault_details[0])  # fmt: skip
        self.said = {(e.managed_object_id, e.fault_type): e.fault_details for e in events}
        self.raised = raised

    def _repeat(self, event: FaultEvent) -> bool:
        """A raised alarm said again with the same detail changes nothing: not sent."""
        key = (event.managed_object_id, event.fault_type)
        return (
            event.perceived_severity is not Severity.CLEARED
            and key in self.raised
            and self.said.get(key) == event.fault_details
        )

    async def run(self, stop: asyncio.Event, settle: float = 0.05) -> None:
        task = asyncio.create_task(self.mirror.run(stop, self.prefix))
        try:
            await self.mirror.ready.wait()
            while not stop.is_set():
                self.mirror.changed.clear()
                self.updated.set()
                try:
                    await self._judge()
                except Exception:  # an alarm not stored now is decided again at the next change
                    log.exception("SDN alarms not judged")
                await asyncio.sleep(settle)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.mirror.changed.wait(), 1.0)
        finally:
            task.cancel()
