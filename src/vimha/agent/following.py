"""Whether a database standby keeps up with the active it follows (the PostgreSQL and MariaDB
handlers): one that has not received from its active for `grace` seconds, while that active
answers as the primary, cannot follow it (its history forked off after the active's: it
received what the active never had; or its link to it is down). It is unhealthy (neither
counted as redundancy nor promoted: a commit waiting for a standby would wait for ever) and
its data is replaced from the active at its restart. A standby whose active does not answer
stays healthy: the group's failover is for that."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

ASK_EVERY = 1.0  # the active is asked at most this often (s): one that hangs holds a round


class Following:
    def __init__(self, grace: float, answers: Callable[[str], Awaitable[bool]]) -> None:
        self.grace = grace
        self.answers = answers  # whether the server at host:port answers as the primary
        self.upstream: str | None = None  # the active (host:port) followed
        self.since: float | None = None  # since when nothing was received from it
        self.replace = False  # the data cannot follow the active: replaced at the next start
        self.asked = (float("-inf"), False)  # when the active was last asked, its answer

    def follows(self, active: str | None) -> None:
        """Pointed at `active` (None: at nothing, or it is the active itself now)."""
        if active != self.upstream:
            self.upstream, self.since = active, None

    async def judge(self, receiving: bool, now: float | None = None) -> str | None:
        """None while the standby is fine; else why it cannot follow (and `replace` set)."""
        if receiving or self.upstream is None:
            self.since, self.replace = None, False
            return None
        now = time.monotonic() if now is None else now
        since = self.since = self.since if self.since is not None else now
        if now - since < self.grace:
            return None
        if now - self.asked[0] >= ASK_EVERY:
            self.asked = (now, await self.answers(self.upstream))
        if not self.asked[1]:
            return None
        self.replace = True
        return (
            f"nothing received from {self.upstream} for {now - since:.0f} s, which answers as "
            "the primary: its data is replaced from it at restart"
        )
