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
import secrets
import signal
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from vimha.api.app import create_app
from vimha.api.auth import Principal, TokenAuth
from vimha.config import Config
from vimha.domain.errors import InvalidInput, Permanent, Temporary
from vimha.drivers.clock import SystemClock
from vimha.drivers.http_notifier import HttpNotifier
from vimha.drivers.sqlstore import SqlStore
from vimha.engine.runtime import Runtime

log = logging.getLogger("vimha.controller")
ADMIN_ENV = "VIMHA_ADMIN_TOKEN"


class _Server(uvicorn.Server):
    """uvicorn re-raises a captured SIGTERM after serve() returns, which would kill the
    process before the engine drains; vimha owns the signals instead. First signal: stop
    accepting and drain (bounded); second signal: force exit."""

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


def admin_token_from_file(path: Path) -> str:
    """Read the admin token file, creating it (0600) with a fresh token, or with
    $VIMHA_ADMIN_TOKEN when set, if it does not exist."""
    env = os.environ.get(ADMIN_ENV)
    if path.exists():
        token = path.read_text().strip()
        if env and env != token:
            return env
        return token
    token = env or secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    log.info("generated an admin token in %s (mode 0600)", path)
    return token


def build_auth(config: Config) -> TokenAuth:
    tokens = {t.token: Principal(t.name, t.role) for t in config.auth.tokens}
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
        )
    )
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
