"""Live updates: which of the dashboard's topics changed, pushed as server-sent events.

One poller per controller runs while at least one browser listens: every `interval` it
reads a marker per topic (a number or a digest that moves when the topic's data changes)
and tells the listeners of each topic that moved. The browser then fetches the fragment it
shows again, with its own filters (htmx: `hx-trigger="sse:<topic>"`), so an event carries
no data and costs the same at 8 hosts or 1,000. Markers read the shared store or what every
controller observes itself, so a page follows the whole cloud whichever controller serves
it.

A new topic is a function here in MARKERS:
`(runtime) -> marker`, run in a worker thread when `in_thread` (it reads the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from vimha.api.ui import incidents, maintenance, sdn
from vimha.engine.runtime import Runtime

log = logging.getLogger("vimha.ui")
# Seconds between comments on an idle stream: less than what a balancer waits for a silent
# server (the HA cloud's HAProxy gives up after 10 s), or it cuts the stream.
KEEPALIVE = 5.0


def _digest(value: Any) -> str:
    return hashlib.sha1(
        json.dumps(value, sort_keys=True, default=str).encode(), usedforsecurity=False
    ).hexdigest()


def hosts_marker(rt: Runtime) -> str:
    """Each host's health, failure kind, planes, BMC and fencing (not the ages of readings)."""
    health = rt.health
    if health is None:
        return ""
    out = []
    for name in health.hosts:
        v = health.view(name)
        if v is None:
            continue
        bmc = v["bmc"] or {}
        out.append(
            (
                name,
                v["healthStatus"],
                v["failureKind"],
                v["reason"],
                sorted((p, s["status"]) for p, s in v["planes"].items()),
                (bmc.get("reachable"), bmc.get("powerState"), bmc.get("health")),
                v["fencing"]["state"],
                v["fencing"]["attempts"],
            )
        )
    return _digest(out)


VOLATILE_MEMBER = ("position", "pid", "detail", "decision")


def groups_marker(rt: Runtime) -> str:
    """Members, roles, epochs, health and the last switch-over of every service group."""
    views = rt.groups.views()
    for v in views:
        v["members"] = [{k: m.get(k) for k in m if k not in VOLATILE_MEMBER} for m in v["members"]]
    return _digest(views)


def alarms_marker(rt: Runtime) -> int:
    return rt.store.alarms_marker()


def compute_marker(rt: Runtime) -> str:
    return rt.store.compute.marker()


@dataclass(frozen=True, slots=True)
class Topic:
    marker: Callable[[Runtime], object]
    in_thread: bool  # reads the store: not on the event loop


MARKERS: dict[str, Topic] = {
    "sdn": Topic(sdn.marker, False),
    "hosts": Topic(hosts_marker, False),
    "groups": Topic(groups_marker, False),
    "alarms": Topic(alarms_marker, True),
    "compute": Topic(compute_marker, True),
    "incidents": Topic(incidents.marker, True),
    "maintenance": Topic(maintenance.marker, True),
}


@dataclass(slots=True)
class _Listener:
    topics: frozenset[str]
    pending: set[str] = field(default_factory=set)  # topics moved since the last event
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Feed:
    """Tells listeners which topics changed; polls only while someone listens. A slow
    listener gets each moved topic once, however often it moved meanwhile."""

    def __init__(self, rt: Runtime, interval: float = 1.0) -> None:
        self.rt = rt
        self.interval = interval
        self._listeners: list[_Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._last: dict[str, object] = {}
        self.closed = False

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def subscribe(self, topics: frozenset[str]) -> _Listener:
        listener = _Listener(topics & MARKERS.keys())
        self._listeners.append(listener)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="ui-feed")
        return listener

    def unsubscribe(self, listener: _Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def close(self) -> None:
        """End every stream (the controller stops)."""
        self.closed = True
        for listener in self._listeners:
            listener.wake.set()
        if self._task is not None:
            self._task.cancel()

    async def _read(self, name: str) -> object:
        topic = MARKERS[name]
        if topic.in_thread:
            return await asyncio.to_thread(topic.marker, self.rt)
        return topic.marker(self.rt)

    async def _poll(self) -> None:
        while self._listeners and not self.closed:
            wanted = set().union(*(listener.topics for listener in self._listeners))
            for name in sorted(wanted):
                try:
                    value = await self._read(name)
                except Exception:  # the store may be away: try again at the next tick
                    log.debug("ui: marker %s not read", name, exc_info=True)
                    continue
                if self._last.get(name, value) != value:
                    for listener in self._listeners:
                        if name in listener.topics:
                            listener.pending.add(name)
                            listener.wake.set()
                self._last[name] = value
            await asyncio.sleep(self.interval)
        self._last.clear()

    async def stream(
        self,
        topics: frozenset[str],
        still_allowed: Callable[[], Awaitable[bool]],
        resumed: bool = False,
    ) -> AsyncIterator[str]:
        """The text/event-stream of `topics`; ends when the controller stops or when
        `still_allowed()` (awaited at every event) turns false: a session that ended.

        Every message carries an id, so a browser that reconnects (the stream was cut, the
        controller restarted, the balancer chose another one) says so with Last-Event-ID:
        `resumed` streams start with an event for each topic, for what moved meanwhile."""
        listener = self.subscribe(topics)
        if resumed:
            listener.pending.update(listener.topics)
            listener.wake.set()
        sent = 0
        try:
            yield "retry: 2000\nid: 0\n\n"
            while not self.closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(listener.wake.wait(), KEEPALIVE)
                listener.wake.clear()
                if self.closed:
                    return
                if not await still_allowed():
                    yield "event: session\ndata: ended\n\n"
                    return
                moved, listener.pending = sorted(listener.pending), set()
                if not moved:
                    yield ": keep-alive\n\n"
                for name in moved:
                    sent += 1
                    yield f"id: {sent}\nevent: {name}\ndata: {name}\n\n"
        finally:
            self.unsubscribe(listener)
