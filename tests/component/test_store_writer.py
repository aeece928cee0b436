"""The store writer over a real SQLite store whose database goes away for a while (the
controllers' database switching over): work is retried, and the writer thread survives
whatever happens before a retry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from vimha.domain.errors import StoreUnavailable, Temporary
from vimha.drivers.sqlstore import SqlStore
from vimha.engine.writer import StoreWriter
from vimha.ports.store import UnitOfWork


class Flaky:
    """A real store whose first `failures` units of work fail as a lost database does."""

    def __init__(self, store: SqlStore, failures: int) -> None:
        self.store = store
        self.failures = failures

    def unit_of_work(self) -> AbstractContextManager[UnitOfWork]:
        return self._uow()

    @contextmanager
    def _uow(self) -> Iterator[UnitOfWork]:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("database error: connection refused")
        with self.store.unit_of_work() as uow:
            yield uow

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_work_is_retried_and_the_writer_survives_a_failing_retry_hook(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 's.db'}")
    store.upgrade()
    flaky = Flaky(store, failures=2)

    def reload() -> None:  # like the subscription cache, it needs the store too
        raise StoreUnavailable("database error: connection refused")

    writer = StoreWriter(flaky, on_retry=reload)  # type: ignore[arg-type]
    try:
        assert writer.submit(lambda uow: uow.active_alarms([])).result(timeout=10) == {}
        flaky.failures = 10  # more than the retries: the caller is told
        with pytest.raises(StoreUnavailable):
            writer.submit(lambda uow: uow.active_alarms([])).result(timeout=10)
        flaky.failures = 0
        assert (
            writer.submit(lambda uow: uow.active_alarms([])).result(timeout=10) == {}
        )  # still alive
    finally:
        writer.stop()
        store.close()


def test_work_after_the_stop_fails_at_once_instead_of_waiting_for_good(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 's.db'}")
    store.upgrade()
    writer = StoreWriter(store)
    try:
        assert writer.call(lambda uow: uow.active_alarms([])) == {}
        writer.stop()
        with pytest.raises(Temporary, match="stopped"):
            writer.submit(lambda uow: uow.active_alarms([])).result(timeout=2)
    finally:
        store.close()
