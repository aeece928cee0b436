"""A claim in the coordination backend that only one member of a group may hold at a time: the
bootstrap of a new Galera cluster, the formation of a new RabbitMQ cluster. It is created if
absent (so two members never both do it) and dropped once done; a claim left by a member that
died half-way is void after `valid` seconds and may be taken again."""

from __future__ import annotations

import json
import time

from vimha.drivers.coord_mirror import Mirror, load_json
from vimha.ports.coordination import Coordination

CLAIM_VALID = 120.0


class Claim:
    def __init__(
        self, coord: Coordination, mirror: Mirror, key: str, node: str, valid: float = CLAIM_VALID
    ) -> None:
        self.coord = coord
        self.mirror = mirror
        self.key = key
        self.node = node
        self.valid = valid

    def holder(self) -> str | None:
        """The member holding a valid claim, None when nobody does."""
        doc = load_json(self.mirror.keys.get(self.key))
        if not doc or time.time() - float(doc.get("t", 0)) > self.valid:
            return None
        return str(doc.get("member"))

    async def take(self) -> bool:
        value = json.dumps({"member": self.node, "t": time.time()})
        if await self.coord.create(self.key, value):
            return True
        entry = await self.coord.get(self.key)
        if entry is not None and load_json(entry).get("member") == self.node:
            return True  # its own, from an attempt that did not finish
        if entry is not None and time.time() - float(load_json(entry).get("t", 0)) > self.valid:
            await self.coord.delete(self.key, entry.revision)  # void: its claimant died
            return await self.coord.create(self.key, value)
        return False

    async def drop(self) -> None:
        entry = self.mirror.keys.get(self.key)
        if entry is not None and load_json(entry).get("member") == self.node:
            await self.coord.delete(self.key, entry.revision)
