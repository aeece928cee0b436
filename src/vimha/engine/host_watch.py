"""Each compute host's generation, watched by its agent (watch, not poll).

An agent asks for what its host should run with the generation it knows; the request waits
here until the generation moves (or a timeout), then answers at once. The generation moves
with every commit that changes what the host should run: this controller's own commits wake
the waiters from the store writer's thread; other controllers' commits reach it through the
coordination backend (`follow`, one key per host), so an agent connected to any controller
sees every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from vimha.domain.errors import Temporary
from vimha.drivers.coord_mirror import Mirror
from vimha.ports.coordination import Coordination

log = logging.getLogger("vimha.host_watch")


class HostWatch:
    def __init__(self, coordination: Coordination, vim: str) -> None:
        self.coordination = coordination
        self.prefix = f"/vimha/{vim}/compute/generation/"
        self.known: dict[str, int] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outgoing: dict[str, int] = {}
        self._publish = asyncio.Event()
        self.moved = asyncio.Event()  # some host's generation moved (the port binding's cue)
        self._closing = False

    def close(self) -> None:
        """The controller is shutting down: every waiting agent is answered now (it asks
        another controller next), and later requests do not wait."""
        self._closing = True
        for event in self._events.values():
            event.set()
        self._events.clear()

    @property
    def closing(self) -> bool:
        return self._closing

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def seed(self, generations: Mapping[str, int]) -> None:
        for host, gen in generations.items():
            self.known[host] = max(self.known.get(host, 0), gen)

    def committed(self, generations: Mapping[str, int]) -> None:
        """Hosts whose generation this controller moved (any thread): wake their agents,
        and tell the other controllers."""
        if not generations:
            return
        if self._loop is None:
            self._apply(generations, publish=True)
            return
        self._loop.call_soon_threadsafe(self._apply, dict(generations), True)

    def _apply(self, generations: Mapping[str, int], publish: bool) -> None:
        for host, gen in generations.items():
            if gen <= self.known.get(host, 0):
                continue
            self.known[host] = gen
            self.moved.set()
            event = self._events.pop(host, None)
            if event is not None:
                event.set()
            if publish:
                self._outgoing[host] = max(self._outgoing.get(host, 0), gen)
        if publish and self._outgoing:
            self._publish.set()

    async def wait(self, host: str, known: int, within: float) -> int:
        """The host's generation once it differs from `known`, or after `within` s."""
        if self._closing or self.known.get(host, 0) != known:
            return self.known.get(host, 0)
        event = self._events.setdefault(host, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), within)
        return self.known.get(host, 0)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish this controller's changes; follow the others'."""
        mirror = Mirror(self.coordination, (self.prefix,))
        follower = asyncio.create_task(mirror.run(stop, self.prefix))
        publisher = asyncio.create_task(self._publisher(stop))
        try:
            await mirror.ready.wait()
            while not stop.is_set():
                seen = {
                    key.removeprefix(self.prefix): int(entry.value)
                    for key, entry in mirror.keys.items()
                    if key.startswith(self.prefix) and entry.value.isdigit()
                }
                self._apply(seen, publish=False)
                mirror.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(mirror.changed.wait(), 5.0)
        finally:
            follower.cancel()
            publisher.cancel()

    async def _publisher(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._publish.wait()
            self._publish.clear()
            batch, self._outgoing = self._outgoing, {}
            for host, gen in batch.items():
                try:
                    await self.coordination.put(self.prefix + host, str(gen))
                except Temporary as exc:  # the store holds the truth; agents re-ask
                    log.warning("generation of %s not published: %s", host, exc.detail)
