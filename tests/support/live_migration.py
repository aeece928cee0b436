"""Live migration between two libvirt daemons on one machine (issue 19), for
tests/system/test_libvirt_migration.py and bench/migration_libvirt.py.

- `host_bridge()`: a Linux bridge with an address for the host, and the guest's port on it
  (nothing leaves it); both daemons' guests plug into it (they share the network namespace).
- `migrate()`: one live migration carried out as the agents' migration runner does it
  (agent/migrations.py): the destination's driver prepares (`prepare_incoming`), the source's
  moves the guest (`migrate_live`, with the tolerated downtime), and the agent's probe asks
  the guest's port from before the migration to its first answer after it: the longest time
  without an answer is the interruption (`domain/migration.longest_gap`, to within one probe
  interval), what the agent records. Under software emulation the guest also slows down
  while its memory is copied (dirty page tracking), so `switchover_ms` is the silence around
  the moment the guest ran again on the destination (a thread watches its domain there):
  from the last answer before it to the first after it.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from vimha.agent.probe import Probe
from vimha.domain.migration import longest_gap
from vimha.ports.hypervisor import GuestPort, GuestSpec, Hypervisor

BEFORE_WITHIN = 30.0  # seconds to wait for the guest's first answer before migrating
AFTER_WITHIN = 60.0  # and for its first answer after


@contextmanager
def host_bridge(prefix: str = "vh-lm") -> Iterator[GuestPort]:
    """A bridge `<prefix><N>` holding 10.215.N.1/24, and the guest's port 10.215.N.10 on it;
    the bridge is deleted on the way out."""
    n = random.randrange(100, 250)
    name = f"{prefix}{n}"
    try:
        for argv in (
            ["link", "add", name, "type", "bridge"],
            ["addr", "add", f"10.215.{n}.1/24", "dev", name],
            ["link", "set", name, "up"],
        ):
            subprocess.run(["ip", *argv], check=True, capture_output=True)
        yield GuestPort("vnf-a", f"52:54:00:d6:{n:02x}:01", f"10.215.{n}.10", 24, bridge=name)
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


@dataclass(frozen=True, slots=True)
class Measured:
    """One live migration, as the agent would record it."""

    interruption_ms: float  # the longest time the probe got no answer around it
    switchover_ms: float | None  # the silence around the guest's resumption there
    downtime_ms: float | None  # the downtime libvirt measured (its completed job)
    prepare_s: float  # the destination's prepare_incoming
    migrate_s: float  # the source's migrate_live, from its call to its return
    probes: int  # answers the probe got
    silence_ends_s: float  # where the longest silence ended, s after the resumption there
    detail: str


async def migrate(
    src: Hypervisor,
    dst: Hypervisor,
    guest: GuestSpec,
    max_downtime_ms: int | None = 300,
    limit: float = 120.0,
    interval: float = 0.01,
) -> Measured:
    """Move the running `guest` from `src` to `dst` live; raises if it fails (AssertionError
    when the guest did not answer before or after)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    target = await dst.prepare_incoming(guest, live=True)
    prepared = loop.time()
    probe = Probe(guest.ports[0].ip, interval=interval)
    probe.start()
    try:
        if await probe.answer_after(loop.time(), BEFORE_WITHIN) is None:
            raise AssertionError(f"{guest.ports[0].ip} did not answer before the migration")
        started = loop.time()
        watch = ResumeWatch(target["uri"], target["name"])
        watch.start()
        try:
            result = await src.migrate_live(guest.instance_id, target, max_downtime_ms, limit)
        except BaseException:
            await dst.cancel_incoming(guest.instance_id)
            raise
        finally:
            await asyncio.to_thread(watch.finish)
        ended = loop.time()
        back = await probe.answer_after(ended, AFTER_WITHIN)
    finally:
        await probe.stop()
    if back is None:
        raise AssertionError(f"no answer within {AFTER_WITHIN:g} s after the migration")
    before = [t for t in probe.answers if t <= started]
    resumed = watch.resumed if watch.resumed is not None else ended
    edges = [t for t in probe.answers if before[-1] <= t <= back]
    silence = max(itertools.pairwise(edges), key=lambda ab: ab[1] - ab[0], default=(0, back))
    last = max((t for t in probe.answers if t <= resumed), default=None)
    first = min((t for t in probe.answers if t >= resumed), default=None)
    switchover = None if last is None or first is None else round((first - last) * 1000, 1)
    return Measured(
        interruption_ms=round(longest_gap(probe.answers, before[-1], back), 1),
        switchover_ms=switchover,
        downtime_ms=result.downtime_ms,
        prepare_s=round(prepared - t0, 3),
        migrate_s=round(ended - started, 3),
        probes=len(probe.answers),
        silence_ends_s=round(silence[1] - resumed, 2),
        detail=result.detail,
    )


class ResumeWatch:
    """On a thread of its own, with a connection of its own: the time (time.monotonic, the
    clock of asyncio's loop) the domain `name` at `uri` first runs, 10 ms at a time."""

    def __init__(self, uri: str, name: str) -> None:
        self.uri = uri
        self.name = name
        self.resumed: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        import libvirt

        conn = libvirt.open(self.uri)
        try:
            while True:
                stopping = self._stop.is_set()  # then one last look
                try:
                    state, _ = conn.lookupByName(self.name).state()
                except libvirt.libvirtError:
                    state = None  # not there yet
                if state == libvirt.VIR_DOMAIN_RUNNING:
                    self.resumed = time.monotonic()
                    return
                if stopping:
                    return
                self._stop.wait(0.01)
        finally:
            conn.close()
