"""The port binding (issues 14, 17, 18): the SDN's intents kept equal to the compute model.

Where an SDN runs (a compute node's switch has registered), every port of an instance
placed on a host is a port intent of the SDN, bound on that host as the device the
hypervisor makes for it (`tap_name(mac)`); an instance that recovery moves moves its ports'
intents, so every switch forwards to its new host; an instance deleted takes its intents
with it. The decisions are domain/port_binding.py's; this loop observes and acts.

Singleton work: the controller holding the singleton role binds. It looks again as soon as
some host's generation moves (every change of what a host should run moves it: a creation,
a move, a deletion; this controller's commits and the others'), when the SDN's stored
state changed (an intent deleted through the API is put back), and every `every` seconds.
A placement is bound within a store read and a coordination write of its commit (tens of
ms), before the new host's agent has started the guest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from vimha.domain.clock import Clock
from vimha.domain.errors import VimhaError
from vimha.domain.port_binding import Act, BindingAction, decide_bindings, placed_ports
from vimha.domain.sdn import Network, Port
from vimha.engine.host_watch import HostWatch
from vimha.engine.sdn import SdnWatcher
from vimha.ports.store import Store

log = logging.getLogger("vimha.port_binding")


class PortBinding:
    def __init__(
        self,
        store: Store,
        sdn: SdnWatcher,
        watch: HostWatch,
        clock: Clock,
        mine: Callable[[], bool],
        every: float = 5.0,
    ) -> None:
        self.store = store
        self.sdn = sdn
        self.watch = watch
        self.clock = clock
        self.mine = mine
        self.every = every
        # What this controller wrote and the SDN's mirror does not show yet (not written twice)
        self.written: dict[str, Port | None] = {}
        self.said: set[str] = set()  # skips already logged
        self.last: object = None  # the SDN's intents at the last look
        self.bound_in: list[float] = []  # s from a placement to its port bound (last 100)

    def _ports(self) -> list[Port]:
        seen = {p.id: p for p in self.sdn.ports()}
        for port_id, port in list(self.written.items()):
            if seen.get(port_id) == port:
                del self.written[port_id]  # the mirror has caught up
            elif port is None:
                seen.pop(port_id, None)
            else:
                seen[port_id] = port
        return list(seen.values())

    async def step(self) -> list[BindingAction]:
        """One look: what the store says of the instances against the SDN's intents."""
        instances = await asyncio.to_thread(self.store.compute.instances)
        actions = decide_bindings(placed_ports(instances), self.sdn.networks(), self._ports())
        placed_at = {i.id: i.updated_at for i in instances}
        for action in actions:
            await self._act(action, placed_at)
        return actions

    async def _act(self, action: BindingAction, placed_at: dict[str, datetime]) -> None:
        if action.act is Act.SKIP:
            if action.reason not in self.said:
                self.said.add(action.reason)
                log.warning("%s", action.reason)
            return
        if action.act is Act.NETWORK and action.network is not None:
            await self.sdn.add_network(action.network)
        elif action.act is Act.UNBIND:
            await self.sdn.unbind(action.port_id)
            self.written[action.port_id] = None
        elif action.act is Act.BIND and action.port is not None:
            await self.sdn.bind(action.port)
            self.written[action.port.id] = action.port
            at = placed_at.get(action.port.instance or "")
            if at is not None:
                took = (self.clock.now() - at).total_seconds()
                self.bound_in = [*self.bound_in[-99:], took]
                log.info("%s, %.0f ms after its placement", action.reason, took * 1000)
                return
        log.info("%s", action.reason)

    def _view(self) -> object:
        networks: list[Network] = self.sdn.networks()
        return (self.sdn.present(), tuple(networks), tuple(self.sdn.ports()))

    async def run(self, stop: asyncio.Event) -> None:
        await self.sdn.mirror.ready.wait()
        loop = asyncio.get_running_loop()
        due = 0.0
        while not stop.is_set():
            moved = self.watch.moved.is_set()
            self.watch.moved.clear()
            self.sdn.updated.clear()
            if self.mine() and self.sdn.present():
                view = self._view()
                if moved or view != self.last or loop.time() >= due:
                    self.last = view
                    due = loop.time() + self.every
                    try:
                        await self.step()
                    except VimhaError as exc:  # the store or the coordination: the next look
                        log.warning("ports not bound now: %s", exc.detail)
                        self.last = None
                    except Exception:  # as the SDN's alarms: looked at again at the next cue
                        log.exception("ports not bound now")
                        self.last = None
            cues = [asyncio.ensure_future(e.wait()) for e in (self.watch.moved, self.sdn.updated)]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.wait(cues, return_when=asyncio.FIRST_COMPLETED), self.every
                )
            for cue in cues:
                cue.cancel()
