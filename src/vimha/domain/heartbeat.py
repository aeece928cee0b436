"""The heartbeat wire format: small UDP datagrams, signed per node, replay-proof.

    "VH1" | node | plane | boot id (16 bytes) | seq (u64) | sent_ms (u64) | status | HMAC

Strings are length-prefixed (u8). The HMAC-SHA256 over everything before it uses the node's
key, so a forged heartbeat is rejected. Replays are rejected by the guard: within one boot of
the agent (its random boot id) the sequence number must grow, and a heartbeat older than
`max_age` seconds (wall clock, allowing that much skew) is refused, so an old boot's packets
cannot be replayed either. Decoding never raises: it returns a reason "<category>: <detail>"
(categories: foreign, malformed, unknown node, bad signature, stale, replayed).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass

MAGIC = b"VH1"
MAC_LEN = 32
_FIXED = struct.Struct("!16sQQ")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    node: str
    plane: str
    boot_id: bytes
    seq: int
    sent_ms: int
    status: str = "ok"


def encode(hb: Heartbeat, key: bytes) -> bytes:
    parts = [MAGIC]
    for text in (hb.node, hb.plane):
        raw = text.encode()
        parts += [bytes([len(raw)]), raw]
    parts.append(_FIXED.pack(hb.boot_id, hb.seq, hb.sent_ms))
    status = hb.status.encode()[:255]
    parts += [bytes([len(status)]), status]
    body = b"".join(parts)
    return body + hmac.new(key, body, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Decoded:
    heartbeat: Heartbeat | None
    reason: str


def decode(datagram: bytes, keys: Mapping[str, bytes]) -> Decoded:
    """Parse and authenticate; `keys` maps node name to its key."""
    if len(datagram) < len(MAGIC) + MAC_LEN or not datagram.startswith(MAGIC):
        return Decoded(None, "foreign: not a vimha heartbeat")
    body, mac = datagram[:-MAC_LEN], datagram[-MAC_LEN:]
    try:
        pos = len(MAGIC)
        texts = []
        for _ in range(2):
            n = body[pos]
            texts.append(body[pos + 1 : pos + 1 + n].decode())
            pos += 1 + n
        boot_id, seq, sent_ms = _FIXED.unpack_from(body, pos)
        pos += _FIXED.size
        n = body[pos]
        status = body[pos + 1 : pos + 1 + n].decode()
        if pos + 1 + n != len(body):
            return Decoded(None, "malformed: trailing bytes")
    except (IndexError, struct.error, UnicodeDecodeError):
        return Decoded(None, "malformed: truncated or bad encoding")
    node, plane = texts
    key = keys.get(node)
    if key is None:
        return Decoded(None, f"unknown node: heartbeat from {node!r}")
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        return Decoded(None, f"bad signature: heartbeat from {node!r}")
    return Decoded(Heartbeat(node, plane, boot_id, seq, sent_ms, status), "ok")


Last = tuple[bytes, int]  # (boot id, seq) last accepted from one (node, plane)


def admit(previous: Last | None, hb: Heartbeat, now_ms: int, max_age: float) -> tuple[bool, str]:
    """Whether to accept a heartbeat, given the last one accepted from its (node, plane).
    The caller keeps `(hb.boot_id, hb.seq)` as the new last one when accepted: O(1) per
    heartbeat, 20,000 of them a second for 1,000 hosts."""
    if abs(now_ms - hb.sent_ms) > max_age * 1000:
        return False, f"stale: heartbeat from {hb.node} is {abs(now_ms - hb.sent_ms)} ms off"
    if previous is not None and previous[0] == hb.boot_id and hb.seq <= previous[1]:
        return False, f"replayed: heartbeat from {hb.node} (seq {hb.seq})"
    return True, "ok"
