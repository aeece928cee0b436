"""Notification dispatch in its own process, so that delivery (thousands of requests a
second) and the API each get a core, and a storm of slow consumers cannot starve the API.

The controller hands stored jobs to the child over a pipe; the child runs the ordinary
Dispatcher with its own store connection and writes outcomes back itself. Nothing is lost if
either side dies: every job is in the store before it is handed over, the child loads the
backlog at start, and the parent restarts a child that died (at-least-once).

Messages parent -> child: ("jobs", [DeliveryJob]), ("adopt", [DeliveryJob]),
("put", Subscription), ("drop", id), ("reload", None), ("stop", None).
Child -> parent: ("ready", None),
("lanes", {id: (queued, spilled)}), ("outcomes", [AttemptRecord]) (unused by the default
child, which writes its outcomes itself: applying them in the parent measured slower, its GIL
being busy with the API). Writers of both processes queue on the store's cross-process lock,
never on SQLite's busy-wait sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from vimha.config import Config
from vimha.engine.faults import SubscriptionCache
from vimha.engine.writer import StoreWriter
from vimha.ports.store import AttemptRecord, DeliveryJob, UnitOfWork

log = logging.getLogger("vimha.dispatch")
RESTART_DELAY = 0.5


@dataclass(slots=True)
class LaneView:
    """What the parent knows of a child's lane, for status."""

    queue: Sequence[object] = field(default=())
    spilled: bool = False


class DispatcherProcess:
    """The parent's handle: same surface as Dispatcher (submit, run, stop, ready, lanes)."""

    def __init__(
        self, config: Config, subscriptions: SubscriptionCache, writer: StoreWriter
    ) -> None:
        self.config = config
        self.subscriptions = subscriptions
        self.writer = writer
        self.ready = asyncio.Event()
        self.lanes: dict[str, LaneView] = {}
        self.restarts = 0
        self._ctx = multiprocessing.get_context("spawn")
        self._conn: Connection | None = None
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._send_lock = threading.Lock()
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        subscriptions.listeners.append(self._on_subscription)

    # -- the Dispatcher surface -----------------------------------------------------------
    def submit(self, jobs: Sequence[DeliveryJob]) -> None:
        """Hand stored jobs to the child (any thread). If the child is down, they wait in
        the store and the next child loads them."""
        if jobs:
            self._send(("jobs", list(jobs)))

    def adopt(self, jobs: Sequence[DeliveryJob]) -> None:
        """Jobs taken over from a controller that is gone (see Dispatcher.adopt)."""
        if jobs:
            self._send(("adopt", list(jobs)))

    async def run(self) -> None:
        """Start the child, and restart it whenever it dies, until stop()."""
        self._loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            exit_code = await self._run_child()
            if self._stopping.is_set():
                return
            self.restarts += 1
            log.error("dispatcher process exited with %s; restarting it", exit_code)
            await asyncio.sleep(RESTART_DELAY)

    async def stop(self) -> None:
        self._stopping.set()
        self._send(("stop", None))
        proc = self._proc
        if proc is not None:
            await asyncio.to_thread(proc.join, 10)
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, 5)

    def idle(self) -> bool:
        return all(not lane.queue for lane in self.lanes.values())

    # -- internals ------------------------------------------------------------------------
    def _send(self, message: tuple[str, Any]) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            with self._send_lock:
                conn.send(message)
        except (OSError, EOFError, BrokenPipeError):
            pass  # the child is gone; run() restarts it and it reloads from the store

    def _on_subscription(self, kind: str, value: Any) -> None:
        self._send((kind, value))

    async def _run_child(self) -> int | None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=child_main,
            args=(self.config.model_dump(mode="json"), child),
            name="vimha-dispatcher",
            daemon=True,
        )
        proc.start()
        child.close()
        self._proc = proc
        self._conn = parent
        try:
            await asyncio.to_thread(self._read_child, parent)
        finally:
            self._conn = None
            parent.close()
        await asyncio.to_thread(proc.join, 5)
        return proc.exitcode

    def _read_child(self, conn: Connection) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            try:
                kind, value = conn.recv()
            except (EOFError, OSError):
                return
            if kind == "ready":
                loop.call_soon_threadsafe(self.ready.set)
            elif kind == "outcomes":
                # Applied by this process's writer: one writing process, no lock waits.
                self.writer.submit(_recorder(value))
            elif kind == "lanes":
                self.lanes = {k: LaneView(range(q), s) for k, (q, s) in value.items()}


def _recorder(batch: list[AttemptRecord]) -> Callable[[UnitOfWork], None]:
    def work(uow: UnitOfWork) -> None:
        uow.record_attempts(batch)

    return work


def child_main(config_data: dict[str, Any], conn: Connection) -> None:
    """Entry point of the dispatcher process."""
    from vimha.logs import setup_logging

    # Ctrl-C in a terminal reaches the whole process group; the parent stops us through
    # the pipe, after draining, so the child ignores it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = Config.model_validate(config_data)
    setup_logging(config.log_level)
    try:  # the same fast loop uvicorn gives the API process, when installed
        import uvloop

        uvloop.run(_child(config, conn))
    except ImportError:
        asyncio.run(_child(config, conn))


async def _child(config: Config, conn: Connection) -> None:
    from vimha.drivers.clock import SystemClock
    from vimha.drivers.http_notifier import HttpNotifier
    from vimha.drivers.sqlstore import SqlStore
    from vimha.engine.dispatch import Dispatcher

    store = SqlStore(config.store.url)
    notifier = HttpNotifier(config.delivery.timeout, config.delivery.callback_test_timeout)
    subs = SubscriptionCache(store)
    await asyncio.to_thread(subs.reload)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    send_lock = threading.Lock()

    dispatcher = Dispatcher(
        store,
        notifier,
        subs,
        SystemClock(),
        config.delivery.retry_policy(),
        config.api.base_url,
        config.delivery.flush_interval,
        config.delivery.lane_memory,
        owner=config.controller_id(),
    )

    def reader() -> None:
        while True:
            try:
                kind, value = conn.recv()
            except (EOFError, OSError):
                kind, value = "stop", None  # the parent is gone: so are we
            if kind == "jobs":
                if any(subs.get(j.subscription_id) is None for j in value):
                    subs.reload()  # a subscription newer than our cache
                dispatcher.submit(value)
            elif kind == "adopt":
                if any(subs.get(j.subscription_id) is None for j in value):
                    subs.reload()
                dispatcher.adopt(value)
            elif kind == "put":
                subs.put(value)
            elif kind == "drop":
                subs.drop(value)
            elif kind == "reload":
                subs.reload()
            elif kind == "stop":
                loop.call_soon_threadsafe(stop.set)
                return

    def report(kind: str, value: Any) -> None:
        try:
            with send_lock:
                conn.send((kind, value))
        except (OSError, EOFError, BrokenPipeError):
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=reader, name="dispatch-pipe", daemon=True).start()
    task = loop.create_task(dispatcher.run())
    await dispatcher.ready.wait()
    report("ready", None)
    while not stop.is_set():
        if task.done():
            break  # the dispatcher died: exit non-zero, the parent restarts us
        lanes = {
            k: (len(v.queue), v.spilled)
            for k, v in dispatcher.lanes.items()
            if v.queue or v.spilled
        }
        report("lanes", lanes)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    await dispatcher.stop()
    task.cancel()
    await notifier.aclose()
    store.close()
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise SystemExit(1)
