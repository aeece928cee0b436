"""Heartbeat datagrams: signed, replay-proof, and never an exception on garbage."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vimha.domain.heartbeat import Heartbeat, Last, admit, decode, encode

KEY = b"k" * 32
KEYS = {"cmp-1": KEY}
HB = Heartbeat("cmp-1", "mgmt", b"B" * 16, 7, 1_000_000, "ok")


def test_round_trip() -> None:
    decoded = decode(encode(HB, KEY), KEYS)
    assert decoded.heartbeat == HB and decoded.reason == "ok"


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"", "not a vimha heartbeat"),
        (b"GET / HTTP/1.1\r\n\r\n" + b"x" * 40, "not a vimha heartbeat"),
        (encode(HB, b"other key"), "bad signature"),
        (encode(replace(HB, node="cmp-9"), KEY), "unknown node"),
        (b"VH1" + b"\xff" * 40, "malformed"),
    ],
)
def test_rejections(datagram: bytes, reason: str) -> None:
    decoded = decode(datagram, KEYS)
    assert decoded.heartbeat is None and reason in decoded.reason


def test_every_flipped_byte_is_rejected() -> None:
    good = encode(HB, KEY)
    for i in range(len(good)):
        bad = good[:i] + bytes([good[i] ^ 1]) + good[i + 1 :]
        assert decode(bad, KEYS).heartbeat is None, i


class Guard:
    """What the listener keeps: the last accepted (boot id, seq) per (node, plane)."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], Last] = {}

    def admit(self, hb: Heartbeat, now_ms: int, max_age: float) -> tuple[bool, str]:
        ok, reason = admit(self.last.get((hb.node, hb.plane)), hb, now_ms, max_age)
        if ok:
            self.last[(hb.node, hb.plane)] = (hb.boot_id, hb.seq)
        return ok, reason


def test_replay_guard() -> None:
    guard = Guard()
    ok, _ = guard.admit(HB, 1_000_000, 30)
    assert ok
    ok, reason = guard.admit(HB, 1_000_050, 30)
    assert not ok and reason.startswith("replayed")
    ok, _ = guard.admit(replace(HB, seq=8), 1_000_100, 30)
    assert ok
    ok, _ = guard.admit(replace(HB, seq=3), 1_000_100, 30)
    assert not ok  # older sequence in the same boot
    ok, _ = guard.admit(replace(HB, seq=1, boot_id=b"C" * 16), 1_000_200, 30)
    assert ok  # the agent restarted: a new boot id starts its own sequence
    ok, reason = guard.admit(replace(HB, seq=99, sent_ms=900_000), 1_000_200, 30)
    assert not ok and reason.startswith("stale")  # too old: an earlier boot's packet replayed
    ok, _ = guard.admit(replace(HB, plane="storage", seq=1), 1_000_200, 30)
    assert ok  # planes are tracked separately
