"""A watched copy of the keys under some prefixes of the coordination backend, for members
and controllers that decide from what is there now; and the JSON values kept in it."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from vimha.domain.errors import Temporary
from vimha.ports.coordination import Coordination, Entry

log = logging.getLogger("vimha.coordination")


def load_json(entry: Entry | None) -> dict[str, Any]:
    if entry is None:
        return {}
    try:
        doc = json.loads(entry.value)
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

    async def run(self, stop: asyncio.Event, common: str) -> None:
        while not stop.is_set():
            try:
                revision = 0
                keys: dict[str, Entry] = {}
                for prefix in self.prefixes:
                    rev, entries = await self.coord.list(prefix)
                    revision = max(revision, rev)
                    keys.update((e.key, e) for e in entries)
                self.keys = keys
                self.ready.set()
                self.changed.set()
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
                    self.changed.set()
            except Temporary as exc:
                log.warning("coordination watch interrupted (%s); re-listing", exc)
                await asyncio.sleep(0.2)
