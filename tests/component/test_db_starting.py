"""A database member whose server is still starting (no socket yet; PostgreSQL replaying WAL
up to a consistent state; MariaDB recovering from a crash) is not restarted for it; a server
that has had its time is (agent/pg_handler.py, agent/mariadb_handler.py). A real process
stands for the server: alive, refusing connections."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from vimha.agent import mariadb_handler, pg_handler
from vimha.agent.handlers import spawn_member
from vimha.agent.services import kill_group
from vimha.drivers.clock import SystemClock
from vimha.drivers.coord_local import LocalCoordination
from vimha.groupspec import MariadbHandlerConfig, PostgresHandlerConfig


def postgres(tmp_path: Path) -> Any:
    cfg = PostgresHandlerConfig(port=1, timeout=0.5)
    coord = LocalCoordination(SystemClock())
    return pg_handler.PostgresHandler("db", "n1", cfg, tmp_path, coord, "v"), pg_handler.STARTING


def mariadb(tmp_path: Path) -> Any:
    cfg = MariadbHandlerConfig(port=1, timeout=0.5)
    coord = LocalCoordination(SystemClock())
    handler = mariadb_handler.MariadbHandler("sql", "n1", cfg, tmp_path, coord, "v")
    return handler, mariadb_handler.STARTING


@pytest.mark.parametrize("make", [postgres, mariadb], ids=["postgresql", "mariadb"])
def test_a_server_that_does_not_answer_yet_is_starting_for_a_while(
    tmp_path: Path, make: Any
) -> None:
    handler, starting = make(tmp_path)
    handler.process = spawn_member(["sleep", "30"])
    try:
        handler.started_at = time.monotonic()
        health = asyncio.run(handler.monitor())
        assert not health.healthy and health.recovering, health
        handler.started_at = time.monotonic() - starting - 1
        health = asyncio.run(handler.monitor())
        assert not health.healthy and not health.recovering, health
    finally:
        kill_group(handler.process)
        handler.process.wait()
