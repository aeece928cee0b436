"""Composition root of the controller process: config -> store, runtime, API -> serve.

Shutdown: the first SIGINT/SIGTERM stops accepting requests and drains (bounded); a second
one forces exit (uvicorn's behaviour).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from vimha.admin_token import ADMIN_ENV, admin_token_from_file
from vimha.api.app import create_app
from vimha.api.auth import Principal, TokenAuth
from vimha.config import Config
from vimha.domain.errors import InvalidInput, Permanent, Temporary
from vimha.drivers.clock import SystemClock
from vimha.drivers.http_notifier import HttpNotifier
from vimha.drivers.sqlstore import SqlStore
from vimha.engine.runtime import Runtime

log = logging.getLogger("vimha.controller")


class _Server(uvicorn.Server):
    """uvicorn re-raises a captured SIGTERM after serve() returns, which would kill the
    process before the engine drains; vimha owns the signals instead. First signal: stop
    accepting and drain (bounded); second signal: force exit. `closing` is called as the
    shutdown begins: long-lived responses (the dashboard's event streams) end then, rather
    than holding the drain until its bound."""

    closing: list[Callable[[], None]]

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for close in getattr(self, "closing", []):
            close()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if self.should_exit:
                log.warning("second signal: forcing exit")
                self.force_exit = True
                os._exit(130)
            log.info("signal received: shutting down")
            self.should_exit = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def build_auth(config: Config) -> TokenAuth:
    tokens = {t.token: Principal(t.name, t.role, t.host) for t in config.auth.tokens}
    if config.auth.token_file:
        tokens[admin_token_from_file(Path(config.auth.token_file))] = Principal("admin", "admin")
    elif os.environ.get(ADMIN_ENV):
        tokens[os.environ[ADMIN_ENV]] = Principal("admin", "admin")
    if not tokens:
        raise InvalidInput("no API tokens configured")
    return TokenAuth(tokens)


def open_store(config: Config, migrate: bool, wait: float = 0.0) -> SqlStore:
    """Open (and migrate) the store; an unreachable one is retried for `wait` seconds (a
    controller started with its database, e.g. both run by the agents)."""
    url = config.store.url
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    while True:
        store = SqlStore(url)
        try:
            if migrate:
                store.upgrade()
            store.check_schema()
            return store
        except Temporary as exc:
            store.close()
            if time.monotonic() >= deadline:
                raise
            log.warning("store not reachable yet (%s); retrying", exc)
            time.sleep(1.0)


def _bind(config: Config) -> list[socket.socket]:
    """Listening sockets on the API host and every `also_listen` address (one port)."""
    out = []
    for host in (config.api.host, *config.api.also_listen):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, config.api.port))
        except OSError as exc:
            sock.close()
            raise Permanent(
                f"api: cannot listen on {host}:{config.api.port}: {exc.strerror}"
            ) from None
        sock.listen(2048)
        out.append(sock)
    return out


async def serve(config: Config, migrate: bool = False, wait_store: float = 0.0) -> int:
    """Run the controller until a signal; returns the process exit code."""
    store = await asyncio.to_thread(open_store, config, migrate, wait_store)
    token_auth = build_auth(config)
    clock = SystemClock()
    notifier = HttpNotifier(config.delivery.timeout, config.delivery.callback_test_timeout)
    runtime = Runtime(config, store, notifier, clock)
    app = create_app(runtime, token_auth)
    server = _Server(
        uvicorn.Config(
            app,
            host=config.api.host,
            port=config.api.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
            lifespan="off",
            ssl_certfile=config.api.tls.cert_file if config.api.tls else None,
            ssl_keyfile=config.api.tls.key_file if config.api.tls else None,
        )
    )
    server.closing = [app.state.ui_feed.close, runtime.host_watch.close]
    await runtime.start()
    # Long-lived state is made at start; fewer young-generation collections cut the cost of
    # the many short-lived objects of each request and notification.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)

    async def watch_runtime() -> None:
        await runtime.failed.wait()
        log.error("a root task failed; shutting down so that the supervisor restarts us")
        server.should_exit = True

    watcher = asyncio.create_task(watch_runtime())
    log.info("vimha controller %s listening on %s", config.vim_connection_id, config.api.base_url)
    try:
        sockets = _bind(config) if config.api.also_listen else None
        await server.serve(sockets=sockets)
    finally:
        watcher.cancel()
        await runtime.stop()
        store.close()
        log.info("vimha controller stopped")
    return 1 if runtime.failed.is_set() or not server.started else 0
