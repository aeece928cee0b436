"""A MariaDB member whose server is still starting (recovering from a crash: it has not
opened its socket yet) is not restarted for it; a server that has had its time is
(agent/mariadb_handler.py). A real process stands for the server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from vimha.agent.handlers import spawn_member
from vimha.agent.mariadb_handler import STARTING, MariadbHandler
from vimha.agent.services import kill_group
from vimha.drivers.clock import SystemClock
from vimha.drivers.coord_local import LocalCoordination
from vimha.groupspec import MariadbHandlerConfig


def test_a_server_that_has_not_opened_its_socket_yet_is_starting(tmp_path: Path) -> None:
    cfg = MariadbHandlerConfig(port=1, timeout=0.5)
    handler = MariadbHandler("sql", "n1", cfg, tmp_path, LocalCoordination(SystemClock()), "v")
    handler.process = spawn_member(["sleep", "30"])  # alive, no socket
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
