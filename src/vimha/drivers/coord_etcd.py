"""Coordination on a real etcd v3 cluster through its JSON gateway (`/v3/...`, keys and
values base64): no gRPC stack to install. Requests go to one member and move to the next
when it does not answer; etcd's Raft makes every member's answer linearizable.

    etcd://127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
    etcd://10.0.0.1:2379,10.0.0.2:2379?ca_file=/etc/vimha/etcd-ca.pem&cert_file=/etc/vimha/
        etcd-client.pem&key_file=/etc/vimha/etcd-client.key
    etcd://10.0.0.1:2379?user=vimha-1.agent.cmp-1&password_file=/etc/vimha/etcd-password

With `ca_file` (and, for etcd's --client-cert-auth, `cert_file` and `key_file`: this node's
client certificate) the members are reached over TLS, their certificates verified against
that CA.

With `user` and `password_file` (its first line is the password) the driver authenticates
to etcd's RBAC (`auth/authenticate`) and sends the token on every call; a token etcd no
longer knows (expired, the member restarted, the password changed) is renewed once, the
password file read again (so a rotated password needs no restart). etcd's common name from
the client certificate is not used: the JSON gateway does not pass it to the auth layer.
Against a cluster whose authentication is not enabled (yet) the calls go without a token,
as etcd's own client does. A call outside the user's permissions raises PermissionDenied.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

from vimha.domain.errors import InvalidInput, VimhaError
from vimha.drivers.tls import client_tls
from vimha.ports.coordination import (
    Change,
    Characteristics,
    CoordinationUnavailable,
    Entry,
    LeaseLost,
    PermissionDenied,
)

log = logging.getLogger(__name__)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(b64: str | None) -> str:
    return base64.b64decode(b64 or "").decode()


def prefix_end(prefix: str) -> str:
    """The end (exclusive, base64) of the key range of a prefix."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


TLS_PARAMS = ("ca_file", "cert_file", "key_file")
AUTH_PARAMS = ("user", "password_file")


def url_params(url: str) -> dict[str, str]:
    """The parameters of an etcd URL, every one known; InvalidInput names the others."""
    _, _, query = url.partition("?")
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = sorted(set(params) - set(TLS_PARAMS) - set(AUTH_PARAMS))
    if unknown:
        raise InvalidInput(
            f"coordination url: unknown parameter {', '.join(unknown)} (known: "
            f"{', '.join(TLS_PARAMS + AUTH_PARAMS)})"
        )
    return params


def tls_params(url: str) -> dict[str, str]:
    """The TLS files an etcd URL names (`?ca_file=...&cert_file=...&key_file=...`)."""
    params = {k: v for k, v in url_params(url).items() if k in TLS_PARAMS}
    if params and "ca_file" not in params:
        raise InvalidInput("coordination url: TLS needs ca_file (the members' CA)")
    if ("cert_file" in params) != ("key_file" in params):
        raise InvalidInput("coordination url: a client certificate needs cert_file and key_file")
    return params


def read_password(path: Path) -> str:
    """The first line of the file; OSError or ValueError (empty) when there is none."""
    with open(path, encoding="utf-8") as fh:
        password = fh.readline().rstrip("\r\n")
    if not password:
        raise ValueError("its first line is empty")
    return password


@dataclass(frozen=True, slots=True)
class Credentials:
    user: str
    password_file: Path

    def password(self) -> str:
        return read_password(self.password_file)


def credentials(url: str) -> Credentials | None:
    """The etcd user an URL names (`?user=...&password_file=...`), its password file
    readable; None without one."""
    params = url_params(url)
    if "user" not in params and "password_file" not in params:
        return None
    if not params.get("user") or not params.get("password_file"):
        raise InvalidInput("coordination url: an etcd user needs user and password_file")
    creds = Credentials(params["user"], Path(params["password_file"]))
    try:
        creds.password()
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput(
            f"coordination url: password_file {creds.password_file} of etcd user "
            f"{creds.user}: {why}"
        ) from None
    return creds


def check_url(url: str) -> str:
    """Every part of an etcd URL valid (members, TLS files named, credentials readable)."""
    endpoints(url)
    credentials(url)
    return url


def endpoints(url: str) -> list[str]:
    if not url.startswith("etcd://"):
        raise InvalidInput(f"coordination url {url!r}: expected etcd://host:port[,host:port]")
    scheme = "https" if tls_params(url) else "http"
    members = url.removeprefix("etcd://").partition("?")[0]
    hosts = [h for h in members.strip("/").split(",") if h]
    if not hosts or any(":" not in h for h in hosts):
        raise InvalidInput(f"coordination url {url!r}: every member needs host:port")
    return [f"{scheme}://{h}" for h in hosts]


