"""A watched copy of the keys under some prefixes of the coordination backend, for members
and controllers that decide from what is there now; and the JSON values kept in it."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any

from vimha.domain.errors import Temporary
from vimha.ports.coordination import Coordination, Entry, PermissionDenied

log = logging.getLogger("vimha.coordination")


def load_json(entry: Entry | None) -> dict[str, Any]:
    """The JSON object a key holds ({} if none). Parsed once per value: members decide from
    the same few keys ten times a second. The result is shared: read it, never change it."""
    return {} if entry is None else _parse(entry.value)


@functools.lru_cache(maxsize=2048)
def _parse(value: str) -> dict[str, Any]:
    try:
        doc = json.loads(value)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


class Mirror:
    """The keys under some prefixes, kept current by a watch (re-listed after an error)."""

    def __init__(self, coord: Coordination, prefixes: tuple[str, ...]) -> None:
        self.coord = coord
        self.prefixes = prefixes
        self.keys: dict[str, Entry] = {}
        self.changed = asyncio.Event()
        self.ready = asyncio.Event()
        self.listeners: list[asyncio.Event] = [self.changed]
        self.running = False

    def subscribe(self) -> asyncio.Event:
        """An event of one's own, set on every change (several users share one watch)."""
        event = asyncio.Event()
        self.listeners.append(event)
        return event

    def _changed(self) -> None:
        for event in self.listeners:
            event.set()

    def notify(self) -> None:
        """Wake every user now, as a change does (e.g. a member's process just died)."""
        self._changed()

    async def run(self, stop: asyncio.Event, common: str) -> None:
        self.running = True
        while not stop.is_set():
            try:
                revisions = []
                keys: dict[str, Entry] = {}
                for prefix in self.prefixes:
                    rev, entries = await self.coord.list(prefix)
                    revisions.append(rev)
                    keys.update((e.key, e) for e in entries)
                revision = min(revisions)  # changes after the first listing are replayed
                self.keys = keys
                self.ready.set()
                self._changed()
                async for change in self.coord.watch(common, revision):
                    if not change.key.startswith(self.prefixes):
                        continue
                    if change.kind == "DELETE":
                        self.keys.pop(change.key, None)
                    else:
                        lease = self.keys[change.key].lease if change.key in self.keys else 0
                        self.keys[change.key] = Entry(
                            change.key, change.value, change.revision, lease
                        )
                    self._changed()
            except Temporary as exc:
                log.warning("coordination watch interrupted (%s); re-listing", exc)
                # a backend that asks for a longer pause (a refused password) gets it
                await asyncio.sleep(exc.retry_after if exc.retry_after > 1.0 else 0.2)
            except PermissionDenied as exc:  # refused again at every listing: not retried
                log.error("coordination mirror stopped: %s", exc.detail)
                return
