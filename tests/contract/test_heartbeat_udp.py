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


async def test_a_blocked_loop_is_said_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """The controller sees silence while the agent's loop is blocked: the agent says so."""
    listener = HeartbeatListener({"cmp-1": KEY}, lambda hb, t: None)
    host, port = await listener.start("127.0.0.1", 0)
    sender = HeartbeatSender("cmp-1", KEY, [PlaneRoute("mgmt", "127.0.0.2", (host, port))], 0.02)
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        await asyncio.sleep(0.1)
        assert sender.late == 0
        time.sleep(0.2)  # blocks the loop: ten rounds due
        await asyncio.sleep(0.1)
        assert sender.late >= 1 and sender.worst_late >= 0.15
        assert "heartbeats" in caplog.text and "ms late" in caplog.text
    finally:
        stop.set()
        await task
        listener.close()
