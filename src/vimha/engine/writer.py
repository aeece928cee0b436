"""One writer thread for the store's units of work, with group commit.

SQLite has a single writer anyway; funnelling writes through one thread removes lock waits and
thread-pool hops, and lets work queued by concurrent requests share one transaction (group
commit). If a shared transaction fails, each piece of work is retried alone, so one bad piece
never fails the others. `Temporary` failures are retried up to RETRIES times.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from vimha.domain.errors import Temporary
from vimha.ports.store import Store, UnitOfWork

log = logging.getLogger("vimha.writer")
T = TypeVar("T")
RETRIES = 5
MAX_GROUP = 128
WAL_CHECK_EVERY = 0.5
WAL_LIMIT = 64 * 2**20


@dataclass(slots=True)
class _Item:
    work: Callable[[UnitOfWork], Any]
    future: Future[Any]
    after: Callable[[Any], None] | None = None  # run in the writer thread once committed


class StoreWriter:
    def __init__(self, store: Store, on_retry: Callable[[], None] = lambda: None) -> None:
        """`on_retry` runs (in the writer thread) before a unit of work that failed with the
        store unavailable is retried: the failed one may have committed all the same."""
        self.store = store
        self.on_retry = on_retry
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_checkpoint = time.monotonic()
        self._stopped = False
        self._submitting = threading.Lock()  # a submit never slips in behind the stop

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._loop, name="store-writer", daemon=True
                    )
                    self._thread.start()

    def call(self, work: Callable[[UnitOfWork], T], after: Callable[[T], None] | None = None) -> T:
        """Run `work` in a unit of work and wait for the commit (blocking)."""
        return self.submit(work, after).result()

    async def acall(
        self, work: Callable[[UnitOfWork], T], after: Callable[[T], None] | None = None
    ) -> T:
        """Run `work` in a unit of work; awaits the commit without blocking the loop."""
        return await asyncio.wrap_future(self.submit(work, after))

    def submit(
        self, work: Callable[[UnitOfWork], T], after: Callable[[T], None] | None = None
    ) -> Future[T]:
        """`after(result)`, when given, runs in the writer thread once the work is committed,
        before the next unit of work: what it hands on goes in commit order (the callers,
        woken in any order, would not)."""
        future: Future[T] = Future()
        self._ensure_started()
        with self._submitting:
            if self._stopped:  # nobody would ever run it: its caller would wait for good
                future.set_exception(Temporary("the store writer is stopped"))
            else:
                self._queue.put(_Item(work, future, after))
        return future

    def stop(self, timeout: float = 5.0) -> None:
        """Work queued before the stop is done; what comes after fails at once (Temporary)."""
        with self._submitting:
            self._stopped = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item.future.set_exception(Temporary("the store writer is stopped"))

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                group.append(item)
            self._run_group(group)
            self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        """Bound the WAL when background (non-blocking) checkpoints cannot keep up: only
        under sustained saturation, since a truncating checkpoint stalls the writes."""
        now = time.monotonic()
        if now - self._last_checkpoint < WAL_CHECK_EVERY:
            return
        self._last_checkpoint = now
        if self.store.wal_bytes() < WAL_LIMIT:
            return
        try:
            self.store.checkpoint(truncate=True)
        except Exception as exc:  # the next one will do; the WAL only grows meanwhile
            log.warning("store checkpoint failed: %s", exc)

    def _retrying(self) -> None:
        try:
            self.on_retry()
        except Exception as exc:  # the writer thread must never die
            log.warning("before a retry: %s", exc)

    def _run_group(self, group: list[_Item]) -> None:
        if len(group) > 1:
            try:
                with self.store.unit_of_work() as uow:
                    results = [item.work(uow) for item in group]
            except Temporary:
                self._retrying()  # its commit may have landed: each piece is retried alone
            except BaseException:
                pass
            else:
                for item, result in zip(group, results, strict=True):
                    _committed(item, result)
                return
        for item in group:
            self._run_one(item)

    def _run_one(self, item: _Item) -> None:
        for attempt in range(1, RETRIES + 1):
            try:
                with self.store.unit_of_work() as uow:
                    result = item.work(uow)
            except Temporary as exc:
                if attempt == RETRIES:
                    item.future.set_exception(exc)
                    return
                log.warning("unit of work retried (%d): %s", attempt, exc.detail)
                time.sleep(min(0.05 * 2**attempt, 0.5))  # a database switching over
                self._retrying()
            except BaseException as exc:
                item.future.set_exception(exc)
                return
            else:
                _committed(item, result)
                return


def _committed(item: _Item, result: Any) -> None:
    if item.after is not None:
        try:
            item.after(result)
        except Exception as exc:  # the writer thread must never die; the work is committed
            log.error("after a commit: %s", exc)
    item.future.set_result(result)
