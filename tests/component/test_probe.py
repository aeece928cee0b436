"""The interruption probe (agent/probe.py) against a guest slower to answer than the probe's
interval, one request at a time (the QEMU demo guest under software emulation: a shell per
connection, 50-120 ms each, on one vCPU). Asked every 10 ms without a bound it fell behind
for good and answered nothing; the probe keeps at most a few requests in flight, so it is
asked as fast as it answers."""

from __future__ import annotations

import asyncio
import itertools

from vimha.agent.probe import Probe

WORK = 0.05  # seconds of the guest's one CPU per connection


class BusyGuest:
    """HTTP on 127.0.0.1: each connection costs WORK seconds of one shared CPU, whether
    its client still waits or not."""

    def __init__(self) -> None:
        self.cpu = asyncio.Lock()
        self.server: asyncio.Server | None = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self.cpu:
            await asyncio.sleep(WORK)
        try:
            await reader.readline()
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


async def test_a_guest_slower_than_the_interval_is_asked_as_fast_as_it_answers() -> None:
    guest = BusyGuest()
    port = await guest.start()
    probe = Probe("127.0.0.1", port, interval=0.01)
    probe.start()
    try:
        await asyncio.sleep(3.0)
    finally:
        await probe.stop()
        assert guest.server is not None
        guest.server.close()
    late = [t for t in probe.answers if t >= probe.answers[0] + 1.0] if probe.answers else []
    assert len(late) >= 15, f"{len(probe.answers)} answers in 3 s"  # ~20/s at 50 ms each
    gaps = [b - a for a, b in itertools.pairwise(late)]
    assert max(gaps) < 0.3, f"longest gap {max(gaps):.3f} s"
