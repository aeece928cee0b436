"""A PostgreSQL member whose server is still starting (no socket yet, or replaying WAL up to
a consistent state) is not restarted for it; a server that has had its time is
(agent/pg_handler.py). A real process stands for the server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from vimha.agent.handlers import spawn_member
from vimha.agent.pg_handler import STARTING, PostgresHandler
from vimha.agent.services import kill_group
from vimha.drivers.clock import SystemClock
from vimha.drivers.coord_local import LocalCoordination
from vimha.groupspec import PostgresHandlerConfig


def test_a_server_that_does_not_answer_yet_is_starting_for_a_while(tmp_path: Path) -> None:
    cfg = PostgresHandlerConfig(port=1, timeout=0.5)
    handler = PostgresHandler("db", "n1", cfg, tmp_path, LocalCoordination(SystemClock()), "v")
    handler.process = spawn_member(["sleep", "30"])  # alive, refusing connections
    try:
        handler.started_at = time.monotonic()
        health = asyncio.run(handler.monitor())
        assert not health.healthy and health.recovering, health
        handler.started_at = time.monotonic() - STARTING - 1
        health = asyncio.run(handler.monitor())
        assert not health.healthy and not health.recovering, health
    finally:
        kill_group(handler.process)
        handler.process.wait()