def tls_context(url: str) -> ssl.SSLContext:
    """The members' CA and this node's client certificate when the URL names them; else
    the process's shared context (public CAs)."""
    params = tls_params(url)
    if not params:
        return client_tls()
    try:
        context = ssl.create_default_context(cafile=params["ca_file"])
        if "cert_file" in params:
            context.load_cert_chain(params["cert_file"], params["key_file"])
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(f"coordination url: TLS files: {exc}") from None
    return context


ELECTION_PAUSES = (0.0, 0.15, 0.3)  # s: before each round of calls
# etcd's answers that the token is no good (any more): authenticate again, once
TOKEN_REFUSED = ("invalid auth token", "revision of auth store is old", "user name is empty")
# After a refused authentication, before the next attempt: etcd checks a password with
# bcrypt (tens of ms of its CPU), and every loop of a misconfigured agent would ask again.
AUTH_RETRY = 5.0  # s
# The bound of an authentication: that bcrypt check takes seconds on a loaded member, where
# every other call is bounded by the client's timeout (1 s: a lease's renewal)
AUTH_TIMEOUT = 5.0  # s


class _TokenRefused(CoordinationUnavailable):
    """etcd does not know the token (any more): authenticate again, once."""


def _subject(body: dict[str, Any]) -> str:
    """The key (or lease) a request is about, for an error message."""
    if "key" in body:
        return f" {_text(body['key'])}{'*' if body.get('range_end') else ''}"
    for op in body.get("success") or ():
        for request in op.values():
            if "key" in request:
                return f" {_text(request['key'])}"
    return f" lease {body['ID']}" if "ID" in body else ""


