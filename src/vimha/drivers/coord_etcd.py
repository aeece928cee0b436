"""Coordination on a real etcd v3 cluster through its JSON gateway (`/v3/...`, keys and
values base64): no gRPC stack to install. Requests go to one member and move to the next
when it does not answer; etcd's Raft makes every member's answer linearizable.

    etcd://127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from vimha.domain.errors import InvalidInput
from vimha.drivers.tls import client_tls
from vimha.ports.coordination import (
    Change,
    Characteristics,
    CoordinationUnavailable,
    Entry,
    LeaseLost,
)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(b64: str | None) -> str:
    return base64.b64decode(b64 or "").decode()


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def endpoints(url: str) -> list[str]:
    if not url.startswith("etcd://"):
        raise InvalidInput(f"coordination url {url!r}: expected etcd://host:port[,host:port]")
    hosts = [h for h in url.removeprefix("etcd://").strip("/").split(",") if h]
    if not hosts or any(":" not in h for h in hosts):
        raise InvalidInput(f"coordination url {url!r}: every member needs host:port")
    return [f"http://{h}" for h in hosts]


ELECTION_PAUSES = (0.0, 0.15, 0.3)  # s: before each round of calls


class EtcdCoordination:
    characteristics = Characteristics(distributed=True)

    def __init__(self, url: str, timeout: float = 1.0) -> None:
        self.members = endpoints(url)
        self.current = 0
        self.http = httpx.AsyncClient(timeout=timeout, verify=client_tls())

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Each member in turn; when members answered but had no leader (an election under
        way after the leader's loss), twice more after a short pause: an election takes a
        few heartbeats, and a caller told "unavailable" would wait a whole step."""
        last = ""
        for pause in ELECTION_PAUSES:
            await asyncio.sleep(pause)
            answer, last, electing = await self._one_round(path, body)
            if answer is not None:
                return answer
            if not electing:
                break
        raise CoordinationUnavailable(f"no etcd member answered ({last})")

    async def _one_round(
        self, path: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, str, bool]:
        """(the answer, or None and why not, and whether some member was electing)."""
        last, electing = "", False
        for attempt in range(len(self.members)):
            member = self.members[(self.current + attempt) % len(self.members)]
            try:
                r = await self.http.post(f"{member}/v3/{path}", json=body)
            except httpx.HTTPError as exc:
                last = f"{member}: {type(exc).__name__}"
                continue
            if r.status_code >= 500:
                last = f"{member}: {r.status_code} {r.text[:200]}"
                electing = electing or "leader" in r.text
                continue
            self.current = (self.current + attempt) % len(self.members)
            doc: dict[str, Any] = r.json()
            if r.status_code >= 400 or "error" in doc:
                message = str(doc.get("message") or doc.get("error"))
                if "lease not found" in message:
                    raise LeaseLost(f"lease gone: {message}")
                raise CoordinationUnavailable(f"etcd {path}: {message[:200]}")
            return doc, "", False
        return None, last, electing

    async def grant(self, ttl: float) -> int:
        doc = await self._call("lease/grant", {"TTL": max(1, round(ttl))})
        return int(doc["ID"])

    async def keepalive(self, lease: int) -> float:
        doc = await self._call("lease/keepalive", {"ID": lease})
        ttl = int((doc.get("result") or doc).get("TTL", 0))
        if ttl <= 0:
            raise LeaseLost(f"lease {lease} expired")
        return float(ttl)

    async def revoke(self, lease: int) -> None:
        with contextlib.suppress(LeaseLost):  # already gone: revoked all the same
            await self._call("lease/revoke", {"ID": lease})

    async def _txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> bool:
        doc = await self._call("kv/txn", {"compare": compare, "success": success})
        return bool(doc.get("succeeded"))

    @staticmethod
    def _put(key: str, value: str, lease: int) -> dict[str, Any]:
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = lease
        return {"request_put": put}

    async def create(self, key: str, value: str, lease: int = 0) -> bool:
        compare = [{"key": _b64(key), "target": "CREATE", "create_revision": 0}]
        return await self._txn(compare, [self._put(key, value, lease)])

    async def get(self, key: str) -> Entry | None:
        doc = await self._call("kv/range", {"key": _b64(key)})
        kvs = doc.get("kvs") or []
        if not kvs:
            return None
        kv = kvs[0]
        return Entry(key, _text(kv.get("value")), int(kv["mod_revision"]), int(kv.get("lease", 0)))

    async def list(self, prefix: str) -> tuple[int, list[Entry]]:
        doc = await self._call("kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix)})
        entries = [
            Entry(
                _text(kv["key"]),
                _text(kv.get("value")),
                int(kv["mod_revision"]),
                int(kv.get("lease", 0)),
            )
            for kv in doc.get("kvs") or []
        ]
        return int(doc["header"]["revision"]), sorted(entries, key=lambda e: e.key)

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        doc = await self._call("kv/put", self._put(key, value, lease)["request_put"])
        return int(doc["header"]["revision"])

    async def replace(self, key: str, value: str, revision: int, lease: int = 0) -> bool:
        compare = [{"key": _b64(key), "target": "MOD", "mod_revision": revision}]
        return await self._txn(compare, [self._put(key, value, lease)])

    async def delete(self, key: str, revision: int | None = None) -> bool:
        request = [{"request_delete_range": {"key": _b64(key)}}]
        if revision is None:
            doc = await self._call("kv/deleterange", {"key": _b64(key)})
            return int(doc.get("deleted", 0)) > 0
        compare = [{"key": _b64(key), "target": "MOD", "mod_revision": revision}]
        return await self._txn(compare, request)

    async def increment(self, key: str) -> int:
        while True:
            entry = await self.get(key)
            if entry is None:
                if await self.create(key, "1"):
                    return 1
                continue
            value = int(entry.value) + 1
            if await self.replace(key, str(value), entry.revision):
                return value

    async def watch(self, prefix: str, after: int) -> AsyncIterator[Change]:
        body = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _prefix_end(prefix),
                "start_revision": after + 1,
            }
        }
        member = self.members[self.current]
        try:
            async with (
                httpx.AsyncClient(timeout=None, verify=client_tls()) as client,
                client.stream("POST", f"{member}/v3/watch", json=body) as r,
            ):
                async for line in r.aiter_lines():
                    if not line.strip():
                        continue
                    result = json.loads(line).get("result", {})
                    if result.get("canceled") or int(result.get("compact_revision") or 0):
                        # asked from a revision etcd compacted away: the stream stays open
                        # but says nothing more; the caller lists again
                        why = result.get("cancel_reason") or "compacted"
                        raise CoordinationUnavailable(f"etcd watch on {member}: {why}")
                    for ev in result.get("events") or []:
                        kv = ev["kv"]
                        yield Change(
                            ev.get("type", "PUT"),
                            _text(kv["key"]),
                            _text(kv.get("value")),
                            int(kv["mod_revision"]),
                        )
        except httpx.HTTPError as exc:
            raise CoordinationUnavailable(f"etcd watch on {member}: {exc}") from exc

    async def close(self) -> None:
        await self.http.aclose()
