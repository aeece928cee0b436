"""Heartbeats over UDP: the agent's sender (one socket per network plane, bound to that
plane's address, so a dead link really silences that plane) and the controller's listener.

The listener authenticates every datagram (domain/heartbeat.py), drops forgeries and replays,
and hands accepted heartbeats to a callback with the monotonic receive time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vimha.domain.heartbeat import Heartbeat, Last, admit, decode, encode

log = logging.getLogger("vimha.heartbeat")
LATE_SAY_EVERY = 10.0  # s between two warnings that the agent's loop ran late


@dataclass(frozen=True, slots=True)
class PlaneRoute:
    """Send this plane's heartbeats from `local` to `remote` (host, port)."""

    plane: str
    local: str
    remote: tuple[str, int]


class HeartbeatSender:
    """Sends from a thread of its own, so that a busy event loop (a handler's slow step, a
    burst of work at start) does not silence the node: a round late by 300 ms made the
    controller see a dead node. The thread sends only while the loop is alive: when the
    loop has not run for `stall_limit` seconds (a hung agent supervises nothing), the
    heartbeats stop and the node is found failed, as before."""

    def __init__(
        self,
        node: str,
        key: bytes,
        routes: list[PlaneRoute],
        interval: float,
        status: Callable[[], str] = lambda: "ok",
        dropped: Callable[[str], bool] = lambda plane: False,
        on_round: Callable[[], None] = lambda: None,
        stall_limit: float = 2.0,
    ) -> None:
        self.node = node
        self.key = key
        self.routes = routes
        self.interval = interval
        self.status = status
        self.dropped = dropped
        self.on_round = on_round  # called after each round of heartbeats (watchdog petting)
        self.stall_limit = stall_limit
        self.boot_id = os.urandom(16)
        self.seq = 0
        self.sent = 0
        self.errors = 0
        self.late = 0  # times the loop ran more than an interval late (blocked or starved)
        self.worst_late = 0.0
        self.withheld = 0  # rounds not sent: the loop had stalled beyond stall_limit
        self._said_late = -LATE_SAY_EVERY
        self._loop_seen = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        sockets = []
        for route in self.routes:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((route.local, 0))
            sock.setblocking(False)  # a full buffer is a failed send, never a stuck thread
            sockets.append((route, sock))
        halt = threading.Event()
        self._loop_seen = time.monotonic()
        thread = threading.Thread(
            target=self._send_rounds, args=(sockets, halt), name="heartbeats", daemon=True
        )
        thread.start()
        loop = asyncio.get_running_loop()
        try:
            next_at = loop.time()
            while not stop.is_set():
                now = loop.time()
                self._loop_seen = time.monotonic()
                if now - next_at >= self.interval:
                    self._stalled(now - next_at, now)
                next_at = now + self.interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
        finally:
            halt.set()
            await asyncio.to_thread(thread.join)
            for _, sock in sockets:
                sock.close()

    def _send_rounds(
        self, sockets: list[tuple[PlaneRoute, socket.socket]], halt: threading.Event
    ) -> None:
        next_at = time.monotonic()
        while not halt.is_set():
            if time.monotonic() - self._loop_seen <= self.stall_limit:
                self._send_round(sockets)
            else:
                self.withheld += 1  # a hung agent must look failed
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < 0:  # this thread was starved: no burst to catch up
                next_at, delay = time.monotonic(), 0
            halt.wait(delay)

    def _send_round(self, sockets: list[tuple[PlaneRoute, socket.socket]]) -> None:
        self.seq += 1
        now_ms = int(time.time() * 1000)
        for route, sock in sockets:
            if self.dropped(route.plane):
                continue  # fault injection in loopback mode: this plane is "down"
            hb = Heartbeat(self.node, route.plane, self.boot_id, self.seq, now_ms, self.status())
            try:
                sock.sendto(encode(hb, self.key), route.remote)
                self.sent += 1
            except OSError:  # the plane's link is down: that is what we report
                self.errors += 1
        self.on_round()

    def _stalled(self, behind: float, now: float) -> None:
        """The loop ran late: said in the log (once per LATE_SAY_EVERY seconds). Beyond
        `stall_limit` the heartbeats stop, and the node looks failed."""
        self.late += 1
        self.worst_late = max(self.worst_late, behind)
        if now - self._said_late >= LATE_SAY_EVERY:
            self._said_late = now
            log.warning(
                "the agent's loop ran %.0f ms late (blocked or starved; %d times so far, worst "
                "%.0f ms; heartbeats stop beyond %.1f s)",
                behind * 1000,
                self.late,
                self.worst_late * 1000,
                self.stall_limit,
            )


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, listener: HeartbeatListener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.listener.received(data, addr)


RECEIVE_BUFFER = 8 * 1024 * 1024
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def _widen_receive_buffer(sock: Any) -> None:
    """1,000 hosts on two planes send 20,000 heartbeats a second, often in bursts; the default
    buffer (~200 KiB, a few hundred datagrams) drops them while the loop is busy, and dropped
    heartbeats look like dead hosts. As root the kernel's cap (rmem_max) can be passed."""
    for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, RECEIVE_BUFFER)
            break
        except OSError:
            continue
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if got < RECEIVE_BUFFER:
        log.warning(
            "heartbeat receive buffer is %d KiB (wanted %d); raise net.core.rmem_max",
            got // 1024,
            RECEIVE_BUFFER // 1024,
        )


class HeartbeatListener:
    def __init__(
        self,
        keys: Mapping[str, bytes],
        on_heartbeat: Callable[[Heartbeat, float], None],
        max_age: float = 30.0,
    ) -> None:
        self.keys = keys
        self.on_heartbeat = on_heartbeat
        self.max_age = max_age
        self.last: dict[tuple[str, str], Last] = {}  # replay guard, per (node, plane)
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(host, port)
        )
        self._transport = transport
        _widen_receive_buffer(transport.get_extra_info("socket"))
        address: tuple[str, int] = transport.get_extra_info("sockname")[:2]
        return address

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def received(self, data: bytes, addr: tuple[str, int]) -> None:
        decoded = decode(data, self.keys)
        hb = decoded.heartbeat
        if hb is None:
            self._reject(decoded.reason, addr)
            return
        key = (hb.node, hb.plane)
        ok, reason = admit(self.last.get(key), hb, int(time.time() * 1000), self.max_age)
        if not ok:
            self._reject(reason, addr)
            return
        self.last[key] = (hb.boot_id, hb.seq)
        self.accepted += 1
        self.on_heartbeat(hb, time.monotonic())

    def _reject(self, reason: str, addr: tuple[str, int]) -> None:
        kind = reason.split(":")[0]
        self.rejected[kind] = self.rejected.get(kind, 0) + 1
        if self.rejected[kind] in (1, 10, 100, 1000) or self.rejected[kind] % 10000 == 0:
            log.warning(
                "heartbeat rejected from %s: %s (%d so far)", addr[0], reason, self.rejected[kind]
            )
