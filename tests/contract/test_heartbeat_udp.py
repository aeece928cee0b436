"""Heartbeats over real UDP sockets on loopback: per-plane source addresses, forged and
replayed datagrams rejected."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from vimha.domain.heartbeat import Heartbeat
from vimha.drivers.heartbeat_udp import HeartbeatListener, HeartbeatSender, PlaneRoute

KEY = b"s" * 32


async def test_heartbeats_flow_per_plane_and_forgeries_are_dropped() -> None:
    got: list[tuple[Heartbeat, float]] = []
    listener = HeartbeatListener({"cmp-1": KEY}, lambda hb, t: got.append((hb, t)))
    host, port = await listener.start("127.0.0.1", 0)
    sender = HeartbeatSender(
        "cmp-1",
        KEY,
        [
            PlaneRoute("mgmt", "127.0.0.2", (host, port)),
            PlaneRoute("storage", "127.0.0.3", (host, port)),
        ],
        interval=0.02,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        async with asyncio.timeout(5):
            while len({hb.plane for hb, _ in got}) < 2 or len(got) < 10:
                await asyncio.sleep(0.01)
        seqs = [hb.seq for hb, _ in got if hb.plane == "mgmt"]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        # A forgery (wrong key) and a replay of a captured datagram, from another socket.
        from vimha.domain.heartbeat import encode

        forged = encode(
            Heartbeat("cmp-1", "mgmt", sender.boot_id, 10**9, got[-1][0].sent_ms), b"wrong key" * 4
        )
        replayed = encode(got[0][0], KEY)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(forged, (host, port))
            s.sendto(replayed, (host, port))
            s.sendto(b"garbage", (host, port))
        async with asyncio.timeout(5):
            while sum(listener.rejected.values()) < 3:
                await asyncio.sleep(0.01)
        assert (
            listener.rejected
            == {
                "heartbeat": 1,
                "replayed heartbeat": 1,
                "not a vimha heartbeat": 1,
            }
            or sum(listener.rejected.values()) == 3
        )
        assert all(hb.node == "cmp-1" for hb, _ in got)
    finally:
        stop.set()
        await task
        listener.close()
    assert sender.sent >= 10 and sender.errors == 0


async def test_a_busy_loop_does_not_silence_the_node_a_hung_one_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The heartbeats go from a thread of their own: while the agent's loop is blocked for
    less than `stall_limit` they go on (and the stall is logged); blocked for longer, they
    stop, as a hung agent must look failed."""
    got: list[Heartbeat] = []
    listener = HeartbeatListener({"cmp-1": KEY}, lambda hb, t: got.append(hb))
    host, port = await listener.start("127.0.0.1", 0)
    route = PlaneRoute("mgmt", "127.0.0.2", (host, port))
    sender = HeartbeatSender("cmp-1", KEY, [route], 0.02, stall_limit=0.3)
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        await asyncio.sleep(0.1)
        assert sender.late == 0
        began = time.time() * 1000
        time.sleep(0.25)  # busy: the loop blocked, under stall_limit
        await asyncio.sleep(0.1)  # what was sent meanwhile is read now
        during = [hb for hb in got if began + 50 <= hb.sent_ms <= began + 200]
        assert len(during) >= 3, "the heartbeats stopped while the loop was only busy"
        assert sender.late >= 1 and sender.worst_late >= 0.15
        assert "loop ran" in caplog.text and "ms late" in caplog.text
        began = time.time() * 1000
        time.sleep(0.8)  # hung: blocked well beyond stall_limit
        await asyncio.sleep(0.1)
        assert sender.withheld > 0
        assert not [hb for hb in got if began + 450 <= hb.sent_ms <= began + 750]
    finally:
        stop.set()
        await task
        listener.close()
