"""A small HTTP client of the vimha API for the CLI and scripts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8470"
DEFAULT_DATA_DIR = ".vimha"


class ClientError(Exception):
    """A failed API call, with a sentence for the user."""


def resolve(url: str | None, token: str | None, data_dir: str | None = None) -> tuple[str, str]:
    """URL from --url, $VIMHA_URL, else the embedded default; token from --token,
    $VIMHA_TOKEN / $VIMHA_ADMIN_TOKEN, else the embedded default's token file."""
    folder = Path(data_dir or os.environ.get("VIMHA_DATA_DIR") or DEFAULT_DATA_DIR)
    if not url and not os.environ.get("VIMHA_URL"):
        try:  # the embedded cloud of that folder says where its API is
            url = (folder / "api-url").read_text().strip()
        except OSError:
            url = None
    url = url or os.environ.get("VIMHA_URL") or DEFAULT_URL
    token = token or os.environ.get("VIMHA_TOKEN") or os.environ.get("VIMHA_ADMIN_TOKEN")
    if not token:
        path = folder / "admin-token"
        try:
            token = path.read_text().strip()
        except OSError:
            raise ClientError(
                f"no token: pass --token, set VIMHA_TOKEN, or run `vimha up` (it writes {path})"
            ) from None
    return url.rstrip("/"), token


class Client:
    def __init__(self, url: str, token: str, timeout: float = 10.0) -> None:
        self.url = url
        self._http = httpx.Client(
            base_url=url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {token}", "Version": "1.0.0"},
        )

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the vimha API at {self.url}: {exc}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
                detail = body.get("detail") or body
            except ValueError:
                detail = response.text[:200]
            raise ClientError(f"{method} {path}: {response.status_code} {detail}")
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        return response.json() if response.content else None

    def paged(self, path: str, params: dict[str, str]) -> list[Any]:
        """Follow Link rel=next to the end."""
        out: list[Any] = []
        response = self.call("GET", path, params=params)
        while True:
            out.extend(response.json())
            nxt = response.links.get("next", {}).get("url")
            if not nxt:
                return out
            response = self.call("GET", nxt)
