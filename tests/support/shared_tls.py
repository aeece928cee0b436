"""The test process's HTTP clients share their TLS contexts, as the product's do
(`vimha.drivers.tls`). Tests poll clouds with `httpx.get` many times a second, and httpx
builds a context for each client it makes (loading the CA bundle: ~30 ms of CPU each): a
third of a core taken, while a test waits, from the cloud it waits for."""

from __future__ import annotations

import functools
import os
import ssl
from typing import Any

import httpx._transports.default as transports
from httpx._config import create_ssl_context as _original


@functools.cache
def _context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """httpx's own context for `verify=True` with these trusted CAs (its environment
    variables, else certifi's bundle), made once."""
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile or None, capath=capath or None)
    return _original(verify=True)


def _shared(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
    if verify is True and cert is None:
        cafile = os.environ.get("SSL_CERT_FILE") if trust_env else None
        capath = None if cafile or not trust_env else os.environ.get("SSL_CERT_DIR")
        return _context(cafile, capath)
    return _original(verify=verify, cert=cert, trust_env=trust_env)


def install() -> None:
    setattr(transports, "create_ssl_context", _shared)  # noqa: B010 - a module's function
