"""One TLS context for every HTTP client of a process. httpx builds a context for each
client it makes, loading the CA bundle each time: 20-40 ms of the event loop's own time per
client (an agent makes half a dozen at start, an etcd watch one at each reconnection), a
stall its heartbeats used to feel. Made once, on first use, and shared."""

from __future__ import annotations

import functools
import ssl

import certifi


@functools.cache
def client_tls() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certifi.where())