class EtcdCoordination:
    characteristics = Characteristics(distributed=True)

    def __init__(self, url: str, timeout: float = 1.0) -> None:
        self.members = endpoints(url)
        self.current = 0
        self.tls = tls_context(url)
        self.creds = credentials(url)
        self.token: str | None = None
        self.fresh = False  # authenticated (or found authentication off) since the last refusal
        self.auth_failed: tuple[float, str] | None = None  # (until, why)
        self.said_off = False  # that authentication is not enabled
        self.auth_lock = asyncio.Lock()
        self.http = httpx.AsyncClient(timeout=timeout, verify=self.tls)

    # --- errors, in one place ----------------------------------------------------------------

    def _refused(self, path: str, body: dict[str, Any], message: str) -> VimhaError:
        """etcd's refusal of a call as one of ours (LeaseLost and PermissionDenied are
        permanent: the caller does not retry them)."""
        who = f"etcd user {self.creds.user}" if self.creds else "no etcd user"
        if "lease not found" in message:
            return LeaseLost(f"lease gone: {message}")
        if "permission denied" in message:
            return PermissionDenied(f"etcd {path}{_subject(body)}: permission denied to {who}")
        if any(t in message for t in TOKEN_REFUSED):
            if self.creds is None:
                return PermissionDenied(
                    f"etcd {path}: the cluster requires authentication; give the "
                    "coordination url user= and password_file="
                )
            return _TokenRefused(message)
        return CoordinationUnavailable(f"etcd {path}: {message[:200]}")

    # --- authentication ----------------------------------------------------------------------

    async def _login(self) -> None:
        async with self.auth_lock:
            if not self.fresh:
                await self._authenticate()

    async def _renew(self, refused: str | None) -> None:
        """After etcd refused the token `refused`: a new one, unless a concurrent call
        already got it."""
        async with self.auth_lock:
            if self.token == refused or not self.fresh:
                self.fresh = False
                await self._authenticate()

    def _auth_failed(self, why: str) -> CoordinationUnavailable:
        self.auth_failed = (time.monotonic() + AUTH_RETRY, why)
        return CoordinationUnavailable(why, retry_after=AUTH_RETRY)

    async def _authenticate(self) -> None:
        assert self.creds is not None
        user, path = self.creds.user, self.creds.password_file
        if self.auth_failed is not None and time.monotonic() < self.auth_failed[0]:
            raise CoordinationUnavailable(self.auth_failed[1], retry_after=AUTH_RETRY)
        try:
            password = self.creds.password()
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise self._auth_failed(f"etcd user {user}: password_file {path}: {why}") from None
        try:
            doc = await self._rounds(
                "auth/authenticate", {"name": user, "password": password}, bound=AUTH_TIMEOUT
            )
        except CoordinationUnavailable as exc:
            if "authentication is not enabled" in exc.detail:
                if not self.said_off:
                    log.warning("etcd: authentication is not enabled: user %s not used", user)
                    self.said_off = True
                self.token, self.fresh, self.auth_failed = None, True, None
                return
            if "authentication failed" in exc.detail:
                raise self._auth_failed(
                    f"etcd: authentication of user {user} failed: wrong password or no such "
                    f"user (password_file {path})"
                ) from None
            raise  # no member answered: nothing learnt about the password
        self.token, self.fresh, self.auth_failed = str(doc["token"]), True, None

    # --- calls -------------------------------------------------------------------------------

    async def call(
        self, path: str, body: dict[str, Any], allow: tuple[str, ...] = ()
    ) -> dict[str, Any] | None:
        """Any call of the gateway (`auth/role/add`...); None when etcd refused it with a
        message containing one of `allow` (e.g. "already exists")."""
        try:
            return await self._call(path, body)
        except CoordinationUnavailable as exc:
            if any(a in exc.detail for a in allow):
                return None
            raise

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """With this node's token when the URL names a user: renewed once if etcd refuses it."""
        if self.creds is None:
            return await self._rounds(path, body)
        if not self.fresh:
            await self._login()
        used = self.token
        try:
            return await self._rounds(path, body, used)
        except _TokenRefused:
            await self._renew(used)
        try:
            return await self._rounds(path, body, self.token)
        except _TokenRefused as exc:
            raise CoordinationUnavailable(
                f"etcd {path}: the token of user {self.creds.user} was refused again ({exc})"
            ) from None

    async def _rounds(
        self, path: str, body: dict[str, Any], token: str | None = None, bound: float = 0.0
    ) -> dict[str, Any]:
        """Each member in turn; when members answered but had no leader (an election under
        way after the leader's loss), twice more after a short pause: an election takes a
        few heartbeats, and a caller told "unavailable" would wait a whole step."""
        last = ""
        headers = {"Authorization": token} if token else None
        for pause in ELECTION_PAUSES:
            await asyncio.sleep(pause)
            answer, last, electing = await self._one_round(path, body, headers, bound)
            if answer is not None:
                return answer
            if not electing:
                break
        raise CoordinationUnavailable(f"no etcd member answered ({last})")

    async def _one_round(
        self, path: str, body: dict[str, Any], headers: dict[str, str] | None, bound: float
    ) -> tuple[dict[str, Any] | None, str, bool]:
        """(the answer, or None and why not, and whether some member was electing); within
        `bound` (s) a member, else within the client's timeout."""
        within: Any = bound or httpx.USE_CLIENT_DEFAULT
        last, electing = "", False
        for attempt in range(len(self.members)):
            member = self.members[(self.current + attempt) % len(self.members)]
            try:
                r = await self.http.post(
                    f"{member}/v3/{path}", json=body, headers=headers, timeout=within
                )
            except (httpx.HTTPError, ssl.SSLError) as exc:  # a TLS alert can come at the first read
                last = f"{member}: {type(exc).__name__}"
                continue
            if r.status_code >= 500:
                last = f"{member}: {r.status_code} {r.text[:200]}"
                electing = electing or "leader" in r.text
                continue
            self.current = (self.current + attempt) % len(self.members)
            doc: dict[str, Any] = r.json()
            if r.status_code >= 400 or "error" in doc:
                raise self._refused(path, body, str(doc.get("message") or doc.get("error")))
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
        doc = await self._call("kv/range", {"key": _b64(prefix), "range_end": prefix_end(prefix)})
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
        """etcd checks the token when the watch is created only: a refused one (no event
        yielded yet) is renewed once and the watch created again."""
        if self.creds is not None and not self.fresh:
            await self._login()
        used = self.token
        try:
            async for change in self._watch(prefix, after, used):
                yield change
            return
        except _TokenRefused:
            if self.creds is None:
                raise
            await self._renew(used)
        try:
            async for change in self._watch(prefix, after, self.token):
                yield change
        except _TokenRefused as exc:
            raise CoordinationUnavailable(f"etcd watch: token refused again ({exc})") from None

    async def _watch(self, prefix: str, after: int, token: str | None) -> AsyncIterator[Change]:
        body = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": prefix_end(prefix),
                "start_revision": after + 1,
            }
        }
        member = self.members[self.current]
        headers = {"Authorization": token} if token else None
        try:
            async with (
                httpx.AsyncClient(timeout=None, verify=self.tls, headers=headers) as client,
                client.stream("POST", f"{member}/v3/watch", json=body) as r,
            ):
                async for line in r.aiter_lines():
                    if not line.strip():
                        continue
                    result = json.loads(line).get("result", {})
                    if result.get("canceled") or int(result.get("compact_revision") or 0):
                        # asked from a revision etcd compacted away: the stream stays open
                        # but says nothing more; the caller lists again
                        why = str(result.get("cancel_reason") or "compacted")
                        if "auth" in why or "permission" in why or "user name" in why:
                            raise self._refused("watch", body["create_request"], why)
                        raise CoordinationUnavailable(f"etcd watch on {member}: {why}")
                    for ev in result.get("events") or []:
                        kv = ev["kv"]
                        yield Change(
                            ev.get("type", "PUT"),
                            _text(kv["key"]),
                            _text(kv.get("value")),
                            int(kv["mod_revision"]),
                        )
        except (httpx.HTTPError, ssl.SSLError) as exc:
            raise CoordinationUnavailable(f"etcd watch on {member}: {exc}") from exc

    async def close(self) -> None:
        await self.http.aclose()
