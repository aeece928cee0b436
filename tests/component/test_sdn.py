"""The SDN controller's parts without OVS: an instance (sdn/instance.py) with a fake
southbound on the in-memory coordination backend, and the northbound API (intents stored
once, every instance sees them)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest

from tests.component.conftest import OPERATOR, READER, Api
from vimha.domain.sdn import Flow, tunnel_port_name
from vimha.drivers.clock import SystemClock
from vimha.drivers.coord_local import LocalCoordination
from vimha.ports.southbound import (
    BarrierDone,
    FlowsHeld,
    PortInfo,
    RoleAnswer,
    SouthEvent,
    SwitchUp,
)
from vimha.sdn.config import SdnConfig
from vimha.sdn.instance import SdnInstance

PREFIX = "/vimha/vim/sdn/"


@dataclass
class FakeSouth:
    """Records what the instance sends; the test plays the switch."""

    on_event: Callable[[SouthEvent], None] = lambda ev: None
    roles: list[tuple[int, str, int, int]] = field(default_factory=list)
    applied: list[tuple[int, tuple[Flow, ...], tuple[int, ...]]] = field(default_factory=list)
    reads: list[int] = field(default_factory=list)
    xid: int = 0

    def start(self, host: str, port: int, on_event: Callable[[SouthEvent], None]) -> None:
        self.on_event = on_event

    def request_role(self, dpid: int, role: str, generation: int) -> int | None:
        self.xid += 1
        self.roles.append((dpid, role, generation, self.xid))
        return self.xid

    def request_flows(self, dpid: int) -> bool:
        self.reads.append(dpid)
        return True

    def apply(self, dpid: int, add: Sequence[Flow], delete: Sequence[int]) -> int | None:
        self.xid += 1
        self.applied.append((dpid, tuple(add), tuple(delete)))
        return self.xid

    def disconnect(self, dpid: int) -> None:
        pass

    def stop(self) -> None:
        pass


async def until(pred: Callable[[], object], what: str) -> None:
    async with asyncio.timeout(5):
        while not pred():
            await asyncio.sleep(0.01)


@pytest.fixture
async def running() -> AsyncIterator[tuple[SdnInstance, FakeSouth, LocalCoordination]]:
    coord = LocalCoordination(SystemClock())
    for host, dpid, ip in (("h1", 1, "10.0.0.1"), ("h2", 2, "10.0.0.2")):
        doc = {"host": host, "dpid": f"{dpid:016x}", "tunnelIp": ip}
        await coord.put(f"{PREFIX}hosts/{host}", json.dumps(doc))
    await coord.put(f"{PREFIX}networks/n", json.dumps({"id": "n", "name": "n", "vni": 100}))
    for pid, host, n in (("p1", "h1", 1), ("p2", "h2", 2)):
        doc = {"id": pid, "networkId": "n", "host": host, "mac": f"02:00:00:00:00:0{n}",
               "ip": f"192.168.0.{n}", "device": f"vp{n}"}  # fmt: skip
        await coord.put(f"{PREFIX}ports/{pid}", json.dumps(doc))
    cfg = SdnConfig(name="c1", host="c1", vim="vim", coordination_url="local://",
                    listen="127.0.0.1:6653", control_socket="/nonexistent")  # fmt: skip
    south = FakeSouth()
    instance = SdnInstance(cfg, coord, south)
    stop = asyncio.Event()
    task = asyncio.create_task(instance.run(stop))
    await instance.mirror.ready.wait()
    yield instance, south, coord
    stop.set()
    await asyncio.gather(task, return_exceptions=True)


def switch_up(south: FakeSouth) -> None:
    ports = (PortInfo(1, "vp1", True), PortInfo(5, tunnel_port_name("10.0.0.2"), True))
    south.on_event(SwitchUp(1, ports, "10.0.0.1"))


async def test_a_promoted_instance_masters_with_the_epoch_and_programs_what_lacks(
    running: tuple[SdnInstance, FakeSouth, LocalCoordination],
) -> None:
    instance, south, _ = running
    switch_up(south)
    await until(lambda: south.roles, "a role request")
    assert south.roles[-1][1:3] == ("slave", 0)  # a standby until promoted
    promoting = asyncio.create_task(instance.set_role("master", 7))
    await until(lambda: south.roles[-1][1:3] == ("master", 7), "MASTER with generation 7")
    south.on_event(RoleAnswer(1, south.roles[-1][3], "master", 7, at=1.0))
    status = await promoting
    assert status["switches"]["0000000000000001"]["role"] == "master"
    await until(lambda: south.reads, "its flows read")
    south.on_event(FlowsHeld(1, frozenset()))  # a switch that just restarted holds nothing
    await until(lambda: south.applied, "its flows programmed")
    dpid, added, deleted = south.applied[-1]
    assert dpid == 1 and len(added) == 8 and deleted == ()
    assert any(("output", 5) in f.actions for f in added), "p2 through the tunnel to h2"
    south.on_event(BarrierDone(1, south.xid))
    # a new master finds every flow in place: nothing is sent
    cookies = frozenset(f.cookie for f in added)
    instance.links[1].installed = None
    south.on_event(FlowsHeld(1, cookies))
    await asyncio.sleep(0.3)
    assert len(south.applied) == 1


async def test_a_refused_slave_request_learns_the_switch_generation(
    running: tuple[SdnInstance, FakeSouth, LocalCoordination],
) -> None:
    _, south, _ = running
    switch_up(south)
    await until(lambda: south.roles, "a role request")
    south.on_event(RoleAnswer(1, south.roles[-1][3], "slave", 0, refused="stale"))
    await until(lambda: south.roles[-1][1] == "nochange", "the generation asked")
    south.on_event(RoleAnswer(1, south.roles[-1][3], "equal", 9))
    await until(lambda: south.roles[-1][1:3] == ("slave", 9), "SLAVE with the switch's 9")
    assert south.roles[-1][1:3] == ("slave", 9)


async def test_the_standby_masters_as_soon_as_its_member_holds_the_slot(
    running: tuple[SdnInstance, FakeSouth, LocalCoordination],
) -> None:
    _, south, coord = running
    switch_up(south)
    await until(lambda: south.roles, "a role request")
    slot = json.dumps({"member": "c1", "host": "c1", "epoch": 4})
    await coord.put("/vimha/vim/groups/sdn/slots/0", slot)
    await until(lambda: south.roles[-1][1:3] == ("master", 4), "MASTER before the promotion")
    assert south.roles[-1][1:3] == ("master", 4)


async def test_intents_are_stored_once_and_checked(api: Api) -> None:
    ops = api.headers(OPERATOR)
    r = await api.client.post("/vim/v1/sdn/networks", json={"name": "vnf-a"}, headers=ops)
    assert r.status_code == 201 and r.json()["vni"] == 100
    again = await api.client.post("/vim/v1/sdn/networks", json={"name": "vnf-a"}, headers=ops)
    assert again.status_code == 409
    port = {"networkId": "vnf-a", "host": "cmp-1", "mac": "02:00:00:00:00:01", "ip": "10.0.0.1"}
    r = await api.client.post("/vim/v1/sdn/ports", json=port, headers=ops)
    assert r.status_code == 201, r.text
    assert r.json()["device"].startswith("vp")
    same_ip = {**port, "mac": "02:00:00:00:00:02"}
    r = await api.client.post("/vim/v1/sdn/ports", json=same_ip, headers=ops)
    assert r.status_code == 409 and "10.0.0.1" in r.json()["detail"]
    bad = {**port, "mac": "01:00:00:00:00:09", "ip": "10.0.0.9"}
    assert (await api.client.post("/vim/v1/sdn/ports", json=bad, headers=ops)).status_code == 400
    reader = api.headers(READER)
    assert (await api.client.post("/vim/v1/sdn/networks", json={"name": "x"},
                                  headers=reader)).status_code == 403  # fmt: skip
    ports = (await api.client.get("/vim/v1/sdn/ports", headers=reader)).json()
    assert [p["ip"] for p in ports] == ["10.0.0.1"]
    r = await api.client.delete("/vim/v1/sdn/networks/vnf-a", headers=ops)
    assert r.status_code == 409  # it still has a port
    await api.client.delete(f"/vim/v1/sdn/ports/{ports[0]['id']}", headers=ops)
    assert (await api.client.delete("/vim/v1/sdn/networks/vnf-a", headers=ops)).status_code == 204
