"""The judging of hosts split across the controllers (issue 22, Scale).

Each controller still hears every host's heartbeats (a host taken over is judged from warm
plane states, at once), but judges, reads the BMC of, fences and alarms only the hosts it
owns (`domain/ownership.py`): the owners follow the controllers alive in coordination (their
presence keys, `engine/takeover.py`), so the hosts of a controller that dies are taken over
once its lease ends. An owner shares its judgments under `/vimha/<id>/health/<host>` (no
lease: they outlive it, and the next owner goes on from them); every controller mirrors them,
so that placement, recovery, maintenance and the API see every host's health.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable

from vimha.domain.classification import Classification, FailureKind, HealthStatus
from vimha.domain.errors import Temporary
from vimha.domain.ownership import Share, SplitMode, my_share, split_active
from vimha.drivers.coord_mirror import Mirror
from vimha.ports.coordination import Coordination

log = logging.getLogger("vimha.judging")
Judgment = tuple[Classification, float | None]  # the classification, when the host failed


def dump(cls: Classification, failed_at: float | None) -> str:
    return json.dumps(
        {
            "health": cls.health.value,
            "kind": cls.kind.value if cls.kind else None,
            "reason": cls.reason,
            "lost": list(cls.lost_planes),
            "failedAt": failed_at,
        }
    )


def parse(value: str) -> Judgment | None:
    try:
        doc = json.loads(value)
        cls = Classification(
            HealthStatus(doc["health"]),
            FailureKind(doc["kind"]) if doc.get("kind") else None,
            str(doc.get("reason", "")),
            tuple(doc.get("lost", ())),
        )
        failed = doc.get("failedAt")
        return cls, float(failed) if failed is not None else None
    except (ValueError, KeyError, TypeError):
        return None


class Judging:
    """This controller's share of the hosts, and the others' judgments of theirs."""

    def __init__(
        self,
        coord: Coordination,
        vim_id: str,
        me: str,
        mode: SplitMode,
        auto_above: int,
        controllers: int,
    ) -> None:
        self.coord = coord
        self.me = me
        self.mode = mode
        self.auto_above = auto_above
        self.controllers = controllers
        self.live_prefix = f"/vimha/{vim_id}/controllers/"
        self.prefix = f"/vimha/{vim_id}/health/"
        self.live: frozenset[str] = frozenset()
        self.share: Share | None = None
        self._hosts: frozenset[str] = frozenset()
        self._pending: dict[str, str] = {}  # host -> judgment to write (the latest wins)
        self._wake = asyncio.Event()
        self._presence = Mirror(coord, (self.live_prefix,))
        self._judgments = Mirror(coord, (self.prefix,))
        self.remote_changed = self._judgments.subscribe()
        # Told of the hosts taken over (gained) and handed over (lost) when the share changes.
        self.on_handover: Callable[[frozenset[str], frozenset[str]], None] = lambda g, lost: None

    @property
    def enabled(self) -> bool:
        """Whether the split may ever apply (mode and controllers): the watches run."""
        return split_active(self.mode, 1 << 30, self.auto_above, self.controllers)

    def split(self, hosts: int) -> bool:
        return split_active(self.mode, hosts, self.auto_above, self.controllers)

    def mine(self, hosts: Iterable[str]) -> frozenset[str]:
        """The hosts this controller judges now, out of `hosts` (the inventory)."""
        every = frozenset(hosts)
        if self.share is None or every != self._hosts:
            self._update(every)
        assert self.share is not None
        return self.share.hosts

    def _update(self, hosts: frozenset[str]) -> None:
        split = self.split(len(hosts))
        share = my_share(hosts, self.live, self.me, split)
        before, known = self.share, self._hosts
        self.share, self._hosts = share, hosts
        if split and (before is None or before.reason != share.reason):
            log.warning("%s", share.reason)
        if before is not None and before.hosts != share.hosts:
            gained = (share.hosts - before.hosts) & known  # not those just declared
            lost = before.hosts - share.hosts
            if gained and split:
                log.warning("%s takes over %d hosts: %s", self.me, len(gained), _few(gained))
            self.on_handover(gained, lost)

    def publish(self, host: str, cls: Classification, failed_at: float | None) -> None:
        """Share a judgment of one of our hosts (written by `run`, in the background)."""
        if self.share is not None and self.split(len(self._hosts)):
            self._pending[host] = dump(cls, failed_at)
            self._wake.set()

    def remote(self, host: str) -> Judgment | None:
        """The owner's last shared judgment of `host`."""
        entry = self._judgments.keys.get(self.prefix + host)
        return parse(entry.value) if entry is not None else None

    async def run(self, stop: asyncio.Event) -> None:
        if not self.enabled:
            await stop.wait()  # a root task: it lasts as long as the controller
            return
        tasks = [
            asyncio.create_task(self._presence.run(stop, self.live_prefix)),
            asyncio.create_task(self._judgments.run(stop, self.prefix)),
            asyncio.create_task(self._write(stop)),
        ]
        seen = self._presence.subscribe()
        try:
            while not stop.is_set():
                live = frozenset(k.removeprefix(self.live_prefix) for k in self._presence.keys)
                if live != self.live and self._presence.ready.is_set():
                    self.live = live
                    self._update(self._hosts)
                seen.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(seen.wait(), 1.0)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _write(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                host, value = next(iter(self._pending.items()))
                try:
                    await self.coord.put(self.prefix + host, value)
                except Temporary as exc:
                    log.warning("judgment of %s not shared yet: %s", host, exc)
                    await asyncio.sleep(0.5)
                    continue
                if self._pending.get(host) == value:  # not judged again meanwhile
                    del self._pending[host]


def _few(hosts: Iterable[str], n: int = 5) -> str:
    names = sorted(hosts)
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")
