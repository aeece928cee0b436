"""The interruption probe of a migration (issue 19): the guest's port asked every few
milliseconds from before the migration starts to its first answer after it ended; the
answers' times give the interruption (`domain/migration.longest_gap`), to within one
interval.

A probe is an HTTP GET (the VDU's health check path, `/` by default) or a TCP connect, on
the instance's first address; each runs as its own task, so one that hangs (a paused guest
answers nothing) does not delay the next. An answer is a status line below 500 (HTTP) or a
connection accepted (TCP): a refused or reset connection is no answer.

No new probe starts while `max_waiting` of them are connected and wait for their answer:
a guest slower to answer than the interval (the QEMU demo guest under software emulation
takes 50-120 ms per request, a shell per connection) is asked as fast as it answers, not
buried under a hundred requests a second (it then answered none at all). Probes still
connecting do not count: those to a guest paused or moving hang until their timeout while
new ones go on every interval, so its first answer after a pause is seen within one.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

MAX_IN_FLIGHT = 200
MAX_WAITING = 2  # connected, waiting for the answer


class Probe:
    def __init__(
        self,
        ip: str,
        port: int = 8080,
        kind: str = "http",
        path: str = "/",
        interval: float = 0.01,
        timeout: float = 1.0,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self.ip = ip
        self.port = port
        self.kind = kind
        self.path = path
        self.interval = interval
        self.timeout = timeout
        self.max_waiting = max_waiting
        self._waiting = 0  # probes connected, waiting for their answer
        self.answers: list[float] = []  # loop times of the answers
        self._task: asyncio.Task[None] | None = None
        self._flying: set[asyncio.Task[None]] = set()
        self._answered = asyncio.Event()

    @classmethod
    def for_guest(cls, doc: dict[str, Any], interval: float = 0.01) -> Probe | None:
        """The probe of a guest as the controller describes it (its first port, its health
        check if its VDU declares one); None for a guest without an address."""
        if not doc.get("ports"):
            return None
        check = doc.get("healthCheck") or {}
        return cls(
            doc["ports"][0]["ip"],
            int(check.get("port", 8080)),
            str(check.get("kind", "http")),
            str(check.get("path", "/")),
            interval,
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._flying):
            task.cancel()
        await asyncio.gather(*self._flying, return_exceptions=True)

    async def answer_after(self, since: float, within: float) -> float | None:
        """The time of the first answer at or after `since` (loop time), waiting up to
        `within` seconds; None if none came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            found = next((t for t in self.answers if t >= since), None)
            if found is not None:
                return found
            left = deadline - loop.time()
            if left <= 0:
                return None
            self._answered.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), min(left, 0.5))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if len(self._flying) < MAX_IN_FLIGHT and self._waiting < self.max_waiting:
                task = asyncio.create_task(self._one(loop))
                self._flying.add(task)
                task.add_done_callback(self._flying.discard)
            await asyncio.sleep(self.interval)

    async def _one(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            ok = await asyncio.wait_for(self._ask(), self.timeout)
        except (OSError, TimeoutError, ValueError):
            return
        if ok:
            self.answers.append(loop.time())
            self._answered.set()

    async def _ask(self) -> bool:
        reader, writer = await asyncio.open_connection(self.ip, self.port)
        self._waiting += 1
        try:
            if self.kind == "tcp":
                return True
            writer.write(f"GET {self.path} HTTP/1.0\r\nHost: {self.ip}\r\n\r\n".encode())
            await writer.drain()
            line = await reader.readline()
            parts = line.split()
            return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and int(parts[1]) < 500
        finally:
            self._waiting -= 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
