"""An SDN controller instance (issue 18): the switches connected to it, the role it holds on
each, and the flows it programs where it is master.

Roles. Centralised model (SDN-1): the agent's `sdn` handler says MASTER with the group's
epoch when its member is promoted, SLAVE when it follows; the instance asks every switch for
that role. Distributed model (SDN-2): the instance elects each switch's master itself through
the coordination backend (`domain/sdn.py: decide_masterships`, keys on its own lease, epochs
from the group's counter): balanced, and a dead or cut-off instance's switches taken over.
Either way the role request carries the epoch as its generation_id: the switch refuses an
older master (OFPRRFC_STALE).

Flows. A master reconciles each of its switches with what the intents imply (`plan_flows`):
it reads the vimha flows the switch holds (by cookie), adds what is missing and deletes what
is no longer wanted, and leaves the rest alone, so that a change of master changes no flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from vimha.domain.errors import Temporary
from vimha.domain.sdn import (
    Act,
    Instance,
    Mastership,
    Model,
    SwitchPorts,
    decide_masterships,
    plan_flows,
    reconcile,
)
from vimha.drivers.coord_mirror import Mirror, load_json
from vimha.groupspec import groups_prefix
from vimha.ports.coordination import Coordination, LeaseLost
from vimha.ports.southbound import (
    BarrierDone,
    FlowRefused,
    FlowsHeld,
    PortChanged,
    PortInfo,
    RoleAnswer,
    Southbound,
    SouthEvent,
    SwitchDown,
    SwitchUp,
)
from vimha.sdn.config import SdnConfig
from vimha.sdnkeys import dpid_key, network_from, port_from, sdn_prefix, under

log = logging.getLogger("vimha.sdn")
ROLE_RETRY = 0.5  # s: a role request unanswered this long is sent again
TICK = 0.2  # s: the step runs at least this often
STARTUP = 5.0  # s: a fresh instance is not cut off from switches that did not connect yet


@dataclass
class Link:
    """A switch connected to this instance, as this instance knows it."""

    dpid: int
    address: str
    ports: dict[str, PortInfo]
    role: str = "equal"  # confirmed by the switch
    epoch: int = -1
    generation_seen: int = 0  # the newest generation id the switch told us of
    asked: tuple[str, int] | None = None
    asked_at: float = 0.0
    pending: dict[int, tuple[str, int]] = field(default_factory=dict)  # xid -> request
    role_at: float = 0.0  # wall time of the last ROLE_REPLY that made it master
    refused: list[str] = field(default_factory=list)
    installed: frozenset[int] | None = None  # vimha's cookies on the switch (None: read them)
    reading: bool = False
    barrier: int | None = None
    round_errors: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reread_at: float = 0.0


class SdnInstance:
    loop: asyncio.AbstractEventLoop

    def __init__(self, cfg: SdnConfig, coord: Coordination, south: Southbound) -> None:
        self.cfg = cfg
        self.coord = coord
        self.south = south
        self.prefix = sdn_prefix(cfg.vim)
        self.group = f"{groups_prefix(cfg.vim)}{cfg.group}/"
        self.mirror = Mirror(coord, (self.prefix, self.group))
        self.wake = self.mirror.subscribe()
        self.links: dict[int, Link] = {}
        self.central: tuple[str, int] = ("slave", 0)  # centralised: the role the handler gave
        self.last_master: dict[int, int] = {}  # dpid -> the epoch it last mastered it with
        self.lease = 0
        self.renewed_at = 0.0
        self.cut_since: dict[int, float] = {}
        self.published: dict[str, Any] = {}
        self.switch_docs: dict[int, dict[str, Any]] = {}
        self.events: asyncio.Queue[SouthEvent] = asyncio.Queue()
        self.role_waiters: list[asyncio.Future[None]] = []
        self.answers: dict[tuple[int, int], asyncio.Future[RoleAnswer]] = {}
        self.started = time.monotonic()

    # --- the lease ---------------------------------------------------------------------------

    async def _keep_lease(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if self.lease == 0:
                    self.lease = await self.coord.grant(self.cfg.lease_ttl)
                    self.published = {}
                else:
                    await self.coord.keepalive(self.lease)
                self.renewed_at = time.monotonic()
            except LeaseLost:
                log.warning("lease lost: masterships dropped")
                self.lease = 0
                self.wake.set()
                continue
            except Temporary as exc:
                log.warning("lease not renewed (%s)", exc)
                self.wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.lease_renew)

    def _trusted(self) -> bool:
        """Masterships held on the lease are ours while it was renewed within 2/3 of its
        TTL: past that we stop acting as master before anyone may take over."""
        return self.lease != 0 and (time.monotonic() - self.renewed_at < self.cfg.lease_ttl * 2 / 3)

    # --- what the backend says ---------------------------------------------------------------

    def _docs(self, kind: str) -> dict[str, dict[str, Any]]:
        found = under(self.mirror.keys, f"{self.prefix}{kind}/")
        return {k: load_json(e) for k, e in found.items()}

    def _instances(self) -> list[Instance]:
        out = []
        for name, doc in self._docs("instances").items():
            connected = frozenset(int(d, 16) for d in doc.get("switches", {}))
            out.append(Instance(name, connected, bool(doc.get("serving", True))))
        return out

    def _masters(self) -> dict[int, Mastership]:
        out = {}
        for key, doc in self._docs("masters").items():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                out[int(key, 16)] = Mastership(str(doc["instance"]), int(doc["epoch"]))
        return out

    def _slot(self) -> tuple[str, int]:
        """The group's active (slot 0) and its epoch, as the backend says."""
        doc = load_json(self.mirror.keys.get(self.group + "slots/0"))
        return str(doc.get("member") or ""), int(doc.get("epoch") or 0)

    def _wanted(self, dpid: int, masters: dict[int, Mastership]) -> tuple[str, int]:
        """The role this instance must hold on a switch, with the generation to ask it with.
        Centralised: what the handler said, or sooner, the group's slot taken by this node's
        member with a newer epoch (the handler's promotion follows and changes nothing)."""
        if self.cfg.model is Model.CENTRALISED:
            role, epoch = self.central
            holder, current = self._slot()
            if holder == self.cfg.host and current > epoch:
                return "master", current
            if role == "master" and current <= epoch:
                return role, epoch
            return "slave", current
        held = masters.get(dpid)
        if held is not None and held.holder == self.cfg.name and self._trusted():
            return "master", held.epoch
        return "slave", held.epoch if held is not None else 0

    # --- events from the switches ------------------------------------------------------------

    def on_event(self, event: SouthEvent) -> None:
        """Called from the southbound's threads."""
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def _handle(self, ev: SouthEvent) -> None:
        if isinstance(ev, SwitchUp):
            self.links[ev.dpid] = Link(ev.dpid, ev.address, {p.name: p for p in ev.ports})
            log.info("switch %016x connected from %s", ev.dpid, ev.address)
            return
        link = self.links.get(ev.dpid)
        if isinstance(ev, SwitchDown):
            if self.links.pop(ev.dpid, None) is not None:
                log.warning("switch %016x lost", ev.dpid)
            return
        if link is None:
            return
        if isinstance(ev, PortChanged):
            if ev.deleted:
                link.ports.pop(ev.port.name, None)
            else:
                link.ports[ev.port.name] = ev.port
        elif isinstance(ev, RoleAnswer):
            self._role_answer(link, ev)
        elif isinstance(ev, FlowsHeld):
            link.installed, link.reading = ev.cookies, False
        elif isinstance(ev, FlowRefused):
            said = f"{ev.detail}" + (f" (flow {ev.cookie:016x})" if ev.cookie else "")
            link.round_errors.append(said)
            log.error("switch %016x refused: %s", ev.dpid, said)
            if "IS_SLAVE" in ev.detail:
                link.role = "slave"  # not master there any more: asked again if we should be
        elif isinstance(ev, BarrierDone) and ev.xid == link.barrier:
            link.barrier = None
            link.errors = link.round_errors[-5:]
            if link.errors:
                link.installed = None  # read again, after a while
                link.reread_at = time.monotonic() + self.cfg.resync

    def _role_answer(self, link: Link, ev: RoleAnswer) -> None:
        asked = link.pending.pop(ev.xid, None)
        answer = self.answers.pop((ev.dpid, ev.xid), None)
        if answer is not None and not answer.done():
            answer.set_result(ev)
        if ev.generation >= 0:
            link.generation_seen = max(link.generation_seen, ev.generation)
        if ev.refused is not None:
            role, epoch = asked or (ev.role, ev.generation)
            said = f"{role} with generation {epoch} refused: {ev.refused}"
            link.refused = [*link.refused[-4:], said]
            log.warning("switch %016x: %s", link.dpid, said)
            # not asked again before ROLE_RETRY, unless what is wanted changes meanwhile
            if asked is not None and asked[0] == "slave":
                self._ask(link, ("nochange", 0))  # learn the switch's generation
            return
        if asked is not None and asked[0] == "nochange":
            return
        link.role, link.epoch, link.asked = ev.role, ev.generation, None
        if ev.role == "master":
            link.role_at = ev.at
            link.installed, link.reading = None, False  # read what it holds, then reconcile
            self.last_master[link.dpid] = ev.generation
            log.warning("master of %016x (generation %d)", link.dpid, ev.generation)
        for waiter in self.role_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _ask(self, link: Link, want: tuple[str, int]) -> None:
        xid = self.south.request_role(link.dpid, want[0], want[1])
        if xid is not None:
            link.pending[xid] = want
            if want[0] != "nochange":
                link.asked, link.asked_at = want, time.monotonic()

    # --- the step ----------------------------------------------------------------------------

    async def step(self) -> None:
        masters = self._masters()
        if self.cfg.model is Model.DISTRIBUTED:
            masters = await self._elect(masters)
        now = time.monotonic()
        for link in list(self.links.values()):
            role, epoch = self._wanted(link.dpid, masters)
            if role == "slave" and epoch < link.generation_seen:
                epoch = link.generation_seen
            want = (role, epoch)
            if (link.role, link.epoch) != want and (
                link.asked != want or now - link.asked_at > ROLE_RETRY
            ):
                self._ask(link, want)
            if link.role == "master" and role == "master" and link.epoch == epoch:
                self._program(link, now)
        await self._publish()

    async def _elect(self, masters: dict[int, Mastership]) -> dict[int, Mastership]:
        if not self._trusted():
            return masters
        instances = self._instances()
        switches = {d for i in instances for d in i.connected}
        for action in decide_masterships(self.cfg.name, instances, masters, switches):
            key = f"{self.prefix}masters/{dpid_key(action.dpid)}"
            if action.act is Act.RELEASE:
                entry = self.mirror.keys.get(key)
                if entry is not None and load_json(entry).get("instance") == self.cfg.name:
                    await self.coord.delete(key, entry.revision)
                    masters.pop(action.dpid, None)
                log.warning("released %s", action.reason)
                continue
            entry = self.mirror.keys.get(key)
            if entry is not None:  # its holder is gone (no longer publishes itself)
                await self.coord.delete(key, entry.revision)
            epoch = await self.coord.increment(self.group + "epoch")
            doc = json.dumps({"instance": self.cfg.name, "epoch": epoch, "t": time.time(),
                              "reason": action.reason})  # fmt: skip
            if await self.coord.create(key, doc, self.lease):
                masters[action.dpid] = Mastership(self.cfg.name, epoch)
                log.warning("took %s (epoch %d)", action.reason, epoch)
        return masters

    def _topology(self) -> tuple[dict[str, str], dict[int, str], list[Any], list[Any]]:
        tunnel_ips: dict[str, str] = {}
        hosts_by_dpid: dict[int, str] = {}
        for host, doc in self._docs("hosts").items():
            with contextlib.suppress(KeyError, ValueError, TypeError):
                tunnel_ips[host] = str(doc["tunnelIp"])
                hosts_by_dpid[int(str(doc["dpid"]), 16)] = host
        networks = [n for d in self._docs("networks").values() if (n := network_from(d))]
        ports = [p for d in self._docs("ports").values() if (p := port_from(d))]
        return tunnel_ips, hosts_by_dpid, networks, ports

    def _program(self, link: Link, now: float) -> None:
        if link.barrier is not None or link.reading:
            return  # a round in flight
        if link.installed is None:
            if now >= link.reread_at and self.south.request_flows(link.dpid):
                link.reading = True
            return
        tunnel_ips, hosts, networks, ports = self._topology()
        host = hosts.get(link.dpid)
        if host is None:
            return  # a switch no agent registered: nothing to program on it
        numbers = {name: p.number for name, p in link.ports.items()}
        live = frozenset(name for name, p in link.ports.items() if p.live)
        desired = plan_flows(host, SwitchPorts(numbers, live), tunnel_ips, networks, ports)
        diff = reconcile(desired, link.installed)
        if not diff.add and not diff.delete:
            return
        link.round_errors = []
        link.barrier = self.south.apply(link.dpid, diff.add, diff.delete)
        link.installed = frozenset(f.cookie for f in desired)
        log.info("switch %016x (%s): %s", link.dpid, host, diff.reason)

    # --- what this instance publishes --------------------------------------------------------

    def cut_off(self) -> list[int]:
        """Switches a peer is connected to and this instance is not, for cut_off_grace (and
        not before the switches had time to connect to a fresh instance: STARTUP)."""
        now = time.monotonic()
        if now - self.started < STARTUP:
            return []
        seen = {d for i in self._instances() if i.name != self.cfg.name for d in i.connected}
        cut = seen - set(self.links)
        for dpid in list(self.cut_since):
            if dpid not in cut:
                del self.cut_since[dpid]
        out = []
        for dpid in sorted(cut):
            if now - self.cut_since.setdefault(dpid, now) >= self.cfg.cut_off_grace:
                out.append(dpid)
        return out

    def status(self) -> dict[str, Any]:
        return {
            "name": self.cfg.name,
            "host": self.cfg.host,
            "model": self.cfg.model.value,
            "pid": os.getpid(),
            "lease": self.lease,
            "serving": self.cfg.model is Model.CENTRALISED or self._trusted(),
            "central": list(self.central),
            "cutOff": [dpid_key(d) for d in self.cut_off()],
            "switches": {
                dpid_key(d): {
                    "address": link.address,
                    "role": link.role,
                    "epoch": link.epoch,
                    "roleAt": link.role_at,
                    "refused": link.refused,
                    "flows": None if link.installed is None else len(link.installed),
                    "errors": link.errors,
                }
                for d, link in sorted(self.links.items())
            },
        }

    async def _publish(self) -> None:
        if self.lease == 0:
            return
        doc = self.status()
        if doc != self.published:
            await self.coord.put(
                f"{self.prefix}instances/{self.cfg.name}",
                json.dumps({**doc, "t": time.time()}),
                self.lease,
            )
            self.published = doc
        for dpid, link in self.links.items():
            if link.role != "master":
                continue
            sw = {
                "dpid": dpid_key(dpid),
                "master": self.cfg.name,
                "epoch": link.epoch,
                "ports": {n: {"number": p.number, "live": p.live} for n, p in link.ports.items()},
                "flows": None if link.installed is None else len(link.installed),
                "flowErrors": link.errors,
            }
            if sw != self.switch_docs.get(dpid):
                await self.coord.put(f"{self.prefix}switches/{dpid_key(dpid)}", json.dumps(sw))
                self.switch_docs[dpid] = sw

    # --- what the handler asks ---------------------------------------------------------------

    async def set_role(self, role: str, epoch: int, wait: float = 0.5) -> dict[str, Any]:
        """Centralised model: the role the group gave this instance; returns once every
        connected switch answered (or after `wait`)."""
        self.central = (role, epoch) if role == "master" else ("slave", 0)
        log.warning("role %s (epoch %d) from the group", role, epoch)
        deadline = time.monotonic() + wait
        await self.step()
        while time.monotonic() < deadline:
            want = {d: self._wanted(d, {}) for d in self.links}
            want = {d: (r, max(e, self.links[d].generation_seen) if r == "slave" else e)
                    for d, (r, e) in want.items()}  # fmt: skip
            if all((link.role, link.epoch) == want[d] for d, link in self.links.items()):
                break
            waiter = self.loop.create_future()
            self.role_waiters.append(waiter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, max(0.0, deadline - time.monotonic()))
            self.role_waiters.remove(waiter)
        return self.status()

    async def reassert(self, wait: float = 1.0) -> list[dict[str, Any]]:
        """Chaos: ask every connected switch for MASTER with an epoch older than the switch's
        (the one this instance last held it with, if older), as a former master that came
        back believing it still is would; returns what each switch answered."""
        asked: dict[int, tuple[int, asyncio.Future[RoleAnswer]]] = {}
        for dpid, link in self.links.items():
            below = max(0, max(link.generation_seen, link.epoch) - 1)
            epoch = min(self.last_master.get(dpid, below), below)
            xid = self.south.request_role(dpid, "master", epoch)
            if xid is not None:
                link.pending[xid] = ("master", epoch)
                answer = self.answers.setdefault((dpid, xid), self.loop.create_future())
                asked[dpid] = (epoch, answer)
        if asked:
            await asyncio.wait([f for _, f in asked.values()], timeout=wait)
        out = []
        for dpid, (epoch, answer) in sorted(asked.items()):
            if not answer.done():
                said = "no answer"
            else:
                ev = answer.result()
                said = ev.refused or f"accepted as {ev.role}"
            out.append({"dpid": dpid_key(dpid), "generation": epoch, "answer": said})
        return out

    # --- running -----------------------------------------------------------------------------

    async def _events(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            ev = await self.events.get()
            self._handle(ev)
            while not self.events.empty():
                self._handle(self.events.get_nowait())
            self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        self.loop = asyncio.get_running_loop()
        host, port = self.cfg.listen_address
        await asyncio.to_thread(self.south.start, host, port, self.on_event)
        tasks = [
            asyncio.create_task(self.mirror.run(stop, f"/vimha/{self.cfg.vim}/")),
            asyncio.create_task(self._keep_lease(stop)),
            asyncio.create_task(self._events(stop)),
        ]
        try:
            await self.mirror.ready.wait()
            while not stop.is_set():
                self.wake.clear()
                try:
                    await self.step()
                except Temporary as exc:
                    log.warning("coordination unavailable: %s", exc)
                except LeaseLost:
                    self.lease = 0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), TICK)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.lease:
                with contextlib.suppress(Exception):
                    await self.coord.revoke(self.lease)
            await asyncio.to_thread(self.south.stop)
