"""The Notifier port over HTTP: SOL 013 callbacks with BASIC or OAuth 2.0 client credentials.

Notifications go through the lean HTTP/1.1 client (http1.py, the hot path); the callback test
and OAuth token requests use httpx. Tokens are cached per (endpoint, client, secret) until
shortly before they expire, and fetched again once when a consumer answers 401.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from typing import Any

import httpx

from vimha.domain.errors import DeliveryFailed
from vimha.domain.subscriptions import Authentication, AuthType
from vimha.drivers.http1 import Http1Client
from vimha.drivers.tls import client_tls


class HttpNotifier:
    def __init__(self, timeout: float = 5.0, test_timeout: float = 5.0) -> None:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        self._client = httpx.AsyncClient(timeout=timeout, limits=limits, verify=client_tls())
        self._fast = Http1Client(timeout)
        self._test_timeout = test_timeout
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._token_lock = asyncio.Lock()

    async def post(self, uri: str, body: bytes, auth: Authentication | None) -> None:
        payload = body
        status = await self._post(uri, payload, auth)
        if status == 401 and auth and auth.auth_type is AuthType.OAUTH2_CLIENT_CREDENTIALS:
            self._tokens.pop(_token_key(auth), None)
            status = await self._post(uri, payload, auth)
        if not 200 <= status < 300:
            raise DeliveryFailed(f"consumer answered {status}")

    async def _post(self, uri: str, payload: bytes, auth: Authentication | None) -> int:
        headers = {"Content-Type": "application/json", "Version": "1.0.0"}
        if auth is not None:
            if auth.auth_type is AuthType.BASIC:
                pair = f"{auth.user_name}:{auth.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
            else:
                headers["Authorization"] = f"Bearer {await self._token(auth)}"
        response = await self._fast.request("POST", uri, headers, payload)
        return response.status

    async def test(self, uri: str, auth: Authentication | None) -> None:
        response = await self._send(
            "GET", uri, auth, {"Version": "1.0.0"}, None, limit=self._test_timeout
        )
        if response.status_code != 204:
            raise DeliveryFailed(
                f"callback test GET {uri} answered {response.status_code}, expected 204"
            )

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._fast.aclose()

    async def _send(
        self,
        method: str,
        uri: str,
        auth: Authentication | None,
        headers: dict[str, str],
        body: dict[str, Any] | None,
        limit: float | None = None,
    ) -> httpx.Response:
        request_auth: httpx.Auth | None = None
        if auth is not None:
            if auth.auth_type is AuthType.BASIC:
                request_auth = httpx.BasicAuth(auth.user_name, auth.password)
            else:
                headers = {**headers, "Authorization": f"Bearer {await self._token(auth)}"}
        try:
            kwargs: dict[str, Any] = {"headers": headers, "auth": request_auth}
            if limit is not None:
                kwargs["timeout"] = limit
            if body is not None:
                kwargs["json"] = body
            return await self._client.request(method, uri, **kwargs)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc

    async def _token(self, auth: Authentication) -> str:
        key = _token_key(auth)
        cached = self._tokens.get(key)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        async with self._token_lock:
            cached = self._tokens.get(key)
            if cached and cached[1] > time.monotonic():
                return cached[0]
            try:
                response = await self._client.post(
                    auth.token_endpoint,
                    data={"grant_type": "client_credentials"},
                    auth=httpx.BasicAuth(auth.client_id, auth.client_password),
                )
            except httpx.HTTPError as exc:
                raise DeliveryFailed(f"token endpoint unreachable: {exc}") from exc
            if response.status_code != 200:
                raise DeliveryFailed(f"token endpoint answered {response.status_code}")
            try:
                data = response.json()
                token = str(data["access_token"])
                ttl = float(data.get("expires_in", 300))
            except (ValueError, KeyError, TypeError) as exc:
                raise DeliveryFailed("token endpoint answered without an access_token") from exc
            self._tokens[key] = (token, time.monotonic() + max(1.0, ttl * 0.9))
            return token


def _token_key(auth: Authentication) -> tuple[str, str, str]:
    """Tokens are cached per endpoint, client and secret: a changed secret fetches anew."""
    secret = hashlib.sha256(auth.client_password.encode()).hexdigest()
    return (auth.token_endpoint, auth.client_id, secret)
